//! In-process presence. Serves a single instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::Presence;
use crate::backend_error::BackendError;

/// A room's connections → (info, expiry).
type Room = HashMap<String, (Bytes, Instant)>;

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
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn join(
        &self,
        room: &str,
        conn: &str,
        info: Bytes,
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(room.to_owned())
            .or_default()
            .insert(conn.to_owned(), (info, Instant::now() + ttl));
        Ok(())
    }

    async fn join_many(
        &self,
        room: &str,
        entries: &[(String, Bytes)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        if entries.is_empty() {
            return Ok(());
        }
        let expires = Instant::now() + ttl;
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let members = rooms.entry(room.to_owned()).or_default();
        for (conn, info) in entries {
            members.insert(conn.clone(), (info.clone(), expires));
        }
        Ok(())
    }

    async fn leave(&self, room: &str, conn: &str) -> Result<(), BackendError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(members) = rooms.get_mut(room) {
            members.remove(conn);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
        Ok(())
    }

    async fn list(&self, room: &str) -> Result<Vec<(String, Bytes)>, BackendError> {
        let now = Instant::now();
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let Some(members) = rooms.get_mut(room) else {
            return Ok(Vec::new());
        };
        members.retain(|_, (_, expires)| *expires > now);
        let mut out: Vec<(String, Bytes)> = members
            .iter()
            .map(|(conn, (info, _))| (conn.clone(), info.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
