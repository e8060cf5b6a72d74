//! What the `shoal jobs …` subcommands do: list and retry jobs, enqueue by hand,
//! and a no-op benchmark. Plain functions over a [`Db`], so `main.rs` stays thin.

use anyhow::Context;
use uuid::Uuid;

use super::{Enqueue, Status};
use crate::config::Config;
use crate::db::Db;
use crate::db::jobs as job_rows;

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
    let rows = job_rows::list(db.pool(), stored, limit).await?;
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
    if job_rows::retry_dead(db, id).await? {
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
