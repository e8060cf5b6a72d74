//! User look-ups through the cache: `GET /api/me` and friends read a user without a
//! database query on a hit; every change invalidates the entry on all instances.

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use uuid::Uuid;

use crate::backend_error::BackendError;
use crate::cache::Cache;
use crate::db::users::User;
use crate::db::{Db, users};

/// Cached user look-ups.
#[derive(Clone)]
pub struct UserDirectory {
    db: Db,
    cache: Arc<dyn Cache>,
}

impl UserDirectory {
    /// Look-ups over `db`, cached in `cache`.
    pub fn new(db: Db, cache: Arc<dyn Cache>) -> Self {
        Self { db, cache }
    }

    fn key(id: Uuid) -> String {
        format!("user:{id}")
    }

    /// The user, from the cache or (once per instance on a miss) the database.
    pub async fn get(&self, id: Uuid) -> Result<Option<User>, BackendError> {
        let Some(bytes) = self.get_json(id).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| BackendError::corrupt("cache", e))
    }

    /// The user as its JSON representation (what `GET /api/me` answers), straight
    /// from the cache: no parse and re-serialisation on the hot path.
    pub async fn get_json(&self, id: Uuid) -> Result<Option<Bytes>, BackendError> {
        let db = self.db.clone();
        let load = async move {
            let user = users::find(db.pool(), id)
                .await
                .map_err(|e| BackendError::unavailable("database", e))?;
            user.map(|u| serde_json::to_vec(&u).map(Bytes::from))
                .transpose()
                .map_err(|e| BackendError::corrupt("cache", e))
        }
        .boxed();
        self.cache.get_or_load(&Self::key(id), load).await
    }

    /// Forgets the cached user on every instance (after a change).
    pub async fn invalidate(&self, id: Uuid) -> Result<(), BackendError> {
        self.cache.invalidate(&Self::key(id)).await
    }

    /// Readiness of the cache's shared level.
    pub async fn check(&self) -> Result<(), BackendError> {
        self.cache.check().await
    }
}
