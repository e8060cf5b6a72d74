//! The look-up cache: in-process only, or in-process in front of Redis.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Key, positive, secs};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "CACHE_PROVIDER",
        default: "`redis` with Redis, else `memory`",
        meaning: "`memory` or `redis`",
    },
    Key {
        name: "CACHE_TTL",
        default: "300 (s)",
        meaning: "cache entry lifetime",
    },
    Key {
        name: "CACHE_MAX_SIZE",
        default: "100000",
        meaning: "entries kept in the in-process cache",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    cache_provider: Option<CacheProvider>,
    #[serde(default = "default_ttl")]
    cache_ttl: u64,
    #[serde(default = "default_max_size")]
    cache_max_size: u64,
}

fn default_ttl() -> u64 {
    300
}
fn default_max_size() -> u64 {
    100_000
}

/// Which cache backend serves look-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheProvider {
    /// In-process only (moka); right for a single instance.
    Memory,
    /// In-process first level plus Redis second level with invalidation broadcast.
    Redis,
}

/// The cache section.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Cache backend.
    pub provider: CacheProvider,
    /// How long a cached entry lives.
    pub ttl: Duration,
    /// Entries kept in the in-process cache.
    pub max_size: u64,
}

impl CacheConfig {
    pub(super) fn from_raw(raw: Raw, distributed: bool) -> Result<Self, ConfigError> {
        let provider = match (raw.cache_provider, distributed) {
            (Some(CacheProvider::Redis), false) => {
                return Err(ConfigError::new(
                    "CACHE_PROVIDER",
                    "redis needs REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES",
                ));
            }
            (Some(p), _) => p,
            (None, true) => CacheProvider::Redis,
            (None, false) => CacheProvider::Memory,
        };
        positive("CACHE_TTL", raw.cache_ttl)?;
        positive("CACHE_MAX_SIZE", raw.cache_max_size)?;
        Ok(Self {
            provider,
            ttl: Duration::from_secs(raw.cache_ttl),
            max_size: raw.cache_max_size,
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            (
                "CACHE_PROVIDER",
                format!("{:?}", self.provider).to_lowercase(),
            ),
            ("CACHE_TTL", secs(self.ttl)),
            ("CACHE_MAX_SIZE", self.max_size.to_string()),
        ]);
    }
}
