//! The repository layer: SQL over sqlx's `Any` driver, the same statements on SQLite
//! and PostgreSQL (engine differences live in [`dialect`]).
//!
//! Repository functions take any executor, so a caller composes them inside one
//! transaction (`&mut *tx`) or runs them alone on the pool.

pub mod activity;
pub mod analytics;
pub mod dialect;
pub mod jobs;
pub mod message_writer;
pub mod messages;
pub mod tasks;
pub mod tokens;
pub mod users;
pub mod workspaces;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use uuid::Uuid;

use crate::config::Config;
pub use dialect::Dialect;

/// A failure of the store, as callers need to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, timed out, or the pool is exhausted: 503.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A uniqueness rule was broken (the caller knows which one).
    #[error("conflict: {0}")]
    Conflict(#[source] sqlx::Error),
    /// Stored data that does not decode, or any other unexpected error: 500.
    #[error("database error: {0}")]
    Internal(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether the database is at fault for being unreachable (503) rather than a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e),
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    return StoreError::Conflict(e);
                }
                let code = db.code().unwrap_or_default();
                // 08xxx connection exceptions, 57014 statement timeout, 57P0x admin
                // shutdown / terminated backend / cannot connect now, 53xxx
                // insufficient resources; and what a server answers when the pool
                // opens a new connection it refuses: 55000 (database not accepting
                // connections), 3D000 (database gone), 28xxx (credentials refused).
                // SQLite 5/6 are BUSY/LOCKED after busy_timeout.
                if code.starts_with("08")
                    || code.starts_with("57")
                    || code.starts_with("53")
                    || code.starts_with("28")
                    || code == "55000"
                    || code == "3D000"
                    || code == "5"
                    || code == "6"
                {
                    StoreError::Unavailable(e)
                } else {
                    StoreError::Internal(e)
                }
            }
            _ => StoreError::Internal(e),
        }
    }
}

/// The connection pool and its dialect.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    /// Where writes go. On SQLite a pool of ONE connection, so writers queue in
    /// order here instead of contending for the database lock through SQLite's
    /// sleep-and-retry busy handler (which showed up as p99 spikes of 100+ ms under
    /// load); on PostgreSQL the same pool as reads.
    writer: AnyPool,
    dialect: Dialect,
    /// Connections handed out by the pool, ever. Every query through the pool takes
    /// one, so tests can prove that a path makes no database round trip.
    acquisitions: Arc<AtomicU64>,
}

impl Db {
    /// The pools, without connecting: the first use connects. `serve` starts from
    /// here so that it can listen (live, not ready) while the database is still
    /// unreachable or full, and bring it up in the background (`src/app.rs`).
    pub fn lazy(config: &Config) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        sqlx::any::install_default_drivers();
        let dialect = Dialect::new(config.database.kind);
        if config.database.kind == crate::config::DatabaseKind::Sqlite {
            ensure_sqlite_parent(config.database.url.expose_secret())?;
        }
        let url = dialect.connect_url(config.database.url.expose_secret());
        let statement_timeout = config.database.statement_timeout;
        let acquisitions = Arc::new(AtomicU64::new(0));
        let (on_connect, on_acquire) = (acquisitions.clone(), acquisitions.clone());
        let options = AnyPoolOptions::new()
            .min_connections(config.database.pool_min)
            .max_connections(config.database.pool_max)
            .acquire_timeout(config.database.acquire_timeout)
            .after_connect(move |conn, _meta| {
                on_connect.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move { dialect.prepare_connection(conn, statement_timeout).await })
            })
            .before_acquire(move |_conn, _meta| {
                on_acquire.fetch_add(1, Ordering::Relaxed);
                Box::pin(async { Ok(true) })
            })
            // A pooled PostgreSQL connection can die under us (failover,
            // pg_terminate_backend): ping it before use. A SQLite connection cannot.
            .test_before_acquire(dialect.kind() == crate::config::DatabaseKind::Postgres);
        let pool = options.clone().connect_lazy(&url)?;
        let writer = match dialect.kind() {
            crate::config::DatabaseKind::Sqlite => options
                .min_connections(1)
                .max_connections(1)
                .connect_lazy(&url)?,
            crate::config::DatabaseKind::Postgres => pool.clone(),
        };
        Ok(Self {
            pool,
            writer,
            dialect,
            acquisitions,
        })
    }

    /// Opens the pool and waits until the database answers, retrying
    /// `DB_CONNECT_RETRIES` times (3 when unset: the CLI's commands give up, unlike
    /// `serve`) with [`retry_delay`] between attempts.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let db = Self::lazy(config)?;
        let retries = config.database.connect_retries.unwrap_or(3);
        let mut attempt = 0;
        loop {
            // A direct connection, not a pool acquire: the database's own answer
            // (refused, full, a certificate it does not trust) at once, instead of a
            // pool timeout after DB_ACQUIRE_TIMEOUT.
            match db.probe().await {
                Ok(()) => return Ok(db),
                Err(e) if attempt < retries => {
                    let delay = retry_delay(attempt);
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "database not reachable, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cannot connect to the database after {} attempts: {e}",
                        attempt + 1
                    ));
                }
            }
        }
    }

    /// Applies pending migrations (under a lock on PostgreSQL).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.dialect
            .migrator()
            .run(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))
    }

    /// The pool for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for one-statement writes (see the `writer` field).
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// The engine-specific parts.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Opens a transaction that will write (see [`Dialect::begin_write`]).
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(self.writer.begin_with(self.dialect.begin_write()).await?)
    }

    /// Opens one connection outside the pool and closes it: the database's own answer
    /// (refused, full, bad password), which an acquire from the pool would hide
    /// behind its timeout.
    pub async fn probe(&self) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        let options = self.pool.connect_options();
        sqlx::AnyConnection::connect_with(&options)
            .await?
            .close()
            .await
    }

    /// Probes the database ([`Db::probe`]), then applies pending migrations.
    pub async fn bring_up(&self) -> anyhow::Result<()> {
        self.probe().await?;
        self.migrate().await
    }

    /// Readiness: one round trip.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Connections in use and idle, for `/metrics`.
    pub fn pool_usage(&self) -> (u32, u32) {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        (size.saturating_sub(idle), idle)
    }

    /// How many times a connection was taken from the pool (or opened) so far.
    pub fn acquisitions(&self) -> u64 {
        self.acquisitions.load(Ordering::Relaxed)
    }

    /// Closes every connection (end of shutdown).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// The pause before start-up attempt `attempt + 1`: 0.25 s doubling up to 30 s, with
/// ±20 % jitter so that a hundred instances started together do not knock on the
/// database in step.
pub fn retry_delay(attempt: u32) -> Duration {
    let base = Duration::from_millis(250)
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(Duration::from_secs(30));
    base.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

/// Why the database cannot be used right now, as readiness says it: `database_full`
/// when it (or a pooler in front of it) has no connection slot left for us,
/// `database_unreachable` otherwise.
pub fn unavailable_reason(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(sqlx::Error::Database(db)) = e.downcast_ref::<sqlx::Error>()
            && db.code().as_deref() == Some("53300")
        {
            return "database_full";
        }
        let text = e.to_string();
        // 53300 (too_many_connections) as PostgreSQL and PgBouncer word it, for errors
        // that reach us as text (a migration's, a pooler's).
        if text.contains("too many clients")
            || text.contains("too many connections")
            || text.contains("no more connections allowed")
        {
            return "database_full";
        }
        source = e.source();
    }
    "database_unreachable"
}

fn ensure_sqlite_parent(url: &str) -> anyhow::Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            anyhow::anyhow!("cannot create database directory {}: {e}", parent.display())
        })?;
    }
    Ok(())
}

/// Reads a UUID stored as text.
pub(crate) fn uuid_col(row: &AnyRow, col: &str) -> Result<Uuid, sqlx::Error> {
    let s: String = row.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: Box::new(e),
    })
}

/// Reads a nullable UUID stored as text.
pub(crate) fn opt_uuid_col(row: &AnyRow, col: &str) -> Result<Option<Uuid>, sqlx::Error> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| Uuid::parse_str(&s))
        .transpose()
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: col.to_owned(),
            source: Box::new(e),
        })
}

/// An opaque keyset-pagination cursor: the last id of the previous page.
pub mod cursor {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use uuid::Uuid;

    /// Encodes `id` as a cursor.
    pub fn encode(id: Uuid) -> String {
        URL_SAFE_NO_PAD.encode(id.as_bytes())
    }

    /// Decodes a cursor made by [`encode`].
    pub fn decode(s: &str) -> Option<Uuid> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        Uuid::from_slice(&bytes).ok()
    }
}
