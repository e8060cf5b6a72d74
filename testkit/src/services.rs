//! The shared PostgreSQL and Redis: finding them (a loud skip locally, a failure
//! under `CI=true`), a database and a Redis prefix of its own per test.

use std::io::Write;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

fn admin_url() -> String {
    std::env::var("SHOAL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The shared Redis (`SHOAL_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("SHOAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether this runs under CI (`CI=true`), where a missing service fails.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The one place that decides what a missing service means: a loud skip locally, a
/// failure under `CI=true` (a missing service must never pass silently there).
pub fn missing_service(what: &str) {
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
pub fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A port nothing listens on right now, and one this test process has not handed out
/// before.
///
/// Binding port 0 and letting it go is not enough: the kernel hands the same port to the
/// next bind(0) as soon as it is free, so twenty instances started together could be
/// given one port twice (seen in CI: "Address already in use"). Ports are drawn below
/// Linux's ephemeral range (32768–60999), where outgoing connections never take them,
/// and each is remembered so no two callers in this process get the same one.
pub fn free_port() -> u16 {
    static ISSUED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut issued = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..10_000 {
        let port = rand::random_range(15_000..32_000u16);
        if issued.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            issued.push(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range after 10000 tries");
}

/// The reachable PostgreSQL (admin URL) and Redis.
#[derive(Debug, Clone)]
pub struct Services {
    /// PostgreSQL, as a superuser that may create databases.
    pub admin_url: String,
    /// The shared Redis.
    pub redis_url: String,
}

impl Services {
    /// The admin URL of a reachable PostgreSQL, or `None` after saying loudly that it
    /// is missing (for suites that need no Redis).
    pub async fn postgres() -> Option<String> {
        let admin_url = admin_url();
        match probe_postgres(&admin_url).await {
            Ok(()) => Some(admin_url),
            Err(e) => {
                missing_service(&format!("PostgreSQL is not reachable at {admin_url} ({e})"));
                None
            }
        }
    }

    /// Both services, or `None` after saying loudly which one is missing.
    pub async fn discover() -> Option<Services> {
        let admin_url = admin_url();
        let redis_url = redis_url();
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

pub(crate) async fn probe_redis(url: &str) -> Result<(), String> {
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
pub async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
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
pub async fn admin_sql(admin_url: &str, sql: String) {
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
pub async fn set_database_reachable(admin_url: &str, db: &str, reachable: bool) {
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
pub struct TestDb {
    /// `shoal_t_<random>`.
    pub name: String,
    /// The URL the instances use.
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// `CREATE DATABASE shoal_t_<random>`: empty, not migrated.
    pub async fn create(admin_url: &str) -> TestDb {
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
    pub async fn connect(&self) -> PgConnection {
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
pub struct PrefixCleanup {
    /// The Redis the keys are in.
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX` of the test.
    pub prefix: String,
}

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        crate::redis_keys::delete_prefix(&self.redis_url, &self.prefix);
    }
}
