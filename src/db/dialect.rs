//! Everything that differs between SQLite and PostgreSQL, in one place: connection
//! set-up, the statement that opens a write transaction, and the migration set.
//! All other SQL in `store/` is written once and runs on both.

use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, Executor};

use crate::config::DatabaseKind;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The engine-specific parts of the store.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    kind: DatabaseKind,
}

impl Dialect {
    /// The dialect of `kind`.
    pub fn new(kind: DatabaseKind) -> Self {
        Self { kind }
    }

    /// The engine.
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The URL sqlx should open: SQLite files are created when missing.
    pub fn connect_url(&self, url: &str) -> String {
        match self.kind {
            DatabaseKind::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        }
    }

    /// Session settings applied to every new pooled connection.
    pub async fn prepare_connection(
        &self,
        conn: &mut AnyConnection,
        statement_timeout: Option<Duration>,
    ) -> Result<(), sqlx::Error> {
        match self.kind {
            // WAL lets readers run beside the single writer; busy_timeout makes a
            // second writer wait instead of failing; NORMAL sync is durable across
            // process crashes (not power loss), the usual trade for WAL.
            DatabaseKind::Sqlite => {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                )
                .await?;
            }
            DatabaseKind::Postgres => {
                let Some(timeout) = statement_timeout else {
                    return Ok(());
                };
                let ms = timeout.as_millis();
                conn.execute(AssertSqlSafe(format!("SET statement_timeout = {ms}")))
                    .await?;
            }
        }
        Ok(())
    }

    /// The statement that opens a transaction that will write.
    ///
    /// SQLite must take the write lock up front: a deferred transaction that reads
    /// first and then writes fails with SQLITE_BUSY instead of waiting when another
    /// writer got in between.
    pub fn begin_write(&self) -> &'static str {
        match self.kind {
            DatabaseKind::Sqlite => "BEGIN IMMEDIATE",
            DatabaseKind::Postgres => "BEGIN",
        }
    }

    /// The locking clause of the job-claim subquery. PostgreSQL: `FOR UPDATE SKIP
    /// LOCKED`, so concurrent claimers take different rows instead of queueing on
    /// the same ones. SQLite has no row locks and needs none: every claim goes
    /// through the single writer connection ([`super::Db::writer`]), so claims are
    /// serialised and each `UPDATE … RETURNING` sees the previous one's result.
    pub fn claim_lock(&self) -> &'static str {
        match self.kind {
            DatabaseKind::Sqlite => "",
            DatabaseKind::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }

    /// Whether a data-modifying CTE is available (PostgreSQL: `WITH s AS (UPDATE …
    /// RETURNING …) INSERT …`), which lets a counter update and an insert run as ONE
    /// statement — its own transaction, one round trip instead of four. SQLite only
    /// allows `SELECT` in a CTE.
    pub fn writable_ctes(&self) -> bool {
        matches!(self.kind, DatabaseKind::Postgres)
    }

    /// The embedded migration set. On PostgreSQL sqlx runs it under an advisory lock,
    /// so instances starting together apply each migration once.
    pub fn migrator(&self) -> &'static Migrator {
        match self.kind {
            DatabaseKind::Sqlite => &SQLITE_MIGRATIONS,
            DatabaseKind::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}
