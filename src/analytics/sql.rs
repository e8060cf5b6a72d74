//! Opt-outs in the `analytics_opt_outs` table.

use async_trait::async_trait;
use uuid::Uuid;

use super::OptOutStore;
use crate::backend_error::BackendError;
use crate::clock;
use crate::db::Db;

/// Opt-outs in the database.
pub struct SqlOptOutStore {
    db: Db,
}

impl SqlOptOutStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl OptOutStore for SqlOptOutStore {
    async fn set(&self, user: Uuid, opted_out: bool) -> Result<(), BackendError> {
        if opted_out {
            crate::db::query(
                "INSERT INTO analytics_opt_outs (user_id, created_at) VALUES ($1, $2) \
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user.to_string())
            .bind(clock::now_micros())
            .execute(self.db.writer())
            .await?;
        } else {
            crate::db::query("DELETE FROM analytics_opt_outs WHERE user_id = $1")
                .bind(user.to_string())
                .execute(self.db.writer())
                .await?;
        }
        Ok(())
    }

    async fn is_opted_out(&self, user: Uuid) -> Result<bool, BackendError> {
        let row = crate::db::query("SELECT 1 AS one FROM analytics_opt_outs WHERE user_id = $1")
            .bind(user.to_string())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some())
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.db
            .ping()
            .await
            .map_err(|e| BackendError::unavailable("database", e))
    }
}
