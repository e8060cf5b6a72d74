//! Who is calling: an access token (HTTP `Authorization: Bearer`, Socket.IO
//! `auth: {token}`) or a session cookie (both transports). An access token is only
//! good while its session lives, so either way costs one session-store read.

use axum::http::{HeaderMap, header};
use uuid::Uuid;

use crate::auth::tokens::TokenError;
use crate::backend_error::BackendError;
use crate::state::AppState;

/// What the caller presented.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// An access JWT.
    AccessToken(&'a str),
    /// The value of the session cookie.
    SessionCookie(&'a str),
}

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

/// Why credentials were refused; [`Refused::code`] is the code both transports send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a token Shoal signed, or malformed.
    #[error("invalid credentials")]
    InvalidToken,
    /// A valid token past its expiry: refresh it.
    #[error("access token expired; refresh it")]
    TokenExpired,
    /// The session ended (logout, revocation) or expired: log in again.
    #[error("session ended or expired; log in again")]
    SessionExpired,
}

impl Refused {
    /// The error code on the wire (HTTP 401 body, Socket.IO `connect_error`).
    pub fn code(self) -> &'static str {
        match self {
            Refused::InvalidToken => "invalid_token",
            Refused::TokenExpired => "token_expired",
            Refused::SessionExpired => "session_expired",
        }
    }
}

/// Why authentication did not produce a [`Principal`].
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The credentials were refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The session store cannot answer.
    #[error(transparent)]
    Unavailable(#[from] BackendError),
}

/// Resolves `credential` to the caller.
pub async fn authenticate(
    state: &AppState,
    credential: Credential<'_>,
) -> Result<Principal, IdentityError> {
    match credential {
        Credential::AccessToken(token) => {
            let claims = state.tokens.verify_access(token).map_err(|e| match e {
                TokenError::Expired => Refused::TokenExpired,
                TokenError::Invalid => Refused::InvalidToken,
            })?;
            match state.sessions.load(&claims.sid).await? {
                Some(record) if record.user_id == claims.sub => Ok(Principal {
                    user_id: record.user_id,
                    session_key: claims.sid,
                    family_id: record.family_id,
                }),
                _ => Err(Refused::SessionExpired.into()),
            }
        }
        Credential::SessionCookie(cookie) => {
            let key = state.sessions.key_for_cookie(cookie);
            match state.sessions.load(&key).await? {
                Some(record) => Ok(Principal {
                    user_id: record.user_id,
                    session_key: key,
                    family_id: record.family_id,
                }),
                None => Err(Refused::SessionExpired.into()),
            }
        }
    }
}

/// The value of cookie `name` in the `Cookie` headers (of an HTTP request or of a
/// Socket.IO handshake).
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
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
