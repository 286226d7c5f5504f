//! ElevenLabs: `POST {base}/v1/text-to-speech/{voice_id}/with-timestamps?output_format=pcm_24000`
//! with `xi-api-key`, body `{text, model_id, language_code, voice_settings: {speed}}`; the answer
//! is `{audio_base64, alignment: {characters, character_start_times_seconds,
//! character_end_times_seconds}, normalized_alignment}`. `pcm_24000` (raw 16-bit mono, every
//! plan may ask for it) is wrapped into a WAV here. Billed per character (the `character-cost`
//! header when sent).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::wav::wav_from_pcm16;
use super::{MAX_AUDIO_BYTES, Speech, SpeechRequest, SpeechSource, check_text, words_from_alignment};
use crate::http::send;
use crate::{Failure, Gate};

const SAMPLE_RATE: u32 = 24_000;

pub struct ElevenLabs {
    http: reqwest::Client,
    base: String,
    key: String,
    model: String,
    voice: String,
    usd_per_1k_chars: f64,
    gate: Arc<Gate>,
}

#[derive(Deserialize)]
struct Alignment {
    characters: Vec<String>,
    character_start_times_seconds: Vec<f64>,
    character_end_times_seconds: Vec<f64>,
}

#[derive(Deserialize)]
struct Answer {
    audio_base64: String,
    alignment: Option<Alignment>,
    normalized_alignment: Option<Alignment>,
}

impl ElevenLabs {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        key: &str,
        model: &str,
        voice: &str,
        usd_per_1k_chars: f64,
        gate: Arc<Gate>,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.into(),
            model: model.into(),
            voice: voice.into(),
            usd_per_1k_chars,
            gate,
        }
    }

    async fn attempt(&self, r: &SpeechRequest, voice: &str) -> Result<Speech, Failure> {
        let what = "elevenlabs POST /v1/text-to-speech/with-timestamps";
        // Its accepted range; the pace beyond it is the renderer's tempo.
        let speed = r.speed.clamp(0.7, 1.2);
        let language = r.language.split(['-', '_']).next().unwrap_or("en").to_ascii_lowercase();
        let body = json!({
            "text": r.text,
            "model_id": self.model,
            "language_code": language,
            "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "speed": speed},
        });
        let url = format!("{}/v1/text-to-speech/{}/with-timestamps", self.base, urlencode(voice));
        let req =
            self.http.post(url).query(&[("output_format", "pcm_24000")]).header("xi-api-key", &self.key).json(&body);
        // Base64 is a third larger than the audio; the alignment adds a little per character.
        let (headers, bytes) = send(req, what, MAX_AUDIO_BYTES * 4 / 3 + (1 << 20)).await?;
        let answer: Answer =
            serde_json::from_slice(&bytes).map_err(|e| Failure::Retryable(format!("{what}: not its JSON: {e}")))?;
        let pcm = base64::engine::general_purpose::STANDARD
            .decode(answer.audio_base64.trim())
            .map_err(|e| Failure::Final(format!("{what}: audio_base64 is not base64: {e}")))?;
        if pcm.len() < 2 {
            return Err(Failure::Retryable(format!("{what}: the audio is empty")));
        }
        // The alignment of the text as sent (the normalized one spells numbers out).
        let words = answer.alignment.or(answer.normalized_alignment).map(|a| {
            words_from_alignment(&a.characters, &a.character_start_times_seconds, &a.character_end_times_seconds)
        });
        let characters = headers
            .get("character-cost")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(r.text.chars().count() as f64);
        Ok(Speech {
            wav: wav_from_pcm16(&pcm, SAMPLE_RATE),
            words,
            model: self.model.clone(),
            voice: voice.to_string(),
            characters,
            est_cost_usd: characters * self.usd_per_1k_chars / 1000.0,
        })
    }
}

/// A voice id as one path segment.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait]
impl SpeechSource for ElevenLabs {
    fn name(&self) -> &str {
        "elevenlabs"
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
        check_text("elevenlabs", &r.text)?;
        let voice = r.voice.clone().unwrap_or_else(|| self.voice.clone());
        self.gate.call("speech", || self.attempt(r, &voice)).await.0
    }
}
