//! The harness: a database per test on the chosen engine, an in-process app on it,
//! and `shoal` child processes on it (SIGKILLed on drop).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal::app::App;
use shoal::config::Config;
use shoal::state::AppState;
use shoal::store::Db;
use shoal::store::jobs::{self as store, JobRow};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) use crate::common::PATIENCE;
use crate::common::{TestDb, missing_service};

/// The database engine of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// A database of one test, removed at the end.
pub(crate) struct TestDatabase {
    /// `DATABASE_URL`.
    pub(crate) url: String,
    /// A scratch directory (DATA_DIR, logs, files jobs append to).
    pub(crate) dir: tempfile::TempDir,
    _pg: Option<TestDb>,
}

impl TestDatabase {
    /// A fresh database, or `None` after a loud skip (PostgreSQL unreachable).
    pub(crate) async fn create(engine: Engine) -> Option<TestDatabase> {
        let dir = tempfile::TempDir::new().expect("temp dir");
        match engine {
            Engine::Sqlite => Some(TestDatabase {
                url: format!("sqlite://{}/shoal.db", dir.path().display()),
                dir,
                _pg: None,
            }),
            Engine::Postgres => {
                let admin = std::env::var("SHOAL_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let probe =
                    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin))
                        .await;
                match probe {
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                    }
                    Ok(Err(e)) => {
                        missing_service(&format!("PostgreSQL is not reachable at {admin} ({e})"));
                        return None;
                    }
                    Err(_) => {
                        missing_service(&format!("PostgreSQL at {admin} did not answer in 5 s"));
                        return None;
                    }
                }
                let pg = TestDb::create(&admin).await;
                Some(TestDatabase {
                    url: pg.url.clone(),
                    dir,
                    _pg: Some(pg),
                })
            }
        }
    }

    /// The test configuration: loopback, port 0, fast polling, zero backoff, test
    /// handlers on; `overrides` win.
    pub(crate) fn env(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = vec![
            ("PORT".into(), "0".into()),
            ("HOST".into(), "127.0.0.1".into()),
            ("DATA_DIR".into(), self.dir.path().display().to_string()),
            ("DATABASE_URL".into(), self.url.clone()),
            ("QUEUE_POLL_INTERVAL".into(), "50".into()),
            ("QUEUE_BACKOFF_BASE".into(), "0".into()),
            ("QUEUE_TEST_HANDLERS".into(), "true".into()),
            ("RATE_LIMIT_AUTH_PER_MIN".into(), "100000".into()),
            ("RATE_LIMIT_IP_PER_MIN".into(), "100000".into()),
            ("RATE_LIMIT_USER_PER_MIN".into(), "100000".into()),
            ("LOG_LEVEL".into(), "warn".into()),
        ];
        for (key, value) in overrides {
            pairs.retain(|(k, _)| k != key);
            pairs.push(((*key).to_owned(), (*value).to_owned()));
        }
        pairs
    }

    /// A configuration over this database.
    pub(crate) fn config(&self, overrides: &[(&str, &str)]) -> Config {
        Config::from_pairs(self.env(overrides)).expect("a valid test configuration")
    }

    /// A migrated connection pool of the test's own (reads what the apps wrote).
    pub(crate) async fn db(&self) -> (Db, Config) {
        let config = self.config(&[]);
        let db = Db::connect(&config).await.expect("connect");
        db.migrate().await.expect("migrate");
        (db, config)
    }

    /// A file path under the scratch directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// An application running in this process, on its own runtime and thread.
pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) state: AppState,
    pub(crate) shutdown: CancellationToken,
    server: Option<std::thread::JoinHandle<()>>,
}

impl TestApp {
    /// Builds and runs an app over `db` with `overrides`.
    pub(crate) async fn spawn(db: &TestDatabase, overrides: &[(&str, &str)]) -> TestApp {
        let config = db.config(overrides);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = App::build(config).await.expect("the app builds");
                let _ = tx.send((app.local_addr(), app.state(), app.shutdown_token()));
                let _ = app.run_until_stopped().await;
            });
        });
        let (addr, state, shutdown) = rx.await.expect("the app starts");
        TestApp {
            address: format!("http://{addr}"),
            state,
            shutdown,
            server: Some(server),
        }
    }

    /// `{address}{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Graceful stop, waited for.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let joined = tokio::task::spawn_blocking(move || server.join());
            tokio::time::timeout(PATIENCE, joined)
                .await
                .expect("the app stops in time")
                .expect("join")
                .expect("the server thread did not panic");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `probe` until it returns `Some` (bounded by [`PATIENCE`]).
pub(crate) async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::common::eventually(what, PATIENCE, probe).await
}

/// The job, read from `db`.
pub(crate) async fn job(db: &Db, id: Uuid) -> JobRow {
    store::get(db.pool(), id)
        .await
        .expect("read")
        .expect("the job exists")
}

/// Waits until job `id` is in stored state `state`.
pub(crate) async fn until_state(db: &Db, id: Uuid, state: &str) -> JobRow {
    eventually(&format!("job {id} to be {state}"), || async {
        let j = job(db, id).await;
        (j.state == state).then_some(j)
    })
    .await
}

/// Enqueues `kind` with `payload` in its own committed transaction.
pub(crate) async fn enqueue(
    db: &Db,
    config: &Config,
    kind: &str,
    payload: serde_json::Value,
    options: shoal::jobs::Enqueue,
) -> Uuid {
    let mut tx = db.begin().await.expect("begin");
    let job = shoal::jobs::enqueue_raw(&mut tx, config, kind, payload.to_string(), options)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    job.id
}

/// A `shoal` child process, SIGKILLed on drop.
pub(crate) struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Runs `shoal {args}` with exactly `env` as its configuration.
    pub(crate) fn spawn(args: &[&str], env: &[(String, String)], dir: &Path, name: &str) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        for key in shoal::config::KEYS {
            cmd.env_remove(key);
        }
        cmd.env_remove("SHOAL_CONFIG");
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("INSTANCE_ID", name)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        Proc {
            child: Some(cmd.spawn().expect("spawn shoal")),
            log,
        }
    }

    /// Waits for a short-lived command to exit 0 (bounded).
    pub(crate) async fn success(mut self) {
        let mut child = self.child.take().expect("running");
        let status =
            tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || child.wait()))
                .await
                .expect("the command ends in time")
                .expect("join")
                .expect("wait");
        assert!(
            status.success(),
            "shoal failed ({status}): {}",
            self.log_text()
        );
    }

    /// Its stderr so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
