//! Piper neural voices (VITS, ONNX): text → espeak-ng IPA phonemes → phoneme ids (from the
//! voice's `.onnx.json`) → audio. Word timings come from each word's share of the phonemes,
//! spread over the voiced part of the audio (the exported models give no durations).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use reelsmith_media::tts::{SpeechEngine, TtsAudio, TtsError, TtsRequest, VoiceInfo, WordTiming, phonemize_ipa};
use serde::Deserialize;

use crate::ModelError;

#[derive(Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    espeak: EspeakConfig,
    #[serde(default)]
    inference: Option<InferenceConfig>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    language: Option<serde_json::Value>,
}
#[derive(Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}
#[derive(Deserialize)]
struct EspeakConfig {
    voice: String,
}
#[derive(Deserialize, Clone, Copy)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

struct Voice {
    session: Mutex<Session>,
    ids: HashMap<char, Vec<i64>>,
    sample_rate: u32,
    espeak_voice: String,
    inference: InferenceConfig,
}

/// The Piper engine: every `<name>.onnx` (+ `.onnx.json`) in `models/piper` is a voice, loaded
/// on first use and kept.
pub struct Piper {
    dir: PathBuf,
    models: PathBuf,
    loaded: Mutex<HashMap<String, Arc<Voice>>>,
}

impl Piper {
    /// Finds the Piper voices and the runtime library; an error says what is missing.
    pub fn discover() -> Result<Self, ModelError> {
        let models = crate::models_dir()?;
        let dir = models.join("piper");
        let p = Self { dir, models, loaded: Default::default() };
        if p.names().is_empty() {
            return Err(ModelError::Model("piper".into(), format!("no voices in {}", p.dir.display())));
        }
        // The runtime loads with the first voice; here it only has to be there.
        crate::runtime_library(&p.models)?;
        Ok(p)
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.strip_suffix(".onnx").map(str::to_string))
                    .filter(|n| self.dir.join(format!("{n}.onnx.json")).exists())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn voice(&self, name: &str) -> Result<Arc<Voice>, TtsError> {
        if let Some(v) = self.loaded.lock().expect("voices").get(name) {
            return Ok(v.clone());
        }
        if !self.names().iter().any(|n| n == name) {
            return Err(TtsError::UnknownVoice(name.into()));
        }
        let v = Arc::new(load(&self.dir, name).map_err(|e| TtsError::Engine(e.to_string()))?);
        self.loaded.lock().expect("voices").insert(name.into(), v.clone());
        Ok(v)
    }
}

fn load(dir: &Path, name: &str) -> Result<Voice, ModelError> {
    let bad = |m: String| ModelError::Model(name.into(), m);
    let cfg_path = dir.join(format!("{name}.onnx.json"));
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| bad(format!("{}: {e}", cfg_path.display())))?;
    let cfg: VoiceConfig = serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", cfg_path.display())))?;
    let _ = &cfg.language;
    let mut ids = HashMap::new();
    for (k, v) in cfg.phoneme_id_map {
        let mut chars = k.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            ids.insert(c, v);
        }
    }
    for required in ['^', '$', '_'] {
        if !ids.contains_key(&required) {
            return Err(bad(format!("phoneme_id_map lacks '{required}'")));
        }
    }
    // One synthesis at a time holds the session (it is behind a lock), so it may as well use
    // the cores: on 2 cores, 2 threads take a 10 s narration from 1.0 s to 0.8 s.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    // The tensors grow with the sentence, and ONNX Runtime's arena grows by powers of two: kept
    // for the process, one long sentence held 100+ MB more (talking photo: 471 vs ~330 MB
    // peaks). Each run shrinks it back (see `run`); without an arena the voice took 15% longer.
    // Graph optimizations are off: they took 0.28 s of each process's first narration to load
    // the voice (0.09 s without) and made no sentence faster (0.158 s either way).
    let session =
        crate::open_session_mapped(name, "piper", &format!("{name}.onnx"), threads, GraphOptimizationLevel::Disable)?;
    Ok(Voice {
        session: Mutex::new(session),
        ids,
        sample_rate: cfg.audio.sample_rate,
        espeak_voice: cfg.espeak.voice,
        inference: cfg.inference.unwrap_or(InferenceConfig { noise_scale: 0.667, length_scale: 1.0, noise_w: 0.8 }),
    })
}

impl Voice {
    /// Phoneme ids the way Piper was trained: `^`, each phoneme followed by the pad `_`, `$`.
    fn phoneme_ids(&self, ipa: &str) -> Vec<i64> {
        let mut out = self.ids[&'^'].clone();
        out.extend(&self.ids[&'_']);
        for c in ipa.chars() {
            if let Some(id) = self.ids.get(&c) {
                out.extend(id);
                out.extend(&self.ids[&'_']);
            }
        }
        out.extend(&self.ids[&'$']);
        out
    }

    fn run(&self, ids: Vec<i64>, length_scale: f32) -> Result<Vec<f32>, TtsError> {
        let err = |e: ort::Error| TtsError::Engine(format!("piper: {e}"));
        let n = ids.len();
        let input = Tensor::from_array(([1usize, n], ids)).map_err(err)?;
        let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
        let i = self.inference;
        let scales = Tensor::from_array(([3usize], vec![i.noise_scale, length_scale, i.noise_w])).map_err(err)?;
        let mut session = self.session.lock().expect("piper session");
        // The arena gives its unused chunks back at the end of each run: its speed within a
        // run, without keeping the largest sentence's memory for the rest of the process.
        let mut options = ort::session::RunOptions::new().map_err(err)?;
        options.set("memory.enable_memory_arena_shrinkage", "cpu:0").map_err(err)?;
        let outputs = session
            .run_with_options(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales], &options)
            .map_err(err)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        Ok(audio.to_vec())
    }
}

impl SpeechEngine for Piper {
    fn name(&self) -> &'static str {
        "piper"
    }

    fn version(&self) -> String {
        // Voice files are part of the cache key through their names and sizes.
        let files: Vec<String> = self
            .names()
            .iter()
            .map(|n| {
                let len = std::fs::metadata(self.dir.join(format!("{n}.onnx"))).map(|m| m.len()).unwrap_or(0);
                format!("{n}:{len}")
            })
            .collect();
        format!("piper-2 ({})", files.join(","))
    }

    fn voices(&self) -> Result<Vec<VoiceInfo>, TtsError> {
        Ok(self
            .names()
            .into_iter()
            .map(|name| {
                let lang = name.split('-').next().unwrap_or("").replace('_', "-").to_ascii_lowercase();
                VoiceInfo { name, languages: vec![lang], gender: String::new() }
            })
            .collect())
    }

    fn has_voice(&self, voice: &str) -> bool {
        self.names().iter().any(|n| n == voice)
    }

    fn native_pitch(&self) -> bool {
        false
    }

    fn synthesize(&self, req: &TtsRequest) -> Result<TtsAudio, TtsError> {
        if req.text.trim().is_empty() {
            return Err(TtsError::EmptyText);
        }
        let voice = self.voice(req.voice)?;
        let speed = if req.speed.is_finite() && req.speed > 0.0 { req.speed.clamp(0.5, 2.5) } else { 1.0 };
        // One inference per sentence, as Piper's own player does: the model's working memory
        // grows with the length of what it speaks, so a long narration costs no more memory
        // than its longest sentence; each sentence's words are timed within its own sound.
        let pause = (voice.sample_rate as f64 * SENTENCE_SILENCE_S) as usize;
        let mut audio: Vec<f32> = vec![];
        let mut spoken: Vec<(usize, usize, std::ops::Range<usize>)> = vec![];
        for (a, b) in sentences_of(req.text) {
            let clauses = phonemize_ipa(&req.text[a..b], &voice.espeak_voice)?;
            if clauses.is_empty() {
                continue;
            }
            let ids = voice.phoneme_ids(&clauses.join(" "));
            let sound = voice.run(ids, voice.inference.length_scale / speed)?;
            if !spoken.is_empty() {
                audio.resize(audio.len() + pause, 0.0);
            }
            spoken.push((a, b, audio.len()..audio.len() + sound.len()));
            audio.extend_from_slice(&sound);
        }
        // Peak-normalise to -1 dBFS like Piper's own player; loudness is set later for the mix.
        let peak = audio.iter().fold(0.0f32, |m, s| m.max(s.abs())).max(0.01);
        let gain = 0.89 / peak;
        let samples: Vec<i16> =
            audio.iter().map(|s| (s * gain * 32767.0).round().clamp(-32768.0, 32767.0) as i16).collect();
        let rate = voice.sample_rate;
        let mut words = vec![];
        for (a, b, range) in spoken {
            let offset = range.start as f64 / rate as f64;
            for mut w in word_timings(&req.text[a..b], &voice.espeak_voice, &samples[range], rate)? {
                w.start += offset;
                w.end += offset;
                w.char_start += a;
                w.char_end += a;
                words.push(w);
            }
        }
        Ok(TtsAudio { sample_rate: rate, samples, words })
    }
}

/// Silence between two sentences (Piper's own default).
const SENTENCE_SILENCE_S: f64 = 0.2;
/// A sentence longer than this (bytes) is cut at its last space before it, so no run of text
/// without full stops makes one huge inference.
const MAX_SENTENCE_BYTES: usize = 400;

/// Byte ranges of `text`'s sentences: each ends after `.`, `!`, `?` or `…` (with any closing
/// quotes or brackets) followed by whitespace, or at the end, and is at most
/// [`MAX_SENTENCE_BYTES`] long where a space allows; whitespace between them is left out.
fn sentences_of(text: &str) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut start = None::<usize>;
    let mut last_space = None::<usize>;
    let mut ended = false;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let push = |a: usize, b: usize, out: &mut Vec<(usize, usize)>| {
        if !text[a..b].trim().is_empty() {
            out.push((a, b));
        }
    };
    for &(i, c) in &chars {
        if c.is_whitespace() {
            if let Some(a) = start {
                if ended {
                    push(a, i, &mut out);
                    start = None;
                    ended = false;
                    last_space = None;
                    continue;
                }
                last_space = Some(i);
            }
            continue;
        }
        let a = *start.get_or_insert(i);
        if i + c.len_utf8() - a > MAX_SENTENCE_BYTES
            && let Some(cut) = last_space.filter(|&s| s > a)
        {
            push(a, cut, &mut out);
            start = Some(text[cut..].find(|ch: char| !ch.is_whitespace()).map_or(i, |k| cut + k));
            last_space = None;
        }
        match c {
            '.' | '!' | '?' | '…' => ended = true,
            '"' | '\'' | ')' | ']' | '”' | '’' | '»' => {}
            _ => ended = false,
        }
    }
    if let Some(a) = start {
        push(a, text.len(), &mut out);
    }
    out
}

/// Words of `text` with byte offsets, as subtitles use them.
fn words_of(text: &str) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// Each word gets a share of the voiced span (first to last sample above -40 dBFS) in
/// proportion to its phoneme count.
fn word_timings(text: &str, espeak_voice: &str, samples: &[i16], rate: u32) -> Result<Vec<WordTiming>, TtsError> {
    let spans = words_of(text);
    if spans.is_empty() || samples.is_empty() {
        return Ok(vec![]);
    }
    let mut weights = vec![];
    for &(s, e) in &spans {
        let ipa: usize = phonemize_ipa(&text[s..e], espeak_voice)?.iter().map(|c| c.chars().count()).sum();
        weights.push(ipa.max(1) as f64);
    }
    let threshold = (32767.0 * 0.01) as i16;
    let first = samples.iter().position(|s| s.abs() > threshold).unwrap_or(0);
    let last = samples.iter().rposition(|s| s.abs() > threshold).unwrap_or(samples.len() - 1).max(first);
    let (t0, t1) = (first as f64 / rate as f64, (last + 1) as f64 / rate as f64);
    let total: f64 = weights.iter().sum();
    let mut t = t0;
    let mut out = vec![];
    for (&(s, e), w) in spans.iter().zip(&weights) {
        let d = (t1 - t0) * w / total;
        out.push(WordTiming { word: text[s..e].to_string(), start: t, end: t + d, char_start: s, char_end: e });
        t += d;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_end_at_stops_followed_by_space_and_long_ones_are_cut_at_a_space() {
        let t = "Hello! I am a photo. Is 3.5 big? \"Yes.\" Done";
        let got: Vec<&str> = sentences_of(t).into_iter().map(|(a, b)| &t[a..b]).collect();
        assert_eq!(got, ["Hello!", "I am a photo.", "Is 3.5 big?", "\"Yes.\"", "Done"]);
        assert!(sentences_of("   ").is_empty());
        let long = "word ".repeat(200);
        let parts = sentences_of(&long);
        assert!(parts.len() >= 3, "{parts:?}");
        assert!(parts.iter().all(|&(a, b)| b - a <= MAX_SENTENCE_BYTES && !long[a..b].starts_with(' ')), "{parts:?}");
        let words: usize = parts.iter().map(|&(a, b)| long[a..b].split_whitespace().count()).sum();
        assert_eq!(words, 200, "no word lost at the cuts");
    }

    #[test]
    fn words_and_offsets() {
        assert_eq!(words_of("  Hello,  big world "), vec![(2, 8), (10, 13), (14, 19)]);
        assert!(words_of("   ").is_empty());
    }

    #[test]
    fn timings_cover_the_voiced_span_in_order() {
        let rate = 1000;
        let mut samples = vec![0i16; 2000];
        for s in &mut samples[500..1500] {
            *s = 10_000;
        }
        let w = word_timings("a longer word", "en-us", &samples, rate).unwrap();
        assert_eq!(w.len(), 3);
        assert!((w[0].start - 0.5).abs() < 1e-9 && (w[2].end - 1.5).abs() < 1e-9, "{w:?}");
        assert!(w.windows(2).all(|p| (p[0].end - p[1].start).abs() < 1e-9));
        assert!(w[1].end - w[1].start > w[0].end - w[0].start, "longer words take longer");
    }

    /// Needs `scripts/models.sh` (CI runs it): real speech of a plausible length.
    #[test]
    fn joe_speaks_a_sentence() {
        let piper = Piper::discover().expect("models installed by scripts/models.sh");
        let text = "Reelsmith renders talking photos on your own machine.";
        let a = piper.synthesize(&TtsRequest::new(text, "en_US-joe-medium")).unwrap();
        let secs = a.duration();
        // ~8 words at 2-4 words/s.
        assert!((1.8..6.0).contains(&secs), "{secs} s");
        assert_eq!(a.sample_rate, 22050);
        assert_eq!(a.words.len(), 8);
        assert!(a.words.last().unwrap().end <= secs + 1e-6);
        // Speech: loud frames and quiet frames both occur (not noise, not silence).
        let frames: Vec<f64> = a
            .samples
            .chunks(441)
            .map(|c| (c.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / c.len() as f64).sqrt())
            .collect();
        let loud = frames.iter().filter(|&&r| r > 2000.0).count();
        let quiet = frames.iter().filter(|&&r| r < 300.0).count();
        assert!(loud > frames.len() / 4 && quiet > 2, "loud {loud} quiet {quiet} of {}", frames.len());
        // Faster speech is shorter.
        let fast = piper.synthesize(&TtsRequest { speed: 1.5, ..TtsRequest::new(text, "en_US-joe-medium") }).unwrap();
        assert!(fast.duration() < secs * 0.85, "{} vs {secs}", fast.duration());
        assert!(matches!(piper.synthesize(&TtsRequest::new(text, "en_US-nobody")), Err(TtsError::UnknownVoice(_))));
    }

    /// Sentences are spoken one by one: the words keep their places in the text and in time,
    /// and the second sentence starts after the first one's sound and the pause.
    #[test]
    fn joe_speaks_sentence_by_sentence_with_words_in_order() {
        let piper = Piper::discover().expect("models installed by scripts/models.sh");
        let text = "Hello there. This is the second sentence!";
        let one = piper.synthesize(&TtsRequest::new("Hello there.", "en_US-joe-medium")).unwrap();
        let both = piper.synthesize(&TtsRequest::new(text, "en_US-joe-medium")).unwrap();
        let w = &both.words;
        assert_eq!(w.len(), 7, "{w:?}");
        assert_eq!(&text[w[2].char_start..w[2].char_end], "This");
        assert!(w.windows(2).all(|p| p[0].end <= p[1].start + 1e-9), "{w:?}");
        // The first sentence alone lasts about as long as its part of the whole.
        assert!(w[2].start >= one.duration() * 0.7 + SENTENCE_SILENCE_S * 0.5, "{} vs {}", w[2].start, one.duration());
        assert!(w[1].end <= one.duration() * 1.3, "{} vs {}", w[1].end, one.duration());
    }
}
