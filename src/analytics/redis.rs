//! The analytics opt-out list in Redis (distributed mode): one set
//! `{prefix}:analytics:opt_out` of user ids, shared by every instance. `SADD`/`SREM`
//! are idempotent and take effect for all instances as soon as they return; each call
//! is one round trip. The set has no expiry: an opt-out lasts until revoked.

use async_trait::async_trait;
use uuid::Uuid;

use super::OptOutStore;
use crate::backend_error::BackendError;
use crate::redis_client::RedisClient;

/// Opt-outs in one Redis set.
#[derive(Clone, Debug)]
pub struct RedisOptOutStore {
    client: RedisClient,
}

impl RedisOptOutStore {
    /// A store over `client`.
    pub fn new(client: RedisClient) -> Self {
        Self { client }
    }

    fn key(&self) -> String {
        self.client.key(&["analytics", "opt_out"])
    }
}

#[async_trait]
impl OptOutStore for RedisOptOutStore {
    async fn set(&self, user: Uuid, opted_out: bool) -> Result<(), BackendError> {
        let op = if opted_out { "SADD" } else { "SREM" };
        self.client
            .query::<()>(redis::cmd(op).arg(self.key()).arg(user.to_string()))
            .await
    }

    async fn is_opted_out(&self, user: Uuid) -> Result<bool, BackendError> {
        self.client
            .query(
                redis::cmd("SISMEMBER")
                    .arg(self.key())
                    .arg(user.to_string()),
            )
            .await
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.client.ping().await
    }
}
