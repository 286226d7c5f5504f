//! Stage `plan` of a render job made from a prompt: the director's storyboard (a language
//! model, stock searches, drawings, voices, all behind their gates) while the job's lease is
//! held, so POST never waits on a model and a slow provider holds one worker, not a request.

use reelsmith_store::{ClaimedJob, GenerationRecord};

use crate::events::Event;
use crate::jobs::lease::{Held, attempt_timeout, hold, time_limit_message};
use crate::jobs::outcome::{JobError, Outcome, finish_cancelled, finish_failed};
use crate::state::AppState;

/// Whether the generation still waits for its storyboard.
pub(crate) fn needs_plan(g: &GenerationRecord) -> bool {
    g.spec.is_null() && g.prompt.is_some()
}

/// Plans the generation and returns it with its storyboard, or how the attempt ended.
pub(crate) async fn plan(state: &AppState, job: &ClaimedJob, g: GenerationRecord) -> Result<GenerationRecord, Outcome> {
    let lease = &job.lease;
    state.hub.publish(Event::running(&g.id, g.api_key_id.clone(), lease.attempt, "plan", 0.0));
    let _ = state.meta.set_progress(&g.id, 0.0, "plan").await;
    let timeout = attempt_timeout(state, job);
    let error = match hold(state, lease, timeout, crate::submit::plan_prompt(state, &g)).await {
        Held::Done(Ok((spec, kept))) => return Ok(GenerationRecord { spec, prompt: Some(kept), ..g }),
        Held::Done(Err(f)) => {
            let code = f.error.code;
            if f.retry { JobError::retry(code, f.error.message) } else { JobError::fatal(code, f.error.message) }
        }
        Held::Cancelled => return Err(finish_cancelled(state, &g, lease).await),
        Held::Lost => return Err(Outcome::Lost),
        Held::TimedOut => JobError::fatal("time_limit", time_limit_message(timeout)),
    };
    Err(finish_failed(state, &g, lease, error).await)
}
