//! Generations, keys and assets on SQLite (statements both dialects share are in `crate::sql`).

use super::writer::CreateRequest;
use super::*;

pub(super) fn asset_row(r: &sqlx::sqlite::SqliteRow) -> Result<Asset> {
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

pub(super) const GENERATION_SELECT: &str =
    "SELECT g.*, j.state AS state, j.attempts AS attempts, j.max_attempts AS max_attempts,
    j.last_error AS last_error, j.started_at AS started_at, j.finished_at AS finished_at
    FROM generations g CROSS JOIN jobs j ON j.id = g.job_id";

pub(super) fn generation_record(r: &SqliteRow) -> Result<GenerationRecord> {
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
