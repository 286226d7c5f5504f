//! Per-frame composition of one scene (Ken Burns crop of its prepared canvas, static text
//! overlay, word-timed subtitles) and of segments (bodies and transitions) into an encoder.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use reelsmith_media::ffmpeg::{ClipDecode, FfmpegError, VideoDecoder};

use reelsmith_media::frame::{self, Crop, Yuv420, YuvOverlay};
use reelsmith_media::head::{self, EyeGeometry, HeadGeometry};
use reelsmith_media::mouth::{self, MouthGeometry};
use reelsmith_media::text::{Align, TextBlock, TextRenderer, TextStyle};
use reelsmith_media::tts::WordTiming;
use reelsmith_spec::{OverlayPosition, Pan, Subtitles, TransitionKind, VerticalPosition};
use serde::Serialize;

/// One subtitle state: which text shows (lines split by '\n') and which word is highlighted,
/// over scene-local frames `[from, to)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubtitleState {
    pub from: u64,
    pub to: u64,
    pub text: String,
    pub highlight: Option<(usize, usize)>,
}

/// Everything needed to draw a scene's frames; serialised into segment cache keys.
#[derive(Clone, Debug, Serialize)]
pub struct SceneLook {
    pub canvas_key: String,
    pub canvas_width: u32,
    pub canvas_height: u32,
    pub frames: u64,
    pub zoom: (f32, f32),
    pub pan: Pan,
    pub overlay: Option<TextLook>,
    pub subtitles: Vec<SubtitleState>,
    pub subtitle_style: Option<TextLook>,
    pub subtitle_highlight: [u8; 4],
    pub subtitle_position: (VerticalPosition, f32),
    /// Talking head: the face's rig and how it moves.
    pub talking: Option<Talking>,
    /// A video clip playing on the canvas (under the title), instead of a still picture.
    pub clip: Option<ClipLook>,
}

/// A scene's video clip: decoded per segment, fitted to the canvas by an FFmpeg filter.
#[derive(Clone, Debug, Serialize)]
pub struct ClipLook {
    /// Content hash of the file (the path is not part of the look).
    pub hash: String,
    #[serde(skip)]
    pub path: PathBuf,
    /// Seconds into the file of the clip's first frame, and of its end.
    pub start: f64,
    pub end: Option<f64>,
    /// Frames the clip has at the output rate.
    pub frames: u64,
    pub fps: u32,
    pub looped: bool,
    /// Scene-local frame showing the clip's first frame (the narration's start).
    pub first_frame: u64,
    /// From `[0:v]` to `[out]`, a frame of the canvas size.
    pub filter: String,
    /// The canvas (background) as a raw picture, for filters that show it around the clip.
    #[serde(skip)]
    pub backdrop: Option<PathBuf>,
    /// The title, drawn on each clip frame before motion, and where (`title.rgba`/`title.json`
    /// in the canvas entry, which its key covers).
    #[serde(skip)]
    pub title: Option<(PathBuf, [i32; 2], [u32; 2])>,
}

impl ClipLook {
    /// The clip frame shown on scene-local frame `local`.
    fn frame_at(&self, local: u64) -> u64 {
        let k = local.saturating_sub(self.first_frame);
        if self.looped && self.frames > 0 { k % self.frames } else { k.min(self.frames.saturating_sub(1)) }
    }
}

/// Reads a clip's frames in order, restarting the decoder (a seek) only when the wanted frame
/// is behind it or far ahead; after the clip's end the last frame holds.
struct ClipReader {
    decoder: Option<VideoDecoder>,
    frame: Yuv420,
    next: u64,
    have: Option<u64>,
    ended_at: Option<u64>,
    title: Option<YuvOverlay>,
}

impl ClipReader {
    fn new(clip: &ClipLook, width: u32, height: u32) -> Result<Self, FfmpegError> {
        let title = match &clip.title {
            Some((path, [x, y], [w, h])) => {
                let data = std::fs::read(path)?;
                (data.len() == (*w * *h * 4) as usize)
                    .then(|| YuvOverlay::from_premultiplied_rgba(*x, *y, *w, *h, &data))
            }
            None => None,
        };
        Ok(Self {
            decoder: None,
            frame: Yuv420::solid(width, height, [0, 0, 0]),
            next: 0,
            have: None,
            ended_at: None,
            title,
        })
    }

    /// Makes `self.frame` clip frame `c`.
    fn seek(&mut self, clip: &ClipLook, c: u64) -> Result<(), FfmpegError> {
        if self.have == Some(c) || self.ended_at.is_some_and(|e| c >= e && self.have.is_some()) {
            return Ok(());
        }
        let far = 2 * clip.fps as u64;
        let restarted = self.decoder.is_none() || c < self.next || c > self.next + far;
        if restarted {
            self.restart(clip, c)?;
        }
        let mut fresh = self.read_to(c)?;
        // Past the clip's real end (a rate conversion or a duration rounded up gives it fewer
        // frames than planned), a decoder started there reads nothing, yet the last frame must
        // hold: decode again from a little before (then from the start) and keep the last frame.
        if restarted && !fresh && c > 0 {
            for from in [c.saturating_sub(far), 0] {
                self.restart(clip, from)?;
                fresh = self.read_to(c)?;
                if fresh {
                    break;
                }
            }
        }
        if !fresh && self.have.is_none() {
            return Err(FfmpegError::Probe(format!(
                "{} has no frames from {:.2} s",
                clip.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                clip.start
            )));
        }
        if fresh && let Some(t) = &self.title {
            t.draw(&mut self.frame);
        }
        Ok(())
    }

    /// Starts decoding at clip frame `from`.
    fn restart(&mut self, clip: &ClipLook, from: u64) -> Result<(), FfmpegError> {
        let at = clip.start + from as f64 / clip.fps as f64;
        self.decoder = Some(VideoDecoder::start(&ClipDecode {
            path: &clip.path,
            start: at,
            duration: clip.end.map(|e| e - at),
            fps: clip.fps,
            width: self.frame.width,
            height: self.frame.height,
            filter: &clip.filter,
            backdrop: clip.backdrop.as_deref(),
        })?);
        self.next = from;
        self.ended_at = None;
        Ok(())
    }

    /// Reads frames up to clip frame `c`, or to the clip's end; whether any frame was read.
    fn read_to(&mut self, c: u64) -> Result<bool, FfmpegError> {
        let mut fresh = false;
        while self.next <= c {
            let Some(dec) = self.decoder.as_mut() else { break };
            if !dec.read_frame(&mut self.frame)? {
                self.ended_at = Some(self.next);
                self.decoder = None;
                break;
            }
            self.have = Some(self.next);
            self.next += 1;
            fresh = true;
        }
        Ok(fresh)
    }
}

/// Where a talking head's mouth, eyes and head are on the canvas (from the face mesh).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct FaceRig {
    pub mouth: MouthGeometry,
    pub eyes: [EyeGeometry; 2],
    pub head: HeadGeometry,
}

/// A talking head's animation: the mouth's opening on each frame (0-255, from the voice),
/// blinks and idle head motion (functions of time, seeded per scene).
#[derive(Clone, Debug, Serialize)]
pub struct Talking {
    pub rig: FaceRig,
    pub openings: Vec<u8>,
    /// Lip rounding (-127) to spreading (127) on each frame, from the phonemes (empty: neutral).
    pub spreads: Vec<i8>,
    pub blink: bool,
    pub head_motion: f32,
    pub seed: u64,
    pub fps: f64,
}

/// A text style resolved to pixels, plus where it goes.
#[derive(Clone, Debug, Serialize)]
pub struct TextLook {
    pub text: String,
    pub family: String,
    pub bold: bool,
    pub size_px: f32,
    pub color: [u8; 4],
    pub outline: Option<(f32, [u8; 4])>,
    pub background: Option<([u8; 4], f32)>,
    pub max_width: u32,
    pub position: Option<OverlayPosition>,
}

impl TextLook {
    pub fn style(&self) -> TextStyle {
        TextStyle {
            family: self.family.clone(),
            bold: self.bold,
            size_px: self.size_px,
            line_height: 1.25,
            color: self.color,
            outline: self.outline,
            background: self.background,
            align: Align::Center,
        }
    }
}

/// Splits narration words into pages of at most `max_lines` lines that fit `max_width`, one
/// state per page (`lines`) or per word (`word-highlight`). States tile the span from the
/// first word to `end_frame` so the text never flickers between words.
#[allow(clippy::too_many_arguments)]
pub fn subtitle_states(
    text: &TextRenderer,
    words: &[WordTiming],
    style: &TextStyle,
    cfg: &Subtitles,
    max_width: u32,
    narration_frame: u64,
    fps: f64,
    end_frame: u64,
) -> Vec<SubtitleState> {
    let words: Vec<&WordTiming> = words.iter().filter(|w| !w.word.trim().is_empty()).collect();
    if words.is_empty() {
        return vec![];
    }
    let strs: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
    let lines = text.wrap_words(&strs, style, max_width);
    let at = |t: f64| narration_frame + (t * fps).round().max(0.0) as u64;
    let mut states = vec![];
    for page in lines.chunks(cfg.max_lines.max(1) as usize) {
        let mut joined = String::new();
        let mut spans = vec![]; // (word index, byte range)
        for (li, line) in page.iter().enumerate() {
            if li > 0 {
                joined.push('\n');
            }
            for (k, &wi) in line.iter().enumerate() {
                if k > 0 {
                    joined.push(' ');
                }
                let s = joined.len();
                joined.push_str(strs[wi]);
                spans.push((wi, (s, joined.len())));
            }
        }
        match cfg.style {
            reelsmith_spec::SubtitleStyle::Lines => {
                let first = spans.first().map(|s| s.0).unwrap_or(0);
                states.push(SubtitleState {
                    from: at(words[first].start),
                    to: 0,
                    text: joined.clone(),
                    highlight: None,
                });
            }
            reelsmith_spec::SubtitleStyle::WordHighlight => {
                for &(wi, range) in &spans {
                    states.push(SubtitleState {
                        from: at(words[wi].start),
                        to: 0,
                        text: joined.clone(),
                        highlight: Some(range),
                    });
                }
            }
        }
    }
    // Each state lasts until the next begins; the last until the end of the speech plus a
    // short hold, but never past the scene.
    let speech_end = at(words.last().map_or(0.0, |w| w.end) + 0.4).min(end_frame);
    for i in 0..states.len() {
        let next = states.get(i + 1).map_or(speech_end, |s| s.from);
        states[i].to = next.max(states[i].from);
    }
    states.retain(|s| s.to > s.from);
    states
}

/// Draws one scene's frames. Owns its canvas; overlays are rasterised on first use.
pub struct SceneRenderer {
    look: Arc<SceneLook>,
    canvas: Arc<Yuv420>,
    text: Arc<TextRenderer>,
    width: u32,
    height: u32,
    overlay: Option<YuvOverlay>,
    subtitle_cache: HashMap<usize, YuvOverlay>,
    scratch: Vec<u16>,
    /// The frame before the face is moved (talking heads only).
    unwarped: Option<Yuv420>,
    clip: Option<ClipReader>,
}

impl SceneRenderer {
    pub fn new(look: Arc<SceneLook>, canvas: Arc<Yuv420>, text: Arc<TextRenderer>, width: u32, height: u32) -> Self {
        let overlay = look.overlay.as_ref().and_then(|o| place_overlay(&text, o, width, height));
        Self {
            look,
            canvas,
            text,
            width,
            height,
            overlay,
            subtitle_cache: HashMap::new(),
            scratch: vec![],
            unwarped: None,
            clip: None,
        }
    }

    fn crop(&self, local: u64) -> Crop {
        let l = &self.look;
        let t = if l.frames > 1 { local as f32 / (l.frames - 1) as f32 } else { 0.0 };
        let (cw, ch) = (l.canvas_width as f32, l.canvas_height as f32);
        // The canvas is the frame at the largest zoom, so zoom `z` shows 1/z of it (1:1 at the max).
        let z = (l.zoom.0 + (l.zoom.1 - l.zoom.0) * t).max(1.0);
        let (vw, vh) = ((cw / z).min(cw), (ch / z).min(ch));
        let (px, py) = match l.pan {
            Pan::Center => (0.5, 0.5),
            Pan::Left => (1.0 - t, 0.5),
            Pan::Right => (t, 0.5),
            Pan::Up => (0.5, 1.0 - t),
            Pan::Down => (0.5, t),
        };
        Crop { x: (cw - vw) * px, y: (ch - vh) * py, w: vw, h: vh }
    }

    /// Draws scene-local frame `local` into `out`.
    pub fn render(&mut self, local: u64, out: &mut Yuv420) -> Result<(), FfmpegError> {
        let crop = self.crop(local);
        if let Some(clip) = &self.look.clip {
            let reader = match &mut self.clip {
                Some(r) => r,
                None => self.clip.insert(ClipReader::new(clip, self.canvas.width, self.canvas.height)?),
            };
            reader.seek(clip, clip.frame_at(local))?;
        }
        // A clip's frame is this frame's canvas.
        let src: &Yuv420 = match &self.clip {
            Some(r) => &r.frame,
            None => &self.canvas,
        };
        let exact = crop.w == self.width as f32 && crop.h == self.height as f32 && crop.x == 0.0 && crop.y == 0.0;
        if exact && src.width == self.width && src.height == self.height {
            out.y.copy_from_slice(&src.y);
            out.u.copy_from_slice(&src.u);
            out.v.copy_from_slice(&src.v);
        } else {
            frame::resample_crop(src, crop, out, &mut self.scratch);
        }
        // The face moves in the picture itself, under the text drawn next.
        if let Some(talk) = &self.look.talking {
            let t = local as f64 / talk.fps;
            let open = talk.openings.get(local as usize).copied().unwrap_or(0) as f32 / 255.0;
            let spread = talk.spreads.get(local as usize).copied().unwrap_or(0) as f32 / 127.0;
            if open > 0.0 || spread != 0.0 {
                // The frame so far becomes the warp's source (a swap, not a copy).
                let src = self.unwarped.get_or_insert_with(|| out.clone());
                std::mem::swap(src, out);
                mouth::open_mouth(src, &talk.rig.mouth, open, spread, out);
            }
            let closure = if talk.blink { head::blink_closure(t, talk.seed) } else { 0.0 };
            if closure > 0.0 {
                for eye in &talk.rig.eyes {
                    head::blink(out, eye, closure);
                }
            }
            if talk.head_motion > 0.0 {
                let motion = head::idle_motion(t, &talk.rig.head, talk.head_motion, talk.seed);
                let src = self.unwarped.get_or_insert_with(|| out.clone());
                std::mem::swap(src, out);
                head::move_head(src, &talk.rig.head, motion, out);
            }
        }
        if let Some(o) = &self.overlay {
            o.draw(out);
        }
        let look = self.look.clone();
        if let Some(idx) = look.subtitles.iter().position(|s| local >= s.from && local < s.to) {
            if !self.subtitle_cache.contains_key(&idx) {
                let ov = self.subtitle_overlay(&look.subtitles[idx]);
                // Keep memory flat on long narrations: only recent states stay.
                if self.subtitle_cache.len() > 8 {
                    self.subtitle_cache.clear();
                }
                if let Some(ov) = ov {
                    self.subtitle_cache.insert(idx, ov);
                }
            }
            if let Some(ov) = self.subtitle_cache.get(&idx) {
                ov.draw(out);
            }
        }
        Ok(())
    }

    fn subtitle_overlay(&self, s: &SubtitleState) -> Option<YuvOverlay> {
        let look = self.look.subtitle_style.as_ref()?;
        let style = look.style();
        let block = TextBlock {
            text: &s.text,
            style: &style,
            max_width_px: look.max_width,
            max_height_px: self.height,
            highlight: s.highlight.map(|(a, b)| (a..b, self.look.subtitle_highlight)),
        };
        let img = self.text.render_block(&block).ok()?;
        if img.width == 0 || img.height == 0 {
            return None;
        }
        let (pos, margin) = self.look.subtitle_position;
        let x = (self.width as i32 - img.width as i32) / 2;
        let m = (margin * self.height as f32) as i32;
        let y = match pos {
            VerticalPosition::Top => m,
            VerticalPosition::Center => (self.height as i32 - img.height as i32) / 2,
            VerticalPosition::Bottom => self.height as i32 - m - img.height as i32,
        };
        Some(YuvOverlay::from_premultiplied_rgba(x.max(0), y.max(0), img.width, img.height, &img.data))
    }
}

/// Rasterises a static text overlay and places it in its corner.
fn place_overlay(text: &TextRenderer, o: &TextLook, width: u32, height: u32) -> Option<YuvOverlay> {
    let mut style = o.style();
    let pos = o.position.unwrap_or_default();
    style.align = match pos {
        OverlayPosition::TopLeft | OverlayPosition::BottomLeft => Align::Left,
        OverlayPosition::TopRight | OverlayPosition::BottomRight => Align::Right,
        _ => Align::Center,
    };
    let img = text
        .render_block(&TextBlock {
            text: &o.text,
            style: &style,
            max_width_px: o.max_width,
            // Inside the corner margins.
            max_height_px: height.saturating_sub(2 * (0.04 * height as f32) as u32).max(1),
            highlight: None,
        })
        .ok()?;
    if img.width == 0 {
        return None;
    }
    let m = (0.04 * height as f32) as i32;
    let (w, h, iw, ih) = (width as i32, height as i32, img.width as i32, img.height as i32);
    let x = match pos {
        OverlayPosition::TopLeft | OverlayPosition::BottomLeft => m,
        OverlayPosition::TopRight | OverlayPosition::BottomRight => w - m - iw,
        _ => (w - iw) / 2,
    };
    let y = match pos {
        OverlayPosition::TopLeft | OverlayPosition::TopCenter | OverlayPosition::TopRight => m,
        OverlayPosition::Center => (h - ih) / 2,
        _ => h - m - ih,
    };
    Some(YuvOverlay::from_premultiplied_rgba(x.max(0), y.max(0), img.width, img.height, &img.data))
}

/// Blends the two scenes of a transition at progress `p` (0..1, exclusive).
pub fn blend_transition(kind: TransitionKind, a: &Yuv420, b: &Yuv420, p: f32, out: &mut Yuv420) {
    match kind {
        TransitionKind::Cut => out.clone_from(b),
        TransitionKind::Crossfade => frame::crossfade(a, b, p, out),
        TransitionKind::Slide => frame::slide(a, b, smooth(p), out),
        TransitionKind::FadeBlack if p < 0.5 => frame::fade_to_black(a, 1.0 - 2.0 * p, out),
        TransitionKind::FadeBlack => frame::fade_to_black(b, 2.0 * p - 1.0, out),
    }
}

/// Ease in-out, so slides start and stop gently.
fn smooth(p: f32) -> f32 {
    p * p * (3.0 - 2.0 * p)
}
