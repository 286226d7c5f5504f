use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Background, Motion, ReplaceBackground, Spec, TransitionKind, limits};

/// One problem in a spec, located by its JSON path.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a spec.
#[derive(Clone, Debug, PartialEq, thiserror::Error, serde::Serialize)]
pub struct ValidationError {
    pub issues: Vec<Issue>,
}

impl ValidationError {
    /// Stable machine-readable error code.
    pub const CODE: &'static str = "spec_invalid";
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Collects issues; the engine adds its own (unknown voices, undecodable images) with the same paths.
#[derive(Debug, Default)]
pub struct Validator {
    pub issues: Vec<Issue>,
}

impl Validator {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue { path: path.into(), message: message.into() });
    }

    fn range<T: PartialOrd + fmt::Display + Copy>(&mut self, path: &str, v: T, lo: T, hi: T) {
        // NaN fails both comparisons, so check "inside" rather than "outside".
        if !(v >= lo && v <= hi) {
            self.push(path, format!("must be between {lo} and {hi}, got {v}"));
        }
    }

    /// Checks that a referenced file exists, is a regular file and is not absurdly large.
    pub fn file(&mut self, path: &str, base_dir: &Path, name: &str) -> Option<PathBuf> {
        if name.trim().is_empty() {
            self.push(path, "file name is empty");
            return None;
        }
        let full = base_dir.join(name);
        match std::fs::metadata(&full) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.push(path, format!("file not found: {name}"));
                None
            }
            Err(e) => {
                self.push(path, format!("cannot read {name}: {e}"));
                None
            }
            Ok(m) if !m.is_file() => {
                self.push(path, format!("not a regular file: {name}"));
                None
            }
            Ok(m) if m.len() > limits::MAX_INPUT_BYTES => {
                self.push(
                    path,
                    format!(
                        "file too large: {name} is {} MB, the limit is {} MB",
                        m.len() / 1_000_000,
                        limits::MAX_INPUT_BYTES / 1_000_000
                    ),
                );
                None
            }
            Ok(_) => Some(full),
        }
    }

    pub fn finish(self) -> Result<(), ValidationError> {
        if self.issues.is_empty() { Ok(()) } else { Err(ValidationError { issues: self.issues }) }
    }
}

impl Spec {
    /// Checks ranges, limits and referenced files (resolved against `base_dir`).
    pub fn check(&self, base_dir: &Path, v: &mut Validator) {
        if self.version != crate::SPEC_VERSION {
            v.push("version", format!("unsupported spec version {}, this build reads version 1", self.version));
        }
        let o = &self.output;
        if o.size.is_some() && (o.width.is_some() || o.height.is_some()) {
            v.push("output", "give either size or width/height, not both");
        }
        if o.width.is_some() != o.height.is_some() {
            v.push("output", "width and height must be given together");
        }
        let (w, h) = o.dimensions();
        for (name, d) in [("output.width", w), ("output.height", h)] {
            v.range(name, d, limits::MIN_DIMENSION, limits::MAX_DIMENSION);
            if d % 2 != 0 {
                v.push(name, format!("must be even for 4:2:0 video, got {d}"));
            }
        }
        v.range("output.fps", o.fps, 1, limits::MAX_FPS);
        v.range("output.quality.crf", o.quality.crf, 0, 51);

        v.range("voice.speed", self.voice.speed, 0.5, 2.5);
        v.range("voice.pitch", self.voice.pitch, 0.5, 2.0);

        let s = &self.subtitles;
        v.range("subtitles.font.size", s.font.size, 0.01, 0.3);
        v.range("subtitles.margin", s.margin, 0.0, 0.45);
        v.range("subtitles.max_lines", s.max_lines, 1, 6);
        v.range("subtitles.max_width", s.max_width, 0.2, 1.0);
        if let Some(ol) = &s.outline {
            v.range("subtitles.outline.width", ol.width, 0.0, 0.5);
        }
        if let Some(b) = &s.r#box {
            v.range("subtitles.box.padding", b.padding, 0.0, 2.0);
        }
        if let Some(file) = &s.font.file {
            v.file("subtitles.font.file", base_dir, file);
        }

        if let Some(m) = &self.music {
            v.file("music.file", base_dir, &m.file);
            v.range("music.volume", m.volume, 0.0, 2.0);
            v.range("music.fade", m.fade, 0.0, 30.0);
            v.range("music.ducking.level", m.ducking.level, 0.0, 1.0);
            v.range("music.ducking.attack", m.ducking.attack, 0.0, 5.0);
            v.range("music.ducking.release", m.ducking.release, 0.0, 5.0);
        }
        if let Some(l) = self.audio.loudness {
            v.range("audio.loudness", l, -40.0, -5.0);
        }
        if let Some(kbps) = self.audio.bitrate_kbps {
            v.range("audio.bitrate_kbps", kbps, 32, 512);
        }

        if self.scenes.is_empty() {
            v.push("scenes", "at least one scene is required");
        }
        if self.scenes.len() > limits::MAX_SCENES {
            v.push("scenes", format!("too many scenes: {}, the limit is {}", self.scenes.len(), limits::MAX_SCENES));
            return;
        }
        let mut fixed_total = 0.0;
        for (i, scene) in self.scenes.iter().enumerate() {
            let p = format!("scenes[{i}]");
            if let Some(img) = &scene.image {
                v.file(&format!("{p}.image"), base_dir, img);
            }
            if let Some(clip) = &scene.video {
                let vp = format!("{p}.video");
                if scene.image.is_some() {
                    v.push(&vp, "give either an image or a video, not both");
                }
                v.file(&format!("{vp}.file"), base_dir, &clip.file);
                v.range(&format!("{vp}.start"), clip.start, 0.0, limits::MAX_TOTAL_SECONDS);
                if let Some(end) = clip.end
                    && end.partial_cmp(&clip.start) != Some(std::cmp::Ordering::Greater)
                {
                    v.push(format!("{vp}.end"), format!("must be after start ({}), got {end}", clip.start));
                }
                if clip.audio && scene.narration.is_some() {
                    v.push(format!("{vp}.audio"), "a scene with narration cannot also use the clip's sound");
                }
            }
            match &scene.replace_background {
                Some(_) if scene.image.is_none() => {
                    v.push(format!("{p}.replace_background"), "needs an image with a person in it");
                }
                Some(ReplaceBackground::Image(f)) => {
                    v.file(&format!("{p}.replace_background.image"), base_dir, f);
                }
                Some(ReplaceBackground::Blur(r)) => v.range(&format!("{p}.replace_background.blur"), *r, 1.0, 100.0),
                _ => {}
            }
            if let Some(Background::Gradient(g)) = &scene.background {
                v.range(&format!("{p}.background.gradient.angle"), g.angle, -360.0, 360.0);
            }
            if let Some(t) = &scene.title {
                text(v, &format!("{p}.title"), t);
            }
            if let Some(n) = &scene.narration {
                let np = format!("{p}.narration");
                match (&n.text, &n.audio) {
                    (Some(_), Some(_)) => v.push(&np, "give either text or audio, not both"),
                    (None, None) => v.push(&np, "give text to speak or an audio file"),
                    (Some(t), None) => {
                        text(v, &format!("{np}.text"), t);
                        if t.trim().is_empty() {
                            v.push(format!("{np}.text"), "text is empty");
                        }
                    }
                    (None, Some(a)) => {
                        v.file(&format!("{np}.audio"), base_dir, a);
                    }
                }
                if let Some(t) = &n.transcript {
                    text(v, &format!("{np}.transcript"), t);
                    if n.audio.is_none() {
                        v.push(format!("{np}.transcript"), "a transcript only goes with an audio file");
                    }
                }
                if let Some(times) = &n.word_times {
                    word_times(v, &format!("{np}.word_times"), times, n.transcript.as_deref());
                }
                if let Some(s) = n.voice.speed {
                    v.range(&format!("{np}.speed"), s, 0.5, 2.5);
                }
                if let Some(s) = n.voice.pitch {
                    v.range(&format!("{np}.pitch"), s, 0.5, 2.0);
                }
            }
            if let Some(d) = scene.duration {
                v.range(&format!("{p}.duration"), d, 0.1, limits::MAX_SCENE_SECONDS);
                fixed_total += d;
            }
            v.range(&format!("{p}.padding"), scene.padding, 0.0, 30.0);
            if let Motion::TalkingHead { head_motion, provider, .. } = scene.motion {
                v.range(&format!("{p}.motion.head_motion"), head_motion, 0.0, 2.0);
                if provider == crate::TalkingHeadProvider::DId && scene.replace_background.is_some() {
                    v.push(
                        format!("{p}.replace_background"),
                        "not available when D-ID renders the talking head (provider d-id)",
                    );
                }
                if scene.image.is_none() {
                    v.push(format!("{p}.motion"), "talking-head needs an image with a face");
                }
                if scene.narration.is_none() {
                    v.push(format!("{p}.motion"), "talking-head needs narration (text or audio) to speak");
                }
            }
            if let Motion::KenBurns { zoom_from, zoom_to, .. } = scene.motion {
                v.range(&format!("{p}.motion.zoom_from"), zoom_from, 1.0, limits::MAX_ZOOM);
                v.range(&format!("{p}.motion.zoom_to"), zoom_to, 1.0, limits::MAX_ZOOM);
            }
            if scene.transition.kind != TransitionKind::Cut {
                v.range(&format!("{p}.transition.duration"), scene.transition.duration, 0.04, 5.0);
            }
            if let Some(ov) = &scene.overlay {
                text(v, &format!("{p}.overlay.text"), &ov.text);
                v.range(&format!("{p}.overlay.font.size"), ov.font.size, 0.01, 0.3);
                if let Some(b) = &ov.r#box {
                    v.range(&format!("{p}.overlay.box.padding"), b.padding, 0.0, 2.0);
                }
                if let Some(file) = &ov.font.file {
                    v.file(&format!("{p}.overlay.font.file"), base_dir, file);
                }
            }
        }
        if fixed_total > limits::MAX_TOTAL_SECONDS {
            v.push(
                "scenes",
                format!("total duration {fixed_total:.0} s exceeds the limit of {} s", limits::MAX_TOTAL_SECONDS),
            );
        }
    }

    /// Validates the spec on its own (ranges, limits, files).
    pub fn validate(&self, base_dir: &Path) -> Result<(), ValidationError> {
        let mut v = Validator::default();
        self.check(base_dir, &mut v);
        v.finish()
    }
}

fn text(v: &mut Validator, path: &str, t: &str) {
    let n = t.chars().count();
    if n > limits::MAX_TEXT_CHARS {
        v.push(path, format!("text too long: {n} characters, the limit is {}", limits::MAX_TEXT_CHARS));
    }
}

/// `word_times`: one `[start, end]` per transcript word, finite, in order, within a scene.
fn word_times(v: &mut Validator, path: &str, times: &[[f64; 2]], transcript: Option<&str>) {
    let Some(t) = transcript else {
        v.push(path, "word times go with a transcript (the words they time)");
        return;
    };
    if times.len() > limits::MAX_TIMED_WORDS {
        v.push(path, format!("{} timed words; at most {}", times.len(), limits::MAX_TIMED_WORDS));
        return;
    }
    let words = t.split_whitespace().count();
    if times.len() != words {
        v.push(
            path,
            format!("{} times for {words} words of the transcript; give one [start, end] per word", times.len()),
        );
        return;
    }
    let mut previous = 0.0;
    for (i, [start, end]) in times.iter().copied().enumerate() {
        let ok =
            start.is_finite() && end.is_finite() && 0.0 <= start && start <= end && end <= limits::MAX_SCENE_SECONDS;
        if !ok {
            v.push(
                format!("{path}[{i}]"),
                format!("[{start}, {end}] is not a span of 0 to {} seconds", limits::MAX_SCENE_SECONDS),
            );
            return;
        }
        if start < previous {
            v.push(format!("{path}[{i}]"), "words must be in order (each starts no earlier than the one before)");
            return;
        }
        previous = start;
    }
}

#[cfg(test)]
mod tests {
    use crate::parse;

    fn issues(json: &str, dir: &std::path::Path) -> Vec<String> {
        match parse(json).unwrap().validate(dir) {
            Ok(()) => vec![],
            Err(e) => e.issues.iter().map(|i| i.to_string()).collect(),
        }
    }

    #[test]
    fn missing_file_is_named_with_its_path() {
        let dir = tempfile_dir();
        let got = issues(r#"{"version":1,"scenes":[{},{},{"image":"a.jpg"}]}"#, &dir);
        assert_eq!(got, vec!["scenes[2].image: file not found: a.jpg"]);
    }

    #[test]
    fn ranges_and_conflicts_are_reported_together() {
        let dir = tempfile_dir();
        let got = issues(
            r#"{"version":2,"output":{"width":641,"height":360,"fps":0},
               "scenes":[{"narration":{"text":"x","audio":"b.wav"},"motion":{"type":"ken-burns","zoom_to":9},
                          "transition":{"type":"crossfade","duration":-1}}]}"#,
            &dir,
        );
        let joined = got.join("\n");
        for needle in [
            "version: unsupported spec version 2",
            "output.width: must be even",
            "output.fps: must be between 1 and 120, got 0",
            "scenes[0].narration: give either text or audio",
            "scenes[0].motion.zoom_to: must be between 1 and 4, got 9",
            "scenes[0].transition.duration: must be between",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
    }

    #[test]
    fn empty_and_oversized_text_rejected() {
        let dir = tempfile_dir();
        let long = "a".repeat(crate::limits::MAX_TEXT_CHARS + 1);
        let json = format!(r#"{{"version":1,"scenes":[{{"narration":{{"text":"  "}}}},{{"title":"{long}"}}]}}"#);
        let got = issues(&json, &dir).join("\n");
        assert!(got.contains("scenes[0].narration.text: text is empty"), "{got}");
        assert!(got.contains("scenes[1].title: text too long: 5001 characters"), "{got}");
    }

    #[test]
    fn video_clips_are_checked() {
        let dir = tempfile_dir();
        std::fs::write(dir.join("c.mp4"), b"x").unwrap();
        std::fs::write(dir.join("p.png"), b"x").unwrap();
        let got = issues(
            r#"{"version":1,"scenes":[
              {"video":{"file":"missing.mp4"}},
              {"image":"p.png","video":{"file":"c.mp4","start":-1}},
              {"video":{"file":"c.mp4","start":2,"end":1}},
              {"video":{"file":"c.mp4","audio":true},"narration":{"text":"hi"}},
              {"video":{"file":"c.mp4"},"motion":{"type":"talking-head"},"narration":{"text":"hi"}}]}"#,
            &dir,
        )
        .join("\n");
        for needle in [
            "scenes[0].video.file: file not found: missing.mp4",
            "scenes[1].video: give either an image or a video",
            "scenes[1].video.start: must be between 0 and 3600, got -1",
            "scenes[2].video.end: must be after start (2), got 1",
            "scenes[3].video.audio: a scene with narration cannot also use the clip's sound",
            "scenes[4].motion: talking-head needs an image with a face",
        ] {
            assert!(got.contains(needle), "missing {needle:?} in:\n{got}");
        }
    }

    #[test]
    fn word_times_time_each_transcript_word_in_order() {
        let dir = tempfile_dir();
        std::fs::write(dir.join("v.wav"), b"x").unwrap();
        let scene = |times: &str, transcript: &str| {
            format!(r#"{{"narration":{{"audio":"v.wav","transcript":"{transcript}","word_times":{times}}}}}"#)
        };
        let json = format!(
            r#"{{"version":1,"scenes":[{},{},{},{},{}]}}"#,
            scene("[[0.0,0.4],[0.5,0.9]]", "Hello there."),
            scene("[[0.0,0.4]]", "Hello there."),
            scene("[[0.5,0.9],[0.1,0.3]]", "Hello there."),
            scene("[[0.5,0.2],[0.6,0.9]]", "Hello there."),
            r#"{"narration":{"audio":"v.wav","word_times":[[0,1]]}}"#,
        );
        let got = issues(&json, &dir).join("\n");
        assert!(!got.contains("scenes[0]"), "{got}");
        for needle in [
            "scenes[1].narration.word_times: 1 times for 2 words of the transcript",
            "scenes[2].narration.word_times[1]: words must be in order",
            "scenes[3].narration.word_times[0]: [0.5, 0.2] is not a span",
            "scenes[4].narration.word_times: word times go with a transcript",
        ] {
            assert!(got.contains(needle), "missing {needle:?} in:\n{got}");
        }
    }

    #[test]
    fn no_scenes_is_an_error() {
        let got = issues(r#"{"version":1,"scenes":[]}"#, &tempfile_dir());
        assert_eq!(got, vec!["scenes: at least one scene is required"]);
    }

    #[test]
    fn directory_instead_of_file() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("d.png")).unwrap();
        let got = issues(r#"{"version":1,"scenes":[{"image":"d.png"}]}"#, &dir);
        assert_eq!(got, vec!["scenes[0].image: not a regular file: d.png"]);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "reelsmith-spec-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
