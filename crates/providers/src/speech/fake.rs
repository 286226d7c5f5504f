//! A local ElevenLabs and OpenAI speech server for tests, in their wire formats. The "voice"
//! is a tone while a character is spoken and silence at whitespace, each character
//! [`SECONDS_PER_CHAR`] long, so a test can check that the timings it was given match the
//! audio ([`loud_at`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};

use super::wav::wav_from_pcm16;

pub const SECONDS_PER_CHAR: f64 = 0.06;
const RATE: u32 = 24_000;

/// 16-bit mono PCM of `text` as the fake speaks it.
pub fn pcm_of(text: &str) -> Vec<u8> {
    let per = (SECONDS_PER_CHAR * RATE as f64) as usize;
    let mut out = Vec::with_capacity(text.chars().count() * per * 2);
    let mut n = 0usize;
    for c in text.chars() {
        for _ in 0..per {
            let v = if c.is_whitespace() {
                0.0
            } else {
                (2.0 * std::f64::consts::PI * 300.0 * n as f64 / RATE as f64).sin() * 0.5
            };
            out.extend_from_slice(&((v * 32_767.0) as i16).to_le_bytes());
            n += 1;
        }
    }
    out
}

/// Whether a WAV (16-bit mono, as the fake and the clients write it) is loud around `t` seconds.
pub fn loud_at(wav: &[u8], t: f64) -> bool {
    let rate = u32::from_le_bytes(wav[24..28].try_into().unwrap()) as f64;
    let samples: Vec<f64> =
        wav[44..].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f64 / 32_768.0).collect();
    let (a, b) = (((t - 0.01) * rate).max(0.0) as usize, ((t + 0.01) * rate) as usize);
    let window = &samples[a.min(samples.len())..b.min(samples.len())];
    let rms = (window.iter().map(|s| s * s).sum::<f64>() / window.len().max(1) as f64).sqrt();
    rms > 0.1
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub query: Option<String>,
    pub body: Value,
    pub authorization: Option<String>,
    pub api_key: Option<String>,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    refuse: VecDeque<(u16, Value)>,
    latency: std::time::Duration,
    /// The next OpenAI answer streams this many bytes, with no length said up front.
    oversized: Option<usize>,
}

#[derive(Clone)]
pub struct FakeSpeech {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSpeech {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/text-to-speech/{voice}/with-timestamps", post(elevenlabs))
            .route("/v1/audio/speech", post(openai))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake speech servers");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, inner }
    }

    /// The next request answers `status` with `body` instead.
    pub fn refuse_next(&self, status: u16, body: Value) {
        self.inner.lock().unwrap().refuse.push_back((status, body));
    }

    /// The next OpenAI speech answer is `bytes` long, streamed without a `content-length` (a
    /// server that never stops must still be cut off by the client).
    pub fn answer_oversized_next(&self, bytes: usize) {
        self.inner.lock().unwrap().oversized = Some(bytes);
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
    path: String,
    query: Option<String>,
    h: &HeaderMap,
    body: &Value,
) -> (Option<(u16, Value)>, std::time::Duration) {
    let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut i = inner.lock().unwrap();
    i.seen.push(Seen {
        at: Instant::now(),
        path,
        query,
        body: body.clone(),
        authorization: header("authorization"),
        api_key: header("xi-api-key"),
    });
    (i.refuse.pop_front(), i.latency)
}

fn refusal((status, body): (u16, Value)) -> Response {
    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
}

async fn elevenlabs(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(voice): Path<String>,
    RawQuery(query): RawQuery,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/v1/text-to-speech/{voice}/with-timestamps");
    let (refused, latency) = record(&inner, path, query, &h, &body);
    if let Some(r) = refused {
        return refusal(r);
    }
    if h.get("xi-api-key").is_none() {
        return refusal((401, json!({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})));
    }
    tokio::time::sleep(latency).await;
    let text = body["text"].as_str().unwrap_or_default();
    let characters: Vec<String> = text.chars().map(String::from).collect();
    let starts: Vec<f64> = (0..characters.len()).map(|i| i as f64 * SECONDS_PER_CHAR).collect();
    let ends: Vec<f64> = starts.iter().map(|s| s + SECONDS_PER_CHAR).collect();
    let alignment = json!({"characters": characters, "character_start_times_seconds": starts,
                           "character_end_times_seconds": ends});
    let audio = base64::engine::general_purpose::STANDARD.encode(pcm_of(text));
    let mut resp =
        Json(json!({"audio_base64": audio, "alignment": alignment, "normalized_alignment": alignment})).into_response();
    resp.headers_mut().insert("character-cost", characters.len().into());
    resp.headers_mut().insert("request-id", "req-fake".parse().unwrap());
    resp
}

async fn openai(State(inner): State<Arc<Mutex<Inner>>>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    let (refused, latency) = record(&inner, "/v1/audio/speech".into(), None, &h, &body);
    if let Some(r) = refused {
        return refusal(r);
    }
    tokio::time::sleep(latency).await;
    if let Some(total) = inner.lock().unwrap().oversized.take() {
        const CHUNK: usize = 1 << 20;
        let chunks = (0..total.div_ceil(CHUNK))
            .map(move |i| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![0u8; CHUNK.min(total - i * CHUNK)])));
        let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
        return ([("content-type", "audio/wav")], body).into_response();
    }
    if body["response_format"] != "wav" {
        return refusal((
            400,
            json!({"error": {"message": "the fake answers only wav", "type": "invalid_request_error"}}),
        ));
    }
    let text = body["input"].as_str().unwrap_or_default();
    ([("content-type", "audio/wav")], wav_from_pcm16(&pcm_of(text), RATE)).into_response()
}
