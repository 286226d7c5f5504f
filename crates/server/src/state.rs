//! The service state handlers and workers share, and the backends it opens from the config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use reelsmith_engine::{Cache, Engine};
use reelsmith_store::{ArtifactStore, JobQueue, LocalArtifacts, Metadata, PgStore, SqliteStore};
use serde_json::Value;

use crate::config::Config;
use crate::{config, signing};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub queue: Arc<dyn JobQueue>,
    pub meta: Arc<dyn Metadata>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub engine: Arc<Engine>,
    /// Runs renders: in processes of their own under `render_memory_limit_mb`, or on threads.
    pub renderer: Arc<crate::isolation::Renderer>,
    pub hub: crate::events::Hub,
    pub limiter: Arc<crate::access::RateLimiter>,
    /// Request log, finished-generation history, request ids, Prometheus.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Wakes idle workers when work arrives for them.
    pub wake: WakeUps,
    pub http: reqwest::Client,
    pub webhook_secret: Arc<str>,
    /// Keys for talk links and D-ID callbacks (derived from `signing_secret`).
    pub signing: signing::Keys,
    pub assets_dir: PathBuf,
    pub node_id: Arc<str>,
    /// How clients reach this server: `public_url`, else the address it listens on.
    pub public_url: Arc<str>,
    /// Remote (D-ID) talks waiting for their provider's webhook, by generation id.
    pub remote_waits: crate::events::Waits,
    /// The last readiness answer and when it was made: `/ready` is unauthenticated, so it is
    /// computed at most once per READY_TTL however often it is asked.
    pub ready_cache: Arc<tokio::sync::Mutex<Option<(std::time::Instant, StatusCode, Value)>>>,
    /// Open event streams per key ("" for the keyless caller).
    pub streams: crate::events::StreamCounts,
    /// Progress of other nodes through Redis, when configured; whether it is connected now.
    pub bus: Option<(Arc<reelsmith_store::RedisBus>, Arc<std::sync::atomic::AtomicBool>)>,
    /// Uploaded assets also live in artifact storage (shared by every node), not only on this
    /// node's disk.
    pub shared_assets: bool,
    /// Turns prompts into storyboards: the configured language model for topics, the text mode
    /// for texts, a cache of plans.
    pub director: Arc<reelsmith_director::Director>,
    /// D-ID's gate: one breaker and concurrency limit for every talk this node sends.
    pub did_gate: Arc<reelsmith_providers::Gate>,
    /// Document imports running at once on this node (LibreOffice and poppler are heavy).
    pub imports: Arc<tokio::sync::Semaphore>,
}

/// Wake-ups for idle workers in this process (other processes poll or listen on the queue).
#[derive(Clone, Default)]
pub struct WakeUps {
    /// A render job was queued.
    pub renders: Arc<tokio::sync::Notify>,
    /// A render fanned out into segment jobs.
    pub segments: Arc<tokio::sync::Notify>,
}

impl AppState {
    pub fn live_progress(&self, id: &str) -> Option<crate::events::Event> {
        self.hub.latest(id)
    }

    /// Every provider's gate: the director's and D-ID's (their breakers are in readiness and
    /// metrics).
    pub fn provider_gates(&self) -> Vec<Arc<reelsmith_providers::Gate>> {
        let mut gates = self.director.gates();
        if self.config.did_api_key.is_some() {
            gates.push(self.did_gate.clone());
        }
        gates
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

/// The model that plans topics: a remote server (`[providers.llm]`, the operator's own choice,
/// possibly a local one: not under the SSRF guard), a model in this process
/// (`[providers.local_llm]`, or the default planner where it is installed), or none.
pub fn planner(
    providers: &reelsmith_director::config::ProvidersConfig,
) -> Result<Option<Arc<dyn reelsmith_providers::llm::LanguageModel>>, String> {
    if let Some(l) = &providers.llm {
        let client = l.client(reqwest::Client::new(), |v| std::env::var(v).ok(), providers.shared_rate_limit.as_ref());
        return Ok(Some(Arc::new(client)));
    }
    #[cfg(feature = "local-llm")]
    {
        let settings = match &providers.local_llm {
            Some(l) => Some(reelsmith_local_llm::LocalSettings { model: l.model.clone(), threads: l.threads }),
            None => reelsmith_local_llm::default_model()
                .map(|model| reelsmith_local_llm::LocalSettings { model, threads: 1 }),
        };
        if let Some(settings) = settings {
            let local = reelsmith_local_llm::LocalModel::new(settings);
            local.check()?;
            tracing::info!(model = %local.path().display(), "topics are planned by the local model");
            return Ok(Some(Arc::new(local)));
        }
    }
    #[cfg(not(feature = "local-llm"))]
    if providers.local_llm.is_some() {
        return Err("local_llm: this build has no local planner (build with `--features local-llm`)".into());
    }
    Ok(None)
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
    let assets_dir = config.assets_dir();
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
    let isolation = match (&config.render_program, config.render_memory_limit_mb) {
        (Some(program), limit) if limit > 0 => Some(crate::isolation::Isolation {
            program: program.clone(),
            memory_limit_mb: limit,
            cache: crate::isolation::CacheSetup {
                root: engine.cache.root().to_path_buf(),
                max_bytes: engine.cache.max_bytes(),
                redis: config.redis(),
            },
            trace: config.render_trace,
        }),
        _ => None,
    };
    let renderer = Arc::new(crate::isolation::Renderer::new(engine.clone(), isolation));
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
    // With Redis, every node shares each provider's request rate.
    let mut providers = config.providers.clone();
    providers.shared_rate_limit = config.redis().map(|r| (r.url, r.prefix));
    let model =
        planner(&providers).map_err(|e| ServeError::Config(config::ConfigError::Invalid(format!("providers: {e}"))))?;
    let director = Arc::new(reelsmith_director::Director {
        model,
        plans: Some(reelsmith_providers::cache::ResultCache::new(
            config.cache_dir().join("director").join("plans"),
            None,
        )),
        assets: vec![],
        // Downloads and drawings land here and become the caller's assets right after planning.
        stock: {
            let sources = providers.stock_sources(&reqwest::Client::new());
            (!sources.is_empty()).then(|| reelsmith_director::visuals::StockChain {
                sources,
                searches: reelsmith_providers::cache::ResultCache::new(
                    config.cache_dir().join("director").join("stock-searches"),
                    Some(Duration::from_secs(24 * 3600)),
                ),
                http: reqwest::Client::new(),
                media_dir: config.data_dir.join("tmp").join("director-media"),
                media_name: Arc::new(|p: &std::path::Path| p.display().to_string()),
            })
        },
        images: {
            let sources = providers.image_sources(&reqwest::Client::new());
            (!sources.is_empty()).then(|| reelsmith_director::visuals::ImageChain {
                sources,
                cache: reelsmith_providers::cache::ResultCache::new(
                    config.cache_dir().join("director").join("images"),
                    None,
                ),
                media_dir: config.data_dir.join("tmp").join("director-media"),
                media_name: Arc::new(|p: &std::path::Path| p.display().to_string()),
                style: None,
            })
        },
        // The service turns pictures into assets and removes the files: nothing to remember.
        decisions: None,
        voices: {
            let sources = providers.speech_sources(&reqwest::Client::new());
            (!sources.is_empty()).then(|| reelsmith_director::voices::VoiceChain {
                sources,
                cache: reelsmith_providers::cache::ResultCache::new(
                    config.cache_dir().join("director").join("speech"),
                    None,
                ),
                media_dir: config.data_dir.join("tmp").join("director-media"),
                media_name: Arc::new(|p: &std::path::Path| p.display().to_string()),
            })
        },
    });
    // Callers see the node's name (in attempts and reports); the machine behind it is logged.
    let node_id = config.node_name.clone().unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    tracing::info!(node = %node_id, host = host.trim(), pid = std::process::id(), "node started");
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.bind));
    let imports = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_imports.max(1)));
    Ok(AppState {
        node_id: node_id.into(),
        shared_assets: config.s3_bucket.is_some(),
        bus,
        config: Arc::new(config),
        queue,
        meta,
        artifacts,
        engine,
        renderer,
        hub: crate::events::Hub::default(),
        limiter: Default::default(),
        telemetry: Default::default(),
        wake: Default::default(),
        http,
        webhook_secret,
        signing,
        assets_dir,
        public_url: public_url.into(),
        remote_waits: Default::default(),
        ready_cache: Default::default(),
        streams: Default::default(),
        director,
        did_gate: Arc::new(reelsmith_providers::Gate::new("d-id", reelsmith_providers::did::limits())),
        imports,
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
