//! Stage `canvas`: each scene's still backdrop (picture fitted or zoomed, background
//! replaced, title drawn) and, for talking heads, the face rig located on it.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use reelsmith_media::frame::Yuv420;
use reelsmith_media::head::{EyeGeometry, HeadGeometry};
use reelsmith_media::mouth::MouthGeometry;
use reelsmith_media::picture::{self, FitMode};
use reelsmith_media::text::{Align, TextBlock, TextStyle};
use reelsmith_spec::{Background, Fit, Framing, Motion, ReplaceBackground, Scene, Spec, limits};
use serde::Serialize;

use super::Render;
use super::inputs::Inputs;
use crate::cache::{self, Key};
use crate::plan;
use crate::scene::FaceRig;
use crate::stage::Stage;
use crate::{Engine, RenderError};

/// How a talking head's face is found, in its canvas's cache key: a rig found another way is
/// another rig. face-2: a second look in a square around the face, and squares along a wide
/// canvas when the first look finds none.
const RIG_FINDER: &str = "face-2";

#[derive(Serialize)]
struct CanvasKey<'a> {
    image: Option<String>,
    fit: Fit,
    background: Option<&'a Background>,
    default_background: String,
    title: Option<(&'a str, TextLookKey<'a>)>,
    width: u32,
    height: u32,
    /// Talking-head scenes also locate the face's rig on the canvas (`face.json`): which face,
    /// how the photo is framed, and how the face is found (`RIG_FINDER`).
    #[serde(skip_serializing_if = "Option::is_none")]
    talking_head: Option<(Option<usize>, Framing, &'static str)>,
    /// A replaced background: colour, blur radius, or the replacement image's hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    replace_background: Option<ReplaceBackgroundKey>,
    /// A video scene's canvas is its backdrop; the title is kept apart to draw on each frame.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    video: bool,
}

#[derive(Serialize)]
enum ReplaceBackgroundKey {
    Color(String),
    Image(String),
    Blur(f32),
}

#[derive(Serialize)]
struct TextLookKey<'a> {
    family: String,
    size_px: f32,
    /// The spec's font files, when it has any (a family name alone may be anyone's font).
    #[serde(skip_serializing_if = "str::is_empty")]
    fonts: &'a str,
}

fn even(x: f32) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn canvas(r: &Render<'_>, i: usize, runs: &AtomicU64) -> Result<(Key, PathBuf, u32, u32), RenderError> {
    let (engine, text, counts, spec, inputs) = (r.engine, &*r.text, &r.counts, r.spec, &r.inputs);
    let scene = &spec.scenes[i];
    let (w, h) = spec.output.dimensions();
    let z = crate::cost::canvas_zoom(w, h, plan::max_zoom(&scene.motion));
    let (cw, ch) = (even(w as f32 * z), even(h as f32 * z));
    let title_size = 0.09 * h as f32 * z;
    let key = cache::key(
        Stage::Canvas.cache_name(),
        &CanvasKey {
            image: scene.image.as_ref().map(|f| inputs.hash(f)),
            fit: scene.fit,
            background: scene.background.as_ref(),
            default_background: spec.output.background.to_string(),
            title: scene.title.as_deref().map(|t| {
                let family = spec.subtitles.font.family.clone();
                (t, TextLookKey { family, size_px: title_size, fonts: &inputs.fonts_key })
            }),
            width: cw,
            height: ch,
            talking_head: match scene.motion {
                Motion::TalkingHead { face_index, framing, .. } => Some((face_index, framing, RIG_FINDER)),
                _ => None,
            },
            replace_background: scene.replace_background.as_ref().map(|r| match r {
                ReplaceBackground::Color(c) => ReplaceBackgroundKey::Color(c.to_string()),
                ReplaceBackground::Image(f) => ReplaceBackgroundKey::Image(inputs.hash(f)),
                ReplaceBackground::Blur(b) => ReplaceBackgroundKey::Blur(*b),
            }),
            video: scene.video.is_some(),
        },
    );
    let (dir, _) = counts.cached(engine, Stage::Canvas, &key, |dir| {
        runs.fetch_add(1, Ordering::Relaxed);
        let bg = scene_background(spec, scene, cw, ch);
        let mut rgba = match &scene.image {
            Some(img) => {
                let pic = picture::load(&inputs.path(img), limits::MAX_IMAGE_PIXELS)
                    .map_err(|e| RenderError::at(format!("scenes[{i}].image"), e.to_string()))?;
                let mode = match scene.fit {
                    Fit::Cover => FitMode::Cover,
                    Fit::Contain => FitMode::Contain,
                    Fit::ContainBlur => FitMode::ContainBlur,
                };
                let pic = match scene.motion {
                    Motion::TalkingHead { face_index, framing: Framing::Face, .. } => {
                        frame_face(engine, &pic, face_index, cw as f32 / ch as f32)
                            .map_err(|e| RenderError::at(format!("scenes[{i}].image"), e))?
                    }
                    _ => pic,
                };
                let pic = match &scene.replace_background {
                    Some(r) => replace_background(engine, pic, r, inputs, ch)
                        .map_err(|e| RenderError::at(format!("scenes[{i}].replace_background"), e))?,
                    None => pic,
                };
                let fitted = picture::fit(&pic, cw, ch, mode, [0, 0, 0, 0]);
                let mut canvas = bg;
                image::imageops::overlay(&mut canvas, &fitted, 0, 0);
                canvas
            }
            None => bg,
        };
        if let Some(title) = &scene.title {
            let font = &spec.subtitles.font;
            let style = TextStyle {
                family: font.family.clone(),
                bold: true,
                size_px: title_size,
                line_height: 1.2,
                color: font.color.rgba(),
                outline: Some((title_size * 0.05, [0, 0, 0, 200])),
                background: None,
                align: Align::Center,
            };
            let block = TextBlock {
                text: title,
                style: &style,
                max_width_px: (cw as f32 * 0.8) as u32,
                max_height_px: ch,
                highlight: None,
            };
            let ov =
                text.render_block(&block).map_err(|e| RenderError::at(format!("scenes[{i}].title"), e.to_string()))?;
            let (x, y) = ((cw as i64 - ov.width as i64) / 2, (ch as i64 - ov.height as i64) / 2);
            if scene.video.is_some() {
                fs::write(dir.join("title.rgba"), &ov.data)?;
                let place = serde_json::json!({"x": x, "y": y, "width": ov.width, "height": ov.height});
                fs::write(dir.join("title.json"), place.to_string())?;
            } else {
                picture::draw_overlay(&mut rgba, &ov, x, y);
            }
        }
        if let Motion::TalkingHead { face_index, .. } = scene.motion {
            let rig =
                locate_face(engine, &rgba, face_index).map_err(|e| RenderError::at(format!("scenes[{i}].image"), e))?;
            fs::write(dir.join("face.json"), serde_json::to_vec(&rig).map_err(std::io::Error::other)?)?;
        }
        let yuv = Yuv420::from_rgba(cw, ch, rgba.as_raw());
        let mut f = std::io::BufWriter::new(fs::File::create(dir.join("canvas.yuv"))?);
        yuv.write_to(&mut f)?;
        use std::io::Write;
        f.flush()?;
        Ok(())
    })?;
    Ok((key, dir, cw, ch))
}

fn scene_background(spec: &Spec, scene: &Scene, w: u32, h: u32) -> picture::Rgba {
    match &scene.background {
        Some(Background::Color(c)) => picture::solid(w, h, c.rgba()),
        Some(Background::Gradient(g)) => picture::gradient(w, h, g.from.rgba(), g.to.rgba(), g.angle),
        None => picture::solid(w, h, spec.output.background.rgba()),
    }
}

/// Faces in an RGBA picture, and the chosen one.
fn find_face(
    engine: &Engine,
    rgba: &image::RgbaImage,
    face_index: Option<usize>,
) -> Result<(reelsmith_models::face::Face, Vec<u8>), String> {
    let (detector, _) = engine.faces().map_err(|e| format!("talking-head needs the face models: {e}"))?;
    let (w, h) = rgba.dimensions();
    let rgb: Vec<u8> = rgba.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
    let mut faces = detector.detect(w, h, &rgb).map_err(|e| e.to_string())?;
    if faces.is_empty() && w != h {
        faces = in_square_tiles(detector, w, h, &rgb).map_err(|e| e.to_string())?;
    }
    let face = reelsmith_models::face::choose(&faces, face_index).map_err(|e| e.to_string())?;
    Ok((face, rgb))
}

/// Faces in squares of the short side along the long side, from its start to its end (three,
/// or more on a picture wider than 3:1, so that no stretch is left out), in the picture's
/// coordinates; a face seen in two squares is kept once. The detector scales the whole picture
/// to its small input, so on a wide one (a portrait fitted into 320x180) a face can be too small
/// to find; a square of the short side shows it larger.
fn in_square_tiles(
    detector: &reelsmith_models::face::FaceDetector,
    w: u32,
    h: u32,
    rgb: &[u8],
) -> Result<Vec<reelsmith_models::face::Face>, reelsmith_models::face::FaceError> {
    let side = w.min(h);
    let room = w.max(h) - side;
    let mut found: Vec<reelsmith_models::face::Face> = vec![];
    let mut tile = Vec::with_capacity((side * side * 3) as usize);
    let squares = (room.div_ceil(side) + 1).max(3);
    for offset in (0..squares).map(|i| room * i / (squares - 1)) {
        let (x0, y0) = if w > h { (offset, 0) } else { (0, offset) };
        square(rgb, w, (x0, y0), side, &mut tile);
        for f in detector.detect(side, side, &tile)? {
            let f = moved(f, (x0, y0));
            match found.iter_mut().find(|g| reelsmith_models::face::overlap(&g.bbox, &f.bbox) > 0.3) {
                Some(g) if g.score < f.score => *g = f,
                Some(_) => {}
                None => found.push(f),
            }
        }
    }
    Ok(found)
}

/// The `side`-pixel square of an RGB picture `w` pixels wide whose top-left is `at`, into `out`.
fn square(rgb: &[u8], w: u32, (x0, y0): (u32, u32), side: u32, out: &mut Vec<u8>) {
    out.clear();
    for y in y0..y0 + side {
        let row = ((y * w + x0) * 3) as usize;
        out.extend_from_slice(&rgb[row..row + side as usize * 3]);
    }
}

/// A face found in a square whose top-left is `by`, in the whole picture's coordinates.
fn moved(mut face: reelsmith_models::face::Face, by: (u32, u32)) -> reelsmith_models::face::Face {
    let (dx, dy) = (by.0 as f32, by.1 as f32);
    face.bbox[0] += dx;
    face.bbox[1] += dy;
    for k in &mut face.keypoints {
        k[0] += dx;
        k[1] += dy;
    }
    face
}

/// The photo cropped around the face to `aspect` (width / height): head and shoulders, the
/// face a little above the middle, as large as the photo allows.
fn frame_face(
    engine: &Engine,
    pic: &image::RgbaImage,
    face_index: Option<usize>,
    aspect: f32,
) -> Result<image::RgbaImage, String> {
    let (face, _) = find_face(engine, pic, face_index)?;
    let (pw, ph) = (pic.width() as f32, pic.height() as f32);
    let [bx, by, bw, bh] = face.bbox;
    let (cx, cy) = (bx + bw / 2.0, by + bh / 2.0);
    // The detector's box is the face from brows to chin: about 40% of a headshot's height.
    let mut crop_h = bh / 0.4;
    let mut crop_w = crop_h * aspect;
    let shrink = (pw / crop_w).min(ph / crop_h).min(1.0);
    crop_w *= shrink;
    crop_h *= shrink;
    let x = (cx - crop_w / 2.0).clamp(0.0, pw - crop_w);
    let y = (cy + bh * 0.12 - crop_h / 2.0).clamp(0.0, ph - crop_h);
    let (x, y, w, h) =
        (x.round() as u32, y.round() as u32, (crop_w.round() as u32).max(1), (crop_h.round() as u32).max(1));
    Ok(image::imageops::crop_imm(pic, x, y, w.min(pic.width() - x), h.min(pic.height() - y)).to_image())
}

/// The picture with what is behind the person replaced: the segmentation mask's soft edge
/// blends the person over a colour, another picture (fitted to cover) or a blur of the picture.
fn replace_background(
    engine: &Engine,
    pic: image::RgbaImage,
    with: &ReplaceBackground,
    inputs: &Inputs,
    canvas_h: u32,
) -> Result<image::RgbaImage, String> {
    let segmenter =
        engine.segmenter().map_err(|e| format!("background replacement needs the segmentation model: {e}"))?;
    let (w, h) = pic.dimensions();
    let rgb: Vec<u8> = pic.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
    let mask = segmenter.mask(w, h, &rgb).map_err(|e| e.to_string())?;
    let behind = match with {
        ReplaceBackground::Color(c) => picture::solid(w, h, c.rgba()),
        ReplaceBackground::Image(f) => {
            let bg = picture::load(&inputs.path(f), limits::MAX_IMAGE_PIXELS).map_err(|e| format!("image: {e}"))?;
            picture::fit(&bg, w, h, FitMode::Cover, [0, 0, 0, 255])
        }
        // The radius is in output pixels; the picture may be larger than the frame.
        ReplaceBackground::Blur(r) => image::imageops::fast_blur(&pic, r * h as f32 / canvas_h.max(1) as f32),
    };
    let mut out = behind;
    for ((o, p), a) in out.pixels_mut().zip(pic.pixels()).zip(&mask.alpha) {
        let a = *a as u32;
        for c in 0..3 {
            o[c] = ((p[c] as u32 * a + o[c] as u32 * (255 - a) + 127) / 255) as u8;
        }
        o[3] = p[3];
    }
    Ok(out)
}

/// The face found again in a square around it, where it fills about a third of the view. The
/// detector sees the whole canvas at its small input size, so its box is looser the wider the
/// canvas (on a 1280x720 canvas with the portrait fitted in its middle, 1.5 times the face's
/// size), and the head's motion, which reaches a multiple of that box, moved the shoulders too
/// and cost twice the pixels. The first box stands when the second look finds no face.
fn closer_look(
    detector: &reelsmith_models::face::FaceDetector,
    w: u32,
    h: u32,
    rgb: &[u8],
    face: reelsmith_models::face::Face,
) -> reelsmith_models::face::Face {
    let [bx, by, bw, bh] = face.bbox;
    // Never past the canvas's short side, which may be under 32 px (a 16 px wide frame).
    let side = ((3.0 * bw.max(bh)).round().max(32.0) as u32).min(w.min(h));
    let (cx, cy) = (bx + bw / 2.0, by + bh / 2.0);
    let x0 = (cx - side as f32 / 2.0).round().clamp(0.0, (w - side) as f32) as u32;
    let y0 = (cy - side as f32 / 2.0).round().clamp(0.0, (h - side) as f32) as u32;
    let mut crop = Vec::with_capacity((side * side * 3) as usize);
    square(rgb, w, (x0, y0), side, &mut crop);
    let Ok(found) = detector.detect(side, side, &crop) else { return face };
    // The face the first look chose: the one nearest the square's centre.
    let centre = |f: &reelsmith_models::face::Face| {
        let [x, y, w, h] = f.bbox;
        (x + w / 2.0 - (cx - x0 as f32)).powi(2) + (y + h / 2.0 - (cy - y0 as f32)).powi(2)
    };
    let Some(near) = found.into_iter().min_by(|a, b| centre(a).total_cmp(&centre(b))) else { return face };
    if centre(&near).sqrt() > bw.max(bh) / 2.0 {
        return face;
    }
    moved(near, (x0, y0))
}

/// The face's rig on a canvas: face detection, then the mesh's lips, chin, eyes and face box.
fn locate_face(engine: &Engine, rgba: &image::RgbaImage, face_index: Option<usize>) -> Result<FaceRig, String> {
    use reelsmith_models::face::mesh;
    let (face, rgb) = find_face(engine, rgba, face_index)?;
    let (detector, face_mesh) = engine.faces().map_err(|e| format!("talking-head needs the face models: {e}"))?;
    let (w, h) = rgba.dimensions();
    let face = closer_look(detector, w, h, &rgb, face);
    let lm = face_mesh.landmarks(w, h, &rgb, &face).map_err(|e| e.to_string())?;
    let p = |i: usize| lm.points[i];
    let (a, b) = (p(mesh::MOUTH_RIGHT)[0], p(mesh::MOUTH_LEFT)[0]);
    let eye = |outer: usize, inner: usize, upper: usize, lower: usize| {
        let (xo, xi) = (p(outer)[0], p(inner)[0]);
        EyeGeometry { left_x: xo.min(xi), right_x: xo.max(xi), upper_y: p(upper)[1], lower_y: p(lower)[1] }
    };
    let [bx, by, bw, bh] = face.bbox;
    let chin = p(mesh::CHIN);
    Ok(FaceRig {
        mouth: MouthGeometry {
            lips_y: (p(mesh::UPPER_LIP_INNER)[1] + p(mesh::LOWER_LIP_INNER)[1]) / 2.0,
            left_x: a.min(b),
            right_x: a.max(b),
            chin_y: chin[1],
        },
        eyes: [
            eye(mesh::RIGHT_EYE_OUTER, mesh::RIGHT_EYE_INNER, mesh::RIGHT_EYE_UPPER, mesh::RIGHT_EYE_LOWER),
            eye(mesh::LEFT_EYE_OUTER, mesh::LEFT_EYE_INNER, mesh::LEFT_EYE_UPPER, mesh::LEFT_EYE_LOWER),
        ],
        // The head turns about the neck, a little below the chin.
        head: HeadGeometry {
            cx: bx + bw / 2.0,
            cy: by + bh / 2.0,
            radius: bh.max(bw) / 2.0,
            pivot_x: chin[0],
            pivot_y: chin[1] + bh * 0.25,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A face box on a canvas whose short side is under the second look's 32 px square: the
    /// square shrinks to the canvas (a 16 px frame is a valid output), and no panic.
    #[test]
    fn a_closer_look_fits_a_canvas_smaller_than_its_square() {
        let detector = reelsmith_models::face::FaceDetector::discover().expect("the face models (scripts/models.sh)");
        for (w, h) in [(16u32, 16u32), (28, 20), (64, 24)] {
            let rgb = vec![128u8; (w * h * 3) as usize];
            let face =
                reelsmith_models::face::Face { score: 0.9, bbox: [2.0, 2.0, 10.0, 10.0], keypoints: [[6.0, 6.0]; 6] };
            // Grey pixels hold no face: the first box stands.
            assert_eq!(closer_look(&detector, w, h, &rgb, face.clone()), face, "{w}x{h}");
            assert!(in_square_tiles(&detector, w, h, &rgb).unwrap().is_empty(), "{w}x{h}");
        }
    }

    #[test]
    fn canvas_sides_are_even_and_never_empty() {
        // H.264's 4:2:0 chroma needs even sides.
        assert_eq!(even(321.0), 322);
        assert_eq!(even(180.4), 180);
        assert_eq!(even(0.3), 2);
    }

    #[test]
    fn a_scene_background_overrides_the_videos() {
        let spec = reelsmith_spec::parse(
            r##"{"version":1,"output":{"background":"#102030"},
                "scenes":[{"duration":1},{"duration":1,"background":{"color":"#ff0000"}}]}"##,
        )
        .unwrap();
        let first = scene_background(&spec, &spec.scenes[0], 4, 2);
        let second = scene_background(&spec, &spec.scenes[1], 4, 2);
        assert_eq!((first.width(), first.height()), (4, 2));
        assert_eq!(first.get_pixel(0, 0).0, [0x10, 0x20, 0x30, 255]);
        assert_eq!(second.get_pixel(3, 1).0, [255, 0, 0, 255]);
    }
}
