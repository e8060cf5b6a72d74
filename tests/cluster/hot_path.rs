//! The hot-path budget, counted in-process: once a session and its user are cached on
//! an instance, an authenticated `GET /api/me` costs exactly 1 Redis round trip (the
//! rate-limit script) and no database acquisition, with a cookie and with a Bearer
//! token alike, on one Redis and on a Redis Cluster. (The budget in the issue is at
//! most 2.)

use reqwest::StatusCode;
use shoal::app::App;
use shoal::config::Config;
use shoal::state::AppState;

use crate::harness::{
    Services, TestDb, login, plain_client, register, token, with_bearer, with_cookie,
};

/// Redis round trips and database acquisitions spent by `request`.
async fn cost(state: &AppState, request: reqwest::RequestBuilder) -> (u64, u64) {
    let redis = state
        .redis
        .as_ref()
        .expect("distributed mode has a Redis client");
    let (trips, acquisitions) = (redis.round_trips(), state.db.acquisitions());
    let r = request.send().await.expect("GET /api/me answered");
    assert_eq!(r.status(), StatusCode::OK);
    let trips = redis.round_trips() - trips;
    // A floor that proves the counter is wired: the shared rate-limit budget alone
    // needs a round trip.
    assert!(trips >= 1, "no Redis round trip counted at all");
    (trips, state.db.acquisitions() - acquisitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_get_me_costs_one_redis_round_trip_and_no_query() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let redis = ("REDIS_URL", services.redis_url.clone());
    measure(&services, redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_get_me_costs_the_same() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(nodes) = crate::on_redis_cluster::redis_cluster().await else {
        return;
    };
    measure(&services, ("REDIS_CLUSTER_NODES", nodes.join(","))).await;
}

/// Starts one in-process instance with `redis` (`REDIS_URL` or `REDIS_CLUSTER_NODES`)
/// and asserts the budget of a warm `GET /api/me`.
async fn measure(services: &Services, redis: (&str, String)) {
    let db = TestDb::create(&services.admin_url).await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("t{}", token());
    let config = Config::from_pairs([
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", "0".to_owned()),
        ("INSTANCE_ID", format!("{prefix}-hot")),
        ("DATABASE_URL", db.url.clone()),
        redis,
        ("REDIS_KEY_PREFIX", prefix.clone()),
        ("DATA_DIR", data_dir.path().display().to_string()),
        (
            "SESSION_SECRET",
            "hot-path-session-secret-0123456789abcdef".to_owned(),
        ),
        (
            "SESSION_ENCRYPTION_KEY",
            "hot-path-encryption-key-0123456789abcdef".to_owned(),
        ),
        (
            "JWT_ACCESS_SECRET",
            "hot-path-jwt-access-secret-0123456789abcdef".to_owned(),
        ),
        (
            "JWT_REFRESH_SECRET",
            "hot-path-jwt-refresh-secret-0123456789abcdef".to_owned(),
        ),
        // The first heartbeat goes out at start; no other may land inside a measurement.
        ("REGISTRY_HEARTBEAT", "3600".to_owned()),
        ("RATE_LIMIT_AUTH_PER_MIN", "100000".to_owned()),
        ("RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN", "100000".to_owned()),
        ("RATE_LIMIT_USER_PER_MIN", "100000".to_owned()),
        ("DB_POOL_MAX", "3".to_owned()),
        // Job workers poll the database on their own schedule; a poll landing inside a
        // measurement would be counted against the request.
        ("QUEUE_WORKERS", "false".to_owned()),
    ])
    .expect("a valid distributed configuration");
    let app = App::build(config).await.expect("build the app");
    let state = app.state();
    let shutdown = app.shutdown_token();
    let base = format!("http://{}", app.local_addr());
    // Served from this task (not spawned): the scenario runs beside it and cancels it.
    let server = app.run_until_stopped();
    tokio::pin!(server);
    let scenario = async {
        // The same user helpers as the cluster tests, pointed at this one instance.
        let http = plain_client();
        let account = register(&http, &base, "Ada").await;
        let login = login(&http, &base, &account).await;

        let me = || http.get(format!("{base}/api/me"));
        // Warm the caches: the session comes from Redis (GET + PTTL, one pipeline)
        // and the user from the database, then both are near.
        let _ = cost(&state, with_cookie(me(), &login)).await;

        let (trips, queries) = cost(&state, with_cookie(me(), &login)).await;
        assert_eq!(
            trips, 1,
            "GET /api/me with the cookie took {trips} Redis round trips"
        );
        assert_eq!(
            queries, 0,
            "GET /api/me with the cookie acquired {queries} DB connections"
        );

        let (trips, queries) = cost(&state, with_bearer(me(), &login)).await;
        assert_eq!(
            trips, 1,
            "GET /api/me with Bearer took {trips} Redis round trips"
        );
        assert_eq!(
            queries, 0,
            "GET /api/me with Bearer acquired {queries} DB connections"
        );
    };
    tokio::select! {
        stopped = &mut server => panic!("the server stopped on its own: {stopped:?}"),
        () = scenario => {}
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), server).await;
    drop(db);
    cleanup(&services.redis_url, &prefix).await;
}

async fn cleanup(redis_url: &str, prefix: &str) {
    let (url, prefix) = (redis_url.to_owned(), prefix.to_owned());
    let _ = tokio::task::spawn_blocking(move || {
        shoal_testkit::redis_keys::delete_prefix(&url, &prefix);
    })
    .await;
}
