//! The repository layer: SQL over sqlx's `Any` driver, the same statements on SQLite
//! and PostgreSQL (engine differences live in [`dialect`]).
//!
//! Repository functions take any executor, so a caller composes them inside one
//! transaction (`&mut *tx`) or runs them alone on the pool.

pub mod activity;
pub mod analytics;
pub mod dialect;
pub mod exports;
pub mod invitations;
pub mod jobs;
pub mod message_writer;
pub mod messages;
pub mod pooling;
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
pub use pooling::{Pooled, query};

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

/// Migrations are pending and this instance may not apply them (behind a transaction
/// pooler without `DATABASE_MIGRATION_URL`): readiness says `migrations_pending`
/// until `shoal migrate` has run.
#[derive(Debug, thiserror::Error)]
#[error(
    "{pending} migration(s) not applied, and behind a transaction pooler this instance does not migrate: run `shoal migrate` with DATABASE_URL (or DATABASE_MIGRATION_URL) pointing at PostgreSQL itself"
)]
pub struct MigrationsPending {
    /// How many.
    pub pending: usize,
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
    /// The statement that opens a write transaction.
    begin_write: sqlx::SqlStr,
    /// Behind a transaction pooler, the statement that opens the transaction each
    /// single statement on the pool runs in ([`pooling`]); `None` on a direct database.
    begin_single: Option<sqlx::SqlStr>,
    /// `DATABASE_MIGRATION_URL`: migrations go over a direct connection to it.
    migration_url: Option<secrecy::SecretString>,
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
        let behind_pooler = config.database.pooler == crate::config::Pooler::Transaction;
        let statement_timeout = config.database.statement_timeout;
        // Behind a transaction pooler a session setting would land on whichever server
        // connection the pooler lends, and stay there for its next client: the
        // statement timeout is set per transaction instead (`SET LOCAL`, in the same
        // round trip as `BEGIN`).
        let (begin_write, begin_single) = if behind_pooler {
            pooling::use_unnamed_statements();
            let begin = sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(format!(
                "BEGIN; SET LOCAL statement_timeout = {}",
                statement_timeout.as_millis()
            )));
            (begin.clone(), Some(begin))
        } else {
            (sqlx::SqlSafeStr::into_sql_str(dialect.begin_write()), None)
        };
        let session_timeout = (!behind_pooler).then_some(statement_timeout);
        let acquisitions = Arc::new(AtomicU64::new(0));
        let (on_connect, on_acquire) = (acquisitions.clone(), acquisitions.clone());
        let options = AnyPoolOptions::new()
            .min_connections(config.database.pool_min)
            .max_connections(config.database.pool_max)
            .acquire_timeout(config.database.acquire_timeout)
            .after_connect(move |conn, _meta| {
                on_connect.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move { dialect.prepare_connection(conn, session_timeout).await })
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
            begin_write,
            begin_single,
            migration_url: config.database.migration_url.clone(),
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

    /// Applies pending migrations, each once however many instances start together.
    ///
    /// - Directly connected: sqlx's migrator on the pool, under its session-level
    ///   advisory lock on PostgreSQL.
    /// - With `DATABASE_MIGRATION_URL`: the same over one direct connection to it,
    ///   opened only when something is pending (behind a pooler the check goes
    ///   through the pooler, so a hundred instances that find everything applied
    ///   open no direct connection).
    /// - Behind a transaction pooler without it: no migration at all — a session
    ///   lock does not hold there, and the migrator's named statements would collide
    ///   on the pooler's shared server connections. Pending migrations are then an
    ///   error ([`MigrationsPending`]) until `shoal migrate` has run with a direct URL.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        use secrecy::ExposeSecret;
        use sqlx::Connection;
        if self.behind_pooler() {
            let pending = self.pending_migrations().await?;
            if pending == 0 {
                return Ok(());
            }
            if self.migration_url.is_none() {
                return Err(MigrationsPending { pending }.into());
            }
        }
        let migrator = self.dialect.migrator();
        let result = match &self.migration_url {
            Some(url) => {
                let mut conn = sqlx::AnyConnection::connect(url.expose_secret())
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot connect to DATABASE_MIGRATION_URL: {e}")
                    })?;
                // `run_direct`, not `run`: `run`'s `Acquire` bound on a borrowed
                // connection is not `Send` for every lifetime inside a spawned task.
                let result = migrator.run_direct(None, &mut conn, false).await;
                let _ = conn.close().await;
                result
            }
            None => migrator.run(&self.pool).await,
        };
        result.map_err(|e| anyhow::anyhow!("migrations failed: {e}"))
    }

    /// How many of the embedded migrations the database has not applied
    /// successfully (all of them when it has no migration table yet).
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let embedded: Vec<i64> = self
            .dialect
            .migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect();
        let rows = match query("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(self.pool())
            .await
        {
            Ok(rows) => rows,
            // 42P01 undefined_table: nothing was ever applied.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                return Ok(embedded.len());
            }
            Err(e) => return Err(e.into()),
        };
        let applied: std::collections::HashSet<i64> = rows
            .iter()
            .map(|r| r.try_get::<i64, _>("version"))
            .collect::<Result<_, _>>()?;
        Ok(embedded.iter().filter(|v| !applied.contains(v)).count())
    }

    /// The pool for reads, as an executor of single statements.
    pub fn pool(&self) -> Pooled<'_> {
        Pooled {
            pool: &self.pool,
            begin: self.begin_single.as_ref(),
        }
    }

    /// The pool for one-statement writes (see the `writer` field).
    pub fn writer(&self) -> Pooled<'_> {
        Pooled {
            pool: &self.writer,
            begin: self.begin_single.as_ref(),
        }
    }

    /// Whether `DATABASE_URL` goes through a transaction pooler.
    pub fn behind_pooler(&self) -> bool {
        self.begin_single.is_some()
    }

    /// The engine-specific parts.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Opens a transaction that will write (see [`Dialect::begin_write`]).
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(self.writer.begin_with(self.begin_write.clone()).await?)
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
        query("SELECT 1").execute(self.pool()).await?;
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
/// `migrations_pending` while waiting for `shoal migrate` ([`MigrationsPending`]),
/// `database_unreachable` otherwise.
pub fn unavailable_reason(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<MigrationsPending>() {
            return "migrations_pending";
        }
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
