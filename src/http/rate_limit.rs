//! Request budgets on `/api/*`: per user when authenticated, per client IP otherwise,
//! and a stricter per-IP budget on `/api/auth/*` (password guessing). An IPv6 client
//! is budgeted per /64 ([`ip_bucket`]). Every limited
//! response carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a
//! 429 also carries `Retry-After`.
//!
//! If the limiter's backend is down, requests pass (fail open) and the failure is
//! logged and counted: an outage of Redis must not take the API down with it.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::caller::Caller;
use super::error::ApiError;
use crate::rate_limit::client::bucket_of;
use crate::rate_limit::{Decision, Quota};
use crate::state::AppState;

/// See the module doc.
pub async fn limit(state: &AppState, req: Request, next: Next) -> Response {
    let ip = bucket_of(
        &state.config.server.trusted_proxies,
        req.extensions(),
        req.headers(),
    );
    let (scope, key, quota) = if req.uri().path().starts_with("/api/auth/") {
        (
            "auth",
            format!("rl:auth:{ip}"),
            Quota::per_minute(state.config.rate_limit.auth_per_min),
        )
    } else if let Some(Caller::User(p)) = req.extensions().get::<Caller>() {
        (
            "user",
            format!("rl:user:{}", p.user_id),
            Quota::per_minute(state.config.rate_limit.user_per_min),
        )
    } else {
        (
            "ip",
            format!("rl:ip:{ip}"),
            Quota::per_minute(state.config.rate_limit.ip_per_min),
        )
    };
    match state.rate_limiter.check(&key, quota).await {
        Ok(decision) if decision.allowed => {
            let mut response = next.run(req).await;
            set_headers(response.headers_mut(), &decision);
            response
        }
        Ok(decision) => {
            metrics::counter!("shoal_rate_limited_total", "scope" => scope).increment(1);
            let mut response = ApiError::RateLimited {
                retry_after: decision.retry_after.unwrap_or_default(),
            }
            .into_response();
            set_headers(response.headers_mut(), &decision);
            response
        }
        Err(e) => {
            metrics::counter!("shoal_rate_limiter_errors_total").increment(1);
            tracing::warn!(error = %e, "rate limiter unavailable; letting the request through");
            next.run(req).await
        }
    }
}

fn set_headers(headers: &mut HeaderMap, d: &Decision) {
    let reset = d.reset_after.as_secs_f64().ceil() as u64;
    for (name, value) in [
        ("ratelimit-limit", u64::from(d.limit)),
        ("ratelimit-remaining", u64::from(d.remaining)),
        ("ratelimit-reset", reset),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
}
