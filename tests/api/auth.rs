//! Accounts, login, sessions and tokens (docs/api.md).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    LoginBody, PASSWORD, assert_error, assert_invalid, header, spawn_app, unique_email,
};

#[tokio::test(flavor = "multi_thread")]
async fn register_returns_201_with_the_user_and_a_lower_cased_email() {
    let app = spawn_app().await;
    let email = unique_email();
    let shouted = email.to_uppercase();

    let response = app.register(&shouted, PASSWORD, "Ada Lovelace").await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().contains_key("x-instance-id"));
    assert!(response.headers().contains_key("x-request-id"));
    let user: Value = response.json().await.expect("user body");
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["display_name"], "Ada Lovelace");
    assert!(
        user["id"]
            .as_str()
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
    );
    assert!(user["created_at"].is_string());
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn register_twice_with_the_same_email_is_409_email_taken() {
    let app = spawn_app().await;
    let email = unique_email();
    assert_eq!(
        app.register(&email, PASSWORD, "First").await.status(),
        StatusCode::CREATED
    );

    // Same address, different case: still the same account.
    let response = app
        .register(&email.to_uppercase(), PASSWORD, "Second")
        .await;

    assert_error(response, StatusCode::CONFLICT, "email_taken").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn register_with_invalid_fields_is_422_naming_each_field() {
    let app = spawn_app().await;
    let cases = [
        ("not-an-email", PASSWORD, "Name", "email"),
        (&*unique_email(), "short", "Name", "password"),
        (&*unique_email(), PASSWORD, "   ", "display_name"),
    ];
    for (email, password, name, field) in cases {
        let response = app.register(email, password, name).await;
        let error = assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let fields = error["fields"].as_array().expect("422 lists its fields");
        assert!(
            fields.iter().any(|f| f["field"] == field),
            "{field} should be named in {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_returns_tokens_and_an_http_only_session_cookie() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ada").await;

    let response = app.login_with(&app.client, &email, PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    let cookie = header(response.headers(), "set-cookie").to_owned();
    assert!(cookie.starts_with("shoal_session="), "cookie: {cookie}");
    assert!(cookie.contains("HttpOnly"), "cookie: {cookie}");
    let body: LoginBody = response.json().await.expect("login body");
    assert_eq!(body.user["email"], email.as_str());
    assert_eq!(body.token_type, "Bearer");
    assert!(body.expires_in > 0);
    assert!(!body.access_token.is_empty());
    assert!(!body.refresh_token.is_empty());
    assert_ne!(body.access_token, body.refresh_token);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_with_unknown_email_or_wrong_password_gives_the_same_401() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ada").await;

    let unknown = app.login_with(&app.client, &unique_email(), PASSWORD).await;
    let unknown = assert_error(unknown, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let wrong = app.login_with(&app.client, &email, "wrong password!").await;
    let wrong = assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    assert_eq!(
        unknown["message"], wrong["message"],
        "no hint which one was wrong"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn me_works_with_the_session_cookie_alone() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = user
        .cookie_client
        .get(app.url("/api/me"))
        .send()
        .await
        .expect("GET /api/me");

    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.expect("user body");
    assert_eq!(me["id"], user.id.as_str());
    assert_eq!(me["email"], user.email.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn me_works_with_the_bearer_token_alone() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    // `app.client` keeps no cookies: only the token speaks.
    let response = app.get(&user, "/api/me").await;

    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.expect("user body");
    assert_eq!(me["id"], user.id.as_str());
    assert_eq!(me["display_name"], user.display_name.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn me_without_credentials_is_401() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/api/me"))
        .send()
        .await
        .expect("GET /api/me");

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn me_with_a_garbage_token_is_401_invalid_token() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/api/me"))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .expect("GET /api/me");

    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_me_changes_the_display_name() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    // Warm the cache so that the change has to invalidate it.
    assert_eq!(app.get(&user, "/api/me").await.status(), StatusCode::OK);

    let response = app
        .patch(&user, "/api/me", &json!({ "display_name": "Grace Hopper" }))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.expect("user body");
    assert_eq!(patched["display_name"], "Grace Hopper");
    let me: Value = app
        .get(&user, "/api/me")
        .await
        .json()
        .await
        .expect("user body");
    assert_eq!(me["display_name"], "Grace Hopper");
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_me_with_an_empty_display_name_is_422() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = app
        .patch(&user, "/api/me", &json!({ "display_name": "" }))
        .await;

    assert_invalid(response, "display_name").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_returns_a_new_pair_and_the_old_refresh_token_is_dead() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = app.refresh(&user.refresh_token).await;

    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.expect("token pair");
    assert_eq!(pair["token_type"], "Bearer");
    let access = pair["access_token"].as_str().expect("access token");
    let refresh = pair["refresh_token"].as_str().expect("refresh token");
    assert_ne!(refresh, user.refresh_token);
    // The new access token works.
    let me = app
        .client
        .get(app.url("/api/me"))
        .bearer_auth(access)
        .send()
        .await
        .expect("GET /api/me");
    assert_eq!(me.status(), StatusCode::OK);
    // The old refresh token does not.
    let again = app.refresh(&user.refresh_token).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn reusing_a_refresh_token_revokes_the_whole_login() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let pair: Value = app
        .refresh(&user.refresh_token)
        .await
        .json()
        .await
        .expect("token pair");
    let newest = pair["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let newest_access = pair["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();

    // The first token is presented again: it leaked.
    let reuse = app.refresh(&user.refresh_token).await;
    assert_error(reuse, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;

    // The newest refresh token of that family is refused too …
    let newest_refused = app.refresh(&newest).await;
    assert_eq!(newest_refused.status(), StatusCode::UNAUTHORIZED);
    // … and the session is over, by cookie and by either access token.
    let by_cookie = app.me_by_cookie(&user.session_cookie).await;
    assert_eq!(by_cookie.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get(&user, "/api/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let by_new_token = app
        .client
        .get(app.url("/api/me"))
        .bearer_auth(&newest_access)
        .send()
        .await
        .expect("GET /api/me");
    assert_eq!(by_new_token.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_with_a_garbage_token_is_401() {
    let app = spawn_app().await;

    let response = app.refresh("garbage").await;

    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_ends_the_session_for_cookie_access_token_and_refresh_token() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = user
        .cookie_client
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .expect("POST /api/auth/logout");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // The cookie as the client had it (a client that ignores the clearing
    // Set-Cookie still sends it): the session behind it is gone.
    let by_cookie = app.me_by_cookie(&user.session_cookie).await;
    assert_eq!(by_cookie.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get(&user, "/api/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&user.refresh_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_clears_the_cookie_in_the_browser() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = user
        .cookie_client
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .expect("POST /api/auth/logout");

    let cleared = header(response.headers(), "set-cookie");
    assert!(cleared.starts_with("shoal_session=;"), "cookie: {cleared}");
    assert!(cleared.contains("Max-Age=0"), "cookie: {cleared}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_by_bearer_token_ends_only_that_login() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let other_login = app.login(&user.email, PASSWORD).await;

    let response = app
        .client
        .post(app.url("/api/auth/logout"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("POST /api/auth/logout");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // The cookie of the same login is dead …
    assert_eq!(
        app.me_by_cookie(&user.session_cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // … while the user's other login is untouched.
    let other = app
        .client
        .get(app.url("/api/me"))
        .bearer_auth(&other_login.access_token)
        .send()
        .await
        .expect("GET /api/me");
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_without_credentials_is_401() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .expect("POST /api/auth/logout");

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn login_ignores_the_case_of_the_email() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ada").await;

    let body = app.login(&email.to_uppercase(), PASSWORD).await;

    assert_eq!(body.user["email"], email.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_token_of_a_refresh_names_the_same_session_as_the_cookie() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let pair: Value = app
        .refresh(&user.refresh_token)
        .await
        .json()
        .await
        .expect("pair");

    // Logging out with the refreshed token ends the cookie session of that login.
    let response = app
        .client
        .post(app.url("/api/auth/logout"))
        .bearer_auth(pair["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("POST /api/auth/logout");

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me_by_cookie(&user.session_cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let newest = pair["refresh_token"].as_str().expect("refresh token");
    assert_eq!(app.refresh(newest).await.status(), StatusCode::UNAUTHORIZED);
}
