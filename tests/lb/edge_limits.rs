//! nginx's per-address limits (deploy/nginx/shoal.conf.template, "Limits at the
//! edge"): a flood of logins or Socket.IO handshakes from one address is refused by
//! nginx with Shoal's error body, while another address is served and the open
//! sessions of the flooding address keep working.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::harness::{LocalCluster, join_through, user, workspace};

/// The attacker's source address: another loopback address, so that nginx tells it
/// from the users of the test, who come from 127.0.0.1.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// What nginx lets through at once before its rate applies (the template's bursts),
/// plus the first request and one more for a token the rate adds during the test.
const AUTH_BURST: usize = 20 + 2;
const HANDSHAKE_BURST: usize = 40 + 2;

fn client_from(address: IpAddr) -> Client {
    Client::builder()
        .no_proxy()
        .local_address(address)
        .timeout(std::time::Duration::from_secs(40))
        .build()
        .expect("build a reqwest client")
}

/// An answer of nginx's edge limit: 429, `Retry-After`, and the error body Shoal's
/// own 429s have.
async fn assert_edge_refusal(response: reqwest::Response, what: &str) {
    assert!(
        response.headers().contains_key("retry-after"),
        "{what}: Retry-After"
    );
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "rate_limited", "{what}: {body}");
    assert!(body["error"]["request_id"].is_string(), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_refuses_a_flood_of_logins_or_handshakes_from_one_address_and_serves_the_others() {
    let Some(lc) = LocalCluster::up(
        1,
        &[("EDGE_AUTH_RATE", "1r/m"), ("EDGE_HANDSHAKE_RATE", "1r/m")],
    )
    .await
    else {
        return;
    };
    let base = lc.base();
    let attacker = client_from(ATTACKER);
    let (ada, bob) = (user(&lc.http, &base).await, user(&lc.http, &base).await);
    let wid = workspace(&lc.http, &base, &ada, &[&bob]).await;

    // Logins with a wrong password from one address: the burst reaches Shoal (401),
    // the rest is refused by nginx.
    let mut reached = 0;
    let mut refused = 0;
    for _ in 0..60 {
        let r = attacker
            .post(format!("{base}/api/auth/login"))
            .json(&json!({ "email": ada.email, "password": "not the password" }))
            .send()
            .await
            .expect("POST /api/auth/login through nginx");
        match r.status() {
            StatusCode::UNAUTHORIZED => reached += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_edge_refusal(r, "login").await;
            }
            other => panic!("login from the flooding address: {other}"),
        }
    }
    assert!(
        reached <= AUTH_BURST && refused >= 60 - AUTH_BURST,
        "{reached} logins reached Shoal, {refused} refused by nginx"
    );
    // The user's own address is not the attacker's: logging in works.
    let r = lc
        .http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": bob.email, "password": shoal_testkit::PASSWORD }))
        .send()
        .await
        .expect("login from another address");
    assert_eq!(r.status(), StatusCode::OK, "the other address is served");

    // Socket.IO handshakes (long-polling opens, no sid) from one address: the burst
    // is served, the rest refused; the sessions it opened keep working (their
    // requests carry a sid, which the limit does not count).
    let mut sids = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let r = attacker
            .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
            .send()
            .await
            .expect("a handshake through nginx");
        match r.status() {
            StatusCode::OK => {
                let open = r.text().await.expect("the engine.io open packet");
                let open: Value =
                    serde_json::from_str(open.trim_start_matches('0')).expect("open packet");
                sids.push(open["sid"].as_str().expect("sid").to_owned());
            }
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_edge_refusal(r, "handshake").await;
            }
            other => panic!("handshake from the flooding address: {other}"),
        }
    }
    assert!(
        sids.len() <= HANDSHAKE_BURST && refused >= 80 - HANDSHAKE_BURST,
        "{} handshakes served, {refused} refused by nginx",
        sids.len()
    );
    let sid = sids.first().expect("the burst was served");
    let r = attacker
        .post(format!(
            "{base}/socket.io/?EIO=4&transport=polling&sid={sid}"
        ))
        .body("40")
        .send()
        .await
        .expect("a request of an open session");
    assert_ne!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a request with a sid is not a handshake"
    );

    // Meanwhile a user on another address connects, joins and chats.
    let (chat, ack) = join_through(&base, &ada.token, &wid, None).await;
    assert_eq!(ack["ok"], true);
    chat.try_send(&wid, "still here", "edge-1")
        .await
        .expect("acked");
    chat.close().await;
}
