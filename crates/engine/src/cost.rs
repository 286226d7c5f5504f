//! What a spec will cost to render, estimated before any work from the spec and the probed
//! lengths of its clips and recordings. The service refuses absurd specs with it (422) instead
//! of finding out after hours of one tenant's work.

use reelsmith_spec::{Spec, limits};
use serde::Serialize;

use crate::plan;

/// The estimate. Narration length is guessed from the text (speech engines read about 14
/// characters a second at speed 1), so it is an estimate, not a promise.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Cost {
    /// Length of the video, seconds.
    pub seconds: f64,
    pub frames: u64,
    /// Output pixels per frame.
    pub frame_pixels: u64,
    /// Frames × pixels, in millions: the compositor's and encoder's work.
    pub megapixel_frames: f64,
    /// The scenes' canvases (each the frame at its largest zoom), in millions of pixels: what
    /// the canvas stage draws and keeps in the cache.
    pub canvas_megapixels: f64,
    /// Characters of text drawn or spoken.
    pub text_chars: u64,
}

/// Characters of text narration spoken per second at speed 1.
const CHARS_PER_SECOND: f64 = 14.0;
/// A scene with neither duration, narration nor clip lasts this long.
const DEFAULT_SCENE_SECONDS: f64 = 3.0;

/// How much larger than the frame a scene's canvas is: the largest zoom its motion reaches,
/// so zoomed frames stay sharp, but never past `limits::MAX_CANVAS_PIXELS` (a 4096x4096 video
/// at zoom 4 would need 16384² canvases; past the limit zoomed frames are upscaled instead).
pub fn canvas_zoom(w: u32, h: u32, max_zoom: f32) -> f32 {
    let room = (limits::MAX_CANVAS_PIXELS as f64 / (w as f64 * h as f64).max(1.0)).sqrt() as f32;
    // Validation refuses zooms past the limit, but estimates also run on specs it has not
    // seen yet: an infinite zoom would make an infinite (or, times zero pixels, NaN) canvas.
    let zoom = if max_zoom.is_nan() { 1.0 } else { max_zoom.clamp(1.0, limits::MAX_ZOOM) };
    zoom.min(room).max(1.0)
}

/// Estimates `spec`'s cost; `clip_seconds(i)` and `recording_seconds(i)` give the length of
/// scene `i`'s video clip and narration recording where it has one.
pub fn estimate(
    spec: &Spec,
    clip_seconds: impl Fn(usize) -> Option<f64>,
    recording_seconds: impl Fn(usize) -> Option<f64>,
) -> Cost {
    let (w, h) = spec.output.dimensions();
    let frame_pixels = w as u64 * h as u64;
    let mut seconds = 0.0;
    let mut canvas_pixels = 0.0;
    let mut text_chars = 0u64;
    let chars = |t: &str| t.chars().count() as u64;
    for (i, s) in spec.scenes.iter().enumerate() {
        let voice = s.narration.as_ref().map(|n| spec.voice.with(&n.voice));
        let spoken = match s.narration.as_ref() {
            Some(n) if n.audio.is_some() => recording_seconds(i).map(|r| r + s.padding),
            Some(n) => n.text.as_deref().map(|t| {
                let speed = voice.as_ref().map_or(1.0, |v| v.speed as f64).max(0.1);
                chars(t) as f64 / (CHARS_PER_SECOND * speed) + s.padding
            }),
            None => None,
        };
        let natural = match (spoken, clip_seconds(i)) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b).unwrap_or(DEFAULT_SCENE_SECONDS),
        };
        seconds += s.duration.unwrap_or(natural).clamp(0.0, limits::MAX_SCENE_SECONDS);
        let z = canvas_zoom(w, h, plan::max_zoom(&s.motion)) as f64;
        canvas_pixels += frame_pixels as f64 * z * z;
        text_chars += s.title.as_deref().map_or(0, chars)
            + s.overlay.as_ref().map_or(0, |o| chars(&o.text))
            + s.narration.as_ref().and_then(|n| n.text.as_deref().or(n.transcript.as_deref())).map_or(0, chars);
    }
    let frames = (seconds * spec.output.fps as f64).round() as u64;
    Cost {
        seconds,
        frames,
        frame_pixels,
        megapixel_frames: frames as f64 * frame_pixels as f64 / 1e6,
        canvas_megapixels: canvas_pixels / 1e6,
        text_chars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        reelsmith_spec::parse(&json.to_string()).unwrap()
    }

    #[test]
    fn frames_pixels_and_canvases_add_up() {
        let s = spec(serde_json::json!({"version": 1, "output": {"width": 1000, "height": 500, "fps": 10},
        "scenes": [
            {"duration": 2, "title": "abc"},
            {"duration": 3, "motion": {"type": "ken-burns", "zoom_from": 1, "zoom_to": 2}},
            {"narration": {"text": "x".repeat(140)}, "padding": 0.5},
            {"video": {"file": "c.mp4"}},
        ]}));
        let c = estimate(&s, |i| (i == 3).then_some(4.0), |_| None);
        // 2 + 3 + (140 / 14 + 0.5) + 4 seconds.
        assert!((c.seconds - 19.5).abs() < 1e-9, "{c:?}");
        assert_eq!(c.frames, 195);
        assert_eq!(c.frame_pixels, 500_000);
        assert!((c.megapixel_frames - 97.5).abs() < 1e-9);
        // Three canvases of the frame, one at zoom 2 (four frames).
        assert!((c.canvas_megapixels - 0.5 * 7.0).abs() < 1e-6, "{c:?}");
        assert_eq!(c.text_chars, 143);
    }

    #[test]
    fn canvases_stop_at_the_limit() {
        assert_eq!(canvas_zoom(1920, 1080, 1.2), 1.2);
        let z = canvas_zoom(4096, 4096, 4.0);
        assert_eq!(z, 1.0);
        let z = canvas_zoom(2048, 2048, 4.0);
        assert!((z - 2.0).abs() < 1e-6, "{z}");
        assert_eq!(canvas_zoom(16, 16, 0.5), 1.0);
    }

    /// Found by the spec fuzzer: a zero width and a zoom of 1e300 (infinite as f32) made the
    /// canvas estimate 0 × ∞ = NaN. Such a spec fails validation, but the estimate runs first.
    #[test]
    fn unvalidated_sizes_and_zooms_give_a_finite_estimate() {
        assert_eq!(canvas_zoom(0, 180, f32::INFINITY), limits::MAX_ZOOM);
        assert_eq!(canvas_zoom(320, 180, f32::NAN), 1.0);
        let c = estimate(
            &spec(serde_json::json!({"version": 1, "output": {"width": 0, "height": 180}, "scenes": [
                {"duration": 2, "motion": {"type": "ken-burns", "zoom_from": 1e300, "zoom_to": 1.3}}]})),
            |_| None,
            |_| None,
        );
        assert!(c.canvas_megapixels.is_finite() && c.megapixel_frames.is_finite(), "{c:?}");
    }
}
