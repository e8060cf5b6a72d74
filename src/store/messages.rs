//! Chat messages, numbered per workspace by a gap-free, strictly increasing `seq`.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::{Db, StoreError, uuid_col};
use crate::clock;

/// A chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    /// UUIDv7.
    pub id: Uuid,
    /// Workspace.
    pub workspace_id: Uuid,
    /// Author.
    pub user_id: Uuid,
    /// Text.
    pub body: String,
    /// The sender's own id for the message, for idempotent retries.
    pub client_id: Option<String>,
    /// Position in the workspace's chat, 1, 2, 3, … without gaps.
    pub seq: i64,
    /// RFC 3339.
    pub created_at: String,
}

const COLUMNS: &str = "id, workspace_id, user_id, body, client_id, seq, created_at";

fn message(row: &AnyRow) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: uuid_col(row, "id")?,
        workspace_id: uuid_col(row, "workspace_id")?,
        user_id: uuid_col(row, "user_id")?,
        body: row.try_get("body")?,
        client_id: row.try_get("client_id")?,
        seq: row.try_get("seq")?,
        created_at: clock::rfc3339(row.try_get("created_at")?),
    })
}

/// The message `user` already sent with `client_id`, if any.
pub async fn find_by_client_id<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    user: Uuid,
    client_id: &str,
) -> Result<Option<Message>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE workspace_id = $1 AND user_id = $2 AND client_id = $3"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace.to_string())
        .bind(user.to_string())
        .bind(client_id)
        .fetch_optional(ex)
        .await?;
    Ok(row.as_ref().map(message).transpose()?)
}

/// The message as [`append`] and [`append_committed`] wrote it.
fn written(
    id: Uuid,
    workspace: Uuid,
    user: Uuid,
    body: &str,
    client_id: Option<&str>,
    seq: i64,
    at_micros: i64,
) -> Message {
    Message {
        id,
        workspace_id: workspace,
        user_id: user,
        body: body.to_owned(),
        client_id: client_id.map(str::to_owned),
        seq,
        created_at: clock::rfc3339(at_micros),
    }
}

/// Appends a message with the workspace's next `seq` (run in a write transaction: the
/// counter row stays locked until commit, which is what keeps `seq` gap-free).
pub async fn append(
    conn: &mut AnyConnection,
    workspace: Uuid,
    user: Uuid,
    body: &str,
    client_id: Option<&str>,
) -> Result<Message, StoreError> {
    let seq: i64 = sqlx::query_scalar(
        "UPDATE workspaces SET last_message_seq = last_message_seq + 1 WHERE id = $1 \
         RETURNING last_message_seq",
    )
    .bind(workspace.to_string())
    .fetch_one(&mut *conn)
    .await?;
    let id = Uuid::now_v7();
    let now = clock::now_micros();
    sqlx::query(
        "INSERT INTO messages (id, workspace_id, user_id, body, client_id, seq, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.to_string())
    .bind(workspace.to_string())
    .bind(user.to_string())
    .bind(body)
    .bind(client_id)
    .bind(seq)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(written(id, workspace, user, body, client_id, seq, now))
}

/// Appends a message and commits it, in one round trip where the engine allows (see
/// [`super::Dialect::writable_ctes`]: the counter `UPDATE` locks the workspace row until
/// the statement's own commit, exactly as the transaction of [`append`] does).
/// A `client_id` already used by this user is a [`StoreError::Conflict`], and nothing
/// is written (no `seq` is spent).
pub async fn append_committed(
    db: &Db,
    workspace: Uuid,
    user: Uuid,
    body: &str,
    client_id: Option<&str>,
) -> Result<Message, StoreError> {
    if !db.dialect().writable_ctes() {
        let mut tx = db.begin().await?;
        let message = append(&mut tx, workspace, user, body, client_id).await?;
        tx.commit().await?;
        return Ok(message);
    }
    let id = Uuid::now_v7();
    let now = clock::now_micros();
    let seq: i64 = sqlx::query_scalar(
        "WITH s AS (UPDATE workspaces SET last_message_seq = last_message_seq + 1 \
         WHERE id = $1 RETURNING last_message_seq) \
         INSERT INTO messages (id, workspace_id, user_id, body, client_id, seq, created_at) \
         SELECT $2, $1, $3, $4, $5, s.last_message_seq, $6 FROM s RETURNING seq",
    )
    .bind(workspace.to_string())
    .bind(id.to_string())
    .bind(user.to_string())
    .bind(body)
    .bind(client_id)
    .bind(now)
    .fetch_optional(db.writer())
    .await?
    .ok_or_else(|| StoreError::Internal(sqlx::Error::RowNotFound))?;
    Ok(written(id, workspace, user, body, client_id, seq, now))
}

/// Newest first: at most `limit` messages with `seq < before`.
pub async fn list_before<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<Message>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE workspace_id = $1 AND ($2 IS NULL OR seq < $2) \
         ORDER BY seq DESC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace.to_string())
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(ex)
        .await?;
    Ok(rows.iter().map(message).collect::<Result<_, _>>()?)
}

/// Oldest first: at most `limit` messages with `seq > after` (resume after a drop).
pub async fn list_after<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    after: i64,
    limit: u32,
) -> Result<Vec<Message>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE workspace_id = $1 AND seq > $2 \
         ORDER BY seq ASC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(ex)
        .await?;
    Ok(rows.iter().map(message).collect::<Result<_, _>>()?)
}
