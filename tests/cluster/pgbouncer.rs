//! Many instances through a real PgBouncer (Debian's `pgbouncer`, transaction
//! pooling) in front of a PostgreSQL whose connection slots are nearly all taken:
//! every instance becomes ready and stays up, migrations are applied once, and a
//! login, a logout and a chat message cross instances as they do on a direct
//! connection. Behind a pooler without a direct migration URL, instances wait
//! (unready, `migrations_pending`) for `shoal migrate`.

use reqwest::StatusCode;
use sqlx::{Connection, PgConnection, Row};

use crate::harness::{
    Cluster, Node, OwnPostgres, Services, Spec, assert_chat_between, assert_cluster_lists_all,
    assert_logged_out_on, call, eventually, me_on, with_cookie,
};
use crate::migrations::migration_files;
use shoal_testkit::PgBouncer;

/// Server connections PgBouncer may open per database.
const POOL_SIZE: u32 = 4;

/// Connection slots the test leaves free on its PostgreSQL (3 of them reserved for
/// superusers, which the test's `postgres` user is).
const FREE_SLOTS: i64 = 8;

/// Opens idle connections to `admin_url` until only [`FREE_SLOTS`] are left; they
/// stay taken while the returned connections live.
async fn take_slots(admin_url: &str) -> Vec<PgConnection> {
    let mut probe = PgConnection::connect(admin_url).await.expect("connect");
    let max: i64 = sqlx::query("SELECT current_setting('max_connections')::bigint AS n")
        .fetch_one(&mut probe)
        .await
        .expect("max_connections")
        .get("n");
    let in_use: i64 = sqlx::query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend'",
    )
    .fetch_one(&mut probe)
    .await
    .expect("count connections")
    .get("n");
    let mut held = vec![probe];
    for _ in 0..(max - in_use - FREE_SLOTS) {
        held.push(PgConnection::connect(admin_url).await.expect("take a slot"));
    }
    held
}

/// Client connections PostgreSQL has open to `db`.
async fn server_connections(conn: &mut PgConnection, db: &str) -> i64 {
    sqlx::query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1")
        .bind(db)
        .fetch_one(conn)
        .await
        .expect("count connections")
        .get("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_instances_through_pgbouncer_on_a_nearly_full_postgres_behave_as_one() {
    let Some(shared) = Services::discover().await else {
        return;
    };
    let Some(postgres) = OwnPostgres::start().await else {
        return;
    };
    let Some(bouncer) = PgBouncer::start(postgres.port, POOL_SIZE).await else {
        return;
    };
    let services = Services {
        admin_url: postgres.admin_url(),
        redis_url: shared.redis_url.clone(),
    };
    let mut held = take_slots(&services.admin_url).await;

    // Each instance wants 3 connections: 60 clients on PgBouncer, at most 4 server
    // connections; migrations over a direct connection, which most instances find
    // full at first and wait for.
    let spec = Spec::new(20)
        .with("DATABASE_POOLER", "transaction")
        .with("DB_POOL_MAX", 3);
    let mut cluster = Cluster::prepare(&services, &spec).await;
    let direct = cluster.db().url.clone();
    let pooled = bouncer.url(&cluster.db().name);
    cluster.set_env("DATABASE_URL", &pooled);
    cluster.set_env("DATABASE_MIGRATION_URL", &direct);
    for _ in 0..spec.instances {
        cluster.spawn_node();
    }
    cluster.wait_all_ready().await;
    for node in &mut cluster.nodes {
        assert!(node.exited().is_none(), "instance {} exited", node.id);
    }

    // Every migration once, successfully.
    let mut db = cluster.db().connect().await;
    let applied: Vec<(i64, bool)> =
        sqlx::query("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut db)
            .await
            .expect("read _sqlx_migrations")
            .iter()
            .map(|r| (r.get("version"), r.get("success")))
            .collect();
    let want: Vec<(i64, bool)> = migration_files().keys().map(|v| (*v, true)).collect();
    assert_eq!(
        applied, want,
        "exactly one successful row per migration file"
    );

    // /health/cluster lists all twenty.
    assert_cluster_lists_all(&cluster, [0, 19]).await;

    // A login on instance 1 works on instance 20; a logout on 20 ends it on 1.
    let (account, login) = cluster.user(0, 0).await;
    for body in me_on(&cluster, &login, [0, 19]).await {
        assert_eq!(body["id"], account.id.as_str());
    }
    let (status, body) = call(with_cookie(cluster.post(19, "/api/auth/logout"), &login)).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "logout on instance 20: {body}"
    );
    assert_logged_out_on(&cluster, &login, [0]).await;

    // Chat from instance 20 reaches a client on instance 1, and back.
    assert_chat_between(&cluster, 0, 19).await;

    // All of it went through PgBouncer's few server connections (the test's own
    // connection to the database is the one more).
    let open = server_connections(&mut held[0], &cluster.db().name).await;
    assert!(
        open <= i64::from(POOL_SIZE) + 1,
        "{open} server connections to the database; PgBouncer lends at most {POOL_SIZE}"
    );
    // Nothing in the background (job claims, lease heartbeats, the scheduler, the
    // registry) tripped over the pooler either.
    for node in &mut cluster.nodes {
        assert!(node.exited().is_none(), "instance {} exited", node.id);
        let log = node.log_text();
        assert!(
            !log.contains("prepared statement") && !log.contains("job claim failed"),
            "instance {} logged a statement error behind PgBouncer:\n{log}",
            node.id
        );
    }
    drop(held);
}

#[tokio::test]
async fn behind_pgbouncer_without_a_migration_url_instances_wait_for_shoal_migrate() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(postgres) = OwnPostgres::start().await else {
        return;
    };
    let Some(bouncer) = PgBouncer::start(postgres.port, POOL_SIZE).await else {
        return;
    };
    let own = Services {
        admin_url: postgres.admin_url(),
        redis_url: services.redis_url.clone(),
    };
    let spec = Spec::new(1).with("DATABASE_POOLER", "transaction");
    let mut cluster = Cluster::prepare(&own, &spec).await;
    let direct = cluster.db().url.clone();
    let pooled = bouncer.url(&cluster.db().name);
    cluster.set_env("DATABASE_URL", &pooled);
    cluster.spawn_node();

    // Live, not ready, and saying why.
    let why = eventually("the instance says migrations are pending", || async {
        // Not listening yet is not an answer.
        let r = cluster.get(0, "/health/ready").send().await.ok()?;
        let status = r.status();
        let body = r.text().await.ok()?;
        (status == StatusCode::SERVICE_UNAVAILABLE && body.contains("migrations_pending"))
            .then_some(body)
    })
    .await;
    let (status, _) = call(cluster.get(0, "/health/live")).await;
    assert_eq!(status, StatusCode::OK, "live while waiting: {why}");

    // `shoal migrate` through PgBouncer refuses and says what to do.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = shoal_testkit::base_env();
    shoal_testkit::apply(
        &mut env,
        &[
            ("DATABASE_URL", pooled.as_str()),
            ("DATABASE_POOLER", "transaction"),
        ],
    );
    let mut refused = Node::run("migrate-pooled", &["migrate"], &env, dir.path(), dir.path());
    assert!(
        !refused.wait_exit().await.success(),
        "shoal migrate through a pooler without a direct URL"
    );
    let said = refused.log_text();
    assert!(
        said.contains("DATABASE_MIGRATION_URL"),
        "the refusal names the way out: {said}"
    );

    // The way a Kubernetes Job does it: `shoal migrate` on the direct URL.
    shoal_testkit::apply(&mut env, &[("DATABASE_MIGRATION_URL", direct.as_str())]);
    Node::run("migrate-direct", &["migrate"], &env, dir.path(), dir.path())
        .success()
        .await;
    cluster.wait_all_ready().await;
    let (account, login) = cluster.user(0, 0).await;
    assert_eq!(
        me_on(&cluster, &login, [0]).await[0]["id"],
        account.id.as_str()
    );
}
