//! The cluster dashboard: `GET /dashboard`, one self-contained HTML page (no external
//! assets) served by every instance, that polls `/health/cluster` (the live instances
//! from the registry, with uptime, connections, request rate and p99), `/health`
//! (database, Redis and queue checks of the instance that answered) and `/metrics`
//! (queue depth) every two seconds.
//!
//! Request rate and p99 come from the [`RequestWindow`](crate::request_window::RequestWindow)
//! in the instance's `Lifecycle`.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("dashboard.html");

/// `GET /dashboard`.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
