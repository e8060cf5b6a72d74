//! One login, every instance: the session cookie and the tokens issued by one
//! instance work on the others, a logout anywhere ends them everywhere, and the
//! session records in Redis are sealed and expire with `SESSION_TTL`.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{
    Cluster, Services, Spec, assert_logged_out_on, call, me_on, redis_connection, with_cookie,
};

#[tokio::test]
async fn a_login_on_one_instance_is_good_on_every_instance() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(3)).await;

    // Registered on instance 3, logged in through instance 1.
    let (account, login) = cluster.user(2, 0).await;

    for body in me_on(&cluster, &login, 0..3).await {
        assert_eq!(body["id"], account.id.as_str());
        assert_eq!(body["email"], account.email.as_str());
    }
}

#[tokio::test]
async fn a_logout_on_one_instance_ends_the_login_on_every_instance() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(3)).await;
    let (_, login) = cluster.user(0, 0).await;
    me_on(&cluster, &login, 0..3).await;

    let (status, body) = call(with_cookie(cluster.post(2, "/api/auth/logout"), &login)).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "logout on instance 3: {body}"
    );

    assert_logged_out_on(&cluster, &login, [0, 1]).await;
    let (status, body) = call(
        cluster
            .post(0, "/api/auth/refresh")
            .json(&json!({"refresh_token": login.refresh_token})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "refresh token on instance 1: {body}"
    );
}

#[tokio::test]
async fn sessions_are_sealed_at_rest_and_expire_with_the_session_ttl() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(1).with("SESSION_TTL", 600)).await;
    let (account, login) = cluster.user(0, 0).await;

    let mut conn = redis_connection(&cluster.redis_url)
        .await
        .expect("raw Redis connection");
    let pattern = format!("{}:session:*", cluster.prefix);
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(
        keys.len(),
        1,
        "one login, one session record under {pattern}: {keys:?}"
    );

    let id_simple = account.id.replace('-', "");
    let uuid = uuid::Uuid::parse_str(&account.id).expect("user id is a UUID");
    for key in &keys {
        assert!(
            !key.contains(&login.cookie),
            "the key is not the cookie: {key}"
        );
        let value: Vec<u8> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("GET the session record");
        assert!(!value.is_empty());
        let lossy = String::from_utf8_lossy(&value).to_lowercase();
        for secret in [
            account.id.as_str(),
            id_simple.as_str(),
            account.email.as_str(),
        ] {
            assert!(
                !lossy.contains(&secret.to_lowercase()),
                "{secret:?} readable in {key}"
            );
        }
        assert!(
            !value.windows(16).any(|w| w == uuid.as_bytes()),
            "the user id's raw bytes are in {key}"
        );

        let pttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        assert!(pttl > 0, "the session record expires (PTTL {pttl})");
        assert!(
            pttl <= 600_000,
            "PTTL {pttl} ms is more than SESSION_TTL=600 s"
        );
    }
}
