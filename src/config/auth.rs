//! Sessions and tokens: lifetimes, the session cookie, and the four shared secrets
//! (generated under `DATA_DIR` in embedded mode, required in distributed mode).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, Key, positive, secs};

/// Secrets shorter than this are refused: they are HMAC and AEAD keys.
const MIN_SECRET_LEN: usize = 32;

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "SESSION_SECRET",
        default: "generated in `DATA_DIR/secrets.json` (0600) in embedded mode; **required** with Redis",
        meaning: "keys the HMAC of the session cookie; ≥ 32 characters; all four secrets or none. Each of the four takes a comma list to rotate: the first signs or seals, every one verifies or opens (docs/operations.md)",
    },
    Key {
        name: "SESSION_ENCRYPTION_KEY",
        default: "as `SESSION_SECRET`",
        meaning: "derives the key that encrypts session records at rest; ≥ 32 characters",
    },
    Key {
        name: "JWT_ACCESS_SECRET",
        default: "as `SESSION_SECRET`",
        meaning: "signs access tokens (HS256); ≥ 32 characters",
    },
    Key {
        name: "JWT_REFRESH_SECRET",
        default: "as `SESSION_SECRET`",
        meaning: "signs refresh tokens (HS256); ≥ 32 characters, different from `JWT_ACCESS_SECRET`",
    },
    Key {
        name: "SESSION_TTL",
        default: "86400 (s)",
        meaning: "server-side session lifetime and cookie Max-Age",
    },
    Key {
        name: "SESSION_COOKIE_NAME",
        default: "`shoal_session`",
        meaning: "name of the session cookie",
    },
    Key {
        name: "COOKIE_SECURE",
        default: "false",
        meaning: "mark the session cookie `Secure`; set it to true behind TLS",
    },
    Key {
        name: "JWT_ACCESS_TTL",
        default: "900 (s)",
        meaning: "access token lifetime",
    },
    Key {
        name: "JWT_REFRESH_TTL",
        default: "604800 (s)",
        meaning: "refresh token lifetime",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    session_secret: Option<String>,
    session_encryption_key: Option<String>,
    jwt_access_secret: Option<String>,
    jwt_refresh_secret: Option<String>,
    #[serde(default = "default_session_ttl")]
    session_ttl: u64,
    #[serde(default = "default_session_cookie_name")]
    session_cookie_name: String,
    #[serde(default)]
    cookie_secure: bool,
    #[serde(default = "default_jwt_access_ttl")]
    jwt_access_ttl: u64,
    #[serde(default = "default_jwt_refresh_ttl")]
    jwt_refresh_ttl: u64,
}

fn default_session_ttl() -> u64 {
    86_400
}
fn default_session_cookie_name() -> String {
    "shoal_session".into()
}
fn default_jwt_access_ttl() -> u64 {
    900
}
fn default_jwt_refresh_ttl() -> u64 {
    7 * 86_400
}

/// One secret, or several while one is being rotated: the first signs or seals new
/// things, every one verifies or opens what older instances made. Rotation is then
/// two rolling restarts (add the new secret in front, later drop the old one) and
/// logs nobody out.
#[derive(Debug, Clone)]
pub struct KeyRing(Vec<SecretString>);

impl KeyRing {
    /// A ring of one secret.
    pub fn single(secret: String) -> Self {
        Self(vec![secret.into()])
    }

    /// The secret that signs and seals.
    pub fn current(&self) -> &SecretString {
        &self.0[0]
    }

    /// Every secret, the current one first.
    pub fn all(&self) -> &[SecretString] {
        &self.0
    }

    /// Parses a comma list of secrets, each at least [`MIN_SECRET_LEN`] long.
    pub fn parse(key: &'static str, value: &str) -> Result<Self, ConfigError> {
        let mut ring = Vec::new();
        for part in value.split(',') {
            let part = part.trim();
            if part.chars().count() < MIN_SECRET_LEN {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "each secret (a comma list rotates them) must be at least {MIN_SECRET_LEN} characters"
                    ),
                ));
            }
            ring.push(SecretString::from(part.to_owned()));
        }
        Ok(Self(ring))
    }

    fn shares_a_secret_with(&self, other: &KeyRing) -> bool {
        self.0.iter().any(|a| {
            other
                .0
                .iter()
                .any(|b| a.expose_secret() == b.expose_secret())
        })
    }
}

/// The four shared secrets. Generated under `DATA_DIR` in embedded mode.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Keys the HMAC that turns a session cookie into its storage key.
    pub session_secret: KeyRing,
    /// Derives the AEAD key that encrypts session records at rest.
    pub session_encryption_key: KeyRing,
    /// Signs access JWTs (HS256).
    pub jwt_access_secret: KeyRing,
    /// Signs refresh JWTs (HS256); a different key so one can never pass for the other.
    pub jwt_refresh_secret: KeyRing,
}

/// The sessions and tokens section.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Shared secrets (from config, or generated in embedded mode).
    pub secrets: Option<Secrets>,
    /// Server-side session lifetime; also the cookie's Max-Age.
    pub session_ttl: Duration,
    /// Name of the session cookie.
    pub session_cookie_name: String,
    /// Mark the session cookie `Secure` (set it behind TLS).
    pub cookie_secure: bool,
    /// Access JWT lifetime.
    pub jwt_access_ttl: Duration,
    /// Refresh token lifetime.
    pub jwt_refresh_ttl: Duration,
}

impl AuthConfig {
    pub(super) fn from_raw(raw: Raw, distributed: bool) -> Result<Self, ConfigError> {
        positive("SESSION_TTL", raw.session_ttl)?;
        positive("JWT_ACCESS_TTL", raw.jwt_access_ttl)?;
        positive("JWT_REFRESH_TTL", raw.jwt_refresh_ttl)?;
        if raw.session_cookie_name.is_empty()
            || !raw
                .session_cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(ConfigError::new(
                "SESSION_COOKIE_NAME",
                "must be a non-empty token of letters, digits, '_', '-' or '.'",
            ));
        }
        let given = [
            ("SESSION_SECRET", raw.session_secret),
            ("SESSION_ENCRYPTION_KEY", raw.session_encryption_key),
            ("JWT_ACCESS_SECRET", raw.jwt_access_secret),
            ("JWT_REFRESH_SECRET", raw.jwt_refresh_secret),
        ];
        Ok(Self {
            secrets: secrets(given, distributed)?,
            session_ttl: Duration::from_secs(raw.session_ttl),
            session_cookie_name: raw.session_cookie_name,
            cookie_secure: raw.cookie_secure,
            jwt_access_ttl: Duration::from_secs(raw.jwt_access_ttl),
            jwt_refresh_ttl: Duration::from_secs(raw.jwt_refresh_ttl),
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        fn mask(s: Option<&KeyRing>) -> String {
            match s.map(|ring| ring.all().len()) {
                Some(1) => "******** (set)".into(),
                Some(n) => format!("******** (set, {n} secrets: the first signs)"),
                None => "(generated under DATA_DIR)".into(),
            }
        }
        let secrets = self.secrets.as_ref();
        out.extend([
            ("SESSION_SECRET", mask(secrets.map(|s| &s.session_secret))),
            (
                "SESSION_ENCRYPTION_KEY",
                mask(secrets.map(|s| &s.session_encryption_key)),
            ),
            (
                "JWT_ACCESS_SECRET",
                mask(secrets.map(|s| &s.jwt_access_secret)),
            ),
            (
                "JWT_REFRESH_SECRET",
                mask(secrets.map(|s| &s.jwt_refresh_secret)),
            ),
            ("SESSION_TTL", secs(self.session_ttl)),
            ("SESSION_COOKIE_NAME", self.session_cookie_name.clone()),
            ("COOKIE_SECURE", self.cookie_secure.to_string()),
            ("JWT_ACCESS_TTL", secs(self.jwt_access_ttl)),
            ("JWT_REFRESH_TTL", secs(self.jwt_refresh_ttl)),
        ]);
    }
}

/// All four secrets or none; none only in embedded mode, where they are generated.
fn secrets(
    given: [(&'static str, Option<String>); 4],
    distributed: bool,
) -> Result<Option<Secrets>, ConfigError> {
    let mut rings = Vec::with_capacity(4);
    for (key, value) in &given {
        if let Some(v) = value {
            rings.push(KeyRing::parse(key, v)?);
        }
    }
    if let Ok(
        [
            session_secret,
            session_encryption_key,
            jwt_access_secret,
            jwt_refresh_secret,
        ],
    ) = <[KeyRing; 4]>::try_from(rings)
    {
        if jwt_access_secret.shares_a_secret_with(&jwt_refresh_secret) {
            return Err(ConfigError::new(
                "JWT_REFRESH_SECRET",
                "must differ from JWT_ACCESS_SECRET (no secret in both lists)",
            ));
        }
        return Ok(Some(Secrets {
            session_secret,
            session_encryption_key,
            jwt_access_secret,
            jwt_refresh_secret,
        }));
    }
    let missing: Vec<&str> = given
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| *k)
        .collect();
    // Instances behind one load balancer must share the secrets, so a distributed
    // instance cannot make its own.
    if distributed {
        return Err(ConfigError::new(
            missing[0],
            format!(
                "is required in distributed mode (REDIS_URL is set); missing: {}",
                missing.join(", ")
            ),
        ));
    }
    if missing.len() < 4 {
        return Err(ConfigError::new(
            missing[0],
            "set all four secrets or none (then they are generated under DATA_DIR)",
        ));
    }
    Ok(None)
}
