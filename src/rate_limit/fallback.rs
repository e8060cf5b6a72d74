//! The shared budget with an in-process one behind it: while Redis answers, every
//! instance spends one budget per key ([`super::redis::RedisRateLimiter`]); when it
//! does not, each instance keeps limiting on its own ([`super::memory::MemoryRateLimiter`])
//! instead of letting everything through.
//!
//! What a client can get away with during a Redis outage: the same budget once per
//! instance it reaches (a load balancer that spreads one client over N instances gives
//! it up to N times the limit), and a fresh budget on each instance when the outage
//! starts. Abuse stays bounded per instance, which is what protects the instance; the
//! budget is shared again as soon as Redis answers.

use std::sync::Arc;

use async_trait::async_trait;

use super::memory::MemoryRateLimiter;
use super::{Decision, Quota, RateLimiter};
use crate::backend_error::BackendError;

/// A shared limiter, and an in-process one for when it cannot answer.
pub struct FallbackRateLimiter {
    shared: Arc<dyn RateLimiter>,
    local: Arc<MemoryRateLimiter>,
}

impl FallbackRateLimiter {
    /// `shared` first, `local` when `shared` fails.
    pub fn new(shared: Arc<dyn RateLimiter>, local: Arc<MemoryRateLimiter>) -> Self {
        Self { shared, local }
    }
}

#[async_trait]
impl RateLimiter for FallbackRateLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, BackendError> {
        match self.shared.check(key, quota).await {
            Ok(decision) => Ok(decision),
            Err(e) => {
                metrics::counter!("shoal_rate_limiter_fallback_total").increment(1);
                tracing::debug!(error = %e, "shared rate limiter unavailable; limiting in-process");
                self.local.check(key, quota).await
            }
        }
    }

    async fn check_ready(&self) -> Result<(), BackendError> {
        self.shared.check_ready().await
    }
}
