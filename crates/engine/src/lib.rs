//! The Reelsmith render engine: spec → plan → cached stages → parallel segments → MP4.
//!
//! Stages, each cached by a content hash of its inputs ([`cache`]):
//! 1. `narration`: speech (or a recording) per scene, as 48 kHz mono plus word timings;
//! 2. `canvas`: each scene's picture fitted, titled and converted to YUV once, at the size its
//!    largest Ken Burns zoom needs;
//! 3. `audio`: narration placed on the timeline, music looped and ducked, loudness normalised, AAC;
//! 4. `segments`: scene bodies and transitions composited frame by frame and piped to parallel
//!    encoders — an unchanged segment is never encoded again;
//! 5. `concat`: stream-copy join of the segments with the audio.

pub mod cache;
pub mod cost;
pub mod encoders;
pub mod plan;
pub mod report;
pub mod scene;
pub mod stage;
mod stages;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use reelsmith_media::ffmpeg::{self, FfmpegError};
use reelsmith_media::text::TextRenderer;
use reelsmith_media::tts::{EspeakNg, SpeechEngine};
use reelsmith_models::{FaceDetector, FaceMesh};
use reelsmith_spec::{ParseError, Spec, ValidationError, Validator};

pub use cache::Cache;
pub use report::{Report, SegmentInfo};
pub use stage::Stage;

/// Why a render failed. [`RenderError::code`] gives a stable code for APIs.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Ffmpeg(#[from] FfmpegError),
    #[error("speech synthesis failed: {0}")]
    Speech(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("render cancelled")]
    Cancelled,
    /// The render ran in a process of its own, which ran out of the memory it may use.
    #[error(
        "the render needed more memory than the {limit_mb} MB a render may use: make the video smaller or shorter, or raise render_memory_limit_mb"
    )]
    OutOfMemory { limit_mb: u64 },
    /// The render ran in a process of its own, which failed as described (`code` is one of
    /// [`RenderError::code`]'s), or died.
    #[error("{message}")]
    Isolated { code: &'static str, message: String, input_error: bool },
}

/// The in-process AAC encoder's errors are reported as the FFmpeg encoder's were.
impl From<reelsmith_media::aac::AacError> for RenderError {
    fn from(e: reelsmith_media::aac::AacError) -> Self {
        Self::Ffmpeg(e.into())
    }
}

impl RenderError {
    /// The spec itself is at fault (it does not parse or validate, or it needs more memory than
    /// a render may use): retrying cannot help, and the caller must change it.
    pub fn is_input_error(&self) -> bool {
        matches!(self, Self::Parse(_) | Self::Invalid(_) | Self::OutOfMemory { .. })
            || matches!(self, Self::Isolated { input_error: true, .. })
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Parse(_) => ParseError::CODE,
            Self::Invalid(_) => ValidationError::CODE,
            Self::Ffmpeg(FfmpegError::Missing(_)) => "ffmpeg_missing",
            Self::Ffmpeg(_) => "ffmpeg_failed",
            Self::Speech(_) => "speech_failed",
            Self::Io(_) => "io",
            Self::Cancelled => "cancelled",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::Isolated { code, .. } => code,
        }
    }

    /// Every code [`RenderError::code`] gives (a render in another process reports its code
    /// as text; this turns it back into the stable one).
    pub const CODES: [&'static str; 9] = [
        ParseError::CODE,
        ValidationError::CODE,
        "ffmpeg_missing",
        "ffmpeg_failed",
        "speech_failed",
        "io",
        "cancelled",
        "out_of_memory",
        "render_crashed",
    ];

    /// A single issue at `path`, in the same form as spec validation errors.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        let mut v = Validator::default();
        v.push(path, message);
        Self::Invalid(v.finish().unwrap_err())
    }
}

/// What the engine tells a progress display.
#[derive(Clone, Debug)]
pub enum Progress {
    /// A stage started; `total` items (frames for `segments`).
    Stage { name: &'static str, total: u64 },
    /// Frames composited and encoded so far, out of the frames that need encoding.
    Frames { done: u64, total: u64 },
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

#[derive(Clone, Default)]
pub struct RenderOptions {
    /// Segments encoded at once; default: the number of cores.
    pub jobs: Option<usize>,
    /// Threads per encoder; default: cores / jobs.
    pub encoder_threads: Option<u32>,
    pub progress: Option<ProgressFn>,
    /// Set to stop a render between frames.
    pub cancel: Option<Arc<AtomicBool>>,
    /// How much of the pipeline to run (distributed renders split it across workers).
    pub scope: Scope,
    /// Cache entries this render makes or uses are keyed by this too (the service gives each
    /// API key its own), so one tenant's render never hits another's entries: a hit would tell
    /// it what the other rendered (narration text, pictures).
    pub cache_scope: Option<String>,
    /// The most bytes of new cache entries this render may write (default and at most: the
    /// cache's size). A service running several renders at once on one cache gives each a
    /// share, so that together they never need more than the cache holds.
    pub cache_share: Option<u64>,
    /// Write a live stream (HLS) while rendering: see [`LiveOptions`].
    pub live: Option<LiveOptions>,
    /// Draw every frame of still spans too, and encode them untuned: what a render costs
    /// without still detection (benchmarks measure the difference; the cache does not know).
    pub redraw_still_spans: bool,
}

/// Where a live stream goes: an HLS playlist (`stream.m3u8`) of fragmented MP4 pieces
/// (`init.mp4`, `seg-N.m4s`), published in order as segments finish and closed with
/// `#EXT-X-ENDLIST` when the last one is.
#[derive(Clone)]
pub struct LiveOptions {
    /// Where the pieces are written before they are handed over.
    pub dir: PathBuf,
    /// Put before each piece's name in the playlist (e.g. `stream/`).
    pub uri_prefix: String,
    /// Called with each file's public name (`init.mp4`, `seg-3.m4s`, `stream.m3u8`) and a
    /// fresh file holding it, which the callee may move or delete: pieces before the playlist
    /// that lists them, the playlist once per piece.
    pub publish: PublishFn,
}

/// The public name of a live stream's playlist (see [`LiveOptions::publish`]).
pub const LIVE_PLAYLIST: &str = "stream.m3u8";

/// Receives a live stream's files: see [`LiveOptions::publish`].
pub type PublishFn = Arc<dyn Fn(&str, &Path) + Send + Sync>;

/// How much of the pipeline a render runs.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    /// The whole video.
    #[default]
    Full,
    /// Narration and canvases (cached for whoever renders next), then stop: the report lists
    /// the segments and which are cached already.
    Plan,
    /// Plan, then encode only these segments (into the cache); no soundtrack, no final join.
    Segments(Vec<usize>),
}

impl RenderOptions {
    fn emit(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// The speech engines this process has, and why any other known one is missing.
pub struct Voices {
    engines: Vec<Arc<dyn SpeechEngine>>,
    missing: Vec<(&'static str, String)>,
}

impl Voices {
    /// espeak-ng (required) and, when its models are installed, Piper.
    pub fn detect() -> Result<Self, RenderError> {
        let espeak = EspeakNg::new().map_err(|e| RenderError::Speech(e.to_string()))?;
        let mut v = Self { engines: vec![Arc::new(espeak)], missing: vec![] };
        match reelsmith_models::Piper::discover() {
            Ok(p) => v.engines.push(Arc::new(p)),
            Err(e) => v.missing.push(("piper", e.to_string())),
        }
        Ok(v)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn SpeechEngine>> {
        self.engines.iter().find(|e| e.name() == name)
    }

    pub fn all(&self) -> &[Arc<dyn SpeechEngine>] {
        &self.engines
    }

    /// Why `name` cannot be used: missing models, or not an engine at all.
    pub fn why_not(&self, name: &str) -> String {
        match self.missing.iter().find(|(n, _)| *n == name) {
            Some((_, why)) => format!("speech engine {name:?} is not available here: {why}"),
            None => {
                let have: Vec<&str> = self.engines.iter().map(|e| e.name()).collect();
                format!("unknown speech engine {name:?}; available: {}", have.join(", "))
            }
        }
    }
}

/// Shared, long-lived parts: the cache, the speech engines, fonts. Cheap to share across renders.
pub struct Engine {
    pub cache: Cache,
    pub voices: Voices,
    pub text: Arc<TextRenderer>,
    faces: std::sync::OnceLock<Result<(FaceDetector, FaceMesh), String>>,
    segmenter: std::sync::OnceLock<Result<reelsmith_models::PersonSegmenter, String>>,
}

impl Engine {
    pub fn new(cache: Cache) -> Result<Self, RenderError> {
        Ok(Self {
            cache,
            voices: Voices::detect()?,
            text: Arc::new(TextRenderer::new()),
            faces: Default::default(),
            segmenter: Default::default(),
        })
    }

    /// The face models, loaded on first use (talking heads only); why not, when missing.
    pub fn faces(&self) -> Result<&(FaceDetector, FaceMesh), &str> {
        self.faces
            .get_or_init(|| {
                let d = FaceDetector::discover().map_err(|e| e.to_string())?;
                let m = FaceMesh::discover().map_err(|e| e.to_string())?;
                Ok((d, m))
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Person segmentation, loaded on first use.
    pub fn segmenter(&self) -> Result<&reelsmith_models::PersonSegmenter, &str> {
        self.segmenter
            .get_or_init(|| reelsmith_models::PersonSegmenter::discover().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }

    /// Reads, parses and renders a spec file; relative paths resolve against its folder.
    pub fn render_file(&self, spec_path: &Path, out: &Path, opts: &RenderOptions) -> Result<Report, RenderError> {
        let json = std::fs::read_to_string(spec_path)
            .map_err(|e| RenderError::at("$", format!("cannot read spec {}: {e}", spec_path.display())))?;
        let spec = reelsmith_spec::parse(&json)?;
        let base = spec_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        self.render(&spec, &base, out, opts)
    }

    /// Checks a spec without rendering: ranges, files, voices, fonts and video clips.
    pub fn validate(&self, spec: &Spec, base_dir: &Path) -> Result<(), RenderError> {
        stages::validate(self, spec, base_dir).map(drop)
    }

    /// Validates `spec` and estimates what rendering it will cost.
    pub fn check(&self, spec: &Spec, base_dir: &Path) -> Result<cost::Cost, RenderError> {
        stages::check(self, spec, base_dir)
    }

    /// Scene `scene`'s narration as a WAV file (for a provider that animates the scene
    /// elsewhere); returns the narration's cache key and its length in seconds.
    pub fn narration_wav(
        &self,
        spec: &Spec,
        base_dir: &Path,
        scene: usize,
        out: &Path,
        cache_scope: Option<&str>,
    ) -> Result<(String, f64), RenderError> {
        let r = stages::narration_wav(self, spec, base_dir, scene, out, cache_scope);
        let finish = self.cache.finish_run();
        let r = r?;
        finish?;
        Ok(r)
    }

    /// Renders `spec` to `out` (an MP4).
    pub fn render(
        &self,
        spec: &Spec,
        base_dir: &Path,
        out: &Path,
        opts: &RenderOptions,
    ) -> Result<Report, RenderError> {
        let _span = tracing::info_span!("render", scenes = spec.scenes.len(), output = %out.display()).entered();
        let started = Instant::now();
        let cpu0 = report::cpu_seconds();
        let memory = report::TreeMemory::start();
        let result = stages::run(self, spec, base_dir, out, opts);
        let peak = memory.finish();
        release_free_memory();
        // Statistics and eviction even when the render failed half-way: its entries are valid.
        let finish = self.cache.finish_run();
        let mut rep = result?;
        finish?;
        rep.wall_s = started.elapsed().as_secs_f64();
        rep.cpu_s = report::cpu_seconds() - cpu0;
        rep.peak_tree_rss_mb = peak.rss_mb;
        rep.peak_tree_pss_mb = peak.pss_mb;
        Ok(rep)
    }
}

/// Hands the pages the allocator holds free back to the system. Each render's threads
/// allocate in glibc arenas of their own, and freed blocks between live ones stay resident, so
/// a worker that renders job after job would otherwise carry its busiest render's leftovers
/// into the next one. One call per render; pages are faulted in again only when reused.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs `f` over `items` on up to `jobs` threads, keeping order; stops handing out work after
/// the first error.
pub(crate) fn parallel<T: Sync, R: Send, E: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<std::sync::Mutex<Option<Result<R, E>>>> = items.iter().map(|_| Default::default()).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= items.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = f(&items[i]);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *results[i].lock().expect("result slot") = Some(r);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for slot in results {
        match slot.into_inner().expect("result slot") {
            Some(Ok(r)) => out.push(r),
            Some(Err(e)) => return Err(e),
            None => {} // not started because an earlier item failed; that error is returned below
        }
    }
    Ok(out)
}

/// The encoder an output setting resolves to on this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub use ffmpeg::probe;

#[cfg(test)]
mod tests {
    use super::*;

    /// `CODES` lists what `code` gives (and `render_crashed`, which only a render process that
    /// died gets): a render in another process is known by its code alone.
    #[test]
    fn every_error_code_is_listed_and_every_listed_code_is_made() {
        let errors = [
            RenderError::Parse(ParseError { path: "$".into(), message: "bad".into() }),
            RenderError::at("scenes[0]", "bad"),
            RenderError::Ffmpeg(FfmpegError::Missing("ffmpeg".into())),
            RenderError::Ffmpeg(FfmpegError::Probe("bad".into())),
            RenderError::Speech("bad".into()),
            RenderError::Io(std::io::Error::other("bad")),
            RenderError::Cancelled,
            RenderError::OutOfMemory { limit_mb: 64 },
        ];
        let made: std::collections::BTreeSet<&str> = errors.iter().map(RenderError::code).collect();
        let listed: std::collections::BTreeSet<&str> = RenderError::CODES.into_iter().collect();
        assert_eq!(listed.len(), RenderError::CODES.len(), "no code listed twice");
        let mut expected = made.clone();
        expected.insert("render_crashed");
        assert_eq!(listed, expected);
    }
}
