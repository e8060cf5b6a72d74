//! `cleanup.nightly`: deletes expired sessions and refresh tokens, refresh families
//! left without tokens, finished jobs (with their export results) older than
//! `JOB_RETENTION` and analytics events older than `ANALYTICS_RETENTION`. Scheduled
//! by [`super::scheduler`] once a night cluster-wide.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Handler, JobContext, JobError};
use crate::clock;
use crate::db::jobs as job_rows;

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
        let limits = &ctx.state.config.limits;
        let now = clock::now_micros();
        let before = |keep: Duration| {
            now.saturating_sub(i64::try_from(keep.as_micros()).unwrap_or(i64::MAX))
        };
        let [sessions, tokens, families, jobs, analytics_events] = job_rows::purge_expired(
            &ctx.state.db,
            before(limits.job_retention),
            before(limits.analytics_retention),
        )
        .await?;
        tracing::info!(
            sessions,
            tokens,
            families,
            jobs,
            analytics_events,
            "nightly clean-up done"
        );
        Ok(())
    }
}
