//! Frames as planar YUV 4:2:0 (BT.709, limited range) — the encoder's native format, so
//! frames are composited in it directly and piped to FFmpeg without any colour conversion.

use std::io::{self, Write};

/// A 4:2:0 frame: full-resolution luma, half-resolution chroma. Width and height are even.
#[derive(Clone, Debug, PartialEq)]
pub struct Yuv420 {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

/// BT.709 limited-range conversion of one straight sRGB pixel.
#[inline]
pub fn rgb_to_yuv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let (r, g, b) = (r / 255.0, g / 255.0, b / 255.0);
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let cb = (b - y) / 1.8556;
    let cr = (r - y) / 1.5748;
    (16.0 + 219.0 * y, 128.0 + 224.0 * cb, 128.0 + 224.0 * cr)
}

/// Inverse of [`rgb_to_yuv`], clamped to 0..=255 (used by tests and frame inspection).
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let yf = (y as f32 - 16.0) / 219.0;
    let cb = (u as f32 - 128.0) / 224.0;
    let cr = (v as f32 - 128.0) / 224.0;
    let r = yf + 1.5748 * cr;
    let b = yf + 1.8556 * cb;
    let g = (yf - 0.2126 * r - 0.0722 * b) / 0.7152;
    let c = |x: f32| (x * 255.0).round().clamp(0.0, 255.0) as u8;
    [c(r), c(g), c(b)]
}

/// How many 16x16 macroblocks a `width`x`height` picture has: the length of a constant-block map.
pub fn macroblocks(width: u32, height: u32) -> usize {
    width.div_ceil(16) as usize * height.div_ceil(16) as usize
}

impl Yuv420 {
    /// Which 16x16 macroblocks (luma 16x16 and both 8x8 chroma blocks; raster order, edge
    /// blocks cut at the frame) equal `before`'s, written into `out` as 1 (equal) or 0: what an
    /// encoder may skip without looking. Frames of different sizes have no equal blocks.
    pub fn unchanged_macroblocks(&self, before: &Yuv420, out: &mut Vec<u8>) {
        let mbw = self.width.div_ceil(16) as usize;
        out.clear();
        out.resize(macroblocks(self.width, self.height), 1);
        if (self.width, self.height) != (before.width, before.height) {
            out.fill(0);
            return;
        }
        let mut mark = |plane: &[u8], old: &[u8], width: usize, block: usize| {
            for (row, (a, b)) in plane.chunks_exact(width).zip(old.chunks_exact(width)).enumerate() {
                let flags = &mut out[row / block * mbw..][..mbw];
                for (flag, (x, y)) in flags.iter_mut().zip(a.chunks(block).zip(b.chunks(block))) {
                    *flag &= u8::from(x == y);
                }
            }
        };
        mark(&self.y, &before.y, self.width as usize, 16);
        let chroma = self.width.div_ceil(2) as usize;
        mark(&self.u, &before.u, chroma, 8);
        mark(&self.v, &before.v, chroma, 8);
    }

    /// A frame filled with one straight sRGB colour.
    pub fn solid(width: u32, height: u32, rgb: [u8; 3]) -> Self {
        assert!(width.is_multiple_of(2) && height.is_multiple_of(2), "4:2:0 needs even dimensions");
        let (y, u, v) = rgb_to_yuv(rgb[0] as f32, rgb[1] as f32, rgb[2] as f32);
        let (cw, ch) = ((width / 2) as usize, (height / 2) as usize);
        Self {
            width,
            height,
            y: vec![y.round() as u8; (width * height) as usize],
            u: vec![u.round() as u8; cw * ch],
            v: vec![v.round() as u8; cw * ch],
        }
    }

    /// Converts straight (non-premultiplied) RGBA pixels; alpha is ignored. Chroma is the
    /// average of each 2x2 block.
    pub fn from_rgba(width: u32, height: u32, rgba: &[u8]) -> Self {
        assert!(width.is_multiple_of(2) && height.is_multiple_of(2), "4:2:0 needs even dimensions");
        let (w, h) = (width as usize, height as usize);
        assert_eq!(rgba.len(), w * h * 4);
        let mut out = Self { width, height, y: vec![0; w * h], u: vec![0; w * h / 4], v: vec![0; w * h / 4] };
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                let (mut su, mut sv) = (0.0, 0.0);
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (px, py) = (cx * 2 + dx, cy * 2 + dy);
                    let i = (py * w + px) * 4;
                    let (y, u, v) = rgb_to_yuv(rgba[i] as f32, rgba[i + 1] as f32, rgba[i + 2] as f32);
                    out.y[py * w + px] = y.round() as u8;
                    su += u;
                    sv += v;
                }
                out.u[cy * (w / 2) + cx] = (su / 4.0).round() as u8;
                out.v[cy * (w / 2) + cx] = (sv / 4.0).round() as u8;
            }
        }
        out
    }

    pub fn chroma_width(&self) -> usize {
        (self.width / 2) as usize
    }

    /// The frame as sRGB at one luma position (nearest chroma), for inspection.
    pub fn rgb_at(&self, x: u32, y: u32) -> [u8; 3] {
        let yi = (y * self.width + x) as usize;
        let ci = (y / 2) as usize * self.chroma_width() + (x / 2) as usize;
        yuv_to_rgb(self.y[yi], self.u[ci], self.v[ci])
    }

    /// Writes the planes back to back, as FFmpeg's `rawvideo` yuv420p expects.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.y)?;
        w.write_all(&self.u)?;
        w.write_all(&self.v)
    }

    /// Reads planes written by [`Yuv420::write_to`].
    pub fn from_bytes(width: u32, height: u32, bytes: &[u8]) -> Option<Self> {
        let ys = (width * height) as usize;
        let cs = ys / 4;
        if !width.is_multiple_of(2) || !height.is_multiple_of(2) || bytes.len() != ys + 2 * cs {
            return None;
        }
        Some(Self {
            width,
            height,
            y: bytes[..ys].to_vec(),
            u: bytes[ys..ys + cs].to_vec(),
            v: bytes[ys + cs..].to_vec(),
        })
    }

    /// Reads planes written by [`Yuv420::write_to`] straight into the frame (no staging copy).
    pub fn read_from(width: u32, height: u32, r: &mut impl io::Read) -> io::Result<Self> {
        let mut f = Self::solid(width, height, [0, 0, 0]);
        r.read_exact(&mut f.y)?;
        r.read_exact(&mut f.u)?;
        r.read_exact(&mut f.v)?;
        Ok(f)
    }

    pub fn byte_len(&self) -> usize {
        self.y.len() + self.u.len() + self.v.len()
    }
}

/// A source rectangle in luma pixels (fractional).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crop {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// Bilinear resampling of `crop` of `src` onto the whole of `dst`, all three planes.
///
/// Horizontal pass first, once per source row (each row is reused by the output rows that
/// need it), then a vertical blend of two horizontally scaled rows, which is contiguous and
/// vectorises. Weights have 6 bits so the horizontal pass maps onto SSSE3 `pshufb` +
/// `pmaddubsw`: 8 outputs from one 16-byte load with a shuffle and weights planned once per
/// frame. This is the per-frame hot path of Ken Burns motion; it avoids any RGB round trip.
pub fn resample_crop(src: &Yuv420, crop: Crop, dst: &mut Yuv420, scratch: &mut Vec<u16>) {
    let (sw, sh) = (src.width as usize, src.height as usize);
    let (dw, dh) = (dst.width as usize, dst.height as usize);
    resample_plane(&src.y, sw, sh, crop, &mut dst.y, dw, dh, scratch);
    let c = Crop { x: crop.x / 2.0, y: crop.y / 2.0, w: crop.w / 2.0, h: crop.h / 2.0 };
    resample_plane(&src.u, sw / 2, sh / 2, c, &mut dst.u, dw / 2, dh / 2, scratch);
    resample_plane(&src.v, sw / 2, sh / 2, c, &mut dst.v, dw / 2, dh / 2, scratch);
}

/// Weights are 0..=64 (6 bits): the largest that fits `pmaddubsw`'s signed byte operand.
const WBITS: u32 = 6;
const WONE: u16 = 1 << WBITS;

/// Index of the left sample and weight of the right one, per output position.
fn taps(out_len: usize, start: f32, len: f32, src_len: usize) -> Vec<(u32, u16)> {
    let scale = len / out_len as f32;
    let max = (src_len - 1) as f32;
    (0..out_len)
        .map(|i| {
            let s = (start + (i as f32 + 0.5) * scale - 0.5).clamp(0.0, max);
            let i0 = (s.floor() as usize).min(src_len.saturating_sub(2));
            let w = ((s - i0 as f32) * WONE as f32).round().clamp(0.0, WONE as f32) as u16;
            (i0 as u32, w)
        })
        .collect()
}

/// A group of 8 outputs whose 16 source bytes start at `base`: shuffle and weights for SSSE3.
#[derive(Clone, Copy)]
struct Block {
    base: u32,
    shuffle: [u8; 16],
    weights: [i8; 16],
}

/// The horizontal pass planned once per frame and plane: SIMD blocks where the taps of 8
/// consecutive outputs fit in 16 source bytes (any zoom up to ~1.75x), scalar taps elsewhere.
struct HPlan {
    xs: Vec<(u32, u16)>,
    /// `blocks[k]` covers outputs `8k..8k+8`; `None` falls back to scalar.
    blocks: Vec<Option<Block>>,
}

impl HPlan {
    fn new(xs: Vec<(u32, u16)>, src_len: usize) -> Self {
        let blocks = xs
            .chunks_exact(8)
            .map(|c| {
                let base = c[0].0;
                let last = c[7].0 + 1;
                if last - base >= 16 || base as usize + 16 > src_len {
                    return None;
                }
                let mut b = Block { base, shuffle: [0; 16], weights: [0; 16] };
                for (k, &(x0, w)) in c.iter().enumerate() {
                    b.shuffle[2 * k] = (x0 - base) as u8;
                    b.shuffle[2 * k + 1] = (x0 + 1 - base) as u8;
                    b.weights[2 * k] = (WONE - w) as i8;
                    b.weights[2 * k + 1] = w as i8;
                }
                Some(b)
            })
            .collect();
        Self { xs, blocks }
    }

    /// `out[i] = row[x0] * (64 - w) + row[x0 + 1] * w`, kept at 6 extra bits for the vertical pass.
    fn run(&self, row: &[u8], out: &mut [u16]) {
        let mut simd = false;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("ssse3") {
            simd = true;
            // SAFETY: SSSE3 is present; every block was checked to read inside `row`.
            unsafe { self.blocks_ssse3(row, out) };
        }
        for (k, b) in self.blocks.iter().enumerate() {
            if simd && b.is_some() {
                continue;
            }
            scalar_taps(row, &self.xs[8 * k..8 * k + 8], &mut out[8 * k..8 * k + 8]);
        }
        let tail = self.blocks.len() * 8;
        scalar_taps(row, &self.xs[tail..], &mut out[tail..]);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3")]
    unsafe fn blocks_ssse3(&self, row: &[u8], out: &mut [u16]) {
        use std::arch::x86_64::*;
        for (k, b) in self.blocks.iter().enumerate() {
            let Some(b) = b else { continue };
            debug_assert!(b.base as usize + 16 <= row.len() && 8 * k + 8 <= out.len());
            // SAFETY: HPlan::new only made blocks with base + 16 <= row.len(); out has 8 * blocks.
            unsafe {
                let px = _mm_loadu_si128(row.as_ptr().add(b.base as usize) as *const __m128i);
                let pairs = _mm_shuffle_epi8(px, _mm_loadu_si128(b.shuffle.as_ptr() as *const __m128i));
                let v = _mm_maddubs_epi16(pairs, _mm_loadu_si128(b.weights.as_ptr() as *const __m128i));
                _mm_storeu_si128(out.as_mut_ptr().add(8 * k) as *mut __m128i, v);
            }
        }
    }
}

fn scalar_taps(row: &[u8], xs: &[(u32, u16)], out: &mut [u16]) {
    for (o, &(x0, w)) in out.iter_mut().zip(xs) {
        let x0 = x0 as usize;
        *o = row[x0] as u16 * (WONE - w) + row[x0 + 1] as u16 * w;
    }
}

#[allow(clippy::too_many_arguments)]
fn resample_plane(
    src: &[u8],
    sw: usize,
    sh: usize,
    crop: Crop,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    scratch: &mut Vec<u16>,
) {
    if sw < 2 || sh < 2 {
        dst.fill(src.first().copied().unwrap_or(0));
        return;
    }
    let plan = HPlan::new(taps(dw, crop.x, crop.w, sw), sw);
    let ys = taps(dh, crop.y, crop.h, sh);
    scratch.clear();
    scratch.resize(2 * dw, 0);
    let (mut top, mut bottom) = scratch.split_at_mut(dw);
    // Source rows currently held in `top` and `bottom`.
    let (mut top_row, mut bottom_row) = (usize::MAX, usize::MAX);
    for (oy, &(y0, wy)) in ys.iter().enumerate() {
        let y0 = y0 as usize;
        if top_row != y0 {
            if bottom_row == y0 {
                std::mem::swap(&mut top, &mut bottom);
                std::mem::swap(&mut top_row, &mut bottom_row);
            } else {
                plan.run(&src[y0 * sw..][..sw], top);
                top_row = y0;
            }
        }
        if bottom_row != y0 + 1 {
            plan.run(&src[(y0 + 1) * sw..][..sw], bottom);
            bottom_row = y0 + 1;
        }
        vertical_blend(top, bottom, wy, &mut dst[oy * dw..][..dw]);
    }
}

/// The vertical pass: `out = (top * (64 - w) + bottom * w) / 64²`, rounded. It is most of
/// the resample's work (two rows of 14-bit sums per output row), so it runs 32 outputs per
/// step with AVX2 (16 with SSE2, which every x86-64 has), and the same sums in scalar code
/// for the tail and other targets.
fn vertical_blend(top: &[u16], bottom: &[u16], w: u16, out: &mut [u8]) {
    let n = out.len().min(top.len()).min(bottom.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the feature is checked; both functions stay inside the first `n` elements.
    let done = if std::arch::is_x86_feature_detected!("avx2") {
        unsafe { vertical_blend_avx2(&top[..n], &bottom[..n], w, &mut out[..n]) }
    } else {
        unsafe { vertical_blend_sse2(&top[..n], &bottom[..n], w, &mut out[..n]) }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    vertical_blend_scalar(&top[done..n], &bottom[done..n], w, &mut out[done..n]);
}

fn vertical_blend_scalar(top: &[u16], bottom: &[u16], w: u16, out: &mut [u8]) {
    let (a, b) = ((WONE - w) as u32, w as u32);
    let round = 1u32 << (2 * WBITS - 1);
    for ((o, &t), &u) in out.iter_mut().zip(top).zip(bottom) {
        *o = ((t as u32 * a + u as u32 * b + round) >> (2 * WBITS)) as u8;
    }
}

/// The (a, b) weight pair in each 32-bit lane, for `pmaddwd` over interleaved (top, bottom).
#[cfg(target_arch = "x86_64")]
fn weight_pair(w: u16) -> i32 {
    (WONE - w) as i32 | ((w as i32) << 16)
}

/// Returns how many outputs it wrote (a multiple of 32).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_blend_avx2(top: &[u16], bottom: &[u16], w: u16, out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let weights = _mm256_set1_epi32(weight_pair(w));
    let round = _mm256_set1_epi32(1 << (2 * WBITS - 1));
    // 16 outputs as i16: sums of interleaved pairs (in-lane unpacks, undone by the in-lane pack).
    let sixteen = |t: __m256i, u: __m256i| {
        let lo = _mm256_madd_epi16(_mm256_unpacklo_epi16(t, u), weights);
        let hi = _mm256_madd_epi16(_mm256_unpackhi_epi16(t, u), weights);
        let lo = _mm256_srai_epi32::<{ 2 * WBITS as i32 }>(_mm256_add_epi32(lo, round));
        let hi = _mm256_srai_epi32::<{ 2 * WBITS as i32 }>(_mm256_add_epi32(hi, round));
        _mm256_packs_epi32(lo, hi)
    };
    let n = out.len().min(top.len()).min(bottom.len());
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: i + 32 <= n, the length of all three slices.
        unsafe {
            let load = |s: &[u16], at: usize| _mm256_loadu_si256(s.as_ptr().add(at) as *const __m256i);
            let r0 = sixteen(load(top, i), load(bottom, i));
            let r1 = sixteen(load(top, i + 16), load(bottom, i + 16));
            // packus interleaves the 128-bit lanes: quads 0,2,1,3 put them back in order.
            let bytes = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(r0, r1));
            _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, bytes);
        }
        i += 32;
    }
    i
}

/// Returns how many outputs it wrote (a multiple of 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn vertical_blend_sse2(top: &[u16], bottom: &[u16], w: u16, out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let weights = _mm_set1_epi32(weight_pair(w));
    let round = _mm_set1_epi32(1 << (2 * WBITS - 1));
    let eight = |t: __m128i, u: __m128i| {
        let lo = _mm_madd_epi16(_mm_unpacklo_epi16(t, u), weights);
        let hi = _mm_madd_epi16(_mm_unpackhi_epi16(t, u), weights);
        let lo = _mm_srai_epi32::<{ 2 * WBITS as i32 }>(_mm_add_epi32(lo, round));
        let hi = _mm_srai_epi32::<{ 2 * WBITS as i32 }>(_mm_add_epi32(hi, round));
        _mm_packs_epi32(lo, hi)
    };
    let n = out.len().min(top.len()).min(bottom.len());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n, the length of all three slices.
        unsafe {
            let load = |s: &[u16], at: usize| _mm_loadu_si128(s.as_ptr().add(at) as *const __m128i);
            let r0 = eight(load(top, i), load(bottom, i));
            let r1 = eight(load(top, i + 8), load(bottom, i + 8));
            _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, _mm_packus_epi16(r0, r1));
        }
        i += 16;
    }
    i
}

/// `out = a + (b - a) * t`, t in 0..=1, on every plane.
pub fn crossfade(a: &Yuv420, b: &Yuv420, t: f32, out: &mut Yuv420) {
    let w = (t.clamp(0.0, 1.0) * 256.0).round() as u16;
    for (o, (pa, pb)) in [(&mut out.y, (&a.y, &b.y)), (&mut out.u, (&a.u, &b.u)), (&mut out.v, (&a.v, &b.v))] {
        for ((o, &x), &y) in o.iter_mut().zip(pa.iter()).zip(pb.iter()) {
            *o = ((x as u16 * (256 - w) + y as u16 * w + 128) >> 8) as u8;
        }
    }
}

/// `f` scaled towards black by `k` (1 = unchanged, 0 = black), into `out` (of the same size).
pub fn fade_to_black(f: &Yuv420, k: f32, out: &mut Yuv420) {
    let k = (k.clamp(0.0, 1.0) * 256.0).round() as i32;
    for (o, p) in out.y.iter_mut().zip(&f.y) {
        *o = (16 + (((*p as i32 - 16) * k + 128) >> 8)).clamp(0, 255) as u8;
    }
    for (o, p) in out.u.iter_mut().chain(out.v.iter_mut()).zip(f.u.iter().chain(&f.v)) {
        *o = (128 + (((*p as i32 - 128) * k + 128) >> 8)).clamp(0, 255) as u8;
    }
}

/// `b` pushes `a` out to the left: `t` of the width shows `b` on the right.
pub fn slide(a: &Yuv420, b: &Yuv420, t: f32, out: &mut Yuv420) {
    let w = out.width as usize;
    // Even offsets keep luma and chroma aligned.
    let off = ((t.clamp(0.0, 1.0) * w as f32 / 2.0).round() as usize * 2).min(w);
    let planes = [
        (&mut out.y, &a.y, &b.y, w, off),
        (&mut out.u, &a.u, &b.u, w / 2, off / 2),
        (&mut out.v, &a.v, &b.v, w / 2, off / 2),
    ];
    for (o, pa, pb, pw, poff) in planes {
        for ((orow, arow), brow) in o.chunks_exact_mut(pw).zip(pa.chunks_exact(pw)).zip(pb.chunks_exact(pw)) {
            orow[..pw - poff].copy_from_slice(&arow[poff..]);
            orow[pw - poff..].copy_from_slice(&brow[..poff]);
        }
    }
}

/// A pre-converted overlay (subtitle, text) positioned on the frame: straight YUV plus alpha,
/// luma at full resolution and chroma (with averaged alpha) at half.
#[derive(Clone, Debug, PartialEq)]
pub struct YuvOverlay {
    /// Top-left corner in the frame; even, so chroma lines up.
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
    y_plane: Vec<u8>,
    a_plane: Vec<u8>,
    u_plane: Vec<u8>,
    v_plane: Vec<u8>,
    ca_plane: Vec<u8>,
}

impl YuvOverlay {
    /// Converts premultiplied RGBA (as the text renderer produces) placed at (x, y).
    pub fn from_premultiplied_rgba(x: i32, y: i32, width: u32, height: u32, rgba: &[u8]) -> Self {
        let (x, y) = (x & !1, y & !1);
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut o = YuvOverlay {
            x,
            y,
            width,
            height,
            y_plane: vec![0; w * h],
            a_plane: vec![0; w * h],
            u_plane: vec![128; cw * ch],
            v_plane: vec![128; cw * ch],
            ca_plane: vec![0; cw * ch],
        };
        let mut acc = vec![(0.0f32, 0.0f32, 0.0f32); cw * ch];
        for py in 0..h {
            for px in 0..w {
                let i = (py * w + px) * 4;
                let a = rgba[i + 3];
                if a == 0 {
                    continue;
                }
                let af = a as f32 / 255.0;
                let (yy, u, v) = rgb_to_yuv(rgba[i] as f32 / af, rgba[i + 1] as f32 / af, rgba[i + 2] as f32 / af);
                o.y_plane[py * w + px] = yy.round().clamp(0.0, 255.0) as u8;
                o.a_plane[py * w + px] = a;
                let c = &mut acc[(py / 2) * cw + px / 2];
                c.0 += u * af;
                c.1 += v * af;
                c.2 += af;
            }
        }
        for (i, &(su, sv, sa)) in acc.iter().enumerate() {
            if sa > 0.0 {
                o.u_plane[i] = (su / sa).round().clamp(0.0, 255.0) as u8;
                o.v_plane[i] = (sv / sa).round().clamp(0.0, 255.0) as u8;
                o.ca_plane[i] = (sa / 4.0 * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
        o
    }

    /// Alpha-blends the overlay onto the frame, clipping at the frame's edges.
    pub fn draw(&self, f: &mut Yuv420) {
        blend_plane(
            &mut f.y,
            f.width as i32,
            f.height as i32,
            self.x,
            self.y,
            self.width as i32,
            self.height as i32,
            &self.y_plane,
            &self.a_plane,
        );
        let (cw, ch) = ((self.width as i32 + 1) / 2, (self.height as i32 + 1) / 2);
        let (fw, fh) = (f.width as i32 / 2, f.height as i32 / 2);
        blend_plane(&mut f.u, fw, fh, self.x / 2, self.y / 2, cw, ch, &self.u_plane, &self.ca_plane);
        blend_plane(&mut f.v, fw, fh, self.x / 2, self.y / 2, cw, ch, &self.v_plane, &self.ca_plane);
    }
}

#[allow(clippy::too_many_arguments)]
fn blend_plane(dst: &mut [u8], dw: i32, dh: i32, ox: i32, oy: i32, ow: i32, oh: i32, src: &[u8], alpha: &[u8]) {
    let x0 = ox.max(0);
    let x1 = (ox + ow).min(dw);
    if x0 >= x1 {
        return;
    }
    for sy in 0..oh {
        let fy = oy + sy;
        if fy < 0 || fy >= dh {
            continue;
        }
        let s0 = (sy * ow + (x0 - ox)) as usize;
        let d0 = (fy * dw + x0) as usize;
        let n = (x1 - x0) as usize;
        // No branch on transparent pixels: the rounding division by 255 gives `d` back when
        // `a` is 0, and a straight loop over slices vectorises.
        for ((d, &s), &a) in dst[d0..d0 + n].iter_mut().zip(&src[s0..s0 + n]).zip(&alpha[s0..s0 + n]) {
            let a = a as u32;
            let v = *d as u32 * (255 - a) + s as u32 * a;
            *d = ((v + 128 + ((v + 128) >> 8)) >> 8) as u8;
        }
    }
}

/// `x.floor()` without a call into libm: x86-64's baseline has no SSE4.1 rounding instruction,
/// so `f32::floor` is a function call, per pixel in the face warps (head and mouth). Exact for
/// |x| < 2^31.
#[inline(always)]
pub(crate) fn floor(x: f32) -> f32 {
    let t = x as i32 as f32;
    if t > x { t - 1.0 } else { t }
}

/// `x.round()` (halves away from zero) for 0 <= x < 2^31, without a call into libm.
#[inline(always)]
pub(crate) fn round_non_negative(x: f32) -> f32 {
    let t = x as i32 as f32;
    // Exact: below 2^23 the fraction `x - t` is representable, above it x is whole.
    if x - t >= 0.5 { t + 1.0 } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_and_round_without_libm_agree_with_the_standard_ones() {
        let mut values = vec![0.0f32, -0.0, 0.5, 1.5, 2.5, -0.5, -1.5, 0.49999997, 254.5, 255.0, 1e7 + 0.5, -3.7];
        values.extend((0..20_000).map(|i| (i as f32 - 10_000.0) * 0.0371));
        for x in values {
            assert_eq!(floor(x), x.floor(), "floor({x})");
            if x >= 0.0 {
                assert_eq!(round_non_negative(x), x.round(), "round({x})");
            }
        }
    }

    #[test]
    fn unchanged_macroblocks_mark_each_block_a_change_touches() {
        // 40x36: 3x3 macroblocks, the right column and bottom row cut at the frame's edge.
        let before = Yuv420::solid(40, 36, [20, 40, 60]);
        let mut map = vec![];
        before.unchanged_macroblocks(&before, &mut map);
        assert_eq!(map, vec![1; 9]);
        let mut after = before.clone();
        after.y[17 * 40 + 39] ^= 1; // luma: block (2, 1), the cut right column
        after.u[34 / 2 * 20 + 3] ^= 1; // chroma: block (0, 2), the cut bottom row
        after.unchanged_macroblocks(&before, &mut map);
        assert_eq!(map, vec![1, 1, 1, 1, 1, 0, 0, 1, 1]);
        after.v[7 * 20 + 8] ^= 1; // chroma: block (1, 0)
        after.unchanged_macroblocks(&before, &mut map);
        assert_eq!(map, vec![1, 0, 1, 1, 1, 0, 0, 1, 1]);
        after.unchanged_macroblocks(&Yuv420::solid(40, 38, [20, 40, 60]), &mut map);
        assert_eq!(map, vec![0; 9], "another size shares nothing");
    }

    #[test]
    fn the_simd_vertical_pass_gives_the_scalar_sums_at_every_length_and_weight() {
        // Horizontal sums are at most 255 * 64: the extremes and a pseudo-random spread.
        let mut state = 0x2545_f491_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 16321) as u16
        };
        for len in (0..70).chain([1279, 1280, 1920]) {
            let top: Vec<u16> = (0..len).map(|i| if i % 7 == 0 { 16320 } else { next() }).collect();
            let bottom: Vec<u16> = (0..len).map(|i| if i % 5 == 0 { 0 } else { next() }).collect();
            for w in [0, 1, 17, 32, 63, 64] {
                let mut want = vec![0u8; len];
                vertical_blend_scalar(&top, &bottom, w, &mut want);
                let mut got = vec![0u8; len];
                vertical_blend(&top, &bottom, w, &mut got);
                assert_eq!(got, want, "length {len}, weight {w}");
                #[cfg(target_arch = "x86_64")]
                {
                    let mut sse = vec![0u8; len];
                    // SAFETY: SSE2 is part of x86-64.
                    let done = unsafe { vertical_blend_sse2(&top, &bottom, w, &mut sse) };
                    vertical_blend_scalar(&top[done..], &bottom[done..], w, &mut sse[done..]);
                    assert_eq!(sse, want, "SSE2, length {len}, weight {w}");
                }
            }
        }
    }

    fn gradient(w: u32, h: u32) -> Yuv420 {
        let mut rgba = Vec::with_capacity((w * h * 4) as usize);
        for y in 0..h {
            for x in 0..w {
                rgba.extend_from_slice(&[(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 90, 255]);
            }
        }
        Yuv420::from_rgba(w, h, &rgba)
    }

    #[test]
    fn rgb_yuv_round_trip_is_close() {
        for rgb in [[0, 0, 0], [255, 255, 255], [200, 30, 60], [10, 200, 90], [30, 60, 240]] {
            let (y, u, v) = rgb_to_yuv(rgb[0] as f32, rgb[1] as f32, rgb[2] as f32);
            let back = yuv_to_rgb(y.round() as u8, u.round() as u8, v.round() as u8);
            for c in 0..3 {
                assert!((back[c] as i32 - rgb[c]).abs() <= 3, "{rgb:?} -> {back:?}");
            }
        }
        let (y, _, _) = rgb_to_yuv(0.0, 0.0, 0.0);
        assert_eq!(y, 16.0);
    }

    #[test]
    fn identity_resample_keeps_pixels() {
        let src = gradient(64, 32);
        let mut dst = Yuv420::solid(64, 32, [0, 0, 0]);
        let mut s = Vec::new();
        resample_crop(&src, Crop { x: 0.0, y: 0.0, w: 64.0, h: 32.0 }, &mut dst, &mut s);
        assert_eq!(src, dst);
    }

    #[test]
    fn crop_resample_picks_the_right_region() {
        // Right half of a left-to-right red ramp, upscaled 2x: the left edge must be mid red.
        let src = gradient(128, 64);
        let mut dst = Yuv420::solid(128, 64, [0, 0, 0]);
        let mut s = Vec::new();
        resample_crop(&src, Crop { x: 64.0, y: 0.0, w: 64.0, h: 64.0 }, &mut dst, &mut s);
        let left = dst.rgb_at(0, 32)[0] as i32;
        let right = dst.rgb_at(127, 32)[0] as i32;
        assert!((left - 128).abs() < 8, "left red {left}");
        assert!(right > 245, "right red {right}");
        // Downscale by 2 keeps the overall ramp.
        let mut small = Yuv420::solid(64, 32, [0, 0, 0]);
        resample_crop(&src, Crop { x: 0.0, y: 0.0, w: 128.0, h: 64.0 }, &mut small, &mut s);
        assert!(small.rgb_at(0, 16)[0] < 10 && small.rgb_at(63, 16)[0] > 245);
    }

    #[test]
    fn simd_horizontal_pass_matches_scalar() {
        let row: Vec<u8> = (0..700u32).map(|i| (i * 37 % 251) as u8).collect();
        for (start, len) in [(0.0, 700.0), (13.3, 500.0), (50.0, 640.0 / 1.7), (0.0, 699.0), (3.0, 100.0)] {
            let xs = taps(640, start, len, row.len());
            let plan = HPlan::new(xs.clone(), row.len());
            let mut fast = vec![0u16; 640];
            plan.run(&row, &mut fast);
            let mut slow = vec![0u16; 640];
            scalar_taps(&row, &xs, &mut slow);
            assert_eq!(fast, slow, "crop {start} + {len}");
        }
    }

    #[test]
    fn crossfade_midpoint_mixes_both() {
        let a = Yuv420::solid(16, 16, [255, 0, 0]);
        let b = Yuv420::solid(16, 16, [0, 0, 255]);
        let mut out = a.clone();
        crossfade(&a, &b, 0.5, &mut out);
        let [r, _, bl] = out.rgb_at(8, 8);
        assert!((100..156).contains(&r) && (100..156).contains(&bl), "{r} {bl}");
        crossfade(&a, &b, 0.0, &mut out);
        assert_eq!(out, a);
        crossfade(&a, &b, 1.0, &mut out);
        assert_eq!(out, b);
    }

    #[test]
    fn fade_to_black_reaches_black() {
        let f = Yuv420::solid(8, 8, [200, 180, 20]);
        let mut out = Yuv420::solid(8, 8, [1, 2, 3]);
        fade_to_black(&f, 0.0, &mut out);
        assert_eq!(out, Yuv420::solid(8, 8, [0, 0, 0]));
        fade_to_black(&f, 1.0, &mut out);
        assert_eq!(out, f, "unchanged at 1, and the source untouched");
    }

    #[test]
    fn slide_shows_both_sides() {
        let a = Yuv420::solid(32, 8, [255, 0, 0]);
        let b = Yuv420::solid(32, 8, [0, 0, 255]);
        let mut out = a.clone();
        slide(&a, &b, 0.25, &mut out);
        assert!(out.rgb_at(0, 4)[0] > 200);
        assert!(out.rgb_at(31, 4)[2] > 200);
        assert!(out.rgb_at(23, 4)[0] > 200 && out.rgb_at(24, 4)[2] > 200);
    }

    #[test]
    fn overlay_blends_and_clips() {
        let mut f = Yuv420::solid(32, 32, [0, 0, 0]);
        // 4x4 opaque white square partly off the frame at (30, 30), and a half-transparent one.
        let white = [255u8, 255, 255, 255].repeat(16);
        YuvOverlay::from_premultiplied_rgba(30, 30, 4, 4, &white).draw(&mut f);
        assert!(f.rgb_at(31, 31)[0] > 250);
        assert!(f.rgb_at(29, 29)[0] < 5);
        let half = [128u8, 0, 0, 128].repeat(16);
        YuvOverlay::from_premultiplied_rgba(0, 0, 4, 4, &half).draw(&mut f);
        let [r, g, _] = f.rgb_at(1, 1);
        assert!((100..160).contains(&r) && g < 40, "{r} {g}");
    }

    #[test]
    fn bytes_round_trip() {
        let f = gradient(16, 8);
        let mut buf = Vec::new();
        f.write_to(&mut buf).unwrap();
        assert_eq!(buf.len(), f.byte_len());
        assert_eq!(Yuv420::from_bytes(16, 8, &buf).unwrap(), f);
        assert!(Yuv420::from_bytes(16, 8, &buf[1..]).is_none());
        assert_eq!(Yuv420::read_from(16, 8, &mut &buf[..]).unwrap(), f);
        assert!(Yuv420::read_from(16, 8, &mut &buf[1..]).is_err());
    }
}

#[cfg(test)]
mod perf {
    use super::*;

    /// `cargo test --release -p reelsmith-media frame::perf -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn resample_1080p_timing() {
        let (w, h) = (1920u32, 1080u32);
        let (cw, ch) = (2112u32, 1188u32);
        let rgba: Vec<u8> = (0..cw * ch * 4).map(|i| (i * 7 % 251) as u8).collect();
        let src = Yuv420::from_rgba(cw, ch, &rgba);
        let mut dst = Yuv420::solid(w, h, [0, 0, 0]);
        let mut s = Vec::new();
        let n = 200;
        let t = std::time::Instant::now();
        for i in 0..n {
            let z = 1.0 + 0.1 * i as f32 / n as f32;
            let (vw, vh) = (cw as f32 / z, ch as f32 / z);
            resample_crop(
                &src,
                Crop { x: (cw as f32 - vw) * 0.3, y: (ch as f32 - vh) * 0.5, w: vw, h: vh },
                &mut dst,
                &mut s,
            );
        }
        eprintln!("resample_crop 1080p: {:.2} ms/frame", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
        let b = dst.clone();
        let mut out = dst.clone();
        let t = std::time::Instant::now();
        for i in 0..n {
            crossfade(&dst, &b, i as f32 / n as f32, &mut out);
        }
        eprintln!("crossfade 1080p: {:.2} ms/frame", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
    }
}
