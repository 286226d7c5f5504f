//! API keys (`Authorization: Bearer rsk_…` or `X-Api-Key`), stored as SHA-256 hashes, with a
//! per-key token bucket. Keys are required when listening beyond loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reelsmith_store::{ApiKey, new_id, now_ms};

/// The caller, as the handlers see it (absent: anonymous on loopback).
#[derive(Clone, Debug)]
pub struct Caller(pub Option<ApiKey>);

impl Caller {
    pub fn key_id(&self) -> Option<String> {
        self.0.as_ref().map(|k| k.id.clone())
    }
}

/// A new random webhook signing secret (`whsec_` and 64 hex digits).
pub fn new_webhook_secret() -> String {
    format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// A new random token (shown once) and its key record.
pub fn mint(name: &str, rate_per_s: f64, burst: u32, max_concurrent_jobs: u32, max_priority: u8) -> (String, ApiKey) {
    let secret: [u8; 32] = rand::random();
    let token = format!("rsk_{}", hex::encode(secret));
    let key = ApiKey {
        id: new_id("key"),
        name: name.into(),
        rate_per_s,
        burst,
        max_concurrent_jobs,
        max_priority: max_priority.min(9),
        webhook_secret: Some(new_webhook_secret()),
        limits: Default::default(),
        created_at_ms: now_ms(),
        revoked_at_ms: None,
    };
    (token, key)
}

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Takes one token from `key`'s bucket; Err(seconds until one is available) when empty.
    pub fn take(&self, key: &ApiKey) -> Result<(), f64> {
        let now = Instant::now();
        let mut b = self.buckets.lock().expect("rate buckets");
        let burst = key.burst.max(1) as f64;
        let (tokens, last) = b.entry(key.id.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * key.rate_per_s).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if key.rate_per_s > 0.0 {
            Err((1.0 - *tokens) / key.rate_per_s)
        } else {
            Err(60.0)
        }
    }
}

/// The calling key's id, on the response: request telemetry (outside this layer) files the
/// request under its key.
#[derive(Clone)]
pub struct CallerKey(pub Arc<str>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let (_, mut key) = mint("t", 10.0, 3, 1, 5);
        let l = RateLimiter::default();
        for _ in 0..3 {
            l.take(&key).unwrap();
        }
        let wait = l.take(&key).unwrap_err();
        assert!(wait > 0.0 && wait <= 0.1 + 1e-9, "{wait}");
        // A key with no refill waits long.
        key.id = "other".into();
        key.rate_per_s = 0.0;
        key.burst = 1;
        l.take(&key).unwrap();
        assert_eq!(l.take(&key).unwrap_err(), 60.0);
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let (a, ka) = mint("a", 1.0, 1, 1, 5);
        let (b, _) = mint("b", 1.0, 1, 1, 5);
        assert!(a.starts_with("rsk_") && a.len() == 68 && a != b);
        assert!(ka.id.starts_with("key_"));
    }
}
