//! The single writer's group commit for submissions, and WAL checkpoints.

use super::queue::insert_job;
use super::*;

/// One submission inside a batch's transaction. A conflict is this request's error only; a
/// database error aborts the batch.
pub(super) async fn create_one(
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
        match Shared::charge_budget(tx, key, b).await {
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
             api_key_id, metadata, created_at, prompt)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(g.prompt.as_ref().map(|p| p.to_string()))
    .execute(&mut *tx)
    .await?;
    Ok(Ok(CreateOutcome::Created(g.id.clone())))
}

pub(super) struct CreateRequest {
    pub(super) g: NewGeneration,
    pub(super) job: NewJob,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<CreateOutcome>>,
}

/// Group commit for submissions: requests that arrive while a transaction runs go into the next
/// one together, so a burst costs one commit instead of one per request. Each request still
/// sees the ones before it (dedup and idempotency hold inside a batch).
pub(super) async fn create_loop(writer: SqlitePool, mut rx: tokio::sync::mpsc::UnboundedReceiver<CreateRequest>) {
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
pub(super) async fn checkpoint_loop(checkpointer: SqlitePool, writer: SqlitePool) {
    while !writer.is_closed() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&checkpointer).await {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
    checkpointer.close().await;
}
