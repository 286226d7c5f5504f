//! The in-process H.264 encoder's MP4s, read back by FFmpeg (an integration test: the crate's
//! `ffmpeg` module depends on `x264`, so `x264`'s own tests stay clear of it).

use reelsmith_media::ffmpeg;
use reelsmith_media::frame::Yuv420;
use reelsmith_media::x264::{Mp4Encoder, X264Settings};

fn settings(w: u32, h: u32) -> X264Settings<'static> {
    X264Settings { width: w, height: h, fps: 25, preset: "veryfast", tune: "", crf: 18, threads: 1 }
}

/// A moving gradient: each frame differs, so B-frames and P-frames both occur.
fn frame(w: u32, h: u32, k: u32) -> Yuv420 {
    let mut f = Yuv420::solid(w, h, [0, 0, 0]);
    for y in 0..h {
        for x in 0..w {
            f.y[(y * w + x) as usize] = (16 + (x + 3 * k + y / 2) % 200) as u8;
        }
    }
    for (i, c) in f.u.iter_mut().enumerate() {
        *c = (96 + (i as u32 + k) % 64) as u8;
    }
    f
}

#[test]
fn frames_encoded_in_process_decode_in_place_with_ffmpeg() {
    encode_and_check(&settings(96, 64));
}

/// x264's own threads (a lone long segment gets them) and the still-picture tune.
#[test]
fn threaded_and_still_tuned_encodes_decode_in_place_too() {
    encode_and_check(&X264Settings { threads: 2, ..settings(96, 64) });
    encode_and_check(&X264Settings { tune: "stillimage", ..settings(96, 64) });
}

fn encode_and_check(s: &X264Settings<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seg.mp4");
    let (w, h) = (s.width, s.height);
    let mut enc = Mp4Encoder::create(s, &out).unwrap();
    let frames: Vec<Yuv420> = (0..40).map(|k| frame(w, h, k)).collect();
    for f in &frames {
        enc.write_frame(f).unwrap();
    }
    assert_eq!(enc.frames(), 40);
    enc.finish().unwrap();
    // FFmpeg reads it as an ordinary MP4: 40 frames, 1.6 s, the right size and colour.
    let probe = ffmpeg::probe(&out).unwrap();
    let v = probe.video().expect("a video stream");
    assert_eq!((v.width, v.height, v.codec_name.as_str()), (w, h, "h264"));
    assert_eq!(v.frames, 40);
    assert!((probe.duration - 1.6).abs() < 0.01, "{}", probe.duration);
    // Decoded frame k matches source frame k (PSNR well above what a shifted frame gives).
    let mut dec = ffmpeg::VideoDecoder::start(&ffmpeg::ClipDecode {
        path: &out,
        start: 0.0,
        duration: None,
        fps: 25,
        width: w,
        height: h,
        filter: "[0:v]null[out]",
        backdrop: None,
    })
    .unwrap();
    let mut got = Yuv420::solid(w, h, [0, 0, 0]);
    let mut k = 0;
    while dec.read_frame(&mut got).unwrap() {
        let psnr = |a: &Yuv420, b: &Yuv420| {
            let mse =
                a.y.iter().zip(&b.y).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.y.len() as f64;
            10.0 * (255f64 * 255.0 / mse.max(1e-9)).log10()
        };
        let same = psnr(&got, &frames[k]);
        assert!(same > 35.0, "frame {k}: {same:.1} dB");
        if k + 1 < frames.len() {
            assert!(psnr(&got, &frames[k + 1]) < same - 5.0, "frame {k} looks like its neighbour");
        }
        k += 1;
    }
    assert_eq!(k, 40);
}
