//! OpenAI speech: `POST {base_url}/audio/speech` with `Authorization: Bearer`, body
//! `{model, input, voice, response_format: "wav", speed}`; the answer is the audio file itself.
//! No timings come back (subtitles are spread over the audible span by the renderer). Billed
//! per input character.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::{MAX_AUDIO_BYTES, Speech, SpeechRequest, SpeechSource, check_text};
use crate::http::send;
use crate::{Failure, Gate};

pub struct OpenAiSpeech {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    model: String,
    voice: String,
    usd_per_mchar: f64,
    gate: Arc<Gate>,
}

impl OpenAiSpeech {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        key: &str,
        model: &str,
        voice: &str,
        usd_per_mchar: f64,
        gate: Arc<Gate>,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            // Local servers (Chatterbox, OpenVINO) take no key.
            key: (!key.trim().is_empty()).then(|| key.to_string()),
            model: model.into(),
            voice: voice.into(),
            usd_per_mchar,
            gate,
        }
    }

    async fn attempt(&self, r: &SpeechRequest, voice: &str) -> Result<Speech, Failure> {
        let what = "openai POST /audio/speech";
        let body = json!({
            "model": self.model,
            "input": r.text,
            "voice": voice,
            "response_format": "wav",
            "speed": r.speed.clamp(0.25, 4.0),
        });
        let mut req = self.http.post(format!("{}/audio/speech", self.base)).json(&body);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let (_, wav) = send(req, what, MAX_AUDIO_BYTES).await?;
        if !(wav.starts_with(b"RIFF") && wav.len() > 44) {
            return Err(Failure::Retryable(format!("{what}: the answer is not a WAV file")));
        }
        let characters = r.text.chars().count() as f64;
        Ok(Speech {
            wav,
            words: None,
            model: self.model.clone(),
            voice: voice.to_string(),
            characters,
            est_cost_usd: characters * self.usd_per_mchar / 1e6,
        })
    }
}

#[async_trait]
impl SpeechSource for OpenAiSpeech {
    fn name(&self) -> &str {
        "openai-speech"
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn default_voice(&self) -> &str {
        &self.voice
    }
    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
    async fn synthesize(&self, r: &SpeechRequest) -> Result<Speech, Failure> {
        check_text("openai speech", &r.text)?;
        let voice = r.voice.clone().unwrap_or_else(|| self.voice.clone());
        self.gate.call("speech", || self.attempt(r, &voice)).await.0
    }
}
