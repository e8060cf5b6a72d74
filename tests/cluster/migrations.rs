//! Start-up against PostgreSQL: migrations under the advisory lock when many
//! instances start at once on an empty database; an instance that waits, live and not
//! ready, for a database that refuses it or has no slot left, and becomes ready by
//! itself; and bounded connection retries when `DB_CONNECT_RETRIES` asks for them.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Row;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{
    Cluster, Node, Services, Spec, TestDb, call, eventually, free_port, register, token,
};

/// `version → description` of every file in `migrations/postgres/`.
pub(crate) fn migration_files() -> BTreeMap<i64, String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".sql"))
        .map(|name| {
            let (version, rest) = name.split_once('_').expect("NNNN_description.sql");
            let version = version.parse::<i64>().expect("a numeric migration version");
            (version, rest.trim_end_matches(".sql").to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_instances_started_at_once_on_an_empty_database_migrate_it_once() {
    let Some(services) = Services::discover().await else {
        return;
    };
    // Two connections each: 20 instances stay far below max_connections.
    let spec = Spec::new(20).with("DB_POOL_MAX", 2);
    let mut cluster = Cluster::prepare(&services, &spec).await;
    for _ in 0..spec.instances {
        cluster.spawn_node();
    }
    // 20 debug builds on two cores take a while to start; readiness is the event.
    cluster.wait_all_ready().await;

    let expected = migration_files();
    assert!(!expected.is_empty(), "there are PostgreSQL migrations");
    let mut conn = cluster.db().connect().await;
    let rows = sqlx::query("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .expect("read _sqlx_migrations");
    let applied: Vec<(i64, bool)> = rows
        .iter()
        .map(|r| (r.get::<i64, _>("version"), r.get::<bool, _>("success")))
        .collect();
    let want: Vec<(i64, bool)> = expected.keys().map(|v| (*v, true)).collect();
    assert_eq!(
        applied, want,
        "exactly one successful row per migration file"
    );
}

#[tokio::test]
async fn an_unreachable_database_stops_start_up_after_the_retries() {
    // Needs no service: the point is that nothing listens on the port.
    let dir = tempfile::tempdir().expect("temp dir");
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/shoal", free_port());
    let env: Vec<(String, String)> = [
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", free_port().to_string()),
        ("INSTANCE_ID", "no-database".to_owned()),
        ("DATABASE_URL", nowhere),
        ("DB_CONNECT_RETRIES", "2".to_owned()),
        ("DATA_DIR", dir.path().display().to_string()),
        ("LOG_FORMAT", "json".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut node = Node::spawn("no-database", &env, dir.path(), dir.path());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = node.exited() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running after 60 s with no database; log:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = node.log_text();
    assert!(!status.success(), "exit status {status}; log:\n{log}");
    assert!(
        log.contains("cannot connect to the database"),
        "stderr names the problem:\n{log}"
    );
    // DB_CONNECT_RETRIES counts the attempts after the first (docs/configuration.md).
    assert!(
        log.contains("after 3 attempts"),
        "stderr counts the attempts:\n{log}"
    );
}

/// `/health/ready` of the instance while it waits: 503 naming `reason`, `/health/live`
/// 200, the API 503 at once, the process still running.
async fn waiting_for(cluster: &mut Cluster, reason: &str) {
    let what = format!("readiness to report {reason}");
    eventually(&what, || async {
        // Until it listens, a refused connection is one more reason to wait.
        let r = cluster.get(0, "/health/ready").send().await.ok()?;
        let status = r.status();
        let body: Value = r.json().await.ok()?;
        let reasons = body["reasons"].to_string();
        (status == StatusCode::SERVICE_UNAVAILABLE && reasons.contains(reason)).then_some(())
    })
    .await;
    let (status, _) = call(cluster.get(0, "/health/live")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "live while the database is not there"
    );
    let (status, body) = call(cluster.post(0, "/api/auth/login")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        cluster.nodes[0].exited().is_none(),
        "the instance is still up; log:\n{}",
        cluster.nodes[0].log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_waits_for_a_database_that_is_full_or_refuses_it_and_becomes_ready() {
    let Some(services) = Services::discover().await else {
        return;
    };
    // A role of the test's own: connection limits do not apply to superusers.
    let role = format!("shoal_r_{}", token());
    let db = TestDb::create(&services.admin_url).await;
    let admin = |sql: String| shoal_testkit::admin_sql(&services.admin_url, sql);
    admin(format!("CREATE ROLE \"{role}\" LOGIN CONNECTION LIMIT 0")).await;
    admin(format!(
        "ALTER DATABASE \"{}\" OWNER TO \"{role}\"",
        db.name
    ))
    .await;
    let mut url = reqwest::Url::parse(&db.url).expect("a URL");
    url.set_username(&role).expect("a user name");

    let spec = Spec::new(0).with("DATABASE_URL", url.as_str());
    let mut cluster = Cluster::prepare(&services, &spec).await;
    cluster.spawn_node();

    // No connection slot left for this role (53300, the SQLSTATE of a server at
    // max_connections): full.
    waiting_for(&mut cluster, "database_full").await;
    // Slots again, but the database refuses every connection: unreachable.
    admin(format!(
        "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false",
        db.name
    ))
    .await;
    admin(format!("ALTER ROLE \"{role}\" CONNECTION LIMIT -1")).await;
    waiting_for(&mut cluster, "database_unreachable").await;
    // The database takes connections again: the instance migrates and becomes ready
    // by itself.
    admin(format!(
        "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
        db.name
    ))
    .await;
    cluster.wait_all_ready().await;
    let account = register(&cluster.http, &cluster.base(0), "Late").await;
    assert!(!account.id.is_empty());

    drop(cluster);
    drop(db);
    admin(format!("DROP ROLE IF EXISTS \"{role}\"")).await;
}
