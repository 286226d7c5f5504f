//! PDF pages as pictures (`pdftoppm`) with their text (`pdftotext`), both from poppler.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reelsmith_media::ffmpeg::{FfmpegError, run_tool};

use crate::text::narration;
use crate::{ImportError, ImportOptions, Slide};

/// Most text read from a document at once.
const MAX_TEXT_BYTES: usize = 16 << 20;
/// The address space poppler's tools may use (a page is drawn at the output size).
const POPPLER_MEMORY: u64 = 1 << 30;

/// A tool's failure, said in the file's terms: a wrong password is a password-protected file,
/// a syntax error a corrupt one, a deadline or a missing tool this machine's problem.
fn failure(e: FfmpegError, file: &str, tool: &str) -> ImportError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("incorrect password") || lower.contains("encrypted") {
        return ImportError::Encrypted { file: file.into() };
    }
    match e {
        FfmpegError::Missing(_) => ImportError::Tool {
            file: file.into(),
            detail: format!("{tool} is not installed (poppler-utils; scripts/setup.sh installs it)"),
        },
        FfmpegError::Failed { ref status, .. } if status.starts_with("killed after") => {
            ImportError::Tool { file: file.into(), detail: format!("{tool} did not finish: {status}") }
        }
        FfmpegError::Failed { stderr, .. } => {
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("unreadable").trim().to_string();
            ImportError::Corrupt { file: file.into(), detail: format!("not a readable PDF ({first})") }
        }
        other => ImportError::Tool { file: file.into(), detail: other.to_string() },
    }
}

/// The number of pages, from `pdfinfo`.
pub(crate) fn page_count(pdf: &Path, file: &str) -> Result<usize, ImportError> {
    let mut cmd = Command::new("pdfinfo");
    cmd.arg(pdf);
    let out = run_tool(cmd, "pdfinfo", Duration::from_secs(30), 1 << 20, POPPLER_MEMORY)
        .map_err(|e| failure(e, file, "pdfinfo"))?;
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .find_map(|l| l.strip_prefix("Pages:").map(str::trim))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ImportError::Corrupt { file: file.into(), detail: "not a readable PDF (no page count)".into() })
}

/// Every page of `pdf` drawn into `work` as `slide-NNN.png` (fitting the output size), each
/// narrated by `notes[i]` when given and not empty, else by the page's own text.
pub(crate) fn slides(
    pdf: &Path,
    notes: Option<&[String]>,
    opts: &ImportOptions,
    work: &Path,
) -> Result<Vec<Slide>, ImportError> {
    let file = opts.display_name.as_str();
    let pages = page_count(pdf, file)?;
    if pages == 0 {
        return Err(ImportError::Corrupt { file: file.into(), detail: "the document has no pages".into() });
    }
    if pages > opts.max_pages {
        return Err(ImportError::TooManyPages { file: file.into(), pages, max: opts.max_pages });
    }
    let mut cmd = Command::new("pdftotext");
    cmd.args(["-enc", "UTF-8", "-f", "1", "-l", &pages.to_string()]).arg(pdf).arg("-");
    let text = run_tool(cmd, "pdftotext", opts.deadline, MAX_TEXT_BYTES, POPPLER_MEMORY)
        .map_err(|e| failure(e, file, "pdftotext"))?;
    let text = String::from_utf8_lossy(&text);
    // pdftotext ends every page with a form feed.
    let texts: Vec<&str> = text.split('\u{c}').collect();
    let narrations: Vec<String> = (0..pages)
        .map(|i| {
            let from_notes = notes.and_then(|n| n.get(i)).map(|n| narration(n)).unwrap_or_default();
            if from_notes.is_empty() { texts.get(i).map(|t| narration(t)).unwrap_or_default() } else { from_notes }
        })
        .collect();
    // Nothing to say is known before a page is drawn.
    if narrations.iter().all(String::is_empty) {
        return Err(ImportError::NoText { file: file.into() });
    }
    let drawn = work.join("pages");
    std::fs::create_dir_all(&drawn).map_err(|source| ImportError::Io { file: file.into(), source })?;
    // Fit within the output's longer side: a landscape slide comes out at the output's width.
    let side = opts.width.max(opts.height);
    let mut cmd = Command::new("pdftoppm");
    cmd.args(["-png", "-scale-to", &side.to_string(), "-f", "1", "-l", &pages.to_string()])
        .arg(pdf)
        .arg(drawn.join("p"));
    run_tool(cmd, "pdftoppm", opts.deadline, 1 << 20, POPPLER_MEMORY).map_err(|e| failure(e, file, "pdftoppm"))?;
    // pdftoppm numbers pages with as many digits as the last page needs.
    let mut listed: Vec<_> = std::fs::read_dir(&drawn)
        .map_err(|source| ImportError::Io { file: file.into(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    listed.sort();
    if listed.len() != pages {
        return Err(ImportError::Page {
            file: file.into(),
            page: listed.len() + 1,
            detail: format!("could not be drawn ({} of {pages} pages were)", listed.len()),
        });
    }
    let mut slides = Vec::with_capacity(pages);
    for (i, drawn) in listed.into_iter().enumerate() {
        let picture = work.join(format!("slide-{:03}.png", i + 1));
        std::fs::rename(&drawn, &picture).map_err(|source| ImportError::Io { file: file.into(), source })?;
        slides.push(Slide { picture, narration: narrations[i].clone() });
    }
    let _ = std::fs::remove_dir(work.join("pages"));
    Ok(slides)
}
