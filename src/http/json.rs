//! Extractors that speak the API's error format: `Json` (400 malformed, 413 too
//! large, 415 wrong content type, 422 invalid), `Query` (422) and `Path` (404).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{ApiError, FieldError};

/// Request bodies check their own rules after parsing.
pub trait Validate {
    /// Every failing field, or `Ok`.
    fn validate(&self) -> Result<(), Vec<FieldError>>;
}

/// Collects field errors.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    /// Records `message` for `field` when `ok` is false.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.0.push(FieldError::new(field, message));
        }
        self
    }

    /// A trimmed string of `min..=max` characters.
    pub fn text(&mut self, value: &str, field: &str, min: usize, max: usize) -> &mut Self {
        let n = value.trim().chars().count();
        let ok = n >= min && value.chars().count() <= max;
        let msg = if min > 0 {
            format!("must be {min} to {max} characters")
        } else {
            format!("must be at most {max} characters")
        };
        if !ok {
            self.0.push(FieldError::new(field, msg));
        }
        self
    }

    /// The result.
    pub fn finish(&mut self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(&mut self.0))
        }
    }
}

/// JSON body in, JSON body out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(usize::MAX);
        let axum::Json(value) = axum::Json::<T>::from_request(req, state)
            .await
            .map_err(|rejection| json_rejection(rejection, limit))?;
        value.validate().map_err(ApiError::Validation)?;
        Ok(Json(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The configured body limit, put into request extensions so that the 413 message
/// can say what it is.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn json_rejection(rejection: JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest {
            code: "malformed_json",
            message: format!("request body is not valid JSON: {}", inner_message(&e)),
        },
        JsonRejection::JsonDataError(e) => {
            let detail = inner_message(&e);
            let field = detail
                .split_once(':')
                .map(|(path, _)| path.trim())
                .filter(|p| !p.contains(' '))
                .unwrap_or("body");
            ApiError::invalid(field, detail.clone())
        }
        JsonRejection::BytesRejection(e) => {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::BadRequest {
                    code: "bad_request",
                    message: "could not read the request body".into(),
                }
            }
        }
        other => ApiError::BadRequest {
            code: "bad_request",
            message: other.body_text(),
        },
    }
}

fn inner_message(e: &dyn std::error::Error) -> String {
    let mut source = e.source();
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// Query string, 422 on a bad one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::invalid("query", inner_message(&e)))
    }
}

/// Path parameters; one that does not parse (a malformed id) is a 404.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_: PathRejection| ApiError::NotFound("resource"))
    }
}
