//! The `jobs` scenario: no-op jobs through Shoal's durable queue, measured in this
//! process (the queue lives in the database, so the workers run here, on the
//! database that `DATABASE_URL` names; SQLite under `DATA_DIR` by default).
//!
//! It reports the enqueue rate, the completion rate (first enqueue to last
//! completion, enqueuing concurrently) and enqueue-to-start latency, with a backlog
//! and on an idle queue, as one JSON line.

use clap::Args;
use serde_json::json;

/// Arguments of `shoal-bench jobs`.
#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    /// No-op jobs in the throughput phase.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    count: u32,
    /// Jobs per enqueue transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Single jobs on an idle queue, for enqueue-to-start latency.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    idle: u32,
    /// Milliseconds between the idle jobs (lets idle workers back their polling off,
    /// `QUEUE_IDLE_POLL_MAX`, so the start delay shows the wake-up's).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    idle_gap_ms: u64,
}

/// Runs the scenario with Shoal's configuration from the environment
/// (`DATABASE_URL`, `QUEUE_CONCURRENCY`, …).
pub(crate) async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let config = shoal::config::Config::from_env()?;
    let (database, concurrency) = (config.database_kind, config.queue_concurrency);
    let r = shoal::jobs::admin::run_bench(
        config,
        args.count as usize,
        args.batch as usize,
        args.idle as usize,
        std::time::Duration::from_millis(args.idle_gap_ms),
    )
    .await?;
    println!(
        "{}",
        json!({
            "scenario": "jobs",
            "database": database,
            "concurrency": concurrency,
            "count": r.count,
            "batch": args.batch,
            "enqueue_per_s": r.enqueue_per_sec.round(),
            "completed_per_s": r.complete_per_sec.round(),
            "loaded_start_p50_ms": r.loaded_start_ms.0,
            "loaded_start_p99_ms": r.loaded_start_ms.1,
            "idle_start_p50_ms": r.idle_start_ms.0,
            "idle_start_p99_ms": r.idle_start_ms.1,
        })
    );
    Ok(())
}
