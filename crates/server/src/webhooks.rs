//! Webhook events: a JSON body per event with a stable id (receivers de-duplicate on it),
//! signed with HMAC-SHA256 over `"{timestamp}.{body}"`, delivered by the job queue (so retries
//! with backoff, per-attempt errors and crash safety come for free).
//!
//! Headers: `Reelsmith-Event-Id`, `Reelsmith-Event-Type`, `Reelsmith-Timestamp` (Unix seconds)
//! and `Reelsmith-Signature: t=<timestamp>,v1=<hex HMAC>`. Receivers should recompute the HMAC
//! and reject timestamps older than a few minutes (replays).

use std::time::Duration;

use reelsmith_store::{NewJob, RetryPolicy};

use crate::queues;
use crate::queues::Delivery;

/// Stable per generation and event type: receivers de-duplicate on it.
pub fn event_id(generation_id: &str, event_type: &str) -> String {
    format!("evt_{}_{}", generation_id.trim_start_matches("gen_"), event_type.rsplit('.').next().unwrap_or(event_type))
}

/// The follow-up job that delivers `event_type` (`generation.succeeded`…) for a generation.
/// Its dedup key makes the event exist once however often the completion is attempted.
pub fn event_job(
    url: &str,
    generation_id: &str,
    event_type: &str,
    data: serde_json::Value,
    max_attempts: u32,
    retry_base_ms: i64,
) -> NewJob {
    let body = serde_json::json!({
        "id": event_id(generation_id, event_type),
        "type": event_type,
        "created_at_ms": reelsmith_store::now_ms(),
        "data": data,
    })
    .to_string();
    event_job_with_body(url, generation_id, event_type, body, max_attempts, retry_base_ms)
}

/// The event job for a generation's final state `done` (none without a webhook URL). Talks
/// (the D-ID-compatible API) get D-ID's webhook body, the talk itself.
pub fn for_generation(
    state: &crate::state::AppState,
    done: &reelsmith_store::GenerationRecord,
    event_type: &str,
) -> Vec<NewJob> {
    let Some(url) = done.webhook_url.as_deref() else { return vec![] };
    let (attempts, base) = (state.config.webhook_max_attempts, state.config.webhook_retry_base_ms);
    let mut job = if crate::views::is_talk(done) {
        let body = crate::views::talk_json(state, done, &state.public_url).to_string();
        event_job_with_body(url, &done.id, event_type, body, attempts, base)
    } else {
        event_job(url, &done.id, event_type, crate::views::status_json(done, &[]), attempts, base)
    };
    if let Some(k) = &done.api_key_id {
        job.payload["key_id"] = serde_json::json!(k);
    }
    vec![job]
}

/// Like [`event_job`], with a body of the caller's (D-ID-style talk webhooks send the talk).
pub fn event_job_with_body(
    url: &str,
    generation_id: &str,
    event_type: &str,
    body: String,
    max_attempts: u32,
    retry_base_ms: i64,
) -> NewJob {
    let event_id = event_id(generation_id, event_type);
    let d = Delivery { url: url.into(), event_id: event_id.clone(), event_type: event_type.into(), body, key_id: None };
    let mut job = queues::Job::Webhook(d).to_new_job();
    job.subject = Some(generation_id.into());
    job.dedup_key = Some(event_id);
    job.priority = 5;
    job.timeout = Duration::from_secs(60);
    job.retry = RetryPolicy { max_attempts, backoff_base_ms: retry_base_ms, backoff_max_ms: 600_000, jitter: 0.2 };
    job
}

/// What a webhook signature covers: `<timestamp>.<body>`.
fn signed_payload(timestamp: i64, body: &str) -> Vec<u8> {
    format!("{timestamp}.{body}").into_bytes()
}

pub fn sign(secret: &[u8], timestamp: i64, body: &str) -> String {
    crate::signing::sign(secret, &signed_payload(timestamp, body))
}

/// Checks a `Reelsmith-Signature` header (for receivers written in Rust, and the tests).
pub fn verify(secret: &[u8], header: &str, body: &str, now_s: i64, tolerance_s: i64) -> bool {
    let mut t = None;
    let mut sigs = vec![];
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (now_s - t).abs() > tolerance_s {
        return false;
    }
    let payload = signed_payload(t, body);
    sigs.iter().any(|s| crate::signing::verify(secret, &payload, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_detect_tampering_and_replays() {
        let body = r#"{"id":"evt_1"}"#;
        let sig = sign(b"secret", 1_000, body);
        let header = format!("t=1000,v1={sig}");
        assert!(verify(b"secret", &header, body, 1_010, 300));
        assert!(!verify(b"other", &header, body, 1_010, 300), "wrong secret");
        assert!(!verify(b"secret", &header, r#"{"id":"evt_2"}"#, 1_010, 300), "tampered body");
        assert!(!verify(b"secret", &header, body, 2_000, 300), "too old");
        assert!(!verify(b"secret", "v1=abc", body, 1_000, 300), "no timestamp");
        // Known vector, from Python: hmac.new(b"key", b"0.x", hashlib.sha256).hexdigest()
        assert_eq!(sign(b"key", 0, "x"), "01648d624c0b511b0449a63394418e2d5b018e4cc2f753e42127d445f3ca5dd0");
    }

    #[test]
    fn event_ids_are_stable_per_generation_and_type() {
        let a = event_job("http://h/x", "gen_01abc", "generation.succeeded", serde_json::json!({}), 5, 1000);
        let b = event_job("http://h/x", "gen_01abc", "generation.succeeded", serde_json::json!({"x": 1}), 5, 1000);
        assert_eq!(a.dedup_key, b.dedup_key);
        assert_eq!(a.dedup_key.as_deref(), Some("evt_01abc_succeeded"));
        let d: Delivery = serde_json::from_value(a.payload).unwrap();
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["id"], "evt_01abc_succeeded");
        assert_eq!(body["type"], "generation.succeeded");
    }
}
