//! Chat over REST: `POST` appends with the workspace's next `seq`; `GET` pages
//! backwards with `before`. A retried `POST` with the same `client_id` returns the
//! first message (200) instead of posting it twice.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::authn::Auth;
use super::error::{ApiError, ApiResult, FieldError};
use super::json::{Checks, Json, Path, Query, Validate};
use super::workspaces::{Page, require_member};
use crate::realtime::{self, Room, ServerEvent};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::messages::{self, Message};

/// Largest message body in bytes (the realtime limit is the same).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_messages, post_message))
}

/// Paging backwards through the chat.
#[derive(Debug, Deserialize, IntoParams)]
pub struct MessageQuery {
    /// Only messages with `seq` below this (the `next_cursor` of the previous page).
    before: Option<i64>,
    /// 1 to 100, default 50.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/workspaces/{wid}/messages", tag = "chat",
    params(("wid" = Uuid, Path, description = "workspace id"), MessageQuery),
    responses((status = 200, body = Page<Message>, description = "newest first; next_cursor is the `before` of the next page"), (status = 404)))]
async fn list_messages(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
    Query(q): Query<MessageQuery>,
) -> ApiResult<Json<Page<Message>>> {
    require_member(&state, wid, me.user_id).await?;
    let limit = match q.limit {
        None => 50,
        Some(n) if (1..=100).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid("limit", "must be 1 to 100")),
    };
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::invalid("before", "must be at least 1"));
    }
    let items = messages::list_before(state.db.pool(), wid, q.before, limit).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|m| m.seq.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

/// A chat message to post.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PostMessage {
    /// 1 character to 16 KiB.
    pub body: String,
    /// The client's own id for this message (up to 64 characters); a retry with the
    /// same id does not post twice.
    pub client_id: Option<String>,
}

impl Validate for PostMessage {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Checks::default()
            .check(!self.body.trim().is_empty(), "body", "must not be empty")
            .check(
                self.body.len() <= MAX_BODY_BYTES,
                "body",
                "must be at most 16384 bytes",
            )
            .check(
                self.client_id
                    .as_ref()
                    .is_none_or(|c| !c.is_empty() && c.chars().count() <= 64),
                "client_id",
                "must be 1 to 64 characters",
            )
            .finish()
    }
}

/// Appends a message; `(message, true)` when it is new, `(message, false)` when
/// `client_id` matched an earlier one. After the commit, `message:new` is published
/// to the workspace room (again on a retry: if the first publish was lost with a
/// crash, this one delivers it; sockets drop the duplicate by `seq`).
pub(crate) async fn append(
    state: &AppState,
    workspace: Uuid,
    user: Uuid,
    req: &PostMessage,
) -> ApiResult<(Message, bool)> {
    let (message, created) = append_only(state, workspace, user, req).await?;
    realtime::publish(
        state,
        Room::Workspace(workspace),
        ServerEvent::MessageNew(message.clone()),
    )
    .await;
    Ok((message, created))
}

async fn append_only(
    state: &AppState,
    workspace: Uuid,
    user: Uuid,
    req: &PostMessage,
) -> ApiResult<(Message, bool)> {
    let client_id = req.client_id.as_deref();
    // Insert first and look the earlier message up only when `client_id` collides:
    // retries are rare, so the usual send costs one round trip (PostgreSQL), not two.
    match state
        .message_writer
        .append(workspace, user, &req.body, client_id)
        .await
    {
        Ok(message) => Ok((message, true)),
        Err(StoreError::Conflict(_)) if client_id.is_some() => {
            let cid = client_id.unwrap_or_default();
            let existing = messages::find_by_client_id(state.db.pool(), workspace, user, cid)
                .await?
                .ok_or_else(|| ApiError::Internal("client_id conflict without a row".into()))?;
            Ok((existing, false))
        }
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/api/workspaces/{wid}/messages", tag = "chat", request_body = PostMessage,
    params(("wid" = Uuid, Path, description = "workspace id")),
    responses((status = 201, body = Message), (status = 200, body = Message, description = "same client_id as an earlier message"),
              (status = 404), (status = 422)))]
async fn post_message(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
    Json(req): Json<PostMessage>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    require_member(&state, wid, me.user_id).await?;
    let (message, created) = append(&state, wid, me.user_id, &req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(message)))
}
