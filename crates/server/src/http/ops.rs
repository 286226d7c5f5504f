//! Operations endpoints: /health, /ready, /metrics, the OpenAPI document, the performance report.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(crate) async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: what a node cannot work without (database, storage, FFmpeg) decides the status;
/// Redis is an accelerator, so without it the node is `degraded` but still ready.
/// How long one readiness answer is reused.
const READY_TTL: Duration = Duration::from_secs(2);

pub(crate) async fn ready(State(state): State<AppState>, req: axum::extract::Request) -> impl IntoResponse {
    // One check at a time; callers arriving meanwhile wait for it and share its answer.
    let mut cached = state.ready_cache.lock().await;
    let (code, body) = match cached.as_ref() {
        Some((at, code, body)) if at.elapsed() < READY_TTL => (*code, body.clone()),
        _ => {
            let (code, body) = check_ready(&state).await;
            *cached = Some((std::time::Instant::now(), code, body.clone()));
            (code, body)
        }
    };
    drop(cached);
    // The checks name hosts, buckets and paths: only this machine sees them (a load balancer
    // needs the status code; `reelsmith` and operators on the host see everything).
    let local =
        req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().is_some_and(|c| c.0.ip().is_loopback());
    if local { (code, Json(body)) } else { (code, Json(json!({"status": body["status"], "role": body["role"]}))) }
}

async fn check_ready(state: &AppState) -> (StatusCode, Value) {
    let db = state.meta.ping().await.map_err(|e| e.to_string());
    let storage = state.artifacts.ping().await.map_err(|e| e.to_string());
    let free = state.artifacts.free_bytes().await;
    let disk_ok = free.is_none_or(|f| f > 512 * 1024 * 1024);
    let ffmpeg = tokio::task::spawn_blocking(reelsmith_media::ffmpeg::version).await.ok().and_then(Result::ok);
    let engine = state.engine.clone();
    let cache = tokio::task::spawn_blocking(move || engine.cache.shared_status()).await.ok().flatten();
    let events_up = state.bus.as_ref().map(|(_, up)| up.load(Ordering::Relaxed));
    let ok = db.is_ok() && storage.is_ok() && disk_ok && ffmpeg.is_some();
    let degraded = cache.as_ref().is_some_and(|(_, live)| live.is_err()) || events_up == Some(false);
    let check = |r: &Result<(), String>| match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let mut checks = json!({
        "database": check(&db),
        "storage": {"ok": storage.is_ok(), "backend": state.artifacts.describe(), "error": storage.as_ref().err()},
        "disk": {"ok": disk_ok, "free_bytes": free, "min_free_bytes": 512u64 * 1024 * 1024},
        "ffmpeg": {"ok": ffmpeg.is_some(), "version": ffmpeg},
    });
    if let Some((stats, live)) = &cache {
        checks["shared_cache"] = json!({
            "ok": live.is_ok(), "required": false, "tier": stats.tier, "error": live.as_ref().err(),
            "hits": stats.hits, "stores": stats.stores, "errors": stats.errors,
            "note": if live.is_ok() { "" } else { "renders go on without the shared cache (each node builds what it needs)" },
        });
    }
    if let Some(up) = events_up {
        checks["events"] = json!({"ok": up, "required": false,
            "note": if up { "" } else { "progress of other nodes comes from the database once a second" }});
    }
    // Providers (prompts, D-ID): an open breaker degrades what needs them only (storyboards
    // without them still render).
    let gates = state.provider_gates();
    let mut providers_open = false;
    if !gates.is_empty() {
        let mut list = serde_json::Map::new();
        for g in gates {
            let b = g.breaker();
            providers_open |= b.name() == "open";
            let reason = match &b {
                reelsmith_providers::BreakerState::Open { reason, .. } => Some(reason.clone()),
                _ => None,
            };
            list.insert(g.provider().to_string(), json!({"breaker": b.name(), "reason": reason}));
        }
        checks["providers"] = json!({"ok": !providers_open, "required": false, "breakers": list});
    }
    let degraded = degraded || providers_open;
    let status = match (ok, degraded) {
        (false, _) => "not_ready",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    let body = json!({"status": status, "role": state.config.role(), "node": &*state.node_id, "checks": checks});
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

pub(crate) async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    for g in state.provider_gates() {
        let open = g.breaker().name() == "open";
        metrics::gauge!("reelsmith_provider_breaker_open", "provider" => g.provider().to_string())
            .set(f64::from(u8::from(open)));
    }
    if let Ok(depth) = state.queue.depth().await {
        for q in [
            crate::queues::RENDER_QUEUE,
            crate::queues::SEGMENT_QUEUE,
            crate::queues::MAINTENANCE_QUEUE,
            crate::queues::WEBHOOK_QUEUE,
        ] {
            let d = depth.get(q).copied().unwrap_or_default();
            for (s, v) in [("queued", d.queued), ("ready", d.ready), ("running", d.running)] {
                metrics::gauge!("reelsmith_queue_depth", "queue" => q, "state" => s).set(v as f64);
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.telemetry.prometheus.render())
}

pub(crate) async fn openapi_doc() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| crate::http::openapi::document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str())
}

#[derive(Deserialize)]
pub struct WindowQuery {
    window: Option<String>,
}

pub async fn performance_report(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<WindowQuery>,
) -> ApiResult<Json<crate::telemetry::PerformanceReport>> {
    let w = q.window.as_deref().unwrap_or("15m");
    let secs = crate::telemetry::parse_window(w).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            format!("window '{w}' is not a duration like 90s, 15m, 2h or 1d (max 30d)"),
        )
    })?;
    let key = caller.key_id();
    let report = crate::telemetry::performance_report(
        &state.telemetry.requests,
        &state.telemetry.finished,
        state.meta.as_ref(),
        state.queue.as_ref(),
        secs,
        key.as_deref(),
    );
    Ok(Json(report.await?))
}
