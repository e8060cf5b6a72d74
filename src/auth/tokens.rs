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

use crate::config::{KeyRing, Secrets};

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
    /// The current key first, then older ones while `JWT_ACCESS_SECRET` rotates.
    access_dec: Vec<DecodingKey>,
    refresh_enc: EncodingKey,
    refresh_dec: Vec<DecodingKey>,
    access_ttl: Duration,
    refresh_ttl: Duration,
    validation: Validation,
}

impl TokenKeys {
    /// Keys from the shared secrets.
    pub fn new(secrets: &Secrets, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let decoders = |ring: &KeyRing| {
            ring.all()
                .iter()
                .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes()))
                .collect()
        };
        let mut validation = Validation::new(Algorithm::HS256);
        // A few seconds of clock skew between instances; not the library's 60 s
        // default, which would stretch a 15-minute token noticeably.
        validation.leeway = 5;
        Self {
            access_enc: EncodingKey::from_secret(
                secrets
                    .jwt_access_secret
                    .current()
                    .expose_secret()
                    .as_bytes(),
            ),
            access_dec: decoders(&secrets.jwt_access_secret),
            refresh_enc: EncodingKey::from_secret(
                secrets
                    .jwt_refresh_secret
                    .current()
                    .expose_secret()
                    .as_bytes(),
            ),
            refresh_dec: decoders(&secrets.jwt_refresh_secret),
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
        let claims: AccessClaims = self.decode(token, &self.access_dec)?;
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
        let claims: RefreshClaims = self.decode(token, &self.refresh_dec)?;
        if claims.typ != "refresh" {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// Decodes with the first key whose signature matches. The signature is checked
    /// before the claims, so an expired token signed by any key answers `Expired`.
    fn decode<C: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        keys: &[DecodingKey],
    ) -> Result<C, TokenError> {
        let mut outcome = Err(TokenError::Invalid);
        for key in keys {
            match jsonwebtoken::decode::<C>(token, key, &self.validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => {
                    outcome = Err(classify(e));
                    break;
                }
            }
        }
        outcome
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

    /// Keys whose access and refresh rings are `access` and `refresh` (letters,
    /// each standing for a 32-character secret).
    fn keys_with(access: &str, refresh: &str) -> TokenKeys {
        let ring = |letters: &str| {
            let list: Vec<String> = letters.chars().map(|c| c.to_string().repeat(32)).collect();
            KeyRing::parse("JWT_ACCESS_SECRET", &list.join(",")).expect("valid secrets")
        };
        TokenKeys::new(
            &Secrets {
                session_secret: KeyRing::single("a".repeat(32)),
                session_encryption_key: KeyRing::single("b".repeat(32)),
                jwt_access_secret: ring(access),
                jwt_refresh_secret: ring(refresh),
            },
            Duration::from_secs(900),
            Duration::from_secs(3600),
        )
    }

    fn keys() -> TokenKeys {
        keys_with("c", "d")
    }

    #[test]
    fn a_rotated_secret_still_verifies_what_it_signed_and_the_new_one_signs() {
        let (user, fam) = (Uuid::now_v7(), Uuid::now_v7());
        let before = keys_with("c", "d");
        let old_access = before.issue_access(user, "sid", fam);
        let old_refresh = before.issue_refresh(user, fam);

        let rotating = keys_with("ec", "fd");
        assert_eq!(
            rotating.verify_access(&old_access).expect("old key").sub,
            user
        );
        assert_eq!(
            rotating
                .verify_refresh(&old_refresh.token)
                .expect("old key")
                .fam,
            fam
        );
        let new_access = rotating.issue_access(user, "sid", fam);
        assert_eq!(
            before.verify_access(&new_access).err(),
            Some(TokenError::Invalid),
            "new tokens are signed with the first secret of the list"
        );

        let after = keys_with("e", "f");
        assert_eq!(after.verify_access(&new_access).expect("new key").sub, user);
        assert_eq!(
            after.verify_access(&old_access).err(),
            Some(TokenError::Invalid),
            "a secret dropped from the list verifies nothing any more"
        );
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
