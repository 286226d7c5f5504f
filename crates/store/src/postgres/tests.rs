//! The PostgreSQL backend against a real server: the conformance suites, concurrency, wake-ups
//! and restarts.

use std::sync::Arc;
use std::time::Instant;

use super::store::{SCHEMA, quote_ident};
use super::*;

fn url() -> String {
    std::env::var("REELSMITH_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of the test's own, dropped at the end even when the test fails.
struct TestSchema {
    name: String,
}

impl TestSchema {
    fn new() -> Self {
        Self { name: format!("t_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()) }
    }

    async fn store(&self) -> PgStore {
        let s = PgStore::connect(&url(), Some(&self.name), 8).await.expect("connect to the test database");
        sweep_stale_schemas(&s).await;
        s
    }
}

/// Drops test schemas over an hour old (their ids say when they were made), left behind by
/// test runs that were killed before they could clean up. Once per process, best effort.
async fn sweep_stale_schemas(s: &PgStore) {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SWEPT.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let Ok(names) =
        sqlx::query_scalar::<_, String>("SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^t_[0-9a-z]{26}$'")
            .fetch_all(s.pool())
            .await
    else {
        return;
    };
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for name in names {
        let Ok(id) = ulid::Ulid::from_string(&name[2..].to_ascii_uppercase()) else { continue };
        if id.datetime() < hour_ago {
            let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(&name));
            let _ = sqlx::raw_sql(AssertSqlSafe(drop)).execute(s.pool()).await;
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop may run inside a runtime: do the async cleanup on a thread of its own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let pool = PgPoolOptions::new().max_connections(1).connect(&url()).await?;
                sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(&name))))
                    .execute(&pool)
                    .await?;
                pool.close().await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_conformance() {
    let schema = TestSchema::new();
    let s = schema.store().await;
    crate::conformance::run_queue_suite(&s).await;
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_conformance() {
    let schema = TestSchema::new();
    let s = schema.store().await;
    crate::conformance::run_metadata_suite(&s, &s).await;
    crate::conformance::run_batch_suite(&s, &s).await;
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_take_each_job_once() {
    let schema = TestSchema::new();
    let s = Arc::new(schema.store().await);
    crate::conformance::run_concurrent_claims(s.clone(), 200, 8).await;
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_submissions_create_one_generation() {
    let schema = TestSchema::new();
    let s = Arc::new(schema.store().await);
    crate::conformance::run_concurrent_dedup(s.clone(), 100).await;
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_respect_the_quota_and_idempotency() {
    let schema = TestSchema::new();
    let s = Arc::new(schema.store().await);
    crate::conformance::run_concurrent_quota(s.clone(), 40, 3).await;
    crate::conformance::run_concurrent_budget(s.clone(), 40, 7).await;
    crate::conformance::run_concurrent_idempotency(s.clone(), 40).await;
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_throughput_runs() {
    let schema = TestSchema::new();
    let s = schema.store().await;
    let r = crate::bench::claim_throughput(Arc::new(s.clone()), 300, 4).await.unwrap();
    assert_eq!((r.jobs, r.claimers), (300, 4));
    assert!(r.claims_per_s > 0.0 && r.p50_ms <= r.p99_ms, "{r:?}");
    eprintln!("debug-build claim throughput: {r:?}");
    s.close().await;
}

/// Claims nothing (so the store knows the queue was idle), then hands back how far the
/// queue's notification counter is.
async fn idle(s: &PgStore, queue: &str) -> u64 {
    assert!(s.claim(queue, "w", Duration::from_secs(60)).await.unwrap().is_none());
    s.shared.wake.epoch(queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_work_wakes_on_an_enqueue_from_another_store() {
    let schema = TestSchema::new();
    let waiter = schema.store().await;
    let other = schema.store().await; // a pool (and listener) of its own, as another process
    let queue = format!("a-{}", new_id("q"));
    idle(&waiter, &queue).await;

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = {
        let (waiter, queue) = (waiter.clone(), queue.clone());
        tokio::spawn(async move {
            let _ = ready_tx.send(());
            let started = Instant::now();
            waiter.wait_for_work(&queue, Duration::from_secs(30)).await;
            (Instant::now(), started.elapsed())
        })
    };
    ready_rx.await.unwrap();
    let enqueued_at = Instant::now();
    assert!(other.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap());
    let (returned_at, waited) = task.await.unwrap();
    assert!(returned_at >= enqueued_at, "woke before the enqueue");
    assert!(waited < Duration::from_secs(5), "woke by the notification, not the timeout: {waited:?}");
    assert!(waiter.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().is_some());
    waiter.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_work_ignores_other_queues() {
    let schema = TestSchema::new();
    let waiter = schema.store().await;
    let other = schema.store().await;
    let (a, b) = (format!("a-{}", new_id("q")), format!("b-{}", new_id("q")));
    let before = idle(&waiter, &a).await;
    let task = {
        let (waiter, a) = (waiter.clone(), a.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            waiter.wait_for_work(&a, Duration::from_millis(300)).await;
            started.elapsed()
        })
    };
    for _ in 0..5 {
        other.enqueue(NewJob::new(&b, "test", serde_json::json!({}))).await.unwrap();
    }
    let waited = task.await.unwrap();
    assert!(waited >= Duration::from_millis(290), "queue B's jobs woke queue A's waiter after {waited:?}");
    assert_eq!(waiter.shared.wake.epoch(&a), before);
    waiter.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_between_an_empty_claim_and_the_wait_is_not_lost() {
    let schema = TestSchema::new();
    let s = schema.store().await;
    let other = schema.store().await;
    let queue = format!("a-{}", new_id("q"));
    let before = idle(&s, &queue).await;
    other.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap();
    // Only once the notification has been seen does the wait begin.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.shared.wake.epoch(&queue) == before {
        assert!(Instant::now() < deadline, "notification never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    s.wait_for_work(&queue, Duration::from_secs(30)).await;
    assert!(started.elapsed() < Duration::from_secs(1), "the earlier notification counts");
    s.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_schemas_do_not_wake_each_other() {
    let (one, two) = (TestSchema::new(), TestSchema::new());
    let (s1, s2) = (one.store().await, two.store().await);
    assert_ne!(s1.shared.channel, s2.shared.channel);
    let queue = format!("a-{}", new_id("q"));
    let before = idle(&s1, &queue).await;
    s2.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap();
    // A notification s1 does get proves s2's would have arrived by now.
    s1.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s1.shared.wake.epoch(&queue) == before {
        assert!(Instant::now() < deadline, "own notification never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s1.shared.wake.epoch(&queue), before + 1, "only its own schema's enqueue counted");
    s1.close().await;
    s2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_run_once_and_concurrent_starts_agree() {
    let schema = TestSchema::new();
    let url = url();
    let connects = (0..4).map(|_| PgStore::connect(&url, Some(&schema.name), 2));
    let stores: Vec<PgStore> = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .collect::<Result<_>>()
        .expect("every concurrent connect succeeds");
    let job = NewJob::new("render", "render", serde_json::json!({"n": 1}));
    let id = job.id.clone();
    assert!(stores[0].enqueue(job).await.unwrap());
    // A second start on a migrated schema changes nothing and sees the same data.
    let again = schema.store().await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM reelsmith_schema_version ORDER BY version")
        .fetch_all(again.pool())
        .await
        .unwrap();
    assert_eq!(versions, (1..=SCHEMA.len() as i64).collect::<Vec<_>>(), "each step applied exactly once");
    let j = again.job(&id).await.unwrap().unwrap();
    assert_eq!((j.state, j.payload), (JobState::Queued, serde_json::json!({"n": 1})));
    for s in stores {
        s.close().await;
    }
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_errors_not_panics() {
    let schema = TestSchema::new();
    let s = schema.store().await;
    let job = NewJob::new("q", "test", serde_json::json!({}));
    let id = job.id.clone();
    s.enqueue(job).await.unwrap();
    sqlx::query("UPDATE jobs SET payload = 'not json', attempts = -1 WHERE id = $1")
        .bind(&id)
        .execute(s.pool())
        .await
        .unwrap();
    assert!(matches!(s.job(&id).await, Err(StoreError::Corrupt(_))));
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_postgres_restart() {
    let pg = match tokio::task::block_in_place(pg_testing::PrivatePostgres::start_on_free_port) {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("SKIPPED survives_a_postgres_restart: cannot start a private PostgreSQL: {e}");
            return;
        }
    };
    let s = PgStore::connect(&pg.url(), Some("reelsmith"), 4).await.unwrap();
    let queue = format!("r-{}", new_id("q"));
    let job = NewJob::new(&queue, "test", serde_json::json!({"n": 1}));
    let id = job.id.clone();
    assert!(s.enqueue(job).await.unwrap());

    tokio::task::block_in_place(|| pg.stop()).unwrap();
    match s.claim(&queue, "w", Duration::from_secs(60)).await {
        Err(StoreError::Database(_)) => {}
        other => panic!("a claim while the database is down is a database error, got {other:?}"),
    }
    assert!(s.ping().await.is_err());
    let epoch = s.shared.wake.epoch(&queue);
    tokio::task::block_in_place(|| pg.start_again()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let claimed = loop {
        match s.claim(&queue, "w", Duration::from_secs(60)).await {
            Ok(Some(c)) => break c,
            Ok(None) => panic!("the job enqueued before the restart is gone"),
            Err(e) => assert!(Instant::now() < deadline, "no recovery within 20 s: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(claimed.lease.job_id, id);
    assert!(s.complete(&claimed.lease, vec![]).await.unwrap());
    s.ping().await.unwrap();
    // The listener comes back on its own (waking everyone, since it may have missed
    // notifications), and notifications flow again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.shared.wake.reconnects.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the listener never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.shared.wake.epoch(&queue) > epoch, "the reconnect woke the waiters");
    let epoch = s.shared.wake.epoch(&queue);
    s.enqueue(NewJob::new(&queue, "test", serde_json::json!({}))).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.shared.wake.epoch(&queue) == epoch {
        assert!(Instant::now() < deadline, "no notification after the restart");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.close().await;
}
