//! Sessions in Redis (distributed mode): one string per session under
//! `{prefix}:session:{key}`, written with `SET … PX ttl`, so that Redis itself expires
//! it and every instance sees the same record.
//!
//! The value is stored as given: it is already sealed (AEAD) by
//! `crate::auth::sessions`, and `key` is already an HMAC of the cookie, so a
//! `redis-cli` user sees neither a usable cookie nor a user id. Every operation is one
//! round trip, bounded by the client's command timeout.

use std::time::Duration;

use async_trait::async_trait;

use super::SessionStore;
use crate::backend_error::BackendError;
use crate::redis_client::RedisClient;

/// Sessions in Redis; shared by every instance on the same server and prefix.
#[derive(Clone, Debug)]
pub struct RedisSessionStore {
    client: RedisClient,
}

impl RedisSessionStore {
    /// A store over `client`.
    pub fn new(client: RedisClient) -> Self {
        Self { client }
    }

    fn key(&self, key: &str) -> String {
        self.client.key(&["session", key])
    }
}

/// Milliseconds for `PX`, at least 1 (Redis rejects 0).
pub(crate) fn px(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.client
            .query::<()>(
                redis::cmd("SET")
                    .arg(self.key(key))
                    .arg(value)
                    .arg("PX")
                    .arg(px(ttl)),
            )
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.client
            .query(redis::cmd("GET").arg(self.key(key)))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.client
            .query::<()>(redis::cmd("DEL").arg(self.key(key)))
            .await
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.client.ping().await
    }
}
