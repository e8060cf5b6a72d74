//! Acknowledged invalidation of per-instance near caches over Redis pub/sub: what
//! the two-level user cache ([`super::redis::RedisCache`]) and the session store's
//! near cache ([`crate::session::redis::RedisSessionStore`]) share.
//!
//! A change runs the caller's pipeline (deleting the shared copy) and a `PUBLISH` of
//! `{sender} {seq} {key}` on the cache's channel in ONE round trip (two on a Redis
//! Cluster, where they live in different slots). The listener task
//! of every instance (this one included) drops `key` from its near cache and
//! acknowledges on the sender's `{name}:ack:{id}` channel; [`Invalidations::broadcast`]
//! returns once as many acknowledgements arrived as Redis counted receivers of the
//! `PUBLISH` (at most [`ACK_TIMEOUT`]), so "after the change returns, no connected
//! instance serves the old value" holds.
//!
//! For callers that must never serve a stale entry (sessions), two more signals:
//! - [`Invalidations::epoch`] moves on every invalidation received and every gap: a
//!   loader reads it before going to Redis and drops what it cached if it moved, so a
//!   load that raced with a change never leaves the old value behind;
//! - [`Invalidations::in_sync`] is false while the subscription is down, and after it
//!   came back until its gap was handled (the near cache cleared): invalidations may
//!   have been missed meanwhile, so the near cache must not be read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::backend_error::BackendError;
use crate::pubsub::redis::RedisPubSub;
use crate::pubsub::{Delivery, PubSub, Subscription};
use crate::redis_client::RedisClient;

/// The longest a change waits for the other instances to drop their near copy.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the listener clears.
#[async_trait]
pub(crate) trait NearCache: Send + Sync + 'static {
    /// Drops `key` here.
    async fn forget(&self, key: &str);
    /// Drops everything here (invalidations may have been missed).
    fn forget_all(&self);
}

/// Acknowledgements counted per outstanding invalidation (by sequence number).
type Pending = Arc<Mutex<HashMap<u64, watch::Sender<u64>>>>;

/// State the listener task and the callers share.
#[derive(Default)]
struct Shared {
    /// Moves on every invalidation received and every gap.
    epoch: AtomicU64,
    /// The pub/sub connection generation whose gap the listener has handled.
    synced: AtomicU64,
}

/// One cache's invalidation channel (see the module doc).
pub(crate) struct Invalidations {
    client: RedisClient,
    pubsub: RedisPubSub,
    /// `{name}:invalidate`, unprefixed.
    channel: String,
    /// This cache's id: acknowledgements for its invalidations come on `{name}:ack:{id}`.
    id: String,
    seq: AtomicU64,
    pending: Pending,
    shared: Arc<Shared>,
    /// Stops the listener task when dropped.
    _stop: DropGuard,
}

impl Invalidations {
    /// Subscribes to `{name}:invalidate` and to this cache's acknowledgement channel
    /// before returning (so every invalidation sent from anywhere after that reaches
    /// `near`), and spawns the listener.
    pub(crate) async fn start(
        client: RedisClient,
        pubsub: RedisPubSub,
        name: &str,
        near: Arc<dyn NearCache>,
    ) -> Result<Self, BackendError> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let channel = format!("{name}:invalidate");
        let ack_channel = format!("{name}:ack:{id}");
        let shared = Arc::new(Shared::default());
        shared.synced.store(pubsub.generation(), Ordering::Release);
        let invalidations = pubsub.subscribe(&channel).await?;
        let acks = pubsub.subscribe(&ack_channel).await?;
        let pending: Pending = Arc::default();
        let stop = CancellationToken::new();
        let listener = Listener {
            near,
            pubsub: pubsub.clone(),
            pending: pending.clone(),
            shared: shared.clone(),
            channel: channel.clone(),
            ack_prefix: format!("{name}:ack"),
            ack_channel,
            stop: stop.clone(),
        };
        tokio::spawn(listener.run(invalidations, acks));
        Ok(Self {
            client,
            pubsub,
            channel,
            id,
            seq: AtomicU64::new(0),
            pending,
            shared,
            _stop: stop.drop_guard(),
        })
    }

    /// Runs `pipe` (the caller's change to the shared copy; its commands must be
    /// `.ignore()`d) and the `PUBLISH` of `key` in one round trip, then waits (at most
    /// [`ACK_TIMEOUT`]) until every instance that received it dropped its near copy.
    pub(crate) async fn broadcast(
        &self,
        mut pipe: redis::Pipeline,
        key: &str,
    ) -> Result<(), BackendError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, mut acks) = watch::channel(0u64);
        self.pending().insert(seq, tx);
        let publish = self
            .pubsub
            .publish_command(&self.channel, format!("{} {seq} {key}", self.id).as_bytes());
        let published = if self.client.is_cluster() {
            // The change and the channel live in different slots, so on a cluster they
            // are two round trips, the change first.
            match self.client.query_pipe::<()>(&pipe).await {
                Ok(()) => self.client.query::<u64>(&publish).await.map(|n| (n,)),
                Err(e) => Err(e),
            }
        } else {
            pipe.add_command(publish);
            self.client.query_pipe::<(u64,)>(&pipe).await
        };
        let waited = match published {
            Ok((receivers,)) => {
                tokio::time::timeout(ACK_TIMEOUT, acks.wait_for(|n| *n >= receivers))
                    .await
                    .map(|_| ())
                    .map_err(|_| receivers)
            }
            Err(e) => {
                self.pending().remove(&seq);
                return Err(e);
            }
        };
        self.pending().remove(&seq);
        if let Err(receivers) = waited {
            tracing::warn!(
                key,
                receivers,
                channel = %self.channel,
                "not every instance acknowledged an invalidation in time"
            );
        }
        Ok(())
    }

    /// See the module doc: read before a load, compare after caching its result.
    pub(crate) fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::Acquire)
    }

    /// See the module doc: whether the near cache may be read right now.
    pub(crate) fn in_sync(&self) -> bool {
        self.pubsub.is_up()
            && self.shared.synced.load(Ordering::Acquire) == self.pubsub.generation()
    }

    /// The subscription's connection generation: it moves each time the subscription
    /// is re-established (after Redis was down or restarted).
    pub(crate) fn generation(&self) -> u64 {
        self.pubsub.generation()
    }

    /// Readiness of the subscription that carries the invalidations.
    pub(crate) async fn check(&self) -> Result<(), BackendError> {
        self.pubsub.check().await
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<u64>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The background task of one cache: applies invalidations, counts acknowledgements.
struct Listener {
    near: Arc<dyn NearCache>,
    pubsub: RedisPubSub,
    pending: Pending,
    shared: Arc<Shared>,
    channel: String,
    ack_prefix: String,
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
                    // Invalidations may have been missed: nothing near can be trusted.
                    Some(Delivery::Gap) => self.gap(),
                    None => {
                        let channel = self.channel.clone();
                        let Some(s) = self.resubscribe(&channel).await else { return };
                        invalidations = s;
                        self.gap();
                    }
                },
                item = acks.next() => match item {
                    Some(Delivery::Message(payload)) => self.acknowledged(&payload),
                    // A lost ack only makes a change wait its timeout.
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

    fn gap(&self) {
        self.near.forget_all();
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        self.shared
            .synced
            .store(self.pubsub.generation(), Ordering::Release);
    }

    /// `{sender} {seq} {key}`: drop `key` here, then tell the sender.
    async fn invalidated(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            tracing::warn!("near cache: unreadable invalidation");
            return;
        };
        let mut parts = text.splitn(3, ' ');
        let (Some(sender), Some(seq), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!("near cache: malformed invalidation");
            return;
        };
        // Epoch first, then the removal: a loader that cached after our removal sees
        // the new epoch and drops its entry itself.
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        self.near.forget(key).await;
        let channel = format!("{}:{sender}", self.ack_prefix);
        if let Err(e) = self
            .pubsub
            .publish(&channel, Bytes::from(seq.to_owned()))
            .await
        {
            tracing::warn!(error = %e, "near cache: could not acknowledge an invalidation");
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
                Err(e) => tracing::warn!(error = %e, "near cache: resubscribing failed"),
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}
