//! `cleanup.nightly`: deletes expired sessions and refresh tokens, refresh families
//! left without tokens, and finished jobs (with their export results) older than
//! [`KEEP_FINISHED`]. Scheduled by [`super::scheduler`] once a night cluster-wide.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Handler, JobContext, JobError};
use crate::clock;
use crate::db::jobs as job_rows;

/// How long finished jobs and export results are kept.
pub const KEEP_FINISHED: Duration = Duration::from_secs(7 * 86_400);

/// The handler.
pub struct Nightly;

/// Its payload: nothing to say (the tick is in the idempotency key).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NightlyPayload {}

#[async_trait]
impl Handler for Nightly {
    const TYPE: &'static str = "cleanup.nightly";
    type Payload = NightlyPayload;

    async fn run(&self, ctx: &JobContext, _: NightlyPayload) -> Result<(), JobError> {
        let keep = i64::try_from(KEEP_FINISHED.as_micros()).unwrap_or(i64::MAX);
        let [sessions, tokens, families, jobs] =
            job_rows::purge_expired(&ctx.state.db, clock::now_micros() - keep).await?;
        tracing::info!(sessions, tokens, families, jobs, "nightly clean-up done");
        Ok(())
    }
}
