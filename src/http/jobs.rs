//! Exports, jobs and queue statistics (docs/api.md, docs/jobs.md).
//!
//! Who may see what:
//! - a job that belongs to a workspace (an export) is visible to the members of that
//!   workspace, and only to them; anyone else gets 404, as everywhere under a
//!   workspace, so ids do not leak;
//! - a job with no workspace is visible to the user who asked for it, if any;
//! - `GET /api/jobs/{id}/result` answers 409 `job_not_finished` until the job has
//!   succeeded (a dead job stays 409: its `error` says why), then the CSV;
//! - `/api/admin/queue/stats` needs `X-Admin-Token` equal to `ADMIN_TOKEN`. With no
//!   `ADMIN_TOKEN` configured the route answers 404: being logged in is not being an
//!   operator (in embedded mode anyone can register).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::caller::Auth;
use super::error::{ApiError, ApiResult};
use super::json::{Json, Path};
use super::workspaces::require_member;
use crate::db::StoreError;
use crate::db::exports;
use crate::db::jobs::{self as job_rows, JobRow};
use crate::db::workspaces;
use crate::jobs::export::{ExportPayload, WorkspaceCsv};
use crate::jobs::{self, Enqueue, Handler, Status};
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_export))
        .routes(routes!(get_job))
        .routes(routes!(get_result))
        .routes(routes!(queue_stats))
}

/// An accepted job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Poll `GET /api/jobs/{job_id}`.
    pub job_id: Uuid,
}

/// A job (docs/api.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    /// UUIDv7.
    pub id: Uuid,
    /// Job type (`export.workspace_csv`).
    #[serde(rename = "type")]
    pub r#type: String,
    /// `queued`, `running`, `succeeded`, `failed` (an attempt failed, a retry is
    /// scheduled) or `dead` (gave up).
    pub status: Status,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed (`QUEUE_MAX_RETRIES` + 1).
    pub max_attempts: i32,
    /// Why it is not done (failed, dead): a fixed sentence per status; the attempt's
    /// own error is in the logs, not here.
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when it succeeded or died.
    pub finished_at: Option<String>,
}

impl From<JobRow> for Job {
    fn from(j: JobRow) -> Self {
        let status = Status::of(&j.state, j.attempts);
        Job {
            id: j.id,
            r#type: j.kind,
            status,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            // The attempt's own error can hold backend text (a database message, an
            // address); it goes to the logs and the `jobs` table, not to the API.
            error: match status {
                Status::Failed => Some("the last attempt failed; it will be retried".into()),
                Status::Dead => Some("every attempt failed; the job was given up".into()),
                _ => None,
            },
            created_at: crate::clock::rfc3339(j.created_at),
            finished_at: j.finished_at.map(crate::clock::rfc3339),
        }
    }
}

#[utoipa::path(post, path = "/api/workspaces/{wid}/exports", tag = "jobs",
    params(("wid" = Uuid, Path, description = "workspace id"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key (per user) returns the first export's job")),
    responses((status = 202, body = Accepted, description = "the export is queued"), (status = 401), (status = 404)))]
async fn start_export(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    require_member(&state, wid, me.user_id).await?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map(|k| format!("export:{}:{wid}:{k}", me.user_id));
    let mut tx = state.db.begin().await?;
    // Counted in the transaction that enqueues, under a lock on the user's row on
    // PostgreSQL (SQLite has one writer anyway), so that parallel requests cannot all
    // pass the count. A repeat with the same Idempotency-Key finds its job below and
    // is not counted again.
    let repeated = match key.as_deref() {
        Some(k) => exports::key_exists(&mut tx, k).await?,
        None => false,
    };
    if !repeated {
        exports::lock_requester(&mut tx, me.user_id).await?;
        let pending = exports::pending_of(&mut *tx, me.user_id, WorkspaceCsv::TYPE).await?;
        let limit = state.config.limits.exports_max_pending_per_user;
        if pending >= i64::from(limit) {
            return Err(ApiError::LimitReached {
                code: "too_many_exports",
                message: format!(
                    "{pending} of your exports are queued or running (at most {limit}); retry when one has finished"
                ),
                retry_after: std::time::Duration::from_secs(5),
            });
        }
    }
    let job = jobs::enqueue::<WorkspaceCsv>(
        &mut tx,
        &state.config,
        &ExportPayload { workspace_id: wid },
        Enqueue {
            idempotency_key: key,
            requested_by: Some(me.user_id),
            workspace_id: Some(wid),
            ..Enqueue::default()
        },
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    if job.created {
        jobs::wake(&state).await;
    }
    Ok((StatusCode::ACCEPTED, Json(Accepted { job_id: job.id })))
}

/// The job, if the caller may see it (see the module doc); else 404.
async fn visible_job(state: &AppState, id: Uuid, user: Uuid) -> ApiResult<JobRow> {
    let job = job_rows::get(state.db.pool(), id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    let allowed = match job.workspace_id {
        Some(wid) => workspaces::role_of(state.db.pool(), wid, user)
            .await?
            .is_some(),
        None => job.requested_by == Some(user),
    };
    if allowed {
        Ok(job)
    } else {
        Err(ApiError::NotFound("job"))
    }
}

#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 401), (status = 404)))]
async fn get_job(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Job>> {
    Ok(Json(visible_job(&state, id, me.user_id).await?.into()))
}

#[utoipa::path(get, path = "/api/jobs/{id}/result", tag = "jobs",
    params(("id" = Uuid, Path, description = "job id")),
    responses((status = 200, content_type = "text/csv", description = "the export, RFC 4180"),
        (status = 401), (status = 404), (status = 409, description = "`job_not_finished`: not succeeded (yet)")))]
async fn get_result(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let job = visible_job(&state, id, me.user_id).await?;
    let status = Status::of(&job.state, job.attempts);
    if status != Status::Succeeded {
        return Err(ApiError::Conflict {
            code: "job_not_finished",
            message: format!("the job is {}; poll GET /api/jobs/{id}", status.as_str()),
        });
    }
    let stored = exports::get_result(state.db.pool(), id)
        .await?
        .ok_or(ApiError::NotFound("result"))?;
    let disposition = format!("attachment; filename=\"export-{id}.csv\"");
    let body = if stored.chunks == 0 {
        Body::from(stored.body)
    } else {
        Body::from_stream(pieces(state.db.clone(), id, stored.attempt, stored.chunks))
    };
    Ok((
        [
            (header::CONTENT_TYPE, stored.content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// An export's pieces in order, one query each: the answer streams, and the instance
/// holds one piece at a time. A piece missing now (the result was purged meanwhile)
/// ends the stream with an error, which cuts the response short rather than sending
/// a CSV that looks complete.
fn pieces(
    db: crate::db::Db,
    job: Uuid,
    attempt: i32,
    count: i32,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    futures::stream::try_unfold(0, move |n| {
        let db = db.clone();
        async move {
            if n >= count {
                return Ok(None);
            }
            match exports::get_chunk(db.pool(), job, attempt, n).await {
                Ok(Some(piece)) => Ok(Some((piece, n + 1))),
                Ok(None) => Err(std::io::Error::other("export piece missing")),
                Err(e) => {
                    tracing::warn!(error = %e, %job, piece = n, "reading an export piece failed");
                    Err(std::io::Error::other("export piece unreadable"))
                }
            }
        }
    })
}

/// Queue depth.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStats {
    /// Jobs per status (every status present, zero included).
    pub by_state: BTreeMap<String, i64>,
    /// Jobs per status and type.
    pub by_type: Vec<TypeDepth>,
}

/// Jobs of one type in one status.
#[derive(Debug, Serialize, ToSchema)]
pub struct TypeDepth {
    /// Job type.
    #[serde(rename = "type")]
    pub r#type: String,
    /// Status.
    pub status: String,
    /// How many.
    pub count: i64,
}

/// Queue depth by status and type, for the admin route and `/metrics`.
pub async fn depth(state: &AppState) -> Result<QueueStats, StoreError> {
    let rows = job_rows::depth(state.db.pool()).await?;
    let mut by_state: BTreeMap<String, i64> = ["queued", "running", "succeeded", "failed", "dead"]
        .iter()
        .map(|s| ((*s).to_owned(), 0))
        .collect();
    let mut by_type = Vec::with_capacity(rows.len());
    for (status, kind, count) in rows {
        *by_state.entry(status.clone()).or_default() += count;
        by_type.push(TypeDepth {
            r#type: kind,
            status,
            count,
        });
    }
    Ok(QueueStats { by_state, by_type })
}

fn is_admin(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    use secrecy::ExposeSecret;
    let Some(expected) = &state.config.server.admin_token else {
        return Err(ApiError::NotFound("route"));
    };
    let given = headers
        .get("x-admin-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Compare digests: equal length, so the comparison time says nothing about
    // how much of the token matched.
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if diff == 0 && !given.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "a valid X-Admin-Token is required".into(),
        ))
    }
}

#[utoipa::path(get, path = "/api/admin/queue/stats", tag = "jobs",
    params(("X-Admin-Token" = String, Header, description = "equal to ADMIN_TOKEN")),
    responses((status = 200, body = QueueStats), (status = 403, description = "wrong or missing token"),
        (status = 404, description = "ADMIN_TOKEN is not configured")))]
async fn queue_stats(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<QueueStats>> {
    is_admin(&state, &headers)?;
    Ok(Json(depth(&state).await?))
}
