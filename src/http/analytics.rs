//! `/api/analytics/*`: the opt-out (shared by all instances) and event intake, which
//! drops the events of users who opted out.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Auth;
use super::error::{ApiError, ApiResult, FieldError};
use super::json::{Checks, Json, Validate};
use crate::db::analytics;
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(opt_out, opt_in))
        .routes(routes!(status))
        .routes(routes!(post_event))
}

/// The caller's analytics status.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOutStatus {
    /// True when the caller's events are dropped.
    opted_out: bool,
}

#[utoipa::path(post, path = "/api/analytics/opt-out", tag = "analytics",
    responses((status = 200, body = OptOutStatus), (status = 401)))]
async fn opt_out(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<OptOutStatus>> {
    state.opt_out.set(me.user_id, true).await?;
    Ok(Json(OptOutStatus { opted_out: true }))
}

#[utoipa::path(delete, path = "/api/analytics/opt-out", tag = "analytics",
    responses((status = 200, body = OptOutStatus), (status = 401)))]
async fn opt_in(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<OptOutStatus>> {
    state.opt_out.set(me.user_id, false).await?;
    Ok(Json(OptOutStatus { opted_out: false }))
}

#[utoipa::path(get, path = "/api/analytics/status", tag = "analytics",
    responses((status = 200, body = OptOutStatus), (status = 401)))]
async fn status(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<OptOutStatus>> {
    let opted_out = state.opt_out.is_opted_out(me.user_id).await?;
    Ok(Json(OptOutStatus { opted_out }))
}

/// One analytics event.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Event {
    /// 1 to 100 characters, e.g. `task_board_opened`.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
    /// Free-form properties: an object of at most `ANALYTICS_MAX_EVENT_BYTES` (4096)
    /// bytes as JSON, else 413.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    properties: serde_json::Value,
}

impl Validate for Event {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Checks::default()
            .text(&self.name, "name", 1, 100)
            .check(
                self.properties.is_null() || self.properties.is_object(),
                "properties",
                "must be an object",
            )
            .finish()
    }
}

/// Whether the event was kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventAccepted {
    /// False when the caller has opted out and the event was dropped.
    recorded: bool,
}

#[utoipa::path(post, path = "/api/analytics/events", tag = "analytics", request_body = Event,
    responses((status = 202, body = EventAccepted), (status = 401), (status = 413), (status = 422)))]
async fn post_event(
    State(state): State<AppState>,
    Auth(me): Auth,
    Json(event): Json<Event>,
) -> ApiResult<(StatusCode, Json<EventAccepted>)> {
    // Bounded before anything is looked up or stored: the body limit alone would let
    // one account store a megabyte per event.
    let limit = state.config.limits.analytics_max_event_bytes;
    if event.properties.to_string().len() > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    if state.opt_out.is_opted_out(me.user_id).await? {
        return Ok((
            StatusCode::ACCEPTED,
            Json(EventAccepted { recorded: false }),
        ));
    }
    let properties = if event.properties.is_null() {
        serde_json::json!({})
    } else {
        event.properties
    };
    analytics::insert_event(
        state.db.writer(),
        me.user_id,
        event.name.trim(),
        &properties,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(EventAccepted { recorded: true })))
}
