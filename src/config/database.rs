//! The database: `DATABASE_URL` (SQLite in embedded mode, PostgreSQL in distributed
//! mode) and the connection pool.

use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, Key, mask_url, positive, secs};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "DATABASE_URL",
        default: "`sqlite://{DATA_DIR}/shoal.db`",
        meaning: "`sqlite:…` or `postgres://…`",
    },
    Key {
        name: "DATABASE_POOLER",
        default: "none",
        meaning: "`transaction` when `DATABASE_URL` is a transaction-pooling proxy (PgBouncer `pool_mode = transaction`): every statement runs unnamed inside an explicit transaction, and instances never migrate through it (see `DATABASE_MIGRATION_URL`)",
    },
    Key {
        name: "DATABASE_MIGRATION_URL",
        default: "unset",
        meaning: "a direct `postgres://…` URL (not through the pooler) that `serve` and `shoal migrate` migrate with; unset behind a pooler, instances wait (live, unready: `migrations_pending`) until `shoal migrate` has run",
    },
    Key {
        name: "DB_POOL_MIN",
        default: "1",
        meaning: "connections kept open even when idle (≤ `DB_POOL_MAX`)",
    },
    Key {
        name: "DB_POOL_MAX",
        default: "10",
        meaning: "upper bound of the pool (≥ 1)",
    },
    Key {
        name: "DB_ACQUIRE_TIMEOUT",
        default: "5 (s)",
        meaning: "wait for a pooled connection before answering 503",
    },
    Key {
        name: "DB_STATEMENT_TIMEOUT",
        default: "30 (s)",
        meaning: "PostgreSQL `statement_timeout`",
    },
    Key {
        name: "DB_CONNECT_RETRIES",
        default: "unset: `serve` never gives up; commands retry 3 times",
        meaning: "while the database is unreachable or full at start-up, `serve` stays up (live, not ready: `database_unreachable` / `database_full`) and retries with backoff (0.25 s doubling to 30 s, ±20 % jitter); a number makes it exit after that many retries",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    database_url: Option<String>,
    #[serde(default)]
    database_pooler: Pooler,
    database_migration_url: Option<String>,
    #[serde(default = "default_pool_min")]
    db_pool_min: u32,
    #[serde(default = "default_pool_max")]
    db_pool_max: u32,
    #[serde(default = "default_acquire_timeout")]
    db_acquire_timeout: u64,
    #[serde(default = "default_statement_timeout")]
    db_statement_timeout: u64,
    db_connect_retries: Option<u32>,
}

// One connection per core plus headroom: on SQLite writers serialise anyway, and
// on PostgreSQL 100 instances × 10 already reach max_connections=1000 territory.
fn default_pool_min() -> u32 {
    1
}
fn default_pool_max() -> u32 {
    10
}
fn default_acquire_timeout() -> u64 {
    5
}
fn default_statement_timeout() -> u64 {
    30
}

/// Which database engine a `DATABASE_URL` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    /// A SQLite file (embedded mode).
    Sqlite,
    /// A PostgreSQL server (distributed mode).
    Postgres,
}

/// What sits between Shoal and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// Shoal talks to PostgreSQL itself (or through a session-pooling proxy).
    #[default]
    None,
    /// A transaction-pooling proxy: a server connection is ours only inside a
    /// transaction (PgBouncer's `pool_mode = transaction`).
    Transaction,
}

/// The database section.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// sqlx URL of the database.
    pub url: SecretString,
    /// Engine behind `url`.
    pub kind: DatabaseKind,
    /// What sits between Shoal and PostgreSQL.
    pub pooler: Pooler,
    /// A direct URL for migrations, when `url` goes through a pooler.
    pub migration_url: Option<SecretString>,
    /// Connections kept open even when idle.
    pub pool_min: u32,
    /// Upper bound of the pool.
    pub pool_max: u32,
    /// How long a request waits for a pooled connection before it gets 503.
    pub acquire_timeout: Duration,
    /// Server-side statement timeout (PostgreSQL).
    pub statement_timeout: Duration,
    /// Start-up connection attempts after the first, with exponential backoff; `None`
    /// retries without a limit (an instance stays up, unready, until the database
    /// answers).
    pub connect_retries: Option<u32>,
}

impl DatabaseConfig {
    pub(super) fn from_raw(raw: Raw, data_dir: &Path) -> Result<Self, ConfigError> {
        let url = raw
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}/shoal.db", data_dir.display()));
        let kind = if url.starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DatabaseKind::Postgres
        } else {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        };
        if raw.database_pooler == Pooler::Transaction && kind != DatabaseKind::Postgres {
            return Err(ConfigError::new(
                "DATABASE_POOLER",
                "`transaction` needs a postgres:// DATABASE_URL",
            ));
        }
        if let Some(m) = &raw.database_migration_url
            && !(m.starts_with("postgres://") || m.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "DATABASE_MIGRATION_URL",
                "must start with postgres:// or postgresql://",
            ));
        }
        if raw.db_pool_max == 0 {
            return Err(ConfigError::new("DB_POOL_MAX", "must be at least 1"));
        }
        if raw.db_pool_min > raw.db_pool_max {
            return Err(ConfigError::new(
                "DB_POOL_MIN",
                format!("must not exceed DB_POOL_MAX ({})", raw.db_pool_max),
            ));
        }
        positive("DB_ACQUIRE_TIMEOUT", raw.db_acquire_timeout)?;
        positive("DB_STATEMENT_TIMEOUT", raw.db_statement_timeout)?;
        Ok(Self {
            url: url.into(),
            kind,
            pooler: raw.database_pooler,
            migration_url: raw.database_migration_url.map(Into::into),
            pool_min: raw.db_pool_min,
            pool_max: raw.db_pool_max,
            acquire_timeout: Duration::from_secs(raw.db_acquire_timeout),
            statement_timeout: Duration::from_secs(raw.db_statement_timeout),
            connect_retries: raw.db_connect_retries,
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            ("DATABASE_URL", mask_url(self.url.expose_secret())),
            (
                "DATABASE_POOLER",
                match self.pooler {
                    Pooler::None => "none".into(),
                    Pooler::Transaction => "transaction".into(),
                },
            ),
            (
                "DATABASE_MIGRATION_URL",
                self.migration_url
                    .as_ref()
                    .map_or_else(|| "(unset)".into(), |u| mask_url(u.expose_secret())),
            ),
            ("DB_POOL_MIN", self.pool_min.to_string()),
            ("DB_POOL_MAX", self.pool_max.to_string()),
            ("DB_ACQUIRE_TIMEOUT", secs(self.acquire_timeout)),
            ("DB_STATEMENT_TIMEOUT", secs(self.statement_timeout)),
            (
                "DB_CONNECT_RETRIES",
                self.connect_retries.map_or_else(
                    || "(unset: serve retries without a limit)".into(),
                    |n| n.to_string(),
                ),
            ),
        ]);
    }
}
