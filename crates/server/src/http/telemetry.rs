//! Request timing: request ids, X-Response-Time, latency metrics per route, slow-request log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::HeaderName;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::state::AppState;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub static RESPONSE_TIME: HeaderName = HeaderName::from_static("x-response-time");

static ROUTE_NAMES: Mutex<BTreeMap<String, Arc<str>>> = Mutex::new(BTreeMap::new());

fn route_label(method: &str, path: &str) -> Arc<str> {
    let key = format!("{method} {path}");
    let mut names = ROUTE_NAMES.lock().expect("route names");
    names.entry(key.clone()).or_insert_with(|| Arc::from(key.as_str())).clone()
}

/// Times every request; tags it with a request id; records latency per matched route.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // Any token is a valid HTTP method: label only the standard ones, so label sets stay bounded.
    let method = match *req.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::DELETE | Method::PATCH | Method::OPTIONS => {
            req.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(&state.telemetry.request_ids.next()).expect("ascii id"));
    let span = tracing::info_span!("request", method = %method, route = %route, status = tracing::field::Empty);
    let mut resp = next.run(req).instrument(span.clone()).await;
    // The auth layer (inside this one) hands the caller out on the response.
    let key = resp.extensions_mut().remove::<crate::access::CallerKey>().map(|k| k.0);
    span.record("status", resp.status().as_u16());
    let elapsed = start.elapsed();
    let ms = elapsed.as_secs_f64() * 1000.0;
    let status = resp.status().as_u16();
    let label = route_label(&method, &route);
    metrics::histogram!("reelsmith_http_request_duration_seconds", "route" => label.to_string(),
        "status" => status_class(status))
    .record(elapsed.as_secs_f64());
    state.telemetry.requests.record(label.clone(), status, ms, key);
    if ms >= state.config.slow_request_ms as f64 {
        tracing::warn!(route = %label, status, ms, request_id = ?request_id, "slow request");
    }
    let h = resp.headers_mut();
    h.insert(&RESPONSE_TIME, HeaderValue::from_str(&format!("{ms:.3}ms")).expect("ascii"));
    h.insert(&REQUEST_ID, request_id);
    resp
}

fn status_class(s: u16) -> &'static str {
    match s {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
