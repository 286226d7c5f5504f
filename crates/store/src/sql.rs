//! Metadata statements both dialects share: one text (`$n` placeholders, numbered in order of
//! first appearance, which SQLite reads the same way) and one piece of code, generic over the
//! driver. The job queue's statements stay per dialect: that is where they really differ.

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use crate::{ApiKey, Budget, GenerationResult, Result, StoreError, Usage, corrupt_json};

pub(crate) async fn set_progress<'e, DB, E>(e: E, id: &str, progress: f64, stage: &str) -> Result<()>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query("UPDATE generations SET progress = $1, stage = $2 WHERE id = $3")
        .bind(progress)
        .bind(stage)
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

pub(crate) async fn set_result<'e, DB, E>(e: E, id: &str, r: &GenerationResult) -> Result<()>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
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

/// Adds a budget's charge to the key's usage for its day unless that passes the cap: one
/// statement, so concurrent submissions of a key cannot both pass. Some(usage before) when
/// refused.
pub(crate) async fn charge_budget<DB>(conn: &mut DB::Connection, api_key_id: &str, b: &Budget) -> Result<Option<Usage>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB> + Decode<'q, DB>,
    for<'r> f64: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
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
    Ok(Some(usage_on::<DB>(conn, api_key_id, b.day).await?))
}

/// What the key submitted on `day`.
pub(crate) async fn usage_on<DB>(conn: &mut DB::Connection, api_key_id: &str, day: i64) -> Result<Usage>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB> + Decode<'q, DB>,
    for<'r> f64: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
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

pub(crate) async fn set_error<'e, DB, E>(e: E, id: &str, code: &str, message: &str) -> Result<()>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    sqlx::query("UPDATE generations SET error_code = $1, error_message = $2 WHERE id = $3")
        .bind(code)
        .bind(message)
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
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

/// Revokes a key now; false when there is no such live key.
pub(crate) async fn revoke_api_key<'e, DB, E>(e: E, id: &str) -> Result<bool>
where
    DB: Database<QueryResult: Affected>,
    E: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(crate::now_ms())
        .bind(id)
        .execute(e)
        .await?;
    Ok(done.affected() > 0)
}

/// Replaces a key's webhook secret; false when there is no such key.
pub(crate) async fn set_webhook_secret<'e, DB, E>(e: E, id: &str, secret: &str) -> Result<bool>
where
    DB: Database<QueryResult: Affected>,
    E: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    let done =
        sqlx::query("UPDATE api_keys SET webhook_secret = $1 WHERE id = $2").bind(secret).bind(id).execute(e).await?;
    Ok(done.affected() > 0)
}

/// An integer column as the record's type; out of range is a corrupt record.
fn int<R, T>(r: &R, col: &str) -> Result<T>
where
    R: Row,
    T: TryFrom<i64>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    let v: i64 = r.try_get(col)?;
    T::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} out of range: {v}")))
}

/// An `api_keys` row.
fn api_key<R>(r: &R) -> Result<ApiKey>
where
    R: Row,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        rate_per_s: r.try_get("rate_per_s")?,
        burst: int(r, "burst")?,
        max_concurrent_jobs: int(r, "max_concurrent_jobs")?,
        max_priority: int::<_, u32>(r, "max_priority")?.min(9) as u8,
        webhook_secret: r.try_get("webhook_secret")?,
        limits: serde_json::from_str(&r.try_get::<String, _>("limits")?).map_err(corrupt_json)?,
        created_at_ms: r.try_get("created_at")?,
        revoked_at_ms: r.try_get("revoked_at")?,
    })
}

pub(crate) async fn create_api_key<'e, DB, E>(e: E, key: &ApiKey, token_hash: &str) -> Result<()>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
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

/// Keys by token hash, by id, or all of them (oldest first).
pub(crate) enum KeyLookup<'a> {
    Hash(&'a str),
    Id(&'a str),
    All,
}

pub(crate) async fn api_keys<'e, DB, E>(e: E, lookup: KeyLookup<'_>) -> Result<Vec<ApiKey>>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> Option<i64>: Decode<'r, DB> + Type<DB>,
    for<'r> f64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    let rows = match lookup {
        KeyLookup::Hash(h) => sqlx::query("SELECT * FROM api_keys WHERE token_hash = $1").bind(h).fetch_all(e).await?,
        KeyLookup::Id(id) => sqlx::query("SELECT * FROM api_keys WHERE id = $1").bind(id).fetch_all(e).await?,
        KeyLookup::All => sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id").fetch_all(e).await?,
    };
    rows.iter().map(api_key).collect()
}
