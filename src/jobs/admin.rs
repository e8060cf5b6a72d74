//! What the `shoal jobs …` subcommands do: list and retry jobs, enqueue by hand,
//! and a no-op benchmark. Plain functions over a [`Db`], so `main.rs` stays thin.

use std::time::{Duration, Instant};

use anyhow::Context;
use uuid::Uuid;

use super::{Enqueue, Status};
use crate::config::Config;
use crate::store::Db;
use crate::store::jobs as store;

/// `shoal jobs list --state S`: one line per job, newest first.
pub async fn list(db: &Db, state: &str, limit: i64) -> anyhow::Result<Vec<String>> {
    // `failed` is a queued job with attempts; the stored states are the rest.
    let stored = match state {
        "failed" => "queued",
        s @ ("queued" | "running" | "succeeded" | "dead") => s,
        other => {
            anyhow::bail!("unknown state {other:?}: use queued, running, succeeded, failed or dead")
        }
    };
    let rows = store::list(db.pool(), stored, limit).await?;
    Ok(rows
        .into_iter()
        .filter(|j| Status::of(&j.state, j.attempts).as_str() == state)
        .map(|j| {
            format!(
                "{}\t{}\t{}\tattempts={}/{}\tcreated={}\terror={}",
                j.id,
                j.kind,
                Status::of(&j.state, j.attempts).as_str(),
                j.attempts,
                j.max_attempts,
                crate::clock::rfc3339(j.created_at),
                j.last_error.unwrap_or_default().replace('\n', " ")
            )
        })
        .collect())
}

/// `shoal jobs retry ID`: a dead job is queued again with fresh attempts.
pub async fn retry(db: &Db, id: Uuid) -> anyhow::Result<()> {
    if store::retry_dead(db, id).await? {
        Ok(())
    } else {
        anyhow::bail!("job {id} is not dead (or does not exist); only dead jobs are retried")
    }
}

/// `shoal jobs enqueue`: `count` jobs of `kind`, `batch` per transaction.
pub async fn enqueue(
    db: &Db,
    config: &Config,
    kind: &str,
    payload: &str,
    count: usize,
    batch: usize,
) -> anyhow::Result<Vec<Uuid>> {
    serde_json::from_str::<serde_json::Value>(payload).context("--payload is not JSON")?;
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let mut tx = db.begin().await?;
        for _ in 0..batch.min(count - ids.len()) {
            let job = super::enqueue_raw(
                &mut tx,
                config,
                kind,
                payload.to_owned(),
                Enqueue::default(),
            )
            .await?;
            ids.push(job.id);
        }
        tx.commit().await?;
    }
    Ok(ids)
}

/// Figures of one `shoal jobs bench` run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Jobs in the throughput phase.
    pub count: usize,
    /// Jobs enqueued per second (batches of `batch` per transaction).
    pub enqueue_per_sec: f64,
    /// Jobs completed per second, from the first enqueue to the last completion.
    pub complete_per_sec: f64,
    /// Enqueue-to-start under the backlog of the throughput phase, p50 and p99.
    pub loaded_start_ms: (f64, f64),
    /// Enqueue-to-start of single jobs on an idle queue, p50 and p99.
    pub idle_start_ms: (f64, f64),
}

/// Runs the benchmark against workers already running on the same database:
/// enqueues `count` no-op jobs and waits for them all, then `idle` single jobs one
/// after the other, `idle_gap` apart (time for idle workers to back their polling
/// off, so that the start delay is the wake-up's).
pub async fn bench(
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
            let job = super::enqueue_raw(&mut tx, config, "noop", "{}".into(), Enqueue::default())
                .await?;
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
            super::enqueue_raw(&mut tx, config, "noop", "{}".into(), Enqueue::default()).await?;
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
/// configured database (on 127.0.0.1, a free port), measures, and stops it. Used by
/// `shoal jobs bench` and `shoal-bench jobs`.
pub async fn run_bench(
    mut config: Config,
    count: usize,
    batch: usize,
    idle: usize,
    idle_gap: std::time::Duration,
) -> anyhow::Result<BenchReport> {
    config.port = 0;
    config.host = std::net::IpAddr::from([127, 0, 0, 1]);
    config.queue_workers = true;
    let app = crate::app::App::build(config.clone()).await?;
    let state = app.state();
    let stop = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    let wake_state = state.clone();
    let wake = move || -> futures::future::BoxFuture<'static, ()> {
        let s = wake_state.clone();
        Box::pin(async move { super::wake(&s).await })
    };
    let report = bench(&state.db, &config, wake, count, batch, idle, idle_gap).await;
    stop.cancel();
    let _ = server.await;
    report
}
