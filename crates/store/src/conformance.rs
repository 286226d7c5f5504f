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

/// A generation request of `key` for `hash`, for the concurrent metadata checks.
fn concurrent_request(
    queue: &str,
    key: Option<&str>,
    hash: &str,
    idem: Option<&str>,
    max_active: Option<u32>,
) -> (NewGeneration, NewJob) {
    let id = new_id("gen");
    let mut job = NewJob::new(queue, "render", serde_json::json!({"generation": id}));
    job.subject = Some(id.clone());
    let g = NewGeneration {
        id,
        spec: serde_json::json!({"version": 1}),
        spec_hash: hash.into(),
        priority: 0,
        webhook_url: None,
        idempotency_key: idem.map(Into::into),
        request_hash: "same-request".into(),
        api_key_id: key.map(Into::into),
        metadata: serde_json::json!({}),
        max_active,
        dedupe: true,
        budget: None,
        prompt: None,
    };
    (g, job)
}

/// Many different submissions of one key at once, with `max_active` allowed: exactly that many
/// are created, every other one is refused with [`StoreError::Quota`] (two creates can never
/// both pass the check).
pub async fn run_concurrent_quota<M: Metadata>(m: Arc<M>, n: usize, max_active: u32) {
    let queue = queue_name("quota");
    let key = new_id("key");
    let mut tasks = vec![];
    for _ in 0..n {
        let (m, queue, key) = (m.clone(), queue.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let (g, j) = concurrent_request(&queue, Some(&key), &new_id("hash"), None, Some(max_active));
            m.create_generation(g, j).await
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(CreateOutcome::Created(_)) => created += 1,
            Err(StoreError::Quota(_)) => refused += 1,
            o => panic!("unexpected {o:?}"),
        }
    }
    assert_eq!(created, max_active as usize, "exactly the quota is created");
    assert_eq!(refused, n - max_active as usize, "the rest are refused");
    assert_eq!(m.active_generations(&key).await.unwrap(), u64::from(max_active));
}

/// Many different submissions of one key at once against a daily budget that fits `fits` of
/// them: exactly that many are created and charged (two creates can never both pass the cap).
pub async fn run_concurrent_budget<M: Metadata>(m: Arc<M>, n: usize, fits: u32) {
    let queue = queue_name("budget");
    let key = new_id("key");
    let day = usage_day(now_ms());
    let charge = Usage { megapixel_frames: 2.5, did_scenes: 1 };
    let cap = Usage { megapixel_frames: 2.5 * f64::from(fits), did_scenes: 1000 };
    let mut tasks = vec![];
    for _ in 0..n {
        let (m, queue, key) = (m.clone(), queue.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let (mut g, j) = concurrent_request(&queue, Some(&key), &new_id("hash"), None, None);
            g.budget = Some(Budget { day, charge, cap });
            m.create_generation(g, j).await
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(CreateOutcome::Created(_)) => created += 1,
            Err(StoreError::Budget { .. }) => refused += 1,
            o => panic!("unexpected {o:?}"),
        }
    }
    assert_eq!(created, fits as usize, "exactly what fits is created");
    assert_eq!(refused, n - fits as usize);
    let used = m.usage(&key, day).await.unwrap();
    assert_eq!(used, Usage { megapixel_frames: cap.megapixel_frames, did_scenes: u64::from(fits) });
}

/// Many retries of one request (same idempotency key) at once: one generation is created and
/// every retry answers with its id.
pub async fn run_concurrent_idempotency<M: Metadata>(m: Arc<M>, n: usize) {
    let queue = queue_name("idem");
    let key = new_id("key");
    let idem = new_id("idem");
    let mut tasks = vec![];
    for _ in 0..n {
        let (m, queue, key, idem) = (m.clone(), queue.clone(), key.clone(), idem.clone());
        tasks.push(tokio::spawn(async move {
            // Different spec hashes: only the idempotency key ties the requests together.
            let (g, j) = concurrent_request(&queue, Some(&key), &new_id("hash"), Some(&idem), None);
            m.create_generation(g, j).await.unwrap()
        }));
    }
    let mut created = vec![];
    let mut replayed = vec![];
    for t in tasks {
        match t.await.unwrap() {
            CreateOutcome::Created(id) => created.push(id),
            CreateOutcome::Idempotent(id) => replayed.push(id),
            o => panic!("unexpected {o:?}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one created");
    assert!(replayed.iter().all(|r| *r == created[0]), "every retry gets its id");
    assert_eq!(m.active_generations(&key).await.unwrap(), 1);
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
                budget: None,
                prompt: None,
            },
            job,
        )
    };
    let hash = new_id("hash");
    let (mut g, j) = new(Some("idem-1"), &hash, "req-1");
    let prompt =
        serde_json::json!({"request": {"topic": "volcanoes"}, "ledger": [{"provider": "openai", "units": 812.0}]});
    g.prompt = Some(prompt.clone());
    let CreateOutcome::Created(id) = m.create_generation(g, j).await.unwrap() else { panic!("first create") };
    // A prompt's plan and ledger come back as stored; a storyboard sent as is has none.
    assert_eq!(m.generation(&id).await.unwrap().unwrap().prompt, Some(prompt));
    // Its job plans it later: the storyboard and the plan replace what was there.
    let planned = serde_json::json!({"request": {"topic": "volcanoes"}, "plan": {"title": "Fire"}});
    let board = serde_json::json!({"version": 1, "scenes": [{"title": "Fire"}]});
    m.set_plan(&id, &board, &planned).await.unwrap();
    let g = m.generation(&id).await.unwrap().unwrap();
    assert_eq!((g.spec, g.prompt), (board, Some(planned)));
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
    let finished = m.finished_after((now_ms() - 60_000, ""), 1000).await.unwrap();
    let mine = finished.iter().find(|f| f.id == id).expect("the finished generation");
    assert_eq!((mine.state, mine.api_key_id.as_deref()), (JobState::Succeeded, Some("key_a")));
    // Paged by (finished_at, id): each page starts after the last row of the one before, and
    // the pages together are the whole list.
    let mut paged = vec![];
    let mut after = (now_ms() - 60_000, String::new());
    loop {
        let page = m.finished_after((after.0, &after.1), 1).await.unwrap();
        let Some(last) = page.last() else { break };
        after = (last.finished_at_ms, last.id.clone());
        paged.extend(page);
    }
    let order: Vec<(i64, &str)> = paged.iter().map(|f| (f.finished_at_ms, f.id.as_str())).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "strictly in order, none twice");
    assert!(finished.iter().all(|f| paged.contains(f)), "every finished generation is on a page");

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
        max_priority: 7,
        webhook_secret: Some("whsec_first".into()),
        limits: KeyLimits {
            job_megapixel_frames: Some(500.0),
            daily_megapixel_frames: Some(1000.0),
            daily_did_scenes: Some(3),
            daily_provider_usd: Some(2.5),
        },
        created_at_ms: now_ms(),
        revoked_at_ms: None,
    };
    let token_hash = hash_token(&new_id("tok"));
    m.create_api_key(&key, &token_hash).await.unwrap();
    assert_eq!(m.api_key_by_hash(&token_hash).await.unwrap().as_ref(), Some(&key));
    assert!(m.api_key_by_hash(&hash_token("nope")).await.unwrap().is_none());
    assert_eq!(m.api_key(&key.id).await.unwrap().as_ref(), Some(&key));
    assert!(m.api_key("key_nope").await.unwrap().is_none());
    // A rotated webhook secret replaces the old one.
    assert!(m.set_webhook_secret(&key.id, "whsec_second").await.unwrap());
    assert!(!m.set_webhook_secret("key_nope", "whsec_x").await.unwrap());
    assert_eq!(m.api_key(&key.id).await.unwrap().unwrap().webhook_secret.as_deref(), Some("whsec_second"));
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
        api_key_id: Some(new_id("key")),
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

    // Daily budgets: each creation charges the key's usage up to the cap and no further;
    // replays and duplicates cost nothing; a refused one changes nothing; days and keys are
    // separate.
    let budget_key = new_id("key");
    let day = usage_day(now_ms());
    let cap = Usage { megapixel_frames: 100.0, did_scenes: 2 };
    let charged = |idem: Option<&str>, hash: &str, charge: Usage, day: i64| {
        let (mut g, j) = new(idem, hash, "b");
        g.api_key_id = Some(budget_key.clone());
        g.max_active = None;
        g.budget = Some(Budget { day, charge, cap });
        (g, j)
    };
    let usage = |d: i64| m.usage(&budget_key, d);
    let c = Usage { megapixel_frames: 40.0, did_scenes: 1 };
    let h = new_id("hash");
    assert_eq!(usage(day).await.unwrap(), Usage::default());
    let (g, j) = charged(Some("b-1"), &h, c, day);
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Created(_)));
    assert_eq!(usage(day).await.unwrap(), c);
    let (g, j) = charged(Some("b-1"), &h, c, day);
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Idempotent(_)));
    let (g, j) = charged(None, &h, c, day);
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Deduplicated(_)));
    assert_eq!(usage(day).await.unwrap(), c, "replays and duplicates are free");
    let (g, j) = charged(None, &new_id("hash"), c, day);
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Created(_)));
    let twice = Usage { megapixel_frames: 80.0, did_scenes: 2 };
    let (g, j) = charged(None, &new_id("hash"), c, day);
    let refused_id = g.id.clone();
    match m.create_generation(g, j).await {
        Err(StoreError::Budget { used }) => assert_eq!(used, twice),
        o => panic!("a third passes the cap: {o:?}"),
    }
    assert!(m.generation(&refused_id).await.unwrap().is_none(), "nothing of a refused one is stored");
    assert_eq!(usage(day).await.unwrap(), twice);
    let pixels_only = Usage { megapixel_frames: 20.0, did_scenes: 0 };
    let (g, j) = charged(None, &new_id("hash"), pixels_only, day);
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Created(_)), "exactly the cap");
    assert_eq!(usage(day).await.unwrap(), Usage { megapixel_frames: 100.0, did_scenes: 2 });
    let too_big = Usage { megapixel_frames: 101.0, did_scenes: 0 };
    let (g, j) = charged(None, &new_id("hash"), too_big, day + 1);
    assert!(matches!(m.create_generation(g, j).await, Err(StoreError::Budget { .. })), "one charge over the cap");
    assert_eq!(usage(day + 1).await.unwrap(), Usage::default());
    let (g, j) = charged(None, &new_id("hash"), c, day + 1);
    assert!(matches!(m.create_generation(g, j).await.unwrap(), CreateOutcome::Created(_)), "a new day");
    assert_eq!(m.usage(&new_id("key"), day).await.unwrap(), Usage::default());
    // Provider spend adds up per key and day, beside the render budgets (which it leaves alone).
    assert_eq!(m.provider_spend(&budget_key, day).await.unwrap(), 0.0);
    m.add_provider_spend(&budget_key, day, 0.25).await.unwrap();
    m.add_provider_spend(&budget_key, day, 0.5).await.unwrap();
    assert!((m.provider_spend(&budget_key, day).await.unwrap() - 0.75).abs() < 1e-9);
    assert_eq!(usage(day).await.unwrap(), Usage { megapixel_frames: 100.0, did_scenes: 2 });
    let spender = new_id("key");
    m.add_provider_spend(&spender, day + 2, 0.125).await.unwrap();
    assert_eq!(m.provider_spend(&spender, day + 2).await.unwrap(), 0.125);
    assert_eq!(m.provider_spend(&spender, day).await.unwrap(), 0.0);
    // Per provider, over every key: its own day, its own total.
    let (paid, other) = (new_id("provider"), new_id("provider"));
    assert_eq!(m.provider_day_spend(&paid, day).await.unwrap(), 0.0);
    m.add_provider_day_spend(&paid, day, 0.5).await.unwrap();
    m.add_provider_day_spend(&paid, day, 0.25).await.unwrap();
    m.add_provider_day_spend(&other, day, 1.0).await.unwrap();
    m.add_provider_day_spend(&paid, day + 1, 2.0).await.unwrap();
    assert!((m.provider_day_spend(&paid, day).await.unwrap() - 0.75).abs() < 1e-9);
    assert_eq!(m.provider_day_spend(&other, day).await.unwrap(), 1.0);
    assert_eq!(m.provider_day_spend(&paid, day + 1).await.unwrap(), 2.0);
    assert_eq!(m.usage(&spender, day + 2).await.unwrap(), Usage::default());

    assert_eq!(m.asset(&asset.id).await.unwrap().as_ref(), Some(&asset));
    // Usage per key (the storage quota) and retention by last use.
    let owner = asset.api_key_id.clone();
    let (n, bytes) = m.asset_usage(owner.as_deref()).await.unwrap();
    assert!(n >= 1 && bytes >= asset.bytes, "{n} assets, {bytes} bytes");
    let stranger = new_id("key");
    assert_eq!(m.asset_usage(Some(&stranger)).await.unwrap(), (0, 0));
    // A key lists its own assets, never another's.
    assert!(m.assets_of(owner.as_deref(), 1000).await.unwrap().iter().any(|a| a == &asset));
    assert!(m.assets_of(Some(&stranger), 1000).await.unwrap().is_empty());
    let later = asset.created_at_ms + 1000;
    assert!(m.stale_assets(later, 100).await.unwrap().iter().any(|a| a.id == asset.id));
    m.touch_assets(std::slice::from_ref(&asset.id), later + 1).await.unwrap();
    assert!(!m.stale_assets(later, 100).await.unwrap().iter().any(|a| a.id == asset.id), "used since");
    // Touching backwards never makes an asset look older.
    m.touch_assets(std::slice::from_ref(&asset.id), 0).await.unwrap();
    assert!(!m.stale_assets(later, 100).await.unwrap().iter().any(|a| a.id == asset.id));
    assert!(m.delete_asset(&asset.id).await.unwrap());
    let (n2, bytes2) = m.asset_usage(owner.as_deref()).await.unwrap();
    assert_eq!((n2, bytes2), (n - 1, bytes - asset.bytes));
    m.ping().await.unwrap();
}

/// Templates and batches: owned per key, rows moved only from the status they are in, counts by
/// outcome (a submitted row counts as its generation's state), cancellation of pending rows.
pub async fn run_batch_suite<M: Metadata, Q: JobQueue>(m: &M, q: &Q) {
    let key = new_id("key");
    let other = new_id("key");
    let tpl = |owner: &str, name: &str| TemplateRecord {
        id: new_id("tpl"),
        api_key_id: Some(owner.into()),
        name: name.into(),
        body: serde_json::json!({"fields": {"NAME": {"type": "string"}}, "scenes": [{"text": "{{ NAME }}"}]}),
        created_at_ms: now_ms(),
    };
    let (a, b, c) = (tpl(&key, "first"), tpl(&key, "second"), tpl(&other, "theirs"));
    for t in [&a, &b, &c] {
        m.put_template(t).await.unwrap();
    }
    assert_eq!(m.template(&a.id).await.unwrap().as_ref(), Some(&a), "a template reads back as written");
    let mine: Vec<String> = m.templates_of(Some(&key), None, 10).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(mine, [b.id.clone(), a.id.clone()], "a key's templates, newest first, never another's");
    let page: Vec<String> =
        m.templates_of(Some(&key), Some(&b.id), 10).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(page, std::slice::from_ref(&a.id), "the cursor pages on");
    assert!(m.delete_template(&a.id).await.unwrap());
    assert!(!m.delete_template(&a.id).await.unwrap(), "deleted once");
    assert!(m.template(&a.id).await.unwrap().is_none());

    // A batch of four rows: one invalid from the start.
    let queue = queue_name("batch");
    let batch = BatchRecord {
        id: new_id("bat"),
        api_key_id: Some(key.clone()),
        template_id: Some(b.id.clone()),
        template: b.body.clone(),
        options: serde_json::json!({"priority": 1}),
        state: BatchState::Running,
        total: 4,
        created_at_ms: now_ms(),
        finished_at_ms: None,
    };
    let rows: Vec<NewBatchRow> = (0..4)
        .map(|i| NewBatchRow {
            index: i,
            merge: serde_json::json!({"NAME": format!("row {i}")}),
            status: if i == 2 { RowStatus::Invalid } else { RowStatus::Pending },
            error: (i == 2).then(|| serde_json::json!({"code": "merge_invalid", "issues": [{"path": "merge.NAME"}]})),
        })
        .collect();
    let pump = NewJob::new(&queue, "batch", serde_json::json!({"batch": batch.id}));
    m.create_batch(&batch, &rows, pump).await.unwrap();
    assert_eq!(m.batch(&batch.id).await.unwrap().as_ref(), Some(&batch));
    assert!(q.claim(&queue, "w", Duration::from_secs(30)).await.unwrap().is_some(), "the pump was enqueued with it");
    let read = m.batch_rows(&batch.id, None, None, 100).await.unwrap();
    assert_eq!(read.len(), 4);
    assert_eq!(read[2].error, rows[2].error, "a row's error reads back");
    assert_eq!(read[1].merge, rows[1].merge, "a row's values read back");
    let pending: Vec<u32> =
        m.batch_rows(&batch.id, Some(RowStatus::Pending), None, 100).await.unwrap().iter().map(|r| r.index).collect();
    assert_eq!(pending, [0, 1, 3]);
    let after: Vec<u32> = m.batch_rows(&batch.id, None, Some(1), 2).await.unwrap().iter().map(|r| r.index).collect();
    assert_eq!(after, [2, 3], "rows after an index, at most the limit");

    // Row 0 becomes a generation (queued), row 1 one that ran and succeeded.
    let gen_queue = queue_name("batchgen");
    let generation = |n: u32| {
        let id = new_id("gen");
        let mut job = NewJob::new(&gen_queue, "render", serde_json::json!({"generation": id}));
        job.subject = Some(id.clone());
        let g = NewGeneration {
            id: id.clone(),
            spec: serde_json::json!({"n": n}),
            spec_hash: new_id("hash"),
            priority: 1,
            webhook_url: None,
            idempotency_key: None,
            request_hash: new_id("req"),
            api_key_id: Some(key.clone()),
            metadata: serde_json::json!({}),
            max_active: None,
            dedupe: false,
            budget: None,
            prompt: None,
        };
        (g, job)
    };
    let (g0, j0) = generation(0);
    let (g1, j1) = generation(1);
    let (id0, id1) = (g0.id.clone(), g1.id.clone());
    m.create_generation(g0, j0).await.unwrap();
    m.create_generation(g1, j1).await.unwrap();
    for (i, id) in [(0, &id0), (1, &id1)] {
        assert!(
            m.move_batch_row(&batch.id, i, RowStatus::Pending, RowStatus::Submitted, Some(id), None).await.unwrap()
        );
    }
    assert!(
        !m.move_batch_row(&batch.id, 0, RowStatus::Pending, RowStatus::Submitted, Some("gen_x"), None).await.unwrap(),
        "a row moves only from the status it is in"
    );
    assert_eq!(m.key_batch_active(Some(&key)).await.unwrap(), 2);
    assert_eq!(m.key_batch_active(Some(&other)).await.unwrap(), 0, "another key's batches are not counted");
    // The older of the two (row 0's) is claimed first; run it to success.
    let claimed = q.claim(&gen_queue, "w", Duration::from_secs(30)).await.unwrap().unwrap();
    let ran = if claimed.subject.as_deref() == Some(id0.as_str()) { 0 } else { 1 };
    assert!(q.complete(&claimed.lease, vec![]).await.unwrap());
    assert_eq!(m.key_batch_active(Some(&key)).await.unwrap(), 1, "a finished generation is not active");
    let counts = m.batch_counts(&batch.id).await.unwrap();
    let want: std::collections::BTreeMap<String, u64> =
        [("invalid", 1), ("pending", 1), ("queued", 1), ("succeeded", 1)].map(|(k, v)| (k.to_string(), v)).into();
    assert_eq!(counts, want, "counts by outcome, a submitted row by its generation's state");
    let rows_now = m.batch_rows(&batch.id, Some(RowStatus::Submitted), None, 10).await.unwrap();
    assert_eq!(rows_now.iter().find(|r| r.index == ran).unwrap().generation_state, Some(JobState::Succeeded));
    assert!(m.move_batch_row(&batch.id, ran, RowStatus::Submitted, RowStatus::Done, None, None).await.unwrap());
    let done = &m.batch_rows(&batch.id, Some(RowStatus::Done), None, 10).await.unwrap()[0];
    assert_eq!(
        done.generation_id.as_deref(),
        Some(if ran == 0 { id0.as_str() } else { id1.as_str() }),
        "moving keeps the generation"
    );
    assert_eq!(done.outcome(), "succeeded");

    // Cancelling ends the batch once and cancels its pending rows, not its submitted ones.
    let at = now_ms();
    assert!(m.finish_batch(&batch.id, BatchState::Cancelled, at).await.unwrap());
    assert!(!m.finish_batch(&batch.id, BatchState::Completed, at + 1).await.unwrap(), "a batch ends once");
    let ended = m.batch(&batch.id).await.unwrap().unwrap();
    assert_eq!((ended.state, ended.finished_at_ms), (BatchState::Cancelled, Some(at)));
    let counts = m.batch_counts(&batch.id).await.unwrap();
    assert_eq!(counts.get("cancelled"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("pending"), None, "{counts:?}");
    assert_eq!(m.key_batch_active(Some(&key)).await.unwrap(), 0, "an ended batch's generations are not the pump's");
    // Retention: a batch that ended before the cutoff goes with its rows; a running one stays.
    let running = BatchRecord { id: new_id("bat"), state: BatchState::Running, finished_at_ms: None, ..batch.clone() };
    let pump = NewJob::new(&queue, "batch", serde_json::json!({"batch": running.id}));
    m.create_batch(&running, &rows, pump).await.unwrap();
    assert_eq!(m.purge_batches(at, 100).await.unwrap(), 0, "it ended at the cutoff, not before");
    assert!(m.purge_batches(at + 1, 100).await.unwrap() >= 1);
    assert!(m.batch(&batch.id).await.unwrap().is_none(), "the ended batch is gone");
    assert!(m.batch_rows(&batch.id, None, None, 10).await.unwrap().is_empty(), "with its rows");
    assert!(m.batch(&running.id).await.unwrap().is_some(), "a running batch stays");
    assert!(m.finish_batch(&running.id, BatchState::Completed, at).await.unwrap());
    let listed: Vec<String> = m.batches_of(Some(&key), None, 10).await.unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(listed, std::slice::from_ref(&running.id));
    assert!(m.batches_of(Some(&other), None, 10).await.unwrap().is_empty());
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
                budget: None,
                prompt: None,
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
// ---- Artifacts ------------------------------------------------------------------------------

/// Byte `i` of the deterministic large test file: position-dependent, so a shifted, repeated
/// or reordered part changes the content.
fn artifact_pattern(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i >> 20) as u8
}

async fn artifact_read(a: &dyn ArtifactStore, key: &str, start: u64, len: u64) -> Vec<u8> {
    use futures_util::TryStreamExt;
    let chunks: Vec<_> = a.read_range(key, start, len).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

/// A fresh source file in `scratch` (`put_file` may move it away).
fn artifact_src(scratch: &std::path::Path, content: &[u8]) -> std::path::PathBuf {
    let p = scratch.join(new_id("src"));
    std::fs::write(&p, content).unwrap();
    p
}

/// The semantics every artifact backend must have (local files, object storage). Keys live
/// under a fresh generation id, so a shared bucket or directory can host the suite; `scratch`
/// is a local directory for source files. Leaves nothing behind.
pub async fn run_artifact_suite(a: &dyn ArtifactStore, scratch: &std::path::Path) {
    use futures_util::StreamExt;
    use sha2::Digest;

    let g = new_id("gen");
    let key = format!("{g}/video.mp4");
    assert!(!a.describe().is_empty(), "describe names the backend");
    a.ping().await.expect("a working store answers ping");

    // Put, size, ranges.
    assert_eq!(a.put_file(&key, &artifact_src(scratch, b"0123456789")).await.unwrap(), 10, "put_file returns the size");
    assert_eq!(a.size(&key).await.unwrap(), Some(10));
    assert_eq!(artifact_read(a, &key, 0, 10).await, b"0123456789", "whole file");
    assert_eq!(artifact_read(a, &key, 3, 4).await, b"3456", "a middle range");
    assert_eq!(artifact_read(a, &key, 8, 100).await, b"89", "a range past the end is clipped");
    assert_eq!(artifact_read(a, &key, 0, u64::MAX).await, b"0123456789", "an open-ended range");
    assert_eq!(artifact_read(a, &key, 10, 5).await, b"", "a range starting at the end is empty");
    assert_eq!(artifact_read(a, &key, 50, 5).await, b"", "a range starting past the end is empty");
    assert_eq!(artifact_read(a, &key, 4, 0).await, b"", "an empty range");

    // Missing keys.
    let missing = format!("{g}/missing.mp4");
    assert_eq!(a.size(&missing).await.unwrap(), None, "size of a missing key is None");
    assert!(a.read_range(&missing, 0, 10).await.is_err(), "reading a missing key fails");
    assert!(a.read_range(&missing, 0, 0).await.is_err(), "even an empty range of a missing key fails");

    // Replacing keeps one object, with the new content.
    assert_eq!(a.put_file(&key, &artifact_src(scratch, b"abc")).await.unwrap(), 3);
    assert_eq!(a.size(&key).await.unwrap(), Some(3));
    assert_eq!(artifact_read(a, &key, 0, 100).await, b"abc", "the replacement, not a mix");

    // Empty files, nested keys, and a sibling prefix that shares the first characters.
    let empty = format!("{g}/empty.vtt");
    assert_eq!(a.put_file(&empty, &artifact_src(scratch, b"")).await.unwrap(), 0);
    assert_eq!(a.size(&empty).await.unwrap(), Some(0));
    assert_eq!(artifact_read(a, &empty, 0, 10).await, b"", "an empty file reads as empty");
    let nested = format!("{g}/frames/0001.png");
    a.put_file(&nested, &artifact_src(scratch, b"n")).await.unwrap();
    let sibling = format!("{g}x/video.mp4");
    a.put_file(&sibling, &artifact_src(scratch, b"s")).await.unwrap();
    assert_eq!(a.delete_prefix(&g).await.unwrap(), 3, "delete_prefix counts every key under prefix/, nested too");
    for k in [&key, &empty, &nested] {
        assert_eq!(a.size(k).await.unwrap(), None, "{k} deleted");
    }
    assert_eq!(a.size(&sibling).await.unwrap(), Some(1), "deleting {g} keeps {g}x/…");
    assert_eq!(a.delete_prefix(&g).await.unwrap(), 0, "deleting again finds nothing");
    assert_eq!(a.delete_prefix(&format!("{g}x")).await.unwrap(), 1);

    // A large file (over any multipart threshold) round-trips byte for byte.
    const BIG: u64 = 20 * 1024 * 1024 + 12_345;
    let big_src = scratch.join(new_id("big"));
    let mut want = sha2::Sha256::new();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big_src).unwrap());
        let mut chunk = Vec::with_capacity(1 << 20);
        let mut i = 0;
        while i < BIG {
            chunk.clear();
            chunk.extend((i..BIG.min(i + (1 << 20))).map(artifact_pattern));
            want.update(&chunk);
            f.write_all(&chunk).unwrap();
            i += chunk.len() as u64;
        }
        f.flush().unwrap();
    }
    let big = format!("{g}/big.mp4");
    assert_eq!(a.put_file(&big, &big_src).await.unwrap(), BIG);
    assert_eq!(a.size(&big).await.unwrap(), Some(BIG));
    let mut got = sha2::Sha256::new();
    let mut n = 0u64;
    let mut s = a.read_range(&big, 0, BIG).await.unwrap();
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        n += c.len() as u64;
        got.update(&c);
    }
    assert_eq!(n, BIG, "the whole large file reads back");
    assert_eq!(hex::encode(got.finalize()), hex::encode(want.finalize()), "the large file round-trips byte for byte");
    // Ranges across 5 and 8 MiB (common part sizes) and at the very end.
    for (start, len) in [(5 * 1024 * 1024 - 7, 14), (8 * 1024 * 1024 - 3, 9), (BIG - 5, 100)] {
        let want: Vec<u8> = (start..BIG.min(start + len)).map(artifact_pattern).collect();
        assert_eq!(artifact_read(a, &big, start, len).await, want, "range {start}+{len} of the large file");
    }
    assert_eq!(a.delete_prefix(&g).await.unwrap(), 1);
    assert_eq!(a.size(&big).await.unwrap(), None);

    // Invalid keys are refused by every operation, before touching anything.
    let src = artifact_src(scratch, b"x");
    for bad in
        ["", "/", "../x", "/etc/passwd", "a/../../b", "a/./b", "a//b", "a/", ".tmp/x", "a/.hidden", "a b", "a\\b", "ä"]
    {
        assert!(a.size(bad).await.is_err(), "size {bad:?}");
        assert!(a.read_range(bad, 0, 1).await.is_err(), "read_range {bad:?}");
        assert!(a.put_file(bad, &src).await.is_err(), "put_file {bad:?}");
        assert!(a.delete_prefix(bad).await.is_err(), "delete_prefix {bad:?}");
        assert!(a.presigned_get(bad, Duration::from_secs(60)).await.is_err(), "presigned_get {bad:?}");
    }
    assert!(src.exists(), "a refused put leaves its source alone");
    let _ = std::fs::remove_file(&src);
}

/// Two stores over the same storage with different roots or prefixes: the same key names two
/// different artifacts, and deleting in one leaves the other alone.
pub async fn run_artifact_isolation_suite(a: &dyn ArtifactStore, b: &dyn ArtifactStore, scratch: &std::path::Path) {
    let g = new_id("gen");
    let key = format!("{g}/video.mp4");
    a.put_file(&key, &artifact_src(scratch, b"from a")).await.unwrap();
    assert_eq!(b.size(&key).await.unwrap(), None, "{} does not see keys of {}", b.describe(), a.describe());
    b.put_file(&key, &artifact_src(scratch, b"from b!")).await.unwrap();
    assert_eq!(artifact_read(a, &key, 0, 100).await, b"from a");
    assert_eq!(artifact_read(b, &key, 0, 100).await, b"from b!");
    assert_eq!(a.delete_prefix(&g).await.unwrap(), 1, "only its own key");
    assert_eq!(b.size(&key).await.unwrap(), Some(7), "the other store keeps its key");
    assert_eq!(b.delete_prefix(&g).await.unwrap(), 1);
}
