//! `Cache` contract: in-process (moka) and Redis (moka L1 + Redis L2 + broadcast
//! invalidation).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use shoal::backend_error::BackendError;
use shoal::cache::memory::MemoryCache;
use shoal::cache::redis::RedisCache;
use shoal::cache::{Cache, Loaded};
use shoal::pubsub::redis::RedisPubSub;

use crate::support::{Guard, Memory, Pair, RedisKind, eventually, redis_clients};

trait Fixture {
    async fn pair(ttl: Duration) -> Option<Pair<dyn Cache>>;
}

impl Fixture for Memory {
    async fn pair(ttl: Duration) -> Option<Pair<dyn Cache>> {
        let one: Arc<dyn Cache> = Arc::new(MemoryCache::new(1000, ttl));
        Some(Pair {
            a: one.clone(),
            b: one,
            _guard: Guard::default(),
        })
    }
}

impl<R: RedisKind> Fixture for R {
    async fn pair(ttl: Duration) -> Option<Pair<dyn Cache>> {
        let (a, b, guard) = R::clients().await?;
        let pubsub_a = RedisPubSub::connect(&a).await.expect("pubsub A");
        let pubsub_b = RedisPubSub::connect(&b).await.expect("pubsub B");
        Some(Pair {
            a: Arc::new(
                RedisCache::new(a, pubsub_a, 1000, ttl)
                    .await
                    .expect("cache A"),
            ),
            b: Arc::new(
                RedisCache::new(b, pubsub_b, 1000, ttl)
                    .await
                    .expect("cache B"),
            ),
            _guard: guard,
        })
    }
}

const HOUR: Duration = Duration::from_secs(3600);

contract_suite!(
    backends: [memory => crate::support::Memory, redis => crate::support::Redis, redis_cluster => crate::support::RedisCluster],
    cases: [
        miss_loads_and_hit_does_not,
        absent_is_not_cached,
        load_errors_are_returned_not_cached,
        concurrent_misses_load_once,
        invalidate_reaches_every_instance,
        invalidate_is_per_key,
        entries_expire_after_ttl,
        check_is_ok,
    ]
);

/// A source of truth that counts its loads.
#[derive(Clone, Default)]
struct Source {
    loads: Arc<AtomicUsize>,
    value: Arc<std::sync::Mutex<Option<&'static str>>>,
}

impl Source {
    fn with(value: &'static str) -> Self {
        let s = Self::default();
        s.set(Some(value));
        s
    }

    fn set(&self, value: Option<&'static str>) {
        *self.value.lock().expect("source lock") = value;
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    fn loader(&self) -> BoxFuture<'static, Loaded> {
        let this = self.clone();
        async move {
            this.loads.fetch_add(1, Ordering::SeqCst);
            // Long enough for concurrent callers to pile up on the same miss.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let value = *this.value.lock().expect("source lock");
            Ok(value.map(|v| Bytes::from_static(v.as_bytes())))
        }
        .boxed()
    }
}

fn some(v: &'static str) -> Option<Bytes> {
    Some(Bytes::from_static(v.as_bytes()))
}

async fn miss_loads_and_hit_does_not<F: Fixture>() {
    let Some(p) = F::pair(HOUR).await else { return };
    let source = Source::with("v1");
    assert_eq!(
        p.a.get_or_load("k", source.loader()).await.expect("miss"),
        some("v1")
    );
    assert_eq!(
        p.a.get_or_load("k", source.loader()).await.expect("hit"),
        some("v1")
    );
    assert_eq!(
        p.b.get_or_load("k", source.loader())
            .await
            .expect("hit on B"),
        some("v1")
    );
    assert_eq!(source.loads(), 1);
}

async fn absent_is_not_cached<F: Fixture>() {
    let Some(p) = F::pair(HOUR).await else { return };
    let source = Source::default();
    assert_eq!(
        p.a.get_or_load("k", source.loader()).await.expect("absent"),
        None
    );
    source.set(Some("now"));
    assert_eq!(
        p.a.get_or_load("k", source.loader())
            .await
            .expect("present"),
        some("now")
    );
    assert_eq!(source.loads(), 2);
}

async fn load_errors_are_returned_not_cached<F: Fixture>() {
    let Some(p) = F::pair(HOUR).await else { return };
    let failing: BoxFuture<'static, Loaded> =
        async { Err(BackendError::unavailable("database", "down")) }.boxed();
    let err =
        p.a.get_or_load("k", failing)
            .await
            .expect_err("the load error");
    assert_eq!(err.dependency(), "database");
    let source = Source::with("v");
    assert_eq!(
        p.a.get_or_load("k", source.loader()).await.expect("retry"),
        some("v")
    );
}

async fn concurrent_misses_load_once<F: Fixture>() {
    let Some(p) = F::pair(HOUR).await else { return };
    let source = Source::with("v");
    let calls = (0..16).map(|_| {
        let cache = p.a.clone();
        let loader = source.loader();
        tokio::spawn(async move { cache.get_or_load("hot", loader).await })
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.expect("task").expect("get_or_load"), some("v"));
    }
    assert_eq!(
        source.loads(),
        1,
        "concurrent misses on one instance load once"
    );
}

async fn invalidate_reaches_every_instance<F: Fixture>() {
    let Some(p) = F::pair(HOUR).await else { return };
    let source = Source::with("old");
    assert_eq!(
        p.a.get_or_load("k", source.loader()).await.expect("A"),
        some("old")
    );
    assert_eq!(
        p.b.get_or_load("k", source.loader()).await.expect("B"),
        some("old")
    );
    source.set(Some("new"));
    p.a.invalidate("k").await.expect("invalidate on A");
    assert_eq!(
        p.b.get_or_load("k", source.loader())
            .await
            .expect("B after"),
        some("new")
    );
    assert_eq!(
        p.a.get_or_load("k", source.loader())
            .await
            .expect("A after"),
        some("new")
    );
    source.set(Some("newer"));
    p.b.invalidate("k").await.expect("invalidate on B");
    assert_eq!(
        p.a.get_or_load("k", source.loader())
            .await
            .expect("A again"),
        some("newer")
    );
    p.b.invalidate("never-cached")
        .await
        .expect("invalidate an unknown key");
}

async fn invalidate_is_per_key<F: Fixture>() {
    let Some(p) = F::pair(HOUR).await else { return };
    let one = Source::with("1");
    let two = Source::with("2");
    p.a.get_or_load("k1", one.loader()).await.expect("k1");
    p.a.get_or_load("k2", two.loader()).await.expect("k2");
    p.b.invalidate("k1").await.expect("invalidate k1");
    assert_eq!(
        p.a.get_or_load("k2", two.loader()).await.expect("k2 again"),
        some("2")
    );
    assert_eq!(two.loads(), 1);
}

async fn entries_expire_after_ttl<F: Fixture>() {
    let Some(p) = F::pair(Duration::from_millis(300)).await else {
        return;
    };
    let source = Source::with("old");
    p.a.get_or_load("k", source.loader()).await.expect("load");
    source.set(Some("new"));
    let a = p.a.clone();
    let probe = source.clone();
    eventually("the entry to expire", || {
        let a = a.clone();
        let loader = probe.loader();
        async move { a.get_or_load("k", loader).await.expect("get") == some("new") }
    })
    .await;
}

async fn check_is_ok<F: Fixture>() {
    let Some(p) = F::pair(HOUR).await else { return };
    p.a.check().await.expect("check");
}

/// Redis only: an L1 hit costs no round trip, an L1 miss that hits L2 costs one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_round_trips_per_read() {
    let Some((a, b, _guard)) = redis_clients().await else {
        return;
    };
    let cache_a = RedisCache::new(
        a.clone(),
        RedisPubSub::connect(&a).await.expect("ps"),
        100,
        HOUR,
    )
    .await
    .expect("cache A");
    let cache_b = RedisCache::new(
        b.clone(),
        RedisPubSub::connect(&b).await.expect("ps"),
        100,
        HOUR,
    )
    .await
    .expect("cache B");
    let source = Source::with("v");
    cache_a
        .get_or_load("k", source.loader())
        .await
        .expect("fill");
    let before = b.round_trips();
    cache_b
        .get_or_load("k", source.loader())
        .await
        .expect("L2 hit");
    assert_eq!(b.round_trips() - before, 1, "an L2 hit is one GET");
    let before = b.round_trips();
    cache_b
        .get_or_load("k", source.loader())
        .await
        .expect("L1 hit");
    assert_eq!(b.round_trips(), before, "an L1 hit costs nothing");
    assert_eq!(source.loads(), 1);
}
