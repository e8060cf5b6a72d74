//! Export rows: the tasks an export reads, page by page, and its result, stored as
//! numbered pieces per attempt (`export_chunks`) with one `export_results` row naming
//! the attempt that completed the job (migrations/*/0004_limits.sql).

use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::StoreError;
use crate::clock;

/// A task as exported (raw stored values).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    /// Task id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// `todo`, `in_progress`, `done`.
    pub status: String,
    /// Assignee's user id.
    pub assignee_id: Option<String>,
    /// Version.
    pub version: i64,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Microseconds since the epoch.
    pub updated_at: i64,
}

/// Up to `limit` tasks of `workspace` after the task id `after` (all from the first
/// when `None`), in id (creation) order: an export reads its workspace in pages.
pub async fn tasks_page<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ExportRow>, StoreError> {
    let rows = crate::db::query(
        "SELECT id, title, description, status, assignee_id, version, created_at, updated_at \
         FROM tasks WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(workspace.to_string())
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ExportRow {
                id: r.try_get("id")?,
                title: r.try_get("title")?,
                description: r.try_get("description")?,
                status: r.try_get("status")?,
                assignee_id: r.try_get("assignee_id")?,
                version: r.try_get("version")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Stores piece `n` of attempt `attempt`'s result (a rewrite replaces it).
pub async fn put_chunk<'e>(
    ex: impl Executor<'e, Database = Any>,
    job_id: Uuid,
    attempt: i32,
    n: i32,
    body: &str,
) -> Result<(), StoreError> {
    crate::db::query(
        "INSERT INTO export_chunks (job_id, attempt, n, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (job_id, attempt, n) DO UPDATE SET body = excluded.body",
    )
    .bind(job_id.to_string())
    .bind(attempt)
    .bind(n)
    .bind(body)
    .execute(ex)
    .await?;
    Ok(())
}

/// Names attempt `attempt` (with its `chunks` pieces) as the job's result and drops
/// every other attempt's pieces; in the transaction that completes the job.
pub async fn put_result(
    conn: &mut AnyConnection,
    job_id: Uuid,
    workspace: Uuid,
    content_type: &str,
    attempt: i32,
    chunks: i32,
) -> Result<(), StoreError> {
    crate::db::query("DELETE FROM export_chunks WHERE job_id = $1 AND attempt <> $2")
        .bind(job_id.to_string())
        .bind(attempt)
        .execute(&mut *conn)
        .await?;
    crate::db::query(
        "INSERT INTO export_results \
         (job_id, workspace_id, content_type, body, created_at, attempt, chunks) \
         VALUES ($1, $2, $3, '', $4, $5, $6) ON CONFLICT (job_id) DO UPDATE SET \
         content_type = excluded.content_type, body = excluded.body, \
         created_at = excluded.created_at, attempt = excluded.attempt, chunks = excluded.chunks",
    )
    .bind(job_id.to_string())
    .bind(workspace.to_string())
    .bind(content_type)
    .bind(clock::now_micros())
    .bind(attempt)
    .bind(chunks)
    .execute(conn)
    .await?;
    Ok(())
}

/// Where an export's result is.
#[derive(Debug, Clone)]
pub struct StoredResult {
    /// Its content type.
    pub content_type: String,
    /// The attempt whose pieces make it.
    pub attempt: i32,
    /// How many pieces; 0 when the whole result is in `body`.
    pub chunks: i32,
    /// The whole result of an export stored before pieces existed, else empty.
    pub body: String,
}

/// The result of job `job_id`, if stored.
pub async fn get_result<'e>(
    ex: impl Executor<'e, Database = Any>,
    job_id: Uuid,
) -> Result<Option<StoredResult>, StoreError> {
    let row = crate::db::query(
        "SELECT content_type, body, attempt, chunks FROM export_results WHERE job_id = $1",
    )
    .bind(job_id.to_string())
    .fetch_optional(ex)
    .await?;
    Ok(row
        .map(|r| {
            Ok::<_, sqlx::Error>(StoredResult {
                content_type: r.try_get("content_type")?,
                body: r.try_get("body")?,
                attempt: r.try_get::<i32, _>("attempt")?,
                chunks: r.try_get::<i32, _>("chunks")?,
            })
        })
        .transpose()?)
}

/// Piece `n` of attempt `attempt`'s result.
pub async fn get_chunk<'e>(
    ex: impl Executor<'e, Database = Any>,
    job_id: Uuid,
    attempt: i32,
    n: i32,
) -> Result<Option<String>, StoreError> {
    let row = crate::db::query(
        "SELECT body FROM export_chunks WHERE job_id = $1 AND attempt = $2 AND n = $3",
    )
    .bind(job_id.to_string())
    .bind(attempt)
    .bind(n)
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| r.try_get("body")).transpose()?)
}

/// Exports `user` has queued or running.
pub async fn pending_of<'e>(
    ex: impl Executor<'e, Database = Any>,
    user: Uuid,
    kind: &str,
) -> Result<i64, StoreError> {
    let row = crate::db::query(
        "SELECT COUNT(*) AS n FROM jobs \
         WHERE requested_by = $1 AND kind = $2 AND state IN ('queued', 'running')",
    )
    .bind(user.to_string())
    .bind(kind)
    .fetch_one(ex)
    .await?;
    Ok(row.try_get("n")?)
}

/// Locks `user`'s row until the end of `conn`'s transaction (an `UPDATE` that changes
/// nothing, which both engines order), so that the count of their pending exports
/// and the insert of a new one are not interleaved with another request's.
pub async fn lock_requester(conn: &mut AnyConnection, user: Uuid) -> Result<(), StoreError> {
    crate::db::query("UPDATE users SET id = id WHERE id = $1")
        .bind(user.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether a job with this idempotency key exists (a repeated request).
pub async fn key_exists(conn: &mut AnyConnection, key: &str) -> Result<bool, StoreError> {
    let row = crate::db::query("SELECT 1 AS one FROM jobs WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}
