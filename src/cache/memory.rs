//! In-process cache on moka. Serves a single instance: writes on other instances are
//! invisible to it, so distributed mode uses [`super::redis::RedisCache`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use super::{Cache, Counters, Loaded};
use crate::backend_error::BackendError;

/// A moka cache keyed by string.
pub struct MemoryCache {
    entries: moka::future::Cache<String, Bytes>,
    counters: Counters,
}

/// A miss that found nothing is not an error for callers, but moka's coalescing
/// `try_get_with` only skips caching on `Err`, so absence travels as this variant.
#[derive(Debug)]
enum LoadOutcome {
    Absent,
    Failed(BackendError),
}

impl MemoryCache {
    /// A cache of at most `max_entries`, each living `ttl`.
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
            counters: Counters::new("memory"),
        }
    }

    /// See [`Cache::get_or_load`].
    pub(crate) async fn get_or_load_here(
        &self,
        key: &str,
        load: BoxFuture<'static, Loaded>,
    ) -> Loaded {
        // A hit needs none of the coalescing machinery below (an owned key, a flag, a
        // future); it is the common case on the hot path.
        if let Some(hit) = self.entries.get(key).await {
            self.counters.record(true);
            return Ok(Some(hit));
        }
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let result = self
            .entries
            .try_get_with(key.to_owned(), async move {
                flag.store(true, Ordering::Relaxed);
                match load.await {
                    Ok(Some(v)) => Ok(v),
                    Ok(None) => Err(LoadOutcome::Absent),
                    Err(e) => Err(LoadOutcome::Failed(e)),
                }
            })
            .await;
        self.counters.record(!ran.load(Ordering::Relaxed));
        match result {
            Ok(v) => Ok(Some(v)),
            Err(e) => match &*e {
                LoadOutcome::Absent => Ok(None),
                LoadOutcome::Failed(err) => Err(match err.kind() {
                    crate::backend_error::BackendErrorKind::Unavailable => {
                        BackendError::unavailable(err.dependency(), err)
                    }
                    crate::backend_error::BackendErrorKind::Corrupt => {
                        BackendError::corrupt(err.dependency(), err)
                    }
                }),
            },
        }
    }

    /// Drops `key` here only.
    pub(crate) async fn remove(&self, key: &str) {
        self.entries.invalidate(key).await;
    }

    /// Drops everything here (after a missed invalidation broadcast).
    pub(crate) fn clear(&self) {
        self.entries.invalidate_all();
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get_or_load(&self, key: &str, load: BoxFuture<'static, Loaded>) -> Loaded {
        self.get_or_load_here(key, load).await
    }

    async fn invalidate(&self, key: &str) -> Result<(), BackendError> {
        self.remove(key).await;
        Ok(())
    }

    async fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
