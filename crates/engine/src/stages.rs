//! The render pipeline's stages and their orchestration (see the crate docs for the order).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reelsmith_media::audio::{self, Clip, MIX_CHANNELS, MIX_RATE, MixPlan};
use reelsmith_media::ffmpeg::{self, H264Encoder, VideoEncoder, VideoSettings};
use reelsmith_media::frame::Yuv420;
use reelsmith_media::head::{EyeGeometry, HeadGeometry};
use reelsmith_media::mouth::{self, MouthGeometry};
use reelsmith_media::picture::{self, FitMode};
use reelsmith_media::text::{Align, TextBlock, TextRenderer, TextStyle};
use reelsmith_media::tts::{SpeechEngine, TtsRequest, WordTiming};
use reelsmith_spec::{
    Background, Fit, Font, Framing, Motion, Narration, ReplaceBackground, Scene, Spec, Validator, limits,
};
use serde::Serialize;

use crate::cache::{self, Key};
use crate::plan::{self, Segment, Timeline};
use crate::report::{self, Report, StageReport, StageTimer};
use crate::scene::{self, ClipLook, FaceRig, SceneLook, SceneRenderer, Talking, TextLook};
use crate::stage::Stage;
use crate::{Engine, Progress, RenderError, RenderOptions, parallel};

/// Longest narration accepted from one scene, seconds.
const MAX_NARRATION_SECONDS: f64 = limits::MAX_SCENE_SECONDS;

/// A scene's narration, ready to place: 48 kHz mono raw f32 in the cache (read block by block
/// when mixing, never held whole) and word timings (seconds from its start).
struct Speech {
    key: Key,
    path: PathBuf,
    frames: u64,
    words: Vec<WordTiming>,
}

impl Speech {
    fn seconds(&self) -> f64 {
        self.frames as f64 / MIX_RATE as f64
    }
}

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
}

impl<'a> Counts<'a> {
    fn new(cache: &'a cache::Cache, scope: Option<&str>) -> Self {
        Self {
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
            if written > self.cache.max_bytes() {
                return Err(RenderError::at(
                    "spec",
                    format!(
                        "this render needs more than the whole stage cache ({} MB so far; the cache holds {} MB): make the video smaller, shorter or with fewer zoomed scenes, or raise the cache size",
                        written >> 20,
                        self.cache.max_bytes() >> 20
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

/// Files referenced by the spec, hashed once per render, and what the video clips hold.
struct Inputs {
    base: PathBuf,
    hashes: BTreeMap<String, String>,
    clips: BTreeMap<usize, ClipInfo>,
    /// The spec's own font files (subtitles, overlays) and one hash of them all ("" when it has
    /// none): every look drawn with them is keyed by it.
    font_files: Vec<PathBuf>,
    fonts_key: String,
}

/// A scene's video clip as probed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClipInfo {
    /// Seconds from the clip's `start` to its `end` (or the file's end).
    seconds: f64,
    has_audio: bool,
}

impl Inputs {
    fn hash(&self, name: &str) -> String {
        self.hashes.get(name).cloned().unwrap_or_default()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }
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
            counts: Counts::new(&engine.cache, opts.cache_scope.as_deref()),
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
        fill_cache_counts(&mut rep, &counts);
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
    // The segments to encode set the progress total; hand out the longest first to balance workers.
    jobs_list.sort_by_key(|(i, _)| std::cmp::Reverse(timeline.segments[*i].frames()));
    let todo: Vec<&(usize, Key)> = jobs_list.iter().filter(|(i, _)| !cached[*i]).collect();
    // Cores are shared among the encoders that will actually run at once.
    let running = jobs.min(todo.len()).max(1);
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
    let audio_result: std::sync::Mutex<Option<(PathBuf, Option<f64>, StageReport)>> = Default::default();
    {
        let results = parallel(&work, jobs, |job| -> Result<Option<(usize, PathBuf)>, RenderError> {
            stop_if_cancelled(opts)?;
            let (i, k) = match *job {
                Job::Audio => {
                    let t = std::time::Instant::now();
                    let cpu0 = report::thread_cpu_seconds();
                    let (path, loudness, child_cpu) = mixdown(&r, &timeline, &speech)?;
                    let st = StageReport {
                        wall_s: t.elapsed().as_secs_f64(),
                        cpu_s: report::thread_cpu_seconds() - cpu0 + child_cpu.unwrap_or(0.0),
                        items: 1,
                        runs: child_cpu.is_some() as u64,
                        ..Default::default()
                    };
                    *audio_result.lock().expect("audio slot") = Some((path, loudness, st));
                    return Ok(None);
                }
                Job::Segment(i, k) => (i, k),
            };
            let seg = &timeline.segments[i];
            let (p, _) = counts.cached(engine, Stage::Segment, &k, |dir| {
                seg_runs.fetch_add(1, Ordering::Relaxed);
                encode_segment(
                    &text,
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
    if let Some((_, loudness, audio_st)) = &audio {
        // The pool's CPU includes the soundtrack's; report each stage its own share.
        st.cpu_s = (st.cpu_s - audio_st.cpu_s).max(0.0);
        rep.loudness_lufs = *loudness;
        rep.stages.insert(Stage::Audio.report_name().into(), audio_st.clone());
    }
    rep.encode_fps = if st.wall_s > 0.0 { rep.encoded_frames as f64 / st.wall_s } else { 0.0 };
    rep.stages.insert(Stage::Segment.report_name().into(), st);
    let Some((audio_path, _, _)) = audio else {
        // Segments only: they are in the cache for whoever assembles the video.
        fill_cache_counts(&mut rep, &counts);
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
        .chain(std::iter::once(&audio_path))
        .filter_map(|p| p.parent()?.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let (dir, hit) = counts.cached(engine, Stage::Join, &cache::key(Stage::Join.cache_name(), &parts), |dir| {
        let work = tempfile::tempdir_in(engine.cache.root().join("tmp"))?;
        ffmpeg::concat(&ordered, Some(&audio_path), &dir.join("video.mp4"), work.path())?;
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

    fill_cache_counts(&mut rep, &counts);
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

pub(crate) fn check_voices_and_fonts(engine: &Engine, spec: &Spec, base: &Path, v: &mut Validator) {
    let mut fonts = vec![("subtitles.font".to_string(), &spec.subtitles.font)];
    for (i, s) in spec.scenes.iter().enumerate() {
        if let Some(o) = &s.overlay {
            fonts.push((format!("scenes[{i}].overlay.font"), &o.font));
        }
        if let Some(n) = &s.narration
            && n.text.is_some()
        {
            let voice = spec.voice.with(&n.voice);
            match engine.voices.get(&voice.engine) {
                None => v.push(format!("scenes[{i}].narration.engine"), engine.voices.why_not(&voice.engine)),
                Some(e) if !e.has_voice(&voice.name) => v.push(
                    format!("scenes[{i}].narration.name"),
                    format!(
                        "unknown {} voice {:?} (see `reelsmith doctor` for the voices here)",
                        voice.engine, voice.name
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    if engine.voices.get(&spec.voice.engine).is_none() {
        v.push("voice.engine", engine.voices.why_not(&spec.voice.engine));
    }
    for (path, font) in fonts {
        if let Some(file) = &font.file {
            if let Err(e) = TextRenderer::font_file_families(&base.join(file)) {
                v.push(format!("{path}.file"), e.to_string());
            }
        } else if !engine.text.has_family(&font.family) {
            v.push(format!("{path}.family"), format!("font family not installed: {}", font.family));
        }
    }
}

/// Hashes the files a validated spec names; `clips` are its probed video clips.
fn hash_inputs(spec: &Spec, base: &Path, clips: BTreeMap<usize, ClipInfo>) -> Result<Inputs, RenderError> {
    let mut names: Vec<(String, String)> = vec![];
    for (i, s) in spec.scenes.iter().enumerate() {
        if let Some(img) = &s.image {
            names.push((format!("scenes[{i}].image"), img.clone()));
        }
        if let Some(c) = &s.video {
            names.push((format!("scenes[{i}].video.file"), c.file.clone()));
        }
        if let Some(a) = s.narration.as_ref().and_then(|n| n.audio.clone()) {
            names.push((format!("scenes[{i}].narration.audio"), a));
        }
        if let Some(ReplaceBackground::Image(f)) = &s.replace_background {
            names.push((format!("scenes[{i}].replace_background.image"), f.clone()));
        }
    }
    if let Some(m) = &spec.music {
        names.push(("music.file".into(), m.file.clone()));
    }
    let mut fonts: Vec<(String, String)> = vec![];
    if let Some(f) = &spec.subtitles.font.file {
        fonts.push(("subtitles.font.file".into(), f.clone()));
    }
    for (i, s) in spec.scenes.iter().enumerate() {
        if let Some(f) = s.overlay.as_ref().and_then(|o| o.font.file.clone()) {
            fonts.push((format!("scenes[{i}].overlay.font.file"), f));
        }
    }
    let mut hashes = BTreeMap::new();
    for (path, name) in names.into_iter().chain(fonts.iter().cloned()) {
        let h = cache::hash_file(&base.join(&name))
            .map_err(|e| RenderError::at(path, format!("cannot read {name}: {e}")))?;
        hashes.insert(name, h);
    }
    let mut font_names: Vec<String> = fonts.into_iter().map(|(_, n)| n).collect();
    font_names.sort();
    font_names.dedup();
    let fonts_key = if font_names.is_empty() {
        String::new()
    } else {
        let all: Vec<&str> = font_names.iter().map(|n| hashes[n].as_str()).collect();
        blake3::hash(all.join(",").as_bytes()).to_hex().to_string()
    };
    let font_files = font_names.iter().map(|n| base.join(n)).collect();
    Ok(Inputs { base: base.to_path_buf(), hashes, clips, font_files, fonts_key })
}

/// Everything that can be checked before any work: ranges, files, voices, fonts, and each
/// video clip probed once (what it holds is returned for the render).
pub(crate) fn validate(engine: &Engine, spec: &Spec, base: &Path) -> Result<BTreeMap<usize, ClipInfo>, RenderError> {
    let mut v = Validator::default();
    spec.check(base, &mut v);
    check_voices_and_fonts(engine, spec, base, &mut v);
    let clips = check_clips(spec, base, &mut v);
    v.finish()?;
    Ok(clips)
}

/// Validates `spec` and estimates its cost (see [`crate::cost`]).
pub(crate) fn check(engine: &Engine, spec: &Spec, base: &Path) -> Result<crate::cost::Cost, RenderError> {
    let clips = validate(engine, spec, base)?;
    let recordings: BTreeMap<usize, f64> = spec
        .scenes
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let file = s.narration.as_ref()?.audio.as_ref()?;
            let info = ffmpeg::probe_as(&base.join(file), ffmpeg::MediaKind::Audio).ok()?;
            Some((i, info.duration))
        })
        .collect();
    Ok(crate::cost::estimate(spec, |i| clips.get(&i).map(|c| c.seconds), |i| recordings.get(&i).copied()))
}

/// Probes every video clip that exists (missing files are reported by the spec's own checks).
fn check_clips(spec: &Spec, base: &Path, v: &mut Validator) -> BTreeMap<usize, ClipInfo> {
    let mut clips = BTreeMap::new();
    for (i, s) in spec.scenes.iter().enumerate() {
        if let Some(c) = &s.video
            && base.join(&c.file).is_file()
        {
            match probe_clip(&base.join(&c.file), c) {
                Err(e) => v.push(format!("scenes[{i}].video"), e),
                Ok(info) => {
                    if c.audio && !info.has_audio {
                        v.push(format!("scenes[{i}].video.audio"), format!("{} has no sound", c.file));
                    }
                    clips.insert(i, info);
                }
            }
        }
    }
    clips
}

/// Probes a scene's video clip: a readable video stream within the pixel limit, long enough
/// for its `start`, and not longer than a scene may be.
fn probe_clip(path: &Path, c: &reelsmith_spec::VideoClip) -> Result<ClipInfo, String> {
    let info = ffmpeg::probe_as(path, ffmpeg::MediaKind::Video)
        .map_err(|e| format!("{} is not a readable video: {e}", c.file))?;
    let v = info.video().ok_or_else(|| format!("{} has no video stream", c.file))?;
    let pixels = v.width as u64 * v.height as u64;
    if pixels == 0 || pixels > limits::MAX_VIDEO_PIXELS {
        return Err(format!(
            "{} is {}x{}; clips may have at most {} pixels per frame",
            c.file,
            v.width,
            v.height,
            limits::MAX_VIDEO_PIXELS
        ));
    }
    let length = if v.duration > 0.0 { v.duration } else { info.duration };
    if length.is_nan() || length <= 0.0 {
        return Err(format!("{}: the clip has no duration", c.file));
    }
    if c.start >= length {
        return Err(format!("start is {} s but {} lasts {length:.2} s", c.start, c.file));
    }
    let seconds = c.end.unwrap_or(length).min(length) - c.start;
    if seconds > MAX_NARRATION_SECONDS && !c.r#loop {
        return Err(format!(
            "{} plays {seconds:.0} s; a scene lasts at most {MAX_NARRATION_SECONDS} s: set end to trim it",
            c.file
        ));
    }
    Ok(ClipInfo { seconds, has_audio: info.audio().is_some() })
}

/// Talking heads another provider animates are rendered through the service, which puts the
/// provider's clip in their place before the engine sees them.
fn reject_remote_scenes(spec: &Spec) -> Result<(), RenderError> {
    let mut v = Validator::default();
    for (i, s) in spec.scenes.iter().enumerate() {
        if s.is_d_id_talking_head() {
            v.push(
                format!("scenes[{i}].motion.provider"),
                "d-id talking heads are rendered through the service (`reelsmith serve` with did_api_key); \
                 use provider local to animate the face here",
            );
        }
    }
    Ok(v.finish()?)
}

fn write_f32(path: &Path, samples: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    fs::write(path, bytes)
}

#[derive(Serialize)]
enum NarrationKey<'a> {
    Speech { engine: &'a str, version: String, voice: &'a str, speed: f32, pitch: f32, text: &'a str },
    Recording { file: String, speed: f32, pitch: f32, transcript: Option<&'a str> },
    ClipSound { file: String, start: f64, end: Option<f64> },
}

fn narration(r: &Render<'_>, i: usize, runs: &AtomicU64) -> Result<Option<Speech>, RenderError> {
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
        },
        (None, Some(file)) => NarrationKey::Recording {
            file: inputs.hash(file),
            speed: voice.speed,
            pitch: voice.pitch,
            transcript: n.transcript.as_deref(),
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
    Ok(Speech { key, path: audio, frames, words })
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
    // FFmpeg's resampler (soxr-quality swr) takes the engine's rate to the mix rate; an engine
    // without its own pitch control gets a tempo-preserving shift (timings stay valid).
    let wav = dir.join("speech.wav");
    audio.write_wav(&wav)?;
    let shift = (!speech.native_pitch() && (pitch - 1.0).abs() > 1e-3).then(|| format!("rubberband=pitch={pitch:.4}"));
    let samples = ffmpeg::decode_audio(&wav, MIX_RATE, 1, shift.as_deref(), MAX_NARRATION_SECONDS)?;
    fs::remove_file(&wav)?;
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
    let words = n.transcript.as_deref().map(|t| spread_words(t, &samples)).unwrap_or_default();
    Ok((samples, words))
}

/// Word timings for a transcript: spread over the span where the recording is audible,
/// each word's share proportional to its length.
fn spread_words(text: &str, samples: &[f32]) -> Vec<WordTiming> {
    let loud = |s: &f32| s.abs() > 0.02;
    let first = samples.iter().position(loud).unwrap_or(0) as f64 / MIX_RATE as f64;
    let last = samples.iter().rposition(loud).map_or(samples.len(), |p| p + 1) as f64 / MIX_RATE as f64;
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
}

#[derive(Serialize)]
struct CanvasKey<'a> {
    image: Option<String>,
    fit: Fit,
    background: Option<&'a Background>,
    default_background: String,
    title: Option<(&'a str, TextLookKey<'a>)>,
    width: u32,
    height: u32,
    /// Talking-head scenes also locate the face's rig on the canvas (`face.json`): which face,
    /// how the photo is framed.
    #[serde(skip_serializing_if = "Option::is_none")]
    talking_head: Option<(Option<usize>, Framing)>,
    /// A replaced background: colour, blur radius, or the replacement image's hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    replace_background: Option<ReplaceBackgroundKey>,
    /// A video scene's canvas is its backdrop; the title is kept apart to draw on each frame.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    video: bool,
}

#[derive(Serialize)]
enum ReplaceBackgroundKey {
    Color(String),
    Image(String),
    Blur(f32),
}

#[derive(Serialize)]
struct TextLookKey<'a> {
    family: String,
    size_px: f32,
    /// The spec's font files, when it has any (a family name alone may be anyone's font).
    #[serde(skip_serializing_if = "str::is_empty")]
    fonts: &'a str,
}

fn even(x: f32) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

#[allow(clippy::too_many_arguments)]
fn canvas(r: &Render<'_>, i: usize, runs: &AtomicU64) -> Result<(Key, PathBuf, u32, u32), RenderError> {
    let (engine, text, counts, spec, inputs) = (r.engine, &*r.text, &r.counts, r.spec, &r.inputs);
    let scene = &spec.scenes[i];
    let (w, h) = spec.output.dimensions();
    let z = crate::cost::canvas_zoom(w, h, plan::max_zoom(&scene.motion));
    let (cw, ch) = (even(w as f32 * z), even(h as f32 * z));
    let title_size = 0.09 * h as f32 * z;
    let key = cache::key(
        Stage::Canvas.cache_name(),
        &CanvasKey {
            image: scene.image.as_ref().map(|f| inputs.hash(f)),
            fit: scene.fit,
            background: scene.background.as_ref(),
            default_background: spec.output.background.to_string(),
            title: scene.title.as_deref().map(|t| {
                let family = spec.subtitles.font.family.clone();
                (t, TextLookKey { family, size_px: title_size, fonts: &inputs.fonts_key })
            }),
            width: cw,
            height: ch,
            talking_head: match scene.motion {
                Motion::TalkingHead { face_index, framing, .. } => Some((face_index, framing)),
                _ => None,
            },
            replace_background: scene.replace_background.as_ref().map(|r| match r {
                ReplaceBackground::Color(c) => ReplaceBackgroundKey::Color(c.to_string()),
                ReplaceBackground::Image(f) => ReplaceBackgroundKey::Image(inputs.hash(f)),
                ReplaceBackground::Blur(b) => ReplaceBackgroundKey::Blur(*b),
            }),
            video: scene.video.is_some(),
        },
    );
    let (dir, _) = counts.cached(engine, Stage::Canvas, &key, |dir| {
        runs.fetch_add(1, Ordering::Relaxed);
        let bg = scene_background(spec, scene, cw, ch);
        let mut rgba = match &scene.image {
            Some(img) => {
                let pic = picture::load(&inputs.path(img), limits::MAX_IMAGE_PIXELS)
                    .map_err(|e| RenderError::at(format!("scenes[{i}].image"), e.to_string()))?;
                let mode = match scene.fit {
                    Fit::Cover => FitMode::Cover,
                    Fit::Contain => FitMode::Contain,
                    Fit::ContainBlur => FitMode::ContainBlur,
                };
                let pic = match scene.motion {
                    Motion::TalkingHead { face_index, framing: Framing::Face, .. } => {
                        frame_face(engine, &pic, face_index, cw as f32 / ch as f32)
                            .map_err(|e| RenderError::at(format!("scenes[{i}].image"), e))?
                    }
                    _ => pic,
                };
                let pic = match &scene.replace_background {
                    Some(r) => replace_background(engine, pic, r, inputs, ch)
                        .map_err(|e| RenderError::at(format!("scenes[{i}].replace_background"), e))?,
                    None => pic,
                };
                let fitted = picture::fit(&pic, cw, ch, mode, [0, 0, 0, 0]);
                let mut canvas = bg;
                image::imageops::overlay(&mut canvas, &fitted, 0, 0);
                canvas
            }
            None => bg,
        };
        if let Some(title) = &scene.title {
            let font = &spec.subtitles.font;
            let style = TextStyle {
                family: font.family.clone(),
                bold: true,
                size_px: title_size,
                line_height: 1.2,
                color: font.color.rgba(),
                outline: Some((title_size * 0.05, [0, 0, 0, 200])),
                background: None,
                align: Align::Center,
            };
            let block = TextBlock {
                text: title,
                style: &style,
                max_width_px: (cw as f32 * 0.8) as u32,
                max_height_px: ch,
                highlight: None,
            };
            let ov =
                text.render_block(&block).map_err(|e| RenderError::at(format!("scenes[{i}].title"), e.to_string()))?;
            let (x, y) = ((cw as i64 - ov.width as i64) / 2, (ch as i64 - ov.height as i64) / 2);
            if scene.video.is_some() {
                fs::write(dir.join("title.rgba"), &ov.data)?;
                let place = serde_json::json!({"x": x, "y": y, "width": ov.width, "height": ov.height});
                fs::write(dir.join("title.json"), place.to_string())?;
            } else {
                picture::draw_overlay(&mut rgba, &ov, x, y);
            }
        }
        if let Motion::TalkingHead { face_index, .. } = scene.motion {
            let rig =
                locate_face(engine, &rgba, face_index).map_err(|e| RenderError::at(format!("scenes[{i}].image"), e))?;
            fs::write(dir.join("face.json"), serde_json::to_vec(&rig).map_err(std::io::Error::other)?)?;
        }
        let yuv = Yuv420::from_rgba(cw, ch, rgba.as_raw());
        let mut f = std::io::BufWriter::new(fs::File::create(dir.join("canvas.yuv"))?);
        yuv.write_to(&mut f)?;
        use std::io::Write;
        f.flush()?;
        Ok(())
    })?;
    Ok((key, dir, cw, ch))
}

fn scene_background(spec: &Spec, scene: &Scene, w: u32, h: u32) -> picture::Rgba {
    match &scene.background {
        Some(Background::Color(c)) => picture::solid(w, h, c.rgba()),
        Some(Background::Gradient(g)) => picture::gradient(w, h, g.from.rgba(), g.to.rgba(), g.angle),
        None => picture::solid(w, h, spec.output.background.rgba()),
    }
}

/// Narration alone is mono (encoding stereo AAC costs twice the CPU for the same sound);
/// music makes the soundtrack stereo.
fn channels(spec: &Spec) -> u16 {
    if spec.music.is_some() { MIX_CHANNELS } else { 1 }
}

#[derive(Serialize)]
struct MixKey<'a> {
    channels: u16,
    narrations: Vec<(String, u64)>,
    music: Option<(String, &'a reelsmith_spec::Music)>,
    frames: u64,
    fps: u32,
    loudness: Option<f32>,
    bitrate: u32,
}

/// One unit of work in the render pool.
#[derive(Clone, Copy)]
enum Job {
    Audio,
    Segment(usize, Key),
}

/// Mixes and encodes the soundtrack; returns its file, loudness and, when it was encoded rather
/// than found in the cache, the encoder's CPU seconds.
fn mixdown(
    r: &Render<'_>,
    tl: &Timeline,
    speech: &[Option<Speech>],
) -> Result<(PathBuf, Option<f64>, Option<f64>), RenderError> {
    let (engine, counts, spec, inputs) = (r.engine, &r.counts, r.spec, &r.inputs);
    let starts: Vec<u64> = tl.scenes.iter().map(|s| s.start + s.narration_frame).collect();
    let key = cache::key(
        Stage::Audio.cache_name(),
        &MixKey {
            channels: channels(spec),
            narrations: speech.iter().zip(&starts).filter_map(|(s, &f)| s.as_ref().map(|s| (s.key.hex(), f))).collect(),
            music: spec.music.as_ref().map(|m| (inputs.hash(&m.file), m)),
            frames: tl.total_frames,
            fps: tl.fps,
            loudness: spec.audio.loudness,
            bitrate: spec.audio.bitrate_kbps,
        },
    );
    let mut child_cpu = None;
    let channels = channels(spec);
    let (dir, _) = counts.cached(engine, Stage::Audio, &key, |dir| {
        let fps = tl.fps as f64;
        let to_frames = |frame: u64| (frame as f64 / fps * MIX_RATE as f64).round() as u64;
        let mut plan = MixPlan { frames: to_frames(tl.total_frames), clips: vec![], music: None };
        for (s, &f) in speech.iter().zip(&starts) {
            if let Some(s) = s {
                plan.clips.push(Clip { path: s.path.clone(), start: to_frames(f), frames: s.frames });
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
                Ok(())
            })?;
            let path = mdir.join("music.f32");
            let frames = fs::metadata(&path)?.len() / 8;
            if frames == 0 {
                return Err(RenderError::at("music.file", "the music file has no audio"));
            }
            let d = &m.ducking;
            plan.music = Some(audio::Music {
                path,
                frames,
                looped: m.r#loop,
                volume: m.volume,
                ducking: d.enabled.then_some(audio::Ducking {
                    level: d.level,
                    attack: d.attack as f64,
                    release: d.release as f64,
                }),
                fade: m.fade as f64,
            });
        }
        let mut enc = ffmpeg::AacEncoder::start(MIX_RATE, channels, spec.audio.bitrate_kbps, &dir.join("audio.m4a"))?;
        let mut mono = vec![];
        let mut enc_err = None;
        // A -1 dBFS ceiling keeps AAC's overshoot from clipping.
        let streamed = plan.stream(spec.audio.loudness.map(f64::from), 0.89, |block| {
            let block = if channels == 1 {
                mono.clear();
                mono.extend(block.iter().step_by(2));
                &mono[..]
            } else {
                block
            };
            enc.write(block).map_err(|e| {
                let msg = e.to_string();
                enc_err = Some(e);
                std::io::Error::other(msg)
            })
        });
        if let Some(e) = enc_err {
            return Err(e.into());
        }
        let (_, after) = streamed?;
        child_cpu = Some(enc.finish()?);
        fs::write(dir.join("loudness.json"), serde_json::to_vec(&after).expect("f64 serialises"))?;
        Ok(())
    })?;
    let loudness: Option<f64> =
        fs::read(dir.join("loudness.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).flatten();
    Ok((dir.join("audio.m4a"), loudness, child_cpu))
}

fn text_look(
    font: &Font,
    text: &str,
    h: u32,
    w: u32,
    max_width: f32,
    outline: Option<&reelsmith_spec::Outline>,
    bx: Option<&reelsmith_spec::TextBox>,
) -> TextLook {
    let size_px = font.size * h as f32;
    TextLook {
        text: text.to_string(),
        family: font.family.clone(),
        bold: font.bold,
        size_px,
        color: font.color.rgba(),
        outline: outline.filter(|o| o.width > 0.0).map(|o| (o.width * size_px, o.color.rgba())),
        background: bx.map(|b| (b.color.rgba(), b.padding * size_px)),
        max_width: (max_width * w as f32) as u32,
        position: None,
    }
}

/// Faces in an RGBA picture, and the chosen one.
fn find_face(
    engine: &Engine,
    rgba: &image::RgbaImage,
    face_index: Option<usize>,
) -> Result<(reelsmith_models::face::Face, Vec<u8>), String> {
    let (detector, _) = engine.faces().map_err(|e| format!("talking-head needs the face models: {e}"))?;
    let (w, h) = rgba.dimensions();
    let rgb: Vec<u8> = rgba.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
    let faces = detector.detect(w, h, &rgb).map_err(|e| e.to_string())?;
    let face = reelsmith_models::face::choose(&faces, face_index).map_err(|e| e.to_string())?;
    Ok((face, rgb))
}

/// The photo cropped around the face to `aspect` (width / height): head and shoulders, the
/// face a little above the middle, as large as the photo allows.
fn frame_face(
    engine: &Engine,
    pic: &image::RgbaImage,
    face_index: Option<usize>,
    aspect: f32,
) -> Result<image::RgbaImage, String> {
    let (face, _) = find_face(engine, pic, face_index)?;
    let (pw, ph) = (pic.width() as f32, pic.height() as f32);
    let [bx, by, bw, bh] = face.bbox;
    let (cx, cy) = (bx + bw / 2.0, by + bh / 2.0);
    // The detector's box is the face from brows to chin: about 40% of a headshot's height.
    let mut crop_h = bh / 0.4;
    let mut crop_w = crop_h * aspect;
    let shrink = (pw / crop_w).min(ph / crop_h).min(1.0);
    crop_w *= shrink;
    crop_h *= shrink;
    let x = (cx - crop_w / 2.0).clamp(0.0, pw - crop_w);
    let y = (cy + bh * 0.12 - crop_h / 2.0).clamp(0.0, ph - crop_h);
    let (x, y, w, h) =
        (x.round() as u32, y.round() as u32, (crop_w.round() as u32).max(1), (crop_h.round() as u32).max(1));
    Ok(image::imageops::crop_imm(pic, x, y, w.min(pic.width() - x), h.min(pic.height() - y)).to_image())
}

/// The picture with what is behind the person replaced: the segmentation mask's soft edge
/// blends the person over a colour, another picture (fitted to cover) or a blur of the picture.
fn replace_background(
    engine: &Engine,
    pic: image::RgbaImage,
    with: &ReplaceBackground,
    inputs: &Inputs,
    canvas_h: u32,
) -> Result<image::RgbaImage, String> {
    let segmenter =
        engine.segmenter().map_err(|e| format!("background replacement needs the segmentation model: {e}"))?;
    let (w, h) = pic.dimensions();
    let rgb: Vec<u8> = pic.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
    let mask = segmenter.mask(w, h, &rgb).map_err(|e| e.to_string())?;
    let behind = match with {
        ReplaceBackground::Color(c) => picture::solid(w, h, c.rgba()),
        ReplaceBackground::Image(f) => {
            let bg = picture::load(&inputs.path(f), limits::MAX_IMAGE_PIXELS).map_err(|e| format!("image: {e}"))?;
            picture::fit(&bg, w, h, FitMode::Cover, [0, 0, 0, 255])
        }
        // The radius is in output pixels; the picture may be larger than the frame.
        ReplaceBackground::Blur(r) => image::imageops::fast_blur(&pic, r * h as f32 / canvas_h.max(1) as f32),
    };
    let mut out = behind;
    for ((o, p), a) in out.pixels_mut().zip(pic.pixels()).zip(&mask.alpha) {
        let a = *a as u32;
        for c in 0..3 {
            o[c] = ((p[c] as u32 * a + o[c] as u32 * (255 - a) + 127) / 255) as u8;
        }
        o[3] = p[3];
    }
    Ok(out)
}

/// The face's rig on a canvas: face detection, then the mesh's lips, chin, eyes and face box.
fn locate_face(engine: &Engine, rgba: &image::RgbaImage, face_index: Option<usize>) -> Result<FaceRig, String> {
    use reelsmith_models::face::mesh;
    let (face, rgb) = find_face(engine, rgba, face_index)?;
    let (_, face_mesh) = engine.faces().map_err(|e| format!("talking-head needs the face models: {e}"))?;
    let (w, h) = rgba.dimensions();
    let lm = face_mesh.landmarks(w, h, &rgb, &face).map_err(|e| e.to_string())?;
    let p = |i: usize| lm.points[i];
    let (a, b) = (p(mesh::MOUTH_RIGHT)[0], p(mesh::MOUTH_LEFT)[0]);
    let eye = |outer: usize, inner: usize, upper: usize, lower: usize| {
        let (xo, xi) = (p(outer)[0], p(inner)[0]);
        EyeGeometry { left_x: xo.min(xi), right_x: xo.max(xi), upper_y: p(upper)[1], lower_y: p(lower)[1] }
    };
    let [bx, by, bw, bh] = face.bbox;
    let chin = p(mesh::CHIN);
    Ok(FaceRig {
        mouth: MouthGeometry {
            lips_y: (p(mesh::UPPER_LIP_INNER)[1] + p(mesh::LOWER_LIP_INNER)[1]) / 2.0,
            left_x: a.min(b),
            right_x: a.max(b),
            chin_y: chin[1],
        },
        eyes: [
            eye(mesh::RIGHT_EYE_OUTER, mesh::RIGHT_EYE_INNER, mesh::RIGHT_EYE_UPPER, mesh::RIGHT_EYE_LOWER),
            eye(mesh::LEFT_EYE_OUTER, mesh::LEFT_EYE_INNER, mesh::LEFT_EYE_UPPER, mesh::LEFT_EYE_LOWER),
        ],
        // The head turns about the neck, a little below the chin.
        head: HeadGeometry {
            cx: bx + bw / 2.0,
            cy: by + bh / 2.0,
            radius: bh.max(bw) / 2.0,
            pivot_x: chin[0],
            pivot_y: chin[1] + bh * 0.25,
        },
    })
}

/// Each spoken word's IPA, in the order of `speech.words`, kept beside the narration in its
/// cache entry (phonemizing costs an espeak call per word). None when phonemizing fails: the
/// mouth then follows the loudness alone.
fn word_phonemes(spec: &Spec, scene: &Scene, speech: &Speech) -> Option<Vec<String>> {
    let path = speech.path.parent()?.join("phonemes.json");
    if let Some(v) = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
        && v.len() == speech.words.len()
    {
        return Some(v);
    }
    let o = scene.narration.as_ref().map(|n| &n.voice);
    let engine = o.and_then(|v| v.engine.as_deref()).unwrap_or(&spec.voice.engine);
    let name = o.and_then(|v| v.name.as_deref()).unwrap_or(&spec.voice.name);
    // espeak-ng voices phonemize as themselves; a Piper voice by its language (en_US-… → en-us).
    let voice = if engine == "espeak-ng" {
        name.to_string()
    } else {
        name.split('-').next().unwrap_or("en").replace('_', "-").to_ascii_lowercase()
    };
    let ipa: Vec<String> = speech
        .words
        .iter()
        .map(|w| reelsmith_media::tts::phonemize_ipa(&w.word, &voice).map(|c| c.join(" ")))
        .collect::<Result<_, _>>()
        .ok()?;
    // Written beside the narration atomically; losing a race only means computing it twice.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if fs::write(&tmp, serde_json::to_vec(&ipa).ok()?).is_ok() {
        let _ = fs::rename(&tmp, &path);
    }
    Some(ipa)
}

/// Mouth openings (0-255) for each frame of a talking-head scene, from its narration.
fn mouth_openings(speech: &Speech, narration_frame: u64, frames: u64, fps: f64) -> Result<Vec<u8>, RenderError> {
    let bytes = fs::read(&speech.path)?;
    let samples: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let lead = (narration_frame as f64 / fps * MIX_RATE as f64) as usize;
    let mut padded = vec![0.0f32; lead];
    padded.extend(samples);
    Ok(mouth::openings(&padded, MIX_RATE, fps, frames as usize)
        .into_iter()
        .map(|o| (o * 255.0).round() as u8)
        .collect())
}

/// Subtitle pages on the video's timeline; word-highlight states of one page become one cue.
fn captions(tl: &Timeline, looks: &[Arc<SceneLook>]) -> Vec<report::Caption> {
    let fps = tl.fps as f64;
    let mut out: Vec<report::Caption> = vec![];
    for (span, look) in tl.scenes.iter().zip(looks) {
        for st in &look.subtitles {
            let (start_s, end_s) = ((span.start + st.from) as f64 / fps, (span.start + st.to) as f64 / fps);
            match out.last_mut() {
                Some(last) if last.text == st.text && (last.end_s - start_s).abs() < 1e-6 => last.end_s = end_s,
                _ => out.push(report::Caption { start_s, end_s, text: st.text.clone() }),
            }
        }
    }
    out
}

fn scene_look(
    r: &Render<'_>,
    tl: &Timeline,
    i: usize,
    canvas: &(Key, PathBuf, u32, u32),
    speech: Option<&Speech>,
) -> Result<SceneLook, RenderError> {
    let (text, spec, inputs) = (&*r.text, r.spec, &r.inputs);
    let scene = &spec.scenes[i];
    let span = &tl.scenes[i];
    let (w, h) = spec.output.dimensions();
    let subs = &spec.subtitles;
    let sub_look = text_look(&subs.font, "", h, w, subs.max_width, subs.outline.as_ref(), subs.r#box.as_ref());
    let states = match (subs.enabled, speech) {
        (true, Some(s)) => scene::subtitle_states(
            text,
            &s.words,
            &sub_look.style(),
            subs,
            sub_look.max_width,
            span.narration_frame,
            tl.fps as f64,
            span.frames,
        ),
        _ => vec![],
    };
    let (zoom, pan) = match scene.motion {
        Motion::None | Motion::TalkingHead { .. } => ((1.0, 1.0), Default::default()),
        Motion::KenBurns { zoom_from, zoom_to, pan } => ((zoom_from, zoom_to), pan),
    };
    let talking = match (&scene.motion, speech) {
        (Motion::TalkingHead { blink, head_motion, .. }, Some(s)) => {
            let rig: FaceRig =
                serde_json::from_slice(&fs::read(canvas.1.join("face.json"))?).map_err(std::io::Error::other)?;
            let fps = tl.fps as f64;
            let mut openings = mouth_openings(s, span.narration_frame, span.frames, fps)?;
            // Spoken text gets mouth shapes from its phonemes; a recording keeps the loudness.
            let spoken = scene.narration.as_ref().is_some_and(|n| n.text.is_some());
            let spreads = match spoken.then(|| word_phonemes(spec, scene, s)).flatten() {
                Some(ipa) => {
                    let lead = span.narration_frame as f64 / fps;
                    let words: Vec<(f64, f64, String)> =
                        s.words.iter().zip(ipa).map(|(w, p)| (w.start + lead, w.end + lead, p)).collect();
                    let track = mouth::viseme_track(&words, fps, span.frames as usize);
                    for (o, v) in openings.iter_mut().zip(&track) {
                        *o = (*o as f32 * v.open.clamp(0.0, 1.0)).round() as u8;
                    }
                    track.iter().map(|v| (v.spread.clamp(-1.0, 1.0) * 127.0).round() as i8).collect()
                }
                None => vec![],
            };
            Some(Talking {
                rig,
                openings,
                spreads,
                blink: *blink,
                head_motion: *head_motion,
                seed: i as u64 + 1,
                fps: tl.fps as f64,
            })
        }
        _ => None,
    };
    Ok(SceneLook {
        canvas_key: canvas.0.hex(),
        canvas_width: canvas.2,
        canvas_height: canvas.3,
        frames: span.frames,
        zoom,
        pan,
        overlay: scene.overlay.as_ref().map(|o| TextLook {
            position: Some(o.position),
            ..text_look(
                &o.font,
                &o.text,
                h,
                w,
                0.9,
                Some(&reelsmith_spec::Outline { color: reelsmith_spec::Color::rgb(0, 0, 0), width: 0.06 }),
                o.r#box.as_ref(),
            )
        }),
        subtitles: states,
        subtitle_style: Some(sub_look),
        subtitle_highlight: subs.highlight_color.rgba(),
        subtitle_position: (subs.position, subs.margin),
        talking,
        clip: clip_look(i, scene, span, tl.fps, canvas, inputs)?,
    })
}

/// How a scene's clip plays on its canvas: the file, the part of it, and the fit as a filter.
fn clip_look(
    i: usize,
    scene: &Scene,
    span: &plan::SceneSpan,
    fps: u32,
    canvas: &(Key, PathBuf, u32, u32),
    inputs: &Inputs,
) -> Result<Option<ClipLook>, RenderError> {
    let (Some(c), Some(info)) = (&scene.video, inputs.clips.get(&i)) else { return Ok(None) };
    let (dir, cw, ch) = (&canvas.1, canvas.2, canvas.3);
    let scale = |mode: &str| format!("scale={cw}:{ch}:force_original_aspect_ratio={mode}:force_divisible_by=2");
    let (filter, backdrop) = match scene.fit {
        Fit::Cover => (format!("[0:v]{},crop={cw}:{ch}[out]", scale("increase")), None),
        Fit::Contain => (
            format!("[0:v]{}[fg];[1:v][fg]overlay=(W-w)/2:(H-h)/2:shortest=1[out]", scale("decrease")),
            Some(dir.join("canvas.yuv")),
        ),
        // As stills do: a small, blurred, darkened cover copy behind the whole clip.
        Fit::ContainBlur => {
            let (sw, sh) = ((cw / 16).max(2), (ch / 16).max(2));
            (
                format!(
                    "[0:v]split[a][b];[a]scale={sw}:{sh}:force_original_aspect_ratio=increase,crop={sw}:{sh},\
                     gblur=sigma=2,scale={cw}:{ch},colorlevels=romax=0.78:gomax=0.78:bomax=0.78[bg];\
                     [b]{}[fg];[bg][fg]overlay=(W-w)/2:(H-h)/2[out]",
                    scale("decrease")
                ),
                None,
            )
        }
    };
    let title = match fs::read(dir.join("title.json")) {
        Ok(b) => {
            let v: serde_json::Value = serde_json::from_slice(&b).map_err(std::io::Error::other)?;
            let n = |k: &str| v[k].as_i64().unwrap_or(0);
            Some((dir.join("title.rgba"), [n("x") as i32, n("y") as i32], [n("width") as u32, n("height") as u32]))
        }
        Err(_) => None,
    };
    Ok(Some(ClipLook {
        hash: inputs.hash(&c.file),
        path: inputs.path(&c.file),
        start: c.start,
        end: c.end,
        frames: ((info.seconds * fps as f64).round() as u64).max(1),
        fps,
        looped: c.r#loop,
        first_frame: span.narration_frame,
        filter,
        backdrop,
        title,
    }))
}

#[derive(Serialize)]
struct SegmentKey<'a> {
    segment: &'a Segment,
    scenes: Vec<&'a SceneLook>,
    width: u32,
    height: u32,
    fps: u32,
    encoder: H264Encoder,
    preset: &'a str,
    crf: u8,
    /// The spec's font files, when it has any (overlays and subtitles are drawn with them).
    #[serde(skip_serializing_if = "str::is_empty")]
    fonts: &'a str,
}

fn segment_key(seg: &Segment, looks: &[Arc<SceneLook>], s: &VideoSettings, fonts: &str) -> Key {
    // A segment depends only on the scenes it shows, so editing scene 3 leaves scene 1's key alone.
    let scenes = match *seg {
        Segment::Body { scene, .. } => vec![&*looks[scene]],
        Segment::Transition { scene, .. } => vec![&*looks[scene], &*looks[scene + 1]],
    };
    // Encoder threads change the bitstream slightly but not the picture: leave them out.
    cache::key(
        Stage::Segment.cache_name(),
        &SegmentKey {
            segment: seg,
            scenes,
            width: s.width,
            height: s.height,
            fps: s.fps,
            encoder: s.encoder,
            preset: &s.preset,
            crf: s.crf,
            fonts,
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn encode_segment(
    text: &Arc<TextRenderer>,
    seg: &Segment,
    looks: &[Arc<SceneLook>],
    load_canvas: &(dyn Fn(usize) -> Result<Arc<Yuv420>, RenderError> + Sync),
    settings: &VideoSettings,
    out: &Path,
    opts: &RenderOptions,
    done: &AtomicU64,
    total: u64,
) -> Result<(), RenderError> {
    let (w, h) = (settings.width, settings.height);
    let renderer = |i: usize| -> Result<SceneRenderer, RenderError> {
        Ok(SceneRenderer::new(looks[i].clone(), load_canvas(i)?, text.clone(), w, h))
    };
    let mut enc = VideoEncoder::start(settings, out)?;
    let mut frame = Yuv420::solid(w, h, [0, 0, 0]);
    let report = |n: u64| {
        let d = done.fetch_add(n, Ordering::Relaxed) + n;
        if d.is_multiple_of(10) || d == total {
            opts.emit(Progress::Frames { done: d, total });
        }
    };
    match *seg {
        Segment::Body { scene, from, to } => {
            let mut r = renderer(scene)?;
            for local in from..to {
                if opts.cancelled() {
                    return Err(RenderError::Cancelled);
                }
                r.render(local, &mut frame)?;
                enc.write_frame(&frame)?;
                report(1);
            }
        }
        Segment::Transition { scene, kind, frames } => {
            let mut ra = renderer(scene)?;
            let mut rb = renderer(scene + 1)?;
            let mut a = frame.clone();
            let mut b = frame.clone();
            let a_start = looks[scene].frames - frames;
            for k in 0..frames {
                if opts.cancelled() {
                    return Err(RenderError::Cancelled);
                }
                ra.render(a_start + k, &mut a)?;
                rb.render(k, &mut b)?;
                // Neither end of the blend is a pure frame of one scene.
                let p = (k + 1) as f32 / (frames + 1) as f32;
                scene::blend_transition(kind, &mut a, &mut b, p, &mut frame);
                enc.write_frame(&frame)?;
                report(1);
            }
        }
    }
    enc.finish()?;
    Ok(())
}
