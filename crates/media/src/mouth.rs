//! Building blocks of talking-head animation: a mouth-opening curve from speech audio, and a
//! warp of a YUV frame that opens the mouth by moving the lower lip and jaw down, with the gap
//! shaded like the inside of a mouth.

use crate::frame::Yuv420;
use crate::frame::{floor, round_non_negative};

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

/// A mouth shape for a speech sound: how far it lets the jaw open (a factor on the loudness
/// opening) and how wide the lips are (-1 rounded, 0 neutral, 1 spread).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Viseme {
    pub open: f32,
    pub spread: f32,
}

/// The viseme of one IPA phoneme (a vowel or consonant symbol; stress and length marks ignored).
pub fn viseme(ipa: char) -> Option<Viseme> {
    let v = |open, spread| Some(Viseme { open, spread });
    match ipa {
        // Lips shut: p b m.
        'p' | 'b' | 'm' => v(0.0, 0.0),
        // Lower lip under the teeth: f v.
        'f' | 'v' => v(0.15, 0.1),
        // Rounded: u o w and the rounded fricatives.
        'u' | 'ʊ' | 'o' | 'ɔ' | 'ɒ' | 'w' | 'y' | 'ø' | 'œ' | 'ʃ' | 'ʒ' => v(0.55, -0.8),
        // Spread: i e.
        'i' | 'ɪ' | 'e' | 'ɛ' | 'j' => v(0.6, 0.7),
        // Open: a.
        'a' | 'ɑ' | 'æ' | 'ʌ' | 'ɐ' | 'ɜ' => v(1.0, 0.2),
        'ə' | 'ɚ' | 'ᵻ' => v(0.7, 0.0),
        // Tongue and throat consonants: the jaw follows the loudness, lips neutral.
        't' | 'd' | 'n' | 'l' | 'ɹ' | 'r' | 's' | 'z' | 'θ' | 'ð' | 'k' | 'ɡ' | 'g' | 'ŋ' | 'h' | 'ɾ' | 'ʔ' => {
            v(0.5, 0.1)
        }
        _ => None,
    }
}

/// Consonants last about half as long as vowels.
fn is_consonant(c: char) -> bool {
    "pbmfvtdnlɹrszθðkɡgŋhɾʔʃʒwj".contains(c)
}

/// Mouth shapes per video frame from timed words and their IPA: each word's time is shared
/// among its phonemes (vowels twice as long as consonants), each frame takes the shape of the
/// sound it falls in, and neighbours blend (coarticulation: a small triangular kernel over about
/// 150 ms, so the lips start rounding before a rounded vowel). Frames outside words are neutral.
pub fn viseme_track(words: &[(f64, f64, String)], fps: f64, frames: usize) -> Vec<Viseme> {
    let neutral = Viseme { open: 1.0, spread: 0.0 };
    let mut raw = vec![neutral; frames];
    for (start, end, ipa) in words {
        let sounds: Vec<(Viseme, f64)> =
            ipa.chars().filter_map(|c| viseme(c).map(|v| (v, if is_consonant(c) { 1.0 } else { 2.0 }))).collect();
        let total: f64 = sounds.iter().map(|s| s.1).sum();
        if total <= 0.0 || end <= start {
            continue;
        }
        let mut t = *start;
        for (v, weight) in sounds {
            let d = (end - start) * weight / total;
            let a = ((t * fps).round().max(0.0) as usize).min(frames);
            let b = (((t + d) * fps).round().max(0.0) as usize).max(a + 1).min(frames);
            for f in &mut raw[a..b] {
                *f = v;
            }
            t += d;
        }
    }
    let kernel = [0.25f32, 0.5, 1.0, 0.5, 0.25];
    (0..frames)
        .map(|f| {
            let (mut open, mut spread, mut sum) = (0.0, 0.0, 0.0);
            for (k, w) in kernel.iter().enumerate() {
                if let Some(v) = (f + k).checked_sub(2).and_then(|i| raw.get(i)) {
                    open += v.open * w;
                    spread += v.spread * w;
                    sum += w;
                }
            }
            Viseme { open: open / sum, spread: spread / sum }
        })
        .collect()
}

/// Opens the mouth in `frame` by `open` (0 to 1) of `m.max_open()`: below the lips the picture
/// moves down (fully at the lower lip, fading out under the chin and towards the cheeks), and
/// the gap is shaded dark, darkest in the middle, like the inside of a mouth.
///
/// `spread` (-1 to 1) narrows the lips towards the middle (rounded sounds) or widens them
/// (spread sounds), by up to an eighth of the mouth's width at each corner.
pub fn open_mouth(src: &Yuv420, m: &MouthGeometry, open: f32, spread: f32, out: &mut Yuv420) {
    out.clone_from(src);
    let d = open.clamp(0.0, 1.0) * m.max_open();
    let spread = spread.clamp(-1.0, 1.0);
    if d < 0.25 && spread.abs() < 0.05 {
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
    // Rounding pulls the corners in (spreading pushes them out): the most at the corners, fading
    // above and below the lips and out towards the cheeks.
    let lip_band = (below * 0.6).max(2.0);
    // Inside the mouth, per plane: the dark of the throat, the upper teeth, the tongue.
    let teeth_band = (m.width() * 0.09).max(1.0);
    let rounding = spread.abs() >= 0.05;
    // The warp is separable: what depends on x alone is worked out once per column, what
    // depends on y alone once per row (the same operations in the same order as per pixel, so
    // the same pixels; cosines and square roots per pixel were most of its cost).
    struct Column {
        fx: f32,
        /// How far the jaw drops here: right under the lips the picture moves down by the gap (the
        /// lower lip drops); beside the mouth the skin stretches from zero at the lip line.
        drop: f32,
        lips: f32,
        gap: f32,
        /// Towards the middle (rounding) or away from it (spreading), before the row's share.
        sideways: f32,
    }
    struct Row {
        fy: f32,
        /// Everything fades out below the chin.
        fade: f32,
        stretch: f32,
        vertical: f32,
    }
    // One pixel of the warped plane: the gap's shading inside the opening, else the picture
    // pulled down (and sideways) by the jaw.
    let mouth_pixel = |plane: &[u8],
                       w: u32,
                       h: u32,
                       scale: f32,
                       (x, y): (u32, u32),
                       col: &Column,
                       row: &Row,
                       [dark, teeth, tongue]: [u8; 3]|
     -> u8 {
        let (fx, fy) = (col.fx, row.fy);
        let gap = col.gap;
        let inside = fy >= m.lips_y && fy < m.lips_y + gap;
        if inside {
            // The gap: dark in the middle, lighter towards its rim.
            let ex = (fx - cx) / half;
            let depth = fy - m.lips_y;
            let ey = (depth / gap.max(1.0) - 0.5) * 2.0;
            let rim = (ex * ex + ey * ey * 0.5).min(1.0);
            let src_v = plane[(y * w + x) as usize] as f32;
            let mut v = dark as f32 * (1.0 - rim * 0.6) + src_v * rim * 0.6;
            // Wide open, the upper teeth show under the lip (a quarter of the gap at most, shaded
            // towards the corners) and the tongue at the bottom.
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
            return v.clamp(0.0, 255.0) as u8;
        }
        // Backward map: this pixel shows what was `shift` above it (and, for rounding or
        // spreading, `sideways` towards or away from the middle).
        let shift = if fy < m.lips_y {
            0.0
        } else {
            let s = col.lips;
            col.drop * row.fade * (s + (1.0 - s) * row.stretch)
        };
        let sideways = if rounding { col.sideways * row.vertical } else { 0.0 };
        let sy = ((fy - shift) / scale).max(0.0);
        let sx = ((fx - sideways) / scale).clamp(0.0, (w - 1) as f32);
        let (fy0, fx0) = (floor(sy), floor(sx));
        let (iy, ty) = (fy0 as u32, sy - fy0);
        let (ix, tx) = (fx0 as u32, sx - fx0);
        let at = |xx: u32, yy: u32| plane[(yy.min(h - 1) * w + xx.min(w - 1)) as usize] as f32;
        let top = at(ix, iy) + (at(ix + 1, iy) - at(ix, iy)) * tx;
        let bottom = at(ix, iy + 1) + (at(ix + 1, iy + 1) - at(ix, iy + 1)) * tx;
        round_non_negative(top + (bottom - top) * ty) as u8
    };
    let warp_plane = |plane: &[u8], out_plane: &mut [u8], w: u32, h: u32, scale: f32, shades: [u8; 3]| {
        let above = if rounding { lip_band } else { 0.0 };
        let y0 = ((m.lips_y - 1.0 - above) / scale).max(0.0) as u32;
        let y1 = (((m.lips_y + below * 1.6 + d) / scale).ceil() as u32 + 1).min(h);
        let x0 = ((cx - reach) / scale).max(0.0) as u32;
        let x1 = (((cx + reach) / scale).ceil() as u32 + 1).min(w);
        let columns: Vec<Column> = (x0..x1)
            .map(|x| {
                let fx = x as f32 * scale;
                let (jaw, lips) = (jaw(fx), lips(fx));
                let sideways = if rounding {
                    let u = (fx - cx) / half;
                    let profile = if u.abs() <= 1.0 { u } else { u.signum() * (2.0 - u.abs()).max(0.0) };
                    spread * half * 0.25 * profile
                } else {
                    0.0
                };
                Column { fx, drop: d * jaw, lips, gap: d * jaw * lips, sideways }
            })
            .collect();
        for y in y0..y1 {
            let fy = y as f32 * scale;
            let row = Row {
                fy,
                fade: 1.0 - smooth((fy - m.lips_y) / (below * 1.6)),
                stretch: smooth((fy - m.lips_y) / (below * 0.35)),
                vertical: 1.0 - smooth(((fy - m.lips_y).abs() - d * 0.5) / lip_band),
            };
            let line = (y * w) as usize;
            for (x, col) in (x0..x1).zip(&columns) {
                out_plane[line + x as usize] = mouth_pixel(plane, w, h, scale, (x, y), col, &row, shades);
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

    #[test]
    fn visemes_close_round_and_spread_in_time() {
        assert_eq!(viseme('m').unwrap().open, 0.0);
        assert!(viseme('u').unwrap().spread < 0.0 && viseme('i').unwrap().spread > 0.0);
        assert_eq!(viseme('ˈ'), None, "stress marks are not sounds");
        // "moo" then "me" at 10 fps: lips shut at each start, rounded then spread.
        let words = vec![(0.0, 1.0, "muː".to_string()), (1.0, 2.0, "miː".to_string())];
        let t = viseme_track(&words, 10.0, 25);
        assert_eq!(t.len(), 25);
        assert!(t[0].open < 0.5, "shut for the m: {:?}", t[0]);
        assert!(t[6].spread < -0.6, "rounded for the oo: {:?}", t[6]);
        assert!(t[16].spread > 0.5, "spread for the ee: {:?}", t[16]);
        assert!(t[10].open < t[6].open, "closing for the second m: {:?} vs {:?}", t[10], t[6]);
        assert_eq!(t[24], Viseme { open: 1.0, spread: 0.0 }, "neutral after the words");
        // Coarticulation: the change from rounded to spread is gradual.
        let spreads: Vec<f32> = t[8..15].iter().map(|v| v.spread).collect();
        assert!(spreads.windows(2).all(|w| (w[1] - w[0]).abs() < 0.8), "{spreads:?}");
        assert!(viseme_track(&[], 25.0, 0).is_empty());
    }

    #[test]
    fn rounding_pulls_the_corners_in_and_spreading_pushes_them_out() {
        // Vertical stripes in luma so horizontal movement is visible.
        let (w, h) = (64u32, 64u32);
        let y = (0..w * h).map(|i| if (i % w) % 4 < 2 { 200 } else { 60 }).collect();
        let c = ((w / 2) * (h / 2)) as usize;
        let src = Yuv420 { width: w, height: h, y, u: vec![128; c], v: vec![128; c] };
        let m = MouthGeometry { lips_y: 30.0, left_x: 20.0, right_x: 44.0, chin_y: 46.0 };
        let mut round = Yuv420 { width: 0, height: 0, y: vec![], u: vec![], v: vec![] };
        let mut wide = round.clone();
        open_mouth(&src, &m, 0.0, -1.0, &mut round);
        open_mouth(&src, &m, 0.0, 1.0, &mut wide);
        let row = |f: &Yuv420, y: u32| f.y[(y * w) as usize..((y + 1) * w) as usize].to_vec();
        assert_ne!(row(&round, 30), row(&src, 30), "the lip line moves");
        assert_ne!(row(&round, 30), row(&wide, 30), "rounded and spread differ");
        assert_eq!(row(&round, 5), row(&src, 5), "far above the mouth nothing moves");
        assert_eq!(row(&wide, 60), row(&src, 60), "far below the mouth nothing moves");
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
        open_mouth(&src, &m, 0.0, 0.0, &mut out);
        assert_eq!(out.y, src.y, "closed: unchanged");
        open_mouth(&src, &m, 1.0, 0.0, &mut out);
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
        open_mouth(&src, &m, 0.4, 0.0, &mut half_open);
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
            super::open_mouth(&src, &m, open, 0.0, &mut out);
            let mut f = std::fs::File::create(format!("/tmp/mouth_{open}.yuv")).unwrap();
            out.write_to(&mut f).unwrap();
        }
    }
}
