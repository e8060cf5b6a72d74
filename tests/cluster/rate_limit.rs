//! One budget for the whole cluster: requests spread over the instances spend the
//! same GCRA budget, and whichever instance serves the request past it answers 429.
//!
//! The budgets refill at one request per 60/limit seconds; the requests here are
//! milliseconds apart, so no refill happens between them in any realistic run.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{
    Cluster, Services, Spec, assert_limited, send, spend_user_budget, with_cookie,
};

#[tokio::test]
async fn the_per_user_budget_is_shared_by_every_instance() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(3).with("RATE_LIMIT_USER_PER_MIN", 9)).await;
    let (_, login) = cluster.user(0, 0).await;

    spend_user_budget(&cluster, &login, 9).await;
    // The budget is spent: every instance refuses the next request.
    for i in 0..3 {
        let r = send(with_cookie(cluster.get(i, "/api/me"), &login)).await;
        assert_limited(
            r,
            9,
            &format!("request past the budget on instance {}", i + 1),
        )
        .await;
    }
}

#[tokio::test]
async fn the_per_ip_auth_budget_is_shared_by_every_instance() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(3).with("RATE_LIMIT_AUTH_PER_MIN", 5)).await;
    let guess = json!({"email": "nobody@example.com", "password": "wrong password"});

    for n in 0..5 {
        let i = n % 3;
        let r = send(cluster.post(i, "/api/auth/login").json(&guess)).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "guess {} on instance {}",
            n + 1,
            i + 1
        );
    }
    for i in 0..3 {
        let r = send(cluster.post(i, "/api/auth/login").json(&guess)).await;
        assert_limited(
            r,
            5,
            &format!("guess past the budget on instance {}", i + 1),
        )
        .await;
    }
}
