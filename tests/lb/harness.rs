//! The harness: a whole local cluster — N real `shoal` processes behind a real nginx —
//! started, rolled and stopped by `scripts/local-cluster.sh`, the very script
//! docs/scaling.md tells users to run; one PostgreSQL database and one Redis prefix
//! per test. Users, services and the Socket.IO client come from the test kit
//! (`shoal_testkit`); here the instance under a client is expected to go away, so
//! the tests use its `try_` calls, which fail softly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Client;
use serde_json::Value;
use tokio::sync::mpsc;

pub(crate) use shoal_testkit::{
    Auth, PATIENCE, PrefixCleanup, Services, Sio, TestDb, User, api, apply, command, eventually,
    free_port, missing_service, plain_client, post_message, rest_seqs, shoal_bin, token, user,
    workspace,
};

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
    let mut env = shoal_testkit::base_env();
    apply(
        &mut env,
        &[
            ("DATABASE_URL", db_url),
            ("REDIS_URL", redis_url),
            ("REDIS_KEY_PREFIX", prefix),
            ("DB_POOL_MIN", "1"),
            ("DB_POOL_MAX", "4"),
            // Every client of a test comes from 127.0.0.1: nginx's per-address limits
            // are out of the way unless a test sets its own.
            ("EDGE_HANDSHAKE_RATE", "1000000r/s"),
            ("EDGE_AUTH_RATE", "1000000r/s"),
        ],
    );
    env
}

/// Instances plus nginx, run by `scripts/local-cluster.sh`; `down` when dropped.
pub(crate) struct LocalCluster {
    pub(crate) http: Client,
    pub(crate) ports: Vec<u16>,
    nginx_port: u16,
    /// nginx's operator server (operator endpoints included).
    operator_port: u16,
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
        let operator_port = free_port();
        let ports_list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        env.extend([
            ("RUN_DIR".into(), run_dir.path().display().to_string()),
            ("SHOAL_BIN".into(), shoal_bin().display().to_string()),
            ("PORTS".into(), ports_list),
            ("NGINX_PORT".into(), nginx_port.to_string()),
            ("OPERATOR_PORT".into(), operator_port.to_string()),
        ]);
        let cluster = LocalCluster {
            http: plain_client(),
            ports,
            nginx_port,
            operator_port,
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

    /// nginx's operator server: the public one serves no operator endpoint.
    pub(crate) fn operator_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.operator_port)
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

    /// Runs `node --test DIR` in clients/js against this cluster: `SHOAL_URL` is
    /// nginx, `SHOAL_INSTANCES` each instance's own address and pid (the tests may kill
    /// one). Bounded in time; panics with node's report when a test fails.
    pub(crate) async fn run_node_tests(&self, dir: &str, env: &[(&str, &str)]) {
        let instances: Vec<Value> = (0..self.ports.len())
            .map(|i| {
                serde_json::json!({
                    "base": format!("http://127.0.0.1:{}", self.ports[i]),
                    "pid": self.pid(i).as_raw(),
                })
            })
            .collect();
        let mut cmd = tokio::process::Command::new("node");
        cmd.args(["--test", "--test-reporter=spec", dir])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js"))
            .env("SHOAL_URL", self.base())
            .env("SHOAL_INSTANCES", Value::from(instances).to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // Each node test has its own timeout; this bounds the whole run.
        let out = tokio::time::timeout(std::time::Duration::from_secs(300), cmd.output())
            .await
            .expect("node --test finished within 5 minutes")
            .expect("run node --test (is node installed?)");
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "node --test {dir} failed");
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

/// Connects through `base` with a Bearer token (retrying while instances come and
/// go) and joins `wid`; the client and the join's ack. Each attempt is bounded by
/// [`ATTEMPT`] and a failed one closes its client: an attempt that reached an
/// instance on its way out may get no answer at all, and must not use up the patience
/// of the whole wait (nor leave a connection open).
pub(crate) async fn join_through(
    base: &str,
    token: &str,
    wid: &str,
    since: Option<i64>,
) -> (Sio, Value) {
    eventually(
        "a Socket.IO client connects and joins through nginx",
        || async move {
            let Ok(Some(mut chat)) =
                tokio::time::timeout(ATTEMPT, Sio::try_open(base, Auth::Token(token))).await
            else {
                eprintln!("join_through: no engine.io connection within {ATTEMPT:?}");
                return None;
            };
            let joined = tokio::time::timeout(ATTEMPT, async {
                let first = chat.try_next_where(|r| r.event.starts_with('$')).await?;
                if first.event != "$connect" {
                    return None;
                }
                chat.try_join(wid, since).await
            })
            .await;
            match joined {
                Ok(Some(ack)) if ack["ok"] == true => Some((chat, ack)),
                other => {
                    eprintln!(
                        "join_through: attempt failed: {other:?}; seen {:?}",
                        chat.seen
                    );
                    let _ = tokio::time::timeout(ATTEMPT, chat.close()).await;
                    None
                }
            }
        },
    )
    .await
}

/// The longest one connect-and-join attempt through nginx may take.
const ATTEMPT: std::time::Duration = std::time::Duration::from_secs(5);

/// A receiver that follows a workspace through instance restarts: on a dropped
/// transport it reconnects through `base` and resumes with `since_seq`. Every
/// `message:new` seq lands in the returned channel.
pub(crate) fn follow(
    base: String,
    token: String,
    wid: String,
    chat: Sio,
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
                r = chat.recv() => r,
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
                    chat = join_through(&base, &token, &wid, Some(last.unwrap_or(0)))
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
