//! Generations, keys and assets on SQLite (statements both dialects share are in `crate::sql`).

use super::writer::CreateRequest;
use super::*;

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
        Shared::generation(&self.reader, id).await
    }

    async fn list_generations(&self, f: &ListFilter) -> Result<Vec<GenerationRecord>> {
        // The key filter is written out only when given, so the planner can walk (api_key_id, id).
        let key_filter = if f.api_key_id.is_some() { "g.api_key_id = ?4" } else { "?4 IS NULL" };
        let select = Shared::generation_select();
        let sql = format!(
            "{select} WHERE (?1 IS NULL OR j.state = ?1) AND (?2 IS NULL OR g.created_at >= ?2)
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
        rows.iter().map(Shared::generation_record).collect()
    }

    async fn set_progress(&self, id: &str, progress: f64, stage: &str) -> Result<()> {
        Shared::set_progress(&self.writer, id, progress, stage).await
    }

    async fn set_result(&self, id: &str, r: &GenerationResult) -> Result<()> {
        Shared::set_result(&self.writer, id, r).await
    }

    async fn set_error(&self, id: &str, code: &str, message: &str) -> Result<()> {
        Shared::set_error(&self.writer, id, code, message).await
    }

    async fn set_plan(&self, id: &str, spec: &serde_json::Value, prompt: &serde_json::Value) -> Result<()> {
        Shared::set_plan(&self.writer, id, spec, prompt).await
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
        Shared::active_generations(&self.reader, api_key_id).await
    }

    async fn finished_after(&self, after: (i64, &str), limit: u32) -> Result<Vec<FinishedGeneration>> {
        Shared::finished_after(&self.reader, after, limit).await
    }

    async fn expired_generations(&self, before_ms: i64, limit: u32) -> Result<Vec<String>> {
        Shared::expired_generations(&self.reader, before_ms, limit).await
    }

    async fn create_api_key(&self, key: &ApiKey, token_hash: &str) -> Result<()> {
        Shared::create_api_key(&self.writer, key, token_hash).await
    }

    async fn api_key_by_hash(&self, token_hash: &str) -> Result<Option<ApiKey>> {
        Ok(Shared::api_keys(&self.reader, crate::sql::KeyLookup::Hash(token_hash)).await?.pop())
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        Shared::api_keys(&self.reader, crate::sql::KeyLookup::All).await
    }

    async fn revoke_api_key(&self, id: &str) -> Result<bool> {
        Shared::revoke_api_key(&self.writer, id).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(Shared::api_keys(&self.reader, crate::sql::KeyLookup::Id(id)).await?.pop())
    }

    async fn set_webhook_secret(&self, id: &str, secret: &str) -> Result<bool> {
        Shared::set_webhook_secret(&self.writer, id, secret).await
    }

    async fn usage(&self, api_key_id: &str, day: i64) -> Result<Usage> {
        Shared::usage_on(&mut *self.reader.acquire().await?, api_key_id, day).await
    }

    async fn add_provider_spend(&self, api_key_id: &str, day: i64, usd: f64) -> Result<()> {
        Shared::add_provider_spend(&self.writer, api_key_id, day, usd).await
    }

    async fn provider_spend(&self, api_key_id: &str, day: i64) -> Result<f64> {
        Shared::provider_spend(&self.reader, api_key_id, day).await
    }

    async fn add_provider_day_spend(&self, provider: &str, day: i64, usd: f64) -> Result<()> {
        Shared::add_provider_day_spend(&self.writer, provider, day, usd).await
    }

    async fn provider_day_spend(&self, provider: &str, day: i64) -> Result<f64> {
        Shared::provider_day_spend(&self.reader, provider, day).await
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
        Shared::asset(&self.reader, id).await
    }

    async fn delete_asset(&self, id: &str) -> Result<bool> {
        Shared::delete_asset(&self.writer, id).await
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

    async fn assets_of(&self, api_key_id: Option<&str>, limit: u32) -> Result<Vec<Asset>> {
        Shared::assets_of(&self.reader, api_key_id, limit).await
    }

    async fn stale_assets(&self, before_ms: i64, limit: u32) -> Result<Vec<Asset>> {
        Shared::stale_assets(&self.reader, before_ms, limit).await
    }

    async fn ping(&self) -> Result<()> {
        Shared::ping(&self.reader).await
    }
}
