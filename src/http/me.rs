//! `/api/me`: the caller's own account.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Auth;
use super::error::{ApiError, ApiResult};
use super::json::{Checks, Json, Validate};
use crate::db::users::{self, User};
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_me, patch_me))
}

/// The hot path. Cost per request on a cache hit, counted by
/// `tests/cluster/hot_path.rs`: in distributed mode 1 Redis round trip (the rate-limit
/// `EVALSHA`; the session and the user come from this instance's near caches, which
/// every change invalidates on all instances) and 0 database queries; in embedded mode
/// no I/O at all. The body is the cached JSON of the user, sent as it is.
#[utoipa::path(get, path = "/api/me", tag = "me", responses((status = 200, body = User), (status = 401)))]
async fn get_me(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Response> {
    let json = state
        .users
        .get_json(me.user_id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Profile changes.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PatchMe {
    /// 1 to 100 characters, not blank.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    display_name: String,
}

impl Validate for PatchMe {
    fn validate(&self) -> Result<(), Vec<super::error::FieldError>> {
        Checks::default()
            .text(&self.display_name, "display_name", 1, 100)
            .finish()
    }
}

#[utoipa::path(patch, path = "/api/me", tag = "me", request_body = PatchMe,
    responses((status = 200, body = User), (status = 401), (status = 422)))]
async fn patch_me(
    State(state): State<AppState>,
    Auth(me): Auth,
    Json(req): Json<PatchMe>,
) -> ApiResult<Json<User>> {
    let user = users::update_display_name(state.db.writer(), me.user_id, req.display_name.trim())
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    // The change is committed: a cache that cannot be told (Redis down) must not turn
    // it into an error. The other instances do not read their near copies while Redis
    // is down and drop them when it is back; Redis's own copy expires within
    // CACHE_TTL (docs/operations.md, "What a Redis outage degrades").
    if let Err(e) = state.users.invalidate(me.user_id).await {
        tracing::warn!(error = %e, "user cache not invalidated; stale for at most CACHE_TTL");
    }
    Ok(Json(user))
}
