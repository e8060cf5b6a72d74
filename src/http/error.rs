//! The one API error type and its JSON shape:
//! `{"error": {"code", "message", "request_id", "fields"?}}`.
//!
//! Handlers return [`ApiError`]; its `IntoResponse` only sets the status and puts an
//! [`ErrorInfo`] into the response extensions. The request-context middleware, which
//! knows the request id, renders the body and logs server errors — so every error,
//! including axum's own rejections and panics, comes out in the same shape.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::backend_error::{BackendError, BackendErrorKind};
use crate::db::StoreError;

/// One failing field of a 422.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as named in the request body or query.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// `field`: `message`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// An error answer of the API.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request cannot be parsed.
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// 401: missing, invalid or expired credentials.
    Unauthorized {
        /// `unauthorized`, `invalid_credentials`, `token_expired`, …
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// 403: authenticated and a member, but not allowed.
    Forbidden(String),
    /// 404: no such resource, or one the caller may not know about.
    NotFound(&'static str),
    /// 405.
    MethodNotAllowed,
    /// 409: conflicts with the current state.
    Conflict {
        /// `email_taken`, `version_conflict`, …
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// 413: body over the limit (bytes).
    PayloadTooLarge(usize),
    /// 415: not `application/json`.
    UnsupportedMediaType,
    /// 422: well-formed but invalid.
    Validation(Vec<FieldError>),
    /// 429: over budget.
    RateLimited {
        /// Until one more request is allowed.
        retry_after: Duration,
    },
    /// 429: a per-user limit on things in progress (not a request rate).
    LimitReached {
        /// `too_many_exports`, …
        code: &'static str,
        /// Human explanation.
        message: String,
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// 503: a dependency is down.
    Unavailable {
        /// `database`, `redis`.
        dependency: &'static str,
    },
    /// 503: the request took longer than `REQUEST_TIMEOUT`.
    Timeout,
    /// 503: the instance is shutting down.
    Draining,
    /// 500: a bug. The detail is logged, never sent.
    Internal(String),
}

/// What the context middleware needs to render and log an error.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    /// Machine-readable code.
    pub code: &'static str,
    /// Message for the client.
    pub message: String,
    /// Failing fields (422).
    pub fields: Vec<FieldError>,
    /// Detail for the log only (5xx).
    pub internal: Option<String>,
}

impl ApiError {
    /// 401 with the generic code.
    pub fn unauthorized() -> Self {
        ApiError::Unauthorized {
            code: "unauthorized",
            message: "authentication required".into(),
        }
    }

    /// 422 for one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::LimitReached { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable { .. } | ApiError::Timeout | ApiError::Draining => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn info(self) -> ErrorInfo {
        let simple = |code: &'static str, message: String| ErrorInfo {
            code,
            message,
            fields: Vec::new(),
            internal: None,
        };
        match self {
            ApiError::BadRequest { code, message } => simple(code, message),
            ApiError::Unauthorized { code, message } => simple(code, message),
            ApiError::Forbidden(message) => simple("forbidden", message),
            ApiError::NotFound(what) => simple("not_found", format!("{what} not found")),
            ApiError::MethodNotAllowed => simple(
                "method_not_allowed",
                "method not allowed on this route".into(),
            ),
            ApiError::Conflict { code, message } => simple(code, message),
            ApiError::PayloadTooLarge(limit) => simple(
                "payload_too_large",
                format!("request body is larger than {limit} bytes"),
            ),
            ApiError::UnsupportedMediaType => simple(
                "unsupported_media_type",
                "expected Content-Type: application/json".into(),
            ),
            ApiError::Validation(fields) => ErrorInfo {
                code: "validation_failed",
                message: fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                fields,
                internal: None,
            },
            ApiError::RateLimited { retry_after } => simple(
                "rate_limited",
                format!(
                    "too many requests; retry in {} s",
                    retry_after.as_secs_f64().ceil()
                ),
            ),
            ApiError::LimitReached { code, message, .. } => simple(code, message),
            ApiError::Unavailable { dependency } => simple(
                "service_unavailable",
                format!("{dependency} is unavailable; retry shortly"),
            ),
            ApiError::Timeout => simple(
                "request_timeout",
                "the request took too long and was abandoned".into(),
            ),
            ApiError::Draining => simple(
                "shutting_down",
                "this instance is shutting down; retry".into(),
            ),
            ApiError::Internal(detail) => ErrorInfo {
                code: "internal_error",
                message: "internal server error".into(),
                fields: Vec::new(),
                internal: Some(detail),
            },
        }
    }

    /// The info a status alone implies, for responses that did not come from an
    /// [`ApiError`] (axum's 405, a layer's 408).
    pub fn info_for_status(status: StatusCode) -> ErrorInfo {
        let code = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            s if s.is_server_error() => "internal_error",
            _ => "error",
        };
        ErrorInfo {
            code,
            message: status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase(),
            fields: Vec::new(),
            internal: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::RateLimited { retry_after } | ApiError::LimitReached { retry_after, .. } => {
                Some(retry_after.as_secs().max(1))
            }
            ApiError::Unavailable { .. } | ApiError::Draining => Some(1),
            _ => None,
        };
        let mut response = status.into_response();
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response.extensions_mut().insert(self.info());
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable {
                dependency: "database",
            },
            // The constraint's name would tell a client about our schema: keep it in
            // the logs (debug) and out of the body.
            StoreError::Conflict(e) => {
                tracing::debug!(error = %e, "unique constraint");
                ApiError::Conflict {
                    code: "conflict",
                    message: "conflicts with existing data".into(),
                }
            }
            StoreError::Internal(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e.kind() {
            BackendErrorKind::Unavailable => ApiError::Unavailable {
                dependency: e.dependency(),
            },
            BackendErrorKind::Corrupt => ApiError::Internal(e.to_string()),
        }
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
