//! Workspaces, members, and the tenant boundary (docs/api.md).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, assert_invalid, spawn_app, unique_email};

#[tokio::test(flavor = "multi_thread")]
async fn create_workspace_is_201_and_the_creator_is_owner() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = app
        .post(&user, "/api/workspaces", &json!({ "name": "Ops" }))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let ws: Value = response.json().await.expect("workspace body");
    assert_eq!(ws["name"], "Ops");
    assert_eq!(ws["role"], "owner");
    assert!(
        ws["id"]
            .as_str()
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
    );
    assert!(ws["created_at"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn create_workspace_with_an_empty_name_is_422() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let response = app
        .post(&user, "/api/workspaces", &json!({ "name": " " }))
        .await;

    assert_invalid(response, "name").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_workspace_without_credentials_is_401() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/workspaces"))
        .json(&json!({ "name": "Ops" }))
        .send()
        .await
        .expect("POST /api/workspaces");

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_only_the_callers_own_workspaces() {
    let app = spawn_app().await;
    let alice = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let a1 = app.create_workspace(&alice, "Alice 1").await;
    let a2 = app.create_workspace(&alice, "Alice 2").await;
    app.create_workspace(&bob, "Bob's").await;

    let response = app.get(&alice, "/api/workspaces").await;

    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("page");
    assert!(page["next_cursor"].is_null());
    let mut ids: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|w| w["id"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    let mut expected = vec![
        a1["id"].as_str().expect("id"),
        a2["id"].as_str().expect("id"),
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_adds_a_member_by_email_and_the_workspace_shows_up_for_them() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;

    let response = app
        .post(
            &owner,
            &format!("/api/workspaces/{wid}/members"),
            &json!({ "email": bob.email.to_uppercase(), "role": "member" }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let member: Value = response.json().await.expect("member body");
    assert_eq!(member["user_id"], bob.id.as_str());
    assert_eq!(member["email"], bob.email.as_str());
    assert_eq!(member["role"], "member");
    let page: Value = app
        .get(&bob, "/api/workspaces")
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(page["items"][0]["id"], wid.as_str());
    assert_eq!(page["items"][0]["role"], "member");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_who_is_not_owner_cannot_add_members() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let carol = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;
    app.add_member(&owner, &wid, &bob).await;

    let response = app
        .post(
            &bob,
            &format!("/api/workspaces/{wid}/members"),
            &json!({ "email": carol.email }),
        )
        .await;

    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_an_unknown_email_is_404() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;

    let response = app
        .post(
            &owner,
            &format!("/api/workspaces/{wid}/members"),
            &json!({ "email": unique_email() }),
        )
        .await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_the_same_member_twice_is_409() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;
    app.add_member(&owner, &wid, &bob).await;

    let response = app
        .post(
            &owner,
            &format!("/api/workspaces/{wid}/members"),
            &json!({ "email": bob.email }),
        )
        .await;

    assert_error(response, StatusCode::CONFLICT, "already_member").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_members_shows_owner_and_members() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;
    app.add_member(&owner, &wid, &bob).await;

    // A member (not only the owner) may list.
    let response = app
        .get(&bob, &format!("/api/workspaces/{wid}/members"))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("page");
    assert!(page["next_cursor"].is_null());
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    let role_of = |id: &str| {
        items
            .iter()
            .find(|m| m["user_id"] == id)
            .map(|m| m["role"].clone())
            .unwrap_or_else(|| panic!("{id} is listed"))
    };
    assert_eq!(role_of(&owner.id), "owner");
    assert_eq!(role_of(&bob.id), "member");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_member_gets_404_for_everything_under_another_workspace() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let stranger = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;
    let task = app
        .create_task(&owner, &wid, &json!({ "title": "secret" }))
        .await;
    let tid = task["id"].as_str().expect("task id");

    for path in [
        format!("/api/workspaces/{wid}/members"),
        format!("/api/workspaces/{wid}/tasks"),
        format!("/api/workspaces/{wid}/tasks/{tid}"),
        format!("/api/workspaces/{wid}/activity"),
        format!("/api/workspaces/{wid}/messages"),
    ] {
        let response = app.get(&stranger, &path).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let writes = [
        app.post(
            &stranger,
            &format!("/api/workspaces/{wid}/tasks"),
            &json!({ "title": "x" }),
        )
        .await,
        app.post(
            &stranger,
            &format!("/api/workspaces/{wid}/messages"),
            &json!({ "body": "x" }),
        )
        .await,
        app.post(
            &stranger,
            &format!("/api/workspaces/{wid}/members"),
            &json!({ "email": stranger.email }),
        )
        .await,
        app.patch(
            &stranger,
            &format!("/api/workspaces/{wid}/tasks/{tid}"),
            &json!({ "version": 1, "title": "mine" }),
        )
        .await,
        app.delete(&stranger, &format!("/api/workspaces/{wid}/tasks/{tid}"))
            .await,
    ];
    for response in writes {
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    // And nothing changed.
    let fetched: Value = app
        .get(&owner, &format!("/api/workspaces/{wid}/tasks/{tid}"))
        .await
        .json()
        .await
        .expect("task");
    assert_eq!(fetched["title"], "secret");
    assert_eq!(fetched["version"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_workspace_id_is_404() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    for path in [
        "/api/workspaces/not-a-uuid/tasks",
        "/api/workspaces/not-a-uuid/members",
        "/api/workspaces/123/messages",
    ] {
        let response = app.get(&user, path).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_workspace_id_is_404() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let wid = uuid::Uuid::now_v7();

    let response = app
        .get(&user, &format!("/api/workspaces/{wid}/tasks"))
        .await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}
