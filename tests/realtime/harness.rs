//! The harness: real `shoal` processes (embedded on SQLite, or distributed on one
//! PostgreSQL database and one Redis prefix per test), users and workspaces made over
//! REST, and [`Sio`]: a real Socket.IO v4 client (`rust_socketio`) whose events land
//! in a channel that tests await. Every child process is killed when dropped; on a
//! panic the logs of all processes are printed first.

use std::time::Duration;

use futures::FutureExt;
use reqwest::header::SET_COOKIE;
use reqwest::{Client, StatusCode};
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder, ReconnectSettings};
use rust_socketio::{Payload, TransportType};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(crate) use crate::common::{Node, PATIENCE, Services, TestDb, free_port, token};

pub(crate) const PASSWORD: &str = "correct horse battery staple";
pub(crate) const COOKIE_NAME: &str = "shoal_session";

const SECRETS: [(&str, &str); 4] = [
    (
        "SESSION_SECRET",
        "realtime-test-session-secret-0123456789abcdef",
    ),
    (
        "SESSION_ENCRYPTION_KEY",
        "realtime-test-encryption-key-0123456789abcdef",
    ),
    (
        "JWT_ACCESS_SECRET",
        "realtime-test-jwt-access-secret-0123456789abcdef",
    ),
    (
        "JWT_REFRESH_SECRET",
        "realtime-test-jwt-refresh-secret-0123456789abcdef",
    ),
];

pub(crate) fn plain_client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("build a reqwest client")
}

// ---------------------------------------------------------------- processes

/// Instances of one test: one embedded instance, or several sharing PostgreSQL + Redis.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
    pub(crate) http: Client,
    env: Vec<(String, String)>,
    embedded: bool,
    _db: Option<TestDb>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn base_env() -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("HOST".into(), "127.0.0.1".into()),
            ("LOG_FORMAT".into(), "json".into()),
            ("LOG_LEVEL".into(), "info,shoal=debug".into()),
            ("RATE_LIMIT_AUTH_PER_MIN".into(), "100000".into()),
            ("RATE_LIMIT_IP_PER_MIN".into(), "100000".into()),
            ("RATE_LIMIT_USER_PER_MIN".into(), "100000".into()),
            ("SHUTDOWN_TIMEOUT".into(), "10".into()),
            ("REGISTRY_HEARTBEAT".into(), "1".into()),
            ("HEALTH_CHECK_TIMEOUT".into(), "500".into()),
        ];
        env.extend(
            SECRETS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }

    fn apply(env: &mut Vec<(String, String)>, overrides: &[(&str, &str)]) {
        for (key, value) in overrides {
            env.retain(|(k, _)| k != key);
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
    }

    /// One embedded instance (SQLite under its own `DATA_DIR`, everything in-process).
    pub(crate) async fn embedded(overrides: &[(&str, &str)]) -> Cluster {
        let mut env = Self::base_env();
        Self::apply(&mut env, overrides);
        let mut cluster = Cluster {
            nodes: Vec::new(),
            http: plain_client(),
            env,
            embedded: true,
            _db: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        cluster.start_node().await;
        cluster
    }

    /// `n` instances on a fresh PostgreSQL database and Redis prefix.
    pub(crate) async fn distributed(
        services: &Services,
        redis_url: Option<String>,
        n: usize,
        overrides: &[(&str, &str)],
    ) -> Cluster {
        let db = TestDb::create(&services.admin_url).await;
        let mut env = Self::base_env();
        env.push(("DATABASE_URL".into(), db.url.clone()));
        env.push((
            "REDIS_URL".into(),
            redis_url.unwrap_or_else(|| services.redis_url.clone()),
        ));
        env.push(("REDIS_KEY_PREFIX".into(), format!("rt{}", token())));
        env.push(("DB_POOL_MIN".into(), "1".into()));
        env.push(("DB_POOL_MAX".into(), "4".into()));
        Self::apply(&mut env, overrides);
        let mut cluster = Cluster {
            nodes: Vec::new(),
            http: plain_client(),
            env,
            embedded: false,
            _db: Some(db),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for _ in 0..n {
            cluster.start_node().await;
        }
        cluster
    }

    /// The value this cluster's instances get for `key` (DATABASE_URL, REDIS_KEY_PREFIX, …).
    pub(crate) fn env_value(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Starts one more instance on a free port and waits until it is ready.
    pub(crate) async fn start_node(&mut self) -> usize {
        assert!(
            !self.embedded || self.nodes.is_empty(),
            "embedded mode runs one instance"
        );
        let index = self.nodes.len();
        let id = format!("node{}-{}", index + 1, token());
        let data_dir = self.dir.path().join(&id);
        std::fs::create_dir_all(&data_dir).expect("create a data dir");
        let mut env = self.env.clone();
        env.push(("PORT".into(), free_port().to_string()));
        env.push(("INSTANCE_ID".into(), id.clone()));
        env.push(("DATA_DIR".into(), data_dir.display().to_string()));
        let mut node = Node::spawn(&id, &env, &data_dir, self.dir.path());
        node.wait_ready(&self.http, PATIENCE).await;
        self.nodes.push(node);
        index
    }

    pub(crate) fn base(&self, i: usize) -> String {
        self.nodes[i].base.clone()
    }

    /// `GET /health/ready` status of instance `i`.
    pub(crate) async fn ready_status(&self, i: usize) -> Option<StatusCode> {
        self.http
            .get(self.nodes[i].url("/health/ready"))
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "======== log of {} ({}) ========\n{}",
                    node.id,
                    node.base,
                    node.log_text()
                );
            }
        }
    }
}

// ---------------------------------------------------------------- REST

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) token: String,
    pub(crate) cookie: String,
}

pub(crate) async fn user(http: &Client, base: &str) -> User {
    let email = format!("user-{}@example.com", token());
    let r = http
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "display_name": "Rt"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.expect("user")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{COOKIE_NAME}=")))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    let body: Value = r.json().await.expect("login body");
    User {
        id,
        email,
        token: body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned(),
        cookie,
    }
}

/// A request with `user`'s Bearer token; returns status and JSON body.
pub(crate) async fn api(
    http: &Client,
    method: reqwest::Method,
    url: String,
    user: &User,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url).bearer_auth(&user.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request answered");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A workspace owned by `owner` with `members` added; returns its id.
pub(crate) async fn workspace(
    http: &Client,
    base: &str,
    owner: &User,
    members: &[&User],
) -> String {
    let (status, body) = api(
        http,
        reqwest::Method::POST,
        format!("{base}/api/workspaces"),
        owner,
        Some(json!({"name": "rt"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let wid = body["id"].as_str().expect("workspace id").to_owned();
    for m in members {
        let (status, body) = api(
            http,
            reqwest::Method::POST,
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
pub(crate) async fn post_message(
    http: &Client,
    base: &str,
    user: &User,
    wid: &str,
    body: &str,
) -> Value {
    let (status, msg) = api(
        http,
        reqwest::Method::POST,
        format!("{base}/api/workspaces/{wid}/messages"),
        user,
        Some(json!({"body": body})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{msg}");
    msg
}

/// All `seq`s of the workspace over REST, ascending.
pub(crate) async fn rest_seqs(http: &Client, base: &str, user: &User, wid: &str) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let url = match before {
            Some(b) => format!("{base}/api/workspaces/{wid}/messages?limit=100&before={b}"),
            None => format!("{base}/api/workspaces/{wid}/messages?limit=100"),
        };
        let (status, page) = api(http, reqwest::Method::GET, url, user, None).await;
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

/// Polls `probe` until it returns `Some` (bounded by [`PATIENCE`]).
pub(crate) async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::common::eventually(what, PATIENCE, probe).await
}

// ---------------------------------------------------------------- Socket.IO

/// How a client authenticates its handshake.
pub(crate) enum Auth<'a> {
    Token(&'a str),
    Cookie(&'a str),
    Nothing,
}

/// One received server → client item.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// The event name; `$connect`, `$error`, `$close`, `$dropped` for the lifecycle.
    pub(crate) event: String,
    pub(crate) data: Value,
}

/// A real Socket.IO client whose events are queued for the test to await.
pub(crate) struct Sio {
    client: SioClient,
    events: mpsc::UnboundedReceiver<Received>,
    /// Everything taken from the queue so far (for "received nothing" checks).
    pub(crate) seen: Vec<Received>,
}

fn payload_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) => {
            let first = if values.is_empty() {
                Value::Null
            } else {
                values.remove(0)
            };
            // Acks arrive as the raw argument array.
            match first {
                Value::Array(mut inner) if !inner.is_empty() => inner.remove(0),
                other => other,
            }
        }
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        Payload::Binary(_) => Value::Null,
    }
}

impl Sio {
    /// Opens the engine.io connection and sends CONNECT; does not wait for the answer.
    pub(crate) async fn open(base: &str, auth: Auth<'_>) -> Sio {
        let (tx, events) = mpsc::unbounded_channel::<Received>();
        let push = |tx: &mpsc::UnboundedSender<Received>, name: &'static str| {
            let tx = tx.clone();
            move |payload: Payload, _c: SioClient| {
                let _ = tx.send(Received {
                    event: name.into(),
                    data: payload_value(payload),
                });
                async {}.boxed()
            }
        };
        let any_tx = tx.clone();
        let dropped_tx = tx.clone();
        let mut builder = ClientBuilder::new(format!("{base}/"))
            .namespace("/")
            // WebSocket from the start: rust_socketio's polling → WebSocket upgrade
            // can lose a packet emitted while the upgrade is in flight.
            .transport_type(TransportType::Websocket)
            // One attempt on a dropped transport, only to learn it dropped: tests
            // reconnect by hand (to the instance they choose) like an app would.
            .reconnect(true)
            .reconnect_on_disconnect(false)
            .max_reconnect_attempts(1)
            .reconnect_delay(10, 20)
            .on_reconnect(move || {
                let _ = dropped_tx.send(Received {
                    event: "$dropped".into(),
                    data: Value::Null,
                });
                async { ReconnectSettings::new() }.boxed()
            })
            .on("open", push(&tx, "$connect"))
            .on("error", push(&tx, "$error"))
            .on("close", push(&tx, "$close"))
            .on_any(move |event, payload, _c| {
                let _ = any_tx.send(Received {
                    event: String::from(event),
                    data: payload_value(payload),
                });
                async {}.boxed()
            });
        builder = match auth {
            Auth::Token(t) => builder.auth(json!({ "token": t })),
            Auth::Cookie(c) => builder.opening_header("Cookie", format!("{COOKIE_NAME}={c}")),
            Auth::Nothing => builder,
        };
        let client = builder
            .connect()
            .await
            .expect("engine.io connection opened");
        Sio {
            client,
            events,
            seen: Vec::new(),
        }
    }

    /// Connects and waits for the namespace CONNECT (panics on `connect_error`).
    pub(crate) async fn connect(base: &str, auth: Auth<'_>) -> Sio {
        let mut sio = Sio::open(base, auth).await;
        let first = sio.next_lifecycle().await;
        assert_eq!(
            first.event, "$connect",
            "expected a connection, got {first:?}"
        );
        sio
    }

    async fn next_lifecycle(&mut self) -> Received {
        self.next_where(|r| r.event.starts_with('$')).await
    }

    /// The `connect_error` reason of a refused handshake.
    pub(crate) async fn refusal(base: &str, auth: Auth<'_>) -> String {
        let mut sio = Sio::open(base, auth).await;
        let first = sio.next_lifecycle().await;
        assert_eq!(
            first.event, "$error",
            "expected connect_error, got {first:?}"
        );
        let text = first
            .data
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| first.data.to_string());
        let json = text.split_once(": ").map(|(_, j)| j).unwrap_or(&text);
        let value: Value = serde_json::from_str(json).unwrap_or(Value::String(json.into()));
        let _ = sio.client.disconnect().await;
        value["message"].as_str().unwrap_or_default().to_owned()
    }

    /// The next received item matching `pred` (others stay in `seen`).
    pub(crate) async fn next_where(&mut self, mut pred: impl FnMut(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let item = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no matching event within {PATIENCE:?}; seen: {:?}",
                        self.seen
                    )
                })
                .expect("event channel open");
            self.seen.push(item.clone());
            if pred(&item) {
                return item;
            }
        }
    }

    /// The next `event`'s data.
    pub(crate) async fn next_event(&mut self, event: &str) -> Value {
        self.next_where(|r| r.event == event).await.data
    }

    /// Waits until the transport dropped or the server disconnected the socket.
    pub(crate) async fn dropped(&mut self) {
        self.next_where(|r| r.event == "$dropped" || r.event == "$close")
            .await;
    }

    /// Emits `event` with `data` and awaits the ack.
    pub(crate) async fn call(&self, event: &str, data: Value) -> Value {
        let (tx, rx) = tokio::sync::oneshot::channel::<Value>();
        let tx = std::sync::Mutex::new(Some(tx));
        self.client
            .emit_with_ack(
                event,
                data,
                PATIENCE,
                move |payload: Payload, _c: SioClient| {
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send(payload_value(payload));
                    }
                    async {}.boxed()
                },
            )
            .await
            .expect("emit with ack");
        tokio::time::timeout(PATIENCE, rx)
            .await
            .unwrap_or_else(|_| panic!("no ack for {event}"))
            .expect("ack callback kept")
    }

    pub(crate) async fn join(&self, wid: &str, since_seq: Option<i64>) -> Value {
        let mut req = json!({ "workspace_id": wid });
        if let Some(s) = since_seq {
            req["since_seq"] = json!(s);
        }
        let ack = self.call("workspace:join", req).await;
        assert_eq!(ack["ok"], true, "join refused: {ack}");
        ack
    }

    pub(crate) async fn send(&self, wid: &str, body: &str, client_id: &str) -> Value {
        let ack = self
            .call(
                "message:send",
                json!({ "workspace_id": wid, "body": body, "client_id": client_id }),
            )
            .await;
        assert_eq!(ack["ok"], true, "message:send refused: {ack}");
        ack
    }

    /// The next `message:new` of `wid`.
    pub(crate) async fn next_message(&mut self, wid: &str) -> Value {
        let wid = wid.to_owned();
        self.next_where(|r| r.event == "message:new" && r.data["workspace_id"] == wid.as_str())
            .await
            .data
    }

    /// The `message:new` of `wid` with this `seq` (earlier ones stay in `seen`).
    pub(crate) async fn message_with_seq(&mut self, wid: &str, seq: i64) -> Value {
        let wid = wid.to_owned();
        self.next_where(|r| {
            r.event == "message:new"
                && r.data["workspace_id"] == wid.as_str()
                && r.data["seq"] == seq
        })
        .await
        .data
    }

    /// Moves everything already received into `seen` (events that arrived before an
    /// ack are queued before the ack's callback ran).
    pub(crate) fn drain(&mut self) {
        while let Ok(item) = self.events.try_recv() {
            self.seen.push(item);
        }
    }

    /// Every `message:new` `seq` of `wid` received so far.
    pub(crate) fn seen_seqs(&mut self, wid: &str) -> Vec<i64> {
        self.drain();
        self.seen
            .iter()
            .filter(|r| r.event == "message:new" && r.data["workspace_id"] == wid)
            .filter_map(|r| r.data["seq"].as_i64())
            .collect()
    }

    pub(crate) async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}
