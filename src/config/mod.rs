//! Configuration: one typed [`Config`] built from the environment and an optional
//! `shoal.toml`, validated once at start-up.
//!
//! The key names are the ones users know from the Express/Socket.IO scaling guides
//! (`PORT`, `DATABASE_URL`, `REDIS_URL`, …). Every error names the key that is
//! wrong, and the binary turns a [`ConfigError`] into exit code 2.
//!
//! # Sections
//!
//! Each area owns its keys in one file: the [`Key`] table (name, default, meaning),
//! the raw shape read from the sources with its defaults, the validation into its
//! typed section, and its lines of `shoal config check`. Adding a key touches that
//! one file and docs/configuration.md, whose table `shoal config keys` prints (a test
//! keeps the two in step).
//!
//! - [`server`]: the listener, HTTP limits, proxies, CORS, the admin token.
//! - [`database`]: `DATABASE_URL` and the pool.
//! - [`redis`]: where Redis lives (which makes an instance distributed).
//! - [`cache`], [`queue`], [`limits`] (per-user limits, retention), [`auth`]
//!   (sessions, tokens, secrets), [`rate_limit`],
//!   [`realtime`], [`cluster`] (supervisor, registry), [`shutdown`], [`log`].

pub mod auth;
pub mod cache;
pub mod cluster;
pub mod database;
pub mod limits;
pub mod log;
pub mod queue;
pub mod rate_limit;
pub mod realtime;
pub mod redis;
pub mod server;
pub mod shutdown;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

pub use auth::{AuthConfig, KeyRing, Secrets};
pub use cache::{CacheConfig, CacheProvider};
pub use cluster::ClusterConfig;
pub use database::{DatabaseConfig, DatabaseKind, Pooler};
pub use limits::LimitsConfig;
pub use log::{LogConfig, LogFormat};
pub use queue::QueueConfig;
pub use rate_limit::RateLimitConfig;
pub use realtime::RealtimeConfig;
pub use redis::{RedisConfig, RedisTarget, TlsCa};
pub use server::{IpNet, ServerConfig};
pub use shutdown::ShutdownConfig;

/// One configuration key, as documented.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The name in the environment (lower case in `shoal.toml`).
    pub name: &'static str,
    /// The default, as a person reads it.
    pub default: &'static str,
    /// What it does, in one line.
    pub meaning: &'static str,
}

/// Every section's keys, in the order of docs/configuration.md.
pub fn keys() -> impl Iterator<Item = &'static Key> {
    [
        server::KEYS,
        database::KEYS,
        redis::KEYS,
        cache::KEYS,
        queue::KEYS,
        limits::KEYS,
        auth::KEYS,
        rate_limit::KEYS,
        cluster::KEYS,
        shutdown::KEYS,
        realtime::KEYS,
        log::KEYS,
    ]
    .into_iter()
    .flatten()
}

/// Every key Shoal reads. Anything else in the environment is ignored, so that
/// `PATH` or `HOME` can never be mistaken for configuration.
static KEY_NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| keys().map(|k| k.name).collect());

/// The keys as the Markdown table of docs/configuration.md (`shoal config keys`).
pub fn keys_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for key in keys() {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            key.name, key.default, key.meaning
        ));
    }
    out
}

/// A configuration problem, always tied to the key that caused it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    /// The configuration key as the user writes it (`PORT`, `DB_POOL_MAX`, …).
    pub key: String,
    /// What is wrong with it, for a human.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The validated configuration of one Shoal process, by section.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener, HTTP limits, proxies, CORS, admin token.
    pub server: ServerConfig,
    /// The database and its pool.
    pub database: DatabaseConfig,
    /// Redis, when configured.
    pub redis: RedisConfig,
    /// The look-up cache.
    pub cache: CacheConfig,
    /// The job queue.
    pub queue: QueueConfig,
    /// Per-user limits and retention.
    pub limits: LimitsConfig,
    /// Sessions, tokens and the shared secrets.
    pub auth: AuthConfig,
    /// Request budgets.
    pub rate_limit: RateLimitConfig,
    /// Socket.IO.
    pub realtime: RealtimeConfig,
    /// The worker supervisor and the instance registry.
    pub cluster: ClusterConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logs.
    pub log: LogConfig,
}

/// A provider over a plain map, so tests (and the CLI) can build a [`Config`] without
/// touching the process environment. Values are parsed the way figment parses env vars.
struct MapProvider(BTreeMap<String, String>);

impl Provider for MapProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named("settings")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict: Dict = self
            .0
            .iter()
            .map(|(k, v)| {
                let value: Value = v.parse().unwrap_or_else(|e| match e {});
                (k.to_ascii_lowercase(), value)
            })
            .collect();
        Ok(Profile::Default.collect(dict))
    }
}

impl Config {
    /// Reads `shoal.toml` (or the file named by `SHOAL_CONFIG`) when present, then the
    /// process environment on top.
    pub fn from_env() -> Result<Self, ConfigError> {
        let file = std::env::var("SHOAL_CONFIG").unwrap_or_else(|_| "shoal.toml".into());
        let figment = Figment::new()
            .merge(Toml::file(&file))
            .merge(Env::raw().only(&KEY_NAMES));
        Self::from_figment(figment)
    }

    /// Builds a configuration from explicit key/value pairs (tests, tools).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            let key = k.as_ref().to_ascii_uppercase();
            if !KEY_NAMES.contains(&key.as_str()) {
                return Err(ConfigError::new(&key, "unknown configuration key"));
            }
            map.insert(key, v.as_ref().to_owned());
        }
        Self::from_figment(Figment::from(MapProvider(map)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        // A section reads only its own keys, so a misspelt key in `shoal.toml` would
        // be ignored silently: refuse it here instead.
        let data = figment.data().map_err(figment_error)?;
        for dict in data.values() {
            if let Some(unknown) = dict
                .keys()
                .map(|k| k.to_ascii_uppercase())
                .find(|k| !KEY_NAMES.contains(&k.as_str()))
            {
                return Err(ConfigError::new(&unknown, "unknown configuration key"));
            }
        }
        let server = ServerConfig::from_raw(section(&figment)?)?;
        let database = DatabaseConfig::from_raw(section(&figment)?, &server.data_dir)?;
        let redis = RedisConfig::from_raw(section(&figment)?)?;
        let distributed = redis.target.is_some();
        Ok(Config {
            cache: CacheConfig::from_raw(section(&figment)?, distributed)?,
            queue: QueueConfig::from_raw(section(&figment)?)?,
            limits: LimitsConfig::from_raw(section(&figment)?)?,
            auth: AuthConfig::from_raw(section(&figment)?, distributed)?,
            rate_limit: RateLimitConfig::from_raw(section(&figment)?)?,
            realtime: RealtimeConfig::from_raw(section(&figment)?)?,
            cluster: ClusterConfig::from_raw(section(&figment)?)?,
            shutdown: ShutdownConfig::from_raw(section(&figment)?)?,
            log: LogConfig::from_raw(section(&figment)?)?,
            server,
            database,
            redis,
        })
    }

    /// True when Redis is configured, i.e. several instances may share state.
    pub fn is_distributed(&self) -> bool {
        self.redis.target.is_some()
    }

    /// What this configuration asks of PostgreSQL and Redis, per instance and for `n`
    /// instances, as `shoal config check` prints it (docs/scaling.md, "Connection
    /// budget").
    pub fn connection_budget(&self) -> Vec<String> {
        let processes = self.cluster.workers;
        let pool = self.database.pool_max * processes;
        let mut lines = vec![format!(
            "PostgreSQL: up to {pool} connections per instance (DB_POOL_MAX {} x {processes} process(es)), \
             plus one short-lived connection while it starts; N instances: N x {pool}",
            self.database.pool_max
        )];
        if self.database.kind == DatabaseKind::Sqlite {
            lines[0] = "SQLite: a local file (embedded mode), no server connections".into();
        } else if self.database.pooler == Pooler::Transaction {
            lines[0] = format!(
                "PostgreSQL through a transaction pooler: up to {pool} pooler client connections per \
                 instance (DB_POOL_MAX {} x {processes} process(es)); PostgreSQL itself sees only the \
                 pooler's server connections (its pool size), plus {} while migrating",
                self.database.pool_max,
                if self.database.migration_url.is_some() {
                    "one direct connection per instance (DATABASE_MIGRATION_URL)"
                } else {
                    "`shoal migrate`'s one direct connection"
                }
            );
        }
        let redis = match &self.redis.target {
            None => "Redis: none (embedded mode)".to_owned(),
            Some(RedisTarget::Cluster { .. }) => format!(
                "Redis Cluster: per process, one command connection to each master and one \
                 subscription connection; {processes} process(es) per instance"
            ),
            Some(RedisTarget::Sentinel { .. }) => format!(
                "Redis (via Sentinel): {} connections per instance (one for commands, one for \
                 subscriptions, per process), plus short-lived ones to a sentinel when the \
                 master is looked up; N instances: N x {}",
                2 * processes,
                2 * processes
            ),
            Some(RedisTarget::Url(_)) => format!(
                "Redis: {} connections per instance (one for commands, one for subscriptions, \
                 per process); N instances: N x {}",
                2 * processes,
                2 * processes
            ),
        };
        lines.push(redis);
        lines
    }

    /// The effective configuration as `KEY = value` lines, secrets masked.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut lines = Vec::new();
        self.server.describe(&mut lines);
        self.database.describe(&mut lines);
        self.redis.describe(&mut lines);
        self.cache.describe(&mut lines);
        self.queue.describe(&mut lines);
        self.limits.describe(&mut lines);
        self.auth.describe(&mut lines);
        self.rate_limit.describe(&mut lines);
        self.cluster.describe(&mut lines);
        self.shutdown.describe(&mut lines);
        self.realtime.describe(&mut lines);
        self.log.describe(&mut lines);
        lines
    }
}

/// Extracts one section's raw shape; its fields are the lower-cased keys.
fn section<T: DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(figment_error)
}

/// A comma-separated list in the environment, or an array in `shoal.toml`.
#[derive(Debug, Clone, Default)]
pub(crate) struct List(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let items = match Raw::deserialize(d)? {
            Raw::One(s) => s.split(',').map(str::to_owned).collect(),
            Raw::Many(v) => v,
        };
        Ok(List(
            items
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        ))
    }
}

pub(crate) fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::new(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// `N s` for `shoal config check`.
pub(crate) fn secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}

/// `N ms` for `shoal config check`.
pub(crate) fn millis(d: std::time::Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Hides the password of `scheme://user:password@host/…`, and a `password=` (or
/// `sslpassword=`) parameter of its query, which libpq-style URLs accept too.
pub(crate) fn mask_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((creds, host)) = rest.rsplit_once('@')
    {
        let user = creds.split(':').next().unwrap_or("");
        out = format!("{scheme}://{user}:****@{host}");
    }
    if let Some((base, query)) = out.split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.ends_with("password") => format!("{key}=****"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{base}?{}", query.join("&"));
    }
    out
}

fn figment_error(e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        match &e.kind {
            figment::error::Kind::UnknownField(field, _) => field.to_ascii_uppercase(),
            _ => "configuration".to_owned(),
        }
    } else {
        e.path.join(".").to_ascii_uppercase()
    };
    let value = match &e.kind {
        figment::error::Kind::InvalidType(actual, _) => format!(" (got {actual})"),
        _ => String::new(),
    };
    ConfigError::new(&key, format!("{}{value}", e.kind))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn err(pairs: &[(&str, &str)]) -> ConfigError {
        Config::from_pairs(pairs.iter().copied()).expect_err("config should be rejected")
    }

    #[test]
    fn defaults_are_embedded() {
        let c = Config::from_pairs(Vec::<(&str, &str)>::new()).expect("defaults are valid");
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.database.kind, DatabaseKind::Sqlite);
        assert!(!c.is_distributed());
        assert_eq!(c.cache.provider, CacheProvider::Memory);
        assert_eq!(c.rate_limit.auth_per_min, 10);
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(err(&[("PORT", "abc")]).key, "PORT");
        assert_eq!(err(&[("DB_POOL_MAX", "0")]).key, "DB_POOL_MAX");
        assert_eq!(
            err(&[("CACHE_PROVIDER", "memcached")]).key,
            "CACHE_PROVIDER"
        );
        assert_eq!(err(&[("DATABASE_URL", "mysql://x")]).key, "DATABASE_URL");
        assert_eq!(
            err(&[("TRUSTED_PROXIES", "10.0.0.0/99")]).key,
            "TRUSTED_PROXIES"
        );
        assert_eq!(err(&[("SESSION_SECRET", "short")]).key, "SESSION_SECRET");
        assert_eq!(err(&[("NO_SUCH_KEY", "1")]).key, "NO_SUCH_KEY");
    }

    #[test]
    fn keepalive_grace_follows_a_short_shutdown_timeout_unless_set() {
        let c = Config::from_pairs([("SHUTDOWN_TIMEOUT", "2")]).expect("valid alone");
        assert_eq!(c.shutdown.keepalive_grace, Duration::from_secs(1));
        let c = Config::from_pairs(Vec::<(&str, &str)>::new()).expect("defaults");
        assert_eq!(c.shutdown.keepalive_grace, Duration::from_secs(5));
        let e = err(&[("SHUTDOWN_TIMEOUT", "2"), ("SHUTDOWN_KEEPALIVE_GRACE", "2")]);
        assert_eq!(e.key, "SHUTDOWN_KEEPALIVE_GRACE");
    }

    #[test]
    fn redis_targets_exclude_each_other() {
        let e = err(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("REDIS_CLUSTER_NODES", "redis://127.0.0.1:7000"),
        ]);
        assert_eq!(e.key, "REDIS_CLUSTER_NODES");
    }

    #[test]
    fn distributed_mode_requires_secrets() {
        let e = err(&[("REDIS_URL", "redis://127.0.0.1:6379")]);
        assert_eq!(e.key, "SESSION_SECRET");
    }

    #[test]
    fn config_check_shows_no_credential() {
        let secret = "hunter2-secret";
        let c = Config::from_pairs([
            (
                "DATABASE_URL",
                format!("postgres://app:{secret}@db:5432/shoal?sslmode=require&password={secret}"),
            ),
            (
                "REDIS_SENTINELS",
                format!("redis://:{secret}@s1:26379,s2:26379"),
            ),
            ("REDIS_SENTINEL_MASTER", "shoal".to_owned()),
            ("REDIS_URL", format!("redis://:{secret}@master:6379")),
            (
                "SESSION_SECRET",
                format!("{secret}-0123456789abcdef0123456789"),
            ),
            (
                "SESSION_ENCRYPTION_KEY",
                format!("{secret}-1123456789abcdef0123456789"),
            ),
            (
                "JWT_ACCESS_SECRET",
                format!("{secret}-2123456789abcdef0123456789"),
            ),
            (
                "JWT_REFRESH_SECRET",
                format!("{secret}-3123456789abcdef0123456789"),
            ),
            ("ADMIN_TOKEN", format!("{secret}-admin")),
        ])
        .expect("valid");
        let shown: Vec<String> = c
            .describe()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert!(
            shown.iter().all(|l| !l.contains(secret)),
            "a credential is shown: {shown:#?}"
        );
        assert!(
            shown.iter().any(|l| l.contains("sslmode=require")),
            "{shown:#?}"
        );
    }

    #[test]
    fn the_connection_budget_follows_the_pool_and_the_processes() {
        let c = Config::from_pairs([
            ("DATABASE_URL", "postgres://u@h/db"),
            ("DB_POOL_MAX", "4"),
            ("CLUSTER_WORKERS", "2"),
        ])
        .expect("valid");
        let budget = c.connection_budget();
        assert!(
            budget[0].contains("up to 8 connections per instance"),
            "{budget:?}"
        );
        assert!(budget[1].contains("Redis: none"), "{budget:?}");
    }

    #[test]
    fn docs_configuration_md_lists_the_keys_as_the_code_does() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let docs = std::fs::read_to_string(path).expect("read docs/configuration.md");
        assert!(
            docs.contains(&keys_table()),
            "docs/configuration.md is out of step with src/config/: paste the output of \
             `cargo run -q -- config keys` over its table"
        );
    }

    #[test]
    fn every_key_is_described_once_and_shown_by_config_check() {
        let c = Config::from_pairs(Vec::<(&str, &str)>::new()).expect("defaults");
        let shown: Vec<&str> = c.describe().iter().map(|(k, _)| *k).collect();
        let mut seen = std::collections::BTreeSet::new();
        for key in keys() {
            assert!(seen.insert(key.name), "{} is listed twice", key.name);
            // Redis shows the one target that is configured, under its own key.
            let redis = [
                "REDIS_URL",
                "REDIS_SENTINELS",
                "REDIS_SENTINEL_MASTER",
                "REDIS_CLUSTER_NODES",
            ];
            assert!(
                shown.contains(&key.name) || redis.contains(&key.name),
                "{} is not shown by config check",
                key.name
            );
        }
    }
}
