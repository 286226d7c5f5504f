//! Replicate predictions: `POST {base}/v1/models/{owner}/{name}/predictions` with
//! `Authorization: Bearer` and `Prefer: wait` (the answer holds up to 60 s for the result), body
//! `{input: {prompt, aspect_ratio, seed}}`; the prediction is `{id, status: starting | processing
//! | succeeded | failed | canceled, output, error, metrics: {predict_time}, urls: {get}}`. One
//! still running after the wait is polled at `urls.get`. Output links expire: the picture is
//! downloaded at once. A 429 says `{"detail": "… resets in ~30s."}`.
//!
//! With a webhook configured, the create also sends `webhook` and `webhook_events_filter:
//! ["completed"]`: Replicate POSTs the finished prediction there, signed by the Standard Webhooks
//! scheme ([`receive`] checks it), and the waiting call takes it from this process's inbox
//! instead of polling; it still looks every few seconds, since the delivery may reach another
//! node. Text-to-video models (`video_model`) are called the same way; their output is an MP4.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Image, ImageRequest, ImageSource, MAX_IMAGE_BYTES};
use crate::http::send;
pub use crate::standard_webhooks::{WebhookError, sign};
use crate::{Failure, Gate};

pub struct Replicate {
    http: reqwest::Client,
    base: String,
    token: String,
    /// `owner/name` of an official model (`black-forest-labs/flux-schnell`).
    model: String,
    /// USD per second of prediction time, for the ledger.
    usd_per_second: f64,
    gate: Arc<Gate>,
    /// Where Replicate reports finished predictions (our `/callbacks/replicate`).
    webhook: Option<String>,
    /// Inputs the model takes beside the prompt (a video model's `duration`, say).
    extra_input: serde_json::Map<String, Value>,
}

impl Replicate {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        token: &str,
        model: &str,
        usd_per_second: f64,
        gate: Arc<Gate>,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.into(),
            model: model.into(),
            usd_per_second,
            gate,
            webhook: None,
            extra_input: Default::default(),
        }
    }

    /// Finished predictions are POSTed to `url` (polled only every few seconds meanwhile).
    pub fn with_webhook(mut self, url: Option<String>) -> Self {
        self.webhook = url;
        self
    }

    /// Model inputs sent with every prediction (they never replace the prompt or seed).
    pub fn with_input(mut self, input: serde_json::Map<String, Value>) -> Self {
        self.extra_input = input;
        self
    }

    async fn attempt(&self, r: &ImageRequest) -> Result<Image, Failure> {
        let what = "replicate POST /v1/models/…/predictions";
        let ratio = match r.width.cmp(&r.height) {
            std::cmp::Ordering::Greater => "16:9",
            std::cmp::Ordering::Less => "9:16",
            std::cmp::Ordering::Equal => "1:1",
        };
        let mut input = self.extra_input.clone();
        for (k, v) in [("prompt", json!(r.prompt)), ("aspect_ratio", json!(ratio)), ("seed", json!(r.seed))] {
            input.insert(k.into(), v);
        }
        input.entry("output_format").or_insert(json!("png"));
        let mut body = json!({ "input": input });
        if let Some(url) = &self.webhook {
            body["webhook"] = json!(url);
            body["webhook_events_filter"] = json!(["completed"]);
        }
        let req = self
            .http
            .post(format!("{}/v1/models/{}/predictions", self.base, self.model))
            .bearer_auth(&self.token)
            .header("prefer", "wait")
            .json(&body);
        let (_, bytes) = send(req, what, 1 << 20).await?;
        let mut p: Value =
            serde_json::from_slice(&bytes).map_err(|e| Failure::Retryable(format!("{what}: not JSON: {e}")))?;
        let started = Instant::now();
        let poll_every = Duration::from_millis(if self.webhook.is_some() { 5_000 } else { 500 });
        while matches!(p["status"].as_str(), Some("starting" | "processing")) {
            // The gate's attempt deadline bounds this wait too.
            if started.elapsed() > Duration::from_secs(900) {
                return Err(Failure::Retryable(format!("{what}: prediction {} still {}", p["id"], p["status"])));
            }
            let id = p["id"].as_str().unwrap_or_default().to_string();
            if self.webhook.is_some() {
                if let Some(done) = inbox().wait(&id, poll_every).await {
                    p = done;
                    continue;
                }
            } else {
                tokio::time::sleep(poll_every).await;
            }
            let get =
                p["urls"]["get"].as_str().ok_or_else(|| Failure::Final(format!("{what}: no urls.get")))?.to_string();
            let (_, bytes) =
                send(self.http.get(get).bearer_auth(&self.token), "replicate GET prediction", 1 << 20).await?;
            p = serde_json::from_slice(&bytes).map_err(|e| Failure::Retryable(format!("{what}: not JSON: {e}")))?;
        }
        match p["status"].as_str() {
            Some("succeeded") => {}
            Some(s) => return Err(Failure::Final(format!("replicate prediction {}: {s}: {}", p["id"], p["error"]))),
            None => return Err(Failure::Retryable(format!("{what}: no status in {p}"))),
        }
        let url = p["output"]
            .as_str()
            .or(p["output"][0].as_str())
            .ok_or_else(|| Failure::Final(format!("{what}: no output URL")))?;
        let image = crate::http::download_bytes(&self.http, url, MAX_IMAGE_BYTES, "replicate output").await?;
        let seconds = p["metrics"]["predict_time"].as_f64().unwrap_or(0.0);
        Ok(Image {
            bytes: image,
            model: self.model.clone(),
            units: seconds,
            unit_kind: "seconds",
            est_cost_usd: seconds * self.usd_per_second,
        })
    }
}

/// Finished predictions delivered by webhook, by id, until their callers take them. Bounded:
/// only signed deliveries get here, and the oldest go first past [`INBOX_SIZE`].
struct Inbox {
    arrived: Mutex<HashMap<String, (Instant, Value)>>,
    wake: tokio::sync::Notify,
}

const INBOX_SIZE: usize = 1_024;

fn inbox() -> &'static Inbox {
    static INBOX: OnceLock<Inbox> = OnceLock::new();
    INBOX.get_or_init(|| Inbox { arrived: Mutex::default(), wake: tokio::sync::Notify::new() })
}

impl Inbox {
    fn put(&self, id: String, prediction: Value) {
        let mut arrived = self.arrived.lock().expect("inbox");
        arrived.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(3_600));
        if arrived.len() >= INBOX_SIZE
            && let Some(oldest) = arrived.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone())
        {
            arrived.remove(&oldest);
        }
        arrived.insert(id, (Instant::now(), prediction));
        drop(arrived);
        self.wake.notify_waiters();
    }

    fn take(&self, id: &str) -> Option<Value> {
        self.arrived.lock().expect("inbox").remove(id).map(|(_, v)| v)
    }

    /// The prediction once its webhook came, or `None` after `timeout`.
    async fn wait(&self, id: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before looking, so a delivery between the two is not missed.
            woken.as_mut().enable();
            if let Some(p) = self.take(id) {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return self.take(id);
            }
        }
    }
}

/// Checks a delivery (its `webhook-id`, `webhook-timestamp` and `webhook-signature` headers,
/// the signature compared in constant time, the timestamp within 5 minutes of now) and hands
/// the prediction to the call waiting for it in this process.
pub fn receive(secret: &str, id: &str, timestamp: &str, signature: &str, body: &[u8]) -> Result<(), WebhookError> {
    crate::standard_webhooks::verify(secret, id, timestamp, signature, body)?;
    let prediction: Value = serde_json::from_slice(body).map_err(|e| WebhookError::NotAPrediction(e.to_string()))?;
    let Some(pid) = prediction["id"].as_str().filter(|s| !s.is_empty() && s.len() <= 100) else {
        return Err(WebhookError::NotAPrediction("no id".into()));
    };
    // Only a finished prediction ends a wait (the filter asks for `completed` alone).
    if matches!(prediction["status"].as_str(), Some("succeeded" | "failed" | "canceled")) {
        inbox().put(pid.to_string(), prediction);
    }
    Ok(())
}

#[async_trait]
impl ImageSource for Replicate {
    fn name(&self) -> &str {
        "replicate"
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
    async fn generate(&self, r: &ImageRequest) -> Result<Image, Failure> {
        self.gate.call("image", || self.attempt(r)).await.0
    }
}
