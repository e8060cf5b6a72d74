//! Memberships by invitation and role changes (docs/api.md, "Members and
//! invitations").

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, spawn_app, unique_email};

async fn invite(app: &TestApp, owner: &TestUser, wid: &str, email: &str) -> reqwest::Response {
    app.post(
        owner,
        &format!("/api/workspaces/{wid}/invitations"),
        &json!({ "email": email, "role": "admin" }),
    )
    .await
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

async fn activity_kinds(app: &TestApp, user: &TestUser, wid: &str) -> Vec<String> {
    let page = json_of(
        app.get(user, &format!("/api/workspaces/{wid}/activity"))
            .await,
    )
    .await;
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["kind"].as_str().expect("kind").to_owned())
        .collect()
}

async fn is_member(app: &TestApp, owner: &TestUser, wid: &str, user: &TestUser) -> bool {
    let page = json_of(
        app.get(owner, &format!("/api/workspaces/{wid}/members"))
            .await,
    )
    .await;
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|m| m["user_id"] == user.id.as_str())
}

// Inviting an address tells the owner nothing about whether it has an account: the
// same status and the same fields either way.
#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_does_not_reveal_whether_the_address_has_an_account() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;

    let known = invite(&app, &owner, &wid, &bob.email).await;
    let unknown = invite(&app, &owner, &wid, &unique_email()).await;
    assert_eq!(known.status(), StatusCode::CREATED);
    assert_eq!(unknown.status(), StatusCode::CREATED);
    let (known, unknown) = (json_of(known).await, json_of(unknown).await);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&known), keys(&unknown));
    assert_eq!(known["status"], "pending");
    assert_eq!(unknown["status"], "pending");

    // The same address again is the same invitation.
    let again = json_of(invite(&app, &owner, &wid, &bob.email.to_uppercase()).await).await;
    assert_eq!(again["id"], known["id"]);
    let pending = json_of(
        app.get(&owner, &format!("/api/workspaces/{wid}/invitations"))
            .await,
    )
    .await;
    assert_eq!(pending["items"].as_array().expect("items").len(), 2);
}

// The invitee sees the invitation and accepts it: a member with the invited role at
// once, in the activity log; the invitation cannot be used twice.
#[tokio::test(flavor = "multi_thread")]
async fn the_invitee_sees_and_accepts_and_becomes_a_member() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let eve = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;
    let invitation = json_of(invite(&app, &owner, &wid, &bob.email).await).await;
    let id = invitation["id"].as_str().expect("id");

    let mine = json_of(app.get(&bob, "/api/invitations").await).await;
    assert_eq!(mine["items"][0]["id"], id);
    assert_eq!(mine["items"][0]["workspace_id"], wid.as_str());
    assert!(mine["items"][0]["workspace_name"].is_string());
    let theirs = json_of(app.get(&eve, "/api/invitations").await).await;
    assert_eq!(theirs["items"], json!([]), "nobody else sees it");
    let stolen = app
        .post(&eve, &format!("/api/invitations/{id}/accept"), &json!({}))
        .await;
    assert_error(stolen, StatusCode::NOT_FOUND, "not_found").await;

    let accepted = app
        .post(&bob, &format!("/api/invitations/{id}/accept"), &json!({}))
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let member = json_of(accepted).await;
    assert_eq!(member["role"], "admin");
    assert!(is_member(&app, &owner, &wid, &bob).await);
    let kinds = activity_kinds(&app, &owner, &wid).await;
    assert_eq!(kinds[..2], ["member.joined", "invitation.created"]);

    let twice = app
        .post(&bob, &format!("/api/invitations/{id}/accept"), &json!({}))
        .await;
    assert_error(twice, StatusCode::NOT_FOUND, "not_found").await;
}

// Declined or revoked invitations make nobody a member; an invitation to an address
// without an account waits for whoever registers it.
#[tokio::test(flavor = "multi_thread")]
async fn declined_and_revoked_invitations_add_nobody_and_a_later_account_sees_its_own() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;

    let first = json_of(invite(&app, &owner, &wid, &bob.email).await).await;
    let id = first["id"].as_str().expect("id");
    let declined = app
        .post(&bob, &format!("/api/invitations/{id}/decline"), &json!({}))
        .await;
    assert_eq!(declined.status(), StatusCode::NO_CONTENT);
    assert!(!is_member(&app, &owner, &wid, &bob).await);
    assert_eq!(
        activity_kinds(&app, &owner, &wid).await[0],
        "invitation.declined"
    );

    let second = json_of(invite(&app, &owner, &wid, &bob.email).await).await;
    assert_ne!(
        second["id"], first["id"],
        "a new invitation after a decline"
    );
    let id = second["id"].as_str().expect("id");
    let revoked = app
        .delete(&owner, &format!("/api/workspaces/{wid}/invitations/{id}"))
        .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let gone = app
        .post(&bob, &format!("/api/invitations/{id}/accept"), &json!({}))
        .await;
    assert_error(gone, StatusCode::NOT_FOUND, "not_found").await;

    let newcomer_email = unique_email();
    invite(&app, &owner, &wid, &newcomer_email).await;
    let newcomer = app.signed_up_user_with_email(&newcomer_email).await;
    let mine = json_of(app.get(&newcomer, "/api/invitations").await).await;
    assert_eq!(mine["items"].as_array().expect("items").len(), 1);
}

// Only the owner invites, sees invitations and changes roles; a member gets 403, a
// stranger 404 (the workspace does not exist for them).
#[tokio::test(flavor = "multi_thread")]
async fn only_the_owner_invites_and_changes_roles() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let member = app.signed_up_user().await;
    let stranger = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;
    app.add_member(&owner, &wid, &member).await;

    let by_member = invite(&app, &member, &wid, &unique_email()).await;
    assert_error(by_member, StatusCode::FORBIDDEN, "forbidden").await;
    let by_stranger = invite(&app, &stranger, &wid, &unique_email()).await;
    assert_error(by_stranger, StatusCode::NOT_FOUND, "not_found").await;
    let path = format!("/api/workspaces/{wid}/members/{}", owner.id);
    let demote = app
        .patch(&member, &path, &json!({ "role": "member" }))
        .await;
    assert_error(demote, StatusCode::FORBIDDEN, "forbidden").await;
    let bad = invite(&app, &owner, &wid, "not an address").await;
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

// Roles change, in the activity log; the last owner cannot stop being one, but can
// once there is another owner.
#[tokio::test(flavor = "multi_thread")]
async fn roles_change_and_the_last_owner_stays_an_owner() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;
    app.add_member(&owner, &wid, &bob).await;
    let own = format!("/api/workspaces/{wid}/members/{}", owner.id);
    let bobs = format!("/api/workspaces/{wid}/members/{}", bob.id);

    let alone = app.patch(&owner, &own, &json!({ "role": "member" })).await;
    assert_error(alone, StatusCode::CONFLICT, "last_owner").await;

    let promoted = app.patch(&owner, &bobs, &json!({ "role": "owner" })).await;
    assert_eq!(promoted.status(), StatusCode::OK);
    assert_eq!(json_of(promoted).await["role"], "owner");
    let stepped_down = app.patch(&owner, &own, &json!({ "role": "admin" })).await;
    assert_eq!(stepped_down.status(), StatusCode::OK);
    let kinds = activity_kinds(&app, &bob, &wid).await;
    assert_eq!(kinds[..2], ["member.role_changed", "member.role_changed"]);
    let stranger = format!("/api/workspaces/{wid}/members/{}", uuid::Uuid::now_v7());
    let nobody = app
        .patch(&bob, &stranger, &json!({ "role": "admin" }))
        .await;
    assert_error(nobody, StatusCode::NOT_FOUND, "not_found").await;
}
