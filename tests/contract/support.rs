//! What every suite shares: the backend fixtures, the Redis discovery (skip loudly,
//! fail under `CI=true`), temporary SQLite databases and a `redis-server` the test owns.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use shoal::config::{Config, RedisTarget};
use shoal::redis_client::RedisClient;
use shoal::store::Db;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Generous upper bound for anything awaited in a test (never a timing assertion).
pub(crate) const PATIENCE: Duration = Duration::from_secs(15);

/// The in-process backends.
pub(crate) struct Memory;
/// The SQL backends on a fresh temporary SQLite file.
pub(crate) struct Sql;
/// The Redis backends on a random key prefix.
pub(crate) struct Redis;
/// The Redis backends on a three-master Redis Cluster (`REDIS_CLUSTER_NODES`), on a
/// random key prefix.
pub(crate) struct RedisCluster;

/// A Redis deployment the suites run against.
pub(crate) trait RedisKind {
    /// Two independent clients (two "instances") on one fresh random prefix, or `None`
    /// (after saying so) when this deployment cannot be reached.
    async fn clients() -> Option<(RedisClient, RedisClient, Guard)>;
}

impl RedisKind for Redis {
    async fn clients() -> Option<(RedisClient, RedisClient, Guard)> {
        redis_clients().await
    }
}

impl RedisKind for RedisCluster {
    async fn clients() -> Option<(RedisClient, RedisClient, Guard)> {
        let nodes = match tokio::task::spawn_blocking(crate::redis_cluster::redis_cluster_nodes)
            .await
            .expect("start the test cluster")
        {
            Ok(nodes) => nodes,
            Err(e) => {
                missing(&format!("cannot run a Redis Cluster here ({e})"));
                return None;
            }
        };
        let target = RedisTarget::Cluster {
            nodes: nodes.into_iter().map(SecretString::from).collect(),
        };
        let prefix = random_prefix();
        let a = RedisClient::connect(&target, &prefix)
            .await
            .expect("connect client A to the cluster");
        let b = RedisClient::connect(&target, &prefix)
            .await
            .expect("connect client B to the cluster");
        // The cluster lives only as long as this test process.
        Some((a, b, Guard::default()))
    }
}

/// Two instances of one backend sharing one state, plus whatever must outlive them.
pub(crate) struct Pair<T: ?Sized> {
    pub(crate) a: Arc<T>,
    pub(crate) b: Arc<T>,
    pub(crate) _guard: Guard,
}

/// Keeps temporary resources alive; removes a test's Redis keys on drop.
#[derive(Default)]
pub(crate) struct Guard {
    pub(crate) _dir: Option<tempfile::TempDir>,
    pub(crate) redis_prefix: Option<(String, String)>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Best effort, synchronous: a test's keys under its random prefix.
        let Some((url, prefix)) = self.redis_prefix.take() else {
            return;
        };
        crate::redis_keys::delete_prefix(&url, &prefix);
    }
}

fn redis_url() -> String {
    std::env::var("SHOAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A missing dependency: loud skip locally, failure under `CI=true`.
pub(crate) fn missing(what: &str) {
    if in_ci() {
        panic!("{what}, and CI=true: a missing service is a failure, not a pass");
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED: {what}.\n\
         !!! Start Redis or set SHOAL_TEST_REDIS_URL; with CI=true this fails.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
}

/// The test Redis, or `None` (after saying so) when it is unreachable.
pub(crate) async fn redis_target() -> Option<RedisTarget> {
    let url = redis_url();
    let target = RedisTarget::Url(SecretString::from(url.clone()));
    match RedisClient::connect(&target, "shoal-test-probe").await {
        Ok(_) => Some(target),
        Err(e) => {
            missing(&format!("Redis is not reachable at {url} ({e})"));
            None
        }
    }
}

/// Two independent clients (two "instances") on one fresh random prefix.
pub(crate) async fn redis_clients() -> Option<(RedisClient, RedisClient, Guard)> {
    let target = redis_target().await?;
    let prefix = random_prefix();
    let a = RedisClient::connect(&target, &prefix)
        .await
        .expect("connect client A");
    let b = RedisClient::connect(&target, &prefix)
        .await
        .expect("connect client B");
    let guard = Guard {
        _dir: None,
        redis_prefix: Some((redis_url(), prefix)),
    };
    Some((a, b, guard))
}

pub(crate) fn random_prefix() -> String {
    format!("shoal-test-{}", uuid::Uuid::now_v7().simple())
}

/// Two pools on one migrated temporary SQLite file.
pub(crate) async fn sqlite_pair() -> (Db, Db, Guard) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("contract.db").display());
    let config = Config::from_pairs([("DATABASE_URL", url.as_str())]).expect("test config");
    let a = Db::connect(&config).await.expect("open sqlite A");
    a.migrate().await.expect("migrate sqlite");
    let b = Db::connect(&config).await.expect("open sqlite B");
    let guard = Guard {
        _dir: Some(dir),
        redis_prefix: None,
    };
    (a, b, guard)
}

/// A `redis-server` child process (or a Sentinel) on its own port, killed when dropped.
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    /// Arguments after `redis-server`, without the port.
    args: Vec<String>,
    /// The log line that says the process is ready.
    ready: &'static str,
    child: Option<tokio::process::Child>,
    /// Holds a Sentinel's (writable) configuration file.
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

impl OwnRedis {
    /// Starts a server on a free port, or `None` (after saying so) without the binary.
    pub(crate) async fn start() -> Option<OwnRedis> {
        let args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        Self::launch(
            args.iter().map(|a| (*a).to_owned()).collect(),
            "Ready to accept connections",
            None,
        )
        .await
    }

    /// Starts a Sentinel that monitors the master `mymaster` at `master_port`.
    pub(crate) async fn start_sentinel(master_port: u16) -> Option<OwnRedis> {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!("sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"),
        )
        .expect("write sentinel.conf");
        let args = vec![conf.display().to_string(), "--sentinel".into()];
        Self::launch(args, "+monitor master", Some(dir)).await
    }

    async fn launch(
        args: Vec<String>,
        ready: &'static str,
        dir: Option<tempfile::TempDir>,
    ) -> Option<OwnRedis> {
        let mut server = OwnRedis {
            port: free_port(),
            args,
            ready,
            child: None,
            _dir: dir,
        };
        match server.spawn().await {
            Ok(()) => Some(server),
            Err(e) => {
                missing(&format!("cannot run redis-server ({e})"));
                None
            }
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub(crate) async fn spawn(&mut self) -> std::io::Result<()> {
        let mut child = tokio::process::Command::new("redis-server")
            .args(&self.args)
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains(self.ready) {
                    return Ok(true);
                }
            }
            Ok::<bool, std::io::Error>(false)
        })
        .await;
        if !matches!(ready, Ok(Ok(true))) {
            let _ = child.kill().await;
            return Err(std::io::Error::other("redis-server did not become ready"));
        }
        // Keep draining its output so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// Kills the server and waits for it to be gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }
}

/// Awaits `fut` for at most [`PATIENCE`], naming what was awaited on failure.
pub(crate) async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
}

/// Polls `probe` until it returns true: for state changes nobody announces (a key
/// expiring, a connection noticed down). Bounded by [`PATIENCE`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !probe().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
