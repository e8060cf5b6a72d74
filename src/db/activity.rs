//! The activity log of a workspace: one row per task change, written in the same
//! transaction as the change itself.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::{StoreError, opt_uuid_col, uuid_col};
use crate::clock;

/// One entry of the activity feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Activity {
    /// UUIDv7.
    pub id: Uuid,
    /// Workspace.
    pub workspace_id: Uuid,
    /// Who did it.
    pub actor_id: Uuid,
    /// `task.created`, `task.updated`, `task.deleted`.
    pub kind: String,
    /// The task concerned.
    pub task_id: Option<Uuid>,
    /// Details (for updates: `{"changes": {field: {"from", "to"}}}`).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// RFC 3339.
    pub created_at: String,
}

/// Appends an entry (inside the caller's transaction).
pub async fn record(
    conn: &mut AnyConnection,
    workspace: Uuid,
    actor: Uuid,
    kind: &str,
    task: Option<Uuid>,
    data: &serde_json::Value,
) -> Result<(), StoreError> {
    crate::db::query(
        "INSERT INTO activity (id, workspace_id, actor_id, kind, task_id, data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(workspace.to_string())
    .bind(actor.to_string())
    .bind(kind)
    .bind(task.map(|t| t.to_string()))
    .bind(data.to_string())
    .bind(clock::now_micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// Newest first; `before` is the id of the last entry of the previous page.
pub async fn list<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    before: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Activity>, StoreError> {
    let rows = crate::db::query(
        "SELECT id, workspace_id, actor_id, kind, task_id, data, created_at FROM activity \
         WHERE workspace_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(workspace.to_string())
    .bind(before.map(|b| b.to_string()))
    .bind(i64::from(limit))
    .fetch_all(ex)
    .await?;
    Ok(rows.iter().map(activity).collect::<Result<_, _>>()?)
}

fn activity(row: &AnyRow) -> Result<Activity, sqlx::Error> {
    let data: String = row.try_get("data")?;
    Ok(Activity {
        id: uuid_col(row, "id")?,
        workspace_id: uuid_col(row, "workspace_id")?,
        actor_id: uuid_col(row, "actor_id")?,
        kind: row.try_get("kind")?,
        task_id: opt_uuid_col(row, "task_id")?,
        data: serde_json::from_str(&data).map_err(|e| sqlx::Error::Decode(e.into()))?,
        created_at: clock::rfc3339(row.try_get("created_at")?),
    })
}
