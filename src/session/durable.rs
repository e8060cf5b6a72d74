//! Sessions in distributed mode: the database holds every session (the truth), Redis
//! the shared copy every instance reads first (with its near cache,
//! [`super::redis::RedisSessionStore`]). So a Redis outage logs nobody out and stops
//! no logout:
//!
//! - **Writes** go to the database first, then to Redis. A Redis write that fails
//!   (Redis down) is recorded in `session_repairs`; the request still succeeds,
//!   because the database already holds the truth.
//! - **Reads** come from Redis only while it can be trusted: this instance's
//!   invalidation subscription is in sync and, since it last (re)connected, this
//!   instance has applied every recorded repair to Redis. Every instance's
//!   subscription drops when Redis goes away, so after an outage each one repairs
//!   (usually: one query that finds nothing) before it reads Redis again; until
//!   then, and while Redis is down, reads go to the database. A logout made during
//!   the outage therefore holds everywhere, also once Redis is back with the old copy.
//! - **A logout while Redis is unreachable** returns only once every instance must
//!   have noticed: another instance may still hold the session in its near cache
//!   until its subscription's ping fails ([`STALE_BOUND`]), so `delete` waits out
//!   that bound from its first attempt before it reports success.
//! - **A Redis miss** is checked against the database (Redis may have come back
//!   empty, or a replica may have been promoted before it had everything) and the copy
//!   is put back, so nobody is logged out by a Redis restart.
//!
//! Cost while Redis is up: reads as before (near cache, or one Redis round trip);
//! writes (login, refresh, logout) one database round trip more; a cookie Redis does
//! not know (an expired or forged one) one database read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;

use super::SessionStore;
use super::redis::RedisSessionStore;
use super::sql::SqlSessionStore;
use crate::backend_error::BackendError;
use crate::clock;
use crate::db::Db;

/// The longest an instance can go on trusting its near cache after Redis became
/// unreachable: its subscription pings every `PING_EVERY` and gives up after the
/// command timeout (src/pubsub/redis.rs).
pub const STALE_BOUND: Duration = Duration::from_millis(
    crate::pubsub::redis::PING_EVERY.as_millis() as u64
        + crate::redis_client::COMMAND_TIMEOUT.as_millis() as u64
        + 250,
);

/// Repairs applied per query while catching up.
const REPAIR_BATCH: i64 = 100;

/// No repair applied yet in any generation.
const NEVER: u64 = u64::MAX;

/// Sessions in the database with the shared copy in Redis.
pub struct DurableSessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    rows: SqlSessionStore,
    redis: RedisSessionStore,
    db: Db,
    /// The subscription generation whose repairs this instance has applied.
    repaired: AtomicU64,
    /// One repair pass at a time per instance; readers do not wait for it.
    repairing: tokio::sync::Mutex<()>,
    /// Whether a task already retries the repair until Redis can be trusted again.
    retrying: std::sync::atomic::AtomicBool,
    /// Moves with every repair recorded here: a pass that overlapped one does not
    /// count as complete (it may have read the list before the new entry).
    recorded: AtomicU64,
}

impl DurableSessionStore {
    /// The store over the `sessions` table of `db` and `redis`.
    pub fn new(db: Db, redis: RedisSessionStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                rows: SqlSessionStore::shared(db.clone()),
                redis,
                db,
                repaired: AtomicU64::new(NEVER),
                repairing: tokio::sync::Mutex::new(()),
                retrying: std::sync::atomic::AtomicBool::new(false),
                recorded: AtomicU64::new(0),
            }),
        }
    }
}

impl Inner {
    /// Whether Redis may be read for sessions right now; starts a repair pass (and
    /// waits for it only if no other pass runs) when the subscription came back.
    async fn redis_trusted(&self) -> bool {
        if !self.redis.in_sync() {
            return false;
        }
        let generation = self.redis.generation();
        if self.repaired.load(Ordering::Acquire) == generation {
            return true;
        }
        let Ok(_pass) = self.repairing.try_lock() else {
            return false;
        };
        let recorded = self.recorded.load(Ordering::Acquire);
        match self.repair().await {
            Ok(applied) => {
                if applied > 0 {
                    tracing::info!(applied, "session copies in Redis brought back in line");
                }
                if self.recorded.load(Ordering::Acquire) != recorded {
                    return false;
                }
                self.repaired.store(generation, Ordering::Release);
                self.redis.in_sync() && self.redis.generation() == generation
            }
            Err(e) => {
                tracing::warn!(error = %e, "session repair failed; reading sessions from the database");
                false
            }
        }
    }

    /// Applies every recorded repair: Redis gets the database's row, or loses the
    /// key when the database has none.
    async fn repair(&self) -> Result<u64, BackendError> {
        let mut applied = 0;
        loop {
            let rows = crate::db::query(
                "SELECT key, created_at FROM session_repairs ORDER BY created_at LIMIT $1",
            )
            .bind(REPAIR_BATCH)
            .fetch_all(self.db.pool())
            .await?;
            for row in &rows {
                let key: String = row.try_get("key")?;
                let recorded: i64 = row.try_get("created_at")?;
                match self.rows.get_with_ttl(&key).await? {
                    Some((value, ttl)) => self.redis.put(&key, &value, ttl).await?,
                    None => self.redis.delete(&key).await?,
                }
                // Only this record: a failure recorded again meanwhile stays.
                crate::db::query("DELETE FROM session_repairs WHERE key = $1 AND created_at = $2")
                    .bind(&key)
                    .bind(recorded)
                    .execute(self.db.writer())
                    .await?;
                applied += 1;
            }
            if (rows.len() as i64) < REPAIR_BATCH {
                return Ok(applied);
            }
        }
    }

    /// Notes that Redis's copy of `key` may be wrong, and keeps trying to fix it.
    async fn record_repair(
        self: &Arc<Self>,
        key: &str,
        error: &BackendError,
    ) -> Result<(), BackendError> {
        metrics::counter!("shoal_session_redis_write_failures_total").increment(1);
        tracing::warn!(error = %error, "session not written to Redis; the database has it, Redis is repaired later");
        crate::db::query(
            "INSERT INTO session_repairs (key, created_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(key)
        .bind(clock::now_micros())
        .execute(self.db.writer())
        .await?;
        // This instance reads the database until the repair is applied; the others
        // do too if Redis is down (their subscription dropped). If Redis only missed
        // this one write, the repair below fixes it within a second or so.
        self.recorded.fetch_add(1, Ordering::AcqRel);
        self.repaired.store(NEVER, Ordering::Release);
        if !self.retrying.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(250);
                while !me.redis_trusted().await {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                me.retrying.store(false, Ordering::Release);
            });
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for DurableSessionStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let inner = &self.inner;
        inner.rows.put(key, value, ttl).await?;
        if let Err(e) = inner.redis.put(key, value, ttl).await {
            inner.record_repair(key, &e).await?;
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let inner = &self.inner;
        if inner.redis_trusted().await {
            match inner.redis.get(key).await {
                Ok(Some(value)) => return Ok(Some(value)),
                Ok(None) => {
                    let Some((value, ttl)) = inner.rows.get_with_ttl(key).await? else {
                        return Ok(None);
                    };
                    // Redis lost it (restarted empty, or a promoted replica). Put it
                    // back, then look again: a logout that deleted the row meanwhile
                    // may have deleted Redis's key before our put, so delete it
                    // ourselves if the row is gone now.
                    if inner.redis.put(key, &value, ttl).await.is_ok()
                        && inner.rows.get_with_ttl(key).await?.is_none()
                    {
                        let _ = inner.redis.delete(key).await;
                        return Ok(None);
                    }
                    metrics::counter!("shoal_session_restored_total").increment(1);
                    return Ok(Some(value));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "session read from Redis failed; reading the database");
                }
            }
        }
        Ok(inner.rows.get_with_ttl(key).await?.map(|(value, _)| value))
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let inner = &self.inner;
        let started = tokio::time::Instant::now();
        inner.rows.delete(key).await?;
        if let Err(e) = inner.redis.delete(key).await {
            inner.record_repair(key, &e).await?;
            // Every other instance has stopped reading its near copy by now.
            tokio::time::sleep_until(started + STALE_BOUND).await;
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.inner.redis.check().await
    }
}
