//! Render jobs: one generation's video, on a low-priority thread.

use std::sync::{Arc, Mutex};

use reelsmith_engine::{Progress, RenderOptions};
use reelsmith_store::ClaimedJob;

use crate::events::Event;
use crate::jobs::lease::{
    ProgressState, Stop, Watch, attempt_timeout, overall, panic_message, supervise, time_limit_message,
};
use crate::jobs::outcome::{JobError, Outcome, finish_cancelled, finish_failed, finish_succeeded};
use crate::state::AppState;

pub(crate) async fn render(state: &AppState, job: ClaimedJob) -> Outcome {
    let id = job.subject.clone();
    let outcome = render_attempt(state, job).await;
    // Whatever happened, this process no longer has live progress for it.
    if let Some(id) = id {
        state.hub.forget(&id);
    }
    outcome
}

async fn render_attempt(state: &AppState, job: ClaimedJob) -> Outcome {
    let lease = job.lease.clone();
    let Some(gen_id) = job.subject.clone() else {
        let _ = state.queue.fail(&lease, "render job without a generation", false, vec![]).await;
        return Outcome::Failed;
    };
    let record = match state.meta.generation(&gen_id).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            // Deleted while queued: nothing to do.
            let _ = state.queue.complete(&lease, vec![]).await;
            return Outcome::Skipped;
        }
        Err(e) => {
            let _ = crate::jobs::outcome::fail_attempt(state, &lease, &format!("database: {e}"), true).await;
            return Outcome::Failed;
        }
    };
    // Made from a prompt: planned first, in this attempt.
    let record = if crate::jobs::plan::needs_plan(&record) {
        match crate::jobs::plan::plan(state, &job, record).await {
            Ok(planned) => planned,
            Err(outcome) => return outcome,
        }
    } else {
        record
    };
    if crate::jobs::did::is_remote(&record) {
        return crate::jobs::did::render(state, &job, &record).await;
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
        let _ =
            crate::jobs::outcome::fail_attempt(state, &lease, &format!("cannot create work folder: {e}"), true).await;
        return Outcome::Failed;
    }
    let mut spec = match reelsmith_spec::parse(&record.spec.to_string()) {
        Ok(s) => crate::assets::engine_view(&s),
        Err(e) => return finish_failed(state, &record, &lease, JobError::fatal("spec_parse", e.to_string())).await,
    };
    if let Err(e) = crate::assets::ensure_assets(state, &spec).await {
        return finish_failed(state, &record, &lease, JobError::retry("assets", e)).await;
    }
    // Talking heads D-ID animates become D-ID's clips first.
    let did_stage = match crate::jobs::did::prepare_scenes(state, &job, &record, &mut spec, &work, true).await {
        Ok(crate::jobs::did::Scenes::Ready(stage)) => stage,
        prepared => {
            let outcome = match prepared {
                Ok(crate::jobs::did::Scenes::Cancelled) => finish_cancelled(state, &record, &lease).await,
                Ok(_) => Outcome::Lost,
                Err(f) => finish_failed(state, &record, &lease, JobError::provider(&f)).await,
            };
            let _ = tokio::fs::remove_dir_all(&work).await;
            return outcome;
        }
    };

    // Distributed: segments rendered by segment jobs on any worker first, then assembled here.
    let mut made_by = std::collections::BTreeMap::new();
    if state.config.distributed_render {
        match crate::jobs::segments::fan_out(state, &job, &record, &spec, &work).await {
            crate::jobs::segments::FanOut::Assemble(workers) => made_by = workers,
            crate::jobs::segments::FanOut::Finished(outcome) => {
                let _ = tokio::fs::remove_dir_all(&work).await;
                return outcome;
            }
        }
    }
    // Assembling fanned-out segments is the last 5%: progress does not start over.
    let floor = if made_by.is_empty() { 0.0 } else { 0.95 };
    let progress = Arc::new(Mutex::new(ProgressState::default()));
    let watch = Watch::with_progress(progress.clone());
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
                hub.publish(Event::running(&gid, owner.clone(), attempt, &st.stage, st.fraction));
            }
        }) as Arc<dyn Fn(Progress) + Send + Sync>
    };
    let out = work.join("video.mp4");
    let (live, uploader) = match state.config.live_stream {
        true => {
            let (live, uploader) = live_stream(state, &gen_id, &work).await;
            (Some(live), Some(uploader))
        }
        false => (None, None),
    };
    let opts = RenderOptions {
        live,
        progress: Some(progress_cb),
        cancel: Some(watch.cancel.clone()),
        // Each key's renders have their own cache entries (no cross-tenant hit oracle).
        cache_scope: record.api_key_id.clone(),
        cache_share: Some(state.config.cache_share_bytes()),
        ..Default::default()
    };
    let renderer = state.renderer.clone();
    let assets = state.assets_dir.clone();
    let panic_attempts = crate::jobs::faults::panic_attempts();
    let out_thread = out.clone();
    let render = move || {
        if attempt <= panic_attempts {
            panic!("injected fault (REELSMITH_FAULT_PANIC_ATTEMPTS) on attempt {attempt}");
        }
        renderer.render(&spec, &assets, &out_thread, &opts)
    };
    let timeout = attempt_timeout(state, &job);
    let result = match supervise(state, &lease, &gen_id, timeout, &watch, render).await {
        Ok(r) => r,
        Err(e) => {
            let _ =
                crate::jobs::outcome::fail_attempt(state, &lease, &format!("cannot start a render thread: {e}"), true)
                    .await;
            return Outcome::Failed;
        }
    };
    // The render (and the stream's sender with it) is done: the last pieces are stored
    // before the generation says it has finished.
    if let Some(u) = uploader {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), u).await;
    }
    let stop_reason = watch.reason();
    let outcome = match result {
        _ if stop_reason == Some(Stop::LeaseLost) => {
            tracing::warn!(generation = %gen_id, "lease lost; another worker has the job");
            Outcome::Lost
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
        _ if stop_reason == Some(Stop::Cancel) => finish_cancelled(state, &record, &lease).await,
        Ok(Err(_)) if stop_reason == Some(Stop::TimeLimit) => {
            finish_failed(state, &record, &lease, JobError::fatal("time_limit", time_limit_message(timeout))).await
        }
        Ok(Err(e)) => finish_failed(state, &record, &lease, JobError::render(&e)).await,
        Err(panic) => {
            let msg = panic_message(&panic);
            let e = JobError::retry("worker_panic", format!("render worker panicked: {msg}"));
            finish_failed(state, &record, &lease, e).await
        }
    };
    let _ = tokio::fs::remove_dir_all(&work).await;
    outcome
}

/// Where a render's live stream goes: the engine hands over each piece, and a task stores it
/// among the generation's files (`{id}/live/…`), in the order handed, so a playlist is stored
/// only after the pieces it lists. A piece that cannot be stored ends the stream (never the
/// render). The task ends when the render drops the stream.
async fn live_stream(
    state: &AppState,
    gen_id: &str,
    work: &std::path::Path,
) -> (reelsmith_engine::LiveOptions, tokio::task::JoinHandle<()>) {
    // A retried render starts its stream over.
    if let Err(e) = state.artifacts.delete_prefix(&format!("{gen_id}/live")).await {
        tracing::warn!(generation = %gen_id, error = %e, "cannot clear an earlier live stream");
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, std::path::PathBuf)>();
    let (artifacts, hub, id) = (state.artifacts.clone(), state.hub.clone(), gen_id.to_string());
    let uploader = tokio::spawn(async move {
        let mut broken = false;
        while let Some((name, file)) = rx.recv().await {
            if !broken {
                match artifacts.put_file(&format!("{id}/live/{name}"), &file).await {
                    Ok(_) if name == reelsmith_engine::LIVE_PLAYLIST => hub.live_stored(&id),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(generation = %id, piece = %name, error = %e, "live piece not stored; the stream stops");
                        broken = true;
                    }
                }
            }
            let _ = tokio::fs::remove_file(&file).await;
        }
    });
    let live = reelsmith_engine::LiveOptions {
        dir: work.join("live"),
        uri_prefix: "stream/".into(),
        publish: Arc::new(move |name: &str, file: &std::path::Path| {
            let _ = tx.send((name.to_string(), file.to_path_buf()));
        }),
    };
    (live, uploader)
}
