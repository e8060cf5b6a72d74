//! Server-side session storage: opaque, already-encrypted records under a key, with
//! an expiry.
//!
//! The store never sees plaintext: [`crate::auth::sessions`] seals every record with
//! an AEAD before it reaches a backend, and the key is an HMAC of the cookie value, so
//! neither a database dump nor `redis-cli KEYS` reveals a usable cookie or a user id.
//!
//! Backends: [`sql::SqlSessionStore`] (embedded mode, survives restarts with the
//! SQLite file) and, in distributed mode, [`durable::DurableSessionStore`]: the
//! database as the truth and [`redis::RedisSessionStore`] as the copy every instance
//! reads, so that a Redis outage or an empty Redis logs nobody out.

pub mod durable;
pub mod redis;
pub mod sql;

use std::time::Duration;

use async_trait::async_trait;

use crate::backend_error::BackendError;

/// Contract:
/// - `put` replaces any previous value and (re)starts the expiry at `ttl`.
/// - `get` returns `None` for an unknown key and for one whose `ttl` has passed,
///   whichever instance wrote it.
/// - `delete` is idempotent; after it returns, `get` returns `None` on every instance.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores `value` under `key` for `ttl`.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError>;
    /// The live value under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError>;
    /// Removes `key`.
    async fn delete(&self, key: &str) -> Result<(), BackendError>;
    /// Readiness: can the backend serve requests right now?
    async fn check(&self) -> Result<(), BackendError>;
}
