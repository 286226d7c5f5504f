//! The render pipeline's stages and their orchestration (see the crate docs for the order).
mod audio;
mod canvas;
mod inputs;
mod live;
mod look;
mod narration;
mod segment;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reelsmith_media::audio::MIX_RATE;
use reelsmith_media::ffmpeg::{self, VideoSettings};
use reelsmith_media::frame::Yuv420;
use reelsmith_media::text::TextRenderer;
use reelsmith_spec::{Spec, Validator, limits};

use crate::cache::{self, Key};
use crate::plan::{self, Segment};
use crate::report::{self, Report, StageReport, StageTimer};
use crate::scene::SceneLook;
use crate::stage::Stage;
use crate::{Engine, Progress, RenderError, RenderOptions, parallel};
use audio::{Soundtrack, mixdown};
use canvas::canvas;
use inputs::{ClipInfo, Inputs, hash_inputs, reject_remote_scenes};
pub(crate) use inputs::{check, validate};
use look::{captions, scene_look};
use narration::{Speech, narration};
use segment::{encode_segment, segment_key};

/// Longest narration (or clip) accepted from one scene, seconds.
const MAX_NARRATION_SECONDS: f64 = limits::MAX_SCENE_SECONDS;

/// One render's use of the stage cache: hits and misses per stage, the entries it needs (pinned
/// until it ends, so eviction while another render writes never takes them) and the bytes it
/// has written (one render may not need more than the whole cache). Its hits and misses are its
/// own: the engine's cache may serve several renders at once.
struct Counts<'a> {
    cache: &'a cache::Cache,
    /// Mixed into every key (see `RenderOptions::cache_scope`).
    scope: Option<[u8; 32]>,
    stages: std::sync::Mutex<BTreeMap<&'static str, cache::HitMiss>>,
    pinned: std::sync::Mutex<Vec<Key>>,
    written: AtomicU64,
    /// The most this render may write (`RenderOptions::cache_share`, at most the cache's size).
    share: u64,
}

impl<'a> Counts<'a> {
    fn new(cache: &'a cache::Cache, scope: Option<&str>, share: Option<u64>) -> Self {
        Self {
            share: share.unwrap_or(u64::MAX).min(cache.max_bytes()),
            cache,
            scope: scope.map(|s| *blake3::hash(s.as_bytes()).as_bytes()),
            stages: Default::default(),
            pinned: Default::default(),
            written: AtomicU64::new(0),
        }
    }

    /// `key` as this render's entries are named.
    fn scoped(&self, key: &Key) -> Key {
        match &self.scope {
            None => *key,
            Some(s) => {
                let mut h = blake3::Hasher::new();
                h.update(b"scope");
                h.update(s);
                h.update(&key.0);
                Key(*h.finalize().as_bytes())
            }
        }
    }

    /// Looks `key` up in the cache, building it on a miss, and counts which it was.
    fn cached(
        &self,
        engine: &Engine,
        stage: Stage,
        key: &Key,
        build: impl FnOnce(&Path) -> Result<(), RenderError>,
    ) -> Result<(PathBuf, bool), RenderError> {
        let key = &self.scoped(key);
        self.cache.pin(key);
        self.pinned.lock().expect("pins lock").push(*key);
        let (path, hit) = engine.cache.get_or_build(stage.cache_name(), key, build)?;
        if !hit {
            let size = cache::dir_size(&path);
            let written = self.written.fetch_add(size, Ordering::Relaxed) + size;
            if written > self.share {
                let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / (1 << 20) as f64);
                let (so_far, whole) = (mb(written), mb(self.cache.max_bytes()));
                let room = if self.share < self.cache.max_bytes() {
                    let share = mb(self.share);
                    format!(
                        "its share of the stage cache ({so_far} so far; its share is {share} of the {whole} that renders running at once divide)"
                    )
                } else {
                    format!("the whole stage cache ({so_far} so far; the cache holds {whole})")
                };
                return Err(RenderError::at(
                    "spec",
                    format!(
                        "this render needs more than {room}: make the video smaller, shorter or with fewer zoomed scenes, or raise the cache size"
                    ),
                ));
            }
        }
        let mut m = self.stages.lock().expect("counts lock");
        let e = m.entry(stage.cache_name()).or_default();
        if hit {
            e.hits += 1
        } else {
            e.misses += 1
        }
        Ok((path, hit))
    }

    fn get(&self, stage: Stage) -> cache::HitMiss {
        self.stages.lock().expect("counts lock").get(stage.cache_name()).copied().unwrap_or_default()
    }
}

impl Drop for Counts<'_> {
    fn drop(&mut self) {
        for k in self.pinned.lock().expect("pins lock").drain(..) {
            self.cache.unpin(&k);
        }
    }
}

fn stop_if_cancelled(opts: &RenderOptions) -> Result<(), RenderError> {
    if opts.cancelled() { Err(RenderError::Cancelled) } else { Ok(()) }
}

/// One render: what every stage reads. The spec with its hashed inputs, the cache with this
/// render's counts and scope, the text renderer (with the spec's own fonts), the options.
struct Render<'a> {
    engine: &'a Engine,
    spec: &'a Spec,
    opts: &'a RenderOptions,
    inputs: Inputs,
    counts: Counts<'a>,
    text: Arc<TextRenderer>,
    /// Stage work items run at once.
    jobs: usize,
}

impl<'a> Render<'a> {
    /// After validation (`clips` is what it probed): hashes the inputs and opens this render's
    /// view of the cache.
    fn new(
        engine: &'a Engine,
        spec: &'a Spec,
        base: &Path,
        clips: BTreeMap<usize, ClipInfo>,
        opts: &'a RenderOptions,
    ) -> Result<Self, RenderError> {
        let inputs = hash_inputs(spec, base, clips)?;
        // The spec's own fonts are known to this render's text renderer only.
        let text: Arc<TextRenderer> = if inputs.font_files.is_empty() {
            engine.text.clone()
        } else {
            Arc::new(
                engine
                    .text
                    .with_font_files(&inputs.font_files)
                    .map_err(|e| RenderError::at("subtitles.font.file", e.to_string()))?,
            )
        };
        Ok(Self {
            engine,
            spec,
            opts,
            inputs,
            counts: Counts::new(&engine.cache, opts.cache_scope.as_deref(), opts.cache_share),
            text,
            jobs: opts.jobs.unwrap_or_else(crate::cores).max(1),
        })
    }
}

pub(crate) fn run(
    engine: &Engine,
    spec: &Spec,
    base: &Path,
    out: &Path,
    opts: &RenderOptions,
) -> Result<Report, RenderError> {
    // 1. Everything that can be checked before any work.
    let clips = validate(engine, spec, base)?;
    reject_remote_scenes(spec)?;
    let (width, height) = spec.output.dimensions();
    let r = Render::new(engine, spec, base, clips, opts)?;
    let (inputs, counts, jobs, text, opts) = (&r.inputs, &r.counts, r.jobs, &r.text, r.opts);
    let mut rep =
        Report { output: out.display().to_string(), width, height, fps: spec.output.fps, ..Default::default() };

    // 2. Narration (needed for the timeline).
    let mut st = StageReport::default();
    let t = StageTimer::start(Stage::Narration.report_name());
    emit_stage(opts, Stage::Narration, spec.scenes.len() as u64);
    let runs = AtomicU64::new(0);
    let indices: Vec<usize> = (0..spec.scenes.len()).collect();
    let speech: Vec<Option<Speech>> = parallel(&indices, jobs, |&i| {
        // Every stage stops at a cancel, not only the frame loops.
        stop_if_cancelled(opts)?;
        let speech = narration(&r, i, &runs);
        stop_if_cancelled(opts)?;
        speech
    })?;
    st.items = speech.iter().flatten().count() as u64;
    st.runs = runs.load(Ordering::Relaxed);
    t.stop(&mut st);
    rep.stages.insert(Stage::Narration.report_name().into(), st);

    // 3. Timeline.
    // A clip's own sound is its scene's narration, but the clip, not the sound, sets the length.
    let seconds: Vec<Option<f64>> = speech
        .iter()
        .zip(&spec.scenes)
        .map(|(s, scene)| s.as_ref().filter(|_| !scene.video.as_ref().is_some_and(|c| c.audio)).map(Speech::seconds))
        .collect();
    // A looped clip has no length of its own.
    let clip_seconds: Vec<Option<f64>> = (0..spec.scenes.len())
        .map(|i| inputs.clips.get(&i).filter(|_| !spec.scenes[i].video.as_ref().is_some_and(|c| c.r#loop)))
        .map(|c| c.map(|c| c.seconds))
        .collect();
    let mut v = Validator::default();
    let timeline = plan::layout(spec, &seconds, &clip_seconds, &mut v);
    v.finish()?;
    rep.frames = timeline.total_frames;
    rep.duration_s = timeline.duration();

    // 4. Canvases.
    let mut st = StageReport::default();
    let t = StageTimer::start(Stage::Canvas.report_name());
    emit_stage(opts, Stage::Canvas, spec.scenes.len() as u64);
    let runs = AtomicU64::new(0);
    let canvases: Vec<(Key, PathBuf, u32, u32)> = parallel(&indices, jobs, |&i| {
        stop_if_cancelled(opts)?;
        canvas(&r, i, &runs)
    })?;
    st.items = canvases.len() as u64;
    st.runs = runs.load(Ordering::Relaxed);
    t.stop(&mut st);
    rep.stages.insert(Stage::Canvas.report_name().into(), st);

    // 5. Segments, with the soundtrack in the same pool.
    let mut st = StageReport::default();
    let t = StageTimer::start(Stage::Segment.report_name());
    let encoder = crate::encoders::resolve(spec.output.encoder);
    rep.encoder = encoder.ffmpeg_name().into();
    let looks: Vec<Arc<SceneLook>> = (0..spec.scenes.len())
        .map(|i| scene_look(&r, &timeline, i, &canvases[i], speech[i].as_ref()).map(Arc::new))
        .collect::<Result<_, _>>()?;
    rep.captions = captions(&timeline, &looks);
    let mut settings = VideoSettings {
        width,
        height,
        fps: spec.output.fps,
        encoder,
        preset: spec.output.quality.preset.as_str().into(),
        crf: spec.output.quality.crf,
        threads: None,
    };
    let mut jobs_list: Vec<(usize, Key)> = timeline
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| (i, segment_key(s, &looks, &settings, &inputs.fonts_key)))
        .collect();
    let cached: Vec<bool> = jobs_list.iter().map(|(_, k)| engine.cache.contains(&counts.scoped(k))).collect();
    rep.segments = timeline
        .segments
        .iter()
        .zip(&jobs_list)
        .zip(&cached)
        .map(|((seg, (i, k)), &cached)| {
            let (scene, transition) = match *seg {
                Segment::Body { scene, .. } => (scene, false),
                Segment::Transition { scene, .. } => (scene, true),
            };
            report::SegmentInfo {
                index: *i,
                scene,
                transition,
                frames: seg.frames(),
                key: k.hex(),
                cached,
                worker: None,
            }
        })
        .collect();
    if opts.scope == crate::Scope::Plan {
        drop(t);
        rep.segments_total = timeline.segments.len() as u64;
        fill_cache_counts(&mut rep, counts);
        return Ok(rep);
    }
    let only: Option<&[usize]> = match &opts.scope {
        crate::Scope::Segments(list) => Some(list),
        _ => None,
    };
    if let Some(list) = only
        && let Some(bad) = list.iter().find(|&&i| i >= jobs_list.len())
    {
        return Err(RenderError::at("$", format!("segment {bad} does not exist; the video has {}", jobs_list.len())));
    }
    jobs_list.retain(|(i, _)| only.is_none_or(|l| l.contains(i)));
    // The segments to encode set the progress total; hand out the most work first to balance
    // the workers (a still span's frames count for less).
    jobs_list.sort_by_key(|(i, _)| {
        std::cmp::Reverse(segment::work(&timeline.segments[*i], &looks, opts.redraw_still_spans))
    });
    let live = match (&opts.live, only) {
        (Some(l), None) => Some(live::Live::new(l, &timeline, audio::span_bounds(&timeline))?),
        _ => None,
    };
    if live.is_some()
        && let Some(first) = jobs_list.iter().position(|(i, _)| *i == 0)
    {
        // A live stream starts with the first segment: it goes first.
        let job = jobs_list.remove(first);
        jobs_list.insert(0, job);
    }
    let todo: Vec<&(usize, Key)> = jobs_list.iter().filter(|(i, _)| !cached[*i]).collect();
    // Cores are shared among the encoders that will actually run at once.
    let running = jobs.min(todo.len()).max(1);
    // Each encoder's share of the cores; `encoder_threads` gives a lone long one all of them.
    settings.threads = opts.encoder_threads.or(Some((crate::cores() / running).max(1) as u32));
    let total_frames: u64 = todo.iter().map(|(i, _)| timeline.segments[*i].frames()).sum();
    let frames_done = AtomicU64::new(0);
    // Canvases are read per segment rather than kept for the whole render, so memory stays
    // flat however many scenes there are (a read costs ~1 ms; an encode, seconds).
    let load_canvas = |i: usize| -> Result<Arc<Yuv420>, RenderError> {
        let (_, dir, w, h) = &canvases[i];
        Ok(Arc::new(Yuv420::read_from(*w, *h, &mut fs::File::open(dir.join("canvas.yuv"))?)?))
    };
    let mut paths: BTreeMap<usize, PathBuf> = BTreeMap::new();
    let seg_runs = AtomicU64::new(0);
    // The soundtrack is one more job in the same pool: while its single-threaded AAC encode
    // runs, one encoder fewer runs beside it, so the cores stay busy and memory stays flat.
    emit_stage(opts, Stage::Segment, total_frames);
    // A segments-only render leaves the soundtrack to whoever assembles the video.
    let mut work: Vec<Job> = if only.is_some() { vec![] } else { vec![Job::Audio] };
    work.extend(jobs_list.iter().map(|&(i, k)| Job::Segment(i, k)));
    let audio_result: std::sync::Mutex<Option<(Soundtrack, StageReport)>> = Default::default();
    {
        let results = parallel(&work, jobs, |job| -> Result<Option<(usize, PathBuf)>, RenderError> {
            stop_if_cancelled(opts)?;
            let (i, k) = match *job {
                Job::Audio => {
                    let t = std::time::Instant::now();
                    let cpu0 = report::thread_cpu_seconds();
                    let soundtrack = mixdown(&r, &timeline, &speech, live.is_some())?;
                    let st = StageReport {
                        wall_s: t.elapsed().as_secs_f64(),
                        cpu_s: report::thread_cpu_seconds() - cpu0,
                        items: timeline.segments.len() as u64,
                        runs: soundtrack.spans_encoded,
                        ..Default::default()
                    };
                    if let Some(l) = &live {
                        l.audio_ready(audio::span_files(&soundtrack, timeline.segments.len()));
                    }
                    *audio_result.lock().expect("audio slot") = Some((soundtrack, st));
                    return Ok(None);
                }
                Job::Segment(i, k) => (i, k),
            };
            let seg = &timeline.segments[i];
            let (p, _) = counts.cached(engine, Stage::Segment, &k, |dir| {
                seg_runs.fetch_add(1, Ordering::Relaxed);
                let mut settings = settings.clone();
                if opts.encoder_threads.is_none() {
                    let left = total_frames.saturating_sub(frames_done.load(Ordering::Relaxed));
                    settings.threads = Some(encoder_threads(seg.frames(), left, running));
                }
                encode_segment(
                    text,
                    seg,
                    &looks,
                    &load_canvas,
                    &settings,
                    &dir.join("segment.mp4"),
                    opts,
                    &frames_done,
                    total_frames,
                )
            })?;
            if let Some(l) = &live {
                l.video_ready(i, p.join("segment.mp4"));
            }
            Ok(Some((i, p.join("segment.mp4"))))
        })?;
        for (i, p) in results.into_iter().flatten() {
            paths.insert(i, p);
        }
    }
    let encoded = seg_runs.load(Ordering::Relaxed);
    st.items = timeline.segments.len() as u64;
    st.runs = encoded;
    t.stop(&mut st);
    rep.encoded_frames = frames_done.load(Ordering::Relaxed);
    rep.segments_total = timeline.segments.len() as u64;
    rep.segments_encoded = encoded;
    let audio = audio_result.into_inner().expect("audio slot");
    if let Some((soundtrack, audio_st)) = &audio {
        // The pool's CPU includes the soundtrack's; report each stage its own share.
        st.cpu_s = (st.cpu_s - audio_st.cpu_s).max(0.0);
        rep.loudness_lufs = soundtrack.loudness;
        rep.stages.insert(Stage::Audio.report_name().into(), audio_st.clone());
    }
    rep.encode_fps = if st.wall_s > 0.0 { rep.encoded_frames as f64 / st.wall_s } else { 0.0 };
    rep.stages.insert(Stage::Segment.report_name().into(), st);
    let Some((soundtrack, _)) = audio else {
        // Segments only: they are in the cache for whoever assembles the video.
        fill_cache_counts(&mut rep, counts);
        return Ok(rep);
    };

    // 6. Join.
    stop_if_cancelled(opts)?;
    let mut st = StageReport { items: 1, runs: 1, ..Default::default() };
    let t = StageTimer::start(Stage::Join.report_name());
    emit_stage(opts, Stage::Join, 1);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let ordered: Vec<PathBuf> = paths.into_values().collect();
    // Entries are directories named by their key, so the joined file's key is the list of them.
    let parts: Vec<String> = ordered
        .iter()
        .chain(std::iter::once(&soundtrack.path))
        .filter_map(|p| p.parent()?.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let (dir, hit) = counts.cached(engine, Stage::Join, &cache::key(Stage::Join.cache_name(), &parts), |dir| {
        let video = dir.join("video.mp4");
        // Natively (no decoding to probe each segment); FFmpeg's concat demuxer for segments
        // the native join does not take (another encoder's layout).
        let frames = audio::span_frames(&audio::span_bounds(&timeline));
        if let Err(e) = reelsmith_media::mp4join::join(&ordered, &soundtrack.path, &frames, &video) {
            tracing::warn!(error = %e, "native join refused the segments; joining with FFmpeg");
            let work = tempfile::tempdir_in(engine.cache.root().join("tmp"))?;
            ffmpeg::concat(&ordered, Some(audio::soundtrack_input(&soundtrack)), &video, work.path())?;
        }
        Ok(())
    })?;
    st.runs = (!hit) as u64;
    // Copy (never link) out of the cache: the caller may edit its file; write next to the
    // target and rename, so a failure never leaves a broken file behind.
    let tmp_out = out.with_extension("partial.mp4");
    fs::copy(dir.join("video.mp4"), &tmp_out)?;
    fs::rename(&tmp_out, out)?;
    t.stop(&mut st);
    rep.stages.insert(Stage::Join.report_name().into(), st);

    fill_cache_counts(&mut rep, counts);
    Ok(rep)
}

/// Scene `i`'s narration as a mono 16-bit WAV at `out`, from the cache or made as a render
/// makes it; returns the narration's cache key and its length in seconds.
pub(crate) fn narration_wav(
    engine: &Engine,
    spec: &Spec,
    base: &Path,
    i: usize,
    out: &Path,
    cache_scope: Option<&str>,
) -> Result<(String, f64), RenderError> {
    let clips = validate(engine, spec, base)?;
    // The same scope as the render: the very narration it will play.
    let opts = RenderOptions { cache_scope: cache_scope.map(str::to_string), ..Default::default() };
    let r = Render::new(engine, spec, base, clips, &opts)?;
    let speech = narration(&r, i, &AtomicU64::new(0))?
        .ok_or_else(|| RenderError::at(format!("scenes[{i}].narration"), "the scene has no narration"))?;
    let bytes = fs::read(&speech.path)?;
    let samples = bytes
        .chunks_exact(4)
        .map(|b| (f32::from_le_bytes([b[0], b[1], b[2], b[3]]).clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect();
    reelsmith_media::tts::TtsAudio { sample_rate: MIX_RATE, samples, words: vec![] }.write_wav(out)?;
    Ok((speech.key.hex(), speech.seconds()))
}

/// Announces a stage to progress followers (under its progress name, if it has one).
/// x264 threads for a segment of `frames` frames starting when `left` frames (its own
/// included) remain to encode, `running` encoders sharing the cores: its share of the cores,
/// or all of them when it is longer than everything else left, since it would then run alone
/// at the end (an edited scene's body beside its two short transitions; the last long
/// segment of a cold render).
fn encoder_threads(frames: u64, left: u64, running: usize) -> u32 {
    let cores = crate::cores().max(1);
    let others = left.saturating_sub(frames);
    if frames > others { cores as u32 } else { (cores / running.max(1)).max(1) as u32 }
}

fn emit_stage(opts: &RenderOptions, stage: Stage, total: u64) {
    if let Some(name) = stage.progress_name() {
        opts.emit(Progress::Stage { name, total });
    }
}

/// Per-stage cache counts, and their totals.
fn fill_cache_counts(rep: &mut Report, counts: &Counts<'_>) {
    for stage in Stage::ALL {
        if let Some(s) = rep.stages.get_mut(stage.report_name()) {
            let hm = counts.get(stage);
            s.cache_hits = hm.hits;
            s.cache_misses = hm.misses;
        }
    }
    rep.cache_hits = rep.stages.values().map(|s| s.cache_hits).sum();
    rep.cache_misses = rep.stages.values().map(|s| s.cache_misses).sum();
    let n = rep.cache_hits + rep.cache_misses;
    rep.cache_hit_ratio = if n == 0 { 0.0 } else { rep.cache_hits as f64 / n as f64 };
}

/// One unit of work in the render pool.
#[derive(Clone, Copy)]
enum Job {
    Audio,
    Segment(usize, Key),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_longer_than_all_the_rest_gets_every_core_and_others_their_share() {
        let cores = crate::cores() as u32;
        // An edit: the scene's body (120 frames) beside two 12-frame transitions.
        assert_eq!(encoder_threads(120, 144, 2), cores);
        assert_eq!(encoder_threads(12, 24, 2), (cores / 2).max(1));
        // Early in a cold render: plenty left besides this segment.
        assert_eq!(encoder_threads(120, 1000, 2), (cores / 2).max(1));
        // The last one, with less than itself left elsewhere.
        assert_eq!(encoder_threads(120, 200, 2), cores);
        assert_eq!(encoder_threads(120, 240, 2), (cores / 2).max(1));
    }
}
