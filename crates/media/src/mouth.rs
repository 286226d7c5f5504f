//! Building blocks of talking-head animation: a mouth-opening curve from speech audio, and a
//! warp of a YUV frame that opens the mouth by moving the lower lip and jaw down, with the gap
//! shaded like the inside of a mouth.

use crate::frame::Yuv420;

/// Where the mouth is, in frame pixels (from face landmarks).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MouthGeometry {
    /// Line between the lips (inner contour), y in pixels.
    pub lips_y: f32,
    /// Mouth corners, x in pixels (left < right in the frame).
    pub left_x: f32,
    pub right_x: f32,
    /// Bottom of the chin, y in pixels.
    pub chin_y: f32,
}

impl MouthGeometry {
    pub fn width(&self) -> f32 {
        (self.right_x - self.left_x).abs()
    }
    /// The widest opening, in pixels (a third of the mouth's width looks natural for speech).
    pub fn max_open(&self) -> f32 {
        self.width() * 0.33
    }
}

/// Mouth opening per video frame, 0 to 1, from mono `samples` at `rate`: loudness per frame
/// (RMS), scaled by the 95th percentile so the voice's own range maps to 0..1, quiet parts shut,
/// then smoothed with a fast attack and slower release (mouths open quickly and close softly,
/// which also blends neighbouring sounds together).
pub fn openings(samples: &[f32], rate: u32, fps: f64, frames: usize) -> Vec<f32> {
    let per = rate as f64 / fps;
    let rms: Vec<f32> = (0..frames)
        .map(|f| {
            let (a, b) = ((f as f64 * per) as usize, (((f + 1) as f64 * per) as usize).min(samples.len()));
            if a >= b {
                return 0.0;
            }
            (samples[a..b].iter().map(|s| s * s).sum::<f32>() / (b - a) as f32).sqrt()
        })
        .collect();
    let mut sorted: Vec<f32> = rms.iter().copied().filter(|r| *r > 1e-4).collect();
    sorted.sort_by(f32::total_cmp);
    let reference = sorted.get(sorted.len() * 95 / 100).copied().unwrap_or(0.0).max(1e-3);
    let gate = reference * 0.12;
    let mut out = Vec::with_capacity(frames);
    let mut level = 0.0f32;
    for r in rms {
        let target = if r < gate { 0.0 } else { ((r - gate) / (reference - gate)).clamp(0.0, 1.0) };
        let k = if target > level { 0.6 } else { 0.35 };
        level += (target - level) * k;
        out.push(level);
    }
    out
}

/// Opens the mouth in `frame` by `open` (0 to 1) of `m.max_open()`: below the lips the picture
/// moves down (fully at the lower lip, fading out under the chin and towards the cheeks), and
/// the gap is shaded dark, darkest in the middle, like the inside of a mouth.
pub fn open_mouth(src: &Yuv420, m: &MouthGeometry, open: f32, out: &mut Yuv420) {
    out.clone_from(src);
    let d = open.clamp(0.0, 1.0) * m.max_open();
    if d < 0.25 {
        return;
    }
    let cx = (m.left_x + m.right_x) / 2.0;
    let half = (m.width() / 2.0).max(1.0);
    let below = (m.chin_y - m.lips_y).max(4.0);
    // Horizontal extent of the moving jaw: the mouth plus half its width on each side.
    let reach = half * 2.0;
    let smooth = |t: f32| {
        let t = t.clamp(0.0, 1.0);
        t * t * (3.0 - 2.0 * t)
    };
    // Openness across the mouth: an ellipse, full at the centre, closed at the corners.
    let lips = |x: f32| (1.0 - ((x - cx) / half).powi(2)).max(0.0).sqrt();
    let jaw = |x: f32| 0.5 * (1.0 + (std::f32::consts::PI * ((x - cx).abs() / reach).min(1.0)).cos());
    // Downward shift of the picture at (x, y): right under the lips it equals the gap (the lower
    // lip drops); beside the mouth the skin stretches from zero at the lip line; everything
    // fades out below the chin.
    let shift_at = |x: f32, y: f32| -> f32 {
        if y < m.lips_y {
            return 0.0;
        }
        let fade = 1.0 - smooth((y - m.lips_y) / (below * 1.6));
        let stretch = smooth((y - m.lips_y) / (below * 0.35));
        let s = lips(x);
        d * jaw(x) * fade * (s + (1.0 - s) * stretch)
    };
    let gap_at = |x: f32| d * jaw(x) * lips(x);
    // Inside the mouth, per plane: the dark of the throat, the upper teeth, the tongue.
    let teeth_band = (m.width() * 0.09).max(1.0);
    let warp_plane =
        |plane: &[u8], out_plane: &mut [u8], w: u32, h: u32, scale: f32, [dark, teeth, tongue]: [u8; 3]| {
            let y0 = ((m.lips_y - 1.0) / scale).max(0.0) as u32;
            let y1 = (((m.lips_y + below * 1.6 + d) / scale).ceil() as u32 + 1).min(h);
            let x0 = ((cx - reach) / scale).max(0.0) as u32;
            let x1 = (((cx + reach) / scale).ceil() as u32 + 1).min(w);
            for y in y0..y1 {
                for x in x0..x1 {
                    let (fx, fy) = (x as f32 * scale, y as f32 * scale);
                    let shift = shift_at(fx, fy);
                    let gap = gap_at(fx);
                    let inside = fy >= m.lips_y && fy < m.lips_y + gap;
                    let value = if inside {
                        // The gap: dark in the middle, lighter towards its rim.
                        let ex = (fx - cx) / half;
                        let depth = fy - m.lips_y;
                        let ey = (depth / gap.max(1.0) - 0.5) * 2.0;
                        let rim = (ex * ex + ey * ey * 0.5).min(1.0);
                        let src_v = plane[(y * w + x) as usize] as f32;
                        let mut v = dark as f32 * (1.0 - rim * 0.6) + src_v * rim * 0.6;
                        // Wide open, the upper teeth show under the lip (a quarter of the gap at
                        // most, shaded towards the corners) and the tongue at the bottom.
                        let wide = ((gap / m.max_open() - 0.4) / 0.3).clamp(0.0, 1.0);
                        if wide > 0.0 {
                            let band = teeth_band.min(gap * 0.25);
                            if depth < band {
                                let k = wide * (1.0 - ex * ex).max(0.0) * (1.0 - (depth / band).powi(4));
                                v += (teeth as f32 * (1.0 - 0.3 * ex * ex) - v) * k;
                            }
                            let low = (ey - 0.45) / 0.55;
                            if low > 0.0 {
                                let k = wide * low.min(1.0) * (1.0 - ex * ex).max(0.0) * 0.8;
                                v += (tongue as f32 - v) * k;
                            }
                        }
                        v.clamp(0.0, 255.0) as u8
                    } else {
                        // Backward map: this pixel shows what was `shift` above it.
                        let sy = (fy - shift) / scale;
                        let (iy, t) = (sy.floor().max(0.0) as u32, sy - sy.floor());
                        let a = plane[(iy.min(h - 1) * w + x) as usize] as f32;
                        let b = plane[((iy + 1).min(h - 1) * w + x) as usize] as f32;
                        (a + (b - a) * t).round() as u8
                    };
                    out_plane[(y * w + x) as usize] = value;
                }
            }
        };
    let (w, h) = (src.width, src.height);
    // Dark red-brown throat (V above neutral, U just below), off-white teeth, a pink tongue.
    warp_plane(&src.y, &mut out.y, w, h, 1.0, [32, 205, 100]);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    warp_plane(&src.u, &mut out.u, cw, ch, 2.0, [120, 126, 114]);
    warp_plane(&src.v, &mut out.v, cw, ch, 2.0, [150, 131, 166]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings_follow_speech_and_rest_in_silence() {
        let rate = 16_000;
        // 1 s silence, 1 s of a syllable every 200 ms, 1 s silence.
        let samples: Vec<f32> = (0..rate * 3)
            .map(|i| {
                let t = i as f32 / rate as f32;
                if (1.0..2.0).contains(&t) && ((t - 1.0) * 5.0).fract() < 0.6 { (t * 900.0).sin() * 0.5 } else { 0.0 }
            })
            .collect();
        let o = openings(&samples, rate as u32, 25.0, 75);
        assert_eq!(o.len(), 75);
        assert!(o[..25].iter().all(|&v| v == 0.0), "shut before speech");
        assert!(o[25..50].iter().copied().fold(0.0, f32::max) > 0.8, "opens wide while speaking");
        assert!(o[25..50].iter().any(|&v| v < 0.5), "closes between syllables");
        assert!(o[60..].iter().all(|&v| v < 0.02), "shut again after");
        assert!(openings(&[], 16_000, 25.0, 3).iter().all(|&v| v == 0.0));
    }

    fn test_frame() -> Yuv420 {
        let (w, h) = (64u32, 64u32);
        // Horizontal stripes in luma so vertical movement is visible; neutral chroma.
        let y = (0..w * h).map(|i| if (i / w) % 8 < 4 { 200 } else { 60 }).collect();
        let c = ((w / 2) * (h / 2)) as usize;
        Yuv420 { width: w, height: h, y, u: vec![128; c], v: vec![128; c] }
    }

    #[test]
    fn opening_moves_the_jaw_and_shades_the_gap_only_below_the_lips() {
        let src = test_frame();
        let m = MouthGeometry { lips_y: 30.0, left_x: 24.0, right_x: 40.0, chin_y: 44.0 };
        let mut out = Yuv420 { width: 0, height: 0, y: vec![], u: vec![], v: vec![] };
        open_mouth(&src, &m, 0.0, &mut out);
        assert_eq!(out.y, src.y, "closed: unchanged");
        open_mouth(&src, &m, 1.0, &mut out);
        let px = |f: &Yuv420, x: u32, y: u32| f.y[(y * f.width + x) as usize];
        for y in 0..30 {
            for x in 0..64 {
                assert_eq!(px(&out, x, y), px(&src, x, y), "above the lips nothing moves ({x},{y})");
            }
        }
        // Wide open: the upper teeth right under the lip, dark deeper in, the far sides untouched.
        assert!(px(&out, 32, 30) > 150, "upper teeth: {}", px(&out, 32, 30));
        assert!(px(&out, 32, 32) < 80, "inside of the mouth: {}", px(&out, 32, 32));
        let mut half_open = Yuv420 { width: 0, height: 0, y: vec![], u: vec![], v: vec![] };
        open_mouth(&src, &m, 0.4, &mut half_open);
        assert!(px(&half_open, 32, 30) < 60, "a small opening shows no teeth: {}", px(&half_open, 32, 30));
        assert!((0..64).all(|y| px(&out, 2, y) == px(&src, 2, y)), "cheeks far away stay");
        let changed = (30..64).filter(|&y| px(&out, 32, y) != px(&src, 32, y)).count();
        assert!(changed > 10, "the jaw moved: {changed} rows");
        let red = out.v[(15 * 32 + 16) as usize];
        assert!(red > 128, "the gap is reddish: V {red}");
    }
}

#[cfg(test)]
mod look {
    /// Writes the astronaut with the mouth closed and open to /tmp for a person to look at:
    /// `cargo test -p reelsmith-media mouth::look -- --ignored` (mouth from the face mesh test).
    #[test]
    #[ignore]
    fn astronaut_open_mouth_pictures() {
        let img = crate::picture::load(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/tests/fixtures/astronaut.jpg")),
            1 << 26,
        )
        .unwrap();
        let src = crate::frame::Yuv420::from_rgba(img.width(), img.height(), img.as_raw());
        let m = super::MouthGeometry { lips_y: 145.0, left_x: 202.0, right_x: 246.0, chin_y: 175.0 };
        for open in [0.0f32, 0.5, 1.0] {
            let mut out = src.clone();
            super::open_mouth(&src, &m, open, &mut out);
            let mut f = std::fs::File::create(format!("/tmp/mouth_{open}.yuv")).unwrap();
            out.write_to(&mut f).unwrap();
        }
    }
}
