//! Bad input through the real `reelsmith` binary: a clear message naming the JSON path and
//! the problem, exit code 2 for spec problems, never a panic, and no output file left behind.

mod common;

use std::process::Command;

use common::{Fixture, png_header_only, reelsmith};
use serde_json::json;

fn render_err(f: &Fixture, spec: serde_json::Value) -> String {
    let p = f.write_spec("spec.json", &spec);
    let out = f.path("out.mp4");
    let (code, stderr) = reelsmith(f, &["render", p.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quiet"]);
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert_ne!(code, 0, "must fail: {stderr}");
    assert!(!out.exists(), "no output on failure");
    stderr
}

fn scene(s: serde_json::Value) -> serde_json::Value {
    json!({ "version": 1, "output": { "width": 160, "height": 90 }, "scenes": [s] })
}

#[test]
fn missing_image_names_path_and_file() {
    let f = Fixture::new();
    let err = render_err(&f, json!({ "version": 1, "scenes": [{}, {}, { "image": "a.jpg" }] }));
    assert!(err.contains("scenes[2].image: file not found: a.jpg"), "{err}");
}

#[test]
fn corrupt_image_is_reported() {
    let f = Fixture::new();
    std::fs::write(f.path("bad.jpg"), b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
    let err = render_err(&f, scene(json!({ "image": "bad.jpg" })));
    assert!(err.contains("scenes[0].image: corrupt or unreadable image"), "{err}");
}

#[test]
fn decompression_bomb_is_refused_before_decoding() {
    let f = Fixture::new();
    std::fs::write(f.path("huge.png"), png_header_only(50_000, 50_000)).unwrap();
    let err = render_err(&f, scene(json!({ "image": "huge.png" })));
    assert!(err.contains("scenes[0].image: image too large: "), "{err}");
    assert!(err.contains("50000x50000"), "{err}");
}

#[test]
fn not_an_image_is_reported() {
    let f = Fixture::new();
    std::fs::write(f.path("notes.txt"), b"just text").unwrap();
    let err = render_err(&f, scene(json!({ "image": "notes.txt" })));
    assert!(err.contains("scenes[0].image: not a supported image"), "{err}");
}

#[test]
fn unreadable_audio_is_reported() {
    let f = Fixture::new();
    std::fs::write(f.path("voice.wav"), b"RIFF....WAVEgarbage").unwrap();
    let err = render_err(&f, scene(json!({ "narration": { "audio": "voice.wav" } })));
    assert!(err.contains("scenes[0].narration.audio"), "{err}");
}

#[test]
fn unknown_voice_and_font_are_reported() {
    let f = Fixture::new();
    let err = render_err(
        &f,
        json!({ "version": 1, "subtitles": { "font": { "family": "No Such Font Family" } },
                "scenes": [{ "narration": { "text": "hi", "name": "xx-nonexistent" } }] }),
    );
    assert!(err.contains("scenes[0].narration.name: unknown espeak-ng voice \"xx-nonexistent\""), "{err}");
    assert!(err.contains("subtitles.font.family: font family not installed: No Such Font Family"), "{err}");
}

#[test]
fn malformed_json_and_unknown_fields_name_their_path() {
    let f = Fixture::new();
    let err = render_err(&f, json!({ "version": 1, "scenes": [{ "transition": { "type": "wipe" } }] }));
    assert!(err.contains("scenes[0].transition.type: unknown variant `wipe`"), "{err}");
    let err = render_err(&f, json!({ "version": 1, "scenes": [{ "imagee": "x.png" }] }));
    assert!(err.contains("scenes[0].imagee: unknown field `imagee`"), "{err}");
    std::fs::write(f.path("broken.json"), b"{\"version\": 1, \"scenes\": [").unwrap();
    let (code, err) =
        reelsmith(&f, &["render", f.path("broken.json").to_str().unwrap(), "-o", f.path("o.mp4").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("EOF while parsing"), "{err}");
}

#[test]
fn limits_and_impossible_timings_are_reported() {
    let f = Fixture::new();
    let long = "word ".repeat(1100);
    let err = render_err(
        &f,
        json!({ "version": 1, "output": { "width": 10000, "height": 90 },
                "scenes": [{ "narration": { "text": long } }, { "duration": 0.5, "transition": { "type": "crossfade", "duration": 2 } }, {}] }),
    );
    assert!(err.contains("output.width: must be between 16 and 4096, got 10000"), "{err}");
    assert!(err.contains("scenes[0].narration.text: text too long: 5500 characters"), "{err}");
    let err = render_err(
        &f,
        scene(
            json!({ "duration": 0.5, "narration": { "text": "This sentence certainly takes longer than half a second to say." } }),
        ),
    );
    assert!(err.contains("scenes[0].duration: the narration lasts"), "{err}");
}

#[test]
fn exit_code_two_for_spec_errors_and_validate_command() {
    let f = Fixture::new();
    let good = f.write_spec("good.json", &scene(json!({ "duration": 1 })));
    let bad = f.write_spec("bad.json", &scene(json!({ "image": "missing.png" })));
    let (code, _) = reelsmith(&f, &["validate", good.to_str().unwrap()]);
    assert_eq!(code, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_reelsmith")).args(["validate", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("scenes[0].image: file not found: missing.png"));
}

#[test]
fn doctor_and_cache_commands_work() {
    let f = Fixture::new();
    let out = Command::new(env!("CARGO_BIN_EXE_reelsmith"))
        .args(["doctor", "--json"])
        .env("REELSMITH_CACHE_DIR", f.path("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["ffmpeg"].as_str().unwrap().starts_with("ffmpeg version"));
    assert!(v["encoders"].as_array().unwrap().iter().any(|e| e == "libx264"));
    assert!(v["speech"]["voices"].as_u64().unwrap() > 10);

    let spec = f.write_spec("s.json", &scene(json!({ "duration": 0.4 })));
    let (code, err) =
        reelsmith(&f, &["render", spec.to_str().unwrap(), "-o", f.path("o.mp4").to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 0, "{err}");
    let stats = Command::new(env!("CARGO_BIN_EXE_reelsmith"))
        .args(["cache", "stats", "--json"])
        .env("REELSMITH_CACHE_DIR", f.path("cache"))
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(s["entries"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["stages"]["segment"]["misses"], 1);
    let (code, _) = reelsmith(&f, &["cache", "clear"]);
    assert_eq!(code, 0);
    let stats = Command::new(env!("CARGO_BIN_EXE_reelsmith"))
        .args(["cache", "stats", "--json"])
        .env("REELSMITH_CACHE_DIR", f.path("cache"))
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(s["entries"], 0);
}

#[test]
fn a_missing_neural_voice_model_is_named_and_espeak_still_works() {
    let f = Fixture::new();
    let spec = json!({"version": 1, "output": {"width": 160, "height": 90}, "voice": {"engine": "piper", "name": "en_US-joe-medium"},
        "scenes": [{"narration": {"text": "Hello."}}]});
    let p = f.write_spec("spec.json", &spec);
    let out = f.path("out.mp4");
    let run = |spec: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_reelsmith"))
            .args(["render", spec.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quiet"])
            .env("REELSMITH_CACHE_DIR", f.path("cache"))
            .env("REELSMITH_MODELS_DIR", f.path("no-models-here"))
            .output()
            .unwrap()
    };
    let o = run(&p);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("voice.engine") && stderr.contains("\"piper\" is not available here"), "{stderr}");
    assert!(stderr.contains("scripts/models.sh"), "says how to get it: {stderr}");
    assert!(!out.exists());
    // The same machine without models still renders with espeak-ng.
    let spec =
        json!({"version": 1, "output": {"width": 160, "height": 90}, "scenes": [{"narration": {"text": "Hello."}}]});
    let p = f.write_spec("espeak.json", &spec);
    let o = run(&p);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // An unknown voice of an installed engine is named too.
    let spec = json!({"version": 1, "output": {"width": 160, "height": 90}, "voice": {"engine": "piper", "name": "xx_nobody"},
        "scenes": [{"narration": {"text": "Hello."}}]});
    let o = Command::new(env!("CARGO_BIN_EXE_reelsmith"))
        .args(["validate", f.write_spec("nobody.json", &spec).to_str().unwrap()])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(said.contains("scenes[0].narration.name: unknown piper voice \"xx_nobody\""), "{said}");
}

/// A storyboard's file names are files, whatever they look like: `http:host:port` (FFmpeg would
/// read it as a URL) or a leading `-` (an option), in a spec rendered from its own folder.
#[test]
fn file_names_that_look_like_urls_or_options_are_files() {
    let f = Fixture::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let url_name = format!("http:127.0.0.1:{port}");
    std::fs::copy(f.tone_wav("tone.wav", 440.0, 1.0, 0.3), f.path(&url_name)).unwrap();
    std::fs::copy(f.tone_wav("tone2.wav", 660.0, 1.0, 0.3), f.path("-i")).unwrap();
    let spec = json!({ "version": 1, "output": { "width": 160, "height": 90, "fps": 10 },
        "music": { "file": url_name },
        "scenes": [{ "duration": 1, "narration": { "audio": "-i" } }] });
    f.write_spec("spec.json", &spec);
    let out = Command::new(env!("CARGO_BIN_EXE_reelsmith"))
        .args(["render", "spec.json", "-o", "out.mp4", "--quiet"])
        .current_dir(f.dir.path())
        .env("REELSMITH_CACHE_DIR", f.path("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(listener.accept().is_err(), "the render connected to the listener");
    let info = reelsmith_media::ffmpeg::probe(&f.path("out.mp4")).unwrap();
    assert!(info.audio().is_some() && info.video().is_some());
}

/// Each command lists only the options it uses: `keys create --help` used to show the
/// server's `--bind` and `--no-worker`, the tracing endpoint and the cache options.
#[test]
fn each_command_shows_only_its_own_options() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_reelsmith")).args(args).arg("--help").output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let keys = help(&["keys", "create"]);
    for absent in ["--bind", "--no-worker", "--otlp-endpoint", "--cache-dir", "--cache-size-mb"] {
        assert!(!keys.contains(absent), "keys create --help shows {absent}:\n{keys}");
    }
    assert!(keys.contains("--daily-megapixel-frames"), "{keys}");
    for (cmd, present, absent) in [
        (&["render"][..], &["--cache-dir", "--cache-size-mb", "--otlp-endpoint"][..], &["--bind", "--data-dir"][..]),
        (
            &["serve"][..],
            &["--bind", "--no-worker", "--data-dir", "--cache-dir", "--otlp-endpoint"][..],
            &["--cache-size-mb"][..],
        ),
        (
            &["keys"][..],
            &["--data-dir", "--config"][..],
            &["--bind", "--no-worker", "--cache-dir", "--otlp-endpoint"][..],
        ),
        (&["validate"][..], &[][..], &["--cache-dir", "--otlp-endpoint", "--bind"][..]),
        (&["cache", "stats"][..], &[][..], &["--otlp-endpoint", "--bind"][..]),
    ] {
        let text = help(cmd);
        for p in present {
            assert!(text.contains(p), "{cmd:?} --help lacks {p}:\n{text}");
        }
        for a in absent {
            assert!(!text.contains(a), "{cmd:?} --help shows {a}:\n{text}");
        }
    }
}
