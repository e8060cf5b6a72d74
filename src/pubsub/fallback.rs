//! The shared broker with this process behind it: while Redis takes a publish, every
//! instance's subscribers get it ([`super::redis::RedisPubSub`]); when it does not
//! (Redis down), this instance's own subscribers still do ([`super::memory::MemoryPubSub`]),
//! so the clients connected to the instance where something happened see it live
//! during an outage.
//!
//! The other instances miss what was published meanwhile; their subscription yields
//! a [`super::Delivery::Gap`] when it comes back, and the realtime fan-out repairs its rooms
//! from the database (src/realtime/fanout.rs), which is also what drops a message a
//! subscriber here got twice (once from the fallback, once from a Redis publish that
//! timed out but went through): a room's cursor never goes back.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::memory::MemoryPubSub;
use super::{Feed, FeedChannels, PubSub, Subscription};
use crate::backend_error::BackendError;

/// A shared broker, and this process's own for when it fails.
pub struct FallbackPubSub {
    shared: Arc<dyn PubSub>,
    local: MemoryPubSub,
}

impl FallbackPubSub {
    /// `shared` first, this process's subscribers when it fails.
    pub fn new(shared: Arc<dyn PubSub>) -> Self {
        Self {
            shared,
            local: MemoryPubSub::new(),
        }
    }
}

#[async_trait]
impl PubSub for FallbackPubSub {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError> {
        match self.shared.publish(channel, payload.clone()).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Still an error for the caller (it is counted and logged there): the
                // other instances did not get it.
                self.local.publish(channel, payload).await?;
                Err(e)
            }
        }
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        let local = self.local.subscribe(channel).await?;
        let shared = self.shared.subscribe(channel).await?;
        // A lag of the in-process channel arrives as a gap like the broker's own.
        Ok(futures::stream::select(shared, local).boxed())
    }

    async fn feed(&self) -> Result<Feed, BackendError> {
        let local = self.local.feed().await?;
        let shared = self.shared.feed().await?;
        Ok(Feed {
            stream: futures::stream::select(shared.stream, local.stream).boxed(),
            channels: Box::new(FallbackFeed {
                shared: shared.channels,
                local: local.channels,
            }),
        })
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.shared.check().await
    }
}

/// A feed on both brokers: this process's own always takes the channel, so that what
/// this instance publishes during an outage still reaches its sockets.
struct FallbackFeed {
    shared: Box<dyn FeedChannels>,
    local: Box<dyn FeedChannels>,
}

#[async_trait]
impl FeedChannels for FallbackFeed {
    async fn add(&self, channel: &str) -> Result<(), BackendError> {
        self.local.add(channel).await?;
        self.shared.add(channel).await
    }

    fn remove(&self, channel: &str) {
        self.shared.remove(channel);
        self.local.remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::Delivery;

    /// A broker that refuses every publish, as Redis does while it is down.
    struct Down;

    #[async_trait]
    impl PubSub for Down {
        async fn publish(&self, _: &str, _: Bytes) -> Result<(), BackendError> {
            Err(BackendError::unavailable("redis", "down"))
        }
        async fn subscribe(&self, _: &str) -> Result<Subscription, BackendError> {
            Ok(futures::stream::pending().boxed())
        }
        async fn feed(&self) -> Result<Feed, BackendError> {
            Ok(Feed {
                stream: futures::stream::pending().boxed(),
                channels: Box::new(DownFeed),
            })
        }
        async fn check(&self) -> Result<(), BackendError> {
            Err(BackendError::unavailable("redis", "down"))
        }
    }

    struct DownFeed;

    #[async_trait]
    impl FeedChannels for DownFeed {
        async fn add(&self, _: &str) -> Result<(), BackendError> {
            Err(BackendError::unavailable("redis", "down"))
        }
        fn remove(&self, _: &str) {}
    }

    #[tokio::test]
    async fn with_the_broker_down_this_process_still_gets_what_it_publishes() {
        let bus = FallbackPubSub::new(Arc::new(Down));
        let mut sub = bus.subscribe("room").await.expect("subscribe");
        let published = bus.publish("room", Bytes::from_static(b"hello")).await;
        assert!(published.is_err(), "the caller learns the others missed it");
        assert_eq!(
            sub.next().await,
            Some(Delivery::Message(Bytes::from_static(b"hello")))
        );
    }

    #[tokio::test]
    async fn with_the_broker_down_a_feed_still_gets_what_this_process_publishes() {
        let bus = FallbackPubSub::new(Arc::new(Down));
        let mut feed = bus.feed().await.expect("feed");
        assert!(
            feed.channels.add("room").await.is_err(),
            "the broker is down"
        );
        let _ = bus.publish("other", Bytes::from_static(b"not here")).await;
        let _ = bus.publish("room", Bytes::from_static(b"hello")).await;
        assert_eq!(
            feed.stream.next().await,
            Some(Delivery::Message(Bytes::from_static(b"hello")))
        );
    }
}
