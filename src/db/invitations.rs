//! Invitations to a workspace (migrations/*/0005_invitations.sql).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::workspaces::Role;
use super::{StoreError, uuid_col};
use crate::clock;

/// An invitation as its owner and its invitee see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Invitation {
    /// Its id.
    pub id: Uuid,
    /// The workspace.
    pub workspace_id: Uuid,
    /// The workspace's name.
    pub workspace_name: String,
    /// The invited address (lower-cased).
    pub email: String,
    /// The role accepting gives.
    pub role: Role,
    /// Who invited.
    pub invited_by: Uuid,
    /// `pending`, `accepted`, `declined` or `revoked`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
}

const SELECT: &str = "SELECT i.id, i.workspace_id, w.name AS workspace_name, i.email, i.role, \
     i.invited_by, i.status, i.created_at FROM invitations i \
     JOIN workspaces w ON w.id = i.workspace_id";

fn invitation(row: &AnyRow) -> Result<Invitation, StoreError> {
    let uuid = |col: &str| uuid_col(row, col);
    Ok(Invitation {
        id: uuid("id")?,
        workspace_id: uuid("workspace_id")?,
        workspace_name: row.try_get("workspace_name")?,
        email: row.try_get("email")?,
        role: Role::parse(&row.try_get::<String, _>("role")?)?,
        invited_by: uuid("invited_by")?,
        status: row.try_get("status")?,
        created_at: clock::rfc3339(row.try_get("created_at")?),
    })
}

/// What [`create`] did.
#[derive(Debug)]
pub enum Created {
    /// A new invitation, or the pending one for this address.
    Pending(Invitation),
    /// The workspace already has this many pending invitations.
    TooMany(i64),
}

/// Invites `email` to `workspace` with `role` (inside the caller's transaction): the
/// pending invitation for that address if there is one, else a new one unless the
/// workspace already has `max_pending`. The workspace row is locked first, so
/// parallel invitations of one workspace are counted one after another.
pub async fn create(
    conn: &mut AnyConnection,
    workspace: Uuid,
    email: &str,
    role: Role,
    invited_by: Uuid,
    max_pending: i64,
) -> Result<Created, StoreError> {
    crate::db::query("UPDATE workspaces SET name = name WHERE id = $1")
        .bind(workspace.to_string())
        .execute(&mut *conn)
        .await?;
    let existing = crate::db::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE i.workspace_id = $1 AND i.email = $2 AND i.status = 'pending'"
    )))
    .bind(workspace.to_string())
    .bind(email)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = existing {
        return Ok(Created::Pending(invitation(&row)?));
    }
    let pending: i64 = crate::db::query(
        "SELECT COUNT(*) AS n FROM invitations WHERE workspace_id = $1 AND status = 'pending'",
    )
    .bind(workspace.to_string())
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    if pending >= max_pending {
        return Ok(Created::TooMany(pending));
    }
    let id = Uuid::now_v7();
    crate::db::query(
        "INSERT INTO invitations (id, workspace_id, email, role, invited_by, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
    )
    .bind(id.to_string())
    .bind(workspace.to_string())
    .bind(email)
    .bind(role.as_str())
    .bind(invited_by.to_string())
    .bind(clock::now_micros())
    .execute(&mut *conn)
    .await?;
    let row = crate::db::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE i.id = $1")))
        .bind(id.to_string())
        .fetch_one(&mut *conn)
        .await?;
    Ok(Created::Pending(invitation(&row)?))
}

/// The pending invitations of `workspace`, oldest first.
pub async fn pending_of_workspace<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
) -> Result<Vec<Invitation>, StoreError> {
    let rows = crate::db::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE i.workspace_id = $1 AND i.status = 'pending' ORDER BY i.id"
    )))
    .bind(workspace.to_string())
    .fetch_all(ex)
    .await?;
    rows.iter().map(invitation).collect()
}

/// The pending invitations addressed to `email`, oldest first (at most 100).
pub async fn pending_for_email<'e>(
    ex: impl Executor<'e, Database = Any>,
    email: &str,
) -> Result<Vec<Invitation>, StoreError> {
    let rows = crate::db::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE i.email = $1 AND i.status = 'pending' ORDER BY i.id LIMIT 100"
    )))
    .bind(email)
    .fetch_all(ex)
    .await?;
    rows.iter().map(invitation).collect()
}

/// The invitation `id`, whatever its status.
pub async fn get<'e>(
    ex: impl Executor<'e, Database = Any>,
    id: Uuid,
) -> Result<Option<Invitation>, StoreError> {
    let row = crate::db::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE i.id = $1")))
        .bind(id.to_string())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(invitation).transpose()
}

/// Moves a pending invitation to `status` (`accepted`, `declined`, `revoked`); false
/// when it was no longer pending (answered or revoked meanwhile).
pub async fn answer(conn: &mut AnyConnection, id: Uuid, status: &str) -> Result<bool, StoreError> {
    let changed = crate::db::query(
        "UPDATE invitations SET status = $2, answered_at = $3 WHERE id = $1 AND status = 'pending'",
    )
    .bind(id.to_string())
    .bind(status)
    .bind(clock::now_micros())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed == 1)
}
