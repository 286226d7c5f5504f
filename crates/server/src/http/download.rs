//! Serving immutable results: strong ETags, `If-None-Match` → 304, single byte ranges → 206,
//! unsatisfiable ranges → 416, long-lived private caching (a generation's files never change once it has succeeded; `private`
//! because they belong to one API key).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A byte range request resolved against a length: `[start, end]` inclusive.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b | a- | -n`. Several ranges, other units or garbage: the whole file
/// (allowed by RFC 9110: a server may ignore Range).
pub fn parse_range(h: Option<&str>, len: u64) -> RangeSpec {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeSpec::Full };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeSpec::Full };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeSpec::Unsatisfiable,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
            Err(_) => None,
        },
        (false, true) => a.parse::<u64>().ok().map(|s| (s, len.saturating_sub(1))),
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(s), Ok(e)) if e >= s => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => RangeSpec::Full,
        Some((s, _)) if s >= len => RangeSpec::Unsatisfiable,
        Some((s, e)) => RangeSpec::Partial(s, e),
    }
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| {
        let t = t.trim();
        t == "*" || t.trim_start_matches("W/") == etag
    })
}

/// Streams artifact `key` honouring conditional and range headers.
pub async fn serve(
    state: &AppState,
    key: &str,
    etag_seed: &str,
    content_type: &'static str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let Some(len) = state.artifacts.size(key).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{key} is not available")));
    };
    let etag = format!(
        "\"{}\"",
        blake3::hash(format!("{etag_seed}:{key}:{len}").as_bytes()).to_hex().as_str()[..32].to_owned()
    );
    let mut base = HeaderMap::new();
    base.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(ApiError::internal)?);
    base.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    base.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    base.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if etag_matches(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, base).into_response());
    }
    // Object storage serves the bytes itself (Range included), sparing the API node the
    // transfer; the link expires, so the redirect is not cached.
    if state.config.s3_presigned_downloads {
        let ttl = std::time::Duration::from_secs(state.config.s3_presigned_ttl_secs.max(1));
        if let Some(url) = state.artifacts.presigned_get(key, ttl).await? {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::from_str(&url).map_err(ApiError::internal)?);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
            h.insert(header::ETAG, base[header::ETAG].clone());
            return Ok((StatusCode::TEMPORARY_REDIRECT, h).into_response());
        }
    }
    // If-Range with another validator means the client's partial copy is stale: send it all.
    let range_header = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if v.trim() != etag => None,
        _ => headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
    };
    match parse_range(range_header, len) {
        RangeSpec::Full => {
            let body = Body::from_stream(state.artifacts.read_range(key, 0, len).await?);
            base.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            Ok((StatusCode::OK, base, body).into_response())
        }
        RangeSpec::Partial(s, e) => {
            let n = e - s + 1;
            let body = Body::from_stream(state.artifacts.read_range(key, s, n).await?);
            base.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            base.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {s}-{e}/{len}")).map_err(ApiError::internal)?,
            );
            Ok((StatusCode::PARTIAL_CONTENT, base, body).into_response())
        }
        RangeSpec::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the requested range is outside the file ({len} bytes)"),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).map_err(ApiError::internal)?,
            );
            Ok(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Partial(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Partial(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Partial(90, 99));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Partial(0, 99));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Partial(50, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 100), Full);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=x-y"), 100), Full);
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\", W/\"b\""));
        assert!(etag_matches(&h, "\"b\""));
        assert!(!etag_matches(&h, "\"c\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(etag_matches(&h, "\"z\""));
    }
}
