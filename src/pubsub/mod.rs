//! Fire-and-forget messages between the instances of one deployment: cache
//! invalidations today, realtime events later.
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
    /// Readiness: false while the subscription connection is down.
    async fn check(&self) -> Result<(), BackendError>;
}
