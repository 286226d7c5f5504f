//! Stable Diffusion WebUI (AUTOMATIC1111, started with `--api`): `POST {base}/sdapi/v1/txt2img`
//! with `{prompt, negative_prompt, seed, steps, cfg_scale, width, height, sampler_name,
//! batch_size: 1, n_iter: 1, send_images: true, save_images: false}`; the answer is
//! `{images: ["<base64 PNG>"], parameters, info: "<JSON string>"}`. Errors are FastAPI
//! `{detail}`. The server renders one request at a time: run it with concurrency 1.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Image, ImageRequest, ImageSource, MAX_IMAGE_BYTES, base64_image, sd_size};
use crate::http::send;
use crate::{Failure, Gate};

pub struct SdWebUi {
    http: reqwest::Client,
    base: String,
    /// `user:password` for `--api-auth`, when set.
    auth: Option<(String, String)>,
    steps: u32,
    gate: Arc<Gate>,
}

impl SdWebUi {
    pub fn new(http: reqwest::Client, base: &str, auth: Option<&str>, steps: u32, gate: Arc<Gate>) -> Self {
        let auth = auth.and_then(|a| a.split_once(':')).map(|(u, p)| (u.to_string(), p.to_string()));
        Self { http, base: base.trim_end_matches('/').to_string(), auth, steps, gate }
    }

    async fn attempt(&self, r: &ImageRequest) -> Result<Image, Failure> {
        let what = "sd-webui POST /sdapi/v1/txt2img";
        let (width, height) = sd_size(r.width, r.height);
        let body = json!({
            "prompt": r.prompt,
            "negative_prompt": "text, watermark, logo, blurry",
            "seed": r.seed,
            "steps": self.steps,
            "cfg_scale": 7,
            "width": width,
            "height": height,
            "sampler_name": "Euler a",
            "batch_size": 1,
            "n_iter": 1,
            "send_images": true,
            "save_images": false,
        });
        let mut req = self.http.post(format!("{}/sdapi/v1/txt2img", self.base)).json(&body);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let (_, bytes) = send(req, what, MAX_IMAGE_BYTES * 2).await?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| Failure::Retryable(format!("{what}: not JSON: {e}")))?;
        let b64 =
            v["images"][0].as_str().ok_or_else(|| Failure::Final(format!("{what}: no images[0] in the answer")))?;
        Ok(Image {
            bytes: base64_image(b64, what)?,
            model: "sd-webui".into(),
            units: 1.0,
            unit_kind: "images",
            est_cost_usd: 0.0,
        })
    }
}

#[async_trait]
impl ImageSource for SdWebUi {
    fn name(&self) -> &str {
        "sd-webui"
    }
    fn model(&self) -> &str {
        "sd-webui"
    }
    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
    async fn generate(&self, r: &ImageRequest) -> Result<Image, Failure> {
        self.gate.call("image", || self.attempt(r)).await.0
    }
}
