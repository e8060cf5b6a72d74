//! Access and refresh JWTs (HS256, separate keys).
//!
//! The access token names the session it belongs to (`sid`, the session's storage
//! key, never the cookie value), so a request with it is only accepted while that
//! session lives. The refresh token names its family (`fam`) and its own id (`jti`);
//! the database keeps a SHA-256 of it to detect reuse.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Secrets;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Well-formed and signed by us, but past its expiry.
    #[error("token expired")]
    Expired,
    /// Anything else: bad signature, wrong kind, garbage.
    #[error("invalid token")]
    Invalid,
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user.
    pub sub: Uuid,
    /// Storage key of the session this token belongs to.
    pub sid: String,
    /// Refresh family of that session.
    pub fam: Uuid,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Always `access`.
    pub typ: String,
}

/// Claims of a refresh token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshClaims {
    /// The user.
    pub sub: Uuid,
    /// The family (one per login).
    pub fam: Uuid,
    /// This token's id.
    pub jti: Uuid,
    /// Issued at.
    pub iat: u64,
    /// Expiry.
    pub exp: u64,
    /// Always `refresh`.
    pub typ: String,
}

/// A freshly issued refresh token and what the database must remember of it.
#[derive(Debug, Clone)]
pub struct IssuedRefresh {
    /// The token for the client.
    pub token: String,
    /// Its id.
    pub jti: Uuid,
    /// Hex SHA-256 of `token`.
    pub hash: String,
    /// Expiry in microseconds since the epoch.
    pub expires_at_micros: i64,
}

/// Signs and checks tokens. Built once at start-up.
#[derive(Clone)]
pub struct TokenKeys {
    access_enc: EncodingKey,
    access_dec: DecodingKey,
    refresh_enc: EncodingKey,
    refresh_dec: DecodingKey,
    access_ttl: Duration,
    refresh_ttl: Duration,
    validation: Validation,
}

impl TokenKeys {
    /// Keys from the shared secrets.
    pub fn new(secrets: &Secrets, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let access = secrets.jwt_access_secret.expose_secret().as_bytes();
        let refresh = secrets.jwt_refresh_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        // A few seconds of clock skew between instances; not the library's 60 s
        // default, which would stretch a 15-minute token noticeably.
        validation.leeway = 5;
        Self {
            access_enc: EncodingKey::from_secret(access),
            access_dec: DecodingKey::from_secret(access),
            refresh_enc: EncodingKey::from_secret(refresh),
            refresh_dec: DecodingKey::from_secret(refresh),
            access_ttl,
            refresh_ttl,
            validation,
        }
    }

    /// Lifetime of an access token, for `expires_in`.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Signs an access token for `user` in session `sid` of family `fam`.
    pub fn issue_access(&self, user: Uuid, sid: &str, fam: Uuid) -> String {
        let now = unix_now();
        let claims = AccessClaims {
            sub: user,
            sid: sid.to_owned(),
            fam,
            iat: now,
            exp: now + self.access_ttl.as_secs(),
            typ: "access".into(),
        };
        // HS256 over a serialisable struct cannot fail.
        jsonwebtoken::encode(&Header::default(), &claims, &self.access_enc).unwrap_or_default()
    }

    /// Checks an access token.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims: AccessClaims = jsonwebtoken::decode(token, &self.access_dec, &self.validation)
            .map_err(classify)?
            .claims;
        if claims.typ != "access" {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// Signs a new refresh token of `fam`.
    pub fn issue_refresh(&self, user: Uuid, fam: Uuid) -> IssuedRefresh {
        let now = unix_now();
        let jti = Uuid::now_v7();
        let exp = now + self.refresh_ttl.as_secs();
        let claims = RefreshClaims {
            sub: user,
            fam,
            jti,
            iat: now,
            exp,
            typ: "refresh".into(),
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &self.refresh_enc)
            .unwrap_or_default();
        IssuedRefresh {
            hash: token_hash(&token),
            token,
            jti,
            expires_at_micros: i64::try_from(exp).unwrap_or(i64::MAX) * 1_000_000,
        }
    }

    /// Checks a refresh token's signature and expiry (its state is in the database).
    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, TokenError> {
        let claims: RefreshClaims =
            jsonwebtoken::decode(token, &self.refresh_dec, &self.validation)
                .map_err(classify)?
                .claims;
        if claims.typ != "refresh" {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// Hex SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn classify(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        _ => TokenError::Invalid,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn keys() -> TokenKeys {
        let s = |c: char| SecretString::from(c.to_string().repeat(32));
        TokenKeys::new(
            &Secrets {
                session_secret: s('a'),
                session_encryption_key: s('b'),
                jwt_access_secret: s('c'),
                jwt_refresh_secret: s('d'),
            },
            Duration::from_secs(900),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn access_and_refresh_tokens_are_not_interchangeable() {
        let k = keys();
        let user = Uuid::now_v7();
        let fam = Uuid::now_v7();
        let access = k.issue_access(user, "sid", fam);
        let refresh = k.issue_refresh(user, fam);
        assert_eq!(k.verify_access(&access).expect("valid").sub, user);
        assert_eq!(k.verify_refresh(&refresh.token).expect("valid").fam, fam);
        assert_eq!(
            k.verify_access(&refresh.token).err(),
            Some(TokenError::Invalid)
        );
        assert_eq!(k.verify_refresh(&access).err(), Some(TokenError::Invalid));
        assert_eq!(k.verify_access("garbage").err(), Some(TokenError::Invalid));
    }
}
