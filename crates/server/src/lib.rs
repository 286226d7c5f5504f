//! The Reelsmith generation service: an axum HTTP API over a durable job queue, with workers
//! running the render engine in the same process (embedded default: SQLite + local files).
//!
//! Three layers (docs/ARCHITECTURE.md, "Layer rules"; `scripts/check-layers.py` checks them):
//! - `http/`: axum only. Request path: `http::telemetry::track` (request id, timing, metrics) →
//!   compression → `http::guard` (browser checks) → `http::auth` (keys, rate limits) → handlers.
//! - `jobs/`: claim a job → hold its lease (`jobs::lease`) → run it (`render`, `segments`,
//!   `did`, `deliver`, `maintenance`) → record the outcome (`jobs::outcome`).
//! - the domain, flat in this folder: state, config, errors, events, queues, submission,
//!   assets, views, webhooks, signing, outbound network rules, access (keys), telemetry.
//!
//! `http/` and `jobs/` stand on the domain and never import each other; the domain imports
//! neither; nothing imports this file, which is only the crate's face.

// The OpenAPI document is one large json! literal.
#![recursion_limit = "256"]

// Public: what the CLI and the tests outside this crate use (keys, the fuzz targets' parsers,
// signatures, webhooks); the rest stays inside.
pub mod access;
pub mod assets;
pub mod batches;
pub mod budgets;
pub mod config;
pub mod error;
mod events;
pub mod http;
pub mod imports;
pub mod isolation;
mod jobs;
mod net;
mod queues;
pub mod signing;
pub mod state;
pub mod submit;
mod telemetry;
pub mod templates;
mod views;
pub mod webhooks;

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use access::mint;
pub use config::Config;
pub use error::{ApiError, ApiResult};
pub use state::planner;
pub use state::{AppState, ServeError, open_database};

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
    for d in &config.deprecations {
        tracing::warn!("{d}");
    }
    let bind = config.bind;
    let mut state = state::open_state(config).await?;
    let share = state.config.cache_share_bytes();
    if state.config.workers && share < (state.config.cache_size_mb << 20) && share < 512 << 20 {
        tracing::warn!(
            "each render this node runs at once may write at most {} MB of the {} MB stage cache (cache_size_mb divided among render_workers and segment_workers): raise cache_size_mb if renders fail with \"needs more than its share\"",
            share >> 20,
            state.config.cache_size_mb
        );
    }
    // Keys made before each key had its own webhook secret sign with the shared one, which
    // every such tenant can read: worth telling the operator each start until they rotate.
    if let Ok(keys) = state.meta.list_api_keys().await {
        let shared: Vec<&str> = keys
            .iter()
            .filter(|k| k.revoked_at_ms.is_none() && k.webhook_secret.is_none())
            .map(|k| k.id.as_str())
            .collect();
        if !shared.is_empty() {
            tracing::warn!(
                keys = ?shared,
                "{} API key(s) still sign their webhooks with the shared webhook_secret: give each its own with `reelsmith keys rotate-webhook-secret ID`",
                shared.len()
            );
        }
    }
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| ServeError::Bind(bind, e))?;
    let addr = listener.local_addr()?;
    if state.config.public_url.is_none() {
        // The real port when bound to port 0.
        state.public_url = format!("http://{addr}").into();
    }
    let stop = CancellationToken::new();
    let mut workers = if state.config.workers { jobs::spawn_all(&state, stop.clone()) } else { vec![] };
    if let Some((bus, up)) = &state.bus {
        // The bridge tells its own messages from others' by an id no two processes share (two
        // nodes may be given one name).
        let instance: std::sync::Arc<str> = format!("{}-{:016x}", state.node_id, rand::random::<u64>()).into();
        workers.extend(events::bridge(&state.hub, bus.clone(), instance, up.clone(), stop.clone()));
    }
    let app = if state.config.api { http::router(state.clone()) } else { http::worker_router(state.clone()) };
    let limits = http::listener::ConnectionLimits {
        header_timeout: Duration::from_secs_f64(state.config.header_timeout_secs),
        max_connections: state.config.max_connections,
        max_per_client: state.config.max_connections_per_client,
    };
    // Room for the connections plus the database, cache and media files.
    http::listener::raise_open_files_limit(limits.max_connections + 1024);
    let server = tokio::spawn(http::listener::serve(listener, app, limits, stop.clone()));
    tracing::info!(%addr, role = state.config.role(), keys_required = state.config.keys_required(), data_dir = %state.config.data_dir.display(), "serving");
    Ok(Running { addr, state, stop, server, workers })
}
