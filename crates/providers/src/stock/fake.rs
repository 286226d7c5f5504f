//! A local Pexels and Pixabay for tests, in their documented wire formats: Pexels at
//! `/v1/search` and `/videos/search` (key in `Authorization`), Pixabay at `/api/` and
//! `/api/videos/` (key in the query), media files at `/media/{name}`. The test says which
//! queries find which files; anything else finds nothing. Queued statuses answer the next
//! searches instead (429 with or without `Retry-After`, 500).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub const FAKE_PEXELS_KEY: &str = "pexels-test-key";
pub const FAKE_PIXABAY_KEY: &str = "pixabay-test-key";

/// A file the fake offers: found by `query` (exact, lower case), of `kind` ("photo"/"video").
#[derive(Clone, Debug)]
pub struct Offer {
    pub query: String,
    pub kind: &'static str,
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub query: HashMap<String, String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Inner {
    offers: Vec<Offer>,
    seen: Vec<Seen>,
    refuse: VecDeque<(u16, Option<u64>)>,
    latency: std::time::Duration,
}

#[derive(Clone)]
pub struct FakeStock {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeStock {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/search", get(|s, q, h| search(s, q, h, "pexels", "photo")))
            .route("/videos/search", get(|s, q, h| search(s, q, h, "pexels", "video")))
            .route("/api/", get(|s, q, h| search(s, q, h, "pixabay", "photo")))
            .route("/api/videos/", get(|s, q, h| search(s, q, h, "pixabay", "video")))
            .route("/media/{name}", get(media))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake stock site");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, inner }
    }

    pub fn offer(&self, o: Offer) {
        self.inner.lock().unwrap().offers.push(o);
    }

    /// The next search answers `status` (with `Retry-After` seconds when given).
    pub fn refuse_next(&self, status: u16, retry_after_s: Option<u64>) {
        self.inner.lock().unwrap().refuse.push_back((status, retry_after_s));
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// Every search answers after this long (benchmarks of overlapping calls).
    pub fn set_latency(&self, d: std::time::Duration) {
        self.inner.lock().unwrap().latency = d;
    }

    /// Searches only (not downloads).
    pub fn searches(&self) -> Vec<Seen> {
        self.requests().into_iter().filter(|s| !s.path.starts_with("/media/")).collect()
    }
}

async fn search(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    site: &'static str,
    kind: &'static str,
) -> Response {
    let base = format!("http://{}", headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1"));
    let path = match (site, kind) {
        ("pexels", "photo") => "/v1/search",
        ("pexels", _) => "/videos/search",
        (_, "photo") => "/api/",
        _ => "/api/videos/",
    };
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let latency = inner.lock().unwrap().latency;
    tokio::time::sleep(latency).await;
    let mut i = inner.lock().unwrap();
    i.seen.push(Seen { at: Instant::now(), path: path.into(), query: q.clone(), authorization: authorization.clone() });
    if let Some((status, retry)) = i.refuse.pop_front() {
        let mut resp =
            (StatusCode::from_u16(status).unwrap(), Json(json!({"error": "Rate limit exceeded"}))).into_response();
        if let Some(s) = retry {
            resp.headers_mut().insert("retry-after", s.to_string().parse().unwrap());
        }
        return resp;
    }
    let key_ok = match site {
        "pexels" => authorization.as_deref() == Some(FAKE_PEXELS_KEY),
        _ => q.get("key").map(String::as_str) == Some(FAKE_PIXABAY_KEY),
    };
    if !key_ok {
        return match site {
            "pexels" => (StatusCode::UNAUTHORIZED, Json(json!({"error": "Unauthorized"}))).into_response(),
            _ => (StatusCode::BAD_REQUEST, "[ERROR 400] Invalid or missing API key").into_response(),
        };
    }
    let wanted = q.get(if site == "pexels" { "query" } else { "q" }).map(|s| s.to_lowercase()).unwrap_or_default();
    let found: Vec<(usize, &Offer)> =
        i.offers.iter().enumerate().filter(|(_, o)| o.kind == kind && o.query == wanted).collect();
    let item = |n: usize, o: &Offer| {
        let link = format!("{base}/media/{}", o.name);
        let id = 1000 + n as u64;
        match (site, kind) {
            ("pexels", "photo") => json!({"id": id, "width": o.width, "height": o.height,
                "url": format!("https://www.pexels.com/photo/{}-{id}/", o.query), "photographer": "Fake Photographer",
                "photographer_url": "https://www.pexels.com/@fake", "avg_color": "#808080",
                "src": {"original": link, "large2x": link, "large": link, "medium": link, "small": link, "tiny": link}, "alt": o.query}),
            ("pexels", _) => json!({"id": id, "width": o.width, "height": o.height, "duration": 8,
                "url": format!("https://www.pexels.com/video/{}-{id}/", o.query), "user": {"id": 1, "name": "Fake Filmmaker", "url": "https://www.pexels.com/@fake"},
                "video_files": [{"id": id * 10, "quality": "sd", "file_type": "video/mp4", "width": o.width, "height": o.height, "fps": 25.0, "link": link}],
                "video_pictures": []}),
            (_, "photo") => {
                json!({"id": id, "pageURL": format!("https://pixabay.com/photos/{}-{id}/", o.query), "type": "photo",
                "tags": o.query, "webformatURL": link, "largeImageURL": link, "imageWidth": o.width, "imageHeight": o.height, "user": "fakeuser"})
            }
            _ => {
                json!({"id": id, "pageURL": format!("https://pixabay.com/videos/{}-{id}/", o.query), "type": "film", "tags": o.query, "duration": 8,
                "videos": {"large": {"url": "", "width": 0, "height": 0, "size": 0}, "medium": {"url": link, "width": o.width, "height": o.height, "size": o.bytes.len()},
                           "small": {"url": link, "width": o.width, "height": o.height, "size": o.bytes.len()}, "tiny": {"url": link, "width": o.width, "height": o.height, "size": o.bytes.len()}},
                "user": "fakeuser"})
            }
        }
    };
    let items: Vec<Value> = found.iter().map(|(n, o)| item(*n, o)).collect();
    let mut resp = match (site, kind) {
        ("pexels", "photo") => Json(json!({"total_results": items.len(), "page": 1, "per_page": 15, "photos": items})),
        ("pexels", _) => Json(json!({"total_results": items.len(), "page": 1, "per_page": 15, "videos": items, "url": "https://www.pexels.com/videos/"})),
        _ => Json(json!({"total": items.len(), "totalHits": items.len(), "hits": items})),
    }
    .into_response();
    if site == "pexels" {
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", "200".parse().unwrap());
        h.insert("x-ratelimit-remaining", "199".parse().unwrap());
    }
    resp
}

async fn media(State(inner): State<Arc<Mutex<Inner>>>, Path(name): Path<String>) -> Response {
    let mut i = inner.lock().unwrap();
    i.seen.push(Seen {
        at: Instant::now(),
        path: format!("/media/{name}"),
        query: HashMap::new(),
        authorization: None,
    });
    match i.offers.iter().find(|o| o.name == name) {
        Some(o) => o.bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
