//! Before any stage: validation that needs the files (voices, fonts, video clips) and the
//! hashes of every file the spec references, taken once per render.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reelsmith_media::ffmpeg;
use reelsmith_media::text::TextRenderer;
use reelsmith_spec::{ReplaceBackground, Spec, Validator, limits};

use super::MAX_NARRATION_SECONDS;
use crate::cache;
use crate::{Engine, RenderError};

/// Files referenced by the spec, hashed once per render, and what the video clips hold.
pub(super) struct Inputs {
    pub(super) base: PathBuf,
    pub(super) hashes: BTreeMap<String, String>,
    pub(super) clips: BTreeMap<usize, ClipInfo>,
    /// The spec's own font files (subtitles, overlays) and one hash of them all ("" when it has
    /// none): every look drawn with them is keyed by it.
    pub(super) font_files: Vec<PathBuf>,
    pub(super) fonts_key: String,
}

/// A scene's video clip as probed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClipInfo {
    /// Seconds from the clip's `start` to its `end` (or the file's end).
    pub(super) seconds: f64,
    pub(super) has_audio: bool,
}

impl Inputs {
    pub(super) fn hash(&self, name: &str) -> String {
        self.hashes.get(name).cloned().unwrap_or_default()
    }
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }
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
pub(super) fn hash_inputs(spec: &Spec, base: &Path, clips: BTreeMap<usize, ClipInfo>) -> Result<Inputs, RenderError> {
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
pub(super) fn reject_remote_scenes(spec: &Spec) -> Result<(), RenderError> {
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::process::Command;

    use super::*;

    #[test]
    fn talking_heads_for_d_id_are_refused_with_their_field_named() {
        let spec = reelsmith_spec::parse(
            r#"{"version":1,"scenes":[{"duration":1},
                {"image":"face.png","duration":1,"motion":{"type":"talking-head","provider":"d-id"}}]}"#,
        )
        .unwrap();
        let err = reject_remote_scenes(&spec).unwrap_err().to_string();
        assert!(err.contains("scenes[1].motion.provider"), "{err}");
    }

    /// A 2 s 64x36 clip with a tone, written by FFmpeg.
    fn clip(dir: &Path) -> PathBuf {
        let path = dir.join("clip.mp4");
        let ok = Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x36:rate=10:duration=2"])
            .args(["-f", "lavfi", "-i", "sine=duration=2", "-shortest", "-pix_fmt", "yuv420p"])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ffmpeg wrote the clip");
        path
    }

    fn video(json: &str) -> reelsmith_spec::VideoClip {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_clip_is_probed_for_its_length_and_sound() {
        let dir = tempfile::tempdir().unwrap();
        let path = clip(dir.path());
        let info = probe_clip(&path, &video(r#"{"file":"clip.mp4","start":0.5}"#)).unwrap();
        assert!((info.seconds - 1.5).abs() < 0.05, "{}", info.seconds);
        assert!(info.has_audio);
        let err = probe_clip(&path, &video(r#"{"file":"clip.mp4","start":3}"#)).unwrap_err();
        assert!(err.contains("start is 3 s but clip.mp4 lasts 2.00 s"), "{err}");
        fs::write(dir.path().join("junk.mp4"), b"not a video").unwrap();
        let err = probe_clip(&dir.path().join("junk.mp4"), &video(r#"{"file":"junk.mp4"}"#)).unwrap_err();
        assert!(err.contains("junk.mp4 is not a readable video"), "{err}");
    }

    #[test]
    fn inputs_are_hashed_by_content_not_by_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.png"), b"one").unwrap();
        fs::write(dir.path().join("b.png"), b"one").unwrap();
        let spec = reelsmith_spec::parse(
            r#"{"version":1,"scenes":[{"image":"a.png","duration":1},{"image":"b.png","duration":1}]}"#,
        )
        .unwrap();
        let inputs = hash_inputs(&spec, dir.path(), BTreeMap::new()).unwrap();
        assert_eq!(inputs.hash("a.png"), inputs.hash("b.png"));
        assert!(!inputs.hash("a.png").is_empty());
        fs::write(dir.path().join("b.png"), b"two").unwrap();
        let inputs = hash_inputs(&spec, dir.path(), BTreeMap::new()).unwrap();
        assert_ne!(inputs.hash("a.png"), inputs.hash("b.png"));
    }
}
