//! Analytics opt-out and event intake (docs/api.md).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, spawn_app};

async fn opted_out(app: &TestApp, user: &TestUser) -> bool {
    let response = app.get(user, "/api/analytics/status").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("status body");
    body["opted_out"].as_bool().expect("opted_out is a bool")
}

async fn send_event(app: &TestApp, user: &TestUser) -> Value {
    let response = app
        .post(
            user,
            "/api/analytics/events",
            &json!({ "name": "task_board_opened", "properties": { "tasks": 3 } }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.expect("event body")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_user_is_not_opted_out() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    assert!(!opted_out(&app, &user).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn opting_out_shows_in_the_status() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = app.post(&user, "/api/analytics/opt-out", &json!({})).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("body");
    assert_eq!(body["opted_out"], true);
    assert!(opted_out(&app, &user).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_dropped_while_opted_out_and_recorded_after_opting_in() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    app.post(&user, "/api/analytics/opt-out", &json!({})).await;

    let dropped = send_event(&app, &user).await;
    assert_eq!(dropped["recorded"], false);

    let response = app.delete(&user, "/api/analytics/opt-out").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!opted_out(&app, &user).await);
    let recorded = send_event(&app, &user).await;
    assert_eq!(recorded["recorded"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_users_opt_out_does_not_affect_another() {
    let app = spawn_app().await;
    let alice = app.signed_up_user().await;
    let bob = app.signed_up_user().await;

    app.post(&alice, "/api/analytics/opt-out", &json!({})).await;

    assert!(opted_out(&app, &alice).await);
    assert!(!opted_out(&app, &bob).await);
    assert_eq!(send_event(&app, &bob).await["recorded"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_needs_authentication() {
    let app = spawn_app().await;

    let status = app
        .client
        .get(app.url("/api/analytics/status"))
        .send()
        .await
        .expect("GET status");
    assert_error(status, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let opt_out = app
        .client
        .post(app.url("/api/analytics/opt-out"))
        .send()
        .await
        .expect("POST opt-out");
    assert_error(opt_out, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let event = app
        .client
        .post(app.url("/api/analytics/events"))
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .expect("POST event");
    assert_error(event, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_event_is_422() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let cases = [
        (json!({ "name": "" }), "name"),
        (json!({ "name": "ok", "properties": [1, 2] }), "properties"),
        (json!({ "name": "x".repeat(101) }), "name"),
    ];
    for (body, field) in cases {
        let response = app.post(&user, "/api/analytics/events", &body).await;
        let error = assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error["fields"][0]["field"], field, "{error}");
    }
    let missing_name = app
        .post(&user, "/api/analytics/events", &json!({ "properties": {} }))
        .await;
    assert_error(
        missing_name,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

// One event cannot store more than ANALYTICS_MAX_EVENT_BYTES of properties: the body
// limit alone would let an account store a megabyte per event.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_the_size_limit_is_413() {
    let app = crate::helpers::spawn_app_with(&[("ANALYTICS_MAX_EVENT_BYTES", "100")]).await;
    let user = app.signed_up_user().await;
    let big = json!({ "name": "big", "properties": { "blob": "x".repeat(200) } });
    let response = app.post(&user, "/api/analytics/events", &big).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let small = json!({ "name": "small", "properties": { "blob": "x".repeat(50) } });
    let response = app.post(&user, "/api/analytics/events", &small).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}
