//! `reelsmith import`: a PPTX made by LibreOffice becomes a storyboard (one scene per slide,
//! narrated by its notes) that renders with the slides' pixels; Markdown becomes title cards,
//! narrated scenes and pictures; a bad deck exits 2 naming the file and what is wrong.

mod common;

use std::process::Command;

use common::{Fixture, mean_rgb, reelsmith};
use reelsmith_import::fixtures::{blank_pdf, convert, fodp, three_slides};

fn probe(p: &std::path::Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_format", "-of", "json"])
        .arg(p)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_pptx_with_notes_becomes_a_narrated_video_of_its_slides() {
    let f = Fixture::new();
    let source = f.path("deck.fodp");
    std::fs::write(&source, fodp(&three_slides())).unwrap();
    let deck = convert(&source, "pptx", f.dir.path());
    let spec = f.path("out/deck.json");
    let (code, err) =
        reelsmith(&f, &["import", deck.to_str().unwrap(), "-o", spec.to_str().unwrap(), "--size", "320x180"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("3 scenes from deck.pptx (pptx)"), "{err}");
    let draft: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&spec).unwrap()).unwrap();
    let scenes = draft["scenes"].as_array().unwrap();
    assert_eq!(scenes[1]["narration"]["text"], "Revenue grew by a third. Costs stayed flat.");
    assert_eq!(scenes[2]["narration"]["text"], "Thank you all", "a slide without notes narrates its text");
    assert_eq!(scenes[0]["image"], "deck-slides/slide-001.png");
    assert!(f.path("out/deck-slides/slide-003.png").is_file());

    let video = f.path("out/deck.mp4");
    let (code, err) = reelsmith(&f, &["render", spec.to_str().unwrap(), "-o", video.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 0, "{err}");
    let p = probe(&video);
    let streams = p["streams"].as_array().unwrap();
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "narrated: {p}");
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(320), Some(180)));
    let secs: f64 = p["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(secs > 4.0, "three narrated slides: {secs} s");
    let [r, g, b] = mean_rgb(&video, 0.2, 290, 150, 315, 175);
    assert!(b > 150.0 && r < 90.0, "slide 1 is blue: {r} {g} {b}");
    let [r, g, b] = mean_rgb(&video, secs - 0.2, 290, 150, 315, 175);
    assert!(g > 120.0 && r < 90.0 && b < 110.0, "slide 3 is green: {r} {g} {b}");
}

#[test]
fn markdown_becomes_cards_narration_and_pictures() {
    let f = Fixture::new();
    f.solid_png("chart.png", 320, 180, [200, 40, 160]);
    let md = f.path("notes.md");
    std::fs::write(
        &md,
        "# Launch day\n\nWe shipped the new editor.\n\n![chart](chart.png)\n\nUsage doubled in a week.\n",
    )
    .unwrap();
    let spec = f.path("notes.json");
    let (code, err) =
        reelsmith(&f, &["import", md.to_str().unwrap(), "-o", spec.to_str().unwrap(), "--size", "320x180"]);
    assert_eq!(code, 0, "{err}");
    let video = f.path("notes.mp4");
    let (code, err) = reelsmith(&f, &["render", spec.to_str().unwrap(), "-o", video.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 0, "{err}");
    let secs: f64 = probe(&video)["format"]["duration"].as_str().unwrap().parse().unwrap();
    let [r, g, b] = mean_rgb(&video, secs - 0.3, 100, 60, 220, 120);
    assert!(r > 150.0 && g < 90.0 && b > 120.0, "the picture ends the video: {r} {g} {b}");

    // A picture that is not there is named with its line.
    std::fs::write(&md, "Intro.\n\n![gone](missing.png)\n").unwrap();
    let (code, err) = reelsmith(&f, &["import", md.to_str().unwrap(), "-o", spec.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("notes.md, line 3: the image 'missing.png' is not there"), "{err}");
}

#[test]
fn bad_decks_exit_2_naming_the_file() {
    let f = Fixture::new();
    let big = f.path("thousand.pdf");
    std::fs::write(&big, blank_pdf(1000)).unwrap();
    let out = f.path("x.json");
    let (code, err) = reelsmith(&f, &["import", big.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("thousand.pdf has 1000 pages; at most 200"), "{err}");
    let blank = f.path("blank.pdf");
    std::fs::write(&blank, blank_pdf(2)).unwrap();
    let (code, err) = reelsmith(&f, &["import", blank.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("blank.pdf has nothing to narrate"), "{err}");
    let (code, err) = reelsmith(&f, &["import", blank.to_str().unwrap(), "-o", out.to_str().unwrap(), "--size", "big"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--size big"), "{err}");
    assert!(!out.exists(), "nothing written");
}
