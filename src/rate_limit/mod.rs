//! Request budgets: GCRA (the generic cell rate algorithm) per key.
//!
//! GCRA keeps one timestamp per key (the "theoretical arrival time") instead of a
//! counter and a window, so a budget refills smoothly and a burst can never exceed
//! the limit at a window boundary. [`memory::MemoryRateLimiter`] uses governor and
//! serves one instance; [`redis::RedisRateLimiter`] runs the same algorithm in one Lua
//! script so that all instances spend one budget; [`fallback::FallbackRateLimiter`]
//! puts the first behind the second for when Redis is down, and
//! [`denials::RememberDenials`] answers a key it just refused without asking again.

pub mod client;
pub mod denials;
pub mod fallback;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::backend_error::BackendError;

/// A budget: `limit` requests per `period`, all of which may come in one burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests allowed per period (and the largest burst).
    pub limit: u32,
    /// The period over which `limit` refills.
    pub period: Duration,
}

impl Quota {
    /// `limit` requests per minute.
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(60),
        }
    }

    /// Time between two requests at the sustained rate.
    pub fn emission_interval(&self) -> Duration {
        self.period / self.limit.max(1)
    }
}

/// The answer for one request, with what the `RateLimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The quota's limit.
    pub limit: u32,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Time until the budget is full again.
    pub reset_after: Duration,
    /// When denied: time until one request is allowed again.
    pub retry_after: Option<Duration>,
}

/// Contract:
/// - with a fresh key, exactly `quota.limit` calls in a burst are allowed, `remaining`
///   counting down to 0, and the next one is denied with `retry_after` in
///   `(0, quota.period]`;
/// - after `retry_after` has passed, one more call is allowed;
/// - keys are independent, and the budget of a key is the same on every instance
///   sharing the backend;
/// - a denied call does not spend budget.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Spends one unit of `key`'s budget under `quota`, if there is one.
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, BackendError>;
    /// Readiness of the backend.
    async fn check_ready(&self) -> Result<(), BackendError>;
}
