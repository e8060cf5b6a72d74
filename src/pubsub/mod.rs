//! Fire-and-forget messages between the instances of one deployment: cache
//! invalidations, job wake-ups, and realtime events (one channel per room, read
//! through a [`Feed`]).
//!
//! Delivery is at-most-once: a subscriber that is disconnected or too slow misses
//! messages. It is told so with [`Delivery::Gap`], so that it can resynchronise
//! (the cache clears its first level; realtime resumes from the database).

pub mod fallback;
pub mod memory;
pub mod redis;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::backend_error::BackendError;

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A published payload.
    Message(Bytes),
    /// Messages may have been lost since the previous item (reconnect, lag).
    Gap,
}

/// A live subscription; dropping it unsubscribes.
pub type Subscription = Pin<Box<dyn Stream<Item = Delivery> + Send>>;

/// A subscription to a set of channels that changes while it lives, read as ONE
/// stream (the realtime hub's: one channel per room this instance has sockets in).
/// Dropping `channels` leaves every channel of the feed.
pub struct Feed {
    /// What arrives on any channel of the feed, and its gaps.
    pub stream: Subscription,
    /// Adds and removes channels.
    pub channels: Box<dyn FeedChannels>,
}

/// The channel set of a [`Feed`].
///
/// Contract:
/// - once `add` has returned `Ok`, every message published on that channel reaches
///   the feed's stream, as for [`PubSub::subscribe`]; adding a channel the feed has is
///   a no-op;
/// - when `add` fails (the backend is down), the channel still belongs to the feed:
///   it is subscribed when the backend is back, after the stream's [`Delivery::Gap`];
/// - after `remove`, messages of that channel stop arriving (those already on their
///   way may still come).
#[async_trait]
pub trait FeedChannels: Send + Sync + 'static {
    /// Starts receiving `channel` on the feed.
    async fn add(&self, channel: &str) -> Result<(), BackendError>;
    /// Stops receiving `channel` on the feed.
    fn remove(&self, channel: &str);
}

/// Contract:
/// - a message published on a channel after `subscribe` has returned reaches that
///   subscriber, on this instance and on every other one sharing the backend, in
///   publish order per publisher;
/// - channels are independent;
/// - if the backend drops and comes back, subscriptions resume by themselves and
///   yield a [`Delivery::Gap`] first.
#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    /// Sends `payload` to every current subscriber of `channel`.
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError>;
    /// Starts receiving messages published on `channel`.
    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError>;
    /// A new feed with no channel yet.
    async fn feed(&self) -> Result<Feed, BackendError>;
    /// Readiness: false while the subscription connection is down.
    async fn check(&self) -> Result<(), BackendError>;
}
