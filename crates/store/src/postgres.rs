//! The scale-out backend: PostgreSQL, one schema per deployment, shared by any number of
//! server and worker processes. Semantics are those of [`crate::sqlite`] (one conformance suite
//! checks both); what differs is how concurrency is made safe:
//!
//! - a claim is one statement (`FOR UPDATE SKIP LOCKED`), so claimers never block each other;
//! - every other read-then-write either locks the job row (`FOR UPDATE`) or takes an advisory
//!   transaction lock (idempotency keys, duplicate specs, quotas);
//! - enqueues `pg_notify` in their own transaction, and a listener wakes idle workers
//!   ([`JobQueue::wait_for_work`]) instead of letting them poll.
//!
//! Every commit waits for the WAL flush except a claim's, which cannot lose anything that
//! matters (see `CLAIM`); a claim + complete costs one flush. Deployments that prefer speed to
//! the last few hundred milliseconds of writes on a database crash can add
//! `options=-c%20synchronous_commit%3Doff` to the URL.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, Row};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::*;

/// Versioned migration steps; step i brings the schema to version i + 1. Never edit a step
/// that has shipped: add one.
/// The schema, one migration per file (`migrations/postgres/`, applied in order, each once): a new
/// version adds a file and a line here; applied files never change.
const SCHEMA: &[&str] = &[
    include_str!("../migrations/postgres/0001_init.sql"),
    include_str!("../migrations/postgres/0002_asset_retention.sql"),
    include_str!("../migrations/postgres/0003_key_priority_and_webhook_secrets.sql"),
    include_str!("../migrations/postgres/0004_key_budgets.sql"),
];

/// How long a call waits for a connection before failing with [`StoreError::Database`]; also
/// bounds how long calls hang while the database is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections idle this long are checked before use (see `connect`).
const IDLE_PING_AFTER: Duration = Duration::from_secs(1);

/// Advisory lock classes of `create_generation`, always taken in this order (so two creates
/// can never wait on each other in a cycle).
const LOCK_IDEMPOTENCY: i32 = 1;
const LOCK_SPEC: i32 = 2;
const LOCK_QUOTA: i32 = 3;

/// A job store on PostgreSQL. Cheap to clone; clones share the pool and the listener.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    shared: Arc<Shared>,
}

struct Shared {
    schema: String,
    /// `pg_notify` channel of this schema, so deployments (and tests) sharing a database do not
    /// wake each other.
    channel: String,
    wake: Arc<Wakeups>,
    /// Stops the listener task when the last clone goes.
    _listener: DropGuard,
    stop: CancellationToken,
}

impl PgStore {
    /// Connects, creates `schema` (default `public`) if needed and migrates it, and starts
    /// listening for enqueue notifications. Safe to call from many processes at once.
    pub async fn connect(url: &str, schema: Option<&str>, max_connections: u32) -> Result<Self> {
        let schema = schema.unwrap_or("public").to_string();
        let options = PgConnectOptions::from_str(url)?;
        // Generic plans: every statement here is a short index lookup whose best plan does not
        // depend on the parameters, and re-planning the claim's CTEs on each call (what `auto`
        // keeps doing for it) costs more than running it.
        let set_path: Arc<str> =
            format!("SET search_path TO {}; SET plan_cache_mode = force_generic_plan", quote_ident(&schema)).into();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection that sat idle is pinged before it is handed out, so the first calls
            // after a database restart get fresh connections instead of dead ones' errors. One
            // just returned was pinged by the pool on its way back: testing it again would add a
            // round trip to every call under load.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_PING_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                let sql = set_path.clone();
                Box::pin(async move {
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        migrate(&pool, &schema).await?;

        // A listener holds its connection for good: it gets a pool of its own, and the first
        // LISTEN happens before connect returns, so no enqueue after it goes unnoticed.
        let listen_pool =
            PgPoolOptions::new().max_connections(1).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options);
        let channel = channel_name(&schema);
        let listener = listen(&listen_pool, &channel).await?;
        let wake = Arc::new(Wakeups::default());
        let stop = CancellationToken::new();
        tokio::spawn(listen_loop(listen_pool, listener, channel.clone(), wake.clone(), stop.clone()));
        Ok(Self {
            pool,
            shared: Arc::new(Shared { schema, channel, wake, _listener: stop.clone().drop_guard(), stop }),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// Stops the listener and closes the pool (every clone's).
    pub async fn close(&self) {
        self.shared.stop.cancel();
        self.pool.close().await;
    }

    /// Drops this store's schema and everything in it, then closes the store. For benchmarks
    /// and tests that made a schema of their own.
    pub async fn drop_schema(&self) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(self.schema()))))
            .execute(&self.pool)
            .await?;
        self.close().await;
        Ok(())
    }

    /// Text of an advisory lock key, scoped to this schema (hashed by `advisory_lock`).
    fn lock_key(&self, parts: &[&str]) -> String {
        let mut key = self.shared.schema.clone();
        for p in parts {
            key.push('\u{1f}');
            key.push_str(p);
        }
        key
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Channel names are identifiers (63 bytes at most): long schema names are hashed.
fn channel_name(schema: &str) -> String {
    let name = format!("reelsmith_jobs_{schema}");
    if name.len() <= 63 {
        return name;
    }
    use sha2::Digest;
    format!("reelsmith_jobs_{}", &hex::encode(sha2::Sha256::digest(schema.as_bytes()))[..32])
}

fn asset_row(r: &sqlx::postgres::PgRow) -> Result<Asset> {
    Ok(Asset {
        id: r.try_get("id")?,
        sha256: r.try_get("sha256")?,
        media_type: r.try_get("media_type")?,
        bytes: int(r, "bytes")?,
        width: opt_int(r, "width")?,
        height: opt_int(r, "height")?,
        file_name: r.try_get("file_name")?,
        api_key_id: r.try_get("api_key_id")?,
        created_at_ms: r.try_get("created_at")?,
    })
}

async fn migrate(pool: &PgPool, schema: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    // Serializes concurrent starts, including CREATE SCHEMA IF NOT EXISTS, which is not safe
    // against itself.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('reelsmith-migrate' || chr(31) || $1, 0))")
        .bind(schema)
        .execute(&mut *tx)
        .await?;
    let ident = quote_ident(schema);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {ident};
         SET LOCAL search_path TO {ident};
         CREATE TABLE IF NOT EXISTS reelsmith_schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);"
    )))
    .execute(&mut *tx)
    .await?;
    let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM reelsmith_schema_version")
        .fetch_one(&mut *tx)
        .await?;
    let version = usize::try_from(version).map_err(|_| StoreError::Corrupt(format!("schema version {version}")))?;
    if version > SCHEMA.len() {
        return Err(StoreError::Corrupt(format!(
            "schema {schema} is at version {version}, newer than this build's {}",
            SCHEMA.len()
        )));
    }
    for (i, sql) in SCHEMA.iter().enumerate().skip(version) {
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO reelsmith_schema_version (version, applied_at) VALUES ($1, $2)")
            .bind((i + 1) as i64)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Wake-ups

/// Per-queue notification counters. A claim that finds nothing records the counter it saw
/// before looking; `wait_for_work` returns as soon as the counter moves past it, so a
/// notification that lands between the empty claim and the wait is not lost.
#[derive(Default)]
struct Wakeups {
    queues: Mutex<HashMap<String, QueueWake>>,
    /// Times the listener re-established LISTEN after losing its connection.
    reconnects: std::sync::atomic::AtomicU64,
}

struct QueueWake {
    epoch: watch::Sender<u64>,
    /// The newest epoch at which a claim found this queue empty.
    idle_at: u64,
}

impl Wakeups {
    fn with<T>(&self, queue: &str, f: impl FnOnce(&mut QueueWake) -> T) -> T {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let entry =
            queues.entry(queue.to_string()).or_insert_with(|| QueueWake { epoch: watch::Sender::new(0), idle_at: 0 });
        f(entry)
    }

    fn epoch(&self, queue: &str) -> u64 {
        self.with(queue, |w| *w.epoch.borrow())
    }

    fn note_empty(&self, queue: &str, epoch: u64) {
        self.with(queue, |w| w.idle_at = w.idle_at.max(epoch));
    }

    fn subscribe(&self, queue: &str) -> (watch::Receiver<u64>, u64) {
        self.with(queue, |w| (w.epoch.subscribe(), w.idle_at))
    }

    /// Only queues someone claims from or waits on have an entry; others need no wake-up.
    fn bump(&self, queue: &str) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = queues.get(queue) {
            w.epoch.send_modify(|e| *e += 1);
        }
    }

    /// After the listener was disconnected: notifications may have been missed, so everyone
    /// looks again.
    fn bump_all(&self) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for w in queues.values() {
            w.epoch.send_modify(|e| *e += 1);
        }
    }
}

async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Feeds notifications to the waiters until the store is dropped, reconnecting with backoff
/// whenever the connection drops (the database restarted, say).
async fn listen_loop(pool: PgPool, first: PgListener, channel: String, wake: Arc<Wakeups>, stop: CancellationToken) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let mut listener = match current.take() {
            Some(l) => l,
            None => match listen(&pool, &channel).await {
                Ok(l) => {
                    tracing::info!(%channel, "job notifications listening again");
                    backoff = Duration::from_millis(100);
                    wake.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    wake.bump_all();
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "job listener cannot connect");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = listener.try_recv() => match r {
                    Ok(Some(n)) => wake.bump(n.payload()),
                    // The connection dropped and was re-established: what was sent meanwhile is gone.
                    Ok(None) => {
                        wake.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        wake.bump_all();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "job listener lost its connection");
                        wake.bump_all();
                        break;
                    }
                },
            }
        }
        // A connection that fails as soon as it is made must not turn this into a busy loop.
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    pool.close().await;
}

// ---------------------------------------------------------------------------------------------
// Jobs

/// Inserts the jobs bound as parameters $1-$13 (one array per column, see [`bind_jobs`]) when
/// `$guard` holds; $14 is the current time. Each statement that enqueues ends with
/// `notify_new_jobs!()`, so waking the workers commits (or rolls back) with the jobs.
macro_rules! new_jobs_cte {
    ($guard:literal) => {
        concat!(
            "new_jobs AS (
    INSERT INTO jobs (id, queue, kind, subject, payload, priority, state, max_attempts, backoff_base_ms,
        backoff_max_ms, jitter, timeout_ms, run_at, dedup_key, created_at)
    SELECT u.id, u.queue, u.kind, u.subject, u.payload, u.priority, 'queued', u.max_attempts, u.backoff_base_ms,
        u.backoff_max_ms, u.jitter, u.timeout_ms, u.run_at, u.dedup_key, $14
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int8[], $8::int8[],
            $9::int8[], $10::float8[], $11::int8[], $12::int8[], $13::text[])
        AS u(id, queue, kind, subject, payload, priority, max_attempts, backoff_base_ms, backoff_max_ms, jitter,
            timeout_ms, run_at, dedup_key)
    WHERE ",
            $guard,
            "
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
    RETURNING queue)"
        )
    };
}

/// One notification per queue that got a job; $15 is the channel.
macro_rules! notify_new_jobs {
    () => {
        "(SELECT count(pg_notify($15, q.queue)) FROM (SELECT DISTINCT queue FROM new_jobs) q)"
    };
}

const ENQUEUE: &str = concat!(
    "WITH ",
    new_jobs_cte!("true"),
    " SELECT (SELECT count(*) FROM new_jobs) AS inserted, ",
    notify_new_jobs!(),
    " AS notified"
);

/// Completes ($19 = 'succeeded') or ends a cancelled job ($19 = 'cancelled') if the lease
/// ($16 job, $17 owner, $18 attempt) still holds, enqueueing the follow-ups only then.
const FINISH: &str = concat!(
    "WITH done AS (
    UPDATE jobs SET state = $19, finished_at = $14, lease_owner = NULL, lease_until = NULL
    WHERE id = $16 AND state = 'running' AND lease_owner = $17 AND attempts = $18
    RETURNING id
), closed AS (
    UPDATE job_attempts SET finished_at = $14, outcome = $19, error = NULL
    WHERE job_id IN (SELECT id FROM done) AND attempt = $18
), ",
    new_jobs_cte!("EXISTS (SELECT 1 FROM done)"),
    " SELECT (SELECT count(*) FROM done) AS held, ",
    notify_new_jobs!(),
    " AS notified"
);

/// FINISH without follow-ups, the common case, in a statement that does not carry the insert
/// ($1 job, $2 owner, $3 attempt, $4 state, $5 now).
const FINISH_ALONE: &str = "WITH done AS (
    UPDATE jobs SET state = $4, finished_at = $5, lease_owner = NULL, lease_until = NULL
    WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3
    RETURNING id
), closed AS (
    UPDATE job_attempts SET finished_at = $5, outcome = $4, error = NULL
    WHERE job_id IN (SELECT id FROM done) AND attempt = $3
) SELECT count(*) AS held FROM done";

/// Fails the (locked, held) job $16 with error $17 on attempt $18, enqueueing `on_final`.
const FAIL_FINAL: &str = concat!(
    "WITH upd AS (
    UPDATE jobs SET state = 'failed', finished_at = $14, last_error = $17, lease_owner = NULL, lease_until = NULL
    WHERE id = $16
), closed AS (
    UPDATE job_attempts SET finished_at = $14, outcome = 'failed', error = $17 WHERE job_id = $16 AND attempt = $18
), ",
    new_jobs_cte!("true"),
    " SELECT ",
    notify_new_jobs!(),
    " AS notified"
);

/// Cancels the (locked, queued) job $16, enqueueing `on_cancelled`.
const CANCEL_QUEUED: &str = concat!(
    "WITH upd AS (
    UPDATE jobs SET state = 'cancelled', finished_at = $14, cancel_requested = true WHERE id = $16
), ",
    new_jobs_cte!("true"),
    " SELECT ",
    notify_new_jobs!(),
    " AS notified"
);

/// Stores a generation ($16-$25) with its job (the first of $1-$13).
const CREATE_GENERATION: &str = concat!(
    "WITH ",
    new_jobs_cte!("true"),
    ", gen AS (
    INSERT INTO generations (id, job_id, spec, spec_hash, priority, webhook_url, idempotency_key, request_hash,
        api_key_id, metadata, created_at)
    VALUES ($16, $1[1], $17, $18, $19, $20, $21, $22, $23, $24, $14)
) SELECT ",
    notify_new_jobs!(),
    " AS notified"
);

/// The whole claim in one statement ($1 queue, $2 worker, $3 now, $4 lease end):
/// - jobs whose worker died on their last attempt fail instead of running again (a job that
///   kills its worker, out of memory say, must not take down every worker in turn);
/// - the most urgent ready job is taken: each branch walks its partial index in order and stops
///   at the first row nobody else holds (SKIP LOCKED), so claimers never wait for each other and
///   a claim costs the same with ten jobs queued or a million;
/// - a previous attempt still marked running is recorded as lost, and the new attempt begins.
///
/// Its commit does not wait for the WAL flush (`synchronous_commit` off for this transaction
/// only): a claim lost in a database crash leaves the job queued, as if never claimed, and its
/// worker's lease simply stops holding (heartbeat says `Lost`, complete/fail change nothing), so
/// the job still runs to one durable outcome. That halves the flushes of a claim + complete.
const CLAIM: &str = "WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true)
), exhausted AS (
    UPDATE jobs SET state = 'failed', finished_at = $3, lease_owner = NULL, lease_until = NULL,
        last_error = 'worker lost: its lease expired on the last attempt'
    WHERE id IN (SELECT id FROM jobs WHERE queue = $1 AND state = 'running' AND lease_until < $3
                 AND attempts >= max_attempts FOR UPDATE SKIP LOCKED)
    RETURNING id
), exhausted_attempts AS (
    UPDATE job_attempts SET finished_at = $3, outcome = 'lost', error = 'worker lost: lease expired'
    WHERE job_id IN (SELECT id FROM exhausted) AND outcome = 'running'
), ready AS (
    SELECT id, priority, run_at FROM jobs
    WHERE queue = $1 AND state = 'queued' AND run_at <= $3
    ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT id, priority, run_at FROM jobs
    WHERE queue = $1 AND state = 'running' AND lease_until < $3 AND attempts < max_attempts
    ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT * FROM ready UNION ALL SELECT * FROM expired) c
    ORDER BY priority DESC, run_at, id LIMIT 1
), claimed AS (
    UPDATE jobs j SET state = 'running', lease_owner = $2, lease_until = $4, attempts = j.attempts + 1,
        started_at = COALESCE(j.started_at, $3),
        last_error = CASE WHEN EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = j.id AND a.outcome = 'running')
                          THEN 'worker lost: lease expired' ELSE j.last_error END
    FROM picked p WHERE j.id = p.id
    RETURNING j.id, j.kind, j.subject, j.payload, j.priority, j.attempts, j.max_attempts, j.timeout_ms
), lost AS (
    UPDATE job_attempts SET finished_at = $3, outcome = 'lost', error = 'worker lost: lease expired'
    WHERE job_id IN (SELECT id FROM claimed) AND outcome = 'running'
    RETURNING job_id
), started AS (
    INSERT INTO job_attempts (job_id, attempt, worker, started_at, outcome)
    SELECT id, attempts, $2, $3, 'running' FROM claimed
)
SELECT c.*, (SELECT count(*) FROM lost) AS lost FROM claimed c CROSS JOIN async_commit";

/// Jobs as parallel column arrays, so any number of them is inserted by one statement.
#[derive(Default)]
struct JobColumns {
    id: Vec<String>,
    queue: Vec<String>,
    kind: Vec<String>,
    subject: Vec<Option<String>>,
    payload: Vec<String>,
    priority: Vec<i32>,
    max_attempts: Vec<i64>,
    backoff_base_ms: Vec<i64>,
    backoff_max_ms: Vec<i64>,
    jitter: Vec<f64>,
    timeout_ms: Vec<i64>,
    run_at: Vec<i64>,
    dedup_key: Vec<Option<String>>,
}

impl JobColumns {
    fn new(jobs: &[NewJob]) -> Self {
        let mut c = Self::default();
        for j in jobs {
            c.id.push(j.id.clone());
            c.queue.push(j.queue.clone());
            c.kind.push(j.kind.clone());
            c.subject.push(j.subject.clone());
            c.payload.push(j.payload.to_string());
            c.priority.push(j.priority);
            c.max_attempts.push(i64::from(j.retry.max_attempts.max(1)));
            c.backoff_base_ms.push(j.retry.backoff_base_ms);
            c.backoff_max_ms.push(j.retry.backoff_max_ms);
            c.jitter.push(j.retry.jitter);
            c.timeout_ms.push(millis(j.timeout));
            c.run_at.push(j.run_at_ms);
            c.dedup_key.push(j.dedup_key.clone());
        }
        c
    }
}

/// Binds $1-$13 (the jobs), $14 (now) and $15 (the notification channel).
fn bind_jobs<'q>(sql: &'static str, jobs: &[NewJob], now: i64, channel: &str) -> Query<'q, Postgres, PgArguments> {
    let c = JobColumns::new(jobs);
    sqlx::query(sql)
        .bind(c.id)
        .bind(c.queue)
        .bind(c.kind)
        .bind(c.subject)
        .bind(c.payload)
        .bind(c.priority)
        .bind(c.max_attempts)
        .bind(c.backoff_base_ms)
        .bind(c.backoff_max_ms)
        .bind(c.jitter)
        .bind(c.timeout_ms)
        .bind(c.run_at)
        .bind(c.dedup_key)
        .bind(now)
        .bind(channel.to_string())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An integer column converted to the record's type; out of range is a corrupt record.
fn int<T: TryFrom<i64>>(r: &PgRow, col: &str) -> Result<T> {
    let v: i64 = r.try_get(col)?;
    T::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} out of range: {v}")))
}

fn opt_int<T: TryFrom<i64>>(r: &PgRow, col: &str) -> Result<Option<T>> {
    let v: Option<i64> = r.try_get(col)?;
    v.map(|v| T::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} out of range: {v}")))).transpose()
}

fn json(r: &PgRow, col: &str) -> Result<serde_json::Value> {
    let s: String = r.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn state(r: &PgRow, col: &str) -> Result<JobState> {
    let s: String = r.try_get(col)?;
    JobState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("job state {s}")))
}

fn job_record(r: &PgRow) -> Result<JobRecord> {
    Ok(JobRecord {
        id: r.try_get("id")?,
        queue: r.try_get("queue")?,
        kind: r.try_get("kind")?,
        subject: r.try_get("subject")?,
        payload: json(r, "payload")?,
        priority: r.try_get("priority")?,
        state: state(r, "state")?,
        attempts: int(r, "attempts")?,
        max_attempts: int(r, "max_attempts")?,
        run_at_ms: r.try_get("run_at")?,
        created_at_ms: r.try_get("created_at")?,
        started_at_ms: r.try_get("started_at")?,
        finished_at_ms: r.try_get("finished_at")?,
        last_error: r.try_get("last_error")?,
        cancel_requested: r.try_get("cancel_requested")?,
    })
}

impl PgStore {
    /// Runs a FINISH for `lease`; false when the lease was lost (and nothing was enqueued).
    async fn finish(&self, lease: &Lease, state: JobState, follow_ups: &[NewJob]) -> Result<bool> {
        if follow_ups.is_empty() {
            let held: i64 = sqlx::query_scalar(FINISH_ALONE)
                .bind(&lease.job_id)
                .bind(&lease.owner)
                .bind(i64::from(lease.attempt))
                .bind(state.as_str())
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await?;
            return Ok(held > 0);
        }
        let row = bind_jobs(FINISH, follow_ups, now_ms(), &self.shared.channel)
            .bind(&lease.job_id)
            .bind(&lease.owner)
            .bind(i64::from(lease.attempt))
            .bind(state.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("held")? > 0)
    }
}

#[async_trait]
impl JobQueue for PgStore {
    async fn enqueue(&self, job: NewJob) -> Result<bool> {
        let row = bind_jobs(ENQUEUE, std::slice::from_ref(&job), now_ms(), &self.shared.channel)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("inserted")? == 1)
    }

    async fn claim(&self, queue: &str, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        // Taken before looking, so a job enqueued while we look still wakes a later wait.
        let epoch = self.shared.wake.epoch(queue);
        let now = now_ms();
        let row = sqlx::query(CLAIM)
            .bind(queue)
            .bind(worker)
            .bind(now)
            .bind(now.saturating_add(millis(lease)))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            self.shared.wake.note_empty(queue, epoch);
            return Ok(None);
        };
        let attempt = int(&row, "attempts")?;
        Ok(Some(ClaimedJob {
            lease: Lease { job_id: row.try_get("id")?, owner: worker.into(), attempt },
            queue: queue.into(),
            kind: row.try_get("kind")?,
            subject: row.try_get("subject")?,
            payload: json(&row, "payload")?,
            priority: row.try_get("priority")?,
            max_attempts: int(&row, "max_attempts")?,
            timeout: Duration::from_millis(row.try_get::<i64, _>("timeout_ms")?.max(0) as u64),
            recovered: row.try_get::<i64, _>("lost")? > 0,
        }))
    }

    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<Heartbeat> {
        let row: Option<bool> = sqlx::query_scalar(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND state = 'running' AND lease_owner = $3 AND attempts = $4
             RETURNING cancel_requested",
        )
        .bind(now_ms().saturating_add(millis(extend)))
        .bind(&lease.job_id)
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => Heartbeat::Lost,
            Some(true) => Heartbeat::CancelRequested,
            Some(false) => Heartbeat::Extended,
        })
    }

    async fn complete(&self, lease: &Lease, follow_ups: Vec<NewJob>) -> Result<bool> {
        self.finish(lease, JobState::Succeeded, &follow_ups).await
    }

    async fn fail(&self, lease: &Lease, error: &str, retryable: bool, on_final: Vec<NewJob>) -> Result<FailOutcome> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Locks the row, so a concurrent cancel or claim waits for this decision.
        let Some(row) = sqlx::query(
            "SELECT queue, cancel_requested, attempts, max_attempts, backoff_base_ms, backoff_max_ms, jitter FROM jobs
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3 FOR UPDATE",
        )
        .bind(&lease.job_id)
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(FailOutcome::Lost);
        };
        let attempts: u32 = int(&row, "attempts")?;
        let policy = RetryPolicy {
            max_attempts: int(&row, "max_attempts")?,
            backoff_base_ms: row.try_get("backoff_base_ms")?,
            backoff_max_ms: row.try_get("backoff_max_ms")?,
            jitter: row.try_get("jitter")?,
        };
        let cancel: bool = row.try_get("cancel_requested")?;
        let outcome = if retryable && !cancel && attempts < policy.max_attempts {
            let run_at = now.saturating_add(policy.delay_ms(attempts));
            let queue: String = row.try_get("queue")?;
            sqlx::query(
                "WITH upd AS (
                     UPDATE jobs SET state = 'queued', run_at = $2, last_error = $3, lease_owner = NULL, lease_until = NULL
                     WHERE id = $1
                 ), closed AS (
                     UPDATE job_attempts SET finished_at = $4, outcome = 'failed', error = $3
                     WHERE job_id = $1 AND attempt = $5
                 ) SELECT pg_notify($6, $7)",
            )
            .bind(&lease.job_id)
            .bind(run_at)
            .bind(error)
            .bind(now)
            .bind(i64::from(lease.attempt))
            .bind(&self.shared.channel)
            .bind(queue)
            .execute(&mut *tx)
            .await?;
            FailOutcome::Retrying { run_at_ms: run_at }
        } else {
            bind_jobs(FAIL_FINAL, &on_final, now, &self.shared.channel)
                .bind(&lease.job_id)
                .bind(error)
                .bind(i64::from(lease.attempt))
                .execute(&mut *tx)
                .await?;
            FailOutcome::Failed
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn cancelled(&self, lease: &Lease, on_final: Vec<NewJob>) -> Result<bool> {
        self.finish(lease, JobState::Cancelled, &on_final).await
    }

    async fn cancel(&self, job_id: &str, on_cancelled: Vec<NewJob>) -> Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        // The row lock orders this against a concurrent claim: either the claim comes first
        // (then this is a request to a running job) or it finds the job cancelled.
        let Some(current) = sqlx::query_scalar::<_, String>("SELECT state FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(CancelOutcome::NotFound);
        };
        let current = JobState::parse(&current).ok_or_else(|| StoreError::Corrupt(format!("job state {current}")))?;
        let out = match current {
            JobState::Queued => {
                bind_jobs(CANCEL_QUEUED, &on_cancelled, now_ms(), &self.shared.channel)
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
                CancelOutcome::Cancelled
            }
            JobState::Running => {
                sqlx::query("UPDATE jobs SET cancel_requested = true WHERE id = $1")
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
                CancelOutcome::Requested
            }
            s => CancelOutcome::AlreadyFinal(s),
        };
        tx.commit().await?;
        Ok(out)
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(job_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(job_record).transpose()
    }

    async fn attempts(&self, job_id: &str) -> Result<Vec<Attempt>> {
        let rows = sqlx::query("SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY attempt")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Attempt {
                    attempt: int(r, "attempt")?,
                    worker: r.try_get("worker")?,
                    started_at_ms: r.try_get("started_at")?,
                    finished_at_ms: r.try_get("finished_at")?,
                    outcome: r.try_get("outcome")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }

    async fn jobs_for(&self, subject: &str, kind: &str) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE subject = $1 AND kind = $2 ORDER BY created_at, id")
            .bind(subject)
            .bind(kind)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_record).collect()
    }

    async fn depth(&self) -> Result<BTreeMap<String, QueueDepth>> {
        // One branch per partial index rather than `state IN (...)`, which neither would serve.
        let rows = sqlx::query(
            "SELECT queue, count(*) AS queued, 0::int8 AS running, count(*) FILTER (WHERE run_at <= $1) AS ready
             FROM jobs WHERE state = 'queued' GROUP BY queue
             UNION ALL
             SELECT queue, 0, count(*), 0 FROM jobs WHERE state = 'running' GROUP BY queue",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        let mut out = BTreeMap::<String, QueueDepth>::new();
        for r in rows {
            let d = out.entry(r.try_get("queue")?).or_default();
            d.queued += int::<u64>(&r, "queued")?;
            d.running += int::<u64>(&r, "running")?;
            d.ready += int::<u64>(&r, "ready")?;
        }
        Ok(out)
    }

    async fn purge_finished(&self, before_ms: i64) -> Result<u64> {
        // A generation's own job stays as long as the generation: it holds its state.
        let n: i64 = sqlx::query_scalar(
            "WITH gone AS (
                 DELETE FROM jobs j WHERE finished_at < $1
                     AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.job_id = j.id)
                 RETURNING id
             ), attempts AS (
                 DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM gone)
             ) SELECT count(*) FROM gone",
        )
        .bind(before_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn next_run_at(&self, queue: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(
            "SELECT LEAST((SELECT min(run_at) FROM jobs WHERE queue = $1 AND state = 'queued'),
                          (SELECT min(lease_until) FROM jobs WHERE queue = $1 AND state = 'running'))",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn wait_for_work(&self, queue: &str, max_wait: Duration) {
        let (mut rx, idle_at) = self.shared.wake.subscribe(queue);
        if *rx.borrow_and_update() > idle_at {
            return; // notified since the last empty claim
        }
        // An error means the sender is gone, which cannot happen while `self` lives; returning
        // early is allowed anyway.
        let _ = tokio::time::timeout(max_wait, rx.changed()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Generations, keys, assets

const GENERATION_SELECT: &str = "SELECT g.*, j.state AS state, j.attempts AS attempts, j.max_attempts AS max_attempts,
    j.last_error AS last_error, j.started_at AS started_at, j.finished_at AS finished_at
    FROM generations g JOIN jobs j ON j.id = g.job_id";

fn generation_record(r: &PgRow) -> Result<GenerationRecord> {
    let result: Option<String> = r.try_get("result")?;
    Ok(GenerationRecord {
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        spec: json(r, "spec")?,
        spec_hash: r.try_get("spec_hash")?,
        priority: r.try_get("priority")?,
        webhook_url: r.try_get("webhook_url")?,
        idempotency_key: r.try_get("idempotency_key")?,
        api_key_id: r.try_get("api_key_id")?,
        metadata: json(r, "metadata")?,
        state: state(r, "state")?,
        attempts: int(r, "attempts")?,
        max_attempts: int(r, "max_attempts")?,
        progress: r.try_get("progress")?,
        stage: r.try_get("stage")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        last_error: r.try_get("last_error")?,
        result: result
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("result: {e}")))?,
        created_at_ms: r.try_get("created_at")?,
        started_at_ms: r.try_get("started_at")?,
        finished_at_ms: r.try_get("finished_at")?,
    })
}

async fn advisory_lock(tx: &mut sqlx::PgConnection, class: i32, key: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))").bind(class).bind(key).execute(&mut *tx).await?;
    Ok(())
}

#[async_trait]
impl Metadata for PgStore {
    async fn create_generation(&self, g: NewGeneration, job: NewJob) -> Result<CreateOutcome> {
        let api_key = g.api_key_id.as_deref().unwrap_or("");
        let mut tx = self.pool.begin().await?;
        // Each check below reads, then the insert writes: the advisory locks make the pair
        // atomic against concurrent creates that could change the answer, and only those
        // (same idempotency key, same spec, same quota), in the fixed class order.
        if let Some(key) = &g.idempotency_key {
            advisory_lock(&mut tx, LOCK_IDEMPOTENCY, &self.lock_key(&[api_key, key])).await?;
            let prior = sqlx::query(
                "SELECT id, request_hash FROM generations
                 WHERE COALESCE(api_key_id, '') = $1 AND idempotency_key = $2",
            )
            .bind(api_key)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = prior {
                let hash: String = r.try_get("request_hash")?;
                if hash != g.request_hash {
                    return Err(StoreError::Conflict(format!(
                        "Idempotency-Key '{key}' was already used with a different request"
                    )));
                }
                return Ok(CreateOutcome::Idempotent(r.try_get("id")?));
            }
        }
        if g.dedupe {
            advisory_lock(&mut tx, LOCK_SPEC, &self.lock_key(&[api_key, &g.spec_hash])).await?;
            let live: Option<String> = sqlx::query_scalar(
                "SELECT g.id FROM generations g JOIN jobs j ON j.id = g.job_id
                 WHERE g.spec_hash = $1 AND g.api_key_id IS NOT DISTINCT FROM $2
                     AND j.state IN ('queued', 'running', 'succeeded')
                 ORDER BY g.id DESC LIMIT 1",
            )
            .bind(&g.spec_hash)
            .bind(&g.api_key_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = live {
                return Ok(CreateOutcome::Deduplicated(id));
            }
        }
        if let (Some(max), Some(key)) = (g.max_active, &g.api_key_id) {
            advisory_lock(&mut tx, LOCK_QUOTA, &self.lock_key(&[key])).await?;
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM generations g JOIN jobs j ON j.id = g.job_id
                 WHERE g.api_key_id = $1 AND j.state IN ('queued', 'running')",
            )
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            if active >= i64::from(max) {
                return Err(StoreError::Quota(format!(
                    "this key already has {active} generations queued or running (limit {max})"
                )));
            }
        }
        if let (Some(b), Some(key)) = (&g.budget, &g.api_key_id)
            && let Some(used) = crate::sql::charge_budget::<sqlx::Postgres>(&mut tx, key, b).await?
        {
            return Err(StoreError::Budget { used });
        }
        bind_jobs(CREATE_GENERATION, std::slice::from_ref(&job), now_ms(), &self.shared.channel)
            .bind(&g.id)
            .bind(g.spec.to_string())
            .bind(&g.spec_hash)
            .bind(g.priority)
            .bind(&g.webhook_url)
            .bind(&g.idempotency_key)
            .bind(&g.request_hash)
            .bind(&g.api_key_id)
            .bind(g.metadata.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(CreateOutcome::Created(g.id))
    }

    async fn generation(&self, id: &str) -> Result<Option<GenerationRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!("{GENERATION_SELECT} WHERE g.id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(generation_record).transpose()
    }

    async fn list_generations(&self, f: &ListFilter) -> Result<Vec<GenerationRecord>> {
        // The key filter is written out only when given, so the planner can walk (api_key_id, id).
        let key_filter = if f.api_key_id.is_some() { "g.api_key_id = $4" } else { "$4::text IS NULL" };
        let sql = format!(
            "{GENERATION_SELECT} WHERE ($1::text IS NULL OR j.state = $1) AND ($2::int8 IS NULL OR g.created_at >= $2)
             AND ($3::int8 IS NULL OR g.created_at < $3) AND {key_filter} AND ($5::text IS NULL OR g.id < $5)
             ORDER BY g.id DESC LIMIT $6"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(f.state.map(JobState::as_str))
            .bind(f.created_after_ms)
            .bind(f.created_before_ms)
            .bind(&f.api_key_id)
            .bind(&f.cursor)
            .bind(i64::from(f.limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(generation_record).collect()
    }

    async fn set_progress(&self, id: &str, progress: f64, stage: &str) -> Result<()> {
        crate::sql::set_progress(&self.pool, id, progress, stage).await
    }

    async fn set_result(&self, id: &str, r: &GenerationResult) -> Result<()> {
        crate::sql::set_result(&self.pool, id, r).await
    }

    async fn set_error(&self, id: &str, code: &str, message: &str) -> Result<()> {
        crate::sql::set_error(&self.pool, id, code, message).await
    }

    async fn delete_generation(&self, id: &str) -> Result<bool> {
        // Its webhook events stay deliverable: only the render job goes with it.
        let n: i64 = sqlx::query_scalar(
            "WITH g AS (
                 DELETE FROM generations WHERE id = $1 RETURNING job_id
             ), j AS (
                 DELETE FROM jobs WHERE id IN (SELECT job_id FROM g) RETURNING id
             ), a AS (
                 -- After the job row (through `j`): jobs before attempts, the order every writer
                 -- locks them in.
                 DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM j)
             ) SELECT count(*) FROM g",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    async fn active_generations(&self, api_key_id: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM generations g JOIN jobs j ON j.id = g.job_id
             WHERE g.api_key_id = $1 AND j.state IN ('queued', 'running')",
        )
        .bind(api_key_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn finished_after(&self, after: (i64, &str), limit: u32) -> Result<Vec<FinishedGeneration>> {
        let rows = sqlx::query(
            "SELECT g.id, g.api_key_id, j.state, g.created_at, j.started_at, j.finished_at, g.result FROM jobs j
             JOIN generations g ON g.job_id = j.id
             WHERE j.finished_at >= $1 AND (j.finished_at > $1 OR g.id > $2)
             ORDER BY j.finished_at, g.id LIMIT $3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let result: Option<String> = r.try_get("result")?;
                let report = result
                    .and_then(|s| serde_json::from_str::<GenerationResult>(&s).ok())
                    .map(|res| res.report)
                    .filter(|v| !v.is_null());
                Ok(FinishedGeneration {
                    id: r.try_get("id")?,
                    api_key_id: r.try_get("api_key_id")?,
                    state: state(r, "state")?,
                    created_at_ms: r.try_get("created_at")?,
                    started_at_ms: r.try_get("started_at")?,
                    finished_at_ms: r.try_get("finished_at")?,
                    report,
                })
            })
            .collect()
    }

    async fn expired_generations(&self, before_ms: i64, limit: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT g.id FROM jobs j JOIN generations g ON g.job_id = j.id
             WHERE j.finished_at IS NOT NULL AND j.finished_at < $1 ORDER BY j.finished_at LIMIT $2",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn create_api_key(&self, key: &ApiKey, token_hash: &str) -> Result<()> {
        crate::sql::create_api_key(&self.pool, key, token_hash).await
    }

    async fn api_key_by_hash(&self, token_hash: &str) -> Result<Option<ApiKey>> {
        Ok(crate::sql::api_keys(&self.pool, crate::sql::KeyLookup::Hash(token_hash)).await?.pop())
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        crate::sql::api_keys(&self.pool, crate::sql::KeyLookup::All).await
    }

    async fn revoke_api_key(&self, id: &str) -> Result<bool> {
        crate::sql::revoke_api_key(&self.pool, id).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(crate::sql::api_keys(&self.pool, crate::sql::KeyLookup::Id(id)).await?.pop())
    }

    async fn set_webhook_secret(&self, id: &str, secret: &str) -> Result<bool> {
        crate::sql::set_webhook_secret(&self.pool, id, secret).await
    }

    async fn usage(&self, api_key_id: &str, day: i64) -> Result<Usage> {
        crate::sql::usage_on::<sqlx::Postgres>(&mut *self.pool.acquire().await?, api_key_id, day).await
    }

    async fn put_asset(&self, a: &Asset) -> Result<()> {
        sqlx::query(
            "INSERT INTO assets (id, sha256, media_type, bytes, width, height, file_name, api_key_id, created_at, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
             ON CONFLICT (id) DO UPDATE SET last_used_at = GREATEST(assets.last_used_at, excluded.last_used_at)",
        )
        .bind(&a.id)
        .bind(&a.sha256)
        .bind(&a.media_type)
        .bind(i64::try_from(a.bytes).map_err(|_| StoreError::Corrupt(format!("asset size {}", a.bytes)))?)
        .bind(a.width.map(i64::from))
        .bind(a.height.map(i64::from))
        .bind(&a.file_name)
        .bind(&a.api_key_id)
        .bind(a.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn asset(&self, id: &str) -> Result<Option<Asset>> {
        let row = sqlx::query("SELECT * FROM assets WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(asset_row).transpose()
    }

    async fn delete_asset(&self, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM assets WHERE id = $1").bind(id).execute(&self.pool).await?.rows_affected();
        Ok(n > 0)
    }

    async fn asset_usage(&self, api_key_id: Option<&str>) -> Result<(u64, u64)> {
        let (n, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT FROM assets WHERE api_key_id IS NOT DISTINCT FROM $1",
        )
        .bind(api_key_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((n as u64, bytes as u64))
    }

    async fn touch_assets(&self, ids: &[String], at_ms: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE assets SET last_used_at = GREATEST(last_used_at, $1) WHERE id = ANY($2)")
            .bind(at_ms)
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn stale_assets(&self, before_ms: i64, limit: u32) -> Result<Vec<Asset>> {
        let rows = sqlx::query("SELECT * FROM assets WHERE last_used_at < $1 ORDER BY last_used_at LIMIT $2")
            .bind(before_ms)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(asset_row).collect()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// Test utility: a throwaway PostgreSQL server of one's own (initdb + pg_ctl), for tests that
/// stop and restart the database. Needs the PostgreSQL server binaries (`/usr/local/bin`,
/// `$REELSMITH_PG_BINDIR`, or `pg_config --bindir`); as root it runs them as `postgres` (or
/// `nobody`) through `runuser`, since PostgreSQL refuses to run as root.
#[cfg(any(test, feature = "testing"))]
pub mod pg_testing {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    pub struct PrivatePostgres {
        base: PathBuf,
        data: PathBuf,
        port: u16,
        bindir: PathBuf,
        /// Who runs the server when we are root.
        run_as: Option<String>,
    }

    /// A port nobody listens on right now.
    pub fn free_port() -> io::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }

    fn bindir() -> io::Result<PathBuf> {
        if let Some(d) = std::env::var_os("REELSMITH_PG_BINDIR") {
            return Ok(d.into());
        }
        if Path::new("/usr/local/bin/pg_ctl").exists() && Path::new("/usr/local/bin/initdb").exists() {
            return Ok("/usr/local/bin".into());
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && dir.join("pg_ctl").exists() {
                return Ok(dir);
            }
        }
        // Debian's layout: /usr/lib/postgresql/<version>/bin, newest first.
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| rd.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("pg_ctl").exists()).collect())
            .unwrap_or_default();
        versions.sort();
        if let Some(dir) = versions.pop() {
            return Ok(dir);
        }
        Err(io::Error::new(io::ErrorKind::NotFound, "no PostgreSQL server binaries (initdb, pg_ctl) found"))
    }

    /// A user other than root to run the server as, with its uid and gid.
    fn unprivileged_user() -> io::Result<Option<(String, u32, u32)>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        for name in ["postgres", "nobody"] {
            let Ok(c) = std::ffi::CString::new(name) else { continue };
            // SAFETY: c is a valid C string; the result is only read before the next getpw call.
            let pw = unsafe { libc::getpwnam(c.as_ptr()) };
            if !pw.is_null() {
                // SAFETY: non-null getpwnam result points at a valid passwd record.
                let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
                return Ok(Some((name.to_string(), uid, gid)));
            }
        }
        Err(io::Error::new(io::ErrorKind::NotFound, "running as root and no postgres or nobody user to run as"))
    }

    impl PrivatePostgres {
        /// Initializes a fresh cluster in a temporary folder and starts it on `port`
        /// (127.0.0.1 only, trust authentication, user `postgres`, fsync off).
        pub fn start(port: u16) -> io::Result<Self> {
            let bindir = bindir()?;
            let user = unprivileged_user()?;
            let base = std::env::temp_dir().join(format!("reelsmith-pg-{}", crate::new_id("pg")));
            std::fs::create_dir_all(&base)?;
            if let Some((_, uid, gid)) = &user {
                std::os::unix::fs::chown(&base, Some(*uid), Some(*gid))?;
            }
            let pg = Self { data: base.join("data"), base, port, bindir, run_as: user.map(|u| u.0) };
            let data = pg.data.to_string_lossy().into_owned();
            pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])?;
            pg.start_again()?;
            Ok(pg)
        }

        /// Starts a free port's server.
        pub fn start_on_free_port() -> io::Result<Self> {
            Self::start(free_port()?)
        }

        pub fn port(&self) -> u16 {
            self.port
        }

        pub fn url(&self) -> String {
            format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
        }

        /// Kills the server at once (`pg_ctl stop -m immediate`): clients see their connections drop.
        pub fn stop(&self) -> io::Result<()> {
            let data = self.data.to_string_lossy().into_owned();
            self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
        }

        /// Starts the server again, same data folder and port; returns once it accepts connections.
        pub fn start_again(&self) -> io::Result<()> {
            let data = self.data.to_string_lossy().into_owned();
            let log = self.base.join("server.log").to_string_lossy().into_owned();
            let opts = format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off -c max_connections=50",
                self.port,
                self.base.display()
            );
            self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start"])
        }

        fn run(&self, program: &str, args: &[&str]) -> io::Result<()> {
            let program = self.bindir.join(program);
            let mut cmd = match &self.run_as {
                Some(user) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", user, "--"]).arg(&program);
                    c
                }
                None => Command::new(&program),
            };
            // The server user may not be allowed into our working directory.
            let out = cmd.args(args).current_dir(&self.base).output()?;
            if out.status.success() {
                return Ok(());
            }
            let log = std::fs::read_to_string(self.base.join("server.log")).unwrap_or_default();
            let tail: String =
                log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            Err(io::Error::other(format!(
                "{} {args:?} failed ({}): {}{}\n{tail}",
                program.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    impl Drop for PrivatePostgres {
        fn drop(&mut self) {
            let _ = self.stop();
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    fn url() -> String {
        std::env::var("REELSMITH_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A schema of the test's own, dropped at the end even when the test fails.
    struct TestSchema {
        name: String,
    }

    impl TestSchema {
        fn new() -> Self {
            Self { name: format!("t_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()) }
        }

        async fn store(&self) -> PgStore {
            let s = PgStore::connect(&url(), Some(&self.name), 8).await.expect("connect to the test database");
            sweep_stale_schemas(&s).await;
            s
        }
    }

    /// Drops test schemas over an hour old (their ids say when they were made), left behind by
    /// test runs that were killed before they could clean up. Once per process, best effort.
    async fn sweep_stale_schemas(s: &PgStore) {
        static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if SWEPT.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Ok(names) = sqlx::query_scalar::<_, String>(
            "SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^t_[0-9a-z]{26}$'",
        )
        .fetch_all(s.pool())
        .await
        else {
            return;
        };
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for name in names {
            let Ok(id) = ulid::Ulid::from_string(&name[2..].to_ascii_uppercase()) else { continue };
            if id.datetime() < hour_ago {
                let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(&name));
                let _ = sqlx::raw_sql(AssertSqlSafe(drop)).execute(s.pool()).await;
            }
        }
    }

    impl Drop for TestSchema {
        fn drop(&mut self) {
            // Drop may run inside a runtime: do the async cleanup on a thread of its own.
            let name = self.name.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async {
                    let pool = PgPoolOptions::new().max_connections(1).connect(&url()).await?;
                    sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(&name))))
                        .execute(&pool)
                        .await?;
                    pool.close().await;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
                .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .join();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_conformance() {
        let schema = TestSchema::new();
        let s = schema.store().await;
        crate::conformance::run_queue_suite(&s).await;
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metadata_conformance() {
        let schema = TestSchema::new();
        let s = schema.store().await;
        crate::conformance::run_metadata_suite(&s, &s).await;
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claimers_take_each_job_once() {
        let schema = TestSchema::new();
        let s = Arc::new(schema.store().await);
        crate::conformance::run_concurrent_claims(s.clone(), 200, 8).await;
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_identical_submissions_create_one_generation() {
        let schema = TestSchema::new();
        let s = Arc::new(schema.store().await);
        crate::conformance::run_concurrent_dedup(s.clone(), 100).await;
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_submissions_respect_the_quota_and_idempotency() {
        let schema = TestSchema::new();
        let s = Arc::new(schema.store().await);
        crate::conformance::run_concurrent_quota(s.clone(), 40, 3).await;
        crate::conformance::run_concurrent_budget(s.clone(), 40, 7).await;
        crate::conformance::run_concurrent_idempotency(s.clone(), 40).await;
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn claim_throughput_runs() {
        let schema = TestSchema::new();
        let s = schema.store().await;
        let r = crate::bench::claim_throughput(Arc::new(s.clone()), 300, 4).await.unwrap();
        assert_eq!((r.jobs, r.claimers), (300, 4));
        assert!(r.claims_per_s > 0.0 && r.p50_ms <= r.p99_ms, "{r:?}");
        eprintln!("debug-build claim throughput: {r:?}");
        s.close().await;
    }

    /// Claims nothing (so the store knows the queue was idle), then hands back how far the
    /// queue's notification counter is.
    async fn idle(s: &PgStore, queue: &str) -> u64 {
        assert!(s.claim(queue, "w", Duration::from_secs(60)).await.unwrap().is_none());
        s.shared.wake.epoch(queue)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_for_work_wakes_on_an_enqueue_from_another_store() {
        let schema = TestSchema::new();
        let waiter = schema.store().await;
        let other = schema.store().await; // a pool (and listener) of its own, as another process
        let queue = format!("a-{}", new_id("q"));
        idle(&waiter, &queue).await;

        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = {
            let (waiter, queue) = (waiter.clone(), queue.clone());
            tokio::spawn(async move {
                let _ = ready_tx.send(());
                let started = Instant::now();
                waiter.wait_for_work(&queue, Duration::from_secs(30)).await;
                (Instant::now(), started.elapsed())
            })
        };
        ready_rx.await.unwrap();
        let enqueued_at = Instant::now();
        assert!(other.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap());
        let (returned_at, waited) = task.await.unwrap();
        assert!(returned_at >= enqueued_at, "woke before the enqueue");
        assert!(waited < Duration::from_secs(5), "woke by the notification, not the timeout: {waited:?}");
        assert!(waiter.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().is_some());
        waiter.close().await;
        other.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_for_work_ignores_other_queues() {
        let schema = TestSchema::new();
        let waiter = schema.store().await;
        let other = schema.store().await;
        let (a, b) = (format!("a-{}", new_id("q")), format!("b-{}", new_id("q")));
        let before = idle(&waiter, &a).await;
        let task = {
            let (waiter, a) = (waiter.clone(), a.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                waiter.wait_for_work(&a, Duration::from_millis(300)).await;
                started.elapsed()
            })
        };
        for _ in 0..5 {
            other.enqueue(NewJob::new(&b, "test", serde_json::json!({}))).await.unwrap();
        }
        let waited = task.await.unwrap();
        assert!(waited >= Duration::from_millis(290), "queue B's jobs woke queue A's waiter after {waited:?}");
        assert_eq!(waiter.shared.wake.epoch(&a), before);
        waiter.close().await;
        other.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_notification_between_an_empty_claim_and_the_wait_is_not_lost() {
        let schema = TestSchema::new();
        let s = schema.store().await;
        let other = schema.store().await;
        let queue = format!("a-{}", new_id("q"));
        let before = idle(&s, &queue).await;
        other.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap();
        // Only once the notification has been seen does the wait begin.
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.shared.wake.epoch(&queue) == before {
            assert!(Instant::now() < deadline, "notification never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        s.wait_for_work(&queue, Duration::from_secs(30)).await;
        assert!(started.elapsed() < Duration::from_secs(1), "the earlier notification counts");
        s.close().await;
        other.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_schemas_do_not_wake_each_other() {
        let (one, two) = (TestSchema::new(), TestSchema::new());
        let (s1, s2) = (one.store().await, two.store().await);
        assert_ne!(s1.shared.channel, s2.shared.channel);
        let queue = format!("a-{}", new_id("q"));
        let before = idle(&s1, &queue).await;
        s2.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap();
        // A notification s1 does get proves s2's would have arrived by now.
        s1.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while s1.shared.wake.epoch(&queue) == before {
            assert!(Instant::now() < deadline, "own notification never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(s1.shared.wake.epoch(&queue), before + 1, "only its own schema's enqueue counted");
        s1.close().await;
        s2.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn migrations_run_once_and_concurrent_starts_agree() {
        let schema = TestSchema::new();
        let url = url();
        let connects = (0..4).map(|_| PgStore::connect(&url, Some(&schema.name), 2));
        let stores: Vec<PgStore> = futures_util::future::join_all(connects)
            .await
            .into_iter()
            .collect::<Result<_>>()
            .expect("every concurrent connect succeeds");
        let job = NewJob::new("render", "render", serde_json::json!({"n": 1}));
        let id = job.id.clone();
        assert!(stores[0].enqueue(job).await.unwrap());
        // A second start on a migrated schema changes nothing and sees the same data.
        let again = schema.store().await;
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM reelsmith_schema_version ORDER BY version")
            .fetch_all(again.pool())
            .await
            .unwrap();
        assert_eq!(versions, (1..=SCHEMA.len() as i64).collect::<Vec<_>>(), "each step applied exactly once");
        let j = again.job(&id).await.unwrap().unwrap();
        assert_eq!((j.state, j.payload), (JobState::Queued, serde_json::json!({"n": 1})));
        for s in stores {
            s.close().await;
        }
        again.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_rows_are_errors_not_panics() {
        let schema = TestSchema::new();
        let s = schema.store().await;
        let job = NewJob::new("q", "test", serde_json::json!({}));
        let id = job.id.clone();
        s.enqueue(job).await.unwrap();
        sqlx::query("UPDATE jobs SET payload = 'not json', attempts = -1 WHERE id = $1")
            .bind(&id)
            .execute(s.pool())
            .await
            .unwrap();
        assert!(matches!(s.job(&id).await, Err(StoreError::Corrupt(_))));
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_a_postgres_restart() {
        let pg = match tokio::task::block_in_place(pg_testing::PrivatePostgres::start_on_free_port) {
            Ok(pg) => pg,
            Err(e) => {
                eprintln!("SKIPPED survives_a_postgres_restart: cannot start a private PostgreSQL: {e}");
                return;
            }
        };
        let s = PgStore::connect(&pg.url(), Some("reelsmith"), 4).await.unwrap();
        let queue = format!("r-{}", new_id("q"));
        let job = NewJob::new(&queue, "test", serde_json::json!({"n": 1}));
        let id = job.id.clone();
        assert!(s.enqueue(job).await.unwrap());

        tokio::task::block_in_place(|| pg.stop()).unwrap();
        match s.claim(&queue, "w", Duration::from_secs(60)).await {
            Err(StoreError::Database(_)) => {}
            other => panic!("a claim while the database is down is a database error, got {other:?}"),
        }
        assert!(s.ping().await.is_err());
        let epoch = s.shared.wake.epoch(&queue);
        tokio::task::block_in_place(|| pg.start_again()).unwrap();

        let deadline = Instant::now() + Duration::from_secs(20);
        let claimed = loop {
            match s.claim(&queue, "w", Duration::from_secs(60)).await {
                Ok(Some(c)) => break c,
                Ok(None) => panic!("the job enqueued before the restart is gone"),
                Err(e) => assert!(Instant::now() < deadline, "no recovery within 20 s: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(claimed.lease.job_id, id);
        assert!(s.complete(&claimed.lease, vec![]).await.unwrap());
        s.ping().await.unwrap();
        // The listener comes back on its own (waking everyone, since it may have missed
        // notifications), and notifications flow again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.shared.wake.reconnects.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the listener never reconnected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(s.shared.wake.epoch(&queue) > epoch, "the reconnect woke the waiters");
        let epoch = s.shared.wake.epoch(&queue);
        s.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.shared.wake.epoch(&queue) == epoch {
            assert!(Instant::now() < deadline, "no notification after the restart");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.close().await;
    }
}
