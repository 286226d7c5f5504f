//! Each scene's picture, from the first source in the request's order that has one: the
//! caller's own assets (matched by the words of their names and captions against the scene's
//! search terms), stock and generated pictures where a provider is configured, and a designed
//! card, which always exists, so no scene ever waits on a search that found nothing. What was
//! chosen keeps its provenance (source, provider, id, author, page) for attribution.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use reelsmith_providers::Failure;
use reelsmith_providers::cache::{CacheKey, ResultCache};
use reelsmith_providers::images::{ImageRequest, ImageSource};
use reelsmith_providers::stock::{MAX_DOWNLOAD_BYTES, MediaKind, Orientation, Search, StockItem, StockSource};
use serde::{Deserialize, Serialize};

use crate::plan::PlanScene;
use crate::request::VisualKind;
use crate::{Ledger, LedgerEntry};

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
    /// The file is a video clip (played, looped, under the scene's narration).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub video: bool,
    /// Where the downloaded or drawn file is on this machine.
    #[serde(skip)]
    pub local_path: Option<PathBuf>,
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
            video: false,
            local_path: None,
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

/// Generic terms tried when a scene's own find nothing (short-video-maker's "joker" terms).
pub const GENERIC_TERMS: [&str; 4] = ["nature", "sky", "ocean", "city"];

/// Stock sources, their search cache (24 h) and where downloads go.
pub struct StockChain {
    pub sources: Vec<Arc<dyn StockSource>>,
    pub searches: ResultCache,
    pub http: reqwest::Client,
    /// Downloads land here, named by provider and id (an item is fetched once).
    pub media_dir: PathBuf,
    /// How the storyboard names a file in `media_dir` (`media/pexels-123.mp4`).
    pub media_name: Arc<dyn Fn(&Path) -> String + Send + Sync>,
}

impl StockChain {
    /// The results of one search, from the cache when it has them (24 h; empty results are
    /// not kept), with the ledger entry of the call.
    async fn search(
        &self,
        source: &dyn StockSource,
        s: &Search,
        ledger: &Ledger,
    ) -> (Result<Vec<StockItem>, Failure>, LedgerEntry) {
        let key = CacheKey::new(source.name(), "search", &serde_json::to_value(s).unwrap_or_default());
        let mut entry = LedgerEntry {
            stage: "visuals".into(),
            provider: source.name().into(),
            model: format!("{:?} search", s.kind).to_lowercase(),
            units: 1.0,
            unit_kind: "requests".into(),
            est_cost_usd: 0.0,
            cache_hit: false,
        };
        let result = self
            .searches
            .get_or_fetch(&key, || async {
                ledger.allow(source.name()).await?;
                let items = source.search(s).await?;
                Ok(if items.is_empty() { vec![] } else { serde_json::to_vec(&items).unwrap_or_default() })
            })
            .await;
        match result {
            Ok((bytes, hit)) => {
                entry.cache_hit = hit;
                if hit {
                    entry.units = 0.0;
                }
                (Ok(if bytes.is_empty() { vec![] } else { serde_json::from_slice(&bytes).unwrap_or_default() }), entry)
            }
            Err(f) => (Err(f), entry),
        }
    }

    async fn fetch(&self, item: &StockItem) -> Result<PathBuf, Failure> {
        let ext = match item.kind {
            MediaKind::Video => "mp4",
            MediaKind::Photo => {
                let path = item.url.split(['?', '#']).next().unwrap_or("");
                match path.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
                    Some("png") => "png",
                    Some("webp") => "webp",
                    _ => "jpg",
                }
            }
        };
        let safe_id: String = item.id.chars().filter(char::is_ascii_alphanumeric).take(40).collect();
        let dest = self.media_dir.join(format!("{}-{safe_id}.{ext}", item.provider));
        if tokio::fs::metadata(&dest).await.is_ok_and(|m| m.len() > 0) {
            return Ok(dest);
        }
        tokio::fs::create_dir_all(&self.media_dir).await.map_err(|e| Failure::Retryable(e.to_string()))?;
        reelsmith_providers::stock::download(&self.http, &item.url, &dest, MAX_DOWNLOAD_BYTES, &item.provider).await?;
        Ok(dest)
    }

    /// A stock picture for `scene`: its own terms as video then photo, then generic terms; each
    /// provider in order. Failures of one provider skip to the next, never wait for ever (each
    /// call has the gate's deadline); what was tried is said in `skipped`.
    async fn choose(
        &self,
        scene: &PlanScene,
        (width, height): (u32, u32),
        taken: &Mutex<HashSet<(String, String)>>,
        skipped: &mut Vec<String>,
        ledger: &Ledger,
    ) -> Option<Chosen> {
        let own: Vec<String> = scene.visual.search_terms.iter().filter(|t| !t.trim().is_empty()).cloned().collect();
        let generic: Vec<String> = GENERIC_TERMS.iter().map(|t| t.to_string()).collect();
        let mut failed_sources: HashSet<String> = HashSet::new();
        for (terms, kind) in [
            (&own, MediaKind::Video),
            (&own, MediaKind::Photo),
            (&generic, MediaKind::Video),
            (&generic, MediaKind::Photo),
        ] {
            for term in terms.iter() {
                for source in &self.sources {
                    if failed_sources.contains(source.name()) {
                        continue;
                    }
                    let s = Search {
                        query: term.to_lowercase(),
                        kind,
                        orientation: Orientation::of(width, height),
                        min_width: width,
                        per_page: 15,
                    };
                    let (found, entry) = self.search(source.as_ref(), &s, ledger).await;
                    ledger.record(entry).await;
                    let items = match found {
                        Ok(items) => items,
                        Err(f) => {
                            skipped.push(format!("stock: {}", f.message()));
                            // Its breaker or quota will say the same for the other terms.
                            failed_sources.insert(source.name().to_string());
                            continue;
                        }
                    };
                    let item = {
                        let mut taken = taken.lock().expect("taken");
                        let item = items.iter().find(|i| !taken.contains(&(i.provider.clone(), i.id.clone())));
                        if let Some(i) = item {
                            taken.insert((i.provider.clone(), i.id.clone()));
                        }
                        item.cloned()
                    };
                    let Some(item) = item else { continue };
                    match self.fetch(&item).await {
                        Ok(path) => {
                            return Some(Chosen {
                                source: Source::Stock,
                                file: Some((self.media_name)(&path)),
                                provider: Some(item.provider.clone()),
                                id: Some(item.id.clone()),
                                author: item.author.clone(),
                                page_url: Some(item.page_url.clone()),
                                query: Some(term.clone()),
                                skipped: std::mem::take(skipped),
                                video: item.kind == MediaKind::Video,
                                local_path: Some(path),
                            });
                        }
                        Err(f) => skipped.push(format!("stock: {}", f.message())),
                    }
                }
            }
        }
        skipped.push(format!("stock: nothing found for {own:?} or generic terms"));
        None
    }
}

/// Image generators, their cache (kept: the same request draws the same picture) and where
/// pictures go.
pub struct ImageChain {
    pub sources: Vec<Arc<dyn ImageSource>>,
    pub cache: ResultCache,
    pub media_dir: PathBuf,
    pub media_name: Arc<dyn Fn(&Path) -> String + Send + Sync>,
    /// Added to every prompt ("photograph, natural light").
    pub style: Option<String>,
}

impl ImageChain {
    /// A picture for `scene` from the first generator that draws one; failures move on to the
    /// next and are said in `skipped`.
    async fn choose(
        &self,
        scene: &PlanScene,
        (width, height): (u32, u32),
        skipped: &mut Vec<String>,
        ledger: &Ledger,
    ) -> Option<Chosen> {
        let subject =
            if scene.visual.image_prompt.trim().is_empty() { &scene.narration } else { &scene.visual.image_prompt };
        let prompt = match &self.style {
            Some(s) if !s.trim().is_empty() => format!("{subject}, {s}"),
            _ => subject.clone(),
        };
        let request = ImageRequest { prompt: prompt.clone(), width, height, seed: 1 };
        // A picture any of them drew before is used before asking anyone again: the same prompt
        // costs nothing the second time, even when an earlier generator failed the first.
        let key_of = |s: &Arc<dyn ImageSource>| {
            CacheKey::new(s.name(), s.model(), &serde_json::to_value(&request).unwrap_or_default())
        };
        let mut cached_first = None;
        for (i, source) in self.sources.iter().enumerate() {
            if self.cache.get(&key_of(source)).await.is_some() {
                cached_first = Some(i);
                break;
            }
        }
        let order: Vec<&Arc<dyn ImageSource>> = match cached_first {
            Some(i) => std::iter::once(&self.sources[i])
                .chain(self.sources.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, s)| s))
                .collect(),
            None => self.sources.iter().collect(),
        };
        for source in order {
            let key = key_of(source);
            let mut entry = LedgerEntry {
                stage: "visuals".into(),
                provider: source.name().into(),
                model: source.model().into(),
                units: 0.0,
                unit_kind: "images".into(),
                est_cost_usd: 0.0,
                cache_hit: true,
            };
            let cost = Mutex::new(None);
            let drawn = self
                .cache
                .get_or_fetch(&key, || async {
                    ledger.allow(source.name()).await?;
                    let image = source.generate(&request).await?;
                    *cost.lock().expect("cost") = Some((image.units, image.unit_kind, image.est_cost_usd));
                    Ok(image.bytes)
                })
                .await;
            if let Some((units, kind, usd)) = cost.into_inner().expect("cost") {
                entry = LedgerEntry { units, unit_kind: kind.into(), est_cost_usd: usd, cache_hit: false, ..entry };
            }
            ledger.record(entry).await;
            let bytes = match drawn {
                Ok((bytes, _)) => bytes,
                Err(f) => {
                    skipped.push(format!("generate: {}", f.message()));
                    continue;
                }
            };
            // A text-to-video model's clip is an MP4 (an ISO BMFF `ftyp` box first).
            let video = bytes.get(4..8) == Some(b"ftyp");
            let ext = if video {
                "mp4"
            } else if bytes.starts_with(b"\x89PNG") {
                "png"
            } else if bytes.starts_with(b"RIFF") {
                "webp"
            } else {
                "jpg"
            };
            let dest = self.media_dir.join(format!("{}-{}.{ext}", source.name(), &key.hex()[..20]));
            let written = async {
                tokio::fs::create_dir_all(&self.media_dir).await?;
                if tokio::fs::metadata(&dest).await.is_err() {
                    tokio::fs::write(&dest, &bytes).await?;
                }
                Ok::<_, std::io::Error>(())
            }
            .await;
            if let Err(e) = written {
                skipped.push(format!("generate: {}: cannot write the picture: {e}", source.name()));
                continue;
            }
            return Some(Chosen {
                source: Source::Generated,
                file: Some((self.media_name)(&dest)),
                provider: Some(source.name().into()),
                id: Some(key.hex()[..20].to_string()),
                query: Some(prompt),
                skipped: std::mem::take(skipped),
                local_path: Some(dest),
                video,
                ..Chosen::card()
            });
        }
        None
    }
}

/// Chooses every scene's picture, scenes in parallel (each provider's gate bounds its calls):
/// assets, stock, generated, then a card; the provider calls go to `ledger`.
#[allow(clippy::too_many_arguments)]
pub async fn choose(
    scenes: &[PlanScene],
    order: &[VisualKind],
    assets: &[Asset],
    stock: Option<&StockChain>,
    images: Option<&ImageChain>,
    decisions: Option<&ResultCache>,
    size: (u32, u32),
    ledger: &Ledger,
) -> Vec<Chosen> {
    let local = choose_local(scenes, order, assets);
    let stock = stock.filter(|s| !s.sources.is_empty());
    let images = images.filter(|s| !s.sources.is_empty());
    if stock.is_none() && images.is_none() {
        return local;
    }
    let taken = Mutex::new(HashSet::new());
    // What each scene chose last time, by everything that decides it: the same scene again
    // costs no call at all, even where searches found nothing (empty results themselves are
    // never cached: a new search may find something).
    let providers: Vec<String> = stock
        .map_or(vec![], |s| s.sources.iter().map(|p| p.name().to_string()).collect())
        .into_iter()
        .chain(images.map_or(vec![], |s| s.sources.iter().map(|p| format!("{}/{}", p.name(), p.model())).collect()))
        .collect();
    let decision_key = |scene: &PlanScene| {
        CacheKey::new(
            "visuals",
            "decision",
            &serde_json::json!({"visual": scene.visual, "narration": scene.narration, "order": order, "size": size,
                                 "providers": providers, "style": images.and_then(|i| i.style.clone())}),
        )
    };
    let picks = scenes.iter().zip(local).map(|(scene, local)| {
        let taken = &taken;
        let key = decision_key(scene);
        async move {
            if local.source == Source::Asset {
                return local;
            }
            if let Some(cache) = decisions
                && let Some(bytes) = cache.get(&key).await
                && let Ok((mut chosen, path)) = serde_json::from_slice::<(Chosen, Option<PathBuf>)>(&bytes)
            {
                let file_there = match &path {
                    Some(p) => tokio::fs::metadata(p).await.is_ok(),
                    None => chosen.source == Source::Card,
                };
                if file_there {
                    if let (Some(p), Some(id)) = (&chosen.provider, &chosen.id) {
                        taken.lock().expect("taken").insert((p.clone(), id.clone()));
                    }
                    chosen.local_path = path;
                    return chosen;
                }
            }
            let chosen = pick(scene, order, &local, stock, images, size, taken, ledger).await;
            let keep = chosen.local_path.is_some() || chosen.source == Source::Card;
            if let Some(cache) = decisions.filter(|_| keep)
                && let Ok(bytes) = serde_json::to_vec(&(&chosen, &chosen.local_path))
            {
                let _ = cache.put(&key, &bytes).await;
            }
            chosen
        }
    });
    futures_util::future::join_all(picks).await
}

/// One scene's picture from the remote sources, in the request's order, ending at a card.
#[allow(clippy::too_many_arguments)]
async fn pick(
    scene: &PlanScene,
    order: &[VisualKind],
    local: &Chosen,
    stock: Option<&StockChain>,
    images: Option<&ImageChain>,
    size: (u32, u32),
    taken: &Mutex<HashSet<(String, String)>>,
    ledger: &Ledger,
) -> Chosen {
    {
        {
            // The sources before stock in the request's order were tried by `choose_local`.
            let mut skipped: Vec<String> = vec![];
            for kind in order {
                match kind {
                    VisualKind::Assets => {
                        skipped.extend(local.skipped.iter().filter(|s| s.starts_with("assets")).cloned())
                    }
                    VisualKind::Stock => match stock {
                        Some(stock) => {
                            if let Some(c) = stock.choose(scene, size, taken, &mut skipped, ledger).await {
                                return c;
                            }
                        }
                        None => skipped.push("stock: no stock provider is configured".into()),
                    },
                    VisualKind::Generate => match images {
                        Some(images) => {
                            if let Some(c) = images.choose(scene, size, &mut skipped, ledger).await {
                                return c;
                            }
                        }
                        None => skipped.push("generate: no image provider is configured".into()),
                    },
                    VisualKind::Cards => break,
                }
            }
            Chosen { skipped, ..Chosen::card() }
        }
    }
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
