//! Request budgets per user and per client IP.

use serde::Deserialize;

use super::{ConfigError, Key, positive};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "RATE_LIMIT_USER_PER_MIN",
        default: "100",
        meaning: "requests per minute per authenticated user",
    },
    Key {
        name: "RATE_LIMIT_IP_PER_MIN",
        default: "300",
        meaning: "requests per minute per client IP, anonymous requests (an IPv6 client: per /64)",
    },
    Key {
        name: "RATE_LIMIT_AUTH_PER_MIN",
        default: "10",
        meaning: "requests per minute per client IP on `/api/auth/*` (an IPv6 client: per /64)",
    },
    Key {
        name: "RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN",
        default: "20",
        meaning: "login attempts per minute for one e-mail address, from any client address",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    #[serde(default = "default_user")]
    rate_limit_user_per_min: u32,
    #[serde(default = "default_ip")]
    rate_limit_ip_per_min: u32,
    #[serde(default = "default_auth")]
    rate_limit_auth_per_min: u32,
    #[serde(default = "default_login_per_account")]
    rate_limit_login_per_account_per_min: u32,
}

fn default_user() -> u32 {
    100
}
fn default_ip() -> u32 {
    300
}
fn default_auth() -> u32 {
    10
}
fn default_login_per_account() -> u32 {
    20
}

/// The rate-limit section.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Requests per minute per authenticated user.
    pub user_per_min: u32,
    /// Requests per minute per client IP (anonymous requests).
    pub ip_per_min: u32,
    /// Requests per minute per client IP on `/api/auth/*`.
    pub auth_per_min: u32,
    /// Login attempts per minute for one e-mail address, from any client address. Twice
    /// the per-IP budget: a user's own retries from two networks still fit, and another
    /// person who spends it (a deliberate lock-out) delays a login by a minute at most.
    pub login_per_account_per_min: u32,
}

impl RateLimitConfig {
    pub(super) fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        positive(
            "RATE_LIMIT_USER_PER_MIN",
            u64::from(raw.rate_limit_user_per_min),
        )?;
        positive(
            "RATE_LIMIT_IP_PER_MIN",
            u64::from(raw.rate_limit_ip_per_min),
        )?;
        positive(
            "RATE_LIMIT_AUTH_PER_MIN",
            u64::from(raw.rate_limit_auth_per_min),
        )?;
        positive(
            "RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN",
            u64::from(raw.rate_limit_login_per_account_per_min),
        )?;
        Ok(Self {
            login_per_account_per_min: raw.rate_limit_login_per_account_per_min,
            user_per_min: raw.rate_limit_user_per_min,
            ip_per_min: raw.rate_limit_ip_per_min,
            auth_per_min: raw.rate_limit_auth_per_min,
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            ("RATE_LIMIT_USER_PER_MIN", self.user_per_min.to_string()),
            ("RATE_LIMIT_IP_PER_MIN", self.ip_per_min.to_string()),
            ("RATE_LIMIT_AUTH_PER_MIN", self.auth_per_min.to_string()),
            (
                "RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN",
                self.login_per_account_per_min.to_string(),
            ),
        ]);
    }
}
