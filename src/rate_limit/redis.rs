//! GCRA in Redis (distributed mode): every instance spends the same budget.
//!
//! Key layout: one string per limited key, `{prefix}:rate:{limit}:{period_ms}:{key}`,
//! holding the key's theoretical arrival time (TAT) in microseconds. The quota is part
//! of the name so that the three quotas in use (user, IP, auth) never share a TAT.
//!
//! Trade-off: the whole decision is ONE Lua script (`EVALSHA`, falling back to loading
//! it on `NOSCRIPT`), because read-modify-write from the client would need `WATCH`
//! and retries under contention, and two round trips per request. Inside the script,
//! time comes from Redis `TIME`, so that instances with skewed clocks still agree on
//! one budget (Redis 7 replicates script effects, not the script, so `TIME` before a
//! write is allowed). The key expires (`PX`) when its budget is full again, so idle
//! clients cost no memory.
//!
//! Semantics match [`super::memory::MemoryRateLimiter`]: allowed → `remaining` is the
//! number of further requests allowed right now and `reset_after` is TAT − now;
//! denied → `remaining` 0, `retry_after` the time until one more request is allowed,
//! and nothing is written, so a denied call spends no budget.

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;

use super::{Decision, Quota, RateLimiter};
use crate::backend_error::BackendError;
use crate::redis_client::RedisClient;

/// KEYS[1] = TAT key; ARGV[1] = emission interval T (µs); ARGV[2] = limit (burst).
/// Returns {allowed (0/1), remaining, reset_after µs, retry_after µs}.
/// Numbers are Lua doubles: microsecond timestamps (~2^51) are exact.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local tau = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tau
if allow_at > now then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
local remaining = math.floor((now + tau - new_tat) / interval)
return {1, remaining, new_tat - now, 0}
";

/// A GCRA limiter whose state lives in Redis.
pub struct RedisRateLimiter {
    client: RedisClient,
    script: redis::Script,
}

impl RedisRateLimiter {
    /// A limiter over `client`.
    pub fn new(client: RedisClient) -> Self {
        Self {
            client,
            script: redis::Script::new(GCRA),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, BackendError> {
        let limit = quota.limit.max(1);
        let interval = u64::try_from(quota.emission_interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        // `{prefix}:rate:{limit}:{period_ms}:{key}`, built in one allocation: this runs
        // on every request.
        let mut name = String::with_capacity(self.client.prefix().len() + key.len() + 32);
        let _ = write!(
            name,
            "{}:rate:{limit}:{}:{key}",
            self.client.prefix(),
            quota.period.as_millis()
        );
        let mut invocation = self.script.prepare_invoke();
        invocation.key(name).arg(interval).arg(limit);
        let (allowed, remaining, reset_us, retry_us): (i64, i64, i64, i64) =
            self.client.run_script(&invocation).await?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            limit: quota.limit,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            reset_after: micros(reset_us),
            retry_after: (allowed != 1).then(|| micros(retry_us).max(Duration::from_micros(1))),
        })
    }

    async fn check_ready(&self) -> Result<(), BackendError> {
        self.client.ping().await
    }
}
