//! Workers: claim a job, hold its lease with heartbeats, run it, record the outcome.
//!
//! Renders run on their own OS thread at a lower priority (their FFmpeg children inherit it),
//! never on the async runtime, so the API answers in milliseconds while renders use every core.
//! A render thread that panics fails only its attempt; the job is retried.

pub mod batch;
pub mod deliver;
pub mod did;
mod faults;
pub mod lease;
pub mod maintenance;
pub mod outcome;
pub mod plan;
pub mod render;
pub mod segments;

use std::time::{Duration, Instant};

use crate::queues;
use crate::state::AppState;
use reelsmith_store::now_ms;
use tokio_util::sync::CancellationToken;

/// Starts every worker loop; they stop when `stop` is cancelled.
pub fn spawn_all(state: &AppState, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = vec![];
    let c = &state.config;
    for i in 0..c.render_workers {
        handles.push(tokio::spawn(run_loop(state.clone(), queues::RENDER_QUEUE, i, stop.clone())));
    }
    if c.distributed_render {
        for i in 0..c.segment_workers() {
            handles.push(tokio::spawn(run_loop(state.clone(), queues::SEGMENT_QUEUE, i, stop.clone())));
        }
    }
    for i in 0..c.webhook_workers.max(1) {
        handles.push(tokio::spawn(run_loop(state.clone(), queues::WEBHOOK_QUEUE, i, stop.clone())));
    }
    handles.push(tokio::spawn(run_loop(state.clone(), queues::BATCH_QUEUE, 0, stop.clone())));
    for i in 0..c.maintenance_workers.max(1) {
        handles.push(tokio::spawn(run_loop(state.clone(), queues::MAINTENANCE_QUEUE, i, stop.clone())));
    }
    handles.push(tokio::spawn(maintenance::schedule_cleanup(state.clone(), stop)));
    handles
}

async fn run_loop(state: AppState, queue: &'static str, n: usize, stop: CancellationToken) {
    let worker = format!("{}-{queue}-{n}", state.node_id);
    // Only renders heartbeat; a delivery's lease outlasts its HTTP timeout so that no second
    // worker takes it while the first is still waiting for the receiver.
    let lease = match queue {
        queues::RENDER_QUEUE | queues::SEGMENT_QUEUE => Duration::from_secs_f64(state.config.lease_secs),
        _ => Duration::from_secs_f64(state.config.lease_secs.max(state.config.webhook_timeout_secs * 2.0 + 5.0)),
    };
    loop {
        if stop.is_cancelled() {
            return;
        }
        match state.queue.claim(queue, &worker, lease).await {
            Ok(Some(job)) => {
                let started = Instant::now();
                let outcome = match queues::Job::from_claimed(&job) {
                    Ok(queues::Job::Render { .. }) => render::render(&state, job).await,
                    Ok(queues::Job::Segment(p)) => segments::render_segment(&state, job, p).await,
                    Ok(queues::Job::Webhook(d)) => deliver::deliver(&state, job, d).await,
                    Ok(queues::Job::Cleanup) => maintenance::maintenance(&state, job).await,
                    Ok(queues::Job::Batch { batch }) => batch::pump(&state, job, &batch).await,
                    Err(e) => {
                        // A job no attempt can run: fail it for good, naming what is wrong.
                        let _ = state.queue.fail(&job.lease, &e, false, vec![]).await;
                        outcome::Outcome::Failed
                    }
                }
                .as_str();
                let secs = started.elapsed().as_secs_f64();
                metrics::counter!("reelsmith_jobs_total", "queue" => queue, "outcome" => outcome).increment(1);
                metrics::histogram!("reelsmith_job_duration_seconds", "queue" => queue, "outcome" => outcome)
                    .record(secs);
                metrics::counter!("reelsmith_worker_busy_milliseconds_total", "queue" => queue)
                    .increment((secs * 1000.0).round() as u64);
            }
            Ok(None) => {
                // Sleep until woken by a submission, the next delayed job, or a short poll
                // (other processes may enqueue, and leases may expire).
                let next = state.queue.next_run_at(queue).await.ok().flatten();
                let wait_ms = next.map_or(500, |t| (t - now_ms()).clamp(5, 500)) as u64;
                tokio::select! {
                    _ = state.wake.renders.notified(), if queue == queues::RENDER_QUEUE => {}
                    _ = state.wake.segments.notified(), if queue == queues::SEGMENT_QUEUE => {}
                    // PostgreSQL wakes it at once through LISTEN/NOTIFY; SQLite just waits.
                    _ = state.queue.wait_for_work(queue, Duration::from_millis(wait_ms)) => {}
                    _ = stop.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::error!(queue, error = %e, "claim failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}
