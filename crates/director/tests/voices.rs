//! Remote voices against a fake ElevenLabs speaking its wire format: every scene spoken (in
//! parallel within the plan's concurrency), the words timed from the character alignment into
//! the storyboard, the calls in the ledger, the same narration never paid for twice, and
//! failures named by stage and provider.

use std::path::Path;
use std::sync::Arc;

use reelsmith_director::config::{ElevenLabsSettings, ProvidersConfig};
use reelsmith_director::plan::Problem;
use reelsmith_director::voices::VoiceChain;
use reelsmith_director::{Director, DirectorError, PromptRequest, spec_problems};
use reelsmith_providers::cache::ResultCache;
use reelsmith_providers::speech::fake::{FakeSpeech, SECONDS_PER_CHAR, loud_at};
use serde_json::{Value, json};

fn director(fake: &FakeSpeech, dir: &Path) -> Director {
    let providers = ProvidersConfig {
        elevenlabs: Some(ElevenLabsSettings {
            api_key: "xi-test".into(),
            model: "eleven_multilingual_v2".into(),
            voice: "voice-default".into(),
            base_url: Some(fake.base.clone()),
            usd_per_1k_chars: 0.3,
            rpm: None,
            concurrency: 2,
            daily_budget_usd: None,
        }),
        ..Default::default()
    };
    let base = dir.to_path_buf();
    Director {
        voices: Some(VoiceChain {
            sources: providers.speech_sources(&reqwest::Client::new()),
            cache: ResultCache::new(dir.join("speech"), None),
            media_dir: dir.join("media"),
            media_name: Arc::new(move |p: &Path| p.strip_prefix(&base).unwrap().display().to_string()),
        }),
        ..Default::default()
    }
}

fn request(text: &str, voice: Value) -> PromptRequest {
    PromptRequest::from_json(json!({"text": text, "size": {"width": 320, "height": 180}, "voice": voice})).unwrap()
}

const TEXT: &str = "Lava pours from the crater.\n\nIt cools into black rock.\n\nPenguins never see it.";

#[tokio::test]
async fn every_scene_is_spoken_and_its_words_timed() {
    let fake = FakeSpeech::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = director(&fake, dir.path());
    let check = |board: &Value| -> Vec<Problem> { spec_problems(board, dir.path(), |_| vec![]) };
    let planned = d.direct(&request(TEXT, json!({"engine": "elevenlabs", "name": "voice-x"})), &check).await.unwrap();
    let scenes = planned.storyboard["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 3);
    assert_eq!(planned.voices.len(), 3);
    for (i, scene) in scenes.iter().enumerate() {
        let n = &scene["narration"];
        assert!(n.get("text").is_none(), "{n}");
        assert_eq!(n["transcript"], planned.plan.scenes[i].narration.trim());
        let file = dir.path().join(n["audio"].as_str().unwrap());
        let wav = std::fs::read(&file).unwrap();
        // Each timed word is spoken (loud) at its middle in the recording itself.
        let times = n["word_times"].as_array().unwrap();
        assert_eq!(times.len(), n["transcript"].as_str().unwrap().split_whitespace().count());
        for t in times {
            let (start, end) = (t[0].as_f64().unwrap(), t[1].as_f64().unwrap());
            assert!(loud_at(&wav, (start + end) / 2.0), "{n}");
            assert!(!loud_at(&wav, end + SECONDS_PER_CHAR / 2.0) || end == start, "silence after {t}");
        }
    }
    // The voice asked for, on every request; the renderer's own voice stays a local one.
    assert!(fake.requests().iter().all(|r| r.path == "/v1/text-to-speech/voice-x/with-timestamps"));
    assert_eq!(planned.storyboard["voice"]["engine"], "espeak-ng");
    let voice: Vec<_> = planned.ledger.iter().filter(|e| e.stage == "voice").collect();
    assert_eq!(voice.len(), 3);
    let chars: f64 = planned.plan.scenes.iter().map(|s| s.narration.trim().chars().count() as f64).sum();
    assert_eq!(voice.iter().map(|e| e.units).sum::<f64>(), chars, "billed characters match the fake's");
    let usd: f64 = voice.iter().map(|e| e.est_cost_usd).sum();
    assert!((usd - chars * 0.3 / 1000.0).abs() < 1e-9);
    assert!(planned.stages.iter().any(|s| s.stage == "voice"));

    // The same narration again: every line from the cache, no call.
    let calls = fake.requests().len();
    let again = d.direct(&request(TEXT, json!({"engine": "elevenlabs", "name": "voice-x"})), &check).await.unwrap();
    assert_eq!(fake.requests().len(), calls);
    assert!(again.ledger.iter().filter(|e| e.stage == "voice").all(|e| e.cache_hit && e.est_cost_usd == 0.0));
    assert_eq!(again.storyboard, planned.storyboard);
    // One scene's words changed: only that scene is spoken again.
    let edited = TEXT.replace("black rock", "grey stone");
    d.direct(&request(&edited, json!({"engine": "elevenlabs", "name": "voice-x"})), &check).await.unwrap();
    assert_eq!(fake.requests().len(), calls + 1);
    assert_eq!(fake.requests().last().unwrap().body["text"], "It cools into grey stone.");
}

#[tokio::test]
async fn voices_fail_by_name() {
    let fake = FakeSpeech::start().await;
    let dir = tempfile::tempdir().unwrap();
    let check = |_: &Value| -> Vec<Problem> { vec![] };
    // Not configured: the request's field, before anything is paid for.
    let bare = Director::default();
    let err = bare.direct(&request(TEXT, json!({"engine": "openai"})), &check).await.unwrap_err();
    assert!(matches!(&err, DirectorError::Invalid { field, .. } if field == "prompt.voice.engine"), "{err}");
    assert!(err.to_string().contains("openai voices are not configured"), "{err}");
    // Out of characters: the stage and the provider named; final.
    let d = director(&fake, dir.path());
    for _ in 0..3 {
        fake.refuse_next(
            401,
            json!({"detail": {"status": "quota_exceeded", "message": "This request exceeds your quota."}}),
        );
    }
    let err = d.direct(&request(TEXT, json!({"engine": "elevenlabs"})), &check).await.unwrap_err();
    assert_eq!(err.code(), "provider_quota");
    assert!(err.to_string().starts_with("voice: elevenlabs POST"), "{err}");
    assert!(!err.is_retryable());
}
