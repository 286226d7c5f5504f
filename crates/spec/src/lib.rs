//! The Reelsmith storyboard spec: a versioned JSON document that describes a video.
//!
//! Parsing ([`parse`]) reports errors with the JSON path that caused them; [`Spec::validate`]
//! checks what the types alone cannot (ranges, file existence, limits) and returns every
//! problem found, each naming its path. [`json_schema`] generates the committed JSON Schema.

mod color;
pub mod template;
mod validate;

pub use color::Color;
pub use validate::{Issue, ValidationError, Validator};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec version this build understands.
pub const SPEC_VERSION: u32 = 1;

/// Limits that keep a single request from exhausting the machine.
pub mod limits {
    pub const MAX_SCENES: usize = 200;
    pub const MAX_TEXT_CHARS: usize = 5_000;
    pub const MAX_TOTAL_SECONDS: f64 = 3_600.0;
    pub const MAX_SCENE_SECONDS: f64 = 600.0;
    pub const MAX_DIMENSION: u32 = 4_096;
    pub const MIN_DIMENSION: u32 = 16;
    pub const MAX_FPS: u32 = 120;
    /// Largest accepted input file (image or audio).
    pub const MAX_INPUT_BYTES: u64 = 200 * 1024 * 1024;
    /// Largest accepted decoded image, in pixels (a decompression-bomb guard).
    pub const MAX_IMAGE_PIXELS: u64 = 100_000_000;
    /// Largest accepted video clip frame, in pixels (4096x4096; 4K UHD fits).
    pub const MAX_VIDEO_PIXELS: u64 = 4096 * 4096;
    pub const MAX_ZOOM: f32 = 4.0;
    /// Most timed words in one narration (`word_times`).
    pub const MAX_TIMED_WORDS: usize = 2_000;
    /// Largest picture a scene is drawn on (the frame at its largest zoom, capped here).
    pub const MAX_CANVAS_PIXELS: u64 = 4096 * 4096;
}

/// A whole storyboard.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Spec format version; must be 1.
    pub version: u32,
    #[serde(default)]
    pub output: Output,
    /// Defaults for every scene's narration voice.
    #[serde(default)]
    pub voice: Voice,
    #[serde(default)]
    pub subtitles: Subtitles,
    /// Background music under the whole video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub music: Option<Music>,
    #[serde(default)]
    pub audio: AudioSettings,
    /// The scenes, in order.
    pub scenes: Vec<Scene>,
}

/// What a file field holds; an upload of another kind is refused there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Image,
    Audio,
    Video,
    Font,
}

impl Spec {
    /// Every file the spec names, with its JSON path and kind, for services that map names to
    /// uploads.
    pub fn files_mut(&mut self) -> Vec<(String, FileKind, &mut String)> {
        let mut out: Vec<(String, FileKind, &mut String)> = vec![];
        if let Some(f) = self.subtitles.font.file.as_mut() {
            out.push(("subtitles.font.file".into(), FileKind::Font, f));
        }
        if let Some(m) = self.music.as_mut() {
            out.push(("music.file".into(), FileKind::Audio, &mut m.file));
        }
        for (i, s) in self.scenes.iter_mut().enumerate() {
            if let Some(f) = s.image.as_mut() {
                out.push((format!("scenes[{i}].image"), FileKind::Image, f));
            }
            if let Some(v) = s.video.as_mut() {
                out.push((format!("scenes[{i}].video.file"), FileKind::Video, &mut v.file));
            }
            if let Some(a) = s.narration.as_mut().and_then(|n| n.audio.as_mut()) {
                out.push((format!("scenes[{i}].narration.audio"), FileKind::Audio, a));
            }
            if let Some(f) = s.overlay.as_mut().and_then(|o| o.font.file.as_mut()) {
                out.push((format!("scenes[{i}].overlay.font.file"), FileKind::Font, f));
            }
            if let Some(ReplaceBackground::Image(f)) = s.replace_background.as_mut() {
                out.push((format!("scenes[{i}].replace_background.image"), FileKind::Image, f));
            }
        }
        out
    }
}

/// Output container settings: always H.264 + AAC in MP4.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// A size preset, or explicit `width` and `height` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizePreset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default)]
    pub quality: Quality,
    /// `auto` probes hardware H.264 encoders and falls back to libx264.
    #[serde(default)]
    pub encoder: EncoderChoice,
    /// Colour behind contained images and of colour cards without their own.
    #[serde(default = "default_background")]
    pub background: Color,
}

impl Default for Output {
    fn default() -> Self {
        Self {
            size: None,
            width: None,
            height: None,
            fps: default_fps(),
            quality: Quality::default(),
            encoder: EncoderChoice::default(),
            background: default_background(),
        }
    }
}

impl Output {
    /// The frame size: the preset, else explicit width/height, else 1080p.
    pub fn dimensions(&self) -> (u32, u32) {
        match (self.size, self.width, self.height) {
            (Some(preset), _, _) => preset.dimensions(),
            (None, Some(w), Some(h)) => (w, h),
            _ => SizePreset::P1080.dimensions(),
        }
    }
}

fn default_fps() -> u32 {
    30
}
fn default_background() -> Color {
    Color::rgb(0, 0, 0)
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum SizePreset {
    /// 1920x1080
    #[serde(rename = "1080p")]
    P1080,
    /// 1280x720
    #[serde(rename = "720p")]
    P720,
    /// 640x360
    #[serde(rename = "360p")]
    P360,
    /// 1080x1920
    #[serde(rename = "vertical")]
    Vertical,
    /// 1080x1080
    #[serde(rename = "square")]
    Square,
}

impl SizePreset {
    pub fn dimensions(self) -> (u32, u32) {
        match self {
            Self::P1080 => (1920, 1080),
            Self::P720 => (1280, 720),
            Self::P360 => (640, 360),
            Self::Vertical => (1080, 1920),
            Self::Square => (1080, 1080),
        }
    }
}

/// x264-style quality settings (mapped onto hardware encoders' equivalents).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Quality {
    #[serde(default = "default_preset")]
    pub preset: X264Preset,
    /// Constant rate factor, 0 (lossless) to 51.
    #[serde(default = "default_crf")]
    pub crf: u8,
}

impl Default for Quality {
    fn default() -> Self {
        Self { preset: default_preset(), crf: default_crf() }
    }
}
fn default_preset() -> X264Preset {
    X264Preset::Veryfast
}
fn default_crf() -> u8 {
    23
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum X264Preset {
    Ultrafast,
    Superfast,
    Veryfast,
    Faster,
    Fast,
    Medium,
    Slow,
    Slower,
    Veryslow,
}

impl X264Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ultrafast => "ultrafast",
            Self::Superfast => "superfast",
            Self::Veryfast => "veryfast",
            Self::Faster => "faster",
            Self::Fast => "fast",
            Self::Medium => "medium",
            Self::Slow => "slow",
            Self::Slower => "slower",
            Self::Veryslow => "veryslow",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EncoderChoice {
    /// The first hardware encoder that passes a probe encode, else libx264.
    Auto,
    #[default]
    Libx264,
    H264Nvenc,
    H264Qsv,
    H264Vaapi,
    H264Videotoolbox,
}

/// Voice settings for narration text.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Voice {
    /// Speech engine: `espeak-ng` (built in) or `piper` (neural, local; `scripts/models.sh`
    /// installs the `en_US-joe-medium` voice).
    #[serde(default = "default_engine")]
    pub engine: String,
    /// Engine voice name, e.g. `en-us`, `en-gb`, `de` (espeak-ng) or `en_US-joe-medium` (piper).
    /// Default: the engine's own default voice (see [`default_voice`]).
    #[serde(default)]
    pub name: String,
    /// Tempo multiplier (pitch unchanged), 0.5 to 2.5.
    #[serde(default = "one")]
    pub speed: f32,
    /// Pitch multiplier, 0.5 to 2.0.
    #[serde(default = "one")]
    pub pitch: f32,
}

impl Default for Voice {
    fn default() -> Self {
        Self { engine: default_engine(), name: default_voice_name(), speed: 1.0, pitch: 1.0 }
    }
}
fn default_engine() -> String {
    "espeak-ng".into()
}
fn default_voice_name() -> String {
    default_voice(&default_engine()).into()
}

/// Each speech engine's default voice: a voice named for another engine would not exist.
pub fn default_voice(engine: &str) -> &'static str {
    match engine {
        "piper" => "en_US-joe-medium",
        _ => "en-us",
    }
}
fn one() -> f32 {
    1.0
}

/// Per-scene voice overrides; unset fields inherit the spec's `voice`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VoiceOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitch: Option<f32>,
}

impl Voice {
    /// This voice with a scene's overrides. A scene that names another engine but no voice
    /// gets that engine's default voice, not this one's name.
    pub fn with(&self, o: &VoiceOverride) -> Voice {
        let engine = o.engine.clone().unwrap_or_else(|| self.engine.clone());
        let name = match &o.name {
            Some(n) if !n.is_empty() => n.clone(),
            _ if engine != self.engine || self.name.is_empty() => default_voice(&engine).to_string(),
            _ => self.name.clone(),
        };
        Voice { engine, name, speed: o.speed.unwrap_or(self.speed), pitch: o.pitch.unwrap_or(self.pitch) }
    }
}

/// Subtitles generated from the narration, timed per word.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subtitles {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub style: SubtitleStyle,
    #[serde(default)]
    pub font: Font,
    /// Colour of the word being spoken in `word-highlight` style.
    #[serde(default = "default_highlight")]
    pub highlight_color: Color,
    #[serde(default = "default_subtitle_outline")]
    pub outline: Option<Outline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#box: Option<TextBox>,
    #[serde(default)]
    pub position: VerticalPosition,
    /// Distance from the frame edge as a fraction of the frame height.
    #[serde(default = "default_margin")]
    pub margin: f32,
    /// Most lines shown at once; longer narration pages through.
    #[serde(default = "default_max_lines")]
    pub max_lines: u32,
    /// Widest a line may be, as a fraction of the frame width.
    #[serde(default = "default_max_width")]
    pub max_width: f32,
}

impl Default for Subtitles {
    fn default() -> Self {
        Self {
            enabled: true,
            style: SubtitleStyle::default(),
            font: Font::default(),
            highlight_color: default_highlight(),
            outline: default_subtitle_outline(),
            r#box: None,
            position: VerticalPosition::default(),
            margin: default_margin(),
            max_lines: default_max_lines(),
            max_width: default_max_width(),
        }
    }
}
fn yes() -> bool {
    true
}
fn default_highlight() -> Color {
    Color::rgb(255, 214, 0)
}
fn default_subtitle_outline() -> Option<Outline> {
    Some(Outline { color: Color::rgb(0, 0, 0), width: 0.08 })
}
fn default_margin() -> f32 {
    0.06
}
fn default_max_lines() -> u32 {
    2
}
fn default_max_width() -> f32 {
    0.86
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SubtitleStyle {
    /// Lines of text, the spoken word in `highlight_color`.
    #[default]
    WordHighlight,
    /// Plain lines of text, paged as the narration goes.
    Lines,
}

/// A font: a family name from the system or a font file.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Font {
    #[serde(default = "default_family")]
    pub family: String,
    /// A TTF/OTF file (relative to the spec) to use instead of a system font.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Text height as a fraction of the frame height.
    #[serde(default = "default_font_size")]
    pub size: f32,
    #[serde(default = "default_text_color")]
    pub color: Color,
    #[serde(default)]
    pub bold: bool,
}

impl Default for Font {
    fn default() -> Self {
        Self {
            family: default_family(),
            file: None,
            size: default_font_size(),
            color: default_text_color(),
            bold: true,
        }
    }
}
fn default_family() -> String {
    "DejaVu Sans".into()
}
fn default_font_size() -> f32 {
    0.055
}
fn default_text_color() -> Color {
    Color::rgb(255, 255, 255)
}

/// An outline around glyphs.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Outline {
    pub color: Color,
    /// Width as a fraction of the font size.
    pub width: f32,
}

/// A box behind text.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextBox {
    /// Box colour; `#RRGGBBAA` gives it transparency.
    pub color: Color,
    /// Padding as a fraction of the font size.
    #[serde(default = "default_box_padding")]
    pub padding: f32,
}
fn default_box_padding() -> f32 {
    0.3
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VerticalPosition {
    Top,
    Center,
    #[default]
    Bottom,
}

/// Background music, looped to the video's length, ducked under narration. Music whose two
/// channels differ makes the soundtrack stereo; otherwise (no music, a mono file, or stereo
/// carrying mono) it is mono, which players put on both speakers.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Music {
    /// Audio file (any format FFmpeg reads), relative to the spec.
    pub file: String,
    /// Linear gain, 0 to 2.
    #[serde(default = "default_music_volume")]
    pub volume: f32,
    #[serde(default)]
    pub ducking: Ducking,
    #[serde(default = "yes")]
    pub r#loop: bool,
    /// Fade-in and fade-out, seconds.
    #[serde(default = "default_music_fade")]
    pub fade: f32,
}
fn default_music_volume() -> f32 {
    0.35
}
fn default_music_fade() -> f32 {
    1.0
}

/// Lowers the music while narration plays.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ducking {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Music gain under narration, relative to `volume`, 0 to 1.
    #[serde(default = "default_duck_level")]
    pub level: f32,
    /// Seconds to fade down before narration starts.
    #[serde(default = "default_duck_attack")]
    pub attack: f32,
    /// Seconds to come back up after narration ends.
    #[serde(default = "default_duck_release")]
    pub release: f32,
}

impl Default for Ducking {
    fn default() -> Self {
        Self {
            enabled: true,
            level: default_duck_level(),
            attack: default_duck_attack(),
            release: default_duck_release(),
        }
    }
}
fn default_duck_level() -> f32 {
    0.25
}
fn default_duck_attack() -> f32 {
    0.15
}
fn default_duck_release() -> f32 {
    0.4
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AudioSettings {
    /// Integrated loudness target (EBU R128), LUFS; `null` disables normalisation.
    #[serde(default = "default_loudness")]
    pub loudness: Option<f32>,
    /// AAC bitrate, kbit/s. Default: 160 for a stereo soundtrack (music with a stereo image),
    /// 128 for a mono one (narration alone, or music whose two channels are equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
}

impl Default for AudioSettings {
    fn default() -> Self {
        Self { loudness: default_loudness(), bitrate_kbps: None }
    }
}

impl AudioSettings {
    /// The AAC bitrate for a soundtrack of `channels` channels: the one asked for, or else
    /// 80 kbit/s a channel for stereo and 128 for mono (a single channel needs more than half
    /// of a stereo pair's bits, which share what the two channels have in common).
    pub fn bitrate_for(&self, channels: u16) -> u32 {
        self.bitrate_kbps.unwrap_or(if channels == 1 { 128 } else { 160 })
    }
}
fn default_loudness() -> Option<f32> {
    Some(-16.0)
}

/// One scene: a visual, optional narration, motion and the transition into the next scene.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scene {
    /// Image file (JPEG, PNG, WebP…), relative to the spec. Without it (or `video`) the scene is
    /// a colour card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A video clip instead of an image: fitted like one, moved by Ken Burns like one, under the
    /// title, overlay and subtitles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoClip>,
    #[serde(default)]
    pub fit: Fit,
    /// Colour card fill (or what shows around a contained image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<Background>,
    /// Large centred title drawn on the scene (moves with Ken Burns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub narration: Option<Narration>,
    /// Seconds; absent means narration length + `padding` (or 3 s without narration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// Silence after the narration when the duration is automatic, seconds.
    #[serde(default = "default_padding")]
    pub padding: f64,
    #[serde(default)]
    pub motion: Motion,
    /// Transition into the next scene (ignored on the last scene).
    #[serde(default)]
    pub transition: Transition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<TextOverlay>,
    /// Replace what is behind the person in the picture (person segmentation, soft edges):
    /// `{"color": "#0a5"}`, `{"image": "office.jpg"}` or `{"blur": 12}` (radius in pixels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_background: Option<ReplaceBackground>,
}

/// A scene's video clip. It starts with the narration (after the transition in) and shows its
/// first frame until then; a scene without narration lasts as long as the clip by default.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VideoClip {
    /// Video file (MP4, MOV, WebM, … anything FFmpeg reads), relative to the spec.
    pub file: String,
    /// Where in the clip to begin, seconds.
    #[serde(default, skip_serializing_if = "is_default")]
    pub start: f64,
    /// Where in the clip to stop, seconds; default: its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
    /// Play the clip again from `start` while the scene outlasts it (else its last frame holds).
    #[serde(default, skip_serializing_if = "is_default")]
    pub r#loop: bool,
    /// The clip's own sound as the scene's audio (a scene without narration only); it is
    /// ducked under music and loudness-normalised like narration.
    #[serde(default, skip_serializing_if = "is_default")]
    pub audio: bool,
}

impl Scene {
    /// Whether D-ID, not this engine, animates the scene's talking head (`provider: d-id`).
    pub fn is_d_id_talking_head(&self) -> bool {
        matches!(self.motion, Motion::TalkingHead { provider: TalkingHeadProvider::DId, .. })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum ReplaceBackground {
    Color(Color),
    /// An image file, fitted to cover the picture.
    Image(String),
    /// The picture's own background, blurred by this radius (output pixels).
    Blur(f32),
}

fn default_padding() -> f64 {
    0.5
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Fill the frame, cropping what overflows.
    #[default]
    Cover,
    /// Show the whole image on the background colour.
    Contain,
    /// Show the whole image on a blurred, enlarged copy of itself.
    ContainBlur,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Background {
    Color(Color),
    Gradient(Gradient),
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gradient {
    pub from: Color,
    pub to: Color,
    /// Degrees; 0 runs left to right, 90 top to bottom.
    #[serde(default = "default_gradient_angle")]
    pub angle: f32,
}
fn default_gradient_angle() -> f32 {
    90.0
}

/// Narration: text spoken by a voice, or a recording.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Narration {
    /// Text to speak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A recording (any format FFmpeg reads) instead of text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
    /// Subtitle text for a recording; words are timed by their length unless `word_times`
    /// says when each is spoken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// When each word of `transcript` (split at whitespace) is spoken: `[start, end]` seconds
    /// from the recording's start, one pair per word, in order (as a voice service's
    /// alignment gives them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_times: Option<Vec<[f64; 2]>>,
    #[serde(default, flatten)]
    pub voice: VoiceOverride,
}

/// Camera motion over the scene.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "kebab-case")]
pub enum Motion {
    #[default]
    None,
    KenBurns {
        #[serde(default = "one")]
        zoom_from: f32,
        #[serde(default = "default_zoom_to")]
        zoom_to: f32,
        #[serde(default)]
        pan: Pan,
    },
    /// The photo's face speaks the narration: mouth opened in time with the speech, jaw moved,
    /// inside of the mouth shaded (needs the face models from `scripts/models.sh`).
    TalkingHead {
        /// Which face, counted left to right; default: the largest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        face_index: Option<usize>,
        /// `photo`: the picture fitted as usual; `face`: cropped around the face (head and
        /// shoulders, in the output's shape: square or portrait outputs make headshots).
        #[serde(default, skip_serializing_if = "is_default")]
        framing: Framing,
        /// Natural blinks every few seconds.
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        blink: bool,
        /// Slight idle head motion (sway and tilt), 0 (still) to 2; 1 is natural.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        head_motion: f32,
        /// Who animates the face: `local` (this engine) or `d-id` (D-ID's API, through the
        /// service's `did_api_key`; the narration is synthesised here and sent as audio).
        #[serde(default, skip_serializing_if = "is_default")]
        provider: TalkingHeadProvider,
    },
}

/// Who renders a talking head.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum TalkingHeadProvider {
    #[default]
    Local,
    #[serde(rename = "d-id")]
    DId,
}

/// How a talking head's photo is framed.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    #[default]
    Photo,
    Face,
}

fn is_true(b: &bool) -> bool {
    *b
}
fn is_one(x: &f32) -> bool {
    *x == 1.0
}
fn is_default<T: Default + PartialEq>(x: &T) -> bool {
    *x == T::default()
}
fn default_zoom_to() -> f32 {
    1.12
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Pan {
    #[default]
    Center,
    Left,
    Right,
    Up,
    Down,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    #[serde(default, rename = "type")]
    pub kind: TransitionKind,
    /// Seconds (ignored for `cut`).
    #[serde(default = "default_transition_duration")]
    pub duration: f64,
}

impl Default for Transition {
    fn default() -> Self {
        Self { kind: TransitionKind::Cut, duration: default_transition_duration() }
    }
}
fn default_transition_duration() -> f64 {
    0.5
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum TransitionKind {
    #[default]
    Cut,
    Crossfade,
    FadeBlack,
    /// The next scene slides in from the right, pushing this one out.
    Slide,
}

/// Text drawn over the scene, not moved by Ken Burns.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextOverlay {
    pub text: String,
    #[serde(default)]
    pub position: OverlayPosition,
    #[serde(default = "default_overlay_font")]
    pub font: Font,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#box: Option<TextBox>,
}
fn default_overlay_font() -> Font {
    Font { size: 0.045, ..Font::default() }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OverlayPosition {
    #[default]
    TopLeft,
    TopCenter,
    TopRight,
    Center,
    BottomLeft,
    BottomCenter,
    BottomRight,
}

/// A spec that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ParseError {
    /// JSON path of the fault, e.g. `scenes[2].transition.type`.
    pub path: String,
    pub message: String,
}

impl ParseError {
    /// Stable machine-readable error code.
    pub const CODE: &'static str = "spec_parse";
}

/// Parses a spec from JSON text, naming the JSON path of the first fault.
pub fn parse(json: &str) -> Result<Spec, ParseError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let mut spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json appends " at line L column C"; keep it, it helps people find the spot.
        ParseError { path: if path == "." { "$".into() } else { path }, message: inner.to_string() }
    })?;
    if spec.voice.name.is_empty() {
        spec.voice.name = default_voice(&spec.voice.engine).to_string();
    }
    Ok(spec)
}

/// The JSON Schema of the spec, generated from these types (committed at docs/spec.schema.json).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Spec);
    serde_json::to_value(schema).expect("schema serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec written back and read again is the same spec: stored specs, cache keys and the
    /// service's copies depend on it. serde_json's default float parser is not correctly
    /// rounded, so a long decimal read once and then written shortest came back one ulp off
    /// (found by the spec fuzzer).
    #[test]
    fn long_decimals_survive_a_write_and_read() {
        let spec = parse(
            r#"{"version":1,"scenes":[{"duration":10.166105487219527772,"padding":0.3000000000000000444,
                "transition":{"type":"crossfade","duration":0.44721359549995793928}}]}"#,
        )
        .unwrap();
        let again = parse(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
        assert_eq!(spec.scenes[0].duration, Some("10.166105487219527772".parse::<f64>().unwrap()));
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = parse(r#"{"version":1,"scenes":[{"narration":{"text":"Hi"}}]}"#).unwrap();
        assert_eq!(spec.output.dimensions(), (1920, 1080));
        assert_eq!(spec.output.fps, 30);
        assert_eq!(spec.voice.name, "en-us");
        // Each engine has its own default voice, for the whole spec and for a scene.
        let piper = parse(
            r#"{"version":1,"voice":{"engine":"piper"},"scenes":[{"narration":{"text":"Hi","engine":"espeak-ng"}}]}"#,
        )
        .unwrap();
        assert_eq!(piper.voice.name, "en_US-joe-medium");
        let scene = piper.voice.with(&piper.scenes[0].narration.as_ref().unwrap().voice);
        assert_eq!((scene.engine.as_str(), scene.name.as_str()), ("espeak-ng", "en-us"));
        let same = piper.voice.with(&VoiceOverride { speed: Some(1.2), ..Default::default() });
        assert_eq!(same.name, "en_US-joe-medium");
        assert_eq!(spec.audio.loudness, Some(-16.0));
        assert_eq!(spec.scenes[0].transition.kind, TransitionKind::Cut);
    }

    #[test]
    fn parse_error_names_the_json_path() {
        let err = parse(r#"{"version":1,"scenes":[{},{},{"transition":{"type":"wipe"}}]}"#).unwrap_err();
        assert_eq!(err.path, "scenes[2].transition.type");
        assert!(err.message.contains("wipe"), "{}", err.message);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let err = parse(r#"{"version":1,"scenes":[{"imgae":"a.jpg"}]}"#).unwrap_err();
        assert_eq!(err.path, "scenes[0].imgae");
        assert!(err.message.contains("imgae"), "{}", err.message);
    }

    #[test]
    fn motion_and_presets_parse() {
        let spec = parse(
            r##"{"version":1,"output":{"size":"vertical","quality":{"preset":"fast","crf":20}},
            "scenes":[{"motion":{"type":"ken-burns","zoom_to":1.3,"pan":"left"},
            "background":{"gradient":{"from":"#000","to":"#ff0000"}}}]}"##,
        )
        .unwrap();
        assert_eq!(spec.output.dimensions(), (1080, 1920));
        assert_eq!(spec.scenes[0].motion, Motion::KenBurns { zoom_from: 1.0, zoom_to: 1.3, pan: Pan::Left });
        assert!(matches!(spec.scenes[0].background, Some(Background::Gradient(_))));
    }

    #[test]
    fn committed_schema_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/spec.schema.json");
        let generated = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
        if std::env::var_os("REELSMITH_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/spec.schema.json is stale: run REELSMITH_UPDATE_SCHEMA=1 cargo test -p reelsmith-spec"
        );
    }
}
