//! Who is calling: a session cookie or `Authorization: Bearer <access JWT>`.
//!
//! Resolved once per request by [`identify`] through the use-case
//! [`crate::usecase::identity`] (shared with the Socket.IO handshake); handlers that need a
//! user take the [`Auth`] extractor, which answers 401 with the precise reason.

use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;
pub use crate::usecase::identity::Principal;
use crate::usecase::identity::{self, Credential, IdentityError, Refused, cookie_value};

/// The outcome of authentication, stored in request extensions.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials were sent.
    Anonymous,
    /// Valid credentials.
    User(Principal),
    /// Credentials were sent but refused: 401 with this reason.
    Refused(Refused),
}

/// Resolves the caller and puts it into the request's extensions; `Err` is the 503
/// to answer when the session store is down.
pub async fn identify(state: &AppState, mut req: Request) -> Result<Request, Response> {
    let caller = resolve(state, req.headers())
        .await
        .map_err(IntoResponse::into_response)?;
    req.extensions_mut().insert(caller);
    Ok(req)
}

async fn resolve(state: &AppState, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
    let credential = if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let Some(token) = auth.to_str().ok().and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        }) else {
            return Ok(Caller::Refused(Refused::InvalidToken));
        };
        Credential::AccessToken(token.trim())
    } else if let Some(cookie) = cookie_value(headers, &state.config.auth.session_cookie_name) {
        Credential::SessionCookie(cookie)
    } else {
        return Ok(Caller::Anonymous);
    };
    match identity::authenticate(state, credential).await {
        Ok(principal) => Ok(Caller::User(principal)),
        Err(IdentityError::Refused(refused)) => Ok(Caller::Refused(refused)),
        Err(IdentityError::Unavailable(e)) => Err(e.into()),
    }
}

/// The authenticated caller, or 401.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::User(p)) => Ok(Auth(p.clone())),
            Some(Caller::Refused(refused)) => Err(ApiError::Unauthorized {
                code: refused.code(),
                message: refused.to_string(),
            }),
            _ => Err(ApiError::unauthorized()),
        }
    }
}
