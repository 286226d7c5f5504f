//! Stage `segment`: one scene span encoded to H.264, keyed by everything drawn in it, so an
//! edit re-encodes only the spans it touches.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reelsmith_media::ffmpeg::{self, H264Encoder, VideoEncoder, VideoSettings};
use reelsmith_media::frame::Yuv420;
use reelsmith_media::text::TextRenderer;
use serde::Serialize;

use crate::cache::{self, Key};
use crate::plan::{FadeHalf, Segment};
use crate::scene::{self, SceneLook, SceneRenderer};
use crate::stage::Stage;
use crate::{Progress, RenderError, RenderOptions};

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
    /// libx264's API version when it runs in this process (its MP4s are written by Reelsmith,
    /// not FFmpeg, so they are other bytes than an FFmpeg child's).
    #[serde(skip_serializing_if = "Option::is_none")]
    x264: Option<u32>,
    /// How a still body is coded in this process (maps of its unchanged blocks, repeats written
    /// without the encoder): other bytes than a moving body's.
    #[serde(skip_serializing_if = "Option::is_none")]
    still: Option<&'static str>,
}

pub(super) fn segment_key(seg: &Segment, looks: &[Arc<SceneLook>], s: &VideoSettings, fonts: &str) -> Key {
    // A segment depends only on the scenes it shows, so editing scene 3 leaves scene 1's key alone.
    let scenes = match *seg {
        Segment::Body { scene, .. } => vec![&*looks[scene]],
        Segment::Transition { scene, half: None, .. } => vec![&*looks[scene], &*looks[scene + 1]],
        // Each half of a fade through black shows one scene.
        Segment::Transition { scene, half: Some(FadeHalf::Out), .. } => vec![&*looks[scene]],
        Segment::Transition { scene, half: Some(FadeHalf::In), .. } => vec![&*looks[scene + 1]],
    };
    let x264 = (s.encoder == H264Encoder::Libx264 && ffmpeg::x264_in_process()).then(reelsmith_media::x264::build);
    let still = (x264.is_some() && matches!(*seg, Segment::Body { scene, .. } if motionless(&looks[scene])))
        .then_some("block-maps+repeats");
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
            x264,
            still,
        },
    )
}

/// Whether a scene's picture stands still: no Ken Burns motion, no clip, no talking face. Its
/// frames then change only where a caption appears, changes or leaves.
pub(super) fn motionless(look: &SceneLook) -> bool {
    let (z0, z1) = look.zoom;
    crate::plan::fixed_view(z0, z1, look.pan) && look.talking.is_none() && look.clip.is_none()
}

/// How many still frames cost as much as one moving frame: a still frame is drawn once per
/// caption, x264 codes only the blocks a caption changes, and most frames are repeats written
/// without it (measured at 720p: about 1 ms a frame on average, the piece's first picture
/// included, against 10 ms for a Ken Burns frame).
const STILL_FRAMES_PER_MOVING: u64 = 8;

/// A segment's encoding work in moving frames, so the pool hands out the dearest first and no
/// long segment starts last, alone on one core.
pub(super) fn work(seg: &Segment, looks: &[Arc<SceneLook>], redraw_still: bool) -> u64 {
    match *seg {
        Segment::Body { scene, .. } if !redraw_still && motionless(&looks[scene]) => {
            seg.frames().div_ceil(STILL_FRAMES_PER_MOVING)
        }
        _ => seg.frames(),
    }
}

/// The caption a scene shows at scene-local frame `local` (the renderer's own choice).
fn caption_at(look: &SceneLook, local: u64) -> Option<usize> {
    look.subtitles.iter().position(|s| local >= s.from && local < s.to)
}

/// The caption a still scene showed on the last frame drawn, so its picture is drawn again only
/// when the caption changes.
#[derive(Default)]
struct ShownCaption(Option<Option<usize>>);

impl ShownCaption {
    /// Whether the frame at `local` shows another caption than the frame asked about before
    /// (true for the first frame asked about).
    fn changes_at(&mut self, look: &SceneLook, local: u64) -> bool {
        let caption = Some(caption_at(look, local));
        std::mem::replace(&mut self.0, caption) != caption
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn encode_segment(
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
    let still = !opts.redraw_still_spans && matches!(*seg, Segment::Body { scene, .. } if motionless(&looks[scene]));
    let mut enc = if still { VideoEncoder::start_still(settings, out)? } else { VideoEncoder::start(settings, out)? };
    let mut frame = Yuv420::solid(w, h, [0, 0, 0]);
    let report = |n: u64| {
        let d = done.fetch_add(n, Ordering::Relaxed) + n;
        if d.is_multiple_of(10) || d == total {
            opts.emit(Progress::Frames { done: d, total });
        }
    };
    match *seg {
        // A motionless scene's picture is drawn again only when its caption changes; every
        // other frame is the one before, mostly repeated without encoding.
        // The encoder is told which blocks a new caption changed; the rest it skips unsearched.
        Segment::Body { scene, from, to } if still => {
            let mut r = renderer(scene)?;
            r.render(from, &mut frame)?;
            enc.write_frame(&frame)?;
            report(1);
            let mut shown = ShownCaption::default();
            shown.changes_at(&looks[scene], from);
            let mut changed = vec![1u8; reelsmith_media::frame::macroblocks(w, h)];
            let mut next = frame.clone();
            for local in from + 1..to {
                if opts.cancelled() {
                    return Err(RenderError::Cancelled);
                }
                if shown.changes_at(&looks[scene], local) {
                    r.render(local, &mut next)?;
                    next.unchanged_macroblocks(&frame, &mut changed);
                    std::mem::swap(&mut frame, &mut next);
                    enc.write_frame_after(&frame, &changed)?;
                } else {
                    // Mostly a repeat of the picture before, written without encoding.
                    enc.write_unchanged(&frame)?;
                }
                report(1);
            }
        }
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
        Segment::Transition { scene, kind, frames, half } => {
            // A half of a fade through black draws its own scene only; the other end stays black.
            let mut ra = if half == Some(FadeHalf::In) { None } else { Some(renderer(scene)?) };
            let mut rb = if half == Some(FadeHalf::Out) { None } else { Some(renderer(scene + 1)?) };
            let mut a = frame.clone();
            let mut b = frame.clone();
            let a_start = looks[scene].frames - frames;
            // A still scene's picture is drawn again only when its caption changes.
            let (mut shown_a, mut shown_b) = (ShownCaption::default(), ShownCaption::default());
            let redraw = |look: &SceneLook, local: u64, shown: &mut ShownCaption| {
                let changed = shown.changes_at(look, local);
                opts.redraw_still_spans || !motionless(look) || changed
            };
            for k in Segment::steps(frames, half) {
                if opts.cancelled() {
                    return Err(RenderError::Cancelled);
                }
                if let Some(r) = ra.as_mut()
                    && redraw(&looks[scene], a_start + k, &mut shown_a)
                {
                    r.render(a_start + k, &mut a)?;
                }
                if let Some(r) = rb.as_mut()
                    && redraw(&looks[scene + 1], k, &mut shown_b)
                {
                    r.render(k, &mut b)?;
                }
                // Neither end of the blend is a pure frame of one scene.
                let p = (k + 1) as f32 / (frames + 1) as f32;
                scene::blend_transition(kind, &a, &b, p, &mut frame);
                enc.write_frame(&frame)?;
                report(1);
            }
        }
    }
    enc.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use reelsmith_spec::{Pan, TransitionKind, VerticalPosition};

    use super::*;

    fn look(canvas_key: &str) -> Arc<SceneLook> {
        Arc::new(SceneLook {
            canvas_key: canvas_key.into(),
            canvas_width: 320,
            canvas_height: 180,
            frames: 48,
            zoom: (1.0, 1.0),
            pan: Pan::Center,
            overlay: None,
            subtitles: vec![],
            subtitle_style: None,
            subtitle_highlight: [255; 4],
            subtitle_position: (VerticalPosition::Bottom, 0.1),
            talking: None,
            clip: None,
        })
    }

    fn settings() -> VideoSettings {
        VideoSettings {
            width: 320,
            height: 180,
            fps: 24,
            encoder: H264Encoder::Libx264,
            preset: "veryfast".into(),
            crf: 23,
            threads: None,
        }
    }

    #[test]
    fn a_segment_key_follows_only_the_scenes_it_shows() {
        let looks = [look("a"), look("b"), look("c")];
        let edited = [look("a"), look("b"), look("c2")];
        let body = |scene| Segment::Body { scene, from: 0, to: 48 };
        let fade = Segment::Transition { scene: 1, kind: TransitionKind::Crossfade, frames: 12, half: None };
        let s = settings();
        assert_eq!(segment_key(&body(0), &looks, &s, ""), segment_key(&body(0), &edited, &s, ""));
        assert_ne!(segment_key(&body(2), &looks, &s, ""), segment_key(&body(2), &edited, &s, ""));
        // A transition shows both of its scenes.
        assert_ne!(segment_key(&fade, &looks, &s, ""), segment_key(&fade, &edited, &s, ""));
        // Each half of a fade through black shows one: scene 2 edited, scene 1's fade-out stays.
        let half =
            |half| Segment::Transition { scene: 1, kind: TransitionKind::FadeBlack, frames: 12, half: Some(half) };
        let (out, inn) = (half(FadeHalf::Out), half(FadeHalf::In));
        assert_eq!(segment_key(&out, &looks, &s, ""), segment_key(&out, &edited, &s, ""));
        assert_ne!(segment_key(&inn, &looks, &s, ""), segment_key(&inn, &edited, &s, ""));
        assert_ne!(segment_key(&out, &looks, &s, ""), segment_key(&inn, &looks, &s, ""));
        // A crossfade's key is what it was before fades had halves (caches stay valid).
        let json = serde_json::to_string(&fade).unwrap();
        assert!(!json.contains("half"), "{json}");
    }

    #[test]
    fn still_bodies_weigh_less_than_moving_frames() {
        let mut moving = (*look("b")).clone();
        moving.zoom = (1.0, 1.2);
        let looks = [look("a"), Arc::new(moving)];
        let card = Segment::Body { scene: 0, from: 0, to: 84 };
        let photo = Segment::Body { scene: 1, from: 0, to: 84 };
        let fade = Segment::Transition { scene: 0, kind: TransitionKind::Crossfade, frames: 15, half: None };
        assert_eq!(work(&photo, &looks, false), 84);
        assert_eq!(work(&card, &looks, false), 11, "an eighth of a moving frame each");
        assert!(work(&card, &looks, false) < work(&fade, &looks, false), "15 moving frames outweigh 84 still ones");
        assert_eq!(work(&card, &looks, true), 84, "redrawn, a still frame costs a moving one");
    }

    #[test]
    fn motionless_scenes_change_only_with_their_captions() {
        assert!(motionless(&look("a")));
        let mut moving = (*look("a")).clone();
        moving.zoom = (1.0, 1.2);
        assert!(!motionless(&moving), "Ken Burns");
        let mut panned = (*look("a")).clone();
        (panned.zoom, panned.pan) = ((1.2, 1.2), Pan::Left);
        assert!(!motionless(&panned), "a pan at a fixed zoom still moves");
        let mut fixed = (*look("a")).clone();
        fixed.zoom = (1.3, 1.3);
        assert!(motionless(&fixed), "a fixed crop of a larger canvas");
        let mut captioned = (*look("a")).clone();
        captioned.subtitles = vec![
            scene::SubtitleState { from: 5, to: 20, text: "Hi".into(), highlight: None },
            scene::SubtitleState { from: 20, to: 30, text: "there".into(), highlight: None },
        ];
        let shown: Vec<Option<usize>> = [0, 5, 19, 20, 29, 30].map(|f| caption_at(&captioned, f)).into();
        assert_eq!(shown, [None, Some(0), Some(0), Some(1), Some(1), None]);
        // A still picture is drawn on the first frame and again only where the caption changes.
        let mut last = ShownCaption::default();
        let drawn: Vec<u64> = (0..40).filter(|&f| last.changes_at(&captioned, f)).collect();
        assert_eq!(drawn, [0, 5, 20, 30]);
    }

    #[test]
    fn a_segment_key_follows_the_picture_settings_but_not_the_threads() {
        let looks = [look("a")];
        let seg = Segment::Body { scene: 0, from: 0, to: 48 };
        let base = segment_key(&seg, &looks, &settings(), "");
        let threaded = VideoSettings { threads: Some(8), ..settings() };
        assert_eq!(base, segment_key(&seg, &looks, &threaded, ""));
        assert_ne!(base, segment_key(&seg, &looks, &VideoSettings { crf: 18, ..settings() }, ""));
        assert_ne!(base, segment_key(&seg, &looks, &VideoSettings { fps: 30, ..settings() }, ""));
        assert_ne!(base, segment_key(&seg, &looks, &settings(), "fonts-hash"));
    }
}
