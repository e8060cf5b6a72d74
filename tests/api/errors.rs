//! The error contract everywhere (docs/api.md): JSON bodies with a request id, the
//! right status, ids on every response, body limits, content types, rate limits.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, assert_error, header, spawn_app, spawn_app_with, unique_email};

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_route_is_a_json_404() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/no/such/route"))
        .send()
        .await
        .expect("GET");

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_api_route_is_a_json_404() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = app.get(&user, "/api/nothing-here").await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_is_a_json_405() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let put_me = app
        .client
        .put(app.url("/api/me"))
        .bearer_auth(&user.access_token)
        .json(&json!({}))
        .send()
        .await
        .expect("PUT");
    assert_error(put_me, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let delete_login = app
        .client
        .delete(app.url("/api/auth/login"))
        .send()
        .await
        .expect("DELETE");
    assert_error(
        delete_login,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_request_id_is_echoed_on_success_and_on_error() {
    let app = spawn_app().await;

    let ok = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .expect("GET");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(header(ok.headers(), "x-request-id"), "trace-abc-123");
    assert!(!header(ok.headers(), "x-instance-id").is_empty());

    let err = app
        .client
        .get(app.url("/api/me"))
        .header("x-request-id", "trace-def-456")
        .send()
        .await
        .expect("GET");
    let error = assert_error(err, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(error["request_id"], "trace-def-456");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_client_request_id_each_response_gets_its_own() {
    let app = spawn_app().await;

    let a = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .expect("GET");
    let b = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .expect("GET");

    let (a, b) = (
        header(a.headers(), "x-request-id"),
        header(b.headers(), "x-request-id"),
    );
    assert!(!a.is_empty());
    assert_ne!(a, b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_413_and_nothing_is_created() {
    let app = spawn_app_with(&[("BODY_LIMIT", "1024")]).await;
    let user = app.signed_up_user().await;
    // Valid JSON whose extra field would be ignored if the body were read.
    let body = json!({ "name": "big", "padding": "x".repeat(2048) });

    let response = app.post(&user, "/api/workspaces", &body).await;

    let error = assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(error["message"].as_str().expect("message").contains("1024"));
    let page: Value = app
        .get(&user, "/api/workspaces")
        .await
        .json()
        .await
        .expect("page");
    assert!(
        page["items"].as_array().expect("items").is_empty(),
        "nothing created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_over_the_limit_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(&[("BODY_LIMIT", "1024")]).await;
    let user = app.signed_up_user().await;
    let payload = json!({ "name": "big", "padding": "x".repeat(2048) }).to_string();
    // No Content-Length: the limit must hold while reading, too.
    let mut request = format!(
        "POST /api/workspaces HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        user.access_token
    );
    for chunk in payload.as_bytes().chunks(256) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            String::from_utf8_lossy(chunk)
        ));
    }
    request.push_str("0\r\n\r\n");
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");

    let mut response = Vec::new();
    // The server may close before reading everything; what it answered is what counts.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);

    assert!(response.starts_with("HTTP/1.1 413"), "response: {response}");
    assert!(
        response.contains("\"payload_too_large\""),
        "response: {response}"
    );
    let page: Value = app
        .get(&user, "/api/workspaces")
        .await
        .json()
        .await
        .expect("page");
    assert!(
        page["items"].as_array().expect("items").is_empty(),
        "nothing created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_without_content_type_is_415() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = app
        .client
        .post(app.url("/api/workspaces"))
        .bearer_auth(&user.access_token)
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .expect("POST");

    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_content_type_is_415() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/auth/login"))
        .header("content-type", "text/plain")
        .body(r#"{"email":"a@b.c","password":"x"}"#)
        .send()
        .await
        .expect("POST");

    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_400_malformed_json() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body(r#"{"email": "a@example.com", "#)
        .send()
        .await
        .expect("POST");

    assert_error(response, StatusCode::BAD_REQUEST, "malformed_json").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_json_type_is_422() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": unique_email(), "password": 12345678, "display_name": "x" }))
        .send()
        .await
        .expect("POST");

    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_field_is_422() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": unique_email() }))
        .send()
        .await
        .expect("POST");

    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auth_budget_answers_429_with_rate_limit_headers() {
    let app = spawn_app_with(&[("RATE_LIMIT_AUTH_PER_MIN", "3")]).await;
    let email = unique_email();

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = app.login_with(&app.client, &email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(response.headers(), "ratelimit-limit"), "3");
        remaining.push(header(response.headers(), "ratelimit-remaining").to_owned());
    }
    let fourth = app.login_with(&app.client, &email, PASSWORD).await;

    assert_eq!(
        remaining,
        ["2", "1", "0"],
        "RateLimit-Remaining counts down"
    );
    let headers = fourth.headers().clone();
    assert_error(fourth, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let retry_after: u64 = header(&headers, "retry-after")
        .parse()
        .expect("Retry-After is seconds");
    assert!(retry_after >= 1);
    assert_eq!(header(&headers, "ratelimit-limit"), "3");
    assert_eq!(header(&headers, "ratelimit-remaining"), "0");
    let reset: u64 = header(&headers, "ratelimit-reset")
        .parse()
        .expect("RateLimit-Reset is seconds");
    assert!(reset >= 1);
}

/// A login sent through the trusted proxy on behalf of client address `from`.
async fn login_from(
    app: &crate::helpers::TestApp,
    from: String,
    email: String,
    password: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", from)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("login request")
}

// Guessing one account's password from many addresses: each address is within its own
// budget, the account's runs out; the right password then waits too, other accounts do
// not, and the answer is the same for an address nobody registered.
#[tokio::test(flavor = "multi_thread")]
async fn login_attempts_are_budgeted_per_account_across_addresses() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN", "3"),
        ("TRUSTED_PROXIES", "127.0.0.1/32,::1/128"),
    ])
    .await;
    let email = unique_email();
    let other = unique_email();
    for e in [&email, &other] {
        assert_eq!(
            app.register(e, PASSWORD, "x").await.status(),
            StatusCode::CREATED
        );
    }
    let attempt = |from: String, email: String, password: &'static str| {
        login_from(&app, from, email, password)
    };
    for i in 0..3 {
        let r = attempt(
            format!("203.0.113.{i}"),
            email.to_uppercase(),
            "wrong guess",
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let fourth = attempt("198.51.100.7".into(), email.clone(), PASSWORD).await;
    let retry_after = header(fourth.headers(), "retry-after").to_owned();
    assert_error(fourth, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(retry_after.parse::<u64>().expect("seconds") >= 1);
    let r = attempt("198.51.100.7".into(), other.clone(), PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "another account is not affected"
    );

    let nobody = unique_email();
    for i in 0..3 {
        let r = attempt(format!("192.0.2.{i}"), nobody.clone(), "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = attempt("192.0.2.9".into(), nobody, "guess").await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_clients_share_the_budget_of_their_64() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_AUTH_PER_MIN", "2"),
        ("TRUSTED_PROXIES", "127.0.0.1/32,::1/128"),
    ])
    .await;
    let login_from = |from: &str| login_from(&app, from.to_owned(), unique_email(), PASSWORD);
    for from in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        assert_eq!(login_from(from).await.status(), StatusCode::UNAUTHORIZED);
    }
    let third = login_from("2001:db8:1:2:ffff::3").await;
    assert_error(third, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(
        login_from("2001:db8:1:3::1").await.status(),
        StatusCode::UNAUTHORIZED,
        "the next /64 has its own budget"
    );
}

// A flood of logins cannot make the instance hash without bound: password checks run a
// few at a time and the excess is told to come back (503, `Retry-After`), never a 500,
// and the instance goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_flood_is_answered_503_with_retry_after_beyond_the_hashing_slots() {
    const FLOOD: usize = 1000;
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let attempts = (0..FLOOD).map(|_| {
        let request = app
            .client
            .post(app.url("/api/auth/login"))
            .json(&json!({ "email": unique_email(), "password": PASSWORD }))
            .send();
        async move {
            let r = request.await.expect("login request");
            let status = r.status();
            let retry_after = r.headers().contains_key("retry-after");
            let body: Value = r.json().await.unwrap_or_default();
            (status, retry_after, body)
        }
    });
    let answers = futures::future::join_all(attempts).await;
    let mut busy = 0;
    for (status, retry_after, body) in &answers {
        match *status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert!(retry_after, "503 without Retry-After: {body}");
                assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        busy > 0,
        "{FLOOD} logins at once were all hashed without waiting"
    );
    assert_eq!(app.get(&user, "/api/me").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auth_budget_covers_register_too() {
    let app = spawn_app_with(&[("RATE_LIMIT_AUTH_PER_MIN", "2")]).await;

    for _ in 0..2 {
        let r = app.register(&unique_email(), PASSWORD, "x").await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let third = app.register(&unique_email(), PASSWORD, "x").await;

    assert_error(third, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn successful_responses_count_the_budget_down() {
    let app = spawn_app_with(&[("RATE_LIMIT_USER_PER_MIN", "10")]).await;
    let user = app.signed_up_user().await;

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = app.get(&user, "/api/me").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(response.headers(), "ratelimit-limit"), "10");
        assert!(response.headers().contains_key("ratelimit-reset"));
        remaining.push(header(response.headers(), "ratelimit-remaining").to_owned());
    }

    assert_eq!(remaining, ["9", "8", "7"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_user_has_their_own_budget() {
    let app = spawn_app_with(&[("RATE_LIMIT_USER_PER_MIN", "5")]).await;
    let alice = app.signed_up_user().await;
    let bob = app.signed_up_user().await;

    for _ in 0..5 {
        assert_eq!(app.get(&alice, "/api/me").await.status(), StatusCode::OK);
    }
    let sixth = app.get(&alice, "/api/me").await;

    assert_error(sixth, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(app.get(&bob, "/api/me").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn x_forwarded_for_from_an_untrusted_peer_does_not_buy_a_fresh_budget() {
    let app = spawn_app_with(&[("RATE_LIMIT_IP_PER_MIN", "2")]).await;

    let mut statuses = Vec::new();
    for forwarded in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let response = app
            .client
            .get(app.url("/api/workspaces"))
            .header("x-forwarded-for", forwarded)
            .send()
            .await
            .expect("GET");
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        }
    }

    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn x_forwarded_for_from_a_trusted_proxy_separates_clients() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_IP_PER_MIN", "1"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;

    let mut statuses = Vec::new();
    for forwarded in ["203.0.113.1", "203.0.113.2", "203.0.113.1"] {
        let response = app
            .client
            .get(app.url("/api/workspaces"))
            .header("x-forwarded-for", forwarded)
            .send()
            .await
            .expect("GET");
        statuses.push(response.status());
    }

    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_carries_the_ids_too() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "x").await;

    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .header("x-request-id", "dup-1")
        .json(&json!({ "email": email, "password": PASSWORD, "display_name": "y" }))
        .send()
        .await
        .expect("POST");

    let error = assert_error(response, StatusCode::CONFLICT, "email_taken").await;
    assert_eq!(error["request_id"], "dup-1");
}
