//! Person segmentation: MediaPipe's selfie segmentation (converted to ONNX and committed in
//! assets/models/, Apache-2.0): a 256x256 RGB input in [0, 1], a soft person mask out. Meant
//! for portraits and upper bodies, which is what talking photos are.

use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

use crate::ModelError;

pub const SEGMENTATION_FILE: &str = "selfie_segmentation.onnx";
const SIZE: usize = 256;

pub struct PersonSegmenter {
    session: Mutex<Session>,
}

/// A soft mask, one byte per pixel of the image it came from: 255 person, 0 background.
pub struct Mask {
    pub width: u32,
    pub height: u32,
    pub alpha: Vec<u8>,
}

impl PersonSegmenter {
    pub fn discover() -> Result<Self, ModelError> {
        Ok(Self { session: Mutex::new(crate::open_session("person segmentation", "face", SEGMENTATION_FILE)?) })
    }

    /// The person mask of an RGB image (`rgb` is `w * h * 3` bytes), at the image's size.
    pub fn mask(&self, w: u32, h: u32, rgb: &[u8]) -> Result<Mask, ModelError> {
        let bad = |m: String| ModelError::Model("person segmentation".into(), m);
        if w == 0 || h == 0 || rgb.len() != (w * h * 3) as usize {
            return Err(bad(format!("bad image buffer {w}x{h}")));
        }
        // Stretched to the square input, as MediaPipe does (no letterbox), bilinear.
        let sample = |x: f32, y: f32, c: usize| crate::sample_rgb(rgb, w, h, x, y, c);
        let (sx, sy) = (w as f32 / SIZE as f32, h as f32 / SIZE as f32);
        let mut input = vec![0.0f32; SIZE * SIZE * 3];
        for v in 0..SIZE {
            for u in 0..SIZE {
                let (x, y) = ((u as f32 + 0.5) * sx - 0.5, (v as f32 + 0.5) * sy - 0.5);
                for c in 0..3 {
                    input[(v * SIZE + u) * 3 + c] = sample(x, y, c) / 255.0;
                }
            }
        }
        let err = |e: ort::Error| bad(e.to_string());
        let tensor = Tensor::from_array(([1usize, SIZE, SIZE, 3], input)).map_err(err)?;
        let mut session = self.session.lock().expect("segmentation session");
        let input_name =
            session.inputs().first().map(|i| i.name().to_string()).ok_or_else(|| bad("no input".into()))?;
        let out = session.run(ort::inputs![input_name.as_str() => tensor]).map_err(err)?;
        let (_, raw) = out[0].try_extract_tensor::<f32>().map_err(err)?;
        if raw.len() != SIZE * SIZE {
            return Err(bad(format!("mask has {} values, expected {}", raw.len(), SIZE * SIZE)));
        }
        // Back to the image's size, bilinear: the mask's own softness becomes the soft edge.
        let m =
            |u: i64, v: i64| raw[(v.clamp(0, SIZE as i64 - 1) as usize) * SIZE + u.clamp(0, SIZE as i64 - 1) as usize];
        let mut alpha = Vec::with_capacity((w * h) as usize);
        for y in 0..h {
            let fv = (y as f32 + 0.5) / sy - 0.5;
            let (v0, tv) = (fv.floor() as i64, fv - fv.floor());
            for x in 0..w {
                let fu = (x as f32 + 0.5) / sx - 0.5;
                let (u0, tu) = (fu.floor() as i64, fu - fu.floor());
                let top = m(u0, v0) * (1.0 - tu) + m(u0 + 1, v0) * tu;
                let bottom = m(u0, v0 + 1) * (1.0 - tu) + m(u0 + 1, v0 + 1) * tu;
                alpha.push(((top * (1.0 - tv) + bottom * tv).clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        Ok(Mask { width: w, height: h, alpha })
    }
}
