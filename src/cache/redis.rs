//! Two-level cache for distributed mode: the in-process moka cache
//! ([`MemoryCache`], L1) in front of Redis (L2, `{prefix}:cache:{key}`), with
//! invalidations broadcast to every instance.
//!
//! Read path: L1 hit → no round trip. L1 miss → `GET` in Redis; on an L2 miss the
//! loader runs and its value is written with `SET … PX ttl`. L2 lookup and loader both
//! run inside moka's `try_get_with`, so concurrent misses for one key on one instance
//! cost one `GET` and one load. If Redis is unreachable, the loader runs directly
//! (the source of truth still answers); while the invalidation subscription is down
//! L1 is neither read nor filled, and the subscription's `Gap` on reconnect clears it.
//!
//! Invalidation ([`super::invalidation`]): `DEL` in Redis and `PUBLISH` on
//! `{prefix}:cache:invalidate` in one pipeline; a listener task on every instance
//! removes the key from its L1 and acknowledges on the sender's `{prefix}:cache:ack:{id}`
//! channel. `invalidate` returns once as many acknowledgements arrived as Redis counted
//! receivers of the `PUBLISH` (at most [`ACK_TIMEOUT`]), so "after `invalidate`
//! returns, no instance serves the old value" holds for every instance that is
//! connected. One that is not connected clears its whole L1 when its subscription
//! comes back (`Delivery::Gap`), since it cannot know what it missed.
//!
//! Trade-offs: the acknowledgement costs one extra `PUBLISH` per instance per
//! invalidation, which is cheap because writes are rare next to reads; an instance
//! that hangs delays an invalidation by at most [`ACK_TIMEOUT`]. A load that read the
//! source of truth just before a concurrent write and stores its value after that
//! write's invalidation can leave the old value cached until the TTL; the TTL bounds
//! that race. Use one `RedisCache` per `RedisPubSub` (per instance), as the
//! acknowledgement count is per subscription connection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::invalidation::{Invalidations, NearCache};
use super::memory::MemoryCache;
use super::{Cache, Counters, Loaded};
use crate::backend_error::BackendError;
use crate::pubsub::redis::RedisPubSub;
use crate::redis_client::{RedisClient, px};

pub use super::invalidation::ACK_TIMEOUT;

/// L1 moka + L2 Redis, invalidated on every instance.
pub struct RedisCache {
    l1: Arc<MemoryCache>,
    client: RedisClient,
    ttl: Duration,
    invalidations: Invalidations,
    l2_counters: Counters,
}

impl RedisCache {
    /// A cache of at most `max_entries` in L1, entries living `ttl` in both levels.
    /// Subscribes to the invalidation channel before returning, so that invalidations
    /// sent from anywhere after that reach this instance, and spawns the listener.
    pub async fn new(
        client: RedisClient,
        pubsub: RedisPubSub,
        max_entries: u64,
        ttl: Duration,
    ) -> Result<RedisCache, BackendError> {
        let l1 = Arc::new(MemoryCache::new(max_entries, ttl));
        let invalidations =
            Invalidations::start(client.clone(), pubsub, "cache", l1.clone()).await?;
        Ok(RedisCache {
            l1,
            client,
            ttl,
            invalidations,
            l2_counters: Counters::new("redis"),
        })
    }
}

#[async_trait]
impl NearCache for MemoryCache {
    async fn forget(&self, key: &str) {
        self.remove(key).await;
    }

    fn forget_all(&self) {
        self.clear();
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get_or_load(&self, key: &str, load: BoxFuture<'static, Loaded>) -> Loaded {
        let client = self.client.clone();
        let l2_key = self.client.key(&["cache", key]);
        let ttl = self.ttl;
        let counters = self.l2_counters.clone();
        let l2 = async move {
            match client
                .query::<Option<Vec<u8>>>(redis::cmd("GET").arg(&l2_key))
                .await
            {
                Ok(Some(hit)) => {
                    counters.record(true);
                    return Ok(Some(Bytes::from(hit)));
                }
                Ok(None) => counters.record(false),
                Err(e) => {
                    tracing::warn!(error = %e, "cache: redis unavailable, loading directly");
                    return load.await;
                }
            }
            let loaded = load.await?;
            if let Some(value) = &loaded {
                let set = redis::cmd("SET")
                    .arg(&l2_key)
                    .arg(value.as_ref())
                    .arg("PX")
                    .arg(px(ttl))
                    .clone();
                if let Err(e) = client.query::<()>(&set).await {
                    // The value is right; only other instances miss the shortcut.
                    tracing::warn!(error = %e, "cache: could not fill redis");
                }
            }
            Ok(loaded)
        }
        .boxed();
        // While the subscription is down (or back but its gap not handled), changes
        // made on other instances cannot be heard: no near copy is read or kept, so a
        // profile changed elsewhere during a Redis outage is seen at once.
        if !self.invalidations.in_sync() {
            return l2.await;
        }
        self.l1.get_or_load_here(key, l2).await
    }

    async fn invalidate(&self, key: &str) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.client.key(&["cache", key]))
            .ignore();
        let result = self.invalidations.broadcast(pipe, key).await;
        self.l1.remove(key).await;
        result
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.client.ping().await?;
        self.invalidations.check().await
    }
}
