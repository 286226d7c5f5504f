//! Language models over the OpenAI-compatible Chat Completions protocol (OpenAI, Ollama, vLLM,
//! llama.cpp's server, LM Studio all speak it): `POST {base_url}/chat/completions` with
//! `Authorization: Bearer <key>`, asking for JSON through the nested
//! `response_format: {type: json_schema, json_schema: {name, strict, schema}}` form that every
//! one of them parses. The answer's `usage` prices the call.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::http::{MAX_JSON_BYTES, send};
use crate::{Attempts, Failure, Gate};

#[cfg(feature = "fake")]
pub mod fake;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: "system", content: content.into() }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user", content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: "assistant", content: content.into() }
    }
}

/// A request for one JSON document matching `schema`.
#[derive(Clone, Debug)]
pub struct JsonRequest {
    pub messages: Vec<Message>,
    /// `[a-zA-Z0-9_-]{1,64}`.
    pub schema_name: String,
    /// A strict-mode schema: every property required, no additional properties.
    pub schema: Value,
    pub temperature: f32,
    pub max_tokens: u32,
    pub seed: Option<u64>,
}

/// A model's answer and what it cost.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The JSON text (not yet checked against the schema: the caller validates).
    pub content: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub est_cost_usd: f64,
    pub attempts: Attempts,
}

/// Anything that writes JSON to a schema: a remote model, or one in this process.
#[async_trait]
pub trait LanguageModel: Send + Sync {
    /// The provider's name ("openai", "ollama", "local").
    fn provider(&self) -> &str;
    fn model(&self) -> &str;
    async fn complete_json(&self, req: &JsonRequest) -> Result<Completion, Failure>;
    /// Its gate, when it calls a remote service (breaker state for readiness).
    fn gate(&self) -> Option<&Arc<Gate>> {
        None
    }
}

/// An OpenAI-compatible server and how to call it.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Names the provider in errors, metrics and ledgers.
    pub provider: String,
    /// Up to and including the version: `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    /// USD per million prompt and completion tokens (0: free or unknown).
    pub usd_per_mtok_in: f64,
    pub usd_per_mtok_out: f64,
}

pub struct ChatClient {
    http: reqwest::Client,
    cfg: ChatConfig,
    gate: Arc<Gate>,
}

impl ChatClient {
    pub fn new(http: reqwest::Client, cfg: ChatConfig, gate: Arc<Gate>) -> Self {
        Self { http, cfg, gate }
    }

    fn body(&self, req: &JsonRequest) -> Value {
        let messages: Vec<Value> = req.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
        let mut body = json!({
            "model": self.cfg.model,
            "messages": messages,
            "response_format": {"type": "json_schema", "json_schema": {"name": req.schema_name, "strict": true, "schema": req.schema}},
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
        });
        if let Some(seed) = req.seed {
            body["seed"] = json!(seed);
        }
        body
    }

    async fn attempt(&self, body: &Value) -> Result<Completion, Failure> {
        let what = format!("{} POST /chat/completions", self.cfg.provider);
        let mut rb = self.http.post(format!("{}/chat/completions", self.cfg.base_url.trim_end_matches('/'))).json(body);
        if let Some(key) = &self.cfg.api_key {
            rb = rb.bearer_auth(key);
        }
        let (_, bytes) = send(rb, &what, MAX_JSON_BYTES).await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Retryable(format!("{what}: the answer is not JSON: {e}")))?;
        let choice = &v["choices"][0];
        if let Some(refusal) = choice["message"]["refusal"].as_str() {
            return Err(Failure::Final(format!("{what}: the model refused: {refusal}")));
        }
        if choice["finish_reason"] == "length" {
            return Err(Failure::Final(format!("{what}: the answer was cut off at the token limit")));
        }
        let content = choice["message"]["content"]
            .as_str()
            .ok_or_else(|| Failure::Retryable(format!("{what}: no message content in the answer")))?
            .to_string();
        let tokens = |k: &str| v["usage"][k].as_u64().unwrap_or(0);
        let (prompt_tokens, completion_tokens) = (tokens("prompt_tokens"), tokens("completion_tokens"));
        Ok(Completion {
            content,
            model: v["model"].as_str().unwrap_or(&self.cfg.model).to_string(),
            prompt_tokens,
            completion_tokens,
            est_cost_usd: (prompt_tokens as f64 * self.cfg.usd_per_mtok_in
                + completion_tokens as f64 * self.cfg.usd_per_mtok_out)
                / 1e6,
            attempts: Attempts::default(),
        })
    }
}

#[async_trait]
impl LanguageModel for ChatClient {
    fn provider(&self) -> &str {
        &self.cfg.provider
    }

    fn model(&self) -> &str {
        &self.cfg.model
    }

    fn gate(&self) -> Option<&Arc<Gate>> {
        Some(&self.gate)
    }

    async fn complete_json(&self, req: &JsonRequest) -> Result<Completion, Failure> {
        let body = self.body(req);
        let (r, attempts) = self.gate.call("chat completion", || self.attempt(&body)).await;
        r.map(|c| Completion { attempts, ..c })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::time::Instant;

    use super::fake::{FakeChat, Reply};
    use super::*;
    use crate::Limits;

    fn request() -> JsonRequest {
        JsonRequest {
            messages: vec![Message::system("You plan videos."), Message::user("volcanoes")],
            schema_name: "storyboard".into(),
            schema: json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": false}),
            temperature: 0.3,
            max_tokens: 500,
            seed: Some(7),
        }
    }

    fn client(fake: &FakeChat, limits: Limits) -> ChatClient {
        let cfg = ChatConfig {
            provider: "openai".into(),
            base_url: fake.base_url(),
            api_key: Some("sk-test".into()),
            model: "gpt-test".into(),
            usd_per_mtok_in: 1.0,
            usd_per_mtok_out: 4.0,
        };
        ChatClient::new(reqwest::Client::new(), cfg, Arc::new(Gate::new("openai", limits)))
    }

    fn quick() -> Limits {
        Limits { base_backoff: Duration::from_millis(5), max_backoff: Duration::from_millis(20), ..Limits::default() }
    }

    #[tokio::test]
    async fn sends_the_nested_json_schema_form_and_prices_the_usage() {
        let fake = FakeChat::start().await;
        fake.push(Reply::content(r#"{"a": 1}"#));
        let c = client(&fake, quick()).complete_json(&request()).await.unwrap();
        assert_eq!(c.content, r#"{"a": 1}"#);
        let seen = fake.requests();
        assert_eq!(seen.len(), 1);
        let body = &seen[0].body;
        assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test"));
        assert_eq!(body["model"], "gpt-test");
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(body["response_format"]["json_schema"]["name"], "storyboard");
        assert_eq!(body["response_format"]["json_schema"]["strict"], true);
        assert_eq!(body["response_format"]["json_schema"]["schema"]["required"][0], "a");
        assert_eq!(body["messages"][1]["content"], "volcanoes");
        assert_eq!(body["seed"], 7);
        // The fake counts tokens as whitespace-separated words.
        assert_eq!((c.prompt_tokens, c.completion_tokens), (fake.prompt_tokens(0), 2));
        let expected = (c.prompt_tokens as f64 + 4.0 * 2.0) / 1e6;
        assert!((c.est_cost_usd - expected).abs() < 1e-12);
    }

    #[tokio::test]
    async fn a_429_with_retry_after_is_waited_out() {
        let fake = FakeChat::start().await;
        fake.push(Reply::rate_limited(2));
        fake.push(Reply::content(r#"{"a": 2}"#));
        let start = Instant::now();
        let c = client(&fake, quick()).complete_json(&request()).await.unwrap();
        assert_eq!(c.attempts.attempts, 2);
        let at = fake.requests().iter().map(|r| r.at).collect::<Vec<_>>();
        assert!(at[1].duration_since(at[0]) >= Duration::from_secs(2), "{:?}", at[1].duration_since(at[0]));
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test]
    async fn billing_failures_are_final_name_the_provider_and_open_the_breaker() {
        let fake = FakeChat::start().await;
        fake.push(Reply::insufficient_quota());
        let llm = client(&fake, quick());
        let err = llm.complete_json(&request()).await.unwrap_err();
        assert!(
            matches!(&err, Failure::Quota(m) if m.starts_with("openai POST /chat/completions answered 429: insufficient_quota")),
            "{err:?}"
        );
        assert_eq!(llm.gate().unwrap().breaker().name(), "open");
        // The next call fails fast without reaching the provider.
        let err = llm.complete_json(&request()).await.unwrap_err();
        assert!(matches!(err, Failure::Unavailable(_)));
        assert_eq!(fake.requests().len(), 1);

        let fake = FakeChat::start().await;
        fake.push(Reply::status(402, json!({"error": {"message": "Insufficient Balance", "type": "unknown_error"}})));
        let err = client(&fake, quick()).complete_json(&request()).await.unwrap_err();
        assert!(matches!(err, Failure::Quota(_)));
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused_unread() {
        let fake = FakeChat::start().await;
        fake.push(Reply::content("x ".repeat(3 << 20)));
        let err = client(&fake, quick()).complete_json(&request()).await.unwrap_err();
        assert!(matches!(&err, Failure::Final(m) if m.contains("larger than")), "{err:?}");
        // The fake still answers the next request.
        fake.push(Reply::content(r#"{"a": 3}"#));
        assert_eq!(client(&fake, quick()).complete_json(&request()).await.unwrap().content, r#"{"a": 3}"#);
    }

    #[tokio::test]
    async fn cut_off_and_refused_answers_are_failures() {
        let fake = FakeChat::start().await;
        fake.push(Reply::Answer { content: r#"{"a": "#.into(), finish_reason: "length", refusal: None });
        let err = client(&fake, quick()).complete_json(&request()).await.unwrap_err();
        assert!(err.to_string().contains("cut off"), "{err}");
        fake.push(Reply::Answer { content: String::new(), finish_reason: "stop", refusal: Some("I can't".into()) });
        let err = client(&fake, quick()).complete_json(&request()).await.unwrap_err();
        assert!(err.to_string().contains("refused: I can't"), "{err}");
    }
}
