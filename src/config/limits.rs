//! What one account may keep the service busy with or store, and for how long:
//! exports waiting per user, the size of an analytics event, how long analytics
//! events and finished jobs (with their export results) are kept.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Key, positive, secs};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "EXPORTS_MAX_PENDING_PER_USER",
        default: "3",
        meaning: "exports one user may have queued or running at once; more are answered 429",
    },
    Key {
        name: "ANALYTICS_MAX_EVENT_BYTES",
        default: "4096",
        meaning: "largest `properties` of one analytics event (as JSON); larger ones are answered 413",
    },
    Key {
        name: "ANALYTICS_RETENTION",
        default: "7776000 (s, 90 days)",
        meaning: "analytics events older than this are deleted by the nightly clean-up",
    },
    Key {
        name: "JOB_RETENTION",
        default: "604800 (s, 7 days)",
        meaning: "finished jobs and their export results older than this are deleted by the nightly clean-up",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    #[serde(default = "default_exports_pending")]
    exports_max_pending_per_user: u64,
    #[serde(default = "default_event_bytes")]
    analytics_max_event_bytes: u64,
    #[serde(default = "default_analytics_retention")]
    analytics_retention: u64,
    #[serde(default = "default_job_retention")]
    job_retention: u64,
}

fn default_exports_pending() -> u64 {
    3
}
fn default_event_bytes() -> u64 {
    4096
}
fn default_analytics_retention() -> u64 {
    90 * 86_400
}
fn default_job_retention() -> u64 {
    7 * 86_400
}

/// The limits section.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Exports one user may have queued or running at once.
    pub exports_max_pending_per_user: u32,
    /// Largest analytics `properties`, serialised.
    pub analytics_max_event_bytes: usize,
    /// How long analytics events are kept.
    pub analytics_retention: Duration,
    /// How long finished jobs and export results are kept.
    pub job_retention: Duration,
}

impl LimitsConfig {
    pub(super) fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        positive(
            "EXPORTS_MAX_PENDING_PER_USER",
            raw.exports_max_pending_per_user,
        )?;
        positive("ANALYTICS_MAX_EVENT_BYTES", raw.analytics_max_event_bytes)?;
        positive("ANALYTICS_RETENTION", raw.analytics_retention)?;
        positive("JOB_RETENTION", raw.job_retention)?;
        let too_big = |key| ConfigError::new(key, "is too large");
        Ok(Self {
            exports_max_pending_per_user: u32::try_from(raw.exports_max_pending_per_user)
                .map_err(|_| too_big("EXPORTS_MAX_PENDING_PER_USER"))?,
            analytics_max_event_bytes: usize::try_from(raw.analytics_max_event_bytes)
                .map_err(|_| too_big("ANALYTICS_MAX_EVENT_BYTES"))?,
            analytics_retention: Duration::from_secs(raw.analytics_retention),
            job_retention: Duration::from_secs(raw.job_retention),
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            (
                "EXPORTS_MAX_PENDING_PER_USER",
                self.exports_max_pending_per_user.to_string(),
            ),
            (
                "ANALYTICS_MAX_EVENT_BYTES",
                self.analytics_max_event_bytes.to_string(),
            ),
            ("ANALYTICS_RETENTION", secs(self.analytics_retention)),
            ("JOB_RETENTION", secs(self.job_retention)),
        ]);
    }
}
