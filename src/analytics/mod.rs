//! The analytics opt-out list, shared by every instance: a user who opts out on one
//! instance is opted out on all of them, at once.
//!
//! [`sql::SqlOptOutStore`] keeps the list in the database (embedded mode: durable
//! like the rest of the SQLite file); [`redis::RedisOptOutStore`] keeps it in one
//! Redis set shared by all instances.

pub mod redis;
pub mod sql;

use async_trait::async_trait;
use uuid::Uuid;

use crate::backend_error::BackendError;

/// Contract:
/// - after `set(user, true)` returns, `is_opted_out(user)` is true on every instance
///   until `set(user, false)`; unknown users are not opted out;
/// - `set` is idempotent.
#[async_trait]
pub trait OptOutStore: Send + Sync + 'static {
    /// Opts `user` out (`true`) or back in (`false`).
    async fn set(&self, user: Uuid, opted_out: bool) -> Result<(), BackendError>;
    /// Whether `user` has opted out.
    async fn is_opted_out(&self, user: Uuid) -> Result<bool, BackendError>;
    /// Readiness of the backend.
    async fn check(&self) -> Result<(), BackendError>;
}
