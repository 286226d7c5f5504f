//! Code both SQL dialects share: statements with one text (`$n` placeholders, numbered in order
//! of first appearance, which SQLite reads the same way), and the decoding of every record both
//! read, written once and generic over the driver. What the dialects write differently stays
//! with each: submissions, generation listing and deletion, asset upserts and counts, and the
//! job queue's writes.

use std::marker::PhantomData;
use std::time::Duration;

use sqlx::{AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use std::collections::BTreeMap;

use crate::{
    ApiKey, Asset, Attempt, BatchRecord, BatchRow, BatchState, Budget, ClaimedJob, FinishedGeneration,
    GenerationRecord, GenerationResult, JobRecord, JobState, Lease, NewBatchRow, Result, RowStatus, StoreError,
    TemplateRecord, Usage, corrupt_json,
};

/// What the shared statements write differently per dialect.
pub(crate) trait Dialect: Database<QueryResult: Affected> {
    /// Joins `generations` and `jobs`. SQLite's planner keeps a CROSS JOIN's tables in the order
    /// written, so each statement puts first the table its index narrows (left to itself, it may
    /// walk the other); PostgreSQL's planner orders joins well by itself.
    const JOIN: &'static str;
    /// Equality that holds between two NULLs (the keyless caller's rows).
    const SAME: &'static str;
}

impl Dialect for sqlx::Sqlite {
    const JOIN: &'static str = "CROSS JOIN";
    const SAME: &'static str = "IS";
}

impl Dialect for sqlx::Postgres {
    const JOIN: &'static str = "JOIN";
    const SAME: &'static str = "IS NOT DISTINCT FROM";
}

/// Rows a statement changed (each driver's result has its own method).
pub(crate) trait Affected {
    fn affected(&self) -> u64;
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// Keys by token hash, by id, or all of them (oldest first).
pub(crate) enum KeyLookup<'a> {
    Hash(&'a str),
    Id(&'a str),
    All,
}

/// The shared code for driver `DB`; each backend names it for its own driver. Its functions
/// hang off one type so that what they need of the driver is said once, in this impl's bounds.
pub(crate) struct Shared<DB>(PhantomData<DB>);

impl<DB> Shared<DB>
where
    DB: Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    // Columns -----------------------------------------------------------------------------------

    /// An integer column as the record's type; out of range is a corrupt record.
    pub(crate) fn int<T: TryFrom<i64>>(r: &DB::Row, col: &str) -> Result<T> {
        let v: i64 = r.try_get(col)?;
        T::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} out of range: {v}")))
    }

    /// A nullable integer column as the record's type; out of range is a corrupt record.
    fn opt_int<T: TryFrom<i64>>(r: &DB::Row, col: &str) -> Result<Option<T>> {
        let v: Option<i64> = r.try_get(col)?;
        v.map(|v| T::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} out of range: {v}")))).transpose()
    }

    /// A JSON column (TEXT in both dialects).
    fn json(r: &DB::Row, col: &str) -> Result<serde_json::Value> {
        let s: String = r.try_get(col)?;
        serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
    }

    fn job_state(r: &DB::Row, col: &str) -> Result<JobState> {
        let s: String = r.try_get(col)?;
        JobState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("job state {s}")))
    }

    // Generations -------------------------------------------------------------------------------

    /// A generation with its job's state and timing, for statements to add their WHERE to.
    pub(crate) fn generation_select() -> String {
        format!(
            "SELECT g.*, j.state AS state, j.attempts AS attempts, j.max_attempts AS max_attempts,
    j.last_error AS last_error, j.started_at AS started_at, j.finished_at AS finished_at
    FROM generations g {} jobs j ON j.id = g.job_id",
            DB::JOIN
        )
    }

    /// A row of [`Self::generation_select`].
    pub(crate) fn generation_record(r: &DB::Row) -> Result<GenerationRecord> {
        let result: Option<String> = r.try_get("result")?;
        Ok(GenerationRecord {
            id: r.try_get("id")?,
            job_id: r.try_get("job_id")?,
            spec: Self::json(r, "spec")?,
            spec_hash: r.try_get("spec_hash")?,
            priority: r.try_get("priority")?,
            webhook_url: r.try_get("webhook_url")?,
            idempotency_key: r.try_get("idempotency_key")?,
            api_key_id: r.try_get("api_key_id")?,
            metadata: Self::json(r, "metadata")?,
            prompt: r
                .try_get::<Option<String>, _>("prompt")?
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(corrupt_json)?,
            state: Self::job_state(r, "state")?,
            attempts: Self::int(r, "attempts")?,
            max_attempts: Self::int(r, "max_attempts")?,
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

    pub(crate) async fn generation<'e, E>(e: E, id: &str) -> Result<Option<GenerationRecord>>
    where
        E: Executor<'e, Database = DB>,
    {
        let sql = format!("{} WHERE g.id = $1", Self::generation_select());
        let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(e).await?;
        row.as_ref().map(Self::generation_record).transpose()
    }

    pub(crate) async fn set_progress<'e, E>(e: E, id: &str, progress: f64, stage: &str) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        sqlx::query("UPDATE generations SET progress = $1, stage = $2 WHERE id = $3")
            .bind(progress)
            .bind(stage)
            .bind(id)
            .execute(e)
            .await?;
        Ok(())
    }

    pub(crate) async fn set_result<'e, E>(e: E, id: &str, r: &GenerationResult) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        let json = serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "UPDATE generations SET result = $1, progress = 1, stage = 'done', error_code = NULL, error_message = NULL
             WHERE id = $2",
        )
        .bind(json)
        .bind(id)
        .execute(e)
        .await?;
        Ok(())
    }

    pub(crate) async fn set_error<'e, E>(e: E, id: &str, code: &str, message: &str) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        sqlx::query("UPDATE generations SET error_code = $1, error_message = $2 WHERE id = $3")
            .bind(code)
            .bind(message)
            .bind(id)
            .execute(e)
            .await?;
        Ok(())
    }

    pub(crate) async fn set_plan<'e, E>(
        e: E,
        id: &str,
        spec: &serde_json::Value,
        prompt: &serde_json::Value,
    ) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        sqlx::query("UPDATE generations SET spec = $1, prompt = $2 WHERE id = $3")
            .bind(spec.to_string())
            .bind(prompt.to_string())
            .bind(id)
            .execute(e)
            .await?;
        Ok(())
    }

    /// The key's generations queued or running.
    pub(crate) async fn active_generations<'e, E>(e: E, api_key_id: &str) -> Result<u64>
    where
        E: Executor<'e, Database = DB>,
    {
        let sql = format!(
            "SELECT count(*) FROM generations g {} jobs j ON j.id = g.job_id
             WHERE g.api_key_id = $1 AND j.state IN ('queued', 'running')",
            DB::JOIN
        );
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql)).bind(api_key_id).fetch_one(e).await?;
        Ok(n.max(0) as u64)
    }

    /// A row of [`Self::finished_after`]. Its report is best effort: a result that does not
    /// parse has none.
    fn finished_generation(r: &DB::Row) -> Result<FinishedGeneration> {
        let result: Option<String> = r.try_get("result")?;
        let report = result
            .and_then(|s| serde_json::from_str::<GenerationResult>(&s).ok())
            .map(|res| res.report)
            .filter(|v| !v.is_null());
        Ok(FinishedGeneration {
            id: r.try_get("id")?,
            api_key_id: r.try_get("api_key_id")?,
            state: Self::job_state(r, "state")?,
            created_at_ms: r.try_get("created_at")?,
            started_at_ms: r.try_get("started_at")?,
            finished_at_ms: r.try_get("finished_at")?,
            report,
        })
    }

    /// Generations finished after `after` (finish time, then id), oldest first.
    pub(crate) async fn finished_after<'e, E>(e: E, after: (i64, &str), limit: u32) -> Result<Vec<FinishedGeneration>>
    where
        E: Executor<'e, Database = DB>,
    {
        let sql = format!(
            "SELECT g.id, g.api_key_id, j.state, g.created_at, j.started_at, j.finished_at, g.result FROM jobs j
             {} generations g ON g.job_id = j.id
             WHERE j.finished_at >= $1 AND (j.finished_at > $1 OR g.id > $2)
             ORDER BY j.finished_at, g.id LIMIT $3",
            DB::JOIN
        );
        let rows =
            sqlx::query(AssertSqlSafe(sql)).bind(after.0).bind(after.1).bind(i64::from(limit)).fetch_all(e).await?;
        rows.iter().map(Self::finished_generation).collect()
    }

    /// Ids of generations finished before `before_ms`, oldest first.
    pub(crate) async fn expired_generations<'e, E>(e: E, before_ms: i64, limit: u32) -> Result<Vec<String>>
    where
        E: Executor<'e, Database = DB>,
    {
        let sql = format!(
            "SELECT g.id FROM jobs j {} generations g ON g.job_id = j.id
             WHERE j.finished_at IS NOT NULL AND j.finished_at < $1 ORDER BY j.finished_at LIMIT $2",
            DB::JOIN
        );
        Ok(sqlx::query_scalar(AssertSqlSafe(sql)).bind(before_ms).bind(i64::from(limit)).fetch_all(e).await?)
    }

    // Keys and budgets --------------------------------------------------------------------------

    /// An `api_keys` row.
    fn api_key(r: &DB::Row) -> Result<ApiKey> {
        Ok(ApiKey {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            rate_per_s: r.try_get("rate_per_s")?,
            burst: Self::int(r, "burst")?,
            max_concurrent_jobs: Self::int(r, "max_concurrent_jobs")?,
            max_priority: Self::int::<u32>(r, "max_priority")?.min(9) as u8,
            webhook_secret: r.try_get("webhook_secret")?,
            limits: serde_json::from_str(&r.try_get::<String, _>("limits")?).map_err(corrupt_json)?,
            created_at_ms: r.try_get("created_at")?,
            revoked_at_ms: r.try_get("revoked_at")?,
        })
    }

    pub(crate) async fn create_api_key<'e, E>(e: E, key: &ApiKey, token_hash: &str) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        sqlx::query(
            "INSERT INTO api_keys (id, name, token_hash, rate_per_s, burst, max_concurrent_jobs, created_at, max_priority,
                 webhook_secret, limits)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(key.id.as_str())
        .bind(key.name.as_str())
        .bind(token_hash)
        .bind(key.rate_per_s)
        .bind(i64::from(key.burst))
        .bind(i64::from(key.max_concurrent_jobs))
        .bind(key.created_at_ms)
        .bind(i64::from(key.max_priority))
        .bind(key.webhook_secret.as_deref())
        .bind(serde_json::to_string(&key.limits).map_err(corrupt_json)?)
        .execute(e)
        .await?;
        Ok(())
    }

    pub(crate) async fn api_keys<'e, E>(e: E, lookup: KeyLookup<'_>) -> Result<Vec<ApiKey>>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = match lookup {
            KeyLookup::Hash(h) => {
                sqlx::query("SELECT * FROM api_keys WHERE token_hash = $1").bind(h).fetch_all(e).await?
            }
            KeyLookup::Id(id) => sqlx::query("SELECT * FROM api_keys WHERE id = $1").bind(id).fetch_all(e).await?,
            KeyLookup::All => sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id").fetch_all(e).await?,
        };
        rows.iter().map(Self::api_key).collect()
    }

    /// Revokes a key now; false when there is no such live key.
    pub(crate) async fn revoke_api_key<'e, E>(e: E, id: &str) -> Result<bool>
    where
        E: Executor<'e, Database = DB>,
    {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(crate::now_ms())
            .bind(id)
            .execute(e)
            .await?;
        Ok(done.affected() > 0)
    }

    /// Replaces a key's webhook secret; false when there is no such key.
    pub(crate) async fn set_webhook_secret<'e, E>(e: E, id: &str, secret: &str) -> Result<bool>
    where
        E: Executor<'e, Database = DB>,
    {
        let done = sqlx::query("UPDATE api_keys SET webhook_secret = $1 WHERE id = $2")
            .bind(secret)
            .bind(id)
            .execute(e)
            .await?;
        Ok(done.affected() > 0)
    }

    /// Adds a budget's charge to the key's usage for its day unless that passes the cap: one
    /// statement, so concurrent submissions of a key cannot both pass. Some(usage before) when
    /// refused.
    pub(crate) async fn charge_budget(
        conn: &mut DB::Connection,
        api_key_id: &str,
        b: &Budget,
    ) -> Result<Option<Usage>> {
        let over = b.charge.megapixel_frames > b.cap.megapixel_frames || b.charge.did_scenes > b.cap.did_scenes;
        if !over {
            let row = sqlx::query::<DB>(
                "INSERT INTO key_usage (api_key_id, day, megapixel_frames, did_scenes) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (api_key_id, day) DO UPDATE SET
                     megapixel_frames = key_usage.megapixel_frames + excluded.megapixel_frames,
                     did_scenes = key_usage.did_scenes + excluded.did_scenes
                 WHERE key_usage.megapixel_frames + excluded.megapixel_frames <= $5
                   AND key_usage.did_scenes + excluded.did_scenes <= $6
                 RETURNING megapixel_frames",
            )
            .bind(api_key_id)
            .bind(b.day)
            .bind(b.charge.megapixel_frames)
            .bind(b.charge.did_scenes.min(i64::MAX as u64) as i64)
            .bind(b.cap.megapixel_frames)
            .bind(b.cap.did_scenes.min(i64::MAX as u64) as i64)
            .fetch_optional(&mut *conn)
            .await?;
            if row.is_some() {
                return Ok(None);
            }
        }
        Ok(Some(Self::usage_on(conn, api_key_id, b.day).await?))
    }

    /// Adds what a key's prompt spent on providers to its usage for `day`.
    pub(crate) async fn add_provider_spend<'e, E>(e: E, api_key_id: &str, day: i64, usd: f64) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        sqlx::query(
            "INSERT INTO key_usage (api_key_id, day, megapixel_frames, did_scenes, provider_usd) VALUES ($1, $2, 0, 0, $3)
             ON CONFLICT (api_key_id, day) DO UPDATE SET provider_usd = key_usage.provider_usd + excluded.provider_usd",
        )
        .bind(api_key_id)
        .bind(day)
        .bind(usd.max(0.0))
        .execute(e)
        .await?;
        Ok(())
    }

    /// Adds what was spent on one provider (by any key) to its `day`.
    pub(crate) async fn add_provider_day_spend<'e, E>(e: E, provider: &str, day: i64, usd: f64) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        sqlx::query(
            "INSERT INTO provider_usage (provider, day, usd) VALUES ($1, $2, $3)
             ON CONFLICT (provider, day) DO UPDATE SET usd = provider_usage.usd + excluded.usd",
        )
        .bind(provider)
        .bind(day)
        .bind(usd.max(0.0))
        .execute(e)
        .await?;
        Ok(())
    }

    /// What the server spent on one provider on `day`, in estimated USD.
    pub(crate) async fn provider_day_spend<'e, E>(e: E, provider: &str, day: i64) -> Result<f64>
    where
        E: Executor<'e, Database = DB>,
    {
        let usd: Option<f64> = sqlx::query_scalar("SELECT usd FROM provider_usage WHERE provider = $1 AND day = $2")
            .bind(provider)
            .bind(day)
            .fetch_optional(e)
            .await?;
        Ok(usd.unwrap_or(0.0))
    }

    /// What the key's prompts spent on providers on `day`, in estimated USD.
    pub(crate) async fn provider_spend<'e, E>(e: E, api_key_id: &str, day: i64) -> Result<f64>
    where
        E: Executor<'e, Database = DB>,
    {
        let usd: Option<f64> =
            sqlx::query_scalar("SELECT provider_usd FROM key_usage WHERE api_key_id = $1 AND day = $2")
                .bind(api_key_id)
                .bind(day)
                .fetch_optional(e)
                .await?;
        Ok(usd.unwrap_or(0.0))
    }

    /// What the key submitted on `day`.
    pub(crate) async fn usage_on(conn: &mut DB::Connection, api_key_id: &str, day: i64) -> Result<Usage> {
        let row =
            sqlx::query::<DB>("SELECT megapixel_frames, did_scenes FROM key_usage WHERE api_key_id = $1 AND day = $2")
                .bind(api_key_id)
                .bind(day)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(match row {
            Some(r) => Usage { megapixel_frames: r.try_get(0)?, did_scenes: r.try_get::<i64, _>(1)?.max(0) as u64 },
            None => Usage::default(),
        })
    }

    // Assets ------------------------------------------------------------------------------------

    /// An `assets` row.
    fn asset_row(r: &DB::Row) -> Result<Asset> {
        Ok(Asset {
            id: r.try_get("id")?,
            sha256: r.try_get("sha256")?,
            media_type: r.try_get("media_type")?,
            bytes: Self::int(r, "bytes")?,
            width: Self::opt_int(r, "width")?,
            height: Self::opt_int(r, "height")?,
            file_name: r.try_get("file_name")?,
            api_key_id: r.try_get("api_key_id")?,
            created_at_ms: r.try_get("created_at")?,
        })
    }

    pub(crate) async fn asset<'e, E>(e: E, id: &str) -> Result<Option<Asset>>
    where
        E: Executor<'e, Database = DB>,
    {
        let row = sqlx::query("SELECT * FROM assets WHERE id = $1").bind(id).fetch_optional(e).await?;
        row.as_ref().map(Self::asset_row).transpose()
    }

    /// Forgets an asset; false when there was none.
    pub(crate) async fn delete_asset<'e, E>(e: E, id: &str) -> Result<bool>
    where
        E: Executor<'e, Database = DB>,
    {
        let done = sqlx::query("DELETE FROM assets WHERE id = $1").bind(id).execute(e).await?;
        Ok(done.affected() > 0)
    }

    /// Assets last used before `before_ms`, least recently used first.
    /// A key's assets (None: the keyless caller's), most recently used first.
    pub(crate) async fn assets_of<'e, E>(e: E, api_key_id: Option<&str>, limit: u32) -> Result<Vec<Asset>>
    where
        E: Executor<'e, Database = DB>,
    {
        let sql =
            format!("SELECT * FROM assets WHERE api_key_id {} $1 ORDER BY last_used_at DESC, id LIMIT $2", DB::SAME);
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(api_key_id).bind(i64::from(limit)).fetch_all(e).await?;
        rows.iter().map(Self::asset_row).collect()
    }

    pub(crate) async fn stale_assets<'e, E>(e: E, before_ms: i64, limit: u32) -> Result<Vec<Asset>>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = sqlx::query("SELECT * FROM assets WHERE last_used_at < $1 ORDER BY last_used_at LIMIT $2")
            .bind(before_ms)
            .bind(i64::from(limit))
            .fetch_all(e)
            .await?;
        rows.iter().map(Self::asset_row).collect()
    }

    // Templates and batches ---------------------------------------------------------------------

    /// A `templates` row.
    fn template_row(r: &DB::Row) -> Result<TemplateRecord> {
        Ok(TemplateRecord {
            id: r.try_get("id")?,
            api_key_id: r.try_get("api_key_id")?,
            name: r.try_get("name")?,
            body: Self::json(r, "body")?,
            created_at_ms: r.try_get("created_at")?,
        })
    }

    pub(crate) async fn put_template<'e, E>(e: E, t: &TemplateRecord) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        sqlx::query("INSERT INTO templates (id, api_key_id, name, body, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(t.id.as_str())
            .bind(t.api_key_id.as_deref())
            .bind(t.name.as_str())
            .bind(t.body.to_string())
            .bind(t.created_at_ms)
            .execute(e)
            .await?;
        Ok(())
    }

    pub(crate) async fn template<'e, E>(e: E, id: &str) -> Result<Option<TemplateRecord>>
    where
        E: Executor<'e, Database = DB>,
    {
        let row = sqlx::query("SELECT * FROM templates WHERE id = $1").bind(id).fetch_optional(e).await?;
        row.as_ref().map(Self::template_row).transpose()
    }

    /// A page of one owner's rows of `table` (templates, batches), newest first, older than
    /// `cursor`.
    async fn owned_page<'e, E>(
        e: E,
        table: &'static str,
        api_key_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DB::Row>>
    where
        E: Executor<'e, Database = DB>,
    {
        let sql = format!(
            "SELECT * FROM {table} WHERE api_key_id {} $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            DB::SAME
        );
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(api_key_id)
            .bind(cursor)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(e)
            .await?)
    }

    pub(crate) async fn templates_of<'e, E>(
        e: E,
        api_key_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TemplateRecord>>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = Self::owned_page(e, "templates", api_key_id, cursor, limit).await?;
        rows.iter().map(Self::template_row).collect()
    }

    pub(crate) async fn delete_template<'e, E>(e: E, id: &str) -> Result<bool>
    where
        E: Executor<'e, Database = DB>,
    {
        let done = sqlx::query("DELETE FROM templates WHERE id = $1").bind(id).execute(e).await?;
        Ok(done.affected() > 0)
    }

    /// A `batches` row.
    fn batch_row(r: &DB::Row) -> Result<BatchRecord> {
        let state: String = r.try_get("state")?;
        Ok(BatchRecord {
            id: r.try_get("id")?,
            api_key_id: r.try_get("api_key_id")?,
            template_id: r.try_get("template_id")?,
            template: Self::json(r, "template")?,
            options: Self::json(r, "options")?,
            state: BatchState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("batch state {state}")))?,
            total: Self::int(r, "total")?,
            created_at_ms: r.try_get("created_at")?,
            finished_at_ms: r.try_get("finished_at")?,
        })
    }

    /// The batch itself (its rows and pump are each dialect's to write).
    pub(crate) async fn insert_batch(conn: &mut DB::Connection, b: &BatchRecord) -> Result<()> {
        sqlx::query::<DB>(
            "INSERT INTO batches (id, api_key_id, template_id, template, options, state, total, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(b.id.as_str())
        .bind(b.api_key_id.as_deref())
        .bind(b.template_id.as_deref())
        .bind(b.template.to_string())
        .bind(b.options.to_string())
        .bind(b.state.as_str())
        .bind(i64::from(b.total))
        .bind(b.created_at_ms)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The rows of a new batch as one JSON array (`i`, `m`, `s`, `e`), for each dialect's
    /// set-returning JSON function: one statement however many rows.
    pub(crate) fn rows_json(rows: &[NewBatchRow]) -> String {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::json!({"i": r.index, "m": r.merge, "s": r.status.as_str(), "e": r.error}))
            .collect();
        serde_json::Value::Array(rows).to_string()
    }

    pub(crate) async fn batch<'e, E>(e: E, id: &str) -> Result<Option<BatchRecord>>
    where
        E: Executor<'e, Database = DB>,
    {
        let row = sqlx::query("SELECT * FROM batches WHERE id = $1").bind(id).fetch_optional(e).await?;
        row.as_ref().map(Self::batch_row).transpose()
    }

    pub(crate) async fn batches_of<'e, E>(
        e: E,
        api_key_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BatchRecord>>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = Self::owned_page(e, "batches", api_key_id, cursor, limit).await?;
        rows.iter().map(Self::batch_row).collect()
    }

    /// A `batch_rows` row joined with its generation's job state.
    fn batch_row_of(r: &DB::Row) -> Result<BatchRow> {
        let status: String = r.try_get("status")?;
        let error: Option<String> = r.try_get("error")?;
        let generation_state: Option<String> = r.try_get("generation_state")?;
        Ok(BatchRow {
            index: Self::int(r, "idx")?,
            merge: Self::json(r, "merge")?,
            status: RowStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("row status {status}")))?,
            generation_id: r.try_get("generation_id")?,
            error: error.map(|s| serde_json::from_str(&s)).transpose().map_err(corrupt_json)?,
            generation_state: generation_state.as_deref().and_then(JobState::parse),
        })
    }

    pub(crate) async fn batch_rows<'e, E>(
        e: E,
        id: &str,
        status: Option<RowStatus>,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<BatchRow>>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = sqlx::query(
            "SELECT r.idx, r.merge, r.status, r.generation_id, r.error, j.state AS generation_state
             FROM batch_rows r LEFT JOIN generations g ON g.id = r.generation_id LEFT JOIN jobs j ON j.id = g.job_id
             WHERE r.batch_id = $1 AND ($2 IS NULL OR r.status = $2) AND r.idx > $3
             ORDER BY r.idx LIMIT $4",
        )
        .bind(id)
        .bind(status.map(RowStatus::as_str))
        .bind(after.map_or(-1, i64::from))
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(e)
        .await?;
        rows.iter().map(Self::batch_row_of).collect()
    }

    pub(crate) async fn move_batch_row<'e, E>(
        e: E,
        id: &str,
        index: u32,
        (from, to): (RowStatus, RowStatus),
        generation_id: Option<&str>,
        error: Option<&serde_json::Value>,
    ) -> Result<bool>
    where
        E: Executor<'e, Database = DB>,
    {
        let error = error.map(|v| v.to_string());
        let done = sqlx::query(
            "UPDATE batch_rows SET status = $1, generation_id = COALESCE($2, generation_id), error = $3
             WHERE batch_id = $4 AND idx = $5 AND status = $6",
        )
        .bind(to.as_str())
        .bind(generation_id)
        .bind(error.as_deref())
        .bind(id)
        .bind(i64::from(index))
        .bind(from.as_str())
        .execute(e)
        .await?;
        Ok(done.affected() > 0)
    }

    pub(crate) async fn batch_counts<'e, E>(e: E, id: &str) -> Result<BTreeMap<String, u64>>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = sqlx::query(
            "SELECT CASE WHEN r.status IN ('submitted', 'done') THEN COALESCE(j.state, 'expired') ELSE r.status END
                 AS outcome, count(*) AS n
             FROM batch_rows r LEFT JOIN generations g ON g.id = r.generation_id LEFT JOIN jobs j ON j.id = g.job_id
             WHERE r.batch_id = $1 GROUP BY 1",
        )
        .bind(id)
        .fetch_all(e)
        .await?;
        let mut counts = BTreeMap::new();
        for r in &rows {
            counts.insert(r.try_get::<String, _>("outcome")?, r.try_get::<i64, _>("n")?.max(0) as u64);
        }
        Ok(counts)
    }

    pub(crate) async fn key_batch_active<'e, E>(e: E, api_key_id: Option<&str>) -> Result<u64>
    where
        E: Executor<'e, Database = DB>,
    {
        let sql = format!(
            "SELECT count(*) FROM batches b {join} batch_rows r ON r.batch_id = b.id
             {join} generations g ON g.id = r.generation_id {join} jobs j ON j.id = g.job_id
             WHERE b.api_key_id {same} $1 AND b.state = 'running' AND r.status = 'submitted'
                 AND j.state IN ('queued', 'running')",
            join = DB::JOIN,
            same = DB::SAME
        );
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql)).bind(api_key_id).fetch_one(e).await?;
        Ok(n.max(0) as u64)
    }

    /// Batches that ended before `before_ms` and their rows, oldest first, at most `limit`.
    pub(crate) async fn purge_batches(conn: &mut DB::Connection, before_ms: i64, limit: u32) -> Result<u64> {
        let ids: Vec<String> = sqlx::query_scalar::<DB, String>(
            "SELECT id FROM batches WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        for id in &ids {
            sqlx::query::<DB>("DELETE FROM batch_rows WHERE batch_id = $1")
                .bind(id.as_str())
                .execute(&mut *conn)
                .await?;
            sqlx::query::<DB>("DELETE FROM batches WHERE id = $1").bind(id.as_str()).execute(&mut *conn).await?;
        }
        Ok(ids.len() as u64)
    }

    pub(crate) async fn finish_batch(
        conn: &mut DB::Connection,
        id: &str,
        state: BatchState,
        at_ms: i64,
    ) -> Result<bool> {
        let done =
            sqlx::query::<DB>("UPDATE batches SET state = $1, finished_at = $2 WHERE id = $3 AND state = 'running'")
                .bind(state.as_str())
                .bind(at_ms)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        if done.affected() == 0 {
            return Ok(false);
        }
        if state == BatchState::Cancelled {
            sqlx::query::<DB>("UPDATE batch_rows SET status = 'cancelled' WHERE batch_id = $1 AND status = 'pending'")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(true)
    }

    // Jobs --------------------------------------------------------------------------------------

    /// A `jobs` row.
    fn job_record(r: &DB::Row) -> Result<JobRecord> {
        Ok(JobRecord {
            id: r.try_get("id")?,
            queue: r.try_get("queue")?,
            kind: r.try_get("kind")?,
            subject: r.try_get("subject")?,
            payload: Self::json(r, "payload")?,
            priority: r.try_get("priority")?,
            state: Self::job_state(r, "state")?,
            attempts: Self::int(r, "attempts")?,
            max_attempts: Self::int(r, "max_attempts")?,
            run_at_ms: r.try_get("run_at")?,
            created_at_ms: r.try_get("created_at")?,
            started_at_ms: r.try_get("started_at")?,
            finished_at_ms: r.try_get("finished_at")?,
            last_error: r.try_get("last_error")?,
            // BOOLEAN on PostgreSQL, 0 or 1 on SQLite: both drivers decode either as bool.
            cancel_requested: r.try_get("cancel_requested")?,
        })
    }

    pub(crate) async fn job<'e, E>(e: E, job_id: &str) -> Result<Option<JobRecord>>
    where
        E: Executor<'e, Database = DB>,
    {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(job_id).fetch_optional(e).await?;
        row.as_ref().map(Self::job_record).transpose()
    }

    /// The jobs of `kind` about `subject`, oldest first.
    pub(crate) async fn jobs_for<'e, E>(e: E, subject: &str, kind: &str) -> Result<Vec<JobRecord>>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = sqlx::query("SELECT * FROM jobs WHERE subject = $1 AND kind = $2 ORDER BY created_at, id")
            .bind(subject)
            .bind(kind)
            .fetch_all(e)
            .await?;
        rows.iter().map(Self::job_record).collect()
    }

    /// A `job_attempts` row.
    fn attempt_row(r: &DB::Row) -> Result<Attempt> {
        Ok(Attempt {
            attempt: Self::int(r, "attempt")?,
            worker: r.try_get("worker")?,
            started_at_ms: r.try_get("started_at")?,
            finished_at_ms: r.try_get("finished_at")?,
            outcome: r.try_get("outcome")?,
            error: r.try_get("error")?,
        })
    }

    /// A job's attempts, first first.
    pub(crate) async fn attempts<'e, E>(e: E, job_id: &str) -> Result<Vec<Attempt>>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = sqlx::query("SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY attempt")
            .bind(job_id)
            .fetch_all(e)
            .await?;
        rows.iter().map(Self::attempt_row).collect()
    }

    /// The job a claim leased to `worker`, from the claim's RETURNING row (id, kind, subject,
    /// payload, priority, attempts, max_attempts, timeout_ms).
    pub(crate) fn claimed_job(r: &DB::Row, queue: &str, worker: &str, recovered: bool) -> Result<ClaimedJob> {
        Ok(ClaimedJob {
            lease: Lease { job_id: r.try_get("id")?, owner: worker.into(), attempt: Self::int(r, "attempts")? },
            queue: queue.into(),
            kind: r.try_get("kind")?,
            subject: r.try_get("subject")?,
            payload: Self::json(r, "payload")?,
            priority: r.try_get("priority")?,
            max_attempts: Self::int(r, "max_attempts")?,
            timeout: Duration::from_millis(r.try_get::<i64, _>("timeout_ms")?.max(0) as u64),
            recovered,
        })
    }

    pub(crate) async fn ping<'e, E>(e: E) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        sqlx::query("SELECT 1").execute(e).await?;
        Ok(())
    }
}
