//! The store itself: opening the file (WAL, one writer, a read pool), the schema and its
//! migrations.

use super::writer::{CreateRequest, checkpoint_loop, create_loop};
use super::*;

/// The schema, one migration per file (`migrations/sqlite/`, applied in order, each once): a new
/// version adds a file and a line here; applied files never change.
pub(super) const SCHEMA: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_asset_retention.sql"),
    include_str!("../../migrations/sqlite/0003_key_priority_and_webhook_secrets.sql"),
    include_str!("../../migrations/sqlite/0004_key_budgets.sql"),
    include_str!("../../migrations/sqlite/0005_generation_prompt.sql"),
    include_str!("../../migrations/sqlite/0006_provider_spend.sql"),
    include_str!("../../migrations/sqlite/0007_provider_day_spend.sql"),
    include_str!("../../migrations/sqlite/0008_templates_and_batches.sql"),
];

/// How durable a commit is. `Full` fsyncs every commit (survives power loss); `Normal` (WAL)
/// survives any process crash, including `kill -9`, and is several times faster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Full,
    #[default]
    Normal,
}

#[derive(Clone)]
pub struct SqliteStore {
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
    pub(super) creates: tokio::sync::mpsc::UnboundedSender<CreateRequest>,
}

impl SqliteStore {
    pub async fn open(path: &Path, durability: Durability) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .pragma("cache_size", "-16000")
            .pragma("temp_store", "memory")
            // Checkpoints (which fsync) run on their own connection every 200 ms, off the
            // writer's path, where they would stall every request queued behind them (seen as
            // 100+ ms tails while renders keep the disk busy). The writer checkpoints itself only
            // if the WAL outgrows 32 MB; the file shrinks back to 64 MB at most.
            .pragma("wal_autocheckpoint", "8000")
            .pragma("journal_size_limit", "67108864");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.clone().create_if_missing(true))
            .await?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.clone().read_only(true))
            .await?;
        let checkpointer = SqlitePoolOptions::new().max_connections(1).connect_with(base).await?;
        tokio::spawn(checkpoint_loop(checkpointer, writer.clone()));
        let (creates, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(create_loop(writer.clone(), rx));
        Ok(Self { writer, reader, creates })
    }

    /// Closes both pools (tests reopen the same file).
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

pub(super) async fn migrate(writer: &SqlitePool) -> Result<()> {
    {
        let mut tx = writer.begin().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await?;
        for (i, sql) in SCHEMA.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {}", i + 1))).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}
