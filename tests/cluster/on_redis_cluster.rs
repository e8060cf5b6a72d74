//! Three instances on a Redis Cluster (`REDIS_CLUSTER_NODES`, three masters started by
//! the test binary) keep the promises they keep on one Redis: one login everywhere, a
//! logout everywhere, a profile change seen at once, one rate-limit budget, one
//! opt-out list, one registry, and chat between instances over sharded pub/sub.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{
    Cluster, Services, Spec, assert_chat_between, assert_cluster_lists_all, assert_limited,
    assert_logged_out_on, call, me_on, send, spend_user_budget, with_cookie,
};
use shoal_testkit::missing_service;

/// The test cluster's seed URLs, or `None` after saying why there is none.
pub(crate) async fn redis_cluster() -> Option<Vec<String>> {
    match tokio::task::spawn_blocking(shoal_testkit::redis_cluster::redis_cluster_nodes)
        .await
        .expect("start the test Redis Cluster")
    {
        Ok(nodes) => Some(nodes),
        Err(e) => {
            missing_service(&format!("cannot run a Redis Cluster here ({e})"));
            None
        }
    }
}

/// `RATE_LIMIT_USER_PER_MIN` of the test: above what the first user spends.
const BUDGET: u64 = 24;

#[tokio::test]
async fn three_instances_on_a_redis_cluster_behave_as_one() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(nodes) = redis_cluster().await else {
        return;
    };
    let spec = Spec::new(3)
        .redis_cluster(nodes)
        .with("RATE_LIMIT_USER_PER_MIN", BUDGET);
    let cluster = Cluster::start(&services, spec).await;

    // /health/cluster on every instance lists all three.
    assert_cluster_lists_all(&cluster, 0..3).await;

    // Logged in through instance 1; cookie and token work on 2 and 3, and every
    // instance caches the user with its old name.
    let (account, login) = cluster.user(0, 0).await;
    for body in me_on(&cluster, &login, 0..3).await {
        assert_eq!(body["id"], account.id.as_str());
        assert_eq!(body["display_name"], "Ada");
    }

    // A name changed on instance 2 is what instances 1 and 3 answer next.
    let (status, body) = call(
        with_cookie(cluster.patch(1, "/api/me"), &login).json(&json!({"display_name": "Grace"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "PATCH on instance 2: {body}");
    for i in [0, 2] {
        let (_, body) = call(with_cookie(cluster.get(i, "/api/me"), &login)).await;
        assert_eq!(
            body["display_name"],
            "Grace",
            "instance {} serves a stale user",
            i + 1
        );
    }

    // An opt-out on instance 1 holds on instance 3.
    let (status, body) = call(with_cookie(
        cluster.post(0, "/api/analytics/opt-out"),
        &login,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "opt-out on instance 1: {body}");
    let (status, body) = call(with_cookie(cluster.get(2, "/api/analytics/status"), &login)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["opted_out"], true,
        "instance 3 does not know the opt-out"
    );

    // A logout on instance 3 ends the login on 1 and 2.
    let (status, body) = call(with_cookie(cluster.post(2, "/api/auth/logout"), &login)).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "logout on instance 3: {body}"
    );
    assert_logged_out_on(&cluster, &login, [0, 1]).await;

    // Chat between instances 1 and 3 goes over the workspace's sharded channel.
    assert_chat_between(&cluster, 0, 2).await;

    // Another user spends the budget over all three; then every instance refuses.
    let (_, spender) = cluster.user(1, 1).await;
    spend_user_budget(&cluster, &spender, BUDGET).await;
    for i in 0..3 {
        let r = send(with_cookie(cluster.get(i, "/api/me"), &spender)).await;
        assert_limited(r, BUDGET, &format!("past the budget on instance {}", i + 1)).await;
    }
}
