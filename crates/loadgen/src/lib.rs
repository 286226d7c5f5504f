//! The engine of `reelsmith bench load`: virtual users hammer a Reelsmith server over HTTP/1.1
//! keep-alive, each request's latency (send to fully read body) goes into a per-endpoint HDR
//! histogram, and the report can be gated in CI with thresholds such as `p95>500ms,errors>0`.

pub mod e2e;
mod threshold;

pub use threshold::{Metric, Op, Threshold, check, parse_thresholds};

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Client, RequestBuilder, Url};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Endpoint labels, as used in [`LoadReport::endpoints`] and in scoped thresholds.
pub const HEALTH: &str = "GET /health";
pub const SUBMIT: &str = "POST /api/v1/generations";
pub const POLL: &str = "GET /api/v1/generations/{id}";
pub const ENDPOINTS: [&str; 3] = [HEALTH, SUBMIT, POLL];

/// Histogram range: 1 µs to one hour, 3 significant digits.
const MAX_MICROS: u64 = 3_600_000_000;
/// Known job ids kept for polling; beyond this, new ids replace random old ones.
const MAX_KNOWN_IDS: usize = 10_000;
const LONGEST_RUN: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load configuration: {0}")]
    Config(String),
    #[error("invalid duration {input:?}: {reason}")]
    Duration { input: String, reason: String },
    #[error("invalid threshold {expr:?}: {reason}")]
    Threshold { expr: String, reason: String },
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("setup against {url}: {reason}")]
    Setup { url: String, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What each virtual user requests; `Mixed` weights are relative (30/20/50 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Health,
    Submit,
    Poll,
    Mixed { health: u32, submit: u32, poll: u32 },
}

impl Scenario {
    pub const fn mixed() -> Self {
        Scenario::Mixed { health: 30, submit: 20, poll: 50 }
    }

    /// Weights of health, submit, poll.
    fn weights(&self) -> [u32; 3] {
        match *self {
            Scenario::Health => [1, 0, 0],
            Scenario::Submit => [0, 1, 0],
            Scenario::Poll => [0, 0, 1],
            Scenario::Mixed { health, submit, poll } => [health, submit, poll],
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::mixed()
    }
}

impl FromStr for Scenario {
    type Err = LoadError;

    /// `health`, `submit`, `poll`, `mixed` or `mixed:H/S/P` (relative weights).
    fn from_str(s: &str) -> Result<Self, LoadError> {
        let bad = |reason: &str| LoadError::Config(format!("scenario {s:?}: {reason}"));
        match s.trim() {
            "health" => Ok(Scenario::Health),
            "submit" => Ok(Scenario::Submit),
            "poll" => Ok(Scenario::Poll),
            "mixed" => Ok(Scenario::mixed()),
            other => {
                let Some(w) = other.strip_prefix("mixed:") else {
                    return Err(bad("expected mixed, health, submit, poll or mixed:H/S/P"));
                };
                let parts: Vec<&str> = w.split('/').collect();
                let [h, su, p] = parts.as_slice() else {
                    return Err(bad("mixed weights are three numbers: mixed:30/20/50"));
                };
                let num =
                    |x: &str| x.trim().parse::<u32>().map_err(|_| bad(&format!("weight {x:?} is not a whole number")));
                Ok(Scenario::Mixed { health: num(h)?, submit: num(su)?, poll: num(p)? })
            }
        }
    }
}

/// Steady load, or `users` extra virtual users from `at` for `hold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pattern {
    #[default]
    Steady,
    Spike {
        at: Duration,
        users: usize,
        hold: Duration,
    },
}

/// Pause after each request, drawn uniformly from `min..=max` per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThinkTime {
    pub min: Duration,
    pub max: Duration,
}

impl FromStr for ThinkTime {
    type Err = LoadError;

    /// `100ms` (fixed) or `100ms..500ms`.
    fn from_str(s: &str) -> Result<Self, LoadError> {
        let (min, max) = match s.split_once("..") {
            Some((a, b)) => (parse_duration(a)?, parse_duration(b)?),
            None => {
                let d = parse_duration(s)?;
                (d, d)
            }
        };
        if min > max {
            return Err(LoadError::Duration { input: s.into(), reason: "the range's start is after its end".into() });
        }
        Ok(ThinkTime { min, max })
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub users: usize,
    pub duration: Duration,
    /// Users start evenly spread over this time.
    pub ramp_up: Duration,
    pub think_time: ThinkTime,
    pub scenario: Scenario,
    pub pattern: Pattern,
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// JSON body of a submission; every `{{n}}` becomes a number unique to the submission.
    pub submit_template: String,
    pub request_timeout: Duration,
    /// After a 429, the user waits for its `Retry-After` (at least its think time).
    pub honor_retry_after: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:8080".into(),
            users: 50,
            duration: Duration::from_secs(30),
            ramp_up: Duration::ZERO,
            think_time: ThinkTime::default(),
            scenario: Scenario::mixed(),
            pattern: Pattern::Steady,
            api_key: None,
            submit_template: default_submit_template(),
            request_timeout: Duration::from_secs(30),
            honor_retry_after: true,
        }
    }
}

/// A tiny valid submission: one 1 s title card at 320x180, 10 fps.
pub fn default_submit_template() -> String {
    r#"{"spec":{"version":1,"output":{"width":320,"height":180,"fps":10},"scenes":[{"title":"load {{n}}","duration":1}]},"priority":1}"#
        .to_string()
}

/// `template` with every `{{n}}` replaced by `n`.
pub fn render_template(template: &str, n: u64) -> String {
    template.replace("{{n}}", &n.to_string())
}

/// Numbers for `{{n}}`: unique in this process, and starting at a random offset so that
/// consecutive runs against one server do not resubmit (and get deduplicated to) old jobs.
/// Values stay below 2^53, exact in any JSON reader.
fn next_submission_number() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| u64::from(rand::random::<u32>()) << 21);
    base + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `1.5s`, `250ms`, `2m`, `1h`, `500us` (or `µs`), or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, LoadError> {
    let bad = |reason: &str| LoadError::Duration { input: s.into(), reason: reason.into() };
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    if num.is_empty() {
        return Err(bad("expected a number followed by a unit, e.g. 500ms or 30s"));
    }
    let value: f64 = num.parse().map_err(|_| bad(&format!("{num:?} is not a number")))?;
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => return Err(bad("missing unit (us, ms, s, m or h)")),
        u => return Err(bad(&format!("unknown unit {u:?} (expected us, ms, s, m or h)"))),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad("out of range"))
}

impl LoadConfig {
    fn validate(&self) -> Result<(Url, usize), LoadError> {
        let bad = |m: String| Err(LoadError::Config(m));
        let base = Url::parse(self.url.trim()).map_err(|e| LoadError::Config(format!("url {:?}: {e}", self.url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return bad(format!("url {:?}: expected an http:// or https:// URL", self.url));
        }
        if self.duration.is_zero() || self.duration > LONGEST_RUN {
            return bad(format!("duration must be more than 0 and at most {} h", LONGEST_RUN.as_secs() / 3600));
        }
        if self.ramp_up > self.duration {
            return bad("ramp-up is longer than the run".into());
        }
        if self.think_time.min > self.think_time.max {
            return bad("think time minimum is above its maximum".into());
        }
        if self.request_timeout.is_zero() {
            return bad("request timeout must be more than 0".into());
        }
        if self.scenario.weights().iter().map(|&w| u64::from(w)).sum::<u64>() == 0 {
            return bad("the scenario's weights are all 0".into());
        }
        let spike_users = match self.pattern {
            Pattern::Steady => 0,
            Pattern::Spike { at, users, hold } => {
                if at >= self.duration {
                    return bad("the spike starts after the run ends".into());
                }
                if users == 0 || hold.is_zero() {
                    return bad("a spike needs at least one user and a hold time above 0".into());
                }
                users
            }
        };
        let peak = self.users.checked_add(spike_users).filter(|&p| p > 0 && p <= 1_000_000);
        let Some(peak) = peak else {
            return bad("the number of users must be between 1 and 1000000".into());
        };
        let sample = render_template(&self.submit_template, 0);
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&sample) {
            return bad(format!("the submit template is not valid JSON once {{{{n}}}} is replaced: {e}"));
        }
        Ok((base, peak))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub count: u64,
    /// Transport errors, timeouts and responses with status >= 400.
    pub errors: u64,
    /// Responses with status 429 (also counted in `errors`).
    pub rate_limited: u64,
    /// Requests that ran past the request timeout (also counted in `errors`).
    pub timeouts: u64,
    /// Other failures without an HTTP status: connect, reset, bad response (also in `errors`).
    pub transport_errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Responses per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// From the first user's start until the last user finished its last request.
    pub duration_s: f64,
    /// Steady users; `peak_users` adds the spike's.
    pub users: usize,
    pub peak_users: usize,
    /// Requests made before measuring (listing known jobs, maybe one submission); not counted
    /// anywhere else in the report.
    pub setup_requests: u64,
    pub total_requests: u64,
    pub total_errors: u64,
    pub rps: f64,
    /// All endpoints together (latencies from the merged histograms).
    pub overall: EndpointStats,
    pub endpoints: BTreeMap<String, EndpointStats>,
}

/// Nearest-rank percentile `q` (0–100, clamped) of ascending `sorted_ms`; NaN when empty or
/// when `q` is NaN. `q = 0` gives the smallest value, `q = 100` the largest.
pub fn percentile(sorted_ms: &[f64], q: f64) -> f64 {
    if sorted_ms.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    let n = sorted_ms.len();
    let rank = (q.clamp(0.0, 100.0) * n as f64 / 100.0).ceil() as usize;
    sorted_ms[rank.clamp(1, n) - 1]
}

/// What one request came to.
struct Outcome {
    latency: Duration,
    status: Option<u16>,
    timed_out: bool,
    retry_after: Option<Duration>,
    id: Option<String>,
}

/// Counts and latencies of one endpoint.
struct Acc {
    hist: Histogram<u64>,
    count: u64,
    errors: u64,
    rate_limited: u64,
    timeouts: u64,
    transport_errors: u64,
    statuses: BTreeMap<u16, u64>,
}

impl Acc {
    fn new() -> Self {
        Acc {
            hist: Histogram::new_with_max(MAX_MICROS, 3).expect("constant histogram bounds are valid"),
            count: 0,
            errors: 0,
            rate_limited: 0,
            timeouts: 0,
            transport_errors: 0,
            statuses: BTreeMap::new(),
        }
    }

    fn record(&mut self, o: &Outcome) {
        self.count += 1;
        let micros = u64::try_from(o.latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(micros);
        match o.status {
            Some(s) => {
                *self.statuses.entry(s).or_default() += 1;
                if s >= 400 {
                    self.errors += 1;
                }
                if s == 429 {
                    self.rate_limited += 1;
                }
            }
            None => {
                self.errors += 1;
                if o.timed_out {
                    self.timeouts += 1;
                } else {
                    self.transport_errors += 1;
                }
            }
        }
    }

    fn merge(&mut self, other: &Acc) -> Result<(), LoadError> {
        self.hist.add(&other.hist).map_err(|e| LoadError::Internal(format!("merging histograms: {e:?}")))?;
        self.count += other.count;
        self.errors += other.errors;
        self.rate_limited += other.rate_limited;
        self.timeouts += other.timeouts;
        self.transport_errors += other.transport_errors;
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        Ok(())
    }

    fn stats(&self, secs: f64) -> EndpointStats {
        let empty = self.hist.is_empty();
        let ms = |q: f64| if empty { 0.0 } else { self.hist.value_at_quantile(q) as f64 / 1000.0 };
        EndpointStats {
            count: self.count,
            errors: self.errors,
            rate_limited: self.rate_limited,
            timeouts: self.timeouts,
            transport_errors: self.transport_errors,
            rps: if secs > 0.0 { self.count as f64 / secs } else { 0.0 },
            p50_ms: ms(0.50),
            p75_ms: ms(0.75),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: if empty { 0.0 } else { self.hist.max() as f64 / 1000.0 },
            mean_ms: if empty { 0.0 } else { self.hist.mean() / 1000.0 },
            statuses: self.statuses.clone(),
        }
    }
}

#[derive(Default)]
struct Recorder(BTreeMap<&'static str, Acc>);

impl Recorder {
    fn record(&mut self, label: &'static str, o: &Outcome) {
        self.0.entry(label).or_insert_with(Acc::new).record(o);
    }

    fn merge(&mut self, other: Recorder) -> Result<(), LoadError> {
        for (label, acc) in other.0 {
            match self.0.get_mut(label) {
                Some(mine) => mine.merge(&acc)?,
                None => {
                    self.0.insert(label, acc);
                }
            }
        }
        Ok(())
    }
}

struct Shared {
    client: Client,
    health: Url,
    generations: Url,
    list: Url,
    weights: [u32; 3],
    think: ThinkTime,
    template: String,
    honor_retry_after: bool,
    ids: Mutex<Vec<String>>,
}

impl Shared {
    fn submit_request(&self) -> RequestBuilder {
        let body = render_template(&self.template, next_submission_number());
        self.client.post(self.generations.clone()).header(CONTENT_TYPE, "application/json").body(body)
    }

    fn poll_request(&self, id: &str) -> RequestBuilder {
        let mut url = self.generations.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.push(id);
        }
        self.client.get(url)
    }

    fn add_id(&self, id: String, rng: &mut StdRng) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() < MAX_KNOWN_IDS {
            ids.push(id);
        } else {
            let i = rng.random_range(0..ids.len());
            ids[i] = id;
        }
    }

    fn random_id(&self, rng: &mut StdRng) -> Option<String> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.is_empty() { None } else { Some(ids[rng.random_range(0..ids.len())].clone()) }
    }
}

/// `id` of a JSON response body, a string or a number.
fn json_id(v: &serde_json::Value) -> Option<String> {
    match v.get("id")? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Sends `req` and reads the whole body; the latency covers both.
async fn send(req: RequestBuilder, want_id: bool) -> Outcome {
    let start = Instant::now();
    let result = async {
        let resp = req.send().await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, retry_after, body))
    }
    .await;
    let latency = start.elapsed();
    match result {
        Ok((status, retry_after, body)) => {
            let id = if want_id && status.is_success() {
                serde_json::from_slice::<serde_json::Value>(&body).ok().as_ref().and_then(json_id)
            } else {
                None
            };
            Outcome { latency, status: Some(status.as_u16()), timed_out: false, retry_after, id }
        }
        Err(e) => {
            tracing::debug!("request failed: {e}");
            Outcome { latency, status: None, timed_out: e.is_timeout(), retry_after: None, id: None }
        }
    }
}

/// One virtual user: requests from `start` until `stop`, then returns what it measured.
async fn user(shared: Arc<Shared>, start: Instant, stop: Instant, mut rng: StdRng) -> Recorder {
    tokio::time::sleep_until(start).await;
    let mut rec = Recorder::default();
    let [health, submit, _] = shared.weights;
    let total = shared.weights.iter().map(|&w| u64::from(w)).sum::<u64>();
    while Instant::now() < stop {
        let pick = rng.random_range(0..total);
        let poll_id = if pick >= u64::from(health) + u64::from(submit) { shared.random_id(&mut rng) } else { None };
        let (label, outcome) = if pick < u64::from(health) {
            (HEALTH, send(shared.client.get(shared.health.clone()), false).await)
        } else if let Some(id) = poll_id {
            (POLL, send(shared.poll_request(&id), false).await)
        } else {
            // A submission (or a poll with no job known yet, which cannot happen after setup).
            (SUBMIT, send(shared.submit_request(), true).await)
        };
        rec.record(label, &outcome);
        if let Some(id) = outcome.id {
            shared.add_id(id, &mut rng);
        }
        let think = shared.think;
        let mut pause = if think.min < think.max { rng.random_range(think.min..=think.max) } else { think.min };
        if shared.honor_retry_after && outcome.status == Some(429) {
            pause = pause.max(outcome.retry_after.unwrap_or(Duration::from_secs(1)));
        }
        if !pause.is_zero() {
            let remaining = stop.saturating_duration_since(Instant::now());
            tokio::time::sleep(pause.min(remaining)).await;
        }
    }
    rec
}

/// Makes sure there is a job to poll: lists known jobs, and submits one if there are none.
/// Returns the number of requests made.
async fn seed(shared: &Shared) -> Result<u64, LoadError> {
    let listed = async {
        let resp = shared.client.get(shared.list.clone()).send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
        let items = body.get("items").and_then(|i| i.as_array()).ok_or("no \"items\" array in the response")?;
        Ok::<Vec<String>, String>(items.iter().filter_map(json_id).collect())
    }
    .await;
    let mut ids = match listed {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("listing jobs at {} failed ({e}); submitting one to poll", shared.list);
            vec![]
        }
    };
    let mut requests = 1;
    if ids.is_empty() {
        requests += 1;
        let o = send(shared.submit_request(), true).await;
        match o.id {
            Some(id) => ids.push(id),
            None => {
                let got = o.status.map_or("no response".to_string(), |s| format!("status {s}"));
                return Err(LoadError::Setup {
                    url: shared.generations.to_string(),
                    reason: format!("no job to poll: the server lists none and a submission gave no id ({got})"),
                });
            }
        }
    }
    ids.truncate(MAX_KNOWN_IDS);
    *shared.ids.lock().unwrap_or_else(|e| e.into_inner()) = ids;
    Ok(requests)
}

fn endpoint_url(base: &Url, segments: &[&str]) -> Result<Url, LoadError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|_| LoadError::Config(format!("{base} cannot be a base URL")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Runs the load described by `cfg` and reports what it measured.
pub async fn run(cfg: &LoadConfig) -> Result<LoadReport, LoadError> {
    let (base, peak_users) = cfg.validate()?;
    let mut headers = HeaderMap::new();
    if let Some(key) = &cfg.api_key {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            .map_err(|_| LoadError::Config("the API key has characters not allowed in an HTTP header".into()))?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    let client = Client::builder()
        .default_headers(headers)
        .http1_only()
        .pool_max_idle_per_host(peak_users)
        .tcp_nodelay(true)
        .timeout(cfg.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("reelsmith-loadgen/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let generations = endpoint_url(&base, &["api", "v1", "generations"])?;
    let mut list = generations.clone();
    list.set_query(Some("limit=100"));
    let shared = Arc::new(Shared {
        client,
        health: endpoint_url(&base, &["health"])?,
        generations,
        list,
        weights: cfg.scenario.weights(),
        think: cfg.think_time,
        template: cfg.submit_template.clone(),
        honor_retry_after: cfg.honor_retry_after,
        ids: Mutex::new(vec![]),
    });
    let setup_requests = if shared.weights[2] > 0 { seed(&shared).await? } else { 0 };

    let t0 = Instant::now();
    let end = t0 + cfg.duration;
    let mut users = tokio::task::JoinSet::new();
    for i in 0..cfg.users {
        let start = t0 + cfg.ramp_up.mul_f64(i as f64 / cfg.users as f64);
        users.spawn(user(shared.clone(), start, end, StdRng::from_rng(&mut rand::rng())));
    }
    if let Pattern::Spike { at, users: n, hold } = cfg.pattern {
        let start = t0 + at;
        let stop = start.checked_add(hold).map_or(end, |s| s.min(end));
        for _ in 0..n {
            users.spawn(user(shared.clone(), start, stop, StdRng::from_rng(&mut rand::rng())));
        }
    }
    let mut all = Recorder::default();
    while let Some(done) = users.join_next().await {
        all.merge(done.map_err(|e| LoadError::Internal(format!("a virtual user failed: {e}")))?)?;
    }
    let secs = t0.elapsed().as_secs_f64();

    let mut overall = Acc::new();
    for acc in all.0.values() {
        overall.merge(acc)?;
    }
    let overall = overall.stats(secs);
    Ok(LoadReport {
        duration_s: secs,
        users: cfg.users,
        peak_users,
        setup_requests,
        total_requests: overall.count,
        total_errors: overall.errors,
        rps: overall.rps,
        endpoints: all.0.iter().map(|(l, a)| (l.to_string(), a.stats(secs))).collect(),
        overall,
    })
}

impl LoadReport {
    /// A table for humans: one row per endpoint and one for all of them, latencies in ms.
    pub fn to_table(&self) -> String {
        let head =
            ["endpoint", "requests", "errors", "429", "req/s", "p50", "p75", "p95", "p99", "max", "mean", "statuses"];
        let row = |name: &str, s: &EndpointStats| -> Vec<String> {
            let statuses: Vec<String> = s.statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            let mut other = vec![];
            if s.timeouts > 0 {
                other.push(format!("timeout:{}", s.timeouts));
            }
            if s.transport_errors > 0 {
                other.push(format!("transport:{}", s.transport_errors));
            }
            let ms = |v: f64| format!("{v:.2}");
            vec![
                name.to_string(),
                s.count.to_string(),
                s.errors.to_string(),
                s.rate_limited.to_string(),
                format!("{:.1}", s.rps),
                ms(s.p50_ms),
                ms(s.p75_ms),
                ms(s.p95_ms),
                ms(s.p99_ms),
                ms(s.max_ms),
                ms(s.mean_ms),
                [statuses, other].concat().join(" "),
            ]
        };
        let mut rows = vec![head.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        rows.extend(self.endpoints.iter().map(|(name, s)| row(name, s)));
        rows.push(row("all", &self.overall));
        let mut widths = vec![0; head.len()];
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!(
            "{} users (peak {}), {:.1} s, {} requests, {} errors, {:.1} req/s; latencies in ms\n",
            self.users, self.peak_users, self.duration_s, self.total_requests, self.total_errors, self.rps
        );
        for r in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in r.iter().zip(&widths).enumerate() {
                match i {
                    0 => line.push_str(&format!("{cell:<w$}")),
                    _ if i == r.len() - 1 => line.push_str(&format!("  {cell}")),
                    _ => line.push_str(&format!("  {cell:>w$}")),
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests;
