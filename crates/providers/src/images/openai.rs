//! OpenAI Images: `POST {base_url}/images/generations` with `Authorization: Bearer`, body
//! `{model, prompt, n: 1, size, quality, output_format}`; the answer is
//! `{created, data: [{b64_json}], usage: {input_tokens, output_tokens, total_tokens}}` (GPT image
//! models always answer base64).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Image, ImageRequest, ImageSource, MAX_IMAGE_BYTES, base64_image, openai_size};
use crate::http::send;
use crate::{Failure, Gate};

pub struct OpenAiImages {
    http: reqwest::Client,
    base: String,
    key: String,
    model: String,
    quality: String,
    /// USD per million output tokens (image tokens), for the ledger.
    usd_per_mtok_out: f64,
    gate: Arc<Gate>,
}

impl OpenAiImages {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        key: &str,
        model: &str,
        quality: &str,
        usd_per_mtok_out: f64,
        gate: Arc<Gate>,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.into(),
            model: model.into(),
            quality: quality.into(),
            usd_per_mtok_out,
            gate,
        }
    }

    async fn attempt(&self, r: &ImageRequest) -> Result<Image, Failure> {
        let what = "openai POST /images/generations";
        let body = json!({
            "model": self.model,
            "prompt": r.prompt,
            "n": 1,
            "size": openai_size(r.width, r.height),
            "quality": self.quality,
            "output_format": "png",
        });
        let req = self.http.post(format!("{}/images/generations", self.base)).bearer_auth(&self.key).json(&body);
        let (_, bytes) = send(req, what, MAX_IMAGE_BYTES * 2).await?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| Failure::Retryable(format!("{what}: not JSON: {e}")))?;
        let b64 = v["data"][0]["b64_json"]
            .as_str()
            .ok_or_else(|| Failure::Final(format!("{what}: no data[0].b64_json in the answer")))?;
        let tokens = v["usage"]["output_tokens"].as_f64().or(v["usage"]["total_tokens"].as_f64()).unwrap_or(0.0);
        Ok(Image {
            bytes: base64_image(b64, what)?,
            model: self.model.clone(),
            units: tokens,
            unit_kind: "tokens",
            est_cost_usd: tokens * self.usd_per_mtok_out / 1e6,
        })
    }
}

#[async_trait]
impl ImageSource for OpenAiImages {
    fn name(&self) -> &str {
        "openai-images"
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
