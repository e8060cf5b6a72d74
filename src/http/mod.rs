//! The HTTP API: one `router()` per resource, merged here under the shared layers.
//!
//! Layers, outermost first: request context (ids, timeout, error bodies, metrics) →
//! CORS → panic catcher → body limit → routing; on `/api/*` resources also
//! authentication → rate limiting.

pub mod accounts;
pub mod analytics;
pub mod caller;
pub mod context;
pub mod dashboard;
pub mod drain;
pub mod error;
pub mod health;
pub mod invitations;
pub mod jobs;
pub mod json;
pub mod me;
pub mod messages;
pub mod metrics;
pub mod openapi_errors;
pub mod rate_limit;
pub mod tasks;
pub mod web;
pub mod workspaces;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::state::AppState;
use error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(title = "Shoal API", description = "Real-time team workspace backend. Errors are always \
        `{\"error\": {\"code\", \"message\", \"request_id\"}}`; every response carries \
        `X-Instance-Id` and `X-Request-Id`."),
    modifiers(&Security),
    // The realtime protocol's payloads (docs/realtime.md): not HTTP operations, but
    // typed here so that clients generate them from the same document.
    components(schemas(
        crate::events::ServerEvent,
        crate::realtime::protocol::JoinAck,
        crate::realtime::protocol::SendAck,
        crate::realtime::protocol::LeaveAck,
        crate::realtime::protocol::PresenceList,
        crate::realtime::protocol::RenewAck,
        crate::realtime::protocol::Resync,
        crate::realtime::protocol::Closing,
    )),
    tags(
        (name = "auth", description = "Accounts, sessions and tokens"),
        (name = "me", description = "The caller's account"),
        (name = "workspaces", description = "Workspaces (the tenant boundary) and members"),
        (name = "tasks", description = "Tasks and the activity feed"),
        (name = "chat", description = "Chat messages"),
        (name = "analytics", description = "Analytics events and opt-out"),
        (name = "jobs", description = "Background jobs: exports, job status, queue statistics"),
        (name = "operations", description = "Health, readiness, cluster"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("shoal_session"))),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Admin-Token"))),
        );
    }
}

/// The API's resources, documented.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(accounts::router())
        .merge(me::router())
        .merge(workspaces::router())
        .merge(invitations::router())
        .merge(tasks::router())
        .merge(messages::router())
        .merge(analytics::router())
        .merge(jobs::router())
}

/// The OpenAPI document of the HTTP API as an instance serving the API publishes it
/// at `/api/openapi.json` (pretty-printed; `shoal openapi`, docs/openapi.json).
pub fn openapi_json() -> Result<String, serde_json::Error> {
    let (_, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api_routes())
        .merge(health::router())
        .split_for_parts();
    openapi_errors::document(&mut openapi);
    openapi.to_pretty_json()
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let api = api_routes().layer(from_fn_with_state(state.clone(), api_gate));

    let (routes, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        // `shoal worker`: health and metrics only.
        .merge(if state.config.server.serve_api {
            api
        } else {
            OpenApiRouter::new()
        })
        .merge(health::router())
        .split_for_parts();
    openapi_errors::document(&mut openapi);
    let openapi_json = Arc::new(openapi.to_json().unwrap_or_default());

    let mut router = routes
        .route("/metrics", get(metrics::render))
        .route("/dashboard", get(dashboard::page))
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/app.css", get(web::style))
        .route("/favicon.svg", get(web::icon))
        .route(
            "/api/openapi.json",
            get(move || {
                let json = openapi_json.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        json.as_str().to_owned(),
                    )
                        .into_response()
                }
            }),
        )
        // Swagger UI's files are compiled into the binary (the crate's `vendored`
        // feature): /docs works without internet access and loads no third-party
        // script.
        .merge(SwaggerUi::new("/docs").config(SwaggerConfig::from("/api/openapi.json")))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.server.body_limit))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::Internal("handler panicked".into()).into_response()
            },
        ));
    if let Some(cors) = cors(&state.config.server.cors_origins) {
        router = router.layer(cors);
    }
    router
        .layer(from_fn_with_state(state.clone(), context::request_context))
        .with_state(state)
}

/// Authentication, then the request budget (the per-user budget needs the caller).
/// One middleware rather than two: each `from_fn` layer clones the boxed inner service
/// on every request.
async fn api_gate(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Still waiting for the database at start-up (the instance is not ready, so a
    // load balancer sends nothing here): answer at once instead of after a pool
    // timeout.
    if !state.lifecycle.is_migrated() {
        return ApiError::Unavailable {
            dependency: "database",
        }
        .into_response();
    }
    match caller::identify(&state, req).await {
        Ok(req) => rate_limit::limit(&state, req, next).await,
        Err(refused) => refused,
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let methods = [
        Method::GET,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    let headers = [
        header::CONTENT_TYPE,
        header::AUTHORIZATION,
        header::IF_MATCH,
        HeaderName::from_static("x-request-id"),
    ];
    let expose = [
        HeaderName::from_static("x-request-id"),
        HeaderName::from_static("x-instance-id"),
        HeaderName::from_static("ratelimit-limit"),
        HeaderName::from_static("ratelimit-remaining"),
        HeaderName::from_static("ratelimit-reset"),
        header::RETRY_AFTER,
        header::ETAG,
    ];
    let layer = CorsLayer::new()
        .allow_methods(methods)
        .allow_headers(headers)
        .expose_headers(expose);
    if origins.iter().any(|o| o == "*") {
        // A wildcard cannot be combined with credentials (the Fetch standard forbids it).
        Some(layer.allow_origin(AllowOrigin::any()))
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        Some(layer.allow_origin(list).allow_credentials(true))
    }
}
