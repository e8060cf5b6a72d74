//! Refresh-token families. A login starts a family; each refresh marks the presented
//! token used and adds its successor. Presenting a used token again means it leaked:
//! the whole family is revoked (RFC 6819 §5.2.2.3, "refresh token rotation").
//! Only a SHA-256 of each token is stored.

use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::{StoreError, uuid_col};
use crate::clock;

/// The state of a stored refresh token, as the refresh endpoint needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// Its family.
    pub family_id: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// The session the family belongs to.
    pub session_key: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// Already exchanged for a successor.
    pub used: bool,
    /// The family was revoked (logout or reuse).
    pub family_revoked: bool,
    /// Expiry, microseconds since the epoch.
    pub expires_at: i64,
}

/// Starts a family for a new login.
pub async fn create_family<'e>(
    ex: impl Executor<'e, Database = Any>,
    family: Uuid,
    user: Uuid,
    session_key: &str,
) -> Result<(), StoreError> {
    crate::db::query(
        "INSERT INTO refresh_families (id, user_id, session_key, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(family.to_string())
    .bind(user.to_string())
    .bind(session_key)
    .bind(clock::now_micros())
    .execute(ex)
    .await?;
    Ok(())
}

/// Stores a newly issued token of `family`.
pub async fn insert<'e>(
    ex: impl Executor<'e, Database = Any>,
    jti: Uuid,
    family: Uuid,
    token_hash: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    crate::db::query(
        "INSERT INTO refresh_tokens (jti, family_id, token_hash, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(jti.to_string())
    .bind(family.to_string())
    .bind(token_hash)
    .bind(expires_at)
    .bind(clock::now_micros())
    .execute(ex)
    .await?;
    Ok(())
}

/// The token `jti` with its family's state.
pub async fn find(conn: &mut AnyConnection, jti: Uuid) -> Result<Option<StoredToken>, StoreError> {
    let row = crate::db::query(
        "SELECT t.family_id, f.user_id, f.session_key, t.token_hash, t.used_at, f.revoked_at, \
         t.expires_at FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
         WHERE t.jti = $1",
    )
    .bind(jti.to_string())
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(StoredToken {
        family_id: uuid_col(&row, "family_id")?,
        user_id: uuid_col(&row, "user_id")?,
        session_key: row.try_get("session_key")?,
        token_hash: row.try_get("token_hash")?,
        used: row.try_get::<Option<i64>, _>("used_at")?.is_some(),
        family_revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        expires_at: row.try_get("expires_at")?,
    }))
}

/// Marks `jti` used; false when it already was (a concurrent refresh won).
pub async fn mark_used(conn: &mut AnyConnection, jti: Uuid) -> Result<bool, StoreError> {
    let done = crate::db::query(
        "UPDATE refresh_tokens SET used_at = $2 WHERE jti = $1 AND used_at IS NULL",
    )
    .bind(jti.to_string())
    .bind(clock::now_micros())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes a family; returns its session key so the caller can end that session too.
pub async fn revoke_family<'e>(
    ex: impl Executor<'e, Database = Any>,
    family: Uuid,
) -> Result<(), StoreError> {
    crate::db::query(
        "UPDATE refresh_families SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(family.to_string())
    .bind(clock::now_micros())
    .execute(ex)
    .await?;
    Ok(())
}
