//! Who is calling: a session cookie or `Authorization: Bearer <access JWT>`.
//!
//! Resolved once per request by [`identify`] (one session-store read either way,
//! since an access token is only good while its session lives); handlers that need a
//! user take the [`Auth`] extractor, which answers 401 with the precise reason.

use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::error::ApiError;
use crate::auth::tokens::TokenError;
use crate::state::AppState;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user_id: Uuid,
    /// Storage key of the session.
    pub session_key: String,
    /// Refresh family of the session.
    pub family_id: Uuid,
}

/// The outcome of authentication, stored in request extensions.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials were sent.
    Anonymous,
    /// Valid credentials.
    User(Principal),
    /// Credentials were sent but refused, with the 401 code to answer.
    Refused(&'static str),
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
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let Some(token) = auth.to_str().ok().and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        }) else {
            return Ok(Caller::Refused("invalid_token"));
        };
        let claims = match state.tokens.verify_access(token.trim()) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Ok(Caller::Refused("token_expired")),
            Err(TokenError::Invalid) => return Ok(Caller::Refused("invalid_token")),
        };
        return Ok(match state.sessions.load(&claims.sid).await? {
            Some(record) if record.user_id == claims.sub => Caller::User(Principal {
                user_id: record.user_id,
                session_key: claims.sid,
                family_id: record.family_id,
            }),
            _ => Caller::Refused("session_expired"),
        });
    }
    if let Some(cookie) = cookie_value(headers, &state.config.session_cookie_name) {
        let key = state.sessions.key_for_cookie(cookie);
        return Ok(match state.sessions.load(&key).await? {
            Some(record) => Caller::User(Principal {
                user_id: record.user_id,
                session_key: key,
                family_id: record.family_id,
            }),
            None => Caller::Refused("session_expired"),
        });
    }
    Ok(Caller::Anonymous)
}

/// The value of cookie `name` in the `Cookie` headers.
pub fn cookie_value<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The authenticated caller, or 401.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::User(p)) => Ok(Auth(p.clone())),
            Some(Caller::Refused(code)) => Err(ApiError::Unauthorized {
                code,
                message: match *code {
                    "token_expired" => "access token expired; refresh it",
                    "session_expired" => "session ended or expired; log in again",
                    _ => "invalid credentials",
                }
                .into(),
            }),
            _ => Err(ApiError::unauthorized()),
        }
    }
}
