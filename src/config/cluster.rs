//! Several processes: the worker supervisor on one port, and the instance registry.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Key, positive, secs};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "CLUSTER_WORKERS",
        default: "1",
        meaning: "worker processes on the port under a supervisor (`serve --workers N` overrides); 1 = no supervisor (docs/scaling.md)",
    },
    Key {
        name: "CLUSTER_RESTART_DELAY",
        default: "1000 (ms)",
        meaning: "pause before the supervisor restarts a worker that died",
    },
    Key {
        name: "CLUSTER_MAX_RESTARTS",
        default: "5",
        meaning: "more restarts than this within `CLUSTER_RESTART_WINDOW`: the supervisor stops all workers and exits 1",
    },
    Key {
        name: "CLUSTER_RESTART_WINDOW",
        default: "60 (s)",
        meaning: "the window `CLUSTER_MAX_RESTARTS` counts in",
    },
    Key {
        name: "REGISTRY_HEARTBEAT",
        default: "5 (s)",
        meaning: "instance heartbeat; an entry expires after 3",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    #[serde(default = "default_workers")]
    cluster_workers: u32,
    #[serde(default = "default_restart_delay_ms")]
    cluster_restart_delay: u64,
    #[serde(default = "default_max_restarts")]
    cluster_max_restarts: u32,
    #[serde(default = "default_restart_window")]
    cluster_restart_window: u64,
    #[serde(default = "default_registry_heartbeat")]
    registry_heartbeat: u64,
}

fn default_workers() -> u32 {
    1
}
// A worker that dies is back within a second; one that keeps dying (5 times in a
// minute) is a bug or a bad deployment, and the supervisor gives up loudly.
fn default_restart_delay_ms() -> u64 {
    1000
}
fn default_max_restarts() -> u32 {
    5
}
fn default_restart_window() -> u64 {
    60
}
fn default_registry_heartbeat() -> u64 {
    5
}

/// The cluster section.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Worker processes under the supervisor (1 = no supervisor).
    pub workers: u32,
    /// Pause before the supervisor restarts a worker that died.
    pub restart_delay: Duration,
    /// Restarts allowed within `restart_window` before the supervisor gives up.
    pub max_restarts: u32,
    /// The window `max_restarts` counts in.
    pub restart_window: Duration,
    /// Instance registry heartbeat period; the entry expires after three of them.
    pub registry_heartbeat: Duration,
}

impl ClusterConfig {
    pub(super) fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        positive("CLUSTER_WORKERS", u64::from(raw.cluster_workers))?;
        positive("CLUSTER_RESTART_WINDOW", raw.cluster_restart_window)?;
        positive("REGISTRY_HEARTBEAT", raw.registry_heartbeat)?;
        Ok(Self {
            workers: raw.cluster_workers,
            restart_delay: Duration::from_millis(raw.cluster_restart_delay),
            max_restarts: raw.cluster_max_restarts,
            restart_window: Duration::from_secs(raw.cluster_restart_window),
            registry_heartbeat: Duration::from_secs(raw.registry_heartbeat),
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            ("CLUSTER_WORKERS", self.workers.to_string()),
            (
                "CLUSTER_RESTART_DELAY",
                self.restart_delay.as_millis().to_string(),
            ),
            ("CLUSTER_MAX_RESTARTS", self.max_restarts.to_string()),
            (
                "CLUSTER_RESTART_WINDOW",
                self.restart_window.as_secs().to_string(),
            ),
            ("REGISTRY_HEARTBEAT", secs(self.registry_heartbeat)),
        ]);
    }
}
