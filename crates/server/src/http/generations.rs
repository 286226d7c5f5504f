//! `/api/v1` handlers: generations, assets, downloads, performance report.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use reelsmith_store::{Attempt, CancelOutcome, JobRecord, JobState, ListFilter};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::submit::{Envelope, enqueue, visible};
use crate::views::status_json;

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
    crate::http::guard::require_json(&headers, true)?;
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
        (crate::submit::parse_envelope(&body)?, Uploads::default())
    };
    let key_id = caller.key_id();
    // A prompt is checked and queued now and planned by its job: no request waits on a model.
    // A template is filled first: what it becomes is a spec like any other.
    let prepared = match crate::submit::apply_template(&state, &caller, env).await {
        Ok(env) => match crate::submit::accept_prompt(&state, &caller, &env).await {
            Ok(Some(p)) => Ok(p),
            Ok(None) => crate::submit::prepare(&state, env, &uploads.files, key_id.as_deref()).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let queued = match prepared {
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
        let _ = crate::assets::remove_asset(state, id).await;
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
    while let Some(field) = mp.next_field().await.map_err(crate::http::guard::multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(crate::http::guard::multipart_error)?;
        match (name.as_str(), file_name) {
            ("request", None) => env = Some(crate::submit::parse_envelope(&data)?),
            ("spec", None) => {
                let spec: Value = serde_json::from_slice(&data)
                    .map_err(|e| ApiError::bad_request("invalid_json", format!("spec part: {e}")))?;
                env = Some(Envelope {
                    spec: Some(spec),
                    prompt: None,
                    template: None,
                    merge: None,
                    priority: None,
                    webhook_url: None,
                    metadata: None,
                    dedupe: None,
                });
            }
            (_, Some(fname)) => {
                if uploads.files.len() >= 64 {
                    return Err(ApiError::unprocessable("too_many_files", "at most 64 files per request"));
                }
                let what = format!("file '{fname}'");
                let (asset, new) =
                    crate::assets::store_new_asset(state, data, Some(fname.clone()), caller.key_id(), &what).await?;
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
        true => state.queue.jobs_for(&g.id, crate::queues::SEGMENT_KIND).await?,
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
        for j in state.queue.jobs_for(&g.id, crate::queues::WEBHOOK_KIND).await? {
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
    let outcome = crate::submit::cancel_generation(&state, &g).await?;
    let g = visible(&state, &caller, &id).await?;
    let (status, note) = match outcome {
        CancelOutcome::Cancelled => (StatusCode::OK, "cancelled"),
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
    crate::http::download::serve(state, &format!("{id}/{name}"), &r.video_etag, content_type, headers).await
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
    let asset = crate::assets::store_asset(&state, bytes, name, caller.key_id(), &what).await?;
    let mut v = serde_json::to_value(&asset).map_err(ApiError::internal)?;
    v["ref"] = json!(format!("{}{}", crate::assets::ASSET_PREFIX, asset.id));
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
            "daily_provider_usd": key.limits.daily_provider_usd.or(c.default_daily_provider_usd),
        },
        "used_today": used,
        "provider_usd_today": state.meta.provider_spend(&key.id, reelsmith_store::usage_day(now)).await?,
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
    let secret = crate::access::new_webhook_secret();
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
        crate::assets::assets_in_use(&state, caller.key_id().as_deref(), std::slice::from_ref(&id)).await?.first()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "asset_in_use",
            format!("asset {id} is used by generation {g}, which is not finished; cancel it or wait"),
        ));
    }
    crate::assets::remove_asset(&state, &id).await?;
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
            v["ref"] = json!(format!("{}{}", crate::assets::ASSET_PREFIX, a.id));
            Ok(Json(v))
        }
        _ => Err(ApiError::not_found("asset", &id)),
    }
}

pub(crate) fn deliveries_json(jobs: &[(JobRecord, Vec<Attempt>)]) -> Value {
    Value::Array(
        jobs.iter()
            .map(|(j, attempts)| {
                let d: Option<crate::queues::Delivery> = serde_json::from_value(j.payload.clone()).ok();
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
