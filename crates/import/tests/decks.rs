//! Real decks made by LibreOffice (PPTX, ODP, PDF) imported with real poppler and LibreOffice:
//! one scene per slide, narration from the speaker notes (or the slide's text), the slide's
//! pixels in its picture; and every kind of bad deck refused by name.

use std::path::Path;
use std::sync::OnceLock;

use reelsmith_import::fixtures::{blank_pdf, convert, fodp, three_slides};
use reelsmith_import::{ImportError, ImportOptions, Kind, import};

/// The three-slide deck as PPTX, ODP and PDF, made once for every test here.
fn decks() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("deck.fodp");
        std::fs::write(&source, fodp(&three_slides())).unwrap();
        for to in ["pptx", "odp", "pdf"] {
            convert(&source, to, dir.path());
        }
        dir
    })
    .path()
}

fn opts(name: &str) -> ImportOptions {
    ImportOptions { width: 320, height: 180, display_name: name.into(), ..Default::default() }
}

fn center_rgb(path: &Path) -> [u8; 3] {
    let img = image::open(path).unwrap().to_rgb8();
    let p = img.get_pixel(img.width() - 8, img.height() - 8);
    [p[0], p[1], p[2]]
}

fn check_three_slides(kind: Kind, file: &str, notes: bool) {
    let work = tempfile::tempdir().unwrap();
    let draft = import(&decks().join(file), &opts(file), work.path()).unwrap();
    assert_eq!(draft.kind, kind);
    let scenes = draft.spec["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 3, "{}", draft.spec);
    let spoken: Vec<&str> = scenes.iter().map(|s| s["narration"]["text"].as_str().unwrap_or("")).collect();
    if notes {
        assert_eq!(
            spoken,
            ["Welcome to the quarterly review.", "Revenue grew by a third. Costs stayed flat.", "Thank you all"]
        );
    } else {
        assert_eq!(
            spoken,
            ["Quarterly review", "Revenue grew", "Thank you all"],
            "a PDF's pages narrate their own text"
        );
    }
    assert_eq!(draft.pictures.len(), 3);
    for (picture, want) in draft.pictures.iter().zip([[0x20, 0x50, 0xc0], [0xd0, 0x20, 0x20], [0x20, 0xa0, 0x40]]) {
        let got = center_rgb(picture);
        let close = got.iter().zip(want).all(|(g, w)| (i32::from(*g) - w).abs() < 30);
        assert!(close, "{}: {got:?}, want {want:?}", picture.display());
        let (w, h) = image::image_dimensions(picture).unwrap();
        assert!(w == 320 && (170..=190).contains(&h), "drawn at the output size: {w}x{h}");
    }
    assert_eq!(scenes[0]["image"], "slide-001.png");
}

#[test]
fn a_pptx_is_narrated_by_its_speaker_notes() {
    check_three_slides(Kind::Pptx, "deck.pptx", true);
}

#[test]
fn an_odp_is_narrated_by_its_speaker_notes() {
    check_three_slides(Kind::Odp, "deck.odp", true);
}

#[test]
fn a_pdf_is_narrated_by_its_text() {
    check_three_slides(Kind::Pdf, "deck.pdf", false);
}

#[test]
fn bad_decks_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let refuse = |path: &Path, name: &str| -> ImportError {
        let work = tempfile::tempdir().unwrap();
        let e = import(path, &opts(name), work.path()).unwrap_err();
        assert!(e.to_string().starts_with(name), "the message names the file: {e}");
        assert!(e.is_input_error(), "{e}");
        // Nothing is left behind but what the caller's folder held.
        assert!(
            std::fs::read_dir(work.path()).unwrap().all(|f| !f.unwrap().path().to_string_lossy().ends_with(".png"))
        );
        e
    };
    let thousand = write("thousand.pdf", &blank_pdf(1000));
    let started = std::time::Instant::now();
    let e = refuse(&thousand, "thousand.pdf");
    assert!(matches!(e, ImportError::TooManyPages { pages: 1000, max: 200, .. }), "{e}");
    assert!(started.elapsed().as_secs() < 20, "refused before drawing any page");
    let e = refuse(&write("blank.pdf", &blank_pdf(3)), "blank.pdf");
    assert!(matches!(e, ImportError::NoText { .. }), "{e}");
    let mut broken = blank_pdf(3);
    broken.truncate(40);
    let e = refuse(&write("broken.pdf", &broken), "broken.pdf");
    assert_eq!(e.code(), "import_corrupt", "{e}");
    let e = refuse(&write("fake.pptx", b"this is not a deck at all"), "fake.pptx");
    assert!(matches!(e, ImportError::Unsupported { .. }), "{e}");
    let e = refuse(&write("notes.txt", b"# A heading"), "notes.txt");
    assert!(matches!(e, ImportError::Unsupported { .. }), "{e}");
    // A password-protected PDF (qpdf encrypts the LibreOffice-made one).
    let locked = dir.path().join("locked.pdf");
    let ok = std::process::Command::new("qpdf")
        .args(["--encrypt", "user-secret", "owner-secret", "256", "--"])
        .arg(decks().join("deck.pdf"))
        .arg(&locked)
        .status()
        .expect("qpdf runs: scripts/setup.sh installs it");
    assert!(ok.success());
    let e = refuse(&locked, "locked.pdf");
    assert!(matches!(e, ImportError::Encrypted { .. }), "{e}");
    // A corrupt zip named as a deck.
    let mut zipped = std::fs::read(decks().join("deck.pptx")).unwrap();
    zipped.truncate(zipped.len() / 2);
    let e = refuse(&write("half.pptx", &zipped), "half.pptx");
    assert_eq!(e.code(), "import_corrupt", "{e}");
}

#[test]
fn markdown_becomes_title_cards_narrated_scenes_and_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("notes.md");
    std::fs::write(&md, "# Launch\n\nWe shipped it.\n\n![chart](chart.png)\n\nThe chart shows growth.\n").unwrap();
    let work = tempfile::tempdir().unwrap();
    let draft = import(&md, &opts("notes.md"), work.path()).unwrap();
    assert_eq!(draft.kind, Kind::Markdown);
    let scenes = draft.spec["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 3);
    assert_eq!(scenes[0]["title"], "Launch");
    assert_eq!(scenes[1]["narration"]["text"], "We shipped it.");
    assert_eq!(scenes[2]["image"], "chart.png");
    assert_eq!(draft.images[0].reference, "chart.png");
    assert!(draft.pictures.is_empty());
}
