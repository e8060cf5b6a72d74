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
    /// When these credentials stop being valid unless renewed (the session's end, or
    /// the access token's if sooner), microseconds since the epoch: a Socket.IO
    /// connection ends then (src/realtime/expiry.rs).
    pub expires_at: i64,
    /// The access token's expiry (microseconds since the epoch), if the caller sent
    /// one.
    pub token_expires_at: Option<i64>,
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
                Some(record) if record.user_id == claims.sub => {
                    let token_expires_at =
                        i64::try_from(claims.exp).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
                    Ok(Principal {
                        user_id: record.user_id,
                        session_key: claims.sid,
                        family_id: record.family_id,
                        expires_at: state.sessions.expires_at(&record).min(token_expires_at),
                        token_expires_at: Some(token_expires_at),
                    })
                }
                _ => Err(Refused::SessionExpired.into()),
            }
        }
        Credential::SessionCookie(cookie) => match state.sessions.find_by_cookie(cookie).await? {
            Some((key, record)) => Ok(Principal {
                user_id: record.user_id,
                session_key: key,
                family_id: record.family_id,
                expires_at: state.sessions.expires_at(&record),
                token_expires_at: None,
            }),
            None => Err(Refused::SessionExpired.into()),
        },
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

/// Whether a browser page at `origin` may use the session cookie on a request to
/// `host` (a Socket.IO handshake: browsers apply no CORS to WebSockets, and a
/// `SameSite=Lax` cookie still goes along from a sibling subdomain). Allowed: no
/// `Origin` (not a browser), the same origin as `host`, or an origin `CORS_ORIGINS`
/// lists (`*` allows any). An access token is not subject to this: a page of
/// another site cannot read it.
pub fn cookie_origin_allowed(origin: Option<&str>, host: Option<&str>, cors: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if cors
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let (Some(origin_host), Some(host)) = (
        origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://")),
        host,
    ) else {
        return false;
    };
    // A proxy may pass `Host` without the port the browser used (nginx's `$host`):
    // then the names alone are compared.
    let origin_host = if host.contains(':') {
        origin_host
    } else {
        origin_host
            .rsplit_once(':')
            .map_or(origin_host, |(name, _)| name)
    };
    origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_good_from_its_own_origin_or_a_listed_one() {
        let none: Vec<String> = Vec::new();
        let host = Some("app.example.com");
        assert!(cookie_origin_allowed(None, host, &none));
        assert!(cookie_origin_allowed(
            Some("https://app.example.com"),
            host,
            &none
        ));
        assert!(!cookie_origin_allowed(
            Some("https://evil.example.com"),
            host,
            &none
        ));
        assert!(!cookie_origin_allowed(Some("null"), host, &none));
        // Behind a proxy that passes Host without the port.
        assert!(cookie_origin_allowed(
            Some("http://app.example.com:8080"),
            host,
            &none
        ));
        let with_port = Some("app.example.com:8443");
        assert!(!cookie_origin_allowed(
            Some("https://app.example.com:9999"),
            with_port,
            &none
        ));
        let listed = vec!["https://web.example.com".to_owned()];
        assert!(cookie_origin_allowed(
            Some("https://web.example.com"),
            host,
            &listed
        ));
        assert!(cookie_origin_allowed(
            Some("https://x.test"),
            host,
            &["*".to_owned()]
        ));
    }
}
