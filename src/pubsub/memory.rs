//! In-process pub/sub on tokio broadcast channels. Serves a single instance.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{Delivery, PubSub, Subscription};
use crate::backend_error::BackendError;

/// Slow subscribers lag (and see a [`Delivery::Gap`]) once this many messages queue up.
const CHANNEL_CAPACITY: usize = 1024;

/// Channels by name; a channel without subscribers is dropped on the next publish.
#[derive(Default)]
pub struct MemoryPubSub {
    channels: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
}

impl MemoryPubSub {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PubSub for MemoryPubSub {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = channels.get(channel)
            && tx.send(payload).is_err()
        {
            channels.remove(channel);
        }
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        let rx = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            channels
                .entry(channel.to_owned())
                .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
                .subscribe()
        };
        Ok(BroadcastStream::new(rx)
            .map(|item| match item {
                Ok(bytes) => Delivery::Message(bytes),
                Err(BroadcastStreamRecvError::Lagged(_)) => Delivery::Gap,
            })
            .boxed())
    }

    async fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
