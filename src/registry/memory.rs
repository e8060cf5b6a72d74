//! In-process registry: it only ever knows this instance. Serves a single instance.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{InstanceRecord, InstanceRegistry};
use crate::backend_error::BackendError;

/// Records by id with their expiry.
#[derive(Default)]
pub struct MemoryRegistry {
    records: Mutex<BTreeMap<String, (InstanceRecord, Instant)>>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl InstanceRegistry for MemoryRegistry {
    async fn heartbeat(&self, record: &InstanceRecord, ttl: Duration) -> Result<(), BackendError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.insert(record.id.clone(), (record.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn leave(&self, id: &str) -> Result<(), BackendError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceRecord>, BackendError> {
        let now = Instant::now();
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.retain(|_, (_, expires)| *expires > now);
        Ok(records.values().map(|(r, _)| r.clone()).collect())
    }

    async fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
