//! Distributed rendering of one video (`distributed_render = true`).
//!
//! The worker holding a generation's render job plans it (narration and canvases, cached and
//! shared through the L2 cache), then enqueues one segment job per segment not cached yet.
//! Segment jobs run on the segment workers of every node — each encodes its segment into the
//! stage cache, which hands it to the shared tier (Redis). When all are done the render job
//! assembles the video: the engine finds every segment in the cache, so only the soundtrack
//! and the stream-copy join run. Segments encode with a fixed thread count, so the result is
//! the same frame for frame whichever workers made it.
//!
//! Leases apply to segment jobs as to any job: a worker killed mid-segment stops heartbeating
//! and another takes the segment when the lease runs out. Segment jobs never wait on anything,
//! so a render job waiting for them cannot deadlock the queue.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reelsmith_engine::{RenderError, RenderOptions, Report, Scope};
use reelsmith_spec::Spec;
use reelsmith_store::{ClaimedJob, FailOutcome, GenerationRecord, JobRecord, JobState};

use crate::assets::ensure_assets;
use crate::events::Event;
use crate::jobs::lease::{Held, Stop, Watch, hold, supervise};
use crate::jobs::outcome::{JobError, Outcome, finish_cancelled, finish_failed};
use crate::queues::{Job, SEGMENT_KIND, SegmentPayload};
use crate::state::AppState;

pub(crate) enum FanOut {
    /// Every segment is in the cache: assemble. Holds which worker made each segment.
    Assemble(BTreeMap<usize, String>),
    /// The job ended here (cancelled, failed, lost).
    Finished(Outcome),
}

/// Plans the render, enqueues its segment jobs and waits for them, holding the render job's
/// lease. Short videos (under `distributed_min_seconds`, or fewer than two segments to make)
/// are left to the ordinary render.
pub(crate) async fn fan_out(
    state: &AppState,
    job: &ClaimedJob,
    record: &GenerationRecord,
    spec: &Spec,
    work: &Path,
) -> FanOut {
    let lease = &job.lease;
    let timeout = crate::jobs::lease::attempt_timeout(state, job);
    let plan = {
        let watch = Watch::new();
        let opts = RenderOptions {
            scope: Scope::Plan,
            cancel: Some(watch.cancel.clone()),
            cache_scope: record.api_key_id.clone(),
            cache_share: Some(state.config.cache_share_bytes()),
            ..Default::default()
        };
        let (renderer, assets, spec, out) =
            (state.renderer.clone(), state.assets_dir.clone(), spec.clone(), work.join("plan.mp4"));
        let r =
            supervise(state, lease, &record.id, timeout, &watch, move || renderer.render(&spec, &assets, &out, &opts))
                .await;
        match (watch.reason(), r) {
            (Some(Stop::LeaseLost), _) => return FanOut::Finished(Outcome::Lost),
            (Some(Stop::Cancel), _) => return FanOut::Finished(finish_cancelled(state, record, lease).await),
            (_, Ok(Ok(Ok(plan)))) => plan,
            // The ordinary render meets the same problem and reports it in full.
            _ => return FanOut::Assemble(BTreeMap::new()),
        }
    };
    let todo: Vec<_> = plan.segments.iter().filter(|s| !s.cached).collect();
    if todo.len() < 2 || plan.duration_s < state.config.distributed_min_seconds {
        return FanOut::Assemble(BTreeMap::new());
    }
    for s in &todo {
        let payload = SegmentPayload {
            generation: record.id.clone(),
            index: s.index,
            key: s.key.clone(),
            frames: s.frames,
            parent: lease.job_id.clone(),
            parent_attempt: lease.attempt,
        };
        let mut j = Job::Segment(payload).to_new_job();
        j.subject = Some(record.id.clone());
        j.priority = record.priority;
        j.timeout = timeout;
        j.retry = state.config.render_retry();
        // A re-run of the same attempt (after a crash between enqueues) adds nothing twice.
        j.dedup_key = Some(format!("{}-{}-{}", lease.job_id, lease.attempt, s.index));
        if let Err(e) = state.queue.enqueue(j).await {
            let msg = format!("cannot enqueue segment jobs: {e}");
            return FanOut::Finished(finish_failed(state, record, lease, JobError::retry("storage", msg)).await);
        }
    }
    state.wake.segments.notify_waiters();
    tracing::info!(generation = %record.id, segments = todo.len(), of = plan.segments.len(), "segments fanned out");
    let total_frames: u64 = todo.iter().map(|s| s.frames).sum::<u64>().max(1);
    wait_for_segments(state, record, job, timeout, total_frames).await
}

async fn wait_for_segments(
    state: &AppState,
    record: &GenerationRecord,
    job: &ClaimedJob,
    timeout: Duration,
    total_frames: u64,
) -> FanOut {
    let lease = &job.lease;
    match hold(state, lease, timeout, poll_segments(state, record, lease, total_frames)).await {
        Held::Done(fan_out) => fan_out,
        Held::Lost => FanOut::Finished(Outcome::Lost),
        Held::Cancelled => {
            cancel_children(state, &record.id, lease).await;
            FanOut::Finished(finish_cancelled(state, record, lease).await)
        }
        Held::TimedOut => {
            cancel_children(state, &record.id, lease).await;
            let msg = crate::jobs::lease::time_limit_message(timeout);
            FanOut::Finished(finish_failed(state, record, lease, JobError::fatal("time_limit", msg)).await)
        }
    }
}

/// Reads the segment jobs until all succeeded (their workers, by index) or one failed,
/// publishing progress as their frames complete.
async fn poll_segments(
    state: &AppState,
    record: &GenerationRecord,
    lease: &reelsmith_store::Lease,
    total_frames: u64,
) -> FanOut {
    let mut last_done = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let children = match children(state, &record.id, lease).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read segment jobs; retrying");
                continue;
            }
        };
        if let Some((p, failed)) =
            children.iter().find(|(_, j)| matches!(j.state, JobState::Failed | JobState::Cancelled))
        {
            cancel_children(state, &record.id, lease).await;
            let why = failed.last_error.clone().unwrap_or_else(|| failed.state.as_str().into());
            let msg = format!("segment {} could not be rendered: {why}", p.index);
            return FanOut::Finished(finish_failed(state, record, lease, JobError::retry("segment_failed", msg)).await);
        }
        let done: u64 = children.iter().filter(|(_, j)| j.state == JobState::Succeeded).map(|(p, _)| p.frames).sum();
        if done != last_done {
            last_done = done;
            let fraction = 0.1 + 0.85 * (done as f64 / total_frames as f64).min(1.0);
            state.hub.publish(Event::running(&record.id, record.api_key_id.clone(), lease.attempt, "render", fraction));
            let _ = state.meta.set_progress(&record.id, fraction, "render").await;
        }
        if children.iter().all(|(_, j)| j.state == JobState::Succeeded) {
            let mut made = BTreeMap::new();
            for (p, j) in &children {
                if let Ok(attempts) = state.queue.attempts(&j.id).await
                    && let Some(a) = attempts.iter().rev().find(|a| a.outcome == "succeeded")
                {
                    made.insert(p.index, a.worker.clone());
                }
            }
            return FanOut::Assemble(made);
        }
    }
}

/// This attempt's segment jobs with their payloads.
async fn children(
    state: &AppState,
    generation: &str,
    lease: &reelsmith_store::Lease,
) -> reelsmith_store::Result<Vec<(SegmentPayload, JobRecord)>> {
    Ok(state
        .queue
        .jobs_for(generation, SEGMENT_KIND)
        .await?
        .into_iter()
        .filter_map(|j| Some((serde_json::from_value::<SegmentPayload>(j.payload.clone()).ok()?, j)))
        .filter(|(p, _)| p.parent == lease.job_id && p.parent_attempt == lease.attempt)
        .collect())
}

async fn cancel_children(state: &AppState, generation: &str, lease: &reelsmith_store::Lease) {
    if let Ok(children) = children(state, generation, lease).await {
        for (_, j) in children.iter().filter(|(_, j)| !j.state.is_final()) {
            let _ = state.queue.cancel(&j.id, vec![]).await;
        }
    }
}

/// Runs one segment job: encodes its segment into the (shared) cache.
pub(crate) async fn render_segment(state: &AppState, job: ClaimedJob, p: SegmentPayload) -> Outcome {
    let lease = job.lease.clone();
    let record = match state.meta.generation(&p.generation).await {
        Ok(Some(g)) if !g.state.is_final() => g,
        // Deleted, cancelled or finished meanwhile: nothing to do.
        Ok(_) => {
            let _ = state.queue.complete(&lease, vec![]).await;
            return Outcome::Skipped;
        }
        Err(e) => {
            let _ = crate::jobs::outcome::fail_attempt(state, &lease, &format!("database: {e}"), true).await;
            return Outcome::Failed;
        }
    };
    let mut spec = match reelsmith_spec::parse(&record.spec.to_string()) {
        Ok(s) => crate::assets::engine_view(&s),
        Err(e) => {
            let _ = crate::jobs::outcome::fail_attempt(state, &lease, &format!("spec_parse: {e}"), false).await;
            return Outcome::Failed;
        }
    };
    if let Err(e) = ensure_assets(state, &spec).await {
        let _ = crate::jobs::outcome::fail_attempt(state, &lease, &format!("assets: {e}"), true).await;
        return Outcome::Failed;
    }
    let work = state.config.data_dir.join("tmp").join(format!("{}-{}", lease.job_id, lease.attempt));
    let _ = tokio::fs::create_dir_all(&work).await;
    // D-ID's clips, which the render job put in the shared cache before fanning out.
    match crate::jobs::did::prepare_scenes(state, &job, &record, &mut spec, &work, false).await {
        Ok(crate::jobs::did::Scenes::Ready(_)) => {}
        other => {
            let _ = tokio::fs::remove_dir_all(&work).await;
            let msg = match other {
                Err(f) => f.message().to_string(),
                _ => "stopped while preparing D-ID's clips".into(),
            };
            let _ = crate::jobs::outcome::fail_attempt(state, &lease, &msg, true).await;
            return Outcome::Failed;
        }
    }
    let watch = Watch::new();
    let opts = RenderOptions {
        scope: Scope::Segments(vec![p.index]),
        jobs: Some(1),
        encoder_threads: Some(state.config.segment_encoder_threads),
        cancel: Some(watch.cancel.clone()),
        cache_scope: record.api_key_id.clone(),
        cache_share: Some(state.config.cache_share_bytes()),
        ..Default::default()
    };
    let (renderer, assets, out) = (state.renderer.clone(), state.assets_dir.clone(), work.join("unused.mp4"));
    let hang = crate::jobs::faults::hang_segments();
    let cancel = watch.cancel.clone();
    let render = move || -> Result<Report, RenderError> {
        if hang {
            // Test hook (see jobs::faults).
            while !cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Err(RenderError::Cancelled);
        }
        renderer.render(&spec, &assets, &out, &opts)
    };
    let timeout = crate::jobs::lease::attempt_timeout(state, &job);
    let result = supervise(state, &lease, &p.generation, timeout, &watch, render).await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    match (watch.reason(), result) {
        (Some(Stop::LeaseLost), _) => Outcome::Lost,
        (_, Ok(Ok(Ok(report)))) => {
            if report.segments.get(p.index).is_none_or(|s| s.key != p.key) {
                // Another engine version planned it: the assembler will not find this one.
                tracing::warn!(generation = %p.generation, segment = p.index, "segment key differs from the plan's");
            }
            match state.queue.complete(&lease, vec![]).await {
                Ok(true) => Outcome::Succeeded,
                _ => Outcome::Lost,
            }
        }
        (Some(Stop::Cancel), _) => match state.queue.cancelled(&lease, vec![]).await {
            Ok(true) => Outcome::Cancelled,
            _ => Outcome::Lost,
        },
        (why, r) => {
            let (msg, retryable) = match r {
                Err(e) => (format!("cannot start a render thread: {e}"), true),
                Ok(Err(panic)) => {
                    (format!("segment worker panicked: {}", crate::jobs::lease::panic_message(&panic)), true)
                }
                Ok(Ok(Err(e))) if why == Some(Stop::TimeLimit) => (format!("time limit exceeded: {e}"), false),
                Ok(Ok(Err(e))) => {
                    let retryable = !e.is_input_error();
                    (format!("{}: {e}", e.code()), retryable)
                }
                Ok(Ok(Ok(_))) => unreachable!("success is matched above"),
            };
            tracing::warn!(generation = %p.generation, segment = p.index, error = ?msg, "segment attempt failed");
            match crate::jobs::outcome::fail_attempt(state, &lease, &msg, retryable).await {
                Ok(FailOutcome::Retrying { .. }) => Outcome::Retrying,
                Ok(FailOutcome::Failed) => Outcome::Failed,
                _ => Outcome::Lost,
            }
        }
    }
}
