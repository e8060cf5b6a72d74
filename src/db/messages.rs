//! Chat messages, numbered per workspace by a gap-free, strictly increasing `seq`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
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
    let row = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace.to_string())
        .bind(user.to_string())
        .bind(client_id)
        .fetch_optional(ex)
        .await?;
    Ok(row.as_ref().map(message).transpose()?)
}

/// A message to append: who sends what.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// Author.
    pub user: Uuid,
    /// Text.
    pub body: &'a str,
    /// The sender's own id for the message.
    pub client_id: Option<&'a str>,
}

/// Appends `batch` (one message or more) to the workspace's chat and commits it: one
/// commit, consecutive `seq`s in batch order, all or nothing; the messages in that
/// order. The counter `UPDATE` locks the workspace row until the commit, which is
/// what keeps `seq` gap-free (and what serialises one workspace's commits: see
/// [`super::message_writer`]). A `client_id` already used by its user is a
/// [`StoreError::Conflict`], and nothing is written (no `seq` is spent).
pub async fn append_committed(
    db: &Db,
    workspace: Uuid,
    batch: &[NewMessage<'_>],
) -> Result<Vec<Message>, StoreError> {
    // usize -> i64: a batch is tiny next to i64::MAX.
    let ordinal = |i: usize| i64::try_from(i).unwrap_or(i64::MAX);
    let n = ordinal(batch.len());
    let now = clock::now_micros();
    let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
    let wid = workspace.to_string();
    let base: i64 = if db.dialect().writable_ctes() {
        // One statement, one round trip (see `Dialect::writable_ctes`): the UPDATE in
        // the WITH holds the row lock until the statement's own commit.
        let sql = format!(
            "WITH s AS (UPDATE workspaces SET last_message_seq = last_message_seq + $2 \
             WHERE id = $1 RETURNING last_message_seq - $2 AS base) \
             INSERT INTO messages (id, workspace_id, user_id, body, client_id, seq, created_at) \
             SELECT v.id, $1, v.user_id, v.body, v.client_id, s.base + v.ord, $3 \
             FROM s CROSS JOIN (VALUES {}) AS v(ord, id, user_id, body, client_id) \
             RETURNING seq",
            placeholders(batch.len(), 4, 5)
        );
        let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .persistent(super::pooling::named())
            .bind(wid)
            .bind(n)
            .bind(now);
        for (i, (m, id)) in batch.iter().zip(&ids).enumerate() {
            query = query
                .bind(ordinal(i) + 1)
                .bind(id.to_string())
                .bind(m.user.to_string())
                .bind(m.body)
                .bind(m.client_id);
        }
        let seqs = query.fetch_all(db.writer()).await?;
        // No row: the workspace is gone.
        match seqs.iter().min() {
            Some(first) if seqs.len() == batch.len() => first - 1,
            _ => return Err(StoreError::Internal(sqlx::Error::RowNotFound)),
        }
    } else {
        // SQLite: no UPDATE inside WITH, and no column names for a VALUES list; two
        // statements in one transaction (one commit) on the single writer connection.
        let mut tx = db.begin().await?;
        let last: i64 = sqlx::query_scalar(
            "UPDATE workspaces SET last_message_seq = last_message_seq + $2 WHERE id = $1 \
             RETURNING last_message_seq",
        )
        .persistent(super::pooling::named())
        .bind(wid.clone())
        .bind(n)
        .fetch_one(&mut *tx)
        .await?;
        let base = last - n;
        let sql = format!(
            "INSERT INTO messages (id, workspace_id, user_id, body, client_id, seq, created_at) \
             VALUES {}",
            placeholders(batch.len(), 1, 7)
        );
        let mut query = crate::db::query(sqlx::AssertSqlSafe(sql));
        for (i, (m, id)) in batch.iter().zip(&ids).enumerate() {
            query = query
                .bind(id.to_string())
                .bind(wid.clone())
                .bind(m.user.to_string())
                .bind(m.body)
                .bind(m.client_id)
                .bind(base + ordinal(i) + 1)
                .bind(now);
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        base
    };
    Ok(batch
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (m, id))| Message {
            id,
            workspace_id: workspace,
            user_id: m.user,
            body: m.body.to_owned(),
            client_id: m.client_id.map(str::to_owned),
            seq: base + ordinal(i) + 1,
            created_at: clock::rfc3339(now),
        })
        .collect())
}

/// `($first, …), (…), …`: `rows` tuples of `width` numbered placeholders.
fn placeholders(rows: usize, first: usize, width: usize) -> String {
    let mut out = String::new();
    for row in 0..rows {
        out.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..width {
            let sep = if col == 0 { "" } else { ", " };
            let _ = write!(out, "{sep}${}", first + row * width + col);
        }
        out.push(')');
    }
    out
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
    let rows = crate::db::query(sqlx::AssertSqlSafe(sql))
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
    let rows = crate::db::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(ex)
        .await?;
    Ok(rows.iter().map(message).collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_number_rows_after_the_fixed_parameters() {
        assert_eq!(placeholders(1, 4, 2), "($4, $5)");
        assert_eq!(placeholders(2, 1, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
