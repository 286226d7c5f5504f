//! Markdown as scenes: a heading is a title card, a paragraph (or a list) a narrated scene,
//! an image a picture, narrated by the paragraph that follows it.

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use serde_json::{Value, json};

use crate::text::narration;
use crate::{ImportError, ImportOptions};

/// Colours of the cards, by heading level (others alternate).
const TITLE_COLOR: &str = "#1e3c72";
const CARD_COLORS: [&str; 2] = ["#203040", "#2a3b2f"];

/// An image the document names: which scene shows it, and the reference as written (a path
/// relative to the document, or an `asset:` ref), with its line for errors.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRef {
    pub scene: usize,
    pub reference: String,
    pub line: usize,
}

/// Where a block of text goes once it ends.
enum Block {
    Heading,
    Text,
}

pub(crate) fn scenes(text: &str, opts: &ImportOptions, file: &str) -> Result<(Vec<Value>, Vec<ImageRef>), ImportError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut scenes: Vec<Value> = vec![];
    let mut images = vec![];
    // An image scene still waiting for the paragraph that narrates it.
    let mut open_image: Option<usize> = None;
    let mut block: Option<Block> = None;
    let mut buf = String::new();
    let mut in_image = 0usize;
    let mut in_code = false;
    let mut cards = 0usize;
    for (event, range) in Parser::new(text).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { .. }) => {
                block = Some(Block::Heading);
                buf.clear();
            }
            Event::Start(Tag::Paragraph | Tag::List(_)) if block.is_none() => {
                block = Some(Block::Text);
                buf.clear();
            }
            Event::Start(Tag::Item) => buf.push(' '),
            Event::Start(Tag::CodeBlock(_)) => in_code = true,
            Event::End(TagEnd::CodeBlock) => in_code = false,
            Event::Start(Tag::Image { dest_url, .. }) => {
                in_image += 1;
                let scene = scenes.len();
                scenes.push(json!({"image": dest_url.to_string(), "fit": "contain-blur", "duration": 3.0}));
                images.push(ImageRef { scene, reference: dest_url.to_string(), line: line_of(range.start) });
                open_image = Some(scene);
            }
            Event::End(TagEnd::Image) => in_image = in_image.saturating_sub(1),
            Event::Text(t) | Event::Code(t) if in_image == 0 && !in_code => buf.push_str(&t),
            Event::SoftBreak | Event::HardBreak => buf.push(' '),
            Event::End(TagEnd::Item) => {
                // A list item is a sentence of its own.
                let trimmed = buf.trim_end();
                if !trimmed.is_empty() && !trimmed.ends_with(['.', '!', '?', ':', ';']) {
                    buf.truncate(trimmed.len());
                    buf.push('.');
                }
            }
            Event::End(TagEnd::Heading(level)) => {
                let title = narration(&buf);
                block = None;
                if title.is_empty() {
                    continue;
                }
                let color = if level == HeadingLevel::H1 { TITLE_COLOR } else { CARD_COLORS[cards % 2] };
                cards += 1;
                scenes.push(json!({"title": title, "duration": 2.5, "background": {"color": color}}));
                open_image = None;
            }
            Event::End(TagEnd::Paragraph | TagEnd::List(_)) if matches!(block, Some(Block::Text)) => {
                // A paragraph inside a list item ends the item's text, not the list.
                if matches!(event, Event::End(TagEnd::Paragraph)) && !range_is_top_level(text, &range) {
                    continue;
                }
                block = None;
                let spoken = narration(&buf);
                if spoken.is_empty() {
                    continue;
                }
                match open_image.take() {
                    // The paragraph right after an image narrates it.
                    Some(i) => {
                        let scene = &mut scenes[i];
                        if let Some(m) = scene.as_object_mut() {
                            m.remove("duration");
                        }
                        scene["narration"] = json!({"text": spoken});
                    }
                    None => {
                        let color = CARD_COLORS[cards % 2];
                        cards += 1;
                        scenes.push(json!({"narration": {"text": spoken}, "background": {"color": color}}));
                    }
                }
            }
            _ => {}
        }
    }
    if scenes.is_empty() {
        return Err(ImportError::NoText { file: file.into() });
    }
    if scenes.len() > opts.max_pages {
        return Err(ImportError::TooManyPages { file: file.into(), pages: scenes.len(), max: opts.max_pages });
    }
    if !scenes.iter().any(|s| s.get("narration").is_some() || s.get("title").is_some()) {
        return Err(ImportError::NoText { file: file.into() });
    }
    Ok((scenes, images))
}

/// Whether a paragraph's source starts at the beginning of a line with no list marker before
/// it (a paragraph of its own, not one inside a list item).
fn range_is_top_level(text: &str, range: &std::ops::Range<usize>) -> bool {
    let line_start = text[..range.start].rfind('\n').map_or(0, |i| i + 1);
    text[line_start..range.start].trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_paragraphs_lists_and_images_become_scenes() {
        let md = "# Launch\n\nWe built a thing.\nIt renders videos.\n\n![the app](shots/app.png)\n\nThis is the app.\n\n## Why\n\n- fast\n- small\n\n```\ncode is skipped\n```\n\n![alone](asset:abc)\n";
        let (scenes, images) = scenes(md, &ImportOptions::default(), "notes.md").unwrap();
        assert_eq!(scenes[0]["title"], "Launch");
        assert_eq!(scenes[1]["narration"]["text"], "We built a thing. It renders videos.");
        assert_eq!(scenes[2]["image"], "shots/app.png");
        assert_eq!(scenes[2]["narration"]["text"], "This is the app.", "the paragraph after an image narrates it");
        assert!(scenes[2].get("duration").is_none());
        assert_eq!(scenes[3]["title"], "Why");
        assert_eq!(scenes[4]["narration"]["text"], "fast. small.");
        assert_eq!(scenes[5]["image"], "asset:abc");
        assert_eq!(scenes[5]["duration"], 3.0, "an image without words stays three seconds");
        assert_eq!(scenes.len(), 6);
        assert_eq!(
            images,
            vec![
                ImageRef { scene: 2, reference: "shots/app.png".into(), line: 6 },
                ImageRef { scene: 5, reference: "asset:abc".into(), line: 19 },
            ]
        );
    }

    #[test]
    fn a_document_with_nothing_to_say_is_named() {
        let e = scenes("```\nonly code\n```\n", &ImportOptions::default(), "empty.md").unwrap_err();
        assert_eq!(e.to_string(), "empty.md has nothing to narrate: no speaker notes and no text on any page");
        let e = scenes("![a](a.png)\n", &ImportOptions::default(), "pics.md").unwrap_err();
        assert_eq!(e.code(), "import_no_text");
    }
}
