//! What HTTP answers mean, the same for every provider: wait hints (`retry-after-ms`,
//! `retry-after` in seconds or as a date, OpenAI's `x-ratelimit-reset-*` Go durations), error
//! bodies in the shapes providers use, and the failure class of a status.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::Failure;

/// Largest JSON answer read from a provider: a plan or a page of search results is far
/// smaller (pictures have their own bound, `images::MAX_IMAGE_BYTES`).
pub const MAX_JSON_BYTES: usize = 4 << 20;

/// How long the provider asked us to wait, from its headers.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    if let Some(v) = header("retry-after") {
        if let Ok(s) = v.parse::<f64>() {
            return Some(Duration::from_secs_f64(s.max(0.0)));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default());
        }
    }
    // OpenAI: the later of the request and token windows, when both are exhausted.
    let remaining_zero = |kind: &str| header(&format!("x-ratelimit-remaining-{kind}")) == Some("0");
    ["requests", "tokens"]
        .into_iter()
        .filter(|k| remaining_zero(k))
        .filter_map(|k| header(&format!("x-ratelimit-reset-{k}")).and_then(go_duration))
        .max()
}

/// A Go duration as OpenAI writes them: `12ms`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// The provider's own words from an error body: OpenAI `{error: {message, type, code}}`,
/// ElevenLabs `{detail: {status, message}}`, FastAPI/Replicate `{detail: "…"}`, D-ID
/// `{kind, description}`, or the start of whatever else came (an HTML page from a proxy).
pub fn error_text(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        return if text.trim().is_empty() { "no details".into() } else { text.trim().to_string() };
    };
    let e = &v["error"];
    if let Some(m) = e["message"].as_str().or(e.as_str()) {
        let code = e["code"].as_str().or(e["type"].as_str());
        return match code {
            Some(c) => format!("{c}: {m}"),
            None => m.to_string(),
        };
    }
    let d = &v["detail"];
    if let Some(m) = d["message"].as_str() {
        return match d["status"].as_str() {
            Some(s) => format!("{s}: {m}"),
            None => m.to_string(),
        };
    }
    if let Some(m) = d.as_str() {
        return m.to_string();
    }
    if let (Some(k), Some(d)) = (v["kind"].as_str(), v["description"].as_str()) {
        return format!("{k}: {d}");
    }
    let s = v.to_string();
    s.chars().take(200).collect()
}

/// OpenAI's billing errors (all on HTTP 429) and their kin: retrying cannot help.
const QUOTA_CODES: &[&str] = &[
    "insufficient_quota",
    "credit_balance_exhausted",
    "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded",
    "organization_usage_limit_exceeded",
    "billing_hard_limit_reached",
    "quota_exceeded",
];

/// The failure class of a non-success answer. `what` names the provider and call
/// ("openai POST /chat/completions").
pub fn classify(what: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Failure {
    let text = error_text(body);
    let msg = format!("{what} answered {}: {text}", status.as_u16());
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code_of = |v: &Value| v.as_str().map(str::to_string);
    let codes: Vec<String> = [&json["error"]["code"], &json["error"]["type"], &json["detail"]["status"]]
        .into_iter()
        .filter_map(code_of)
        .collect();
    let is_quota = codes.iter().any(|c| QUOTA_CODES.contains(&c.as_str()));
    if status == StatusCode::PAYMENT_REQUIRED || is_quota {
        return Failure::Quota(msg);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let mut retry_after = retry_after(headers);
        // Replicate: {"detail": "Request was throttled. Your rate limit resets in ~30s."}
        if retry_after.is_none()
            && let Some(i) = text.find("resets in ~")
        {
            let secs: String = text[i + 11..].chars().take_while(char::is_ascii_digit).collect();
            retry_after = secs.parse().ok().map(Duration::from_secs);
        }
        return Failure::RateLimited { message: msg, retry_after };
    }
    let should_retry = headers.get("x-should-retry").and_then(|v| v.to_str().ok());
    if should_retry == Some("true")
        || status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::CONFLICT
    {
        return Failure::Retryable(msg);
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Failure::Final(format!("{msg} (check the provider's api_key)"));
    }
    Failure::Final(msg)
}

/// Reads a whole answer, refusing more than `limit` bytes.
pub async fn read_bounded(mut resp: reqwest::Response, limit: usize, what: &str) -> Result<Vec<u8>, Failure> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Failure::Final(format!("{what}: the answer is larger than {limit} bytes")));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Failure::Retryable(format!("{what}: {e}")))? {
        if out.len() + chunk.len() > limit {
            return Err(Failure::Final(format!("{what}: the answer is larger than {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Downloads a provider's file (a stock picture, a finished talk, a prediction's output: links
/// that need no auth header) into `dest`, at most `limit` bytes, within five minutes. Written
/// aside and renamed, so `dest` never holds part of a file; an empty or oversized one is refused.
pub async fn download_to(
    http: &reqwest::Client,
    url: &str,
    dest: &std::path::Path,
    limit: u64,
    what: &str,
) -> Result<u64, Failure> {
    use tokio::io::AsyncWriteExt;
    let what = format!("{what}: downloading");
    let mut resp = get_file(http, url, &what).await?;
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(Failure::Final(format!("{what}: the file is larger than {limit} bytes")));
    }
    let tmp = dest.with_extension(format!("part{}", rand::random::<u32>()));
    let mut f = tokio::fs::File::create(&tmp).await.map_err(|e| Failure::Retryable(format!("{what}: {e}")))?;
    let mut n = 0u64;
    let result: Result<(), Failure> = async {
        while let Some(c) =
            resp.chunk().await.map_err(|e| Failure::Retryable(format!("{what}: {}", e.without_url())))?
        {
            n += c.len() as u64;
            if n > limit {
                return Err(Failure::Final(format!("{what}: the file is larger than {limit} bytes")));
            }
            f.write_all(&c).await.map_err(|e| Failure::Retryable(format!("{what}: {e}")))?;
        }
        f.flush().await.map_err(|e| Failure::Retryable(format!("{what}: {e}")))?;
        if n == 0 {
            return Err(Failure::Retryable(format!("{what}: the file is empty")));
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, dest).await.map_err(|e| Failure::Retryable(format!("{what}: {e}")))?;
    Ok(n)
}

/// A GET of a provider's file (five minutes at most), its failure classified.
async fn get_file(http: &reqwest::Client, url: &str, what: &str) -> Result<reqwest::Response, Failure> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .map_err(|e| Failure::Retryable(format!("{what}: {}", e.without_url())))?;
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(classify(what, status, resp.headers(), b""));
    }
    Ok(resp)
}

/// A provider's file into memory, at most `limit` bytes (see [`download_to`]).
pub async fn download_bytes(http: &reqwest::Client, url: &str, limit: usize, what: &str) -> Result<Vec<u8>, Failure> {
    let what = format!("{what}: downloading");
    let resp = get_file(http, url, &what).await?;
    let bytes = read_bounded(resp, limit, &what).await?;
    if bytes.is_empty() {
        return Err(Failure::Retryable(format!("{what}: the file is empty")));
    }
    Ok(bytes)
}

/// Sends a request and returns the body of a success, or the classified failure.
pub async fn send(req: reqwest::RequestBuilder, what: &str, limit: usize) -> Result<(HeaderMap, Vec<u8>), Failure> {
    let resp = req.send().await.map_err(|e| {
        // Some providers take their key in the query string: never repeat the URL.
        let e = e.without_url();
        if e.is_timeout() {
            Failure::Retryable(format!("{what}: timed out"))
        } else if e.is_builder() {
            Failure::Final(format!("{what}: {e}"))
        } else {
            Failure::Retryable(format!("{what}: {e}"))
        }
    })?;
    let status = resp.status();
    let headers = resp.headers().clone();
    // Error bodies are short; do not read a huge one.
    let body = read_bounded(resp, if status.is_success() { limit } else { 64 << 10 }, what).await?;
    if status.is_success() { Ok((headers, body)) } else { Err(classify(what, status, &headers, &body)) }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn wait_hints_in_every_spelling() {
        assert_eq!(retry_after(&headers(&[("retry-after", "2")])), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500"), ("retry-after", "9")])),
            Some(Duration::from_millis(1500))
        );
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let d = retry_after(&headers(&[("retry-after", &soon)])).unwrap();
        assert!(d > Duration::from_secs(27) && d <= Duration::from_secs(30), "{d:?}");
        let openai = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-remaining-tokens", "10"),
            ("x-ratelimit-reset-tokens", "12ms"),
        ]);
        assert_eq!(retry_after(&openai), Some(Duration::from_secs(360)));
        assert_eq!(retry_after(&headers(&[])), None);
        assert_eq!(go_duration("1h2m3.5s"), Some(Duration::from_secs_f64(3723.5)));
        assert_eq!(go_duration("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(go_duration("soon"), None);
    }

    #[test]
    fn a_429_is_a_rate_limit_unless_it_is_billing() {
        let rate = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let f = classify("openai chat", StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "2")]), rate);
        assert_eq!(
            f,
            Failure::RateLimited {
                message: "openai chat answered 429: rate_limit_exceeded: Rate limit reached".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        let billing = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let f = classify("openai chat", StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), billing);
        assert!(matches!(&f, Failure::Quota(m) if m.contains("insufficient_quota")), "{f:?}");
        let deepseek = br#"{"error":{"message":"Insufficient Balance","type":"unknown_error"}}"#;
        assert!(matches!(
            classify("deepseek", StatusCode::PAYMENT_REQUIRED, &HeaderMap::new(), deepseek),
            Failure::Quota(_)
        ));
        let replicate = br#"{"detail":"Request was throttled. Your rate limit resets in ~30s."}"#;
        let f = classify("replicate", StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), replicate);
        assert!(matches!(f, Failure::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(30)));
        let eleven = br#"{"detail":{"status":"too_many_concurrent_requests","message":"Too many"}}"#;
        let f = classify("elevenlabs", StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), eleven);
        assert!(matches!(&f, Failure::RateLimited { message, .. } if message.contains("too_many_concurrent_requests")));
    }

    #[test]
    fn other_statuses() {
        let h = HeaderMap::new();
        assert!(
            matches!(classify("p", StatusCode::BAD_GATEWAY, &h, b"<html>bad gateway</html>"), Failure::Retryable(m) if m.contains("bad gateway"))
        );
        assert!(
            matches!(classify("p", StatusCode::UNAUTHORIZED, &h, b"{}"), Failure::Final(m) if m.contains("api_key"))
        );
        assert!(
            matches!(classify("p", StatusCode::BAD_REQUEST, &h, br#"{"detail":"Sampler not found"}"#), Failure::Final(m) if m.ends_with("Sampler not found"))
        );
        assert!(matches!(
            classify("p", StatusCode::BAD_REQUEST, &headers(&[("x-should-retry", "true")]), b""),
            Failure::Retryable(_)
        ));
    }
}
