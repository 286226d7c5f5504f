//! Remote voices: ElevenLabs (`POST /v1/text-to-speech/{voice_id}/with-timestamps`: audio plus
//! each character's start and end, grouped here into words for subtitles) and OpenAI speech
//! (`POST /v1/audio/speech`: audio only, which Chatterbox and other local servers also speak).
//! Both are asked for uncompressed audio (a WAV file comes back), so nothing is lost before the
//! mix. The caller caches results by (provider, model, voice, text).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Failure, Gate};

pub mod elevenlabs;
#[cfg(feature = "fake")]
pub mod fake;
pub mod openai;
pub mod wav;

pub use wav::wav_from_pcm16;

/// Longest text one request may carry (OpenAI takes 4,096 characters; ElevenLabs more, but a
/// scene's narration is far shorter).
pub const MAX_SPEECH_CHARS: usize = 4_096;

/// Largest audio accepted for one request: ten minutes of 24 kHz 16-bit mono is 29 MB.
pub const MAX_AUDIO_BYTES: usize = 48 << 20;

/// What to say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeechRequest {
    pub text: String,
    /// The provider's voice (an ElevenLabs voice id, an OpenAI voice name); `None`: the
    /// configured default.
    pub voice: Option<String>,
    /// 1.0 is the voice's own pace.
    pub speed: f32,
    /// BCP 47 language (ElevenLabs takes it as `language_code`).
    pub language: String,
}

/// One word and when it is spoken, seconds from the audio's start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimedWord {
    pub text: String,
    pub start: f64,
    pub end: f64,
}

/// Spoken audio and what it cost.
#[derive(Clone, Debug)]
pub struct Speech {
    /// A WAV file's bytes.
    pub wav: Vec<u8>,
    /// Word timings, when the provider gives them.
    pub words: Option<Vec<TimedWord>>,
    pub model: String,
    pub voice: String,
    /// Billed characters.
    pub characters: f64,
    pub est_cost_usd: f64,
}

#[async_trait]
pub trait SpeechSource: Send + Sync {
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    /// The voice used when a request names none.
    fn default_voice(&self) -> &str;
    fn gate(&self) -> &Arc<Gate>;
    async fn synthesize(&self, req: &SpeechRequest) -> Result<Speech, Failure>;
}

/// Refuses what no provider would take before paying for a call.
pub(crate) fn check_text(what: &str, text: &str) -> Result<(), Failure> {
    let n = text.chars().count();
    if text.trim().is_empty() {
        return Err(Failure::Final(format!("{what}: the text is empty")));
    }
    if n > MAX_SPEECH_CHARS {
        return Err(Failure::Final(format!("{what}: the text is {n} characters; at most {MAX_SPEECH_CHARS}")));
    }
    Ok(())
}

/// Groups a character alignment into words (split at whitespace, as ElevenLabs' own clients
/// do): each word from its first character's start to its last one's end.
pub fn words_from_alignment(characters: &[String], starts: &[f64], ends: &[f64]) -> Vec<TimedWord> {
    let mut words = vec![];
    let mut current: Option<TimedWord> = None;
    for ((c, &start), &end) in characters.iter().zip(starts).zip(ends) {
        if c.chars().all(char::is_whitespace) {
            words.extend(current.take());
            continue;
        }
        match &mut current {
            Some(w) => {
                w.text.push_str(c);
                w.end = w.end.max(end);
            }
            None => current = Some(TimedWord { text: c.clone(), start, end }),
        }
    }
    words.extend(current);
    words
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::fake::{FakeSpeech, SECONDS_PER_CHAR, loud_at};
    use super::*;
    use crate::Limits;

    fn gate(concurrency: usize) -> Arc<Gate> {
        Arc::new(Gate::new(
            "speech",
            Limits {
                concurrency,
                base_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                ..Limits::default()
            },
        ))
    }

    fn request(text: &str) -> SpeechRequest {
        SpeechRequest { text: text.into(), voice: None, speed: 1.0, language: "en".into() }
    }

    #[test]
    fn characters_group_into_words() {
        let chars: Vec<String> = "Hi, you  there".chars().map(String::from).collect();
        let starts: Vec<f64> = (0..chars.len()).map(|i| i as f64 * 0.1).collect();
        let ends: Vec<f64> = starts.iter().map(|s| s + 0.1).collect();
        let words = words_from_alignment(&chars, &starts, &ends);
        let got: Vec<(&str, f64, f64)> = words.iter().map(|w| (w.text.as_str(), w.start, w.end)).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, "Hi,");
        assert!((got[0].1 - 0.0).abs() < 1e-9 && (got[0].2 - 0.3).abs() < 1e-9);
        assert_eq!(got[2].0, "there");
        assert!((got[2].1 - 0.9).abs() < 1e-9 && (got[2].2 - 1.4).abs() < 1e-9);
    }

    #[tokio::test]
    async fn elevenlabs_times_every_word_of_real_audio() {
        let fake = FakeSpeech::start().await;
        let src = elevenlabs::ElevenLabs::new(
            reqwest::Client::new(),
            &fake.base,
            "xi-key",
            "eleven_multilingual_v2",
            "voice-rachel",
            0.3,
            gate(2),
        );
        let text = "Lava flows slowly downhill.";
        let speech = src.synthesize(&request(text)).await.unwrap();
        let words = speech.words.as_ref().unwrap();
        let got: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(got, ["Lava", "flows", "slowly", "downhill."]);
        // The audio is loud exactly where the alignment says a word is spoken.
        let mid = |w: &TimedWord| (w.start + w.end) / 2.0;
        for w in words {
            assert!(loud_at(&speech.wav, mid(w)), "{} at {}", w.text, mid(w));
        }
        assert!(!loud_at(&speech.wav, words[0].end + SECONDS_PER_CHAR / 2.0), "the gap after a word is silent");
        assert_eq!(speech.characters, text.len() as f64);
        assert!((speech.est_cost_usd - text.len() as f64 * 0.3 / 1000.0).abs() < 1e-9);
        let seen = &fake.requests()[0];
        assert_eq!(seen.path, "/v1/text-to-speech/voice-rachel/with-timestamps");
        assert_eq!(seen.query.as_deref(), Some("output_format=pcm_24000"));
        assert_eq!(seen.api_key.as_deref(), Some("xi-key"));
        assert_eq!(
            (seen.body["text"].as_str(), seen.body["model_id"].as_str()),
            (Some(text), Some("eleven_multilingual_v2"))
        );
        assert_eq!(seen.body["language_code"], "en");
    }

    #[tokio::test]
    async fn elevenlabs_failures_are_classified() {
        let fake = FakeSpeech::start().await;
        let src = elevenlabs::ElevenLabs::new(reqwest::Client::new(), &fake.base, "k", "m", "v", 0.0, gate(2));
        // Too many at once: waited out and retried.
        fake.refuse_next(
            429,
            json!({"detail": {"status": "too_many_concurrent_requests", "message": "Too many concurrent requests"}}),
        );
        assert!(src.synthesize(&request("one")).await.is_ok());
        // Out of characters: final, named, and the breaker opens.
        fake.refuse_next(
            401,
            json!({"detail": {"status": "quota_exceeded", "message": "This request exceeds your quota of 10000."}}),
        );
        let err = src.synthesize(&request("two")).await.unwrap_err();
        assert!(
            matches!(&err, Failure::Quota(m) if m.contains("elevenlabs") && m.contains("quota_exceeded")),
            "{err:?}"
        );
        assert_eq!(src.gate().breaker().name(), "open");
        // Text no provider takes is refused before any call.
        let calls = fake.requests().len();
        let long = "word ".repeat(1_000);
        assert!(matches!(src.synthesize(&request(&long)).await, Err(Failure::Final(_))));
        assert_eq!(fake.requests().len(), calls);
    }

    #[tokio::test]
    async fn openai_speech_sends_its_format() {
        let fake = FakeSpeech::start().await;
        let src = openai::OpenAiSpeech::new(
            reqwest::Client::new(),
            &format!("{}/v1", fake.base),
            "sk-tts",
            "gpt-4o-mini-tts",
            "coral",
            15.0,
            gate(4),
        );
        let speech = src.synthesize(&request("Hello there.")).await.unwrap();
        assert!(speech.wav.starts_with(b"RIFF") && speech.words.is_none());
        assert!(loud_at(&speech.wav, SECONDS_PER_CHAR / 2.0));
        assert!((speech.est_cost_usd - 12.0 * 15.0 / 1e6).abs() < 1e-12);
        let seen = fake.requests().into_iter().find(|s| s.body["input"] == "Hello there.").unwrap();
        assert_eq!(seen.path, "/v1/audio/speech");
        assert_eq!(seen.authorization.as_deref(), Some("Bearer sk-tts"));
        assert_eq!(seen.body["voice"], "coral");
        assert_eq!(seen.body["response_format"], "wav");
        fake.refuse_next(429, json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}));
        assert!(matches!(src.synthesize(&request("x")).await, Err(Failure::Quota(_))));
    }

    #[tokio::test]
    async fn audio_larger_than_any_narration_is_cut_off_and_refused() {
        let fake = FakeSpeech::start().await;
        let src = openai::OpenAiSpeech::new(
            reqwest::Client::new(),
            &format!("{}/v1", fake.base),
            "",
            "tts-1",
            "alloy",
            0.0,
            gate(1),
        );
        fake.answer_oversized_next(MAX_AUDIO_BYTES + (3 << 20));
        let err = src.synthesize(&request("A short line.")).await.unwrap_err();
        assert!(
            matches!(&err, Failure::Final(m) if m.contains(&format!("larger than {MAX_AUDIO_BYTES} bytes"))),
            "{err:?}"
        );
        // Not retried: one call, and the next answer is an ordinary one.
        assert_eq!(fake.requests().len(), 1);
        assert!(src.synthesize(&request("A short line.")).await.is_ok());
    }
}
