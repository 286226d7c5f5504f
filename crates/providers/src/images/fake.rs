//! A local OpenAI Images, Stable Diffusion WebUI and Replicate for tests, in their wire formats.
//! Every picture is a small PNG of one colour chosen from the prompt (so a test can tell which
//! prompt drew a frame); Replicate's predictions answer `processing` first when asked to, then
//! `succeeded` at `urls.get`, with the output at a link of its own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};

/// The colour the fake draws for `prompt`.
pub fn colour_of(prompt: &str) -> [u8; 3] {
    let h = blake3::hash(prompt.as_bytes());
    let b = h.as_bytes();
    [b[0], b[1], b[2]]
}

/// A PNG of one colour.
pub fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    // Stored (uncompressed) deflate blocks: a valid PNG without an image library.
    let row = 1 + 3 * width as usize;
    let mut raw = Vec::with_capacity(row * height as usize);
    for _ in 0..height {
        // Each row: filter type 0, then the pixels.
        raw.extend(std::iter::once(0).chain(rgb.iter().copied().cycle().take(3 * width as usize)));
    }
    let mut z = vec![0x78, 0x01];
    for (i, chunk) in raw.chunks(65_535).enumerate() {
        let last = (i + 1) * 65_535 >= raw.len();
        z.push(last as u8);
        let n = chunk.len() as u16;
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&(!n).to_le_bytes());
        z.extend_from_slice(chunk);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    };
    let mut ihdr = vec![];
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub body: Value,
    pub authorization: Option<String>,
    pub prefer: Option<String>,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    refuse: VecDeque<(u16, Value)>,
    /// Replicate predictions answer `processing` this many times first.
    processing_polls: u32,
    predictions: Vec<(String, u32, Vec<u8>)>,
    latency: std::time::Duration,
    /// What Replicate's predictions output instead of a PNG of the prompt (a video).
    output: Option<Vec<u8>>,
}

/// The signing secret of the fake Replicate's webhooks (`GET /v1/webhooks/default/secret`).
pub const FAKE_WEBHOOK_SECRET: &str = "whsec_cmVlbHNtaXRoIGZha2UgcmVwbGljYXRlIHNpZ25pbmcga2V5";

#[derive(Clone)]
pub struct FakeImages {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeImages {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/images/generations", post(openai))
            .route("/sdapi/v1/txt2img", post(sdwebui))
            .route("/v1/models/{owner}/{name}/predictions", post(replicate_create))
            .route("/v1/predictions/{id}", get(replicate_get))
            .route("/v1/webhooks/default/secret", get(|| async { Json(json!({"key": FAKE_WEBHOOK_SECRET})) }))
            .route("/outputs/{id}", get(replicate_output))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake image servers");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, inner }
    }

    /// The next generation answers `status` with `body` instead.
    pub fn refuse_next(&self, status: u16, body: Value) {
        self.inner.lock().unwrap().refuse.push_back((status, body));
    }

    pub fn processing_polls(&self, n: u32) {
        self.inner.lock().unwrap().processing_polls = n;
    }

    /// Every later prediction outputs `bytes` (an MP4 for a text-to-video model).
    pub fn set_output(&self, bytes: Vec<u8>) {
        self.inner.lock().unwrap().output = Some(bytes);
    }

    pub fn set_latency(&self, d: std::time::Duration) {
        self.inner.lock().unwrap().latency = d;
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }
}

fn record(
    inner: &Arc<Mutex<Inner>>,
    path: &str,
    h: &HeaderMap,
    body: &Value,
) -> (Option<(u16, Value)>, std::time::Duration) {
    let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut i = inner.lock().unwrap();
    i.seen.push(Seen {
        at: Instant::now(),
        path: path.into(),
        body: body.clone(),
        authorization: header("authorization"),
        prefer: header("prefer"),
    });
    (i.refuse.pop_front(), i.latency)
}

fn refusal((status, body): (u16, Value)) -> Response {
    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
}

fn small(prompt: &str) -> Vec<u8> {
    png(64, 36, colour_of(prompt))
}

async fn openai(State(inner): State<Arc<Mutex<Inner>>>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    let (refused, latency) = record(&inner, "/v1/images/generations", &h, &body);
    if let Some(r) = refused {
        return refusal(r);
    }
    tokio::time::sleep(latency).await;
    let prompt = body["prompt"].as_str().unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD.encode(small(prompt));
    Json(json!({"created": 1_764_892_800u64, "data": [{"b64_json": b64}],
        "usage": {"total_tokens": 4_210, "input_tokens": 50, "output_tokens": 4_160, "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}}}))
    .into_response()
}

async fn sdwebui(State(inner): State<Arc<Mutex<Inner>>>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    let (refused, latency) = record(&inner, "/sdapi/v1/txt2img", &h, &body);
    if let Some(r) = refused {
        return refusal(r);
    }
    tokio::time::sleep(latency).await;
    let prompt = body["prompt"].as_str().unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD.encode(small(prompt));
    let info = json!({"seed": body["seed"], "all_seeds": [body["seed"]], "infotexts": [prompt]}).to_string();
    Json(json!({"images": [b64], "parameters": body, "info": info})).into_response()
}

fn prediction(base: &str, id: &str, status: &str, done: bool) -> Value {
    json!({"id": id, "model": "fake/flux", "version": "v1", "input": {}, "logs": "", "error": null, "status": status,
        "created_at": "2026-12-05T00:00:00Z", "output": if done { json!([format!("{base}/outputs/{id}")]) } else { Value::Null },
        "metrics": if done { json!({"predict_time": 1.5}) } else { json!({}) },
        "urls": {"get": format!("{base}/v1/predictions/{id}"), "cancel": format!("{base}/v1/predictions/{id}/cancel")}})
}

fn base_of(h: &HeaderMap) -> String {
    format!("http://{}", h.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1"))
}

async fn replicate_create(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((owner, name)): Path<(String, String)>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let (refused, latency) = record(&inner, &format!("/v1/models/{owner}/{name}/predictions"), &h, &body);
    if let Some(r) = refused {
        return refusal(r);
    }
    tokio::time::sleep(latency).await;
    let mut i = inner.lock().unwrap();
    let id = format!("pred{}", i.predictions.len() + 1);
    let polls = i.processing_polls;
    let prompt = body["input"]["prompt"].as_str().unwrap_or_default().to_string();
    let output = i.output.clone().unwrap_or_else(|| small(&prompt));
    i.predictions.push((id.clone(), polls, output));
    let done = polls == 0;
    // With a webhook, a running prediction finishes a moment later and says so there, signed:
    // polling it meanwhile finds it still running.
    if let Some(hook) = body["webhook"].as_str().filter(|_| !done) {
        let (inner, hook, id, base) = (inner.clone(), hook.to_string(), id.clone(), base_of(&h));
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if let Some(p) = inner.lock().unwrap().predictions.iter_mut().find(|p| p.0 == id) {
                p.1 = 0;
            }
            let body = prediction(&base, &id, "succeeded", true).to_string();
            let timestamp =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
            let msg = format!("msg_{id}");
            let signature =
                crate::standard_webhooks::sign(FAKE_WEBHOOK_SECRET, &msg, &timestamp, body.as_bytes()).unwrap();
            let _ = reqwest::Client::new()
                .post(&hook)
                .header("content-type", "application/json")
                .header("webhook-id", msg)
                .header("webhook-timestamp", timestamp)
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await;
        });
    }
    (StatusCode::CREATED, Json(prediction(&base_of(&h), &id, if done { "succeeded" } else { "processing" }, done)))
        .into_response()
}

async fn replicate_get(State(inner): State<Arc<Mutex<Inner>>>, Path(id): Path<String>, h: HeaderMap) -> Response {
    let mut i = inner.lock().unwrap();
    let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    i.seen.push(Seen {
        at: Instant::now(),
        path: format!("/v1/predictions/{id}"),
        body: Value::Null,
        authorization: header("authorization"),
        prefer: None,
    });
    let Some(p) = i.predictions.iter_mut().find(|p| p.0 == id) else {
        return (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response();
    };
    p.1 = p.1.saturating_sub(1);
    let done = p.1 == 0;
    Json(prediction(&base_of(&h), &id, if done { "succeeded" } else { "processing" }, done)).into_response()
}

async fn replicate_output(State(inner): State<Arc<Mutex<Inner>>>, Path(id): Path<String>) -> Response {
    let i = inner.lock().unwrap();
    match i.predictions.iter().find(|p| p.0 == id) {
        Some(p) => p.2.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
