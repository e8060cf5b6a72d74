//! Tasks, with optimistic concurrency on `version`.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::{StoreError, opt_uuid_col, uuid_col};
use crate::clock;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not started.
    Todo,
    /// Being worked on.
    InProgress,
    /// Finished.
    Done,
}

impl Status {
    /// Stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Todo => "todo",
            Status::InProgress => "in_progress",
            Status::Done => "done",
        }
    }

    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "todo" => Some(Status::Todo),
            "in_progress" => Some(Status::InProgress),
            "done" => Some(Status::Done),
            _ => None,
        }
    }
}

/// A task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    /// UUIDv7.
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// Title.
    pub title: String,
    /// Free text.
    pub description: Option<String>,
    /// Status.
    pub status: Status,
    /// Assigned member.
    pub assignee_id: Option<Uuid>,
    /// Starts at 1, +1 on every change; send it back to update.
    pub version: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// The mutable fields of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFields {
    /// Title.
    pub title: String,
    /// Free text.
    pub description: Option<String>,
    /// Status.
    pub status: Status,
    /// Assigned member.
    pub assignee_id: Option<Uuid>,
}

const COLUMNS: &str =
    "id, workspace_id, title, description, status, assignee_id, version, created_at, updated_at";

fn task(row: &AnyRow) -> Result<Task, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Task {
        id: uuid_col(row, "id")?,
        workspace_id: uuid_col(row, "workspace_id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status:?}").into()))?,
        assignee_id: opt_uuid_col(row, "assignee_id")?,
        version: row.try_get("version")?,
        created_at: clock::rfc3339(row.try_get("created_at")?),
        updated_at: clock::rfc3339(row.try_get("updated_at")?),
    })
}

/// Inserts a task at version 1.
pub async fn insert(
    conn: &mut AnyConnection,
    workspace: Uuid,
    creator: Uuid,
    fields: &TaskFields,
) -> Result<Task, StoreError> {
    let id = Uuid::now_v7();
    let now = clock::now_micros();
    crate::db::query(
        "INSERT INTO tasks (id, workspace_id, title, description, status, assignee_id, version, \
         created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $8)",
    )
    .bind(id.to_string())
    .bind(workspace.to_string())
    .bind(&fields.title)
    .bind(fields.description.clone())
    .bind(fields.status.as_str())
    .bind(fields.assignee_id.map(|a| a.to_string()))
    .bind(creator.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(Task {
        id,
        workspace_id: workspace,
        title: fields.title.clone(),
        description: fields.description.clone(),
        status: fields.status,
        assignee_id: fields.assignee_id,
        version: 1,
        created_at: clock::rfc3339(now),
        updated_at: clock::rfc3339(now),
    })
}

/// One task of `workspace`.
pub async fn get<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    id: Uuid,
) -> Result<Option<Task>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1 AND workspace_id = $2");
    let row = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .bind(workspace.to_string())
        .fetch_optional(ex)
        .await?;
    Ok(row.as_ref().map(task).transpose()?)
}

/// Filters of the task list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only tasks assigned to this user.
    pub assignee: Option<Uuid>,
    /// Continue after this id (keyset pagination).
    pub before: Option<Uuid>,
}

/// Newest first, at most `limit`.
pub async fn list<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    filter: &Filter,
    limit: u32,
) -> Result<Vec<Task>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks WHERE workspace_id = $1 \
         AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR assignee_id = $3) \
         AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
    );
    let rows = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace.to_string())
        .bind(filter.status.map(|s| s.as_str().to_owned()))
        .bind(filter.assignee.map(|a| a.to_string()))
        .bind(filter.before.map(|b| b.to_string()))
        .bind(i64::from(limit))
        .fetch_all(ex)
        .await?;
    Ok(rows.iter().map(task).collect::<Result<_, _>>()?)
}

/// Writes `fields` if the stored version is still `expected_version`; returns the new
/// task, or `None` when the version moved on (or the task is gone) meanwhile.
pub async fn update(
    conn: &mut AnyConnection,
    workspace: Uuid,
    id: Uuid,
    expected_version: i64,
    fields: &TaskFields,
) -> Result<Option<Task>, StoreError> {
    let sql = format!(
        "UPDATE tasks SET title = $1, description = $2, status = $3, assignee_id = $4, \
         version = version + 1, updated_at = $5 \
         WHERE id = $6 AND workspace_id = $7 AND version = $8 RETURNING {COLUMNS}"
    );
    let row = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(&fields.title)
        .bind(fields.description.clone())
        .bind(fields.status.as_str())
        .bind(fields.assignee_id.map(|a| a.to_string()))
        .bind(clock::now_micros())
        .bind(id.to_string())
        .bind(workspace.to_string())
        .bind(expected_version)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(task).transpose()?)
}

/// Deletes the task (at `expected_version` when given); returns what was deleted.
pub async fn delete(
    conn: &mut AnyConnection,
    workspace: Uuid,
    id: Uuid,
    expected_version: Option<i64>,
) -> Result<Option<Task>, StoreError> {
    let sql = format!(
        "DELETE FROM tasks WHERE id = $1 AND workspace_id = $2 AND ($3 IS NULL OR version = $3) \
         RETURNING {COLUMNS}"
    );
    let row = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .bind(workspace.to_string())
        .bind(expected_version)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(task).transpose()?)
}
