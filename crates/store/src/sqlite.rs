//! The embedded backend: one SQLite file in WAL mode. All writes go through a single
//! connection (SQLite allows one writer at a time anyway, and a queue of our own beats
//! `SQLITE_BUSY` retries); reads use a pool that never blocks on writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::*;

/// The schema, one migration per file (`migrations/sqlite/`, applied in order, each once): a new
/// version adds a file and a line here; applied files never change.
const SCHEMA: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_asset_retention.sql"),
    include_str!("../migrations/sqlite/0003_key_priority_and_webhook_secrets.sql"),
    include_str!("../migrations/sqlite/0004_key_budgets.sql"),
];

/// How durable a commit is. `Full` fsyncs every commit (survives power loss); `Normal` (WAL)
/// survives any process crash, including `kill -9`, and is several times faster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Full,
    #[default]
    Normal,
}

#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    creates: tokio::sync::mpsc::UnboundedSender<CreateRequest>,
}

impl SqliteStore {
    pub async fn open(path: &Path, durability: Durability) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .pragma("cache_size", "-16000")
            .pragma("temp_store", "memory")
            // Checkpoints (which fsync) run on their own connection every 200 ms, off the
            // writer's path, where they would stall every request queued behind them (seen as
            // 100+ ms tails while renders keep the disk busy). The writer checkpoints itself only
            // if the WAL outgrows 32 MB; the file shrinks back to 64 MB at most.
            .pragma("wal_autocheckpoint", "8000")
            .pragma("journal_size_limit", "67108864");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.clone().create_if_missing(true))
            .await?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.clone().read_only(true))
            .await?;
        let checkpointer = SqlitePoolOptions::new().max_connections(1).connect_with(base).await?;
        tokio::spawn(checkpoint_loop(checkpointer, writer.clone()));
        let (creates, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(create_loop(writer.clone(), rx));
        Ok(Self { writer, reader, creates })
    }

    /// Closes both pools (tests reopen the same file).
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

fn asset_row(r: &sqlx::sqlite::SqliteRow) -> Result<Asset> {
    Ok(Asset {
        id: r.try_get("id")?,
        sha256: r.try_get("sha256")?,
        media_type: r.try_get("media_type")?,
        bytes: r.try_get::<i64, _>("bytes")? as u64,
        width: r.try_get::<Option<i64>, _>("width")?.map(|w| w as u32),
        height: r.try_get::<Option<i64>, _>("height")?.map(|h| h as u32),
        file_name: r.try_get("file_name")?,
        api_key_id: r.try_get("api_key_id")?,
        created_at_ms: r.try_get("created_at")?,
    })
}

async fn migrate(writer: &SqlitePool) -> Result<()> {
    {
        let mut tx = writer.begin().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await?;
        for (i, sql) in SCHEMA.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {}", i + 1))).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// One submission inside a batch's transaction. A conflict is this request's error only; a
/// database error aborts the batch.
async fn create_one(
    tx: &mut sqlx::SqliteConnection,
    g: &NewGeneration,
    job: &NewJob,
) -> std::result::Result<Result<CreateOutcome>, sqlx::Error> {
    if let Some(key) = &g.idempotency_key {
        let prior =
            sqlx::query("SELECT id, request_hash FROM generations WHERE idempotency_key = ? AND api_key_id IS ?")
                .bind(key)
                .bind(&g.api_key_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(r) = prior {
            let hash: String = r.try_get("request_hash")?;
            if hash != g.request_hash {
                return Ok(Err(StoreError::Conflict(format!(
                    "Idempotency-Key '{key}' was already used with a different request"
                ))));
            }
            return Ok(Ok(CreateOutcome::Idempotent(r.try_get("id")?)));
        }
    }
    let live: Option<String> = if !g.dedupe {
        None
    } else {
        sqlx::query_scalar(
            // Probe the hash index, then each match's job by key: left to itself, the planner
            // prefers an index that avoids the sort and walks every generation of the key.
            "SELECT g.id FROM generations g INDEXED BY generations_hash CROSS JOIN jobs j ON j.id = g.job_id
         WHERE g.spec_hash = ? AND g.api_key_id IS ? AND j.state IN ('queued', 'running', 'succeeded')
         ORDER BY g.id DESC LIMIT 1",
        )
        .bind(&g.spec_hash)
        .bind(&g.api_key_id)
        .fetch_optional(&mut *tx)
        .await?
    };
    if let Some(id) = live {
        return Ok(Ok(CreateOutcome::Deduplicated(id)));
    }
    if let (Some(max), Some(key)) = (g.max_active, &g.api_key_id) {
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM generations g INDEXED BY generations_key CROSS JOIN jobs j ON j.id = g.job_id
             WHERE g.api_key_id = ? AND j.state IN ('queued', 'running')",
        )
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        if active >= max as i64 {
            return Ok(Err(StoreError::Quota(format!(
                "this key already has {active} generations queued or running (limit {max})"
            ))));
        }
    }
    if let (Some(b), Some(key)) = (&g.budget, &g.api_key_id) {
        match crate::sql::charge_budget::<sqlx::Sqlite>(tx, key, b).await {
            Ok(None) => {}
            Ok(Some(used)) => return Ok(Err(StoreError::Budget { used })),
            Err(StoreError::Database(e)) => return Err(e),
            Err(e) => return Ok(Err(e)),
        }
    }
    match insert_job(tx, job).await {
        Ok(_) => {}
        Err(StoreError::Database(e)) => return Err(e),
        Err(e) => return Ok(Err(e)),
    }
    sqlx::query(
        "INSERT INTO generations (id, job_id, spec, spec_hash, priority, webhook_url, idempotency_key, request_hash,
             api_key_id, metadata, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&g.id)
    .bind(&job.id)
    .bind(g.spec.to_string())
    .bind(&g.spec_hash)
    .bind(g.priority)
    .bind(&g.webhook_url)
    .bind(&g.idempotency_key)
    .bind(&g.request_hash)
    .bind(&g.api_key_id)
    .bind(g.metadata.to_string())
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(Ok(CreateOutcome::Created(g.id.clone())))
}

struct CreateRequest {
    g: NewGeneration,
    job: NewJob,
    reply: tokio::sync::oneshot::Sender<Result<CreateOutcome>>,
}

/// Group commit for submissions: requests that arrive while a transaction runs go into the next
/// one together, so a burst costs one commit instead of one per request. Each request still
/// sees the ones before it (dedup and idempotency hold inside a batch).
async fn create_loop(writer: SqlitePool, mut rx: tokio::sync::mpsc::UnboundedReceiver<CreateRequest>) {
    const MAX_BATCH: usize = 128;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let run = async {
            let mut tx = writer.begin().await?;
            let mut out = Vec::with_capacity(batch.len());
            for r in &batch {
                out.push(create_one(&mut tx, &r.g, &r.job).await?);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(out)
        };
        match run.await {
            Ok(results) => {
                for (r, res) in batch.into_iter().zip(results) {
                    let _ = r.reply.send(res);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for r in batch {
                    let _ = r.reply.send(Err(StoreError::Corrupt(format!("database: {msg}"))));
                }
            }
        }
    }
}

/// Copies the WAL into the database without blocking writers (PASSIVE), until the store closes.
async fn checkpoint_loop(checkpointer: SqlitePool, writer: SqlitePool) {
    while !writer.is_closed() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&checkpointer).await {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
    checkpointer.close().await;
}

async fn insert_job(conn: &mut sqlx::SqliteConnection, j: &NewJob) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO jobs (id, queue, kind, subject, payload, priority, state, max_attempts, backoff_base_ms,
            backoff_max_ms, jitter, timeout_ms, run_at, dedup_key, created_at)
         VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(&j.id)
    .bind(&j.queue)
    .bind(&j.kind)
    .bind(&j.subject)
    .bind(j.payload.to_string())
    .bind(j.priority)
    .bind(j.retry.max_attempts.max(1) as i64)
    .bind(j.retry.backoff_base_ms)
    .bind(j.retry.backoff_max_ms)
    .bind(j.retry.jitter)
    .bind(j.timeout.as_millis() as i64)
    .bind(j.run_at_ms)
    .bind(&j.dedup_key)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

async fn insert_jobs(conn: &mut sqlx::SqliteConnection, jobs: &[NewJob]) -> Result<()> {
    for j in jobs {
        insert_job(conn, j).await?;
    }
    Ok(())
}

/// Ends the attempt row of a lease.
async fn close_attempt(
    conn: &mut sqlx::SqliteConnection,
    lease: &Lease,
    outcome: &str,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE job_attempts SET finished_at = ?, outcome = ?, error = ? WHERE job_id = ? AND attempt = ?")
        .bind(now)
        .bind(outcome)
        .bind(error)
        .bind(&lease.job_id)
        .bind(lease.attempt as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Is this lease still the job's current one?
async fn holds(conn: &mut sqlx::SqliteConnection, lease: &Lease) -> Result<Option<SqliteRow>> {
    Ok(sqlx::query(
        "SELECT cancel_requested, attempts, max_attempts, backoff_base_ms, backoff_max_ms, jitter FROM jobs
         WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempts = ?",
    )
    .bind(&lease.job_id)
    .bind(&lease.owner)
    .bind(lease.attempt as i64)
    .fetch_optional(&mut *conn)
    .await?)
}

fn job_record(r: &SqliteRow) -> Result<JobRecord> {
    let state: String = r.try_get("state")?;
    let payload: String = r.try_get("payload")?;
    Ok(JobRecord {
        id: r.try_get("id")?,
        queue: r.try_get("queue")?,
        kind: r.try_get("kind")?,
        subject: r.try_get("subject")?,
        payload: serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        priority: r.try_get::<i64, _>("priority")? as i32,
        state: JobState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("job state {state}")))?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        max_attempts: r.try_get::<i64, _>("max_attempts")? as u32,
        run_at_ms: r.try_get("run_at")?,
        created_at_ms: r.try_get("created_at")?,
        started_at_ms: r.try_get("started_at")?,
        finished_at_ms: r.try_get("finished_at")?,
        last_error: r.try_get("last_error")?,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
    })
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, job: NewJob) -> Result<bool> {
        let mut conn = self.writer.acquire().await?;
        insert_job(&mut conn, &job).await
    }

    async fn claim(&self, queue: &str, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        // A job whose worker died on its last attempt is failed, not run again: a job that kills
        // its worker process (out of memory, say) must not take down every worker in turn.
        let exhausted: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'failed', finished_at = ?1, lease_owner = NULL, lease_until = NULL,
                 last_error = 'worker lost: its lease expired on the last attempt'
             WHERE queue = ?2 AND state = 'running' AND lease_until < ?1 AND attempts >= max_attempts
             RETURNING id",
        )
        .bind(now)
        .bind(queue)
        .fetch_all(&mut *tx)
        .await?;
        for id in &exhausted {
            sqlx::query(
                "UPDATE job_attempts SET finished_at = ?, outcome = 'lost', error = 'worker lost: lease expired'
                 WHERE job_id = ? AND outcome = 'running'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        // One statement picks and takes the job, so two claimers can never take the same one.
        // The previous state and owner come back so a lost lease can be recorded.
        let row = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_until = ?2, attempts = attempts + 1,
                 started_at = COALESCE(started_at, ?3)
             WHERE id = (SELECT id FROM (
                 -- Each branch walks its own index in order and stops at the first row, so a
                 -- claim costs the same with ten jobs queued or a million.
                 SELECT * FROM (SELECT id, priority, run_at FROM jobs INDEXED BY jobs_ready
                                WHERE queue = ?4 AND state = 'queued' AND run_at <= ?3
                                ORDER BY priority DESC, run_at, id LIMIT 1)
                 UNION ALL
                 SELECT * FROM (SELECT id, priority, run_at FROM jobs INDEXED BY jobs_lease
                                WHERE queue = ?4 AND state = 'running' AND lease_until < ?3
                                ORDER BY priority DESC, run_at, id LIMIT 1)
             ) ORDER BY priority DESC, run_at, id LIMIT 1)
             RETURNING id, kind, subject, payload, priority, attempts, max_attempts, timeout_ms",
        )
        .bind(worker)
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(queue)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let attempt = row.try_get::<i64, _>("attempts")? as u32;
        // A previous attempt still marked running lost its lease (its worker died or hung).
        let lost = sqlx::query(
            "UPDATE job_attempts SET finished_at = ?, outcome = 'lost', error = 'worker lost: lease expired'
             WHERE job_id = ? AND outcome = 'running'",
        )
        .bind(now)
        .bind(&id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if lost > 0 {
            sqlx::query("UPDATE jobs SET last_error = 'worker lost: lease expired' WHERE id = ?")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, worker, started_at, outcome) VALUES (?, ?, ?, ?, 'running')",
        )
        .bind(&id)
        .bind(attempt as i64)
        .bind(worker)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let payload: String = row.try_get("payload")?;
        Ok(Some(ClaimedJob {
            lease: Lease { job_id: id, owner: worker.into(), attempt },
            queue: queue.into(),
            kind: row.try_get("kind")?,
            subject: row.try_get("subject")?,
            payload: serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            priority: row.try_get::<i64, _>("priority")? as i32,
            max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
            timeout: Duration::from_millis(row.try_get::<i64, _>("timeout_ms")?.max(0) as u64),
            recovered: lost > 0,
        }))
    }

    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<Heartbeat> {
        let row = sqlx::query(
            "UPDATE jobs SET lease_until = ? WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempts = ?
             RETURNING cancel_requested",
        )
        .bind(now_ms() + extend.as_millis() as i64)
        .bind(&lease.job_id)
        .bind(&lease.owner)
        .bind(lease.attempt as i64)
        .fetch_optional(&self.writer)
        .await?;
        Ok(match row {
            None => Heartbeat::Lost,
            Some(r) if r.try_get::<i64, _>(0)? != 0 => Heartbeat::CancelRequested,
            Some(_) => Heartbeat::Extended,
        })
    }

    async fn complete(&self, lease: &Lease, follow_ups: Vec<NewJob>) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        if holds(&mut tx, lease).await?.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE jobs SET state = 'succeeded', finished_at = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
        )
        .bind(now)
        .bind(&lease.job_id)
        .execute(&mut *tx)
        .await?;
        close_attempt(&mut tx, lease, "succeeded", None, now).await?;
        insert_jobs(&mut tx, &follow_ups).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn fail(&self, lease: &Lease, error: &str, retryable: bool, on_final: Vec<NewJob>) -> Result<FailOutcome> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let Some(row) = holds(&mut tx, lease).await? else {
            return Ok(FailOutcome::Lost);
        };
        let attempts = row.try_get::<i64, _>("attempts")? as u32;
        let policy = RetryPolicy {
            max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
            backoff_base_ms: row.try_get("backoff_base_ms")?,
            backoff_max_ms: row.try_get("backoff_max_ms")?,
            jitter: row.try_get("jitter")?,
        };
        let cancel = row.try_get::<i64, _>("cancel_requested")? != 0;
        close_attempt(&mut tx, lease, "failed", Some(error), now).await?;
        let outcome = if retryable && !cancel && attempts < policy.max_attempts {
            let run_at = now + policy.delay_ms(attempts);
            sqlx::query(
                "UPDATE jobs SET state = 'queued', run_at = ?, last_error = ?, lease_owner = NULL, lease_until = NULL
                 WHERE id = ?",
            )
            .bind(run_at)
            .bind(error)
            .bind(&lease.job_id)
            .execute(&mut *tx)
            .await?;
            FailOutcome::Retrying { run_at_ms: run_at }
        } else {
            sqlx::query(
                "UPDATE jobs SET state = 'failed', finished_at = ?, last_error = ?, lease_owner = NULL, lease_until = NULL
                 WHERE id = ?",
            )
            .bind(now)
            .bind(error)
            .bind(&lease.job_id)
            .execute(&mut *tx)
            .await?;
            insert_jobs(&mut tx, &on_final).await?;
            FailOutcome::Failed
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn cancelled(&self, lease: &Lease, on_final: Vec<NewJob>) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        if holds(&mut tx, lease).await?.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
        )
        .bind(now)
        .bind(&lease.job_id)
        .execute(&mut *tx)
        .await?;
        close_attempt(&mut tx, lease, "cancelled", None, now).await?;
        insert_jobs(&mut tx, &on_final).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel(&self, job_id: &str, on_cancelled: Vec<NewJob>) -> Result<CancelOutcome> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let Some(state) = sqlx::query_scalar::<_, String>("SELECT state FROM jobs WHERE id = ?")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(CancelOutcome::NotFound);
        };
        let state = JobState::parse(&state).ok_or_else(|| StoreError::Corrupt(state.clone()))?;
        let out = match state {
            JobState::Queued => {
                sqlx::query("UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 1 WHERE id = ?")
                    .bind(now)
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
                insert_jobs(&mut tx, &on_cancelled).await?;
                CancelOutcome::Cancelled
            }
            JobState::Running => {
                sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?").bind(job_id).execute(&mut *tx).await?;
                CancelOutcome::Requested
            }
            s => CancelOutcome::AlreadyFinal(s),
        };
        tx.commit().await?;
        Ok(out)
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?").bind(job_id).fetch_optional(&self.reader).await?;
        row.as_ref().map(job_record).transpose()
    }

    async fn attempts(&self, job_id: &str) -> Result<Vec<Attempt>> {
        let rows = sqlx::query("SELECT * FROM job_attempts WHERE job_id = ? ORDER BY attempt")
            .bind(job_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Attempt {
                    attempt: r.try_get::<i64, _>("attempt")? as u32,
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
        let rows = sqlx::query("SELECT * FROM jobs WHERE subject = ? AND kind = ? ORDER BY created_at, id")
            .bind(subject)
            .bind(kind)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(job_record).collect()
    }

    async fn depth(&self) -> Result<BTreeMap<String, QueueDepth>> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT queue, SUM(state = 'queued'), SUM(state = 'running'), SUM(state = 'queued' AND run_at <= ?)
             FROM jobs WHERE state IN ('queued', 'running') GROUP BY queue",
        )
        .bind(now)
        .fetch_all(&self.reader)
        .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            out.insert(
                r.try_get::<String, _>(0)?,
                QueueDepth {
                    queued: r.try_get::<i64, _>(1)? as u64,
                    running: r.try_get::<i64, _>(2)? as u64,
                    ready: r.try_get::<i64, _>(3)? as u64,
                },
            );
        }
        Ok(out)
    }

    async fn purge_finished(&self, before_ms: i64) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM jobs WHERE finished_at < ?
                 AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.job_id = jobs.id))",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        // A generation's own job stays as long as the generation: it holds its state.
        let n = sqlx::query(
            "DELETE FROM jobs WHERE finished_at < ? AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.job_id = jobs.id)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    async fn next_run_at(&self, queue: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MIN(CASE WHEN state = 'queued' THEN run_at ELSE lease_until END) FROM jobs
             WHERE queue = ? AND state IN ('queued', 'running')",
        )
        .bind(queue)
        .fetch_one(&self.reader)
        .await?)
    }
}

const GENERATION_SELECT: &str = "SELECT g.*, j.state AS state, j.attempts AS attempts, j.max_attempts AS max_attempts,
    j.last_error AS last_error, j.started_at AS started_at, j.finished_at AS finished_at
    FROM generations g CROSS JOIN jobs j ON j.id = g.job_id";

fn generation_record(r: &SqliteRow) -> Result<GenerationRecord> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    let state: String = r.try_get("state")?;
    let spec: String = r.try_get("spec")?;
    let metadata: String = r.try_get("metadata")?;
    let result: Option<String> = r.try_get("result")?;
    Ok(GenerationRecord {
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        spec: serde_json::from_str(&spec).map_err(corrupt)?,
        spec_hash: r.try_get("spec_hash")?,
        priority: r.try_get::<i64, _>("priority")? as i32,
        webhook_url: r.try_get("webhook_url")?,
        idempotency_key: r.try_get("idempotency_key")?,
        api_key_id: r.try_get("api_key_id")?,
        metadata: serde_json::from_str(&metadata).map_err(corrupt)?,
        state: JobState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("job state {state}")))?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        max_attempts: r.try_get::<i64, _>("max_attempts")? as u32,
        progress: r.try_get("progress")?,
        stage: r.try_get("stage")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        last_error: r.try_get("last_error")?,
        result: result.map(|s| serde_json::from_str(&s)).transpose().map_err(corrupt)?,
        created_at_ms: r.try_get("created_at")?,
        started_at_ms: r.try_get("started_at")?,
        finished_at_ms: r.try_get("finished_at")?,
    })
}

#[async_trait]
impl Metadata for SqliteStore {
    async fn create_generation(&self, g: NewGeneration, job: NewJob) -> Result<CreateOutcome> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.creates
            .send(CreateRequest { g, job, reply })
            .map_err(|_| StoreError::Corrupt("the store is closed".into()))?;
        rx.await.map_err(|_| StoreError::Corrupt("the store is closed".into()))?
    }

    async fn generation(&self, id: &str) -> Result<Option<GenerationRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{GENERATION_SELECT} WHERE g.id = ?")))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(generation_record).transpose()
    }

    async fn list_generations(&self, f: &ListFilter) -> Result<Vec<GenerationRecord>> {
        // The key filter is written out only when given, so the planner can walk (api_key_id, id).
        let key_filter = if f.api_key_id.is_some() { "g.api_key_id = ?4" } else { "?4 IS NULL" };
        let sql = format!(
            "{GENERATION_SELECT} WHERE (?1 IS NULL OR j.state = ?1) AND (?2 IS NULL OR g.created_at >= ?2)
             AND (?3 IS NULL OR g.created_at < ?3) AND {key_filter} AND (?5 IS NULL OR g.id < ?5)
             ORDER BY g.id DESC LIMIT ?6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(f.state.map(JobState::as_str))
            .bind(f.created_after_ms)
            .bind(f.created_before_ms)
            .bind(&f.api_key_id)
            .bind(&f.cursor)
            .bind(f.limit.clamp(1, 1000) as i64)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(generation_record).collect()
    }

    async fn set_progress(&self, id: &str, progress: f64, stage: &str) -> Result<()> {
        crate::sql::set_progress(&self.writer, id, progress, stage).await
    }

    async fn set_result(&self, id: &str, r: &GenerationResult) -> Result<()> {
        crate::sql::set_result(&self.writer, id, r).await
    }

    async fn set_error(&self, id: &str, code: &str, message: &str) -> Result<()> {
        crate::sql::set_error(&self.writer, id, code, message).await
    }

    async fn delete_generation(&self, id: &str) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM job_attempts WHERE job_id IN (SELECT job_id FROM generations WHERE id = ?1)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Its webhook events stay deliverable: only the render job goes with it.
        sqlx::query("DELETE FROM jobs WHERE id IN (SELECT job_id FROM generations WHERE id = ?)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM generations WHERE id = ?").bind(id).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn active_generations(&self, api_key_id: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM generations g CROSS JOIN jobs j ON j.id = g.job_id
             WHERE g.api_key_id = ? AND j.state IN ('queued', 'running')",
        )
        .bind(api_key_id)
        .fetch_one(&self.reader)
        .await?;
        Ok(n as u64)
    }

    async fn finished_after(&self, after: (i64, &str), limit: u32) -> Result<Vec<FinishedGeneration>> {
        let rows = sqlx::query(
            "SELECT g.id, g.api_key_id, j.state, g.created_at, j.started_at, j.finished_at, g.result FROM jobs j
             CROSS JOIN generations g ON g.job_id = j.id
             WHERE j.finished_at >= ?1 AND (j.finished_at > ?1 OR g.id > ?2)
             ORDER BY j.finished_at, g.id LIMIT ?3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
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
                    state: JobState::parse(&r.try_get::<String, _>("state")?)
                        .ok_or_else(|| StoreError::Corrupt("job state".into()))?,
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
            "SELECT g.id FROM jobs j CROSS JOIN generations g ON g.job_id = j.id
             WHERE j.finished_at IS NOT NULL AND j.finished_at < ? ORDER BY j.finished_at LIMIT ?",
        )
        .bind(before_ms)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn create_api_key(&self, key: &ApiKey, token_hash: &str) -> Result<()> {
        crate::sql::create_api_key(&self.writer, key, token_hash).await
    }

    async fn api_key_by_hash(&self, token_hash: &str) -> Result<Option<ApiKey>> {
        Ok(crate::sql::api_keys(&self.reader, crate::sql::KeyLookup::Hash(token_hash)).await?.pop())
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        crate::sql::api_keys(&self.reader, crate::sql::KeyLookup::All).await
    }

    async fn revoke_api_key(&self, id: &str) -> Result<bool> {
        crate::sql::revoke_api_key(&self.writer, id).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(crate::sql::api_keys(&self.reader, crate::sql::KeyLookup::Id(id)).await?.pop())
    }

    async fn set_webhook_secret(&self, id: &str, secret: &str) -> Result<bool> {
        crate::sql::set_webhook_secret(&self.writer, id, secret).await
    }

    async fn usage(&self, api_key_id: &str, day: i64) -> Result<Usage> {
        crate::sql::usage_on::<sqlx::Sqlite>(&mut *self.reader.acquire().await?, api_key_id, day).await
    }

    async fn put_asset(&self, a: &Asset) -> Result<()> {
        sqlx::query(
            "INSERT INTO assets (id, sha256, media_type, bytes, width, height, file_name, api_key_id, created_at, last_used_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT (id) DO UPDATE SET last_used_at = MAX(last_used_at, excluded.last_used_at)",
        )
        .bind(&a.id)
        .bind(&a.sha256)
        .bind(&a.media_type)
        .bind(a.bytes as i64)
        .bind(a.width.map(|w| w as i64))
        .bind(a.height.map(|h| h as i64))
        .bind(&a.file_name)
        .bind(&a.api_key_id)
        .bind(a.created_at_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn asset(&self, id: &str) -> Result<Option<Asset>> {
        let row = sqlx::query("SELECT * FROM assets WHERE id = ?").bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(asset_row).transpose()
    }

    async fn delete_asset(&self, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM assets WHERE id = ?").bind(id).execute(&self.writer).await?.rows_affected();
        Ok(n > 0)
    }

    async fn asset_usage(&self, api_key_id: Option<&str>) -> Result<(u64, u64)> {
        let (n, bytes): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM assets WHERE api_key_id IS ?")
                .bind(api_key_id)
                .fetch_one(&self.reader)
                .await?;
        Ok((n as u64, bytes as u64))
    }

    async fn touch_assets(&self, ids: &[String], at_ms: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        for id in ids {
            sqlx::query("UPDATE assets SET last_used_at = MAX(last_used_at, ?) WHERE id = ?")
                .bind(at_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn stale_assets(&self, before_ms: i64, limit: u32) -> Result<Vec<Asset>> {
        let rows = sqlx::query("SELECT * FROM assets WHERE last_used_at < ? ORDER BY last_used_at LIMIT ?")
            .bind(before_ms)
            .bind(limit as i64)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(asset_row).collect()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(&dir.join("db.sqlite"), Durability::Normal).await.unwrap()
    }

    #[tokio::test]
    async fn queue_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        crate::conformance::run_queue_suite(&s).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claimers_take_each_job_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(open(dir.path()).await);
        crate::conformance::run_concurrent_claims(s, 200, 8).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_identical_submissions_create_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(open(dir.path()).await);
        crate::conformance::run_concurrent_dedup(s, 100).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_submissions_respect_the_quota_and_idempotency() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(open(dir.path()).await);
        crate::conformance::run_concurrent_quota(s.clone(), 40, 3).await;
        crate::conformance::run_concurrent_budget(s.clone(), 40, 7).await;
        crate::conformance::run_concurrent_idempotency(s, 40).await;
    }

    #[tokio::test]
    async fn metadata_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        crate::conformance::run_metadata_suite(&s, &s).await;
    }

    #[tokio::test]
    async fn jobs_survive_reopening_and_migrations_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let job = NewJob::new("render", "render", serde_json::json!({"n": 1}));
        let id = job.id.clone();
        assert!(s.enqueue(job).await.unwrap());
        s.close().await;
        let s = open(dir.path()).await;
        let j = s.job(&id).await.unwrap().unwrap();
        assert_eq!((j.state, j.payload), (JobState::Queued, serde_json::json!({"n": 1})));
    }
}
