//! In-process pub/sub on tokio broadcast channels. Serves a single instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{Delivery, Feed, FeedChannels, PubSub, Subscription};
use crate::backend_error::BackendError;

/// Slow subscribers lag (and see a [`Delivery::Gap`]) once this many messages queue up.
const CHANNEL_CAPACITY: usize = 1024;

/// Channels by name; a channel without subscribers is dropped on the next publish.
#[derive(Default)]
pub struct MemoryPubSub {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    channels: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
    feeds: Mutex<Feeds>,
    next_feed: AtomicU64,
}

/// The feeds, and which feeds each channel goes to.
#[derive(Default)]
struct Feeds {
    senders: HashMap<u64, broadcast::Sender<Bytes>>,
    by_channel: HashMap<String, Vec<u64>>,
}

impl MemoryPubSub {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }
}

fn stream_of(rx: broadcast::Receiver<Bytes>) -> Subscription {
    BroadcastStream::new(rx)
        .map(|item| match item {
            Ok(bytes) => Delivery::Message(bytes),
            Err(BroadcastStreamRecvError::Lagged(_)) => Delivery::Gap,
        })
        .boxed()
}

#[async_trait]
impl PubSub for MemoryPubSub {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError> {
        {
            let mut channels = self
                .inner
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = channels.get(channel)
                && tx.send(payload.clone()).is_err()
            {
                channels.remove(channel);
            }
        }
        let feeds = self.inner.feeds.lock().unwrap_or_else(|p| p.into_inner());
        for id in feeds.by_channel.get(channel).into_iter().flatten() {
            if let Some(tx) = feeds.senders.get(id) {
                let _ = tx.send(payload.clone());
            }
        }
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        let rx = {
            let mut channels = self
                .inner
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            channels
                .entry(channel.to_owned())
                .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
                .subscribe()
        };
        Ok(stream_of(rx))
    }

    async fn feed(&self) -> Result<Feed, BackendError> {
        let id = self.inner.next_feed.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = broadcast::channel(CHANNEL_CAPACITY);
        self.inner
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .senders
            .insert(id, tx);
        Ok(Feed {
            stream: stream_of(rx),
            channels: Box::new(MemoryFeed {
                id,
                inner: self.inner.clone(),
            }),
        })
    }

    async fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The channel set of one in-process feed.
struct MemoryFeed {
    id: u64,
    inner: Arc<Inner>,
}

impl MemoryFeed {
    fn feeds(&self) -> std::sync::MutexGuard<'_, Feeds> {
        self.inner.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl FeedChannels for MemoryFeed {
    async fn add(&self, channel: &str) -> Result<(), BackendError> {
        let mut feeds = self.feeds();
        let ids = feeds.by_channel.entry(channel.to_owned()).or_default();
        if !ids.contains(&self.id) {
            ids.push(self.id);
        }
        Ok(())
    }

    fn remove(&self, channel: &str) {
        let mut feeds = self.feeds();
        if let Some(ids) = feeds.by_channel.get_mut(channel) {
            ids.retain(|id| *id != self.id);
            if ids.is_empty() {
                feeds.by_channel.remove(channel);
            }
        }
    }
}

impl Drop for MemoryFeed {
    fn drop(&mut self) {
        let id = self.id;
        let mut feeds = self.feeds();
        feeds.senders.remove(&id);
        feeds.by_channel.retain(|_, ids| {
            ids.retain(|i| *i != id);
            !ids.is_empty()
        });
    }
}
