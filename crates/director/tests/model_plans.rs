//! Planning a topic with a language model, against a fake that speaks OpenAI's Chat
//! Completions wire format: repairs, failures named by stage and provider, caching, the ledger.

use std::sync::Arc;
use std::time::Duration;

use reelsmith_director::plan::Problem;
use reelsmith_director::{Director, DirectorError, PLAN_ATTEMPTS, PromptRequest, spec_problems};
use reelsmith_providers::cache::ResultCache;
use reelsmith_providers::llm::fake::{FakeChat, Reply};
use reelsmith_providers::llm::{ChatClient, ChatConfig};
use reelsmith_providers::{Gate, Limits};
use serde_json::{Value, json};

fn good_plan(scenes: usize) -> String {
    let scenes: Vec<Value> = (0..scenes)
        .map(|i| {
            json!({"narration": format!("Scene {i} tells how lava flows from the crater."), "title": if i == 0 { json!("Volcanoes") } else { Value::Null },
                   "visual": {"search_terms": ["lava flow", "crater"], "image_prompt": "a glowing lava flow at night"},
                   "motion": "zoom-in"})
        })
        .collect();
    json!({"title": "Volcanoes", "scenes": scenes}).to_string()
}

fn director(fake: &FakeChat, cache: Option<&std::path::Path>) -> Director {
    let cfg = ChatConfig {
        provider: "openai".into(),
        base_url: fake.base_url(),
        api_key: Some("sk-test".into()),
        model: "gpt-test".into(),
        usd_per_mtok_in: 0.15,
        usd_per_mtok_out: 0.6,
    };
    let limits =
        Limits { base_backoff: Duration::from_millis(5), max_backoff: Duration::from_millis(20), ..Limits::default() };
    let client = ChatClient::new(reqwest::Client::new(), cfg, Arc::new(Gate::new("openai", limits)));
    Director {
        model: Some(Arc::new(client)),
        plans: cache.map(|d| ResultCache::new(d, None)),
        assets: vec![],
        stock: None,
        images: None,
        decisions: None,
        voices: None,
    }
}

fn check(board: &Value) -> Vec<Problem> {
    spec_problems(board, std::path::Path::new("."), |_| vec![])
}

fn topic(t: &str) -> PromptRequest {
    PromptRequest::from_json(json!({"topic": t, "duration_s": 20, "size": {"width": 320, "height": 180}})).unwrap()
}

#[tokio::test]
async fn a_malformed_plan_is_repaired_with_its_problems_fed_back() {
    let fake = FakeChat::start().await;
    fake.push(Reply::content(r#"{"title": "Volcanoes", "scenes": [{"narration": "Lava"#));
    fake.push(Reply::content(r#"{"title": "Volcanoes", "scenes": [{"narration": "", "title": null, "visual": {"search_terms": [], "image_prompt": ""}, "motion": "zoom-in"}]}"#));
    fake.push(Reply::content(good_plan(3)));
    let planned = director(&fake, None).direct(&topic("volcanoes"), &check).await.unwrap();
    assert_eq!(planned.plan.scenes.len(), 3);
    let seen = fake.requests();
    assert_eq!(seen.len(), 3);
    // The second request carries the first answer and what was wrong with it.
    let msgs = seen[1].body["messages"].as_array().unwrap();
    assert_eq!(msgs[2]["role"], "assistant");
    assert!(msgs[3]["content"].as_str().unwrap().contains("EOF"), "{}", msgs[3]);
    let msgs = seen[2].body["messages"].as_array().unwrap();
    assert!(msgs[5]["content"].as_str().unwrap().contains("scenes[0].narration: is empty"), "{}", msgs[5]);
    // The strict schema went with every request.
    assert_eq!(seen[0].body["response_format"]["json_schema"]["strict"], true);
    // The ledger has the three calls, priced from the fake's usage.
    assert_eq!(planned.ledger.len(), 3);
    let tokens: f64 = planned.ledger.iter().map(|e| e.units).sum();
    let prompts: u64 = (0..3).map(|i| fake.prompt_tokens(i)).sum();
    assert!(tokens > prompts as f64, "prompt plus completion tokens: {tokens} > {prompts}");
    assert!(planned.ledger.iter().all(|e| e.provider == "openai" && !e.cache_hit && e.est_cost_usd > 0.0));
    // The storyboard is a valid spec voiced and subtitled.
    let spec = reelsmith_spec::parse(&planned.storyboard.to_string()).unwrap();
    assert_eq!(spec.scenes.len(), 3);
    assert_eq!(spec.output.dimensions(), (320, 180));
}

#[tokio::test]
async fn a_model_that_never_answers_well_fails_the_plan_stage_by_name() {
    let fake = FakeChat::start().await;
    fake.respond_with(|_| Reply::content("I'd be happy to help! Here is a storyboard: ..."));
    let err = director(&fake, None).direct(&topic("volcanoes"), &check).await.unwrap_err();
    assert_eq!(err.code(), "plan_failed");
    let msg = err.to_string();
    assert!(msg.starts_with("plan: the language model (openai gpt-test) gave no valid plan in 3 attempts"), "{msg}");
    assert_eq!(fake.requests().len(), PLAN_ATTEMPTS);
}

#[tokio::test]
async fn quota_failures_name_the_stage_and_provider_without_retrying() {
    let fake = FakeChat::start().await;
    fake.push(Reply::insufficient_quota());
    let d = director(&fake, None);
    let err = d.direct(&topic("volcanoes"), &check).await.unwrap_err();
    assert_eq!(err.code(), "provider_quota");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().starts_with("plan: openai POST /chat/completions answered 429: insufficient_quota"),
        "{err}"
    );
    assert_eq!(fake.requests().len(), 1);
    // The breaker is open: the next plan fails fast, still naming the provider.
    let err = d.direct(&topic("geysers"), &check).await.unwrap_err();
    assert_eq!(err.code(), "provider_unavailable");
    assert!(err.to_string().contains("openai is unavailable"), "{err}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn the_same_prompt_again_makes_no_provider_call() {
    let fake = FakeChat::start().await;
    fake.respond_with(|_| Reply::content(good_plan(2)));
    let cache = tempfile::tempdir().unwrap();
    let d = director(&fake, Some(cache.path()));
    let first = d.direct(&topic("volcanoes"), &check).await.unwrap();
    let again = d.direct(&topic("volcanoes"), &check).await.unwrap();
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(first.storyboard, again.storyboard);
    assert!(again.ledger.iter().all(|e| e.cache_hit && e.est_cost_usd == 0.0));
    // Another topic is another question.
    d.direct(&topic("geysers"), &check).await.unwrap();
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn text_needs_no_model_and_a_topic_without_one_says_so() {
    let d = Director::default();
    let req = PromptRequest::from_json(json!({"text": "Lava flows downhill. It cools into rock."})).unwrap();
    let planned = d.direct(&req, &check).await.unwrap();
    assert!(planned.ledger.is_empty());
    assert_eq!(planned.plan.scenes.len(), 1);
    let err = d.direct(&topic("volcanoes"), &check).await.unwrap_err();
    assert!(matches!(err, DirectorError::NoModel));
    assert!(err.to_string().contains("send `text`"));
}

#[tokio::test]
async fn a_storyboard_the_engine_refuses_is_fed_back_to_the_model() {
    let fake = FakeChat::start().await;
    fake.push(Reply::content(good_plan(2)));
    fake.push(Reply::content(good_plan(1)));
    // An engine that accepts at most one scene (as a stand-in for any scene-level check).
    let strict = |board: &Value| {
        let n = board["scenes"].as_array().map_or(0, Vec::len);
        if n > 1 { vec![Problem { path: "scenes[1]".into(), message: "one scene only".into() }] } else { vec![] }
    };
    let planned = director(&fake, None).direct(&topic("volcanoes"), &strict).await.unwrap();
    assert_eq!(planned.plan.scenes.len(), 1);
    let retry = &fake.requests()[1].body["messages"][3]["content"];
    assert!(retry.as_str().unwrap().contains("scenes[1]: one scene only"), "{retry}");
}

/// Budgets kept in memory as the service keeps them in its store: one provider's day total.
struct DayBudget {
    cap: f64,
    spent: std::sync::Mutex<f64>,
}

#[async_trait::async_trait]
impl reelsmith_director::Budgets for DayBudget {
    async fn allow(&self, provider: &str) -> Result<(), reelsmith_providers::Failure> {
        let spent = *self.spent.lock().unwrap();
        if spent >= self.cap {
            return Err(reelsmith_providers::Failure::Quota(format!(
                "{provider}: the daily budget of ${:.2} is spent",
                self.cap
            )));
        }
        Ok(())
    }
    async fn spent(&self, entry: &reelsmith_director::LedgerEntry) {
        *self.spent.lock().unwrap() += entry.est_cost_usd;
    }
}

#[tokio::test]
async fn a_failed_plan_is_charged_for_its_calls_and_a_spent_budget_stops_the_next() {
    let fake = FakeChat::start().await;
    fake.respond_with(|_| Reply::content("I'd be happy to help! Here is a storyboard: ..."));
    let budget = Arc::new(DayBudget { cap: 1e-9, spent: std::sync::Mutex::new(0.0) });
    let d = director(&fake, None);
    // A budget that allows the first call: each failed attempt is counted as it happens.
    let roomy = Arc::new(DayBudget { cap: 1.0, spent: std::sync::Mutex::new(0.0) });
    let ledger = reelsmith_director::Ledger::new(Some(roomy.clone()));
    let err = d.direct_with(&topic("volcanoes"), &check, &[], &ledger).await.unwrap_err();
    assert_eq!(err.code(), "plan_failed");
    let entries = ledger.entries();
    assert_eq!(entries.len(), PLAN_ATTEMPTS, "{entries:?}");
    assert!(entries.iter().all(|e| !e.cache_hit && e.est_cost_usd > 0.0));
    let charged = *roomy.spent.lock().unwrap();
    assert!(charged > 0.0 && (charged - ledger.spent_usd()).abs() < 1e-12, "{charged}");
    // Spent (the cap is below one call): the model is not called, the error names the budget.
    *budget.spent.lock().unwrap() = 1e-6;
    let calls = fake.requests().len();
    let ledger = reelsmith_director::Ledger::new(Some(budget));
    let err = d.direct_with(&topic("geysers"), &check, &[], &ledger).await.unwrap_err();
    assert_eq!(err.code(), "provider_quota");
    assert!(err.to_string().contains("plan: openai: the daily budget of $0.00 is spent"), "{err}");
    assert_eq!(fake.requests().len(), calls, "no call once the budget is spent");
    assert!(ledger.entries().is_empty());
}
