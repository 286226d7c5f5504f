//! Provider settings, as the service's config file (`[providers.llm]`) and the CLI give them.
//! A provider's `base_url` is the operator's choice and may be loopback or private (a local
//! Ollama or llama.cpp server); only URLs that come from requests are held to the SSRF guard.

use std::sync::Arc;
use std::time::Duration;

use reelsmith_providers::images::ImageSource;
use reelsmith_providers::images::openai::OpenAiImages;
use reelsmith_providers::images::replicate::Replicate;
use reelsmith_providers::images::sdwebui::SdWebUi;
use reelsmith_providers::llm::{ChatClient, ChatConfig};
use reelsmith_providers::speech::SpeechSource;
use reelsmith_providers::speech::elevenlabs::ElevenLabs;
use reelsmith_providers::speech::openai::OpenAiSpeech;
use reelsmith_providers::stock::StockSource;
use reelsmith_providers::stock::pexels::Pexels;
use reelsmith_providers::stock::pixabay::Pixabay;
use reelsmith_providers::{Gate, Limits};
use serde::{Deserialize, Serialize};

/// `[providers]`: every remote service the director may call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    /// The planner: any server speaking OpenAI's Chat Completions (OpenAI, Ollama, vLLM,
    /// llama.cpp's server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSettings>,
    /// The planner in this process: a GGUF model run by llama.cpp (builds with the
    /// `local-llm` feature). Without `[providers.llm]` or this, such a build uses the default
    /// planner when `scripts/models.sh --llm` installed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_llm: Option<LocalLlmSettings>,
    /// Stock photos and videos (searched in this order: Pexels, then Pixabay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pexels: Option<StockSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixabay: Option<StockSettings>,
    /// Image generators, tried in this order: a local Stable Diffusion WebUI, Replicate,
    /// OpenAI Images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sd_webui: Option<SdWebUiSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate: Option<ReplicateSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai_images: Option<OpenAiImagesSettings>,
    /// Remote voices: ElevenLabs (words timed for subtitles) and OpenAI speech (or any server
    /// with its `/v1/audio/speech` route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevenlabs: Option<ElevenLabsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai_speech: Option<OpenAiSpeechSettings>,
    /// Redis URL and key prefix: when set (the service's `[redis]`), every provider's request
    /// rate is limited across all nodes, not per node.
    #[serde(skip)]
    pub shared_rate_limit: Option<(String, String)>,
}

/// `[providers.sd_webui]`: AUTOMATIC1111's WebUI started with `--api`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdWebUiSettings {
    pub base_url: String,
    /// `user:password` when the WebUI runs with `--api-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(default = "default_steps")]
    pub steps: u32,
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
}

/// `[providers.replicate]`: an official model's predictions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateSettings {
    pub api_token: String,
    #[serde(default = "default_replicate_model")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default)]
    pub usd_per_second: f64,
    /// A text-to-video model (`kwaivgi/kling-v2.1`, `wan-video/wan-2.2-t2v-fast`): tried before
    /// the picture model, its clip becomes the scene's video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_model: Option<String>,
    /// The video model's own inputs beside the prompt (`duration = 5`, `resolution = "720p"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_input: Option<serde_json::Map<String, serde_json::Value>>,
    /// This service's public `/callbacks/replicate` URL: finished predictions are POSTed
    /// there instead of being polled for (a video takes minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The account's webhook signing secret (`whsec_…`, from
    /// `GET https://api.replicate.com/v1/webhooks/default/secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Estimated USD the whole server may spend on this provider per UTC day, over every key;
    /// once spent, calls to it are refused until midnight UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_usd: Option<f64>,
}

/// `[providers.openai_images]`: OpenAI's Images API (GPT image models).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiImagesSettings {
    pub api_key: String,
    #[serde(default = "default_image_model")]
    pub model: String,
    /// `low`, `medium`, `high` or `auto`.
    #[serde(default = "default_quality")]
    pub quality: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// USD per million output (image) tokens, for the ledger.
    #[serde(default)]
    pub usd_per_mtok_out: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Estimated USD the whole server may spend on this provider per UTC day, over every key;
    /// once spent, calls to it are refused until midnight UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_usd: Option<f64>,
}

/// `[providers.local_llm]`: a GGUF model file and the threads it may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLlmSettings {
    pub model: std::path::PathBuf,
    /// Threads for generation (1 leaves the other cores to renders; more only on a machine
    /// with cores to spare).
    #[serde(default = "one")]
    pub threads: u32,
}

fn one() -> u32 {
    1
}

/// `[providers.elevenlabs]`: text to speech with timestamps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElevenLabsSettings {
    pub api_key: String,
    #[serde(default = "default_elevenlabs_model")]
    pub model: String,
    /// The voice id used when a request names none (default: "Rachel").
    #[serde(default = "default_elevenlabs_voice")]
    pub voice: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// USD per thousand characters, for the ledger.
    #[serde(default)]
    pub usd_per_1k_chars: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// The plan's concurrent requests (Free 2, Starter 3, Creator 5, Pro 10).
    #[serde(default = "default_speech_concurrency")]
    pub concurrency: usize,
    /// Estimated USD the whole server may spend on this provider per UTC day, over every key;
    /// once spent, calls to it are refused until midnight UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_usd: Option<f64>,
}

/// `[providers.openai_speech]`: OpenAI's speech endpoint, or a local server speaking it
/// (`base_url = "http://127.0.0.1:4123/v1"`, no key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiSpeechSettings {
    #[serde(default)]
    pub api_key: String,
    #[serde(default = "default_openai_speech_model")]
    pub model: String,
    #[serde(default = "default_openai_voice")]
    pub voice: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// USD per million input characters, for the ledger.
    #[serde(default)]
    pub usd_per_1m_chars: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Estimated USD the whole server may spend on this provider per UTC day, over every key;
    /// once spent, calls to it are refused until midnight UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_usd: Option<f64>,
}

fn default_elevenlabs_model() -> String {
    "eleven_multilingual_v2".into()
}

fn default_elevenlabs_voice() -> String {
    "21m00Tcm4TlvDq8ikWAM".into()
}

fn default_openai_speech_model() -> String {
    "gpt-4o-mini-tts".into()
}

fn default_openai_voice() -> String {
    "coral".into()
}

fn default_speech_concurrency() -> usize {
    2
}

fn default_steps() -> u32 {
    20
}

fn default_replicate_model() -> String {
    "black-forest-labs/flux-schnell".into()
}

fn default_image_model() -> String {
    "gpt-image-1-mini".into()
}

fn default_quality() -> String {
    "low".into()
}

/// A stock site: its key and how hard to call it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockSettings {
    pub api_key: String,
    /// Default: the provider's own API (`https://api.pexels.com`, `https://pixabay.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Requests per minute (Pexels allows 200 an hour, Pixabay 100 a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Estimated USD the whole server may spend on this provider per UTC day, over every key;
    /// once spent, calls to it are refused until midnight UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_usd: Option<f64>,
}

/// A provider's gate, its rate limit shared through Redis when `shared` says where.
pub fn gate(provider: &str, limits: Limits, shared: Option<&(String, String)>) -> Arc<Gate> {
    let plain = || Gate::new(provider, limits.clone());
    Arc::new(match shared {
        Some((url, prefix)) => plain().shared_through_redis(url, prefix).unwrap_or_else(|e| {
            tracing::warn!(provider, error = %e, "rate limit not shared");
            plain()
        }),
        None => plain(),
    })
}

impl ProvidersConfig {
    pub fn check(&self) -> Result<(), String> {
        if let Some(l) = &self.llm {
            l.check()?;
        }
        if self.llm.is_some() && self.local_llm.is_some() {
            return Err("providers: configure one planner, [providers.llm] or [providers.local_llm]".into());
        }
        if self.local_llm.as_ref().is_some_and(|l| !(1..=64).contains(&l.threads)) {
            return Err("providers.local_llm.threads: must be 1 to 64".into());
        }
        let url_ok = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if let Some(s) = &self.sd_webui
            && !url_ok(&s.base_url)
        {
            return Err("providers.sd_webui.base_url: not an http(s) URL".into());
        }
        if let Some(s) = &self.replicate {
            if s.api_token.trim().is_empty() {
                return Err("providers.replicate.api_token: is empty".into());
            }
            if s.webhook_url.as_deref().is_some_and(|u| !url_ok(u)) {
                return Err("providers.replicate.webhook_url: not an http(s) URL".into());
            }
            let secret_ok = |k: &str| reelsmith_providers::standard_webhooks::secret_key(k).is_ok();
            match (&s.webhook_url, &s.webhook_secret) {
                (Some(_), None) => {
                    return Err("providers.replicate.webhook_secret: needed with webhook_url (GET https://api.replicate.com/v1/webhooks/default/secret gives it)".into());
                }
                (_, Some(k)) if !secret_ok(k) => {
                    return Err("providers.replicate.webhook_secret: not a whsec_ key".into());
                }
                _ => {}
            }
            if s.video_model.as_deref().is_some_and(|m| m.split('/').count() != 2) {
                return Err("providers.replicate.video_model: name it as owner/name".into());
            }
        }
        if self.openai_images.as_ref().is_some_and(|s| s.api_key.trim().is_empty()) {
            return Err("providers.openai_images.api_key: is empty".into());
        }
        if let Some(s) = &self.elevenlabs {
            if s.api_key.trim().is_empty() {
                return Err("providers.elevenlabs.api_key: is empty".into());
            }
            if s.voice.trim().is_empty() {
                return Err("providers.elevenlabs.voice: is empty".into());
            }
        }
        let bad_url = |u: &Option<String>| u.as_deref().is_some_and(|u| !url_ok(u));
        if self.elevenlabs.as_ref().is_some_and(|s| bad_url(&s.base_url)) {
            return Err("providers.elevenlabs.base_url: not an http(s) URL".into());
        }
        if self.openai_speech.as_ref().is_some_and(|s| bad_url(&s.base_url)) {
            return Err("providers.openai_speech.base_url: not an http(s) URL".into());
        }
        if let Some((name, cap)) = self.daily_budgets().into_iter().find(|(_, c)| !(c.is_finite() && *c >= 0.0)) {
            return Err(format!("providers.{name}.daily_budget_usd: {cap} is not a sum of dollars (0 or more)"));
        }
        for (name, s) in [("pexels", &self.pexels), ("pixabay", &self.pixabay)] {
            if let Some(s) = s {
                if s.api_key.trim().is_empty() {
                    return Err(format!("providers.{name}.api_key: is empty"));
                }
                if s.base_url.as_deref().is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
                    return Err(format!("providers.{name}.base_url: not an http(s) URL"));
                }
            }
        }
        Ok(())
    }

    /// Each paid provider's daily budget, by the name its calls carry in the ledger.
    pub fn daily_budgets(&self) -> Vec<(String, f64)> {
        let named = [
            self.llm.as_ref().map(|s| (s.provider_name(), s.daily_budget_usd)),
            self.pexels.as_ref().map(|s| ("pexels".to_string(), s.daily_budget_usd)),
            self.pixabay.as_ref().map(|s| ("pixabay".to_string(), s.daily_budget_usd)),
            self.replicate.as_ref().map(|s| ("replicate".to_string(), s.daily_budget_usd)),
            self.openai_images.as_ref().map(|s| ("openai-images".to_string(), s.daily_budget_usd)),
            self.elevenlabs.as_ref().map(|s| ("elevenlabs".to_string(), s.daily_budget_usd)),
            self.openai_speech.as_ref().map(|s| ("openai-speech".to_string(), s.daily_budget_usd)),
        ];
        named.into_iter().flatten().filter_map(|(name, cap)| cap.map(|c| (name, c))).collect()
    }

    /// The configured image generators, in the order they are tried.
    pub fn image_sources(&self, http: &reqwest::Client) -> Vec<Arc<dyn ImageSource>> {
        let mut out: Vec<Arc<dyn ImageSource>> = vec![];
        let limits = |rpm: Option<u32>, concurrency: usize, timeout: f64| Limits {
            rpm,
            concurrency: concurrency.max(1),
            timeout: Duration::from_secs_f64(timeout),
            deadline: Duration::from_secs(900),
            ..Limits::default()
        };
        if let Some(s) = &self.sd_webui {
            // The WebUI renders one request at a time.
            let gate = gate("sd-webui", limits(None, 1, s.timeout_secs), self.shared_rate_limit.as_ref());
            out.push(Arc::new(SdWebUi::new(http.clone(), &s.base_url, s.auth.as_deref(), s.steps, gate)));
        }
        if let Some(s) = &self.replicate {
            let gate = gate("replicate", limits(s.rpm, s.concurrency, 120.0), self.shared_rate_limit.as_ref());
            let base = s.base_url.as_deref().unwrap_or("https://api.replicate.com");
            if let Some(video) = &s.video_model {
                let clips = Replicate::new(http.clone(), base, &s.api_token, video, s.usd_per_second, gate.clone())
                    .with_input(s.video_input.clone().unwrap_or_default())
                    .with_webhook(s.webhook_url.clone());
                out.push(Arc::new(clips));
            }
            let pictures = Replicate::new(http.clone(), base, &s.api_token, &s.model, s.usd_per_second, gate)
                .with_webhook(s.webhook_url.clone());
            out.push(Arc::new(pictures));
        }
        if let Some(s) = &self.openai_images {
            let gate = gate("openai-images", limits(s.rpm, s.concurrency, 180.0), self.shared_rate_limit.as_ref());
            let base = s.base_url.as_deref().unwrap_or("https://api.openai.com/v1");
            out.push(Arc::new(OpenAiImages::new(
                http.clone(),
                base,
                &s.api_key,
                &s.model,
                &s.quality,
                s.usd_per_mtok_out,
                gate,
            )));
        }
        out
    }

    /// The configured remote voices.
    pub fn speech_sources(&self, http: &reqwest::Client) -> Vec<Arc<dyn SpeechSource>> {
        let limits = |rpm: Option<u32>, concurrency: usize| Limits {
            rpm,
            concurrency: concurrency.max(1),
            timeout: Duration::from_secs(120),
            deadline: Duration::from_secs(600),
            ..Limits::default()
        };
        let mut out: Vec<Arc<dyn SpeechSource>> = vec![];
        if let Some(s) = &self.elevenlabs {
            let gate = gate("elevenlabs", limits(s.rpm, s.concurrency), self.shared_rate_limit.as_ref());
            let base = s.base_url.as_deref().unwrap_or("https://api.elevenlabs.io");
            out.push(Arc::new(ElevenLabs::new(
                http.clone(),
                base,
                &s.api_key,
                &s.model,
                &s.voice,
                s.usd_per_1k_chars,
                gate,
            )));
        }
        if let Some(s) = &self.openai_speech {
            let gate = gate("openai-speech", limits(s.rpm, s.concurrency), self.shared_rate_limit.as_ref());
            let base = s.base_url.as_deref().unwrap_or("https://api.openai.com/v1");
            out.push(Arc::new(OpenAiSpeech::new(
                http.clone(),
                base,
                &s.api_key,
                &s.model,
                &s.voice,
                s.usd_per_1m_chars,
                gate,
            )));
        }
        out
    }

    /// The configured stock sources, in search order.
    pub fn stock_sources(&self, http: &reqwest::Client) -> Vec<Arc<dyn StockSource>> {
        let limits = |s: &StockSettings| Limits {
            rpm: s.rpm,
            concurrency: s.concurrency.max(1),
            timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(120),
            ..Limits::default()
        };
        let mut out: Vec<Arc<dyn StockSource>> = vec![];
        if let Some(s) = &self.pexels {
            let gate = gate("pexels", limits(s), self.shared_rate_limit.as_ref());
            let base = s.base_url.as_deref().unwrap_or("https://api.pexels.com");
            out.push(Arc::new(Pexels::new(http.clone(), base, &s.api_key, gate)));
        }
        if let Some(s) = &self.pixabay {
            let gate = gate("pixabay", limits(s), self.shared_rate_limit.as_ref());
            let base = s.base_url.as_deref().unwrap_or("https://pixabay.com");
            out.push(Arc::new(Pixabay::new(http.clone(), base, &s.api_key, gate)));
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// Names the provider in errors, metrics and ledgers (default: from the host, e.g.
    /// `openai` for api.openai.com, else `llm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Up to the version: `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub model: String,
    /// Bearer key (default: `$REELSMITH_LLM_API_KEY`; local servers need none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Requests per minute this service allows itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Requests that may go at once after a quiet spell (default: a minute's worth, at most 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Deadline of one request (local models on a CPU are slow).
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// USD per million prompt and completion tokens, for the cost ledger.
    #[serde(default)]
    pub usd_per_mtok_in: f64,
    #[serde(default)]
    pub usd_per_mtok_out: f64,
    /// Estimated USD the whole server may spend on this provider per UTC day, over every key;
    /// once spent, calls to it are refused until midnight UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_usd: Option<f64>,
}

fn default_concurrency() -> usize {
    4
}

fn default_timeout() -> f64 {
    180.0
}

impl LlmSettings {
    pub fn provider_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let host = self.base_url.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("");
        match host {
            "api.openai.com" => "openai".into(),
            "api.deepseek.com" => "deepseek".into(),
            "openrouter.ai" => "openrouter".into(),
            _ if self.base_url.contains(":11434") => "ollama".into(),
            _ => "llm".into(),
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!("providers.llm.base_url: {:?} is not an http(s) URL", self.base_url));
        }
        if self.model.trim().is_empty() {
            return Err("providers.llm.model: is empty".into());
        }
        if !(1.0..=3600.0).contains(&self.timeout_secs) {
            return Err("providers.llm.timeout_secs: must be 1 to 3600".into());
        }
        Ok(())
    }

    /// The client, its key from the settings or `$REELSMITH_LLM_API_KEY`.
    pub fn client(
        &self,
        http: reqwest::Client,
        env: impl Fn(&str) -> Option<String>,
        shared: Option<&(String, String)>,
    ) -> ChatClient {
        let provider = self.provider_name();
        let limits = Limits {
            rpm: self.rpm,
            burst: self.burst,
            concurrency: self.concurrency.max(1),
            timeout: Duration::from_secs_f64(self.timeout_secs),
            ..Limits::default()
        };
        let cfg = ChatConfig {
            provider: provider.clone(),
            base_url: self.base_url.clone(),
            api_key: self.api_key.clone().or_else(|| env("REELSMITH_LLM_API_KEY")),
            model: self.model.clone(),
            usd_per_mtok_in: self.usd_per_mtok_in,
            usd_per_mtok_out: self.usd_per_mtok_out,
        };
        ChatClient::new(http, cfg, gate(&provider, limits, shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_from_toml_with_defaults_and_names() {
        let cfg: ProvidersConfig =
            toml_like(r#"{"llm": {"base_url": "http://127.0.0.1:11434/v1", "model": "qwen2.5:1.5b", "rpm": 30}}"#);
        let llm = cfg.llm.unwrap();
        assert_eq!(llm.provider_name(), "ollama");
        assert_eq!(llm.concurrency, 4);
        assert!(llm.check().is_ok());
        let bad = LlmSettings { base_url: "ftp://x".into(), ..llm.clone() };
        assert!(bad.check().unwrap_err().contains("providers.llm.base_url"));
        let openai = LlmSettings { base_url: "https://api.openai.com/v1".into(), ..llm };
        assert_eq!(openai.provider_name(), "openai");
    }

    #[test]
    fn daily_budgets_are_named_as_the_ledger_names_providers() {
        let cfg = toml_like(
            r#"{"llm": {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini", "daily_budget_usd": 5},
                "replicate": {"api_token": "r8", "daily_budget_usd": 2.5},
                "elevenlabs": {"api_key": "xi"}}"#,
        );
        assert_eq!(cfg.daily_budgets(), vec![("openai".to_string(), 5.0), ("replicate".to_string(), 2.5)]);
        assert!(cfg.check().is_ok());
        let negative = toml_like(r#"{"pexels": {"api_key": "k", "daily_budget_usd": -1}}"#);
        assert!(negative.check().unwrap_err().contains("providers.pexels.daily_budget_usd"));
    }

    fn toml_like(json: &str) -> ProvidersConfig {
        serde_json::from_str(json).unwrap()
    }
}
