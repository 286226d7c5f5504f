//! The local planner with a real model: SmolLM2-135M-Instruct (98 MB, fetched by
//! scripts/models.sh) under the plan's grammar writes JSON of the plan's shape, and the director
//! turns it into a storyboard that validates. (A 135M model writes poor prose; the point here is
//! the loading, the chat template, the grammar and the director's checks.)

use std::path::PathBuf;
use std::sync::Arc;

use reelsmith_director::plan::{Plan, Problem, plan_schema};
use reelsmith_director::{Director, PromptRequest, spec_problems};
use reelsmith_local_llm::{LocalModel, LocalSettings};
use reelsmith_providers::Failure;
use reelsmith_providers::llm::{JsonRequest, LanguageModel, Message};
use serde_json::{Value, json};

fn tiny_model() -> PathBuf {
    let dir = std::env::var_os("REELSMITH_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let path = dir.join("llm/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "{} is missing: run scripts/models.sh (scripts/setup.sh does)", path.display());
    path
}

fn local(path: PathBuf) -> LocalModel {
    LocalModel::new(LocalSettings { model: path, threads: 1 })
}

/// One model runs at a time: two on a two-core machine at once slow each other many times over
/// (ggml's threads spin while they wait).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn the_grammar_holds_a_tiny_model_to_the_plan_schema() {
    let _one = ONE_AT_A_TIME.lock().await;
    let model = local(tiny_model());
    let req = JsonRequest {
        messages: vec![
            Message::system("You write video storyboards as JSON."),
            Message::user("Topic: volcanoes\nLength: about 15 seconds: 2 scenes."),
        ],
        schema_name: "storyboard".into(),
        // At most two scenes, so that even a model that ignores the instructions ends its JSON
        // within the token limit.
        schema: {
            let mut s = plan_schema();
            s["properties"]["scenes"]["maxItems"] = json!(2);
            s
        },
        temperature: 0.3,
        max_tokens: 1_200,
        seed: Some(1),
    };
    let answer = model.complete_json(&req).await.unwrap();
    assert_eq!((model.provider(), answer.model.as_str()), ("local", "SmolLM2-135M-Instruct.Q4_1"));
    assert!(answer.prompt_tokens > 10 && answer.completion_tokens > 10, "{answer:?}");
    assert_eq!(answer.est_cost_usd, 0.0);
    // Whatever it says, it says it in the plan's shape.
    let plan: Plan = serde_json::from_str(&answer.content).unwrap_or_else(|e| panic!("{e}: {}", answer.content));
    assert!((1..=2).contains(&plan.scenes.len()), "{}", answer.content);
    let (_, speed) = model.answer(&req).unwrap();
    assert!(speed.answer_tokens > 0 && speed.answer_s > 0.0, "{speed:?}");
    println!(
        "SmolLM2-135M: prompt {} tokens at {:.0}/s, answer {} tokens at {:.1}/s",
        speed.prompt_tokens,
        speed.prompt_tokens as f64 / speed.prompt_s,
        speed.answer_tokens,
        speed.answer_tokens as f64 / speed.answer_s
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_becomes_a_storyboard_that_validates_with_no_network() {
    let _one = ONE_AT_A_TIME.lock().await;
    let director = Director { model: Some(Arc::new(local(tiny_model()))), ..Default::default() };
    let req = PromptRequest::from_json(json!({"topic": "how bees make honey", "duration_s": 15,
                                              "size": {"width": 320, "height": 180}}))
    .unwrap();
    let check = |board: &Value| -> Vec<Problem> { spec_problems(board, std::path::Path::new("."), |_| vec![]) };
    let planned = director.direct(&req, &check).await.unwrap();
    let scenes = planned.storyboard["scenes"].as_array().unwrap();
    assert!(!scenes.is_empty());
    assert!(scenes.iter().all(|s| s["narration"]["text"].as_str().is_some_and(|t| !t.trim().is_empty())));
    let plan = planned.ledger.iter().find(|e| e.stage == "plan").unwrap();
    assert_eq!((plan.provider.as_str(), plan.est_cost_usd, plan.cache_hit), ("local", 0.0, false));
}

#[tokio::test]
async fn a_missing_model_is_named() {
    let model = local(PathBuf::from("/nonexistent/planner.gguf"));
    assert!(model.check().unwrap_err().contains("/nonexistent/planner.gguf"));
    let req = JsonRequest {
        messages: vec![Message::user("x")],
        schema_name: "s".into(),
        schema: json!({"type": "object", "properties": {}}),
        temperature: 0.0,
        max_tokens: 10,
        seed: None,
    };
    match model.complete_json(&req).await {
        Err(Failure::Final(m)) => {
            assert!(m.contains("/nonexistent/planner.gguf") && m.contains("models.sh --llm"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_caller_goes_away_stops_at_its_next_token() {
    let _one = ONE_AT_A_TIME.lock().await;
    let model = Arc::new(local(tiny_model()));
    let long = JsonRequest {
        messages: vec![Message::user("Write a storyboard of sixty scenes about rivers.")],
        schema_name: "storyboard".into(),
        schema: plan_schema(),
        temperature: 0.3,
        max_tokens: 4_000,
        seed: Some(1),
    };
    let asking = {
        let (model, long) = (model.clone(), long.clone());
        tokio::spawn(async move { model.complete_json(&long).await })
    };
    // Wait for the answer to be under way, then drop its caller (a cancelled job does this).
    let mut progress = model.tokens_written();
    while progress < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        progress = model.tokens_written();
    }
    asking.abort();
    assert!(asking.await.unwrap_err().is_cancelled());
    // The model is free once the thread has stopped, at its next token: not 4,000 tokens later.
    let waited = std::time::Instant::now();
    while model.is_busy() {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let written = model.tokens_written();
    assert!(written < progress + 50, "{written} tokens written; the stop came at {progress}");
    println!(
        "stopped {:.3} s after the caller left, {} tokens after",
        waited.elapsed().as_secs_f64(),
        written - progress
    );
    // And it answers the next request.
    let short = JsonRequest { max_tokens: 40, ..long };
    let answer = model.complete_json(&short).await.unwrap();
    assert!(answer.completion_tokens > 0);
}
