//! Who is online in a room (a workspace), across all instances.
//!
//! Entries are per connection of a user and expire unless refreshed, so the
//! connections of an instance that died without saying goodbye disappear after their
//! TTL. A user is online in a room while it has at least one live connection there;
//! `join` and `leave` say when that changes, so that `presence:update` goes out once
//! per change and not once per browser tab (after an instance restart, its clients
//! reconnect elsewhere before their old entries expire, and nobody is told anything).

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::backend_error::BackendError;

/// A connection of a user, as [`Presence::join_many`] takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The user it belongs to.
    pub user: String,
    /// The connection (unique across instances).
    pub conn: String,
}

/// Contract:
/// - after `join(room, user, conn, ttl)`, `list(room)` contains `user` on every
///   instance until `leave(room, user, conn)` of each of its connections, or until
///   `ttl` passes without another `join` of the same connection (which refreshes it);
/// - `join` answers true when the user had no live connection in the room before
///   (it came online), `leave` when it has none left (it went offline); of two
///   concurrent calls for one user, exactly one sees the change;
/// - `join_many(room, entries, ttl)` is `join` of every entry in one call (one round
///   trip per bounded batch for a remote backend): an instance refreshes all its
///   connections of a room at once;
/// - `list` is sorted and without duplicates; rooms are independent; `leave` is
///   idempotent.
///
/// Each call costs O(log n) in the room's size for the Redis backend (`list`: plus
/// its output), so that a reconnect storm in a big workspace stays cheap.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Adds or refreshes `conn` of `user` in `room` for `ttl`; true when `user` had no
    /// other live connection in `room`.
    async fn join(
        &self,
        room: &str,
        user: &str,
        conn: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError>;
    /// Adds or refreshes every entry in `room` for `ttl`.
    async fn join_many(
        &self,
        room: &str,
        entries: &[Entry],
        ttl: Duration,
    ) -> Result<(), BackendError>;
    /// Removes `conn` of `user` from `room`; true when `user` has no live connection
    /// left there.
    async fn leave(&self, room: &str, user: &str, conn: &str) -> Result<bool, BackendError>;
    /// The users with a live connection in `room`, sorted.
    async fn list(&self, room: &str) -> Result<Vec<String>, BackendError>;
    /// Readiness of the backend.
    async fn check(&self) -> Result<(), BackendError>;
}
