//! Stage `voice` for remote voices (ElevenLabs, OpenAI speech): each scene's narration spoken
//! by the provider, scenes in parallel within its gate, every answer cached by (provider,
//! model, voice, text, pace) so the same narration is paid for once. The storyboard then names
//! the recording with its transcript and, where the provider timed the words (ElevenLabs),
//! those times for the subtitles. Local voices (espeak-ng, Piper) need none of this: the
//! renderer speaks them itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use reelsmith_providers::Failure;
use reelsmith_providers::cache::{CacheKey, ResultCache};
use reelsmith_providers::speech::{SpeechRequest, SpeechSource, TimedWord};
use serde::{Deserialize, Serialize};

use crate::plan::PlanScene;
use crate::{DirectorError, Ledger, LedgerEntry};

/// Remote voices, their cache (kept: the same line spoken again costs nothing) and where
/// recordings go.
pub struct VoiceChain {
    pub sources: Vec<Arc<dyn SpeechSource>>,
    pub cache: ResultCache,
    pub media_dir: PathBuf,
    pub media_name: Arc<dyn Fn(&Path) -> String + Send + Sync>,
}

/// A scene's narration as a recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Voiced {
    /// The file the storyboard names.
    pub file: String,
    pub transcript: String,
    /// One `[start, end]` per transcript word, when the provider timed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_times: Option<Vec<[f64; 2]>>,
    pub provider: String,
    pub voice: String,
    /// Where the recording is on this machine.
    #[serde(skip)]
    pub local_path: Option<PathBuf>,
}

/// What the cache keeps of an answer, before the audio bytes.
#[derive(Serialize, Deserialize)]
struct Header {
    words: Option<Vec<TimedWord>>,
    voice: String,
    characters: f64,
}

impl VoiceChain {
    /// The configured source for a request's `voice.engine` (`elevenlabs`, `openai`).
    pub fn source(&self, engine: &str) -> Option<&Arc<dyn SpeechSource>> {
        let name = match engine {
            "openai" => "openai-speech",
            other => other,
        };
        self.sources.iter().find(|s| s.name() == name)
    }

    /// Every scene's narration spoken by `source`, in scene order; the calls go to `ledger`.
    pub async fn speak(
        &self,
        source: &Arc<dyn SpeechSource>,
        scenes: &[PlanScene],
        voice: Option<&str>,
        speed: f32,
        language: &str,
        ledger: &Ledger,
    ) -> Result<Vec<Voiced>, DirectorError> {
        let calls = scenes.iter().map(|scene| {
            let request = SpeechRequest {
                text: scene.narration.trim().to_string(),
                voice: voice.map(str::to_string),
                speed,
                language: language.to_string(),
            };
            async move { self.one(source, &request, ledger).await }
        });
        let results = futures_util::future::join_all(calls).await;
        // The cause, not its echo: a scene refused by the breaker another scene's failure opened
        // says less than that failure.
        let failures: Vec<&Failure> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        if let Some(failure) = failures.iter().find(|f| !matches!(f, Failure::Unavailable(_))).or(failures.first()) {
            return Err(DirectorError::Provider { stage: "voice", failure: (*failure).clone() });
        }
        Ok(results.into_iter().flatten().collect())
    }

    async fn one(
        &self,
        source: &Arc<dyn SpeechSource>,
        request: &SpeechRequest,
        ledger: &Ledger,
    ) -> Result<Voiced, Failure> {
        let voice = request.voice.clone().unwrap_or_else(|| source.default_voice().to_string());
        let key = CacheKey::new(
            source.name(),
            source.model(),
            &serde_json::json!({"text": request.text, "voice": voice, "speed": request.speed, "language": request.language}),
        );
        let cost = Mutex::new(None);
        let answer = self
            .cache
            .get_or_fetch(&key, || async {
                ledger.allow(source.name()).await?;
                let speech = source.synthesize(request).await?;
                *cost.lock().expect("cost") = Some((speech.characters, speech.est_cost_usd));
                let header = Header { words: speech.words, voice: speech.voice, characters: speech.characters };
                let mut bytes = serde_json::to_vec(&header).map_err(|e| Failure::Final(e.to_string()))?;
                bytes.push(b'\n');
                bytes.extend_from_slice(&speech.wav);
                Ok(bytes)
            })
            .await;
        let (units, usd, hit) = match cost.into_inner().expect("cost") {
            Some((chars, usd)) => (chars, usd, false),
            None => (0.0, 0.0, true),
        };
        ledger
            .record(LedgerEntry {
                stage: "voice".into(),
                provider: source.name().into(),
                model: source.model().into(),
                units,
                unit_kind: "characters".into(),
                est_cost_usd: usd,
                cache_hit: hit,
            })
            .await;
        let (bytes, _) = answer?;
        let split = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
        let header: Header = serde_json::from_slice(&bytes[..split])
            .map_err(|e| Failure::Retryable(format!("{}: a cached recording is unreadable: {e}", source.name())))?;
        let wav = &bytes[(split + 1).min(bytes.len())..];
        let dest = self.media_dir.join(format!("{}-{}.wav", source.name(), &key.hex()[..20]));
        let written = async {
            tokio::fs::create_dir_all(&self.media_dir).await?;
            if tokio::fs::metadata(&dest).await.is_err() {
                tokio::fs::write(&dest, wav).await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        written.map_err(|e| Failure::Retryable(format!("{}: cannot write the recording: {e}", source.name())))?;
        Ok(Voiced {
            file: (self.media_name)(&dest),
            transcript: request.text.clone(),
            word_times: header.words.and_then(|w| word_times(&request.text, &w)),
            provider: source.name().into(),
            voice: header.voice,
            local_path: Some(dest),
        })
    }
}

/// The provider's word timings as the storyboard's `word_times`: one per word of the
/// transcript, or none when they do not line up (the renderer then spreads the words itself).
fn word_times(transcript: &str, words: &[TimedWord]) -> Option<Vec<[f64; 2]>> {
    let expected = transcript.split_whitespace().count();
    let ordered = words.windows(2).all(|w| w[0].start <= w[1].start);
    let sane = words.iter().all(|w| w.start.is_finite() && w.end.is_finite() && 0.0 <= w.start && w.start <= w.end);
    (words.len() == expected && ordered && sane).then(|| words.iter().map(|w| [w.start, w.end]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str, start: f64, end: f64) -> TimedWord {
        TimedWord { text: text.into(), start, end }
    }

    #[test]
    fn word_times_line_up_with_the_transcript_or_are_dropped() {
        let words = [w("Hot", 0.0, 0.2), w("lava.", 0.3, 0.6)];
        assert_eq!(word_times("Hot  lava.", &words), Some(vec![[0.0, 0.2], [0.3, 0.6]]));
        assert_eq!(word_times("Hot lava flows.", &words), None, "a word missing");
        assert_eq!(word_times("Hot lava.", &[w("Hot", 0.5, 0.6), w("lava.", 0.3, 0.4)]), None, "out of order");
    }
}
