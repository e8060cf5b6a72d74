//! Start-up against PostgreSQL: migrations under the advisory lock when many
//! instances start at once on an empty database, and bounded connection retries when
//! the database is not there at all.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Row;

use crate::harness::{Cluster, Node, Services, Spec, free_port};

/// `version → description` of every file in `migrations/postgres/`.
fn migration_files() -> BTreeMap<i64, String> {
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
