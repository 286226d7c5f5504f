//! Each scene's picture, from the first source in the request's order that has one: the
//! caller's own assets (matched by the words of their names and captions against the scene's
//! search terms), stock and generated pictures where a provider is configured, and a designed
//! card, which always exists, so no scene ever waits on a search that found nothing. What was
//! chosen keeps its provenance (source, provider, id, author, page) for attribution.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::plan::PlanScene;
use crate::request::VisualKind;

/// Where a scene's picture came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Asset,
    Stock,
    Generated,
    Card,
}

/// A scene's picture and its provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chosen {
    pub source: Source,
    /// The file the storyboard names (none for a card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_url: Option<String>,
    /// The search term or prompt that found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Sources tried before this one and why they gave nothing ("stock: not configured").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl Chosen {
    pub fn card() -> Self {
        Self {
            source: Source::Card,
            file: None,
            provider: None,
            id: None,
            author: None,
            page_url: None,
            query: None,
            skipped: vec![],
        }
    }

    pub fn asset(file: &str, query: &str) -> Self {
        Self { source: Source::Asset, file: Some(file.into()), query: Some(query.into()), ..Self::card() }
    }

    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }
}

/// One of the caller's pictures: the name the storyboard uses for it, and words describing it
/// (from its file name and caption).
#[derive(Clone, Debug, PartialEq)]
pub struct Asset {
    pub file: String,
    pub words: HashSet<String>,
}

impl Asset {
    pub fn new(file: impl Into<String>, caption: &str) -> Self {
        let file = file.into();
        let stem = std::path::Path::new(&file).file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        let words = words_of(&format!("{stem} {caption}"));
        Self { file, words }
    }
}

/// Lower-case words, singular (a trailing plural `s` dropped), split at anything not a letter.
fn words_of(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(|w| singular(&w.to_lowercase()))
        .collect()
}

fn singular(w: &str) -> String {
    if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") { w[..w.len() - 1].to_string() } else { w.to_string() }
}

/// The best matching asset for a scene: the most of its search terms whose words the asset
/// has all of (ties: the one used least so far, then the first); None when nothing matches.
pub fn match_asset<'a>(scene: &PlanScene, assets: &'a [Asset], used: &[usize]) -> Option<(usize, &'a Asset, String)> {
    let mut best: Option<(usize, usize, usize, String)> = None;
    for (i, a) in assets.iter().enumerate() {
        let mut score = 0;
        let mut matched = String::new();
        for term in &scene.visual.search_terms {
            let words = words_of(term);
            if !words.is_empty() && words.iter().all(|w| a.words.contains(w)) {
                score += words.len();
                if matched.is_empty() {
                    matched = term.clone();
                }
            }
        }
        if score == 0 {
            continue;
        }
        let uses = used.iter().filter(|&&u| u == i).count();
        let better = match &best {
            None => true,
            Some((s, u, _, _)) => score > *s || (score == *s && uses < *u),
        };
        if better {
            best = Some((score, uses, i, matched));
        }
    }
    best.map(|(_, _, i, m)| (i, &assets[i], m))
}

/// Chooses every scene's picture from what is available here: assets, then cards. Stock and
/// generated pictures need providers; without one configured, they are skipped with a reason.
pub fn choose_local(scenes: &[PlanScene], order: &[VisualKind], assets: &[Asset]) -> Vec<Chosen> {
    let mut used: Vec<usize> = vec![];
    scenes
        .iter()
        .map(|scene| {
            let mut skipped = vec![];
            for kind in order {
                match kind {
                    VisualKind::Assets => match match_asset(scene, assets, &used) {
                        Some((i, a, term)) => {
                            used.push(i);
                            return Chosen { skipped, ..Chosen::asset(&a.file, &term) };
                        }
                        None if assets.is_empty() => skipped.push("assets: none given".into()),
                        None => skipped.push(format!("assets: none match {:?}", scene.visual.search_terms)),
                    },
                    VisualKind::Stock => skipped.push("stock: no stock provider is configured".into()),
                    VisualKind::Generate => skipped.push("generate: no image provider is configured".into()),
                    VisualKind::Cards => break,
                }
            }
            Chosen { skipped, ..Chosen::card() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PlanMotion, PlanVisual};

    fn scene(terms: &[&str]) -> PlanScene {
        PlanScene {
            narration: "x".into(),
            title: None,
            visual: PlanVisual {
                search_terms: terms.iter().map(|t| t.to_string()).collect(),
                image_prompt: String::new(),
            },
            motion: PlanMotion::Still,
        }
    }

    #[test]
    fn assets_match_by_their_names_and_captions() {
        let assets = vec![
            Asset::new("photos/lava-flow.jpg", ""),
            Asset::new("IMG_0042.jpg", "Ash clouds over the crater"),
            Asset::new("beach.png", "ocean waves"),
        ];
        let pick = |terms: &[&str]| match_asset(&scene(terms), &assets, &[]).map(|(_, a, _)| a.file.clone());
        assert_eq!(pick(&["lava flows"]).as_deref(), Some("photos/lava-flow.jpg"));
        assert_eq!(pick(&["volcano", "ash cloud"]).as_deref(), Some("IMG_0042.jpg"));
        assert_eq!(pick(&["wave"]).as_deref(), Some("beach.png"));
        assert_eq!(pick(&["mountain"]), None);
    }

    #[test]
    fn the_chain_falls_through_to_a_card_and_says_why() {
        let assets = vec![Asset::new("lava.jpg", ""), Asset::new("lava-2.jpg", "")];
        let scenes = vec![scene(&["lava"]), scene(&["lava"]), scene(&["penguin"])];
        let order = [VisualKind::Assets, VisualKind::Stock, VisualKind::Generate, VisualKind::Cards];
        let chosen = choose_local(&scenes, &order, &assets);
        // A second scene on the same subject gets the other picture.
        assert_eq!(chosen[0].file.as_deref(), Some("lava.jpg"));
        assert_eq!(chosen[1].file.as_deref(), Some("lava-2.jpg"));
        assert_eq!(chosen[2].source, Source::Card);
        assert_eq!(chosen[2].skipped.len(), 3, "{:?}", chosen[2].skipped);
        assert!(chosen[2].skipped[0].contains("penguin"));
        // Cards only: no asset is looked at.
        let cards = choose_local(&scenes, &[VisualKind::Cards], &assets);
        assert!(cards.iter().all(|c| c.source == Source::Card && c.skipped.is_empty()));
    }
}
