//! Replicate predictions: `POST {base}/v1/models/{owner}/{name}/predictions` with
//! `Authorization: Bearer` and `Prefer: wait` (the answer holds up to 60 s for the result), body
//! `{input: {prompt, aspect_ratio, seed}}`; the prediction is `{id, status: starting | processing
//! | succeeded | failed | canceled, output, error, metrics: {predict_time}, urls: {get}}`. One
//! still running after the wait is polled at `urls.get`. Output links expire: the picture is
//! downloaded at once. A 429 says `{"detail": "… resets in ~30s."}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Image, ImageRequest, ImageSource, MAX_IMAGE_BYTES};
use crate::http::send;
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
        }
    }

    async fn attempt(&self, r: &ImageRequest) -> Result<Image, Failure> {
        let what = "replicate POST /v1/models/…/predictions";
        let ratio = match r.width.cmp(&r.height) {
            std::cmp::Ordering::Greater => "16:9",
            std::cmp::Ordering::Less => "9:16",
            std::cmp::Ordering::Equal => "1:1",
        };
        let body =
            json!({"input": {"prompt": r.prompt, "aspect_ratio": ratio, "seed": r.seed, "output_format": "png"}});
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
        while matches!(p["status"].as_str(), Some("starting" | "processing")) {
            // The gate's attempt deadline bounds this wait too.
            if started.elapsed() > Duration::from_secs(600) {
                return Err(Failure::Retryable(format!("{what}: prediction {} still {}", p["id"], p["status"])));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
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
