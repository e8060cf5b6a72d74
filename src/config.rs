//! Configuration: one typed [`Config`] built from the environment and an optional
//! `shoal.toml`, validated once at start-up.
//!
//! The key names are the ones users know from the Express/Socket.IO scaling guides
//! (`PORT`, `DATABASE_URL`, `REDIS_URL`, …, see DESIGN §3). Every error names the key
//! that is wrong, and the binary turns a [`ConfigError`] into exit code 2.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// Every key Shoal reads. Anything else in the environment is ignored, so that
/// `PATH` or `HOME` can never be mistaken for configuration.
pub const KEYS: &[&str] = &[
    "HOST",
    "PORT",
    "INSTANCE_ID",
    "DATA_DIR",
    "DATABASE_URL",
    "DB_POOL_MIN",
    "DB_POOL_MAX",
    "DB_ACQUIRE_TIMEOUT",
    "DB_STATEMENT_TIMEOUT",
    "DB_CONNECT_RETRIES",
    "REDIS_URL",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_CLUSTER_NODES",
    "REDIS_KEY_PREFIX",
    "CACHE_PROVIDER",
    "CACHE_TTL",
    "CACHE_MAX_SIZE",
    "QUEUE_CONCURRENCY",
    "QUEUE_MAX_RETRIES",
    "QUEUE_POLL_INTERVAL",
    "QUEUE_IDLE_POLL_MAX",
    "QUEUE_LEASE",
    "QUEUE_BACKOFF_BASE",
    "QUEUE_WORKERS",
    "QUEUE_TEST_HANDLERS",
    "ADMIN_TOKEN",
    "SESSION_SECRET",
    "SESSION_ENCRYPTION_KEY",
    "SESSION_TTL",
    "SESSION_COOKIE_NAME",
    "COOKIE_SECURE",
    "JWT_ACCESS_SECRET",
    "JWT_REFRESH_SECRET",
    "JWT_ACCESS_TTL",
    "JWT_REFRESH_TTL",
    "RATE_LIMIT_USER_PER_MIN",
    "RATE_LIMIT_IP_PER_MIN",
    "RATE_LIMIT_AUTH_PER_MIN",
    "TRUSTED_PROXIES",
    "CORS_ORIGINS",
    "CLUSTER_WORKERS",
    "CLUSTER_RESTART_DELAY",
    "CLUSTER_MAX_RESTARTS",
    "CLUSTER_RESTART_WINDOW",
    "SHUTDOWN_TIMEOUT",
    "SHUTDOWN_KEEPALIVE_GRACE",
    "REQUEST_TIMEOUT",
    "BODY_LIMIT",
    "HEALTH_CHECK_TIMEOUT",
    "REGISTRY_HEARTBEAT",
    "REALTIME_MAX_MESSAGE_BYTES",
    "REALTIME_PRESENCE_TTL",
    "LOG_FORMAT",
    "LOG_LEVEL",
];

/// Secrets shorter than this are refused: they are HMAC and AEAD keys.
const MIN_SECRET_LEN: usize = 32;

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
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
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

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for production log shippers.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// A comma-separated list in the environment, or an array in `shoal.toml`.
#[derive(Debug, Clone, Default)]
struct List(Vec<String>);

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

/// The raw shape read by figment; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "defaults::host")]
    host: IpAddr,
    #[serde(default = "defaults::port")]
    port: u16,
    instance_id: Option<String>,
    #[serde(default = "defaults::data_dir")]
    data_dir: PathBuf,
    database_url: Option<String>,
    #[serde(default = "defaults::db_pool_min")]
    db_pool_min: u32,
    #[serde(default = "defaults::db_pool_max")]
    db_pool_max: u32,
    #[serde(default = "defaults::db_acquire_timeout")]
    db_acquire_timeout: u64,
    #[serde(default = "defaults::db_statement_timeout")]
    db_statement_timeout: u64,
    #[serde(default = "defaults::db_connect_retries")]
    db_connect_retries: u32,
    redis_url: Option<String>,
    #[serde(default)]
    redis_sentinels: List,
    redis_sentinel_master: Option<String>,
    #[serde(default)]
    redis_cluster_nodes: List,
    #[serde(default = "defaults::redis_key_prefix")]
    redis_key_prefix: String,
    cache_provider: Option<CacheProvider>,
    #[serde(default = "defaults::cache_ttl")]
    cache_ttl: u64,
    #[serde(default = "defaults::cache_max_size")]
    cache_max_size: u64,
    #[serde(default = "defaults::queue_concurrency")]
    queue_concurrency: u32,
    #[serde(default = "defaults::queue_max_retries")]
    queue_max_retries: u32,
    #[serde(default = "defaults::queue_poll_interval_ms")]
    queue_poll_interval: u64,
    #[serde(default = "defaults::queue_idle_poll_max_ms")]
    queue_idle_poll_max: u64,
    #[serde(default = "defaults::queue_lease")]
    queue_lease: u64,
    #[serde(default = "defaults::queue_backoff_base_ms")]
    queue_backoff_base: u64,
    #[serde(default = "defaults::queue_workers")]
    queue_workers: bool,
    #[serde(default)]
    queue_test_handlers: bool,
    admin_token: Option<String>,
    session_secret: Option<String>,
    session_encryption_key: Option<String>,
    #[serde(default = "defaults::session_ttl")]
    session_ttl: u64,
    #[serde(default = "defaults::session_cookie_name")]
    session_cookie_name: String,
    #[serde(default)]
    cookie_secure: bool,
    jwt_access_secret: Option<String>,
    jwt_refresh_secret: Option<String>,
    #[serde(default = "defaults::jwt_access_ttl")]
    jwt_access_ttl: u64,
    #[serde(default = "defaults::jwt_refresh_ttl")]
    jwt_refresh_ttl: u64,
    #[serde(default = "defaults::rate_limit_user")]
    rate_limit_user_per_min: u32,
    #[serde(default = "defaults::rate_limit_ip")]
    rate_limit_ip_per_min: u32,
    #[serde(default = "defaults::rate_limit_auth")]
    rate_limit_auth_per_min: u32,
    #[serde(default)]
    trusted_proxies: List,
    #[serde(default)]
    cors_origins: List,
    #[serde(default = "defaults::cluster_workers")]
    cluster_workers: u32,
    #[serde(default = "defaults::cluster_restart_delay_ms")]
    cluster_restart_delay: u64,
    #[serde(default = "defaults::cluster_max_restarts")]
    cluster_max_restarts: u32,
    #[serde(default = "defaults::cluster_restart_window")]
    cluster_restart_window: u64,
    #[serde(default = "defaults::shutdown_timeout")]
    shutdown_timeout: u64,
    /// Unset: [`defaults::shutdown_keepalive_grace`] of the shutdown timeout.
    #[serde(default)]
    shutdown_keepalive_grace: Option<u64>,
    #[serde(default = "defaults::request_timeout")]
    request_timeout: u64,
    #[serde(default = "defaults::body_limit")]
    body_limit: usize,
    #[serde(default = "defaults::health_check_timeout_ms")]
    health_check_timeout: u64,
    #[serde(default = "defaults::registry_heartbeat")]
    registry_heartbeat: u64,
    #[serde(default = "defaults::realtime_max_message_bytes")]
    realtime_max_message_bytes: usize,
    #[serde(default = "defaults::realtime_presence_ttl")]
    realtime_presence_ttl: u64,
    #[serde(default = "defaults::log_format")]
    log_format: LogFormat,
    #[serde(default = "defaults::log_level")]
    log_level: String,
}

mod defaults {
    use super::LogFormat;
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;

    pub(super) fn host() -> IpAddr {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
    pub(super) fn port() -> u16 {
        8080
    }
    pub(super) fn data_dir() -> PathBuf {
        PathBuf::from("data")
    }
    // One connection per core plus headroom: on SQLite writers serialise anyway, and
    // on PostgreSQL 100 instances × 10 already reach max_connections=1000 territory.
    pub(super) fn db_pool_min() -> u32 {
        1
    }
    pub(super) fn db_pool_max() -> u32 {
        10
    }
    pub(super) fn db_acquire_timeout() -> u64 {
        5
    }
    pub(super) fn db_statement_timeout() -> u64 {
        30
    }
    pub(super) fn db_connect_retries() -> u32 {
        3
    }
    pub(super) fn redis_key_prefix() -> String {
        "shoal".into()
    }
    pub(super) fn cache_ttl() -> u64 {
        300
    }
    pub(super) fn cache_max_size() -> u64 {
        100_000
    }
    pub(super) fn queue_concurrency() -> u32 {
        4
    }
    pub(super) fn queue_max_retries() -> u32 {
        5
    }
    // Workers are woken at once by enqueues on their own instance; the poll only
    // bounds how late they see jobs enqueued elsewhere or scheduled for later.
    pub(super) fn queue_poll_interval_ms() -> u64 {
        200
    }
    // With 100 instances, polling every 200 ms while idle is 500 claims a second on
    // an empty queue; backing off to 2 s makes it 50, and costs only jobs that become
    // due without a wake-up (scheduled `run_at`, retries after their backoff) up to
    // 2 s of extra delay.
    pub(super) fn queue_idle_poll_max_ms() -> u64 {
        2000
    }
    pub(super) fn queue_lease() -> u64 {
        30
    }
    pub(super) fn queue_backoff_base_ms() -> u64 {
        1000
    }
    pub(super) fn queue_workers() -> bool {
        true
    }
    pub(super) fn session_ttl() -> u64 {
        86_400
    }
    pub(super) fn session_cookie_name() -> String {
        "shoal_session".into()
    }
    pub(super) fn jwt_access_ttl() -> u64 {
        900
    }
    pub(super) fn jwt_refresh_ttl() -> u64 {
        7 * 86_400
    }
    pub(super) fn rate_limit_user() -> u32 {
        100
    }
    pub(super) fn rate_limit_ip() -> u32 {
        300
    }
    pub(super) fn rate_limit_auth() -> u32 {
        10
    }
    pub(super) fn cluster_workers() -> u32 {
        1
    }
    // A worker that dies is back within a second; one that keeps dying (5 times in a
    // minute) is a bug or a bad deployment, and the supervisor gives up loudly.
    pub(super) fn cluster_restart_delay_ms() -> u64 {
        1000
    }
    pub(super) fn cluster_max_restarts() -> u32 {
        5
    }
    pub(super) fn cluster_restart_window() -> u64 {
        60
    }
    pub(super) fn shutdown_timeout() -> u64 {
        30
    }
    /// 5 s, but never more than half the shutdown timeout, so that setting only a
    /// short `SHUTDOWN_TIMEOUT` is a valid configuration.
    pub(super) fn shutdown_keepalive_grace(shutdown_timeout: u64) -> u64 {
        5.min(shutdown_timeout / 2)
    }
    pub(super) fn request_timeout() -> u64 {
        30
    }
    pub(super) fn body_limit() -> usize {
        1024 * 1024
    }
    pub(super) fn health_check_timeout_ms() -> u64 {
        1000
    }
    pub(super) fn registry_heartbeat() -> u64 {
        5
    }
    pub(super) fn realtime_max_message_bytes() -> usize {
        16 * 1024
    }
    pub(super) fn realtime_presence_ttl() -> u64 {
        30
    }
    pub(super) fn log_format() -> LogFormat {
        LogFormat::Pretty
    }
    pub(super) fn log_level() -> String {
        "info".into()
    }
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

/// Where Redis lives, when it is configured at all.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// A single server: `redis://…`, `rediss://…`, `unix://…`.
    Url(SecretString),
    /// A Redis Cluster: the URLs (`redis://host:port`) of some of its nodes; the rest
    /// of the topology is discovered from them.
    Cluster {
        /// Seed nodes.
        nodes: Vec<SecretString>,
    },
    /// Sentinels that know the current master.
    Sentinel {
        /// `host:port` or `redis://host:port` of each sentinel.
        sentinels: Vec<String>,
        /// The master name the sentinels monitor.
        master: String,
        /// Optional URL whose credentials/db are used for the master connection.
        url: Option<SecretString>,
    },
}

/// The four shared secrets. Generated under `DATA_DIR` in embedded mode.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Keys the HMAC that turns a session cookie into its storage key.
    pub session_secret: SecretString,
    /// Derives the AEAD key that encrypts session records at rest.
    pub session_encryption_key: SecretString,
    /// Signs access JWTs (HS256).
    pub jwt_access_secret: SecretString,
    /// Signs refresh JWTs (HS256); a different key so one can never pass for the other.
    pub jwt_refresh_secret: SecretString,
}

/// The validated configuration of one Shoal process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Interface to bind.
    pub host: IpAddr,
    /// TCP port; 0 picks a free one (tests).
    pub port: u16,
    /// Explicit instance id; `None` means `{hostname}-{pid}-{6 random}`.
    pub instance_id: Option<String>,
    /// Where embedded mode keeps its database file and generated secrets.
    pub data_dir: PathBuf,
    /// sqlx URL of the database.
    pub database_url: SecretString,
    /// Engine behind `database_url`.
    pub database_kind: DatabaseKind,
    /// Connections kept open even when idle.
    pub db_pool_min: u32,
    /// Upper bound of the pool.
    pub db_pool_max: u32,
    /// How long a request waits for a pooled connection before it gets 503.
    pub db_acquire_timeout: Duration,
    /// Server-side statement timeout (PostgreSQL).
    pub db_statement_timeout: Duration,
    /// Start-up connection attempts after the first, with exponential backoff.
    pub db_connect_retries: u32,
    /// Redis, when configured: its presence is what makes this instance distributed.
    pub redis: Option<RedisTarget>,
    /// Prefix of every Redis key and channel, so that deployments can share a server.
    pub redis_key_prefix: String,
    /// Cache backend.
    pub cache_provider: CacheProvider,
    /// How long a cached entry lives.
    pub cache_ttl: Duration,
    /// Entries kept in the in-process cache.
    pub cache_max_size: u64,
    /// Job workers per instance.
    pub queue_concurrency: u32,
    /// Attempts after the first before a job is dead.
    pub queue_max_retries: u32,
    /// How often idle workers look for jobs enqueued by other instances.
    pub queue_poll_interval: Duration,
    /// While wake-ups arrive, the idle poll doubles after every empty claim up to this.
    pub queue_idle_poll_max: Duration,
    /// How long a claimed job stays held without a heartbeat (renewed every third).
    pub queue_lease: Duration,
    /// First retry delay; doubles per attempt, with jitter. Zero in tests.
    pub queue_backoff_base: Duration,
    /// Whether this process runs job workers (`shoal serve --no-workers` clears it).
    pub queue_workers: bool,
    /// Registers test-only job types (`test.sleep`, `test.fail`); never in production.
    pub queue_test_handlers: bool,
    /// Whether this process serves the API (`shoal worker` clears it: health and
    /// metrics only). Not an environment key: chosen by the subcommand.
    pub serve_api: bool,
    /// `X-Admin-Token` value that opens `/api/admin/*`; unset = those routes are 404.
    pub admin_token: Option<SecretString>,
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
    /// Requests per minute per authenticated user.
    pub rate_limit_user_per_min: u32,
    /// Requests per minute per client IP (anonymous requests).
    pub rate_limit_ip_per_min: u32,
    /// Requests per minute per client IP on `/api/auth/*`.
    pub rate_limit_auth_per_min: u32,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed by CORS; empty means no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Worker processes under the supervisor (1 = no supervisor).
    pub cluster_workers: u32,
    /// Pause before the supervisor restarts a worker that died.
    pub cluster_restart_delay: Duration,
    /// Restarts allowed within `cluster_restart_window` before the supervisor gives up.
    pub cluster_max_restarts: u32,
    /// The window `cluster_max_restarts` counts in.
    pub cluster_restart_window: Duration,
    /// Bind the port with SO_REUSEPORT: set for the supervisor's workers (never from
    /// the environment), which share one port.
    pub reuse_port: bool,
    /// Bound on the whole graceful shutdown.
    pub shutdown_timeout: Duration,
    /// How long a draining instance, its listener already closed, keeps answering
    /// requests that arrive on keep-alive connections opened before (each answer says
    /// `Connection: close`) before it closes the idle ones itself. A load balancer
    /// that closes its idle upstream connections sooner (nginx `keepalive_timeout`
    /// in the upstream block) never has a request in flight on a connection the
    /// instance closes. 0 closes idle connections at once.
    pub shutdown_keepalive_grace: Duration,
    /// Bound on one HTTP request.
    pub request_timeout: Duration,
    /// Largest accepted request body in bytes.
    pub body_limit: usize,
    /// Bound on one readiness/health check of a dependency.
    pub health_check_timeout: Duration,
    /// Instance registry heartbeat period; the entry expires after three of them.
    pub registry_heartbeat: Duration,
    /// Largest Socket.IO `message:send` body in bytes (bigger ones get an error ack).
    pub realtime_max_message_bytes: usize,
    /// How long a Socket.IO connection stays in `presence:list` without a refresh
    /// (refreshed every third of it while connected, so a dead instance's entries go).
    pub realtime_presence_ttl: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// `tracing` filter directive (`info`, `shoal=debug,sqlx=warn`, …).
    pub log_level: String,
}

/// An IPv4/IPv6 network in CIDR notation (`10.0.0.0/8`, `::1/128`, `127.0.0.1`).
///
/// Hand-written because it is twelve lines and `TRUSTED_PROXIES` needs nothing more
/// than containment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
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
            .merge(Env::raw().only(KEYS));
        Self::from_figment(figment)
    }

    /// Builds a configuration from explicit key/value pairs (tests, tools).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            let key = k.as_ref().to_ascii_uppercase();
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError::new(&key, "unknown configuration key"));
            }
            map.insert(key, v.as_ref().to_owned());
        }
        Self::from_figment(Figment::from(MapProvider(map)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: Raw = figment.extract().map_err(figment_error)?;
        Self::validate(raw)
    }

    fn validate(mut raw: Raw) -> Result<Self, ConfigError> {
        let database_url = raw
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}/shoal.db", raw.data_dir.display()));
        let database_kind = if database_url.starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else if database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
        {
            DatabaseKind::Postgres
        } else {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        };
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

        if !raw.redis_cluster_nodes.0.is_empty() {
            if !raw.redis_sentinels.0.is_empty() || raw.redis_url.is_some() {
                return Err(ConfigError::new(
                    "REDIS_CLUSTER_NODES",
                    "cannot be combined with REDIS_URL or REDIS_SENTINELS",
                ));
            }
            if let Some(bad) = raw
                .redis_cluster_nodes
                .0
                .iter()
                .find(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
            {
                return Err(ConfigError::new(
                    "REDIS_CLUSTER_NODES",
                    format!(
                        "every node must be a redis:// or rediss:// URL, got {}",
                        mask_url(bad)
                    ),
                ));
            }
        }
        let cluster_nodes = std::mem::take(&mut raw.redis_cluster_nodes.0);
        let redis = match (raw.redis_url, raw.redis_sentinels.0.is_empty()) {
            (None, true) if !cluster_nodes.is_empty() => {
                if raw.redis_sentinel_master.is_some() {
                    return Err(ConfigError::new(
                        "REDIS_SENTINELS",
                        "is required when REDIS_SENTINEL_MASTER is set",
                    ));
                }
                Some(RedisTarget::Cluster {
                    nodes: cluster_nodes.into_iter().map(SecretString::from).collect(),
                })
            }
            (url, false) => {
                let master = raw.redis_sentinel_master.ok_or_else(|| {
                    ConfigError::new(
                        "REDIS_SENTINEL_MASTER",
                        "is required when REDIS_SENTINELS is set",
                    )
                })?;
                Some(RedisTarget::Sentinel {
                    sentinels: raw.redis_sentinels.0,
                    master,
                    url: url.map(SecretString::from),
                })
            }
            (Some(url), true) => {
                if !(url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("redis+unix://")
                    || url.starts_with("unix://"))
                {
                    return Err(ConfigError::new(
                        "REDIS_URL",
                        "must start with redis://, rediss:// or unix://",
                    ));
                }
                Some(RedisTarget::Url(SecretString::from(url)))
            }
            (None, true) => {
                if raw.redis_sentinel_master.is_some() {
                    return Err(ConfigError::new(
                        "REDIS_SENTINELS",
                        "is required when REDIS_SENTINEL_MASTER is set",
                    ));
                }
                None
            }
        };
        if raw.redis_key_prefix.is_empty() || raw.redis_key_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "REDIS_KEY_PREFIX",
                "must be non-empty and contain no whitespace",
            ));
        }

        let cache_provider = match (raw.cache_provider, &redis) {
            (Some(CacheProvider::Redis), None) => {
                return Err(ConfigError::new(
                    "CACHE_PROVIDER",
                    "redis needs REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES",
                ));
            }
            (Some(p), _) => p,
            (None, Some(_)) => CacheProvider::Redis,
            (None, None) => CacheProvider::Memory,
        };
        positive("CACHE_TTL", raw.cache_ttl)?;
        positive("CACHE_MAX_SIZE", raw.cache_max_size)?;
        positive("QUEUE_CONCURRENCY", u64::from(raw.queue_concurrency))?;
        positive("QUEUE_POLL_INTERVAL", raw.queue_poll_interval)?;
        if raw.queue_idle_poll_max < raw.queue_poll_interval {
            return Err(ConfigError::new(
                "QUEUE_IDLE_POLL_MAX",
                "must be at least QUEUE_POLL_INTERVAL",
            ));
        }
        positive("QUEUE_LEASE", raw.queue_lease)?;
        if raw.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::new(
                "ADMIN_TOKEN",
                "must be at least 16 characters",
            ));
        }
        positive("SESSION_TTL", raw.session_ttl)?;
        positive("JWT_ACCESS_TTL", raw.jwt_access_ttl)?;
        positive("JWT_REFRESH_TTL", raw.jwt_refresh_ttl)?;
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
        positive("CLUSTER_WORKERS", u64::from(raw.cluster_workers))?;
        positive("CLUSTER_RESTART_WINDOW", raw.cluster_restart_window)?;
        positive("SHUTDOWN_TIMEOUT", raw.shutdown_timeout)?;
        let keepalive_grace = raw
            .shutdown_keepalive_grace
            .unwrap_or_else(|| defaults::shutdown_keepalive_grace(raw.shutdown_timeout));
        if keepalive_grace >= raw.shutdown_timeout {
            return Err(ConfigError::new(
                "SHUTDOWN_KEEPALIVE_GRACE",
                "must be shorter than SHUTDOWN_TIMEOUT",
            ));
        }
        positive("REQUEST_TIMEOUT", raw.request_timeout)?;
        positive("BODY_LIMIT", raw.body_limit as u64)?;
        positive("HEALTH_CHECK_TIMEOUT", raw.health_check_timeout)?;
        positive("REGISTRY_HEARTBEAT", raw.registry_heartbeat)?;
        if !(1..=1024 * 1024).contains(&raw.realtime_max_message_bytes) {
            return Err(ConfigError::new(
                "REALTIME_MAX_MESSAGE_BYTES",
                "must be 1 to 1048576",
            ));
        }
        if raw.realtime_presence_ttl < 3 {
            return Err(ConfigError::new(
                "REALTIME_PRESENCE_TTL",
                "must be at least 3 (seconds)",
            ));
        }
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
        if let Some(id) = &raw.instance_id
            && (id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(ConfigError::new(
                "INSTANCE_ID",
                "must be 1-128 visible ASCII characters",
            ));
        }

        let trusted_proxies = raw
            .trusted_proxies
            .0
            .iter()
            .map(|s| {
                IpNet::parse(s).ok_or_else(|| {
                    ConfigError::new("TRUSTED_PROXIES", format!("{s:?} is not an IP or CIDR"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for origin in &raw.cors_origins.0 {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::new(
                    "CORS_ORIGINS",
                    format!("{origin:?} must be * or start with http:// or https://"),
                ));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&raw.log_level).is_err() {
            return Err(ConfigError::new(
                "LOG_LEVEL",
                format!("{:?} is not a valid filter", raw.log_level),
            ));
        }

        let given = [
            ("SESSION_SECRET", raw.session_secret),
            ("SESSION_ENCRYPTION_KEY", raw.session_encryption_key),
            ("JWT_ACCESS_SECRET", raw.jwt_access_secret),
            ("JWT_REFRESH_SECRET", raw.jwt_refresh_secret),
        ];
        for (key, value) in &given {
            if let Some(v) = value
                && v.len() < MIN_SECRET_LEN
            {
                return Err(ConfigError::new(
                    key,
                    format!("must be at least {MIN_SECRET_LEN} characters"),
                ));
            }
        }
        let secrets = match given {
            [
                (_, Some(session_secret)),
                (_, Some(session_encryption_key)),
                (_, Some(jwt_access_secret)),
                (_, Some(jwt_refresh_secret)),
            ] => {
                if jwt_access_secret == jwt_refresh_secret {
                    return Err(ConfigError::new(
                        "JWT_REFRESH_SECRET",
                        "must differ from JWT_ACCESS_SECRET",
                    ));
                }
                Some(Secrets {
                    session_secret: session_secret.into(),
                    session_encryption_key: session_encryption_key.into(),
                    jwt_access_secret: jwt_access_secret.into(),
                    jwt_refresh_secret: jwt_refresh_secret.into(),
                })
            }
            given => {
                let missing: Vec<&str> = given
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| *k)
                    .collect();
                // Instances behind one load balancer must share the secrets, so a
                // distributed instance cannot make its own.
                if redis.is_some() {
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
                None
            }
        };

        Ok(Config {
            host: raw.host,
            port: raw.port,
            instance_id: raw.instance_id,
            data_dir: raw.data_dir,
            database_url: database_url.into(),
            database_kind,
            db_pool_min: raw.db_pool_min,
            db_pool_max: raw.db_pool_max,
            db_acquire_timeout: Duration::from_secs(raw.db_acquire_timeout),
            db_statement_timeout: Duration::from_secs(raw.db_statement_timeout),
            db_connect_retries: raw.db_connect_retries,
            redis,
            redis_key_prefix: raw.redis_key_prefix,
            cache_provider,
            cache_ttl: Duration::from_secs(raw.cache_ttl),
            cache_max_size: raw.cache_max_size,
            queue_concurrency: raw.queue_concurrency,
            queue_max_retries: raw.queue_max_retries,
            queue_poll_interval: Duration::from_millis(raw.queue_poll_interval),
            queue_idle_poll_max: Duration::from_millis(raw.queue_idle_poll_max),
            queue_lease: Duration::from_secs(raw.queue_lease),
            queue_backoff_base: Duration::from_millis(raw.queue_backoff_base),
            queue_workers: raw.queue_workers,
            queue_test_handlers: raw.queue_test_handlers,
            serve_api: true,
            admin_token: raw.admin_token.map(SecretString::from),
            secrets,
            session_ttl: Duration::from_secs(raw.session_ttl),
            session_cookie_name: raw.session_cookie_name,
            cookie_secure: raw.cookie_secure,
            jwt_access_ttl: Duration::from_secs(raw.jwt_access_ttl),
            jwt_refresh_ttl: Duration::from_secs(raw.jwt_refresh_ttl),
            rate_limit_user_per_min: raw.rate_limit_user_per_min,
            rate_limit_ip_per_min: raw.rate_limit_ip_per_min,
            rate_limit_auth_per_min: raw.rate_limit_auth_per_min,
            trusted_proxies,
            cors_origins: raw.cors_origins.0,
            cluster_workers: raw.cluster_workers,
            cluster_restart_delay: Duration::from_millis(raw.cluster_restart_delay),
            cluster_max_restarts: raw.cluster_max_restarts,
            cluster_restart_window: Duration::from_secs(raw.cluster_restart_window),
            reuse_port: false,
            shutdown_timeout: Duration::from_secs(raw.shutdown_timeout),
            shutdown_keepalive_grace: Duration::from_secs(keepalive_grace),
            request_timeout: Duration::from_secs(raw.request_timeout),
            body_limit: raw.body_limit,
            health_check_timeout: Duration::from_millis(raw.health_check_timeout),
            registry_heartbeat: Duration::from_secs(raw.registry_heartbeat),
            realtime_max_message_bytes: raw.realtime_max_message_bytes,
            realtime_presence_ttl: Duration::from_secs(raw.realtime_presence_ttl),
            log_format: raw.log_format,
            log_level: raw.log_level,
        })
    }

    /// True when Redis is configured, i.e. several instances may share state.
    pub fn is_distributed(&self) -> bool {
        self.redis.is_some()
    }

    /// The effective configuration as `KEY = value` lines, secrets masked.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        fn mask(s: Option<&SecretString>) -> String {
            match s {
                Some(_) => "******** (set)".into(),
                None => "(generated under DATA_DIR)".into(),
            }
        }
        let secrets = self.secrets.as_ref();
        let redis = match &self.redis {
            None => ("REDIS_URL", "(unset: embedded mode)".to_owned()),
            Some(RedisTarget::Url(url)) => ("REDIS_URL", mask_url(url.expose_secret())),
            Some(RedisTarget::Sentinel {
                sentinels, master, ..
            }) => (
                "REDIS_SENTINELS",
                format!("{} (master {master})", sentinels.join(",")),
            ),
            Some(RedisTarget::Cluster { nodes }) => (
                "REDIS_CLUSTER_NODES",
                nodes
                    .iter()
                    .map(|n| mask_url(n.expose_secret()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        };
        let secs = |d: Duration| format!("{}s", d.as_secs());
        vec![
            ("HOST", self.host.to_string()),
            ("PORT", self.port.to_string()),
            (
                "INSTANCE_ID",
                self.instance_id
                    .clone()
                    .unwrap_or_else(|| "(hostname-pid-random)".into()),
            ),
            ("DATA_DIR", self.data_dir.display().to_string()),
            ("DATABASE_URL", mask_url(self.database_url.expose_secret())),
            ("DB_POOL_MIN", self.db_pool_min.to_string()),
            ("DB_POOL_MAX", self.db_pool_max.to_string()),
            ("DB_ACQUIRE_TIMEOUT", secs(self.db_acquire_timeout)),
            ("DB_STATEMENT_TIMEOUT", secs(self.db_statement_timeout)),
            ("DB_CONNECT_RETRIES", self.db_connect_retries.to_string()),
            redis,
            ("REDIS_KEY_PREFIX", self.redis_key_prefix.clone()),
            (
                "CACHE_PROVIDER",
                format!("{:?}", self.cache_provider).to_lowercase(),
            ),
            ("CACHE_TTL", secs(self.cache_ttl)),
            ("CACHE_MAX_SIZE", self.cache_max_size.to_string()),
            ("QUEUE_CONCURRENCY", self.queue_concurrency.to_string()),
            ("QUEUE_MAX_RETRIES", self.queue_max_retries.to_string()),
            (
                "QUEUE_POLL_INTERVAL",
                format!("{}ms", self.queue_poll_interval.as_millis()),
            ),
            (
                "QUEUE_IDLE_POLL_MAX",
                format!("{}ms", self.queue_idle_poll_max.as_millis()),
            ),
            ("QUEUE_LEASE", secs(self.queue_lease)),
            (
                "QUEUE_BACKOFF_BASE",
                format!("{}ms", self.queue_backoff_base.as_millis()),
            ),
            ("QUEUE_WORKERS", self.queue_workers.to_string()),
            ("QUEUE_TEST_HANDLERS", self.queue_test_handlers.to_string()),
            (
                "ADMIN_TOKEN",
                if self.admin_token.is_some() {
                    "***"
                } else {
                    "(unset)"
                }
                .to_owned(),
            ),
            ("SESSION_SECRET", mask(secrets.map(|s| &s.session_secret))),
            (
                "SESSION_ENCRYPTION_KEY",
                mask(secrets.map(|s| &s.session_encryption_key)),
            ),
            ("SESSION_TTL", secs(self.session_ttl)),
            ("SESSION_COOKIE_NAME", self.session_cookie_name.clone()),
            ("COOKIE_SECURE", self.cookie_secure.to_string()),
            (
                "JWT_ACCESS_SECRET",
                mask(secrets.map(|s| &s.jwt_access_secret)),
            ),
            (
                "JWT_REFRESH_SECRET",
                mask(secrets.map(|s| &s.jwt_refresh_secret)),
            ),
            ("JWT_ACCESS_TTL", secs(self.jwt_access_ttl)),
            ("JWT_REFRESH_TTL", secs(self.jwt_refresh_ttl)),
            (
                "RATE_LIMIT_USER_PER_MIN",
                self.rate_limit_user_per_min.to_string(),
            ),
            (
                "RATE_LIMIT_IP_PER_MIN",
                self.rate_limit_ip_per_min.to_string(),
            ),
            (
                "RATE_LIMIT_AUTH_PER_MIN",
                self.rate_limit_auth_per_min.to_string(),
            ),
            (
                "TRUSTED_PROXIES",
                self.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("CORS_ORIGINS", self.cors_origins.join(",")),
            ("CLUSTER_WORKERS", self.cluster_workers.to_string()),
            (
                "CLUSTER_RESTART_DELAY",
                self.cluster_restart_delay.as_millis().to_string(),
            ),
            (
                "CLUSTER_MAX_RESTARTS",
                self.cluster_max_restarts.to_string(),
            ),
            (
                "CLUSTER_RESTART_WINDOW",
                self.cluster_restart_window.as_secs().to_string(),
            ),
            ("SHUTDOWN_TIMEOUT", secs(self.shutdown_timeout)),
            (
                "SHUTDOWN_KEEPALIVE_GRACE",
                secs(self.shutdown_keepalive_grace),
            ),
            ("REQUEST_TIMEOUT", secs(self.request_timeout)),
            ("BODY_LIMIT", self.body_limit.to_string()),
            (
                "HEALTH_CHECK_TIMEOUT",
                format!("{}ms", self.health_check_timeout.as_millis()),
            ),
            ("REGISTRY_HEARTBEAT", secs(self.registry_heartbeat)),
            (
                "REALTIME_MAX_MESSAGE_BYTES",
                self.realtime_max_message_bytes.to_string(),
            ),
            ("REALTIME_PRESENCE_TTL", secs(self.realtime_presence_ttl)),
            (
                "LOG_FORMAT",
                format!("{:?}", self.log_format).to_lowercase(),
            ),
            ("LOG_LEVEL", self.log_level.clone()),
        ]
    }
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::new(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// Hides the password part of `scheme://user:password@host/…`.
fn mask_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((creds, host)) = rest.rsplit_once('@')
    {
        let user = creds.split(':').next().unwrap_or("");
        return format!("{scheme}://{user}:****@{host}");
    }
    url.to_owned()
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
    use super::*;

    fn err(pairs: &[(&str, &str)]) -> ConfigError {
        Config::from_pairs(pairs.iter().copied()).expect_err("config should be rejected")
    }

    #[test]
    fn defaults_are_embedded() {
        let c = Config::from_pairs(Vec::<(&str, &str)>::new()).expect("defaults are valid");
        assert_eq!(c.port, 8080);
        assert_eq!(c.database_kind, DatabaseKind::Sqlite);
        assert!(!c.is_distributed());
        assert_eq!(c.cache_provider, CacheProvider::Memory);
        assert_eq!(c.rate_limit_auth_per_min, 10);
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
    }

    #[test]
    fn keepalive_grace_follows_a_short_shutdown_timeout_unless_set() {
        let c = Config::from_pairs([("SHUTDOWN_TIMEOUT", "2")]).expect("valid alone");
        assert_eq!(c.shutdown_keepalive_grace, Duration::from_secs(1));
        let c = Config::from_pairs(Vec::<(&str, &str)>::new()).expect("defaults");
        assert_eq!(c.shutdown_keepalive_grace, Duration::from_secs(5));
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
    fn cidr_containment() {
        let net = IpNet::parse("10.1.0.0/16").expect("valid cidr");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let any = IpNet::parse("0.0.0.0/0").expect("valid cidr");
        assert!(any.contains("8.8.8.8".parse().expect("ip")));
    }
}
