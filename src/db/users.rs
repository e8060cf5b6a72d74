//! Accounts.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use uuid::Uuid;

use super::{StoreError, uuid_col};
use crate::clock;

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    /// UUIDv7.
    pub id: Uuid,
    /// Lower-cased e-mail address, unique.
    pub email: String,
    /// Name shown to other members.
    pub display_name: String,
    /// RFC 3339.
    pub created_at: String,
}

fn user(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: uuid_col(row, "id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        created_at: clock::rfc3339(row.try_get("created_at")?),
    })
}

/// Inserts a user; [`StoreError::Conflict`] when the e-mail is taken.
pub async fn create<'e>(
    ex: impl Executor<'e, Database = Any>,
    email: &str,
    password_hash: &str,
    display_name: &str,
) -> Result<User, StoreError> {
    let id = Uuid::now_v7();
    let now = clock::now_micros();
    crate::db::query(
        "INSERT INTO users (id, email, password_hash, display_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(id.to_string())
    .bind(email)
    .bind(password_hash)
    .bind(display_name)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(User {
        id,
        email: email.to_owned(),
        display_name: display_name.to_owned(),
        created_at: clock::rfc3339(now),
    })
}

/// The user and its password hash, by e-mail (for login).
pub async fn find_credentials<'e>(
    ex: impl Executor<'e, Database = Any>,
    email: &str,
) -> Result<Option<(User, String)>, StoreError> {
    let row = crate::db::query(
        "SELECT id, email, display_name, created_at, password_hash FROM users WHERE email = $1",
    )
    .bind(email)
    .fetch_optional(ex)
    .await?;
    Ok(row
        .map(|r| Ok::<_, sqlx::Error>((user(&r)?, r.try_get("password_hash")?)))
        .transpose()?)
}

/// The user by id.
pub async fn find<'e>(
    ex: impl Executor<'e, Database = Any>,
    id: Uuid,
) -> Result<Option<User>, StoreError> {
    let row =
        crate::db::query("SELECT id, email, display_name, created_at FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(ex)
            .await?;
    Ok(row.as_ref().map(user).transpose()?)
}

/// The user id by e-mail.
pub async fn find_id_by_email<'e>(
    ex: impl Executor<'e, Database = Any>,
    email: &str,
) -> Result<Option<Uuid>, StoreError> {
    let row = crate::db::query("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(ex)
        .await?;
    Ok(row.as_ref().map(|r| uuid_col(r, "id")).transpose()?)
}

/// Changes the display name; `None` when the user does not exist.
pub async fn update_display_name<'e>(
    ex: impl Executor<'e, Database = Any>,
    id: Uuid,
    display_name: &str,
) -> Result<Option<User>, StoreError> {
    let row = crate::db::query(
        "UPDATE users SET display_name = $2, updated_at = $3 WHERE id = $1 \
         RETURNING id, email, display_name, created_at",
    )
    .bind(id.to_string())
    .bind(display_name)
    .bind(clock::now_micros())
    .fetch_optional(ex)
    .await?;
    Ok(row.as_ref().map(user).transpose()?)
}
