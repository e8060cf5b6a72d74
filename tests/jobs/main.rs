//! Job queue tests (docs/jobs.md): ONE binary, every case run on SQLite and
//! on PostgreSQL (a database of its own per test; a loud skip when PostgreSQL is
//! not reachable, a failure under `CI=true`).
//!
//! # Layout
//! - [`harness`]: the per-engine database, an in-process app, `shoal` child
//!   processes, bounded polling.
//! - [`queue`]: the queue's contract through the library: transactions,
//!   idempotency, priorities and `run_at`, retries and `dead`, bad jobs, lease
//!   expiry, release on shutdown, cron once per tick.
//! - [`http`]: exports end to end over HTTP, tenant 404s, `job:completed`, admin
//!   stats and `/metrics`.
//! - [`process`]: real processes: a SIGKILLed worker's job finished once by
//!   another; 1,000 jobs over three workers, each run exactly once.

mod harness;
mod http;
mod process;
mod queue;

/// Expands `engines!(name)` into `name::sqlite` and `name::postgres` tests calling
/// `name(Engine)`: one suite, written once, run on both engines.
#[macro_export]
macro_rules! engines {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::harness::Engine::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::harness::Engine::Postgres).await;
                }
            }
        )*
    };
}
