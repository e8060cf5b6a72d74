//! The `jobs` scenario: no-op jobs through Shoal's durable queue, measured in this
//! process (the queue lives in the database, so the workers run here, on the
//! database that `DATABASE_URL` names; SQLite under `DATA_DIR` by default).
//!
//! It reports the enqueue rate, the completion rate (first enqueue to last
//! completion, enqueuing concurrently) and enqueue-to-start latency, with a backlog
//! and on an idle queue, as one JSON line.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use shoal::config::Config;
use shoal::db::Db;
use shoal::jobs::{self, Enqueue};
use uuid::Uuid;

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
    let (database, concurrency) = (config.database.kind, config.queue.concurrency);
    let r = run_bench(
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

/// Figures of one run.
#[derive(Debug, Clone)]
struct BenchReport {
    /// Jobs in the throughput phase.
    count: usize,
    /// Jobs enqueued per second (batches of `batch` per transaction).
    enqueue_per_sec: f64,
    /// Jobs completed per second, from the first enqueue to the last completion.
    complete_per_sec: f64,
    /// Enqueue-to-start under the backlog of the throughput phase, p50 and p99.
    loaded_start_ms: (f64, f64),
    /// Enqueue-to-start of single jobs on an idle queue, p50 and p99.
    idle_start_ms: (f64, f64),
}

/// Runs the benchmark against workers already running on the same database:
/// enqueues `count` no-op jobs and waits for them all, then `idle` single jobs one
/// after the other, `idle_gap` apart (time for idle workers to back their polling
/// off, so that the start delay is the wake-up's).
async fn bench(
    db: &Db,
    config: &Config,
    wake: impl Fn() -> futures::future::BoxFuture<'static, ()>,
    count: usize,
    batch: usize,
    idle: usize,
    idle_gap: std::time::Duration,
) -> anyhow::Result<BenchReport> {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let mut tx = db.begin().await?;
        for _ in 0..batch.min(count - ids.len()) {
            let job =
                jobs::enqueue_raw(&mut tx, config, "noop", "{}".into(), Enqueue::default()).await?;
            ids.push(job.id);
        }
        tx.commit().await?;
        wake().await;
    }
    let enqueued = started.elapsed();
    wait_all(db, &ids).await?;
    let completed = started.elapsed();
    let loaded = start_delays(db, &ids).await?;

    let mut idle_ids = Vec::with_capacity(idle);
    for _ in 0..idle {
        tokio::time::sleep(idle_gap).await;
        let mut tx = db.begin().await?;
        let job =
            jobs::enqueue_raw(&mut tx, config, "noop", "{}".into(), Enqueue::default()).await?;
        tx.commit().await?;
        wake().await;
        wait_all(db, &[job.id]).await?;
        idle_ids.push(job.id);
    }
    let idle_delays = start_delays(db, &idle_ids).await?;
    Ok(BenchReport {
        count,
        enqueue_per_sec: count as f64 / enqueued.as_secs_f64(),
        complete_per_sec: count as f64 / completed.as_secs_f64(),
        loaded_start_ms: percentiles(loaded),
        idle_start_ms: percentiles(idle_delays),
    })
}

async fn wait_all(db: &Db, ids: &[Uuid]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let last = ids.last().copied().unwrap_or_default();
    loop {
        let open: i64 = {
            use sqlx::Row;
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM jobs WHERE kind = 'noop' AND state <> 'succeeded' AND id <= $1",
            )
            .bind(last.to_string())
            .fetch_one(db.pool())
            .await?;
            row.try_get("n")?
        };
        if open == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{open} jobs still open after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(if ids.len() == 1 { 1 } else { 20 })).await;
    }
}

async fn start_delays(db: &Db, ids: &[Uuid]) -> anyhow::Result<Vec<f64>> {
    use sqlx::Row;
    let first = ids.first().copied().unwrap_or_default();
    let last = ids.last().copied().unwrap_or_default();
    let rows = sqlx::query(
        "SELECT started_at - created_at AS d FROM jobs WHERE kind = 'noop' AND id >= $1 AND id <= $2",
    )
    .bind(first.to_string())
    .bind(last.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<i64, _>("d")? as f64 / 1000.0))
        .collect()
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Runs [`bench`] in this process: starts the application with job workers on the
/// configured database (on 127.0.0.1, a free port), measures, and stops it.
async fn run_bench(
    mut config: Config,
    count: usize,
    batch: usize,
    idle: usize,
    idle_gap: std::time::Duration,
) -> anyhow::Result<BenchReport> {
    config.server.port = 0;
    config.server.host = std::net::IpAddr::from([127, 0, 0, 1]);
    config.queue.workers = true;
    let app = shoal::app::App::build(config.clone()).await?;
    let state = app.state();
    let stop = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    let wake_state = state.clone();
    let wake = move || -> futures::future::BoxFuture<'static, ()> {
        let s = wake_state.clone();
        Box::pin(async move { jobs::wake(&s).await })
    };
    let report = bench(&state.db, &config, wake, count, batch, idle, idle_gap).await;
    stop.cancel();
    let _ = server.await;
    report
}
