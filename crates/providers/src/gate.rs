//! One resilience layer for every provider call: a circuit breaker, a concurrency limit, a
//! request-rate limit, a deadline per attempt, and retries with backoff and jitter that honour
//! the provider's own wait hints. Failures arrive classified ([`Failure`]); the gate decides
//! what each class means:
//!
//! - `RateLimited`: wait (at least the hint) and try again;
//! - `Retryable` (network, timeout, 5xx): back off and try again; several in a row open the
//!   breaker;
//! - `Quota` (billing, spend limit): never retried; the breaker opens at once, so the next calls
//!   fail fast with the reason instead of paying for more refusals;
//! - `Final`: returned as is.
//!
//! An open breaker lets one probe through after its cool-down (half-open): success closes it,
//! failure opens it again.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::Failure;

/// How one provider may be called.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests per minute (None: no limit of ours).
    pub rpm: Option<u32>,
    /// Calls that may go at once after a quiet spell (default: a minute's worth, at most 60).
    pub burst: Option<u32>,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Attempts of one call, the first included.
    pub max_attempts: u32,
    /// Longest a call may take, all attempts and waits included.
    pub deadline: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before it lets a probe through.
    pub breaker_cooldown: Duration,
    /// First backoff; doubles per attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rpm: None,
            burst: None,
            concurrency: 4,
            timeout: Duration::from_secs(120),
            max_attempts: 4,
            deadline: Duration::from_secs(600),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// The breaker's state, as `/ready` and `/metrics` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Refusing calls until `until`; `reason` is the failure that opened it.
    Open {
        reason: String,
        until: Instant,
    },
    /// One probe is in flight; other calls are refused until it ends.
    HalfOpen,
}

impl BreakerState {
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

struct Breaker {
    state: BreakerState,
    failures: u32,
}

/// A token bucket: `rate` tokens per second up to `burst`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rpm: u32, burst: Option<u32>) -> Self {
        let rate = f64::from(rpm.max(1)) / 60.0;
        // A minute's worth at most, and never less than one call.
        let burst = f64::from(burst.unwrap_or(rpm).max(1)).clamp(1.0, 60.0);
        Self { rate, burst, tokens: burst, at: Instant::now() }
    }

    /// Takes a token now, or says how long until one is free (and reserves it).
    fn take(&mut self, now: Instant) -> Duration {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

/// What happened on each attempt, for the caller's ledger and metrics.
#[derive(Clone, Debug, Default)]
pub struct Attempts {
    pub attempts: u32,
    /// Time spent waiting for the rate limit, the provider's hints and backoff.
    pub waited: Duration,
}

/// The gate in front of one provider.
pub struct Gate {
    provider: String,
    limits: Limits,
    permits: Semaphore,
    bucket: Option<Mutex<Bucket>>,
    /// The rate limit shared with other nodes, when Redis is configured.
    shared: Option<crate::shared_limit::SharedLimit>,
    breaker: Mutex<Breaker>,
}

impl Gate {
    pub fn new(provider: impl Into<String>, limits: Limits) -> Self {
        Self {
            provider: provider.into(),
            permits: Semaphore::new(limits.concurrency.max(1)),
            bucket: limits.rpm.map(|r| Mutex::new(Bucket::new(r, limits.burst))),
            shared: None,
            breaker: Mutex::new(Breaker { state: BreakerState::Closed, failures: 0 }),
            limits,
        }
    }

    /// Shares the rate limit with every node using the same Redis and `prefix`
    /// (`{prefix}:ratelimit:{provider}`); without an `rpm`, there is nothing to share.
    pub fn shared_through_redis(mut self, redis_url: &str, prefix: &str) -> Result<Self, String> {
        if let Some(rpm) = self.limits.rpm {
            let burst = Bucket::new(rpm, self.limits.burst).burst as u32;
            let key = format!("{prefix}:ratelimit:{}", self.provider);
            self.shared = Some(crate::shared_limit::SharedLimit::new(redis_url, key, rpm, burst)?);
        }
        Ok(self)
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The breaker now: an open breaker past its cool-down reads as half-open (the next call
    /// probes).
    pub fn breaker(&self) -> BreakerState {
        let b = self.breaker.lock().expect("breaker lock");
        match &b.state {
            BreakerState::Open { until, .. } if Instant::now() >= *until => BreakerState::HalfOpen,
            s => s.clone(),
        }
    }

    /// Runs `attempt` through the gate until it succeeds, fails for good, or runs out of
    /// attempts or time. `what` names the call in errors ("chat completion").
    pub async fn call<T, F, Fut>(&self, what: &str, mut attempt: F) -> (Result<T, Failure>, Attempts)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        let mut log = Attempts::default();
        loop {
            if let Err(open) = self.admit() {
                return (Err(open), log);
            }
            let permit = match self.permits.acquire().await {
                Ok(p) => p,
                Err(_) => return (Err(Failure::Final(format!("{}: shutting down", self.provider))), log),
            };
            let shared_wait = match &self.shared {
                Some(s) => match s.reserve().await {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::warn!(provider = %self.provider, error = %e, "shared rate limit unavailable; limiting this node only");
                        None
                    }
                },
                None => None,
            };
            if let Some(wait) = shared_wait {
                if !wait.is_zero() {
                    log.waited += wait;
                    tokio::time::sleep(wait).await;
                }
            } else if let Some(bucket) = &self.bucket {
                let wait = bucket.lock().expect("bucket lock").take(Instant::now());
                if !wait.is_zero() {
                    log.waited += wait;
                    tokio::time::sleep(wait).await;
                }
            }
            log.attempts += 1;
            let sent = Instant::now();
            let outcome = match tokio::time::timeout(self.limits.timeout, attempt()).await {
                Ok(r) => r,
                Err(_) => Err(Failure::Retryable(format!(
                    "{} {what}: no answer within {:.0} s",
                    self.provider,
                    self.limits.timeout.as_secs_f64()
                ))),
            };
            drop(permit);
            let class = outcome.as_ref().map_or_else(Failure::class, |_| "ok");
            metrics::counter!("reelsmith_provider_calls_total", "provider" => self.provider.clone(), "outcome" => class)
                .increment(1);
            metrics::histogram!("reelsmith_provider_call_seconds", "provider" => self.provider.clone())
                .record(sent.elapsed().as_secs_f64());
            let failure = match outcome {
                Ok(v) => {
                    self.record_success();
                    return (Ok(v), log);
                }
                Err(f) => f,
            };
            self.record_failure(&failure);
            let wait = match &failure {
                Failure::RateLimited { retry_after, .. } => {
                    retry_after.unwrap_or_default().max(self.backoff(log.attempts))
                }
                Failure::Retryable(_) => self.backoff(log.attempts),
                Failure::Quota(_) | Failure::Final(_) | Failure::Unavailable(_) => return (Err(failure), log),
            };
            let out_of_time = started.elapsed() + wait > self.limits.deadline;
            if log.attempts >= self.limits.max_attempts || out_of_time {
                return (Err(failure.exhausted(log.attempts)), log);
            }
            log.waited += wait;
            tokio::time::sleep(wait).await;
        }
    }

    /// Capped exponential backoff with up to a quarter off at random (so callers that failed
    /// together do not come back together).
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.limits.base_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.limits.max_backoff);
        capped.mul_f64(1.0 - 0.25 * rand::random::<f64>())
    }

    /// Refuses the call while the breaker is open; lets one probe through once it cools down.
    fn admit(&self) -> Result<(), Failure> {
        let mut b = self.breaker.lock().expect("breaker lock");
        match &b.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { reason, until } => {
                let now = Instant::now();
                if now >= *until {
                    b.state = BreakerState::HalfOpen;
                    Ok(())
                } else {
                    Err(Failure::Unavailable(format!(
                        "{} is unavailable for {:.0} s more after: {reason}",
                        self.provider,
                        (*until - now).as_secs_f64().ceil()
                    )))
                }
            }
            BreakerState::HalfOpen => Err(Failure::Unavailable(format!(
                "{} is being probed after failures; try again shortly",
                self.provider
            ))),
        }
    }

    fn record_success(&self) {
        let mut b = self.breaker.lock().expect("breaker lock");
        b.state = BreakerState::Closed;
        b.failures = 0;
    }

    fn record_failure(&self, f: &Failure) {
        let mut b = self.breaker.lock().expect("breaker lock");
        let open = match f {
            // Billing does not fix itself in a few seconds: open at once.
            Failure::Quota(_) => true,
            // The provider answered; the request was wrong. Not the provider's health.
            Failure::Final(_) | Failure::Unavailable(_) => {
                if b.state == BreakerState::HalfOpen {
                    b.state = BreakerState::Closed;
                }
                false
            }
            // Being told to slow down is not an outage, unless it keeps happening.
            Failure::Retryable(_) | Failure::RateLimited { .. } => {
                b.failures += 1;
                b.failures >= self.limits.breaker_failures || b.state == BreakerState::HalfOpen
            }
        };
        if open {
            metrics::counter!("reelsmith_provider_breaker_opened_total", "provider" => self.provider.clone())
                .increment(1);
            b.state = BreakerState::Open {
                reason: f.message().to_string(),
                until: Instant::now() + self.limits.breaker_cooldown,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick() -> Limits {
        Limits {
            base_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            breaker_cooldown: Duration::from_millis(200),
            breaker_failures: 3,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let gate = Gate::new("p", quick());
        let n = AtomicU32::new(0);
        let (r, log) = gate
            .call("x", || async {
                if n.fetch_add(1, Ordering::SeqCst) < 2 { Err(Failure::Retryable("503".into())) } else { Ok(7) }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(log.attempts, 3);
        assert_eq!(gate.breaker(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_rate_limit_waits_at_least_the_hint() {
        let gate = Gate::new("p", quick());
        let n = AtomicU32::new(0);
        let start = Instant::now();
        let (r, _) = gate
            .call("x", || async {
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(Failure::RateLimited { message: "429".into(), retry_after: Some(Duration::from_millis(300)) })
                } else {
                    Ok(())
                }
            })
            .await;
        r.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn quota_fails_fast_opens_the_breaker_then_a_probe_closes_it() {
        let gate = Gate::new("openai", quick());
        let calls = AtomicU32::new(0);
        let (r, log) = gate
            .call("x", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Failure::Quota("openai: insufficient_quota".into()))
            })
            .await;
        assert!(matches!(r, Err(Failure::Quota(_))));
        assert_eq!(log.attempts, 1, "billing errors are not retried");
        assert_eq!(gate.breaker().name(), "open");
        // While open, calls fail without reaching the provider, naming it and the reason.
        let (r, _) = gate.call("x", || async { calls.fetch_add(1, Ordering::SeqCst).pipe_ok() }).await;
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("openai is unavailable") && msg.contains("insufficient_quota"), "{msg}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(220)).await;
        assert_eq!(gate.breaker(), BreakerState::HalfOpen);
        let (r, _) = gate.call("x", || async { Ok::<_, Failure>(1) }).await;
        assert_eq!(r.unwrap(), 1);
        assert_eq!(gate.breaker(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn repeated_outages_open_the_breaker_and_a_failed_probe_reopens_it() {
        let gate = Gate::new("p", Limits { max_attempts: 10, ..quick() });
        let (r, log) = gate.call("x", || async { Err::<(), _>(Failure::Retryable("502".into())) }).await;
        assert_eq!(log.attempts, 3, "the third failure opened the breaker");
        assert!(matches!(r, Err(Failure::Unavailable(_))), "{r:?}");
        tokio::time::sleep(Duration::from_millis(220)).await;
        let (_, log) = gate.call("x", || async { Err::<(), _>(Failure::Retryable("502".into())) }).await;
        assert_eq!(log.attempts, 1, "one probe, then open again");
        assert_eq!(gate.breaker().name(), "open");
    }

    #[tokio::test]
    async fn the_rate_limit_spaces_calls() {
        // 600 per minute: a burst of 60, then one every 100 ms.
        let gate = Gate::new("p", Limits { rpm: Some(600), ..quick() });
        let start = Instant::now();
        for _ in 0..63 {
            gate.call("x", || async { Ok::<_, Failure>(()) }).await.0.unwrap();
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(280), "{took:?}");
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let gate = Gate::new("p", Limits { concurrency: 2, ..quick() });
        let live = AtomicU32::new(0);
        let most = AtomicU32::new(0);
        let one = || async {
            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            live.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Failure>(())
        };
        let calls: Vec<_> = (0..6).map(|_| gate.call("x", one)).collect();
        for (r, _) in futures_util::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    trait PipeOk: Sized {
        fn pipe_ok(self) -> Result<Self, Failure> {
            Ok(self)
        }
    }
    impl PipeOk for u32 {}
}
