//! The D-ID provider: a talk created with `"engine": "d-id"` is rendered by D-ID's API instead
//! of locally. The worker uploads the photo (`POST /images`) and a recording if there is one
//! (`POST /audios`), creates the talk (`POST /talks`, with a webhook back to this server), then
//! waits for D-ID's webhook — or, if it never comes (no public URL, a lost delivery), polls
//! `GET /talks/{id}` — downloads `result_url` and stores it like a local render's video.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reelsmith_engine::Report;
use reelsmith_engine::report::StageReport;
use reelsmith_providers::Failure;
use reelsmith_providers::did::Client;
use reelsmith_store::{ClaimedJob, GenerationRecord};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::events::{Event, Waits};
use crate::jobs::lease::{Held, hold};
use crate::jobs::outcome::{JobError, Outcome, finish_failed};
use crate::signing::Purpose;
use crate::state::AppState;

pub fn is_remote(g: &GenerationRecord) -> bool {
    g.metadata["talk"]["engine"].as_str() == Some("d-id")
}

fn callback_signature(state: &AppState, generation_id: &str) -> String {
    state.signing.sign(Purpose::DidCallback, &crate::signing::did_callback_message(generation_id))
}

/// Removes the waiter when the render ends, however it ends.
struct WaitGuard<'a>(&'a Waits, String);

/// Waits for the webhook of the talk known as `waiter` here, until the guard is dropped.
fn register_wait<'a>(state: &'a AppState, waiter: &str) -> (Arc<Notify>, WaitGuard<'a>) {
    let notify = Arc::new(Notify::new());
    state.remote_waits.lock().expect("waits").insert(waiter.to_string(), notify.clone());
    (notify, WaitGuard(&state.remote_waits, waiter.to_string()))
}

/// Publishes a running generation's progress at a D-ID stage.
fn publish_progress(state: &AppState, g: &GenerationRecord, attempt: u32, stage: &str, progress: f64) {
    state.hub.publish(Event::running(&g.id, g.api_key_id.clone(), attempt, stage, progress));
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("waits").remove(&self.1);
    }
}

/// The asset an `asset:` reference in the stored spec points at.
async fn asset_of(state: &AppState, reference: Option<&str>) -> Option<(std::path::PathBuf, String)> {
    let id = reference?.strip_prefix(crate::assets::ASSET_PREFIX)?;
    let a = state.meta.asset(id).await.ok()??;
    Some((state.assets_dir.join(id), a.media_type))
}

/// Renders a talk through D-ID; the job's outcome as the worker reports it.
pub async fn render(state: &AppState, job: &ClaimedJob, g: &GenerationRecord) -> Outcome {
    let lease = &job.lease;
    let started = Instant::now();
    let Some(key) = state.config.did_api_key.as_deref() else {
        let msg = "this talk asks for engine d-id, but did_api_key is not set on this server";
        return finish_failed(state, g, lease, JobError::fatal("provider_unavailable", msg)).await;
    };
    let client = Client::new(state.http.clone(), &state.config.did_base_url, key, state.did_gate.clone());
    let publish = |stage: &str, progress: f64| publish_progress(state, g, lease.attempt, stage, progress);
    publish("d-id", 0.02);
    let _ = state.meta.set_progress(&g.id, 0.02, "d-id").await;

    let (notify, _guard) = register_wait(state, &g.id);
    let work = state.config.data_dir.join("tmp").join(format!("{}-{}", g.id, lease.attempt));
    let _ = tokio::fs::create_dir_all(&work).await;
    let video = work.join("video.mp4");
    let result = talk(state, &client, g, &notify, job, &video, &publish).await;
    let outcome = match result {
        Ok(Step::Done(report)) => {
            let mut report = *report;
            report.wall_s = started.elapsed().as_secs_f64();
            crate::jobs::outcome::finish_succeeded(state, g, lease, report, &video).await
        }
        Ok(Step::Cancelled) => crate::jobs::outcome::finish_cancelled(state, g, lease).await,
        Ok(Step::Lost) => Outcome::Lost,
        Err(f) => finish_failed(state, g, lease, JobError::provider(&f)).await,
    };
    let _ = tokio::fs::remove_dir_all(&work).await;
    outcome
}

enum Step {
    Done(Box<Report>),
    Cancelled,
    Lost,
}

async fn talk(
    state: &AppState,
    client: &Client,
    g: &GenerationRecord,
    notify: &Notify,
    job: &ClaimedJob,
    video: &Path,
    publish: &impl Fn(&str, f64),
) -> Result<Step, Failure> {
    let t = &g.metadata["talk"];
    let scene = &g.spec["scenes"][0];
    let (photo, photo_type) = asset_of(state, scene["image"].as_str())
        .await
        .ok_or_else(|| Failure::Final("the talk's photo is missing from the assets".into()))?;
    let source_url = client.upload("image", &photo, &photo_type).await?;
    let script = match asset_of(state, scene["narration"]["audio"].as_str()).await {
        Some((audio, audio_type)) => {
            json!({"type": "audio", "audio_url": client.upload("audio", &audio, &audio_type).await?})
        }
        None => {
            let mut s = json!({"type": "text", "input": t["script"]["input"]});
            // The caller's own D-ID voice; local engines mean nothing to D-ID (its default then).
            if let Some(p) = t["script"]["provider"].as_object()
                && !matches!(p.get("type").and_then(Value::as_str), Some("piper" | "espeak-ng"))
            {
                s["provider"] = Value::Object(p.clone());
            }
            s
        }
    };
    let webhook = callback_url(state, &g.id);
    let mut body = json!({"source_url": source_url, "script": script, "config": t["config"], "webhook": webhook});
    if let Some(n) = t["name"].as_str() {
        body["name"] = json!(n);
    }
    let remote_id = client.create_talk(&body).await?;
    tracing::info!(generation = %g.id, remote = %remote_id, "talk sent to D-ID");
    publish("d-id", 0.1);

    let talk = match wait_for_talk(state, client, job, &remote_id, notify, publish).await? {
        Waited::Done(talk) => talk,
        Waited::Cancelled => return Ok(Step::Cancelled),
        Waited::Lost => return Ok(Step::Lost),
    };
    publish("download", 0.9);
    download_result(state, client, &talk, video).await?;
    let probe_path = video.to_path_buf();
    let info = tokio::task::spawn_blocking(move || reelsmith_media::ffmpeg::probe(&probe_path))
        .await
        .map_err(|e| Failure::Retryable(e.to_string()))?
        .map_err(|e| Failure::Final(format!("D-ID's result is not a readable video: {e}")))?;
    let v = info.video().ok_or_else(|| Failure::Final("D-ID's result has no video stream".into()))?;
    let mut report = Report {
        output: video.display().to_string(),
        width: v.width,
        height: v.height,
        duration_s: info.duration,
        encoder: "d-id".into(),
        ..Default::default()
    };
    report.stages.insert("d-id".into(), StageReport { items: 1, runs: 1, ..Default::default() });
    Ok(Step::Done(Box::new(report)))
}

/// How waiting for a remote talk ended.
enum Waited {
    /// D-ID's talk, `done`.
    Done(Value),
    Cancelled,
    Lost,
}

/// Waits for D-ID to finish talk `remote_id`: woken by its webhook, else polling every
/// `did_poll_secs`; heartbeats keep the job's lease meanwhile, and cancellation and the
/// attempt's time limit end the wait.
async fn wait_for_talk(
    state: &AppState,
    client: &Client,
    job: &ClaimedJob,
    remote_id: &str,
    notify: &Notify,
    publish: &impl Fn(&str, f64),
) -> Result<Waited, Failure> {
    let timeout = crate::jobs::lease::attempt_timeout(state, job);
    match hold(state, &job.lease, timeout, poll_talk(state, client, remote_id, notify, publish)).await {
        Held::Done(r) => r,
        Held::Cancelled => Ok(Waited::Cancelled),
        Held::Lost => Ok(Waited::Lost),
        Held::TimedOut => Err(Failure::Final(format!("D-ID did not finish within the time limit (talk {remote_id})"))),
    }
}

/// Reads the talk until it is done or failed: after each read, until D-ID's webhook wakes
/// `notify` or the next poll is due.
async fn poll_talk(
    state: &AppState,
    client: &Client,
    remote_id: &str,
    notify: &Notify,
    publish: &impl Fn(&str, f64),
) -> Result<Waited, Failure> {
    let poll = Duration::from_secs_f64(state.config.did_poll_secs);
    loop {
        let talk = client.talk(remote_id).await?;
        match talk["status"].as_str().unwrap_or_default() {
            "done" => return Ok(Waited::Done(talk)),
            "error" | "rejected" => {
                let why = talk["error"]["description"]
                    .as_str()
                    .or(talk["error"]["kind"].as_str())
                    .unwrap_or("no reason given");
                return Err(Failure::Final(format!("D-ID could not render the talk ({}): {why}", talk["status"])));
            }
            _ => publish("d-id", if talk["status"] == "started" { 0.5 } else { 0.2 }),
        }
        // Until D-ID's webhook wakes us, or the next poll (`hold` keeps the lease meanwhile).
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Downloads a done talk's `result_url` to `dest`.
async fn download_result(state: &AppState, client: &Client, talk: &Value, dest: &Path) -> Result<u64, Failure> {
    let url = talk["result_url"]
        .as_str()
        .ok_or_else(|| Failure::Final("D-ID's talk is done but has no result_url".into()))?;
    client.download(url, dest, state.config.max_upload_bytes as u64 * 20).await
}

/// The webhook D-ID calls when the talk waited on as `waiter` is done.
fn callback_url(state: &AppState, waiter: &str) -> String {
    format!(
        "{}/callbacks/d-id/{waiter}?signature={}",
        state.public_url.trim_end_matches('/'),
        callback_signature(state, waiter)
    )
}

/// How preparing a storyboard's D-ID scenes ended, when it did not fail.
pub(crate) enum Scenes {
    /// The spec is ready to render; with D-ID scenes, their stage's figures (items: scenes,
    /// runs: talks D-ID rendered, the rest came from the cache).
    Ready(Option<StageReport>),
    Cancelled,
    Lost,
}

/// Storyboard scenes whose talking head D-ID animates (`"provider": "d-id"`). Each scene's
/// narration is synthesised here (the same cached narration the render uses, so subtitles and
/// sound match the lips), sent as audio with the photo, and D-ID's clip then plays in the
/// scene's place. Clips are cached by photo, narration and framing: re-rendering after an
/// edit elsewhere never calls D-ID again. Segment jobs (`may_call` false) use the clip the
/// render job fetched, from the shared cache.
pub(crate) async fn prepare_scenes(
    state: &AppState,
    job: &ClaimedJob,
    g: &GenerationRecord,
    spec: &mut reelsmith_spec::Spec,
    work: &Path,
    may_call: bool,
) -> Result<Scenes, Failure> {
    let remote: Vec<usize> = (0..spec.scenes.len()).filter(|&i| spec.scenes[i].is_d_id_talking_head()).collect();
    if remote.is_empty() {
        return Ok(Scenes::Ready(None));
    }
    let started = Instant::now();
    let Some(api_key) = state.config.did_api_key.as_deref() else {
        return Err(Failure::Final(format!(
            "scenes[{}].motion.provider: d-id needs did_api_key on this server",
            remote[0]
        )));
    };
    let client = Client::new(state.http.clone(), &state.config.did_base_url, api_key, state.did_gate.clone());
    // D-ID's part of a storyboard is the first tenth of its progress.
    let publish = |stage: &str, progress: f64| publish_progress(state, g, job.lease.attempt, stage, progress * 0.1);
    publish("d-id", 0.0);
    // All of the scenes at once: D-ID takes tens of seconds per talk.
    let view = spec.clone();
    let clips = futures_util::future::join_all(
        remote.iter().map(|&i| scene_clip(state, &client, job, g, &view, i, work, may_call, &publish)),
    )
    .await;
    let mut stage = StageReport { items: remote.len() as u64, ..Default::default() };
    for (&i, clip) in remote.iter().zip(clips) {
        let (clip, called) = match clip? {
            Ok(got) => got,
            Err(stopped) => return Ok(stopped),
        };
        stage.runs += called as u64;
        stage.cache_hits += !called as u64;
        stage.cache_misses += called as u64;
        let scene = &mut spec.scenes[i];
        scene.image = None;
        scene.motion = reelsmith_spec::Motion::None;
        scene.video = Some(reelsmith_spec::VideoClip {
            file: clip.display().to_string(),
            start: 0.0,
            end: None,
            r#loop: false,
            audio: false,
        });
    }
    stage.wall_s = started.elapsed().as_secs_f64();
    Ok(Scenes::Ready(Some(stage)))
}

/// Scene `i`'s D-ID clip, from the cache or from D-ID (then `true`), copied into `work`; or
/// why the wait stopped (cancelled, lease lost).
#[allow(clippy::too_many_arguments)]
async fn scene_clip(
    state: &AppState,
    client: &Client,
    job: &ClaimedJob,
    g: &GenerationRecord,
    spec: &reelsmith_spec::Spec,
    i: usize,
    work: &Path,
    may_call: bool,
    publish: &impl Fn(&str, f64),
) -> Result<Result<(std::path::PathBuf, bool), Scenes>, Failure> {
    let scene = &spec.scenes[i];
    let photo = state.assets_dir.join(scene.image.as_deref().unwrap_or_default());
    let wav = work.join(format!("d-id-{i}.wav"));
    let (engine, assets, view, wav_out, photo_path, scope) = (
        state.engine.clone(),
        state.assets_dir.clone(),
        spec.clone(),
        wav.clone(),
        photo.clone(),
        g.api_key_id.clone(),
    );
    let (narration, photo_hash) = tokio::task::spawn_blocking(move || {
        let n = engine.narration_wav(&view, &assets, i, &wav_out, scope.as_deref());
        (n, reelsmith_engine::cache::hash_file(&photo_path))
    })
    .await
    .map_err(|e| Failure::Retryable(e.to_string()))?;
    let (narration_key, _) = narration.map_err(|e| {
        if e.is_input_error() {
            Failure::Final(e.to_string())
        } else {
            Failure::Retryable(format!("scenes[{i}].narration: {e}"))
        }
    })?;
    let photo_hash = photo_hash.map_err(|e| Failure::Retryable(format!("scenes[{i}].image: {e}")))?;
    // D-ID's `stitch` keeps the photo's framing; without it D-ID crops a headshot.
    let framing = match scene.motion {
        reelsmith_spec::Motion::TalkingHead { framing, .. } => framing,
        _ => reelsmith_spec::Framing::Photo,
    };
    let stitch = framing == reelsmith_spec::Framing::Photo;
    // Keyed by the API key too: another tenant's identical clip is neither reused nor revealed.
    let key = reelsmith_engine::cache::key("d-id", &(photo_hash, &narration_key, stitch, &g.api_key_id));
    let clip = work.join(format!("d-id-{i}.mp4"));
    let cached = {
        let (engine, key) = (state.engine.clone(), key);
        tokio::task::spawn_blocking(move || engine.cache.lookup("d-id", &key))
            .await
            .map_err(|e| Failure::Retryable(e.to_string()))?
    };
    let called = cached.is_none();
    let entry = match cached {
        Some(dir) => dir,
        None if !may_call => {
            return Err(Failure::Retryable(format!("scenes[{i}]: D-ID's clip is not in the shared cache")));
        }
        None => {
            let media_type = state.meta.asset(scene.image.as_deref().unwrap_or_default()).await.ok().flatten();
            let media_type = media_type.map_or_else(|| "image/jpeg".to_string(), |a| a.media_type);
            let source_url = client.upload("image", &photo, &media_type).await?;
            let audio_url = client.upload("audio", &wav, "audio/wav").await?;
            let waiter = format!("{}.s{i}", g.id);
            let (notify, _guard) = register_wait(state, &waiter);
            let body = json!({
                "source_url": source_url,
                "script": {"type": "audio", "audio_url": audio_url},
                "config": {"stitch": stitch},
                "webhook": callback_url(state, &waiter),
            });
            let remote_id = client.create_talk(&body).await?;
            tracing::info!(generation = %g.id, scene = i, remote = %remote_id, "talking head sent to D-ID");
            let talk = match wait_for_talk(state, client, job, &remote_id, &notify, publish).await? {
                Waited::Done(talk) => talk,
                Waited::Cancelled => return Ok(Err(Scenes::Cancelled)),
                Waited::Lost => return Ok(Err(Scenes::Lost)),
            };
            let got = work.join(format!("d-id-{i}.download.mp4"));
            download_result(state, client, &talk, &got).await?;
            let check = got.clone();
            let info = tokio::task::spawn_blocking(move || reelsmith_media::ffmpeg::probe(&check))
                .await
                .map_err(|e| Failure::Retryable(e.to_string()))?
                .map_err(|e| Failure::Final(format!("D-ID's clip for scenes[{i}] is not a readable video: {e}")))?;
            if info.video().is_none() {
                return Err(Failure::Final(format!("D-ID's clip for scenes[{i}] has no video stream")));
            }
            let (engine, key) = (state.engine.clone(), key);
            tokio::task::spawn_blocking(move || {
                engine.cache.get_or_build("d-id", &key, |dir| std::fs::rename(&got, dir.join("clip.mp4")))
            })
            .await
            .map_err(|e| Failure::Retryable(e.to_string()))?
            .map_err(|e| Failure::Retryable(format!("caching D-ID's clip: {e}")))?
            .0
        }
    };
    // The render reads its own copy: the cache may evict the entry while it runs.
    tokio::fs::copy(entry.join("clip.mp4"), &clip).await.map_err(|e| Failure::Retryable(format!("D-ID clip: {e}")))?;
    Ok(Ok((clip, called)))
}
