//! Generations, keys and assets on PostgreSQL (statements both dialects share are in `crate::sql`).

use super::queue::{CREATE_GENERATION, bind_jobs, int, json, opt_int, state};
use super::store::{LOCK_IDEMPOTENCY, LOCK_QUOTA, LOCK_SPEC};
use super::*;

pub(super) fn asset_row(r: &sqlx::postgres::PgRow) -> Result<Asset> {
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

pub(super) const GENERATION_SELECT: &str =
    "SELECT g.*, j.state AS state, j.attempts AS attempts, j.max_attempts AS max_attempts,
    j.last_error AS last_error, j.started_at AS started_at, j.finished_at AS finished_at
    FROM generations g JOIN jobs j ON j.id = g.job_id";

pub(super) fn generation_record(r: &PgRow) -> Result<GenerationRecord> {
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

pub(super) async fn advisory_lock(tx: &mut sqlx::PgConnection, class: i32, key: &str) -> Result<()> {
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
