//! Denials remembered in-process, in front of the shared limiter: a key refused until
//! some instant is refused again until then without a round trip to Redis. GCRA
//! refuses a key until its theoretical arrival time, which other instances' requests
//! can only push later, never earlier, so the remembered answer is the one Redis
//! would give. It makes a flood of refused requests (handshakes or wrong passwords
//! from one address, measured in BENCHMARKS.md "Abuse") cost a map look-up each
//! instead of a script call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Decision, Quota, RateLimiter};
use crate::backend_error::BackendError;

/// Keys remembered at most: a bound on memory whatever the number of attackers.
const REMEMBERED: u64 = 100_000;

/// The shared limiter with this instance's memory of whom it refused.
pub struct RememberDenials {
    inner: Arc<dyn RateLimiter>,
    denied: moka::sync::Cache<String, (Quota, Instant)>,
}

impl RememberDenials {
    /// `inner`, asked only when the key is not known to be refused right now.
    pub fn new(inner: Arc<dyn RateLimiter>) -> Self {
        Self {
            inner,
            denied: moka::sync::Cache::builder()
                .max_capacity(REMEMBERED)
                // Longer than any retry time of a per-minute budget; an entry past its
                // instant is ignored anyway.
                .time_to_live(Duration::from_secs(120))
                .build(),
        }
    }
}

#[async_trait]
impl RateLimiter for RememberDenials {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, BackendError> {
        if let Some((q, until)) = self.denied.get(key)
            && q == quota
        {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Ok(Decision {
                    allowed: false,
                    limit: quota.limit,
                    remaining: 0,
                    reset_after: quota.period,
                    retry_after: Some(left),
                });
            }
        }
        let decision = self.inner.check(key, quota).await?;
        if let (false, Some(retry)) = (decision.allowed, decision.retry_after) {
            self.denied
                .insert(key.to_owned(), (quota, Instant::now() + retry));
        }
        Ok(decision)
    }

    async fn check_ready(&self) -> Result<(), BackendError> {
        self.inner.check_ready().await
    }
}
