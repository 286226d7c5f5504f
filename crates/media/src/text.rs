//! Text shaping, wrapping and rasterisation for burned-in subtitles, title cards and text overlays.
//!
//! Shaping, bidi and line breaking come from cosmic-text (`Wrap::WordOrGlyph`: lines break between
//! words, and a word wider than the line is broken between glyphs). Glyph coverage masks come from
//! swash through cosmic-text; this module composites them itself into a tightly sized
//! premultiplied RGBA overlay: background box, then outline (the coverage mask dilated by a
//! circular, anti-aliased max filter), then the fill (with an optional highlighted byte range).
//!
//! Geometry of an overlay: the text block (widest line × sum of line heights) is surrounded on
//! every side by a margin of `padding + outline_width` px, and the overlay is
//! `ceil(block + 2 * margin)` in each direction. The background box covers the whole overlay.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use cosmic_text::{
    Align as CtAlign, Attrs, Buffer, CacheKey, Family, FontSystem, LayoutGlyph, LineIter, Metrics, Shaping, SwashCache,
    SwashContent, SwashImage, Weight, Wrap,
};

/// Errors from font loading.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("font not found: {0}")]
    FontNotFound(String),
    #[error("cannot load font file {path}: {reason}")]
    FontFile { path: String, reason: String },
}

/// Horizontal alignment of the lines within the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Center,
    Right,
}

/// Premultiplied RGBA pixels, row-major, width*height*4 bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbaOverlay {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbaOverlay {
    /// A 0x0 overlay with no pixels.
    pub fn empty() -> Self {
        Self { width: 0, height: 0, data: Vec::new() }
    }

    /// True when the overlay has no pixels.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// The premultiplied RGBA value at (x, y). Panics when out of bounds.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        assert!(x < self.width && y < self.height, "pixel ({x}, {y}) out of bounds");
        let i = (y as usize * self.width as usize + x as usize) * 4;
        [self.data[i], self.data[i + 1], self.data[i + 2], self.data[i + 3]]
    }
}

/// How a block of text looks.
#[derive(Clone, Debug)]
pub struct TextStyle {
    /// Font family, e.g. "DejaVu Sans"; generic names ("sans-serif", "serif", "monospace",
    /// "cursive", "fantasy") work too. An unknown family falls back to sans-serif.
    pub family: String,
    pub bold: bool,
    pub size_px: f32,
    /// Line height as a multiple of `size_px`, e.g. 1.25. Non-positive values mean 1.2.
    pub line_height: f32,
    /// Straight (non-premultiplied) RGBA.
    pub color: [u8; 4],
    /// Outline width in px and colour (straight RGBA), drawn around glyphs.
    pub outline: Option<(f32, [u8; 4])>,
    /// Box colour (straight RGBA) and padding px: a plain box behind the whole block, covering
    /// the whole overlay.
    pub background: Option<([u8; 4], f32)>,
    pub align: Align,
}

impl Default for TextStyle {
    fn default() -> Self {
        Self {
            family: "sans-serif".to_owned(),
            bold: false,
            size_px: 48.0,
            line_height: 1.25,
            color: [255, 255, 255, 255],
            outline: None,
            background: None,
            align: Align::Center,
        }
    }
}

impl TextStyle {
    /// Line height in px.
    pub fn line_height_px(&self) -> f32 {
        let mult = if self.line_height.is_finite() && self.line_height > 0.0 { self.line_height } else { 1.2 };
        self.size_px * mult
    }

    /// Outline width in px (0 when there is no visible outline).
    pub fn outline_px(&self) -> f32 {
        match self.outline {
            Some((w, c)) if w.is_finite() && w > 0.0 && c[3] > 0 => w,
            _ => 0.0,
        }
    }

    /// Box padding in px (0 when there is no box).
    pub fn padding_px(&self) -> f32 {
        match self.background {
            Some((_, p)) if p.is_finite() && p > 0.0 => p,
            _ => 0.0,
        }
    }

    /// Space around the text block on each side: padding + outline width.
    pub fn margin_px(&self) -> f32 {
        self.padding_px() + self.outline_px()
    }

    fn is_renderable(&self) -> bool {
        self.size_px.is_finite() && self.size_px > 0.0 && self.line_height_px() > 0.0
    }
}

/// A piece of text to lay out and rasterise.
#[derive(Clone, Debug)]
pub struct TextBlock<'a> {
    pub text: &'a str,
    pub style: &'a TextStyle,
    /// Wrap to this width; never exceed it (a word too wide for a line is broken between
    /// glyphs). 0 means no limit.
    pub max_width_px: u32,
    /// Lay out only the lines that fit this height (including outline and box padding); the
    /// rest of the text is left out, so no text makes a picture taller than this. 0 means no
    /// limit.
    pub max_height_px: u32,
    /// Byte range of `text` drawn in another colour (straight RGBA), e.g. karaoke word highlight.
    /// Glyphs whose cluster overlaps the range get the colour.
    pub highlight: Option<(Range<usize>, [u8; 4])>,
}

/// Largest font file read (the biggest CJK families are about 20 MB).
const MAX_FONT_BYTES: u64 = 64 << 20;

/// A font error naming the file, not the folders it is in (they may be a server's).
fn font_error(path: &Path, reason: String) -> TextError {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    TextError::FontFile { path: name, reason }
}

fn read_font(path: &Path) -> Result<Vec<u8>, TextError> {
    let len = std::fs::metadata(path).map_err(|e| font_error(path, e.to_string()))?.len();
    if len > MAX_FONT_BYTES {
        return Err(font_error(path, format!("{len} bytes; font files are limited to {MAX_FONT_BYTES}")));
    }
    std::fs::read(path).map_err(|e| font_error(path, e.to_string()))
}

/// Most glyph images kept rasterised; the cache is dropped and rebuilt past this.
const GLYPH_CACHE_LIMIT: usize = 8192;

const SANS_SERIF_PREFS: &[&str] =
    &["DejaVu Sans", "Noto Sans", "Liberation Sans", "Open Sans", "Arial", "Helvetica", "Roboto", "FreeSans"];
const SERIF_PREFS: &[&str] = &["DejaVu Serif", "Noto Serif", "Liberation Serif", "Times New Roman", "FreeSerif"];
const MONOSPACE_PREFS: &[&str] = &["DejaVu Sans Mono", "Noto Sans Mono", "Liberation Mono", "Courier New", "FreeMono"];

struct Inner {
    fonts: FontSystem,
    swash: SwashCache,
    images: HashMap<CacheKey, Option<SwashImage>>,
}

impl Inner {
    fn image(&mut self, key: CacheKey) -> Option<&SwashImage> {
        if self.images.len() >= GLYPH_CACHE_LIMIT && !self.images.contains_key(&key) {
            self.images.clear();
        }
        let Inner { fonts, swash, images, .. } = self;
        images.entry(key).or_insert_with(|| swash.get_image_uncached(fonts, key)).as_ref()
    }
}

/// Shapes, wraps and rasterises text. Holds the font database and a glyph cache behind a mutex;
/// share one per process through an `Arc`.
pub struct TextRenderer {
    inner: Mutex<Inner>,
}

impl Default for TextRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TextRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("TextRenderer { .. }")
    }
}

/// The installed spelling of `name` (case-insensitive match), if any face has that family.
fn installed_family(fonts: &FontSystem, name: &str) -> Option<String> {
    fonts
        .db()
        .faces()
        .flat_map(|face| face.families.iter())
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(n, _)| n.clone())
}

fn first_installed(fonts: &FontSystem, prefs: &[&str]) -> Option<String> {
    prefs.iter().find_map(|p| installed_family(fonts, p))
}

/// Points the generic families at installed fonts (cosmic-text's defaults, e.g. "Open Sans",
/// are often absent).
fn configure_generic_families(fonts: &mut FontSystem) {
    let sans = first_installed(fonts, SANS_SERIF_PREFS).or_else(|| {
        fonts.db().faces().find(|f| !f.monospaced && !f.families.is_empty()).map(|f| f.families[0].0.clone())
    });
    let serif = first_installed(fonts, SERIF_PREFS).or_else(|| sans.clone());
    let mono = first_installed(fonts, MONOSPACE_PREFS).or_else(|| {
        fonts
            .db()
            .faces()
            .find(|f| f.monospaced && !f.families.is_empty())
            .map(|f| f.families[0].0.clone())
            .or_else(|| sans.clone())
    });
    let db = fonts.db_mut();
    if let Some(sans) = sans {
        db.set_sans_serif_family(sans.clone());
        db.set_cursive_family(sans.clone());
        db.set_fantasy_family(sans);
    }
    if let Some(serif) = serif {
        db.set_serif_family(serif);
    }
    if let Some(mono) = mono {
        db.set_monospace_family(mono);
    }
}

enum GenericOrNamed {
    Generic(Family<'static>),
    Named(String),
}

fn generic_family(name: &str) -> Option<Family<'static>> {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "sans-serif" | "sans serif" | "sansserif" | "sans" => Some(Family::SansSerif),
        "serif" => Some(Family::Serif),
        "monospace" | "mono" => Some(Family::Monospace),
        "cursive" => Some(Family::Cursive),
        "fantasy" => Some(Family::Fantasy),
        _ => None,
    }
}

fn resolve_family(fonts: &FontSystem, name: &str) -> GenericOrNamed {
    if let Some(g) = generic_family(name) {
        return GenericOrNamed::Generic(g);
    }
    match installed_family(fonts, name.trim()) {
        Some(n) => GenericOrNamed::Named(n),
        None => GenericOrNamed::Generic(Family::SansSerif),
    }
}

/// One glyph of a laid-out line, with its cluster's byte range in the laid-out text.
struct PlacedGlyph {
    glyph: LayoutGlyph,
    start: usize,
    end: usize,
}

struct LaidLine {
    /// Baseline, from the top of the block.
    baseline: f32,
    width: f32,
    glyphs: Vec<PlacedGlyph>,
}

struct Layout {
    lines: Vec<LaidLine>,
    /// Widest line, capped at the wrap width.
    width: f32,
    height: f32,
}

/// Shapes and wraps `text` (non-empty) with cosmic-text.
fn layout_text(fonts: &mut FontSystem, text: &str, style: &TextStyle, max_width_px: u32, max_height_px: u32) -> Layout {
    let metrics = Metrics::new(style.size_px, style.line_height_px());
    let mut buffer = Buffer::new_empty(metrics);
    buffer.set_wrap(Wrap::WordOrGlyph);
    let width_opt = (max_width_px > 0).then_some(max_width_px as f32);
    // Room for lines inside the margins; cosmic-text then shapes only what can show.
    let room = (max_height_px > 0).then(|| (max_height_px as f32 - 2.0 * style.margin_px()).max(0.0));
    buffer.set_size(width_opt, room);
    let family = resolve_family(fonts, &style.family);
    let family = match &family {
        GenericOrNamed::Generic(g) => *g,
        GenericOrNamed::Named(n) => Family::Name(n),
    };
    let weight = if style.bold { Weight::BOLD } else { Weight::NORMAL };
    let attrs = Attrs::new().family(family).weight(weight);
    // Left alignment puts every line (LTR or RTL) at x in [0, line_w]; we align ourselves.
    buffer.set_text(text, &attrs, Shaping::Advanced, Some(CtAlign::Left));
    buffer.shape_until_scroll(fonts, false);

    // Buffer lines are split exactly like this (cosmic-text's set_text uses LineIter).
    let line_starts: Vec<usize> = LineIter::new(text).map(|(r, _)| r.start).collect();

    let mut lines = Vec::new();
    let mut width: f32 = 0.0;
    let mut height: f32 = 0.0;
    for run in buffer.layout_runs() {
        if room.is_some_and(|r| run.line_top + run.line_height > r + 1e-3) {
            break;
        }
        let base = line_starts.get(run.line_i).copied().unwrap_or(0);
        let glyphs = run
            .glyphs
            .iter()
            .map(|g| PlacedGlyph { glyph: g.clone(), start: base + g.start, end: base + g.end })
            .collect();
        width = width.max(run.line_w);
        height = height.max(run.line_top + run.line_height);
        lines.push(LaidLine { baseline: run.line_y, width: run.line_w, glyphs });
    }
    if max_width_px > 0 {
        width = width.min(max_width_px as f32);
    }
    Layout { lines, width, height }
}

/// Overlay size for a laid-out block.
fn overlay_size(layout: &Layout, style: &TextStyle) -> (u32, u32) {
    if layout.lines.is_empty() {
        return (0, 0);
    }
    let m2 = 2.0 * style.margin_px();
    let w = (layout.width + m2 - 1e-3).ceil().max(1.0);
    let h = (layout.height + m2 - 1e-3).ceil().max(1.0);
    (w as u32, h as u32)
}

/// The text actually laid out: `text` without leading and trailing whitespace, and the byte
/// offset of its start in `text`. None when nothing is drawable.
fn trimmed(text: &str) -> Option<(&str, usize)> {
    let t = text.trim_end();
    let lead = t.len() - t.trim_start().len();
    let t = &t[lead..];
    (!t.is_empty()).then_some((t, lead))
}

#[inline]
fn mul255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    (t + (t >> 8)) >> 8
}

#[inline]
fn premultiply(c: [u8; 4]) -> [u32; 4] {
    let a = u32::from(c[3]);
    [mul255(u32::from(c[0]), a), mul255(u32::from(c[1]), a), mul255(u32::from(c[2]), a), a]
}

/// `dst = src over dst`, both premultiplied.
#[inline]
fn over(dst: &mut [u8], src: [u32; 4]) {
    let inv = 255 - src[3];
    for i in 0..4 {
        dst[i] = (src[i] + mul255(u32::from(dst[i]), inv)).min(255) as u8;
    }
}

/// Circular anti-aliased max filter: `out[p] = max_o src[p + o] * k(|o|)` with
/// `k(d) = clamp(r + 1 - d, 0, 1)`: a source pixel fully covered spans ±0.5 px around its
/// centre, so pixels whose centre is within `r - 0.5` of that pixel's edge get full coverage,
/// and an anti-aliased edge pixel's coverage is carried out to distance `r`.
fn dilate(src: &[u8], w: usize, h: usize, r: f32) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    if w == 0 || h == 0 || r.is_nan() || r < 0.0 {
        return out;
    }
    let weight = |dx: isize, dy: isize| -> u16 {
        let d = ((dx * dx + dy * dy) as f32).sqrt();
        ((r + 1.0 - d).clamp(0.0, 1.0) * 256.0).round() as u16
    };
    // The disc, row by row: for each dy, offsets |dx| <= full have weight 1 (a horizontal
    // max), and a few rim offsets have a partial weight.
    let rad = (r + 1.0).ceil() as isize;
    let mut full_rows: Vec<(isize, isize)> = Vec::new(); // (dy, half-width)
    let mut rim: Vec<(isize, isize, u16)> = Vec::new(); // (dy, dx >= 0, weight); also -dx
    for dy in -rad..=rad {
        let mut full = -1;
        while full < rad && weight(full + 1, dy) >= 256 {
            full += 1;
        }
        if full >= 0 {
            full_rows.push((dy, full));
        }
        for dx in (full + 1)..=rad {
            let k = weight(dx, dy);
            if k > 0 {
                rim.push((dy, dx, k));
            }
        }
    }
    let row_has_ink: Vec<bool> = src.chunks_exact(w).map(|row| row.iter().any(|&v| v != 0)).collect();

    // Dest row y - dy takes source row y.
    let dest_row = |y: usize, dy: isize| -> Option<usize> {
        let t = y as isize - dy;
        (t >= 0 && t < h as isize).then_some(t as usize)
    };

    // Horizontal max over |t| <= a, grown one step at a time.
    full_rows.sort_by_key(|&(_, a)| a);
    let mut hmax = src.to_vec();
    let mut a_done = 0isize;
    for &(dy, a) in &full_rows {
        while a_done < a {
            a_done += 1;
            let step = a_done as usize;
            if step < w {
                for y in (0..h).filter(|&y| row_has_ink[y]) {
                    let srow = &src[y * w..(y + 1) * w];
                    let hrow = &mut hmax[y * w..(y + 1) * w];
                    for (hv, &sv) in hrow[step..].iter_mut().zip(&srow[..w - step]) {
                        *hv = (*hv).max(sv);
                    }
                    for (hv, &sv) in hrow[..w - step].iter_mut().zip(&srow[step..]) {
                        *hv = (*hv).max(sv);
                    }
                }
            }
        }
        for y in (0..h).filter(|&y| row_has_ink[y]) {
            let Some(t) = dest_row(y, dy) else { continue };
            let (hrow, orow) = (&hmax[y * w..(y + 1) * w], &mut out[t * w..(t + 1) * w]);
            for (o, &v) in orow.iter_mut().zip(hrow) {
                *o = (*o).max(v);
            }
        }
    }

    // Anti-aliased rim: partial weights at (±dx, dy).
    for &(dy, dx, k) in &rim {
        let step = dx as usize;
        if step >= w {
            continue;
        }
        for y in (0..h).filter(|&y| row_has_ink[y]) {
            let Some(t) = dest_row(y, dy) else { continue };
            let srow = &src[y * w..(y + 1) * w];
            let orow = &mut out[t * w..(t + 1) * w];
            for (o, &sv) in orow[step..].iter_mut().zip(&srow[..w - step]) {
                *o = (*o).max((u16::from(sv).wrapping_mul(k) >> 8) as u8);
            }
            if step > 0 {
                for (o, &sv) in orow[..w - step].iter_mut().zip(&srow[step..]) {
                    *o = (*o).max((u16::from(sv).wrapping_mul(k) >> 8) as u8);
                }
            }
        }
    }
    out
}

/// Reference implementation of [`dilate`] (direct kernel), for tests.
#[cfg(test)]
fn dilate_naive(src: &[u8], w: usize, h: usize, r: f32) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    let rad = (r + 1.0).ceil() as isize;
    for y in 0..h as isize {
        for x in 0..w as isize {
            let mut m = 0u8;
            for dy in -rad..=rad {
                for dx in -rad..=rad {
                    let (sx, sy) = (x + dx, y + dy);
                    if sx < 0 || sy < 0 || sx >= w as isize || sy >= h as isize {
                        continue;
                    }
                    let d = ((dx * dx + dy * dy) as f32).sqrt();
                    let k = ((r + 1.0 - d).clamp(0.0, 1.0) * 256.0).round() as u16;
                    let s = src[sy as usize * w + sx as usize];
                    let v = if k >= 256 { s } else { ((u16::from(s) * k) >> 8) as u8 };
                    m = m.max(v);
                }
            }
            out[y as usize * w + x as usize] = m;
        }
    }
    out
}

/// Draws one glyph image at pixel (px, py) (top-left of the image) into the fill layer
/// (premultiplied RGBA) and the coverage mask.
#[allow(clippy::too_many_arguments)]
fn blit_glyph(
    image: &SwashImage,
    px: i32,
    py: i32,
    color: [u8; 4],
    fill: &mut [u8],
    cov: Option<&mut Vec<u8>>,
    w: usize,
    h: usize,
) {
    let gw = image.placement.width as i32;
    let gh = image.placement.height as i32;
    if gw == 0 || gh == 0 {
        return;
    }
    let x0 = px.max(0);
    let y0 = py.max(0);
    let x1 = (px + gw).min(w as i32);
    let y1 = (py + gh).min(h as i32);
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let pm = premultiply(color);
    let mut cov = cov;
    let bpp = match image.content {
        SwashContent::Mask => 1,
        SwashContent::Color | SwashContent::SubpixelMask => 4,
    };
    if image.data.len() < (gw * gh) as usize * bpp {
        return;
    }
    for y in y0..y1 {
        let gy = (y - py) as usize;
        let row = y as usize * w;
        for x in x0..x1 {
            let gx = (x - px) as usize;
            let gi = gy * gw as usize + gx;
            let (src, a) = match image.content {
                SwashContent::Mask => {
                    let c = u32::from(image.data[gi]);
                    if c == 0 {
                        continue;
                    }
                    ([mul255(pm[0], c), mul255(pm[1], c), mul255(pm[2], c), mul255(pm[3], c)], c)
                }
                SwashContent::SubpixelMask => {
                    let d = &image.data[gi * 4..gi * 4 + 4];
                    let c = u32::from(d[0].max(d[1]).max(d[2]));
                    if c == 0 {
                        continue;
                    }
                    ([mul255(pm[0], c), mul255(pm[1], c), mul255(pm[2], c), mul255(pm[3], c)], c)
                }
                SwashContent::Color => {
                    // Colour glyphs (emoji) keep their colours, faded by the fill alpha.
                    let d = &image.data[gi * 4..gi * 4 + 4];
                    let a = mul255(u32::from(d[3]), u32::from(color[3]));
                    if a == 0 {
                        continue;
                    }
                    (
                        [mul255(u32::from(d[0]), a), mul255(u32::from(d[1]), a), mul255(u32::from(d[2]), a), a],
                        u32::from(d[3]),
                    )
                }
            };
            let p = row + x as usize;
            over(&mut fill[p * 4..p * 4 + 4], src);
            if let Some(cov) = cov.as_deref_mut() {
                let c = u32::from(cov[p]);
                cov[p] = (c + mul255(a, 255 - c)).min(255) as u8;
            }
        }
    }
}

impl TextRenderer {
    /// Loads the system fonts (takes a while; create one and share it).
    pub fn new() -> Self {
        let mut fonts = FontSystem::new();
        configure_generic_families(&mut fonts);
        Self { inner: Mutex::new(Inner { fonts, swash: SwashCache::new(), images: HashMap::new() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The family names in a font file (TTF/OTF/TTC), read without adding it anywhere.
    pub fn font_file_families(path: &Path) -> Result<Vec<String>, TextError> {
        let mut db = cosmic_text::fontdb::Database::new();
        db.load_font_data(read_font(path)?);
        let mut families: Vec<String> = Vec::new();
        for face in db.faces() {
            for (name, _) in &face.families {
                if !families.contains(name) {
                    families.push(name.clone());
                }
            }
        }
        if db.is_empty() {
            return Err(font_error(path, "no usable font faces in file".to_owned()));
        }
        Ok(families)
    }

    /// A renderer for one render that also knows the faces of `files` (a spec's own fonts).
    /// This renderer never learns them: one spec's fonts are never seen by another spec (not by
    /// family name, not as a fallback), and their memory goes with the render.
    pub fn with_font_files(&self, files: &[std::path::PathBuf]) -> Result<TextRenderer, TextError> {
        let (locale, db) = {
            let inner = self.lock();
            (inner.fonts.locale().to_owned(), inner.fonts.db().clone())
        };
        let mut fonts = FontSystem::new_with_locale_and_db(locale, db);
        for path in files {
            let before = fonts.db().len();
            fonts.db_mut().load_font_data(read_font(path)?);
            if fonts.db().len() == before {
                return Err(font_error(path, "no usable font faces in file".to_owned()));
            }
        }
        configure_generic_families(&mut fonts);
        Ok(Self { inner: Mutex::new(Inner { fonts, swash: SwashCache::new(), images: HashMap::new() }) })
    }

    /// Whether `family` (case-insensitive, or a generic name such as "sans-serif") resolves to
    /// an installed font. Unknown families still render, with the sans-serif fallback.
    pub fn has_family(&self, family: &str) -> bool {
        let inner = self.lock();
        let db = inner.fonts.db();
        match generic_family(family) {
            Some(g) => {
                let name = db.family_name(&g).to_owned();
                installed_family(&inner.fonts, &name).is_some()
            }
            None => installed_family(&inner.fonts, family.trim()).is_some(),
        }
    }

    /// Lays the words out as the renderer would wrap them: returns, per line, the indices of
    /// `words` on that line. Words are joined with single spaces. A word wider than max_width
    /// gets its own line (render_block will break it over several lines, so for such words
    /// the number of rendered lines is larger than the number of entries returned).
    pub fn wrap_words(&self, words: &[&str], style: &TextStyle, max_width_px: u32) -> Vec<Vec<usize>> {
        if words.is_empty() {
            return Vec::new();
        }
        if !style.is_renderable() {
            return vec![(0..words.len()).collect()];
        }
        let mut text = String::new();
        let mut starts = Vec::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            starts.push(text.len());
            text.push_str(w);
        }
        let layout = {
            let mut inner = self.lock();
            layout_text(&mut inner.fonts, &text, style, max_width_px, 0)
        };
        // The first line on which each word has a glyph.
        let mut first_line: Vec<Option<usize>> = vec![None; words.len()];
        for (li, line) in layout.lines.iter().enumerate() {
            for g in &line.glyphs {
                let wi = starts.partition_point(|&s| s <= g.start).saturating_sub(1);
                let in_word = g.start < starts[wi] + words[wi].len();
                if in_word && first_line[wi].is_none_or(|l| li < l) {
                    first_line[wi] = Some(li);
                }
            }
        }
        // Words without glyphs (empty or blank) go with the word before them.
        let mut prev = 0usize;
        let assigned: Vec<usize> = first_line
            .iter()
            .map(|l| {
                let l = l.unwrap_or(prev).max(prev);
                prev = l;
                l
            })
            .collect();
        let mut lines: Vec<Vec<usize>> = Vec::new();
        let mut last: Option<usize> = None;
        for (wi, &l) in assigned.iter().enumerate() {
            if last != Some(l) {
                lines.push(Vec::new());
                last = Some(l);
            }
            lines.last_mut().expect("pushed above").push(wi);
        }
        lines
    }

    /// Number of lines the block renders as (0 for empty text).
    pub fn line_count(&self, block: &TextBlock) -> usize {
        let Some((text, _)) = trimmed(block.text) else {
            return 0;
        };
        if !block.style.is_renderable() {
            return 0;
        }
        let mut inner = self.lock();
        layout_text(&mut inner.fonts, text, block.style, block.max_width_px, block.max_height_px).lines.len()
    }

    /// Measures the laid-out block (width, height) in px, including outline and box padding:
    /// exactly the size `render_block` produces.
    pub fn measure(&self, block: &TextBlock) -> (u32, u32) {
        let Some((text, _)) = trimmed(block.text) else {
            return (0, 0);
        };
        if !block.style.is_renderable() {
            return (0, 0);
        }
        let mut inner = self.lock();
        let layout = layout_text(&mut inner.fonts, text, block.style, block.max_width_px, block.max_height_px);
        overlay_size(&layout, block.style)
    }

    /// Rasterises the block into a tightly sized overlay (including outline and background box
    /// padding). Width never exceeds max_width_px + 2*(padding+outline) (rounded up).
    /// Empty/whitespace text gives a 0x0 overlay.
    pub fn render_block(&self, block: &TextBlock) -> Result<RgbaOverlay, TextError> {
        let style = block.style;
        let Some((text, lead)) = trimmed(block.text) else {
            return Ok(RgbaOverlay::empty());
        };
        if !style.is_renderable() {
            return Ok(RgbaOverlay::empty());
        }
        let highlight = block.highlight.as_ref().and_then(|(r, c)| {
            let s = r.start.saturating_sub(lead).min(text.len());
            let e = r.end.saturating_sub(lead).min(text.len());
            (s < e).then_some((s..e, *c))
        });
        let outline_w = style.outline_px();
        let margin = style.margin_px();

        let mut inner = self.lock();
        let layout = layout_text(&mut inner.fonts, text, style, block.max_width_px, block.max_height_px);
        let (w, h) = overlay_size(&layout, style);
        if w == 0 || h == 0 {
            return Ok(RgbaOverlay::empty());
        }
        let (wu, hu) = (w as usize, h as usize);
        let mut fill = vec![0u8; wu * hu * 4];
        let mut cov = (outline_w > 0.0).then(|| vec![0u8; wu * hu]);
        for line in &layout.lines {
            let free = (layout.width - line.width).max(0.0);
            let x_off = match style.align {
                Align::Left => 0.0,
                Align::Center => free / 2.0,
                Align::Right => free,
            };
            let origin = (margin + x_off, margin + line.baseline);
            for g in &line.glyphs {
                let color = match &highlight {
                    Some((r, c)) if g.start < r.end && g.end > r.start => *c,
                    _ => style.color,
                };
                let phys = g.glyph.physical(origin, 1.0);
                let Some(image) = inner.image(phys.cache_key) else {
                    continue;
                };
                let px = phys.x + image.placement.left;
                let py = phys.y - image.placement.top;
                blit_glyph(image, px, py, color, &mut fill, cov.as_mut(), wu, hu);
            }
        }
        drop(inner);

        let outline = match (cov, style.outline) {
            (Some(cov), Some((_, c))) => Some((dilate(&cov, wu, hu, outline_w), premultiply(c))),
            _ => None,
        };
        let box_pm = match style.background {
            Some((c, _)) if c[3] > 0 => Some(premultiply(c)),
            _ => None,
        };

        // Box, then outline at each mask value, precomputed per mask value; the fill goes over.
        let mut base = [[0u8; 4]; 256];
        for (a, b) in base.iter_mut().enumerate() {
            if let Some(bx) = box_pm {
                *b = [bx[0] as u8, bx[1] as u8, bx[2] as u8, bx[3] as u8];
            }
            if let Some((_, oc)) = &outline {
                let a = a as u32;
                over(b, [mul255(oc[0], a), mul255(oc[1], a), mul255(oc[2], a), mul255(oc[3], a)]);
            }
        }
        let compose = |px: &mut [u8], under: [u8; 4]| match px[3] {
            255 => {}
            0 => px.copy_from_slice(&under),
            _ => {
                let mut d = under;
                over(&mut d, [u32::from(px[0]), u32::from(px[1]), u32::from(px[2]), u32::from(px[3])]);
                px.copy_from_slice(&d);
            }
        };
        let mut data = fill;
        match &outline {
            Some((mask, _)) => {
                for (px, &m) in data.chunks_exact_mut(4).zip(mask) {
                    compose(px, base[usize::from(m)]);
                }
            }
            None if box_pm.is_some() => {
                for px in data.chunks_exact_mut(4) {
                    compose(px, base[0]);
                }
            }
            None => {}
        }
        Ok(RgbaOverlay { width: w, height: h, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, OnceLock};

    fn renderer() -> &'static TextRenderer {
        static R: OnceLock<TextRenderer> = OnceLock::new();
        R.get_or_init(TextRenderer::new)
    }

    fn style(size: f32) -> TextStyle {
        TextStyle {
            family: "sans-serif".into(),
            bold: false,
            size_px: size,
            line_height: 1.25,
            color: [255, 255, 255, 255],
            outline: None,
            background: None,
            align: Align::Left,
        }
    }

    fn block<'a>(text: &'a str, style: &'a TextStyle, max: u32) -> TextBlock<'a> {
        TextBlock { text, style, max_width_px: max, max_height_px: 0, highlight: None }
    }

    fn pixels(o: &RgbaOverlay) -> impl Iterator<Item = (u32, u32, [u8; 4])> + '_ {
        (0..o.height).flat_map(move |y| (0..o.width).map(move |x| (x, y, o.pixel(x, y))))
    }

    const SENTENCE: &str = "The quick brown fox jumps over the lazy dog while the five boxing \
                            wizards jump quickly and a sphinx of black quartz judges my vow";

    #[test]
    fn long_text_lays_out_only_the_lines_that_fit() {
        // 5,000 characters at 0.3 of a 4096 px frame would be thousands of lines (tens of GB).
        let text = "W".repeat(5_000);
        let mut s = style(1229.0);
        s.outline = Some((70.0, [0, 0, 0, 255]));
        s.background = Some(([0, 0, 0, 128], 60.0));
        let b = TextBlock { text: &text, style: &s, max_width_px: 3686, max_height_px: 4096, highlight: None };
        let o = renderer().render_block(&b).unwrap();
        assert!(o.height <= 4096 && o.width <= 3686 + 2 * 130 + 1, "{}x{}", o.width, o.height);
        assert!(o.height > 1229, "the lines that fit are drawn: {}", o.height);
        assert_eq!(renderer().measure(&b), (o.width, o.height));
        let lines = renderer().line_count(&b);
        assert!((1..=3).contains(&lines), "{lines} lines");
        // Nothing fits: nothing is drawn.
        let tiny = TextBlock { max_height_px: 100, ..b };
        assert!(renderer().render_block(&tiny).unwrap().is_empty());
        // No limit keeps the old behaviour for short text.
        let short = TextBlock { text: "Hi", style: &s, max_width_px: 0, max_height_px: 0, highlight: None };
        assert!(!renderer().render_block(&short).unwrap().is_empty());
    }

    #[test]
    fn a_specs_fonts_stay_in_its_own_renderer() {
        // Only the renderer made with a spec's font file has its faces; the shared renderer
        // (every other render) never does, and they go when the render's renderer goes.
        let mono = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf");
        if !mono.exists() {
            return;
        }
        let shared = TextRenderer::new();
        let faces = shared.lock().fonts.db().len();
        let own = shared.with_font_files(&[mono.to_path_buf()]).unwrap();
        assert!(own.lock().fonts.db().len() > faces);
        assert_eq!(shared.lock().fonts.db().len(), faces, "the shared renderer learnt a spec's font");
        let mut s = style(32.0);
        s.family = "DejaVu Sans Mono".into();
        // It draws with them: the mono font makes "iiii" as wide as "MMMM".
        let width = |r: &TextRenderer, t: &str| r.render_block(&block(t, &s, 0)).unwrap().width as i32;
        assert!((width(&own, "iiii") - width(&own, "MMMM")).abs() <= 2);
        drop(own);
        assert_eq!(shared.lock().fonts.db().len(), faces);
    }

    #[test]
    fn renderer_is_send_sync_and_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TextRenderer>();
        let r = Arc::new(TextRenderer::new());
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || {
                    let s = style(24.0 + i as f32);
                    r.render_block(&block("Thread", &s, 0)).unwrap()
                })
            })
            .collect();
        for h in handles {
            let o = h.join().unwrap();
            assert!(o.width > 0 && o.height > 0);
        }
    }

    #[test]
    fn hello_has_fill_coloured_glyphs() {
        let mut s = style(48.0);
        s.color = [255, 200, 0, 255];
        let o = renderer().render_block(&block("Hello", &s, 0)).unwrap();
        assert!(o.width > 60 && o.height >= 48, "size {}x{}", o.width, o.height);
        assert_eq!(o.data.len(), (o.width * o.height * 4) as usize);
        let inked = pixels(&o).filter(|p| p.2[3] > 0).count();
        let opaque: Vec<_> = pixels(&o).filter(|p| p.2[3] == 255).collect();
        assert!(inked > 200, "only {inked} inked pixels");
        assert!(opaque.len() > 100, "only {} opaque pixels", opaque.len());
        for (x, y, p) in &opaque {
            assert_eq!(*p, [255, 200, 0, 255], "pixel at ({x},{y})");
        }
        // Premultiplied: no channel above alpha.
        for (_, _, p) in pixels(&o) {
            assert!(p[0] <= p[3] && p[1] <= p[3] && p[2] <= p[3]);
        }
        assert_eq!(renderer().measure(&block("Hello", &s, 0)), (o.width, o.height));
    }

    #[test]
    fn outline_surrounds_glyphs() {
        let plain = style(48.0);
        let mut s = style(48.0);
        s.outline = Some((3.0, [0, 0, 255, 255]));
        let p = renderer().render_block(&block("Hello", &plain, 0)).unwrap();
        let o = renderer().render_block(&block("Hello", &s, 0)).unwrap();
        assert_eq!(o.width, p.width + 6);
        assert_eq!(o.height, p.height + 6);
        let blue: Vec<_> = pixels(&o).filter(|q| q.2 == [0, 0, 255, 255]).collect();
        let white: Vec<_> = pixels(&o).filter(|q| q.2 == [255, 255, 255, 255]).collect();
        assert!(blue.len() > 200, "only {} outline pixels", blue.len());
        assert!(white.len() > 100, "only {} fill pixels", white.len());
        let inked_o = pixels(&o).filter(|q| q.2[3] > 0).count();
        let inked_p = pixels(&p).filter(|q| q.2[3] > 0).count();
        assert!(inked_o > inked_p * 3 / 2, "{inked_o} vs {inked_p}");
        // Every opaque outline pixel lies within the outline radius (+AA) of fill ink (the
        // outline is pure blue, so any red means fill).
        for (x, y, _) in blue.iter().step_by(5) {
            let near = pixels(&o).any(|(fx, fy, q)| {
                let dx = fx as f32 - *x as f32;
                let dy = fy as f32 - *y as f32;
                q[0] > 0 && (dx * dx + dy * dy).sqrt() <= 4.5
            });
            assert!(near, "outline pixel ({x},{y}) far from any glyph");
        }
        // Far from the text (the overlay corner) stays transparent.
        assert_eq!(o.pixel(0, 0)[3], 0);
    }

    #[test]
    fn background_box_fills_corners() {
        let mut s = style(40.0);
        s.background = Some(([20, 40, 200, 128], 10.0));
        s.outline = Some((2.0, [0, 0, 0, 255]));
        let o = renderer().render_block(&block("Boxed text", &s, 0)).unwrap();
        let expected = [10, 20, 100, 128];
        for (x, y) in [(0, 0), (o.width - 1, 0), (0, o.height - 1), (o.width - 1, o.height - 1)] {
            assert_eq!(o.pixel(x, y), expected, "corner ({x},{y})");
        }
        // Text over the box is opaque white somewhere.
        assert!(pixels(&o).any(|q| q.2 == [255, 255, 255, 255]));
        let plain = style(40.0);
        let (pw, ph) = renderer().measure(&block("Boxed text", &plain, 0));
        assert_eq!((o.width, o.height), (pw + 24, ph + 24));
    }

    #[test]
    fn long_sentence_wraps_within_width() {
        let s = style(32.0);
        let b = block(SENTENCE, &s, 300);
        let n = renderer().line_count(&b);
        assert!(n >= 3, "only {n} lines");
        let o = renderer().render_block(&b).unwrap();
        assert!(o.width <= 300, "width {}", o.width);
        assert_eq!(o.height, (n as f32 * 40.0).ceil() as u32);
        // With outline and box the limit grows by the margin only.
        let mut s2 = style(32.0);
        s2.outline = Some((2.5, [0, 0, 0, 255]));
        s2.background = Some(([0, 0, 0, 128], 7.5));
        let o2 = renderer().render_block(&block(SENTENCE, &s2, 300)).unwrap();
        assert!(o2.width <= 300 + 20, "width {}", o2.width);
        // Every line's ink starts at the left edge for Align::Left: some ink in the first columns.
        assert!(pixels(&o).any(|(x, _, q)| x < 4 && q[3] > 0));
    }

    #[test]
    fn very_long_word_is_broken() {
        let s = style(40.0);
        let word = "Pneumonoultramicroscopicsilicovolcanoconiosis";
        let b = block(word, &s, 200);
        let n = renderer().line_count(&b);
        assert!(n >= 3, "only {n} lines");
        let o = renderer().render_block(&b).unwrap();
        assert!(o.width <= 200 && o.width > 100, "width {}", o.width);
        assert_eq!(o.height, (n as f32 * 50.0).ceil() as u32);
        // Ink on the last line too (nothing dropped).
        let last_line_top = o.height - 50;
        assert!(pixels(&o).any(|(_, y, q)| y >= last_line_top && q[3] > 0));
        // wrap_words gives the long word its own line.
        let lines = renderer().wrap_words(&["a", word, "b"], &s, 200);
        assert_eq!(lines, vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn highlight_colours_the_range() {
        let s = style(48.0);
        let text = "Hello World";
        let b = TextBlock {
            text,
            style: &s,
            max_width_px: 0,
            max_height_px: 0,
            highlight: Some((6..11, [255, 0, 0, 255])),
        };
        let o = renderer().render_block(&b).unwrap();
        let white: Vec<u32> = pixels(&o).filter(|q| q.2 == [255, 255, 255, 255]).map(|q| q.0).collect();
        let red: Vec<u32> = pixels(&o).filter(|q| q.2 == [255, 0, 0, 255]).map(|q| q.0).collect();
        assert!(white.len() > 100 && red.len() > 100, "{} white, {} red", white.len(), red.len());
        let white_max = *white.iter().max().unwrap();
        let red_min = *red.iter().min().unwrap();
        assert!(white_max < red_min, "white up to x={white_max}, red from x={red_min}");
        // The right part of the overlay holds red ink, the left part white.
        assert!(red_min > o.width / 3);
        // Same layout with and without highlight.
        let plain = renderer().render_block(&block(text, &s, 0)).unwrap();
        assert_eq!((plain.width, plain.height), (o.width, o.height));
    }

    #[test]
    fn wrap_words_agrees_with_render() {
        let s = style(32.0);
        let words: Vec<&str> = SENTENCE.split_whitespace().collect();
        for max in [250u32, 300, 420, 700] {
            let lines = renderer().wrap_words(&words, &s, max);
            let flat: Vec<usize> = lines.iter().flatten().copied().collect();
            assert_eq!(flat, (0..words.len()).collect::<Vec<_>>());
            let joined = words.join(" ");
            let b = block(&joined, &s, max);
            assert_eq!(renderer().line_count(&b), lines.len(), "max {max}");
            let (_, h) = renderer().measure(&b);
            assert_eq!(h, (lines.len() as f32 * 40.0).ceil() as u32);
            for (i, line) in lines.iter().enumerate() {
                let text: Vec<&str> = line.iter().map(|&w| words[w]).collect();
                let text = text.join(" ");
                assert_eq!(renderer().line_count(&block(&text, &s, max)), 1, "line {text:?}");
                // Greedy: the next word would not have fitted.
                if let Some(next) = lines.get(i + 1) {
                    let more = format!("{text} {}", words[next[0]]);
                    assert_eq!(renderer().line_count(&block(&more, &s, max)), 2, "{more:?}");
                }
            }
        }
        assert!(renderer().wrap_words(&[], &s, 100).is_empty());
    }

    #[test]
    fn alignment_positions_lines() {
        let text = "Hi\nA much longer second line";
        let first_line_ink = |align: Align| {
            let mut s = style(32.0);
            s.align = align;
            let o = renderer().render_block(&block(text, &s, 0)).unwrap();
            let xs: Vec<u32> = pixels(&o).filter(|q| q.1 < 40 && q.2[3] > 0).map(|q| q.0).collect();
            (*xs.iter().min().unwrap(), *xs.iter().max().unwrap(), o.width)
        };
        let (l0, _, _) = first_line_ink(Align::Left);
        assert!(l0 < 6);
        let (c0, c1, w) = first_line_ink(Align::Center);
        let mid = (c0 + c1) as f32 / 2.0;
        assert!((mid - w as f32 / 2.0).abs() < 6.0, "centre {mid} of {w}");
        let (_, r1, w) = first_line_ink(Align::Right);
        assert!(r1 + 8 >= w, "right edge {r1} of {w}");
    }

    #[test]
    fn empty_text_gives_empty_overlay() {
        let mut s = style(32.0);
        s.background = Some(([0, 0, 0, 255], 10.0));
        for t in ["", "   ", " \n\t "] {
            let o = renderer().render_block(&block(t, &s, 500)).unwrap();
            assert_eq!((o.width, o.height, o.data.len()), (0, 0, 0));
            assert_eq!(renderer().measure(&block(t, &s, 500)), (0, 0));
        }
    }

    #[test]
    fn fonts_and_families() {
        let r = renderer();
        let err = TextRenderer::font_file_families(Path::new("/nonexistent/font.ttf")).unwrap_err();
        assert!(matches!(err, TextError::FontFile { .. }), "{err}");
        assert!(!err.to_string().contains("/nonexistent"), "no folders in {err}");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.ttf");
        std::fs::write(&junk, b"definitely not a font").unwrap();
        assert!(matches!(TextRenderer::font_file_families(&junk), Err(TextError::FontFile { .. })));
        assert!(r.with_font_files(std::slice::from_ref(&junk)).is_err());

        assert!(r.has_family("sans-serif"));
        assert!(!r.has_family("No Such Family 12345"));
        let bold = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf");
        if bold.exists() {
            assert!(r.has_family("DejaVu Sans"));
            assert!(r.has_family("dejavu sans"));
            let fams = TextRenderer::font_file_families(bold).unwrap();
            assert!(fams.iter().any(|f| f == "DejaVu Sans"), "{fams:?}");
        }
        // Unknown family falls back and still renders.
        let mut s = style(32.0);
        s.family = "No Such Family 12345".into();
        let o = r.render_block(&block("Fallback", &s, 0)).unwrap();
        assert!(pixels(&o).filter(|q| q.2[3] == 255).count() > 50);
        // Bold renders heavier than regular.
        let mut b = style(32.0);
        b.bold = true;
        let reg = r.render_block(&block("Weight", &style(32.0), 0)).unwrap();
        let bo = r.render_block(&block("Weight", &b, 0)).unwrap();
        let ink = |o: &RgbaOverlay| o.data.chunks_exact(4).map(|p| u64::from(p[3])).sum::<u64>();
        assert!(ink(&bo) > ink(&reg) * 11 / 10);
    }

    #[test]
    fn dilate_is_circular() {
        let (w, h) = (21, 21);
        let mut src = vec![0u8; w * h];
        src[10 * w + 10] = 255;
        let out = dilate(&src, w, h, 4.0);
        assert_eq!(out[10 * w + 10], 255);
        assert_eq!(out[10 * w + 14], 255);
        assert_eq!(out[10 * w + 15], 0);
        assert_eq!(out[13 * w + 12], 255); // distance 3.6
        // Distance 4.24: partially covered (anti-aliased rim).
        let rim = out[13 * w + 13];
        assert!(rim > 100 && rim < 255, "rim {rim}");
        // Diagonal at distance 5.66 is outside the disc.
        assert_eq!(out[14 * w + 14], 0);
        // Symmetric.
        assert_eq!(out[7 * w + 7], rim);
        assert_eq!(out[10 * w + 6], 255);
        // Coverage scales the result.
        src[10 * w + 10] = 100;
        let out = dilate(&src, w, h, 2.0);
        assert_eq!(out[10 * w + 12], 100);
    }

    #[test]
    fn dilate_matches_naive_kernel() {
        let (w, h) = (37, 23);
        let mut seed = 12345u32;
        let mut src = vec![0u8; w * h];
        for (i, v) in src.iter_mut().enumerate() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            // Sparse blobs with anti-aliased values, some empty rows.
            if !(i / w).is_multiple_of(5) && (seed >> 16).is_multiple_of(7) {
                *v = (seed >> 8) as u8;
            }
        }
        for r in [0.0f32, 0.7, 1.0, 2.5, 3.0, 4.0, 6.3] {
            assert_eq!(dilate(&src, w, h, r), dilate_naive(&src, w, h, r), "r = {r}");
        }
    }

    /// CPU time of this thread (wall-clock timings are noisy on a shared machine).
    fn thread_cpu() -> std::time::Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    #[ignore]
    fn perf_dilate() {
        let (w, h) = (1670usize, 168usize);
        let mut src = vec![0u8; w * h];
        for y in 20..140 {
            for x in 10..1600 {
                if (x / 7 + y / 9) % 3 == 0 {
                    src[y * w + x] = 255;
                }
            }
        }
        let n = 20;
        for r in [2.0f32, 4.0, 8.0] {
            let t = thread_cpu();
            for _ in 0..n {
                std::hint::black_box(dilate(std::hint::black_box(&src), w, h, r));
            }
            eprintln!("dilate r={r} {w}x{h}: {:?} cpu", (thread_cpu() - t) / n);
        }
    }

    /// `cargo test -p reelsmith-media --release text::tests::perf -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn perf_1080p_subtitle() {
        let r = renderer();
        let text = "This is a fairly long subtitle line that wraps onto two lines at 1080p";
        for (outline, bg) in [
            (None, None),
            (Some((4.0, [0, 0, 0, 255])), None),
            (Some((4.0, [0, 0, 0, 255])), Some(([0, 0, 0, 140], 12.0))),
        ] {
            let mut s = style(64.0);
            s.outline = outline;
            s.background = bg;
            s.align = Align::Center;
            let b = TextBlock {
                text,
                style: &s,
                max_width_px: 1700,
                max_height_px: 0,
                highlight: Some((10..16, [255, 255, 0, 255])),
            };
            let _ = r.render_block(&b).unwrap();
            let n = 50;
            let t = thread_cpu();
            for _ in 0..n {
                let _ = r.measure(&b);
            }
            let layout = (thread_cpu() - t) / n;
            let t = thread_cpu();
            let mut o = RgbaOverlay::empty();
            for _ in 0..n {
                o = r.render_block(&b).unwrap();
            }
            let per = (thread_cpu() - t) / n;
            eprintln!(
                "1080p subtitle {}x{} outline={outline:?} bg={bg:?}: layout {layout:?}, render {per:?} (thread CPU time)",
                o.width, o.height
            );
        }
    }
}
