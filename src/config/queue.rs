//! The job queue (docs/jobs.md): workers per instance, polling, leases, retries.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Key, millis, positive, secs};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "QUEUE_CONCURRENCY",
        default: "4",
        meaning: "jobs run at once per instance (docs/jobs.md)",
    },
    Key {
        name: "QUEUE_MAX_RETRIES",
        default: "5",
        meaning: "attempts after the first before a job is dead",
    },
    Key {
        name: "QUEUE_POLL_INTERVAL",
        default: "200 (ms)",
        meaning: "how often idle workers look for jobs enqueued elsewhere",
    },
    Key {
        name: "QUEUE_IDLE_POLL_MAX",
        default: "2000 (ms)",
        meaning: "with Redis wake-ups, the idle poll doubles after each empty claim up to this (≥ `QUEUE_POLL_INTERVAL`)",
    },
    Key {
        name: "QUEUE_LEASE",
        default: "30 (s)",
        meaning: "how long a claimed job stays held without a heartbeat (renewed every third)",
    },
    Key {
        name: "QUEUE_BACKOFF_BASE",
        default: "1000 (ms)",
        meaning: "first retry delay, doubled per attempt with jitter",
    },
    Key {
        name: "QUEUE_WORKERS",
        default: "true",
        meaning: "`false` = API only (`shoal serve --no-workers`)",
    },
    Key {
        name: "QUEUE_TEST_HANDLERS",
        default: "false",
        meaning: "registers the test-only `test.script` job type; never in production",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    #[serde(default = "default_concurrency")]
    queue_concurrency: u32,
    #[serde(default = "default_max_retries")]
    queue_max_retries: u32,
    #[serde(default = "default_poll_interval_ms")]
    queue_poll_interval: u64,
    #[serde(default = "default_idle_poll_max_ms")]
    queue_idle_poll_max: u64,
    #[serde(default = "default_lease")]
    queue_lease: u64,
    #[serde(default = "default_backoff_base_ms")]
    queue_backoff_base: u64,
    #[serde(default = "default_workers")]
    queue_workers: bool,
    #[serde(default)]
    queue_test_handlers: bool,
}

fn default_concurrency() -> u32 {
    4
}
fn default_max_retries() -> u32 {
    5
}
// Workers are woken at once by enqueues on their own instance; the poll only
// bounds how late they see jobs enqueued elsewhere or scheduled for later.
fn default_poll_interval_ms() -> u64 {
    200
}
// With 100 instances, polling every 200 ms while idle is 500 claims a second on
// an empty queue; backing off to 2 s makes it 50, and costs only jobs that become
// due without a wake-up (scheduled `run_at`, retries after their backoff) up to
// 2 s of extra delay.
fn default_idle_poll_max_ms() -> u64 {
    2000
}
fn default_lease() -> u64 {
    30
}
fn default_backoff_base_ms() -> u64 {
    1000
}
fn default_workers() -> bool {
    true
}

/// The queue section.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Job workers per instance.
    pub concurrency: u32,
    /// Attempts after the first before a job is dead.
    pub max_retries: u32,
    /// How often idle workers look for jobs enqueued by other instances.
    pub poll_interval: Duration,
    /// While wake-ups arrive, the idle poll doubles after every empty claim up to this.
    pub idle_poll_max: Duration,
    /// How long a claimed job stays held without a heartbeat (renewed every third).
    pub lease: Duration,
    /// First retry delay; doubles per attempt, with jitter. Zero in tests.
    pub backoff_base: Duration,
    /// Whether this process runs job workers (`shoal serve --no-workers` clears it).
    pub workers: bool,
    /// Registers test-only job types (`test.sleep`, `test.fail`); never in production.
    pub test_handlers: bool,
}

impl QueueConfig {
    pub(super) fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        positive("QUEUE_CONCURRENCY", u64::from(raw.queue_concurrency))?;
        positive("QUEUE_POLL_INTERVAL", raw.queue_poll_interval)?;
        if raw.queue_idle_poll_max < raw.queue_poll_interval {
            return Err(ConfigError::new(
                "QUEUE_IDLE_POLL_MAX",
                "must be at least QUEUE_POLL_INTERVAL",
            ));
        }
        positive("QUEUE_LEASE", raw.queue_lease)?;
        Ok(Self {
            concurrency: raw.queue_concurrency,
            max_retries: raw.queue_max_retries,
            poll_interval: Duration::from_millis(raw.queue_poll_interval),
            idle_poll_max: Duration::from_millis(raw.queue_idle_poll_max),
            lease: Duration::from_secs(raw.queue_lease),
            backoff_base: Duration::from_millis(raw.queue_backoff_base),
            workers: raw.queue_workers,
            test_handlers: raw.queue_test_handlers,
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            ("QUEUE_CONCURRENCY", self.concurrency.to_string()),
            ("QUEUE_MAX_RETRIES", self.max_retries.to_string()),
            ("QUEUE_POLL_INTERVAL", millis(self.poll_interval)),
            ("QUEUE_IDLE_POLL_MAX", millis(self.idle_poll_max)),
            ("QUEUE_LEASE", secs(self.lease)),
            ("QUEUE_BACKOFF_BASE", millis(self.backoff_base)),
            ("QUEUE_WORKERS", self.workers.to_string()),
            ("QUEUE_TEST_HANDLERS", self.test_handlers.to_string()),
        ]);
    }
}
