//! Real outages: a Redis the test owns is killed and restarted; a PostgreSQL database
//! of the test's own stops accepting connections and has its backends terminated.
//! Without Redis the instances stay ready and serve degraded (sessions from the
//! database); without the database, readiness must name it, requests that need it
//! must get a JSON 503
//! (never a 500, never a hang: every request here is bounded by the client's 40 s
//! timeout, above `REQUEST_TIMEOUT`=30 s), and the instances must recover by
//! themselves, pub/sub subscriptions included.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Cluster, OwnRedis, Services, Spec, assert_logged_out_on, call, eventually, me_on, metrics,
    set_database_reachable, with_bearer, with_cookie,
};
use shoal_testkit::prometheus::metric_value;

/// Waits until `/health/ready` on instance `i` is 503 naming `reason`.
async fn wait_not_ready(cluster: &Cluster, i: usize, reason: &str) -> Value {
    eventually(
        &format!("/health/ready on instance {} to report {reason}", i + 1),
        || async {
            let (status, body) = call(cluster.get(i, "/health/ready")).await;
            let named = body["reasons"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == reason));
            (status == StatusCode::SERVICE_UNAVAILABLE && named).then_some(body)
        },
    )
    .await
}

/// Waits until `/health/ready` on instance `i` is 200 again.
async fn wait_ready_again(cluster: &Cluster, i: usize) {
    eventually(
        &format!("/health/ready on instance {} to return to 200", i + 1),
        || async {
            let (status, _) = call(cluster.get(i, "/health/ready")).await;
            (status == StatusCode::OK).then_some(())
        },
    )
    .await;
}

fn assert_unavailable(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert_eq!(
        body["error"]["code"], "service_unavailable",
        "{what}: {body}"
    );
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

/// Waits until `/health/ready` on instance `i` is 200 and names `degraded` reason
/// `reason` (Redis down leaves an instance ready: docs/operations.md, readiness rule).
async fn wait_degraded(cluster: &Cluster, i: usize, reason: &str) -> Value {
    eventually(
        &format!(
            "/health/ready on instance {} to report degraded {reason}",
            i + 1
        ),
        || async {
            let (status, body) = call(cluster.get(i, "/health/ready")).await;
            let named = body["degraded"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == reason));
            (status == StatusCode::OK && named).then_some(body)
        },
    )
    .await
}

// The readiness rule changed with sessions in the database: a Redis outage used to
// make every instance unready (and every request 503) at once, emptying the load
// balancer. Now each instance stays ready and serves degraded; this test checks what
// a user sees through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_serve_through_a_redis_outage_and_recover_by_themselves() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(2).redis(redis.url())).await;
    let (_, login) = cluster.user(0, 0).await;
    let (_, leaving) = cluster.user(1, 1).await;
    me_on(&cluster, &login, 0..2).await;

    redis.kill();
    for i in 0..2 {
        let body = wait_degraded(&cluster, i, "redis_down").await;
        assert_eq!(body["checks"]["redis"]["status"], "down", "{body}");
        let (status, health) = call(cluster.get(i, "/health")).await;
        assert_eq!(status, StatusCode::OK, "{health}");
        assert_eq!(health["status"], "degraded", "{health}");
    }
    // A stopped Redis refuses connections; after two refused commands the instance
    // stops trying each one (a reconnect with its retries takes about a second).
    eventually("instance 1 to pause its Redis commands", || async {
        let text = metrics(&cluster, 0).await;
        (metric_value(&text, "shoal_redis_breaker_open", &[]) == 1.0).then_some(())
    })
    .await;
    // Logged-in users keep working on every instance, cookie and token alike.
    me_on(&cluster, &login, 0..2).await;
    // New logins work, and are good on the other instance.
    let (_, fresh) = cluster.user(0, 1).await;
    me_on(&cluster, &fresh, 0..2).await;
    // A profile change during the outage is saved, answered, and seen on the other
    // instance.
    let (status, body) = call(
        with_cookie(cluster.patch(0, "/api/me"), &login).json(&json!({"display_name": "During"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "PATCH without Redis: {body}");
    let (status, body) = call(with_cookie(cluster.get(1, "/api/me"), &login)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["display_name"], "During", "instance 2 without Redis");
    // A logout during the outage holds on the other instance.
    let (status, body) = call(with_cookie(cluster.post(1, "/api/auth/logout"), &leaving)).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "logout without Redis: {body}"
    );
    assert_logged_out_on(&cluster, &leaving, [0]).await;

    redis
        .restart()
        .await
        .expect("restart redis-server on the same port");
    for i in 0..2 {
        wait_ready_again(&cluster, i).await;
        eventually("Redis to be reported up again", || async {
            let (_, body) = call(cluster.get(i, "/health/ready")).await;
            body["degraded"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    }
    // The non-persistent Redis came back empty; nobody was logged out by it, and the
    // logout still holds.
    me_on(&cluster, &login, 0..2).await;
    me_on(&cluster, &fresh, 0..2).await;
    assert_logged_out_on(&cluster, &leaving, [0, 1]).await;

    // Instance 2 caches the user; a change on instance 1 must reach it through the
    // re-established subscription.
    let (status, body) = call(with_cookie(cluster.get(1, "/api/me"), &login)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["display_name"], "During");
    let (status, body) = call(
        with_cookie(cluster.patch(0, "/api/me"), &login).json(&json!({"display_name": "Grace"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "PATCH after the restart: {body}");
    let (status, body) = call(with_cookie(cluster.get(1, "/api/me"), &login)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["display_name"], "Grace",
        "instance 2 serves a stale user: its invalidation subscription did not come back"
    );
}

// A hung Redis (a frozen process, as behind a partition that drops packets) answers
// nothing, so each command would wait the whole command timeout before its fallback
// runs. After two unanswered commands in a row the instance stops waiting: commands
// fail at once (one probe at a time finds out when Redis answers again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_a_few_timeouts_not_one_per_request() {
    const REQUESTS: usize = 20;
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(redis) = OwnRedis::start().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(2).redis(redis.url())).await;
    let (_, login) = cluster.user(0, 0).await;
    let (_, leaving) = cluster.user(1, 1).await;
    me_on(&cluster, &login, 0..2).await;

    redis.freeze();
    eventually("instance 1 to pause its Redis commands", || async {
        // Readiness pings Redis, so polling it drives the timeouts that open the breaker.
        let (status, body) = call(cluster.get(0, "/health/ready")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a hung Redis leaves it ready: {body}"
        );
        let text = metrics(&cluster, 0).await;
        (metric_value(&text, "shoal_redis_breaker_open", &[]) == 1.0).then_some(())
    })
    .await;
    let before = metrics(&cluster, 0).await;
    for _ in 0..REQUESTS {
        let (status, body) = call(with_bearer(cluster.get(0, "/api/me"), &login)).await;
        assert_eq!(status, StatusCode::OK, "bearer with a hung Redis: {body}");
    }
    let after = metrics(&cluster, 0).await;
    let unanswered = metric_value(&after, "shoal_redis_unanswered_total", &[])
        - metric_value(&before, "shoal_redis_unanswered_total", &[]);
    let rejected = metric_value(&after, "shoal_redis_rejected_total", &[])
        - metric_value(&before, "shoal_redis_rejected_total", &[]);
    // Each of these requests asks Redis at least once (rate limit, session); without
    // the breaker each of those would be a timeout.
    assert!(
        unanswered < REQUESTS as f64,
        "{unanswered} timeouts for {REQUESTS} requests: requests still wait for Redis"
    );
    assert!(
        rejected >= REQUESTS as f64,
        "only {rejected} commands failed at once"
    );

    // A logout while Redis hangs holds on the other instance, as with a stopped Redis.
    let (status, body) = call(with_cookie(cluster.post(1, "/api/auth/logout"), &leaving)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "logout, Redis hung: {body}");
    assert_logged_out_on(&cluster, &leaving, [0]).await;

    redis.thaw();
    for i in 0..2 {
        eventually("Redis commands to resume after the thaw", || async {
            let text = metrics(&cluster, i).await;
            let (_, body) = call(cluster.get(i, "/health/ready")).await;
            let redis_up = body["degraded"].as_array().is_some_and(Vec::is_empty);
            (metric_value(&text, "shoal_redis_breaker_open", &[]) == 0.0 && redis_up).then_some(())
        })
        .await;
    }
    me_on(&cluster, &login, 0..2).await;
    assert_logged_out_on(&cluster, &leaving, [0, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_survive_a_database_outage_and_recover_by_themselves() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(1)).await;
    let (_, login) = cluster.user(0, 0).await;
    let create = |name: &str| {
        with_cookie(cluster.post(0, "/api/workspaces"), &login).json(&json!({"name": name}))
    };
    let (status, body) = call(create("Before")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    set_database_reachable(&services.admin_url, &cluster.db().name, false).await;

    let body = wait_not_ready(&cluster, 0, "database_down").await;
    assert_eq!(body["checks"]["database"]["status"], "down", "{body}");
    let (during_status, during_body) = call(create("During")).await;

    set_database_reachable(&services.admin_url, &cluster.db().name, true).await;
    wait_ready_again(&cluster, 0).await;
    let (status, body) = call(create("After")).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "after the database came back: {body}"
    );

    // Checked last so that one run also shows whether the recovery works.
    assert_unavailable(
        during_status,
        &during_body,
        "POST /api/workspaces without the database",
    );
}
