//! Webhook events: a JSON body per event with a stable id (receivers de-duplicate on it),
//! signed with HMAC-SHA256 over `"{timestamp}.{body}"`, delivered by the job queue (so retries
//! with backoff, per-attempt errors and crash safety come for free).
//!
//! Headers: `Reelsmith-Event-Id`, `Reelsmith-Event-Type`, `Reelsmith-Timestamp` (Unix seconds)
//! and `Reelsmith-Signature: t=<timestamp>,v1=<hex HMAC>`. Receivers should recompute the HMAC
//! and reject timestamps older than a few minutes (replays).

use std::time::Duration;

use reelsmith_store::{NewJob, RetryPolicy};
use serde::{Deserialize, Serialize};

pub const QUEUE: &str = "webhooks";
pub const KIND: &str = "webhook";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    pub url: String,
    pub event_id: String,
    pub event_type: String,
    /// The exact bytes sent each attempt (as a string).
    pub body: String,
    /// The API key whose generation this is: its own secret signs the delivery (none: the
    /// server's `webhook_secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

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
    state: &crate::AppState,
    done: &reelsmith_store::GenerationRecord,
    event_type: &str,
) -> Vec<NewJob> {
    let Some(url) = done.webhook_url.as_deref() else { return vec![] };
    let (attempts, base) = (state.config.webhook_max_attempts, state.config.webhook_retry_base_ms);
    let mut job = if crate::talks::is_talk(done) {
        let body = crate::talks::talk_json(state, done, &state.public_url).to_string();
        event_job_with_body(url, &done.id, event_type, body, attempts, base)
    } else {
        event_job(url, &done.id, event_type, crate::api::status_json(done, &[]), attempts, base)
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
    let mut job = NewJob::new(QUEUE, KIND, serde_json::to_value(&d).unwrap_or_default());
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

/// Loopback, private, link-local, shared (CGNAT), benchmarking, reserved, multicast,
/// unspecified and other non-public addresses, including IPv4 addresses carried inside IPv6
/// (mapped, compatible, NAT64 64:ff9b::/96 and 6to4 2002::/16).
pub fn is_private(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
                // IETF protocol assignments (192.0.0.0/24), benchmarking (198.18.0.0/15),
                // reserved (240.0.0.0/4).
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // Translation prefixes reach whatever IPv4 address they carry, internal ones too:
            // NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16), IPv4-compatible (::/96).
            if (seg[0] == 0x64 && seg[1] == 0xff9b) || seg[0] == 0x2002 || seg[..6].iter().all(|&x| x == 0) {
                return true;
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                // Documentation (2001:db8::/32) and Teredo (2001::/32), which tunnels IPv4.
                || (seg[0] == 0x2001 && (seg[1] == 0x0db8 || seg[1] == 0))
        }
    }
}

/// A client for one outbound request to `url` (webhooks, fetched talk sources). Unless
/// `allow_private`, the host is resolved here, refused when any address is private, and the
/// connection pinned to the checked address (so a DNS answer cannot change between the check
/// and the connect).
pub async fn outbound_client(
    client: &reqwest::Client,
    url: &reqwest::Url,
    allow_private: bool,
) -> Result<reqwest::Client, String> {
    if allow_private {
        return Ok(client.clone());
    }
    let host = url.host_str().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let Some(addr) = addrs.first().copied() else { return Err(format!("{host} has no address")) };
    if addrs.iter().any(|a| is_private(a.ip())) {
        return Err(format!("{host} resolves to a private address ({}); refused", addr.ip()));
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        // A proxy would resolve the name again (and could reach what the check refused).
        .no_proxy()
        .resolve(&host, addr)
        .build()
        .map_err(|e| e.to_string())
}

/// One delivery attempt: Ok on 2xx, Err(reason) otherwise (see [`outbound_client`]).
pub async fn deliver(
    client: &reqwest::Client,
    secret: &[u8],
    d: &Delivery,
    timeout: Duration,
    allow_private: bool,
) -> Result<u16, String> {
    let url = reqwest::Url::parse(&d.url).map_err(|e| format!("bad webhook URL: {e}"))?;
    let client = outbound_client(client, &url, allow_private).await?;
    let ts = reelsmith_store::now_ms() / 1000;
    let sig = sign(secret, ts, &d.body);
    let resp = client
        .post(&d.url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("user-agent", concat!("reelsmith-webhooks/", env!("CARGO_PKG_VERSION")))
        .header("reelsmith-event-id", &d.event_id)
        .header("reelsmith-event-type", &d.event_type)
        .header("reelsmith-timestamp", ts.to_string())
        .header("reelsmith-signature", format!("t={ts},v1={sig}"))
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            format!("delivery to {} {kind}", url.host_str().unwrap_or_default())
        })?;
    let status = resp.status();
    // Only the status is kept: echoing a receiver's body would let callers read internal services.
    if status.is_success() { Ok(status.as_u16()) } else { Err(format!("receiver answered HTTP {}", status.as_u16())) }
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
    fn private_addresses() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            // NAT64, 6to4 and IPv4-compatible forms of the metadata address.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::a9fe:a9fe",
            "198.18.0.1",
            "198.19.255.1",
            "192.0.0.8",
            "240.0.0.1",
            "255.255.255.254",
            "224.0.0.1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "198.20.0.1", "2001:4860::8888"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn delivery_refuses_names_that_resolve_to_private_addresses() {
        let d = Delivery {
            url: "http://localhost:9/hook".into(),
            event_id: "e".into(),
            event_type: "t".into(),
            body: "{}".into(),
            key_id: None,
        };
        let client = reqwest::Client::new();
        let e = deliver(&client, b"k", &d, Duration::from_secs(1), false).await.unwrap_err();
        assert!(e.contains("private address"), "{e}");
        // Allowed: it really tries (and nothing listens on port 9).
        let e = deliver(&client, b"k", &d, Duration::from_secs(1), true).await.unwrap_err();
        assert!(e.contains("could not connect") || e.contains("failed"), "{e}");
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
