//! The timeline: frame-exact scene spans, transitions as overlaps, and the segments the video
//! is cut into so that every transition is rendered once and each scene body on its own.
//!
//! Scene `i` covers global frames `[start_i, start_i + n_i)`; the transition into scene `i+1`
//! overlaps the last `m_i` frames of scene `i` with the first `m_i` of scene `i+1`, so
//! `start_{i+1} = start_i + n_i - m_i`. Segments: each scene's body (frames outside any
//! transition) and each transition. Editing scene `i` touches its body and its two transitions;
//! a fade through black is two segments (scene `i` fading out, scene `i+1` fading in), of which
//! an edit touches only its own scene's half.

use reelsmith_spec::{Motion, Spec, TransitionKind, Validator};
use serde::Serialize;

/// Frame layout of one scene.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SceneSpan {
    pub start: u64,
    pub frames: u64,
    /// Frames shared with the previous / next scene.
    pub overlap_in: u64,
    pub overlap_out: u64,
    /// Scene-local frame at which the narration starts.
    pub narration_frame: u64,
}

/// A piece of the video encoded on its own and joined by stream copy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Segment {
    /// Frames `[from, to)` of scene `scene` (local), with nothing else in them.
    Body { scene: usize, from: u64, to: u64 },
    /// The last `frames` of `scene` blended with the first `frames` of `scene + 1`, or one half
    /// of that blend.
    Transition {
        scene: usize,
        kind: TransitionKind,
        frames: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        half: Option<FadeHalf>,
    },
}

/// One half of a fade through black: each shows one scene only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FadeHalf {
    /// `scene` fading to black: the blend's first steps.
    Out,
    /// `scene + 1` coming out of black: the rest.
    In,
}

/// Steps of a `frames`-step fade through black that show the first scene: those before the
/// blend's midpoint (step `k` is at `(k + 1) / (frames + 1)`).
pub fn fade_out_steps(frames: u64) -> u64 {
    frames / 2
}

impl Segment {
    pub fn frames(&self) -> u64 {
        match *self {
            Segment::Body { from, to, .. } => to - from,
            Segment::Transition { frames, half, .. } => Self::steps(frames, half).count() as u64,
        }
    }

    /// The blend steps a transition segment holds.
    pub fn steps(frames: u64, half: Option<FadeHalf>) -> std::ops::Range<u64> {
        match half {
            None => 0..frames,
            Some(FadeHalf::Out) => 0..fade_out_steps(frames),
            Some(FadeHalf::In) => fade_out_steps(frames)..frames,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    pub fps: u32,
    pub total_frames: u64,
    pub scenes: Vec<SceneSpan>,
    pub segments: Vec<Segment>,
}

impl Timeline {
    pub fn duration(&self) -> f64 {
        self.total_frames as f64 / self.fps as f64
    }
}

/// Longest piece of a scene body encoded as one segment.
pub const CHUNK_SECONDS: f64 = 4.0;

/// Longest piece of a video clip scene's body: each piece decodes the clip from the keyframe
/// before its start, which in a long-GOP clip can be seconds of frames.
pub const CLIP_CHUNK_SECONDS: f64 = 10.0;

/// Longest piece of a still scene's body: its unchanged frames cost next to nothing (they
/// repeat the picture before), while each piece starts with a whole picture.
pub const STILL_CHUNK_SECONDS: f64 = 16.0;

/// Whether a view zoomed from `zoom_from` to `zoom_to`, panning towards `pan`, stays put.
pub fn fixed_view(zoom_from: f32, zoom_to: f32, pan: reelsmith_spec::Pan) -> bool {
    zoom_from == zoom_to && (zoom_from == 1.0 || pan == reelsmith_spec::Pan::Center)
}

/// Whether a scene's picture stands still (no clip, no motion, no talking face): its body is
/// encoded as a still (`stages::segment::motionless` decides from the drawn scene).
pub fn holds_still(scene: &reelsmith_spec::Scene) -> bool {
    scene.video.is_none()
        && match scene.motion {
            Motion::None => true,
            Motion::KenBurns { zoom_from, zoom_to, pan } => fixed_view(zoom_from, zoom_to, pan),
            Motion::TalkingHead { .. } => false,
        }
}

/// Seconds without narration when a scene's duration is automatic.
pub const SILENT_SCENE_SECONDS: f64 = 3.0;

/// Lays out the scenes given each one's narration length and video clip length (seconds; none
/// for a looped clip), reporting scenes too short for their transitions or narration.
pub fn layout(
    spec: &Spec,
    narration_seconds: &[Option<f64>],
    clip_seconds: &[Option<f64>],
    v: &mut Validator,
) -> Timeline {
    let fps = spec.output.fps.max(1) as f64;
    let n = spec.scenes.len();
    let frames_of = |s: f64| (s * fps).round().max(0.0) as u64;
    let overlap: Vec<u64> = (0..n)
        .map(|i| {
            let t = &spec.scenes[i].transition;
            if i + 1 == n || t.kind == TransitionKind::Cut { 0 } else { frames_of(t.duration).max(1) }
        })
        .collect();
    let mut scenes = Vec::with_capacity(n);
    let mut start = 0u64;
    for (i, scene) in spec.scenes.iter().enumerate() {
        let m_in = if i == 0 { 0 } else { overlap[i - 1] };
        let m_out = overlap[i];
        let narr = narration_seconds.get(i).copied().flatten();
        let clip = clip_seconds.get(i).copied().flatten();
        let frames = match scene.duration {
            Some(d) => {
                let f = frames_of(d).max(1);
                if let Some(ns) = narr
                    && m_in + frames_of(ns) > f
                {
                    v.push(
                        format!("scenes[{i}].duration"),
                        format!("the narration lasts {ns:.2} s but the scene only {d:.2} s (after its {:.2} s transition in)", m_in as f64 / fps),
                    );
                }
                f
            }
            None => {
                // A clip plays whole, like narration between the transitions.
                let body = match (narr, clip) {
                    (Some(ns), c) => (ns + scene.padding).max(c.unwrap_or(0.0)).max(0.5),
                    (None, Some(c)) => c,
                    (None, None) => SILENT_SCENE_SECONDS,
                };
                // Narration sits between the transitions, so they never cover speech.
                m_in + frames_of(body).max(1) + m_out
            }
        };
        if m_in + m_out > frames {
            v.push(
                format!("scenes[{i}].transition.duration"),
                format!(
                    "transitions in and out take {:.2} s but the scene lasts {:.2} s",
                    (m_in + m_out) as f64 / fps,
                    frames as f64 / fps
                ),
            );
        }
        scenes.push(SceneSpan { start, frames, overlap_in: m_in, overlap_out: m_out, narration_frame: m_in });
        start = (start + frames).saturating_sub(m_out);
    }
    let total_frames = scenes.last().map_or(0, |s| s.start + s.frames);
    if total_frames as f64 / fps > reelsmith_spec::limits::MAX_TOTAL_SECONDS {
        v.push(
            "scenes",
            format!(
                "the video would last {:.0} s, the limit is {} s",
                total_frames as f64 / fps,
                reelsmith_spec::limits::MAX_TOTAL_SECONDS
            ),
        );
    }

    let mut segments = vec![];
    for (i, s) in scenes.iter().enumerate() {
        let (from, to) = (s.overlap_in, s.frames.saturating_sub(s.overlap_out));
        // Long bodies are cut into chunks so every core keeps encoding to the end, also when one
        // edited scene is all there is to render.
        // A clip's chunks are longer: each one's decoder starts at the keyframe before it.
        let chunk = if spec.scenes[i].video.is_some() {
            CLIP_CHUNK_SECONDS
        } else if holds_still(&spec.scenes[i]) {
            STILL_CHUNK_SECONDS
        } else {
            CHUNK_SECONDS
        };
        let max_chunk = (chunk * fps).round().max(1.0) as u64;
        let mut pieces = (to.saturating_sub(from)).div_ceil(max_chunk);
        // An even number of pieces shares out evenly on 2 (and 4) cores: 3 pieces of one scene
        // on 2 cores leave one core encoding two while the other idles after one.
        if pieces > 1 && pieces % 2 == 1 {
            pieces += 1;
        }
        for k in 0..pieces {
            let a = from + (to - from) * k / pieces;
            let b = from + (to - from) * (k + 1) / pieces;
            segments.push(Segment::Body { scene: i, from: a, to: b });
        }
        let (kind, frames) = (spec.scenes[i].transition.kind, s.overlap_out);
        if kind == TransitionKind::FadeBlack && fade_out_steps(frames) > 0 {
            for half in [FadeHalf::Out, FadeHalf::In] {
                segments.push(Segment::Transition { scene: i, kind, frames, half: Some(half) });
            }
        } else if frames > 0 {
            segments.push(Segment::Transition { scene: i, kind, frames, half: None });
        }
    }
    Timeline { fps: spec.output.fps, total_frames, scenes, segments }
}

/// Largest zoom a scene's motion reaches (the canvas is prepared at that scale).
pub fn max_zoom(m: &Motion) -> f32 {
    match *m {
        Motion::None | Motion::TalkingHead { .. } => 1.0,
        Motion::KenBurns { zoom_from, zoom_to, .. } => zoom_from.max(zoom_to).max(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        reelsmith_spec::parse(json).unwrap()
    }

    #[test]
    fn segments_tile_the_timeline_exactly() {
        let s = spec(
            r#"{"version":1,"output":{"fps":10},"scenes":[
            {"duration":3,"transition":{"type":"crossfade","duration":0.5}},
            {"duration":2,"transition":{"type":"slide","duration":1}},
            {"duration":4}]}"#,
        );
        let mut v = Validator::default();
        let t = layout(&s, &[None, None, None], &[], &mut v);
        assert!(v.issues.is_empty());
        assert_eq!(t.total_frames, 30 + 20 + 40 - 5 - 10);
        assert_eq!(t.scenes[1].start, 25);
        assert_eq!(t.scenes[2].start, 35);
        let sum: u64 = t.segments.iter().map(Segment::frames).sum();
        assert_eq!(sum, t.total_frames);
        assert_eq!(t.segments.len(), 5);
        // Segments follow each other without gaps or overlaps.
        assert_eq!(t.segments[0], Segment::Body { scene: 0, from: 0, to: 25 });
        assert_eq!(t.segments[2], Segment::Body { scene: 1, from: 5, to: 10 });
        assert_eq!(
            t.segments[1],
            Segment::Transition { scene: 0, kind: TransitionKind::Crossfade, frames: 5, half: None }
        );
    }

    #[test]
    fn a_fade_through_black_is_two_segments_one_per_scene() {
        let s = spec(
            r#"{"version":1,"output":{"fps":10},"scenes":[
            {"duration":3,"transition":{"type":"fade-black","duration":1.5}},
            {"duration":3,"transition":{"type":"fade-black","duration":0.1}},{"duration":2}]}"#,
        );
        let t = layout(&s, &[None, None, None], &[], &mut Validator::default());
        let kind = TransitionKind::FadeBlack;
        assert_eq!(t.segments[1], Segment::Transition { scene: 0, kind, frames: 15, half: Some(FadeHalf::Out) });
        assert_eq!(t.segments[2], Segment::Transition { scene: 0, kind, frames: 15, half: Some(FadeHalf::In) });
        assert_eq!((t.segments[1].frames(), t.segments[2].frames()), (7, 8));
        // A one-step fade has no first half: one segment.
        assert_eq!(t.segments[4], Segment::Transition { scene: 1, kind, frames: 1, half: None });
        assert_eq!(t.segments.len(), 6);
        let sum: u64 = t.segments.iter().map(Segment::frames).sum();
        assert_eq!(sum, t.total_frames);
    }

    #[test]
    fn auto_duration_fits_narration_between_transitions() {
        let s = spec(
            r#"{"version":1,"output":{"fps":10},"scenes":[
            {"padding":0.5,"transition":{"type":"crossfade","duration":0.5}},{"padding":0}]}"#,
        );
        let mut v = Validator::default();
        let t = layout(&s, &[Some(2.0), Some(1.0)], &[], &mut v);
        assert_eq!(t.scenes[0].frames, 25 + 5);
        assert_eq!(t.scenes[1].frames, 5 + 10);
        assert_eq!(t.scenes[1].narration_frame, 5);
        // Scene 2's narration starts after the transition has finished.
        assert_eq!(t.scenes[1].start + t.scenes[1].narration_frame, 30);
    }

    #[test]
    fn clips_set_the_length_of_scenes_without_a_duration() {
        let s = spec(
            r#"{"version":1,"output":{"fps":10},"scenes":[
            {"transition":{"type":"crossfade","duration":0.5}},{"padding":0.5},{}]}"#,
        );
        let t = layout(&s, &[None, Some(1.0), None], &[Some(2.0), Some(3.0), None], &mut Validator::default());
        assert_eq!(t.scenes[0].frames, 20 + 5, "a silent clip plays whole before the transition");
        assert_eq!(t.scenes[1].frames, 5 + 30, "the longer of clip and narration + padding");
        assert_eq!(t.scenes[2].frames, 30, "a looped clip (no length) is a silent scene");
    }

    #[test]
    fn long_bodies_are_chunked_evenly() {
        let s = spec(r#"{"version":1,"output":{"fps":10},"scenes":[{"duration":9.5,"motion":{"type":"ken-burns"}}]}"#);
        let t = layout(&s, &[None], &[], &mut Validator::default());
        let bodies: Vec<&Segment> = t.segments.iter().collect();
        assert_eq!(bodies.len(), 4, "95 frames in an even number of chunks of at most 40");
        assert_eq!(bodies[0], &Segment::Body { scene: 0, from: 0, to: 23 });
        assert_eq!(bodies[3], &Segment::Body { scene: 0, from: 71, to: 95 });
        assert!(t.segments.iter().all(|s| s.frames() <= 40));
    }

    #[test]
    fn clip_bodies_are_cut_in_longer_chunks() {
        let s = spec(
            r#"{"version":1,"output":{"fps":10},"scenes":[{"duration":19,"video":{"file":"c.mp4"}},
            {"duration":19,"motion":{"type":"ken-burns"}},{"duration":19},
            {"duration":19,"motion":{"type":"ken-burns","zoom_from":1.2,"zoom_to":1.2}},
            {"duration":19,"motion":{"type":"ken-burns","zoom_from":1.2,"zoom_to":1.2,"pan":"left"}}]}"#,
        );
        let t = layout(&s, &[None; 5], &[None; 5], &mut Validator::default());
        let pieces = |scene: usize| {
            t.segments.iter().filter(|g| matches!(g, Segment::Body { scene: s, .. } if *s == scene)).count()
        };
        assert_eq!((pieces(0), pieces(1)), (2, 6), "10 s pieces for a clip, 4 s for a moving picture");
        assert_eq!((pieces(2), pieces(3)), (2, 2), "16 s for a still one, also a fixed crop");
        assert_eq!(pieces(4), 6, "a pan at a fixed zoom moves");
    }

    #[test]
    fn too_short_scenes_are_reported() {
        let s = spec(
            r#"{"version":1,"scenes":[{"duration":1,"transition":{"type":"crossfade","duration":2}},{"duration":1,"narration":{"text":"hi"}}]}"#,
        );
        let mut v = Validator::default();
        layout(&s, &[None, Some(3.0)], &[], &mut v);
        let all: Vec<String> = v.issues.iter().map(|i| i.to_string()).collect();
        assert!(all.iter().any(|m| m.starts_with("scenes[0].transition.duration")), "{all:?}");
        assert!(all.iter().any(|m| m.starts_with("scenes[1].duration: the narration lasts 3.00 s")), "{all:?}");
    }
}
