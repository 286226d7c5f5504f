//! A batch's pump: one short job per round, each followed by the next (enqueued atomically with
//! its completion) until the batch has ended and its webhook is queued. Only one round of a
//! batch exists at a time, so rows are never submitted twice; a crashed round's lease runs out
//! and the round runs again (rows are submitted with an idempotency key each).

use reelsmith_store::ClaimedJob;

use crate::batches::{Round, run_round};
use crate::jobs::outcome::Outcome;
use crate::state::AppState;

pub(crate) async fn pump(state: &AppState, job: ClaimedJob, batch: &str) -> Outcome {
    match run_round(state, batch).await {
        Ok(Round::Again) => {
            let next = crate::batches::pump_job(state, batch, state.config.batch_poll_ms);
            let _ = state.queue.complete(&job.lease, vec![next]).await;
            Outcome::Succeeded
        }
        Ok(Round::Ended(follow_ups)) => {
            let _ = state.queue.complete(&job.lease, follow_ups).await;
            Outcome::Succeeded
        }
        Err(e) => {
            tracing::warn!(batch, error = %e.message, "batch round failed");
            let _ = state.queue.fail(&job.lease, &e.message, true, vec![]).await;
            Outcome::Failed
        }
    }
}
