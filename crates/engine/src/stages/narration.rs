//! Stage `narration`: each scene's speech (synthesized, a recording, or a video clip's own
//! sound) as 48 kHz mono samples in the cache, with word timings for subtitles and lip-sync.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reelsmith_media::audio::{self, MIX_RATE};
use reelsmith_media::ffmpeg;
use reelsmith_media::tts::{SpeechEngine, TtsRequest, WordTiming};
use reelsmith_spec::{Narration, Spec};
use serde::Serialize;

use super::inputs::Inputs;
use super::{Counts, MAX_NARRATION_SECONDS, Render};
use crate::cache::{self, Key};
use crate::stage::Stage;
use crate::{Engine, RenderError};

/// A scene's narration, ready to place: 48 kHz mono raw f32 in the cache (read block by block
/// when mixing, never held whole) and word timings (seconds from its start).
pub(super) struct Speech {
    pub(super) key: Key,
    pub(super) path: PathBuf,
    pub(super) frames: u64,
    pub(super) words: Vec<WordTiming>,
    /// Integrated loudness (LUFS; `Some(None)` for silence) as measured when the entry was
    /// made, so a render does not read and measure every cached narration again; `None` in
    /// entries made before it was recorded.
    pub(super) loudness: Option<Option<f64>>,
}

impl Speech {
    pub(super) fn seconds(&self) -> f64 {
        self.frames as f64 / MIX_RATE as f64
    }
}

/// Beside `speech.f32`: its integrated loudness, JSON (`null` for silence).
const LOUDNESS_FILE: &str = "loudness.json";

/// Writes mono speech and its loudness.
fn write_f32(path: &Path, samples: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    fs::write(path, bytes)?;
    let loudness = audio::integrated_loudness(samples, 1, MIX_RATE);
    fs::write(path.with_file_name(LOUDNESS_FILE), serde_json::to_vec(&loudness).expect("a number serialises"))
}

#[derive(Serialize)]
enum NarrationKey<'a> {
    Speech {
        engine: &'a str,
        version: String,
        voice: &'a str,
        speed: f32,
        pitch: f32,
        text: &'a str,
        /// How speech reaches the mix rate (in process since the FFmpeg resampler was dropped).
        resampler: &'static str,
    },
    Recording {
        file: String,
        speed: f32,
        pitch: f32,
        transcript: Option<&'a str>,
        // Absent from keys made before word times existed: those entries stay valid.
        #[serde(skip_serializing_if = "Option::is_none")]
        word_times: Option<&'a [[f64; 2]]>,
    },
    ClipSound {
        file: String,
        start: f64,
        end: Option<f64>,
    },
}

pub(super) fn narration(r: &Render<'_>, i: usize, runs: &AtomicU64) -> Result<Option<Speech>, RenderError> {
    let (engine, counts, spec, inputs) = (r.engine, &r.counts, r.spec, &r.inputs);
    let Some(n) = &spec.scenes[i].narration else {
        return clip_sound(engine, counts, spec, i, inputs, runs);
    };
    let voice = spec.voice.with(&n.voice);
    let path = format!("scenes[{i}].narration");
    let params = match (&n.text, &n.audio) {
        (Some(text), _) => NarrationKey::Speech {
            engine: speech_engine(engine, &voice.engine)?.name(),
            version: speech_engine(engine, &voice.engine)?.version(),
            voice: &voice.name,
            speed: voice.speed,
            pitch: voice.pitch,
            text,
            resampler: "rubato-fft",
        },
        (None, Some(file)) => NarrationKey::Recording {
            file: inputs.hash(file),
            speed: voice.speed,
            pitch: voice.pitch,
            transcript: n.transcript.as_deref(),
            word_times: n.word_times.as_deref(),
        },
        (None, None) => return Ok(None),
    };
    let key = cache::key(Stage::Narration.cache_name(), &params);
    let (dir, _) = counts.cached(engine, Stage::Narration, &key, |dir| {
        runs.fetch_add(1, Ordering::Relaxed);
        let (samples, words) = match (&n.text, &n.audio) {
            (Some(text), _) => {
                synthesize(speech_engine(engine, &voice.engine)?, text, &voice.name, voice.speed, voice.pitch, dir)?
            }
            (_, Some(file)) => recording(n, &inputs.path(file), voice.speed, voice.pitch)
                .map_err(|e| RenderError::at(format!("{path}.audio"), e.to_string()))?,
            _ => unreachable!("checked above"),
        };
        write_f32(&dir.join("speech.f32"), &samples)?;
        fs::write(dir.join("words.json"), serde_json::to_vec(&words).expect("words serialise"))?;
        Ok(())
    })?;
    read_speech(&dir, key, &path, "the narration has no audio").map(Some)
}

/// A narration cache entry (`speech.f32` and `words.json`), refused with `empty` at `path`
/// when it holds no audio.
fn read_speech(dir: &Path, key: Key, path: &str, empty: &str) -> Result<Speech, RenderError> {
    let audio = dir.join("speech.f32");
    let frames = fs::metadata(&audio)?.len() / 4;
    if frames == 0 {
        return Err(RenderError::at(path, empty));
    }
    let words: Vec<WordTiming> =
        serde_json::from_slice(&fs::read(dir.join("words.json"))?).map_err(std::io::Error::other)?;
    let loudness = fs::read(dir.join(LOUDNESS_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
    Ok(Speech { key, path: audio, frames, words, loudness })
}

/// A scene's clip sound, as a narration (placed, ducked and normalised like one).
fn clip_sound(
    engine: &Engine,
    counts: &Counts<'_>,
    spec: &Spec,
    i: usize,
    inputs: &Inputs,
    runs: &AtomicU64,
) -> Result<Option<Speech>, RenderError> {
    let Some(c) = spec.scenes[i].video.as_ref().filter(|c| c.audio) else {
        return Ok(None);
    };
    // Validation made sure the clip has sound.
    let path = format!("scenes[{i}].video.audio");
    let key = cache::key(
        Stage::Narration.cache_name(),
        &NarrationKey::ClipSound { file: inputs.hash(&c.file), start: c.start, end: c.end },
    );
    let (dir, _) = counts.cached(engine, Stage::Narration, &key, |dir| {
        runs.fetch_add(1, Ordering::Relaxed);
        let trim = match c.end {
            Some(end) => format!("atrim=start={:.4}:end={end:.4},asetpts=PTS-STARTPTS", c.start),
            None => format!("atrim=start={:.4},asetpts=PTS-STARTPTS", c.start),
        };
        let samples = ffmpeg::decode_audio(&inputs.path(&c.file), MIX_RATE, 1, Some(&trim), MAX_NARRATION_SECONDS)
            .map_err(|e| RenderError::at(&path, e.to_string()))?;
        write_f32(&dir.join("speech.f32"), &samples)?;
        fs::write(dir.join("words.json"), b"[]")?;
        Ok(())
    })?;
    read_speech(&dir, key, &path, &format!("{} has no sound in the part that plays", c.file)).map(Some)
}

fn speech_engine<'a>(engine: &'a Engine, name: &str) -> Result<&'a Arc<dyn SpeechEngine>, RenderError> {
    engine.voices.get(name).ok_or_else(|| RenderError::Speech(engine.voices.why_not(name)))
}

fn synthesize(
    speech: &Arc<dyn SpeechEngine>,
    text: &str,
    voice: &str,
    speed: f32,
    pitch: f32,
    dir: &Path,
) -> Result<(Vec<f32>, Vec<WordTiming>), RenderError> {
    let audio =
        speech.synthesize(&TtsRequest { text, voice, speed, pitch }).map_err(|e| RenderError::Speech(e.to_string()))?;
    // An engine without its own pitch control gets a tempo-preserving shift from FFmpeg's
    // rubberband filter (timings stay valid); otherwise the speech is only resampled to the mix
    // rate, in this process (no FFmpeg start per narration).
    let shift = (!speech.native_pitch() && (pitch - 1.0).abs() > 1e-3).then(|| format!("rubberband=pitch={pitch:.4}"));
    let samples = match shift {
        Some(filter) => {
            let wav = dir.join("speech.wav");
            audio.write_wav(&wav)?;
            let samples = ffmpeg::decode_audio(&wav, MIX_RATE, 1, Some(&filter), MAX_NARRATION_SECONDS)?;
            fs::remove_file(&wav)?;
            samples
        }
        None => {
            let max = (audio.sample_rate as f64 * MAX_NARRATION_SECONDS) as usize;
            let input: Vec<f32> = audio.samples.iter().take(max).map(|&s| s as f32 / 32768.0).collect();
            reelsmith_media::audio::resample(&input, audio.sample_rate, MIX_RATE)?
        }
    };
    Ok((samples, display_words(text, audio.words)))
}

/// Gives each timed word back the punctuation around it in the text (`Hello,` not `Hello`),
/// splitting the text between two words at its last whitespace.
fn display_words(text: &str, mut words: Vec<WordTiming>) -> Vec<WordTiming> {
    let n = words.len();
    let mut bounds = Vec::with_capacity(n + 1);
    bounds.push(0);
    for i in 1..n {
        let (end, next) = (words[i - 1].char_end.min(text.len()), words[i].char_start.min(text.len()));
        let split = if end <= next && text.is_char_boundary(end) && text.is_char_boundary(next) {
            text[end..next].rfind(char::is_whitespace).map_or(next, |k| end + k)
        } else {
            next
        };
        bounds.push(split);
    }
    bounds.push(text.len());
    for (i, w) in words.iter_mut().enumerate() {
        let (a, b) = (bounds[i], bounds[i + 1].max(bounds[i]));
        if let Some(s) = text.get(a..b).map(str::trim).filter(|s| !s.is_empty()) {
            w.word = s.to_string();
        }
    }
    words
}

/// Decodes a recording (tempo and pitch changed by FFmpeg filters) and times the transcript's
/// words across the speech by their length.
fn recording(n: &Narration, file: &Path, speed: f32, pitch: f32) -> Result<(Vec<f32>, Vec<WordTiming>), RenderError> {
    let mut filters = vec![];
    if (pitch - 1.0).abs() > 1e-3 {
        filters.push(format!("rubberband=pitch={pitch:.4}"));
    }
    if (speed - 1.0).abs() > 1e-3 {
        filters.push(format!("atempo={speed:.4}"));
    }
    let filter = (!filters.is_empty()).then(|| filters.join(","));
    let samples = ffmpeg::decode_audio(file, MIX_RATE, 1, filter.as_deref(), MAX_NARRATION_SECONDS + 1.0)?;
    if samples.len() as f64 / MIX_RATE as f64 > MAX_NARRATION_SECONDS {
        return Err(RenderError::at("narration.audio", format!("recording longer than {MAX_NARRATION_SECONDS} s")));
    }
    if samples.is_empty() {
        return Err(RenderError::at("narration.audio", "the recording has no audio stream or is empty"));
    }
    let words = match (n.transcript.as_deref(), n.word_times.as_deref()) {
        (Some(t), Some(times)) => timed_words(t, times, speed),
        (Some(t), None) => spread_words(t, &samples),
        (None, _) => vec![],
    };
    Ok((samples, words))
}

/// The transcript's words at the times given for them (validation matched one pair to each
/// word), scaled by the tempo the recording is played at.
fn timed_words(text: &str, times: &[[f64; 2]], speed: f32) -> Vec<WordTiming> {
    let tempo = f64::from(speed.max(0.01));
    word_spans(text)
        .into_iter()
        .zip(times)
        .map(|((a, b), [start, end])| WordTiming {
            word: text[a..b].to_string(),
            start: start / tempo,
            end: end / tempo,
            char_start: a,
            char_end: b,
        })
        .collect()
}

/// Byte spans of the whitespace-separated words of `text`.
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = vec![];
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

/// Word timings for a transcript: spread over the span where the recording is audible,
/// each word's share proportional to its length.
fn spread_words(text: &str, samples: &[f32]) -> Vec<WordTiming> {
    let loud = |s: &f32| s.abs() > 0.02;
    let first = samples.iter().position(loud).unwrap_or(0) as f64 / MIX_RATE as f64;
    let last = samples.iter().rposition(loud).map_or(samples.len(), |p| p + 1) as f64 / MIX_RATE as f64;
    let spans = word_spans(text);
    let total: usize = spans.iter().map(|(a, b)| text[*a..*b].chars().count() + 1).sum();
    let mut t = first;
    let per = (last - first).max(0.0) / total.max(1) as f64;
    spans
        .into_iter()
        .map(|(a, b)| {
            let len = (text[a..b].chars().count() + 1) as f64 * per;
            let w = WordTiming { word: text[a..b].to_string(), start: t, end: t + len, char_start: a, char_end: b };
            t += len;
            w
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(word: &str, a: usize, b: usize) -> WordTiming {
        WordTiming { word: word.into(), start: 0.0, end: 0.0, char_start: a, char_end: b }
    }

    #[test]
    fn an_entry_records_the_loudness_a_render_would_measure() {
        let dir = tempfile::tempdir().unwrap();
        let tone: Vec<f32> = (0..MIX_RATE * 2)
            .map(|i| 0.2 * (i as f32 * 440.0 * std::f32::consts::TAU / MIX_RATE as f32).sin())
            .collect();
        write_f32(&dir.path().join("speech.f32"), &tone).unwrap();
        fs::write(dir.path().join("words.json"), b"[]").unwrap();
        let speech = read_speech(dir.path(), Key([0; 32]), "scenes[0].narration", "empty").unwrap();
        let measured = audio::file_loudness(&speech.path, 1).unwrap();
        assert!(measured.is_some_and(|l| (-30.0..-10.0).contains(&l)), "{measured:?}");
        assert_eq!(speech.loudness, Some(measured), "recorded when made");
        // Silence records as silence, not as a missing record.
        write_f32(&dir.path().join("speech.f32"), &[0.0; 4800]).unwrap();
        let silent = read_speech(dir.path(), Key([0; 32]), "scenes[0].narration", "empty").unwrap();
        assert_eq!(silent.loudness, Some(None));
        // An entry from before loudness was recorded is measured by the mix instead.
        fs::remove_file(dir.path().join(LOUDNESS_FILE)).unwrap();
        assert_eq!(read_speech(dir.path(), Key([0; 32]), "scenes[0].narration", "empty").unwrap().loudness, None);
    }

    #[test]
    fn display_words_keep_their_punctuation() {
        let text = "\"Hello,\" she said — okay?";
        let words = vec![w("Hello", 1, 6), w("she", 9, 12), w("said", 13, 17), w("okay", 22, 26)];
        let got: Vec<String> = display_words(text, words).into_iter().map(|w| w.word).collect();
        assert_eq!(got, ["\"Hello,\"", "she", "said —", "okay?"]);
    }

    #[test]
    fn spread_words_cover_the_audible_span() {
        let mut samples = vec![0.0f32; MIX_RATE as usize * 3];
        for s in &mut samples[MIX_RATE as usize..MIX_RATE as usize * 2] {
            *s = 0.5;
        }
        let words = spread_words("one two three", &samples);
        assert_eq!(words.len(), 3);
        assert!((words[0].start - 1.0).abs() < 0.01);
        assert!((words[2].end - 2.0).abs() < 0.01);
        assert!(words[1].start > words[0].start && words[2].start > words[1].start);
    }

    #[test]
    fn given_word_times_are_kept_and_follow_the_tempo() {
        let text = "Lava  flows, slowly.";
        let words = timed_words(text, &[[0.1, 0.5], [0.6, 1.0], [1.2, 2.0]], 2.0);
        let got: Vec<(&str, f64, f64)> = words.iter().map(|w| (w.word.as_str(), w.start, w.end)).collect();
        assert_eq!(got, [("Lava", 0.05, 0.25), ("flows,", 0.3, 0.5), ("slowly.", 0.6, 1.0)]);
        assert_eq!((words[1].char_start, words[1].char_end), (6, 12));
    }
}
