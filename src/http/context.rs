//! The outermost middleware: request id, instance id, the request span, the request
//! timeout, error bodies, and per-route metrics — for every response, 404s and
//! panics included.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::Instrument;

use super::error::{ApiError, ErrorInfo};
use super::json::BodyLimit;
use crate::state::AppState;

/// The request id, for handlers that want to mention it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Header names.
pub const REQUEST_ID: &str = "x-request-id";
/// Header names.
pub const INSTANCE_ID: &str = "x-instance-id";

/// A client-sent request id is echoed when it is short and printable; otherwise a
/// UUIDv7 is made, so that log lines can never be forged into something else.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// See the module doc.
pub async fn request_context(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = request_id(&req);
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut()
        .insert(BodyLimit(state.config.server.body_limit));

    let span = tracing::info_span!(
        "request",
        instance_id = %state.instance.id,
        request_id = %id,
        method = %method,
        route = %route,
    );
    // A guard, not a decrement after the await: hyper drops this future when the
    // client goes away mid-request, and the count must still come down.
    let _in_flight = InFlight::enter(&state);
    let started = Instant::now();
    let result = tokio::time::timeout(state.config.server.request_timeout, next.run(req))
        .instrument(span.clone())
        .await;
    let mut response = match result {
        Ok(r) => r,
        Err(_) => ApiError::Timeout.into_response(),
    };
    let elapsed = started.elapsed();
    state.lifecycle.requests.record(elapsed);

    let status = response.status();
    let info = response.extensions_mut().remove::<ErrorInfo>().or_else(|| {
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        (status.as_u16() >= 400 && !is_json).then(|| ApiError::info_for_status(status))
    });
    if let Some(info) = info {
        let _enter = span.enter();
        if status.is_server_error() {
            tracing::error!(
                status = status.as_u16(),
                code = info.code,
                detail = info.internal.as_deref().unwrap_or(""),
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                code = info.code,
                "request rejected"
            );
        }
        let mut error = json!({ "code": info.code, "message": info.message, "request_id": id });
        if !info.fields.is_empty() {
            error["fields"] = json!(info.fields);
        }
        let body = json!({ "error": error }).to_string();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(body);
    }

    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, v);
    }
    if let Some(v) = &state.instance.header {
        headers.insert(INSTANCE_ID, v.clone());
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The HTML pages (the dashboard, the API browser) are never framed by another
    // site: no clickjacking of an operator's session.
    if route == "/dashboard" || route.starts_with("/docs") {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    } else if route == "/" {
        // The workspace page holds a login: never framed, and it runs only its own
        // script and talks only to its own origin.
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }

    if state.config.log.access {
        // Method, route, request and instance ids come from the span.
        tracing::info!(
            target: crate::telemetry::ACCESS_TARGET,
            parent: &span,
            status = status.as_u16(),
            duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            "request"
        );
    }
    let status_label = status.as_u16().to_string();
    metrics::counter!("shoal_http_requests_total", "method" => method.to_string(), "route" => route.clone(), "status" => status_label).increment(1);
    metrics::histogram!("shoal_http_request_duration_seconds", "method" => method.to_string(), "route" => route).record(elapsed.as_secs_f64());
    response
}

/// The `method` label of the request metrics: one of the methods the API knows, or
/// `other`, so that what a client sends cannot grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts a request in `Lifecycle::in_flight` for as long as it lives.
struct InFlight(AppState);

impl InFlight {
    fn enter(state: &AppState) -> Self {
        state.lifecycle.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lifecycle.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
