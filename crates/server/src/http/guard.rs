//! What keeps web pages out of a server that trusts its callers: with no keys required (the
//! loopback default), any page a local browser opens could otherwise POST to it (CSRF), reach
//! it under its own name after a DNS rebinding, or follow every generation over a WebSocket.
//!
//! - `Host` must name this machine (localhost, 127.0.0.1, [::1], any 127.x) or `public_url`,
//!   when no keys are required and the server listens on loopback only;
//! - a request that changes something (any method but GET/HEAD/OPTIONS) or opens a WebSocket
//!   and carries an `Origin` must come from this server's own origin (the Studio page does);
//! - bodies parsed as JSON must say so (`application/json`), see [`require_json`].

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn browser_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = request_host(&req);
    let public = url::Url::parse(&state.public_url).ok();
    if !state.config.keys_required()
        && state.config.bind.ip().is_loopback()
        && !host.as_deref().is_some_and(|h| host_allowed(h, public.as_ref()))
    {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "this server answers to localhost, 127.0.0.1, [::1] and its public_url only",
        )
        .into_response();
    }
    let upgrade = req.headers().get(header::UPGRADE).is_some();
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if (changes || upgrade)
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .is_some_and(|o| same_origin(&o, host.as_deref(), public.as_ref()));
        if !same {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "requests from other sites' pages are refused; call the API from a program or this server's own pages",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The `Host` header (HTTP/1.1) or the URI's authority (HTTP/2).
fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// `host[:port]` without the port, and without IPv6 brackets.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { authority })
}

fn host_allowed(authority: &str, public: Option<&url::Url>) -> bool {
    let name = host_name(authority).to_ascii_lowercase();
    if name == "localhost" || name == "::1" {
        return true;
    }
    if let Ok(ip) = name.parse::<std::net::IpAddr>()
        && ip.is_loopback()
    {
        return true;
    }
    public.and_then(|u| u.host_str()).is_some_and(|h| h.trim_matches(['[', ']']).eq_ignore_ascii_case(&name))
}

/// Whether `origin` is this server as the request reached it (`Host`) or as `public_url`.
fn same_origin(origin: &url::Url, host: Option<&str>, public: Option<&url::Url>) -> bool {
    if !matches!(origin.scheme(), "http" | "https") {
        return false;
    }
    let Some(oh) = origin.host_str() else { return false };
    let port = origin.port_or_known_default();
    let authority = match origin.port() {
        Some(p) => format!("{oh}:{p}"),
        None => oh.to_string(),
    };
    if host.is_some_and(|h| {
        h.eq_ignore_ascii_case(&authority)
            || (h.eq_ignore_ascii_case(oh) && port == Some(if origin.scheme() == "https" { 443 } else { 80 }))
    }) {
        return true;
    }
    public
        .is_some_and(|p| p.scheme() == origin.scheme() && p.host_str() == Some(oh) && p.port_or_known_default() == port)
}

/// Refuses a body that does not say it is JSON (or, where `multipart` is allowed, a form): a
/// browser sends `text/plain` or a URL-encoded form across sites without asking first.
pub fn require_json(headers: &HeaderMap, multipart: bool) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json || (multipart && essence == "multipart/form-data") {
        return Ok(());
    }
    let shown = if ct.is_empty() { "no Content-Type".to_string() } else { format!("Content-Type '{essence}'") };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "{shown}: send the body as application/json{}",
            if multipart { " (or multipart/form-data with files)" } else { "" }
        ),
    ))
}

/// A multipart body that cannot be read: too large (413, its connection closed) or malformed.
pub(crate) fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "invalid_multipart" };
    ApiError::new(status, code, e.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_this_machine_and_the_public_url() {
        let public = url::Url::parse("https://video.example.com").ok();
        for h in ["localhost:8080", "127.0.0.1:9", "127.0.0.2", "[::1]:80", "LOCALHOST", "video.example.com"] {
            assert!(host_allowed(h, public.as_ref()), "{h}");
        }
        for h in ["rebind.attacker.example:8081", "10.0.0.1:80", "localhost.evil", "[::2]:80", ""] {
            assert!(!host_allowed(h, public.as_ref()), "{h}");
        }
    }

    #[test]
    fn origins_must_be_this_server() {
        let o = |s: &str| url::Url::parse(s).unwrap();
        let public = url::Url::parse("https://video.example.com").ok();
        assert!(same_origin(&o("http://127.0.0.1:8081"), Some("127.0.0.1:8081"), None));
        assert!(same_origin(&o("http://localhost"), Some("localhost"), None));
        assert!(same_origin(&o("https://video.example.com"), Some("10.0.0.5:8080"), public.as_ref()));
        assert!(!same_origin(&o("http://evil.example"), Some("127.0.0.1:8081"), None));
        assert!(!same_origin(&o("http://127.0.0.1:9999"), Some("127.0.0.1:8081"), None));
        assert!(!same_origin(&o("https://127.0.0.1:8081"), Some("127.0.0.1"), None));
        assert!(!same_origin(&o("http://video.example.com"), Some("x"), public.as_ref()));
    }

    #[test]
    fn json_bodies_must_say_so() {
        let h = |ct: &str| {
            let mut m = HeaderMap::new();
            if !ct.is_empty() {
                m.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            }
            m
        };
        assert!(require_json(&h("application/json"), false).is_ok());
        assert!(require_json(&h("application/json; charset=utf-8"), false).is_ok());
        assert!(require_json(&h("application/vnd.api+json"), false).is_ok());
        assert!(require_json(&h("multipart/form-data; boundary=x"), true).is_ok());
        assert!(require_json(&h("multipart/form-data; boundary=x"), false).is_err());
        for bad in ["text/plain", "application/x-www-form-urlencoded", ""] {
            let e = require_json(&h(bad), true).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        }
    }
}
