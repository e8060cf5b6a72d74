//! Durable background jobs (docs/jobs.md): a queue of our own in the
//! database, not apalis.
//!
//! apalis 1.0 was evaluated: its SQLite and PostgreSQL storages own their
//! connections and schema, so an enqueue cannot join the caller's sqlx `Any`
//! transaction (an export requested in a rolled-back transaction must never run), and
//! apalis-cron schedules per process, not once per cluster. Both are the heart of
//! the queue's contract, so the queue is a `jobs` table (the zero2prod pattern): claims are
//! `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING …` on
//! PostgreSQL and the same statement through the single writer connection on
//! SQLite. Cron parsing comes from the `croner` crate; leases, backoff and the state
//! machine are ours (below and in [`worker`]).
//!
//! # Layout
//! - this file: the [`Handler`] trait, the [`JobHandlers`] of handlers by type name, the
//!   state machine ([`Status`], [`after_failure`], [`backoff`]) and [`enqueue`].
//! - [`worker`]: the per-instance worker pool: claim, run, heartbeat, reap, drain.
//! - [`scheduler`]: recurring jobs, once per tick cluster-wide.
//! - [`export`]: the workspace CSV export; [`cleanup`]: the nightly clean-up;
//!   [`testing`]: job types that exist only with `QUEUE_TEST_HANDLERS=true`.

pub mod admin;
pub mod cleanup;
pub mod export;
pub mod scheduler;
pub mod testing;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::config::Config;
use crate::db::StoreError;
use crate::db::jobs::{self as job_rows, NewJob};
use crate::state::AppState;

/// The pub/sub channel on which an enqueue wakes idle workers on every instance.
pub const WAKE_CHANNEL: &str = "jobs:wake";

/// How a handler's attempt ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (after backoff), unless attempts are used up.
    #[error("{0}")]
    Retry(String),
    /// Will never work (bad payload, unknown type): `dead` at once.
    #[error("{0}")]
    Fatal(String),
    /// Another worker owns the job now (our lease expired): nothing to record.
    #[error("lease lost")]
    LeaseLost,
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        JobError::Retry(e.to_string())
    }
}

/// A job type: a name and a typed payload. Register it in a [`JobHandlers`].
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The type name stored with the job (`export.workspace_csv`).
    const TYPE: &'static str;
    /// The payload, stored as JSON.
    type Payload: Serialize + DeserializeOwned + Send + Sync;

    /// Runs one attempt. A handler whose effects are in the database writes them and
    /// calls [`JobContext::complete_in`] in the same transaction, so that the effects
    /// and the `succeeded` state commit together, and only while the lease is held:
    /// a rerun after a lost lease cannot apply them twice.
    async fn run(&self, ctx: &JobContext, payload: Self::Payload) -> Result<(), JobError>;
}

/// What a running handler knows about its job.
pub struct JobContext {
    /// The job.
    pub id: Uuid,
    /// This attempt (1 = first).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Who asked.
    pub requested_by: Option<Uuid>,
    /// Owning workspace.
    pub workspace_id: Option<Uuid>,
    /// The application (database, realtime, configuration).
    pub state: AppState,
    owner: String,
    completed: AtomicBool,
}

impl JobContext {
    /// Marks the job succeeded on `conn` (the handler's transaction). Fails with
    /// [`JobError::LeaseLost`] when another worker owns the job: the handler must then
    /// roll back (dropping the transaction does).
    pub async fn complete_in(&self, conn: &mut AnyConnection) -> Result<(), JobError> {
        if job_rows::succeed(conn, self.id, &self.owner).await? {
            self.completed.store(true, Ordering::SeqCst);
            Ok(())
        } else {
            Err(JobError::LeaseLost)
        }
    }

    fn was_completed(&self) -> bool {
        self.completed.load(Ordering::SeqCst)
    }
}

#[async_trait]
trait ErasedHandler: Send + Sync {
    async fn call(&self, ctx: &JobContext, payload: &str) -> Result<(), JobError>;
}

struct Typed<H>(H);

#[async_trait]
impl<H: Handler> ErasedHandler for Typed<H> {
    async fn call(&self, ctx: &JobContext, payload: &str) -> Result<(), JobError> {
        let payload: H::Payload = serde_json::from_str(payload).map_err(|e| {
            JobError::Fatal(format!("undecodable payload for job type {}: {e}", H::TYPE))
        })?;
        self.0.run(ctx, payload).await
    }
}

/// Handlers by type name.
#[derive(Clone, Default)]
pub struct JobHandlers {
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
}

impl JobHandlers {
    /// Every production job type, plus the test types when `QUEUE_TEST_HANDLERS`.
    pub fn standard(config: &Config) -> Self {
        let mut registry = JobHandlers::default()
            .with(export::WorkspaceCsv)
            .with(cleanup::Nightly)
            .with(testing::Noop);
        if config.queue.test_handlers {
            registry = registry.with(testing::Script);
        }
        registry
    }

    /// Adds `handler` under its type name (a second one replaces the first).
    pub fn with<H: Handler>(mut self, handler: H) -> Self {
        self.handlers.insert(H::TYPE, Arc::new(Typed(handler)));
        self
    }

    /// Whether `kind` has a handler.
    pub fn knows(&self, kind: &str) -> bool {
        self.handlers.contains_key(kind)
    }

    async fn run(&self, ctx: &JobContext, kind: &str, payload: &str) -> Result<(), JobError> {
        match self.handlers.get(kind) {
            Some(h) => h.call(ctx, payload).await,
            None => Err(JobError::Fatal(format!(
                "unknown job type {kind:?}: no handler is registered for it"
            ))),
        }
    }
}

/// Options of one enqueue.
#[derive(Debug, Clone, Default)]
pub struct Enqueue {
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Not before this time (microseconds since the epoch); `None` = now.
    pub run_at: Option<i64>,
    /// Enqueuing the same key again yields the first job.
    pub idempotency_key: Option<String>,
    /// Who asked: gets `job:completed` and may read the job.
    pub requested_by: Option<Uuid>,
    /// The workspace whose members may read the job.
    pub workspace_id: Option<Uuid>,
    /// Attempts in all; `None` = `QUEUE_MAX_RETRIES` + 1.
    pub max_attempts: Option<i32>,
}

/// An enqueued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// Its id.
    pub id: Uuid,
    /// False when the idempotency key had been used: `id` is the earlier job.
    pub created: bool,
}

/// Enqueues a job of type `H` on `conn`, the caller's transaction: it exists only if
/// that transaction commits. Call [`wake`] after the commit.
pub async fn enqueue<H: Handler>(
    conn: &mut AnyConnection,
    config: &Config,
    payload: &H::Payload,
    options: Enqueue,
) -> Result<Enqueued, StoreError> {
    let payload = serde_json::to_string(payload)
        .map_err(|e| StoreError::Internal(sqlx::Error::Encode(e.into())))?;
    enqueue_raw(conn, config, H::TYPE, payload, options).await
}

/// [`enqueue`] by type name and JSON (the CLI, benchmarks, tests).
pub async fn enqueue_raw(
    conn: &mut AnyConnection,
    config: &Config,
    kind: &str,
    payload: String,
    options: Enqueue,
) -> Result<Enqueued, StoreError> {
    let job = NewJob {
        kind: kind.to_owned(),
        payload,
        priority: options.priority,
        run_at: options.run_at.unwrap_or_else(crate::clock::now_micros),
        max_attempts: options
            .max_attempts
            .unwrap_or_else(|| i32::try_from(config.queue.max_retries).unwrap_or(i32::MAX - 1) + 1),
        idempotency_key: options.idempotency_key,
        requested_by: options.requested_by,
        workspace_id: options.workspace_id,
    };
    let (id, created) = job_rows::insert(conn, &job).await?;
    Ok(Enqueued { id, created })
}

/// Tells idle workers on every instance that a job is waiting (best effort: they
/// poll every `QUEUE_POLL_INTERVAL` anyway).
pub async fn wake(state: &AppState) {
    if let Err(e) = state.pubsub.publish(WAKE_CHANNEL, Bytes::new()).await {
        tracing::debug!(error = %e, "job wake-up not published");
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = JobStatus)]
pub enum Status {
    /// Waiting for its first attempt.
    Queued,
    /// Held by a worker.
    Running,
    /// Done.
    Succeeded,
    /// An attempt failed; another is scheduled (`error` says why).
    Failed,
    /// Attempts used up, or failed for good (`error` says why). `shoal jobs retry`.
    Dead,
}

impl Status {
    /// The API status of a stored `state`: a queued job that has already been
    /// attempted is waiting for a retry.
    pub fn of(state: &str, attempts: i32) -> Self {
        match state {
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "dead" => Status::Dead,
            _ if attempts > 0 => Status::Failed,
            _ => Status::Queued,
        }
    }

    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Dead => "dead",
        }
    }
}

/// What to do with a job whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Queue it again after this delay.
    Retry(Duration),
    /// Give up: `dead`, the error kept.
    Dead,
}

/// The transition after attempt `attempt` (1-based) of `max_attempts` failed with
/// `error`; `jitter` in [0, 1) comes from the caller so tests are deterministic.
pub fn after_failure(
    error: &JobError,
    attempt: i32,
    max_attempts: i32,
    base: Duration,
    jitter: f64,
) -> AfterFailure {
    match error {
        JobError::Retry(_) if attempt < max_attempts => {
            AfterFailure::Retry(backoff(attempt, base, jitter))
        }
        _ => AfterFailure::Dead,
    }
}

/// Exponential backoff with "equal jitter": the delay before retry `attempt` is
/// `d/2 + jitter·d/2` with `d = base·2^(attempt-1)`, capped at one hour. Half the
/// delay is guaranteed (no hammering), half is spread so that jobs failing together
/// do not retry together.
pub fn backoff(attempt: i32, base: Duration, jitter: f64) -> Duration {
    const CAP: Duration = Duration::from_secs(3600);
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let d = base.saturating_mul(1 << exp).min(CAP);
    let half = d / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_states_map_to_api_statuses() {
        assert_eq!(Status::of("queued", 0), Status::Queued);
        assert_eq!(Status::of("queued", 2), Status::Failed);
        assert_eq!(Status::of("running", 1), Status::Running);
        assert_eq!(Status::of("succeeded", 1), Status::Succeeded);
        assert_eq!(Status::of("dead", 3), Status::Dead);
    }

    #[test]
    fn retryable_errors_retry_until_attempts_are_used_up() {
        let e = JobError::Retry("boom".into());
        let base = Duration::from_secs(1);
        assert!(matches!(
            after_failure(&e, 1, 3, base, 0.0),
            AfterFailure::Retry(_)
        ));
        assert!(matches!(
            after_failure(&e, 2, 3, base, 0.0),
            AfterFailure::Retry(_)
        ));
        assert_eq!(after_failure(&e, 3, 3, base, 0.0), AfterFailure::Dead);
        assert_eq!(after_failure(&e, 1, 1, base, 0.0), AfterFailure::Dead);
    }

    #[test]
    fn fatal_errors_die_at_once() {
        let e = JobError::Fatal("bad payload".into());
        assert_eq!(
            after_failure(&e, 1, 10, Duration::from_secs(1), 0.5),
            AfterFailure::Dead
        );
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_a_cap() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(1, base, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, base, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, base, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, 0.0), Duration::from_secs(2));
        for attempt in 1..10 {
            for j in [0.0, 0.3, 0.99] {
                let d = backoff(attempt, base, j);
                let full = base * (1 << (attempt - 1));
                assert!(d >= full / 2 && d <= full, "{attempt} {j} {d:?}");
            }
        }
        assert_eq!(backoff(60, base, 1.0), Duration::from_secs(3600));
        assert_eq!(backoff(5, Duration::ZERO, 0.7), Duration::ZERO);
    }
}
