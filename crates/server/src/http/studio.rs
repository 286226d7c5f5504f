//! The Studio web page: three static files compiled into the binary (no front-end toolchain),
//! plus hls.js (vendored, `studio/vendor/`) to play live streams, talking to the same public API
//! as every other client. The page holds no data itself, so it
//! is served without a key; the API calls it makes carry the key the person enters.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

struct File {
    body: &'static str,
    content_type: &'static str,
}

const INDEX: File = File { body: include_str!("../../studio/index.html"), content_type: "text/html; charset=utf-8" };
const SCRIPT: File =
    File { body: include_str!("../../studio/studio.js"), content_type: "text/javascript; charset=utf-8" };
const STYLE: File = File { body: include_str!("../../studio/studio.css"), content_type: "text/css; charset=utf-8" };
/// hls.js (Apache-2.0), imported by the page only when it plays a live stream.
const HLS: File = File {
    body: include_str!("../../studio/vendor/hls.light.min.mjs"),
    content_type: "text/javascript; charset=utf-8",
};

/// Only this page's own scripts, styles and API; media from the API or from blobs it fetched.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' blob: data:; media-src 'self' blob:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve(&INDEX, &h) }))
        .route("/studio.js", get(|h: HeaderMap| async move { serve(&SCRIPT, &h) }))
        .route("/studio.css", get(|h: HeaderMap| async move { serve(&STYLE, &h) }))
        .route("/hls.light.min.mjs", get(|h: HeaderMap| async move { serve(&HLS, &h) }))
}

fn serve(file: &File, req: &HeaderMap) -> Response {
    // Revalidated on every load (no-cache), so a new binary's page shows at once; the ETag
    // makes that a 304 otherwise.
    let etag = format!("\"{}\"", &blake3::hash(file.body.as_bytes()).to_hex()[..16]);
    let fresh = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { file.body.into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_refers_only_to_files_that_are_served() {
        for asset in ["/studio.js", "/studio.css"] {
            assert!(INDEX.body.contains(asset), "index.html does not load {asset}");
        }
        assert!(SCRIPT.body.contains("import('/hls.light.min.mjs')"), "studio.js does not load hls.js");
        // The CSP forbids inline code: the page must not rely on it.
        assert!(!INDEX.body.contains("<script>") && !INDEX.body.contains(" onclick="), "inline script in index.html");
        assert!(!INDEX.body.contains("style=\""), "inline style in index.html");
    }

    #[test]
    fn etag_revalidation() {
        let first = serve(&SCRIPT, &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve(&SCRIPT, &h).status(), StatusCode::NOT_MODIFIED);
        assert!(first.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
    }
}
