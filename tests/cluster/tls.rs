//! TLS to the services a managed deployment gets: Redis over `rediss://` and
//! PostgreSQL with `sslmode=require` or `verify-full`, against servers that speak TLS
//! with a CA and certificates the test makes itself (docs/configuration.md, "TLS").

use reqwest::StatusCode;
use sqlx::{Connection, PgConnection, Row};

use crate::harness::{
    Cluster, OwnPostgres, OwnRedis, Services, Spec, TestCerts, assert_logged_out_on, call, me_on,
    with_cookie,
};

/// Sessions live in Redis: a login on one instance works on the other, and a logout
/// on the other ends it on both.
async fn one_login_across_both_instances(cluster: &Cluster) {
    let (_, login) = cluster.user(0, 1).await;
    me_on(cluster, &login, 0..2).await;
    let (status, _) = call(with_cookie(cluster.post(1, "/api/auth/logout"), &login)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_logged_out_on(cluster, &login, 0..2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_logins_through_a_redis_that_speaks_only_tls() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(certs) = TestCerts::make() else {
        return;
    };
    let Some(redis) = OwnRedis::start_tls(&certs).await else {
        return;
    };
    assert!(redis.url().starts_with("rediss://"));
    let spec = Spec::new(2)
        .redis(redis.url())
        .with("REDIS_TLS_CA_FILE", certs.ca.display());
    let cluster = Cluster::start(&services, spec).await;

    one_login_across_both_instances(&cluster).await;
    let (status, health) = call(cluster.get(0, "/health")).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["checks"]["redis"]["status"], "ok", "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_find_a_tls_master_through_tls_sentinels() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(certs) = TestCerts::make() else {
        return;
    };
    let Some(master) = OwnRedis::start_tls(&certs).await else {
        return;
    };
    let Some(sentinel) = OwnRedis::start_sentinel_tls(master.port, &certs).await else {
        return;
    };
    let spec = Spec::new(2)
        .sentinels(vec![sentinel.url()], "mymaster")
        .with("REDIS_TLS_CA_FILE", certs.ca.display());
    let cluster = Cluster::start(&services, spec).await;
    one_login_across_both_instances(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_logins_on_a_redis_cluster_that_speaks_only_tls() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let started =
        tokio::task::spawn_blocking(shoal_testkit::redis_cluster::redis_tls_cluster_nodes)
            .await
            .expect("start the TLS cluster");
    let (nodes, ca) = match started {
        Ok(cluster) => cluster,
        Err(e) => {
            shoal_testkit::missing_service(&format!("cannot run a TLS Redis Cluster here ({e})"));
            return;
        }
    };
    let spec = Spec::new(2)
        .redis_cluster(nodes)
        .with("REDIS_TLS_CA_FILE", ca.display());
    let cluster = Cluster::start(&services, spec).await;
    one_login_across_both_instances(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_puts_every_database_connection_on_tls() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(1).database_query("sslmode=require")).await;
    let (_, login) = cluster.user(0, 0).await;
    me_on(&cluster, &login, [0]).await;

    // What the server says about the instance's connections to the test database.
    let mut admin = PgConnection::connect(&services.admin_url)
        .await
        .expect("admin connection");
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE s.ssl) AS tls, count(*) FILTER (WHERE NOT s.ssl) AS plain \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
    )
    .bind(&cluster.db().name)
    .fetch_one(&mut admin)
    .await
    .expect("pg_stat_ssl");
    let (tls, plain): (i64, i64) = (row.get("tls"), row.get("plain"));
    assert!(tls >= 1, "the instance's connections use TLS");
    assert_eq!(plain, 0, "no connection without TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_trusts_the_given_ca_and_refuses_any_other() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(certs) = TestCerts::make() else {
        return;
    };
    let Some(postgres) = OwnPostgres::start_tls(&certs).await else {
        return;
    };
    let verified = postgres.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", certs.ca.display()),
    );
    let cluster = Cluster::start(&services, Spec::new(1).with("DATABASE_URL", &verified)).await;
    let (_, login) = cluster.user(0, 0).await;
    me_on(&cluster, &login, [0]).await;

    // A CA that did not sign the server's certificate: `shoal migrate` refuses the
    // server instead of talking to it.
    let Some(other) = TestCerts::make() else {
        return;
    };
    let wrong = postgres.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", other.ca.display()),
    );
    let env = vec![
        ("DATABASE_URL".to_owned(), wrong),
        ("DB_CONNECT_RETRIES".to_owned(), "0".to_owned()),
    ];
    let out = shoal_testkit::command(shoal_testkit::shoal_bin(), &env)
        .arg("migrate")
        .current_dir(certs.dir())
        .output()
        .expect("run shoal migrate");
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "an untrusted server is refused");
    assert!(
        stderr.contains("certificate"),
        "the error says why: {stderr}"
    );
}
