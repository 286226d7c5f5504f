//! Stage `audio`: the soundtrack, with narrations placed on the timeline (each brought to the
//! loudness target on its own), music ducked under them, a peak limiter, encoded to AAC.
//!
//! The soundtrack is cut into spans, one under each video segment (at the AAC frame nearest
//! the segment's start), and each span is encoded on its own and cached by a hash of the sound
//! it holds. Spans join by plain concatenation, so an edit re-encodes only the spans whose
//! sound it changes, and a live stream can send each segment's sound with its pictures.
//!
//! Each scene's sound is laid out from the AAC frame boundary nearest the scene's first picture
//! (its origin), not from the picture itself: an edit that makes one scene longer or shorter
//! then moves every later scene's sound by whole AAC frames, so their spans hold the same
//! samples as before and come from the cache (a batch row that changes a name re-encodes only
//! the sound of its own scene). The price is that a scene's sound is off its pictures by at
//! most half an AAC frame (10.7 ms at 48 kHz), far below what anyone hears as out of sync.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use reelsmith_media::aac::{self, AAC_FRAME, AacSpanEncoder, AacStretch};
use reelsmith_media::audio::{self, Clip, Limiter, MIX_CHANNELS, MIX_RATE, MixPlan};
use reelsmith_media::ffmpeg;
use reelsmith_spec::{Spec, limits};
use serde::{Deserialize, Serialize};

use super::Render;
use super::narration::Speech;
use crate::RenderError;
use crate::cache::{self, Key};
use crate::plan::Timeline;
use crate::stage::Stage;

/// The most channels the soundtrack can have: narration alone is mono (encoding stereo AAC
/// costs up to twice the CPU for the same sound); music may make it stereo, unless its two
/// channels carry the same sound (see [`identical_channels`]).
fn channels(spec: &Spec) -> u16 {
    if spec.music.is_some() { MIX_CHANNELS } else { 1 }
}

/// Whether decoded music (interleaved stereo f32) has the same sample in both channels
/// throughout: a mono file, or a stereo one carrying mono. Narration is centred, so such music
/// makes a soundtrack whose channels are equal too, which is encoded as mono: the same sound,
/// and FFmpeg's AAC encoder is at its slowest on equal channels (its mid/side search).
fn identical_channels(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut filled = 0;
    loop {
        let n = file.read(&mut buf[filled..])?;
        filled += n;
        let whole = filled / 8 * 8;
        if !buf[..whole].chunks_exact(8).all(|pair| pair[..4] == pair[4..]) {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
}

/// Samples encoded before and after a span's own, so the frames at its edges are encoded with
/// the sound around them (AAC frames overlap their neighbours by one frame).
const CONTEXT: u64 = 2 * AAC_FRAME;
/// Samples the limiter runs before a span's context, so its gain there is what it would be in
/// one pass over the whole soundtrack (it recovers over ~80 ms).
const LIMITER_WARMUP: u64 = 12 * AAC_FRAME;
/// A -1 dBFS ceiling keeps AAC's overshoot from clipping.
const CEILING: f32 = 0.89;
/// Most a narration is raised to reach the target (a near-silent clip stays near silent).
const MAX_GAIN_DB: f64 = 24.0;

#[derive(Serialize)]
struct MixKey<'a> {
    /// The soundtrack's layout: spans, each narration normalised on its own, scenes' sound
    /// from their AAC-aligned origins.
    format: &'static str,
    channels: u16,
    narrations: Vec<(String, u64)>,
    music: Option<(String, &'a reelsmith_spec::Music)>,
    frames: u64,
    fps: u32,
    loudness: Option<f32>,
    bitrate: Option<u32>,
    spans: &'a [u64],
}

/// What the soundtrack's cache entry records besides the joined file.
#[derive(Serialize, Deserialize)]
struct Recorded {
    /// Each span's cache entry (hex keys, scoped), in order.
    spans: Vec<String>,
    loudness: Option<f64>,
}

/// The soundtrack: one ADTS file starting with the encoder's priming frame, and each segment's
/// span of it.
pub(super) struct Soundtrack {
    pub(super) path: PathBuf,
    /// Each span's file (when asked for, or just made).
    pub(super) spans: Vec<PathBuf>,
    pub(super) loudness: Option<f64>,
    pub(super) spans_encoded: u64,
}

/// Sample of the mix at video frame `frame` counted from the start, without alignment.
fn to_samples(tl: &Timeline, frame: u64) -> u64 {
    (frame as f64 / tl.fps as f64 * MIX_RATE as f64).round() as u64
}

/// The AAC frame boundary nearest `sample`.
fn nearest_aac_frame(sample: u64) -> u64 {
    (sample + AAC_FRAME / 2) / AAC_FRAME * AAC_FRAME
}

/// Where each scene's sound starts in the soundtrack: the AAC frame boundary nearest its first
/// picture (see the module's notes).
pub(super) fn scene_origins(tl: &Timeline) -> Vec<u64> {
    tl.scenes.iter().map(|s| nearest_aac_frame(to_samples(tl, s.start))).collect()
}

/// The soundtrack sample that goes with video frame `frame`: counted from the origin of the
/// last scene begun by then, so it moves with that scene.
fn sound_at(tl: &Timeline, origins: &[u64], frame: u64) -> u64 {
    let owner = tl.scenes.partition_point(|s| s.start <= frame);
    match owner.checked_sub(1) {
        Some(i) => origins[i] + to_samples(tl, frame - tl.scenes[i].start),
        None => to_samples(tl, frame),
    }
}

/// Where each segment's sound starts, in samples: the AAC frame boundary nearest the
/// segment's first picture (counted from its scene's origin), and the soundtrack's end last.
pub(super) fn span_bounds(tl: &Timeline) -> Vec<u64> {
    let origins = scene_origins(tl);
    let end = sound_at(tl, &origins, tl.total_frames);
    let last_whole = end / AAC_FRAME * AAC_FRAME;
    let mut bounds = vec![0];
    let mut frame = 0;
    for seg in &tl.segments[..tl.segments.len().saturating_sub(1)] {
        frame += seg.frames();
        let nearest = nearest_aac_frame(sound_at(tl, &origins, frame));
        let prev = *bounds.last().expect("starts with 0");
        bounds.push(nearest.clamp(prev, last_whole));
    }
    bounds.push(end);
    bounds
}

/// How many AAC frames of the joined soundtrack go with each segment (the first also has the
/// priming frame): what each span keeps.
pub(super) fn span_frames(bounds: &[u64]) -> Vec<usize> {
    (0..bounds.len() - 1)
        .map(|k| {
            let (_, _, keep) = stretch(bounds, k);
            ((keep.end - keep.start) / AAC_FRAME) as usize
        })
        .collect()
}

/// The stretch encoded for span `k` of `bounds`: its first sample (before the span, for
/// context), its length and the samples kept (from the stretch's start). The first span keeps
/// one frame more, the encoder's priming frame, which the MP4's edit list skips.
fn stretch(bounds: &[u64], k: usize) -> (i64, u64, std::ops::Range<u64>) {
    let (from, to) = (bounds[k], bounds[k + 1]);
    let to_whole = to.div_ceil(AAC_FRAME) * AAC_FRAME;
    let start = from as i64 - CONTEXT as i64;
    let len = CONTEXT + (to_whole - from) + CONTEXT;
    let keep_from = if k == 0 { CONTEXT - AAC_FRAME } else { CONTEXT };
    (start, len, keep_from..CONTEXT + (to_whole - from))
}

/// The mix of the scenes' narrations and the music, with each narration's gain set, and the
/// channels the soundtrack needs (2 only for music whose channels differ).
fn mix_plan(
    r: &Render<'_>,
    speech: &[Option<Speech>],
    starts: &[u64],
    frames: u64,
) -> Result<(MixPlan, u16), RenderError> {
    let (engine, counts, spec, inputs) = (r.engine, &r.counts, r.spec, &r.inputs);
    let target = spec.audio.loudness.map(f64::from);
    let gain_to_target = |loudness: Option<f64>| match (target, loudness) {
        (Some(t), Some(l)) => 10f64.powf((t - l).min(MAX_GAIN_DB) / 20.0) as f32,
        _ => 1.0,
    };
    let mut plan = MixPlan { frames, clips: vec![], music: None };
    let mut channels = 1;
    for (s, &start) in speech.iter().zip(starts) {
        if let Some(s) = s {
            let loudness = match (target, s.loudness) {
                (None, _) => None,
                (Some(_), Some(recorded)) => recorded,
                (Some(_), None) => audio::file_loudness(&s.path, 1)?,
            };
            plan.clips.push(Clip { path: s.path.clone(), start, frames: s.frames, gain: gain_to_target(loudness) });
        }
    }
    if let Some(m) = &spec.music {
        // Decoded once to a raw file in the cache, then read block by block.
        let mkey = cache::key(Stage::Music.cache_name(), &inputs.hash(&m.file));
        let (mdir, _) = counts.cached(engine, Stage::Music, &mkey, |d| {
            let out = d.join("music.f32");
            ffmpeg::decode_audio_to_file(
                &inputs.path(&m.file),
                MIX_RATE,
                MIX_CHANNELS,
                limits::MAX_TOTAL_SECONDS,
                &out,
            )
            .map_err(|e| RenderError::at("music.file", e.to_string()))?;
            let stereo = !identical_channels(&out)?;
            fs::write(d.join("channels"), if stereo { "2" } else { "1" })?;
            Ok(())
        })?;
        let path = mdir.join("music.f32");
        channels = match fs::read_to_string(mdir.join("channels")) {
            Ok(c) => c.trim().parse().unwrap_or(MIX_CHANNELS),
            // Decoded before the check was recorded: check now.
            Err(_) if identical_channels(&path)? => 1,
            Err(_) => MIX_CHANNELS,
        };
        let frames = fs::metadata(&path)?.len() / 8;
        if frames == 0 {
            return Err(RenderError::at("music.file", "the music file has no audio"));
        }
        // Music is brought to the target too, then set `volume` below the narration.
        let loudness = if target.is_some() { audio::file_loudness(&path, 2)? } else { None };
        let d = &m.ducking;
        plan.music = Some(audio::Music {
            path,
            frames,
            looped: m.r#loop,
            volume: m.volume * gain_to_target(loudness),
            ducking: d.enabled.then_some(audio::Ducking {
                level: d.level,
                attack: d.attack as f64,
                release: d.release as f64,
            }),
            fade: m.fade as f64,
        });
    }
    Ok((plan, channels))
}

/// Mixes and encodes the soundtrack span by span, encoding only the spans not in the cache.
/// `want_spans`: the caller needs each span's file too (a live stream), not only the whole.
pub(super) fn mixdown(
    r: &Render<'_>,
    tl: &Timeline,
    speech: &[Option<Speech>],
    want_spans: bool,
) -> Result<Soundtrack, RenderError> {
    let (engine, counts, spec, inputs) = (r.engine, &r.counts, r.spec, &r.inputs);
    // Each narration's first sample: its scene's origin plus its lead-in.
    let starts: Vec<u64> = (tl.scenes.iter().zip(scene_origins(tl)))
        .map(|(s, origin)| origin + to_samples(tl, s.narration_frame))
        .collect();
    let bounds = span_bounds(tl);
    let key = cache::key(
        Stage::Audio.cache_name(),
        &MixKey {
            // spans-3: music with equal channels makes a mono soundtrack; spans-4: a mono
            // soundtrack defaults to 128 kbit/s.
            format: "spans-4",
            channels: channels(spec),
            narrations: speech.iter().zip(&starts).filter_map(|(s, &f)| s.as_ref().map(|s| (s.key.hex(), f))).collect(),
            music: spec.music.as_ref().map(|m| (inputs.hash(&m.file), m)),
            frames: tl.total_frames,
            fps: tl.fps,
            loudness: spec.audio.loudness,
            bitrate: spec.audio.bitrate_kbps,
            spans: &bounds,
        },
    );
    // The whole soundtrack is cached under a key made of its inputs (no mixing to find it);
    // its spans are kept by the keys it recorded, for a live stream.
    let mut made: Option<(Vec<PathBuf>, u64)> = None;
    let (dir, _) = counts.cached(engine, Stage::Audio, &key, |dir| {
        let (spans, keys, loudness, encoded) = encode_spans(r, speech, &starts, &bounds)?;
        let mut joined = std::io::BufWriter::new(fs::File::create(dir.join("audio.aac"))?);
        for s in &spans {
            joined.write_all(&fs::read(s)?)?;
        }
        joined.flush()?;
        let recorded = Recorded { spans: keys.iter().map(Key::hex).collect(), loudness };
        fs::write(dir.join("spans.json"), serde_json::to_vec(&recorded).expect("serialises"))?;
        made = Some((spans, encoded));
        Ok(())
    })?;
    let recorded: Recorded = serde_json::from_slice(&fs::read(dir.join("spans.json"))?)
        .map_err(|e| std::io::Error::other(format!("soundtrack record: {e}")))?;
    let (spans, spans_encoded) = match made {
        Some(made) => made,
        None if !want_spans => (vec![], 0),
        None => {
            let spans = recorded
                .spans
                .iter()
                .filter_map(|k| Key::from_hex(k))
                .filter_map(|k| engine.cache.lookup(Stage::AudioSpan.cache_name(), &k))
                .map(|d| d.join("span.aac"))
                .collect();
            (spans, 0)
        }
    };
    Ok(Soundtrack { path: dir.join("audio.aac"), spans, loudness: recorded.loudness, spans_encoded })
}

/// Mixes every span, keys it by its sound, and encodes the ones the cache lacks on one AAC
/// encoder (in this process, on this thread). Returns each span's file and key, the loudness of
/// the whole and how many spans it encoded.
#[allow(clippy::type_complexity)]
fn encode_spans(
    r: &Render<'_>,
    speech: &[Option<Speech>],
    starts: &[u64],
    bounds: &[u64],
) -> Result<(Vec<PathBuf>, Vec<Key>, Option<f64>, u64), RenderError> {
    let (engine, counts, spec) = (r.engine, &r.counts, r.spec);
    let (plan, channels) = mix_plan(r, speech, starts, *bounds.last().expect("bounds end the soundtrack"))?;
    let ducking_spans = plan.speech_spans();
    let work = tempfile::tempdir_in(engine.cache.root().join("tmp"))?;
    let mut meter = audio::LoudnessMeter::stereo()?;
    let mut encoder: Option<AacSpanEncoder> = None;
    let mut todo: Vec<(usize, Key, PathBuf)> = vec![];
    let mut keys = Vec::with_capacity(bounds.len() - 1);
    let mut mix = vec![];
    let mut mono = vec![];
    let mut bytes = Vec::with_capacity(4096);
    let look = Limiter::new(CEILING, MIX_RATE).lookahead() as u64;
    let kbps = spec.audio.bitrate_for(channels);
    for k in 0..bounds.len() - 1 {
        if r.opts.cancelled() {
            return Err(RenderError::Cancelled);
        }
        let (start, len, keep) = stretch(bounds, k);
        // The span's sound and everything that shapes it: limiter warm-up before, look-ahead after.
        let window = LIMITER_WARMUP + len + look;
        mix.resize(window as usize * 2, 0.0);
        plan.render_window(start - LIMITER_WARMUP as i64, &mut mix, &ducking_spans)?;
        let mut h = blake3::Hasher::new();
        h.update(&[channels as u8, (k == 0) as u8]);
        h.update(&kbps.to_le_bytes());
        h.update(aac::aac_coder(kbps).as_bytes());
        for v in [len, keep.start, keep.end, LIMITER_WARMUP, look] {
            h.update(&v.to_le_bytes());
        }
        // In blocks: one hasher call per sample cost more than the mixing.
        for block in mix.chunks(1024) {
            bytes.clear();
            bytes.extend(block.iter().flat_map(|s| s.to_le_bytes()));
            h.update(&bytes);
        }
        let key = cache::key(Stage::AudioSpan.cache_name(), &Key(*h.finalize().as_bytes()).hex());
        let mut limiter = Limiter::new(CEILING, MIX_RATE);
        limiter.process(&mut mix, (LIMITER_WARMUP + len) as usize);
        let body = &mix[LIMITER_WARMUP as usize * 2..(LIMITER_WARMUP + len) as usize * 2];
        // The span's own samples, once each, in order: the loudness of the whole soundtrack.
        let (own_from, own_to) = ((bounds[k] as i64 - start) as usize, (bounds[k + 1] as i64 - start) as usize);
        meter.add(&body[own_from * 2..own_to * 2])?;
        if !engine.cache.contains(&counts.scoped(&key)) {
            let out = work.path().join(format!("{k}.aac"));
            let enc = match &mut encoder {
                Some(e) => e,
                None => encoder.insert(AacSpanEncoder::start(MIX_RATE, channels, kbps)?),
            };
            enc.stretch(AacStretch { samples: len, keep: keep.clone(), out: out.clone() })?;
            let block = if channels == 1 {
                mono.clear();
                mono.extend(body.iter().step_by(2));
                &mono[..]
            } else {
                body
            };
            enc.write(block)?;
            todo.push((k, key, out));
        }
        keys.push(key);
    }
    let encoded = todo.len() as u64;
    if let Some(e) = encoder {
        e.finish()?;
    }
    let mut spans = Vec::with_capacity(keys.len());
    let mut made = todo.into_iter().peekable();
    for (k, key) in keys.iter().enumerate() {
        let fresh = made.next_if(|(i, _, _)| *i == k);
        let (dir, _) = counts.cached(engine, Stage::AudioSpan, key, |dir| match &fresh {
            Some((_, _, out)) => Ok(fs::rename(out, dir.join("span.aac"))?),
            // Evicted since it was looked up: mixed again on the next render.
            None => Err(RenderError::Io(std::io::Error::other("a soundtrack span left the cache mid-render"))),
        })?;
        spans.push(dir.join("span.aac"));
    }
    let keys = keys.iter().map(|k| counts.scoped(k)).collect();
    Ok((spans, keys, meter.integrated(), encoded))
}

/// The scenes' joined soundtrack for the final MP4.
pub(super) fn soundtrack_input(s: &Soundtrack) -> ffmpeg::Soundtrack<'_> {
    ffmpeg::Soundtrack { path: &s.path, rate: MIX_RATE }
}

/// The span files of a soundtrack, or why they are missing.
pub(super) fn span_files(s: &Soundtrack, segments: usize) -> Option<&[PathBuf]> {
    (s.spans.len() == segments).then_some(&s.spans[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Segment;

    #[test]
    fn music_with_equal_channels_is_found_through_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, frames: &[[f32; 2]]| {
            let p = dir.path().join(name);
            fs::write(&p, frames.iter().flatten().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
            p
        };
        // Longer than the reader's buffer, with the one difference near the end.
        let mut frames: Vec<[f32; 2]> = (0..20_000).map(|i| [(i as f32 * 0.01).sin(); 2]).collect();
        assert!(identical_channels(&write("mono.f32", &frames)).unwrap());
        frames[19_990][1] += 0.001;
        assert!(!identical_channels(&write("stereo.f32", &frames)).unwrap());
        assert!(identical_channels(&write("empty.f32", &[])).unwrap());
    }

    #[test]
    fn narration_alone_is_mono_and_music_makes_it_stereo() {
        let spoken = reelsmith_spec::parse(r#"{"version":1,"scenes":[{"duration":1}]}"#).unwrap();
        assert_eq!(channels(&spoken), 1);
        let with_music =
            reelsmith_spec::parse(r#"{"version":1,"music":{"file":"m.mp3"},"scenes":[{"duration":1}]}"#).unwrap();
        assert_eq!(channels(&with_music), MIX_CHANNELS);
    }

    #[test]
    fn spans_start_at_the_aac_frame_nearest_each_segment_and_tile_the_soundtrack() {
        let body = |scene, to| Segment::Body { scene, from: 0, to };
        let fade =
            Segment::Transition { scene: 0, kind: reelsmith_spec::TransitionKind::Crossfade, frames: 6, half: None };
        let tl = Timeline {
            fps: 24,
            total_frames: 102,
            scenes: vec![],
            segments: vec![body(0, 48), fade.clone(), body(1, 48)],
        };
        let b = span_bounds(&tl);
        // 48 frames = 96000 samples = 93.75 AAC frames → 94; 54 frames = 108000 → 105.47 → 105.
        assert_eq!(b, [0, 94 * 1024, 105 * 1024, 204_000]);
        // Each stretch holds whole frames; kept frames cover the span (the first keeps priming).
        let mut covered = vec![];
        for k in 0..3 {
            let (start, len, keep) = stretch(&b, k);
            assert!(len.is_multiple_of(AAC_FRAME) && keep.start.is_multiple_of(AAC_FRAME));
            covered.push((start + keep.start as i64, start + keep.end as i64));
        }
        assert_eq!(covered[0], (-1024, 94 * 1024));
        assert_eq!(covered[1], (94 * 1024, 105 * 1024));
        assert_eq!(covered[2], (105 * 1024, 200 * 1024), "the last frame runs past the end");
        assert_eq!(span_frames(&b), [95, 11, 95]);
        // A segment too short for a frame of its own gets an empty span, never a negative one.
        let tiny =
            Timeline { fps: 24, total_frames: 55, scenes: vec![], segments: vec![body(0, 48), fade, body(1, 1)] };
        let b = span_bounds(&tiny);
        assert!(b.windows(2).all(|w| w[0] <= w[1]), "{b:?}");
    }

    /// Two scenes joined by a crossfade, the first `first` frames long.
    fn two_scenes(first: u64) -> Timeline {
        let span = |start, frames, overlap_in, overlap_out| crate::plan::SceneSpan {
            start,
            frames,
            overlap_in,
            overlap_out,
            narration_frame: 9,
        };
        let fade =
            Segment::Transition { scene: 0, kind: reelsmith_spec::TransitionKind::Crossfade, frames: 6, half: None };
        Timeline {
            fps: 30,
            total_frames: first - 6 + 70,
            scenes: vec![span(0, first, 0, 6), span(first - 6, 70, 6, 0)],
            segments: vec![
                Segment::Body { scene: 0, from: 0, to: first - 6 },
                fade,
                Segment::Body { scene: 1, from: 6, to: 70 },
            ],
        }
    }

    #[test]
    fn a_longer_scene_moves_the_sound_after_it_by_whole_aac_frames() {
        // 30 fps: 1600 samples a frame, so most lengths move the next scene off the AAC grid.
        let base = two_scenes(50);
        let (b0, o0) = (span_bounds(&base), scene_origins(&base));
        for first in [51, 53, 58, 61, 77] {
            let tl = two_scenes(first);
            let (b, o) = (span_bounds(&tl), scene_origins(&tl));
            assert!(o.iter().all(|o| o.is_multiple_of(AAC_FRAME)), "{o:?}");
            // Scene 1's sound is off its first picture by half an AAC frame at most.
            let exact = to_samples(&tl, tl.scenes[1].start) as i64;
            assert!((o[1] as i64 - exact).abs() <= AAC_FRAME as i64 / 2, "{first}: {} vs {exact}", o[1]);
            // Its spans (the fade's and its body's) and the end sit where they did, from its origin:
            // the same samples in the same AAC frames, so the cache has them.
            for k in 1..b.len() {
                assert_eq!(b[k] - o[1], b0[k] - o0[1], "{first}: bound {k} of {b:?} vs {b0:?}");
            }
            assert_eq!(stretch(&b, 2).1, stretch(&b0, 2).1, "{first}: same stretch length");
        }
    }
}
