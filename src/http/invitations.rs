//! Memberships by invitation: an owner invites an e-mail address, the holder of an
//! account with that address sees the invitation and accepts or declines it.
//! Whatever address is invited, the owner gets the same
//! answer, so invitations never tell whether someone has an account.
//!
//! Every change is in the workspace's activity log and emits a realtime event
//! (docs/realtime.md): `invitation:received` to the invitee's own sockets,
//! `invitation:answered` and `member:added` to the workspace. Role changes and
//! removals are in src/http/workspaces.rs.

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::caller::Auth;
use super::error::{ApiError, ApiResult};
use super::json::{Json, Path};
use super::workspaces::{AddMember, Page, require_member};
use crate::db::invitations::{self, Created, Invitation};
use crate::db::workspaces::{self, Role};
use crate::db::{StoreError, activity, users};
use crate::events::{self, InvitationChanged, MemberChanged, Room, ServerEvent};
use crate::state::AppState;

/// Pending invitations one workspace may have: inviting is cheap, so it is bounded.
const MAX_PENDING_PER_WORKSPACE: i64 = 200;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(invite, list_pending))
        .routes(routes!(revoke))
        .routes(routes!(my_invitations))
        .routes(routes!(accept))
        .routes(routes!(decline))
}

/// 403 unless `user` owns `wid` (404 when not a member at all).
pub(crate) async fn require_owner(
    state: &AppState,
    wid: Uuid,
    user: Uuid,
    what: &str,
) -> ApiResult<()> {
    if require_member(state, wid, user).await? == Role::Owner {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "only the workspace owner can {what}"
        )))
    }
}

#[utoipa::path(post, path = "/api/workspaces/{wid}/invitations", tag = "workspaces", request_body = AddMember,
    params(("wid" = Uuid, Path, description = "workspace id")),
    responses((status = 201, body = Invitation, description = "the pending invitation (the same one again for an address already invited); the same answer whether or not the address has an account"),
              (status = 403, description = "only the owner invites"), (status = 404),
              (status = 429, description = "`too_many_invitations`: 200 are pending already")))]
async fn invite(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
    Json(req): Json<AddMember>,
) -> ApiResult<(StatusCode, Json<Invitation>)> {
    require_owner(&state, wid, me.user_id, "invite").await?;
    let email = req.email.trim().to_lowercase();
    let mut tx = state.db.begin().await?;
    let created = invitations::create(
        &mut tx,
        wid,
        &email,
        req.role,
        me.user_id,
        MAX_PENDING_PER_WORKSPACE,
    )
    .await?;
    let invitation = match created {
        Created::Pending(i) => i,
        Created::TooMany(n) => {
            return Err(ApiError::LimitReached {
                code: "too_many_invitations",
                message: format!("{n} invitations are pending; revoke some first"),
                retry_after: std::time::Duration::from_secs(60),
            });
        }
    };
    activity::record(
        &mut tx,
        wid,
        me.user_id,
        "invitation.created",
        None,
        &json!({ "invitation_id": invitation.id, "role": invitation.role }),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    // Told to the invitee's own sockets if the address has an account; the owner's
    // answer above is the same either way.
    if let Some(invitee) = users::find_id_by_email(state.db.pool(), &email).await? {
        events::publish(
            &state,
            Room::User(invitee),
            ServerEvent::InvitationReceived(InvitationChanged {
                id: invitation.id,
                workspace_id: wid,
                status: invitation.status.clone(),
            }),
        )
        .await;
    }
    Ok((StatusCode::CREATED, Json(invitation)))
}

#[utoipa::path(get, path = "/api/workspaces/{wid}/invitations", tag = "workspaces",
    params(("wid" = Uuid, Path, description = "workspace id")),
    responses((status = 200, body = Page<Invitation>, description = "pending invitations, oldest first"), (status = 403), (status = 404)))]
async fn list_pending(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
) -> ApiResult<Json<Page<Invitation>>> {
    require_owner(&state, wid, me.user_id, "see invitations").await?;
    let items = invitations::pending_of_workspace(state.db.pool(), wid).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[utoipa::path(delete, path = "/api/workspaces/{wid}/invitations/{id}", tag = "workspaces",
    params(("wid" = Uuid, Path, description = "workspace id"), ("id" = Uuid, Path, description = "invitation id")),
    responses((status = 204, description = "revoked"), (status = 403), (status = 404, description = "no such pending invitation")))]
async fn revoke(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((wid, id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    require_owner(&state, wid, me.user_id, "revoke invitations").await?;
    let invitation = invitations::get(state.db.pool(), id)
        .await?
        .filter(|i| i.workspace_id == wid)
        .ok_or(ApiError::NotFound("invitation"))?;
    let mut tx = state.db.begin().await?;
    if !invitations::answer(&mut tx, invitation.id, "revoked").await? {
        return Err(ApiError::NotFound("invitation"));
    }
    activity::record(
        &mut tx,
        wid,
        me.user_id,
        "invitation.revoked",
        None,
        &json!({ "invitation_id": invitation.id }),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/invitations", tag = "workspaces",
    responses((status = 200, body = Page<Invitation>, description = "pending invitations to the caller's address, oldest first"), (status = 401)))]
async fn my_invitations(
    State(state): State<AppState>,
    Auth(me): Auth,
) -> ApiResult<Json<Page<Invitation>>> {
    let items =
        invitations::pending_for_email(state.db.pool(), &my_email(&state, me.user_id).await?)
            .await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

async fn my_email(state: &AppState, user: Uuid) -> ApiResult<String> {
    Ok(users::find(state.db.pool(), user)
        .await?
        .ok_or(ApiError::NotFound("user"))?
        .email)
}

/// The pending invitation `id` addressed to `user`; 404 for anything else, so that
/// invitation ids of other people do not leak.
async fn mine(state: &AppState, id: Uuid, user: Uuid) -> ApiResult<Invitation> {
    let email = my_email(state, user).await?;
    invitations::get(state.db.pool(), id)
        .await?
        .filter(|i| i.status == "pending" && i.email == email)
        .ok_or(ApiError::NotFound("invitation"))
}

#[utoipa::path(post, path = "/api/invitations/{id}/accept", tag = "workspaces",
    params(("id" = Uuid, Path, description = "invitation id")),
    responses((status = 200, body = crate::db::workspaces::Member, description = "the caller is now a member"),
              (status = 404, description = "no pending invitation to the caller's address"),
              (status = 409, description = "`already_member`")))]
async fn accept(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<crate::db::workspaces::Member>> {
    let invitation = mine(&state, id, me.user_id).await?;
    let wid = invitation.workspace_id;
    let mut tx = state.db.begin().await?;
    if !invitations::answer(&mut tx, id, "accepted").await? {
        return Err(ApiError::NotFound("invitation"));
    }
    if workspaces::role_of(&mut *tx, wid, me.user_id)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict {
            code: "already_member",
            message: "you are already a member of this workspace".into(),
        });
    }
    workspaces::add_member(&mut *tx, wid, me.user_id, invitation.role).await?;
    activity::record(
        &mut tx,
        wid,
        me.user_id,
        "member.joined",
        None,
        &json!({ "user_id": me.user_id, "role": invitation.role, "invitation_id": id }),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    announce_answer(&state, &invitation, "accepted").await;
    events::publish(
        &state,
        Room::Workspace(wid),
        ServerEvent::MemberAdded(MemberChanged {
            workspace_id: wid,
            user_id: me.user_id,
            role: invitation.role.as_str().into(),
            actor_id: me.user_id,
        }),
    )
    .await;
    let member = workspaces::member(state.db.pool(), wid, me.user_id)
        .await?
        .ok_or(ApiError::NotFound("member"))?;
    Ok(Json(member))
}

#[utoipa::path(post, path = "/api/invitations/{id}/decline", tag = "workspaces",
    params(("id" = Uuid, Path, description = "invitation id")),
    responses((status = 204, description = "declined"), (status = 404, description = "no pending invitation to the caller's address")))]
async fn decline(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let invitation = mine(&state, id, me.user_id).await?;
    let mut tx = state.db.begin().await?;
    if !invitations::answer(&mut tx, id, "declined").await? {
        return Err(ApiError::NotFound("invitation"));
    }
    activity::record(
        &mut tx,
        invitation.workspace_id,
        me.user_id,
        "invitation.declined",
        None,
        &json!({ "invitation_id": id }),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    announce_answer(&state, &invitation, "declined").await;
    Ok(StatusCode::NO_CONTENT)
}

async fn announce_answer(state: &AppState, invitation: &Invitation, status: &str) {
    events::publish(
        state,
        Room::Workspace(invitation.workspace_id),
        ServerEvent::InvitationAnswered(InvitationChanged {
            id: invitation.id,
            workspace_id: invitation.workspace_id,
            status: status.into(),
        }),
    )
    .await;
}
