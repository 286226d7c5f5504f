//! Workers: claim a job, hold its lease with heartbeats, run it, record the outcome.
//!
//! Renders run on their own OS thread at a lower priority (their FFmpeg children inherit it),
//! never on the async runtime, so the API answers in milliseconds while renders use every core.
//! A render thread that panics fails only its attempt; the job is retried.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reelsmith_engine::{Progress, RenderError, RenderOptions, Report};
use reelsmith_store::{ClaimedJob, FailOutcome, GenerationRecord, GenerationResult, Heartbeat, NewJob, now_ms};
use tokio_util::sync::CancellationToken;

use crate::events::Event;
use crate::{AppState, api, submit, webhooks};

pub const RENDER_QUEUE: &str = "render";
/// Segment jobs of distributed renders ([`crate::distribute`]).
pub const SEGMENT_QUEUE: &str = "segments";
pub const MAINTENANCE_QUEUE: &str = "maintenance";

/// Starts every worker loop; they stop when `stop` is cancelled.
pub fn spawn_all(state: &AppState, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = vec![];
    let c = &state.config;
    for i in 0..c.render_workers {
        handles.push(tokio::spawn(run_loop(state.clone(), RENDER_QUEUE, i, stop.clone())));
    }
    if c.distributed_render {
        for i in 0..c.segment_workers() {
            handles.push(tokio::spawn(run_loop(state.clone(), SEGMENT_QUEUE, i, stop.clone())));
        }
    }
    for i in 0..c.webhook_workers.max(1) {
        handles.push(tokio::spawn(run_loop(state.clone(), webhooks::QUEUE, i, stop.clone())));
    }
    for i in 0..c.maintenance_workers.max(1) {
        handles.push(tokio::spawn(run_loop(state.clone(), MAINTENANCE_QUEUE, i, stop.clone())));
    }
    handles.push(tokio::spawn(schedule_cleanup(state.clone(), stop)));
    handles
}

async fn run_loop(state: AppState, queue: &'static str, n: usize, stop: CancellationToken) {
    let worker = format!("{}-{queue}-{n}", state.node_id);
    // Only renders heartbeat; a delivery's lease outlasts its HTTP timeout so that no second
    // worker takes it while the first is still waiting for the receiver.
    let lease = match queue {
        RENDER_QUEUE | SEGMENT_QUEUE => Duration::from_secs_f64(state.config.lease_secs),
        _ => Duration::from_secs_f64(state.config.lease_secs.max(state.config.webhook_timeout_secs * 2.0 + 5.0)),
    };
    loop {
        if stop.is_cancelled() {
            return;
        }
        match state.queue.claim(queue, &worker, lease).await {
            Ok(Some(job)) => {
                let started = Instant::now();
                let outcome = match queue {
                    RENDER_QUEUE => render(&state, job).await,
                    SEGMENT_QUEUE => crate::distribute::render_segment(&state, job).await,
                    webhooks::QUEUE => deliver(&state, job).await,
                    _ => maintenance(&state, job).await,
                };
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
                    _ = state.wake.notified(), if queue == RENDER_QUEUE => {}
                    _ = state.wake_segments.notified(), if queue == SEGMENT_QUEUE => {}
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

/// Why a render's cancel flag was raised.
pub(crate) const STOP_NONE: u8 = 0;
pub(crate) const STOP_CANCEL: u8 = 1;
pub(crate) const STOP_TIME_LIMIT: u8 = 2;
pub(crate) const STOP_LEASE_LOST: u8 = 3;
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Overall progress from the engine's stage events: narration and canvases are quick; frames are
/// most of the work.
#[derive(Default)]
pub(crate) struct ProgressState {
    pub stage: String,
    pub fraction: f64,
    pub changed: bool,
}

fn overall(stage: &str, done: u64, total: u64) -> f64 {
    let f = if total == 0 { 1.0 } else { done as f64 / total as f64 };
    match stage {
        "narration" => 0.0,
        "canvas" => 0.05,
        "render" => 0.1 + 0.85 * f,
        "concat" => 0.95,
        _ => 0.0,
    }
}

async fn render(state: &AppState, job: ClaimedJob) -> &'static str {
    let id = job.subject.clone();
    let outcome = render_attempt(state, job).await;
    // Whatever happened, this process no longer has live progress for it.
    if let Some(id) = id {
        state.hub.forget(&id);
    }
    outcome
}

async fn render_attempt(state: &AppState, job: ClaimedJob) -> &'static str {
    let lease = job.lease.clone();
    let Some(gen_id) = job.subject.clone() else {
        let _ = state.queue.fail(&lease, "render job without a generation", false, vec![]).await;
        return "failed";
    };
    let record = match state.meta.generation(&gen_id).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            // Deleted while queued: nothing to do.
            let _ = state.queue.complete(&lease, vec![]).await;
            return "skipped";
        }
        Err(e) => {
            let _ = state.queue.fail(&lease, &format!("database: {e}"), true, vec![]).await;
            return "failed";
        }
    };
    if crate::did::is_remote(&record) {
        return crate::did::render(state, &job, &record).await;
    }
    let publish = |status: &str, progress: f64, stage: Option<&str>, error: Option<String>| {
        state.hub.publish(Event {
            id: gen_id.clone(),
            status: status.into(),
            progress,
            stage: stage.map(Into::into),
            attempt: lease.attempt,
            error,
            owner: record.api_key_id.clone(),
        })
    };
    publish("running", 0.0, Some("starting"), None);
    if job.recovered {
        tracing::warn!(generation = %gen_id, attempt = lease.attempt, "previous worker lost its lease; rendering again");
    }

    let work = state.config.data_dir.join("tmp").join(format!("{gen_id}-{}", lease.attempt));
    let _ = tokio::fs::remove_dir_all(&work).await;
    if let Err(e) = tokio::fs::create_dir_all(&work).await {
        let _ = state.queue.fail(&lease, &format!("cannot create work folder: {e}"), true, vec![]).await;
        return "failed";
    }
    let mut spec = match reelsmith_spec::parse(&record.spec.to_string()) {
        Ok(s) => submit::engine_view(&s),
        Err(e) => return finish_failed(state, &record, &lease, "spec_parse", &e.to_string(), false).await,
    };
    if let Err(e) = crate::distribute::ensure_assets(state, &spec).await {
        return finish_failed(state, &record, &lease, "assets", &e, true).await;
    }
    // Talking heads D-ID animates become D-ID's clips first.
    let did_stage = match crate::did::prepare_scenes(state, &job, &record, &mut spec, &work, true).await {
        Ok(crate::did::Scenes::Ready(stage)) => stage,
        prepared => {
            let outcome = match prepared {
                Ok(crate::did::Scenes::Cancelled) => finish_cancelled(state, &record, &lease).await,
                Ok(_) => "lost",
                Err(f) => {
                    let retryable = matches!(f, crate::did::Failure::Retryable(_));
                    finish_failed(state, &record, &lease, "provider_error", f.message(), retryable).await
                }
            };
            let _ = tokio::fs::remove_dir_all(&work).await;
            return outcome;
        }
    };

    // Distributed: segments rendered by segment jobs on any worker first, then assembled here.
    let mut made_by = std::collections::BTreeMap::new();
    if state.config.distributed_render {
        match crate::distribute::fan_out(state, &job, &record, &spec, &work).await {
            crate::distribute::FanOut::Assemble(workers) => made_by = workers,
            crate::distribute::FanOut::Finished(outcome) => {
                let _ = tokio::fs::remove_dir_all(&work).await;
                return outcome;
            }
        }
    }
    // Assembling fanned-out segments is the last 5%: progress does not start over.
    let floor = if made_by.is_empty() { 0.0 } else { 0.95 };
    let cancel = Arc::new(AtomicBool::new(false));
    let why = Arc::new(AtomicU8::new(STOP_NONE));
    let progress = Arc::new(Mutex::new(ProgressState::default()));
    let hub = state.hub.clone();
    let (gid, attempt, owner) = (gen_id.clone(), lease.attempt, record.api_key_id.clone());
    let progress_cb = {
        let progress = progress.clone();
        let last_sent = Mutex::new((String::new(), -1.0f64));
        Arc::new(move |p: Progress| {
            let mut st = progress.lock().expect("progress");
            match p {
                Progress::Stage { name, total } => {
                    st.stage = name.into();
                    st.fraction = overall(name, 0, total.max(1));
                }
                Progress::Frames { done, total } => st.fraction = overall("render", done, total),
            }
            st.fraction = st.fraction.max(floor);
            st.changed = true;
            // Live events at most every whole percent or stage change; the store every second.
            let mut last = last_sent.lock().expect("progress");
            if last.0 != st.stage || st.fraction - last.1 >= 0.01 {
                *last = (st.stage.clone(), st.fraction);
                hub.publish(Event {
                    id: gid.clone(),
                    status: "running".into(),
                    progress: (st.fraction * 1000.0).round() / 1000.0,
                    stage: Some(st.stage.clone()),
                    attempt,
                    error: None,
                    owner: owner.clone(),
                });
            }
        }) as Arc<dyn Fn(Progress) + Send + Sync>
    };
    let out = work.join("video.mp4");
    let opts = RenderOptions {
        progress: Some(progress_cb),
        cancel: Some(cancel.clone()),
        // Each key's renders have their own cache entries (no cross-tenant hit oracle).
        cache_scope: record.api_key_id.clone(),
        ..Default::default()
    };
    let engine = state.engine.clone();
    let assets = state.assets_dir.clone();
    let panic_attempts = fault_panic_attempts();
    let out_thread = out.clone();
    let render = move || {
        if attempt <= panic_attempts {
            panic!("injected fault (REELSMITH_FAULT_PANIC_ATTEMPTS) on attempt {attempt}");
        }
        engine.render(&spec, &assets, &out_thread, &opts)
    };
    let timeout = attempt_timeout(state, &job);
    let watch = Watch { cancel, why, progress: Some(progress) };
    let result = match supervise(state, &lease, &gen_id, timeout, &watch, render).await {
        Ok(r) => r,
        Err(e) => {
            let _ = state.queue.fail(&lease, &format!("cannot start a render thread: {e}"), true, vec![]).await;
            return "failed";
        }
    };
    let stop_reason = watch.why.load(Ordering::Relaxed);
    let outcome = match result {
        _ if stop_reason == STOP_LEASE_LOST => {
            tracing::warn!(generation = %gen_id, "lease lost; another worker has the job");
            "lost"
        }
        Ok(Ok(mut report)) => {
            for s in &mut report.segments {
                s.worker = made_by.get(&s.index).cloned();
            }
            if let Some(st) = did_stage {
                report.wall_s += st.wall_s;
                report.stages.insert("d-id".into(), st);
            }
            finish_succeeded(state, &record, &lease, report, &out).await
        }
        _ if stop_reason == STOP_CANCEL => finish_cancelled(state, &record, &lease).await,
        Ok(Err(_)) if stop_reason == STOP_TIME_LIMIT => {
            finish_failed(state, &record, &lease, "time_limit", &time_limit_message(timeout), false).await
        }
        Ok(Err(e)) => {
            let retryable = !matches!(e, RenderError::Invalid(_) | RenderError::Parse(_));
            finish_failed(state, &record, &lease, e.code(), &e.to_string(), retryable).await
        }
        Err(panic) => {
            let msg = panic_message(&panic);
            finish_failed(state, &record, &lease, "worker_panic", &format!("render worker panicked: {msg}"), true).await
        }
    };
    let _ = tokio::fs::remove_dir_all(&work).await;
    outcome
}

/// One attempt's hard limit: the job's own, capped by `job_timeout_secs`.
pub(crate) fn attempt_timeout(state: &AppState, job: &ClaimedJob) -> Duration {
    job.timeout.min(Duration::from_secs_f64(state.config.job_timeout_secs))
}

pub(crate) fn time_limit_message(timeout: Duration) -> String {
    format!("time limit of {:.0} s exceeded; shorten the video or raise job_timeout_secs", timeout.as_secs_f64())
}

/// A running job's stop flag, why it was raised, and its progress (saved to the store).
pub(crate) struct Watch {
    pub cancel: Arc<AtomicBool>,
    pub why: Arc<AtomicU8>,
    pub progress: Option<Arc<Mutex<ProgressState>>>,
}

impl Watch {
    pub fn new() -> Self {
        Self { cancel: Default::default(), why: Arc::new(AtomicU8::new(STOP_NONE)), progress: None }
    }
    pub fn stop(&self, why: u8) {
        self.why.store(why, Ordering::Relaxed);
        self.cancel.store(true, Ordering::Relaxed);
    }
    pub fn reason(&self) -> u8 {
        self.why.load(Ordering::Relaxed)
    }
}

pub(crate) type Thrown = Box<dyn std::any::Any + Send>;

pub(crate) fn panic_message(panic: &Thrown) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `work` on its own low-priority thread while holding `lease`: heartbeats (a cancel
/// request or a lost lease raises `watch`), progress saved every second, the time limit, and a
/// grace period after which a render that ignores its stop flag is abandoned.
pub(crate) async fn supervise<T: Send + 'static>(
    state: &AppState,
    lease: &reelsmith_store::Lease,
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
    let (why, progress) = (&watch.why, &watch.progress);

    let lease_len = Duration::from_secs_f64(state.config.lease_secs);
    let mut beat = tokio::time::interval(lease_len / 3);
    beat.tick().await;
    let mut save = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // Once asked to stop, a render has this long to notice (it checks between frames); a render
    // stuck in a child process is then abandoned so the job cannot stay running forever.
    let stop_grace = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(stop_grace);
    let mut grace_armed = false;
    let result = loop {
        if !grace_armed && why.load(Ordering::Relaxed) != STOP_NONE {
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
            _ = beat.tick() => match state.queue.heartbeat(lease, lease_len).await {
                Ok(Heartbeat::Extended) => {}
                Ok(Heartbeat::CancelRequested) => watch.stop(STOP_CANCEL),
                Ok(Heartbeat::Lost) => watch.stop(STOP_LEASE_LOST),
                Err(e) => tracing::warn!(error = %e, "heartbeat failed; retrying"),
            },
            _ = save.tick(), if progress.is_some() => {
                let snapshot = progress.as_ref().and_then(|p| {
                    let mut st = p.lock().expect("progress");
                    std::mem::take(&mut st.changed).then(|| (st.fraction, st.stage.clone()))
                });
                if let Some((f, stage)) = snapshot {
                    let _ = state.meta.set_progress(gen_id, f, &stage).await;
                }
            }
            _ = &mut deadline, if why.load(Ordering::Relaxed) == STOP_NONE => watch.stop(STOP_TIME_LIMIT),
        }
    };
    Ok(match result {
        Ok(r) => r,
        Err(_) => Err(Box::new("render thread vanished") as Thrown),
    })
}

/// Test hook: make render attempts up to N panic (exercises crash handling end to end).
fn fault_panic_attempts() -> u32 {
    std::env::var("REELSMITH_FAULT_PANIC_ATTEMPTS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
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

pub(crate) async fn finish_succeeded(
    state: &AppState,
    g: &GenerationRecord,
    lease: &reelsmith_store::Lease,
    report: Report,
    video: &Path,
) -> &'static str {
    // Results are written before the completion; a worker that lost its job writes nothing.
    if !matches!(
        state.queue.heartbeat(lease, Duration::from_secs_f64(state.config.lease_secs)).await,
        Ok(Heartbeat::Extended)
    ) {
        tracing::warn!(generation = %g.id, "lease lost or cancelled before storing results");
        return "lost";
    }
    match store_results(state, g, &report, video).await {
        Ok(result) => {
            for (name, st) in &report.stages {
                metrics::histogram!("reelsmith_stage_duration_seconds", "stage" => name.clone()).record(st.wall_s);
            }
            metrics::counter!("reelsmith_cache_hits_total").increment(report.cache_hits);
            metrics::counter!("reelsmith_cache_misses_total").increment(report.cache_misses);
            state.note_cache(report.cache_hits, report.cache_misses);
            let mut done = g.clone();
            done.state = reelsmith_store::JobState::Succeeded;
            done.progress = 1.0;
            done.stage = Some("done".into());
            done.result = Some(result);
            done.finished_at_ms = Some(now_ms());
            match state.queue.complete(lease, webhooks::for_generation(state, &done, "generation.succeeded")).await {
                Ok(true) => {
                    state.hub.publish(api::event_of(&done));
                    "succeeded"
                }
                Ok(false) => "lost",
                Err(e) => {
                    tracing::error!(error = %e, "cannot record success; the lease will expire and the job rerun");
                    "error"
                }
            }
        }
        Err(e) => {
            let msg = format!("cannot store the results: {e}");
            finish_failed(state, g, lease, "storage", &msg, true).await
        }
    }
}

/// Thumbnail, subtitles, report and video into artifact storage; the result record.
async fn store_results(
    state: &AppState,
    g: &GenerationRecord,
    report: &Report,
    video: &Path,
) -> Result<GenerationResult, String> {
    let dir = video.parent().map(Path::to_path_buf).unwrap_or_default();
    let (video_p, thumb_p) = (video.to_path_buf(), dir.join("thumbnail.jpg"));
    let duration = report.duration_s;
    let engine = state.engine.clone();
    let hash = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(&video_p).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let hash = h.finalize().to_hex()[..32].to_string();
        // Decoding the poster frame costs an FFmpeg run (~0.1 s at 720p): the same video (a
        // re-render from cache) reuses the poster made for it before.
        let key = reelsmith_engine::cache::key("poster", &hash);
        let (entry, _) = engine
            .cache
            .get_or_build("poster", &key, |d: &Path| {
                poster(&video_p, &d.join("thumbnail.jpg"), duration).map_err(std::io::Error::other)
            })
            .map_err(|e: std::io::Error| e.to_string())?;
        std::fs::copy(entry.join("thumbnail.jpg"), &thumb_p).map_err(|e| e.to_string())?;
        Ok(hash)
    })
    .await
    .map_err(|e| e.to_string())??;
    std::fs::write(dir.join("subtitles.vtt"), report.webvtt()).map_err(|e| e.to_string())?;
    let mut report_json = serde_json::to_value(report).map_err(|e| e.to_string())?;
    // Callers see the file they download, not where this node rendered it.
    report_json["output"] = serde_json::json!("video.mp4");
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report_json).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let a = &state.artifacts;
    let key = |n: &str| format!("{}/{n}", g.id);
    for name in ["thumbnail.jpg", "subtitles.vtt", "report.json"] {
        a.put_file(&key(name), &dir.join(name)).await.map_err(|e| e.to_string())?;
    }
    let bytes = a.put_file(&key("video.mp4"), video).await.map_err(|e| e.to_string())?;
    let result = GenerationResult {
        video_bytes: bytes,
        video_etag: hash,
        duration_s: report.duration_s,
        width: report.width,
        height: report.height,
        has_thumbnail: true,
        has_subtitles: !report.captions.is_empty(),
        report: report_json,
    };
    state.meta.set_result(&g.id, &result).await.map_err(|e| e.to_string())?;
    Ok(result)
}

/// A JPEG poster frame from one second in (or the middle of a shorter video).
fn poster(video: &Path, out: &Path, duration: f64) -> Result<(), String> {
    let t = (duration / 2.0).min(1.0);
    let (w, h, rgb) = reelsmith_media::ffmpeg::frame_rgb_at(video, t).map_err(|e| e.to_string())?;
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or("poster frame has the wrong size")?;
    let f = std::fs::File::create(out).map_err(|e| e.to_string())?;
    image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 85)
        .encode_image(&img)
        .map_err(|e| e.to_string())
}

pub(crate) async fn finish_cancelled(
    state: &AppState,
    g: &GenerationRecord,
    lease: &reelsmith_store::Lease,
) -> &'static str {
    let mut done = g.clone();
    done.state = reelsmith_store::JobState::Cancelled;
    match state.queue.cancelled(lease, webhooks::for_generation(state, &done, "generation.cancelled")).await {
        Ok(true) => {
            state.hub.publish(api::event_of(&done));
            "cancelled"
        }
        _ => "lost",
    }
}

pub(crate) async fn finish_failed(
    state: &AppState,
    g: &GenerationRecord,
    lease: &reelsmith_store::Lease,
    code: &str,
    message: &str,
    retryable: bool,
) -> &'static str {
    // `message` is the event's own text in the log format: the reason (FFmpeg's words, partly
    // the caller's) goes in a field of its own, Debug-escaped so it cannot forge log lines.
    tracing::warn!(generation = %g.id, attempt = lease.attempt, code, reason = ?message, retryable, "render attempt failed");
    let mut done = g.clone();
    done.state = reelsmith_store::JobState::Failed;
    done.error_code = Some(code.into());
    done.error_message = Some(message.into());
    let events = webhooks::for_generation(state, &done, "generation.failed");
    // The reason goes in first so a final failure is never visible without it.
    let _ = state.meta.set_error(&g.id, code, message).await;
    let full = format!("{code}: {message}");
    match state.queue.fail(lease, &full, retryable, events).await {
        Ok(FailOutcome::Retrying { .. }) => {
            state.hub.publish(Event {
                id: g.id.clone(),
                status: "queued".into(),
                progress: 0.0,
                stage: Some("retrying".into()),
                attempt: lease.attempt,
                error: Some(full),
                owner: g.api_key_id.clone(),
            });
            "retrying"
        }
        Ok(FailOutcome::Failed) => {
            state.hub.publish(api::event_of(&done));
            "failed"
        }
        Ok(FailOutcome::Lost) => "lost",
        Err(e) => {
            tracing::error!(error = %e, "cannot record a failure");
            "error"
        }
    }
}

async fn deliver(state: &AppState, job: ClaimedJob) -> &'static str {
    let d: webhooks::Delivery = match serde_json::from_value(job.payload.clone()) {
        Ok(d) => d,
        Err(e) => {
            let _ = state.queue.fail(&job.lease, &format!("bad delivery record: {e}"), false, vec![]).await;
            return "failed";
        }
    };
    let timeout = Duration::from_secs_f64(state.config.webhook_timeout_secs);
    let allow_private = state.config.webhook_allow_private;
    // Each key's webhooks are signed with its own secret: one tenant cannot forge another's.
    let secret = match &d.key_id {
        Some(id) => match state.meta.api_key(id).await {
            Ok(k) => k.and_then(|k| k.webhook_secret).unwrap_or_else(|| state.webhook_secret.to_string()),
            Err(e) => {
                let _ = state.queue.fail(&job.lease, &format!("reading the key: {e}"), true, vec![]).await;
                return "failed";
            }
        },
        None => state.webhook_secret.to_string(),
    };
    let outcome = match webhooks::deliver(&state.http, secret.as_bytes(), &d, timeout, allow_private).await {
        Ok(_) => match state.queue.complete(&job.lease, vec![]).await {
            Ok(true) => "succeeded",
            _ => "lost",
        },
        Err(reason) => match state.queue.fail(&job.lease, &reason, true, vec![]).await {
            Ok(FailOutcome::Retrying { .. }) => "retrying",
            Ok(FailOutcome::Failed) => "failed",
            _ => "lost",
        },
    };
    metrics::counter!("reelsmith_webhook_deliveries_total", "outcome" => outcome).increment(1);
    outcome
}

/// Enqueues a cleanup every interval (one per interval, whichever node gets there first): ten
/// minutes, or half the retention when that is shorter.
async fn schedule_cleanup(state: AppState, stop: CancellationToken) {
    let shortest = state.config.retention_hours.min(state.config.asset_retention_hours);
    let interval_ms = ((shortest * 3_600_000.0 / 2.0) as i64).clamp(500, 600_000);
    loop {
        let slot = now_ms() / interval_ms;
        let mut job = NewJob::new(MAINTENANCE_QUEUE, "cleanup", serde_json::json!({}));
        job.dedup_key = Some(format!("cleanup-{interval_ms}-{slot}"));
        job.retry.max_attempts = 1;
        if let Err(e) = state.queue.enqueue(job).await {
            tracing::warn!(error = %e, "cannot schedule cleanup");
        }
        let next = (slot + 1) * interval_ms - now_ms();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(next.max(1) as u64)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn maintenance(state: &AppState, job: ClaimedJob) -> &'static str {
    match cleanup(state).await {
        Ok(n) => {
            tracing::info!(removed = n, "cleanup done");
            let _ = state.queue.complete(&job.lease, vec![]).await;
            "succeeded"
        }
        Err(e) => {
            let _ = state.queue.fail(&job.lease, &e, true, vec![]).await;
            "failed"
        }
    }
}

/// Retention: expired generations with their files, finished helper jobs, stale work folders.
/// Removes assets unused for `asset_retention_hours`, except those a queued or running
/// generation still needs.
async fn expire_assets(state: &AppState) -> Result<u64, String> {
    let cutoff = now_ms() - (state.config.asset_retention_hours * 3_600_000.0) as i64;
    let stale = state.meta.stale_assets(cutoff, 500).await.map_err(|e| e.to_string())?;
    if stale.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = stale.iter().map(|a| a.id.clone()).collect();
    let busy: std::collections::HashSet<String> = crate::submit::assets_in_use(state, None, &ids)
        .await
        .map_err(|e| e.message)?
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    let mut removed = 0;
    for a in stale.iter().filter(|a| !busy.contains(&a.id)) {
        crate::submit::remove_asset(state, &a.id).await.map_err(|e| e.message)?;
        removed += 1;
    }
    Ok(removed)
}

pub async fn cleanup(state: &AppState) -> Result<u64, String> {
    let cutoff = now_ms() - (state.config.retention_hours * 3_600_000.0) as i64;
    let mut removed = 0;
    loop {
        let ids = state.meta.expired_generations(cutoff, 200).await.map_err(|e| e.to_string())?;
        if ids.is_empty() {
            break;
        }
        let mut progressed = false;
        for id in ids {
            // One undeletable folder must not stall retention for everything behind it.
            if let Err(e) = state.artifacts.delete_prefix(&id).await {
                tracing::warn!(generation = %id, error = %e, "cannot remove files; removing the record anyway");
            }
            state.meta.delete_generation(&id).await.map_err(|e| e.to_string())?;
            removed += 1;
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    state.queue.purge_finished(cutoff).await.map_err(|e| e.to_string())?;
    removed += expire_assets(state).await?;
    // Work folders of attempts that died with their process.
    let tmp: PathBuf = state.config.data_dir.join("tmp");
    if let Ok(mut rd) = tokio::fs::read_dir(&tmp).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            let old = e
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs_f64(state.config.job_timeout_secs * 2.0));
            if old {
                let _ = tokio::fs::remove_dir_all(e.path()).await;
            }
        }
    }
    Ok(removed)
}
