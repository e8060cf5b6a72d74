//! `RateLimiter` contract: in-process (governor), Redis (Lua GCRA), and Redis with
//! the in-process limiter behind it for outages.

use std::sync::Arc;
use std::time::Duration;

use shoal::rate_limit::denials::RememberDenials;
use shoal::rate_limit::fallback::FallbackRateLimiter;
use shoal::rate_limit::memory::MemoryRateLimiter;
use shoal::rate_limit::redis::RedisRateLimiter;
use shoal::rate_limit::{Quota, RateLimiter};

use crate::support::{Guard, Memory, OwnRedis, Pair, RedisKind, redis_clients};

/// Redis first, each instance's own limiter when Redis does not answer.
pub(crate) struct Fallback;

impl Fixture for Fallback {
    async fn pair() -> Option<Pair<dyn RateLimiter>> {
        let (a, b, guard) = redis_clients().await?;
        let wrap = |client| -> Arc<dyn RateLimiter> {
            Arc::new(FallbackRateLimiter::new(
                Arc::new(RedisRateLimiter::new(client)),
                Arc::new(MemoryRateLimiter::new()),
            ))
        };
        Some(Pair {
            a: wrap(a),
            b: wrap(b),
            _guard: guard,
        })
    }
}

/// The shared limiter behind each instance's memory of the keys it refused.
pub(crate) struct Remembered;

impl Fixture for Remembered {
    async fn pair() -> Option<Pair<dyn RateLimiter>> {
        let (a, b, guard) = redis_clients().await?;
        let wrap = |client| -> Arc<dyn RateLimiter> {
            Arc::new(RememberDenials::new(Arc::new(RedisRateLimiter::new(
                client,
            ))))
        };
        Some(Pair {
            a: wrap(a),
            b: wrap(b),
            _guard: guard,
        })
    }
}

trait Fixture {
    async fn pair() -> Option<Pair<dyn RateLimiter>>;
}

impl Fixture for Memory {
    async fn pair() -> Option<Pair<dyn RateLimiter>> {
        let one: Arc<dyn RateLimiter> = Arc::new(MemoryRateLimiter::new());
        Some(Pair {
            a: one.clone(),
            b: one,
            _guard: Guard::default(),
        })
    }
}

impl<R: RedisKind> Fixture for R {
    async fn pair() -> Option<Pair<dyn RateLimiter>> {
        let (a, b, guard) = R::clients().await?;
        Some(Pair {
            a: Arc::new(RedisRateLimiter::new(a)),
            b: Arc::new(RedisRateLimiter::new(b)),
            _guard: guard,
        })
    }
}

contract_suite!(
    backends: [memory => crate::support::Memory, redis => crate::support::Redis, redis_cluster => crate::support::RedisCluster, fallback => crate::rate_limit::Fallback, remembered => crate::rate_limit::Remembered],
    cases: [
        burst_of_limit_then_denied,
        one_more_after_retry_after_and_denials_spend_nothing,
        keys_are_independent,
        budget_is_shared_by_instances,
        check_ready_is_ok,
    ]
);

fn quota(limit: u32, period_ms: u64) -> Quota {
    Quota {
        limit,
        period: Duration::from_millis(period_ms),
    }
}

async fn burst_of_limit_then_denied<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let q = Quota::per_minute(5);
    for expected_remaining in (0..5).rev() {
        let d = p.a.check("k", q).await.expect("check");
        assert!(d.allowed, "call within the burst must pass: {d:?}");
        assert_eq!(d.limit, 5);
        assert_eq!(d.remaining, expected_remaining, "{d:?}");
        assert!(d.retry_after.is_none());
        assert!(
            d.reset_after > Duration::ZERO && d.reset_after <= q.period,
            "{d:?}"
        );
    }
    let d = p.a.check("k", q).await.expect("check");
    assert!(!d.allowed, "call past the burst must be denied: {d:?}");
    assert_eq!(d.remaining, 0);
    let retry = d.retry_after.expect("denied calls say when to retry");
    assert!(retry > Duration::ZERO && retry <= q.period, "{d:?}");
}

async fn one_more_after_retry_after_and_denials_spend_nothing<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    // 3 per 600 ms: one request refills every 200 ms.
    let q = quota(3, 600);
    for _ in 0..3 {
        assert!(p.a.check("k", q).await.expect("check").allowed);
    }
    // Several denials in a row; if they spent budget, the wait below would not do.
    let mut last = None;
    for _ in 0..5 {
        let d = p.a.check("k", q).await.expect("check");
        assert!(!d.allowed, "{d:?}");
        last = d.retry_after;
    }
    let retry = last.expect("retry_after");
    assert!(retry <= q.period);
    tokio::time::sleep(retry + Duration::from_millis(20)).await;
    let d = p.b.check("k", q).await.expect("check after retry_after");
    assert!(
        d.allowed,
        "one more call is allowed after retry_after: {d:?}"
    );
    assert!(
        !p.a.check("k", q).await.expect("check").allowed,
        "only one refilled"
    );
}

async fn keys_are_independent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let q = Quota::per_minute(2);
    for _ in 0..2 {
        assert!(p.a.check("k1", q).await.expect("check k1").allowed);
    }
    assert!(!p.a.check("k1", q).await.expect("check k1").allowed);
    let d = p.a.check("k2", q).await.expect("check k2");
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
}

async fn budget_is_shared_by_instances<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let q = Quota::per_minute(4);
    assert_eq!(p.a.check("k", q).await.expect("a1").remaining, 3);
    assert_eq!(p.b.check("k", q).await.expect("b1").remaining, 2);
    assert_eq!(p.a.check("k", q).await.expect("a2").remaining, 1);
    assert_eq!(p.b.check("k", q).await.expect("b2").remaining, 0);
    assert!(!p.a.check("k", q).await.expect("a3").allowed);
    assert!(!p.b.check("k", q).await.expect("b3").allowed);
}

async fn check_ready_is_ok<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.check_ready().await.expect("ready");
}

/// Redis only: a decision is one round trip.
#[tokio::test]
async fn redis_decision_is_one_round_trip() {
    let Some((client, _, _guard)) = redis_clients().await else {
        return;
    };
    let limiter = RedisRateLimiter::new(client.clone());
    limiter
        .check("warm", Quota::per_minute(3))
        .await
        .expect("warm up the script");
    let before = client.round_trips();
    limiter
        .check("k", Quota::per_minute(3))
        .await
        .expect("check");
    assert_eq!(client.round_trips() - before, 1);
}

/// Redis down: the budget is still enforced, by each instance on its own, and shared
/// again once Redis answers.
#[tokio::test]
async fn with_redis_down_each_instance_still_limits() {
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    let target = shoal::config::RedisTarget::Url(redis.url().into());
    let client = shoal::redis_client::RedisClient::connect(&target, "fallback-test", None)
        .await
        .expect("connect");
    let limiter = FallbackRateLimiter::new(
        Arc::new(RedisRateLimiter::new(client)),
        Arc::new(MemoryRateLimiter::new()),
    );
    let q = quota(3, 60_000);
    redis.kill();
    for n in 0..3 {
        let d = limiter
            .check("k", q)
            .await
            .expect("a decision without Redis");
        assert!(d.allowed, "request {n} of the budget");
    }
    let d = limiter
        .check("k", q)
        .await
        .expect("a decision without Redis");
    assert!(!d.allowed, "past the budget without Redis");
    assert!(d.retry_after.is_some());
}
