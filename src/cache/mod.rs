//! Look-up cache (users today): bytes under a key, loaded once on a miss.
//!
//! [`memory::MemoryCache`] is one moka cache; it serves a single instance only, since
//! nothing tells it about writes made elsewhere. [`redis::RedisCache`] keeps the same
//! moka cache as a first level, Redis as a shared second level, and broadcasts
//! invalidations so that no instance serves a stale entry after a change.

pub(crate) mod invalidation;
pub mod memory;
pub mod redis;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::backend_error::BackendError;

/// What a loader returns: the value from the source of truth, or `None` when there is
/// none (which is not cached).
pub type Loaded = Result<Option<Bytes>, BackendError>;

/// Contract:
/// - `get_or_load` returns the cached value, or runs `load` and caches what it returns
///   (`None` is not cached). Concurrent calls for one key on one instance run `load`
///   once and all get its result.
/// - after `invalidate(key)` returns, no instance returns the old value for `key`.
/// - entries expire after the configured TTL.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, loading it with `load` on a miss.
    async fn get_or_load(&self, key: &str, load: BoxFuture<'static, Loaded>) -> Loaded;
    /// Drops `key` on every instance.
    async fn invalidate(&self, key: &str) -> Result<(), BackendError>;
    /// Readiness of the shared level, if any.
    async fn check(&self) -> Result<(), BackendError>;
}

/// Hit and miss counters of one cache layer in `/metrics`
/// (`shoal_cache_requests_total{layer, result}`), registered once: building the labelled
/// key on every call showed up at ~2% of a cached request's CPU. Made after the
/// metrics recorder is installed (`App::build` installs it first).
#[derive(Clone)]
pub(crate) struct Counters {
    hit: metrics::Counter,
    miss: metrics::Counter,
}

impl Counters {
    pub(crate) fn new(layer: &'static str) -> Self {
        Self {
            hit: metrics::counter!("shoal_cache_requests_total", "layer" => layer, "result" => "hit"),
            miss: metrics::counter!("shoal_cache_requests_total", "layer" => layer, "result" => "miss"),
        }
    }

    pub(crate) fn record(&self, hit: bool) {
        if hit {
            self.hit.increment(1);
        } else {
            self.miss.increment(1);
        }
    }
}
