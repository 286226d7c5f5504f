//! The in-process H.264 encoder's MP4s, read back by FFmpeg (an integration test: the crate's
//! `ffmpeg` module depends on `x264`, so `x264`'s own tests stay clear of it).

use reelsmith_media::ffmpeg;
use reelsmith_media::frame::Yuv420;
use reelsmith_media::x264::{Mp4Encoder, X264Settings};

fn settings(w: u32, h: u32) -> X264Settings<'static> {
    X264Settings { width: w, height: h, fps: 25, preset: "veryfast", tune: "", crf: 18, threads: 1, block_hints: false }
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

/// FFmpeg decoding `path`'s frames at their own size and rate.
fn decoder(path: &std::path::Path, w: u32, h: u32) -> ffmpeg::VideoDecoder {
    ffmpeg::VideoDecoder::start(&ffmpeg::ClipDecode {
        path,
        start: 0.0,
        duration: None,
        fps: 25,
        width: w,
        height: h,
        filter: "[0:v]null[out]",
        backdrop: None,
    })
    .unwrap()
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

/// A segment's pictures do not depend on how many threads x264 had: a lone long segment
/// gets every core, the same segment in a distributed render one core, and the two must join
/// to the same video (segment keys leave the threads out). CRF without VBV takes each frame's
/// quantiser from the lookahead, not from the bits of the frames other threads are coding.
#[test]
fn a_segment_decodes_to_the_same_pictures_whatever_the_encoder_threads() {
    let (w, h) = (320, 192);
    let dir = tempfile::tempdir().unwrap();
    let frames: Vec<Yuv420> = (0..48).map(|k| frame(w, h, k)).collect();
    let decoded = |threads: u32| {
        let out = dir.path().join(format!("threads-{threads}.mp4"));
        let mut enc = Mp4Encoder::create(&X264Settings { threads, ..settings(w, h) }, &out).unwrap();
        for f in &frames {
            enc.write_frame(f).unwrap();
        }
        enc.finish().unwrap();
        let mut dec = decoder(&out, w, h);
        let mut got = Yuv420::solid(w, h, [0, 0, 0]);
        let mut pictures = vec![];
        while dec.read_frame(&mut got).unwrap() {
            pictures.push(got.clone());
        }
        (pictures, std::fs::read(&out).unwrap())
    };
    let (one, one_file) = decoded(1);
    let (two, two_file) = decoded(2);
    assert_eq!((one.len(), two.len()), (48, 48));
    assert_ne!(one_file, two_file, "x264 was given its threads (its settings are written into the stream)");
    for (k, (a, b)) in one.iter().zip(&two).enumerate() {
        assert!(a.y == b.y && a.u == b.u && a.v == b.v, "picture {k} differs between 1 and 2 encoder threads");
    }
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
    let mut dec = decoder(&out, w, h);
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

/// A still span coded with maps of its unchanged blocks: the still is an IDR picture, every
/// later picture a P picture predicted from the one before; a block the map marks as changed
/// shows its new pixels from that picture on, every other block stays the still's. The stream
/// headers are those of an encoder without hints, so such segments join with the others.
#[test]
fn still_pictures_with_block_maps_are_p_pictures_that_keep_every_unchanged_block() {
    let (w, h) = (96, 64);
    let dir = tempfile::tempdir().unwrap();
    let hinted = X264Settings { tune: "stillimage", block_hints: true, ..settings(w, h) };
    let out = dir.path().join("still.mp4");
    let mut enc = Mp4Encoder::create(&hinted, &out).unwrap();
    let still = frame(w, h, 0);
    // A caption appears in frame 12: a bright 16x16 square in macroblock (2, 1).
    let mut captioned = still.clone();
    for y in 16..32 {
        captioned.y[y * w as usize + 32..y * w as usize + 48].fill(235);
    }
    let mut map = vec![];
    captioned.unchanged_macroblocks(&still, &mut map);
    assert_eq!(map.iter().filter(|&&c| c == 0).count(), 1, "one changed block");
    let unchanged = vec![1u8; reelsmith_media::frame::macroblocks(w, h)];
    assert!(enc.write_frame_after(&still, &unchanged).is_err(), "the first picture has nothing before it");
    enc.write_frame(&still).unwrap();
    for k in 1..24 {
        match k {
            12 => enc.write_frame_after(&captioned, &map).unwrap(),
            k if k < 12 => enc.write_frame_after(&still, &unchanged).unwrap(),
            _ => enc.write_frame_after(&captioned, &unchanged).unwrap(),
        }
    }
    let e = enc.write_frame_after(&still, &unchanged[1..]).unwrap_err().to_string();
    assert!(e.contains(&format!("map of {} macroblocks", unchanged.len() - 1)), "{e}");
    enc.finish().unwrap();

    // Without hints the same settings write the same stream headers.
    let plain = dir.path().join("plain.mp4");
    let mut p = Mp4Encoder::create(&X264Settings { tune: "stillimage", ..settings(w, h) }, &plain).unwrap();
    let e = p.write_frame(&still).and_then(|_| p.write_frame_after(&still, &unchanged)).unwrap_err().to_string();
    assert!(e.contains("without block hints"), "{e}");
    let avcc = |path: &std::path::Path| {
        let b = std::fs::read(path).unwrap();
        let at = b.windows(4).position(|w| w == b"avcC").unwrap();
        let len = u32::from_be_bytes(b[at - 4..at].try_into().unwrap()) as usize;
        b[at..at - 4 + len].to_vec()
    };
    let mut p = Mp4Encoder::create(&X264Settings { tune: "stillimage", ..settings(w, h) }, &plain).unwrap();
    p.write_frame(&still).unwrap();
    p.finish().unwrap();
    assert_eq!(avcc(&out), avcc(&plain), "same SPS and PPS");

    // Picture types: an IDR picture, then P pictures only.
    let types = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_entries", "frame=pict_type", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    let types: String =
        String::from_utf8_lossy(&types.stdout).split_whitespace().map(|t| t.trim_matches(',')).collect();
    assert_eq!(types, format!("I{}", "P".repeat(23)));

    // Decoded: the square is absent before frame 12 and present from it on; the rest is the still.
    let mut dec = decoder(&out, w, h);
    let mut got = Yuv420::solid(w, h, [0, 0, 0]);
    let mut k = 0;
    while dec.read_frame(&mut got).unwrap() {
        let square = (16..32).map(|y| got.y[y * w as usize + 40] as i32).sum::<i32>() / 16;
        if k < 12 {
            assert!(square < 200, "frame {k}: the square is early ({square})");
        } else {
            assert!(square > 220, "frame {k}: the square is missing ({square})");
        }
        // Far from the square, every frame is the still's first picture.
        let corner = |f: &Yuv420| {
            (48..64)
                .flat_map(|y| (0..16).map(move |x| (y, x)))
                .map(|(y, x)| f.y[y * w as usize + x] as i32)
                .collect::<Vec<_>>()
        };
        let diff = corner(&got).iter().zip(corner(&still)).map(|(a, b)| (a - b).abs()).max().unwrap();
        assert!(diff <= 6, "frame {k}: an unchanged block moved by {diff}");
        k += 1;
    }
    assert_eq!(k, 24);
}

/// Every frame of a decoded MP4, in order, and FFmpeg's complaints about the stream.
fn decode_all(path: &std::path::Path, w: u32, h: u32) -> (Vec<Yuv420>, String) {
    let mut dec = decoder(path, w, h);
    let mut frames = vec![];
    let mut got = Yuv420::solid(w, h, [0, 0, 0]);
    while dec.read_frame(&mut got).unwrap() {
        frames.push(got.clone());
    }
    let strict = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-err_detect", "explode", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    (frames, String::from_utf8_lossy(&strict.stderr).into_owned())
}

/// Presentation and decode times of each picture (ffprobe, in decode order).
fn times(path: &std::path::Path) -> Vec<(i64, i64)> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_entries", "packet=pts,dts", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (p, d) = l.split_once(',').unwrap();
            (p.parse().unwrap(), d.parse().unwrap())
        })
        .collect()
}

#[test]
fn unchanged_frames_repeat_the_picture_before_without_the_encoder() {
    let (w, h) = (96, 64);
    // CABAC (the presets) and CAVLC (fastdecode's tune) slices.
    for tune in ["stillimage", "fastdecode"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("still.mp4");
        let hinted = X264Settings { tune, block_hints: true, ..settings(w, h) };
        let mut enc = Mp4Encoder::create(&hinted, &out).unwrap();
        let still = frame(w, h, 0);
        assert!(enc.write_unchanged(&still).is_err(), "{tune}: the first picture has nothing to repeat");
        let mut captioned = still.clone();
        for y in 16..32 {
            captioned.y[y * w as usize + 32..y * w as usize + 48].fill(235);
        }
        let mut map = vec![];
        captioned.unchanged_macroblocks(&still, &mut map);
        // 100 frames: the caption at 70, so the first run outlasts the picture order count's
        // range many times over (x264 codes a picture now and then, as a new reference).
        enc.write_frame(&still).unwrap();
        for k in 1..100 {
            match k {
                70 => enc.write_frame_after(&captioned, &map).unwrap(),
                k if k < 70 => enc.write_unchanged(&still).unwrap(),
                _ => enc.write_unchanged(&captioned).unwrap(),
            }
        }
        enc.finish().unwrap();
        let size = std::fs::metadata(&out).unwrap().len();

        let (frames, complaints) = decode_all(&out, w, h);
        assert_eq!(complaints, "", "{tune}: a strict decoder refused the stream");
        assert_eq!(frames.len(), 100, "{tune}");
        // A repeat is the picture before it, bit for bit. x264 codes one picture in 16 of a run
        // (these settings count pictures in 6 bits: a run stays within 32 counts of its
        // reference), which may touch up a block of the still.
        let by_x264 = |k: usize| if k < 70 { k.is_multiple_of(16) } else { (k - 70).is_multiple_of(16) };
        for k in 1..100 {
            let diff = frames[k].y.iter().zip(&frames[k - 1].y).map(|(a, b)| (*a as i32 - *b as i32).abs()).max();
            if k == 70 {
                assert_ne!(frames[k].y, frames[k - 1].y, "{tune}: the caption at 70");
            } else if by_x264(k) {
                assert!(diff <= Some(8), "{tune}: frame {k}, coded again, moved by {diff:?}");
            } else {
                assert_eq!(frames[k].y, frames[k - 1].y, "{tune}: frame {k} differs from the one before");
                assert_eq!(frames[k].u, frames[k - 1].u, "{tune}: frame {k}'s chroma");
            }
        }
        let square = |f: &Yuv420| (16..32).map(|y| f.y[y * w as usize + 40] as i32).sum::<i32>() / 16;
        assert!(square(&frames[69]) < 200 && square(&frames[70]) > 220, "{tune}");
        let near = frames[0].y.iter().zip(&still.y).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
        assert!(near <= 8, "{tune}: the still itself is coded ({near})");

        // Timing as x264 lays it out: one frame apart, decode times one B-frame delay behind.
        let t = times(&out);
        assert_eq!(t.len(), 100);
        let delay = t[0].0 - t[0].1;
        for (k, &(pts, dts)) in t.iter().enumerate() {
            assert_eq!((pts, pts - dts), (k as i64 * 1000, delay), "{tune}: picture {k}");
        }

        // The same frames all through x264 make a bigger file than the repeats do.
        let plain = dir.path().join("plain.mp4");
        let mut p = Mp4Encoder::create(&hinted, &plain).unwrap();
        p.write_frame(&still).unwrap();
        let all = vec![1u8; reelsmith_media::frame::macroblocks(w, h)];
        for k in 1..100 {
            match k {
                70 => p.write_frame_after(&captioned, &map).unwrap(),
                k if k < 70 => p.write_frame_after(&still, &all).unwrap(),
                _ => p.write_frame_after(&captioned, &all).unwrap(),
            }
        }
        p.finish().unwrap();
        assert!(size < std::fs::metadata(&plain).unwrap().len(), "{tune}: repeats cost fewer bytes");
    }
}
