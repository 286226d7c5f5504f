//! `POST /api/v1/imports`: a LibreOffice-made ODP uploaded becomes a draft (one scene per slide,
//! narrated by its notes, the slides the caller's assets) that renders with the slides'
//! pixels; Markdown brings its picture in the same upload; bad files are refused by name and
//! leave nothing behind.

use std::path::Path;

use reelsmith_import::fixtures::{blank_pdf, convert, fodp, three_slides};
use serde_json::{Value, json};

use crate::harness::*;

const LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
}

async fn upload(s: &Server, form: reqwest::multipart::Form) -> (u16, Value) {
    let r = s.post("/api/v1/imports").multipart(form).send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

fn file_part(name: &str, bytes: Vec<u8>) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes).file_name(name.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_deck_becomes_a_draft_that_renders_its_slides() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let decks = tempfile::tempdir().unwrap();
    let source = decks.path().join("review.fodp");
    std::fs::write(&source, fodp(&three_slides())).unwrap();
    let odp = std::fs::read(convert(&source, "odp", decks.path())).unwrap();
    let form = reqwest::multipart::Form::new()
        .part("file", file_part("review.odp", odp))
        .text("request", json!({"size": "320x180", "voice": {"engine": "espeak-ng", "name": "en-us"}}).to_string());
    let (code, draft) = upload(&s, form).await;
    assert_eq!(code, 201, "{draft}");
    assert_eq!((draft["kind"].as_str(), draft["scenes"].as_u64()), (Some("odp"), Some(3)), "{draft}");
    let scenes = draft["spec"]["scenes"].as_array().unwrap();
    assert_eq!(scenes[0]["narration"]["text"], "Welcome to the quarterly review.");
    assert_eq!(scenes[2]["narration"]["text"], "Thank you all");
    assert!(scenes.iter().all(|sc| sc["image"].as_str().unwrap().starts_with("asset:")), "{draft}");
    assert_eq!(draft["assets"].as_array().unwrap().len(), 3);

    let (code, g) = s.submit(&json!({"spec": draft["spec"]})).await;
    assert_eq!(code, 202, "{g}");
    let done = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let video = s.get(&format!("/api/v1/generations/{}/video", g["id"].as_str().unwrap())).send().await.unwrap();
    let mp4 = dir.path().join("deck.mp4");
    std::fs::write(&mp4, video.bytes().await.unwrap()).unwrap();
    let secs = done["result"]["duration_s"].as_f64().unwrap();
    let [r, _, b] = crate::common::mean_rgb(&mp4, 0.2, 290, 150, 315, 175);
    assert!(b > 150.0 && r < 90.0, "slide 1 is blue: {r} {b}");
    let [r, g2, _] = crate::common::mean_rgb(&mp4, secs - 0.2, 290, 150, 315, 175);
    assert!(g2 > 120.0 && r < 90.0, "slide 3 is green: {r} {g2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn markdown_brings_its_pictures_and_bad_files_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let img = image::RgbImage::from_pixel(64, 36, image::Rgb([200, 40, 160]));
    let mut png = std::io::Cursor::new(vec![]);
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let md = "# Launch\n\nWe shipped.\n\n![chart](chart.png)\n\nUsage doubled.\n";
    let form = reqwest::multipart::Form::new()
        .part("file", file_part("notes.md", md.as_bytes().to_vec()))
        .part("chart", file_part("chart.png", png.into_inner()));
    let (code, draft) = upload(&s, form).await;
    assert_eq!(code, 201, "{draft}");
    let scenes = draft["spec"]["scenes"].as_array().unwrap();
    assert_eq!(scenes[0]["title"], "Launch");
    assert!(scenes[2]["image"].as_str().unwrap().starts_with("asset:"), "{draft}");
    assert_eq!(scenes[2]["narration"]["text"], "Usage doubled.");

    // Refusals, each naming the file; none of them keeps a file.
    let assets = dir.path().join("assets");
    let before = files_under(&assets);
    let refused = |form: reqwest::multipart::Form, code: u16, error: &'static str| {
        let s = &s;
        async move {
            let (got, body) = upload(s, form).await;
            assert_eq!((got, body["error"]["code"].as_str()), (code, Some(error)), "{body}");
            body["error"]["message"].as_str().unwrap().to_string()
        }
    };
    let m = refused(
        reqwest::multipart::Form::new().part("file", file_part("thousand.pdf", blank_pdf(1000))),
        422,
        "import_too_many_pages",
    )
    .await;
    assert!(m.starts_with("thousand.pdf has 1000 pages"), "{m}");
    let m = refused(
        reqwest::multipart::Form::new().part("file", file_part("blank.pdf", blank_pdf(2))),
        422,
        "import_no_text",
    )
    .await;
    assert!(m.starts_with("blank.pdf has nothing to narrate"), "{m}");
    // A zip bomb dressed as a deck: 64 MB of zeros in a few kilobytes.
    let mut bomb = std::io::Cursor::new(vec![]);
    {
        let mut w = zip::ZipWriter::new(&mut bomb);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.start_file("ppt/presentation.xml", opts).unwrap();
        std::io::Write::write_all(&mut w, b"<p:presentation/>").unwrap();
        w.start_file("ppt/media/zeros.bin", opts).unwrap();
        for _ in 0..64 {
            std::io::Write::write_all(&mut w, &[0u8; 1 << 20]).unwrap();
        }
        w.finish().unwrap();
    }
    let m = refused(
        reqwest::multipart::Form::new().part("file", file_part("bomb.pptx", bomb.into_inner())),
        422,
        "import_too_large",
    )
    .await;
    assert!(m.contains("bomb.pptx") && m.contains("zip bomb"), "{m}");
    let m = refused(
        reqwest::multipart::Form::new().part("file", file_part("gone.md", b"Intro.\n\n![x](missing.png)\n".to_vec())),
        422,
        "missing_asset",
    )
    .await;
    assert!(m.contains("gone.md, line 3") && m.contains("missing.png"), "{m}");
    refused(reqwest::multipart::Form::new().text("request", "{}"), 422, "invalid_multipart").await;
    refused(
        reqwest::multipart::Form::new()
            .part("file", file_part("notes.md", md.as_bytes().to_vec()))
            .text("request", json!({"size": "huge"}).to_string()),
        422,
        "invalid_request",
    )
    .await;
    assert_eq!(files_under(&assets), before, "refused imports keep no file");
    // The server still serves.
    assert_eq!(s.get("/health").send().await.unwrap().status(), 200);
}
