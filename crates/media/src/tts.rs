//! Speech synthesis behind the [`SpeechEngine`] trait, with per-word timings.
//!
//! The first engine is [`EspeakNg`]: the espeak-ng C library (through `espeakng-sys`) in
//! `AUDIO_OUTPUT_SYNCHRONOUS` mode. It returns 16-bit mono PCM at the library's native rate
//! (22 050 Hz for the standard voices) plus a [`WordTiming`] for every word of the request text.
//!
//! # Threading
//! espeak-ng keeps process-global state (current voice, rate, pitch, the synth callback), so every
//! library call goes through one global mutex and the library is initialised once, lazily, in a
//! `OnceLock`. Synthesis is therefore serialised process-wide: calling [`SpeechEngine::synthesize`]
//! from several threads is safe, but only one request is synthesised at a time. Each request sets
//! the voice and every speech parameter it relies on, so no setting leaks from one call into the
//! next. espeak-ng is not bit-exact between calls (its wavegen carries small state across
//! messages), so two identical requests may differ by a few samples / milliseconds.
//!
//! # Word timings
//! espeak reports `espeakEVENT_WORD` events with an audio position (ms) and a 1-based *character*
//! position and length in the source text. Those positions are not fully reliable (numbers and
//! emoji are expanded into several words that report shifted positions, abbreviations shift the
//! positions after them by one, some words get no event), so the timings are built like this:
//!
//! 1. The request text is split into words: runs of characters between whitespace (and em/en
//!    dashes and `…`), with surrounding punctuation (`.,;:!?"'()[]{}-_*/…`, typographic quotes,
//!    dashes, CJK punctuation) stripped. Tokens that are punctuation only are not words.
//! 2. The word events are aligned to those words monotonically (an edit-distance alignment whose
//!    match cost is the distance between reported and real character positions, capped), so
//!    every word gets at most one event, surplus events (continuations of a word espeak spoke as
//!    several, e.g. "1995" or "🎉") are ignored, and order is always preserved.
//! 3. `start` is the aligned event's audio position. A word without an event gets a start
//!    interpolated between its neighbours in proportion to character counts.
//! 4. `end` is the next word's start (the end of speech for the last word), pulled back over any
//!    trailing silence (samples with `|s|` below a small threshold), so pauses at commas are not
//!    attributed to the word before them and the last word ends where the speech energy stops.
//!
//! So `words` has one entry per word of the text, in text order, with
//! `0 <= start <= end <= next.start <= ... <= duration()`, and `char_start..char_end` is a byte
//! range of the request text on char boundaries (`&text[char_start..char_end] == word`).
//! The audio itself is returned as produced (including espeak's short leading silence).

use std::ffi::{CStr, CString, c_int, c_short, c_void};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use espeakng_sys as sys;

/// Errors from speech synthesis.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("unknown voice: {0}")]
    UnknownVoice(String),
    #[error("text is empty")]
    EmptyText,
    #[error("speech engine failed: {0}")]
    Engine(String),
}

/// Timing of one word of the request text.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WordTiming {
    /// The word as it appears in the request text, surrounding punctuation stripped.
    pub word: String,
    /// Seconds from the start of the audio.
    pub start: f64,
    /// Seconds from the start of the audio; trailing silence is excluded.
    pub end: f64,
    /// Byte offset of the word in the request text (a char boundary).
    pub char_start: usize,
    /// Byte offset one past the word in the request text (a char boundary).
    pub char_end: usize,
}

/// One synthesis request.
///
/// * `speed`: 1.0 = normal (espeak 175 words per minute); the rate is `175 * speed` wpm clamped
///   to espeak's 80..=450 wpm, i.e. `speed` is effectively limited to about 0.46..=2.57. Speed
///   changes the tempo, not the pitch. Non-finite or non-positive values mean 1.0.
/// * `pitch`: 1.0 = normal (espeak pitch 50). `pitch` is clamped to 0.5..=2.0 and mapped
///   linearly in octaves onto espeak's 0..=100 pitch scale: `espeak = 50 + 50 * log2(pitch)`
///   (0.5 → 0, 1.0 → 50, 2.0 → 100). espeak's own scale is roughly geometric but narrower than
///   the factor suggests: measured median F0 of the default English voice is about 72 / 101 /
///   168 Hz at pitch 0.5 / 1.0 / 2.0. Non-finite or non-positive values mean 1.0.
/// * `voice`: an espeak voice identifier, name or language: "en", "en-us", "en-gb", "de",
///   "gmw/en-US", "English (America)", optionally with a variant: "en-us+f3", "de+klatt".
#[derive(Clone, Debug)]
pub struct TtsRequest<'a> {
    pub text: &'a str,
    pub voice: &'a str,
    pub speed: f32,
    pub pitch: f32,
}

impl<'a> TtsRequest<'a> {
    /// A request at normal speed and pitch.
    pub fn new(text: &'a str, voice: &'a str) -> Self {
        TtsRequest { text, voice, speed: 1.0, pitch: 1.0 }
    }
}

/// Synthesised speech: mono 16-bit PCM plus word timings.
#[derive(Clone, Debug)]
pub struct TtsAudio {
    pub sample_rate: u32,
    /// Mono samples.
    pub samples: Vec<i16>,
    pub words: Vec<WordTiming>,
}

impl TtsAudio {
    /// Length of the audio in seconds.
    pub fn duration(&self) -> f64 {
        if self.sample_rate == 0 { 0.0 } else { self.samples.len() as f64 / self.sample_rate as f64 }
    }

    /// Writes the samples as a mono 16-bit PCM WAV file.
    pub fn write_wav(&self, path: &Path) -> std::io::Result<()> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: self.sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(path, spec).map_err(hound_to_io)?;
        {
            let mut w = writer.get_i16_writer(self.samples.len() as u32);
            for &s in &self.samples {
                w.write_sample(s);
            }
            w.flush().map_err(hound_to_io)?;
        }
        writer.finalize().map_err(hound_to_io)
    }

    /// Reads a 16-bit integer PCM WAV file as mono samples (multi-channel files are averaged
    /// down to mono). Other sample formats are an `InvalidData` error.
    pub fn read_wav(path: &Path) -> std::io::Result<Vec<i16>> {
        let mut reader = hound::WavReader::open(path).map_err(hound_to_io)?;
        let spec = reader.spec();
        if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("expected 16-bit integer PCM, found {} bit {:?}", spec.bits_per_sample, spec.sample_format),
            ));
        }
        let samples = reader.samples::<i16>().collect::<Result<Vec<i16>, _>>().map_err(hound_to_io)?;
        let channels = spec.channels.max(1) as usize;
        if channels == 1 {
            return Ok(samples);
        }
        Ok(samples
            .chunks(channels)
            .map(|frame| {
                let sum: i32 = frame.iter().map(|&s| s as i32).sum();
                (sum / frame.len() as i32) as i16
            })
            .collect())
    }
}

fn hound_to_io(e: hound::Error) -> std::io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// A voice an engine offers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VoiceInfo {
    /// The engine's name for the voice (espeak: e.g. "English (America)"); accepted as `voice`.
    pub name: String,
    /// Language codes the voice speaks, most preferred first (e.g. "en-us", "en"); each is
    /// accepted as `voice`.
    pub languages: Vec<String>,
    /// "male", "female" or "unknown".
    pub gender: String,
}

/// A text-to-speech engine.
pub trait SpeechEngine: Send + Sync {
    /// Short engine name, e.g. "espeak-ng".
    fn name(&self) -> &'static str;
    /// Engine and library version; changes whenever output may change (use in cache keys).
    fn version(&self) -> String;
    /// The voices the engine offers.
    fn voices(&self) -> Result<Vec<VoiceInfo>, TtsError>;
    /// Whether `voice` names a usable voice.
    fn has_voice(&self, voice: &str) -> bool;
    /// Whether `TtsRequest::pitch` is applied by the engine itself (otherwise the caller shifts
    /// the pitch of the result).
    fn native_pitch(&self) -> bool {
        true
    }
    /// Synthesises `req.text`.
    fn synthesize(&self, req: &TtsRequest) -> Result<TtsAudio, TtsError>;
}

// ---------------------------------------------------------------------------------------------
// espeak-ng

/// espeak's normal speaking rate in words per minute (speed 1.0).
pub const ESPEAK_NORMAL_WPM: i32 = 175;
/// Slowest rate espeak accepts.
pub const ESPEAK_MIN_WPM: i32 = 80;
/// Fastest rate espeak accepts.
pub const ESPEAK_MAX_WPM: i32 = 450;

/// Bumped whenever this module changes how audio or timings are produced (part of `version()`).
const TIMING_REVISION: u32 = 1;

/// espeak rate (words per minute) used for `speed`: `175 * speed`, clamped to 80..=450.
pub fn espeak_rate_for_speed(speed: f32) -> i32 {
    let speed = if speed.is_finite() && speed > 0.0 { speed } else { 1.0 };
    let wpm = (ESPEAK_NORMAL_WPM as f32 * speed).round();
    (wpm.clamp(ESPEAK_MIN_WPM as f32, ESPEAK_MAX_WPM as f32)) as i32
}

/// espeak pitch (0..=100, 50 = normal) used for `pitch`: `50 + 50 * log2(pitch)` with `pitch`
/// clamped to 0.5..=2.0.
pub fn espeak_pitch_for(pitch: f32) -> i32 {
    let pitch = if pitch.is_finite() && pitch > 0.0 { pitch } else { 1.0 };
    let p = pitch.clamp(0.5, 2.0);
    ((50.0 + 50.0 * p.log2()).round() as i32).clamp(0, 100)
}

/// The espeak-ng engine. All instances share the one process-wide library state.
pub struct EspeakNg;

impl EspeakNg {
    /// Initialises espeak-ng (once per process) and checks that its voice data is present.
    pub fn new() -> Result<Self, TtsError> {
        espeak()?;
        Ok(EspeakNg)
    }

    /// The library's native sample rate (22 050 Hz for the standard voices).
    pub fn sample_rate(&self) -> Result<u32, TtsError> {
        Ok(espeak()?.sample_rate)
    }

    /// Names of the voice variants that can be appended with `+`, e.g. "f3" in "en-us+f3".
    pub fn variants(&self) -> Result<Vec<String>, TtsError> {
        Ok(espeak()?.variants.iter().map(|v| v.file.clone()).collect())
    }

    /// The espeak voice spec (`identifier[+variant]`) that `voice` resolves to, if any.
    pub fn resolve_voice(&self, voice: &str) -> Result<String, TtsError> {
        resolve_voice(espeak()?, voice).ok_or_else(|| TtsError::UnknownVoice(voice.to_string()))
    }
}

impl SpeechEngine for EspeakNg {
    fn name(&self) -> &'static str {
        "espeak-ng"
    }

    fn version(&self) -> String {
        match espeak() {
            Ok(g) => format!("espeak-ng {} (reelsmith-tts {})", g.version, TIMING_REVISION),
            Err(_) => format!("espeak-ng unavailable (reelsmith-tts {TIMING_REVISION})"),
        }
    }

    fn voices(&self) -> Result<Vec<VoiceInfo>, TtsError> {
        let g = espeak()?;
        Ok(g.voices
            .iter()
            .map(|v| {
                let mut langs = v.languages.clone();
                langs.sort_by_key(|(prio, _)| *prio);
                VoiceInfo {
                    name: v.name.clone(),
                    languages: langs.into_iter().map(|(_, l)| l).collect(),
                    gender: match v.gender {
                        1 => "male",
                        2 => "female",
                        _ => "unknown",
                    }
                    .to_string(),
                }
            })
            .collect())
    }

    fn has_voice(&self, voice: &str) -> bool {
        match espeak() {
            Ok(g) => resolve_voice(g, voice).is_some(),
            Err(_) => false,
        }
    }

    fn synthesize(&self, req: &TtsRequest) -> Result<TtsAudio, TtsError> {
        if req.text.trim().is_empty() {
            return Err(TtsError::EmptyText);
        }
        let g = espeak()?;
        let spec = resolve_voice(g, req.voice).ok_or_else(|| TtsError::UnknownVoice(req.voice.to_string()))?;
        let c_spec = CString::new(spec).map_err(|_| TtsError::UnknownVoice(req.voice.into()))?;
        // NUL is one byte and one char, so replacing it keeps every offset unchanged.
        let c_text = CString::new(req.text.replace('\0', " ")).map_err(|e| TtsError::Engine(e.to_string()))?;
        let rate = espeak_rate_for_speed(req.speed);
        let pitch = espeak_pitch_for(req.pitch);

        let collected = {
            let _guard = lock_espeak();
            // SAFETY: all espeak calls happen under ESPEAK_LOCK, after initialisation.
            unsafe {
                if sys::espeak_SetVoiceByName(c_spec.as_ptr()) != sys::espeak_ERROR_EE_OK {
                    return Err(TtsError::UnknownVoice(req.voice.to_string()));
                }
                let params = [
                    (sys::espeak_PARAMETER_espeakRATE, rate),
                    (sys::espeak_PARAMETER_espeakPITCH, pitch),
                    (sys::espeak_PARAMETER_espeakVOLUME, 100),
                    (sys::espeak_PARAMETER_espeakRANGE, 50),
                    (sys::espeak_PARAMETER_espeakWORDGAP, 0),
                    (sys::espeak_PARAMETER_espeakCAPITALS, 0),
                    (sys::espeak_PARAMETER_espeakPUNCTUATION, sys::espeak_PUNCT_TYPE_espeakPUNCT_NONE as c_int),
                ];
                for (param, value) in params {
                    let rc = sys::espeak_SetParameter(param, value, 0);
                    // espeak-ng 1.51 sets CAPITALS and PUNCTUATION but reports
                    // EE_INTERNAL_ERROR for them; only the others are checked.
                    let checked = param != sys::espeak_PARAMETER_espeakCAPITALS
                        && param != sys::espeak_PARAMETER_espeakPUNCTUATION;
                    if checked && rc != sys::espeak_ERROR_EE_OK {
                        return Err(TtsError::Engine(format!("espeak_SetParameter({param}, {value}) returned {rc}")));
                    }
                }
                synth_locked(&c_text)?
            }
        };

        let words = word_timings(req.text, &collected.samples, g.sample_rate, &collected.words);
        Ok(TtsAudio { sample_rate: g.sample_rate, samples: collected.samples, words })
    }
}

/// Immutable facts about the initialised library.
struct EspeakGlobal {
    sample_rate: u32,
    version: String,
    voices: Vec<VoiceEntry>,
    variants: Vec<VariantEntry>,
}

#[derive(Clone, Debug)]
struct VoiceEntry {
    name: String,
    identifier: String,
    /// (priority, language); lower priority = more preferred.
    languages: Vec<(u8, String)>,
    gender: u8,
}

#[derive(Clone, Debug)]
struct VariantEntry {
    name: String,
    /// File name below `voices/!v/`, the part used after `+`.
    file: String,
}

/// Serialises every espeak-ng call (the library's state is process-global).
static ESPEAK_LOCK: Mutex<()> = Mutex::new(());
static ESPEAK: OnceLock<Result<EspeakGlobal, String>> = OnceLock::new();
/// Fallback route to the collector in case an event list ever arrives without `user_data`.
static CURRENT_COLLECTOR: AtomicPtr<Collector> = AtomicPtr::new(ptr::null_mut());
/// Set when the synth callback panicked (it then aborts the synthesis).
static CALLBACK_PANICKED: AtomicBool = AtomicBool::new(false);

/// The IPA phonemes espeak-ng gives `text` in `voice` (an espeak voice such as `en-us`), one
/// string per clause, as neural voices trained on espeak phonemes (Piper) expect them.
pub fn phonemize_ipa(text: &str, voice: &str) -> Result<Vec<String>, TtsError> {
    espeak()?;
    let c_voice = CString::new(voice).map_err(|_| TtsError::UnknownVoice(voice.into()))?;
    let c_text = CString::new(text.replace('\0', " ")).map_err(|e| TtsError::Engine(e.to_string()))?;
    let _guard = lock_espeak();
    let mut clauses = vec![];
    // SAFETY: under ESPEAK_LOCK, after initialisation; espeak advances `ptr` through `c_text`
    // (which outlives the loop) and sets it to NULL at the end; each returned string is copied
    // before the next call reuses its buffer.
    unsafe {
        if sys::espeak_SetVoiceByName(c_voice.as_ptr()) != sys::espeak_ERROR_EE_OK {
            return Err(TtsError::UnknownVoice(voice.to_string()));
        }
        let mut ptr: *const c_void = c_text.as_ptr() as *const c_void;
        let mut guard = 0;
        while !ptr.is_null() && guard < 100_000 {
            guard += 1;
            // phonememode 0x02: IPA, no separator between phonemes.
            let out = sys::espeak_TextToPhonemes(&mut ptr, sys::espeakCHARS_UTF8 as c_int, 0x02);
            if out.is_null() {
                break;
            }
            let clause = CStr::from_ptr(out).to_string_lossy().trim().to_string();
            if !clause.is_empty() {
                clauses.push(clause);
            }
        }
    }
    Ok(clauses)
}

fn lock_espeak() -> MutexGuard<'static, ()> {
    ESPEAK_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The initialised library (initialising it on first use). Never call this while holding
/// `ESPEAK_LOCK`: initialisation takes the lock itself.
fn espeak() -> Result<&'static EspeakGlobal, TtsError> {
    ESPEAK
        .get_or_init(|| {
            let _guard = lock_espeak();
            // SAFETY: under ESPEAK_LOCK, once per process.
            unsafe { init_espeak() }
        })
        .as_ref()
        .map_err(|e| TtsError::Engine(e.clone()))
}

unsafe fn init_espeak() -> Result<EspeakGlobal, String> {
    unsafe {
        let rate = sys::espeak_Initialize(
            sys::espeak_AUDIO_OUTPUT_AUDIO_OUTPUT_SYNCHRONOUS,
            500,
            ptr::null(),
            sys::espeakINITIALIZE_DONT_EXIT as c_int,
        );
        let mut data_path: *const std::ffi::c_char = ptr::null();
        let info = sys::espeak_Info(&mut data_path);
        let version = cstr_lossy(info);
        let data_path = cstr_lossy(data_path);
        if rate <= 0 {
            return Err(format!("espeak_Initialize failed ({rate}); espeak-ng data expected at {data_path:?}"));
        }
        sys::espeak_SetSynthCallback(Some(synth_callback));

        let voices: Vec<VoiceEntry> = list_voices(ptr::null_mut())
            .into_iter()
            .filter(|v| !v.identifier.is_empty() && !v.identifier.starts_with("mb/"))
            .collect();
        if voices.is_empty() {
            return Err(format!(
                "espeak-ng {version} found no voices; is espeak-ng-data installed (looked in {data_path:?})?"
            ));
        }
        let variant_lang = CString::new("variant").expect("no NUL");
        let mut spec: sys::espeak_VOICE = std::mem::zeroed();
        spec.languages = variant_lang.as_ptr();
        let variants = list_voices(&mut spec)
            .into_iter()
            .filter_map(|v| {
                let file = v.identifier.strip_prefix("!v/")?.to_string();
                Some(VariantEntry { name: v.name, file })
            })
            .collect();
        Ok(EspeakGlobal { sample_rate: rate as u32, version, voices, variants })
    }
}

unsafe fn cstr_lossy(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: espeak returns NUL-terminated strings.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Copies espeak_ListVoices' result (a static array the next call overwrites). Caller holds the
/// lock.
unsafe fn list_voices(spec: *mut sys::espeak_VOICE) -> Vec<VoiceEntry> {
    let mut out = Vec::new();
    unsafe {
        let list = sys::espeak_ListVoices(spec);
        if list.is_null() {
            return out;
        }
        let mut i = 0;
        loop {
            let v = *list.add(i);
            if v.is_null() {
                break;
            }
            let v = &*v;
            let mut languages = Vec::new();
            if !v.languages.is_null() {
                // (priority byte, NUL-terminated name)*, then a 0 byte.
                let mut p = v.languages;
                while *p != 0 {
                    let prio = *p as u8;
                    let name = CStr::from_ptr(p.add(1));
                    let len = name.to_bytes().len();
                    languages.push((prio, name.to_string_lossy().into_owned()));
                    p = p.add(len + 2);
                }
            }
            out.push(VoiceEntry {
                name: cstr_lossy(v.name).trim().to_string(),
                identifier: cstr_lossy(v.identifier),
                languages,
                gender: v.gender,
            });
            i += 1;
        }
    }
    out
}

/// Maps a user voice spec to `identifier[+variant]`: exact voice name, identifier or the
/// identifier's last path component first, then the most preferred voice for that language
/// code; the variant (after `+`) must name an installed variant.
fn resolve_voice(g: &EspeakGlobal, spec: &str) -> Option<String> {
    let spec = spec.trim();
    let (base, variant) = match spec.split_once('+') {
        Some((b, v)) => (b.trim(), Some(v.trim())),
        None => (spec, None),
    };
    if base.is_empty() || base.contains('\0') {
        return None;
    }
    let by_name = g.voices.iter().find(|v| {
        v.name.eq_ignore_ascii_case(base)
            || v.identifier.eq_ignore_ascii_case(base)
            || v.identifier.rsplit('/').next().is_some_and(|last| last.eq_ignore_ascii_case(base))
    });
    let lang = base.replace('_', "-");
    let voice = by_name.or_else(|| {
        g.voices
            .iter()
            .filter_map(|v| {
                v.languages
                    .iter()
                    .filter(|(_, l)| l.eq_ignore_ascii_case(&lang))
                    .map(|(prio, _)| *prio)
                    .min()
                    .map(|prio| (prio, v))
            })
            .min_by_key(|(prio, _)| *prio)
            .map(|(_, v)| v)
    })?;
    match variant {
        None => Some(voice.identifier.clone()),
        Some(var) => {
            let entry =
                g.variants.iter().find(|e| e.file.eq_ignore_ascii_case(var) || e.name.eq_ignore_ascii_case(var))?;
            Some(format!("{}+{}", voice.identifier, entry.file))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct RawWordEvent {
    /// 1-based character position in the text.
    text_position: i32,
    /// Length in characters.
    length: i32,
    /// Milliseconds from the start of the message's audio.
    audio_position: i32,
}

#[derive(Default)]
struct Collector {
    samples: Vec<i16>,
    words: Vec<RawWordEvent>,
}

/// Runs one synthesis; caller holds the lock and has set voice and parameters.
unsafe fn synth_locked(text: &CString) -> Result<Collector, TtsError> {
    let collector = Box::into_raw(Box::<Collector>::default());
    CURRENT_COLLECTOR.store(collector, Ordering::SeqCst);
    CALLBACK_PANICKED.store(false, Ordering::SeqCst);
    let bytes = text.as_bytes_with_nul();
    // SAFETY: `collector` stays valid until reclaimed below; in synchronous mode espeak only
    // calls back from inside espeak_Synth, on this thread.
    let rc = unsafe {
        sys::espeak_Synth(
            bytes.as_ptr() as *const c_void,
            bytes.len(),
            0,
            sys::espeak_POSITION_TYPE_POS_CHARACTER,
            0,
            sys::espeakCHARS_UTF8,
            ptr::null_mut(),
            collector as *mut c_void,
        )
    };
    CURRENT_COLLECTOR.store(ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: produced by Box::into_raw above and no longer referenced by espeak.
    let collector = unsafe { Box::from_raw(collector) };
    if rc != sys::espeak_ERROR_EE_OK {
        return Err(TtsError::Engine(format!("espeak_Synth returned {rc}")));
    }
    if CALLBACK_PANICKED.load(Ordering::SeqCst) {
        return Err(TtsError::Engine("synthesis aborted by the audio callback".into()));
    }
    Ok(*collector)
}

unsafe extern "C" fn synth_callback(wav: *mut c_short, numsamples: c_int, events: *mut sys::espeak_EVENT) -> c_int {
    // Never unwind into C; abort the synthesis instead.
    std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { collect_callback(wav, numsamples, events) })).unwrap_or_else(
        |_| {
            CALLBACK_PANICKED.store(true, Ordering::SeqCst);
            1
        },
    )
}

unsafe fn collect_callback(wav: *mut c_short, numsamples: c_int, events: *mut sys::espeak_EVENT) -> c_int {
    unsafe {
        let mut target: *mut Collector = ptr::null_mut();
        if !events.is_null() {
            // Every event, including the list terminator, carries the user_data of espeak_Synth.
            target = (*events).user_data as *mut Collector;
        }
        if target.is_null() {
            target = CURRENT_COLLECTOR.load(Ordering::SeqCst);
        }
        if target.is_null() {
            return 0;
        }
        let c = &mut *target;
        if !wav.is_null() && numsamples > 0 {
            c.samples.extend_from_slice(std::slice::from_raw_parts(wav, numsamples as usize));
        }
        if !events.is_null() {
            let mut e = events;
            loop {
                let ev = &*e;
                match ev.type_ {
                    sys::espeak_EVENT_TYPE_espeakEVENT_LIST_TERMINATED => break,
                    sys::espeak_EVENT_TYPE_espeakEVENT_WORD => c.words.push(RawWordEvent {
                        text_position: ev.text_position,
                        length: ev.length,
                        audio_position: ev.audio_position,
                    }),
                    _ => {}
                }
                e = e.add(1);
            }
        }
        0
    }
}

// ---------------------------------------------------------------------------------------------
// Word timing (pure functions over text, samples and raw events)

/// A word of the request text.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Token {
    byte_start: usize,
    byte_end: usize,
    /// 0-based character index of the first char.
    char_start: usize,
    char_len: usize,
}

/// Characters that separate words even without surrounding whitespace.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '—' | '–' | '―' | '…')
}

/// Punctuation stripped from both ends of a word.
fn is_edge_punct(c: char) -> bool {
    matches!(
        c,
        '!' | '"'
            | '\''
            | '('
            | ')'
            | ','
            | '.'
            | ':'
            | ';'
            | '?'
            | '['
            | ']'
            | '{'
            | '}'
            | '-'
            | '_'
            | '*'
            | '`'
            | '/'
            | '\\'
            | '¡'
            | '¿'
            | '«'
            | '»'
            | '·'
            | '\u{2010}'..='\u{2027}'
            | '‹'
            | '›'
            | '\u{3001}'..='\u{3003}'
            | '\u{3008}'..='\u{3011}'
            | '\u{3014}'..='\u{301F}'
            | '！'
            | '（'
            | '）'
            | '，'
            | '．'
            | '：'
            | '；'
            | '？'
            | '［'
            | '］'
            | '｛'
            | '｝'
            | '｡'
            | '｢'
            | '｣'
            | '､'
    )
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    // (byte, char index, char) of the current run.
    let mut run: Vec<(usize, usize, char)> = Vec::new();
    let mut flush = |run: &mut Vec<(usize, usize, char)>| {
        let mut lo = 0;
        let mut hi = run.len();
        while lo < hi && is_edge_punct(run[lo].2) {
            lo += 1;
        }
        while hi > lo && is_edge_punct(run[hi - 1].2) {
            hi -= 1;
        }
        if lo < hi {
            let (b0, c0, _) = run[lo];
            let (b1, c1, ch) = run[hi - 1];
            tokens.push(Token { byte_start: b0, byte_end: b1 + ch.len_utf8(), char_start: c0, char_len: c1 + 1 - c0 });
        }
        run.clear();
    };
    for (ci, (bi, ch)) in text.char_indices().enumerate() {
        if is_separator(ch) {
            flush(&mut run);
        } else {
            run.push((bi, ci, ch));
        }
    }
    flush(&mut run);
    tokens
}

const DROP_EVENT_COST: f32 = 1.5;
const SKIP_TOKEN_COST: f32 = 2.5;
const MAX_POSITION_COST: f32 = 3.0;
const LENGTH_MISMATCH_COST: f32 = 0.5;
/// Above this many DP cells the alignment falls back to a greedy scan.
const MAX_DP_CELLS: usize = 8_000_000;

fn match_cost(ev: &RawWordEvent, tok: &Token) -> f32 {
    let pos = (ev.text_position.max(1) - 1) as f32;
    let dist = (pos - tok.char_start as f32).abs().min(MAX_POSITION_COST);
    let len_cost = if ev.length.max(0) as usize == tok.char_len { 0.0 } else { LENGTH_MISMATCH_COST };
    dist + len_cost
}

/// For each token, the index of the event aligned to it (monotone in both sequences).
fn align_events(events: &[RawWordEvent], tokens: &[Token]) -> Vec<Option<usize>> {
    let n = events.len();
    let m = tokens.len();
    let mut assigned = vec![None; m];
    if n == 0 || m == 0 {
        return assigned;
    }
    if (n + 1).saturating_mul(m + 1) > MAX_DP_CELLS {
        return align_greedy(events, tokens);
    }
    const MATCH: u8 = 0;
    const DROP: u8 = 1;
    const SKIP: u8 = 2;
    let w = m + 1;
    let mut back = vec![0u8; (n + 1) * w];
    let mut prev: Vec<f32> = (0..=m).map(|j| j as f32 * SKIP_TOKEN_COST).collect();
    let mut cur = vec![0f32; w];
    back[1..w].fill(SKIP);
    for i in 1..=n {
        cur[0] = i as f32 * DROP_EVENT_COST;
        back[i * w] = DROP;
        for j in 1..=m {
            let mut best = prev[j - 1] + match_cost(&events[i - 1], &tokens[j - 1]);
            let mut how = MATCH;
            let drop = prev[j] + DROP_EVENT_COST;
            if drop < best {
                best = drop;
                how = DROP;
            }
            let skip = cur[j - 1] + SKIP_TOKEN_COST;
            if skip < best {
                best = skip;
                how = SKIP;
            }
            cur[j] = best;
            back[i * w + j] = how;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        match back[i * w + j] {
            MATCH => {
                assigned[j - 1] = Some(i - 1);
                i -= 1;
                j -= 1;
            }
            DROP => i -= 1,
            _ => j -= 1,
        }
    }
    assigned
}

/// Linear-time fallback for huge texts: each event goes to the first token not ending before
/// its reported position, unless that token was already passed.
fn align_greedy(events: &[RawWordEvent], tokens: &[Token]) -> Vec<Option<usize>> {
    let mut assigned = vec![None; tokens.len()];
    let mut next = 0;
    for (ei, ev) in events.iter().enumerate() {
        let pos = (ev.text_position.max(1) - 1) as usize;
        let k = tokens.partition_point(|t| t.char_start + t.char_len <= pos);
        if k >= next && k < tokens.len() {
            assigned[k] = Some(ei);
            next = k + 1;
        }
    }
    assigned
}

/// Smallest amplitude that counts as speech when trimming silence.
fn silence_threshold(samples: &[i16]) -> i32 {
    let peak = samples.iter().map(|&s| (s as i32).abs()).max().unwrap_or(0);
    (peak / 50).max(64)
}

/// End of speech energy within `[start, limit)` seconds: just past the last sample louder than
/// `threshold`, plus a short hangover, never beyond `limit`; `start` if it is all silence.
fn trimmed_end(samples: &[i16], sr: u32, threshold: i32, start: f64, limit: f64) -> f64 {
    const HANGOVER: f64 = 0.010;
    let sr_f = sr as f64;
    let lo = ((start * sr_f).floor().max(0.0) as usize).min(samples.len());
    let hi = ((limit * sr_f).ceil().max(0.0) as usize).min(samples.len());
    if hi <= lo {
        return start;
    }
    match samples[lo..hi].iter().rposition(|&s| (s as i32).abs() > threshold) {
        Some(k) => (((lo + k + 1) as f64 / sr_f) + HANGOVER).min(limit).max(start),
        None => start,
    }
}

fn word_timings(text: &str, samples: &[i16], sample_rate: u32, events: &[RawWordEvent]) -> Vec<WordTiming> {
    let tokens = tokenize(text);
    if tokens.is_empty() || sample_rate == 0 {
        return Vec::new();
    }
    let duration = samples.len() as f64 / sample_rate as f64;
    let threshold = silence_threshold(samples);
    let speech_end = {
        let e = trimmed_end(samples, sample_rate, threshold, 0.0, duration);
        if e > 0.0 { e } else { duration }
    };

    let assigned = align_events(events, &tokens);
    let mut starts: Vec<Option<f64>> =
        assigned.iter().map(|a| a.map(|ei| (events[ei].audio_position.max(0) as f64 / 1000.0).min(duration))).collect();

    // Interpolate runs of tokens without an event, in proportion to character counts.
    let m = tokens.len();
    let mut j = 0;
    while j < m {
        if starts[j].is_some() {
            j += 1;
            continue;
        }
        let a = j;
        while j < m && starts[j].is_none() {
            j += 1;
        }
        let b = j; // run is a..b
        let (t0, w_prev) =
            if a > 0 { (starts[a - 1].unwrap_or(0.0), tokens[a - 1].char_len.max(1) as f64) } else { (0.0, 0.0) };
        let t1 = if b < m { starts[b].unwrap_or(speech_end) } else { speech_end }.max(t0);
        let total: f64 = w_prev + tokens[a..b].iter().map(|t| t.char_len.max(1) as f64).sum::<f64>();
        let mut acc = w_prev;
        for k in a..b {
            starts[k] = Some(t0 + (t1 - t0) * acc / total);
            acc += tokens[k].char_len.max(1) as f64;
        }
    }

    let mut starts: Vec<f64> = starts.into_iter().map(|s| s.unwrap_or(0.0)).collect();
    let mut last = 0.0f64;
    for s in starts.iter_mut() {
        *s = s.clamp(last, duration);
        last = *s;
    }

    (0..m)
        .map(|k| {
            let tok = tokens[k];
            let start = starts[k];
            let limit = if k + 1 < m { starts[k + 1] } else { speech_end.max(start) };
            let end = trimmed_end(samples, sample_rate, threshold, start, limit).clamp(start, limit);
            WordTiming {
                word: text[tok.byte_start..tok.byte_end].to_string(),
                start,
                end,
                char_start: tok.byte_start,
                char_end: tok.byte_end,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> EspeakNg {
        EspeakNg::new().expect("espeak-ng available")
    }

    fn say(text: &str) -> TtsAudio {
        engine().synthesize(&TtsRequest::new(text, "en")).expect("synthesis")
    }

    fn rms(samples: &[i16]) -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
    }

    /// Median fundamental frequency over voiced frames (normalised autocorrelation).
    fn median_f0(samples: &[i16], sr: u32) -> f64 {
        let frame = 1024;
        let hop = 512;
        let x: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
        let frame_rms: Vec<f64> =
            (0..x.len().saturating_sub(frame) / hop).map(|f| rms(&samples[f * hop..f * hop + frame])).collect();
        let max_rms = frame_rms.iter().cloned().fold(0.0, f64::max);
        let min_lag = (sr / 500) as usize;
        let max_lag = (sr / 50) as usize;
        let mut f0s = Vec::new();
        for (f, &r) in frame_rms.iter().enumerate() {
            if r < 0.2 * max_rms {
                continue;
            }
            let w = &x[f * hop..f * hop + frame];
            let energy: f64 = w.iter().map(|v| v * v).sum();
            let mut best = (0.0, 0usize);
            for lag in min_lag..=max_lag.min(frame / 2) {
                let c: f64 = (0..frame - lag).map(|i| w[i] * w[i + lag]).sum();
                let e2: f64 = w[lag..].iter().map(|v| v * v).sum();
                let norm = c / (energy * e2).sqrt().max(1.0);
                if norm > best.0 {
                    best = (norm, lag);
                }
            }
            if best.0 > 0.6 {
                f0s.push(sr as f64 / best.1 as f64);
            }
        }
        assert!(f0s.len() >= 5, "too few voiced frames: {}", f0s.len());
        f0s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        f0s[f0s.len() / 2]
    }

    fn check_words(text: &str, audio: &TtsAudio) {
        let dur = audio.duration();
        let mut prev_end = 0.0;
        let mut prev_byte = 0;
        for w in &audio.words {
            assert!(text.is_char_boundary(w.char_start) && text.is_char_boundary(w.char_end));
            assert!(w.char_start >= prev_byte && w.char_start < w.char_end, "{w:?}");
            assert_eq!(&text[w.char_start..w.char_end], w.word);
            assert!(w.start >= prev_end - 1e-9, "overlap at {w:?}");
            assert!(w.start <= w.end && w.end <= dur + 1e-9, "{w:?} dur {dur}");
            prev_end = w.end;
            prev_byte = w.char_end;
        }
    }

    #[test]
    fn hello_world_audio_and_words() {
        let text = "Hello world, this is a test.";
        let audio = say(text);
        assert_eq!(audio.sample_rate, 22050);
        let dur = audio.duration();
        assert!((1.0..=3.0).contains(&dur), "duration {dur}");
        assert!(rms(&audio.samples) > 500.0, "rms {}", rms(&audio.samples));
        let words: Vec<&str> = audio.words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, ["Hello", "world", "this", "is", "a", "test"]);
        for pair in audio.words.windows(2) {
            assert!(pair[1].start > pair[0].start, "{pair:?}");
        }
        check_words(text, &audio);
        let last = audio.words.last().unwrap();
        assert!(last.end <= dur && last.end > last.start + 0.1, "{last:?}");
        // The last word ends where the energy stops: nothing loud after it.
        let after = (last.end * 22050.0) as usize;
        assert!(rms(&audio.samples[after.min(audio.samples.len())..]) < 100.0);
        // "world" ends before the comma pause; "this" starts after it.
        let world = &audio.words[1];
        assert!(audio.words[2].start - world.end > 0.05, "{:?}", audio.words);
        assert_eq!((world.char_start, world.char_end), (6, 11));
    }

    #[test]
    fn speed_changes_duration() {
        let e = engine();
        let text = "The quick brown fox jumps over the lazy dog.";
        let normal = e.synthesize(&TtsRequest::new(text, "en-us")).unwrap();
        let fast = e.synthesize(&TtsRequest { speed: 2.0, ..TtsRequest::new(text, "en-us") }).unwrap();
        let ratio = fast.duration() / normal.duration();
        eprintln!("speed 2.0 / 1.0 duration ratio {ratio:.3}");
        assert!(ratio < 0.7, "ratio {ratio}");
        assert_eq!(fast.words.len(), 9);
        // Tempo only: the pitch stays about the same.
        let (f_n, f_f) = (median_f0(&normal.samples, 22050), median_f0(&fast.samples, 22050));
        assert!((f_f / f_n - 1.0).abs() < 0.2, "{f_n} vs {f_f}");
        // Settings do not leak into the next call.
        let again = e.synthesize(&TtsRequest::new(text, "en-us")).unwrap();
        let r = again.duration() / normal.duration();
        assert!((r - 1.0).abs() < 0.05, "ratio {r}");
    }

    #[test]
    fn pitch_changes_f0() {
        let e = engine();
        let text = "Hello world, this is a test of the pitch control.";
        let f0 = |pitch: f32, voice: &str| {
            let a = e.synthesize(&TtsRequest { pitch, ..TtsRequest::new(text, voice) }).unwrap();
            median_f0(&a.samples, a.sample_rate)
        };
        let (low, normal, high) = (f0(0.5, "en"), f0(1.0, "en"), f0(2.0, "en"));
        eprintln!("f0 at pitch 0.5 / 1.0 / 2.0: {low:.1} / {normal:.1} / {high:.1} Hz");
        assert!(low < normal * 0.85 && high > normal * 1.3, "{low} {normal} {high}");
        // A female variant raises the pitch, and does not stick to the next request.
        let female = f0(1.0, "en+f3");
        let normal_again = f0(1.0, "en");
        eprintln!("f0 en+f3 {female:.1} Hz, en again {normal_again:.1} Hz");
        assert!(female > normal * 1.3, "{female} vs {normal}");
        assert!((normal_again / normal - 1.0).abs() < 0.1, "{normal_again} vs {normal}");
        assert_eq!(espeak_pitch_for(1.0), 50);
        assert_eq!(espeak_pitch_for(0.5), 0);
        assert_eq!(espeak_pitch_for(2.0), 100);
        assert_eq!(espeak_pitch_for(f32::NAN), 50);
        assert_eq!(espeak_rate_for_speed(1.0), 175);
        assert_eq!(espeak_rate_for_speed(10.0), 450);
        assert_eq!(espeak_rate_for_speed(0.1), 80);
    }

    #[test]
    fn voices_resolve_and_unknown_errors() {
        let e = engine();
        for v in ["en", "en-us", "en-US", "en-gb", "de", "en-us+f3", "English (America)"] {
            assert!(e.has_voice(v), "{v}");
        }
        for v in ["", "xx-nope", "nope", "en+nope", "+f3", "n"] {
            assert!(!e.has_voice(v), "{v}");
        }
        assert_eq!(e.resolve_voice("en-gb").unwrap(), "gmw/en");
        assert!(matches!(
            e.synthesize(&TtsRequest::new("Hello.", "klingon-xx")),
            Err(TtsError::UnknownVoice(v)) if v == "klingon-xx"
        ));
        let voices = e.voices().unwrap();
        assert!(voices.len() > 50);
        assert!(voices.iter().any(|v| v.languages.iter().any(|l| l == "en-us")));
        let bad: Vec<&str> = voices.iter().filter(|v| !e.has_voice(&v.name)).map(|v| v.name.as_str()).collect();
        assert!(bad.is_empty(), "{bad:?}");
        assert!(e.variants().unwrap().iter().any(|v| v == "f3"));
        assert_eq!(e.name(), "espeak-ng");
        assert!(e.version().contains("1."), "{}", e.version());
        // A variant voice and another language synthesise.
        let a = e.synthesize(&TtsRequest::new("Guten Tag, Welt.", "de")).unwrap();
        assert_eq!(a.words.len(), 3);
        let f = e.synthesize(&TtsRequest::new("Hello there.", "en-us+f3")).unwrap();
        assert_eq!(f.words.len(), 2);
    }

    #[test]
    fn empty_text_errors() {
        let e = engine();
        for t in ["", "   ", "\n\t"] {
            assert!(matches!(e.synthesize(&TtsRequest::new(t, "en")), Err(TtsError::EmptyText)));
        }
    }

    #[test]
    fn concurrent_synthesis() {
        let texts = ["One two three.", "Four five six seven.", "Eight nine.", "Ten eleven twelve thirteen fourteen."];
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let text = texts[i % texts.len()];
                std::thread::spawn(move || {
                    let e = EspeakNg::new().unwrap();
                    let req = TtsRequest {
                        speed: 1.0 + (i % 3) as f32 * 0.5,
                        pitch: 0.75 + (i % 2) as f32 * 0.5,
                        ..TtsRequest::new(text, if i % 2 == 0 { "en" } else { "en-us" })
                    };
                    (text, e.synthesize(&req).unwrap())
                })
            })
            .collect();
        for h in handles {
            let (text, audio) = h.join().unwrap();
            assert_eq!(audio.words.len(), text.split_whitespace().count(), "{text}");
            assert!(audio.duration() > 0.15, "{text}: {}", audio.duration());
            check_words(text, &audio);
        }
    }

    #[test]
    fn utf8_text_is_safe() {
        let text = "Café déjà vu — naïve 🎉 test";
        let audio = say(text);
        check_words(text, &audio);
        let words: Vec<&str> = audio.words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, ["Café", "déjà", "vu", "naïve", "🎉", "test"]);
        for pair in audio.words.windows(2) {
            assert!(pair[1].start > pair[0].start, "{:?}", audio.words);
        }
        for t in [
            "🎉",
            "—",
            "...",
            "日本語のテキスト、テスト。",
            "a\u{0}b c",
            "  Leading spaces and 1995 numbers, Dr. Smith's U.S.A. e-mail!",
            "x\u{301}\u{302} ŋ ß 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u{200d}\u{fe0f}",
        ] {
            let a = say(t);
            check_words(t, &a);
        }
        let a = say("  Leading spaces and 1995 numbers, Dr. Smith's U.S.A. e-mail!");
        let words: Vec<&str> = a.words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, ["Leading", "spaces", "and", "1995", "numbers", "Dr", "Smith's", "U.S.A", "e-mail"]);
    }

    #[test]
    fn long_text_timings() {
        let sentence = "The quick brown fox jumps over the lazy dog. ";
        let text = sentence.repeat(30);
        let t0 = std::time::Instant::now();
        let audio = say(&text);
        let elapsed = t0.elapsed().as_secs_f64();
        eprintln!(
            "{:.1} s of speech in {elapsed:.3} s ({:.0}x real time)",
            audio.duration(),
            audio.duration() / elapsed
        );
        assert_eq!(audio.words.len(), 9 * 30);
        check_words(&text, &audio);
        for pair in audio.words.windows(2) {
            assert!(pair[1].start > pair[0].start, "{pair:?}");
        }
        // Each repetition takes about the same time.
        let first = audio.words[9].start - audio.words[0].start;
        let last = audio.words[9 * 29].start - audio.words[9 * 28].start;
        assert!((last / first - 1.0).abs() < 0.1, "{first} vs {last}");
        let end = audio.words.last().unwrap().end;
        assert!(end > audio.duration() - 0.3 && end <= audio.duration());
    }

    #[test]
    fn wav_round_trip() {
        let audio = say("Round trip.");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("speech.wav");
        audio.write_wav(&path).unwrap();
        let back = TtsAudio::read_wav(&path).unwrap();
        assert_eq!(back, audio.samples);
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().sample_rate, 22050);
        assert_eq!(reader.spec().channels, 1);
    }

    #[test]
    fn tokenizer_strips_punctuation() {
        let text = "«Hello», (world)! — it's 3.5 “quoted”… e-mail; 日本、語";
        let words: Vec<&str> = tokenize(text).iter().map(|t| &text[t.byte_start..t.byte_end]).collect();
        assert_eq!(words, ["Hello", "world", "it's", "3.5", "quoted", "e-mail", "日本、語"]);
        let t = tokenize("Café x");
        assert_eq!(t[1].char_start, 5);
        assert_eq!(t[1].byte_start, 6);
    }

    fn ev(text_position: i32, length: i32, audio_position: i32) -> RawWordEvent {
        RawWordEvent { text_position, length, audio_position }
    }

    #[test]
    fn alignment_handles_shifted_and_extra_events() {
        // Events espeak-ng 1.51 really reports for this text.
        let text = "Café déjà vu — naïve 🎉 test";
        let events = [
            ev(1, 4, 0),
            ev(6, 4, 368),
            ev(7, 4, 682),
            ev(16, 5, 1264),
            ev(22, 1, 1596),
            ev(23, 1, 1947),
            ev(24, 4, 2244),
        ];
        let tokens = tokenize(text);
        let assigned = align_events(&events, &tokens);
        assert_eq!(assigned, [Some(0), Some(1), Some(2), Some(3), Some(4), Some(6)]);
        let text = "  Leading spaces and 1995 numbers, Dr. Smith's U.S.A. e-mail!";
        let events = [
            ev(3, 7, 0),
            ev(11, 6, 339),
            ev(18, 3, 929),
            ev(22, 4, 1117),
            ev(23, 4, 2007),
            ev(23, 4, 2365),
            ev(27, 7, 2667),
            ev(36, 2, 3329),
            ev(40, 5, 3733),
            ev(48, 1, 4121),
        ];
        let tokens = tokenize(text);
        let assigned = align_events(&events, &tokens);
        assert_eq!(assigned, [Some(0), Some(1), Some(2), Some(3), Some(6), Some(7), Some(8), Some(9), None]);
        // The greedy fallback keeps order too.
        let greedy = align_greedy(&events, &tokens);
        assert_eq!(&greedy[..5], &[Some(0), Some(1), Some(2), Some(3), Some(6)]);
    }

    #[test]
    fn timings_from_synthetic_events() {
        // 1 s of tone, 0.5 s of silence, 0.5 s of tone, 0.5 s of silence at 1 kHz.
        let sr = 1000;
        let mut samples = vec![0i16; 2500];
        for (i, s) in samples.iter_mut().enumerate() {
            if i < 1000 || (1500..2000).contains(&i) {
                *s = if i % 2 == 0 { 8000 } else { -8000 };
            }
        }
        let text = "alpha, beta gamma";
        // "gamma" has no event: it is interpolated between beta and the end of speech.
        let words = word_timings(text, &samples, sr, &[ev(1, 5, 0), ev(8, 4, 1500)]);
        assert_eq!(words.len(), 3);
        assert_eq!(words[0].start, 0.0);
        assert!((words[0].end - 1.01).abs() < 1e-9, "{words:?}"); // trimmed before the pause
        assert_eq!(words[1].start, 1.5);
        assert!(words[2].start > 1.5 && words[2].start < 2.0, "{words:?}");
        assert!((words[2].end - 2.01).abs() < 1e-9, "{words:?}"); // where the energy stops
        assert_eq!(&text[words[2].char_start..words[2].char_end], "gamma");
        // No events at all still gives ordered words.
        let words = word_timings(text, &samples, sr, &[]);
        assert_eq!(words.len(), 3);
        assert!(words.windows(2).all(|p| p[0].end <= p[1].start));
    }
}

#[cfg(test)]
mod phoneme_tests {
    #[test]
    fn ipa_phonemes_per_clause() {
        let clauses = super::phonemize_ipa("Hello world. This is a test", "en-us").unwrap();
        assert_eq!(clauses.len(), 2, "{clauses:?}");
        assert!(clauses[0].contains("həlˈoʊ") && clauses[0].contains("wˈɜːld"), "{clauses:?}");
        assert!(matches!(super::phonemize_ipa("hi", "no-such-voice"), Err(super::TtsError::UnknownVoice(_))));
    }
}
