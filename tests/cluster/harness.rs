//! The harness: finds PostgreSQL and Redis (skipping loudly when one is missing,
//! failing under `CI=true`), gives each test its own database and Redis key prefix,
//! spawns real `shoal` processes against them, and kills every child it started when
//! it is dropped — on success and on panic alike. On a panic it first prints the log
//! of every process, because that is where the reason usually is.

use std::time::Duration;

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

pub(crate) use crate::common::{
    Node, OwnRedis, PATIENCE, PrefixCleanup, Services, TestDb, eventually, free_port,
    redis_connection, set_database_reachable, token,
};

/// Every test user's password.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// The session cookie's name (the default of `SESSION_COOKIE_NAME`).
pub(crate) const COOKIE_NAME: &str = "shoal_session";

/// The four shared secrets, identical for every instance of a test (≥ 32 chars).
const SECRETS: [(&str, &str); 4] = [
    (
        "SESSION_SECRET",
        "cluster-test-session-secret-0123456789abcdef",
    ),
    (
        "SESSION_ENCRYPTION_KEY",
        "cluster-test-encryption-key-0123456789abcdef",
    ),
    (
        "JWT_ACCESS_SECRET",
        "cluster-test-jwt-access-secret-0123456789abcdef",
    ),
    (
        "JWT_REFRESH_SECRET",
        "cluster-test-jwt-refresh-secret-0123456789abcdef",
    ),
];

/// `n` instances on one database and one Redis prefix.
pub(crate) struct Cluster {
    /// The instances, in start order. Declared first: dropped (killed) first.
    pub(crate) nodes: Vec<Node>,
    /// The test's database.
    pub(crate) db: TestDb,
    /// The Redis the instances use.
    pub(crate) redis_url: String,
    /// Their `REDIS_KEY_PREFIX`.
    pub(crate) prefix: String,
    /// A client without a cookie store and without a proxy.
    pub(crate) http: Client,
    /// The configuration every instance shares (overrides applied).
    env: Vec<(String, String)>,
    _cleanup: Option<PrefixCleanup>,
    /// Data dirs and logs; dropped last.
    dir: tempfile::TempDir,
}

/// What a test changes about the default cluster.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spec {
    /// How many instances to start (and wait for).
    pub(crate) instances: usize,
    /// Configuration on top of the defaults.
    pub(crate) env: Vec<(&'static str, String)>,
    /// A Redis other than the shared one (a `redis-server` the test owns).
    pub(crate) redis_url: Option<String>,
    /// A Redis Cluster (seed URLs) instead of a single Redis.
    pub(crate) redis_cluster: Option<Vec<String>>,
}

impl Spec {
    /// `instances` instances with the defaults.
    pub(crate) fn new(instances: usize) -> Spec {
        Spec {
            instances,
            ..Spec::default()
        }
    }

    /// Sets one configuration key for every instance.
    pub(crate) fn with(mut self, key: &'static str, value: impl ToString) -> Spec {
        self.env.push((key, value.to_string()));
        self
    }

    /// Uses this Redis instead of the shared one.
    pub(crate) fn redis(mut self, url: String) -> Spec {
        self.redis_url = Some(url);
        self
    }

    /// Uses this Redis Cluster (`REDIS_CLUSTER_NODES`) instead of the shared Redis.
    pub(crate) fn redis_cluster(mut self, nodes: Vec<String>) -> Spec {
        self.redis_cluster = Some(nodes);
        self
    }
}

impl Cluster {
    /// A fresh database and prefix, `spec.instances` instances started and ready.
    pub(crate) async fn start(services: &Services, spec: Spec) -> Cluster {
        let mut cluster = Cluster::prepare(services, &spec).await;
        for _ in 0..spec.instances {
            cluster.spawn_node();
        }
        cluster.wait_all_ready(PATIENCE).await;
        cluster
    }

    /// A fresh database and prefix, no instance started yet.
    pub(crate) async fn prepare(services: &Services, spec: &Spec) -> Cluster {
        let db = TestDb::create(&services.admin_url).await;
        let prefix = format!("t{}", token());
        let redis_url = spec
            .redis_url
            .clone()
            .unwrap_or_else(|| services.redis_url.clone());
        let mut env: Vec<(String, String)> = vec![
            ("HOST".into(), "127.0.0.1".into()),
            ("DATABASE_URL".into(), db.url.clone()),
            ("REDIS_URL".into(), redis_url.clone()),
            ("REDIS_KEY_PREFIX".into(), prefix.clone()),
            ("LOG_FORMAT".into(), "json".into()),
            ("REGISTRY_HEARTBEAT".into(), "1".into()),
            // Budgets are the subject of their own tests; elsewhere they must not bite.
            ("RATE_LIMIT_AUTH_PER_MIN".into(), "100000".into()),
            ("RATE_LIMIT_IP_PER_MIN".into(), "100000".into()),
            ("RATE_LIMIT_USER_PER_MIN".into(), "100000".into()),
            // Tests run in parallel against one PostgreSQL (max_connections 100).
            ("DB_POOL_MIN".into(), "1".into()),
            ("DB_POOL_MAX".into(), "3".into()),
        ];
        env.extend(
            SECRETS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        for (key, value) in &spec.env {
            env.retain(|(k, _)| k != key);
            env.push(((*key).to_owned(), value.clone()));
        }
        if let Some(nodes) = &spec.redis_cluster {
            env.retain(|(k, _)| k != "REDIS_URL");
            env.push(("REDIS_CLUSTER_NODES".into(), nodes.join(",")));
        }
        // A test's own Redis (or cluster) dies with it; the shared one is cleaned up.
        let shared = spec.redis_url.is_none() && spec.redis_cluster.is_none();
        let cleanup = shared.then(|| PrefixCleanup {
            redis_url: redis_url.clone(),
            prefix: prefix.clone(),
        });
        Cluster {
            nodes: Vec::new(),
            db,
            redis_url,
            prefix,
            http: plain_client(),
            env,
            _cleanup: cleanup,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Starts one more instance (`{prefix}-{n}`) on a free port, without waiting for
    /// it; returns its index.
    pub(crate) fn spawn_node(&mut self) -> usize {
        let index = self.nodes.len();
        let id = format!("{}-{}", self.prefix, index + 1);
        let data_dir = self.dir.path().join(&id);
        std::fs::create_dir_all(&data_dir).expect("create a data dir");
        let mut env = self.env.clone();
        env.push(("PORT".into(), free_port().to_string()));
        env.push(("INSTANCE_ID".into(), id.clone()));
        env.push(("DATA_DIR".into(), data_dir.display().to_string()));
        self.nodes
            .push(Node::spawn(&id, &env, &data_dir, self.dir.path()));
        index
    }

    /// Waits until every instance is ready (each bounded by `patience`).
    pub(crate) async fn wait_all_ready(&mut self, patience: Duration) {
        let http = self.http.clone();
        for node in &mut self.nodes {
            node.wait_ready(&http, patience).await;
        }
    }

    /// The `i`-th instance (0-based).
    pub(crate) fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// `GET {path}` on instance `i`.
    pub(crate) fn get(&self, i: usize, path: &str) -> RequestBuilder {
        self.http.get(self.nodes[i].url(path))
    }

    /// `POST {path}` on instance `i`.
    pub(crate) fn post(&self, i: usize, path: &str) -> RequestBuilder {
        self.http.post(self.nodes[i].url(path))
    }

    /// `PATCH {path}` on instance `i`.
    pub(crate) fn patch(&self, i: usize, path: &str) -> RequestBuilder {
        self.http.patch(self.nodes[i].url(path))
    }

    /// Registers a new user through instance `i`.
    pub(crate) async fn register(&self, i: usize, display_name: &str) -> Account {
        register_at(&self.http, &self.nodes[i].base, display_name).await
    }

    /// Logs `account` in through instance `i`.
    pub(crate) async fn login(&self, i: usize, account: &Account) -> Login {
        login_at(&self.http, &self.nodes[i].base, account).await
    }

    /// A new user, registered on instance `register_on` and logged in on `login_on`.
    pub(crate) async fn user(&self, register_on: usize, login_on: usize) -> (Account, Login) {
        let account = self.register(register_on, "Ada").await;
        let login = self.login(login_on, &account).await;
        (account, login)
    }

    /// Prints every instance's log (called on panic).
    fn dump_logs(&self) {
        for node in &self.nodes {
            eprintln!(
                "======== log of instance {} ({}) ========\n{}",
                node.id,
                node.base,
                node.log_text()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// A registered user.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) id: String,
    pub(crate) email: String,
}

/// What a login hands out.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    /// The value of the session cookie.
    pub(crate) cookie: String,
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
}

/// Registers a new user (unique e-mail, [`PASSWORD`]) at `base`.
pub(crate) async fn register_at(http: &Client, base: &str, display_name: &str) -> Account {
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
pub(crate) async fn login_at(http: &Client, base: &str, account: &Account) -> Login {
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

/// Sends the session cookie by hand (moving it between instances the way a load
/// balancer does).
pub(crate) fn with_cookie(request: RequestBuilder, login: &Login) -> RequestBuilder {
    request.header(COOKIE, format!("{COOKIE_NAME}={}", login.cookie))
}

/// Authenticates with the access token instead.
pub(crate) fn with_bearer(request: RequestBuilder, login: &Login) -> RequestBuilder {
    request.bearer_auth(&login.access_token)
}

/// A plain client: no cookie store, no system proxy, every request bounded.
pub(crate) fn plain_client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("build a reqwest client")
}

/// Sends `request` and returns the status and the JSON body (`Null` when there is
/// none).
pub(crate) async fn call(request: RequestBuilder) -> (StatusCode, Value) {
    let r = request.send().await.expect("request sent and answered");
    let status = r.status();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Like [`call`] but keeps the whole response (headers).
pub(crate) async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("request sent and answered")
}

/// `GET /api/me` on each of `instances` with the login's cookie and with its access
/// token: both answer 200 for the same user. Returns the cookie answers' bodies.
pub(crate) async fn me_on(
    cluster: &Cluster,
    login: &Login,
    instances: impl IntoIterator<Item = usize>,
) -> Vec<Value> {
    let mut bodies = Vec::new();
    for i in instances {
        let (status, body) = call(with_cookie(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "cookie on instance {}: {body}",
            i + 1
        );
        let (status, by_token) = call(with_bearer(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "bearer on instance {}: {by_token}",
            i + 1
        );
        assert_eq!(by_token["id"], body["id"], "bearer on instance {}", i + 1);
        bodies.push(body);
    }
    bodies
}

/// After a logout: the cookie and the access token get 401 with a JSON error on each of
/// `instances`.
pub(crate) async fn assert_logged_out_on(
    cluster: &Cluster,
    login: &Login,
    instances: impl IntoIterator<Item = usize>,
) {
    for i in instances {
        let (status, body) = call(with_cookie(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "cookie on instance {}: {body}",
            i + 1
        );
        assert!(body["error"]["code"].is_string(), "a JSON error: {body}");

        let (status, body) = call(with_bearer(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "access token on instance {}: {body}",
            i + 1
        );
    }
}

/// A numeric response header.
pub(crate) fn header_u64(r: &Response, name: &str) -> Option<u64> {
    r.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// Spends a per-user budget of `limit` requests with `GET /api/me`, round-robin over
/// every instance: each answers 200 and counts the shared budget down.
pub(crate) async fn spend_user_budget(cluster: &Cluster, login: &Login, limit: u64) {
    for n in 0..limit {
        let i = n as usize % cluster.nodes.len();
        let r = send(with_cookie(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "request {} on instance {}",
            n + 1,
            i + 1
        );
        assert_eq!(
            header_u64(&r, "ratelimit-remaining"),
            Some(limit - 1 - n),
            "request {}",
            n + 1
        );
    }
}

/// A 429 past a budget of `limit`: `Retry-After`, the `RateLimit-*` headers and the
/// JSON error.
pub(crate) async fn assert_limited(r: Response, limit: u64, what: &str) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let retry_after = header_u64(&r, reqwest::header::RETRY_AFTER.as_str());
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "{what}: Retry-After {retry_after:?}"
    );
    assert_eq!(header_u64(&r, "ratelimit-limit"), Some(limit), "{what}");
    assert_eq!(header_u64(&r, "ratelimit-remaining"), Some(0), "{what}");
    let body: Value = r.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "rate_limited", "{what}: {body}");
}
