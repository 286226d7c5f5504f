//! The job queue on SQLite: claims, leases, attempts, follow-ups.

use super::*;

pub(super) async fn insert_job(conn: &mut sqlx::SqliteConnection, j: &NewJob) -> Result<bool> {
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

pub(super) async fn insert_jobs(conn: &mut sqlx::SqliteConnection, jobs: &[NewJob]) -> Result<()> {
    for j in jobs {
        insert_job(conn, j).await?;
    }
    Ok(())
}

/// Ends the attempt row of a lease.
pub(super) async fn close_attempt(
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
pub(super) async fn holds(conn: &mut sqlx::SqliteConnection, lease: &Lease) -> Result<Option<SqliteRow>> {
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
        let attempt: u32 = Shared::int(&row, "attempts")?;
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
        Shared::claimed_job(&row, queue, worker, lost > 0).map(Some)
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
        Shared::job(&self.reader, job_id).await
    }

    async fn attempts(&self, job_id: &str) -> Result<Vec<Attempt>> {
        Shared::attempts(&self.reader, job_id).await
    }

    async fn jobs_for(&self, subject: &str, kind: &str) -> Result<Vec<JobRecord>> {
        Shared::jobs_for(&self.reader, subject, kind).await
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
