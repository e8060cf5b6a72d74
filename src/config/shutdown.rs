//! Graceful shutdown: its bound, and how long keep-alive connections are served
//! while draining.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Key, positive, secs};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "SHUTDOWN_TIMEOUT",
        default: "30 (s)",
        meaning: "bound on the graceful shutdown",
    },
    Key {
        name: "SHUTDOWN_KEEPALIVE_GRACE",
        default: "5 (s), at most half of `SHUTDOWN_TIMEOUT`",
        meaning: "while draining, how long requests on already-open keep-alive connections are still answered (with `Connection: close`) before idle connections are closed; keep it above the load balancer's idle upstream timeout (nginx `keepalive_timeout`, 2 s in `deploy/nginx`); must be below `SHUTDOWN_TIMEOUT`; 0 closes idle connections at once",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    #[serde(default = "default_timeout")]
    shutdown_timeout: u64,
    /// Unset: [`default_keepalive_grace`] of the shutdown timeout.
    #[serde(default)]
    shutdown_keepalive_grace: Option<u64>,
}

fn default_timeout() -> u64 {
    30
}

/// 5 s, but never more than half the shutdown timeout, so that setting only a
/// short `SHUTDOWN_TIMEOUT` is a valid configuration.
fn default_keepalive_grace(shutdown_timeout: u64) -> u64 {
    5.min(shutdown_timeout / 2)
}

/// The shutdown section.
#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    /// Bound on the whole graceful shutdown.
    pub timeout: Duration,
    /// How long a draining instance, its listener already closed, keeps answering
    /// requests that arrive on keep-alive connections opened before (each answer says
    /// `Connection: close`) before it closes the idle ones itself. A load balancer
    /// that closes its idle upstream connections sooner (nginx `keepalive_timeout`
    /// in the upstream block) never has a request in flight on a connection the
    /// instance closes. 0 closes idle connections at once.
    pub keepalive_grace: Duration,
}

impl ShutdownConfig {
    pub(super) fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        positive("SHUTDOWN_TIMEOUT", raw.shutdown_timeout)?;
        let keepalive_grace = raw
            .shutdown_keepalive_grace
            .unwrap_or_else(|| default_keepalive_grace(raw.shutdown_timeout));
        if keepalive_grace >= raw.shutdown_timeout {
            return Err(ConfigError::new(
                "SHUTDOWN_KEEPALIVE_GRACE",
                "must be shorter than SHUTDOWN_TIMEOUT",
            ));
        }
        Ok(Self {
            timeout: Duration::from_secs(raw.shutdown_timeout),
            keepalive_grace: Duration::from_secs(keepalive_grace),
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            ("SHUTDOWN_TIMEOUT", secs(self.timeout)),
            ("SHUTDOWN_KEEPALIVE_GRACE", secs(self.keepalive_grace)),
        ]);
    }
}
