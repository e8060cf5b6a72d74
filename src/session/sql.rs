//! Sessions in the database: in embedded mode the only store (they survive a restart
//! with the SQLite file); in distributed mode the source of truth behind the Redis copy
//! ([`super::durable`]). Expired rows are ignored on read and removed by
//! [`SqlSessionStore::purge_expired`] (embedded) or the nightly clean-up job.
//!
//! Reads are served from an in-process cache in front of the table. That is only
//! correct because this store serves a single instance (embedded mode, docs/architecture.md):
//! every write to a session goes through this same object, which updates the cache
//! first. It takes the database off the hot path of every authenticated request
//! (measured: a SQLite query per request cost more CPU in thread hand-offs than the
//! rest of `GET /api/me`). Shared by many instances ([`SqlSessionStore::shared`]) it
//! has no cache.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;

use super::SessionStore;
use crate::backend_error::BackendError;
use crate::clock;
use crate::db::Db;

/// A cached session: its sealed value and expiry (µs since the epoch); `None` records
/// a key known to have no session, so unknown cookies do not reach the database twice.
type Cached = Arc<Option<(Vec<u8>, i64)>>;

/// Sessions in the `sessions` table, with a read cache when one instance owns them.
pub struct SqlSessionStore {
    db: Db,
    cache: Option<moka::future::Cache<String, Cached>>,
}

impl SqlSessionStore {
    /// A store over `db` for the one instance that writes it (embedded mode), with
    /// the read cache.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            // Idle sessions leave the cache after ten minutes; a later request reads
            // them from the table again.
            cache: Some(
                moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_idle(Duration::from_secs(600))
                    .build(),
            ),
        }
    }

    /// A store over `db` that many instances write (the source of truth behind
    /// [`super::durable::DurableSessionStore`]): no cache, every read goes to the table.
    pub fn shared(db: Db) -> Self {
        Self { db, cache: None }
    }

    async fn read(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, sqlx::Error> {
        let row = crate::db::query("SELECT value, expires_at FROM sessions WHERE key = $1")
            .bind(key)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| {
            Ok::<_, sqlx::Error>((
                r.try_get::<Vec<u8>, _>("value")?,
                r.try_get::<i64, _>("expires_at")?,
            ))
        })
        .transpose()
    }

    /// The live value under `key` and the time it has left.
    pub async fn get_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Duration)>, BackendError> {
        let now = clock::now_micros();
        Ok(self.read(key).await?.and_then(|(value, expires)| {
            (expires > now).then(|| (value, Duration::from_micros((expires - now).unsigned_abs())))
        }))
    }

    /// Deletes expired sessions; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, BackendError> {
        let done = crate::db::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(clock::now_micros())
            .execute(self.db.writer())
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl SessionStore for SqlSessionStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let expires =
            clock::now_micros().saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        // Drop the cached entry first: if the write fails, the next read goes to the
        // table rather than trusting a value that may not be there.
        if let Some(cache) = &self.cache {
            cache.invalidate(key).await;
        }
        crate::db::query(
            "INSERT INTO sessions (key, value, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(value.to_vec())
        .bind(expires)
        .execute(self.db.writer())
        .await?;
        if let Some(cache) = &self.cache {
            cache
                .insert(key.to_owned(), Arc::new(Some((value.to_vec(), expires))))
                .await;
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let Some(cache) = &self.cache else {
            return Ok(self.get_with_ttl(key).await?.map(|(value, _)| value));
        };
        let cached = match cache.get(key).await {
            Some(hit) => hit,
            None => {
                let entry = self.read(key).await?;
                // `or_insert`, not `insert`: a `put` or `delete` that ran while we read
                // the table has already stored the newer truth, which must win over
                // what we read (a logout racing a request must stay a logout).
                cache
                    .entry(key.to_owned())
                    .or_insert(Arc::new(entry))
                    .await
                    .into_value()
            }
        };
        Ok(match &*cached {
            Some((value, expires)) if *expires > clock::now_micros() => Some(value.clone()),
            _ => None,
        })
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        if let Some(cache) = &self.cache {
            cache.invalidate(key).await;
        }
        crate::db::query("DELETE FROM sessions WHERE key = $1")
            .bind(key)
            .execute(self.db.writer())
            .await?;
        if let Some(cache) = &self.cache {
            cache.insert(key.to_owned(), Arc::new(None)).await;
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.db
            .ping()
            .await
            .map_err(|e| BackendError::unavailable("database", e))
    }
}
