//! Templates and batches on PostgreSQL (the statements are shared, in `crate::sql`).

use super::queue::{ENQUEUE, bind_jobs};
use super::*;

#[async_trait]
impl BatchStore for PgStore {
    async fn put_template(&self, t: &TemplateRecord) -> Result<()> {
        Shared::put_template(&self.pool, t).await
    }

    async fn template(&self, id: &str) -> Result<Option<TemplateRecord>> {
        Shared::template(&self.pool, id).await
    }

    async fn templates_of(
        &self,
        api_key_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TemplateRecord>> {
        Shared::templates_of(&self.pool, api_key_id, cursor, limit).await
    }

    async fn delete_template(&self, id: &str) -> Result<bool> {
        Shared::delete_template(&self.pool, id).await
    }

    async fn create_batch(&self, b: &BatchRecord, rows: &[NewBatchRow], pump: NewJob) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Shared::insert_batch(&mut tx, b).await?;
        sqlx::query(
            "INSERT INTO batch_rows (batch_id, idx, merge, status, error)
             SELECT $1, (x->>'i')::BIGINT, x->>'m', x->>'s', x->>'e' FROM jsonb_array_elements($2::jsonb) x",
        )
        .bind(&b.id)
        .bind(Shared::rows_json(rows))
        .execute(&mut *tx)
        .await?;
        bind_jobs(ENQUEUE, std::slice::from_ref(&pump), now_ms(), &self.shared.channel).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>> {
        Shared::batch(&self.pool, id).await
    }

    async fn batches_of(&self, api_key_id: Option<&str>, cursor: Option<&str>, limit: u32) -> Result<Vec<BatchRecord>> {
        Shared::batches_of(&self.pool, api_key_id, cursor, limit).await
    }

    async fn batch_rows(
        &self,
        id: &str,
        status: Option<RowStatus>,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<BatchRow>> {
        Shared::batch_rows(&self.pool, id, status, after, limit).await
    }

    async fn move_batch_row(
        &self,
        id: &str,
        index: u32,
        from: RowStatus,
        to: RowStatus,
        generation_id: Option<&str>,
        error: Option<&serde_json::Value>,
    ) -> Result<bool> {
        Shared::move_batch_row(&self.pool, id, index, (from, to), generation_id, error).await
    }

    async fn batch_counts(&self, id: &str) -> Result<BTreeMap<String, u64>> {
        Shared::batch_counts(&self.pool, id).await
    }

    async fn key_batch_active(&self, api_key_id: Option<&str>) -> Result<u64> {
        Shared::key_batch_active(&self.pool, api_key_id).await
    }

    async fn purge_batches(&self, before_ms: i64, limit: u32) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let n = Shared::purge_batches(&mut tx, before_ms, limit).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn finish_batch(&self, id: &str, state: BatchState, at_ms: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = Shared::finish_batch(&mut tx, id, state, at_ms).await?;
        tx.commit().await?;
        Ok(done)
    }
}
