//! Holding a job's lease while it runs: heartbeats, cancel, time limit, stop reasons.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reelsmith_engine::RenderError;
use reelsmith_store::{ClaimedJob, Heartbeat, Lease};

use crate::queues::RENDER_QUEUE;
use crate::state::AppState;

/// Why a job stopped before its work was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Its generation was cancelled.
    Cancel = 1,
    /// It ran past its time limit.
    TimeLimit = 2,
    /// Its lease expired and another worker may hold the job now: record nothing.
    LeaseLost = 3,
}

impl Stop {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Cancel),
            2 => Some(Self::TimeLimit),
            3 => Some(Self::LeaseLost),
            _ => None,
        }
    }
}

/// A job's heartbeats: every third of the lease, each one extending it and reporting a cancel
/// request or a lost lease. The one place that talks to `JobQueue::heartbeat`.
pub(crate) struct Heartbeats {
    every: tokio::time::Interval,
    lease_len: Duration,
}

impl Heartbeats {
    pub async fn start(state: &AppState) -> Self {
        let lease_len = Duration::from_secs_f64(state.config.lease_secs);
        let mut every = tokio::time::interval(lease_len / 3);
        every.tick().await;
        Self { every, lease_len }
    }

    /// Waits for the next beat and sends it: `Some` when the job must stop (cancelled, or the
    /// lease is lost). A failed heartbeat is retried at the next beat.
    pub async fn beat(&mut self, state: &AppState, lease: &Lease) -> Option<Stop> {
        self.every.tick().await;
        match state.queue.heartbeat(lease, self.lease_len).await {
            Ok(Heartbeat::Extended) => None,
            Ok(Heartbeat::CancelRequested) => Some(Stop::Cancel),
            Ok(Heartbeat::Lost) => Some(Stop::LeaseLost),
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; retrying");
                None
            }
        }
    }
}

/// How holding a lease around some work ended.
pub(crate) enum Held<T> {
    Done(T),
    Cancelled,
    Lost,
    TimedOut,
}

/// Runs `work` while holding `lease`: heartbeats keep it, and the work is dropped when the job
/// is cancelled, the lease is lost or `timeout` passes. For async work that can stop at any
/// await; a render thread, which must be asked to stop, goes through [`supervise`].
pub(crate) async fn hold<T>(
    state: &AppState,
    lease: &Lease,
    timeout: Duration,
    work: impl std::future::Future<Output = T>,
) -> Held<T> {
    let mut beats = Heartbeats::start(state).await;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline, work);
    loop {
        tokio::select! {
            r = &mut work => return Held::Done(r),
            _ = &mut deadline => return Held::TimedOut,
            stop = beats.beat(state, lease) => match stop {
                Some(Stop::Cancel) => return Held::Cancelled,
                Some(Stop::LeaseLost) => return Held::Lost,
                Some(Stop::TimeLimit) | None => {}
            },
        }
    }
}

const STOP_GRACE: Duration = Duration::from_secs(30);

/// Overall progress from the engine's stage events: narration and canvases are quick; frames are
/// most of the work.
#[derive(Default)]
pub(crate) struct ProgressState {
    pub stage: String,
    pub fraction: f64,
    pub changed: bool,
}

pub(crate) fn overall(stage: &str, done: u64, total: u64) -> f64 {
    let f = if total == 0 { 1.0 } else { done as f64 / total as f64 };
    match stage {
        "narration" => 0.0,
        "canvas" => 0.05,
        "render" => 0.1 + 0.85 * f,
        "concat" => 0.95,
        _ => 0.0,
    }
}

/// One attempt's hard limit: the job's own, capped by `job_timeout_secs`.
pub(crate) fn attempt_timeout(state: &AppState, job: &ClaimedJob) -> Duration {
    job.timeout.min(Duration::from_secs_f64(state.config.job_timeout_secs))
}

pub(crate) fn time_limit_message(timeout: Duration) -> String {
    format!("time limit of {:.0} s exceeded; shorten the video or raise job_timeout_secs", timeout.as_secs_f64())
}

/// A running job's stop flag (the engine's cancel flag), why it was raised, and its progress
/// (saved to the store).
pub(crate) struct Watch {
    pub cancel: Arc<AtomicBool>,
    why: AtomicU8,
    pub progress: Option<Arc<Mutex<ProgressState>>>,
}

impl Watch {
    pub fn new() -> Self {
        Self { cancel: Default::default(), why: AtomicU8::new(0), progress: None }
    }
    pub fn with_progress(progress: Arc<Mutex<ProgressState>>) -> Self {
        Self { progress: Some(progress), ..Self::new() }
    }
    /// Raises the stop flag; the latest reason counts (a lost lease after a cancel request
    /// means nothing may be recorded).
    pub fn stop(&self, why: Stop) {
        self.why.store(why as u8, Ordering::Relaxed);
        self.cancel.store(true, Ordering::Relaxed);
    }
    pub fn reason(&self) -> Option<Stop> {
        Stop::from_u8(self.why.load(Ordering::Relaxed))
    }
}

pub(crate) use crate::isolation::{Thrown, panic_message};

/// Runs `work` on its own low-priority thread while holding `lease`: heartbeats (a cancel
/// request or a lost lease raises `watch`), progress saved every second, the time limit, and a
/// grace period after which a render that ignores its stop flag is abandoned.
pub(crate) async fn supervise<T: Send + 'static>(
    state: &AppState,
    lease: &Lease,
    subject: &str,
    timeout: Duration,
    watch: &Watch,
    work: impl FnOnce() -> Result<T, RenderError> + Send + 'static,
) -> std::io::Result<Result<Result<T, RenderError>, Thrown>> {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let nice = state.config.render_nice;
    // The render thread's spans (render, stages) nest under this job's span.
    let span = tracing::info_span!("job", queue = RENDER_QUEUE, generation = %subject, attempt = lease.attempt);
    std::thread::Builder::new().name(format!("render-{subject}")).spawn(move || {
        let _span = span.entered();
        lower_priority(nice);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let _ = tx.send(r);
    })?;
    let gen_id = subject;
    let progress = &watch.progress;
    let mut beats = Heartbeats::start(state).await;
    let mut save = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // Once asked to stop, a render has this long to notice (it checks between frames); a render
    // stuck in a child process is then abandoned so the job cannot stay running forever.
    let stop_grace = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(stop_grace);
    let mut grace_armed = false;
    let result = loop {
        if !grace_armed && watch.reason().is_some() {
            grace_armed = true;
            stop_grace.as_mut().reset(tokio::time::Instant::now() + STOP_GRACE);
        }
        tokio::select! {
            r = &mut rx => break r,
            _ = &mut stop_grace => {
                tracing::error!(generation = %gen_id, "render ignored its stop request for {STOP_GRACE:?}; abandoning it");
                let msg = format!("render did not stop within {} s of being asked", STOP_GRACE.as_secs());
                break Ok(Ok(Err(RenderError::Io(std::io::Error::other(msg)))));
            }
            stop = beats.beat(state, lease) => {
                if let Some(stop) = stop {
                    watch.stop(stop);
                }
            }
            _ = save.tick(), if progress.is_some() => {
                let snapshot = progress.as_ref().and_then(|p| {
                    let mut st = p.lock().expect("progress");
                    std::mem::take(&mut st.changed).then(|| (st.fraction, st.stage.clone()))
                });
                if let Some((f, stage)) = snapshot {
                    let _ = state.meta.set_progress(gen_id, f, &stage).await;
                }
            }
            _ = &mut deadline, if watch.reason().is_none() => watch.stop(Stop::TimeLimit),
        }
    };
    Ok(match result {
        Ok(r) => r,
        Err(_) => Err(Box::new("render thread vanished") as Thrown),
    })
}

/// Lowers this thread's scheduling priority; threads and processes it starts inherit it.
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: plain syscalls on the calling thread (on Linux, PRIO_PROCESS with a thread id
    // applies to that thread only).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}
