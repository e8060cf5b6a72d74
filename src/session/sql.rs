//! Sessions in the database (embedded mode): they survive a restart with the SQLite
//! file. Expired rows are ignored on read and removed by [`SqlSessionStore::purge_expired`].

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;

use super::SessionStore;
use crate::backend_error::BackendError;
use crate::clock;
use crate::store::Db;

/// Sessions in the `sessions` table.
pub struct SqlSessionStore {
    db: Db,
}

impl SqlSessionStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Deletes expired sessions; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, BackendError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(clock::now_micros())
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl SessionStore for SqlSessionStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let expires = clock::now_micros()
            .saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        sqlx::query(
            "INSERT INTO sessions (key, value, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(value.to_vec())
        .bind(expires)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let row = sqlx::query("SELECT value FROM sessions WHERE key = $1 AND expires_at > $2")
            .bind(key)
            .bind(clock::now_micros())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>("value")).transpose()?)
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        sqlx::query("DELETE FROM sessions WHERE key = $1")
            .bind(key)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.db
            .ping()
            .await
            .map_err(|e| BackendError::unavailable("database", e))
    }
}
