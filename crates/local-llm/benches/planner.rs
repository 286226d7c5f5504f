//! `cargo bench -p reelsmith-local-llm --bench planner`: the local planner on this machine, for
//! each installed model (SmolLM2-135M from scripts/models.sh, Qwen2.5-Coder-1.5B from
//! `scripts/models.sh --llm`): load time, prompt and answer tokens per second under the plan's
//! grammar, then a whole topic planned by the director (with its repair loop) and how long that
//! took. Threads: `REELSMITH_BENCH_THREADS` (default 1, as the service runs it beside renders).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use reelsmith_director::plan::{Problem, plan_schema};
use reelsmith_director::{Director, PromptRequest, spec_problems};
use reelsmith_local_llm::{LocalModel, LocalSettings};
use reelsmith_providers::llm::{JsonRequest, Message};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let threads: u32 = std::env::var("REELSMITH_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/llm");
    let models = ["SmolLM2-135M-Instruct.Q4_1.gguf", reelsmith_local_llm::DEFAULT_MODEL];
    for file in models {
        let path = dir.join(file);
        if !path.is_file() {
            println!("{file}: not installed (scripts/models.sh --llm), skipped");
            continue;
        }
        let model = LocalModel::new(LocalSettings { model: path.clone(), threads });
        let req = JsonRequest {
            messages: vec![
                Message::system(
                    "You direct short narrated videos. Write the storyboard as JSON matching the schema: \
                     each scene's narration one to three plain sentences.",
                ),
                Message::user(
                    "Topic: how volcanoes work\nLength: about 30 seconds: 4 scenes and about 75 words of narration in all.",
                ),
            ],
            schema_name: "storyboard".into(),
            schema: {
                let mut s = plan_schema();
                s["properties"]["scenes"]["maxItems"] = json!(9);
                s
            },
            temperature: 0.4,
            max_tokens: 700,
            seed: Some(1),
        };
        let (_, speed) = model.answer(&req).expect("the model answers");
        println!(
            "{file} ({threads} thread{}): load {:.1} s; prompt {} tokens at {:.1}/s; answer {} tokens at {:.1}/s",
            if threads == 1 { "" } else { "s" },
            speed.load_s,
            speed.prompt_tokens,
            speed.prompt_tokens as f64 / speed.prompt_s,
            speed.answer_tokens,
            speed.answer_tokens as f64 / speed.answer_s
        );
        let director = Director { model: Some(Arc::new(model)), ..Default::default() };
        let topic = PromptRequest::from_json(json!({"topic": "how volcanoes work", "duration_s": 30})).unwrap();
        let check = |board: &Value| -> Vec<Problem> { spec_problems(board, std::path::Path::new("."), |_| vec![]) };
        let t = Instant::now();
        match director.direct(&topic, &check).await {
            Ok(planned) => {
                let calls = planned.ledger.iter().filter(|e| e.stage == "plan").count();
                let tokens: f64 = planned.ledger.iter().map(|e| e.units).sum();
                println!(
                    "{file}: a 30 s topic planned in {:.1} s ({calls} model call{}, {tokens:.0} tokens): {} scenes, \"{}\"",
                    t.elapsed().as_secs_f64(),
                    if calls == 1 { "" } else { "s" },
                    planned.plan.scenes.len(),
                    planned.plan.scenes[0].narration
                );
            }
            Err(e) => println!("{file}: no valid plan after {:.1} s: {e}", t.elapsed().as_secs_f64()),
        }
    }
}
