//! The harness: a whole local cluster — N real `shoal` processes behind a real nginx —
//! started, rolled and stopped by `scripts/local-cluster.sh`, the very script
//! docs/scaling.md tells users to run; one PostgreSQL database and one Redis prefix
//! per test. REST helpers and service discovery come from the realtime suite's
//! harness; [`Chat`] is a Socket.IO client whose operations fail softly, because here
//! the instance under a client is expected to go away.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::FutureExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Client;
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder, ReconnectSettings};
use rust_socketio::{Payload, TransportType};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(crate) use crate::common::{PrefixCleanup, TestDb, missing_service};
pub(crate) use crate::rt::{
    PATIENCE, Services, User, api, eventually, free_port, plain_client, rest_seqs, token, user,
    workspace,
};

const SECRETS: [(&str, &str); 4] = [
    (
        "SESSION_SECRET",
        "lb-test-session-secret-0123456789abcdef0123",
    ),
    (
        "SESSION_ENCRYPTION_KEY",
        "lb-test-encryption-key-0123456789abcdef0123",
    ),
    (
        "JWT_ACCESS_SECRET",
        "lb-test-jwt-access-secret-0123456789abcdef0",
    ),
    (
        "JWT_REFRESH_SECRET",
        "lb-test-jwt-refresh-secret-0123456789abcdef",
    ),
];

/// `nginx` on the PATH (Debian's package), or a loud skip / CI failure.
pub(crate) fn nginx_available() -> bool {
    let ok = Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        missing_service("nginx is not installed (apt-get install nginx; .ci/run does it)");
    }
    ok
}

/// The base environment of every instance (the script passes it through).
pub(crate) fn base_env(db_url: &str, redis_url: &str, prefix: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("HOST", "127.0.0.1"),
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "info"),
        ("RATE_LIMIT_AUTH_PER_MIN", "100000"),
        ("RATE_LIMIT_IP_PER_MIN", "100000"),
        ("RATE_LIMIT_USER_PER_MIN", "100000"),
        ("SHUTDOWN_TIMEOUT", "10"),
        ("REGISTRY_HEARTBEAT", "1"),
        ("HEALTH_CHECK_TIMEOUT", "500"),
        ("DB_POOL_MIN", "1"),
        ("DB_POOL_MAX", "4"),
    ]
    .iter()
    .chain(SECRETS.iter())
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.push(("DATABASE_URL".into(), db_url.to_owned()));
    env.push(("REDIS_URL".into(), redis_url.to_owned()));
    env.push(("REDIS_KEY_PREFIX".into(), prefix.to_owned()));
    env
}

/// Replaces or adds `overrides` in `env`.
pub(crate) fn apply(env: &mut Vec<(String, String)>, overrides: &[(&str, &str)]) {
    for (key, value) in overrides {
        env.retain(|(k, _)| k != key);
        env.push(((*key).to_owned(), (*value).to_owned()));
    }
}

/// A process environment with none of Shoal's keys but `env`.
pub(crate) fn command(program: impl AsRef<std::ffi::OsStr>, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(program);
    for key in shoal::config::KEYS {
        cmd.env_remove(key);
    }
    cmd.env_remove("SHOAL_CONFIG");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Instances plus nginx, run by `scripts/local-cluster.sh`; `down` when dropped.
pub(crate) struct LocalCluster {
    pub(crate) http: Client,
    pub(crate) ports: Vec<u16>,
    nginx_port: u16,
    env: Vec<(String, String)>,
    run_dir: tempfile::TempDir,
    _db: TestDb,
    _keys: PrefixCleanup,
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-cluster.sh")
}

impl LocalCluster {
    /// `local-cluster.sh up n`; `None` (after a loud skip) without the services or nginx.
    pub(crate) async fn up(n: usize, overrides: &[(&str, &str)]) -> Option<LocalCluster> {
        let services = Services::discover().await?;
        if !nginx_available() {
            return None;
        }
        let db = TestDb::create(&services.admin_url).await;
        let keys = PrefixCleanup {
            redis_url: services.redis_url.clone(),
            prefix: format!("lb{}", token()),
        };
        let mut env = base_env(&db.url, &services.redis_url, &keys.prefix);
        apply(&mut env, overrides);
        let run_dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let nginx_port = free_port();
        let ports_list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        env.extend([
            ("RUN_DIR".into(), run_dir.path().display().to_string()),
            ("SHOAL_BIN".into(), env!("CARGO_BIN_EXE_shoal").to_owned()),
            ("PORTS".into(), ports_list),
            ("NGINX_PORT".into(), nginx_port.to_string()),
        ]);
        let cluster = LocalCluster {
            http: plain_client(),
            ports,
            nginx_port,
            env,
            run_dir,
            _db: db,
            _keys: keys,
        };
        let out = cluster
            .script(&["up", &n.to_string()])
            .output()
            .expect("run local-cluster.sh");
        assert!(
            out.status.success(),
            "local-cluster.sh up failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        Some(cluster)
    }

    /// `scripts/local-cluster.sh ARGS` with this cluster's environment.
    pub(crate) fn script(&self, args: &[&str]) -> Command {
        let mut cmd = command("bash", &self.env);
        cmd.arg(script_path()).args(args).stdin(Stdio::null());
        cmd
    }

    /// nginx's address: what clients use.
    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.nginx_port)
    }

    /// Instance `i`'s id (the script names them `shoal-PORT`).
    pub(crate) fn instance_id(&self, i: usize) -> String {
        format!("shoal-{}", self.ports[i])
    }

    /// The pid of instance `i`, from the script's pid file.
    pub(crate) fn pid(&self, i: usize) -> Pid {
        let f = self
            .run_dir
            .path()
            .join(format!("instance-{}.pid", self.ports[i]));
        let pid: i32 = std::fs::read_to_string(&f)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        Pid::from_raw(pid)
    }

    /// SIGKILL instance `i` (no drain, no goodbye) and waits until it is gone, so
    /// that its sockets are closed: requests sent after this never reached it.
    pub(crate) async fn kill9(&self, i: usize) {
        let pid = self.pid(i);
        kill(pid, Signal::SIGKILL).expect("SIGKILL");
        eventually("the killed instance is gone", || async move {
            // Not our child (the script started it), so no waitpid: gone or a zombie.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            (kill(pid, None).is_err() || zombie).then_some(())
        })
        .await;
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.run_dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.push(self.run_dir.path().join("nginx/logs/error.log"));
        files.push(self.run_dir.path().join("nginx/logs/stderr.log"));
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            out.push_str(&format!("======== {} (tail)\n", f.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let _ = self.script(&["down"]).output();
    }
}

// ---------------------------------------------------------------- Socket.IO

/// One received server → client event.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// The event name; `$connect`, `$error`, `$close`, `$dropped` for the lifecycle.
    pub(crate) event: String,
    pub(crate) data: Value,
}

fn payload_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) => {
            let first = if values.is_empty() {
                Value::Null
            } else {
                values.remove(0)
            };
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

/// A Socket.IO client (WebSocket transport) whose calls return `None` instead of
/// panicking when the instance under it goes away; the caller reconnects.
pub(crate) struct Chat {
    client: SioClient,
    events: mpsc::UnboundedReceiver<Received>,
}

impl Chat {
    /// Connects through `base` with a Bearer token and waits for the namespace
    /// CONNECT; `None` on a refusal or a dropped transport.
    pub(crate) async fn connect(base: &str, token: &str) -> Option<Chat> {
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
        let client = ClientBuilder::new(format!("{base}/"))
            .namespace("/")
            .transport_type(TransportType::Websocket)
            // One attempt on a dropped transport, only to learn it dropped (the
            // `$dropped` event); the test then reconnects by hand, through nginx,
            // and rejoins, like an app would.
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
            .auth(json!({ "token": token }))
            .on("open", push(&tx, "$connect"))
            .on("error", push(&tx, "$error"))
            .on("close", push(&tx, "$close"))
            .on_any(move |event, payload, _c| {
                let _ = any_tx.send(Received {
                    event: String::from(event),
                    data: payload_value(payload),
                });
                async {}.boxed()
            })
            .connect()
            .await
            .ok()?;
        let mut chat = Chat { client, events };
        let first = chat.next_where(|r| r.event.starts_with('$')).await?;
        (first.event == "$connect").then_some(chat)
    }

    /// Connects (retrying while instances come and go) and joins `wid`.
    pub(crate) async fn join_through(
        base: &str,
        token: &str,
        wid: &str,
        since: Option<i64>,
    ) -> (Chat, Value) {
        eventually(
            "a Socket.IO client connects and joins through nginx",
            || async move {
                let chat = Chat::connect(base, token).await?;
                let mut req = json!({ "workspace_id": wid });
                if let Some(s) = since {
                    req["since_seq"] = json!(s);
                }
                let ack = chat.call("workspace:join", req).await?;
                (ack["ok"] == true).then_some((chat, ack))
            },
        )
        .await
    }

    /// The next event matching `pred` within [`PATIENCE`]; `None` if the channel
    /// closed or nothing came.
    pub(crate) async fn next_where(
        &mut self,
        mut pred: impl FnMut(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let item = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()??;
            if pred(&item) {
                return Some(item);
            }
        }
    }

    /// Emits and awaits the ack (bounded); `None` if the transport is gone.
    pub(crate) async fn call(&self, event: &str, data: Value) -> Option<Value> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Value>();
        let tx = std::sync::Mutex::new(Some(tx));
        self.client
            .emit_with_ack(
                event,
                data,
                Duration::from_secs(10),
                move |payload: Payload, _c: SioClient| {
                    if let Some(tx) = tx.lock().expect("ack lock").take() {
                        let _ = tx.send(payload_value(payload));
                    }
                    async {}.boxed()
                },
            )
            .await
            .ok()?;
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .ok()?
            .ok()
    }

    /// `message:send`; the acked `seq`, or `None` (retry with the same `client_id`).
    pub(crate) async fn send(&self, wid: &str, body: &str, client_id: &str) -> Option<i64> {
        let ack = self
            .call(
                "message:send",
                json!({ "workspace_id": wid, "body": body, "client_id": client_id }),
            )
            .await?;
        ack["seq"].as_i64()
    }

    pub(crate) async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

/// A receiver that follows a workspace through instance restarts: on a dropped
/// transport it reconnects through `base` and resumes with `since_seq`. Every
/// `message:new` seq lands in the returned channel.
pub(crate) fn follow(
    base: String,
    token: String,
    wid: String,
    chat: Chat,
    stop: tokio_util::sync::CancellationToken,
) -> (mpsc::UnboundedReceiver<i64>, tokio::task::JoinHandle<usize>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut chat = chat;
        let mut last: Option<i64> = None;
        let mut reconnects = 0;
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => break,
                r = chat.events.recv() => r,
            };
            match next {
                Some(r) if r.event == "message:new" && r.data["workspace_id"] == wid.as_str() => {
                    if let Some(seq) = r.data["seq"].as_i64() {
                        last = Some(last.map_or(seq, |l| l.max(seq)));
                        let _ = tx.send(seq);
                    }
                }
                Some(r) if !matches!(r.event.as_str(), "$close" | "$error" | "$dropped") => {}
                _ => {
                    chat.close().await;
                    reconnects += 1;
                    chat = Chat::join_through(&base, &token, &wid, Some(last.unwrap_or(0)))
                        .await
                        .0;
                }
            }
        }
        chat.close().await;
        reconnects
    });
    (rx, task)
}
