//! Decks for tests and `reelsmith bench deck`, made here rather than checked in: a flat ODP written as XML, converted by
//! LibreOffice into PPTX, ODP or PDF; and PDFs of blank pages written by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One slide: its background colour (`#rrggbb`), its text, its speaker notes.
pub struct TestSlide<'a> {
    pub color: &'a str,
    pub text: &'a str,
    pub notes: &'a [&'a str],
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A flat ODP (`.fodp`) of these slides, 16:9.
pub fn fodp(slides: &[TestSlide<'_>]) -> String {
    let mut styles = String::new();
    let mut pages = String::new();
    for (i, s) in slides.iter().enumerate() {
        styles.push_str(&format!(
            r#"<style:style style:name="dp{i}" style:family="drawing-page"><style:drawing-page-properties draw:fill="solid" draw:fill-color="{}" draw:background-size="full"/></style:style>"#,
            s.color
        ));
        let notes: String = s.notes.iter().map(|n| format!("<text:p>{}</text:p>", escape(n))).collect();
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(
                r#"<presentation:notes><draw:frame svg:x="2cm" svg:y="10cm" svg:width="17cm" svg:height="10cm"><draw:text-box>{notes}</draw:text-box></draw:frame></presentation:notes>"#
            )
        };
        let text = if s.text.is_empty() {
            String::new()
        } else {
            format!(
                r#"<draw:frame svg:x="2cm" svg:y="2cm" svg:width="24cm" svg:height="4cm"><draw:text-box><text:p>{}</text:p></draw:text-box></draw:frame>"#,
                escape(s.text)
            )
        };
        pages.push_str(&format!(
            r#"<draw:page draw:name="page{i}" draw:style-name="dp{i}" draw:master-page-name="Default">{text}{notes}</draw:page>"#
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.presentation">
<office:automatic-styles><style:page-layout style:name="PM1"><style:page-layout-properties fo:page-width="28cm" fo:page-height="15.75cm" style:print-orientation="landscape"/></style:page-layout>{styles}</office:automatic-styles>
<office:master-styles><style:master-page style:name="Default" style:page-layout-name="PM1"/></office:master-styles>
<office:body><office:presentation>{pages}</office:presentation></office:body></office:document>
"#
    )
}

/// Converts `source` with LibreOffice (`pptx`, `odp` or `pdf`) into `dir`, in a profile of its
/// own; the converted file's path.
pub fn convert(source: &Path, to: &str, dir: &Path) -> PathBuf {
    let profile = dir.join(format!("lo-profile-{to}"));
    let out = Command::new("soffice")
        .arg(format!("-env:UserInstallation=file://{}", profile.display()))
        .args(["--headless", "--norestore", "--convert-to", to, "--outdir"])
        .arg(dir)
        .arg(source)
        .output()
        .expect("LibreOffice (soffice) runs: scripts/setup.sh installs libreoffice-impress");
    let stem = source.file_stem().unwrap().to_string_lossy();
    let made = dir.join(format!("{stem}.{to}"));
    assert!(made.is_file(), "LibreOffice made no {to}: {}", String::from_utf8_lossy(&out.stderr));
    made
}

/// A PDF of `pages` blank pages (A4), written object by object with a correct xref table.
pub fn blank_pdf(pages: usize) -> Vec<u8> {
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!(
            "<< /Type /Pages /Count {pages} /Kids [{}] >>",
            (0..pages).map(|i| format!("{} 0 R", i + 3)).collect::<Vec<_>>().join(" ")
        ),
    ];
    for _ in 0..pages {
        objects.push("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>".into());
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = vec![];
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    out
}

/// The three slides the tests use: blue with notes, red with two notes paragraphs, green with
/// no notes (narrated by its own text).
pub fn three_slides() -> Vec<TestSlide<'static>> {
    vec![
        TestSlide { color: "#2050c0", text: "Quarterly review", notes: &["Welcome to the quarterly review."] },
        TestSlide {
            color: "#d02020",
            text: "Revenue grew",
            notes: &["Revenue grew by a third.", "Costs stayed flat."],
        },
        TestSlide { color: "#20a040", text: "Thank you all", notes: &[] },
    ]
}
