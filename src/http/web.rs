//! The workspace page at `/` (sign up, workspaces, a task board, chat with presence and
//! typing, notifications): its HTML and style sheet, and its script built from
//! clients/js/web/app.ts on the client library (`npm run build:web` in clients/js;
//! .ci/run checks the committed build matches its sources). All three are compiled
//! into the binary, so the page needs no npm step and no network.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");
const ICON: &str = include_str!("web/favicon.svg");

/// Revalidated on every load: the files change with the binary.
const CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), CACHE],
        INDEX,
    )
}

/// `GET /app.js`.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            CACHE,
        ],
        SCRIPT,
    )
}

/// `GET /app.css`.
pub async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), CACHE],
        STYLE,
    )
}

/// `GET /favicon.svg`.
pub async fn icon() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/svg+xml"), CACHE], ICON)
}
