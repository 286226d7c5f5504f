//! `/api/v1` handlers: generations, assets, downloads, performance report.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use reelsmith_store::{
    Attempt, CancelOutcome, CreateOutcome, GenerationRecord, JobRecord, JobState, ListFilter, NewGeneration, NewJob,
    new_id,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::events::Event;
use crate::submit::{self, Envelope};
use crate::worker::RENDER_QUEUE;
use crate::{ApiError, ApiResult, AppState, download, telemetry, webhooks};

/// The live-progress view of a stored generation.
pub fn event_of(g: &GenerationRecord) -> Event {
    Event {
        id: g.id.clone(),
        status: g.state.as_str().into(),
        progress: if g.state == JobState::Succeeded { 1.0 } else { g.progress },
        stage: g.stage.clone(),
        attempt: g.attempts,
        error: match g.state {
            JobState::Failed => g.error_message.clone().or_else(|| g.last_error.clone()),
            _ => None,
        },
        owner: g.api_key_id.clone(),
    }
}

/// The public JSON of a generation. `attempts` may be empty (webhook bodies leave them out).
pub fn status_json(g: &GenerationRecord, attempts: &[Attempt]) -> Value {
    let base = format!("/api/v1/generations/{}", g.id);
    let progress = if g.state == JobState::Succeeded { 1.0 } else { g.progress };
    let mut v = json!({
        "id": g.id,
        "status": g.state.as_str(),
        "progress": (progress * 1000.0).round() / 10.0,
        "stage": g.stage,
        "priority": g.priority,
        "attempts": g.attempts,
        "max_attempts": g.max_attempts,
        "created_at_ms": g.created_at_ms,
        "started_at_ms": g.started_at_ms,
        "finished_at_ms": g.finished_at_ms,
        "metadata": g.metadata,
        "webhook_url": g.webhook_url,
        "links": {"self": base, "events": format!("{base}/events"), "cancel": format!("{base}/cancel")},
    });
    if g.state == JobState::Failed {
        v["error"] = json!({
            "code": g.error_code.as_deref().unwrap_or("failed"),
            "message": g.error_message.clone().or_else(|| g.last_error.clone()).unwrap_or_else(|| "the render failed".into()),
        });
    } else if let Some(e) = &g.last_error {
        v["last_error"] = json!(e);
    }
    if let Some(r) = &g.result {
        v["result"] = json!({
            "video_url": format!("{base}/video"),
            "thumbnail_url": format!("{base}/thumbnail"),
            "subtitles_url": r.has_subtitles.then(|| format!("{base}/subtitles.vtt")),
            "report_url": format!("{base}/report"),
            "bytes": r.video_bytes,
            "duration_s": r.duration_s,
            "width": r.width,
            "height": r.height,
        });
        if let Some(stages) = r.report.get("stages") {
            v["timings"] = json!({
                "wall_s": r.report.get("wall_s"),
                "cpu_s": r.report.get("cpu_s"),
                "cache_hit_ratio": r.report.get("cache_hit_ratio"),
                "stages": stages,
            });
        }
    }
    if !attempts.is_empty() {
        v["attempt_history"] = json!(attempts);
    }
    v
}

fn deliveries_json(jobs: &[(JobRecord, Vec<Attempt>)]) -> Value {
    Value::Array(
        jobs.iter()
            .map(|(j, attempts)| {
                let d: Option<webhooks::Delivery> = serde_json::from_value(j.payload.clone()).ok();
                json!({
                    "event_id": d.as_ref().map(|d| &d.event_id),
                    "event_type": d.as_ref().map(|d| &d.event_type),
                    "url": d.as_ref().map(|d| &d.url),
                    "status": match j.state { JobState::Succeeded => "delivered", JobState::Failed => "failed",
                        JobState::Running => "delivering", _ => "pending" },
                    "attempts": attempts,
                    "next_attempt_at_ms": (j.state == JobState::Queued).then_some(j.run_at_ms),
                })
            })
            .collect(),
    )
}

/// Loads a generation the caller may see (another key's generations do not exist for it).
pub async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<GenerationRecord> {
    match state.meta.generation(id).await? {
        Some(g) if caller.0.is_none() || g.api_key_id == caller.key_id() => Ok(g),
        _ => Err(ApiError::not_found("generation", id)),
    }
}

pub async fn create_generation(State(state): State<AppState>, caller: Caller, req: Request) -> ApiResult<Response> {
    let headers = req.headers().clone();
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) if !s.trim().is_empty() && s.len() <= 255 => Some(s.trim().to_string()),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1-255 visible ASCII characters",
                ));
            }
        },
    };
    crate::guard::require_json(&headers, true)?;
    let is_multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("multipart/form-data"));
    let (env, uploads) = if is_multipart {
        read_multipart(&state, &caller, req).await?
    } else {
        let body = axum::body::to_bytes(req.into_body(), state.config.max_body_bytes).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body is over {} bytes; upload large files with POST /api/v1/assets",
                    state.config.max_body_bytes
                ),
            )
        })?;
        (submit::parse_envelope(&body)?, Uploads::default())
    };
    let key_id = caller.key_id();
    let queued = match submit::prepare(&state, env, &uploads.files, key_id.as_deref()).await {
        Ok(p) => enqueue(&state, &caller, p, idempotency_key).await,
        Err(e) => Err(e),
    };
    let (status, id, how) = match queued {
        Ok(q) => q,
        Err(e) => {
            // Files this refused request brought are not kept.
            forget_assets(&state, &uploads.new).await;
            return Err(e);
        }
    };
    let g = state.meta.generation(&id).await?.ok_or_else(|| ApiError::not_found("generation", &id))?;
    let mut body = status_json(&g, &[]);
    body["deduplicated"] = json!(how == "deduplicated");
    let mut resp = (status, Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/api/v1/generations/{id}")).map_err(ApiError::internal)?,
    );
    if how == "idempotent_replay" {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Stores a prepared generation with its render job (one transaction); wakes a worker.
/// Returns the HTTP status, the generation's id and how it came about.
pub async fn enqueue(
    state: &AppState,
    caller: &Caller,
    p: submit::Prepared,
    idempotency_key: Option<String>,
) -> ApiResult<(StatusCode, String, &'static str)> {
    let mut p = p;
    // Priority is an entitlement: a key asks for at most its own maximum.
    if let Some(key) = &caller.0
        && p.priority > i32::from(key.max_priority)
    {
        if p.priority_given {
            let msg = format!("this key may use priorities 0-{}", key.max_priority);
            return Err(ApiError::unprocessable("priority_not_allowed", format!("priority: {msg}"))
                .with_issues(vec![crate::error::IssueBody { path: "priority".into(), message: msg }]));
        }
        p.priority = i32::from(key.max_priority);
    }
    // The key's own cost limits: per job here, per day charged by the store in the same
    // transaction as the insert (replays and duplicates cost nothing).
    if let Some(key) = &caller.0
        && let Some(max) = key.limits.job_megapixel_frames
        && p.charge.megapixel_frames > max
    {
        let msg = format!(
            "about {:.0} megapixel-frames (frames × pixels); this key renders at most {max:.0} per job",
            p.charge.megapixel_frames
        );
        return Err(ApiError::unprocessable("too_costly", format!("spec.output: {msg}"))
            .with_issues(vec![crate::error::IssueBody { path: "spec.output".into(), message: msg }]));
    }
    // Fair between keys: a key's k-th unfinished generation is queued below every other key's
    // earlier ones at the same priority.
    let unfinished = match caller.key_id() {
        Some(k) => state.meta.active_generations(&k).await?,
        None => 0,
    };
    let id = new_id("gen");
    let mut job = NewJob::new(RENDER_QUEUE, "render", json!({ "generation": id }));
    job.subject = Some(id.clone());
    job.priority = fair_priority(p.priority, unfinished);
    job.retry = state.config.render_retry();
    job.timeout = std::time::Duration::from_secs_f64(state.config.job_timeout_secs);
    let budget = caller.0.as_ref().map(|k| daily_budget(&state.config, k, p.charge));
    let g = NewGeneration {
        id,
        spec: p.spec_json,
        spec_hash: p.spec_hash,
        priority: p.priority,
        webhook_url: p.webhook_url,
        idempotency_key,
        request_hash: p.request_hash,
        api_key_id: caller.key_id(),
        metadata: p.metadata,
        max_active: caller.0.as_ref().map(|k| k.max_concurrent_jobs),
        dedupe: p.dedupe,
        budget,
    };
    let created = match state.meta.create_generation(g, job).await {
        Err(reelsmith_store::StoreError::Budget { used }) => return Err(over_budget(p.charge, used, budget)),
        other => other?,
    };
    let (status, id, how) = match created {
        CreateOutcome::Created(id) => {
            state.wake.notify_waiters();
            (StatusCode::ACCEPTED, id, "created")
        }
        CreateOutcome::Idempotent(id) => (StatusCode::ACCEPTED, id, "idempotent_replay"),
        CreateOutcome::Deduplicated(id) => (StatusCode::OK, id, "deduplicated"),
    };
    Ok((status, id, how))
}

/// What a generation costs its key today and the most the key may spend per UTC day (its own
/// limits, else the server's defaults).
fn daily_budget(
    config: &crate::Config,
    key: &reelsmith_store::ApiKey,
    charge: reelsmith_store::Usage,
) -> reelsmith_store::Budget {
    reelsmith_store::Budget {
        day: reelsmith_store::usage_day(reelsmith_store::now_ms()),
        charge,
        cap: reelsmith_store::Usage {
            megapixel_frames: key
                .limits
                .daily_megapixel_frames
                .or(config.default_daily_megapixel_frames)
                .unwrap_or(f64::MAX),
            did_scenes: key.limits.daily_did_scenes.unwrap_or(config.default_daily_did_scenes),
        },
    }
}

/// 429 `budget_exceeded`, naming the budget that ran out and when it renews (midnight UTC).
fn over_budget(
    charge: reelsmith_store::Usage,
    used: reelsmith_store::Usage,
    budget: Option<reelsmith_store::Budget>,
) -> ApiError {
    let cap = budget.map(|b| b.cap).unwrap_or_default();
    let day = budget.map(|b| b.day).unwrap_or_default();
    let until_midnight = ((day + 1) * 86_400_000 - reelsmith_store::now_ms()).max(1000) as u64 / 1000;
    let (path, msg) = if charge.did_scenes > 0 && used.did_scenes + charge.did_scenes > cap.did_scenes {
        (
            "spec.scenes",
            format!(
                "this key may send {} scenes to D-ID per day (UTC); {} sent today, this spec has {}",
                cap.did_scenes, used.did_scenes, charge.did_scenes
            ),
        )
    } else {
        (
            "spec.output",
            format!(
                "this key may render {:.0} megapixel-frames per day (UTC); {:.0} used today, this spec needs {:.0}",
                cap.megapixel_frames, used.megapixel_frames, charge.megapixel_frames
            ),
        )
    };
    ApiError::too_many("budget_exceeded", format!("{path}: {msg}"), until_midnight)
        .with_issues(vec![crate::error::IssueBody { path: path.into(), message: msg }])
}

/// The queue priority of a generation asked for at `priority` (0-9) by a key that already has
/// `unfinished` generations queued or running. Claims take the highest first, so within a
/// priority each key's first generation comes before any key's second, and so on: a key with a
/// thousand queued renders delays another key's first by at most the one each worker is on.
/// Priority still orders one key's own generations (it dominates the rank).
pub fn fair_priority(priority: i32, unfinished: u64) -> i32 {
    priority * 10_000 - unfinished.min(9_999) as i32
}

/// Files that came with a submission: by the name the spec uses, and which of them are new
/// assets (removed again when the submission is refused).
#[derive(Default)]
struct Uploads {
    files: HashMap<String, String>,
    new: Vec<String>,
}

/// Removes assets a refused request created (best effort: retention catches any left).
async fn forget_assets(state: &AppState, ids: &[String]) {
    for id in ids {
        let _ = submit::remove_asset(state, id).await;
    }
}

async fn read_multipart(state: &AppState, caller: &Caller, req: Request) -> ApiResult<(Envelope, Uploads)> {
    let mut uploads = Uploads::default();
    match read_multipart_into(state, caller, req, &mut uploads).await {
        Ok(env) => Ok((env, uploads)),
        Err(e) => {
            forget_assets(state, &uploads.new).await;
            Err(e)
        }
    }
}

async fn read_multipart_into(
    state: &AppState,
    caller: &Caller,
    req: Request,
    uploads: &mut Uploads,
) -> ApiResult<Envelope> {
    let mut mp = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut env: Option<Envelope> = None;
    let mp_err = |e: axum::extract::multipart::MultipartError| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "invalid_multipart" };
        ApiError::new(status, code, e.body_text())
    };
    while let Some(field) = mp.next_field().await.map_err(mp_err)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(mp_err)?;
        match (name.as_str(), file_name) {
            ("request", None) => env = Some(submit::parse_envelope(&data)?),
            ("spec", None) => {
                let spec: Value = serde_json::from_slice(&data)
                    .map_err(|e| ApiError::bad_request("invalid_json", format!("spec part: {e}")))?;
                env = Some(Envelope { spec, priority: None, webhook_url: None, metadata: None, dedupe: None });
            }
            (_, Some(fname)) => {
                if uploads.files.len() >= 64 {
                    return Err(ApiError::unprocessable("too_many_files", "at most 64 files per request"));
                }
                let what = format!("file '{fname}'");
                let (asset, new) =
                    submit::store_new_asset(state, data, Some(fname.clone()), caller.key_id(), &what).await?;
                if new {
                    uploads.new.push(asset.id.clone());
                }
                uploads.files.insert(fname, asset.id);
            }
            (other, None) => {
                return Err(ApiError::unprocessable(
                    "invalid_multipart",
                    format!("unexpected form field '{other}': send a 'request' (or 'spec') JSON part and file parts"),
                ));
            }
        }
    }
    env.ok_or_else(|| {
        ApiError::unprocessable("invalid_multipart", "the multipart body has no 'request' or 'spec' part")
    })
}

pub async fn get_generation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let g = visible(&state, &caller, &id).await?;
    let attempts = state.queue.attempts(&g.job_id).await?;
    let mut v = status_json(&g, &attempts);
    // The stored spec (files as asset references), so a client can show, edit and resubmit it.
    v["spec"] = g.spec.clone();
    // Live progress from this process's workers is fresher than the stored value.
    if g.state == JobState::Running
        && let Some(live) = state.live_progress(&g.id)
    {
        v["progress"] = json!((live.progress * 1000.0).round() / 10.0);
        v["stage"] = json!(live.stage);
    }
    // A distributed render's segment jobs: who took each, and how it went.
    let segment_jobs = match state.config.distributed_render {
        true => state.queue.jobs_for(&g.id, crate::distribute::SEGMENT_KIND).await?,
        false => vec![],
    };
    if !segment_jobs.is_empty() {
        let mut list = vec![];
        for j in segment_jobs {
            let attempts = state.queue.attempts(&j.id).await?;
            list.push(json!({
                "index": j.payload["index"],
                "frames": j.payload["frames"],
                "render_attempt": j.payload["parent_attempt"],
                "status": j.state.as_str(),
                "attempts": attempts,
            }));
        }
        v["segment_jobs"] = json!(list);
    }
    if g.webhook_url.is_some() {
        let mut deliveries = vec![];
        for j in state.queue.jobs_for(&g.id, webhooks::KIND).await? {
            let a = state.queue.attempts(&j.id).await?;
            deliveries.push((j, a));
        }
        v["webhook_deliveries"] = deliveries_json(&deliveries);
    }
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    created_after_ms: Option<i64>,
    created_before_ms: Option<i64>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub async fn list_generations(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let state_filter = match q.status.as_deref() {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("status '{s}' is not one of queued, running, succeeded, failed, cancelled"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit must be 1-200"));
    }
    let items = state
        .meta
        .list_generations(&ListFilter {
            state: state_filter,
            created_after_ms: q.created_after_ms,
            created_before_ms: q.created_before_ms,
            api_key_id: caller.key_id(),
            cursor: q.cursor,
            limit,
        })
        .await?;
    let next = (items.len() == limit as usize).then(|| items.last().map(|g| g.id.clone())).flatten();
    Ok(Json(json!({
        "items": items.iter().map(|g| status_json(g, &[])).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

pub async fn cancel_generation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let g = visible(&state, &caller, &id).await?;
    // A queued job never reaches a worker, so its event is enqueued with the cancellation.
    let mut cancelled = g.clone();
    cancelled.state = JobState::Cancelled;
    let event = webhooks::for_generation(&state, &cancelled, "generation.cancelled");
    let outcome = state.queue.cancel(&g.job_id, event).await?;
    let g = visible(&state, &caller, &id).await?;
    let (status, note) = match outcome {
        CancelOutcome::Cancelled => {
            state.hub.publish(event_of(&g));
            (StatusCode::OK, "cancelled")
        }
        CancelOutcome::Requested => (StatusCode::ACCEPTED, "cancellation requested; the render stops within seconds"),
        CancelOutcome::AlreadyFinal(s) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_finished",
                format!("generation {id} already {}", s.as_str()),
            ));
        }
        CancelOutcome::NotFound => return Err(ApiError::not_found("generation", &id)),
    };
    let mut v = status_json(&g, &[]);
    v["note"] = json!(note);
    Ok((status, Json(v)).into_response())
}

pub async fn delete_generation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let g = visible(&state, &caller, &id).await?;
    if g.state == JobState::Running {
        // Stop the render first; its lease holder finds the job gone and writes nothing.
        state.queue.cancel(&g.job_id, vec![]).await?;
    }
    state.meta.delete_generation(&id).await?;
    state.artifacts.delete_prefix(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn artifact(
    state: &AppState,
    caller: &Caller,
    id: &str,
    name: &str,
    content_type: &'static str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let g = visible(state, caller, id).await?;
    let Some(r) = g.result.as_ref().filter(|_| g.state == JobState::Succeeded) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_ready",
            format!("generation {id} is {}; its files exist once it has succeeded", g.state.as_str()),
        ));
    };
    download::serve(state, &format!("{id}/{name}"), &r.video_etag, content_type, headers).await
}

/// The route serving one of a finished generation's files (Range, ETag).
pub fn file_route(name: &'static str, content_type: &'static str) -> axum::routing::MethodRouter<AppState> {
    axum::routing::get(
        move |State(state): State<AppState>, caller: Caller, Path(id): Path<String>, headers: HeaderMap| async move {
            artifact(&state, &caller, &id, name, content_type, &headers).await
        },
    )
}

/// One uploaded file: the first file part of a multipart form, or the raw body (named by
/// `X-File-Name`); both limited to `max_upload_bytes`.
pub async fn read_upload(state: &AppState, req: Request) -> ApiResult<(Bytes, Option<String>)> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("multipart/form-data"));
    let limit = state.config.max_upload_bytes;
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("uploads are limited to {limit} bytes"))
    };
    let upload = if is_multipart {
        let mut mp = Multipart::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
        let field = mp
            .next_field()
            .await
            .map_err(|e| ApiError::new(e.status(), "invalid_multipart", e.body_text()))?
            .ok_or_else(|| ApiError::unprocessable("invalid_multipart", "no file part in the form"))?;
        let name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::new(e.status(), "invalid_multipart", e.body_text())
            }
        })?;
        (data, name)
    } else {
        let name = req.headers().get("x-file-name").and_then(|v| v.to_str().ok()).map(str::to_string);
        let data = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| too_large())?;
        (data, name)
    };
    Ok(upload)
}

pub async fn upload_asset(State(state): State<AppState>, caller: Caller, req: Request) -> ApiResult<Response> {
    let (bytes, name) = read_upload(&state, req).await?;
    let what = name.as_deref().map_or_else(|| "the upload".to_string(), |n| format!("'{n}'"));
    let asset = submit::store_asset(&state, bytes, name, caller.key_id(), &what).await?;
    let mut v = serde_json::to_value(&asset).map_err(ApiError::internal)?;
    v["ref"] = json!(format!("{}{}", submit::ASSET_PREFIX, asset.id));
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `GET /api/v1/keys/self`: the calling key's limits (its own, else the server's defaults) and
/// what it used of its daily budgets today.
pub async fn own_key(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let Some(key) = &caller.0 else {
        return Err(ApiError::bad_request("no_key", "this request has no API key: keyless callers have no budgets"));
    };
    let now = reelsmith_store::now_ms();
    let used = state.meta.usage(&key.id, reelsmith_store::usage_day(now)).await?;
    let c = &state.config;
    Ok(Json(json!({
        "id": key.id,
        "name": key.name,
        "rate_per_s": key.rate_per_s,
        "burst": key.burst,
        "max_concurrent_jobs": key.max_concurrent_jobs,
        "max_priority": key.max_priority,
        "limits": {
            "job_megapixel_frames": key.limits.job_megapixel_frames.unwrap_or(c.max_job_megapixel_frames).min(c.max_job_megapixel_frames),
            "daily_megapixel_frames": key.limits.daily_megapixel_frames.or(c.default_daily_megapixel_frames),
            "daily_did_scenes": key.limits.daily_did_scenes.unwrap_or(c.default_daily_did_scenes),
        },
        "used_today": used,
    })))
}

/// `POST /api/v1/keys/self/webhook-secret`: a new secret for the calling key's webhooks, shown
/// only in this answer; the old one stops signing at once.
pub async fn rotate_webhook_secret(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let Some(key) = &caller.0 else {
        return Err(ApiError::bad_request(
            "no_key",
            "this request has no API key: keyless callers' webhooks are signed with the server's webhook_secret",
        ));
    };
    let secret = crate::auth::new_webhook_secret();
    if !state.meta.set_webhook_secret(&key.id, &secret).await? {
        return Err(ApiError::not_found("key", &key.id));
    }
    Ok((StatusCode::CREATED, Json(json!({"key_id": key.id, "webhook_secret": secret}))).into_response())
}

/// `DELETE /api/v1/assets/{id}`: the asset's record, file and shared copy. Refused (409) while a
/// queued or running generation of the key uses it.
pub async fn delete_asset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    match state.meta.asset(&id).await? {
        Some(a) if caller.0.is_none() || a.api_key_id == caller.key_id() => {}
        _ => return Err(ApiError::not_found("asset", &id)),
    }
    if let Some((_, g)) =
        submit::assets_in_use(&state, caller.key_id().as_deref(), std::slice::from_ref(&id)).await?.first()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "asset_in_use",
            format!("asset {id} is used by generation {g}, which is not finished; cancel it or wait"),
        ));
    }
    submit::remove_asset(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get_asset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    match state.meta.asset(&id).await? {
        Some(a) if caller.0.is_none() || a.api_key_id == caller.key_id() => {
            let mut v = serde_json::to_value(&a).map_err(ApiError::internal)?;
            v["ref"] = json!(format!("{}{}", submit::ASSET_PREFIX, a.id));
            Ok(Json(v))
        }
        _ => Err(ApiError::not_found("asset", &id)),
    }
}

#[derive(Deserialize)]
pub struct WindowQuery {
    window: Option<String>,
}

pub async fn performance_report(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<WindowQuery>,
) -> ApiResult<Json<telemetry::PerformanceReport>> {
    let w = q.window.as_deref().unwrap_or("15m");
    let secs = telemetry::parse_window(w).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            format!("window '{w}' is not a duration like 90s, 15m, 2h or 1d (max 30d)"),
        )
    })?;
    Ok(Json(telemetry::performance_report(&state, secs, caller.key_id().as_deref()).await?))
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned().unwrap_or(Caller(None)))
    }
}
