//! `/api/workspaces` and members. The tenant boundary: a non-member gets 404 for
//! everything under a workspace, so ids do not leak.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::caller::Auth;
use super::error::{ApiError, ApiResult};
use super::json::{Checks, Json, Path, Validate};
use serde_json::json;

use crate::db::workspaces::{self, Member, RemoveOutcome, Role, RoleChange, Workspace};
use crate::db::{StoreError, activity, users};
use crate::events::{self, MemberChanged, MemberRemoved, Room, ServerEvent};
use crate::state::AppState;
use crate::usecase::membership::{self, AccessError};

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workspace, list_workspaces))
        .routes(routes!(add_member, list_members))
        .routes(routes!(remove_member, change_role))
}

/// A list page. `next_cursor` is null on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` (or `before`) for the next page.
    pub next_cursor: Option<String>,
}

/// The caller's role in `workspace`, or 404 when not a member.
pub(crate) async fn require_member(
    state: &AppState,
    workspace: Uuid,
    user: Uuid,
) -> ApiResult<Role> {
    membership::require_member(state, workspace, user)
        .await
        .map_err(|e| match e {
            AccessError::NotFound => ApiError::NotFound("workspace"),
            AccessError::Store(e) => e.into(),
        })
}

/// A new workspace.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateWorkspace {
    /// 1 to 100 characters, not blank.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
}

impl Validate for CreateWorkspace {
    fn validate(&self) -> Result<(), Vec<super::error::FieldError>> {
        Checks::default().text(&self.name, "name", 1, 100).finish()
    }
}

#[utoipa::path(post, path = "/api/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = Workspace, description = "the caller is its owner"), (status = 401), (status = 422)))]
async fn create_workspace(
    State(state): State<AppState>,
    Auth(me): Auth,
    Json(req): Json<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let mut tx = state.db.begin().await?;
    let ws = workspaces::create(&mut tx, me.user_id, req.name.trim()).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok((StatusCode::CREATED, Json(ws)))
}

#[utoipa::path(get, path = "/api/workspaces", tag = "workspaces",
    responses((status = 200, body = Page<Workspace>), (status = 401)))]
async fn list_workspaces(
    State(state): State<AppState>,
    Auth(me): Auth,
) -> ApiResult<Json<Page<Workspace>>> {
    let items = workspaces::list_for_user(state.db.pool(), me.user_id).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// A member to add, or to invite, by e-mail.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddMember {
    /// An e-mail address: of an existing user to add one; any address to invite one.
    #[schema(
        max_length = 254,
        pattern = r"^[!-?A-~]+@[!--/-?A-~][!-?A-~]*\.[!-?A-~]*[!--/-?A-~]$"
    )]
    pub(crate) email: String,
    /// `admin` or `member` (default).
    #[serde(default = "default_role")]
    #[schema(value_type = GrantedRole)]
    pub(crate) role: Role,
}

/// A role an owner can give: ownership is not given away this way.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Documentation only: the request carries a `Role`.
enum GrantedRole {
    Admin,
    Member,
}

fn default_role() -> Role {
    Role::Member
}

impl Validate for AddMember {
    fn validate(&self) -> Result<(), Vec<super::error::FieldError>> {
        Checks::default()
            .check(
                super::accounts::plausible_email(&self.email),
                "email",
                "must be an e-mail address",
            )
            .check(self.role != Role::Owner, "role", "must be admin or member")
            .finish()
    }
}

#[utoipa::path(post, path = "/api/workspaces/{wid}/members", tag = "workspaces", request_body = AddMember,
    params(("wid" = Uuid, Path, description = "workspace id")),
    responses((status = 201, body = Member), (status = 403, description = "only the owner adds members"),
              (status = 404, description = "no such workspace, or no user with that e-mail"),
              (status = 409, description = "already a member")))]
async fn add_member(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
    Json(req): Json<AddMember>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    if require_member(&state, wid, me.user_id).await? != Role::Owner {
        return Err(ApiError::Forbidden(
            "only the workspace owner can add members".into(),
        ));
    }
    let email = req.email.trim().to_lowercase();
    let user = users::find_id_by_email(state.db.pool(), &email)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let mut tx = state.db.begin().await?;
    match workspaces::add_member(&mut *tx, wid, user, req.role).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict {
                code: "already_member",
                message: "this user is already a member".into(),
            });
        }
        Err(e) => return Err(e.into()),
    }
    activity::record(
        &mut tx,
        wid,
        me.user_id,
        "member.added",
        None,
        &json!({ "user_id": user, "role": req.role }),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    events::publish(
        &state,
        Room::Workspace(wid),
        ServerEvent::MemberAdded(MemberChanged {
            workspace_id: wid,
            user_id: user,
            role: req.role.as_str().into(),
            actor_id: me.user_id,
        }),
    )
    .await;
    let member = workspaces::member(state.db.pool(), wid, user)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok((StatusCode::CREATED, Json(member)))
}

#[utoipa::path(delete, path = "/api/workspaces/{wid}/members/{uid}", tag = "workspaces",
    params(("wid" = Uuid, Path, description = "workspace id"), ("uid" = Uuid, Path, description = "the member's user id (your own to leave)")),
    responses((status = 204, description = "removed (or left); their sockets leave the workspace on every instance"),
              (status = 403, description = "only the owner removes others"),
              (status = 404, description = "no such workspace, or that user is not a member"),
              (status = 409, description = "`last_owner`: the workspace's only owner cannot leave")))]
async fn remove_member(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((wid, uid)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let my_role = require_member(&state, wid, me.user_id).await?;
    if uid != me.user_id && my_role != Role::Owner {
        return Err(ApiError::Forbidden(
            "only the workspace owner can remove members".into(),
        ));
    }
    let mut tx = state.db.begin().await?;
    match workspaces::remove_member(&mut tx, wid, uid).await? {
        RemoveOutcome::Removed(role) => {
            let kind = if uid == me.user_id {
                "member.left"
            } else {
                "member.removed"
            };
            activity::record(
                &mut tx,
                wid,
                me.user_id,
                kind,
                None,
                &json!({ "user_id": uid, "role": role }),
            )
            .await?;
        }
        RemoveOutcome::NotMember => return Err(ApiError::NotFound("member")),
        RemoveOutcome::LastOwner => {
            return Err(ApiError::Conflict {
                code: "last_owner",
                message: "the workspace's only owner cannot leave".into(),
            });
        }
    }
    tx.commit().await.map_err(StoreError::from)?;
    events::publish(
        &state,
        Room::Workspace(wid),
        ServerEvent::MemberRemoved(MemberRemoved {
            workspace_id: wid,
            user_id: uid,
            actor_id: me.user_id,
        }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/workspaces/{wid}/members", tag = "workspaces",
    params(("wid" = Uuid, Path, description = "workspace id")),
    responses((status = 200, body = Page<Member>), (status = 404)))]
async fn list_members(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
) -> ApiResult<Json<Page<Member>>> {
    require_member(&state, wid, me.user_id).await?;
    let items = workspaces::members(state.db.pool(), wid).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// A member's new role.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangeRole {
    /// `owner`, `admin` or `member`.
    role: Role,
}

impl Validate for ChangeRole {
    fn validate(&self) -> Result<(), Vec<super::error::FieldError>> {
        Ok(())
    }
}

#[utoipa::path(patch, path = "/api/workspaces/{wid}/members/{uid}", tag = "workspaces", request_body = ChangeRole,
    params(("wid" = Uuid, Path, description = "workspace id"), ("uid" = Uuid, Path, description = "the member's user id")),
    responses((status = 200, body = Member),
              (status = 403, description = "only the owner changes roles"),
              (status = 404, description = "no such workspace, or that user is not a member"),
              (status = 409, description = "`last_owner`: the workspace's only owner cannot stop being one")))]
async fn change_role(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((wid, uid)): Path<(Uuid, Uuid)>,
    Json(req): Json<ChangeRole>,
) -> ApiResult<Json<Member>> {
    super::invitations::require_owner(&state, wid, me.user_id, "change roles").await?;
    let mut tx = state.db.begin().await?;
    match workspaces::set_role(&mut tx, wid, uid, req.role).await? {
        RoleChange::Changed(before) => {
            activity::record(
                &mut tx,
                wid,
                me.user_id,
                "member.role_changed",
                None,
                &json!({ "user_id": uid, "from": before, "to": req.role }),
            )
            .await?;
        }
        RoleChange::NotMember => return Err(ApiError::NotFound("member")),
        RoleChange::LastOwner => {
            return Err(ApiError::Conflict {
                code: "last_owner",
                message: "the workspace's only owner cannot stop being one".into(),
            });
        }
    }
    tx.commit().await.map_err(StoreError::from)?;
    events::publish(
        &state,
        Room::Workspace(wid),
        ServerEvent::MemberUpdated(MemberChanged {
            workspace_id: wid,
            user_id: uid,
            role: req.role.as_str().into(),
            actor_id: me.user_id,
        }),
    )
    .await;
    let member = workspaces::member(state.db.pool(), wid, uid)
        .await?
        .ok_or(ApiError::NotFound("member"))?;
    Ok(Json(member))
}
