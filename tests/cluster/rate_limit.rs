//! One budget for the whole cluster: requests spread over the instances spend the
//! same GCRA budget, and whichever instance serves the request past it answers 429.
//!
//! The budgets refill at one request per 60/limit seconds; the requests here are
//! milliseconds apart, so no refill happens between them in any realistic run.

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::json;

use crate::harness::{Cluster, Services, Spec, send, with_cookie};

fn header_u64(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers().get(name)?.to_str().ok()?.parse().ok()
}

async fn assert_limited(r: reqwest::Response, limit: u64, what: &str) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let retry_after = header_u64(&r, RETRY_AFTER.as_str());
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "{what}: Retry-After {retry_after:?}"
    );
    assert_eq!(header_u64(&r, "ratelimit-limit"), Some(limit), "{what}");
    assert_eq!(header_u64(&r, "ratelimit-remaining"), Some(0), "{what}");
    let body: serde_json::Value = r.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "rate_limited", "{what}: {body}");
}

#[tokio::test]
async fn the_per_user_budget_is_shared_by_every_instance() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(3).with("RATE_LIMIT_USER_PER_MIN", 9)).await;
    let (_, login) = cluster.user(0, 0).await;

    for n in 0..9 {
        let i = n % 3;
        let r = send(with_cookie(cluster.get(i, "/api/me"), &login)).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "request {} on instance {}",
            n + 1,
            i + 1
        );
        assert_eq!(
            header_u64(&r, "ratelimit-remaining"),
            Some(8 - n as u64),
            "request {}",
            n + 1
        );
    }
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
