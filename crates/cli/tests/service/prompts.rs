//! `POST /api/v1/generations` with a `prompt`: planned by a language model (a fake speaking
//! OpenAI's Chat Completions format, configured as `[providers.llm]`) or narrated as written,
//! accepted at once and planned by its job, stored with its plan and cost ledger, rendered; bad
//! prompts refused by field; provider failures named, with the breaker failing fast.

use std::time::Duration;

use reelsmith_providers::llm::fake::{FakeChat, Reply};
use serde_json::{Value, json};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(120);

fn plan(topic: &str) -> String {
    json!({"title": topic, "scenes": [
        {"narration": format!("This is a short film about {topic}."), "title": topic, "visual": {"search_terms": [topic], "image_prompt": topic}, "motion": "zoom-in"},
        {"narration": "It ends here.", "title": null, "visual": {"search_terms": ["sunset"], "image_prompt": "a sunset"}, "motion": "pan-left"},
    ]})
    .to_string()
}

async fn server_with_model(dir: &std::path::Path, fake: &FakeChat) -> Server {
    let config = dir.join("reelsmith.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.llm]\nname = \"openai\"\nbase_url = \"{}\"\nmodel = \"gpt-test\"\napi_key = \"sk-test\"\nusd_per_mtok_in = 0.15\nusd_per_mtok_out = 0.6\n",
            fake.base_url()
        ),
    )
    .unwrap();
    Server::start(&dir.join("data"), &[("REELSMITH_CONFIG", config.to_str().unwrap())])
}

fn prompt(topic: &str) -> Value {
    json!({"prompt": {"topic": topic, "duration_s": 8, "size": {"width": 320, "height": 180}}, "dedupe": false})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_is_planned_stored_with_its_ledger_and_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeChat::start().await;
    fake.respond_with(|body| {
        let topic = body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("Topic: ")
            .to_string();
        Reply::content(plan(&topic))
    });
    let s = server_with_model(dir.path(), &fake).await;

    // The model answers slowly: the request is queued at once and planned by its job.
    fake.set_latency(Duration::from_millis(1500));
    let (code, body) = s.submit(&prompt("volcanoes")).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["prompt"]["request"]["topic"], "volcanoes");
    assert!(body["prompt"].get("plan").is_none(), "planned by the job, not the request: {body}");
    let id = body["id"].as_str().unwrap().to_string();
    // Seen planning (the model takes 1.5 s), before anything renders.
    let planning = loop {
        let st = s.status(&id).await;
        if st["stage"] == "plan" || matches!(st["status"].as_str(), Some("succeeded" | "failed")) {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (planning["status"].as_str(), planning["stage"].as_str()),
        (Some("running"), Some("plan")),
        "{planning}"
    );
    assert!(planning.get("prompt").and_then(|p| p.get("plan")).is_none(), "{planning}");
    let done = s.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["prompt"]["plan"]["scenes"].as_array().unwrap().len(), 2);
    let ledger = &done["prompt"]["ledger"][0];
    assert_eq!(
        (ledger["stage"].as_str(), ledger["provider"].as_str(), ledger["cache_hit"].as_bool()),
        (Some("plan"), Some("openai"), Some(false))
    );
    assert!(ledger["est_cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(done["prompt"]["visuals"][1]["source"], "card");
    // The report has the planning beside the render: its ledger and stage times.
    let report: Value = s.get(&format!("/api/v1/generations/{id}/report")).send().await.unwrap().json().await.unwrap();
    assert_eq!(report["prompt"]["ledger"][0]["provider"], "openai", "{report}");
    assert_eq!(report["prompt"]["stages"][0]["stage"], "plan", "{report}");
    assert!(report["stages"]["segments"].is_object(), "{report}");
    // The storyboard is stored as the generation's spec: editable and resubmittable.
    assert_eq!(done["spec"]["scenes"].as_array().unwrap().len(), 2);
    assert_eq!(done["spec"]["scenes"][0]["narration"]["text"], "This is a short film about volcanoes.");
    let video = s.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap().bytes().await.unwrap();
    let path = dir.path().join("v.mp4");
    std::fs::write(&path, &video).unwrap();
    let probe = ffprobe(&path);
    let streams = probe["streams"].as_array().unwrap();
    assert!(streams.iter().any(|st| st["codec_type"] == "audio"));
    let v = streams.iter().find(|st| st["codec_type"] == "video").unwrap();
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(320), Some(180)));

    // The same prompt again: planned from the cache, no provider call.
    let (code, again) = s.submit(&prompt("volcanoes")).await;
    assert_eq!(code, 202, "{again}");
    let again = s.wait_final(again["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(again["prompt"]["ledger"][0]["cache_hit"], true);
    assert_eq!(again["prompt"]["ledger"][0]["est_cost_usd"], 0.0);

    // A text needs no model at all.
    let (code, text) =
        s.submit(&json!({"prompt": {"text": "Lava flows downhill. It cools into black rock.", "size": "360p"}})).await;
    assert_eq!(code, 202, "{text}");
    let done = s.wait_final(text["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["prompt"]["ledger"], json!([]));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_prompts_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    // No planner configured, and none installed: a models folder without the default planner.
    let no_models = dir.path().join("no-models");
    std::fs::create_dir_all(&no_models).unwrap();
    let s = Server::start(&dir.path().join("data"), &[("REELSMITH_MODELS_DIR", no_models.to_str().unwrap())]);
    let cases = [
        (json!({"prompt": {"topic": ""}}), "prompt_invalid", "prompt.topic"),
        (json!({"prompt": {"text": "x".repeat(100_000)}}), "prompt_invalid", "prompt.text"),
        (json!({"prompt": {"topic": "a", "visuals": ["stock", "paintings"]}}), "prompt_invalid", "prompt.visuals[1]"),
        (json!({"prompt": {"topic": "a", "music": "/etc/passwd"}}), "prompt_invalid", "prompt.music"),
        (json!({"prompt": {"topic": "a"}, "spec": {"version": 1}}), "invalid_request", "prompt"),
    ];
    for (body, code, path) in cases {
        let (status, err) = s.submit(&body).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert_eq!(err["error"]["code"], code, "{err}");
        assert_eq!(err["error"]["issues"][0]["path"], path, "{err}");
    }
    // A topic without a configured model says what to configure.
    let (status, err) = s.submit(&json!({"prompt": {"topic": "volcanoes"}})).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "no_model");
    assert!(err["error"]["message"].as_str().unwrap().contains("[providers.llm]"), "{err}");
    // Nothing was stored.
    let list: Value = s.get("/api/v1/generations").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_out_of_quota_is_named_and_then_skipped_while_its_breaker_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeChat::start().await;
    fake.push(Reply::insufficient_quota());
    let s = server_with_model(dir.path(), &fake).await;
    let (code, body) = s.submit(&prompt("geysers")).await;
    assert_eq!(code, 202, "{body}");
    // Billing: final at once (one attempt), the stage and provider named.
    let failed = s.wait_final(body["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!((failed["status"].as_str(), failed["attempts"].as_u64()), (Some("failed"), Some(1)), "{failed}");
    assert_eq!(failed["error"]["code"], "provider_quota", "{failed}");
    let msg = failed["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("plan: openai POST /chat/completions answered 429: insufficient_quota"), "{msg}");
    // The breaker is open: no call reaches the provider; the job is tried again later (the
    // provider may come back) and fails naming the open breaker.
    let (code, body) = s.submit(&prompt("glaciers")).await;
    assert_eq!(code, 202, "{body}");
    let failed = s.wait_final(body["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(failed["error"]["code"], "provider_unavailable", "{failed}");
    assert!(failed["attempts"].as_u64().unwrap() > 1, "retried: {failed}");
    assert_eq!(fake.requests().len(), 1);
    // Readiness and metrics show the open breaker; storyboards still render, so only degraded.
    let ready: Value = s.get("/ready").send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["providers"]["breakers"]["openai"]["breaker"], "open", "{ready}");
    assert!(
        ready["checks"]["providers"]["breakers"]["openai"]["reason"].as_str().unwrap().contains("insufficient_quota")
    );
    let metrics = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reelsmith_provider_breaker_open{provider=\"openai\"} 1"), "{metrics}");
    assert!(metrics.contains("reelsmith_provider_calls_total{provider=\"openai\",outcome=\"quota\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_and_generated_pictures_become_the_callers_assets() {
    use reelsmith_providers::images::fake::FakeImages;
    use reelsmith_providers::stock::fake::{FAKE_PEXELS_KEY, FakeStock, Offer};

    let dir = tempfile::tempdir().unwrap();
    let clip = crate::common::red_clip(&dir.path().join("red.mp4"));
    let stock = FakeStock::start().await;
    stock.offer(Offer {
        query: "lava".into(),
        kind: "video",
        name: "lava.mp4".into(),
        width: 320,
        height: 180,
        bytes: std::fs::read(&clip).unwrap(),
    });
    let painter = FakeImages::start().await;
    let config = dir.path().join("reelsmith.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.pexels]\napi_key = \"{FAKE_PEXELS_KEY}\"\nbase_url = \"{}\"\n\n[providers.sd_webui]\nbase_url = \"{}\"\n",
            stock.base, painter.base
        ),
    )
    .unwrap();
    let s = Server::start(&dir.path().join("data"), &[("REELSMITH_CONFIG", config.to_str().unwrap())]);
    let text = "Lava pours from the crater.\n\nPenguins waddle across the snow.";
    let (code, body) = s.submit(&json!({"prompt": {"text": text, "size": {"width": 320, "height": 180}}})).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let done = s.wait_final(id, LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let visuals = &done["prompt"]["visuals"];
    assert_eq!(
        (visuals[0]["source"].as_str(), visuals[0]["provider"].as_str()),
        (Some("stock"), Some("pexels")),
        "{visuals}"
    );
    assert_eq!(
        (visuals[1]["source"].as_str(), visuals[1]["provider"].as_str()),
        (Some("generated"), Some("sd-webui")),
        "{visuals}"
    );
    // Both are the caller's assets now; the storyboard names them so.
    let clip_ref = visuals[0]["file"].as_str().unwrap();
    assert!(clip_ref.starts_with("asset:"), "{clip_ref}");
    assert_eq!(done["spec"]["scenes"][0]["video"]["file"], clip_ref);
    assert!(done["spec"]["scenes"][1]["image"].as_str().unwrap().starts_with("asset:"));
    let asset = s.get(&format!("/api/v1/assets/{}", clip_ref.trim_start_matches("asset:"))).send().await.unwrap();
    assert_eq!(asset.status().as_u16(), 200);
    let meta: Value = asset.json().await.unwrap();
    assert_eq!(meta["media_type"], "video/mp4", "{meta}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_callers_own_pictures_are_matched_to_scenes_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let png = |rgb: [u8; 3]| {
        let img = image::RgbImage::from_pixel(320, 180, image::Rgb(rgb));
        let mut out = std::io::Cursor::new(vec![]);
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let upload = |name: &'static str, bytes: Vec<u8>| {
        let s = &s;
        async move {
            let r = s.post("/api/v1/assets").header("x-file-name", name).body(bytes).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 201, "{name}");
            r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
        }
    };
    let lava = upload("lava-flow.png", png([230, 20, 10])).await;
    upload("beach.png", png([10, 20, 230])).await;
    let text = "Volcanoes are mountains of fire.\n\nLava flows glow at night.";
    let (code, body) = s.submit(&json!({"prompt": {"text": text, "size": {"width": 320, "height": 180}}})).await;
    assert_eq!(code, 202, "{body}");
    let done = s.wait_final(body["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let visuals = &done["prompt"]["visuals"];
    assert_eq!(visuals[1]["source"], "asset", "{visuals}");
    assert_eq!(visuals[1]["file"], format!("asset:{lava}"));
    assert_eq!(visuals[0]["source"], "card", "{visuals}");
    assert_eq!(done["spec"]["scenes"][1]["image"], format!("asset:{lava}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_voice_speaks_every_scene_and_times_its_subtitles() {
    use reelsmith_providers::speech::fake::FakeSpeech;

    let dir = tempfile::tempdir().unwrap();
    let voice = FakeSpeech::start().await;
    let config = dir.path().join("reelsmith.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.elevenlabs]\napi_key = \"xi-test\"\nbase_url = \"{}\"\nvoice = \"voice-rachel\"\nusd_per_1k_chars = 0.3\n",
            voice.base
        ),
    )
    .unwrap();
    let s = Server::start(&dir.path().join("data"), &[("REELSMITH_CONFIG", config.to_str().unwrap())]);
    let text = "Lava pours from the crater.\n\nIt cools into black rock.";
    let request = json!({"prompt": {"text": text, "size": {"width": 320, "height": 180},
                                    "voice": {"engine": "elevenlabs"}}});
    let (code, body) = s.submit(&request).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let done = s.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Each scene's narration is the caller's audio asset, with the provider's word times.
    let scenes = done["spec"]["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 2);
    let mut spoken = 0.0;
    for scene in scenes {
        let n = &scene["narration"];
        assert!(n["audio"].as_str().unwrap().starts_with("asset:"), "{n}");
        let words = n["transcript"].as_str().unwrap().split_whitespace().count();
        assert_eq!(n["word_times"].as_array().unwrap().len(), words, "{n}");
        spoken += n["transcript"].as_str().unwrap().chars().count() as f64 * 0.06;
        let asset = n["audio"].as_str().unwrap().trim_start_matches("asset:");
        let meta: Value = s.get(&format!("/api/v1/assets/{asset}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(meta["media_type"], "audio/wav", "{meta}");
    }
    assert_eq!(voice.requests().len(), 2);
    assert!(voice.requests().iter().all(|r| r.path == "/v1/text-to-speech/voice-rachel/with-timestamps"));
    let ledger: Vec<&Value> =
        done["prompt"]["ledger"].as_array().unwrap().iter().filter(|e| e["stage"] == "voice").collect();
    assert_eq!(ledger.len(), 2, "{}", done["prompt"]);
    assert!(ledger.iter().all(|e| e["provider"] == "elevenlabs" && e["unit_kind"] == "characters"));
    // The video carries the provider's speech: as long as the recordings (plus padding and
    // the crossfade), with sound.
    let video = s.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap().bytes().await.unwrap();
    let path = dir.path().join("v.mp4");
    std::fs::write(&path, &video).unwrap();
    let probe = ffprobe(&path);
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(duration >= spoken && duration <= spoken + 1.5, "{duration} s for {spoken} s of speech");
    assert!(probe["streams"].as_array().unwrap().iter().any(|st| st["codec_type"] == "audio"));
}

/// A key's prompts spend within its daily provider budget: what a plan cost (the ledger's
/// estimate) is added to the key's day, and once the day's budget is spent further prompts are
/// refused with 429 `budget_exceeded` naming it, until midnight UTC; storyboards still render.
#[tokio::test(flavor = "multi_thread")]
async fn a_keys_prompts_stop_at_its_daily_provider_budget() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeChat::start().await;
    fake.respond_with(|_| Reply::content(plan("tides")));
    let out = std::process::Command::new(BIN)
        .args(["keys", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["create", "alice", "--rate", "1000", "--burst", "1000", "--daily-provider-usd", "0.00001"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let config = dir.path().join("reelsmith.toml");
    std::fs::write(
        &config,
        format!(
            "require_api_key = true\n\n[providers.llm]\nname = \"openai\"\nbase_url = \"{}\"\nmodel = \"gpt-test\"\napi_key = \"sk-test\"\nusd_per_mtok_in = 0.15\nusd_per_mtok_out = 0.6\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let mut s = Server::start(&dir.path().join("data"), &[("REELSMITH_CONFIG", config.to_str().unwrap())]);
    s.token = Some(token);
    let (code, body) = s.submit(&prompt("tides")).await;
    assert_eq!(code, 202, "{body}");
    let done = s.wait_final(body["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let cost = done["prompt"]["ledger"][0]["est_cost_usd"].as_f64().unwrap();
    assert!(cost > 0.00001, "the plan costs more than the budget: {cost}");
    let me: Value = s.get("/api/v1/keys/self").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["limits"]["daily_provider_usd"], 0.00001, "{me}");
    assert!((me["provider_usd_today"].as_f64().unwrap() - cost).abs() < 1e-12, "{me}");
    // Spent: the next prompt is refused at once, naming the budget; nothing reaches the model.
    let r = s.post("/api/v1/generations").json(&prompt("waves")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "retry after {retry} s");
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "budget_exceeded", "{err}");
    assert_eq!(err["error"]["issues"][0]["path"], "prompt", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("per day (UTC) on paid providers"), "{err}");
    assert_eq!(fake.requests().len(), 1);
    // A storyboard needs no provider: it still renders.
    let spec = json!({"version": 1, "output": {"width": 320, "height": 180, "fps": 10},
                      "scenes": [{"duration": 1.0, "background": {"color": "#123456"}}]});
    let (code, body) = s.submit(&json!({"spec": spec})).await;
    assert_eq!(code, 202, "{body}");
}

/// A provider's daily budget over every key (`[providers.llm] daily_budget_usd`, here less than
/// one call): the plan's first attempt is paid and counted at once, so its repair is refused
/// (the job fails naming the budget, not retried); the failed plan's call was charged, so the
/// next topic (which needs the provider) is refused at POST; a text (which does not) renders.
#[tokio::test(flavor = "multi_thread")]
async fn a_providers_daily_budget_counts_failed_plans_and_then_refuses_topics() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeChat::start().await;
    fake.respond_with(|_| Reply::content("Sure! Here is a storyboard: ..."));
    let config = dir.path().join("reelsmith.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.llm]\nname = \"openai\"\nbase_url = \"{}\"\nmodel = \"gpt-test\"\napi_key = \"sk-test\"\nusd_per_mtok_in = 0.15\nusd_per_mtok_out = 0.6\ndaily_budget_usd = 0.00001\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let s = Server::start(&dir.path().join("data"), &[("REELSMITH_CONFIG", config.to_str().unwrap())]);
    let (code, body) = s.submit(&prompt("tides")).await;
    assert_eq!(code, 202, "{body}");
    let done = s.wait_final(body["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "provider_quota", "{done}");
    let msg = done["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("plan: openai: this server's daily budget for openai ($0.00) is spent"), "{msg}");
    assert_eq!(done["attempts"], 1, "a spent budget is not retried: {done}");
    assert_eq!(fake.requests().len(), 1, "the repair was never sent");
    // The provider's day is spent by the failed plan: the next topic is refused before any call.
    let r = s.post("/api/v1/generations").json(&prompt("waves")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "budget_exceeded", "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("openai: this server's daily budget for openai ($0.00) is spent"), "{msg}");
    assert_eq!(fake.requests().len(), 1);
    // A text needs no model: accepted and rendered.
    let (code, body) = s
        .submit(&json!({"prompt": {"text": "The sea rises and falls twice a day.",
                                                   "size": {"width": 320, "height": 180}}}))
        .await;
    assert_eq!(code, 202, "{body}");
    let done = s.wait_final(body["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

/// A Replicate text-to-video model draws a scene's clip; the prediction runs long, and its
/// signed webhook to this server's `/callbacks/replicate` ends the wait (a poll would still
/// see it running). Forged deliveries are refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_replicate_video_model_makes_the_scene_and_reports_by_webhook() {
    use reelsmith_providers::images::fake::{FAKE_WEBHOOK_SECRET, FakeImages};

    let dir = tempfile::tempdir().unwrap();
    let clip = crate::common::red_clip(&dir.path().join("red.mp4"));
    let replicate = FakeImages::start().await;
    replicate.set_output(std::fs::read(&clip).unwrap());
    replicate.processing_polls(1_000_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("reelsmith.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.replicate]\napi_token = \"r8_test\"\nbase_url = \"{}\"\nvideo_model = \"fake/video-model\"\nusd_per_second = 0.01\nwebhook_url = \"http://127.0.0.1:{port}/callbacks/replicate\"\nwebhook_secret = \"{FAKE_WEBHOOK_SECRET}\"\n\n[providers.replicate.video_input]\nduration = 5\n",
            replicate.base
        ),
    )
    .unwrap();
    let bind = format!("127.0.0.1:{port}");
    let s = Server::start(
        &dir.path().join("data"),
        &[("REELSMITH_CONFIG", config.to_str().unwrap()), ("REELSMITH_BIND", bind.as_str())],
    );
    let req = json!({"prompt": {"text": "Waves roll onto the beach.", "visuals": ["generate"],
                                "size": {"width": 320, "height": 180}}});
    let (code, body) = s.submit(&req).await;
    assert_eq!(code, 202, "{body}");
    let done = s.wait_final(body["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let visual = &done["prompt"]["visuals"][0];
    assert_eq!((visual["source"].as_str(), visual["provider"].as_str()), (Some("generated"), Some("replicate")));
    let file = done["spec"]["scenes"][0]["video"]["file"].as_str().unwrap();
    assert!(file.starts_with("asset:"), "{done}");
    let seen = replicate.requests();
    assert_eq!(seen[0].path, "/v1/models/fake/video-model/predictions");
    assert_eq!(seen[0].body["input"]["duration"], 5);
    assert!(seen.iter().all(|r| !r.path.starts_with("/v1/predictions/")), "no polling: the webhook came");
    let entry = done["prompt"]["ledger"].as_array().unwrap().iter().find(|e| e["provider"] == "replicate").unwrap();
    assert_eq!((entry["model"].as_str(), entry["unit_kind"].as_str()), (Some("fake/video-model"), Some("seconds")));
    // The video is the clip the model made: red.
    let id = body["id"].as_str().unwrap();
    let video = s.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap().bytes().await.unwrap();
    let mp4 = dir.path().join("out.mp4");
    std::fs::write(&mp4, video).unwrap();
    let [r, g, b] = crate::common::mean_rgb(&mp4, 0.5, 120, 60, 200, 120);
    assert!(r > 150.0 && g < 80.0 && b < 80.0, "{r} {g} {b}");
    // A forged delivery (wrong signature) is refused with a JSON error.
    let forged = s
        .post("/callbacks/replicate")
        .header("webhook-id", "msg_x")
        .header("webhook-timestamp", "1")
        .header("webhook-signature", "v1,AAAA")
        .body(r#"{"id": "pred1", "status": "succeeded"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let err: Value = forged.json().await.unwrap();
    assert_eq!(err["error"]["code"], "bad_signature", "{err}");
}
