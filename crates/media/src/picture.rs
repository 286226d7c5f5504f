//! Still pictures: decoding with size guards and EXIF orientation, fitting into a canvas
//! (`cover`, `contain`, `contain-blur`), colour and gradient cards, and drawing text onto them.

use std::path::Path;

use fast_image_resize::{self as fr, images::Image as FrImage};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbaImage};

use crate::text::RgbaOverlay;

#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("not a supported image (JPEG, PNG, WebP, GIF, BMP, TIFF): {0}")]
    UnknownFormat(String),
    #[error("image too large: {name} is {width}x{height}, the limit is {limit} pixels")]
    TooLarge { name: String, width: u32, height: u32, limit: u64 },
    #[error("corrupt or unreadable image {0}: {1}")]
    Corrupt(String, String),
}

/// Straight RGBA, row-major.
pub type Rgba = RgbaImage;

/// Decodes an image, refusing ones whose header announces more than `max_pixels` (a
/// decompression bomb guard checked before any pixel memory is allocated), and applies
/// the EXIF orientation so portrait phone photos stand upright.
pub fn load(path: &Path, max_pixels: u64) -> Result<Rgba, PictureError> {
    let name = path.display().to_string();
    let reader = ImageReader::open(path)
        .map_err(|e| PictureError::Io(name.clone(), e))?
        .with_guessed_format()
        .map_err(|e| PictureError::Io(name.clone(), e))?;
    if reader.format().is_none() {
        return Err(PictureError::UnknownFormat(name));
    }
    let mut decoder = reader.into_decoder().map_err(|e| PictureError::Corrupt(name.clone(), e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > max_pixels {
        return Err(PictureError::TooLarge { name, width, height, limit: max_pixels });
    }
    if width == 0 || height == 0 {
        return Err(PictureError::Corrupt(name, "zero-sized image".into()));
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| PictureError::Corrupt(name, e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgba8())
}

/// High-quality resize of `src` (optionally only its `crop` region) to exactly `w` x `h`.
fn resize(src: &Rgba, crop: Option<(f64, f64, f64, f64)>, w: u32, h: u32) -> Rgba {
    let w = w.max(1);
    let h = h.max(1);
    let mut dst = FrImage::new(w, h, fr::PixelType::U8x4);
    let mut opts = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom));
    if let Some((l, t, cw, ch)) = crop {
        opts = opts.crop(l, t, cw, ch);
    }
    // Both images are plain U8x4 of the declared sizes, so resizing cannot fail.
    fr::Resizer::new().resize(src, &mut dst, &opts).expect("resize of matching pixel types");
    RgbaImage::from_raw(w, h, dst.into_vec()).expect("buffer of w*h*4")
}

/// How an image fills the canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitMode {
    Cover,
    Contain,
    ContainBlur,
}

/// Fits `img` into a `w` x `h` canvas painted with `background` where the image does not reach.
pub fn fit(img: &Rgba, w: u32, h: u32, mode: FitMode, background: [u8; 4]) -> Rgba {
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let (cw, ch) = (w as f64, h as f64);
    match mode {
        FitMode::Cover => {
            let s = (cw / iw).max(ch / ih);
            let (sw, sh) = (cw / s, ch / s);
            resize(img, Some(((iw - sw) / 2.0, (ih - sh) / 2.0, sw, sh)), w, h)
        }
        FitMode::Contain | FitMode::ContainBlur => {
            let s = (cw / iw).min(ch / ih);
            let (fw, fh) = (((iw * s).round() as u32).clamp(1, w), ((ih * s).round() as u32).clamp(1, h));
            let fitted = resize(img, None, fw, fh);
            let mut canvas = if mode == FitMode::ContainBlur {
                blurred_cover(img, w, h)
            } else {
                RgbaImage::from_pixel(w, h, image::Rgba(background))
            };
            image::imageops::overlay(&mut canvas, &fitted, ((w - fw) / 2) as i64, ((h - fh) / 2) as i64);
            canvas
        }
    }
}

/// A cover-fit, heavily blurred and slightly darkened copy: blurring a small version and
/// scaling it up costs a fraction of blurring at full size and looks the same.
fn blurred_cover(img: &Rgba, w: u32, h: u32) -> Rgba {
    let (sw, sh) = ((w / 16).max(2), (h / 16).max(2));
    let small = fit(img, sw, sh, FitMode::Cover, [0, 0, 0, 255]);
    let mut blurred = image::imageops::fast_blur(&small, 2.0);
    for p in blurred.pixels_mut() {
        for c in 0..3 {
            p.0[c] = (p.0[c] as u16 * 200 / 255) as u8;
        }
        p.0[3] = 255;
    }
    resize(&blurred, None, w, h)
}

/// A solid colour card.
pub fn solid(w: u32, h: u32, color: [u8; 4]) -> Rgba {
    RgbaImage::from_pixel(w, h, image::Rgba([color[0], color[1], color[2], 255]))
}

/// A linear gradient; `angle_deg` 0 runs left to right, 90 top to bottom.
pub fn gradient(w: u32, h: u32, from: [u8; 4], to: [u8; 4], angle_deg: f32) -> Rgba {
    let (s, c) = angle_deg.to_radians().sin_cos();
    // Project each pixel on the direction and normalise over the canvas' extent.
    let corners = [(0.0, 0.0), (w as f32, 0.0), (0.0, h as f32), (w as f32, h as f32)];
    let proj: Vec<f32> = corners.iter().map(|(x, y)| x * c + y * s).collect();
    let lo = proj.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = proj.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let span = (hi - lo).max(1.0);
    RgbaImage::from_fn(w, h, |x, y| {
        let t = ((x as f32 + 0.5) * c + (y as f32 + 0.5) * s - lo) / span;
        let mix = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * t).round() as u8;
        image::Rgba([mix(from[0], to[0]), mix(from[1], to[1]), mix(from[2], to[2]), 255])
    })
}

/// Draws a premultiplied overlay onto a straight RGBA canvas at (x, y), clipped.
pub fn draw_overlay(canvas: &mut Rgba, ov: &RgbaOverlay, x: i64, y: i64) {
    let (cw, ch) = (canvas.width() as i64, canvas.height() as i64);
    for oy in 0..ov.height as i64 {
        let cy = y + oy;
        if cy < 0 || cy >= ch {
            continue;
        }
        for ox in 0..ov.width as i64 {
            let cx = x + ox;
            if cx < 0 || cx >= cw {
                continue;
            }
            let i = ((oy * ov.width as i64 + ox) * 4) as usize;
            let a = ov.data[i + 3] as u32;
            if a == 0 {
                continue;
            }
            let p = canvas.get_pixel_mut(cx as u32, cy as u32);
            for c in 0..3 {
                p.0[c] = ((ov.data[i + c] as u32 * 255 + p.0[c] as u32 * (255 - a) + 127) / 255).min(255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_tone(w: u32, h: u32) -> Rgba {
        // Left half red, right half blue.
        RgbaImage::from_fn(
            w,
            h,
            |x, _| {
                if x < w / 2 { image::Rgba([255, 0, 0, 255]) } else { image::Rgba([0, 0, 255, 255]) }
            },
        )
    }

    #[test]
    fn cover_fills_and_crops() {
        let out = fit(&two_tone(400, 100), 100, 100, FitMode::Cover, [0, 255, 0, 255]);
        assert_eq!(out.dimensions(), (100, 100));
        assert_eq!(out.get_pixel(5, 50).0[0], 255);
        assert_eq!(out.get_pixel(95, 50).0[2], 255);
        assert!(out.pixels().all(|p| p.0[1] < 10), "no background may show");
    }

    #[test]
    fn contain_shows_background_bars() {
        let out = fit(&two_tone(400, 100), 100, 100, FitMode::Contain, [0, 255, 0, 255]);
        assert_eq!(out.get_pixel(50, 2).0, [0, 255, 0, 255]);
        assert_eq!(out.get_pixel(10, 50).0[0], 255);
        let blur = fit(&two_tone(400, 100), 100, 100, FitMode::ContainBlur, [0, 255, 0, 255]);
        let bar = blur.get_pixel(50, 2).0;
        assert!(bar[1] < 50 && (bar[0] > 40 || bar[2] > 40), "blurred image fills the bars: {bar:?}");
    }

    #[test]
    fn gradient_runs_from_to() {
        let g = gradient(100, 10, [0, 0, 0, 255], [255, 255, 255, 255], 0.0);
        assert!(g.get_pixel(0, 5).0[0] < 5 && g.get_pixel(99, 5).0[0] > 250);
    }

    /// A JPEG of `img` carrying an EXIF APP1 segment with the given orientation tag.
    fn jpeg_with_orientation(img: &Rgba, orientation: u16) -> Vec<u8> {
        let mut plain = std::io::Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(img.clone()).into_rgb8().write_to(&mut plain, image::ImageFormat::Jpeg).unwrap();
        let plain = plain.into_inner();
        // TIFF (little endian): header, one IFD entry 0x0112 (Orientation, SHORT, 1 value), no next IFD.
        let mut tiff = b"II*\0".to_vec();
        tiff.extend_from_slice(&8u32.to_le_bytes());
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes());
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = plain[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&plain[2..]);
        out
    }

    #[test]
    fn exif_orientation_stands_photos_upright() {
        let dir = tempfile::tempdir().unwrap();
        // 64x32, left half red: stored sideways with orientation 6 ("rotate 90° clockwise to view").
        let img = two_tone(64, 32);
        let path = dir.path().join("phone.jpg");
        std::fs::write(&path, jpeg_with_orientation(&img, 6)).unwrap();
        let loaded = load(&path, 1_000_000).unwrap();
        assert_eq!(loaded.dimensions(), (32, 64), "portrait after rotation");
        // Rotating clockwise puts the stored left (red) half at the top.
        assert!(loaded.get_pixel(16, 5).0[0] > 200 && loaded.get_pixel(16, 5).0[2] < 60);
        assert!(loaded.get_pixel(16, 58).0[2] > 200 && loaded.get_pixel(16, 58).0[0] < 60);
        // Orientation 1 leaves it alone.
        std::fs::write(&path, jpeg_with_orientation(&img, 1)).unwrap();
        assert_eq!(load(&path, 1_000_000).unwrap().dimensions(), (64, 32));
    }

    #[test]
    fn load_rejects_bombs_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        two_tone(40, 20).save(&png).unwrap();
        assert_eq!(load(&png, 10_000).unwrap().dimensions(), (40, 20));
        assert!(matches!(load(&png, 100), Err(PictureError::TooLarge { width: 40, .. })));
        let bad = dir.path().join("b.jpg");
        std::fs::write(&bad, b"\xff\xd8\xff\xe0garbage").unwrap();
        assert!(matches!(load(&bad, 10_000), Err(PictureError::Corrupt(..))));
        let txt = dir.path().join("c.dat");
        std::fs::write(&txt, b"hello").unwrap();
        assert!(matches!(load(&txt, 10_000), Err(PictureError::UnknownFormat(_))));
        assert!(matches!(load(&dir.path().join("none.png"), 10_000), Err(PictureError::Io(..))));
    }

    #[test]
    fn draw_overlay_blends_premultiplied() {
        let mut c = solid(4, 4, [0, 0, 0, 255]);
        let ov = RgbaOverlay { width: 2, height: 1, data: vec![255, 255, 255, 255, 128, 0, 0, 128] };
        draw_overlay(&mut c, &ov, 3, 0);
        assert_eq!(c.get_pixel(3, 0).0[0], 255);
        draw_overlay(&mut c, &ov, 0, 1);
        assert_eq!(c.get_pixel(1, 1).0[0], 128);
    }
}
