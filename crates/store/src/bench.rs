//! Queue benchmarks, shared by `reelsmith bench queue` and the backends' tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{JobQueue, NewJob, Result, new_id};

/// What [`claim_throughput`] measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClaimThroughput {
    pub jobs: usize,
    pub claimers: usize,
    /// Wall time from the first claim to the queue being empty.
    pub seconds: f64,
    /// Claim + complete pairs per second.
    pub claims_per_s: f64,
    /// Latency of one claim call (not counting its complete).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Enqueues `jobs` jobs on a fresh queue (not timed), then times `claimers` concurrent tasks
/// claiming and completing until the queue is empty.
pub async fn claim_throughput(q: Arc<dyn JobQueue>, jobs: usize, claimers: usize) -> Result<ClaimThroughput> {
    let queue = format!("bench-{}", new_id("q"));
    let claimers = claimers.max(1);
    // Enqueued from several tasks, so a backend that commits per call fills up in reasonable time.
    let mut fill = tokio::task::JoinSet::new();
    for t in 0..claimers {
        let (q, queue) = (q.clone(), queue.clone());
        fill.spawn(async move {
            for i in (t..jobs).step_by(claimers) {
                let job =
                    NewJob { priority: (i % 3) as i32, ..NewJob::new(&queue, "bench", serde_json::json!({"i": i})) };
                q.enqueue(job).await?;
            }
            Ok::<_, crate::StoreError>(())
        });
    }
    while let Some(r) = fill.join_next().await {
        r.map_err(|e| crate::StoreError::Corrupt(format!("enqueue task: {e}")))??;
    }

    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for c in 0..claimers {
        let (q, queue) = (q.clone(), queue.clone());
        workers.spawn(async move {
            let worker = format!("bench-{c}");
            let mut latencies = Vec::new();
            loop {
                let t = Instant::now();
                let Some(job) = q.claim(&queue, &worker, Duration::from_secs(300)).await? else { break };
                latencies.push(t.elapsed());
                q.complete(&job.lease, vec![]).await?;
            }
            Ok::<_, crate::StoreError>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(jobs);
    while let Some(r) = workers.join_next().await {
        latencies.extend(r.map_err(|e| crate::StoreError::Corrupt(format!("claim task: {e}")))??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(ClaimThroughput {
        jobs: latencies.len(),
        claimers,
        seconds,
        claims_per_s: latencies.len() as f64 / seconds.max(f64::EPSILON),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn claim_throughput_takes_every_job_once_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let s = crate::SqliteStore::open(&path, crate::sqlite::Durability::Normal).await.unwrap();
        let r = super::claim_throughput(Arc::new(s.clone()), 300, 4).await.unwrap();
        assert_eq!((r.jobs, r.claimers), (300, 4));
        assert!(r.seconds > 0.0 && r.claims_per_s > 0.0 && r.p50_ms <= r.p99_ms, "{r:?}");
        s.close().await;
    }
}
