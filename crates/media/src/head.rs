//! The rest of a talking head besides the mouth: blinks (the upper lid slides down over the eye,
//! the skin above it stretching after it) and slight idle head motion (a sway and tilt of the
//! head that fades smoothly into the still background, so there is no seam), both on YUV frames
//! and both deterministic in time, so a re-render gives the same frames.

use crate::frame::{Yuv420, floor};

/// One eye, in frame pixels (from face landmarks).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EyeGeometry {
    /// Corners, x (left < right in the frame).
    pub left_x: f32,
    pub right_x: f32,
    /// Middle of the upper and lower lid, y.
    pub upper_y: f32,
    pub lower_y: f32,
}

/// Where the head is: its centre and size (the face box), and the neck it turns about.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeadGeometry {
    pub cx: f32,
    pub cy: f32,
    /// Half the face box's height: the head (hair included) is about twice this.
    pub radius: f32,
    pub pivot_x: f32,
    pub pivot_y: f32,
}

/// How far a blink has closed the eyes at `t` seconds (0 open, 1 shut). Blinks come every 2-5 s
/// (people blink 10-20 times a minute), each closing in 80 ms and opening in 150 ms; `seed`
/// makes each scene's rhythm its own.
pub fn blink_closure(t: f64, seed: u64) -> f32 {
    const CLOSE: f64 = 0.08;
    const HOLD: f64 = 0.03;
    const OPEN: f64 = 0.15;
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        // splitmix64: a fixed, well-mixed sequence per seed.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    let mut at = 0.6 + next() * 1.5;
    while at <= t {
        let d = t - at;
        if d < CLOSE {
            return (d / CLOSE) as f32;
        }
        if d < CLOSE + HOLD {
            return 1.0;
        }
        if d < CLOSE + HOLD + OPEN {
            return (1.0 - (d - CLOSE - HOLD) / OPEN) as f32;
        }
        at += 2.0 + next() * 3.0;
    }
    0.0
}

/// Closes `eye` in `frame` by `closure` (0-1): the upper lid comes down, most in the middle of
/// the eye and not at all at its corners, the skin above it following, with a faint lash line.
pub fn blink(frame: &mut Yuv420, eye: &EyeGeometry, closure: f32) {
    let c = closure.clamp(0.0, 1.0);
    let open_h = eye.lower_y - eye.upper_y;
    if c <= 0.0 || open_h < 1.0 {
        return;
    }
    let cx = (eye.left_x + eye.right_x) / 2.0;
    let half = ((eye.right_x - eye.left_x) / 2.0).max(1.0);
    // The moving lid skin: from the brow (one eye-width above the lid) down to the lid.
    let top = eye.upper_y - half * 1.1;
    let (w, h) = (frame.width, frame.height);
    let warp = |plane: &mut [u8], pw: u32, ph: u32, scale: f32, lash: Option<u8>| {
        let x0 = ((eye.left_x - half * 0.15) / scale).floor().max(0.0) as u32;
        let x1 = (((eye.right_x + half * 0.15) / scale).ceil() as u32 + 1).min(pw);
        let y0 = (top / scale).floor().max(0.0) as u32;
        let y1 = ((eye.lower_y + 1.0) / scale).ceil().min(ph as f32) as u32;
        // Read from a copy of the band: rows are pulled from above.
        let band: Vec<u8> =
            (y0..y1).flat_map(|y| plane[(y * pw + x0) as usize..(y * pw + x1) as usize].to_vec()).collect();
        let bw = (x1 - x0) as usize;
        for x in x0..x1 {
            let fx = x as f32 * scale;
            let across = ((fx - cx) / half).abs();
            if across >= 1.0 {
                continue;
            }
            // The lid's edge is an arc: full travel mid-eye, none at the corners.
            let travel = c * open_h * (1.0 - across * across).sqrt();
            let lid = eye.upper_y + travel;
            for y in y0..y1 {
                let fy = y as f32 * scale;
                if fy < top || fy > lid {
                    continue;
                }
                // Backward map: [top, lid] shows what was in [top, upper_y].
                let sy = top + (fy - top) * (eye.upper_y - top) / (lid - top).max(1.0);
                let sy = sy / scale - y0 as f32;
                let (iy, t) = (sy.floor().max(0.0) as usize, sy - sy.floor());
                let rows = (y1 - y0) as usize;
                let col = (x - x0) as usize;
                let a = band[iy.min(rows - 1) * bw + col] as f32;
                let b = band[(iy + 1).min(rows - 1) * bw + col] as f32;
                let mut v = a + (b - a) * t;
                if let Some(dark) = lash {
                    // The lashes: a soft dark line along the lid's edge once it is well down.
                    let k = (1.0 - ((lid - fy) / (0.12 * open_h).max(1.0)).min(1.0)) * (c - 0.3).max(0.0) / 0.7;
                    v = v * (1.0 - 0.55 * k) + dark as f32 * 0.55 * k;
                }
                plane[(y * pw + x) as usize] = v.round() as u8;
            }
        }
    };
    warp(&mut frame.y, w, h, 1.0, Some(40));
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    warp(&mut frame.u, cw, ch, 2.0, None);
    warp(&mut frame.v, cw, ch, 2.0, None);
}

/// Idle motion at `t` seconds: (dx, dy) in pixels and a tilt in radians, scaled by `amount`
/// (1 = natural). Slow incommensurate sines, so it never visibly repeats.
pub fn idle_motion(t: f64, head: &HeadGeometry, amount: f32, seed: u64) -> (f32, f32, f32) {
    let phase = (seed % 1000) as f64 / 1000.0 * std::f64::consts::TAU;
    let s = |period: f64, p: f64| ((t / period) * std::f64::consts::TAU + phase * p).sin() as f32;
    let r = head.radius * amount;
    let dx = r * 0.03 * (0.6 * s(5.3, 1.0) + 0.4 * s(2.9, 2.3));
    let dy = r * 0.018 * (0.7 * s(4.1, 1.7) + 0.3 * s(2.3, 0.6));
    let tilt = amount * 0.016 * (0.7 * s(6.7, 0.4) + 0.3 * s(3.7, 2.9));
    (dx, dy, tilt)
}

/// Moves the head in `src` by (dx, dy) and turns it by `tilt` about the pivot, into `out`. The
/// motion is whole inside the head and fades smoothly to nothing at about twice its size, so the
/// background and shoulders stay put without a seam.
pub fn move_head(src: &Yuv420, head: &HeadGeometry, (dx, dy, tilt): (f32, f32, f32), out: &mut Yuv420) {
    out.clone_from(src);
    if dx.abs() < 0.05 && dy.abs() < 0.05 && tilt.abs() < 1e-4 {
        return;
    }
    // The face box's half-height `radius` times 1.5 holds the head with its hair.
    let inner = head.radius * 1.5;
    let outer = head.radius * 2.6;
    let outer2 = outer * outer;
    // Weight by squared distance from the head's centre, from a table (no square root per pixel).
    const STEPS: usize = 1024;
    let table: Vec<f32> = (0..=STEPS)
        .map(|i| {
            let d = (i as f32 / STEPS as f32).sqrt() * outer;
            let t = ((d - inner) / (outer - inner)).clamp(0.0, 1.0);
            1.0 - t * t * (3.0 - 2.0 * t)
        })
        .collect();
    let to_index = STEPS as f32 / outer2;
    let (sin, cos) = tilt.sin_cos();
    // Where the weight leaves less than a few hundredths of a pixel of motion, the copy stands.
    let reach = dx.abs() + dy.abs() + tilt.abs() * (outer + (head.pivot_y - head.cy).abs());
    let negligible = 0.04 / reach.max(1e-3);
    let (w, h) = (src.width, src.height);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if w < 2 || h < 2 || cw < 2 || ch < 2 {
        return;
    }
    // The field is smooth: one displacement per 2x2 block (a chroma pixel) serves its four luma
    // pixels and both chroma samples.
    let y0 = ((head.cy - outer) / 2.0).floor().max(0.0) as u32;
    let y1 = (((head.cy + outer) / 2.0).ceil() as u32 + 1).min(ch);
    for by in y0..y1 {
        let fy = by as f32 * 2.0 + 0.5;
        let dy2 = (fy - head.cy) * (fy - head.cy);
        if dy2 >= outer2 {
            continue;
        }
        let half = (outer2 - dy2).sqrt();
        let x0 = ((head.cx - half) / 2.0).floor().max(0.0) as u32;
        let x1 = (((head.cx + half) / 2.0).ceil() as u32 + 1).min(cw);
        for bx in x0..x1 {
            let fx = bx as f32 * 2.0 + 0.5;
            let d2 = (fx - head.cx) * (fx - head.cx) + dy2;
            let k = table[((d2 * to_index) as usize).min(STEPS)];
            if k <= negligible {
                continue;
            }
            // Where the block came from: undo the shift, then the turn about the pivot.
            let (rx, ry) = (fx - head.pivot_x - dx * k, fy - head.pivot_y - dy * k);
            let (c, s) = (1.0 + (cos - 1.0) * k, sin * k);
            let ox = head.pivot_x + rx * c + ry * s - fx;
            let oy = head.pivot_y - rx * s + ry * c - fy;
            let ci = (by * cw + bx) as usize;
            // Both chroma planes are sampled at the same place.
            let tap = Tap::clamped(cw, ch, bx as f32 + ox / 2.0, by as f32 + oy / 2.0);
            out.u[ci] = tap.sample(&src.u, cw);
            out.v[ci] = tap.sample(&src.v, cw);
            // The block's four luma pixels share one fractional offset: away from the edges,
            // one 3x3 neighbourhood and one set of weights serve all four.
            let (sx, sy) = (bx as f32 * 2.0 + ox, by as f32 * 2.0 + oy);
            let (fx0, fy0) = (floor(sx), floor(sy));
            let (x2, y2) = (bx * 2 + 1, by * 2 + 1);
            if fx0 >= 0.0 && fy0 >= 0.0 && (fx0 as u32) + 2 < w && (fy0 as u32) + 2 < h && x2 < w && y2 < h {
                let (tx, ty) = (((sx - fx0) * 256.0) as u32, ((sy - fy0) * 256.0) as u32);
                let base = (fy0 as u32 * w + fx0 as u32) as usize;
                let stride = w as usize;
                let n = &src.y[base..base + 2 * stride + 3];
                let px = |r: usize, c: usize| n[r * stride + c] as u32;
                let o = ((by * 2) * w + bx * 2) as usize;
                for iy in 0..2 {
                    for ix in 0..2 {
                        let top = px(iy, ix) * (256 - tx) + px(iy, ix + 1) * tx;
                        let bottom = px(iy + 1, ix) * (256 - tx) + px(iy + 1, ix + 1) * tx;
                        out.y[o + iy * stride + ix] = ((top * (256 - ty) + bottom * ty + 32768) >> 16) as u8;
                    }
                }
            } else {
                for (ix, iy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (x, y) = (bx * 2 + ix, by * 2 + iy);
                    if x < w && y < h {
                        out.y[(y * w + x) as usize] =
                            Tap::clamped(w, h, x as f32 + ox, y as f32 + oy).sample(&src.y, w);
                    }
                }
            }
        }
    }
}

/// A bilinear sample's place in a plane: the top-left pixel and the weights, in 8-bit fixed
/// point, clamped to the plane.
struct Tap {
    index: usize,
    tx: u32,
    ty: u32,
}

impl Tap {
    #[inline(always)]
    fn clamped(pw: u32, ph: u32, sx: f32, sy: f32) -> Self {
        let sx = sx.clamp(0.0, (pw - 1) as f32 - 0.001);
        let sy = sy.clamp(0.0, (ph - 1) as f32 - 0.001);
        let (xi, yi) = (sx as u32, sy as u32);
        let (tx, ty) = (((sx - xi as f32) * 256.0) as u32, ((sy - yi as f32) * 256.0) as u32);
        Self { index: (yi * pw + xi) as usize, tx, ty }
    }

    #[inline(always)]
    fn sample(&self, plane: &[u8], pw: u32) -> u8 {
        let (i, tx, ty) = (self.index, self.tx, self.ty);
        let (a, b) = (plane[i] as u32, plane[i + 1] as u32);
        let (c, d) = (plane[i + pw as usize] as u32, plane[i + pw as usize + 1] as u32);
        let top = a * (256 - tx) + b * tx;
        let bottom = c * (256 - tx) + d * tx;
        ((top * (256 - ty) + bottom * ty + 32768) >> 16) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blinks_are_brief_regular_and_deterministic() {
        let fps = 25.0;
        let c: Vec<f32> = (0..(60.0 * fps) as usize).map(|f| blink_closure(f as f64 / fps, 7)).collect();
        // Count blinks: rising edges of "shut".
        let blinks = c.windows(2).filter(|w| w[0] < 0.99 && w[1] >= 0.99).count();
        assert!((10..=30).contains(&blinks), "{blinks} blinks a minute");
        let closed_frames = c.iter().filter(|&&v| v > 0.5).count();
        assert!(closed_frames < c.len() / 8, "eyes mostly open: {closed_frames} of {}", c.len());
        assert_eq!(c, (0..c.len()).map(|f| blink_closure(f as f64 / fps, 7)).collect::<Vec<_>>());
        assert_ne!(c, (0..c.len()).map(|f| blink_closure(f as f64 / fps, 8)).collect::<Vec<_>>(), "per-scene rhythm");
        assert_eq!(blink_closure(0.1, 7), 0.0, "no blink in the first frames");
    }

    fn striped(w: u32, h: u32) -> Yuv420 {
        let y = (0..w * h).map(|i| if (i / w) % 6 < 3 { 220 } else { 50 }).collect();
        let c = (w.div_ceil(2) * h.div_ceil(2)) as usize;
        Yuv420 { width: w, height: h, y, u: vec![128; c], v: vec![128; c] }
    }

    #[test]
    fn a_blink_covers_the_eye_and_nothing_else() {
        let mut f = striped(64, 64);
        let src = f.clone();
        let eye = EyeGeometry { left_x: 20.0, right_x: 40.0, upper_y: 30.0, lower_y: 36.0 };
        blink(&mut f, &eye, 0.0);
        assert_eq!(f.y, src.y);
        blink(&mut f, &eye, 1.0);
        let px = |g: &Yuv420, x: u32, y: u32| g.y[(y * g.width + x) as usize];
        assert!((33..36).any(|y| px(&f, 30, y) != px(&src, 30, y)), "the middle of the eye is covered");
        for y in 0..64 {
            for x in [0, 5, 50, 63] {
                assert_eq!(px(&f, x, y), px(&src, x, y), "outside the eye ({x},{y})");
            }
        }
        for y in 37..64 {
            assert_eq!(px(&f, 30, y), px(&src, 30, y), "below the lower lid ({y})");
        }
    }

    #[test]
    fn head_motion_moves_the_head_and_leaves_the_far_background() {
        let src = striped(128, 128);
        let head = HeadGeometry { cx: 64.0, cy: 50.0, radius: 12.0, pivot_x: 64.0, pivot_y: 70.0 };
        let mut out = src.clone();
        move_head(&src, &head, (0.0, 3.0, 0.0), &mut out);
        let px = |g: &Yuv420, x: u32, y: u32| g.y[(y * g.width + x) as usize];
        // Inside the head, the picture moved down by 3 rows.
        for y in 45..55 {
            assert_eq!(px(&out, 64, y), px(&src, 64, y - 3), "row {y}");
        }
        // Far away, nothing changed.
        for (x, y) in [(0, 0), (127, 127), (5, 120), (120, 5)] {
            assert_eq!(px(&out, x, y), px(&src, x, y));
        }
        let m = idle_motion(3.0, &head, 1.0, 1);
        assert!(m.0.abs() < 1.0 && m.1.abs() < 1.0 && m.2.abs() < 0.03, "slight: {m:?}");
        assert_eq!(idle_motion(3.0, &head, 0.0, 1), (0.0, 0.0, 0.0));
    }
}
