//! The harness: `spawn_app()` builds a real Shoal on a random port with its own
//! SQLite database under a fresh temporary `DATA_DIR`, and returns a [`TestApp`]
//! with typed helpers that read like a user's session.

use reqwest::header::HeaderMap;
use reqwest::{Client, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal::app::Stopped;
use shoal::config::Config;

use shoal_testkit::InProcessApp;
pub(crate) use shoal_testkit::{PASSWORD, PATIENCE, cookie_client, plain_client};

/// A running application.
pub(crate) struct TestApp {
    /// `http://127.0.0.1:{port}`.
    pub(crate) address: String,
    /// A client without a cookie store (Bearer and anonymous requests).
    pub(crate) client: Client,
    /// The application (dropped before the database below).
    app: InProcessApp,
    /// Keeps the database alive for the test's lifetime.
    _data_dir: tempfile::TempDir,
}

/// The body of a successful login.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoginBody {
    pub(crate) user: Value,
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
    pub(crate) token_type: String,
    pub(crate) expires_in: u64,
}

/// A registered, logged-in user.
pub(crate) struct TestUser {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) display_name: String,
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
    /// A client whose cookie store holds this user's session cookie.
    pub(crate) cookie_client: Client,
    /// The session cookie as sent back: `shoal_session=…`.
    pub(crate) session_cookie: String,
}

/// A unique e-mail address for this test.
pub(crate) fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Spawns the application with the default test configuration.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns the application, `overrides` replacing the test defaults.
pub(crate) async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let data_dir = tempfile::TempDir::new().expect("create a temporary DATA_DIR");
    let dir = data_dir
        .path()
        .to_str()
        .expect("utf-8 temp path")
        .to_owned();
    let mut pairs: Vec<(String, String)> = vec![
        ("PORT".into(), "0".into()),
        ("HOST".into(), "127.0.0.1".into()),
        ("DATA_DIR".into(), dir),
        ("RATE_LIMIT_AUTH_PER_MIN".into(), "100000".into()),
        (
            "RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN".into(),
            "100000".into(),
        ),
        ("RATE_LIMIT_IP_PER_MIN".into(), "100000".into()),
        ("RATE_LIMIT_USER_PER_MIN".into(), "100000".into()),
    ];
    for (key, value) in overrides {
        pairs.retain(|(k, _)| k != key);
        pairs.push(((*key).to_owned(), (*value).to_owned()));
    }
    let config = Config::from_pairs(pairs).expect("the test configuration is valid");
    let app = InProcessApp::start(config)
        .await
        .unwrap_or_else(|e| panic!("the application builds: {e}"));
    TestApp {
        address: app.address.clone(),
        client: plain_client(),
        app,
        _data_dir: data_dir,
    }
}

impl TestApp {
    /// The absolute URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The application's state (its database, for tests that set rows up directly).
    pub(crate) fn state(&self) -> &shoal::state::AppState {
        &self.app.state
    }

    /// Stops the server gracefully and waits for it.
    pub(crate) async fn stop(self) -> Stopped {
        self.app.stop().await
    }

    /// `POST /api/auth/register`.
    pub(crate) async fn register(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Response {
        self.client
            .post(self.url("/api/auth/register"))
            .json(&json!({ "email": email, "password": password, "display_name": display_name }))
            .send()
            .await
            .expect("register request")
    }

    /// `POST /api/auth/login` through `client`.
    pub(crate) async fn login_with(
        &self,
        client: &Client,
        email: &str,
        password: &str,
    ) -> Response {
        client
            .post(self.url("/api/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login request")
    }

    /// `POST /api/auth/login`, asserting success.
    pub(crate) async fn login(&self, email: &str, password: &str) -> LoginBody {
        let response = self.login_with(&self.client, email, password).await;
        assert_eq!(response.status(), StatusCode::OK, "login should succeed");
        response.json().await.expect("login body")
    }

    /// `POST /api/auth/refresh`.
    pub(crate) async fn refresh(&self, refresh_token: &str) -> Response {
        self.client
            .post(self.url("/api/auth/refresh"))
            .json(&json!({ "refresh_token": refresh_token }))
            .send()
            .await
            .expect("refresh request")
    }

    /// Registers and logs in a fresh user (the login goes through the user's own
    /// cookie-store client so that its session cookie is kept).
    pub(crate) async fn signed_up_user(&self) -> TestUser {
        self.signed_up_user_with_email(&unique_email()).await
    }

    /// [`TestApp::signed_up_user`] with this address.
    pub(crate) async fn signed_up_user_with_email(&self, email: &str) -> TestUser {
        let email = email.to_owned();
        let display_name = format!("Tester {}", &email[5..13]);
        let response = self.register(&email, PASSWORD, &display_name).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "register should succeed"
        );
        let client = cookie_client();
        let response = self.login_with(&client, &email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "login should succeed");
        let session_cookie = header(response.headers(), "set-cookie")
            .split(';')
            .next()
            .expect("name=value")
            .to_owned();
        let body: LoginBody = response.json().await.expect("login body");
        TestUser {
            session_cookie,
            id: body.user["id"].as_str().expect("user id").to_owned(),
            email,
            display_name,
            access_token: body.access_token,
            refresh_token: body.refresh_token,
            cookie_client: client,
        }
    }

    /// `GET path` with the user's Bearer token.
    pub(crate) async fn get(&self, user: &TestUser, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&user.access_token)
            .send()
            .await
            .expect("GET request")
    }

    /// `POST path` with a JSON body and the user's Bearer token.
    pub(crate) async fn post(&self, user: &TestUser, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(&user.access_token)
            .json(body)
            .send()
            .await
            .expect("POST request")
    }

    /// `PATCH path` with a JSON body and the user's Bearer token.
    pub(crate) async fn patch(&self, user: &TestUser, path: &str, body: &Value) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(&user.access_token)
            .json(body)
            .send()
            .await
            .expect("PATCH request")
    }

    /// `GET /api/me` with nothing but the raw session cookie header.
    pub(crate) async fn me_by_cookie(&self, cookie: &str) -> Response {
        self.client
            .get(self.url("/api/me"))
            .header("cookie", cookie)
            .send()
            .await
            .expect("GET /api/me")
    }

    /// `DELETE path` with the user's Bearer token.
    pub(crate) async fn delete(&self, user: &TestUser, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(&user.access_token)
            .send()
            .await
            .expect("DELETE request")
    }

    /// Creates a workspace, asserting 201; returns it.
    pub(crate) async fn create_workspace(&self, user: &TestUser, name: &str) -> Value {
        let response = self
            .post(user, "/api/workspaces", &json!({ "name": name }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "create workspace");
        response.json().await.expect("workspace body")
    }

    /// Creates a workspace and returns its id.
    pub(crate) async fn workspace_id(&self, user: &TestUser) -> String {
        let ws = self.create_workspace(user, "Team").await;
        ws["id"].as_str().expect("workspace id").to_owned()
    }

    /// Adds `member` to `wid` as the owner `owner`, asserting 201.
    pub(crate) async fn add_member(&self, owner: &TestUser, wid: &str, member: &TestUser) {
        let response = self
            .post(
                owner,
                &format!("/api/workspaces/{wid}/members"),
                &json!({ "email": member.email, "role": "member" }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "add member");
    }

    /// Creates a task, asserting 201; returns it.
    pub(crate) async fn create_task(&self, user: &TestUser, wid: &str, body: &Value) -> Value {
        let response = self
            .post(user, &format!("/api/workspaces/{wid}/tasks"), body)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "create task");
        response.json().await.expect("task body")
    }

    /// Posts a chat message; returns the response.
    pub(crate) async fn post_message(&self, user: &TestUser, wid: &str, body: &Value) -> Response {
        self.post(user, &format!("/api/workspaces/{wid}/messages"), body)
            .await
    }

    /// The instance's `DATA_DIR` (its SQLite database is `shoal.db` there).
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    /// The body of `GET /metrics`.
    pub(crate) async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics text")
    }
}

/// A header as a string, panicking with its name when absent.
pub(crate) fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("response has no {name} header"))
        .to_str()
        .expect("header is ASCII")
}

/// A 422 `validation_failed` whose first failing field is `field` (plus everything
/// [`assert_error`] checks).
pub(crate) async fn assert_invalid(response: Response, field: &str) -> Value {
    let error = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(
        error["fields"][0]["field"], field,
        "failing field in {error}"
    );
    error
}

/// Asserts that `response` is the API's error answer with `status` and `code`:
/// `X-Instance-Id` and `X-Request-Id` present, a JSON `{"error": {code, message,
/// request_id}}` body whose `request_id` equals the header. Returns the `error` object.
pub(crate) async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status of {}", response.url());
    let headers = response.headers().clone();
    assert!(
        !header(&headers, "x-instance-id").is_empty(),
        "X-Instance-Id is set"
    );
    let request_id = header(&headers, "x-request-id").to_owned();
    assert!(
        header(&headers, "content-type").starts_with("application/json"),
        "error bodies are JSON"
    );
    let body: Value = response.json().await.expect("error body is JSON");
    let error = body["error"].clone();
    assert_eq!(error["code"], code, "error code in {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error message in {body}"
    );
    assert_eq!(
        error["request_id"],
        request_id.as_str(),
        "request_id equals the header"
    );
    error
}

pub(crate) use shoal_testkit::metric_value;
