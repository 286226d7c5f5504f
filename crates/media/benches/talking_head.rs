//! `cargo bench -p reelsmith-media --bench talking_head`: the per-frame warps of a talking head
//! (mouth, blinks, head motion) on 720x720 frames, with the face rig the face mesh finds in
//! `examples/talking-photo/talking-photo-10s.json`, over the 10 s example's 330 frames.
//! Prints the time per frame of each warp and a checksum of every frame drawn, so a faster
//! version can be checked to draw the very same pixels.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use reelsmith_media::frame::Yuv420;
use reelsmith_media::head::{self, EyeGeometry, HeadGeometry};
use reelsmith_media::mouth::{self, MouthGeometry};

const FRAMES: usize = 330;
const FPS: f64 = 30.0;

/// A textured 720x720 frame: gradients plus a hash pattern, so every bilinear weight matters.
fn frame() -> Yuv420 {
    let (w, h) = (720u32, 720u32);
    let px = |x: u32, y: u32, k: u32| {
        let n = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ k) % 31;
        ((x * 3 + y * 5 + k * 40) % 200 + n) as u8
    };
    let (cw, ch) = (w / 2, h / 2);
    Yuv420 {
        width: w,
        height: h,
        y: (0..h).flat_map(|y| (0..w).map(move |x| px(x, y, 0))).collect(),
        u: (0..ch).flat_map(|y| (0..cw).map(move |x| px(x, y, 1))).collect(),
        v: (0..ch).flat_map(|y| (0..cw).map(move |x| px(x, y, 2))).collect(),
    }
}

fn main() {
    // The rig of the example's portrait (its canvas entry's face.json).
    let m = MouthGeometry { lips_y: 205.1345, left_x: 284.0336, right_x: 346.63077, chin_y: 246.40878 };
    let eyes = [
        EyeGeometry { left_x: 273.0663, right_x: 299.93192, upper_y: 136.77115, lower_y: 145.33992 },
        EyeGeometry { left_x: 333.44824, right_x: 360.60428, upper_y: 140.41617, lower_y: 148.37256 },
    ];
    let face = HeadGeometry { cx: 315.8811, cy: 180.02689, radius: 66.49711, pivot_x: 312.5977, pivot_y: 279.65735 };
    let src = frame();
    let (mut a, mut b) = (src.clone(), src.clone());
    let (mut t_mouth, mut t_blink, mut t_head) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut sum = std::collections::hash_map::DefaultHasher::new();
    let rounds = 3;
    for round in 0..rounds {
        for f in 0..FRAMES {
            let t = f as f64 / FPS;
            // Speech-like: the mouth opens and closes a few times a second, rounding and spreading.
            let open = ((t * 9.0).sin() * 0.5 + 0.5) as f32;
            let spread = ((t * 2.3).sin()) as f32;
            let s = Instant::now();
            mouth::open_mouth(&src, &m, open, spread, &mut a);
            t_mouth += s.elapsed();
            let s = Instant::now();
            let closure = head::blink_closure(t, 1).max(if f % 40 < 4 { 0.8 } else { 0.0 });
            for eye in &eyes {
                head::blink(&mut a, eye, closure);
            }
            t_blink += s.elapsed();
            let s = Instant::now();
            head::move_head(&a, &face, head::idle_motion(t, &face, 1.0, 1), &mut b);
            t_head += s.elapsed();
            if round == 0 {
                (&b.y, &b.u, &b.v).hash(&mut sum);
            }
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1e3 / (FRAMES * rounds) as f64;
    println!("talking head, 720x720, {FRAMES} frames x {rounds}: ms per frame");
    println!("  open_mouth  {:.3}", per(t_mouth));
    println!("  blink       {:.3}", per(t_blink));
    println!("  move_head   {:.3}", per(t_head));
    println!("  checksum    {:016x}", sum.finish());
}
