//! Who is online in a room (a workspace), across all instances.
//!
//! Entries are per connection and expire unless refreshed, so the connections of an
//! instance that died without saying goodbye disappear after their TTL.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend_error::BackendError;

/// Contract:
/// - after `join(room, conn, info, ttl)`, `list(room)` contains `(conn, info)` on
///   every instance until `leave(room, conn)` or until `ttl` passes without another
///   `join` of the same pair (which refreshes it);
/// - `join_many(room, entries, ttl)` is `join` of every entry, in one call (one round
///   trip for a remote backend): an instance refreshes all its connections of a room
///   at once;
/// - rooms are independent; `leave` is idempotent.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Adds or refreshes `conn` in `room` with its `info` for `ttl`.
    async fn join(
        &self,
        room: &str,
        conn: &str,
        info: Bytes,
        ttl: Duration,
    ) -> Result<(), BackendError>;
    /// Adds or refreshes every `(conn, info)` of `entries` in `room` for `ttl`.
    async fn join_many(
        &self,
        room: &str,
        entries: &[(String, Bytes)],
        ttl: Duration,
    ) -> Result<(), BackendError>;
    /// Removes `conn` from `room`.
    async fn leave(&self, room: &str, conn: &str) -> Result<(), BackendError>;
    /// The live entries of `room`.
    async fn list(&self, room: &str) -> Result<Vec<(String, Bytes)>, BackendError>;
    /// Readiness of the backend.
    async fn check(&self) -> Result<(), BackendError>;
}
