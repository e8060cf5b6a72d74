//! In-process presence. Serves a single instance.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Entry, Presence};
use crate::backend_error::BackendError;

/// A user's connections → expiry.
type Conns = HashMap<String, Instant>;
/// A room's users.
type Room = HashMap<String, Conns>;

/// Rooms by name.
#[derive(Default)]
pub struct MemoryPresence {
    rooms: Mutex<HashMap<String, Room>>,
}

impl MemoryPresence {
    /// An empty presence table.
    pub fn new() -> Self {
        Self::default()
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Adds or refreshes `conn`; true when the user had no live connection before.
fn add(room: &mut Room, user: &str, conn: &str, expires: Instant, now: Instant) -> bool {
    let conns = room.entry(user.to_owned()).or_default();
    conns.retain(|_, at| *at > now);
    let came_online = conns.is_empty();
    conns.insert(conn.to_owned(), expires);
    came_online
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn join(
        &self,
        room: &str,
        user: &str,
        conn: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut rooms = self.rooms();
        let room = rooms.entry(room.to_owned()).or_default();
        Ok(add(room, user, conn, now + ttl, now))
    }

    async fn join_many(
        &self,
        room: &str,
        entries: &[Entry],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut rooms = self.rooms();
        let room = rooms.entry(room.to_owned()).or_default();
        for entry in entries {
            add(room, &entry.user, &entry.conn, now + ttl, now);
        }
        Ok(())
    }

    async fn leave(&self, room: &str, user: &str, conn: &str) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut rooms = self.rooms();
        let Some(users) = rooms.get_mut(room) else {
            return Ok(true);
        };
        let offline = match users.get_mut(user) {
            Some(conns) => {
                conns.remove(conn);
                conns.retain(|_, at| *at > now);
                conns.is_empty()
            }
            None => true,
        };
        if offline {
            users.remove(user);
        }
        if users.is_empty() {
            rooms.remove(room);
        }
        Ok(offline)
    }

    async fn list(&self, room: &str) -> Result<Vec<String>, BackendError> {
        let now = Instant::now();
        let mut rooms = self.rooms();
        let Some(users) = rooms.get_mut(room) else {
            return Ok(Vec::new());
        };
        users.retain(|_, conns| {
            conns.retain(|_, at| *at > now);
            !conns.is_empty()
        });
        let mut out: Vec<String> = users.keys().cloned().collect();
        out.sort();
        Ok(out)
    }

    async fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
