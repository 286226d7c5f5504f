//! Generations, keys and assets on PostgreSQL (statements both dialects share are in `crate::sql`).

use super::queue::{CREATE_GENERATION, bind_jobs};
use super::store::{LOCK_IDEMPOTENCY, LOCK_QUOTA, LOCK_SPEC};
use super::*;

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
            && let Some(used) = Shared::charge_budget(&mut tx, key, b).await?
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
            .bind(g.prompt.as_ref().map(|p| p.to_string()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(CreateOutcome::Created(g.id))
    }

    async fn generation(&self, id: &str) -> Result<Option<GenerationRecord>> {
        Shared::generation(&self.pool, id).await
    }

    async fn list_generations(&self, f: &ListFilter) -> Result<Vec<GenerationRecord>> {
        // The key filter is written out only when given, so the planner can walk (api_key_id, id).
        let key_filter = if f.api_key_id.is_some() { "g.api_key_id = $4" } else { "$4::text IS NULL" };
        let select = Shared::generation_select();
        let sql = format!(
            "{select} WHERE ($1::text IS NULL OR j.state = $1) AND ($2::int8 IS NULL OR g.created_at >= $2)
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
        rows.iter().map(Shared::generation_record).collect()
    }

    async fn set_progress(&self, id: &str, progress: f64, stage: &str) -> Result<()> {
        Shared::set_progress(&self.pool, id, progress, stage).await
    }

    async fn set_result(&self, id: &str, r: &GenerationResult) -> Result<()> {
        Shared::set_result(&self.pool, id, r).await
    }

    async fn set_error(&self, id: &str, code: &str, message: &str) -> Result<()> {
        Shared::set_error(&self.pool, id, code, message).await
    }

    async fn set_plan(&self, id: &str, spec: &serde_json::Value, prompt: &serde_json::Value) -> Result<()> {
        Shared::set_plan(&self.pool, id, spec, prompt).await
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
        Shared::active_generations(&self.pool, api_key_id).await
    }

    async fn finished_after(&self, after: (i64, &str), limit: u32) -> Result<Vec<FinishedGeneration>> {
        Shared::finished_after(&self.pool, after, limit).await
    }

    async fn expired_generations(&self, before_ms: i64, limit: u32) -> Result<Vec<String>> {
        Shared::expired_generations(&self.pool, before_ms, limit).await
    }

    async fn create_api_key(&self, key: &ApiKey, token_hash: &str) -> Result<()> {
        Shared::create_api_key(&self.pool, key, token_hash).await
    }

    async fn api_key_by_hash(&self, token_hash: &str) -> Result<Option<ApiKey>> {
        Ok(Shared::api_keys(&self.pool, crate::sql::KeyLookup::Hash(token_hash)).await?.pop())
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        Shared::api_keys(&self.pool, crate::sql::KeyLookup::All).await
    }

    async fn revoke_api_key(&self, id: &str) -> Result<bool> {
        Shared::revoke_api_key(&self.pool, id).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(Shared::api_keys(&self.pool, crate::sql::KeyLookup::Id(id)).await?.pop())
    }

    async fn set_webhook_secret(&self, id: &str, secret: &str) -> Result<bool> {
        Shared::set_webhook_secret(&self.pool, id, secret).await
    }

    async fn usage(&self, api_key_id: &str, day: i64) -> Result<Usage> {
        Shared::usage_on(&mut *self.pool.acquire().await?, api_key_id, day).await
    }

    async fn add_provider_spend(&self, api_key_id: &str, day: i64, usd: f64) -> Result<()> {
        Shared::add_provider_spend(&self.pool, api_key_id, day, usd).await
    }

    async fn provider_spend(&self, api_key_id: &str, day: i64) -> Result<f64> {
        Shared::provider_spend(&self.pool, api_key_id, day).await
    }

    async fn add_provider_day_spend(&self, provider: &str, day: i64, usd: f64) -> Result<()> {
        Shared::add_provider_day_spend(&self.pool, provider, day, usd).await
    }

    async fn provider_day_spend(&self, provider: &str, day: i64) -> Result<f64> {
        Shared::provider_day_spend(&self.pool, provider, day).await
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
        Shared::asset(&self.pool, id).await
    }

    async fn delete_asset(&self, id: &str) -> Result<bool> {
        Shared::delete_asset(&self.pool, id).await
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

    async fn assets_of(&self, api_key_id: Option<&str>, limit: u32) -> Result<Vec<Asset>> {
        Shared::assets_of(&self.pool, api_key_id, limit).await
    }

    async fn stale_assets(&self, before_ms: i64, limit: u32) -> Result<Vec<Asset>> {
        Shared::stale_assets(&self.pool, before_ms, limit).await
    }

    async fn ping(&self) -> Result<()> {
        Shared::ping(&self.pool).await
    }
}

// ---------------------------------------------------------------------------------------------
