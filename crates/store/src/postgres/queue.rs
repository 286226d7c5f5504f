//! The job queue on PostgreSQL: each call one statement (or a locked read-then-write).

use super::*;

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

pub(super) const ENQUEUE: &str = concat!(
    "WITH ",
    new_jobs_cte!("true"),
    " SELECT (SELECT count(*) FROM new_jobs) AS inserted, ",
    notify_new_jobs!(),
    " AS notified"
);

/// Completes ($19 = 'succeeded') or ends a cancelled job ($19 = 'cancelled') if the lease
/// ($16 job, $17 owner, $18 attempt) still holds, enqueueing the follow-ups only then.
pub(super) const FINISH: &str = concat!(
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
pub(super) const FINISH_ALONE: &str = "WITH done AS (
    UPDATE jobs SET state = $4, finished_at = $5, lease_owner = NULL, lease_until = NULL
    WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3
    RETURNING id
), closed AS (
    UPDATE job_attempts SET finished_at = $5, outcome = $4, error = NULL
    WHERE job_id IN (SELECT id FROM done) AND attempt = $3
) SELECT count(*) AS held FROM done";

/// Fails the (locked, held) job $16 with error $17 on attempt $18, enqueueing `on_final`.
pub(super) const FAIL_FINAL: &str = concat!(
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
pub(super) const CANCEL_QUEUED: &str = concat!(
    "WITH upd AS (
    UPDATE jobs SET state = 'cancelled', finished_at = $14, cancel_requested = true WHERE id = $16
), ",
    new_jobs_cte!("true"),
    " SELECT ",
    notify_new_jobs!(),
    " AS notified"
);

/// Stores a generation ($16-$25) with its job (the first of $1-$13).
pub(super) const CREATE_GENERATION: &str = concat!(
    "WITH ",
    new_jobs_cte!("true"),
    ", gen AS (
    INSERT INTO generations (id, job_id, spec, spec_hash, priority, webhook_url, idempotency_key, request_hash,
        api_key_id, metadata, created_at, prompt)
    VALUES ($16, $1[1], $17, $18, $19, $20, $21, $22, $23, $24, $14, $25)
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
pub(super) const CLAIM: &str = "WITH async_commit AS (
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
pub(super) struct JobColumns {
    pub(super) id: Vec<String>,
    pub(super) queue: Vec<String>,
    pub(super) kind: Vec<String>,
    pub(super) subject: Vec<Option<String>>,
    pub(super) payload: Vec<String>,
    pub(super) priority: Vec<i32>,
    pub(super) max_attempts: Vec<i64>,
    pub(super) backoff_base_ms: Vec<i64>,
    pub(super) backoff_max_ms: Vec<i64>,
    pub(super) jitter: Vec<f64>,
    pub(super) timeout_ms: Vec<i64>,
    pub(super) run_at: Vec<i64>,
    pub(super) dedup_key: Vec<Option<String>>,
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
pub(super) fn bind_jobs<'q>(
    sql: &'static str,
    jobs: &[NewJob],
    now: i64,
    channel: &str,
) -> Query<'q, Postgres, PgArguments> {
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

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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
        let recovered = row.try_get::<i64, _>("lost")? > 0;
        Shared::claimed_job(&row, queue, worker, recovered).map(Some)
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
        let attempts: u32 = Shared::int(&row, "attempts")?;
        let policy = RetryPolicy {
            max_attempts: Shared::int(&row, "max_attempts")?,
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
        Shared::job(&self.pool, job_id).await
    }

    async fn attempts(&self, job_id: &str) -> Result<Vec<Attempt>> {
        Shared::attempts(&self.pool, job_id).await
    }

    async fn jobs_for(&self, subject: &str, kind: &str) -> Result<Vec<JobRecord>> {
        Shared::jobs_for(&self.pool, subject, kind).await
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
            d.queued += Shared::int::<u64>(&r, "queued")?;
            d.running += Shared::int::<u64>(&r, "running")?;
            d.ready += Shared::int::<u64>(&r, "ready")?;
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
