//! Service settings: built-in defaults, then a TOML file, then `REELSMITH_*` environment
//! variables (each key upper-cased: `bind` → `REELSMITH_BIND`). Defaults just work on 127.0.0.1.
//!
//! Backends and integrations have sections: `[database]`, `[redis]`, `[s3]`, `[webhooks]`,
//! `[did]` (`[s3] bucket = …`), and in the environment a double underscore after the section
//! (`REELSMITH_S3__BUCKET`). The flat names of earlier releases (`s3_bucket`,
//! `REELSMITH_S3_BUCKET`) still work for this release, each with a deprecation warning.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use reelsmith_store::sqlite::Durability;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Database, artifacts, assets, temporary files.
    pub data_dir: PathBuf,
    /// Stage cache (default: `<data_dir>/cache`).
    pub cache_dir: Option<PathBuf>,
    pub cache_size_mb: u64,
    /// Renders at once (each uses every core).
    pub render_workers: usize,
    /// Cleanup jobs at once.
    pub maintenance_workers: usize,
    /// Webhook deliveries at once.
    pub webhook_workers: usize,
    /// Most rows one batch may carry (`POST /api/v1/batches`).
    pub max_batch_rows: usize,
    /// Largest batch request (JSON or CSV); rows are small, so this is above `max_body_bytes`.
    pub max_batch_body_bytes: usize,
    /// Most generations a key's batches keep queued or rendering at once; a key's own share is
    /// at most half its `max_concurrent_jobs`, so its interactive requests always have room.
    pub batch_concurrency: u32,
    /// How often a running batch looks for finished rows and submits the next ones.
    pub batch_poll_ms: u64,
    /// Templates one key may keep.
    pub max_templates_per_key: u32,
    /// Document imports (`POST /api/v1/imports`) converting at once on this node; more wait.
    pub max_concurrent_imports: usize,
    /// Longest one import's conversion may run (LibreOffice, pdftoppm), seconds.
    pub import_timeout_secs: f64,
    /// OS priority of render threads and their FFmpeg processes (0-19): the API stays fast
    /// while renders saturate the cores.
    pub render_nice: i32,
    /// Each render runs in a process of its own, whose data (and each of its FFmpeg
    /// processes') may take at most this many MB: a render that needs more fails alone with
    /// `out_of_memory`, and a crash ends only its own job. 0 runs renders on threads of the
    /// server process.
    pub render_memory_limit_mb: u64,
    /// The executable that runs isolated renders (`reelsmith render-child`); set by the
    /// `reelsmith` binary to itself. Without it renders run on threads.
    #[serde(skip)]
    pub render_program: Option<PathBuf>,
    /// How render processes join this process's traces (when it exports them).
    #[serde(skip)]
    pub render_trace: Option<crate::isolation::TraceHooks>,
    /// A job whose worker stops heartbeating is taken again after this long.
    pub lease_secs: f64,
    /// Hard limit on one render attempt.
    pub job_timeout_secs: f64,
    pub max_attempts: u32,
    pub retry_base_ms: i64,
    pub retry_max_ms: i64,
    /// Require an API key on /api; default: only when listening beyond loopback.
    pub require_api_key: Option<bool>,
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Largest upload (one asset, or a whole multipart request).
    pub max_upload_bytes: usize,
    /// Finished generations and their files are removed after this long.
    pub retention_hours: f64,
    /// HMAC key for webhook signatures (default: generated once, kept in `<data_dir>/webhook_secret`).
    pub webhook_secret: Option<String>,
    /// Master key for talk result links and D-ID callbacks (never given to anyone; per-purpose
    /// keys are derived from it). Default: generated once, kept in `<data_dir>/signing_secret`.
    pub signing_secret: Option<String>,
    pub webhook_timeout_secs: f64,
    pub webhook_max_attempts: u32,
    /// Allow webhooks to loopback/private addresses (off: a caller could reach internal services).
    pub webhook_allow_private: bool,
    /// Delay before a failed delivery's second attempt; doubles each time (up to 10 minutes).
    pub webhook_retry_base_ms: i64,
    /// `normal` survives any process crash; `full` also survives power loss (fsync per commit).
    pub durability: Durability,
    /// Requests slower than this are logged with their route.
    pub slow_request_ms: u64,
    /// Limits given to keys made without explicit ones.
    pub default_rate_per_s: f64,
    pub default_burst: u32,
    pub default_max_concurrent_jobs: u32,
    /// The highest priority a new key may ask for (`keys create --max-priority` overrides).
    pub default_max_priority: u8,
    /// Largest render accepted, as frames × output pixels in millions (the estimate made at
    /// submission; 250,000 is an hour of 1080p at 30 fps). Bigger specs get 422 `too_costly`.
    pub max_job_megapixel_frames: f64,
    /// Largest sum of scene canvases (each the frame at its largest zoom), millions of pixels.
    pub max_job_canvas_megapixels: f64,
    /// Most characters of text (titles, overlays, narration) in one spec.
    pub max_job_text_chars: u64,
    /// Most bytes of uploaded assets one key (or the keyless caller) keeps; uploads past it get
    /// 413 `storage_quota_exceeded` until assets are deleted or expire.
    pub asset_quota_mb: u64,
    /// Event streams (SSE and WebSocket) one key (or the keyless caller) holds open at once.
    pub max_streams_per_key: usize,
    /// Longest a connection may take to send a request head, seconds (also how long an idle
    /// keep-alive connection stays open).
    pub header_timeout_secs: f64,
    /// Connections open at once, from everyone; past it new ones are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one client address (a proxy in front counts as one).
    pub max_connections_per_client: usize,
    /// Most scenes of one spec sent to D-ID (each is a paid D-ID talk).
    pub max_did_scenes_per_spec: usize,
    /// Budgets per key and UTC day for keys without their own (`keys create --daily-megapixel-frames
    /// --daily-did-scenes`): submissions past them get 429 `budget_exceeded` until midnight UTC.
    /// Unset: no daily limit on rendering.
    pub default_daily_megapixel_frames: Option<f64>,
    /// Scenes sent to D-ID per key and UTC day (each a paid talk).
    pub default_daily_did_scenes: u64,
    /// Estimated US dollars a key's prompts may spend on paid providers per UTC day, for keys
    /// without their own (`keys create --daily-provider-usd`): prompts past it get 429
    /// `budget_exceeded` until midnight UTC. Unset: no daily limit.
    pub default_daily_provider_usd: Option<f64>,
    /// Assets neither uploaded again nor used by a submission for this long are removed.
    pub asset_retention_hours: f64,
    /// Run workers in this process (`false`: API only).
    pub workers: bool,
    /// Serve the HTTP API (`false` for `reelsmith worker`: only /health, /ready and /metrics).
    #[serde(skip)]
    pub api: bool,
    /// Deprecated spellings found while loading (logged when the service starts).
    #[serde(skip)]
    pub deprecations: Vec<String>,
    /// How clients reach this server (links in webhooks and talks; callbacks from D-ID).
    /// Default: `http://<bind address>`.
    pub public_url: Option<String>,
    /// This node's name in job attempts and render reports, which callers see: letters,
    /// digits, `.`, `_` and `-`. Default: `node-` and 8 random hex digits (logged at start beside
    /// the host name and process id), so callers learn nothing about the machines.
    pub node_name: Option<String>,
    /// Let `source_url`/`audio_url` of talks point at loopback/private addresses (off: a caller
    /// could make the server read internal services).
    pub fetch_allow_private: bool,
    /// D-ID API key: enables `"engine": "d-id"` talks, rendered by D-ID instead of locally.
    pub did_api_key: Option<String>,
    pub did_base_url: String,
    /// How often a D-ID talk is polled when its webhook has not arrived.
    pub did_poll_secs: f64,
    /// Signed talk result URLs stay valid this long.
    pub result_url_ttl_secs: u64,
    /// Scale-out: job queue and metadata on PostgreSQL (`postgres://user@host/db`) instead of
    /// the embedded SQLite file. Every node of a deployment names the same database.
    pub database_url: Option<String>,
    /// PostgreSQL schema holding Reelsmith's tables (created when missing).
    pub database_schema: String,
    /// Pooled PostgreSQL connections per process.
    pub database_pool_size: u32,
    /// Scale-out: Redis for the shared stage cache (L2) and live progress across nodes.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel.
    pub redis_prefix: String,
    /// A shared cache entry unused this long expires.
    pub redis_cache_ttl_secs: u64,
    /// Entries larger than this stay on the node that made them.
    pub redis_cache_max_entry_mb: u64,
    /// Scale-out: results and uploads in an S3-compatible bucket instead of `data_dir`.
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint (MinIO, Ceph, R2…); default: AWS.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    /// Every object key starts with it.
    pub s3_prefix: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_allow_http: bool,
    /// Create the bucket at startup when it is missing.
    pub s3_create_bucket: bool,
    /// Downloads answer 307 with a presigned link to the object (storage serves the bytes and
    /// ranges) instead of passing them through the API node.
    pub s3_presigned_downloads: bool,
    pub s3_presigned_ttl_secs: u64,
    /// Split each video into segment jobs that any worker may take, assembled when all are
    /// done (off: each video renders on one worker, using its cores).
    pub distributed_render: bool,
    /// Videos shorter than this render on one worker even with `distributed_render`: fanning
    /// out costs a plan, a queue round trip per segment and an assembly.
    pub distributed_min_seconds: f64,
    /// Segment jobs at once per process when `distributed_render` is on (default: the cores).
    pub segment_workers: Option<usize>,
    /// Encoder threads per segment job: segments encode the same way on every worker, so a
    /// distributed render matches a single-worker one frame for frame.
    pub segment_encoder_threads: u32,
    /// Each render also writes a live HLS stream (`/api/v1/generations/{id}/stream.m3u8`)
    /// that players can start on while the render runs; kept with the generation's files.
    pub live_stream: bool,
    /// Remote services for prompts: `[providers.llm]` plans topics (any OpenAI-compatible
    /// server; its key also from `$REELSMITH_LLM_API_KEY`).
    #[serde(skip_serializing_if = "is_default_providers")]
    pub providers: reelsmith_director::config::ProvidersConfig,
}

fn is_default_providers(p: &reelsmith_director::config::ProvidersConfig) -> bool {
    *p == Default::default()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("reelsmith-data"),
            cache_dir: None,
            cache_size_mb: 4096,
            render_workers: 1,
            maintenance_workers: 1,
            webhook_workers: 4,
            max_batch_rows: 10_000,
            max_batch_body_bytes: 16 << 20,
            batch_concurrency: 8,
            batch_poll_ms: 500,
            max_templates_per_key: 1000,
            max_concurrent_imports: 1,
            import_timeout_secs: 180.0,
            render_nice: 10,
            render_memory_limit_mb: 4096,
            render_program: None,
            render_trace: None,
            lease_secs: 30.0,
            job_timeout_secs: 1800.0,
            max_attempts: 3,
            retry_base_ms: 2000,
            retry_max_ms: 300_000,
            require_api_key: None,
            max_body_bytes: 1 << 20,
            max_upload_bytes: 50 << 20,
            retention_hours: 24.0 * 7.0,
            webhook_secret: None,
            signing_secret: None,
            public_url: None,
            node_name: None,
            fetch_allow_private: false,
            did_api_key: None,
            did_base_url: "https://api.d-id.com".into(),
            did_poll_secs: 5.0,
            result_url_ttl_secs: 24 * 3600,
            webhook_timeout_secs: 10.0,
            webhook_max_attempts: 8,
            webhook_allow_private: false,
            webhook_retry_base_ms: 1000,
            durability: Durability::Normal,
            slow_request_ms: 2000,
            default_rate_per_s: 50.0,
            default_burst: 100,
            default_max_concurrent_jobs: 20,
            default_max_priority: 5,
            max_job_megapixel_frames: 250_000.0,
            max_job_canvas_megapixels: 1_000.0,
            max_job_text_chars: 200_000,
            asset_quota_mb: 2048,
            max_streams_per_key: 64,
            header_timeout_secs: 30.0,
            max_connections: 4096,
            max_connections_per_client: 256,
            max_did_scenes_per_spec: 10,
            default_daily_megapixel_frames: None,
            default_daily_did_scenes: 100,
            default_daily_provider_usd: None,
            asset_retention_hours: 24.0 * 30.0,
            workers: true,
            api: true,
            deprecations: vec![],
            database_url: None,
            database_schema: "public".into(),
            database_pool_size: 16,
            redis_url: None,
            redis_prefix: "reelsmith".into(),
            redis_cache_ttl_secs: 7 * 24 * 3600,
            redis_cache_max_entry_mb: 256,
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_prefix: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
            s3_create_bucket: false,
            s3_presigned_downloads: false,
            s3_presigned_ttl_secs: 3600,
            distributed_render: false,
            distributed_min_seconds: 20.0,
            segment_workers: None,
            segment_encoder_threads: 1,
            live_stream: true,
            providers: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("environment variable {0}: {1}")]
    Env(String, String),
    #[error("config: {0}")]
    Invalid(String),
}

/// The config file's sections, and the prefix their keys carry in the (flat) settings:
/// `[webhooks] secret` is `webhook_secret`.
const SECTIONS: &[(&str, &str)] =
    &[("database", "database_"), ("redis", "redis_"), ("s3", "s3_"), ("webhooks", "webhook_"), ("did", "did_")];

/// The section a flat key belongs to, and its name there (`s3_bucket` → `[s3] bucket`).
fn section_of(key: &str) -> Option<(&'static str, &str)> {
    SECTIONS.iter().find_map(|(section, prefix)| key.strip_prefix(prefix).map(|rest| (*section, rest)))
}

impl Config {
    /// Defaults ← `file` (when given) ← environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, |var| std::env::var(var).ok())
    }

    /// [`Config::load`] reading the environment through `env` (tests pass their own).
    pub fn load_with(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let name = file.map_or_else(|| PathBuf::from("environment"), Path::to_path_buf);
        let mut deprecations = vec![];
        let file_table = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.into(), e))?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Parse(p.into(), e.to_string()))?
            }
            None => toml::Table::new(),
        };
        // Sections become the flat settings; flat spellings of sectioned keys still work.
        let mut table = toml::Table::new();
        for (key, value) in file_table {
            match (SECTIONS.iter().find(|(s, _)| *s == key), value) {
                (Some((section, prefix)), toml::Value::Table(inner)) => {
                    for (k, v) in inner {
                        if table.insert(format!("{prefix}{k}"), v).is_some() {
                            let msg = format!("[{section}] {k} is also set as {prefix}{k}");
                            return Err(ConfigError::Parse(name, msg));
                        }
                    }
                }
                (Some((section, _)), _) => {
                    return Err(ConfigError::Parse(name, format!("`{section}` must be a section: [{section}]")));
                }
                (None, value) => {
                    if let Some((section, k)) = section_of(&key) {
                        deprecations.push(format!(
                            "config key `{key}` is deprecated: write `{k} = …` under `[{section}]` (the flat name stops working in the next release)"
                        ));
                    }
                    if table.insert(key.clone(), value).is_some() {
                        return Err(ConfigError::Parse(name, format!("{key} is set twice")));
                    }
                }
            }
        }
        let defaults = toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        // Settings without a default (absent from `defaults`): their text stays text, so a
        // node named `7` or an all-digit secret is not read as a number.
        const TEXT_OPTIONS: &[&str] = &[
            "cache_dir",
            "webhook_secret",
            "signing_secret",
            "public_url",
            "node_name",
            "did_api_key",
            "database_url",
            "redis_url",
            "s3_bucket",
            "s3_endpoint",
            "s3_prefix",
            "s3_access_key_id",
            "s3_secret_access_key",
        ];
        const OTHER_OPTIONS: &[&str] =
            &["require_api_key", "segment_workers", "default_daily_megapixel_frames", "default_daily_provider_usd"];
        for key in defaults.keys().map(String::as_str).chain(TEXT_OPTIONS.iter().chain(OTHER_OPTIONS).copied()) {
            let text = TEXT_OPTIONS.contains(&key) || matches!(defaults.get(key), Some(toml::Value::String(_)));
            let flat_var = format!("REELSMITH_{}", key.to_ascii_uppercase());
            let value = match section_of(key) {
                Some((section, k)) => {
                    let var = format!("REELSMITH_{}__{}", section.to_ascii_uppercase(), k.to_ascii_uppercase());
                    env(&var).or_else(|| {
                        let v = env(&flat_var)?;
                        deprecations.push(format!("environment variable {flat_var} is deprecated: use {var}"));
                        Some(v)
                    })
                }
                None => env(&flat_var),
            };
            if let Some(v) = value {
                table.insert(key.into(), if text { toml::Value::String(v) } else { env_value(&v) });
            }
        }
        let mut cfg: Config = table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(name, e.to_string()))?;
        cfg.check()?;
        cfg.deprecations = deprecations;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        for (name, v, min) in [
            ("lease_secs", self.lease_secs, 0.2),
            ("job_timeout_secs", self.job_timeout_secs, 0.1),
            ("webhook_timeout_secs", self.webhook_timeout_secs, 0.1),
            ("retention_hours", self.retention_hours, 0.0001),
            ("did_poll_secs", self.did_poll_secs, 0.05),
            ("distributed_min_seconds", self.distributed_min_seconds, 0.0),
            ("import_timeout_secs", self.import_timeout_secs, 1.0),
            ("header_timeout_secs", self.header_timeout_secs, 0.1),
        ] {
            if !v.is_finite() || v < min || v > 1e7 {
                return Err(ConfigError::Invalid(format!("{name} must be a number from {min} to 10000000")));
            }
        }
        if let Some(v) = self.default_daily_megapixel_frames
            && !(v.is_finite() && v > 0.0)
        {
            return bad("default_daily_megapixel_frames must be a positive number (leave it out for no daily limit)");
        }
        if let Some(v) = self.default_daily_provider_usd
            && !(v.is_finite() && v >= 0.0)
        {
            return bad(
                "default_daily_provider_usd must be a number of dollars, 0 or more (leave it out for no limit)",
            );
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return bad("max_connections must be 1 to 1000000");
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_client) {
            return bad("max_connections_per_client must be 1 to max_connections");
        }
        if !(1..=1_000_000).contains(&self.max_batch_rows) {
            return bad("max_batch_rows must be 1 to 1000000");
        }
        if !(10..=60_000).contains(&self.batch_poll_ms) {
            return bad("batch_poll_ms must be 10 to 60000");
        }
        if self.batch_concurrency == 0 {
            return bad("batch_concurrency must be at least 1");
        }
        if self.render_workers == 0 && self.workers {
            return bad("render_workers must be at least 1 (or set workers = false)");
        }
        if self.render_memory_limit_mb > 0 && self.render_memory_limit_mb < 64 {
            return bad("render_memory_limit_mb must be 0 (no separate render process) or at least 64");
        }
        if !(0..=19).contains(&self.render_nice) {
            return bad("render_nice must be 0 to 19");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1");
        }
        if let Some(u) = &self.database_url
            && !(u.starts_with("postgres://") || u.starts_with("postgresql://"))
        {
            return bad("database_url must be a postgres:// URL (leave it out for the embedded SQLite database)");
        }
        if let Some(u) = &self.redis_url
            && !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("unix://"))
        {
            return bad("redis_url must be a redis:// URL");
        }
        if self.database_schema.is_empty()
            || !self.database_schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return bad("database_schema must be letters, digits and underscores");
        }
        if self.database_url.is_some() && (self.webhook_secret.is_none() || self.signing_secret.is_none()) {
            // Every node signs webhooks, talk links and D-ID callbacks: they must share the keys
            // (the generated defaults live in one node's data_dir).
            return bad(
                "webhook_secret and signing_secret must be set when database_url is (every node signs with the same keys)",
            );
        }
        if self.signing_secret.as_deref().is_some_and(|s| s.len() < 32) {
            return bad("signing_secret must be at least 32 characters (e.g. `openssl rand -hex 32`)");
        }
        if self.signing_secret.is_some() && self.signing_secret == self.webhook_secret {
            // Receivers are given the webhook secret; the signing secret must stay unknown to them.
            return bad("signing_secret must differ from webhook_secret");
        }
        if let Some(n) = &self.node_name
            && (n.is_empty()
                || n.len() > 64
                || !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        {
            return bad("node_name must be 1 to 64 letters, digits, `.`, `_` or `-`");
        }
        if self.segment_workers == Some(0) || self.segment_encoder_threads == 0 {
            return bad("segment_workers and segment_encoder_threads must be at least 1");
        }
        self.providers.check().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    pub fn keys_required(&self) -> bool {
        self.require_api_key.unwrap_or(!self.bind.ip().is_loopback())
    }

    /// The Redis settings, when Redis is configured.
    pub fn redis(&self) -> Option<reelsmith_store::RedisConfig> {
        Some(reelsmith_store::RedisConfig {
            url: self.redis_url.clone()?,
            prefix: self.redis_prefix.clone(),
            cache_ttl_secs: self.redis_cache_ttl_secs,
            cache_max_entry_mb: self.redis_cache_max_entry_mb,
            ..Default::default()
        })
    }

    /// How render work (render and segment jobs) is retried.
    pub fn render_retry(&self) -> reelsmith_store::RetryPolicy {
        reelsmith_store::RetryPolicy {
            max_attempts: self.max_attempts,
            backoff_base_ms: self.retry_base_ms,
            backoff_max_ms: self.retry_max_ms,
            jitter: 0.25,
        }
    }

    /// What this process does: `all` (API and workers), `api` or `worker`.
    pub fn role(&self) -> &'static str {
        match (self.api, self.workers) {
            (true, true) => "all",
            (true, false) => "api",
            (false, _) => "worker",
        }
    }

    pub fn segment_workers(&self) -> usize {
        self.segment_workers.unwrap_or_else(reelsmith_engine::cores)
    }

    /// What one render may write to this node's stage cache: an equal share for each render
    /// and segment job that may run at once, so that together (entries a render needs cannot
    /// be evicted while it runs) they never need more than `cache_size_mb`.
    pub fn cache_share_bytes(&self) -> u64 {
        let at_once = self.render_workers + if self.distributed_render { self.segment_workers() } else { 0 };
        (self.cache_size_mb << 20) / at_once.max(1) as u64
    }

    /// Where uploaded assets live on this node's disk.
    pub fn assets_dir(&self) -> PathBuf {
        self.data_dir.join("assets")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("cache"))
    }
}

/// Environment values are typed like TOML: numbers and booleans as such, anything else a string.
fn env_value(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = v.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match v {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(v.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, "bind = \"0.0.0.0:9000\"\nlease_secs = 5\ndurability = \"full\"\n").unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.lease_secs, 5.0);
        assert_eq!(c.durability, Durability::Full);
        assert!(c.keys_required(), "keys are required beyond loopback");
        assert!(!Config::default().keys_required());

        std::fs::write(&p, "bnd = 1\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("bnd"), "{e}");
        std::fs::write(&p, "render_nice = 40\n").unwrap();
        assert!(Config::load(Some(&p)).unwrap_err().to_string().contains("render_nice"));
    }

    #[test]
    fn renders_at_once_divide_the_stage_cache_and_node_names_are_checked() {
        let c = Config { cache_size_mb: 4096, render_workers: 2, ..Config::default() };
        assert_eq!(c.cache_share_bytes(), 2048 << 20);
        let c = Config { distributed_render: true, segment_workers: Some(2), ..c };
        assert_eq!(c.cache_share_bytes(), 1024 << 20);
        assert_eq!(Config::default().cache_share_bytes(), Config::default().cache_size_mb << 20);
        let env = |name: &'static str| move |var: &str| (var == "REELSMITH_NODE_NAME").then(|| name.to_string());
        for good in ["eu-1.render_a", "7", "007", "true", "1e3"] {
            assert_eq!(Config::load_with(None, env(good)).unwrap().node_name.as_deref(), Some(good), "names are text");
        }
        for bad in ["two words", "a/b", ""] {
            let e = Config::load_with(None, env(bad)).unwrap_err().to_string();
            assert!(e.contains("node_name"), "{bad}: {e}");
        }
    }

    /// The configs the packages and manifests ship: the Debian package's commented file, and
    /// the Kubernetes ConfigMap's (its secrets from the environment, as the Secret gives them).
    #[test]
    fn the_shipped_configs_parse() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let deb = Config::load(Some(&Path::new(root).join("deploy/debian/config.toml"))).unwrap();
        assert_eq!((deb.bind.port(), deb.require_api_key), (8080, Some(true)));
        assert!(deb.deprecations.is_empty(), "{:?}", deb.deprecations);
        let manifest = std::fs::read_to_string(Path::new(root).join("deploy/kubernetes/reelsmith.yaml")).unwrap();
        let start = manifest.find("config.toml: |\n").expect("the ConfigMap's config.toml") + "config.toml: |\n".len();
        let block: String = manifest[start..]
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k8s.toml");
        std::fs::write(&file, &block).unwrap();
        let secrets = |var: &str| match var {
            "REELSMITH_SIGNING_SECRET" => Some("ab".repeat(32)),
            "REELSMITH_WEBHOOKS__SECRET" => Some("whsec_k8s".into()),
            _ => None,
        };
        let k8s = Config::load_with(Some(&file), secrets).unwrap();
        assert!(k8s.database_url.is_some() && k8s.redis().is_some() && k8s.s3_bucket.is_some(), "{block}");
        assert!(k8s.distributed_render);
        assert!(k8s.deprecations.is_empty(), "{:?}", k8s.deprecations);
    }

    #[test]
    fn the_scale_out_example_parses_and_bad_backend_urls_are_named() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/scale-out.toml");
        let c = Config::load(Some(Path::new(example))).unwrap();
        assert!(c.database_url.as_deref().unwrap().starts_with("postgres://"));
        assert_eq!(c.redis().unwrap().prefix, "reelsmith");
        assert!(c.distributed_render && c.s3_bucket.is_some());
        assert_eq!(c.role(), "all");
        assert!(c.deprecations.is_empty(), "the example uses sections: {:?}", c.deprecations);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        for (text, named) in [
            ("database_url = \"postgres://db/x\"\n", "webhook_secret"),
            ("database_url = \"postgres://db/x\"\nwebhook_secret = \"whsec_x\"\n", "signing_secret"),
            ("signing_secret = \"short\"\n", "signing_secret"),
            ("database_url = \"mysql://x\"\n", "database_url"),
            ("redis_url = \"http://x\"\n", "redis_url"),
            ("database_schema = \"a;drop\"\n", "database_schema"),
            ("segment_workers = 0\n", "segment_workers"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Config::load(Some(&p)).unwrap_err().to_string();
            assert!(e.contains(named), "{text}: {e}");
        }
    }

    /// Sections and their double-underscore variables; the flat spellings of earlier releases
    /// still load the same settings, each with a deprecation naming the new spelling.
    #[test]
    fn sections_and_their_flat_spellings_load_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("nested.toml");
        std::fs::write(
            &nested,
            "bind = \"127.0.0.1:9000\"\n[s3]\nbucket = \"videos\"\nregion = \"eu-west-1\"\n\
             [redis]\nurl = \"redis://cache:6379/0\"\n[webhooks]\ntimeout_secs = 3.5\n\
             [did]\napi_key = \"k\"\n[database]\nschema = \"rs\"\n",
        )
        .unwrap();
        let flat = dir.path().join("flat.toml");
        std::fs::write(
            &flat,
            "bind = \"127.0.0.1:9000\"\ns3_bucket = \"videos\"\ns3_region = \"eu-west-1\"\n\
             redis_url = \"redis://cache:6379/0\"\nwebhook_timeout_secs = 3.5\ndid_api_key = \"k\"\n\
             database_schema = \"rs\"\n",
        )
        .unwrap();
        let none = |_: &str| None;
        let a = Config::load_with(Some(&nested), none).unwrap();
        let b = Config::load_with(Some(&flat), none).unwrap();
        for c in [&a, &b] {
            assert_eq!(c.s3_bucket.as_deref(), Some("videos"));
            assert_eq!((c.s3_region.as_str(), c.redis_url.as_deref()), ("eu-west-1", Some("redis://cache:6379/0")));
            assert_eq!((c.webhook_timeout_secs, c.did_api_key.as_deref()), (3.5, Some("k")));
            assert_eq!(c.database_schema, "rs");
        }
        assert!(a.deprecations.is_empty(), "{:?}", a.deprecations);
        assert_eq!(b.deprecations.len(), 6, "{:?}", b.deprecations);
        assert!(b.deprecations.iter().any(|d| d.contains("`s3_bucket`") && d.contains("`bucket = …` under `[s3]`")));

        // The environment: REELSMITH_S3__BUCKET; the flat variable still works, deprecated, and
        // the new one wins when both are set.
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let c =
            Config::load_with(None, env(&[("REELSMITH_S3__BUCKET", "new"), ("REELSMITH_LEASE_SECS", "7")])).unwrap();
        assert_eq!((c.s3_bucket.as_deref(), c.lease_secs), (Some("new"), 7.0));
        assert!(c.deprecations.is_empty());
        let c = Config::load_with(None, env(&[("REELSMITH_S3_BUCKET", "old")])).unwrap();
        assert_eq!(c.s3_bucket.as_deref(), Some("old"));
        assert!(c.deprecations[0].contains("REELSMITH_S3__BUCKET"), "{:?}", c.deprecations);
        let c =
            Config::load_with(None, env(&[("REELSMITH_S3_BUCKET", "old"), ("REELSMITH_S3__BUCKET", "new")])).unwrap();
        assert_eq!(c.s3_bucket.as_deref(), Some("new"));

        // Mistakes are named: an unknown key in a section, a key set both ways.
        for (text, named) in [
            ("[s3]\nbukket = \"x\"\n", "s3_bukket"),
            ("s3_bucket = \"a\"\n[s3]\nbucket = \"b\"\n", "bucket"),
            ("s3 = 1\n", "[s3]"),
        ] {
            std::fs::write(&flat, text).unwrap();
            let e = Config::load_with(Some(&flat), none).unwrap_err().to_string();
            assert!(e.contains(named), "{text}: {e}");
        }
    }

    #[test]
    fn env_values_are_typed() {
        assert_eq!(env_value("3"), toml::Value::Integer(3));
        assert_eq!(env_value("0.5"), toml::Value::Float(0.5));
        assert_eq!(env_value("true"), toml::Value::Boolean(true));
        assert_eq!(env_value("/tmp/x"), toml::Value::String("/tmp/x".into()));
    }
}
