//! What every multi-process test binary needs (cluster, realtime, …): finding
//! PostgreSQL and Redis (a loud skip locally, a failure under `CI=true`), a database
//! and a Redis prefix of its own per test, and a `redis-server` a test can kill.
//!
//! Included by each test binary with `#[path = "../common/mod.rs"] mod common;`.
//! Each binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub(crate) mod prometheus;
pub(crate) mod redis_keys;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use reqwest::{Client, StatusCode};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Generous upper bound for anything awaited (never a timing assertion).
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// How often a bounded wait polls.
pub(crate) const POLL: Duration = Duration::from_millis(100);

fn admin_url() -> String {
    std::env::var("SHOAL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn shared_redis_url() -> String {
    std::env::var("SHOAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The one place that decides what a missing service means: a loud skip locally, a
/// failure under `CI=true` (a missing service must never pass silently there).
pub(crate) fn missing_service(what: &str) {
    if in_ci() {
        panic!("{what}, and CI=true: a missing service is a failure, not a pass");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests,
    // and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED: {what}.\n\
         !!! Start it or set SHOAL_TEST_DATABASE_URL / SHOAL_TEST_REDIS_URL;\n\
         !!! with CI=true this test fails instead.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
}

/// A random lowercase hex token for names that must not collide between tests.
pub(crate) fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A port nothing listens on right now (bind port 0, read it, let it go).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// The reachable PostgreSQL (admin URL) and Redis.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    pub(crate) admin_url: String,
    pub(crate) redis_url: String,
}

impl Services {
    /// Both services, or `None` after saying loudly which one is missing.
    pub(crate) async fn discover() -> Option<Services> {
        let admin_url = admin_url();
        let redis_url = shared_redis_url();
        if let Err(e) = probe_postgres(&admin_url).await {
            missing_service(&format!("PostgreSQL is not reachable at {admin_url} ({e})"));
            return None;
        }
        if let Err(e) = probe_redis(&redis_url).await {
            missing_service(&format!("Redis is not reachable at {redis_url} ({e})"));
            return None;
        }
        Some(Services {
            admin_url,
            redis_url,
        })
    }
}

async fn probe_postgres(url: &str) -> Result<(), String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    sqlx::raw_sql("SELECT 1")
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

async fn probe_redis(url: &str) -> Result<(), String> {
    let mut conn = redis_connection(url).await?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(format!("PING answered {pong:?}"))
    }
}

/// A raw Redis connection (for reading what Shoal stored), bounded to 5 s.
pub(crate) async fn redis_connection(
    url: &str,
) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "no answer within 5 s".to_owned())?
    .map_err(|e| e.to_string())
}

/// Runs one admin statement (simple-query protocol: `CREATE DATABASE` and friends).
pub(crate) async fn admin_sql(admin_url: &str, sql: String) {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("admin connection to {admin_url}: {e}"));
    sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("admin SQL {sql:?}: {e}"));
    let _ = conn.close().await;
}

/// A database outage for `db`: PostgreSQL refuses new connections to it and its open
/// ones are terminated (`reachable = false`), or it accepts them again.
pub(crate) async fn set_database_reachable(admin_url: &str, db: &str, reachable: bool) {
    admin_sql(
        admin_url,
        format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS {reachable}"),
    )
    .await;
    if !reachable {
        admin_sql(
            admin_url,
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
            ),
        )
        .await;
    }
}

/// A database of its own for one test, dropped (`WITH (FORCE)`) at the end.
#[derive(Debug)]
pub(crate) struct TestDb {
    pub(crate) name: String,
    /// The URL the instances use.
    pub(crate) url: String,
    admin_url: String,
}

impl TestDb {
    /// `CREATE DATABASE shoal_t_<random>`: empty, not migrated.
    pub(crate) async fn create(admin_url: &str) -> TestDb {
        let name = format!("shoal_t_{}", token());
        admin_sql(admin_url, format!("CREATE DATABASE \"{name}\"")).await;
        let mut url = reqwest::Url::parse(admin_url).expect("the admin URL is a URL");
        url.set_path(&format!("/{name}"));
        TestDb {
            name,
            url: url.to_string(),
            admin_url: admin_url.to_owned(),
        }
    }

    /// A connection to this database (for reading what the instances wrote).
    pub(crate) async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
        // thread with its own runtime does the async clean-up.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("clean-up runtime");
            rt.block_on(async {
                let Ok(mut conn) = PgConnection::connect(&admin_url).await else {
                    return;
                };
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await {
                    eprintln!("clean-up: could not drop database {name}: {e}");
                }
                let _ = conn.close().await;
            });
        })
        .join();
        if done.is_err() {
            eprintln!("clean-up of database {} panicked", self.name);
        }
    }
}

/// Deletes a test's keys from the shared Redis when dropped.
#[derive(Debug)]
pub(crate) struct PrefixCleanup {
    pub(crate) redis_url: String,
    pub(crate) prefix: String,
}

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        redis_keys::delete_prefix(&self.redis_url, &self.prefix);
    }
}

/// Polls `probe` until it returns `Some`, at most `patience`; panics naming `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up after {patience:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A `redis-server` the test owns (no persistence: a restart loses everything),
/// SIGKILLed when dropped.
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    /// Starts a server on a free port, or `None` (after saying so) when
    /// `redis-server` cannot run here.
    pub(crate) async fn start() -> Option<OwnRedis> {
        let mut server = OwnRedis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        match server.restart().await {
            Ok(()) => Some(server),
            Err(e) => {
                missing_service(&format!("cannot run redis-server ({e})"));
                None
            }
        }
    }

    /// `redis://127.0.0.1:{port}`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers `PING`.
    pub(crate) async fn restart(&mut self) -> Result<(), String> {
        let log = File::create(self.dir.path().join("redis.log")).map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if probe_redis(&self.url()).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("redis-server exited ({status})"));
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill();
                return Err("redis-server did not answer PING".into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL and reap: the server is gone (with all its data) when this returns.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `shoal` child process, SIGKILLed (and reaped) when dropped.
pub(crate) struct Node {
    /// Its `INSTANCE_ID`.
    pub(crate) id: String,
    /// `http://127.0.0.1:{port}`.
    pub(crate) base: String,
    child: Option<Child>,
    /// Its stderr (the JSON log and any start-up error).
    log: PathBuf,
}

impl Node {
    /// Starts `shoal` with exactly `env` as its configuration (`PORT` required): every
    /// Shoal key of the test process's own environment is removed first, and the
    /// working directory is `cwd` so that no `shoal.toml` of the checkout is picked up.
    pub(crate) fn spawn(id: &str, env: &[(String, String)], cwd: &Path, logs: &Path) -> Node {
        let log = logs.join(format!("{id}.stderr.log"));
        let stderr = File::create(&log).expect("create a log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        for key in shoal::config::KEYS {
            cmd.env_remove(key);
        }
        cmd.env_remove("SHOAL_CONFIG");
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().expect("spawn the shoal binary");
        let port = env
            .iter()
            .find(|(k, _)| k == "PORT")
            .map(|(_, v)| v.clone())
            .expect("PORT");
        Node {
            id: id.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            log,
        }
    }

    /// `{base}{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the process wrote to stderr so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the child"))
    }

    /// Its process id while it runs.
    pub(crate) fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .map(|c| Pid::from_raw(i32::try_from(c.id()).expect("pid fits i32")))
    }

    /// SIGKILL and reap: the process is gone when this returns.
    pub(crate) fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM: the graceful shutdown starts.
    pub(crate) fn terminate(&self) {
        if let Some(pid) = self.pid() {
            kill(pid, Signal::SIGTERM).expect("send SIGTERM");
        }
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub(crate) async fn wait_exit(&mut self) -> ExitStatus {
        let id = self.id.clone();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {id} did not exit"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (bounded by `patience`) until `/health/ready` answers 200; panics with the
    /// log if the process exits or the bound passes first.
    pub(crate) async fn wait_ready(&mut self, http: &Client, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "instance {} exited ({status}) before ready; log:\n{}",
                    self.id,
                    self.log_text()
                );
            }
            if let Ok(r) = http.get(self.url("/health/ready")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("instance {} not ready; log:\n{}", self.id, self.log_text());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
