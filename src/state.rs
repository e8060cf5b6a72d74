//! The one `AppState`, built once from the validated [`Config`], shared by handlers.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::analytics::OptOutStore;
use crate::auth::password::Passwords;
use crate::auth::sessions::Sessions;
use crate::auth::tokens::TokenKeys;
use crate::config::Config;
use crate::db::Db;
use crate::instance::Instance;
use crate::presence::Presence;
use crate::pubsub::PubSub;
use crate::rate_limit::RateLimiter;
use crate::redis_client::RedisClient;
use crate::registry::InstanceRegistry;
use crate::user_directory::UserDirectory;

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

impl AppState {
    /// Wraps the parts.
    pub fn new(inner: AppParts) -> Self {
        Self(Arc::new(inner))
    }
}

/// Everything a handler may need.
pub struct AppParts {
    /// The validated configuration.
    pub config: Config,
    /// Who this process is.
    pub instance: Instance,
    /// The database.
    pub db: Db,
    /// Chat messages into the database, in group commits per workspace.
    pub message_writer: crate::db::message_writer::MessageWriter,
    /// Server-side sessions over the configured session store.
    pub sessions: Sessions,
    /// Cached user look-ups over the configured cache.
    pub users: UserDirectory,
    /// Request budgets, shared by every instance (Redis in distributed mode).
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// Budgets of one connection (a Socket.IO socket): always in-process. A socket
    /// lives on one instance and its id dies with it (a reconnect is a new socket with
    /// a new budget either way), so sharing the budget through Redis would cost a
    /// round trip per event and change nothing.
    pub connection_limiter: Arc<dyn RateLimiter>,
    /// Messages between instances.
    pub pubsub: Arc<dyn PubSub>,
    /// Who is online.
    pub presence: Arc<dyn Presence>,
    /// Live instances.
    pub registry: Arc<dyn InstanceRegistry>,
    /// Analytics opt-outs.
    pub opt_out: Arc<dyn OptOutStore>,
    /// Token signing keys.
    pub tokens: TokenKeys,
    /// Password hashing.
    pub passwords: Passwords,
    /// Readiness and connection counters.
    pub lifecycle: Lifecycle,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The Redis client in distributed mode (health checks, round-trip counts).
    pub redis: Option<RedisClient>,
}

/// Process state that readiness and `/health` report.
#[derive(Default)]
pub struct Lifecycle {
    migrated: AtomicBool,
    /// Why the database could not be brought up yet (`database_full`,
    /// `database_unreachable`), while start-up keeps trying.
    database_problem: std::sync::Mutex<Option<&'static str>>,
    draining: AtomicBool,
    /// Open HTTP connections.
    pub http_connections: Arc<AtomicU64>,
    /// Requests being served right now.
    pub in_flight: AtomicU64,
    /// Open Socket.IO connections.
    pub ws_connections: AtomicU64,
    /// Request latencies since the last heartbeat (the dashboard's rate and p99).
    pub requests: crate::request_window::RequestWindow,
}

impl Lifecycle {
    /// Migrations are applied.
    pub fn set_migrated(&self) {
        self.migrated.store(true, Ordering::SeqCst);
    }

    /// Whether migrations are applied.
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::SeqCst)
    }

    /// Records why the database is not up yet (`None`: it is).
    pub fn set_database_problem(&self, reason: Option<&'static str>) {
        *self
            .database_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// Why the database is not up yet, while start-up keeps trying.
    pub fn database_problem(&self) -> Option<&'static str> {
        *self
            .database_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Shutdown began: readiness answers 503 from now on.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
