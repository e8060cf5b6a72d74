//! Workspaces (the tenant boundary) and their members.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::{StoreError, uuid_col};
use crate::clock;

/// A member's role in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the workspace; may add members.
    Owner,
    /// Full member, may add members.
    Admin,
    /// Member.
    Member,
}

impl Role {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, sqlx::Error> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(sqlx::Error::Decode(
                format!("unknown role {other:?}").into(),
            )),
        }
    }
}

/// A workspace as one of its members sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workspace {
    /// UUIDv7.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// The caller's role in it.
    pub role: Role,
    /// RFC 3339.
    pub created_at: String,
}

/// A member of a workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// The member's user id.
    pub user_id: Uuid,
    /// E-mail.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role in the workspace.
    pub role: Role,
    /// When the member joined (RFC 3339).
    pub joined_at: String,
}

fn workspace(row: &AnyRow) -> Result<Workspace, sqlx::Error> {
    Ok(Workspace {
        id: uuid_col(row, "id")?,
        name: row.try_get("name")?,
        role: Role::parse(&row.try_get::<String, _>("role")?)?,
        created_at: clock::rfc3339(row.try_get("created_at")?),
    })
}

/// Creates a workspace with `owner` as its owner (two statements: run in a transaction).
pub async fn create(
    conn: &mut AnyConnection,
    owner: Uuid,
    name: &str,
) -> Result<Workspace, StoreError> {
    let id = Uuid::now_v7();
    let now = clock::now_micros();
    crate::db::query(
        "INSERT INTO workspaces (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id.to_string())
    .bind(name)
    .bind(owner.to_string())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    crate::db::query(
        "INSERT INTO members (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id.to_string())
    .bind(owner.to_string())
    .bind(Role::Owner.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Workspace {
        id,
        name: name.to_owned(),
        role: Role::Owner,
        created_at: clock::rfc3339(now),
    })
}

/// The workspaces `user` belongs to, oldest first.
pub async fn list_for_user<'e>(
    ex: impl Executor<'e, Database = Any>,
    user: Uuid,
) -> Result<Vec<Workspace>, StoreError> {
    let rows = crate::db::query(
        "SELECT w.id, w.name, w.created_at, m.role FROM members m \
         JOIN workspaces w ON w.id = m.workspace_id WHERE m.user_id = $1 ORDER BY w.id",
    )
    .bind(user.to_string())
    .fetch_all(ex)
    .await?;
    Ok(rows.iter().map(workspace).collect::<Result<_, _>>()?)
}

/// `user`'s role in `workspace`, `None` when not a member (or no such workspace).
pub async fn role_of<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    user: Uuid,
) -> Result<Option<Role>, StoreError> {
    let row = crate::db::query("SELECT role FROM members WHERE workspace_id = $1 AND user_id = $2")
        .bind(workspace.to_string())
        .bind(user.to_string())
        .fetch_optional(ex)
        .await?;
    Ok(row
        .map(|r| Role::parse(&r.try_get::<String, _>("role")?))
        .transpose()?)
}

/// Adds `user` to `workspace`; [`StoreError::Conflict`] when already a member.
pub async fn add_member<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    user: Uuid,
    role: Role,
) -> Result<(), StoreError> {
    crate::db::query(
        "INSERT INTO members (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(workspace.to_string())
    .bind(user.to_string())
    .bind(role.as_str())
    .bind(clock::now_micros())
    .execute(ex)
    .await?;
    Ok(())
}

/// Removes `user` from `workspace` (inside the caller's transaction). The workspace
/// row is locked first, so removals of one workspace run one after another and the
/// last owner is never removed ([`RemoveOutcome::LastOwner`]), however they interleave.
pub async fn remove_member(
    conn: &mut AnyConnection,
    workspace: Uuid,
    user: Uuid,
) -> Result<RemoveOutcome, StoreError> {
    crate::db::query("UPDATE workspaces SET name = name WHERE id = $1")
        .bind(workspace.to_string())
        .execute(&mut *conn)
        .await?;
    let role = role_of(&mut *conn, workspace, user).await?;
    let Some(role) = role else {
        return Ok(RemoveOutcome::NotMember);
    };
    let removed = crate::db::query(
        "DELETE FROM members WHERE workspace_id = $1 AND user_id = $2 \
         AND (role <> 'owner' OR (SELECT COUNT(*) FROM members \
              WHERE workspace_id = $1 AND role = 'owner') > 1)",
    )
    .bind(workspace.to_string())
    .bind(user.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(match (removed, role) {
        (0, Role::Owner) => RemoveOutcome::LastOwner,
        (0, _) => RemoveOutcome::NotMember,
        _ => RemoveOutcome::Removed(role),
    })
}

/// What [`remove_member`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// Removed; the role it had.
    Removed(Role),
    /// Not a member (any more).
    NotMember,
    /// The workspace's only owner: not removed.
    LastOwner,
}

/// What [`set_role`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// Changed from this role.
    Changed(Role),
    /// Not a member.
    NotMember,
    /// The workspace's only owner would stop being one.
    LastOwner,
}

/// Gives `user` the role `role` in `workspace` (inside the caller's transaction),
/// under the same lock as [`remove_member`]: the last owner is never demoted.
pub async fn set_role(
    conn: &mut AnyConnection,
    workspace: Uuid,
    user: Uuid,
    role: Role,
) -> Result<RoleChange, StoreError> {
    crate::db::query("UPDATE workspaces SET name = name WHERE id = $1")
        .bind(workspace.to_string())
        .execute(&mut *conn)
        .await?;
    let Some(before) = role_of(&mut *conn, workspace, user).await? else {
        return Ok(RoleChange::NotMember);
    };
    if before == Role::Owner && role != Role::Owner {
        let owners: i64 = crate::db::query(
            "SELECT COUNT(*) AS n FROM members WHERE workspace_id = $1 AND role = 'owner'",
        )
        .bind(workspace.to_string())
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
        if owners <= 1 {
            return Ok(RoleChange::LastOwner);
        }
    }
    crate::db::query("UPDATE members SET role = $3 WHERE workspace_id = $1 AND user_id = $2")
        .bind(workspace.to_string())
        .bind(user.to_string())
        .bind(role.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(RoleChange::Changed(before))
}

/// One member of `workspace`.
pub async fn member<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
    user: Uuid,
) -> Result<Option<Member>, StoreError> {
    let row = crate::db::query(
        "SELECT u.id, u.email, u.display_name, m.role, m.created_at FROM members m \
         JOIN users u ON u.id = m.user_id WHERE m.workspace_id = $1 AND m.user_id = $2",
    )
    .bind(workspace.to_string())
    .bind(user.to_string())
    .fetch_optional(ex)
    .await?;
    Ok(row.as_ref().map(member_row).transpose()?)
}

/// The members of `workspace`, in joining order.
pub async fn members<'e>(
    ex: impl Executor<'e, Database = Any>,
    workspace: Uuid,
) -> Result<Vec<Member>, StoreError> {
    let rows = crate::db::query(
        "SELECT u.id, u.email, u.display_name, m.role, m.created_at FROM members m \
         JOIN users u ON u.id = m.user_id WHERE m.workspace_id = $1 ORDER BY m.created_at, u.id",
    )
    .bind(workspace.to_string())
    .fetch_all(ex)
    .await?;
    Ok(rows.iter().map(member_row).collect::<Result<_, _>>()?)
}

fn member_row(row: &AnyRow) -> Result<Member, sqlx::Error> {
    Ok(Member {
        user_id: uuid_col(row, "id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        role: Role::parse(&row.try_get::<String, _>("role")?)?,
        joined_at: clock::rfc3339(row.try_get("created_at")?),
    })
}
