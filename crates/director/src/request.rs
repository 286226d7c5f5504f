//! What a person asks for: a topic for a model to plan, or a text to narrate as is, with the
//! video's length, shape, style, language, voice, where pictures may come from, and music.
//! Every field is bounded; a bad one is refused naming it.

use serde::{Deserialize, Serialize};

use crate::DirectorError;

/// Longest topic (a prompt, not an essay).
pub const MAX_TOPIC_CHARS: usize = 2_000;
/// Longest text to narrate: about 12 minutes of speech.
pub const MAX_TEXT_CHARS: usize = 12_000;
pub const MIN_DURATION_S: f64 = 5.0;
pub const MAX_DURATION_S: f64 = 600.0;
const MAX_STYLE_CHARS: usize = 200;

/// A request to make a video from a prompt (`topic`) or a text (`text`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptRequest {
    /// What the video is about; a language model writes the storyboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// An article or script narrated as written (no model needed): paragraphs and sentences
    /// become scenes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Target length in seconds for a topic (a text's length sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Default: landscape (1280x720).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Words about the look and tone ("calm documentary", "bold and bright").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    /// The narration's language (BCP 47, e.g. `en`, `de`).
    #[serde(default = "english")]
    pub language: String,
    /// Default: espeak-ng in the request's language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<VoiceChoice>,
    /// Where scene pictures may come from, in order of preference; a designed title card is
    /// always the last resort.
    #[serde(default = "default_visuals")]
    pub visuals: Vec<VisualKind>,
    /// Background music: a file (CLI, relative to the storyboard) or an uploaded asset id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub music: Option<String>,
}

fn english() -> String {
    "en".into()
}

fn default_visuals() -> Vec<VisualKind> {
    vec![VisualKind::Assets, VisualKind::Stock, VisualKind::Generate, VisualKind::Cards]
}

/// The video's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Size {
    Named(SizeName),
    Custom { width: u32, height: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SizeName {
    /// 1280x720.
    Landscape,
    /// 720x1280 (shorts, reels).
    Vertical,
    /// 1080x1080.
    Square,
    #[serde(rename = "1080p")]
    P1080,
    #[serde(rename = "720p")]
    P720,
    #[serde(rename = "360p")]
    P360,
}

impl Size {
    pub fn dimensions(self) -> (u32, u32) {
        match self {
            Size::Named(SizeName::Landscape) | Size::Named(SizeName::P720) => (1280, 720),
            Size::Named(SizeName::Vertical) => (720, 1280),
            Size::Named(SizeName::Square) => (1080, 1080),
            Size::Named(SizeName::P1080) => (1920, 1080),
            Size::Named(SizeName::P360) => (640, 360),
            Size::Custom { width, height } => (width, height),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VoiceChoice {
    /// `espeak-ng` or `piper` (local), `elevenlabs` or `openai` (remote, when configured).
    pub engine: String,
    /// Default: the engine's default voice (for ElevenLabs a voice id, for OpenAI a voice
    /// name such as `coral`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
}

/// Voices a remote provider speaks (when the server configures it).
pub const REMOTE_VOICES: &[&str] = &["elevenlabs", "openai"];

/// Whether the renderer speaks this engine itself.
pub fn is_local_voice(engine: &str) -> bool {
    matches!(engine, "espeak-ng" | "piper")
}

/// A source of scene pictures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VisualKind {
    /// The caller's own pictures, matched by name and tags.
    Assets,
    /// Stock photos and videos (Pexels, Pixabay) when configured.
    Stock,
    /// Generated images (OpenAI Images, Stable Diffusion, Replicate) when configured.
    Generate,
    /// Designed title cards: always available.
    Cards,
}

impl PromptRequest {
    /// Parses a request, naming the field at fault.
    pub fn from_json(v: serde_json::Value) -> Result<Self, DirectorError> {
        let r: PromptRequest = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { "prompt".to_string() } else { format!("prompt.{path}") };
            DirectorError::invalid(path, e.into_inner().to_string())
        })?;
        r.check()?;
        Ok(r)
    }

    /// The bounds no type says: one of topic or text, lengths, ranges.
    pub fn check(&self) -> Result<(), DirectorError> {
        let bad = |f: &str, m: String| Err(DirectorError::invalid(format!("prompt.{f}"), m));
        match (&self.topic, &self.text) {
            (Some(_), Some(_)) => return bad("text", "give a topic or a text, not both".into()),
            (None, None) => return bad("topic", "give a topic (for a model to plan) or a text (to narrate)".into()),
            _ => {}
        }
        if let Some(t) = &self.topic {
            let n = t.chars().count();
            if t.trim().is_empty() {
                return bad("topic", "is empty".into());
            }
            if n > MAX_TOPIC_CHARS {
                return bad("topic", format!("is {n} characters; at most {MAX_TOPIC_CHARS}"));
            }
        }
        if let Some(t) = &self.text {
            let n = t.chars().count();
            if !t.chars().any(char::is_alphanumeric) {
                return bad("text", "has nothing to narrate".into());
            }
            if n > MAX_TEXT_CHARS {
                return bad(
                    "text",
                    format!("is {n} characters; at most {MAX_TEXT_CHARS} (about 12 minutes of speech)"),
                );
            }
        }
        if let Some(d) = self.duration_s
            && !(MIN_DURATION_S..=MAX_DURATION_S).contains(&d)
        {
            return bad("duration_s", format!("must be {MIN_DURATION_S} to {MAX_DURATION_S} seconds"));
        }
        if let Some(Size::Custom { width, height }) = self.size {
            let ok = |v: u32| (reelsmith_spec::limits::MIN_DIMENSION..=1920).contains(&v) && v.is_multiple_of(2);
            if !ok(width) || !ok(height) {
                return bad("size", "width and height must be even, 16 to 1920".into());
            }
        }
        if self.style.as_ref().is_some_and(|s| s.chars().count() > MAX_STYLE_CHARS) {
            return bad("style", format!("at most {MAX_STYLE_CHARS} characters"));
        }
        let lang_ok = |l: &str| {
            !l.is_empty() && l.len() <= 12 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !lang_ok(&self.language) {
            return bad("language", format!("{:?} is not a language tag such as en or pt-BR", self.language));
        }
        if self.visuals.is_empty() {
            return bad("visuals", "name at least one source (cards are always available)".into());
        }
        if let Some(v) = &self.voice {
            if !is_local_voice(&v.engine) && !REMOTE_VOICES.contains(&v.engine.as_str()) {
                return bad(
                    "voice.engine",
                    format!("{:?}: voices are espeak-ng and piper (local), elevenlabs and openai (remote)", v.engine),
                );
            }
            if v.speed.is_some_and(|s| !(0.5..=2.0).contains(&s)) {
                return bad("voice.speed", "must be 0.5 to 2".into());
            }
            if v.name.as_ref().is_some_and(|n| n.trim().is_empty() || n.len() > 100) {
                return bad("voice.name", "must be 1 to 100 characters".into());
            }
        }
        Ok(())
    }

    /// The frame size (landscape 1280x720 unless asked).
    pub fn dimensions(&self) -> (u32, u32) {
        self.size.map_or((1280, 720), Size::dimensions)
    }

    /// The target length: asked, or for a text its speaking time.
    pub fn target_seconds(&self) -> f64 {
        match (&self.text, self.duration_s) {
            (Some(t), _) => crate::text::speaking_seconds(t),
            (None, Some(d)) => d,
            (None, None) => 60.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn err(v: serde_json::Value) -> String {
        PromptRequest::from_json(v).unwrap_err().to_string()
    }

    #[test]
    fn bad_requests_name_their_field() {
        assert!(err(json!({"topic": "  "})).contains("prompt.topic: is empty"));
        assert!(err(json!({"text": "x".repeat(100_000)})).contains("prompt.text: is 100000 characters"));
        assert!(err(json!({"topic": "t", "visuals": ["stock", "paintings"]})).contains("prompt.visuals[1]"));
        assert!(err(json!({"topic": "t", "duration_s": 2})).contains("prompt.duration_s"));
        assert!(err(json!({"topic": "t", "colour": "red"})).contains("unknown field `colour`"));
        assert!(err(json!({})).contains("prompt.topic: give a topic"));
        assert!(err(json!({"topic": "a", "text": "b"})).contains("prompt.text"));
        assert!(err(json!({"topic": "a", "size": {"width": 33, "height": 20}})).contains("prompt.size"));
        assert!(err(json!({"topic": "a", "voice": {"engine": "sam"}})).contains("prompt.voice.engine"));
        for speed in [0.1, 2.5, -1.0] {
            let e = err(json!({"topic": "a", "voice": {"engine": "elevenlabs", "speed": speed}}));
            assert!(e.contains("prompt.voice.speed: must be 0.5 to 2"), "{speed}: {e}");
        }
        assert!(
            err(json!({"topic": "a", "voice": {"engine": "openai", "speed": "fast"}})).contains("prompt.voice.speed")
        );
        for name in ["", "   ", &"v".repeat(101)] {
            let e = err(json!({"topic": "a", "voice": {"engine": "elevenlabs", "name": name}}));
            assert!(e.contains("prompt.voice.name: must be 1 to 100 characters"), "{name:?}: {e}");
        }
        assert!(
            PromptRequest::from_json(
                json!({"topic": "a", "voice": {"engine": "openai", "name": "coral", "speed": 1.5}})
            )
            .is_ok()
        );
    }

    #[test]
    fn defaults_and_sizes() {
        let r = PromptRequest::from_json(json!({"topic": "volcanoes"})).unwrap();
        assert_eq!(r.language, "en");
        assert_eq!(r.visuals.last(), Some(&VisualKind::Cards));
        assert_eq!(r.dimensions(), (1280, 720));
        let r = PromptRequest::from_json(json!({"topic": "v", "size": "vertical"})).unwrap();
        assert_eq!(r.dimensions(), (720, 1280));
        let r = PromptRequest::from_json(json!({"topic": "v", "size": {"width": 320, "height": 180}})).unwrap();
        assert_eq!(r.dimensions(), (320, 180));
    }
}
