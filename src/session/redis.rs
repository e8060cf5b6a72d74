//! Sessions in Redis (distributed mode): one string per session under
//! `{prefix}:session:{key}`, written with `SET … PX ttl`, so that Redis itself expires
//! it and every instance sees the same record — with a near cache per instance, so
//! that an authenticated request costs no session round trip on a hit.
//!
//! The value is stored as given: it is already sealed (AEAD) by
//! `crate::auth::sessions`, and `key` is already an HMAC of the cookie, so a
//! `redis-cli` user sees neither a usable cookie nor a user id.
//!
//! # The near cache, and why it never serves a dead session
//!
//! A `get` that misses reads `GET` + `PTTL` in one round trip and keeps the value
//! here until the earlier of the session's own expiry and [`NEAR_TTL`]. Every `put`
//! and `delete` runs its write and an acknowledged invalidation broadcast in one
//! round trip ([`crate::cache::invalidation`]): when `delete` (logout) returns, every
//! connected instance has dropped its copy. Two more rules close the races:
//! - a load that overlapped any invalidation does not keep what it read (the
//!   invalidation epoch moved), so a `GET` answered just before a `DEL` cannot leave
//!   the old record behind;
//! - the near cache is only read while the invalidation subscription is in sync;
//!   while it is down, or back but its gap not yet handled, every `get` goes to Redis
//!   (which is what readiness and outage handling expect: no Redis, no session).
//!
//! What remains is the detection delay of a silently dead subscription connection
//! (`PING_EVERY` plus the command timeout, about 3 s), during which an instance that
//! can no longer hear invalidations may still serve a session deleted elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::SessionStore;
use crate::backend_error::BackendError;
use crate::cache::Counters;
use crate::cache::invalidation::{Invalidations, NearCache};
use crate::pubsub::redis::RedisPubSub;
use crate::redis_client::{RedisClient, px};

/// The longest a session stays in an instance's near cache without being read from
/// Redis again. Invalidation makes changes visible at once; this only bounds how long
/// an entry can outlive a missed invalidation in the case the module doc names.
pub const NEAR_TTL: Duration = Duration::from_secs(60);

/// Sessions kept near, per instance; beyond this, least recently used ones go.
const NEAR_CAPACITY: u64 = 100_000;

/// Sessions in Redis; shared by every instance on the same server and prefix.
pub struct RedisSessionStore {
    client: RedisClient,
    near: Arc<NearSessions>,
    invalidations: Invalidations,
    counters: Counters,
}

/// A session's sealed bytes as read, and when this copy stops being trusted.
struct Near {
    value: Vec<u8>,
    expires_at: Instant,
}

struct NearSessions(moka::sync::Cache<String, Arc<Near>>);

#[async_trait]
impl NearCache for NearSessions {
    async fn forget(&self, key: &str) {
        self.0.invalidate(key);
    }

    fn forget_all(&self) {
        self.0.invalidate_all();
    }
}

impl RedisSessionStore {
    /// A store over `client`, subscribed to its invalidation channel through `pubsub`
    /// before it returns.
    pub async fn start(
        client: RedisClient,
        pubsub: RedisPubSub,
    ) -> Result<RedisSessionStore, BackendError> {
        let near = Arc::new(NearSessions(
            moka::sync::Cache::builder()
                .max_capacity(NEAR_CAPACITY)
                .time_to_live(NEAR_TTL)
                .build(),
        ));
        let invalidations =
            Invalidations::start(client.clone(), pubsub, "session", near.clone()).await?;
        Ok(Self {
            client,
            near,
            invalidations,
            counters: Counters::new("session_near"),
        })
    }

    fn key(&self, key: &str) -> String {
        self.client.key(&["session", key])
    }

    /// Whether this instance hears invalidations right now and has handled any gap
    /// (see `crate::cache::invalidation`).
    pub fn in_sync(&self) -> bool {
        self.invalidations.in_sync()
    }

    /// The subscription's connection generation (moves on every reconnect).
    pub fn generation(&self) -> u64 {
        self.invalidations.generation()
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(px(ttl))
            .ignore();
        let result = self.invalidations.broadcast(pipe, key).await;
        self.near.forget(key).await;
        result
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        if self.invalidations.in_sync()
            && let Some(near) = self.near.0.get(key)
        {
            if near.expires_at > Instant::now() {
                self.counters.record(true);
                return Ok(Some(near.value.clone()));
            }
            self.near.forget(key).await;
        }
        self.counters.record(false);
        let epoch = self.invalidations.epoch();
        let asked = Instant::now();
        let name = self.key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&name).cmd("PTTL").arg(&name);
        let (value, pttl): (Option<Vec<u8>>, i64) = self.client.query_pipe(&pipe).await?;
        if let Some(v) = &value
            && pttl > 0
            && self.invalidations.in_sync()
        {
            let ttl = Duration::from_millis(pttl.unsigned_abs()).min(NEAR_TTL);
            let near = Arc::new(Near {
                value: v.clone(),
                expires_at: asked + ttl,
            });
            self.near.0.insert(key.to_owned(), near);
            if self.invalidations.epoch() != epoch {
                self.near.forget(key).await;
            }
        }
        Ok(value)
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.key(key)).ignore();
        let result = self.invalidations.broadcast(pipe, key).await;
        self.near.forget(key).await;
        result
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.client.ping().await?;
        self.invalidations.check().await
    }
}
