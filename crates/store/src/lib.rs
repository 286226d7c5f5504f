//! Durable state of the Reelsmith service behind small traits, so the embedded defaults
//! (SQLite + local files) and the scale-out backends share one set of semantics and one
//! conformance suite ([`conformance`]).
//!
//! - [`JobQueue`]: priorities, delayed runs, leases with heartbeats (acks-late: a job whose
//!   worker died is taken again once its lease runs out), retries with exponential backoff and
//!   jitter, the error of every attempt, cooperative cancellation, follow-up jobs enqueued
//!   atomically with a completion (webhook events are jobs too).
//! - [`Metadata`]: generations (dedup by content hash, idempotency keys, progress, results),
//!   API keys (hashed), uploaded assets.
//! - [`artifacts`]: result files with byte ranges and ETags.

pub mod artifacts;
pub mod batches;
pub mod bench;
#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod redis_backend;
pub mod s3;
mod sql;
pub mod sqlite;
pub mod tiers;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use artifacts::{ArtifactStore, LocalArtifacts};
pub use batches::{BatchRecord, BatchRow, BatchState, BatchStore, NewBatchRow, RowStatus, TemplateRecord};
pub use postgres::PgStore;
pub use redis_backend::{RedisBus, RedisConfig, RedisTier};
pub use s3::{S3Artifacts, S3Config};
pub use sqlite::SqliteStore;
pub use tiers::{CacheTier, DiskTier};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Quota(String),
    /// The submission does not fit the key's budget for the day: what it used so far.
    #[error("over the key's daily budget ({} megapixel-frames, {} D-ID scenes used)", used.megapixel_frames, used.did_scenes)]
    Budget { used: Usage },
    #[error("redis: {0}")]
    Redis(String),
    #[error("object storage: {0}")]
    Object(String),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Database(_) => "database",
            Self::Io(_) => "io",
            Self::Corrupt(_) => "corrupt_record",
            Self::Conflict(_) => "conflict",
            Self::Quota(_) => "quota_exceeded",
            Self::Budget { .. } => "budget_exceeded",
            Self::Redis(_) => "redis",
            Self::Object(_) => "object_store",
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch: the one clock every record uses.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A time-ordered unique id with a readable prefix (`gen_01J…`): sorting ids sorts by creation,
/// which makes cursor pagination a plain `id < cursor`.
pub fn new_id(prefix: &str) -> String {
    static LAST: std::sync::Mutex<IdClock> = std::sync::Mutex::new(IdClock { ms: 0, random: 0 });
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let id = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next(now, &mut rand::rng());
    format!("{prefix}_{}", id.to_string().to_ascii_lowercase())
}

/// The last id made in this process: its millisecond and its 80 random bits.
struct IdClock {
    ms: u64,
    random: u128,
}

impl IdClock {
    const RANDOM_BITS: u32 = 80;
    /// The largest step between two ids of one millisecond: large enough that one id tells
    /// nothing about the next (a +1 step, as ULID generators take, lets a tenant name the ids
    /// made just after its own), small enough for 2^16 ids per millisecond.
    const MAX_STEP: u128 = 1 << 64;

    fn next(&mut self, now_ms: u64, rng: &mut impl rand::Rng) -> ulid::Ulid {
        // A later millisecond starts afresh; the same one (or a clock that went back) steps on
        // from the last id so ids keep sorting in the order they were made.
        if now_ms > self.ms {
            (self.ms, self.random) = (now_ms, Self::fresh(rng));
        } else {
            let next = self.random + rng.random_range(1..=Self::MAX_STEP);
            if next >> Self::RANDOM_BITS == 0 {
                self.random = next;
            } else {
                // Out of room in this millisecond: borrow the next one.
                (self.ms, self.random) = (self.ms + 1, Self::fresh(rng));
            }
        }
        ulid::Ulid::from_parts(self.ms, self.random)
    }

    fn fresh(rng: &mut impl rand::Rng) -> u128 {
        rng.random::<u128>() >> (128 - Self::RANDOM_BITS)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// How a failed attempt is retried.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    /// Relative jitter, 0 to 1: a delay d becomes uniform in [d(1-j), d(1+j)].
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, backoff_base_ms: 2_000, backoff_max_ms: 300_000, jitter: 0.25 }
    }
}

impl RetryPolicy {
    /// Delay after the `attempt`-th failure (1-based), jittered.
    pub fn delay_ms(&self, attempt: u32) -> i64 {
        let exp = self.backoff_base_ms.saturating_mul(1i64 << attempt.saturating_sub(1).min(30));
        let d = exp.min(self.backoff_max_ms) as f64;
        let j = self.jitter.clamp(0.0, 1.0);
        let f = if j > 0.0 { rand::random_range(1.0 - j..=1.0 + j) } else { 1.0 };
        (d * f).round() as i64
    }
}

#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    /// What the job is about (a generation id), for listing its jobs.
    pub subject: Option<String>,
    pub payload: serde_json::Value,
    /// 0-9, higher first.
    pub priority: i32,
    pub run_at_ms: i64,
    pub retry: RetryPolicy,
    /// Hard limit per attempt.
    pub timeout: Duration,
    /// At most one job per key is ever enqueued; a second enqueue is a no-op.
    pub dedup_key: Option<String>,
}

impl NewJob {
    pub fn new(queue: &str, kind: &str, payload: serde_json::Value) -> Self {
        Self {
            id: new_id("job"),
            queue: queue.into(),
            kind: kind.into(),
            subject: None,
            payload,
            priority: 0,
            run_at_ms: now_ms(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(1800),
            dedup_key: None,
        }
    }
}

/// Proof of holding a job: every later call names the attempt it belongs to, so a worker whose
/// lease ran out (and whose job someone else took) cannot complete or fail it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub owner: String,
    pub attempt: u32,
}

#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub lease: Lease,
    pub queue: String,
    pub kind: String,
    pub subject: Option<String>,
    pub payload: serde_json::Value,
    pub priority: i32,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// The previous attempt's owner lost its lease (crashed or hung) rather than failing.
    pub recovered: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// Lease extended; carry on.
    Extended,
    /// Lease extended, but cancellation was requested: stop soon and call `cancelled`.
    CancelRequested,
    /// The lease is gone (expired and taken, or the job was deleted): stop, write nothing.
    Lost,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FailOutcome {
    /// Queued again to run at this time.
    Retrying { run_at_ms: i64 },
    /// No attempts left, or not retryable.
    Failed,
    /// The lease was lost; nothing changed.
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued: cancelled now.
    Cancelled,
    /// It is running: its worker will stop at its next heartbeat.
    Requested,
    /// Already finished; nothing to do.
    AlreadyFinal(JobState),
    NotFound,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub attempt: u32,
    pub worker: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// running, succeeded, failed, lost, cancelled
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub subject: Option<String>,
    pub payload: serde_json::Value,
    pub priority: i32,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at_ms: i64,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub cancel_requested: bool,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueDepth {
    pub queued: u64,
    pub running: u64,
    /// Queued jobs whose run time has come.
    pub ready: u64,
}

/// A durable job queue. Every method is atomic; all semantics are checked by
/// [`conformance::run_queue_suite`].
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Stores a job durably; returns false when its `dedup_key` was already used.
    async fn enqueue(&self, job: NewJob) -> Result<bool>;
    /// Takes the most urgent ready job of `queue` (highest priority, then oldest): a queued job
    /// whose run time has come, or a running job whose lease expired.
    async fn claim(&self, queue: &str, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>>;
    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<Heartbeat>;
    /// Marks the job succeeded and enqueues `follow_ups` in the same transaction; false (and
    /// nothing enqueued) when the lease was lost.
    async fn complete(&self, lease: &Lease, follow_ups: Vec<NewJob>) -> Result<bool>;
    /// Records the attempt's error, then queues a retry (when `retryable` and attempts remain)
    /// or fails the job, enqueueing `on_final` with the final failure.
    async fn fail(&self, lease: &Lease, error: &str, retryable: bool, on_final: Vec<NewJob>) -> Result<FailOutcome>;
    /// The worker stopped because cancellation was requested.
    async fn cancelled(&self, lease: &Lease, on_final: Vec<NewJob>) -> Result<bool>;
    /// Cancels a queued job at once (enqueueing `on_cancelled` in the same transaction) or asks
    /// a running one to stop.
    async fn cancel(&self, job_id: &str, on_cancelled: Vec<NewJob>) -> Result<CancelOutcome>;
    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>>;
    async fn attempts(&self, job_id: &str) -> Result<Vec<Attempt>>;
    /// Jobs about `subject` of `kind`, oldest first.
    async fn jobs_for(&self, subject: &str, kind: &str) -> Result<Vec<JobRecord>>;
    async fn depth(&self) -> Result<BTreeMap<String, QueueDepth>>;
    /// Removes finished jobs (and their attempts) that finished before `before_ms`.
    async fn purge_finished(&self, before_ms: i64) -> Result<u64>;
    /// When the next queued job of `queue` becomes ready, if any (lets idle workers sleep).
    async fn next_run_at(&self, queue: &str) -> Result<Option<i64>>;
    /// Returns when work may have arrived on `queue` (a job was enqueued there) or after
    /// `max_wait`, whichever comes first; spurious returns are allowed, so callers claim again
    /// and wait again. Backends without notifications just sleep.
    async fn wait_for_work(&self, queue: &str, max_wait: std::time::Duration) {
        let _ = queue;
        tokio::time::sleep(max_wait).await
    }
}

/// A generation as stored: the request, its job, its live progress and its result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GenerationRecord {
    pub id: String,
    pub job_id: String,
    pub spec: serde_json::Value,
    pub spec_hash: String,
    pub priority: i32,
    pub webhook_url: Option<String>,
    pub idempotency_key: Option<String>,
    pub api_key_id: Option<String>,
    pub metadata: serde_json::Value,
    /// Made from a prompt: the request, plan, picture sources and cost ledger.
    pub prompt: Option<serde_json::Value>,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub progress: f64,
    pub stage: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub last_error: Option<String>,
    pub result: Option<GenerationResult>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// What a finished render left behind.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct GenerationResult {
    pub video_bytes: u64,
    pub video_etag: String,
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    pub has_thumbnail: bool,
    pub has_subtitles: bool,
    /// The engine's report: per-stage wall/CPU time, cache hits, memory.
    pub report: serde_json::Value,
}

#[derive(Clone, Debug)]
pub struct NewGeneration {
    pub id: String,
    pub spec: serde_json::Value,
    pub spec_hash: String,
    pub priority: i32,
    pub webhook_url: Option<String>,
    pub idempotency_key: Option<String>,
    /// Hash of the whole request, to tell a retried request from a different one with the same key.
    pub request_hash: String,
    pub api_key_id: Option<String>,
    pub metadata: serde_json::Value,
    /// Refuse ([`StoreError::Quota`]) when the key already has this many generations queued or
    /// running; checked in the same transaction as the insert, after replays and dedup.
    pub max_active: Option<u32>,
    /// Return a live or finished generation of the same spec and key instead of creating one.
    /// Off when the caller asks for a fresh render (benchmarks, re-renders after a model change).
    pub dedupe: bool,
    /// Charge the key's daily usage, refusing ([`StoreError::Budget`]) past the cap; in the same
    /// transaction as the insert, after replays and dedup (which cost nothing).
    pub budget: Option<Budget>,
    /// Made from a prompt: the request, plan, picture sources and cost ledger.
    pub prompt: Option<serde_json::Value>,
}

/// A charge against a key's usage on one UTC day, and the most that day may hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub day: i64,
    pub charge: Usage,
    pub cap: Usage,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    Created(String),
    /// Same idempotency key and request as before: that generation.
    Idempotent(String),
    /// An identical spec from the same key is queued, running or done: that generation.
    Deduplicated(String),
}

#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub state: Option<JobState>,
    pub created_after_ms: Option<i64>,
    pub created_before_ms: Option<i64>,
    pub api_key_id: Option<String>,
    /// Ids strictly older than this one (the previous page's last id).
    pub cursor: Option<String>,
    pub limit: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// Requests per second refilled into the key's bucket.
    pub rate_per_s: f64,
    pub burst: u32,
    /// Generations queued or running at once.
    pub max_concurrent_jobs: u32,
    /// The highest priority (0-9) the key may ask for: priority is an entitlement.
    pub max_priority: u8,
    /// Signs this key's webhooks (shown to its owner once; None for keys made before keys had
    /// their own, which fall back to the server's `webhook_secret` until rotated).
    #[serde(skip_serializing, default)]
    pub webhook_secret: Option<String>,
    /// What the key may spend; unset limits fall back to the server's defaults.
    #[serde(default)]
    pub limits: KeyLimits,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// A key's own cost limits (stored as JSON; `None`: the server's default applies).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyLimits {
    /// Megapixel-frames (frames × output pixels / 10⁶) one generation may cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_megapixel_frames: Option<f64>,
    /// Megapixel-frames the key may submit per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_megapixel_frames: Option<f64>,
    /// Scenes sent to D-ID (each a paid talk) per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_did_scenes: Option<u64>,
    /// Estimated US dollars the key's prompts may spend on paid providers (language models,
    /// stock, pictures, voices) per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_provider_usd: Option<f64>,
}

/// What a key submitted on one UTC day (or what one submission costs).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub megapixel_frames: f64,
    pub did_scenes: u64,
}

/// A JSON column that does not parse (or a record that cannot be written as JSON).
pub(crate) fn corrupt_json(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The UTC day (days since 1970-01-01) a time in milliseconds falls on: usage budgets reset at
/// midnight UTC.
pub fn usage_day(at_ms: i64) -> i64 {
    at_ms.div_euclid(86_400_000)
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Asset {
    pub id: String,
    pub sha256: String,
    pub media_type: String,
    pub bytes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub file_name: Option<String>,
    pub api_key_id: Option<String>,
    pub created_at_ms: i64,
}

/// Per-stage and per-generation timings of finished generations, for the performance report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FinishedGeneration {
    pub id: String,
    pub api_key_id: Option<String>,
    pub state: JobState,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: i64,
    pub report: Option<serde_json::Value>,
}

/// Everything the service stores about generations, keys and assets (and, through
/// [`BatchStore`], templates and batches).
#[async_trait]
pub trait Metadata: BatchStore {
    /// Atomically: replays an idempotent request, or returns a live duplicate, or stores the
    /// generation and enqueues its job. A reused key with a different request is a
    /// [`StoreError::Conflict`].
    async fn create_generation(&self, g: NewGeneration, job: NewJob) -> Result<CreateOutcome>;
    async fn generation(&self, id: &str) -> Result<Option<GenerationRecord>>;
    async fn list_generations(&self, f: &ListFilter) -> Result<Vec<GenerationRecord>>;
    async fn set_progress(&self, id: &str, progress: f64, stage: &str) -> Result<()>;
    async fn set_result(&self, id: &str, r: &GenerationResult) -> Result<()>;
    async fn set_error(&self, id: &str, code: &str, message: &str) -> Result<()>;
    /// A prompt's storyboard, planned by its job: the spec (JSON null until then) and what the
    /// planning kept (plan, visuals, ledger).
    async fn set_plan(&self, id: &str, spec: &serde_json::Value, prompt: &serde_json::Value) -> Result<()>;
    /// Removes the generation and its jobs; true when it existed.
    async fn delete_generation(&self, id: &str) -> Result<bool>;
    /// Generations of a key that are queued or running.
    async fn active_generations(&self, api_key_id: &str) -> Result<u64>;
    /// Up to `limit` generations that finished after `after` (finished_at, id), in that order:
    /// pass the last one's pair to read on.
    async fn finished_after(&self, after: (i64, &str), limit: u32) -> Result<Vec<FinishedGeneration>>;
    /// Finished generations older than `before_ms`, oldest first (retention).
    async fn expired_generations(&self, before_ms: i64, limit: u32) -> Result<Vec<String>>;

    async fn create_api_key(&self, key: &ApiKey, token_hash: &str) -> Result<()>;
    async fn api_key_by_hash(&self, token_hash: &str) -> Result<Option<ApiKey>>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>>;
    async fn revoke_api_key(&self, id: &str) -> Result<bool>;
    /// A key by its id (revoked ones too).
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// Replaces a key's webhook signing secret; false when there is no such key.
    async fn set_webhook_secret(&self, id: &str, secret: &str) -> Result<bool>;
    /// What the key submitted on `day` (see [`usage_day`]).
    async fn usage(&self, api_key_id: &str, day: i64) -> Result<Usage>;
    /// Adds estimated USD a key's prompt spent on providers to its `day`.
    async fn add_provider_spend(&self, api_key_id: &str, day: i64, usd: f64) -> Result<()>;
    /// Estimated USD the key's prompts spent on providers on `day`.
    async fn provider_spend(&self, api_key_id: &str, day: i64) -> Result<f64>;
    /// Adds estimated USD spent on `provider` (by any key) to its `day`.
    async fn add_provider_day_spend(&self, provider: &str, day: i64, usd: f64) -> Result<()>;
    /// Estimated USD the whole server spent on `provider` on `day`.
    async fn provider_day_spend(&self, provider: &str, day: i64) -> Result<f64>;

    async fn put_asset(&self, a: &Asset) -> Result<()>;
    async fn asset(&self, id: &str) -> Result<Option<Asset>>;
    async fn delete_asset(&self, id: &str) -> Result<bool>;
    /// How many assets a key (None: the keyless caller) holds, and their bytes.
    async fn asset_usage(&self, api_key_id: Option<&str>) -> Result<(u64, u64)>;
    /// A key's assets (None: the keyless caller's), most recently used first, at most `limit`.
    async fn assets_of(&self, api_key_id: Option<&str>, limit: u32) -> Result<Vec<Asset>>;
    /// Records that a submission used these assets now (retention counts from the last use).
    async fn touch_assets(&self, ids: &[String], at_ms: i64) -> Result<()>;
    /// Assets neither uploaded nor used since `before_ms`, oldest first.
    async fn stale_assets(&self, before_ms: i64, limit: u32) -> Result<Vec<Asset>>;
    /// Is the database answering?
    async fn ping(&self) -> Result<()>;
}

/// Hashes an API token for storage (tokens carry 256 random bits, so one SHA-256 suffices).
pub fn hash_token(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let p = RetryPolicy { max_attempts: 10, backoff_base_ms: 1000, backoff_max_ms: 5000, jitter: 0.0 };
        assert_eq!([1, 2, 3, 4, 5].map(|a| p.delay_ms(a)), [1000, 2000, 4000, 5000, 5000]);
        let p = RetryPolicy { jitter: 0.25, ..p };
        for _ in 0..200 {
            let d = p.delay_ms(2);
            assert!((1500..=2500).contains(&d), "{d}");
        }
        // Huge attempt numbers neither overflow nor exceed the cap.
        assert!(p.delay_ms(u32::MAX) <= 6250);
    }

    #[test]
    fn ids_of_one_millisecond_sort_in_order_and_do_not_reveal_the_next() {
        let mut clock = IdClock { ms: 0, random: 0 };
        let mut rng = rand::rng();
        let ids: Vec<ulid::Ulid> = (0..5000).map(|_| clock.next(1_000, &mut rng)).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} {}", pair[0], pair[1]);
            // Neighbours are far apart: guessing the next id from one's own is hopeless.
            if pair[0].timestamp_ms() == pair[1].timestamp_ms() {
                assert!(pair[1].random() - pair[0].random() > 1 << 20, "{} {}", pair[0], pair[1]);
            }
        }
        assert!(ids.iter().all(|id| id.timestamp_ms() >= 1_000));
        // A clock that steps back still makes later ids.
        let back = clock.next(500, &mut rng);
        assert!(back > ids[ids.len() - 1]);
        // A millisecond whose random part is nearly used up moves to the next one.
        let mut full = IdClock { ms: 7, random: (1 << 80) - 2 };
        let id = full.next(7, &mut rng);
        assert_eq!(id.timestamp_ms(), 8);
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = new_id("gen");
        std::thread::sleep(Duration::from_millis(2));
        let b = new_id("gen");
        assert!(a.starts_with("gen_") && a < b, "{a} {b}");
    }
}
