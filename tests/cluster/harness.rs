//! The cluster suite's own checks over the test kit (`shoal_testkit`): one login
//! used on every instance, logout everywhere, one budget spent across instances.

use reqwest::{Response, StatusCode};
use serde_json::Value;
use shoal_testkit::{Auth, Sio};

pub(crate) use shoal_testkit::{
    Cluster, Login, Node, OwnPostgres, OwnRedis, Services, Spec, TestCerts, TestDb, call,
    eventually, free_port, login, plain_client, redis_connection, register, send,
    set_database_reachable, token, with_bearer, with_cookie,
};

/// The Prometheus text of instance `node`'s `/metrics`.
pub(crate) async fn metrics(cluster: &Cluster, node: usize) -> String {
    shoal_testkit::metrics_text(&cluster.http, &cluster.base(node)).await
}

/// `GET /api/me` on each of `instances` with the login's cookie and with its access
/// token: both answer 200 for the same user. Returns the cookie answers' bodies.
pub(crate) async fn me_on(
    cluster: &Cluster,
    login: &Login,
    instances: impl IntoIterator<Item = usize>,
) -> Vec<Value> {
    let mut bodies = Vec::new();
    for i in instances {
        let (status, body) = call(with_cookie(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "cookie on instance {}: {body}",
            i + 1
        );
        let (status, by_token) = call(with_bearer(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "bearer on instance {}: {by_token}",
            i + 1
        );
        assert_eq!(by_token["id"], body["id"], "bearer on instance {}", i + 1);
        bodies.push(body);
    }
    bodies
}

/// After a logout: the cookie and the access token get 401 with a JSON error on each of
/// `instances`.
pub(crate) async fn assert_logged_out_on(
    cluster: &Cluster,
    login: &Login,
    instances: impl IntoIterator<Item = usize>,
) {
    for i in instances {
        let (status, body) = call(with_cookie(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "cookie on instance {}: {body}",
            i + 1
        );
        assert!(body["error"]["code"].is_string(), "a JSON error: {body}");

        let (status, body) = call(with_bearer(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "access token on instance {}: {body}",
            i + 1
        );
    }
}

/// `/health/cluster` on each of `instances` answers 200 and lists every instance of
/// the cluster, no more.
pub(crate) async fn assert_cluster_lists_all(
    cluster: &Cluster,
    instances: impl IntoIterator<Item = usize>,
) {
    let all: std::collections::BTreeSet<String> =
        cluster.nodes.iter().map(|n| n.id.clone()).collect();
    for i in instances {
        let (status, body) = call(cluster.get(i, "/health/cluster")).await;
        assert_eq!(status, StatusCode::OK, "instance {}: {body}", i + 1);
        let ids: std::collections::BTreeSet<String> = body["instances"]
            .as_array()
            .expect("an instances array")
            .iter()
            .map(|r| r["id"].as_str().expect("an id").to_owned())
            .collect();
        assert_eq!(ids, all, "/health/cluster on instance {}", i + 1);
    }
}

/// A numeric response header.
pub(crate) fn header_u64(r: &Response, name: &str) -> Option<u64> {
    r.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// Spends a per-user budget of `limit` requests with `GET /api/me`, round-robin over
/// every instance: each answers 200 and counts the shared budget down.
pub(crate) async fn spend_user_budget(cluster: &Cluster, login: &Login, limit: u64) {
    for n in 0..limit {
        let i = n as usize % cluster.nodes.len();
        let r = send(with_cookie(cluster.get(i, "/api/me"), login)).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "request {} on instance {}",
            n + 1,
            i + 1
        );
        assert_eq!(
            header_u64(&r, "ratelimit-remaining"),
            Some(limit - 1 - n),
            "request {}",
            n + 1
        );
    }
}

/// A 429 past a budget of `limit`: `Retry-After`, the `RateLimit-*` headers and the
/// JSON error.
pub(crate) async fn assert_limited(r: Response, limit: u64, what: &str) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let retry_after = header_u64(&r, reqwest::header::RETRY_AFTER.as_str());
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "{what}: Retry-After {retry_after:?}"
    );
    assert_eq!(header_u64(&r, "ratelimit-limit"), Some(limit), "{what}");
    assert_eq!(header_u64(&r, "ratelimit-remaining"), Some(0), "{what}");
    let body: Value = r.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "rate_limited", "{what}: {body}");
}

/// Chat between instances `a` and `b`: a message sent through `b` reaches a socket on
/// `a`, and one sent through `a` a socket on `b` (each user's own copy comes back too,
/// which keeps its `seq` cursor contiguous).
pub(crate) async fn assert_chat_between(cluster: &Cluster, a: usize, b: usize) {
    let (first, last) = (cluster.base(a), cluster.base(b));
    let ada = shoal_testkit::user(&cluster.http, &first).await;
    let bob = shoal_testkit::user(&cluster.http, &last).await;
    let wid = shoal_testkit::workspace(&cluster.http, &first, &ada, &[&bob]).await;
    let mut on_a = Sio::connect(&first, Auth::Token(&ada.token)).await;
    let mut on_b = Sio::connect(&last, Auth::Token(&bob.token)).await;
    on_a.join(&wid, None).await;
    on_b.join(&wid, None).await;
    let sent = on_b.send(&wid, "from b", "c1").await;
    assert_eq!(on_a.next_message(&wid).await["id"], sent["id"]);
    let sent = on_a.send(&wid, "from a", "c2").await;
    assert_eq!(on_b.message_with_seq(&wid, 2).await["id"], sent["id"]);
}
