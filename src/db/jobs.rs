//! The `jobs` and `export_results` tables: the SQL half of the job queue
//! ([`crate::jobs`] holds the state machine, workers and handlers).
//!
//! Every state change is ONE statement guarded by the expected state (and, for a
//! held job, by `lease_owner`), so two workers can never both move the same job:
//! the loser's statement matches no row. Claims differ by engine (see
//! [`Dialect::claim_lock`](super::Dialect::claim_lock)).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::{Db, StoreError, opt_uuid_col, uuid_col};
use crate::clock;

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Registered type name (`export.workspace_csv`).
    pub kind: String,
    /// JSON payload, decoded by the handler of `kind`.
    pub payload: String,
    /// Higher runs first.
    pub priority: i32,
    /// Not before this time (microseconds since the epoch).
    pub run_at: i64,
    /// Attempts in all (first + retries).
    pub max_attempts: i32,
    /// At most one job per key, ever (until the job is purged).
    pub idempotency_key: Option<String>,
    /// Who asked (gets `job:completed`; may read the job).
    pub requested_by: Option<Uuid>,
    /// The workspace the job belongs to (its members may read it).
    pub workspace_id: Option<Uuid>,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// UUIDv7.
    pub id: Uuid,
    /// Type name.
    pub kind: String,
    /// JSON payload.
    pub payload: String,
    /// `queued`, `running`, `succeeded`, `dead`.
    pub state: String,
    /// Higher runs first.
    pub priority: i32,
    /// Due time.
    pub run_at: i64,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// Who asked.
    pub requested_by: Option<Uuid>,
    /// Owning workspace.
    pub workspace_id: Option<Uuid>,
    /// Creation time.
    pub created_at: i64,
    /// When the last attempt started.
    pub started_at: Option<i64>,
    /// When it succeeded or died.
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "id, kind, payload, state, priority, run_at, attempts, max_attempts, \
     last_error, requested_by, workspace_id, created_at, started_at, finished_at";

fn job(row: &AnyRow) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: uuid_col(row, "id")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        state: row.try_get("state")?,
        priority: row.try_get("priority")?,
        run_at: row.try_get("run_at")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        last_error: row.try_get("last_error")?,
        requested_by: opt_uuid_col(row, "requested_by")?,
        workspace_id: opt_uuid_col(row, "workspace_id")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Inserts `job` on `conn` (the caller's transaction). Returns the id and whether
/// it is new; with an idempotency key already used, the existing job's id and false.
pub async fn insert(conn: &mut AnyConnection, job: &NewJob) -> Result<(Uuid, bool), StoreError> {
    let id = Uuid::now_v7();
    let now = clock::now_micros();
    // ON CONFLICT DO NOTHING: a duplicate key is not an error, and on PostgreSQL it
    // does not abort the caller's transaction (a plain unique violation would).
    let inserted = crate::db::query(
        "INSERT INTO jobs (id, kind, payload, state, priority, run_at, attempts, max_attempts, \
         idempotency_key, requested_by, workspace_id, created_at) \
         VALUES ($1, $2, $3, 'queued', $4, $5, 0, $6, $7, $8, $9, $10) \
         ON CONFLICT DO NOTHING",
    )
    .bind(id.to_string())
    .bind(&job.kind)
    .bind(&job.payload)
    .bind(job.priority)
    .bind(job.run_at)
    .bind(job.max_attempts)
    .bind(job.idempotency_key.clone())
    .bind(job.requested_by.map(|u| u.to_string()))
    .bind(job.workspace_id.map(|u| u.to_string()))
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok((id, true));
    }
    let key = job.idempotency_key.clone().unwrap_or_default();
    let row = crate::db::query("SELECT id FROM jobs WHERE idempotency_key = $1")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    Ok((uuid_col(&row, "id")?, false))
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job.
    pub id: Uuid,
    /// Type name.
    pub kind: String,
    /// JSON payload.
    pub payload: String,
    /// This attempt's number (1 = first).
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Who asked.
    pub requested_by: Option<Uuid>,
    /// Owning workspace.
    pub workspace_id: Option<Uuid>,
    /// When it was due (enqueue-to-start latency).
    pub run_at: i64,
}

/// Claims up to `limit` due jobs for `owner` until `lease_until`, best priority first.
pub async fn claim(
    db: &Db,
    owner: &str,
    limit: i64,
    lease_until: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let now = clock::now_micros();
    let sql = format!(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1, \
         lease_until = $2, started_at = $3 \
         WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND run_at <= $3 \
         ORDER BY priority DESC, run_at, id LIMIT $4 {}) \
         RETURNING id, kind, payload, attempts, max_attempts, requested_by, workspace_id, run_at",
        db.dialect().claim_lock()
    );
    let rows = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(db.writer())
        .await?;
    let claimed = rows
        .iter()
        .map(|row| {
            Ok(Claimed {
                id: uuid_col(row, "id")?,
                kind: row.try_get("kind")?,
                payload: row.try_get("payload")?,
                attempts: row.try_get("attempts")?,
                max_attempts: row.try_get("max_attempts")?,
                requested_by: opt_uuid_col(row, "requested_by")?,
                workspace_id: opt_uuid_col(row, "workspace_id")?,
                run_at: row.try_get("run_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(claimed)
}

/// Extends every lease `owner` holds. Returns how many.
pub async fn heartbeat(db: &Db, owner: &str, lease_until: i64) -> Result<u64, StoreError> {
    Ok(crate::db::query(
        "UPDATE jobs SET lease_until = $1 WHERE lease_owner = $2 AND state = 'running'",
    )
    .bind(lease_until)
    .bind(owner)
    .execute(db.writer())
    .await?
    .rows_affected())
}

/// Marks a held job succeeded. False when the lease was lost (another worker owns
/// it now): the caller must not consider its effects committed.
pub async fn succeed(conn: &mut AnyConnection, id: Uuid, owner: &str) -> Result<bool, StoreError> {
    let now = clock::now_micros();
    Ok(crate::db::query(
        "UPDATE jobs SET state = 'succeeded', finished_at = $1, lease_owner = NULL, \
         lease_until = NULL, last_error = NULL WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
    )
    .bind(now)
    .bind(id.to_string())
    .bind(owner)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Puts a held job back to `queued` at `run_at` with `error` (a retry), or to
/// `dead` when `run_at` is `None`. False when the lease was lost.
pub async fn fail(
    db: &Db,
    id: Uuid,
    owner: &str,
    error: &str,
    run_at: Option<i64>,
) -> Result<bool, StoreError> {
    let now = clock::now_micros();
    let (state, run_at, finished) = match run_at {
        Some(t) => ("queued", t, None),
        None => ("dead", now, Some(now)),
    };
    Ok(crate::db::query(
        "UPDATE jobs SET state = $1, run_at = $2, finished_at = $3, last_error = $4, \
         lease_owner = NULL, lease_until = NULL \
         WHERE id = $5 AND lease_owner = $6 AND state = 'running'",
    )
    .bind(state)
    .bind(run_at)
    .bind(finished)
    .bind(error)
    .bind(id.to_string())
    .bind(owner)
    .execute(db.writer())
    .await?
    .rows_affected()
        == 1)
}

/// Gives back every job `owner` still holds, without counting the attempt (graceful
/// shutdown past `SHUTDOWN_TIMEOUT`).
pub async fn release_all(db: &Db, owner: &str) -> Result<u64, StoreError> {
    Ok(crate::db::query(
        "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_owner = NULL, \
         lease_until = NULL WHERE lease_owner = $1 AND state = 'running'",
    )
    .bind(owner)
    .execute(db.writer())
    .await?
    .rows_affected())
}

/// Re-queues jobs whose lease expired (their worker died), or kills those that
/// have used up their attempts. Returns (requeued, dead).
pub async fn reap_expired(db: &Db) -> Result<(u64, u64), StoreError> {
    let now = clock::now_micros();
    let dead = crate::db::query(
        "UPDATE jobs SET state = 'dead', finished_at = $1, lease_owner = NULL, lease_until = NULL, \
         last_error = 'lease expired: the worker holding the job stopped (attempts used up)' \
         WHERE state = 'running' AND lease_until < $1 AND attempts >= max_attempts",
    )
    .bind(now)
    .execute(db.writer())
    .await?
    .rows_affected();
    let requeued = crate::db::query(
        "UPDATE jobs SET state = 'queued', run_at = $1, lease_owner = NULL, lease_until = NULL, \
         last_error = 'lease expired: the worker holding the job stopped' \
         WHERE state = 'running' AND lease_until < $1",
    )
    .bind(now)
    .execute(db.writer())
    .await?
    .rows_affected();
    Ok((requeued, dead))
}

/// One job.
pub async fn get<'e>(
    ex: impl Executor<'e, Database = Any>,
    id: Uuid,
) -> Result<Option<JobRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    let row = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(ex)
        .await?;
    Ok(row.as_ref().map(job).transpose()?)
}

/// Jobs in `state` (newest first), at most `limit`.
pub async fn list<'e>(
    ex: impl Executor<'e, Database = Any>,
    state: &str,
    limit: i64,
) -> Result<Vec<JobRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE state = $1 ORDER BY id DESC LIMIT $2");
    let rows = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(state)
        .bind(limit)
        .fetch_all(ex)
        .await?;
    Ok(rows.iter().map(job).collect::<Result<_, _>>()?)
}

/// Puts a dead job back in the queue with fresh attempts. False when it is not dead.
pub async fn retry_dead(db: &Db, id: Uuid) -> Result<bool, StoreError> {
    Ok(crate::db::query(
        "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $1, finished_at = NULL \
         WHERE id = $2 AND state = 'dead'",
    )
    .bind(clock::now_micros())
    .bind(id.to_string())
    .execute(db.writer())
    .await?
    .rows_affected()
        == 1)
}

/// Queue depth: (state, kind, count), `queued` split into `queued` and `failed`
/// (waiting for a retry) as the API shows them.
pub async fn depth<'e>(
    ex: impl Executor<'e, Database = Any>,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = crate::db::query(
        "SELECT CASE WHEN state = 'queued' AND attempts > 0 THEN 'failed' ELSE state END AS status, \
         kind, COUNT(*) AS n FROM jobs GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("status")?, r.try_get("kind")?, r.try_get("n")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Deletes finished jobs (and their export results) that finished before `before`.
pub async fn purge_finished(db: &Db, before: i64) -> Result<u64, StoreError> {
    let mut tx = db.begin().await?;
    for table in ["export_chunks", "export_results"] {
        crate::db::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE job_id IN \
             (SELECT id FROM jobs WHERE state IN ('succeeded', 'dead') AND finished_at < $1)"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?;
    }
    let n = crate::db::query(
        "DELETE FROM jobs WHERE state IN ('succeeded', 'dead') AND finished_at < $1",
    )
    .bind(before)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// Total jobs (tests, benchmarks).
pub async fn count_in_state<'e>(
    ex: impl Executor<'e, Database = Any>,
    state: &str,
) -> Result<i64, StoreError> {
    let row = crate::db::query("SELECT COUNT(*) AS n FROM jobs WHERE state = $1")
        .bind(state)
        .fetch_one(ex)
        .await?;
    Ok(row.try_get("n")?)
}

/// The nightly clean-up's SQL part: expired sessions and refresh tokens, refresh
/// families left without tokens, finished jobs (with their export results) older
/// than `keep_jobs_before`. Returns rows deleted per table.
pub async fn purge_expired(
    db: &Db,
    keep_jobs_before: i64,
    keep_analytics_before: i64,
) -> Result<[u64; 5], StoreError> {
    let now = clock::now_micros();
    let sessions = crate::db::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(db.writer())
        .await?
        .rows_affected();
    let tokens = crate::db::query("DELETE FROM refresh_tokens WHERE expires_at <= $1")
        .bind(now)
        .execute(db.writer())
        .await?
        .rows_affected();
    let families = crate::db::query(
        "DELETE FROM refresh_families WHERE NOT EXISTS \
         (SELECT 1 FROM refresh_tokens t WHERE t.family_id = refresh_families.id) \
         AND created_at < $1",
    )
    // An hour's grace: a family is inserted just before its first token.
    .bind(now - 3_600_000_000)
    .execute(db.writer())
    .await?
    .rows_affected();
    let jobs = purge_finished(db, keep_jobs_before).await?;
    let events = crate::db::query("DELETE FROM analytics_events WHERE created_at < $1")
        .bind(keep_analytics_before)
        .execute(db.writer())
        .await?
        .rows_affected();
    Ok([sessions, tokens, families, jobs, events])
}

/// [`succeed`] for many jobs held by `owner` in one statement (the worker pool's
/// batched bookkeeping). Returns the ids that were still held, i.e. recorded.
pub async fn succeed_many(db: &Db, owner: &str, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = format!(
        "UPDATE jobs SET state = 'succeeded', finished_at = $1, lease_owner = NULL, \
         lease_until = NULL, last_error = NULL \
         WHERE lease_owner = $2 AND state = 'running' AND id IN ({}) RETURNING id",
        placeholders.join(", ")
    );
    let mut query = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(clock::now_micros())
        .bind(owner);
    for id in ids {
        query = query.bind(id.to_string());
    }
    let rows = query.fetch_all(db.writer()).await?;
    rows.iter()
        .map(|r| uuid_col(r, "id"))
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}

/// Gives back the jobs `ids` that `owner` claimed but never started (shutdown),
/// without counting the attempt.
pub async fn release(db: &Db, owner: &str, ids: &[Uuid]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_owner = NULL, \
         lease_until = NULL WHERE lease_owner = $1 AND state = 'running' AND id IN ({})",
        placeholders.join(", ")
    );
    let mut query = crate::db::query(sqlx::AssertSqlSafe(sql)).bind(owner);
    for id in ids {
        query = query.bind(id.to_string());
    }
    Ok(query.execute(db.writer()).await?.rows_affected())
}
