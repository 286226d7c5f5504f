//! Request timing (X-Response-Time, request ids, slow-request log), Prometheus metrics and the
//! rolling performance report (percentiles per route and per stage over a window).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

/// The process-wide Prometheus recorder (installed once; every server in the process shares it).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let long = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("reelsmith_http_request_duration_seconds".into()),
                    &latency,
                )
                .and_then(|b| b.set_buckets(&long))
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist (tests embedding the library); then ours only renders.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!("reelsmith_http_request_duration_seconds", Unit::Seconds, "HTTP latency per route");
    describe_gauge!("reelsmith_queue_depth", "Jobs per queue and state (queued, ready, running)");
    describe_histogram!("reelsmith_job_duration_seconds", Unit::Seconds, "Job attempt wall time per queue and outcome");
    describe_histogram!("reelsmith_stage_duration_seconds", Unit::Seconds, "Render stage wall time");
    describe_counter!("reelsmith_jobs_total", "Job attempts per queue and outcome");
    describe_counter!("reelsmith_cache_hits_total", "Stage cache hits in renders");
    describe_counter!("reelsmith_cache_misses_total", "Stage cache misses in renders");
    describe_gauge!("reelsmith_cache_hit_ratio", "Hits / (hits + misses) since start");
    describe_counter!(
        "reelsmith_worker_busy_milliseconds_total",
        Unit::Milliseconds,
        "Time workers spent on jobs per queue"
    );
    describe_counter!("reelsmith_webhook_deliveries_total", "Webhook delivery attempts per outcome");
}

/// What this process measures: requests (for the performance report), finished generations
/// (read incrementally), request ids, cache hits, and the Prometheus recorder.
pub struct Telemetry {
    pub requests: RequestLog,
    pub finished: FinishedHistory,
    pub request_ids: RequestIds,
    pub prometheus: PrometheusHandle,
    cache_counts: (std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64),
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            requests: Default::default(),
            finished: Default::default(),
            request_ids: Default::default(),
            prometheus: prometheus(),
            cache_counts: Default::default(),
        }
    }
}

impl Telemetry {
    /// Adds a render's cache hits and misses to this process's hit ratio (a gauge).
    pub fn note_cache(&self, hits: u64, misses: u64) {
        use std::sync::atomic::Ordering;
        let h = self.cache_counts.0.fetch_add(hits, Ordering::Relaxed) + hits;
        let m = self.cache_counts.1.fetch_add(misses, Ordering::Relaxed) + misses;
        if h + m > 0 {
            metrics::gauge!("reelsmith_cache_hit_ratio").set(h as f64 / (h + m) as f64);
        }
    }
}

/// Recent requests for the performance report: bounded, oldest dropped first.
/// (unix ms, route, status, latency ms, the calling key's id)
type LoggedRequest = (i64, Arc<str>, u16, f64, Option<Arc<str>>);

#[derive(Default)]
pub struct RequestLog {
    entries: Mutex<VecDeque<LoggedRequest>>,
}

const REQUEST_LOG_CAPACITY: usize = 200_000;

impl RequestLog {
    pub fn record(&self, route: Arc<str>, status: u16, ms: f64, key: Option<Arc<str>>) {
        let now = reelsmith_store::now_ms();
        let mut e = self.entries.lock().expect("request log");
        if e.len() == REQUEST_LOG_CAPACITY {
            e.pop_front();
        }
        e.push_back((now, route, status, ms, key));
    }

    /// Latencies and successes per route since `since_ms`: every caller's, or one key's.
    fn since(&self, since_ms: i64, key: Option<&str>) -> BTreeMap<String, (Vec<f64>, u64)> {
        let e = self.entries.lock().expect("request log");
        let mut out: BTreeMap<String, (Vec<f64>, u64)> = BTreeMap::new();
        for (t, route, status, ms, caller) in e.iter().rev() {
            if *t < since_ms {
                break;
            }
            if key.is_some() && caller.as_deref() != key {
                continue;
            }
            let slot = out.entry(route.to_string()).or_default();
            slot.0.push(*ms);
            slot.1 += (*status < 400) as u64;
        }
        out
    }
}

/// Short unique request ids: a per-process random prefix and a counter.
pub struct RequestIds {
    prefix: String,
    n: std::sync::atomic::AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self { prefix: format!("{:08x}", rand::random::<u32>()), n: Default::default() }
    }
}

impl RequestIds {
    pub fn next(&self) -> String {
        format!("req_{}{:x}", self.prefix, self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub success_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentile of sorted values (q in 0-100).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q.clamp(0.0, 100.0) / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(mut values: Vec<f64>, ok: u64) -> Percentiles {
    values.sort_by(f64::total_cmp);
    let n = values.len() as u64;
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    Percentiles {
        count: n,
        success_rate: if n == 0 { 1.0 } else { ok as f64 / n as f64 },
        p50_ms: r(percentile(&values, 50.0)),
        p95_ms: r(percentile(&values, 95.0)),
        p99_ms: r(percentile(&values, 99.0)),
        max_ms: r(values.last().copied().unwrap_or(0.0)),
    }
}

#[derive(Debug, Serialize)]
pub struct PerformanceReport {
    pub window_s: f64,
    pub routes: BTreeMap<String, Percentiles>,
    /// Render stages of generations that finished in the window.
    pub stages: BTreeMap<String, Percentiles>,
    /// Whole generations: queue wait and run time.
    pub generations: BTreeMap<String, Percentiles>,
    pub queues: BTreeMap<String, reelsmith_store::QueueDepth>,
    pub cache_hit_ratio: Option<f64>,
}

/// Finished generations as the performance report needs them: read from the store once each
/// (in pages, from where the last read stopped) and kept in memory, bounded by age and count,
/// so a report over 30 days costs a scan of memory, not of the database.
#[derive(Default)]
pub struct FinishedHistory {
    inner: tokio::sync::Mutex<History>,
}

#[derive(Default)]
struct History {
    rows: VecDeque<Finished>,
    /// Where the next read starts: (finished_at, id) of the last row read.
    after: Option<(i64, String)>,
    /// Stage names, one allocation each however many rows carry them.
    names: BTreeMap<String, Arc<str>>,
}

/// One finished generation's figures.
struct Finished {
    finished_at_ms: i64,
    key: Option<Arc<str>>,
    /// Queue wait, run time (ms) and whether it succeeded; None if it never started.
    run: Option<(f64, f64, bool)>,
    /// Render stages' and the whole render's wall time (ms).
    stages: Vec<(Arc<str>, f64)>,
    cache_hits: f64,
    cache_misses: f64,
}

/// The longest window the report takes (`parse_window`'s limit).
const HISTORY_MS: i64 = 30 * 86_400_000;
/// Most finished generations kept; past it the report covers the most recent ones.
const HISTORY_ROWS: usize = 200_000;
const HISTORY_PAGE: u32 = 2_000;

impl FinishedHistory {
    /// Reads what finished since the last call, then drops what is past the horizon.
    async fn refresh(
        &self,
        meta: &dyn reelsmith_store::Metadata,
    ) -> Result<tokio::sync::MutexGuard<'_, History>, crate::error::ApiError> {
        let mut h = self.inner.lock().await;
        let now = reelsmith_store::now_ms();
        let mut after = h.after.clone().unwrap_or((now - HISTORY_MS, String::new()));
        loop {
            let page = meta.finished_after((after.0, &after.1), HISTORY_PAGE).await?;
            let full = page.len() == HISTORY_PAGE as usize;
            for f in page {
                after = (f.finished_at_ms, f.id.clone());
                let row = Finished::of(f, &mut h.names);
                h.rows.push_back(row);
                if h.rows.len() > HISTORY_ROWS {
                    h.rows.pop_front();
                }
            }
            if !full {
                break;
            }
        }
        h.after = Some(after);
        while h.rows.front().is_some_and(|f| f.finished_at_ms < now - HISTORY_MS) {
            h.rows.pop_front();
        }
        Ok(h)
    }
}

impl Finished {
    fn of(f: reelsmith_store::FinishedGeneration, names: &mut BTreeMap<String, Arc<str>>) -> Self {
        let mut name = |n: &str| names.entry(n.to_string()).or_insert_with(|| Arc::from(n)).clone();
        let run = f.started_at_ms.map(|st| {
            let ok = f.state == reelsmith_store::JobState::Succeeded;
            ((st - f.created_at_ms) as f64, (f.finished_at_ms - st) as f64, ok)
        });
        let mut stages = vec![];
        let (mut cache_hits, mut cache_misses) = (0.0, 0.0);
        if let Some(rep) = &f.report {
            cache_hits = rep["cache_hits"].as_f64().unwrap_or(0.0);
            cache_misses = rep["cache_misses"].as_f64().unwrap_or(0.0);
            if let Some(obj) = rep["stages"].as_object() {
                for (n, st) in obj {
                    if let Some(w) = st["wall_s"].as_f64() {
                        stages.push((name(n), w * 1000.0));
                    }
                }
            }
            if let Some(w) = rep["wall_s"].as_f64() {
                stages.push((name("total"), w * 1000.0));
            }
        }
        Self {
            finished_at_ms: f.finished_at_ms,
            key: f.api_key_id.map(Arc::from),
            run,
            stages,
            cache_hits,
            cache_misses,
        }
    }
}

/// The report over the last `window_s` seconds: every caller's figures, or only those of
/// `key` (a key sees its own requests and generations).
pub async fn performance_report(
    requests: &RequestLog,
    finished: &FinishedHistory,
    meta: &dyn reelsmith_store::Metadata,
    queue: &dyn reelsmith_store::JobQueue,
    window_s: f64,
    key: Option<&str>,
) -> Result<PerformanceReport, crate::error::ApiError> {
    let since = reelsmith_store::now_ms() - (window_s * 1000.0) as i64;
    let routes = requests.since(since, key).into_iter().map(|(k, (v, ok))| (k, summarize(v, ok))).collect();
    let mut stages: BTreeMap<Arc<str>, Vec<f64>> = BTreeMap::new();
    let (mut wait, mut run, mut run_ok) = (vec![], vec![], 0);
    let (mut hits, mut misses) = (0.0, 0.0);
    {
        let history = finished.refresh(meta).await?;
        for f in history.rows.iter().rev() {
            if f.finished_at_ms < since {
                break;
            }
            if key.is_some() && f.key.as_deref() != key {
                continue;
            }
            if let Some((w, r, ok)) = f.run {
                wait.push(w);
                run.push(r);
                run_ok += ok as u64;
            }
            hits += f.cache_hits;
            misses += f.cache_misses;
            for (name, ms) in &f.stages {
                stages.entry(name.clone()).or_default().push(*ms);
            }
        }
    }
    let stages = stages
        .into_iter()
        .map(|(k, v)| {
            let n = v.len() as u64;
            (k.to_string(), summarize(v, n))
        })
        .collect();
    let wait_n = wait.len() as u64;
    let generations = BTreeMap::from([
        ("queue_wait".to_string(), summarize(wait, wait_n)),
        ("run".to_string(), summarize(run, run_ok)),
    ]);
    Ok(PerformanceReport {
        window_s,
        routes,
        stages,
        generations,
        queues: queue.depth().await?,
        cache_hit_ratio: (hits + misses > 0.0).then(|| hits / (hits + misses)),
    })
}

/// Parses windows like `90s`, `15m`, `2h`, `1d` (or plain seconds).
pub fn parse_window(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1.0),
        (i, 'm') => (&s[..i], 60.0),
        (i, 'h') => (&s[..i], 3600.0),
        (i, 'd') => (&s[..i], 86400.0),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v > 0.0 && v * mult <= 30.0 * 86400.0).then_some(v * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        let s = summarize(vec![3.0, 1.0, 2.0], 2);
        assert_eq!((s.count, s.p50_ms, s.max_ms), (3, 2.0, 3.0));
        assert!((s.success_rate - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("90s"), Some(90.0));
        assert_eq!(parse_window("15m"), Some(900.0));
        assert_eq!(parse_window("2h"), Some(7200.0));
        assert_eq!(parse_window("60"), Some(60.0));
        for bad in ["", "m", "-5m", "abc", "400d", "NaNs"] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
    }
}
