//! The Reelsmith generation service: an axum HTTP API over a durable job queue, with workers
//! running the render engine in the same process (embedded default: SQLite + local files).
//!
//! Request path: `telemetry::track` (request id, timing, metrics) → compression → per-route
//! auth and rate limits (`auth`) → handlers (`api`, `events`). Work path: `worker` claims jobs
//! with leases, renders on low-priority threads, stores results (`download` serves them),
//! enqueues webhook events (`webhooks`) in the same transaction as the completion.

pub mod api;
pub mod auth;
pub mod config;
pub mod did;
pub mod distribute;
pub mod download;
pub mod error;
pub mod events;
pub mod guard;
pub mod openapi;
pub mod signing;
pub mod studio;
pub mod submit;
pub mod talks;
pub mod telemetry;
pub mod webhooks;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use reelsmith_engine::{Cache, Engine};
use reelsmith_store::{ArtifactStore, JobQueue, LocalArtifacts, Metadata, PgStore, SqliteStore};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{Predicate, SizeAbove};

pub use config::Config;
pub use error::{ApiError, ApiResult};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub queue: Arc<dyn JobQueue>,
    pub meta: Arc<dyn Metadata>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub engine: Arc<Engine>,
    pub hub: events::Hub,
    pub limiter: Arc<auth::RateLimiter>,
    pub requests: Arc<telemetry::RequestLog>,
    /// Finished generations read for the performance report (incrementally).
    pub finished: Arc<telemetry::FinishedHistory>,
    pub request_ids: Arc<telemetry::RequestIds>,
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    /// Wakes idle render workers when a job arrives.
    pub wake: Arc<tokio::sync::Notify>,
    /// Wakes idle segment workers when a render fans out.
    pub wake_segments: Arc<tokio::sync::Notify>,
    pub http: reqwest::Client,
    pub webhook_secret: Arc<str>,
    /// Keys for talk links and D-ID callbacks (derived from `signing_secret`).
    pub signing: signing::Keys,
    pub assets_dir: PathBuf,
    pub node_id: Arc<str>,
    /// How clients reach this server: `public_url`, else the address it listens on.
    pub public_url: Arc<str>,
    /// Remote (D-ID) talks waiting for their provider's webhook, by generation id.
    pub remote_waits: did::Waits,
    /// The last readiness answer and when it was made: `/ready` is unauthenticated, so it is
    /// computed at most once per READY_TTL however often it is asked.
    pub ready_cache: Arc<tokio::sync::Mutex<Option<(std::time::Instant, StatusCode, Value)>>>,
    /// Open event streams per key ("" for the keyless caller).
    pub streams: events::StreamCounts,
    /// Progress of other nodes through Redis, when configured; whether it is connected now.
    pub bus: Option<(Arc<reelsmith_store::RedisBus>, Arc<std::sync::atomic::AtomicBool>)>,
    /// Uploaded assets also live in artifact storage (shared by every node), not only on this
    /// node's disk.
    pub shared_assets: bool,
    cache_counts: Arc<(AtomicU64, AtomicU64)>,
}

impl AppState {
    pub fn live_progress(&self, id: &str) -> Option<events::Event> {
        self.hub.latest(id)
    }

    fn note_cache(&self, hits: u64, misses: u64) {
        let h = self.cache_counts.0.fetch_add(hits, Ordering::Relaxed) + hits;
        let m = self.cache_counts.1.fetch_add(misses, Ordering::Relaxed) + misses;
        if h + m > 0 {
            metrics::gauge!("reelsmith_cache_hit_ratio").set(h as f64 / (h + m) as f64);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("storage: {0}")]
    Store(#[from] reelsmith_store::StoreError),
    #[error("engine: {0}")]
    Engine(#[from] reelsmith_engine::RenderError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The job queue and metadata: PostgreSQL when `database_url` is set, else the embedded SQLite
/// file in `data_dir`.
pub async fn open_database(config: &Config) -> Result<(Arc<dyn JobQueue>, Arc<dyn Metadata>), ServeError> {
    Ok(match &config.database_url {
        Some(url) => {
            let pg = Arc::new(PgStore::connect(url, Some(&config.database_schema), config.database_pool_size).await?);
            (pg.clone(), pg)
        }
        None => {
            let db = config.data_dir.join("reelsmith.db");
            let store = Arc::new(SqliteStore::open(&db, config.durability).await?);
            (store.clone(), store)
        }
    })
}

/// Result files: an S3-compatible bucket when `s3_bucket` is set, else `data_dir/artifacts`.
pub async fn open_artifacts(config: &Config) -> Result<Arc<dyn ArtifactStore>, ServeError> {
    Ok(match &config.s3_bucket {
        Some(bucket) => {
            let c = reelsmith_store::S3Config {
                endpoint: config.s3_endpoint.clone(),
                region: config.s3_region.clone(),
                prefix: config.s3_prefix.clone(),
                access_key_id: config.s3_access_key_id.clone(),
                secret_access_key: config.s3_secret_access_key.clone(),
                allow_http: config.s3_allow_http,
                create_bucket: config.s3_create_bucket,
                ..reelsmith_store::S3Config::new(bucket.clone())
            };
            Arc::new(reelsmith_store::S3Artifacts::connect(c).await?)
        }
        None => Arc::new(LocalArtifacts::new(config.data_dir.join("artifacts"))?),
    })
}

/// Opens the backends the config names (embedded defaults: SQLite + files in `data_dir`).
pub async fn open_state(config: Config) -> Result<AppState, ServeError> {
    let data = &config.data_dir;
    std::fs::create_dir_all(data.join("tmp"))?;
    let (queue, meta) = open_database(&config).await?;
    let artifacts = open_artifacts(&config).await?;
    let assets_dir = submit::assets_dir(data);
    std::fs::create_dir_all(&assets_dir)?;
    let mut cache = Cache::open(config.cache_dir(), config.cache_size_mb * 1024 * 1024)
        .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))?;
    let mut bus = None;
    if let Some(redis) = config.redis() {
        let tier = Arc::new(reelsmith_store::RedisTier::new(&redis)?);
        let check = tier.clone();
        // Advice only: a Redis that is down now may be up later.
        match tokio::task::spawn_blocking(move || check.memory_limit()).await {
            Ok(Ok((0, policy))) => tracing::warn!(
                policy,
                "redis has no maxmemory: only TTLs bound the shared cache; set maxmemory and maxmemory-policy allkeys-lru"
            ),
            Ok(Ok((max, policy))) => tracing::info!(max_bytes = max, policy, "shared cache on redis"),
            Ok(Err(e)) => tracing::warn!(error = %e, "redis is not answering; renders go on without the shared cache"),
            Err(_) => {}
        }
        cache = cache.with_shared(tier);
        bus = Some((
            Arc::new(reelsmith_store::RedisBus::new(&redis)?),
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        ));
    }
    let engine = Arc::new(Engine::new(cache)?);
    let webhook_secret: Arc<str> = match &config.webhook_secret {
        Some(s) => s.as_str().into(),
        None => load_or_create_secret(&data.join("webhook_secret"), "whsec_")?.into(),
    };
    let signing = signing::Keys::derive(
        match &config.signing_secret {
            Some(s) => s.clone(),
            None => load_or_create_secret(&data.join("signing_secret"), "")?,
        }
        .as_bytes(),
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.bind));
    Ok(AppState {
        node_id: format!("{}-{}-{:04x}", host.trim(), std::process::id(), rand::random::<u16>()).into(),
        shared_assets: config.s3_bucket.is_some(),
        bus,
        config: Arc::new(config),
        queue,
        meta,
        artifacts,
        engine,
        hub: events::Hub::default(),
        limiter: Default::default(),
        requests: Default::default(),
        finished: Default::default(),
        request_ids: Default::default(),
        prometheus: telemetry::prometheus(),
        wake: Default::default(),
        wake_segments: Default::default(),
        http,
        webhook_secret,
        signing,
        assets_dir,
        public_url: public_url.into(),
        remote_waits: Default::default(),
        ready_cache: Default::default(),
        streams: Default::default(),
        cache_counts: Default::default(),
    })
}

fn load_or_create_secret(path: &std::path::Path, prefix: &str) -> std::io::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        return Ok(s.trim().to_string());
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secret = format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()));
    let tmp = path.with_extension("tmp");
    // Readable by the service's user only.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?
        .write_all(secret.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok(secret)
}

/// Every route: (method, path). The OpenAPI test checks the document against this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/ws/generations"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/generations"),
    ("get", "/api/v1/generations"),
    ("get", "/api/v1/generations/{id}"),
    ("delete", "/api/v1/generations/{id}"),
    ("post", "/api/v1/generations/{id}/cancel"),
    ("get", "/api/v1/generations/{id}/events"),
    ("get", "/api/v1/generations/{id}/video"),
    ("get", "/api/v1/generations/{id}/thumbnail"),
    ("get", "/api/v1/generations/{id}/subtitles.vtt"),
    ("get", "/api/v1/generations/{id}/report"),
    ("post", "/api/v1/assets"),
    ("get", "/api/v1/assets/{id}"),
    ("delete", "/api/v1/assets/{id}"),
    ("get", "/api/v1/keys/self"),
    ("post", "/api/v1/keys/self/webhook-secret"),
    ("get", "/api/v1/performance/report"),
    ("post", "/talks"),
    ("get", "/talks"),
    ("get", "/talks/{id}"),
    ("delete", "/talks/{id}"),
    ("get", "/talks/{id}/result.mp4"),
    ("post", "/images"),
    ("post", "/audios"),
    ("post", "/callbacks/d-id/{generation}"),
];

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/generations", post(api::create_generation).get(api::list_generations))
        .route("/api/v1/generations/{id}", get(api::get_generation).delete(api::delete_generation))
        .route("/api/v1/generations/{id}/cancel", post(api::cancel_generation))
        .route("/api/v1/generations/{id}/events", get(events::sse))
        .route("/api/v1/generations/{id}/video", api::file_route("video.mp4", "video/mp4"))
        .route("/api/v1/generations/{id}/thumbnail", api::file_route("thumbnail.jpg", "image/jpeg"))
        .route("/api/v1/generations/{id}/subtitles.vtt", api::file_route("subtitles.vtt", "text/vtt; charset=utf-8"))
        .route("/api/v1/generations/{id}/report", api::file_route("report.json", "application/json"))
        .route("/api/v1/assets", post(api::upload_asset))
        .route("/api/v1/assets/{id}", get(api::get_asset).delete(api::delete_asset))
        .route("/api/v1/keys/self", get(api::own_key))
        .route("/api/v1/keys/self/webhook-secret", post(api::rotate_webhook_secret))
        .route("/api/v1/performance/report", get(api::performance_report))
        .route("/ws/generations", get(events::websocket))
        .route("/talks", post(talks::create_talk).get(talks::list_talks))
        .route("/talks/{id}", get(talks::get_talk).delete(talks::delete_talk))
        .route("/images", post(talks::upload_image))
        .route("/audios", post(talks::upload_audio))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    // Text only: videos and images are compressed already, and Range must address real bytes.
    let compress = SizeAbove::new(256).and(
        |_: StatusCode, _: axum::http::Version, h: &header::HeaderMap, _: &axum::http::Extensions| {
            h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| {
                c.starts_with("application/json") || c.starts_with("text/") && !c.starts_with("text/event-stream")
            })
        },
    );
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/openapi.json", get(openapi_doc))
        // Signed links and provider callbacks: the signature is the permission, not a key.
        .route("/talks/{id}/result.mp4", get(talks::result))
        .route("/callbacks/d-id/{generation}", post(did::callback))
        .merge(studio::routes())
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_upload_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), guard::browser_guard))
        .layer(CompressionLayer::new().compress_when(compress))
        .layer(middleware::from_fn_with_state(state.clone(), telemetry::track))
        .with_state(state)
}

/// A worker-only process answers probes and scrapes, nothing else.
pub fn worker_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), telemetry::track))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /api/v1/openapi.json")
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: what a node cannot work without (database, storage, FFmpeg) decides the status;
/// Redis is an accelerator, so without it the node is `degraded` but still ready.
/// How long one readiness answer is reused.
const READY_TTL: Duration = Duration::from_secs(2);

async fn ready(State(state): State<AppState>, req: axum::extract::Request) -> impl IntoResponse {
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
    let status = match (ok, degraded) {
        (false, _) => "not_ready",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    let body = json!({"status": status, "role": state.config.role(), "node": &*state.node_id, "checks": checks});
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(depth) = state.queue.depth().await {
        for q in [worker::RENDER_QUEUE, worker::SEGMENT_QUEUE, worker::MAINTENANCE_QUEUE, webhooks::QUEUE] {
            let d = depth.get(q).copied().unwrap_or_default();
            for (s, v) in [("queued", d.queued), ("ready", d.ready), ("running", d.running)] {
                metrics::gauge!("reelsmith_queue_depth", "queue" => q, "state" => s).set(v as f64);
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render())
}

async fn openapi_doc() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| openapi::document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str())
}

/// A running service; dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting requests, lets in-flight ones finish, stops workers (a render in progress
    /// is left to its lease: another worker, or this one after a restart, takes it).
    pub async fn shutdown(self) {
        self.stop.cancel();
        // Long-lived streams (SSE, WebSocket) would hold a graceful shutdown open forever, and
        // a render may take minutes: give both a few seconds, then leave the rest to leases.
        let grace = Duration::from_secs(5);
        let server = self.server.abort_handle();
        if tokio::time::timeout(grace, self.server).await.is_err() {
            tracing::warn!("open connections after {grace:?}; closing them");
            server.abort();
        }
        for w in self.workers {
            let abort = w.abort_handle();
            if tokio::time::timeout(grace, w).await.is_err() {
                abort.abort();
            }
        }
    }

    pub fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Binds, starts workers (when configured) and serves until shut down.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let bind = config.bind;
    let mut state = open_state(config).await?;
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| ServeError::Bind(bind, e))?;
    let addr = listener.local_addr()?;
    if state.config.public_url.is_none() {
        // The real port when bound to port 0.
        state.public_url = format!("http://{addr}").into();
    }
    let stop = CancellationToken::new();
    let mut workers = if state.config.workers { worker::spawn_all(&state, stop.clone()) } else { vec![] };
    if let Some((bus, up)) = &state.bus {
        workers.extend(events::bridge(&state.hub, bus.clone(), state.node_id.clone(), up.clone(), stop.clone()));
    }
    let app = if state.config.api { router(state.clone()) } else { worker_router(state.clone()) };
    let s = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await
    });
    tracing::info!(%addr, role = state.config.role(), keys_required = state.config.keys_required(), data_dir = %state.config.data_dir.display(), "serving");
    Ok(Running { addr, state, stop, server, workers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc = openapi::document();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = vec![];
        for (p, ops) in paths {
            for m in ops.as_object().unwrap().keys() {
                documented.push((m.clone(), p.clone()));
            }
        }
        let mut served: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
        // Every $ref resolves inside the document.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = &r[..r.find('"').unwrap()];
            let name = target.strip_prefix("#/components/schemas/").expect("local ref");
            assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {target}");
        }
    }
}
