//! The embedded backend: one SQLite file in WAL mode. All writes go through a single
//! connection (SQLite allows one writer at a time anyway, and a queue of our own beats
//! `SQLITE_BUSY` retries); reads use a pool that never blocks on writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::*;

mod batches;
mod metadata;
mod queue;
mod store;
mod writer;

pub use store::{Durability, SqliteStore};

/// The code both SQL dialects share, for this driver.
type Shared = crate::sql::Shared<sqlx::Sqlite>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(&dir.join("db.sqlite"), Durability::Normal).await.unwrap()
    }

    #[tokio::test]
    async fn queue_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        crate::conformance::run_queue_suite(&s).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claimers_take_each_job_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(open(dir.path()).await);
        crate::conformance::run_concurrent_claims(s, 200, 8).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_identical_submissions_create_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(open(dir.path()).await);
        crate::conformance::run_concurrent_dedup(s, 100).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_submissions_respect_the_quota_and_idempotency() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(open(dir.path()).await);
        crate::conformance::run_concurrent_quota(s.clone(), 40, 3).await;
        crate::conformance::run_concurrent_budget(s.clone(), 40, 7).await;
        crate::conformance::run_concurrent_idempotency(s, 40).await;
    }

    #[tokio::test]
    async fn metadata_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        crate::conformance::run_metadata_suite(&s, &s).await;
        crate::conformance::run_batch_suite(&s, &s).await;
    }

    #[tokio::test]
    async fn jobs_survive_reopening_and_migrations_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let job = NewJob::new("render", "render", serde_json::json!({"n": 1}));
        let id = job.id.clone();
        assert!(s.enqueue(job).await.unwrap());
        s.close().await;
        let s = open(dir.path()).await;
        let j = s.job(&id).await.unwrap().unwrap();
        assert_eq!((j.state, j.payload), (JobState::Queued, serde_json::json!({"n": 1})));
    }
}
