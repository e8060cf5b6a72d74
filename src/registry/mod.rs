//! The live instances of a deployment, for `/health/cluster` and the dashboard.
//!
//! Each instance heartbeats its [`InstanceRecord`] with an expiry of a few heartbeat
//! periods; one that dies stops heartbeating and drops out within that TTL.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backend_error::BackendError;

/// What an instance says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceRecord {
    /// The instance id (`X-Instance-Id`).
    pub id: String,
    /// Shoal version.
    pub version: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 time of this heartbeat.
    pub last_heartbeat: String,
    /// Address the instance listens on.
    pub address: String,
    /// Open HTTP connections at heartbeat time.
    pub http_connections: u64,
    /// Open WebSocket connections at heartbeat time.
    pub ws_connections: u64,
    /// Whether the instance is draining (shutting down).
    pub draining: bool,
    /// Requests per second over the last heartbeat period. `default` so that
    /// records of instances of an older version still parse during a rolling upgrade.
    #[serde(default)]
    pub request_rate: f64,
    /// 99th percentile request latency in milliseconds over the last heartbeat period
    /// (0 without requests).
    #[serde(default)]
    pub p99_ms: f64,
}

/// Contract:
/// - after `heartbeat(record, ttl)`, `list()` on every instance contains `record`
///   (the latest one for its id) until `leave(id)` or until `ttl` passes without
///   another heartbeat;
/// - `list()` is sorted by id.
#[async_trait]
pub trait InstanceRegistry: Send + Sync + 'static {
    /// Announces or refreshes this instance.
    async fn heartbeat(&self, record: &InstanceRecord, ttl: Duration) -> Result<(), BackendError>;
    /// Removes the instance `id` at once (graceful shutdown).
    async fn leave(&self, id: &str) -> Result<(), BackendError>;
    /// The live instances.
    async fn list(&self) -> Result<Vec<InstanceRecord>, BackendError>;
    /// Readiness of the backend.
    async fn check(&self) -> Result<(), BackendError>;
}
