//! Acting as a user over the HTTP API: accounts, logins, workspaces, messages.

use std::time::Duration;

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::services::token;

/// Every test account's password.
pub const PASSWORD: &str = "correct horse battery staple";

/// The default `SESSION_COOKIE_NAME`.
pub const COOKIE_NAME: &str = "shoal_session";

/// The four shared secrets every distributed test instance is given (instances of
/// one test must share them).
pub const SECRETS: [(&str, &str); 4] = [
    (
        "SESSION_SECRET",
        "test-session-secret-0123456789abcdef0123456789",
    ),
    (
        "SESSION_ENCRYPTION_KEY",
        "test-encryption-key-0123456789abcdef0123456789",
    ),
    (
        "JWT_ACCESS_SECRET",
        "test-jwt-access-secret-0123456789abcdef0123456789",
    ),
    (
        "JWT_REFRESH_SECRET",
        "test-jwt-refresh-secret-0123456789abcdef0123456789",
    ),
];

/// A plain client: no cookie store, no system proxy, every request bounded.
pub fn plain_client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("build a reqwest client")
}

/// A client that keeps cookies, like a browser.
pub fn cookie_client() -> Client {
    Client::builder()
        .no_proxy()
        .cookie_store(true)
        .timeout(Duration::from_secs(40))
        .build()
        .expect("build a reqwest client")
}

/// A registered user.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user id.
    pub id: String,
    /// A unique address.
    pub email: String,
}

/// What a login hands out.
#[derive(Debug, Clone)]
pub struct Login {
    /// The value of the session cookie.
    pub cookie: String,
    /// The access JWT.
    pub access_token: String,
    /// The refresh JWT.
    pub refresh_token: String,
}

/// Registers a new user (unique e-mail, [`PASSWORD`]) at `base`.
pub async fn register(http: &Client, base: &str, display_name: &str) -> Account {
    let email = format!("user-{}@example.com", token());
    let r = http
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "display_name": display_name}))
        .send()
        .await
        .expect("register request");
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::CREATED, "register at {base}: {body}");
    Account {
        id: body["id"].as_str().expect("user id").to_owned(),
        email,
    }
}

/// Logs `account` in at `base`; the cookie comes from `Set-Cookie`.
pub async fn login(http: &Client, base: &str, account: &Account) -> Login {
    let r = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": account.email, "password": PASSWORD}))
        .send()
        .await
        .expect("login request");
    let status = r.status();
    let cookie = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{COOKIE_NAME}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "login at {base}: {body}");
    Login {
        cookie: cookie
            .filter(|c| !c.is_empty())
            .expect("login sets the session cookie"),
        access_token: body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned(),
        refresh_token: body["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_owned(),
    }
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    /// The user id.
    pub id: String,
    /// Its address.
    pub email: String,
    /// An access JWT.
    pub token: String,
    /// The session cookie's value.
    pub cookie: String,
}

/// Registers and logs in a new user at `base`.
pub async fn user(http: &Client, base: &str) -> User {
    let account = register(http, base, "Test").await;
    let login = login(http, base, &account).await;
    User {
        id: account.id,
        email: account.email,
        token: login.access_token,
        cookie: login.cookie,
    }
}

/// Sends the session cookie by hand (moving it between instances the way a load
/// balancer does).
pub fn with_cookie(request: RequestBuilder, login: &Login) -> RequestBuilder {
    request.header(COOKIE, format!("{COOKIE_NAME}={}", login.cookie))
}

/// Authenticates with the access token instead.
pub fn with_bearer(request: RequestBuilder, login: &Login) -> RequestBuilder {
    request.bearer_auth(&login.access_token)
}

/// Sends `request` and returns the status and the JSON body (`Null` when there is
/// none).
pub async fn call(request: RequestBuilder) -> (StatusCode, Value) {
    let r = request.send().await.expect("request sent and answered");
    let status = r.status();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Like [`call`] but keeps the whole response (headers).
pub async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("request sent and answered")
}

/// A request with `user`'s Bearer token; returns status and JSON body.
pub async fn api(
    http: &Client,
    method: Method,
    url: String,
    user: &User,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url).bearer_auth(&user.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    call(req).await
}

/// A workspace owned by `owner` with `members` added; returns its id.
pub async fn workspace(http: &Client, base: &str, owner: &User, members: &[&User]) -> String {
    let (status, body) = api(
        http,
        Method::POST,
        format!("{base}/api/workspaces"),
        owner,
        Some(json!({"name": "test"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let wid = body["id"].as_str().expect("workspace id").to_owned();
    for m in members {
        let (status, body) = api(
            http,
            Method::POST,
            format!("{base}/api/workspaces/{wid}/members"),
            owner,
            Some(json!({"email": m.email, "role": "member"})),
        )
        .await;
        assert!(status.is_success(), "add member: {status} {body}");
    }
    wid
}

/// `POST …/messages` over REST; returns the message.
pub async fn post_message(http: &Client, base: &str, user: &User, wid: &str, body: &str) -> Value {
    let (status, msg) = api(
        http,
        Method::POST,
        format!("{base}/api/workspaces/{wid}/messages"),
        user,
        Some(json!({"body": body})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{msg}");
    msg
}

/// All `seq`s of the workspace over REST, ascending.
pub async fn rest_seqs(http: &Client, base: &str, user: &User, wid: &str) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let url = match before {
            Some(b) => format!("{base}/api/workspaces/{wid}/messages?limit=100&before={b}"),
            None => format!("{base}/api/workspaces/{wid}/messages?limit=100"),
        };
        let (status, page) = api(http, Method::GET, url, user, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items").clone();
        seqs.extend(items.iter().map(|m| m["seq"].as_i64().expect("seq")));
        match page["next_cursor"].as_str() {
            Some(c) => before = Some(c.parse().expect("numeric cursor")),
            None => break,
        }
    }
    seqs.sort_unstable();
    seqs
}
