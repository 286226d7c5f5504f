//! The semantics every backend must have, as one suite run against each implementation
//! (`SqliteStore` here; PostgreSQL and others later). Each check panics with a message naming
//! the broken rule. Queue names are unique per run so a shared database can host the suite.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::*;

fn queue_name(tag: &str) -> String {
    format!("conf-{tag}-{}", new_id("q"))
}

fn job(queue: &str, priority: i32) -> NewJob {
    NewJob { priority, ..NewJob::new(queue, "test", serde_json::json!({"p": priority})) }
}

pub async fn run_queue_suite<Q: JobQueue>(q: &Q) {
    priorities_then_fifo(q).await;
    delayed_jobs_wait(q).await;
    expired_lease_is_taken_again(q).await;
    stale_lease_cannot_finish(q).await;
    lost_on_the_last_attempt_fails_instead_of_running_again(q).await;
    retries_back_off_then_fail(q).await;
    cancellation(q).await;
    follow_ups_are_atomic_and_deduplicated(q).await;
    depth_counts(q).await;
}

/// Concurrent claimers take every job exactly once. Needs an `Arc` so claimers can run as tasks.
pub async fn run_concurrent_claims<Q: JobQueue>(q: Arc<Q>, jobs: usize, claimers: usize) {
    let queue = queue_name("concurrent");
    for i in 0..jobs {
        q.enqueue(job(&queue, (i % 3) as i32)).await.unwrap();
    }
    let mut tasks = vec![];
    for c in 0..claimers {
        let (q, queue) = (q.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = vec![];
            while let Some(j) = q.claim(&queue, &format!("w{c}"), Duration::from_secs(60)).await.unwrap() {
                assert!(q.complete(&j.lease, vec![]).await.unwrap());
                got.push(j.lease.job_id);
            }
            got
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), jobs, "every job claimed once");
    assert_eq!(unique.len(), jobs, "no job claimed twice");
}

async fn priorities_then_fifo<Q: JobQueue>(q: &Q) {
    let queue = queue_name("prio");
    let low1 = job(&queue, 1);
    let high = job(&queue, 9);
    let low2 = job(&queue, 1);
    let ids = [high.id.clone(), low1.id.clone(), low2.id.clone()];
    for j in [low1, high, low2] {
        assert!(q.enqueue(j).await.unwrap());
    }
    let mut order = vec![];
    while let Some(j) = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap() {
        assert_eq!(j.lease.attempt, 1);
        assert!(q.complete(&j.lease, vec![]).await.unwrap());
        order.push(j.lease.job_id);
    }
    assert_eq!(order, ids, "highest priority first, then oldest first");
    // Other queues are untouched by claims on this one.
    assert!(q.claim(&queue_name("other"), "w", Duration::from_secs(1)).await.unwrap().is_none());
}

async fn delayed_jobs_wait<Q: JobQueue>(q: &Q) {
    let queue = queue_name("delay");
    let mut j = job(&queue, 0);
    j.run_at_ms = now_ms() + 60_000;
    q.enqueue(j).await.unwrap();
    assert!(
        q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().is_none(),
        "a job runs no earlier than run_at"
    );
    let next = q.next_run_at(&queue).await.unwrap().expect("next run time");
    assert!(next > now_ms() + 50_000);
}

async fn expired_lease_is_taken_again<Q: JobQueue>(q: &Q) {
    let queue = queue_name("lease");
    let j = job(&queue, 0);
    let id = j.id.clone();
    q.enqueue(j).await.unwrap();
    let first = q.claim(&queue, "dead-worker", Duration::from_millis(1)).await.unwrap().unwrap();
    assert!(!first.recovered);
    // A live lease is not taken.
    let live = job(&queue_name("live"), 0);
    let live_q = live.queue.clone();
    q.enqueue(live).await.unwrap();
    let held = q.claim(&live_q, "a", Duration::from_secs(60)).await.unwrap().unwrap();
    assert!(q.claim(&live_q, "b", Duration::from_secs(60)).await.unwrap().is_none(), "a live lease is exclusive");
    assert_eq!(q.heartbeat(&held.lease, Duration::from_secs(60)).await.unwrap(), Heartbeat::Extended);

    wait_until_past(now_ms() + 5).await;
    let second = q.claim(&queue, "new-worker", Duration::from_secs(60)).await.unwrap().expect("expired lease re-taken");
    assert_eq!(second.lease.job_id, id);
    assert_eq!(second.lease.attempt, 2);
    assert!(second.recovered, "the claim knows the previous worker was lost");
    let attempts = q.attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, "lost");
    assert_eq!(attempts[0].worker, "dead-worker");
    assert_eq!(attempts[1].outcome, "running");
    assert!(q.complete(&second.lease, vec![]).await.unwrap());
    assert_eq!(q.attempts(&id).await.unwrap()[1].outcome, "succeeded");
}

async fn lost_on_the_last_attempt_fails_instead_of_running_again<Q: JobQueue>(q: &Q) {
    let queue = queue_name("exhausted");
    let mut j = job(&queue, 0);
    j.retry.max_attempts = 1;
    let id = j.id.clone();
    q.enqueue(j).await.unwrap();
    q.claim(&queue, "crashing-worker", Duration::from_millis(1)).await.unwrap().unwrap();
    wait_until_past(now_ms() + 5).await;
    assert!(q.claim(&queue, "next", Duration::from_secs(60)).await.unwrap().is_none(), "not run a second time");
    let rec = q.job(&id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Failed);
    assert!(rec.last_error.unwrap().contains("worker lost"));
    assert_eq!(q.attempts(&id).await.unwrap()[0].outcome, "lost");
}

async fn stale_lease_cannot_finish<Q: JobQueue>(q: &Q) {
    let queue = queue_name("stale");
    q.enqueue(job(&queue, 0)).await.unwrap();
    let old = q.claim(&queue, "slow", Duration::from_millis(1)).await.unwrap().unwrap();
    wait_until_past(now_ms() + 5).await;
    let new = q.claim(&queue, "fast", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(q.heartbeat(&old.lease, Duration::from_secs(60)).await.unwrap(), Heartbeat::Lost);
    assert!(!q.complete(&old.lease, vec![job(&queue, 0)]).await.unwrap(), "a lost lease cannot complete");
    assert_eq!(q.fail(&old.lease, "late", true, vec![]).await.unwrap(), FailOutcome::Lost);
    assert!(!q.cancelled(&old.lease, vec![]).await.unwrap());
    assert_eq!(q.depth().await.unwrap().get(&queue).map(|d| d.queued), Some(0), "the lost lease enqueued nothing");
    assert!(q.complete(&new.lease, vec![]).await.unwrap());
    assert_eq!(q.job(&new.lease.job_id).await.unwrap().unwrap().state, JobState::Succeeded);
}

async fn retries_back_off_then_fail<Q: JobQueue>(q: &Q) {
    let queue = queue_name("retry");
    let mut j = job(&queue, 0);
    j.retry = RetryPolicy { max_attempts: 3, backoff_base_ms: 1, backoff_max_ms: 1, jitter: 0.0 };
    let id = j.id.clone();
    q.enqueue(j).await.unwrap();
    let final_event = NewJob { dedup_key: Some(format!("{id}-failed")), ..job(&queue_name("events"), 0) };
    let events_q = final_event.queue.clone();
    for n in 1..=3u32 {
        wait_until_past(now_ms() + 2).await;
        let c = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().expect("retry is claimable");
        assert_eq!(c.lease.attempt, n);
        let out = q.fail(&c.lease, &format!("boom {n}"), true, vec![final_event.clone()]).await.unwrap();
        if n < 3 {
            assert!(matches!(out, FailOutcome::Retrying { .. }), "attempt {n}: {out:?}");
            assert_eq!(q.depth().await.unwrap().get(&events_q).map_or(0, |d| d.queued), 0, "no final event yet");
        } else {
            assert_eq!(out, FailOutcome::Failed);
        }
    }
    let rec = q.job(&id).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts, rec.last_error.as_deref()), (JobState::Failed, 3, Some("boom 3")));
    let errors: Vec<_> = q.attempts(&id).await.unwrap().into_iter().map(|a| a.error.unwrap_or_default()).collect();
    assert_eq!(errors, ["boom 1", "boom 2", "boom 3"], "every attempt keeps its error");
    assert_eq!(q.depth().await.unwrap()[&events_q].queued, 1, "the final-failure event was enqueued once");

    // A non-retryable error fails at once; a real backoff delays the retry.
    let mut j = job(&queue, 0);
    j.retry = RetryPolicy { max_attempts: 5, backoff_base_ms: 60_000, backoff_max_ms: 60_000, jitter: 0.0 };
    let id2 = j.id.clone();
    q.enqueue(j).await.unwrap();
    let c = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().unwrap();
    let before = now_ms();
    match q.fail(&c.lease, "transient", true, vec![]).await.unwrap() {
        FailOutcome::Retrying { run_at_ms } => assert!(run_at_ms >= before + 59_000, "backoff applied"),
        o => panic!("expected a retry, got {o:?}"),
    }
    assert!(q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().is_none(), "retry waits for its backoff");
    let mut j = job(&queue, 0);
    j.retry.max_attempts = 5;
    q.enqueue(j).await.unwrap();
    let c = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_ne!(c.lease.job_id, id2);
    assert_eq!(q.fail(&c.lease, "bad input", false, vec![]).await.unwrap(), FailOutcome::Failed);
}

async fn cancellation<Q: JobQueue>(q: &Q) {
    let queue = queue_name("cancel");
    let queued = job(&queue, 0);
    let qid = queued.id.clone();
    q.enqueue(queued).await.unwrap();
    let ev = NewJob { dedup_key: Some(format!("{qid}-cancelled")), ..job(&queue_name("cancel-events"), 0) };
    let ev_q = ev.queue.clone();
    assert_eq!(q.cancel(&qid, vec![ev]).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(q.depth().await.unwrap()[&ev_q].queued, 1, "the cancel event was enqueued with it");
    assert!(q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().is_none(), "a cancelled job never runs");
    assert_eq!(q.cancel(&qid, vec![]).await.unwrap(), CancelOutcome::AlreadyFinal(JobState::Cancelled));
    assert_eq!(q.cancel("job_missing", vec![]).await.unwrap(), CancelOutcome::NotFound);

    let running = job(&queue, 0);
    let rid = running.id.clone();
    q.enqueue(running).await.unwrap();
    let c = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(q.cancel(&rid, vec![]).await.unwrap(), CancelOutcome::Requested);
    assert_eq!(q.heartbeat(&c.lease, Duration::from_secs(60)).await.unwrap(), Heartbeat::CancelRequested);
    // A failure while cancelling is final, never retried.
    let out = q.fail(&c.lease, "stopped", true, vec![]).await.unwrap();
    assert_eq!(out, FailOutcome::Failed);

    let running = job(&queue, 0);
    let rid = running.id.clone();
    q.enqueue(running).await.unwrap();
    let c = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().unwrap();
    q.cancel(&rid, vec![]).await.unwrap();
    assert!(q.cancelled(&c.lease, vec![]).await.unwrap());
    assert_eq!(q.job(&rid).await.unwrap().unwrap().state, JobState::Cancelled);
    assert_eq!(q.attempts(&rid).await.unwrap()[0].outcome, "cancelled");
}

async fn follow_ups_are_atomic_and_deduplicated<Q: JobQueue>(q: &Q) {
    let queue = queue_name("follow");
    let events = queue_name("events");
    let mut parent = job(&queue, 0);
    parent.subject = Some("gen_x".into());
    q.enqueue(parent).await.unwrap();
    let c = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().unwrap();
    let mut event = NewJob::new(&events, "webhook", serde_json::json!({"event": "succeeded"}));
    event.subject = Some("gen_x-follow".into());
    event.dedup_key = Some(format!("{}-succeeded", c.lease.job_id));
    assert!(q.complete(&c.lease, vec![event.clone()]).await.unwrap());
    let again = NewJob { id: new_id("job"), ..event.clone() };
    assert!(!q.enqueue(again).await.unwrap(), "a dedup key enqueues once");
    let listed = q.jobs_for("gen_x-follow", "webhook").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].payload, serde_json::json!({"event": "succeeded"}));
    assert_eq!(q.depth().await.unwrap()[&events].queued, 1);
}

async fn depth_counts<Q: JobQueue>(q: &Q) {
    let queue = queue_name("depth");
    for _ in 0..3 {
        q.enqueue(job(&queue, 0)).await.unwrap();
    }
    let mut later = job(&queue, 0);
    later.run_at_ms = now_ms() + 60_000;
    q.enqueue(later).await.unwrap();
    let c = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().unwrap();
    let d = q.depth().await.unwrap()[&queue];
    assert_eq!(d, QueueDepth { queued: 3, running: 1, ready: 2 });
    q.complete(&c.lease, vec![]).await.unwrap();
    // Purging keeps unfinished jobs.
    q.purge_finished(now_ms() + 1).await.unwrap();
    assert!(q.job(&c.lease.job_id).await.unwrap().is_none(), "finished job purged");
    assert_eq!(q.depth().await.unwrap()[&queue].queued, 3);
}

/// Generations, keys and assets. `q` is the same store seen as a queue.
pub async fn run_metadata_suite<M: Metadata, Q: JobQueue>(m: &M, q: &Q) {
    let queue = queue_name("gen");
    let new = |key: Option<&str>, hash: &str, req: &str| {
        let id = new_id("gen");
        let mut job = NewJob::new(&queue, "render", serde_json::json!({"generation": id}));
        job.subject = Some(id.clone());
        (
            NewGeneration {
                id,
                spec: serde_json::json!({"version": 1}),
                spec_hash: hash.into(),
                priority: 3,
                webhook_url: Some("http://127.0.0.1:9/hook".into()),
                idempotency_key: key.map(Into::into),
                request_hash: req.into(),
                api_key_id: Some("key_a".into()),
                metadata: serde_json::json!({"team": "x"}),
                max_active: Some(2),
                dedupe: true,
            },
            job,
        )
    };
    let hash = new_id("hash");
    let (g, j) = new(Some("idem-1"), &hash, "req-1");
    let CreateOutcome::Created(id) = m.create_generation(g, j).await.unwrap() else { panic!("first create") };
    // Same key, same request: the same generation.
    let (g, j) = new(Some("idem-1"), &new_id("hash"), "req-1");
    assert_eq!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Idempotent(id.clone()));
    // Same key, different request: a conflict.
    let (g, j) = new(Some("idem-1"), &new_id("hash"), "req-2");
    assert!(matches!(m.create_generation(g, j).await, Err(StoreError::Conflict(_))));
    // Same spec hash while live: deduplicated.
    let (g, j) = new(None, &hash, "req-3");
    assert_eq!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Deduplicated(id.clone()));
    assert_eq!(m.active_generations("key_a").await.unwrap(), 1);
    // Same spec hash with dedupe off: a generation of its own (then removed again).
    let (mut g, j) = new(None, &hash, "req-4");
    g.dedupe = false;
    let CreateOutcome::Created(fresh) = m.create_generation(g, j).await.unwrap() else { panic!("dedupe off") };
    assert_ne!(fresh, id);
    assert_eq!(m.active_generations("key_a").await.unwrap(), 2);
    let fresh_job = m.generation(&fresh).await.unwrap().unwrap().job_id;
    assert_eq!(q.cancel(&fresh_job, vec![]).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(m.active_generations("key_a").await.unwrap(), 1);
    assert!(m.delete_generation(&fresh).await.unwrap());

    let rec = m.generation(&id).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.priority, rec.progress), (JobState::Queued, 3, 0.0));
    assert_eq!(rec.metadata, serde_json::json!({"team": "x"}));
    let c = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(c.subject.as_deref(), Some(id.as_str()));
    m.set_progress(&id, 0.5, "segments").await.unwrap();
    let rec = m.generation(&id).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.progress, rec.stage.as_deref(), rec.attempts),
        (JobState::Running, 0.5, Some("segments"), 1)
    );
    let result = GenerationResult { video_bytes: 10, video_etag: "e".into(), duration_s: 1.5, ..Default::default() };
    m.set_result(&id, &result).await.unwrap();
    q.complete(&c.lease, vec![]).await.unwrap();
    let rec = m.generation(&id).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.result.as_ref()), (JobState::Succeeded, Some(&result)));
    assert!(m.finished_since(now_ms() - 60_000).await.unwrap().iter().any(|f| f.id == id));

    // A failed generation does not deduplicate a new request.
    let hash2 = new_id("hash");
    let (g, j) = new(None, &hash2, "r");
    let CreateOutcome::Created(failed) = m.create_generation(g, j).await.unwrap() else { panic!() };
    let c = q.claim(&queue, "w", Duration::from_secs(60)).await.unwrap().unwrap();
    q.fail(&c.lease, "x", false, vec![]).await.unwrap();
    m.set_error(&failed, "render_failed", "ffmpeg exited 1").await.unwrap();
    let rec = m.generation(&failed).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.error_code.as_deref()), (JobState::Failed, Some("render_failed")));
    let (g, j) = new(None, &hash2, "r");
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Created(_)));

    // Listing: newest first, filtered, paginated by cursor.
    let page1 =
        m.list_generations(&ListFilter { limit: 2, api_key_id: Some("key_a".into()), ..Default::default() }).await;
    let page1 = page1.unwrap();
    assert_eq!(page1.len(), 2);
    assert!(page1[0].id > page1[1].id);
    let page2 = m
        .list_generations(&ListFilter {
            limit: 2,
            api_key_id: Some("key_a".into()),
            cursor: Some(page1[1].id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page2.len(), 1);
    assert!(page2[0].id < page1[1].id);
    let failed_only = m
        .list_generations(&ListFilter { state: Some(JobState::Failed), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert!(failed_only.iter().all(|g| g.state == JobState::Failed) && failed_only.iter().any(|g| g.id == failed));

    assert!(m.delete_generation(&id).await.unwrap());
    assert!(m.generation(&id).await.unwrap().is_none());
    assert!(!m.delete_generation(&id).await.unwrap());

    // API keys: found by hash, revocable once.
    let key = ApiKey {
        id: new_id("key"),
        name: "ci".into(),
        rate_per_s: 5.0,
        burst: 10,
        max_concurrent_jobs: 2,
        created_at_ms: now_ms(),
        revoked_at_ms: None,
    };
    let token_hash = hash_token(&new_id("tok"));
    m.create_api_key(&key, &token_hash).await.unwrap();
    assert_eq!(m.api_key_by_hash(&token_hash).await.unwrap().as_ref(), Some(&key));
    assert!(m.api_key_by_hash(&hash_token("nope")).await.unwrap().is_none());
    assert!(m.revoke_api_key(&key.id).await.unwrap());
    assert!(!m.revoke_api_key(&key.id).await.unwrap());
    assert!(m.api_key_by_hash(&token_hash).await.unwrap().unwrap().revoked_at_ms.is_some());
    assert!(m.list_api_keys().await.unwrap().iter().any(|k| k.id == key.id));

    let asset = Asset {
        id: new_id("ast"),
        sha256: "ab".into(),
        media_type: "image/png".into(),
        bytes: 3,
        width: Some(2),
        height: Some(1),
        file_name: Some("a.png".into()),
        api_key_id: None,
        created_at_ms: now_ms(),
    };
    m.put_asset(&asset).await.unwrap();

    // Quota: with 2 allowed, the third live generation of a key is refused, while replays and
    // duplicates of live ones still answer.
    let quota_key = new_id("key");
    let make = |idem: Option<&str>, hash: &str| {
        let (mut g, j) = new(idem, hash, "q");
        g.api_key_id = Some(quota_key.clone());
        (g, j)
    };
    let h1 = new_id("hash");
    let (g, j) = make(Some("q-1"), &h1);
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Created(_)));
    let (g, j) = make(None, &new_id("hash"));
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Created(_)));
    let (g, j) = make(None, &new_id("hash"));
    assert!(matches!(m.create_generation(g, j).await, Err(StoreError::Quota(_))), "over quota");
    let (g, j) = make(Some("q-1"), &h1);
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Idempotent(_)));
    let (g, j) = make(None, &h1);
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Deduplicated(_)));
    assert_eq!(m.asset(&asset.id).await.unwrap().as_ref(), Some(&asset));
    assert!(m.delete_asset(&asset.id).await.unwrap());
    m.ping().await.unwrap();
}

/// Waits (polling the clock, not sleeping blindly) until `now_ms()` is past `t`.
async fn wait_until_past(t: i64) {
    while now_ms() <= t {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Many identical submissions at once: exactly one is created, every other one gets its id.
pub async fn run_concurrent_dedup<M: Metadata>(m: Arc<M>, n: usize) {
    let queue = queue_name("dedup");
    let hash = new_id("hash");
    let mut tasks = vec![];
    for i in 0..n {
        let (m, queue, hash) = (m.clone(), queue.clone(), hash.clone());
        tasks.push(tokio::spawn(async move {
            let id = new_id("gen");
            let mut job = NewJob::new(&queue, "render", serde_json::json!({}));
            job.subject = Some(id.clone());
            let g = NewGeneration {
                id,
                spec: serde_json::json!({}),
                spec_hash: hash,
                priority: 0,
                webhook_url: None,
                idempotency_key: None,
                request_hash: format!("r{i}"),
                api_key_id: None,
                metadata: serde_json::json!({}),
                max_active: None,
                dedupe: true,
            };
            m.create_generation(g, job).await.unwrap()
        }));
    }
    let mut created = vec![];
    let mut deduped = vec![];
    for t in tasks {
        match t.await.unwrap() {
            CreateOutcome::Created(id) => created.push(id),
            CreateOutcome::Deduplicated(id) => deduped.push(id),
            o => panic!("unexpected {o:?}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one created");
    assert!(deduped.iter().all(|d| *d == created[0]), "the rest point at it");
}
