//! Shared helpers for the end-to-end tests: generated fixtures and frame/audio inspection.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use reelsmith_engine::{Cache, Engine, RenderOptions, Report};
use reelsmith_media::ffmpeg;

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    /// Copies the NASA astronaut portrait (public domain; the face models' fixture) into the
    /// fixture folder as `astronaut.jpg`.
    pub fn astronaut(&self) -> PathBuf {
        let p = self.path("astronaut.jpg");
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/tests/fixtures/astronaut.jpg"), &p).unwrap();
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A solid-colour PNG.
    pub fn solid_png(&self, name: &str, w: u32, h: u32, rgb: [u8; 3]) -> PathBuf {
        let p = self.path(name);
        RgbImage::from_pixel(w, h, Rgb(rgb)).save(&p).unwrap();
        p
    }

    /// A left-to-right ramp from black to `rgb`, so a moving crop shows.
    pub fn ramp_png(&self, name: &str, w: u32, h: u32, rgb: [u8; 3]) -> PathBuf {
        let p = self.path(name);
        RgbImage::from_fn(w, h, |x, _| {
            let k = x as f32 / (w - 1) as f32;
            Rgb([(rgb[0] as f32 * k) as u8, (rgb[1] as f32 * k) as u8, (rgb[2] as f32 * k) as u8])
        })
        .save(&p)
        .unwrap();
        p
    }

    /// A sine tone WAV (mono 48 kHz), for music.
    pub fn tone_wav(&self, name: &str, freq: f32, seconds: f32, amp: f32) -> PathBuf {
        let samples = (0..(seconds * 48_000.0) as usize).map(|i| sine_sample(i, freq, amp));
        self.wav(name, 1, samples)
    }

    /// A 16-bit 48 kHz WAV of `channels` channels from interleaved samples.
    pub fn wav(&self, name: &str, channels: u16, samples: impl IntoIterator<Item = i16>) -> PathBuf {
        let p = self.path(name);
        let spec = hound::WavSpec {
            channels,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        p
    }

    pub fn write_spec(&self, name: &str, json: &serde_json::Value) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, serde_json::to_vec_pretty(json).unwrap()).unwrap();
        p
    }
}

/// Sample `i` (at 48 kHz) of a sine at `freq` Hz and amplitude `amp` (1 = full scale).
pub fn sine_sample(i: usize, freq: f32, amp: f32) -> i16 {
    ((i as f32 * freq * std::f32::consts::TAU / 48_000.0).sin() * amp * i16::MAX as f32) as i16
}

/// A one-second 320x180 red H.264 clip (15 fps), written by FFmpeg.
pub fn red_clip(path: &Path) -> PathBuf {
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=320x180:d=1:r=15", "-pix_fmt", "yuv420p"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg wrote {}", path.display());
    path.to_path_buf()
}

pub fn engine(cache_dir: &Path) -> Engine {
    Engine::new(Cache::open(cache_dir, 1 << 30).unwrap()).unwrap()
}

pub fn render(cache_dir: &Path, spec: &Path, out: &Path) -> Report {
    engine(cache_dir).render_file(spec, out, &RenderOptions::default()).unwrap()
}

/// Average RGB over a rectangle of the frame at `t` seconds.
pub fn mean_rgb(video: &Path, t: f64, x0: u32, y0: u32, x1: u32, y1: u32) -> [f64; 3] {
    let (w, _h, px) = ffmpeg::frame_rgb_at(video, t).unwrap();
    let mut sum = [0.0; 3];
    let mut n = 0.0;
    for y in y0..y1 {
        for x in x0..x1 {
            let i = ((y * w + x) * 3) as usize;
            for c in 0..3 {
                sum[c] += px[i + c] as f64;
            }
            n += 1.0;
        }
    }
    sum.map(|s| s / n)
}

/// Number of pixels in a rectangle whose colour is close to `rgb`.
pub fn count_near(frame: &(u32, u32, Vec<u8>), rect: (u32, u32, u32, u32), rgb: [u8; 3], tol: i32) -> usize {
    let (w, _, px) = frame;
    let (x0, y0, x1, y1) = rect;
    let mut n = 0;
    for y in y0..y1 {
        for x in x0..x1 {
            let i = ((y * w + x) * 3) as usize;
            if (0..3).all(|c| (px[i + c] as i32 - rgb[c] as i32).abs() <= tol) {
                n += 1;
            }
        }
    }
    n
}

/// The video's audio as mono 48 kHz f32.
pub fn audio_mono(video: &Path) -> Vec<f32> {
    ffmpeg::decode_audio(video, 48_000, 1, None, 3600.0).unwrap()
}

/// Amplitude of `freq` in `samples[from..to]` (seconds), by correlation with a sine and cosine.
pub fn tone_amplitude(samples: &[f32], freq: f32, from: f64, to: f64) -> f64 {
    let (a, b) = ((from * 48_000.0) as usize, ((to * 48_000.0) as usize).min(samples.len()));
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (i, &s) in samples[a..b].iter().enumerate() {
        let ph = (a + i) as f64 * freq as f64 * std::f64::consts::TAU / 48_000.0;
        re += s as f64 * ph.cos();
        im += s as f64 * ph.sin();
    }
    2.0 * (re * re + im * im).sqrt() / (b - a) as f64
}

/// A PNG whose header claims `w` x `h` pixels, with no real pixel data behind it.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    // A bomb's first data chunk: a few zlib bytes that would inflate to gigabytes.
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&[0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00, 0x00, 0xc2]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for chunk in [&ihdr, &idat] {
        png.extend_from_slice(&(chunk.len() as u32 - 4).to_be_bytes());
        png.extend_from_slice(chunk);
        png.extend_from_slice(&crc32(chunk).to_be_bytes());
    }
    png
}

/// Runs the `reelsmith` binary with the fixture's own cache: its exit code and stderr.
pub fn reelsmith(f: &Fixture, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reelsmith"))
        .args(args)
        .env("REELSMITH_CACHE_DIR", f.path("cache"))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A two-scene 320x180 template: `NAME` (text, at most 20) in a title, `SECONDS` (number,
/// default 1.5) as the first scene's length, `BRAND` (colour, default #2040c0) as its
/// background, `PHOTO` (image, no default) as the second scene.
pub fn greeting_template() -> serde_json::Value {
    serde_json::json!({
        "fields": {
            "NAME": {"type": "string", "max_length": 20},
            "SECONDS": {"type": "number", "default": 1.5},
            "BRAND": {"type": "color", "default": "#2040c0"},
            "PHOTO": {"type": "image"}
        },
        "version": 1,
        "output": {"width": 320, "height": 180, "fps": 15},
        "scenes": [
            {"duration": "{{ SECONDS }}", "background": {"color": "{{ BRAND }}"}, "title": "Hello, {{ NAME }}"},
            {"duration": 1.0, "image": "{{ PHOTO }}", "fit": "cover"}
        ]
    })
}

/// Runs ffmpeg with `args` and returns its stdout.
pub fn ffmpeg_out(args: &[&str]) -> Vec<u8> {
    let out =
        std::process::Command::new("ffmpeg").args(["-hide_banner", "-loglevel", "error"]).args(args).output().unwrap();
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Each decoded picture's checksum, in order (`framemd5` lines without their timestamps):
/// equal lists mean frame-exact equal videos.
pub fn picture_sums(input: &str) -> Vec<String> {
    let text = String::from_utf8(ffmpeg_out(&["-i", input, "-map", "0:v", "-f", "framemd5", "-"])).unwrap();
    text.lines().filter(|l| !l.starts_with('#')).map(|l| l.rsplit(',').next().unwrap().trim().to_string()).collect()
}

/// The sound of `input` (a file or an HLS playlist) as mono 48 kHz f32, from its first sample.
pub fn decoded_sound(input: &str) -> Vec<f32> {
    ffmpeg_out(&["-i", input, "-map", "0:a", "-ac", "1", "-ar", "48000", "-f", "f32le", "-"])
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// How closely `got` follows `want` sample for sample, dB (a shift of a few ms is noise).
pub fn sound_match_db(got: &[f32], want: &[f32]) -> f64 {
    let (mut signal, mut noise) = (0f64, 0f64);
    for (a, b) in got.iter().zip(want) {
        signal += (*b as f64).powi(2);
        noise += (*a as f64 - *b as f64).powi(2);
    }
    10.0 * (signal / noise.max(1e-12)).log10()
}
