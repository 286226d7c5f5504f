//! Scene looks (no cache of their own): what the segment encoder draws per frame, namely the
//! canvas, motion, subtitles, overlays, mouth openings and blinks, built from the other stages' outputs.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use reelsmith_media::audio::MIX_RATE;
use reelsmith_media::mouth;
use reelsmith_spec::{Fit, Font, Motion, Scene, Spec};

use super::Render;
use super::inputs::Inputs;
use super::narration::Speech;
use crate::RenderError;
use crate::cache::Key;
use crate::plan::{self, Timeline};
use crate::report;
use crate::scene::{self, ClipLook, FaceRig, SceneLook, Talking, TextLook};

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
    let v = scene.narration.as_ref().map_or_else(|| spec.voice.clone(), |n| spec.voice.with(&n.voice));
    // espeak-ng voices phonemize as themselves; a Piper voice by its language (en_US-… → en-us).
    let voice = if v.engine == "espeak-ng" {
        v.name
    } else {
        v.name.split('-').next().unwrap_or("en").replace('_', "-").to_ascii_lowercase()
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
pub(super) fn captions(tl: &Timeline, looks: &[Arc<SceneLook>]) -> Vec<report::Caption> {
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

pub(super) fn scene_look(
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

#[cfg(test)]
mod tests {
    use reelsmith_spec::{Outline, Pan, VerticalPosition};

    use super::*;
    use crate::cache::Key;
    use crate::plan::SceneSpan;
    use crate::scene::SubtitleState;

    #[test]
    fn text_looks_scale_with_the_frame() {
        let font: Font = serde_json::from_str(r##"{"size": 0.05, "color": "#ff0000"}"##).unwrap();
        let outline: Outline = serde_json::from_str(r##"{"color": "#000000", "width": 0.1}"##).unwrap();
        let look = text_look(&font, "Hi", 720, 1280, 0.5, Some(&outline), None);
        assert_eq!(look.size_px, 36.0);
        assert_eq!(look.max_width, 640);
        assert_eq!(look.color, [255, 0, 0, 255]);
        let (width, _) = look.outline.expect("outline kept");
        assert!((width - 3.6).abs() < 1e-4, "{width}");
        // A zero-width outline draws nothing, so it is left out (and out of cache keys).
        let none: Outline = serde_json::from_str(r##"{"color": "#000000", "width": 0}"##).unwrap();
        assert!(text_look(&font, "Hi", 720, 1280, 0.5, Some(&none), None).outline.is_none());
    }

    #[test]
    fn mouths_open_when_the_narration_speaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("speech.f32");
        // One second of silence, then one second of a loud 200 Hz tone.
        let rate = MIX_RATE as usize;
        let samples: Vec<f32> = (0..2 * rate)
            .map(|i| if i < rate { 0.0 } else { 0.8 * (i as f32 * 200.0 * std::f32::consts::TAU / rate as f32).sin() })
            .collect();
        fs::write(&path, samples.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let speech = Speech { key: Key([0; 32]), path, frames: samples.len() as u64, words: vec![], loudness: None };
        // The narration starts one second (10 frames) into the scene.
        let open = mouth_openings(&speech, 10, 30, 10.0).unwrap();
        assert_eq!(open.len(), 30);
        assert!(open[..18].iter().all(|&o| o < 20), "closed before the sound: {open:?}");
        assert!(open[21..29].iter().all(|&o| o > 100), "open while it sounds: {open:?}");
    }

    fn look_with(subtitles: Vec<SubtitleState>) -> Arc<SceneLook> {
        Arc::new(SceneLook {
            canvas_key: String::new(),
            canvas_width: 320,
            canvas_height: 180,
            frames: 20,
            zoom: (1.0, 1.0),
            pan: Pan::Center,
            overlay: None,
            subtitles,
            subtitle_style: None,
            subtitle_highlight: [255; 4],
            subtitle_position: (VerticalPosition::Bottom, 0.1),
            talking: None,
            clip: None,
        })
    }

    #[test]
    fn captions_join_the_highlight_states_of_one_page() {
        let state = |from, to, text: &str, word| SubtitleState {
            from,
            to,
            text: text.into(),
            highlight: Some((word, word + 1)),
        };
        let span = |start| SceneSpan { start, frames: 20, overlap_in: 0, overlap_out: 0, narration_frame: 0 };
        let tl = Timeline { fps: 10, total_frames: 40, scenes: vec![span(0), span(20)], segments: vec![] };
        let looks = [
            look_with(vec![state(0, 5, "one two", 0), state(5, 10, "one two", 4), state(10, 20, "three", 0)]),
            look_with(vec![state(0, 10, "four", 0)]),
        ];
        let cues: Vec<(f64, f64, String)> =
            captions(&tl, &looks).into_iter().map(|c| (c.start_s, c.end_s, c.text)).collect();
        assert_eq!(
            cues,
            [(0.0, 1.0, "one two".to_string()), (1.0, 2.0, "three".to_string()), (2.0, 3.0, "four".to_string())]
        );
    }
}
