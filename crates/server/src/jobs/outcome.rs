//! Recording how an attempt ended: results, events and webhooks, retries.

use std::path::Path;
use std::time::Duration;

use reelsmith_engine::Report;
use reelsmith_store::{FailOutcome, GenerationRecord, GenerationResult, Heartbeat, now_ms};

use crate::events::Event;
use crate::jobs::lease::Held;
use crate::state::AppState;

/// Why an attempt failed: a stable code (the generation's `error.code`), the message, and
/// whether another attempt may succeed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JobError {
    pub code: &'static str,
    pub message: String,
    pub retry: bool,
}

impl JobError {
    /// Worth another attempt (storage, a crash, a provider outage).
    pub fn retry(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry: true }
    }

    /// Final: another attempt would fail the same way.
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry: false }
    }

    /// A render's failure: the spec's own faults are final, anything else may pass next time.
    pub fn render(e: &reelsmith_engine::RenderError) -> Self {
        Self { code: e.code(), message: e.to_string(), retry: !e.is_input_error() }
    }

    /// A remote provider's failure, retried when the provider said so.
    pub fn provider(f: &reelsmith_providers::Failure) -> Self {
        Self { code: "provider_error", message: f.message().to_string(), retry: f.is_retryable() }
    }
}

/// How one job attempt ended (the `outcome` label of the job metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Failed and queued again (with backoff).
    Retrying,
    Failed,
    Cancelled,
    /// The lease expired: another worker may have the job, so nothing was recorded.
    Lost,
    /// Nothing to do (the generation is gone or already final).
    Skipped,
    /// The outcome could not be recorded (a store error); the lease decides what happens next.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
            Self::Skipped => "skipped",
            Self::Error => "error",
        }
    }
}

pub(crate) async fn finish_succeeded(
    state: &AppState,
    g: &GenerationRecord,
    lease: &reelsmith_store::Lease,
    report: Report,
    video: &Path,
) -> Outcome {
    // Results are written before the completion; a worker that lost its job writes nothing, and
    // a render cancelled as it finished ends cancelled (left running, its lease would run out
    // and the job end as lost).
    match state.queue.heartbeat(lease, Duration::from_secs_f64(state.config.lease_secs)).await {
        Ok(Heartbeat::Extended) => {}
        Ok(Heartbeat::CancelRequested) => return finish_cancelled(state, g, lease).await,
        _ => {
            tracing::warn!(generation = %g.id, "lease lost before storing results");
            return Outcome::Lost;
        }
    }
    // Uploading a large video takes a while: the lease is kept meanwhile, so no other worker
    // renders the job again, and a cancel or delete stops the upload.
    let limit = Duration::from_secs_f64(state.config.job_timeout_secs);
    let stored = match crate::jobs::lease::hold(state, lease, limit, store_results(state, g, &report, video)).await {
        Held::Done(Ok(Some(result))) => Ok(result),
        Held::Done(Err(e)) => Err(e),
        Held::TimedOut => Err(format!("storing took more than {} s", limit.as_secs())),
        ended => {
            // Deleted meanwhile (a delete ends the job, so its lease is lost too): files stored
            // after the delete cleared the generation's prefix go now.
            if matches!(state.meta.generation(&g.id).await, Ok(None)) {
                let _ = state.artifacts.delete_prefix(&g.id).await;
            }
            if matches!(ended, Held::Lost) {
                tracing::warn!(generation = %g.id, "lease lost while storing results");
                return Outcome::Lost;
            }
            return finish_cancelled(state, g, lease).await;
        }
    };
    match stored {
        Ok(result) => {
            for (name, st) in &report.stages {
                metrics::histogram!("reelsmith_stage_duration_seconds", "stage" => name.clone()).record(st.wall_s);
            }
            metrics::counter!("reelsmith_cache_hits_total").increment(report.cache_hits);
            metrics::counter!("reelsmith_cache_misses_total").increment(report.cache_misses);
            state.telemetry.note_cache(report.cache_hits, report.cache_misses);
            let mut done = g.clone();
            done.state = reelsmith_store::JobState::Succeeded;
            done.progress = 1.0;
            done.stage = Some("done".into());
            done.result = Some(result);
            done.finished_at_ms = Some(now_ms());
            match state
                .queue
                .complete(lease, crate::webhooks::for_generation(state, &done, "generation.succeeded"))
                .await
            {
                Ok(true) => {
                    state.hub.publish(crate::events::event_of(&done));
                    Outcome::Succeeded
                }
                Ok(false) => Outcome::Lost,
                Err(e) => {
                    tracing::error!(error = %e, "cannot record success; the lease will expire and the job rerun");
                    Outcome::Error
                }
            }
        }
        Err(e) => {
            let msg = format!("cannot store the results: {e}");
            finish_failed(state, g, lease, JobError::retry("storage", msg)).await
        }
    }
}

/// Thumbnail, subtitles, report and video into artifact storage; the result record. `None`
/// when the generation was deleted meanwhile (the caller then clears what was stored).
async fn store_results(
    state: &AppState,
    g: &GenerationRecord,
    report: &Report,
    video: &Path,
) -> Result<Option<GenerationResult>, String> {
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
    // Made from a prompt: what planning called, cost and took, beside the render's own stages.
    if let Some(p) = g.prompt.as_ref().filter(|p| p.get("ledger").is_some()) {
        report_json["prompt"] = serde_json::json!({
            "ledger": p["ledger"], "stages": p["stages"], "visuals": p["visuals"], "voices": p["voices"],
        });
    }
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report_json).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let a = &state.artifacts;
    let key = |n: &str| format!("{}/{n}", g.id);
    for name in ["thumbnail.jpg", "subtitles.vtt", "report.json"] {
        a.put_file(&key(name), &dir.join(name)).await.map_err(|e| e.to_string())?;
        if name == "thumbnail.jpg" {
            crate::jobs::faults::pause_storing(state, &g.id).await;
        }
    }
    let bytes = a.put_file(&key("video.mp4"), video).await.map_err(|e| e.to_string())?;
    // Deleted while its files were being stored: the delete may have cleared the prefix before
    // the last of them arrived (they go in the caller); a delete after this check clears them.
    if state.meta.generation(&g.id).await.map_err(|e| e.to_string())?.is_none() {
        return Ok(None);
    }
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
    Ok(Some(result))
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
) -> Outcome {
    let mut done = g.clone();
    done.state = reelsmith_store::JobState::Cancelled;
    match state.queue.cancelled(lease, crate::webhooks::for_generation(state, &done, "generation.cancelled")).await {
        Ok(true) => {
            state.hub.publish(crate::events::event_of(&done));
            Outcome::Cancelled
        }
        _ => Outcome::Lost,
    }
}

/// A failure's words as callers see them: without this node's folders (the log has them).
pub(crate) fn public_message(state: &AppState, message: &str) -> String {
    let folders = crate::views::server_folders(&state.config.data_dir, &state.config.cache_dir());
    crate::views::without_server_paths(message, &folders)
}

/// Records a failed attempt of a render or segment job (whose attempts callers see), its
/// message cut to [`public_message`].
pub(crate) async fn fail_attempt(
    state: &AppState,
    lease: &reelsmith_store::Lease,
    message: &str,
    retryable: bool,
) -> reelsmith_store::Result<FailOutcome> {
    state.queue.fail(lease, &public_message(state, message), retryable, vec![]).await
}

pub(crate) async fn finish_failed(
    state: &AppState,
    g: &GenerationRecord,
    lease: &reelsmith_store::Lease,
    error: JobError,
) -> Outcome {
    let JobError { code, message, retry: retryable } = error;
    // `message` is the event's own text in the log format: the reason (FFmpeg's words, partly
    // the caller's) goes in a field of its own, Debug-escaped so it cannot forge log lines.
    tracing::warn!(generation = %g.id, attempt = lease.attempt, code, reason = ?message, retryable, "render attempt failed");
    let message = public_message(state, &message);
    let message = message.as_str();
    let mut done = g.clone();
    done.state = reelsmith_store::JobState::Failed;
    done.error_code = Some(code.into());
    done.error_message = Some(message.into());
    let events = crate::webhooks::for_generation(state, &done, "generation.failed");
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
            Outcome::Retrying
        }
        Ok(FailOutcome::Failed) => {
            state.hub.publish(crate::events::event_of(&done));
            Outcome::Failed
        }
        Ok(FailOutcome::Lost) => Outcome::Lost,
        Err(e) => {
            tracing::error!(error = %e, "cannot record a failure");
            Outcome::Error
        }
    }
}
