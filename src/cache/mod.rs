//! Look-up cache (users today): bytes under a key, loaded once on a miss.
//!
//! [`memory::MemoryCache`] is one moka cache; it serves a single instance only, since
//! nothing tells it about writes made elsewhere. [`redis::RedisCache`] keeps the same
//! moka cache as a first level, Redis as a shared second level, and broadcasts
//! invalidations so that no instance serves a stale entry after a change.

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

/// Records a hit or miss in `/metrics` (`shoal_cache_requests_total`).
pub(crate) fn record(layer: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("shoal_cache_requests_total", "layer" => layer, "result" => result)
        .increment(1);
}
