//! `reelsmith plan` and `reelsmith generate` end to end: a text narrated as written, a topic
//! planned by a model (a fake speaking OpenAI's Chat Completions format), the user's own
//! pictures matched to scenes, one edited scene re-rendered alone, bad input refused by field.

mod common;

use std::process::Command;

use common::{Fixture, mean_rgb};
use reelsmith_media::ffmpeg;
use reelsmith_providers::llm::fake::{FakeChat, Reply};
use serde_json::{Value, json};

fn reelsmith(f: &Fixture, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reelsmith"))
        .args(args)
        .args(["--cache-dir", f.path("cache").to_str().unwrap()])
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

const ARTICLE: &str = "How Volcanoes Work

Deep under the ground, rock melts into magma. The magma rises because it is lighter than the rock around it. When the pressure grows too high, the volcano erupts.

Lava flows down the slopes and cools into new rock. Ash clouds can rise many kilometres into the sky.";

#[test]
fn a_text_becomes_a_narrated_video_and_an_edited_scene_renders_alone() {
    let f = Fixture::new();
    std::fs::write(f.path("article.txt"), ARTICLE).unwrap();
    let (code, err) = reelsmith(&f, &["generate", "--text", "article.txt", "--size", "320x180", "-o", "out.mp4"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("pictures: 0 assets, 0 stock, 0 generated, 4 cards"), "{err}");
    assert!(err.contains("provider calls 0"), "{err}");
    let info = ffmpeg::probe(&f.path("out.mp4")).unwrap();
    let v = info.video().unwrap();
    assert_eq!((v.width, v.height), (320, 180));
    assert!(info.audio().is_some());
    // Every word is spoken: about 40 words at a natural pace, plus the title.
    assert!((10.0..40.0).contains(&info.duration), "{}", info.duration);
    // The storyboard is kept beside the video: a title card, then the article's scenes.
    let board: Value = serde_json::from_slice(&std::fs::read(f.path("out.storyboard.json")).unwrap()).unwrap();
    let scenes = board["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 4, "{board}");
    assert_eq!(scenes[0]["title"], "How Volcanoes Work");
    assert!(scenes[1]["narration"]["text"].as_str().unwrap().starts_with("Deep under the ground"));
    // The card is drawn: its gradient, not black.
    let rgb = mean_rgb(&f.path("out.mp4"), 0.3, 0, 0, 320, 60);
    assert!(rgb.iter().sum::<f64>() > 60.0, "{rgb:?}");

    // Edit one scene's words and render the storyboard again: only that scene is encoded.
    let mut edited = board.clone();
    edited["scenes"][3]["narration"]["text"] = json!("Ash clouds rise high into the sky.");
    f.write_spec("edited.json", &edited);
    let (code, err) = reelsmith(&f, &["render", "edited.json", "-o", "edited.mp4", "--report", "report.json", "-q"]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_slice(&std::fs::read(f.path("report.json")).unwrap()).unwrap();
    let (encoded, total) = (report["segments_encoded"].as_u64().unwrap(), report["segments_total"].as_u64().unwrap());
    assert!((1..=2).contains(&encoded) && total >= 4, "{encoded} of {total} segments");
}

fn plan_json(terms: &[&str]) -> String {
    let scene = |n: &str, title: Value, terms: &[&str]| json!({"narration": n, "title": title, "visual": {"search_terms": terms, "image_prompt": "x"}, "motion": "zoom-in"});
    json!({"title": "Volcanoes", "scenes": [
        scene("Volcanoes are openings in the crust.", json!("Volcanoes"), &["crater"]),
        scene("Lava flows glow orange at night.", Value::Null, terms),
    ]})
    .to_string()
}

#[test]
fn a_topic_is_planned_by_the_model_with_the_users_pictures_and_planned_once() {
    let f = Fixture::new();
    std::fs::create_dir(f.path("pics")).unwrap();
    f.solid_png("pics/lava-flow.png", 320, 180, [230, 20, 10]);
    f.solid_png("pics/beach.png", 320, 180, [10, 20, 230]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeChat::start());
    fake.push(Reply::content(r#"{"title": "Volcanoes", "scenes": []}"#));
    fake.push(Reply::content(plan_json(&["lava flow", "night"])));
    let base = fake.base_url();
    let topic = [
        "volcanoes",
        "--duration",
        "10",
        "--size",
        "320x180",
        "--assets",
        "pics",
        "--llm-base-url",
        &base,
        "--llm-model",
        "test-model",
    ];
    let args: Vec<&str> = ["generate"].iter().chain(&topic).chain(&["-o", "v.mp4"]).copied().collect();
    let (code, err) = reelsmith(&f, &args);
    assert_eq!(code, 0, "{err}");
    // The empty plan was sent back with its problem; the second answer was used.
    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].body["messages"][3]["content"].as_str().unwrap().contains("the plan has no scenes"));
    assert_eq!(seen[0].body["model"], "test-model");
    assert!(err.contains("pictures: 1 assets, 0 stock, 0 generated, 1 cards"), "{err}");
    let board: Value = serde_json::from_slice(&std::fs::read(f.path("v.storyboard.json")).unwrap()).unwrap();
    assert_eq!(board["scenes"][1]["image"], "pics/lava-flow.png");
    // The second scene shows the red picture.
    let info = ffmpeg::probe(&f.path("v.mp4")).unwrap();
    let red = mean_rgb(&f.path("v.mp4"), info.duration - 0.5, 0, 60, 320, 120);
    assert!(red[0] > 150.0 && red[2] < 80.0, "{red:?}");

    // The same prompt again: planned from the cache, no call to the model.
    let args: Vec<&str> =
        ["plan"].iter().chain(&topic).chain(&["-o", "again.json", "--details", "details.json"]).copied().collect();
    let (code, err) = reelsmith(&f, &args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.requests().len(), 2);
    assert!(err.contains("provider calls 0 (1 cached)"), "{err}");
    let details: Value = serde_json::from_slice(&std::fs::read(f.path("details.json")).unwrap()).unwrap();
    assert_eq!(details["ledger"][0]["cache_hit"], true);
    assert_eq!(details["visuals"][1]["source"], "asset");
    assert_eq!(details["visuals"][0]["source"], "card");
    assert!(details["visuals"][0]["skipped"][0].as_str().unwrap().starts_with("assets: none match"));
}

#[test]
fn bad_prompt_input_is_refused_naming_the_field() {
    let f = Fixture::new();
    let (code, err) = reelsmith(&f, &["plan", "volcanoes", "--duration", "2", "-o", "p.json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("prompt.duration_s"), "{err}");
    let (code, err) = reelsmith(&f, &["plan", "volcanoes", "--visuals", "stock,paintings", "-o", "p.json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("prompt.visuals[1]"), "{err}");
    std::fs::write(f.path("huge.txt"), "word ".repeat(20_000)).unwrap();
    let (code, err) = reelsmith(&f, &["plan", "--text", "huge.txt", "-o", "p.json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("prompt.text: is 100000 characters"), "{err}");
    // No planner configured, and none installed (the models folder has no default planner).
    std::fs::create_dir_all(f.path("no-models")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_reelsmith"))
        .args(["plan", "volcanoes", "-o", "p.json", "--cache-dir", f.path("cache").to_str().unwrap()])
        .env("REELSMITH_MODELS_DIR", f.path("no-models"))
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    let (code, err) = (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a topic needs a language model"), "{err}");
    assert!(!f.path("p.json").exists());
}

#[test]
fn stock_footage_matching_the_narration_plays_in_its_scene() {
    let f = Fixture::new();
    // A one-second red clip and a blue photo on the fake stock site.
    let clip = common::red_clip(&f.path("red.mp4"));
    let photo = f.solid_png("blue.png", 320, 180, [10, 20, 230]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(reelsmith_providers::stock::fake::FakeStock::start());
    let offer = |query: &str, kind, name: &str, bytes: Vec<u8>| reelsmith_providers::stock::fake::Offer {
        query: query.into(),
        kind,
        name: name.into(),
        width: 320,
        height: 180,
        bytes,
    };
    fake.offer(offer("lava", "video", "lava.mp4", std::fs::read(&clip).unwrap()));
    fake.offer(offer("glacier", "photo", "glacier.png", std::fs::read(&photo).unwrap()));
    std::fs::write(
        f.path("reelsmith.toml"),
        format!(
            "[providers.pexels]\napi_key = \"{}\"\nbase_url = \"{}\"\n",
            reelsmith_providers::stock::fake::FAKE_PEXELS_KEY,
            fake.base
        ),
    )
    .unwrap();
    std::fs::write(
        f.path("a.txt"),
        "Red lava glows brightly in the volcano tonight.\n\nA glacier moves slowly through the valley.",
    )
    .unwrap();
    let args = ["generate", "--text", "a.txt", "--size", "320x180", "--config", "reelsmith.toml", "-o", "stock.mp4"];
    let (code, err) = reelsmith(&f, &args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("pictures: 0 assets, 2 stock"), "{err}");
    let board: Value = serde_json::from_slice(&std::fs::read(f.path("stock.storyboard.json")).unwrap()).unwrap();
    assert_eq!(board["scenes"][0]["video"]["loop"], true, "{board}");
    assert!(board["scenes"][0]["video"]["file"].as_str().unwrap().starts_with("media/pexels-"));
    assert!(board["scenes"][1]["image"].as_str().unwrap().starts_with("media/pexels-"));
    // The clip loops under the first scene's narration; the photo shows in the second.
    let info = ffmpeg::probe(&f.path("stock.mp4")).unwrap();
    let red = mean_rgb(&f.path("stock.mp4"), 1.5, 0, 0, 320, 60);
    assert!(red[0] > 150.0 && red[2] < 80.0, "{red:?}");
    let blue = mean_rgb(&f.path("stock.mp4"), info.duration - 0.5, 0, 0, 320, 60);
    assert!(blue[2] > 150.0 && blue[0] < 80.0, "{blue:?}");
    // Each search was made once; downloads kept beside the storyboard.
    let searches: Vec<(String, String)> =
        fake.searches().iter().map(|s| (s.path.clone(), s.query["query"].clone())).collect();
    let unique: std::collections::HashSet<_> = searches.iter().collect();
    assert_eq!(unique.len(), searches.len(), "{searches:?}");
    // Video first: the lava scene's video search found its clip, so no photo was looked for.
    assert!(searches.contains(&("/videos/search".to_string(), "lava".to_string())), "{searches:?}");
    assert!(!searches.contains(&("/v1/search".to_string(), "lava".to_string())), "{searches:?}");
    assert_eq!(std::fs::read_dir(f.path("media")).unwrap().count(), 2);
}

/// Offline: a topic planned by a model in this process (SmolLM2-135M under the plan's grammar;
/// builds with the `local-llm` feature, as scripts/test.sh does) becomes a narrated video with no
/// network and no configuration but the model's path. Without the feature the same flag is
/// refused with what to build.
#[test]
fn a_topic_is_planned_offline_by_a_local_model() {
    let f = Fixture::new();
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/llm/SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = model.to_str().unwrap();
    let args = [
        "generate",
        "how bees make honey",
        "--duration",
        "10",
        "--size",
        "320x180",
        "--local-model",
        model,
        "-o",
        "bees.mp4",
    ];
    let (code, err) = reelsmith(&f, &args);
    if cfg!(feature = "local-llm") {
        assert_eq!(code, 0, "{err}");
        // One call, or a few when the tiny model's plan needed repair; all free.
        assert!(err.contains(" (0 cached), est. $0.0000"), "{err}");
        let info = ffmpeg::probe(&f.path("bees.mp4")).unwrap();
        assert_eq!((info.video().unwrap().width, info.video().unwrap().height), (320, 180));
        assert!(info.audio().is_some() && info.duration > 1.0, "{}", info.duration);
        let board: Value = serde_json::from_slice(&std::fs::read(f.path("bees.storyboard.json")).unwrap()).unwrap();
        assert!(!board["scenes"].as_array().unwrap().is_empty(), "{board}");
    } else {
        assert_ne!(code, 0);
        assert!(err.contains("--features local-llm"), "{err}");
    }
}
