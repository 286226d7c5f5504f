//! The store itself: connecting (pool, schema), the schema and its migrations.

use super::listen::{Wakeups, listen_loop};
use super::*;

/// The schema, one migration per file (`migrations/postgres/`, applied in order, each once): a new
/// version adds a file and a line here; applied files never change.
pub(super) const SCHEMA: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_asset_retention.sql"),
    include_str!("../../migrations/postgres/0003_key_priority_and_webhook_secrets.sql"),
    include_str!("../../migrations/postgres/0004_key_budgets.sql"),
    include_str!("../../migrations/postgres/0005_generation_prompt.sql"),
    include_str!("../../migrations/postgres/0006_provider_spend.sql"),
    include_str!("../../migrations/postgres/0007_provider_day_spend.sql"),
    include_str!("../../migrations/postgres/0008_templates_and_batches.sql"),
];

/// How long a call waits for a connection before failing with [`StoreError::Database`]; also
/// bounds how long calls hang while the database is down.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections idle this long are checked before use (see `connect`).
pub(super) const IDLE_PING_AFTER: Duration = Duration::from_secs(1);

/// Advisory lock classes of `create_generation`, always taken in this order (so two creates
/// can never wait on each other in a cycle).
pub(super) const LOCK_IDEMPOTENCY: i32 = 1;
pub(super) const LOCK_SPEC: i32 = 2;
pub(super) const LOCK_QUOTA: i32 = 3;

/// A job store on PostgreSQL. Cheap to clone; clones share the pool and the listener.
#[derive(Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) schema: String,
    /// `pg_notify` channel of this schema, so deployments (and tests) sharing a database do not
    /// wake each other.
    pub(super) channel: String,
    pub(super) wake: Arc<Wakeups>,
    /// Stops the listener task when the last clone goes.
    pub(super) _listener: DropGuard,
    pub(super) stop: CancellationToken,
}

impl PgStore {
    /// Connects, creates `schema` (default `public`) if needed and migrates it, and starts
    /// listening for enqueue notifications. Safe to call from many processes at once.
    pub async fn connect(url: &str, schema: Option<&str>, max_connections: u32) -> Result<Self> {
        let schema = schema.unwrap_or("public").to_string();
        let options = PgConnectOptions::from_str(url)?;
        // Generic plans: every statement here is a short index lookup whose best plan does not
        // depend on the parameters, and re-planning the claim's CTEs on each call (what `auto`
        // keeps doing for it) costs more than running it.
        let set_path: Arc<str> =
            format!("SET search_path TO {}; SET plan_cache_mode = force_generic_plan", quote_ident(&schema)).into();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection that sat idle is pinged before it is handed out, so the first calls
            // after a database restart get fresh connections instead of dead ones' errors. One
            // just returned was pinged by the pool on its way back: testing it again would add a
            // round trip to every call under load.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_PING_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                let sql = set_path.clone();
                Box::pin(async move {
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        migrate(&pool, &schema).await?;

        // A listener holds its connection for good: it gets a pool of its own, and the first
        // LISTEN happens before connect returns, so no enqueue after it goes unnoticed.
        let listen_pool =
            PgPoolOptions::new().max_connections(1).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options);
        let channel = channel_name(&schema);
        let listener = super::listen::listen(&listen_pool, &channel).await?;
        let wake = Arc::new(Wakeups::default());
        let stop = CancellationToken::new();
        tokio::spawn(listen_loop(listen_pool, listener, channel.clone(), wake.clone(), stop.clone()));
        Ok(Self {
            pool,
            shared: Arc::new(Shared { schema, channel, wake, _listener: stop.clone().drop_guard(), stop }),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// Stops the listener and closes the pool (every clone's).
    pub async fn close(&self) {
        self.shared.stop.cancel();
        self.pool.close().await;
    }

    /// Drops this store's schema and everything in it, then closes the store. For benchmarks
    /// and tests that made a schema of their own.
    pub async fn drop_schema(&self) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(self.schema()))))
            .execute(&self.pool)
            .await?;
        self.close().await;
        Ok(())
    }

    /// Text of an advisory lock key, scoped to this schema (hashed by `advisory_lock`).
    pub(super) fn lock_key(&self, parts: &[&str]) -> String {
        let mut key = self.shared.schema.clone();
        for p in parts {
            key.push('\u{1f}');
            key.push_str(p);
        }
        key
    }
}

pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Channel names are identifiers (63 bytes at most): long schema names are hashed.
pub(super) fn channel_name(schema: &str) -> String {
    let name = format!("reelsmith_jobs_{schema}");
    if name.len() <= 63 {
        return name;
    }
    use sha2::Digest;
    format!("reelsmith_jobs_{}", &hex::encode(sha2::Sha256::digest(schema.as_bytes()))[..32])
}

pub(super) async fn migrate(pool: &PgPool, schema: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    // Serializes concurrent starts, including CREATE SCHEMA IF NOT EXISTS, which is not safe
    // against itself.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('reelsmith-migrate' || chr(31) || $1, 0))")
        .bind(schema)
        .execute(&mut *tx)
        .await?;
    let ident = quote_ident(schema);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {ident};
         SET LOCAL search_path TO {ident};
         CREATE TABLE IF NOT EXISTS reelsmith_schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);"
    )))
    .execute(&mut *tx)
    .await?;
    let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM reelsmith_schema_version")
        .fetch_one(&mut *tx)
        .await?;
    let version = usize::try_from(version).map_err(|_| StoreError::Corrupt(format!("schema version {version}")))?;
    if version > SCHEMA.len() {
        return Err(StoreError::Corrupt(format!(
            "schema {schema} is at version {version}, newer than this build's {}",
            SCHEMA.len()
        )));
    }
    for (i, sql) in SCHEMA.iter().enumerate().skip(version) {
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO reelsmith_schema_version (version, applied_at) VALUES ($1, $2)")
            .bind((i + 1) as i64)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Wake-ups
