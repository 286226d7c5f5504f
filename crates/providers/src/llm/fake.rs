//! A local OpenAI-compatible Chat Completions server for tests: `POST /v1/chat/completions`
//! answering in the documented shape (`choices[0].message.content`, `finish_reason`,
//! `usage`), or with OpenAI's error body `{error: {message, type, param, code}}` and its
//! headers (`retry-after`, `x-ratelimit-*`). Replies are queued by the test; when none is
//! queued, the responder (if set) answers from the request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// One answer of the fake.
#[derive(Clone, Debug)]
pub enum Reply {
    Answer {
        content: String,
        finish_reason: &'static str,
        refusal: Option<String>,
    },
    /// An error status with its body and extra headers.
    Error {
        status: u16,
        body: Value,
        headers: Vec<(&'static str, String)>,
    },
}

impl Reply {
    pub fn content(s: impl Into<String>) -> Self {
        Reply::Answer { content: s.into(), finish_reason: "stop", refusal: None }
    }

    pub fn status(status: u16, body: Value) -> Self {
        Reply::Error { status, body, headers: vec![] }
    }

    /// OpenAI's request-rate 429, with `retry-after` in seconds.
    pub fn rate_limited(retry_after_s: u64) -> Self {
        Reply::Error {
            status: 429,
            body: json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
            headers: vec![
                ("retry-after", retry_after_s.to_string()),
                ("x-ratelimit-remaining-requests", "0".into()),
                ("x-ratelimit-reset-requests", format!("{retry_after_s}s")),
            ],
        }
    }

    /// OpenAI's billing 429: no retry helps.
    pub fn insufficient_quota() -> Self {
        Reply::status(
            429,
            json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
        )
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub body: Value,
    pub authorization: Option<String>,
}

type Responder = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

#[derive(Default)]
struct Inner {
    queue: VecDeque<Reply>,
    seen: Vec<Seen>,
    responder: Option<Responder>,
    latency: Duration,
}

#[derive(Clone)]
pub struct FakeChat {
    base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeChat {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake LLM");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, inner }
    }

    /// What to configure as the provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.base)
    }

    pub fn push(&self, r: Reply) {
        self.inner.lock().unwrap().queue.push_back(r);
    }

    /// Answers requests when no reply is queued.
    pub fn respond_with(&self, f: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        self.inner.lock().unwrap().responder = Some(Arc::new(f));
    }

    /// Every answer takes this long (benchmarks of overlapping calls).
    pub fn set_latency(&self, d: Duration) {
        self.inner.lock().unwrap().latency = d;
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// The prompt tokens the fake charged request `i` (words of all its messages).
    pub fn prompt_tokens(&self, i: usize) -> u64 {
        prompt_tokens(&self.inner.lock().unwrap().seen[i].body)
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

fn prompt_tokens(body: &Value) -> u64 {
    body["messages"].as_array().map_or(0, |m| m.iter().map(|m| words(m["content"].as_str().unwrap_or(""))).sum())
}

async fn complete(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let (reply, latency) = {
        let mut i = inner.lock().unwrap();
        i.seen.push(Seen {
            at: Instant::now(),
            body: body.clone(),
            authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
        });
        let reply = match i.queue.pop_front() {
            Some(r) => r,
            None => match &i.responder {
                Some(f) => f(&body),
                None => Reply::status(
                    500,
                    json!({"error": {"message": "the fake has no reply queued", "type": "server_error", "param": null, "code": null}}),
                ),
            },
        };
        (reply, i.latency)
    };
    if body["response_format"]["json_schema"]["schema"].is_null() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {"message": "response_format.json_schema.schema is required", "type": "invalid_request_error", "param": "response_format", "code": null}}))).into_response();
    }
    tokio::time::sleep(latency).await;
    match reply {
        Reply::Answer { content, finish_reason, refusal } => {
            let completion_tokens = words(&content);
            let prompt = prompt_tokens(&body);
            Json(json!({
                "id": format!("chatcmpl-fake{}", inner.lock().unwrap().seen.len()),
                "object": "chat.completion",
                "created": 1_764_892_800u64,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": refusal}, "finish_reason": finish_reason}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens},
            }))
            .into_response()
        }
        Reply::Error { status, body, headers } => {
            let mut resp =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body)).into_response();
            for (k, v) in headers {
                resp.headers_mut().insert(k, v.parse().expect("header value"));
            }
            resp
        }
    }
}
