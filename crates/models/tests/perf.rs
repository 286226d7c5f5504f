//! Timings of the local models (not a pass/fail test; run in release):
//! `cargo test --release -p reelsmith-models --test perf -- --ignored --nocapture`

use std::time::Instant;

use reelsmith_media::tts::{SpeechEngine, TtsRequest};
use reelsmith_models::face::{FaceDetector, FaceMesh, choose};

#[test]
#[ignore]
fn model_timings() {
    let t = Instant::now();
    let piper = reelsmith_models::Piper::discover().unwrap();
    let text = "Reelsmith turns a photo and a short script into a talking video on your own machine. \
                Everything runs locally, in a few seconds, without any paid service.";
    let first = piper.synthesize(&TtsRequest::new(text, "en_US-joe-medium")).unwrap();
    let load_and_first = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let n = 3;
    for _ in 0..n {
        piper.synthesize(&TtsRequest::new(text, "en_US-joe-medium")).unwrap();
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "piper: {:.2} s of speech in {:.3} s ({:.1}x real time); first call with model load {:.2} s",
        first.duration(),
        per,
        first.duration() / per,
        load_and_first
    );

    let img = image::open(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.jpg")).unwrap().to_rgb8();
    let (w, h, rgb) = (img.width(), img.height(), img.into_raw());
    let det = FaceDetector::discover().unwrap();
    let mesh = FaceMesh::discover().unwrap();
    let face = choose(&det.detect(w, h, &rgb).unwrap(), None).unwrap();
    mesh.landmarks(w, h, &rgb, &face).unwrap();
    let t = Instant::now();
    for _ in 0..20 {
        det.detect(w, h, &rgb).unwrap();
    }
    let d = t.elapsed().as_secs_f64() / 20.0;
    let t = Instant::now();
    for _ in 0..20 {
        mesh.landmarks(w, h, &rgb, &face).unwrap();
    }
    let m = t.elapsed().as_secs_f64() / 20.0;
    println!("face detection {:.1} ms, face mesh {:.1} ms (512x512 photo, one thread each)", d * 1e3, m * 1e3);
}
