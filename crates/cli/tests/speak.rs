//! `reelsmith speak` (one narration into a WAV) and `reelsmith bench talking-photo` (a cold
//! talking photo beside the voice alone and the encoder alone), through the real binary.

mod common;

use std::process::Command;

use common::{Fixture, reelsmith};
use serde_json::json;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reelsmith")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn speak_writes_the_narration_a_render_would_say_with_its_word_times() {
    let f = Fixture::new();
    let wav = f.path("hello.wav");
    let text = "Hello there, my good friend. See you soon.";
    let (code, stdout, stderr) = run(&[
        "speak",
        text,
        "--engine",
        "piper",
        "--voice",
        "en_US-joe-medium",
        "--words",
        "-o",
        wav.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let info = reelsmith_media::ffmpeg::probe(&wav).unwrap();
    assert_eq!(info.streams[0].codec_type, "audio");
    assert!((1.5..6.0).contains(&info.duration), "eight words take 1.5-6 s, not {}", info.duration);
    // One line per word: start, end, word; in order, inside the sound.
    let words: Vec<(f64, f64, String)> = stdout
        .lines()
        .skip(1)
        .map(|l| {
            let mut p = l.split_whitespace();
            let (a, b) = (p.next().unwrap().parse().unwrap(), p.next().unwrap().parse().unwrap());
            // Words are as subtitles show them: "friend." keeps its full stop.
            let word = p.collect::<Vec<_>>().join(" ");
            (a, b, word.trim_matches(|c: char| !c.is_alphanumeric()).to_string())
        })
        .collect();
    let said: Vec<&str> = words.iter().map(|w| w.2.as_str()).collect();
    assert_eq!(said, ["Hello", "there", "my", "good", "friend", "See", "you", "soon"], "{stdout}");
    for pair in words.windows(2) {
        assert!(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1 + 1e-9, "in order: {stdout}");
    }
    assert!(words.iter().all(|w| w.0 < w.1 && w.1 <= info.duration + 0.05), "{stdout}");
    assert!(stdout.lines().next().unwrap().contains("8 words (piper en_US-joe-medium)"), "{stdout}");
}

#[test]
fn speak_names_what_is_wrong_and_writes_nothing() {
    let f = Fixture::new();
    let wav = f.path("x.wav");
    let o = wav.to_str().unwrap();
    let long = "word ".repeat(1_001);
    for (args, expected) in [
        (vec!["speak", "Hi.", "--voice", "nobody", "-o", o], "piper has no voice \"nobody\"; it has: en_US-joe-medium"),
        (vec!["speak", "Hi.", "--engine", "festival", "-o", o], "unknown speech engine \"festival\""),
        (vec!["speak", &long, "-o", o], "the text has 5005 characters; at most 5000 are spoken"),
        (vec!["speak", "Hi.", "--speed", "9", "-o", o], "--speed 9 is outside 0.5-2.5"),
    ] {
        let (code, stderr) = reelsmith(&f, &args);
        assert_ne!(code, 0, "{args:?} must fail");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!wav.exists(), "{args:?} left a file");
    }
}

#[test]
fn the_talking_photo_benchmark_sets_the_render_beside_the_voice_and_encoder_alone() {
    let f = Fixture::new();
    let photo = f.solid_png("face.png", 160, 160, [200, 170, 150]);
    let spec = f.write_spec(
        "talk.json",
        &json!({
            "version": 1,
            "output": { "width": 160, "height": 160, "fps": 25 },
            "voice": { "engine": "espeak-ng" },
            "scenes": [{ "image": photo.file_name().unwrap().to_str().unwrap(), "narration": { "text": "One short line." } }]
        }),
    );
    let figures = f.path("figures.json");
    let dir = f.path("bench");
    let (spec_s, dir_s, fig_s) = (spec.to_str().unwrap(), dir.to_str().unwrap(), figures.to_str().unwrap());
    let (code, stdout, stderr) =
        run(&["bench", "talking-photo", spec_s, "--dir", dir_s, "--iterations", "1", "--json", fig_s]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("= ") && stdout.contains("x reference"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&figures).unwrap()).unwrap();
    let run0 = &v["runs"][0];
    for part in ["render", "voice_alone", "encoder_alone"] {
        assert!(run0[part]["wall_s"].as_f64().unwrap() > 0.0, "{part}: {v}");
        assert!(run0[part]["cpu_s"].as_f64().unwrap() > 0.0, "{part}: {v}");
    }
    let reference = run0["voice_alone"]["wall_s"].as_f64().unwrap() + run0["encoder_alone"]["wall_s"].as_f64().unwrap();
    let ratio = v["vs_reference"].as_f64().unwrap();
    assert!((ratio - run0["render"]["wall_s"].as_f64().unwrap() / reference).abs() < 1e-9, "{v}");
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 10.0, "{v}");
    assert!((v["seconds"].as_f64().unwrap() - 1.0).abs() < 1.5, "{v}");

    // A limit under the measured figure fails and names it.
    let (code, _, stderr) = run(&[
        "bench",
        "talking-photo",
        spec_s,
        "--dir",
        dir_s,
        "--iterations",
        "1",
        "--fail-if",
        "vs_reference=0.001",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("vs_reference = ") && stderr.contains("> 0.001"), "{stderr}");
}
