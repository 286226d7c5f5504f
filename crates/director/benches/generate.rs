//! `cargo bench -p reelsmith-director --bench generate`: a topic planned and pictured against
//! fake providers with set latencies (LLM 2 s, image 8 s, stock 0.5 s per search, ElevenLabs
//! 1 s per scene at its plan's 2 at once; 6 scenes).
//! Provider calls overlap across scenes, so the director's wall time should be close to the plan
//! call plus the slowest scene's own chain of calls, far below the sum of every call. Then the
//! same prompt again (everything from the caches), and one cached image lookup.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reelsmith_director::config::{ElevenLabsSettings, OpenAiImagesSettings, ProvidersConfig, StockSettings};
use reelsmith_director::plan::Problem;
use reelsmith_director::visuals::{ImageChain, StockChain};
use reelsmith_director::voices::VoiceChain;
use reelsmith_director::{Director, PromptRequest};
use reelsmith_providers::cache::{CacheKey, ResultCache};
use reelsmith_providers::images::fake::FakeImages;
use reelsmith_providers::llm::fake::{FakeChat, Reply};
use reelsmith_providers::llm::{ChatClient, ChatConfig};
use reelsmith_providers::speech::fake::FakeSpeech;
use reelsmith_providers::stock::fake::{FAKE_PEXELS_KEY, FakeStock, Offer};
use reelsmith_providers::{Gate, Limits};
use serde_json::{Value, json};

const LLM: Duration = Duration::from_secs(2);
const IMAGE: Duration = Duration::from_secs(8);
const STOCK: Duration = Duration::from_millis(500);
const SPEECH: Duration = Duration::from_secs(1);
const SPEECH_CONCURRENCY: usize = 2;
const SCENES: usize = 6;

fn plan() -> String {
    // Even scenes find stock video at once; odd ones find nothing and are drawn.
    let scenes: Vec<Value> = (0..SCENES)
        .map(|i| {
            let term = if i % 2 == 0 { format!("subject{i}") } else { format!("nothing{i}") };
            json!({"narration": format!("Scene {i} narration."), "title": null,
                   "visual": {"search_terms": [term], "image_prompt": format!("picture {i}")}, "motion": "zoom-in"})
        })
        .collect();
    json!({"title": "Bench", "scenes": scenes}).to_string()
}

#[tokio::main]
async fn main() {
    let chat = FakeChat::start().await;
    chat.set_latency(LLM);
    chat.respond_with(|_| Reply::content(plan()));
    let stock = FakeStock::start().await;
    stock.set_latency(STOCK);
    for i in (0..SCENES).step_by(2) {
        stock.offer(Offer {
            query: format!("subject{i}"),
            kind: "video",
            name: format!("s{i}.mp4"),
            width: 1280,
            height: 720,
            bytes: vec![1; 4096],
        });
    }
    let painter = FakeImages::start().await;
    painter.set_latency(IMAGE);
    let voice = FakeSpeech::start().await;
    voice.set_latency(SPEECH);
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let providers = ProvidersConfig {
        pexels: Some(StockSettings {
            api_key: FAKE_PEXELS_KEY.into(),
            base_url: Some(stock.base.clone()),
            rpm: None,
            concurrency: 8,
            daily_budget_usd: None,
        }),
        openai_images: Some(OpenAiImagesSettings {
            api_key: "sk-bench".into(),
            model: "gpt-image-1-mini".into(),
            quality: "low".into(),
            base_url: Some(format!("{}/v1", painter.base)),
            usd_per_mtok_out: 8.0,
            rpm: None,
            concurrency: 8,
            daily_budget_usd: None,
        }),
        elevenlabs: Some(ElevenLabsSettings {
            api_key: "xi-bench".into(),
            model: "eleven_flash_v2_5".into(),
            voice: "bench-voice".into(),
            base_url: Some(voice.base.clone()),
            usd_per_1k_chars: 0.15,
            rpm: None,
            concurrency: SPEECH_CONCURRENCY,
            daily_budget_usd: None,
        }),
        ..Default::default()
    };
    let base = dir.path().to_path_buf();
    let name = Arc::new(move |p: &Path| p.strip_prefix(&base).unwrap().display().to_string());
    let limits = Limits { concurrency: 8, ..Limits::default() };
    let llm = ChatClient::new(
        http.clone(),
        ChatConfig {
            provider: "openai".into(),
            base_url: chat.base_url(),
            api_key: None,
            model: "m".into(),
            usd_per_mtok_in: 0.0,
            usd_per_mtok_out: 0.0,
        },
        Arc::new(Gate::new("openai", limits)),
    );
    // A hosted model draws several pictures at once (a single WebUI would draw them in turn).
    let image_sources = providers.image_sources(&http);
    let director = Director {
        model: Some(Arc::new(llm)),
        plans: Some(ResultCache::new(dir.path().join("plans"), None)),
        assets: vec![],
        stock: Some(StockChain {
            sources: providers.stock_sources(&http),
            searches: ResultCache::new(dir.path().join("searches"), Some(Duration::from_secs(86_400))),
            http: http.clone(),
            media_dir: dir.path().join("media"),
            media_name: name.clone(),
        }),
        images: Some(ImageChain {
            sources: image_sources,
            cache: ResultCache::new(dir.path().join("images"), None),
            media_dir: dir.path().join("media"),
            media_name: name.clone(),
            style: None,
        }),
        decisions: Some(ResultCache::new(dir.path().join("decisions"), Some(Duration::from_secs(86_400)))),
        voices: Some(VoiceChain {
            sources: providers.speech_sources(&http),
            cache: ResultCache::new(dir.path().join("speech"), None),
            media_dir: dir.path().join("media"),
            media_name: name.clone(),
        }),
    };
    let check = |_: &Value| Vec::<Problem>::new();
    let req =
        PromptRequest::from_json(json!({"topic": "bench", "duration_s": 40, "visuals": ["stock", "generate", "cards"],
               "voice": {"engine": "elevenlabs"}}))
        .unwrap();

    let t = Instant::now();
    let first = director.direct(&req, &check).await.unwrap();
    let wall = t.elapsed().as_secs_f64();
    let searches = stock.searches().len();
    let images = painter.requests().len();
    let spoken = voice.requests().len();
    let sum = LLM.as_secs_f64()
        + searches as f64 * STOCK.as_secs_f64()
        + images as f64 * IMAGE.as_secs_f64()
        + spoken as f64 * SPEECH.as_secs_f64();
    // A scene that finds nothing searches its term (video, photo) and the four generic terms
    // (video, photo) before drawing: 10 searches, then one image.
    let slowest_scene = 10.0 * STOCK.as_secs_f64() + IMAGE.as_secs_f64();
    // Voices run beside the pictures: their scenes go through the plan's concurrency in turn.
    let voices = SCENES.div_ceil(SPEECH_CONCURRENCY) as f64 * SPEECH.as_secs_f64();
    let target = LLM.as_secs_f64() + slowest_scene.max(voices);
    println!("scenes: {SCENES}; provider calls: 1 plan, {searches} searches, {images} images, {spoken} voices");
    println!(
        "first run: wall {wall:.2} s; sum of provider latencies {sum:.1} s; target (plan + slowest scene or voices) {target:.1} s (+10%: {:.1} s)",
        target * 1.1
    );
    assert_eq!(first.visuals.iter().filter(|v| v.file.is_some()).count(), SCENES);
    assert_eq!(first.voices.len(), SCENES);

    let t = Instant::now();
    let again = director.direct(&req, &check).await.unwrap();
    let wall_again = t.elapsed().as_secs_f64();
    let new_calls = chat.requests().len() - 1 + painter.requests().len() - images + voice.requests().len() - spoken;
    println!(
        "same prompt again: wall {:.3} s, provider calls {new_calls} (ledger: {} entries, all cached: {})",
        wall_again,
        again.ledger.len(),
        again.ledger.iter().all(|e| e.cache_hit || e.unit_kind == "requests")
    );

    let cache = ResultCache::new(dir.path().join("images"), None);
    let key = CacheKey::new(
        "openai-images",
        "gpt-image-1-mini",
        &json!({"prompt": "picture 1", "width": 1280, "height": 720, "seed": 1}),
    );
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        assert!(cache.get(&key).await.is_some());
    }
    println!("cached image lookup: {:.3} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
}
