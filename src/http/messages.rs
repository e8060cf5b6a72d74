//! Chat over REST: `POST` appends with the workspace's next `seq` (the use-case
//! [`crate::usecase::chat`], shared with Socket.IO's `message:send`); `GET` pages
//! backwards with `before`. A retried `POST` with the same `client_id` returns the
//! first message (200) instead of posting it twice.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::caller::Auth;
use super::error::{ApiError, ApiResult, FieldError};
use super::json::{Json, Path, Query, Validate};
use super::workspaces::{Page, require_member};
use crate::db::messages::{self, Message};
use crate::state::AppState;
use crate::usecase::chat::{self, InputError, Membership, NewMessage, PostError};

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_messages, post_message))
}

/// Paging backwards through the chat.
#[derive(Debug, Deserialize, IntoParams)]
pub struct MessageQuery {
    /// Only messages with `seq` below this (the `next_cursor` of the previous page).
    #[param(minimum = 1)]
    before: Option<i64>,
    /// 1 to 100, default 50.
    #[param(minimum = 1, maximum = 100)]
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
    /// Not blank, at most `REALTIME_MAX_MESSAGE_BYTES` bytes of UTF-8 (default 16 KiB;
    /// a limit on bytes, which a JSON Schema length, in characters, cannot state).
    #[schema(min_length = 1, pattern = r"\S")]
    pub body: String,
    /// The client's own id for this message (1 to 64 characters); a retry with the
    /// same id does not post twice.
    #[schema(min_length = 1, max_length = 64)]
    pub client_id: Option<String>,
}

/// The rules are the use-case's ([`NewMessage::parse`]), checked in the handler
/// because the body limit is configured.
impl Validate for PostMessage {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }
}

impl From<PostError> for ApiError {
    fn from(e: PostError) -> Self {
        match e {
            PostError::NotFound => ApiError::NotFound("workspace"),
            PostError::Conflict => ApiError::Conflict {
                code: "conflict",
                message: e.to_string(),
            },
            PostError::Store(e) => e.into(),
        }
    }
}

/// The use-case's input errors as the API's field errors (422).
fn invalid(errors: Vec<InputError>) -> ApiError {
    ApiError::Validation(
        errors
            .iter()
            .map(|e| FieldError::new(e.field(), e.to_string()))
            .collect(),
    )
}

#[utoipa::path(post, path = "/api/workspaces/{wid}/messages", tag = "chat", request_body = PostMessage,
    params(("wid" = Uuid, Path, description = "workspace id")),
    responses((status = 201, body = Message), (status = 200, body = Message, description = "same client_id as an earlier message"),
              (status = 404), (status = 409), (status = 422)))]
async fn post_message(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
    Json(req): Json<PostMessage>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let max = state.config.realtime.max_message_bytes;
    let message = NewMessage::parse(req.body, req.client_id, max).map_err(invalid)?;
    let posted = chat::post(&state, wid, me.user_id, message, Membership::Check).await?;
    let status = if posted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(posted.message)))
}
