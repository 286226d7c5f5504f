//! Generated pictures: OpenAI Images (`POST /v1/images/generations`, base64 PNG in
//! `data[0].b64_json`, billed by `usage` tokens), Stable Diffusion WebUI
//! (`POST /sdapi/v1/txt2img`, base64 PNG in `images[0]`, one at a time per server) and Replicate
//! predictions (`POST /v1/models/{owner}/{name}/predictions` with `Prefer: wait`, output URLs
//! copied at once since they expire). Each returns the picture's bytes; the caller caches them
//! by (provider, model, canonical request).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Failure, Gate};

#[cfg(feature = "fake")]
pub mod fake;
pub mod openai;
pub mod replicate;
pub mod sdwebui;

/// What to draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRequest {
    pub prompt: String,
    pub width: u32,
    pub height: u32,
    /// Fixed for reproducible (and cacheable) results where the provider takes one.
    pub seed: u64,
}

/// A generated picture and what it cost.
#[derive(Clone, Debug)]
pub struct Image {
    /// PNG, JPEG or WebP bytes (sniffed by the caller).
    pub bytes: Vec<u8>,
    pub model: String,
    /// Billing units and their kind (`tokens`, `images`, `seconds`).
    pub units: f64,
    pub unit_kind: &'static str,
    pub est_cost_usd: f64,
}

#[async_trait]
pub trait ImageSource: Send + Sync {
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    fn gate(&self) -> &Arc<Gate>;
    async fn generate(&self, req: &ImageRequest) -> Result<Image, Failure>;
}

/// Largest picture accepted from a provider.
pub const MAX_IMAGE_BYTES: usize = 40 << 20;

pub(crate) fn base64_image(b64: &str, what: &str) -> Result<Vec<u8>, Failure> {
    use base64::Engine as _;
    // Some servers prefix a data URL.
    let data = b64.split_once("base64,").map_or(b64, |(_, d)| d);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| Failure::Final(format!("{what}: the image is not base64: {e}")))?;
    if bytes.is_empty() {
        return Err(Failure::Retryable(format!("{what}: the image is empty")));
    }
    Ok(bytes)
}

/// The nearest size OpenAI's image models draw for a frame: square, landscape or portrait.
pub(crate) fn openai_size(width: u32, height: u32) -> &'static str {
    let ratio = width as f64 / height.max(1) as f64;
    if ratio > 1.2 {
        "1536x1024"
    } else if ratio < 0.83 {
        "1024x1536"
    } else {
        "1024x1024"
    }
}

/// A size Stable Diffusion draws well: the frame's shape, the longer side 768, multiples of 64.
pub(crate) fn sd_size(width: u32, height: u32) -> (u32, u32) {
    let scale = 768.0 / width.max(height).max(1) as f64;
    let round = |v: u32| (((v as f64 * scale) / 64.0).round() as u32).max(1) * 64;
    (round(width), round(height))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::fake::{FakeImages, colour_of};
    use super::*;
    use crate::Limits;

    fn gate() -> Arc<Gate> {
        Arc::new(Gate::new(
            "images",
            Limits {
                base_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                ..Limits::default()
            },
        ))
    }

    fn request(prompt: &str) -> ImageRequest {
        ImageRequest { prompt: prompt.into(), width: 1280, height: 720, seed: 42 }
    }

    fn decoded_colour(png: &[u8]) -> [u8; 3] {
        let img = image_first_pixel(png);
        [img[0], img[1], img[2]]
    }

    /// The first pixel of the fake's stored-block PNGs (no image library here).
    fn image_first_pixel(png: &[u8]) -> Vec<u8> {
        let idat = png.windows(4).position(|w| w == b"IDAT").unwrap() + 4;
        // zlib header (2), block header (5), filter byte (1), then RGB.
        png[idat + 8..idat + 11].to_vec()
    }

    #[tokio::test]
    async fn openai_images_sends_its_format_and_prices_its_tokens() {
        let fake = FakeImages::start().await;
        let http = reqwest::Client::new();
        let src =
            openai::OpenAiImages::new(http, &format!("{}/v1", fake.base), "sk-img", "gpt-image-1", "low", 40.0, gate());
        let img = src.generate(&request("a volcano at dusk")).await.unwrap();
        assert!(img.bytes.starts_with(b"\x89PNG"));
        assert_eq!(decoded_colour(&img.bytes), colour_of("a volcano at dusk"));
        assert_eq!((img.units, img.unit_kind), (4_160.0, "tokens"));
        assert!((img.est_cost_usd - 4_160.0 * 40.0 / 1e6).abs() < 1e-9);
        let seen = &fake.requests()[0];
        assert_eq!(seen.authorization.as_deref(), Some("Bearer sk-img"));
        assert_eq!(seen.body["size"], "1536x1024");
        assert_eq!((seen.body["model"].as_str(), seen.body["n"].as_u64()), (Some("gpt-image-1"), Some(1)));
        // Billing: final, and the breaker opens.
        fake.refuse_next(400, json!({"error": {"message": "Billing hard limit has been reached", "type": "image_generation_user_error", "code": "billing_hard_limit_reached"}}));
        let err = src.generate(&request("x")).await.unwrap_err();
        assert!(matches!(err, Failure::Quota(_)), "{err:?}");
        assert_eq!(src.gate().breaker().name(), "open");
    }

    #[tokio::test]
    async fn sd_webui_draws_at_a_size_it_handles() {
        let fake = FakeImages::start().await;
        let src = sdwebui::SdWebUi::new(reqwest::Client::new(), &fake.base, Some("me:secret"), 20, gate());
        let img =
            src.generate(&ImageRequest { prompt: "lava".into(), width: 720, height: 1280, seed: 7 }).await.unwrap();
        assert_eq!(decoded_colour(&img.bytes), colour_of("lava"));
        let seen = &fake.requests()[0];
        assert_eq!((seen.body["width"].as_u64(), seen.body["height"].as_u64()), (Some(448), Some(768)));
        assert_eq!(seen.body["seed"], 7);
        assert!(seen.authorization.as_deref().unwrap().starts_with("Basic "));
        fake.refuse_next(404, json!({"detail": "Sampler not found"}));
        let err = src.generate(&request("x")).await.unwrap_err();
        assert!(matches!(&err, Failure::Final(m) if m.contains("Sampler not found")), "{err:?}");
    }

    #[tokio::test]
    async fn replicate_waits_polls_and_copies_the_output() {
        let fake = FakeImages::start().await;
        fake.processing_polls(2);
        let src = replicate::Replicate::new(reqwest::Client::new(), &fake.base, "r8_token", "fake/flux", 0.002, gate());
        let img = src.generate(&request("glacier")).await.unwrap();
        assert_eq!(decoded_colour(&img.bytes), colour_of("glacier"));
        assert_eq!((img.units, img.unit_kind), (1.5, "seconds"));
        let seen = &fake.requests()[0];
        assert_eq!(seen.prefer.as_deref(), Some("wait"));
        assert_eq!(seen.body["input"]["aspect_ratio"], "16:9");
        // A throttled create is retried after the time its body names.
        fake.processing_polls(0);
        fake.refuse_next(429, json!({"detail": "Request was throttled. Your rate limit resets in ~1s."}));
        let start = Instant::now();
        src.generate(&request("fjord")).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    /// A receiver of Replicate's webhooks, as the service mounts one: it checks the signature
    /// and hands the prediction over.
    async fn webhook_receiver() -> String {
        use axum::http::HeaderMap;
        let app = axum::Router::new().route(
            "/callbacks/replicate",
            axum::routing::post(|h: HeaderMap, body: axum::body::Bytes| async move {
                let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let (id, ts, sig) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
                match replicate::receive(fake::FAKE_WEBHOOK_SECRET, &id, &ts, &sig, &body) {
                    Ok(()) => axum::http::StatusCode::OK,
                    Err(_) => axum::http::StatusCode::UNAUTHORIZED,
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/callbacks/replicate", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn replicate_webhooks_end_the_wait_without_polling() {
        let fake = FakeImages::start().await;
        // Polling alone would see "processing" a thousand times.
        fake.processing_polls(1_000);
        let hook = webhook_receiver().await;
        let src = replicate::Replicate::new(reqwest::Client::new(), &fake.base, "r8_token", "fake/flux", 0.002, gate())
            .with_webhook(Some(hook.clone()));
        let img = src.generate(&request("a geyser erupting")).await.unwrap();
        assert_eq!(decoded_colour(&img.bytes), colour_of("a geyser erupting"));
        let seen = fake.requests();
        assert_eq!(seen[0].body["webhook"], hook.as_str());
        assert_eq!(seen[0].body["webhook_events_filter"], json!(["completed"]));
        let polls = seen.iter().filter(|s| s.path.starts_with("/v1/predictions/")).count();
        assert_eq!(polls, 0, "the webhook ended the wait: {:?}", seen.iter().map(|s| &s.path).collect::<Vec<_>>());
    }

    #[test]
    fn replicate_webhooks_are_verified_in_full() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let (id, ts) = ("msg_1", now.to_string());
        let body = br#"{"id": "pred-x", "status": "succeeded", "output": ["http://x/o.png"]}"#;
        let secret = fake::FAKE_WEBHOOK_SECRET;
        let good = replicate::sign(secret, id, &ts, body).unwrap();
        assert!(replicate::receive(secret, id, &ts, &good, body).is_ok());
        // Several signatures (a secret being rotated): any valid one will do.
        assert!(replicate::receive(secret, id, &ts, &format!("v1,AAAA {good}"), body).is_ok());
        // A changed body, id or timestamp, a truncated signature, another secret: refused.
        let tampered = br#"{"id": "pred-x", "status": "succeeded", "output": ["http://evil/o.png"]}"#;
        assert!(replicate::receive(secret, id, &ts, &good, tampered).is_err());
        assert!(replicate::receive(secret, "msg_2", &ts, &good, body).is_err());
        assert!(replicate::receive(secret, id, &ts, &good[..good.len() - 4], body).is_err());
        let other = "whsec_b3RoZXIgc2VjcmV0";
        assert!(replicate::receive(other, id, &ts, &good, body).is_err());
        assert!(replicate::receive(secret, id, &ts, "", body).is_err());
        // A replay of an old delivery, signed correctly, is stale.
        let old = (now - 3_600).to_string();
        let sig = replicate::sign(secret, id, &old, body).unwrap();
        assert!(matches!(replicate::receive(secret, id, &old, &sig, body), Err(replicate::WebhookError::Stale)));
        assert!(matches!(replicate::sign("not-a-secret", id, &ts, body), Err(replicate::WebhookError::BadSecret)));
    }

    #[tokio::test]
    async fn replicate_video_models_take_their_own_inputs_and_give_the_video() {
        let fake = FakeImages::start().await;
        let mp4 = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
        fake.set_output(mp4.clone());
        let mut input = serde_json::Map::new();
        input.insert("duration".into(), json!(5));
        input.insert("prompt".into(), json!("never sent: the scene's prompt is"));
        let src = replicate::Replicate::new(reqwest::Client::new(), &fake.base, "r8", "fake/video-model", 0.05, gate())
            .with_input(input);
        let clip = src.generate(&request("waves on a beach")).await.unwrap();
        assert_eq!(clip.bytes, mp4);
        let body = &fake.requests()[0].body;
        assert_eq!(fake.requests()[0].path, "/v1/models/fake/video-model/predictions");
        assert_eq!(
            (body["input"]["duration"].as_u64(), body["input"]["prompt"].as_str()),
            (Some(5), Some("waves on a beach"))
        );
        assert!(body.get("webhook").is_none());
    }
}
