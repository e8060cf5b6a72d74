//! Job types for tests and benchmarks.
//!
//! [`Noop`] (`noop`) is always registered: it does nothing and is what
//! `shoal jobs bench` measures. [`Script`] (`test.script`) exists only when
//! `QUEUE_TEST_HANDLERS=true`: it fails, sleeps and appends to a file as its payload
//! says, which is what the process tests need (a job slow enough to be SIGKILLed
//! mid-run; an effect outside the database whose duplicates a test can count). It
//! is gated because a payload that writes to an arbitrary path must never be
//! reachable in production.

use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Handler, JobContext, JobError};

/// Does nothing.
pub struct Noop;

#[async_trait]
impl Handler for Noop {
    const TYPE: &'static str = "noop";
    type Payload = serde_json::Value;

    async fn run(&self, _: &JobContext, _: serde_json::Value) -> Result<(), JobError> {
        Ok(())
    }
}

/// Test-only behaviour on demand.
pub struct Script;

/// What [`Script`] does, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScriptPayload {
    /// Attempts 1..=fail_times fail (retryable).
    #[serde(default)]
    pub fail_times: i32,
    /// Fail for good (`Fatal`).
    #[serde(default)]
    pub fatal: bool,
    /// Sleep this long on the first attempt.
    #[serde(default)]
    pub sleep_first_ms: u64,
    /// Append `{job id} {attempt} {instance}\n` to this file when done.
    #[serde(default)]
    pub append_to: Option<String>,
}

#[async_trait]
impl Handler for Script {
    const TYPE: &'static str = "test.script";
    type Payload = ScriptPayload;

    async fn run(&self, ctx: &JobContext, p: ScriptPayload) -> Result<(), JobError> {
        if p.fatal {
            return Err(JobError::Fatal("scripted fatal failure".into()));
        }
        if ctx.attempt <= p.fail_times {
            return Err(JobError::Retry(format!(
                "scripted failure of attempt {}",
                ctx.attempt
            )));
        }
        if ctx.attempt == 1 && p.sleep_first_ms > 0 {
            tokio::time::sleep(Duration::from_millis(p.sleep_first_ms)).await;
        }
        if let Some(path) = p.append_to {
            let line = format!("{} {} {}\n", ctx.id, ctx.attempt, ctx.state.instance.id);
            // O_APPEND: one short write per line, atomic across processes.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| JobError::Retry(format!("append to {path}: {e}")))?;
        }
        Ok(())
    }
}
