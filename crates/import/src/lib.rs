//! Slide decks and documents as storyboard drafts: a PDF's pages become pictures (poppler's
//! `pdftoppm`, at the output size) narrated by their own text; a PPTX or ODP deck is turned
//! into a PDF by LibreOffice (headless, its own profile, a deadline) and each slide is narrated
//! by its speaker notes (read from the deck's XML), or its own text where it has none; a
//! Markdown file's headings become title cards, its paragraphs narrated scenes and its images
//! pictures.
//!
//! Every input is hostile: a file is recognised by its bytes, zip entries are sized before they
//! are read (bombs are refused by name), every tool runs with a deadline, and a deck of more
//! pages than a storyboard may hold is refused before anything is drawn.

mod deck;
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
mod markdown;
mod pdf;
mod text;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

pub use markdown::ImageRef;

/// What kind of document a file is (by its bytes, then its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pdf,
    Pptx,
    Odp,
    Markdown,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pdf => "pdf",
            Kind::Pptx => "pptx",
            Kind::Odp => "odp",
            Kind::Markdown => "markdown",
        }
    }
}

/// How to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The video's size: slides are drawn to fit it.
    pub width: u32,
    pub height: u32,
    /// The name errors use for the file (an upload's own name, not a temporary path).
    pub display_name: String,
    /// Most pages or slides (a scene each).
    pub max_pages: usize,
    /// Longest a conversion (LibreOffice, pdftoppm) may run.
    pub deadline: Duration,
    /// Largest input file.
    pub max_bytes: u64,
    /// The narration voice for every scene (the spec's `voice`), when not the default.
    pub voice: Option<Value>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            display_name: "the file".into(),
            max_pages: reelsmith_spec::limits::MAX_SCENES,
            deadline: Duration::from_secs(180),
            max_bytes: 200 * 1024 * 1024,
            voice: None,
        }
    }
}

/// A storyboard draft and the files it names.
#[derive(Clone, Debug)]
pub struct Draft {
    pub kind: Kind,
    /// The storyboard: slides named by file name (`slide-001.png`, in the work folder);
    /// Markdown images by the reference the document gave (see `images`).
    pub spec: Value,
    /// The slide pictures written into the work folder, in scene order.
    pub pictures: Vec<PathBuf>,
    /// Markdown's images: where each one is named in the spec, as the document wrote it.
    pub images: Vec<ImageRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: not a PDF, PPTX, ODP or Markdown file ({why})")]
    Unsupported { file: String, why: String },
    #[error("{file}: {detail}")]
    Corrupt { file: String, detail: String },
    #[error("{file} is password-protected: export it without a password and import it again")]
    Encrypted { file: String },
    #[error("{file} has {pages} pages; at most {max} can be imported (a scene each)")]
    TooManyPages { file: String, pages: usize, max: usize },
    #[error("{file}: the entry {entry} would expand to {bytes} bytes (more than {limit}); refused as a zip bomb")]
    Bomb { file: String, entry: String, bytes: u64, limit: u64 },
    #[error("{file} has nothing to narrate: no speaker notes and no text on any page")]
    NoText { file: String },
    #[error("{file}, page {page}: {detail}")]
    Page { file: String, page: usize, detail: String },
    #[error("{file}, line {line}: {detail}")]
    Line { file: String, line: usize, detail: String },
    #[error("{file}: {detail}")]
    Tool { file: String, detail: String },
    #[error("{file}: {source}")]
    Io { file: String, source: std::io::Error },
}

impl ImportError {
    /// A stable code for users.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsupported { .. } => "import_unsupported",
            Self::Corrupt { .. } => "import_corrupt",
            Self::Encrypted { .. } => "import_encrypted",
            Self::TooManyPages { .. } => "import_too_many_pages",
            Self::Bomb { .. } => "import_too_large",
            Self::NoText { .. } => "import_no_text",
            Self::Page { .. } => "import_page",
            Self::Line { .. } => "import_missing_file",
            Self::Tool { .. } => "import_failed",
            Self::Io { .. } => "io",
        }
    }

    /// The file's own fault (a client error), rather than this machine's.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, Self::Tool { .. } | Self::Io { .. })
    }

    fn io(file: &str) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io { file: file.into(), source }
    }
}

/// Recognises a document by its first bytes (a zip's entries tell PPTX from ODP), else by its
/// name (Markdown is plain text).
pub fn sniff(path: &Path, name: &str) -> Result<Kind, ImportError> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).map_err(ImportError::io(name))?;
    let head = &head[..n];
    if head.starts_with(b"%PDF-") {
        return Ok(Kind::Pdf);
    }
    if head.starts_with(b"PK\x03\x04") {
        return deck::zip_kind(path, name);
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".md") || lower.ends_with(".markdown") {
        return Ok(Kind::Markdown);
    }
    let why = if lower.ends_with(".pdf") || lower.ends_with(".pptx") || lower.ends_with(".odp") {
        "its contents do not match its name".to_string()
    } else {
        "name Markdown files .md".to_string()
    };
    Err(ImportError::Unsupported { file: name.into(), why })
}

/// Imports a document into a draft; pictures are written into `work` (an empty folder the
/// caller owns).
pub fn import(input: &Path, opts: &ImportOptions, work: &Path) -> Result<Draft, ImportError> {
    let name = opts.display_name.as_str();
    let bytes = std::fs::metadata(input).map_err(ImportError::io(name))?.len();
    if bytes > opts.max_bytes {
        return Err(ImportError::Corrupt {
            file: name.into(),
            detail: format!("{bytes} bytes; at most {} can be imported", opts.max_bytes),
        });
    }
    let kind = sniff(input, name)?;
    let (scenes, pictures, images) = match kind {
        Kind::Pdf => {
            let pages = pdf::slides(input, None, opts, work)?;
            let (scenes, pictures) = slide_scenes(pages, name)?;
            (scenes, pictures, vec![])
        }
        Kind::Pptx | Kind::Odp => {
            let notes = deck::notes(input, kind, name)?;
            let pdf = deck::to_pdf(input, kind, opts, work)?;
            let pages = pdf::slides(&pdf, Some(&notes), opts, work)?;
            let (scenes, pictures) = slide_scenes(pages, name)?;
            (scenes, pictures, vec![])
        }
        Kind::Markdown => {
            let text = std::fs::read_to_string(input)
                .map_err(|e| ImportError::Corrupt { file: name.into(), detail: format!("not UTF-8 text ({e})") })?;
            let (scenes, images) = markdown::scenes(&text, opts, name)?;
            (scenes, vec![], images)
        }
    };
    let mut spec = json!({
        "version": 1,
        "output": {"width": opts.width, "height": opts.height, "fps": 30},
        "scenes": scenes,
    });
    if let Some(v) = &opts.voice {
        spec["voice"] = v.clone();
    }
    Ok(Draft { kind, spec, pictures, images })
}

/// A page as imported: its picture, and what narrates it.
pub(crate) struct Slide {
    pub picture: PathBuf,
    pub narration: String,
}

/// Slides as scenes: each picture shown whole, narrated by its notes or text; a slide with
/// nothing to say stays three seconds. A deck with nothing to say at all is refused.
fn slide_scenes(slides: Vec<Slide>, name: &str) -> Result<(Vec<Value>, Vec<PathBuf>), ImportError> {
    if slides.iter().all(|s| s.narration.is_empty()) {
        return Err(ImportError::NoText { file: name.into() });
    }
    let mut scenes = vec![];
    let mut pictures = vec![];
    for s in slides {
        let file = s.picture.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut scene = json!({"image": file, "fit": "contain", "background": {"color": "#000000"}});
        if s.narration.is_empty() {
            scene["duration"] = json!(3.0);
        } else {
            scene["narration"] = json!({"text": s.narration});
        }
        scenes.push(scene);
        pictures.push(s.picture);
    }
    Ok((scenes, pictures))
}
