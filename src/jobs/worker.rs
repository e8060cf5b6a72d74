//! The worker pool of one instance: `QUEUE_CONCURRENCY` slots fed by one claimer.
//!
//! - **Claim**: when a slot is free and nothing claimed is waiting, claim up to
//!   4 × `QUEUE_CONCURRENCY` due jobs in one statement (batching is what makes
//!   thousands of no-op jobs a second possible); when there are none, wait for a
//!   wake-up ([`super::WAKE_CHANNEL`]) or the idle poll: `QUEUE_POLL_INTERVAL`,
//!   doubled after every empty claim up to `QUEUE_IDLE_POLL_MAX` while Redis wake-ups
//!   are subscribed (they bring new jobs from every process at once; the poll is left
//!   for jobs that become due by time), back to the start by a wake-up or a claim that
//!   found jobs.
//! - **Lease**: every claimed job is held until `now + QUEUE_LEASE`; one statement
//!   every `QUEUE_LEASE / 3` extends all leases this pool holds, and the same tick
//!   re-queues jobs whose lease expired on any instance (their worker died).
//! - **Finish**: every state change is guarded by `lease_owner`, so a worker that
//!   lost its lease cannot overwrite the new owner's result. Successes without
//!   database effects of their own are recorded in batches by one finisher task
//!   (one `UPDATE … WHERE id IN (…)` for all jobs that ended meanwhile): with no-op
//!   jobs, one statement per job was the bottleneck (~1,100 jobs/s on PostgreSQL).
//! - **Drain**: on shutdown, stop claiming; wait for running jobs up to
//!   `SHUTDOWN_TIMEOUT` less a second; release what is still held (without counting
//!   the attempt) so another instance takes it at once.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{AfterFailure, JobContext, JobError, JobHandlers, Status, WAKE_CHANNEL, after_failure};
use crate::clock;
use crate::db::jobs::{self as job_rows, Claimed};
use crate::events::{JobCompleted, Room, ServerEvent, publish};
use crate::pubsub::Subscription;
use crate::state::AppState;

/// Claim size, as a multiple of `QUEUE_CONCURRENCY`.
const CLAIM_FACTOR: usize = 4;
/// Claim size cap.
const MAX_CLAIM: usize = 256;

/// Runs the pool until `stop` is cancelled, then drains (see the module doc).
pub async fn run(state: AppState, registry: JobHandlers, stop: CancellationToken) {
    // Unique per pool, not just per instance: a restarted process with the same
    // INSTANCE_ID must not inherit its predecessor's leases.
    let owner = format!("{}/{:08x}", state.instance.id, rand::random::<u32>());
    let registry = Arc::new(registry);
    let concurrency = usize::try_from(state.config.queue.concurrency)
        .unwrap_or(1)
        .max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let running = TaskTracker::new();
    let beat_stop = CancellationToken::new();
    let beat = tokio::spawn(lease_keeper(
        state.clone(),
        owner.clone(),
        beat_stop.clone(),
    ));
    let (finished, finisher_rx) = mpsc::channel::<Finished>(4096);
    let finisher = tokio::spawn(finisher(state.clone(), owner.clone(), finisher_rx));
    let mut wake = match state.pubsub.subscribe(WAKE_CHANNEL).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no job wake-ups; polling only");
            None
        }
    };
    tracing::info!(%owner, concurrency, "job workers started");

    // Claims take up to CLAIM_FACTOR × QUEUE_CONCURRENCY jobs at once, more than
    // there are free slots: with one claim per freed slot, PostgreSQL spent its time
    // walking the claim index's dead entries (claimed rows leave them until vacuum)
    // once per job (~350 no-op jobs/s at concurrency 4). The few jobs waiting here
    // are leased (heartbeats cover them) and released on shutdown.
    let batch = (concurrency * CLAIM_FACTOR).min(MAX_CLAIM) as i64;
    let mut buffer: VecDeque<Claimed> = VecDeque::new();
    let mut empty_claims: u32 = 0;
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        if buffer.is_empty() {
            let lease_until = clock::now_micros() + micros(state.config.queue.lease);
            match job_rows::claim(&state.db, &owner, batch, lease_until).await {
                Ok(claimed) => buffer.extend(claimed),
                Err(e) => tracing::warn!(error = %e, "job claim failed"),
            }
        }
        let Some(job) = buffer.pop_front() else {
            drop(permit);
            // In-process wake-ups do not reach a `shoal worker` beside `shoal serve` on
            // one database: only Redis's reach every process, and only while the
            // subscription is up (`check` reads a flag, no round trip). If it drops
            // during a long sleep, its return delivers a `Gap`, which wakes this loop.
            let wake_ups =
                wake.is_some() && state.redis.is_some() && state.pubsub.check().await.is_ok();
            let delay = idle_poll(
                state.config.queue.poll_interval,
                state.config.queue.idle_poll_max,
                empty_claims,
                wake_ups,
            );
            match wait(&stop, &mut wake, delay).await {
                Waited::Stop => break,
                Waited::Woken => empty_claims = 0,
                Waited::Polled => empty_claims = empty_claims.saturating_add(1),
            }
            continue;
        };
        empty_claims = 0;
        let span =
            tracing::info_span!("job", id = %job.id, r#type = %job.kind, attempt = job.attempts);
        running.spawn(
            execute(
                state.clone(),
                registry.clone(),
                owner.clone(),
                job,
                permit,
                finished.clone(),
            )
            .instrument(span),
        );
    }
    if !buffer.is_empty() {
        let ids: Vec<uuid::Uuid> = buffer.iter().map(|j| j.id).collect();
        if let Err(e) = job_rows::release(&state.db, &owner, &ids).await {
            tracing::warn!(error = %e, "shutdown: claimed jobs not released; their leases expire");
        }
    }

    running.close();
    let budget = state
        .config
        .shutdown
        .timeout
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(500));
    drop(finished);
    let drained = tokio::time::timeout(budget, async {
        running.wait().await;
        let _ = finisher.await;
    });
    if drained.await.is_err() {
        match job_rows::release_all(&state.db, &owner).await {
            Ok(n) => tracing::warn!(
                released = n,
                "shutdown: jobs still running; leases released"
            ),
            Err(e) => tracing::warn!(error = %e, "shutdown: could not release leases; they expire"),
        }
    }
    beat_stop.cancel();
    let _ = beat.await;
    tracing::info!("job workers stopped");
}

/// How long an idle claimer sleeps after `empty_claims` claims in a row found nothing:
/// `base` doubled each time up to `max`, or always `base` without wake-ups (then the
/// poll is the only way to hear of new jobs).
fn idle_poll(base: Duration, max: Duration, empty_claims: u32, wake_ups: bool) -> Duration {
    if !wake_ups {
        return base;
    }
    let factor = 1u32.checked_shl(empty_claims.min(16)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max.max(base))
}

/// How an idle wait ended.
enum Waited {
    Stop,
    /// A wake-up: a job was enqueued, or one failed and is due again.
    Woken,
    /// The poll interval passed.
    Polled,
}

/// Waits for a wake-up, `delay` or `stop`.
async fn wait(
    stop: &CancellationToken,
    wake: &mut Option<Subscription>,
    delay: Duration,
) -> Waited {
    let woken = async {
        match wake {
            Some(s) => {
                if s.next().await.is_none() {
                    // The subscription ended: poll from now on.
                    *wake = None;
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop.cancelled() => Waited::Stop,
        () = tokio::time::sleep(delay) => Waited::Polled,
        () = woken => Waited::Woken,
    }
}

/// Extends this pool's leases and re-queues expired ones, every `QUEUE_LEASE / 3`.
async fn lease_keeper(state: AppState, owner: String, stop: CancellationToken) {
    let lease = state.config.queue.lease;
    let mut ticker = tokio::time::interval(lease / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let until = clock::now_micros() + micros(lease);
        if let Err(e) = job_rows::heartbeat(&state.db, &owner, until).await {
            tracing::warn!(error = %e, "job lease heartbeat failed");
        }
        match job_rows::reap_expired(&state.db).await {
            Ok((0, 0)) => {}
            Ok((requeued, dead)) => {
                tracing::warn!(requeued, dead, "jobs whose worker stopped were taken back")
            }
            Err(e) => tracing::warn!(error = %e, "job lease reaping failed"),
        }
    }
}

/// Runs one claimed job to its next state.
async fn execute(
    state: AppState,
    registry: Arc<JobHandlers>,
    owner: String,
    job: Claimed,
    permit: OwnedSemaphorePermit,
    finished: mpsc::Sender<Finished>,
) {
    let started = clock::now_micros();
    metrics::histogram!("shoal_job_start_delay_seconds", "type" => job.kind.clone())
        .record((started - job.run_at).max(0) as f64 / 1e6);
    let ctx = JobContext {
        id: job.id,
        attempt: job.attempts,
        max_attempts: job.max_attempts,
        requested_by: job.requested_by,
        workspace_id: job.workspace_id,
        state: state.clone(),
        owner: owner.clone(),
        completed: Default::default(),
    };
    let ran = std::time::Instant::now();
    let result = AssertUnwindSafe(registry.run(&ctx, &job.kind, &job.payload))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(JobError::Retry("the handler panicked".into())));
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!("shoal_job_duration_seconds", "type" => job.kind.clone(), "outcome" => outcome)
        .record(ran.elapsed().as_secs_f64());
    let status = match result {
        Ok(()) if ctx.was_completed() => Some(Status::Succeeded),
        Ok(()) => {
            // The job is done: its slot is free while the finisher records it.
            drop(permit);
            let (reply, recorded) = oneshot::channel();
            if finished.send((job.id, reply)).await.is_err() {
                return;
            }
            match recorded.await {
                Ok(true) => Some(Status::Succeeded),
                _ => None,
            }
        }
        Err(JobError::LeaseLost) => None,
        Err(error) => {
            let next = after_failure(
                &error,
                job.attempts,
                job.max_attempts,
                state.config.queue.backoff_base,
                rand::random::<f64>(),
            );
            let (run_at, status) = match next {
                AfterFailure::Retry(delay) => {
                    (Some(clock::now_micros() + micros(delay)), Status::Failed)
                }
                AfterFailure::Dead => (None, Status::Dead),
            };
            let message = error.to_string();
            tracing::warn!(id = %job.id, r#type = %job.kind, attempt = job.attempts, error = %message, next = status.as_str(), "job attempt failed");
            match job_rows::fail(&state.db, job.id, &owner, &message, run_at).await {
                Ok(true) => Some(status),
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!(id = %job.id, error = %e, "could not record a job's failure");
                    None
                }
            }
        }
    };
    let Some(status) = status else {
        tracing::info!(id = %job.id, "job lease lost; its new owner decides");
        return;
    };
    metrics::counter!("shoal_jobs_finished_total", "type" => job.kind.clone(), "status" => status.as_str())
        .increment(1);
    if status == Status::Failed {
        super::wake(&state).await;
        return;
    }
    if let Some(user) = job.requested_by {
        let event = JobCompleted {
            id: job.id,
            r#type: job.kind.clone(),
            status: status.as_str().to_owned(),
            workspace_id: job.workspace_id,
        };
        publish(&state, Room::User(user), ServerEvent::JobCompleted(event)).await;
    }
}

/// A job whose handler returned `Ok`, and where to say whether it was recorded.
type Finished = (uuid::Uuid, oneshot::Sender<bool>);

/// Records successes in batches until every sender is gone.
async fn finisher(state: AppState, owner: String, mut rx: mpsc::Receiver<Finished>) {
    const MAX_BATCH: usize = 500;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ids: Vec<uuid::Uuid> = batch.iter().map(|(id, _)| *id).collect();
        let recorded = match job_rows::succeed_many(&state.db, &owner, &ids).await {
            Ok(r) => r,
            Err(e) => {
                // The leases run out and other workers run them again: at least once.
                tracing::warn!(error = %e, jobs = ids.len(), "could not record job successes");
                Vec::new()
            }
        };
        for (id, reply) in batch.drain(..) {
            let _ = reply.send(recorded.contains(&id));
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_poll_backs_off_only_while_wake_ups_arrive() {
        let (base, max) = (Duration::from_millis(200), Duration::from_secs(2));
        let with_wake_ups: Vec<u128> = (0..6)
            .map(|n| idle_poll(base, max, n, true).as_millis())
            .collect();
        assert_eq!(with_wake_ups, [200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(idle_poll(base, max, u32::MAX, true), max);
        assert_eq!(idle_poll(base, max, 5, false), base);
        // A maximum below the base never shortens the base poll.
        assert_eq!(idle_poll(base, Duration::from_millis(50), 3, true), base);
    }
}
