//! Contract tests: ONE suite per capability trait, written once as generic async
//! functions and run against every implementation (docs/contributing.md).
//!
//! Each case takes a fixture type that builds two "instances" of a backend sharing
//! one state: for the in-process backends both are the same object (they serve a
//! single instance by design); for SQL, two pools on one temporary SQLite file; for
//! Redis, two independent clients on one random key prefix, so that every
//! "on every instance" sentence of a contract is exercised across real connections.
//!
//! Redis is found through `SHOAL_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`).
//! When it is unreachable the Redis cases say so loudly and pass as skipped, except
//! under `CI=true`, where they fail ([`support::redis_target`]).

/// Expands the cases of one suite into a `#[tokio::test]` per case per backend:
/// `contract_suite!(backends: [memory => Memory, redis => Redis], cases: [a, b]);`
/// gives `memory::a`, `memory::b`, `redis::a`, `redis::b`, each calling the generic
/// `a::<Memory>()` etc. of the enclosing module.
macro_rules! contract_suite {
    (backends: [$($module:ident => $fixture:ty),+ $(,)?], cases: $cases:tt) => {
        $(
            mod $module {
                contract_suite!(@cases $fixture, $cases);
            }
        )+
    };
    (@cases $fixture:ty, [$($case:ident),+ $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case::<$fixture>().await;
            }
        )+
    };
}

mod support;

mod analytics;
mod cache;
mod presence;
mod pubsub;
mod rate_limit;
mod registry;
mod session;
