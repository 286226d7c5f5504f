//! Scene pictures from stock sites, against a fake Pexels and Pixabay speaking their wire
//! formats: videos before photos, generic terms before cards, one provider's failure moving on
//! to the next, searches cached for a day, provenance kept.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reelsmith_director::config::{ProvidersConfig, StockSettings};
use reelsmith_director::plan::{PlanMotion, PlanScene, PlanVisual};
use reelsmith_director::request::VisualKind;
use reelsmith_director::visuals::{Source, StockChain, choose};
use reelsmith_providers::cache::ResultCache;
use reelsmith_providers::stock::fake::{FAKE_PEXELS_KEY, FAKE_PIXABAY_KEY, FakeStock, Offer};

fn scene(terms: &[&str]) -> PlanScene {
    PlanScene {
        narration: "x".into(),
        title: None,
        visual: PlanVisual { search_terms: terms.iter().map(|t| t.to_string()).collect(), image_prompt: String::new() },
        motion: PlanMotion::Still,
    }
}

fn offer(query: &str, kind: &'static str, name: &str) -> Offer {
    Offer { query: query.into(), kind, name: name.into(), width: 640, height: 360, bytes: name.as_bytes().repeat(100) }
}

fn chain(fake: &FakeStock, dir: &Path, pexels_key: &str) -> StockChain {
    let settings = |key: &str| {
        Some(StockSettings {
            api_key: key.into(),
            base_url: Some(fake.base.clone()),
            rpm: None,
            concurrency: 2,
            daily_budget_usd: None,
        })
    };
    let providers =
        ProvidersConfig { pexels: settings(pexels_key), pixabay: settings(FAKE_PIXABAY_KEY), ..Default::default() };
    let http = reqwest::Client::new();
    let base = dir.to_path_buf();
    StockChain {
        sources: providers.stock_sources(&http),
        searches: ResultCache::new(dir.join("searches"), Some(Duration::from_secs(24 * 3600))),
        http,
        media_dir: dir.join("media"),
        media_name: Arc::new(move |p: &Path| p.strip_prefix(&base).unwrap().display().to_string()),
    }
}

const ORDER: [VisualKind; 4] = [VisualKind::Assets, VisualKind::Stock, VisualKind::Generate, VisualKind::Cards];

#[tokio::test]
async fn videos_then_photos_then_generic_terms_then_a_card() {
    let fake = FakeStock::start().await;
    fake.offer(offer("lava", "video", "lava.mp4"));
    fake.offer(offer("lava", "photo", "lava.jpg"));
    fake.offer(offer("crater", "photo", "crater.jpg"));
    let dir = tempfile::tempdir().unwrap();
    let stock = chain(&fake, dir.path(), FAKE_PEXELS_KEY);
    let scenes = vec![scene(&["lava"]), scene(&["crater"]), scene(&["lava"])];
    let (chosen, ledger) = choose_logged(&scenes, &ORDER, &[], Some(&stock), None, None, (640, 360)).await;
    // A video when one matches, with whom to credit; the two scenes on lava get different
    // items (scenes are chosen in parallel, so either may get Pexels').
    let lava = [&chosen[0], &chosen[2]];
    assert!(lava.iter().all(|c| c.source == Source::Stock && c.video), "{lava:?}");
    assert_ne!((&lava[0].provider, &lava[0].id), (&lava[1].provider, &lava[1].id));
    let pexels = lava.iter().find(|c| c.provider.as_deref() == Some("pexels")).expect("one from pexels");
    assert_eq!(pexels.author.as_deref(), Some("Fake Filmmaker"));
    assert!(pexels.page_url.as_deref().unwrap().starts_with("https://www.pexels.com/video/"));
    assert_eq!(std::fs::read(dir.path().join(pexels.file.as_deref().unwrap())).unwrap(), b"lava.mp4".repeat(100));
    // A photo when no video does.
    assert!(!chosen[1].video && chosen[1].file.as_deref().unwrap().ends_with(".jpg"), "{:?}", chosen[1]);
    // Every search is in the ledger; the second lava scene's were answered by the first's
    // (single flight), not asked twice.
    assert!(ledger.iter().all(|e| e.stage == "visuals"));
    let asked = |q: &str| {
        fake.searches()
            .iter()
            .filter(|s| s.query.get("query").or(s.query.get("q")).map(String::as_str) == Some(q))
            .count()
    };
    assert_eq!(asked("lava"), 2, "pexels and pixabay video searches, once each");

    // Nothing anywhere, not even for the generic terms: a card, saying what was tried.
    let (chosen, _) = choose_logged(&[scene(&["penguin"])], &ORDER, &[], Some(&stock), None, None, (640, 360)).await;
    assert_eq!(chosen[0].source, Source::Card);
    assert!(chosen[0].skipped.iter().any(|s| s.contains("nothing found for [\"penguin\"]")), "{:?}", chosen[0].skipped);
    // With a generic term on offer, that instead of a card.
    fake.offer(offer("ocean", "photo", "ocean.jpg"));
    let (chosen, _) = choose_logged(&[scene(&["walrus"])], &ORDER, &[], Some(&stock), None, None, (640, 360)).await;
    assert_eq!((chosen[0].source, chosen[0].query.as_deref()), (Source::Stock, Some("ocean")));
}

#[tokio::test]
async fn searches_are_cached_for_a_day_and_a_failing_provider_is_skipped() {
    let fake = FakeStock::start().await;
    fake.offer(offer("geyser", "photo", "geyser.jpg"));
    let dir = tempfile::tempdir().unwrap();
    // Pexels refuses this key (401, final): Pixabay answers.
    let stock = chain(&fake, dir.path(), "wrong-key");
    let scenes = vec![scene(&["geyser"])];
    let (chosen, ledger) = choose_logged(&scenes, &ORDER, &[], Some(&stock), None, None, (640, 360)).await;
    assert_eq!(chosen[0].provider.as_deref(), Some("pixabay"), "{:?}", chosen[0]);
    assert!(chosen[0].skipped.iter().any(|s| s.contains("pexels") && s.contains("401")), "{:?}", chosen[0].skipped);
    let searches = fake.searches().len();
    assert!(ledger.len() >= 2);
    // Again: every search that found something comes from the cache (Pexels' refusal was not kept).
    let (again, ledger) = choose_logged(&scenes, &ORDER, &[], Some(&stock), None, None, (640, 360)).await;
    assert_eq!(again[0].id, chosen[0].id);
    let pixabay_calls = fake.searches().iter().skip(searches).filter(|s| s.path.starts_with("/api/")).count();
    assert_eq!(pixabay_calls, 1, "only the empty video search is asked again");
    assert!(ledger.iter().any(|e| e.cache_hit && e.provider == "pixabay"));
}

#[tokio::test]
async fn a_scene_stock_cannot_show_is_drawn_and_drawn_once() {
    use reelsmith_director::config::{OpenAiImagesSettings, SdWebUiSettings};
    use reelsmith_director::visuals::ImageChain;
    use reelsmith_providers::images::fake::{FakeImages, colour_of};

    let stock_site = FakeStock::start().await;
    let painter = FakeImages::start().await;
    let dir = tempfile::tempdir().unwrap();
    let stock = chain(&stock_site, dir.path(), FAKE_PEXELS_KEY);
    // The local WebUI fails (a missing sampler): OpenAI draws instead.
    painter.refuse_next(404, serde_json::json!({"detail": "Sampler not found"}));
    let providers = ProvidersConfig {
        sd_webui: Some(SdWebUiSettings { base_url: painter.base.clone(), auth: None, steps: 4, timeout_secs: 30.0 }),
        openai_images: Some(OpenAiImagesSettings {
            api_key: "sk-img".into(),
            model: "gpt-image-1-mini".into(),
            quality: "low".into(),
            base_url: Some(format!("{}/v1", painter.base)),
            usd_per_mtok_out: 8.0,
            rpm: None,
            concurrency: 2,
            daily_budget_usd: None,
        }),
        ..Default::default()
    };
    let base = dir.path().to_path_buf();
    let images = ImageChain {
        sources: providers.image_sources(&reqwest::Client::new()),
        cache: ResultCache::new(dir.path().join("images"), None),
        media_dir: dir.path().join("media"),
        media_name: Arc::new(move |p: &Path| p.strip_prefix(&base).unwrap().display().to_string()),
        style: Some("watercolour".into()),
    };
    let mut s = scene(&["aurora"]);
    s.visual.image_prompt = "green aurora over a frozen lake".into();
    let (chosen, ledger) =
        choose_logged(&[s.clone()], &ORDER, &[], Some(&stock), Some(&images), None, (640, 360)).await;
    let c = &chosen[0];
    assert_eq!((c.source, c.provider.as_deref()), (Source::Generated, Some("openai-images")), "{c:?}");
    assert_eq!(c.query.as_deref(), Some("green aurora over a frozen lake, watercolour"));
    assert!(c.skipped.iter().any(|s| s.starts_with("stock: nothing found")), "{:?}", c.skipped);
    assert!(c.skipped.iter().any(|s| s.contains("Sampler not found")), "{:?}", c.skipped);
    let png = std::fs::read(dir.path().join(c.file.as_deref().unwrap())).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap() + 4;
    assert_eq!(png[idat + 8..idat + 11], colour_of("green aurora over a frozen lake, watercolour"));
    let drawn = ledger.iter().find(|e| e.provider == "openai-images").unwrap();
    assert!(!drawn.cache_hit && drawn.est_cost_usd > 0.0 && drawn.unit_kind == "tokens", "{drawn:?}");
    let calls = painter.requests().len();
    // The same scene again: the picture OpenAI drew, from the cache; no generator is asked
    // (not even the WebUI, first in order, whose failure was not kept).
    let (again, ledger) = choose_logged(&[s], &ORDER, &[], Some(&stock), Some(&images), None, (640, 360)).await;
    assert_eq!((again[0].source, again[0].file.as_deref()), (Source::Generated, c.file.as_deref()));
    assert_eq!(painter.requests().len(), calls);
    assert!(ledger.iter().any(|e| e.provider == "openai-images" && e.cache_hit && e.est_cost_usd == 0.0));
}

#[tokio::test]
async fn the_same_scenes_again_make_no_call_even_where_searches_found_nothing() {
    let fake = FakeStock::start().await;
    fake.offer(offer("lava", "photo", "lava.jpg"));
    let dir = tempfile::tempdir().unwrap();
    let stock = chain(&fake, dir.path(), FAKE_PEXELS_KEY);
    let decisions = ResultCache::new(dir.path().join("decisions"), Some(Duration::from_secs(3600)));
    let scenes = vec![scene(&["lava"]), scene(&["penguin"])];
    let (first, _) = choose_logged(&scenes, &ORDER, &[], Some(&stock), None, Some(&decisions), (640, 360)).await;
    assert_eq!((first[0].source, first[1].source), (Source::Stock, Source::Card));
    let calls = fake.requests().len();
    let (again, ledger) = choose_logged(&scenes, &ORDER, &[], Some(&stock), None, Some(&decisions), (640, 360)).await;
    assert_eq!(fake.requests().len(), calls, "no search and no download");
    assert!(ledger.is_empty());
    assert_eq!(again[0].file, first[0].file);
    assert_eq!(again[1].source, Source::Card);
    // A picture whose file is gone is chosen again.
    std::fs::remove_file(dir.path().join(first[0].file.as_deref().unwrap())).unwrap();
    let (third, _) = choose_logged(&scenes, &ORDER, &[], Some(&stock), None, Some(&decisions), (640, 360)).await;
    assert_eq!(third[0].source, Source::Stock);
    assert!(dir.path().join(third[0].file.as_deref().unwrap()).exists());
}

/// [`choose`] with a ledger of its own: the choices and the calls made.
#[allow(clippy::too_many_arguments)]
async fn choose_logged(
    scenes: &[reelsmith_director::plan::PlanScene],
    order: &[reelsmith_director::request::VisualKind],
    assets: &[reelsmith_director::visuals::Asset],
    stock: Option<&reelsmith_director::visuals::StockChain>,
    images: Option<&reelsmith_director::visuals::ImageChain>,
    decisions: Option<&ResultCache>,
    size: (u32, u32),
) -> (Vec<reelsmith_director::visuals::Chosen>, Vec<reelsmith_director::LedgerEntry>) {
    let ledger = reelsmith_director::Ledger::default();
    let chosen = choose(scenes, order, assets, stock, images, decisions, size, &ledger).await;
    (chosen, ledger.entries())
}
