//! Recurring jobs: each instance with workers computes the latest tick of every
//! schedule and enqueues it with the idempotency key `cron:{name}:{tick}`. All
//! instances compute the same key, the unique index keeps one: once per tick
//! cluster-wide, with no leader election. An instance that starts after a tick it
//! never saw still enqueues that (latest) tick if no one did: one catch-up run, not
//! one per missed tick. Cron expressions are parsed by the `croner` crate (UTC).

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use tokio_util::sync::CancellationToken;

use super::{Enqueue, Handler, cleanup};
use crate::state::AppState;

/// A recurring job.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Names the idempotency key.
    pub name: &'static str,
    /// Five-field cron expression, UTC.
    pub cron: &'static str,
    /// Job type.
    pub kind: &'static str,
    /// JSON payload.
    pub payload: &'static str,
}

/// The deployment's schedules.
pub const SCHEDULES: &[Schedule] = &[Schedule {
    name: "nightly-cleanup",
    cron: "0 3 * * *",
    kind: cleanup::Nightly::TYPE,
    payload: "{}",
}];

/// How often the schedules are checked. A tick is enqueued at most this late.
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// The latest tick of `cron` at or before `now`.
pub fn latest_tick(cron: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let cron: Cron = cron.parse().map_err(|e| format!("cron {cron:?}: {e}"))?;
    cron.find_previous_occurrence(&now, true)
        .map_err(|e| format!("no previous tick: {e}"))
}

/// Now, as croner wants it.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(crate::clock::now_micros()).unwrap_or_default()
}

/// The idempotency key of one tick.
pub fn tick_key(name: &str, tick: DateTime<Utc>) -> String {
    format!(
        "cron:{name}:{}",
        crate::clock::rfc3339(tick.timestamp_micros())
    )
}

/// Enqueues the latest tick of every schedule (a no-op for ticks already enqueued).
pub async fn enqueue_due(state: &AppState, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut created = 0;
    for s in SCHEDULES {
        let tick = latest_tick(s.cron, now).map_err(anyhow::Error::msg)?;
        let mut tx = state.db.begin().await?;
        let job = super::enqueue_raw(
            &mut tx,
            &state.config,
            s.kind,
            s.payload.to_owned(),
            Enqueue {
                run_at: Some(tick.timestamp_micros()),
                idempotency_key: Some(tick_key(s.name, tick)),
                ..Enqueue::default()
            },
        )
        .await?;
        tx.commit().await?;
        if job.created {
            created += 1;
            tracing::info!(schedule = s.name, %tick, id = %job.id, "recurring job enqueued");
        }
    }
    if created > 0 {
        super::wake(state).await;
    }
    Ok(created)
}

/// Checks the schedules every [`CHECK_EVERY`] until `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = enqueue_due(&state, now()).await {
            tracing::warn!(error = format!("{e:#}"), "recurring jobs not enqueued");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{micros, rfc3339};
    use time::macros::datetime;

    fn at(t: time::OffsetDateTime) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros(t)).unwrap()
    }

    #[test]
    fn every_instance_computes_the_same_tick_key() {
        let a = at(datetime!(2026-11-23 05:10:00 UTC));
        let b = at(datetime!(2026-11-23 21:59:59 UTC));
        let ta = latest_tick("0 3 * * *", a).unwrap();
        assert_eq!(rfc3339(ta.timestamp_micros()), "2026-11-23T03:00:00Z");
        assert_eq!(
            tick_key("n", ta),
            tick_key("n", latest_tick("0 3 * * *", b).unwrap())
        );
        let before = at(datetime!(2026-11-23 02:59:00 UTC));
        assert_eq!(
            rfc3339(latest_tick("0 3 * * *", before).unwrap().timestamp_micros()),
            "2026-11-22T03:00:00Z"
        );
    }

    #[test]
    fn the_built_in_schedules_parse() {
        for s in SCHEDULES {
            latest_tick(s.cron, now()).unwrap();
        }
    }
}
