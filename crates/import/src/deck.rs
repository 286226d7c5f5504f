//! PPTX and ODP decks: speaker notes read from the zip's XML (every entry sized before it is
//! read), the slides drawn by LibreOffice's PDF export.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use reelsmith_media::ffmpeg::{FfmpegError, run_tool};

use crate::{ImportError, ImportOptions, Kind};

/// Most entries a deck's zip may have.
const MAX_ENTRIES: usize = 20_000;
/// Most bytes all of a deck's entries may expand to (pictures included).
const MAX_EXPANDED: u64 = 1 << 30;
/// Largest XML part read (a slide, its notes, ODP's content.xml).
const MAX_XML: u64 = 32 << 20;
/// The address space LibreOffice may use (it converts a real deck within 1 GB).
const OFFICE_MEMORY: u64 = 2 << 30;
/// Largest expansion ratio of a big entry (real decks compress XML about 10:1).
const MAX_RATIO: u64 = 200;

type Archive = zip::ZipArchive<std::fs::File>;

fn corrupt(file: &str, detail: impl Into<String>) -> ImportError {
    ImportError::Corrupt { file: file.into(), detail: detail.into() }
}

/// Opens the zip and checks every entry's declared size before anything is read.
fn open(path: &Path, file: &str) -> Result<Archive, ImportError> {
    let f = std::fs::File::open(path).map_err(|source| ImportError::Io { file: file.into(), source })?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| corrupt(file, format!("not a readable zip ({e})")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(corrupt(file, format!("{} entries; a deck has at most {MAX_ENTRIES}", zip.len())));
    }
    let mut total = 0u64;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| corrupt(file, format!("a broken zip entry ({e})")))?;
        let (size, packed) = (entry.size(), entry.compressed_size().max(1));
        total = total.saturating_add(size);
        if (size > 1 << 20 && size / packed > MAX_RATIO) || total > MAX_EXPANDED {
            return Err(ImportError::Bomb {
                file: file.into(),
                entry: entry.name().to_string(),
                bytes: size,
                limit: if total > MAX_EXPANDED { MAX_EXPANDED } else { packed.saturating_mul(MAX_RATIO) },
            });
        }
    }
    Ok(zip)
}

/// An XML part as text, read no further than its limit whatever its header claims.
fn read_part(zip: &mut Archive, name: &str, file: &str) -> Result<Option<String>, ImportError> {
    let entry = match zip.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(corrupt(file, format!("{name}: {e}"))),
    };
    let mut text = String::new();
    entry.take(MAX_XML + 1).read_to_string(&mut text).map_err(|e| corrupt(file, format!("{name}: {e}")))?;
    if text.len() as u64 > MAX_XML {
        return Err(ImportError::Bomb {
            file: file.into(),
            entry: name.into(),
            bytes: text.len() as u64,
            limit: MAX_XML,
        });
    }
    Ok(Some(text))
}

/// PPTX or ODP, from the zip's entries.
pub(crate) fn zip_kind(path: &Path, file: &str) -> Result<Kind, ImportError> {
    let mut zip = open(path, file)?;
    if zip.by_name("ppt/presentation.xml").is_ok() {
        return Ok(Kind::Pptx);
    }
    if let Some(mime) = read_part(&mut zip, "mimetype", file)?
        && mime.trim() == "application/vnd.oasis.opendocument.presentation"
    {
        return Ok(Kind::Odp);
    }
    Err(ImportError::Unsupported { file: file.into(), why: "a zip, but not a PPTX or ODP presentation".into() })
}

fn parse<'a>(text: &'a str, part: &str, file: &str) -> Result<roxmltree::Document<'a>, ImportError> {
    let opts = roxmltree::ParsingOptions { allow_dtd: false, ..Default::default() };
    roxmltree::Document::parse_with_options(text, opts).map_err(|e| corrupt(file, format!("{part}: {e}")))
}

/// Each slide's speaker notes (empty where a slide has none), in the order the deck shows them.
pub(crate) fn notes(path: &Path, kind: Kind, file: &str) -> Result<Vec<String>, ImportError> {
    let mut zip = open(path, file)?;
    match kind {
        Kind::Pptx => pptx_notes(&mut zip, file),
        _ => odp_notes(&mut zip, file),
    }
}

/// A relationships part: id → target, and type → targets.
fn relationships(text: &str, part: &str, file: &str) -> Result<Vec<(String, String, String)>, ImportError> {
    let doc = parse(text, part, file)?;
    Ok(doc
        .descendants()
        .filter(|n| n.tag_name().name() == "Relationship")
        .map(|n| {
            let get = |a: &str| n.attribute(a).unwrap_or_default().to_string();
            (get("Id"), get("Type"), get("Target"))
        })
        .collect())
}

/// `target` relative to the folder of `part` (`ppt/slides/slide1.xml` + `../notesSlides/n.xml`).
fn resolve(part: &str, target: &str) -> String {
    if let Some(abs) = target.strip_prefix('/') {
        return abs.to_string();
    }
    let mut dirs: Vec<&str> = part.split('/').collect();
    dirs.pop();
    for piece in target.split('/') {
        match piece {
            ".." => {
                dirs.pop();
            }
            "." | "" => {}
            p => dirs.push(p),
        }
    }
    dirs.join("/")
}

/// The text of a DrawingML body: paragraphs (`a:p`) of runs (`a:t`).
fn paragraphs(node: roxmltree::Node<'_, '_>) -> String {
    let mut out = vec![];
    for p in node.descendants().filter(|n| {
        n.tag_name().name() == "p" && n.tag_name().namespace().is_some_and(|ns| ns.ends_with("drawingml/2006/main"))
    }) {
        let line: String = p.descendants().filter(|n| n.tag_name().name() == "t").filter_map(|n| n.text()).collect();
        if !line.trim().is_empty() {
            out.push(line);
        }
    }
    out.join("\n")
}

fn pptx_notes(zip: &mut Archive, file: &str) -> Result<Vec<String>, ImportError> {
    let presentation = read_part(zip, "ppt/presentation.xml", file)?.unwrap_or_default();
    let rels = read_part(zip, "ppt/_rels/presentation.xml.rels", file)?
        .ok_or_else(|| corrupt(file, "ppt/_rels/presentation.xml.rels is missing"))?;
    let targets: HashMap<String, String> = relationships(&rels, "presentation.xml.rels", file)?
        .into_iter()
        .map(|(id, _, target)| (id, resolve("ppt/presentation.xml", &target)))
        .collect();
    let doc = parse(&presentation, "ppt/presentation.xml", file)?;
    let slides: Vec<String> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "sldId")
        .filter_map(|n| {
            let rid = n.attributes().find(|a| a.name() == "id" && a.namespace().is_some())?.value();
            targets.get(rid).cloned()
        })
        .collect();
    let mut notes = vec![];
    for slide in slides {
        let Some(xml) = read_part(zip, &slide, file)? else { continue };
        // Hidden slides are not exported, so they get no page.
        if parse(&xml, &slide, file)?.root_element().attribute("show") == Some("0") {
            continue;
        }
        let (dir, name) = slide.rsplit_once('/').unwrap_or(("", &slide));
        let rels_part = format!("{dir}/_rels/{name}.rels");
        let mut text = String::new();
        if let Some(rels) = read_part(zip, &rels_part, file)? {
            let target = relationships(&rels, &rels_part, file)?
                .into_iter()
                .find(|(_, kind, _)| kind.ends_with("/notesSlide"))
                .map(|(_, _, t)| resolve(&slide, &t));
            if let Some(part) = target
                && let Some(xml) = read_part(zip, &part, file)?
            {
                let doc = parse(&xml, &part, file)?;
                // The notes are the text of the notes page's shapes: PowerPoint's body
                // placeholder, or a plain text box; never its slide number, header, footer or
                // date placeholders.
                for shape in doc.descendants().filter(|n| n.tag_name().name() == "sp") {
                    let furniture = shape.descendants().find(|n| n.tag_name().name() == "ph").is_some_and(|ph| {
                        matches!(ph.attribute("type"), Some("sldNum" | "hdr" | "ftr" | "dt" | "sldImg"))
                    });
                    if !furniture {
                        text.push_str(&paragraphs(shape));
                        text.push('\n');
                    }
                }
            }
        }
        notes.push(text.trim().to_string());
    }
    if notes.is_empty() {
        return Err(corrupt(file, "the presentation lists no slides"));
    }
    Ok(notes)
}

/// The text of an ODF element: its paragraphs, spaces (`text:s`), tabs and line breaks.
fn odf_text(node: roxmltree::Node<'_, '_>, out: &mut String) {
    for child in node.children() {
        if child.is_text() {
            out.push_str(child.text().unwrap_or_default());
            continue;
        }
        match child.tag_name().name() {
            "s" | "tab" | "line-break" => out.push(' '),
            "p" | "h" => {
                odf_text(child, out);
                out.push('\n');
            }
            _ => odf_text(child, out),
        }
    }
}

fn odp_notes(zip: &mut Archive, file: &str) -> Result<Vec<String>, ImportError> {
    let content = read_part(zip, "content.xml", file)?.ok_or_else(|| corrupt(file, "content.xml is missing"))?;
    let doc = parse(&content, "content.xml", file)?;
    let mut notes = vec![];
    for page in doc.descendants().filter(|n| {
        n.tag_name().name() == "page" && n.parent_element().is_some_and(|p| p.tag_name().name() == "presentation")
    }) {
        let mut text = String::new();
        if let Some(n) = page.children().find(|n| n.tag_name().name() == "notes") {
            // The notes page's text frames; its page thumbnail has none.
            odf_text(n, &mut text);
        }
        notes.push(text.trim().to_string());
    }
    if notes.is_empty() {
        return Err(corrupt(file, "the presentation has no slides"));
    }
    Ok(notes)
}

/// The deck as a PDF (one page per shown slide), by LibreOffice in a profile of its own under
/// `work`, killed at the deadline.
pub(crate) fn to_pdf(path: &Path, kind: Kind, opts: &ImportOptions, work: &Path) -> Result<PathBuf, ImportError> {
    let file = opts.display_name.as_str();
    let io = |source| ImportError::Io { file: file.into(), source };
    let input = work.join(format!("deck.{}", kind.as_str()));
    std::fs::copy(path, &input).map_err(io)?;
    let profile = work.join("libreoffice-profile");
    let out = work.join("pdf");
    std::fs::create_dir_all(&out).map_err(io)?;
    let mut cmd = Command::new("soffice");
    cmd.arg(format!("-env:UserInstallation=file://{}", profile.display()))
        .args(["--headless", "--invisible", "--norestore", "--nologo", "--nodefault", "--nolockcheck"])
        .args(["--convert-to", "pdf", "--outdir"])
        .arg(&out)
        .arg(&input)
        // Its own home and temporary folder too: nothing of it outlives the import.
        .env("HOME", work)
        .env("TMPDIR", work);
    run_tool(cmd, "LibreOffice", opts.deadline, 1 << 20, OFFICE_MEMORY).map_err(|e| match e {
        FfmpegError::Missing(_) => ImportError::Tool {
            file: file.into(),
            detail: "LibreOffice is not installed (libreoffice-impress; scripts/setup.sh installs it)".into(),
        },
        FfmpegError::Failed { status, .. } if status.starts_with("killed after") => {
            ImportError::Tool { file: file.into(), detail: format!("LibreOffice did not finish: {status}") }
        }
        other => corrupt(file, format!("LibreOffice could not read it ({other})")),
    })?;
    let pdf = out.join("deck.pdf");
    if !pdf.is_file() {
        return Err(corrupt(file, "LibreOffice could not convert it (no PDF came out)"));
    }
    Ok(pdf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_targets_resolve_against_their_part() {
        assert_eq!(
            resolve("ppt/slides/slide1.xml", "../notesSlides/notesSlide1.xml"),
            "ppt/notesSlides/notesSlide1.xml"
        );
        assert_eq!(resolve("ppt/presentation.xml", "slides/slide2.xml"), "ppt/slides/slide2.xml");
        assert_eq!(resolve("ppt/presentation.xml", "/ppt/slides/slide3.xml"), "ppt/slides/slide3.xml");
    }

    /// A zip whose one entry claims to expand far more than deflate allows is refused by its
    /// header, before a byte of it is inflated.
    #[test]
    fn a_zip_bomb_is_refused_by_its_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.pptx");
        {
            let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
            let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            w.start_file("ppt/presentation.xml", opts).unwrap();
            std::io::Write::write_all(&mut w, b"<p:presentation/>").unwrap();
            w.start_file("ppt/media/zeros.bin", opts).unwrap();
            let block = vec![0u8; 1 << 20];
            for _ in 0..64 {
                std::io::Write::write_all(&mut w, &block).unwrap();
            }
            w.finish().unwrap();
        }
        let e = zip_kind(&path, "bomb.pptx").unwrap_err();
        assert!(matches!(e, ImportError::Bomb { ref entry, .. } if entry == "ppt/media/zeros.bin"), "{e}");
        assert!(e.to_string().starts_with("bomb.pptx: the entry ppt/media/zeros.bin"), "{e}");
    }
}
