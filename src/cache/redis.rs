//! Two-level cache for distributed mode: the in-process moka cache
//! ([`MemoryCache`], L1) in front of Redis (L2, `{prefix}:cache:{key}`), with
//! invalidations broadcast to every instance.
//!
//! Read path: L1 hit → no round trip. L1 miss → `GET` in Redis; on an L2 miss the
//! loader runs and its value is written with `SET … PX ttl`. L2 lookup and loader both
//! run inside moka's `try_get_with`, so concurrent misses for one key on one instance
//! cost one `GET` and one load. If Redis is unreachable, the loader runs directly
//! (the source of truth still answers) and its value is kept in L1 only; the
//! subscription's `Gap` on reconnect then clears L1.
//!
//! Invalidation: `DEL` in Redis and `PUBLISH` on `{prefix}:cache:invalidate` in one
//! pipeline; a listener task on every instance removes the key from its L1 and
//! acknowledges on the sender's `{prefix}:cache:ack:{id}` channel. `invalidate` returns
//! once as many acknowledgements arrived as Redis counted receivers of the `PUBLISH`
//! (at most [`ACK_TIMEOUT`]), so "after `invalidate` returns, no instance serves the
//! old value" holds for every instance that is connected. One that is not connected
//! clears its whole L1 when its subscription comes back (`Delivery::Gap`), since it
//! cannot know what it missed.
//!
//! Trade-offs: the acknowledgement costs one extra `PUBLISH` per instance per
//! invalidation, which is cheap because writes are rare next to reads; an instance
//! that hangs delays an invalidation by at most [`ACK_TIMEOUT`]. A load that read the
//! source of truth just before a concurrent write and stores its value after that
//! write's invalidation can leave the old value cached until the TTL; the TTL bounds
//! that race. Use one `RedisCache` per `RedisPubSub` (per instance), as the
//! acknowledgement count is per subscription connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::memory::MemoryCache;
use super::{Cache, Loaded, record};
use crate::backend_error::BackendError;
use crate::pubsub::redis::RedisPubSub;
use crate::pubsub::{Delivery, PubSub, Subscription};
use crate::redis_client::RedisClient;
use crate::session::redis::px;

/// The longest `invalidate` waits for the other instances to drop their L1 entry.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

const INVALIDATE_CHANNEL: &str = "cache:invalidate";

/// Acknowledgements counted per outstanding invalidation (by sequence number).
type Pending = Arc<Mutex<HashMap<u64, watch::Sender<u64>>>>;

/// L1 moka + L2 Redis, invalidated on every instance.
pub struct RedisCache {
    l1: Arc<MemoryCache>,
    client: RedisClient,
    pubsub: RedisPubSub,
    ttl: Duration,
    /// This cache's id: acknowledgements for its invalidations come on `cache:ack:{id}`.
    id: String,
    seq: AtomicU64,
    pending: Pending,
    /// Stops the listener task when the cache is dropped.
    _stop: DropGuard,
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
        let id = uuid::Uuid::now_v7().simple().to_string();
        let ack_channel = format!("cache:ack:{id}");
        let invalidations = pubsub.subscribe(INVALIDATE_CHANNEL).await?;
        let acks = pubsub.subscribe(&ack_channel).await?;
        let pending: Pending = Arc::default();
        let stop = CancellationToken::new();
        let listener = Listener {
            l1: l1.clone(),
            pubsub: pubsub.clone(),
            pending: pending.clone(),
            ack_channel,
            stop: stop.clone(),
        };
        tokio::spawn(listener.run(invalidations, acks));
        Ok(RedisCache {
            l1,
            client,
            pubsub,
            ttl,
            id,
            seq: AtomicU64::new(0),
            pending,
            _stop: stop.drop_guard(),
        })
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get_or_load(&self, key: &str, load: BoxFuture<'static, Loaded>) -> Loaded {
        let client = self.client.clone();
        let l2_key = self.client.key(&["cache", key]);
        let ttl = self.ttl;
        let l2 = async move {
            match client
                .query::<Option<Vec<u8>>>(redis::cmd("GET").arg(&l2_key))
                .await
            {
                Ok(Some(hit)) => {
                    record("redis", true);
                    return Ok(Some(Bytes::from(hit)));
                }
                Ok(None) => record("redis", false),
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
        self.l1.get_or_load_as("memory", key, l2).await
    }

    async fn invalidate(&self, key: &str) -> Result<(), BackendError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, mut acks) = watch::channel(0u64);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, tx);
        let payload = format!("{} {seq} {key}", self.id);
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.client.key(&["cache", key]))
            .ignore()
            .cmd("PUBLISH")
            .arg(self.pubsub.channel_key(INVALIDATE_CHANNEL))
            .arg(payload);
        let published = self.client.query_pipe::<(u64,)>(&pipe).await;
        self.l1.remove(key).await;
        let waited = match published {
            Ok((receivers,)) => {
                tokio::time::timeout(ACK_TIMEOUT, acks.wait_for(|n| *n >= receivers))
                    .await
                    .map(|_| ())
                    .map_err(|_| receivers)
            }
            Err(e) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&seq);
                return Err(e);
            }
        };
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seq);
        if let Err(receivers) = waited {
            tracing::warn!(
                key,
                receivers,
                "cache: not every instance acknowledged an invalidation in time"
            );
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.client.ping().await?;
        self.pubsub.check().await
    }
}

/// The background task of one cache: applies invalidations, counts acknowledgements.
struct Listener {
    l1: Arc<MemoryCache>,
    pubsub: RedisPubSub,
    pending: Pending,
    ack_channel: String,
    stop: CancellationToken,
}

impl Listener {
    async fn run(self, mut invalidations: Subscription, mut acks: Subscription) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                item = invalidations.next() => match item {
                    Some(Delivery::Message(payload)) => self.invalidated(&payload).await,
                    // Invalidations may have been missed: nothing in L1 can be trusted.
                    Some(Delivery::Gap) => self.l1.clear(),
                    None => {
                        let Some(s) = self.resubscribe(INVALIDATE_CHANNEL).await else { return };
                        invalidations = s;
                        self.l1.clear();
                    }
                },
                item = acks.next() => match item {
                    Some(Delivery::Message(payload)) => self.acknowledged(&payload),
                    // A lost ack only makes an `invalidate` wait its timeout.
                    Some(Delivery::Gap) => {}
                    None => {
                        let channel = self.ack_channel.clone();
                        let Some(s) = self.resubscribe(&channel).await else { return };
                        acks = s;
                    }
                },
            }
        }
    }

    /// `{sender} {seq} {key}`: drop `key` here, then tell the sender.
    async fn invalidated(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            tracing::warn!("cache: unreadable invalidation");
            return;
        };
        let mut parts = text.splitn(3, ' ');
        let (Some(sender), Some(seq), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!("cache: malformed invalidation");
            return;
        };
        self.l1.remove(key).await;
        let channel = format!("cache:ack:{sender}");
        if let Err(e) = self
            .pubsub
            .publish(&channel, Bytes::from(seq.to_owned()))
            .await
        {
            tracing::warn!(error = %e, "cache: could not acknowledge an invalidation");
        }
    }

    fn acknowledged(&self, payload: &[u8]) {
        let Some(seq) = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        if let Some(tx) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&seq)
        {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Subscribes again after the pub/sub task stopped, with backoff; `None` once the
    /// cache is dropped.
    async fn resubscribe(&self, channel: &str) -> Option<Subscription> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.pubsub.subscribe(channel).await {
                Ok(s) => return Some(s),
                Err(e) => tracing::warn!(error = %e, "cache: resubscribing failed"),
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}
