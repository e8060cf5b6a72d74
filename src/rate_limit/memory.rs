//! In-process GCRA on governor. Serves a single instance only: every instance would
//! have its own budget, so distributed mode uses [`super::redis::RedisRateLimiter`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

use super::{Decision, Quota, RateLimiter};
use crate::backend_error::BackendError;

type KeyedLimiter = governor::RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One governor keyed limiter per distinct quota (there are three in practice).
pub struct MemoryRateLimiter {
    limiters: Mutex<HashMap<Quota, Arc<KeyedLimiter>>>,
    clock: DefaultClock,
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self {
            limiters: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    fn limiter(&self, quota: Quota) -> Arc<KeyedLimiter> {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(quota)
            .or_insert_with(|| {
                let burst = NonZeroU32::new(quota.limit.max(1)).unwrap_or(NonZeroU32::MIN);
                let q = governor::Quota::with_period(quota.emission_interval())
                    .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MAX))
                    .allow_burst(burst);
                Arc::new(governor::RateLimiter::keyed(q).with_middleware())
            })
            .clone()
    }

    /// Forgets keys whose budget is full again, so memory stays bounded by the active
    /// clients; called periodically by the application.
    pub fn prune(&self) {
        let map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        for limiter in map.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, BackendError> {
        let limiter = self.limiter(quota);
        let t = quota.emission_interval();
        Ok(match limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: quota.limit,
                    remaining,
                    reset_after: t * (quota.limit - remaining.min(quota.limit)),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    limit: quota.limit,
                    remaining: 0,
                    reset_after: wait + t * quota.limit.saturating_sub(1),
                    retry_after: Some(wait.max(std::time::Duration::from_millis(1))),
                }
            }
        })
    }

    async fn check_ready(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
