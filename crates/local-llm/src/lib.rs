//! The local planner: a GGUF model run in this process by llama.cpp (through `llama-cpp-2`,
//! which vendors and builds it), answering the director's JSON requests with no network. The
//! request's JSON Schema becomes a GBNF grammar ([`grammar::gbnf`]), so every token the model
//! writes keeps the answer inside the schema's shape; the director then checks the plan as it
//! checks a remote model's.
//!
//! Generation is CPU work: it runs on a blocking thread, one request at a time, with few threads
//! (one by default: on a small machine renders run beside it, and ggml's spin barriers collapse
//! when its threads share cores with a busy FFmpeg). A request whose caller goes away (a
//! cancelled job, a deadline) stops at its next token, and the model is free again once it has.

pub mod grammar;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use reelsmith_providers::Failure;
use reelsmith_providers::llm::{Completion, JsonRequest, LanguageModel};

/// The largest context a request may use (prompt and answer).
const MAX_CONTEXT: u32 = 8_192;

/// Where a local model is and how to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSettings {
    /// A GGUF file.
    pub model: PathBuf,
    /// Threads for generation (1 leaves the other cores to renders).
    pub threads: u32,
}

/// A local model; loaded on first use and kept.
pub struct LocalModel {
    inner: Arc<Inner>,
    /// One generation at a time: held by the generating thread until it ends.
    busy: Arc<tokio::sync::Mutex<()>>,
}

struct Inner {
    settings: LocalSettings,
    name: String,
    loaded: Mutex<Option<Arc<LlamaModel>>>,
    /// Tokens written since the model was made (all requests).
    tokens: AtomicU64,
}

/// Tells a generating thread to stop when the request's future is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How fast the last answer came (prompt and generation, tokens per second).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Speed {
    pub load_s: f64,
    pub prompt_tokens: u64,
    pub prompt_s: f64,
    pub answer_tokens: u64,
    pub answer_s: f64,
}

/// The default planner's file name (installed by `scripts/models.sh --llm`).
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";

/// The default planner, when it is installed in the models folder.
pub fn default_model() -> Option<PathBuf> {
    let path = reelsmith_models::models_dir().ok()?.join("llm").join(DEFAULT_MODEL);
    path.is_file().then_some(path)
}

/// llama.cpp's process-wide state: initialised once.
fn backend() -> Result<&'static LlamaBackend, Failure> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| format!("local model: llama.cpp: {e}"))?;
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(|e| Failure::Final(e.clone()))
}

/// Why this CPU cannot run the build's llama.cpp, if it cannot.
pub fn cpu_problem() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
        return Some(
            "this CPU has no AVX2/FMA and llama.cpp was built for them (.cargo/config.toml): rebuild with GGML_AVX2=OFF GGML_FMA=OFF GGML_F16C=OFF GGML_BMI2=OFF",
        );
    }
    None
}

impl LocalModel {
    pub fn new(settings: LocalSettings) -> Self {
        let name = settings.model.file_stem().map_or("local".into(), |s| s.to_string_lossy().into_owned());
        Self {
            inner: Arc::new(Inner { settings, name, loaded: Mutex::new(None), tokens: AtomicU64::new(0) }),
            busy: Arc::default(),
        }
    }

    /// Checks that the model file is there (a clear error at startup, not at the first plan).
    pub fn check(&self) -> Result<(), String> {
        self.inner.check()
    }

    /// Answers `req` and says how fast (blocking: call from a blocking thread).
    pub fn answer(&self, req: &JsonRequest) -> Result<(String, Speed), Failure> {
        self.inner.answer(req, &AtomicBool::new(false))
    }

    /// Tokens this model has written, over all requests (a request's progress).
    pub fn tokens_written(&self) -> u64 {
        self.inner.tokens.load(Ordering::Relaxed)
    }

    /// Whether a generation is running (or waiting for its turn).
    pub fn is_busy(&self) -> bool {
        self.busy.try_lock().is_err()
    }

    pub fn path(&self) -> &Path {
        &self.inner.settings.model
    }
}

impl Inner {
    fn check(&self) -> Result<(), String> {
        if let Some(p) = cpu_problem() {
            return Err(p.into());
        }
        match std::fs::metadata(&self.settings.model) {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(format!(
                "local model {} not found (scripts/models.sh --llm fetches the default planner)",
                self.settings.model.display()
            )),
        }
    }

    fn model(&self) -> Result<(Arc<LlamaModel>, f64), Failure> {
        let mut slot = self.loaded.lock().expect("model lock");
        if let Some(m) = slot.as_ref() {
            return Ok((m.clone(), 0.0));
        }
        self.check().map_err(Failure::Final)?;
        let started = Instant::now();
        let model = LlamaModel::load_from_file(backend()?, &self.settings.model, &LlamaModelParams::default())
            .map_err(|e| Failure::Final(format!("local model {}: {e}", self.settings.model.display())))?;
        let model = Arc::new(model);
        *slot = Some(model.clone());
        Ok((model, started.elapsed().as_secs_f64()))
    }

    fn answer(&self, req: &JsonRequest, stop: &AtomicBool) -> Result<(String, Speed), Failure> {
        let what = format!("local model {}", self.name);
        let (model, load_s) = self.model()?;
        let fail = |m: String| Failure::Final(format!("{what}: {m}"));
        let template = model.chat_template(None).map_err(|e| fail(format!("no chat template: {e}")))?;
        let mut chat = vec![];
        for m in &req.messages {
            chat.push(LlamaChatMessage::new(m.role.into(), m.content.clone()).map_err(|e| fail(e.to_string()))?);
        }
        let prompt = model.apply_chat_template(&template, &chat, true).map_err(|e| fail(e.to_string()))?;
        let tokens = model.vocab().tokenize(prompt.as_bytes(), false, true);
        let n_ctx = (tokens.len() as u32 + req.max_tokens).min(MAX_CONTEXT).min(model.n_ctx_train().max(512));
        if tokens.len() as u32 + 16 > n_ctx {
            return Err(fail(format!("the prompt is {} tokens; the context holds {n_ctx}", tokens.len())));
        }
        let threads = self.settings.threads.clamp(1, 64) as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let mut ctx = model.new_context(backend()?, params).map_err(|e| fail(e.to_string()))?;
        let started = Instant::now();
        let mut batch = LlamaBatch::new(n_ctx as usize, 1);
        let last = tokens.len() - 1;
        for (i, t) in tokens.iter().enumerate() {
            batch.add(*t, i as i32, &[0], i == last).map_err(|e| fail(e.to_string()))?;
        }
        ctx.decode(&mut batch).map_err(|e| fail(e.to_string()))?;
        let prompt_s = started.elapsed().as_secs_f64();

        let grammar = grammar::gbnf(&req.schema, true).map_err(|e| fail(format!("schema: {e}")))?;
        let mut samplers =
            vec![LlamaSampler::grammar(&model, &grammar, "root").map_err(|e| fail(format!("grammar: {e}")))?];
        if req.temperature <= 0.0 {
            samplers.push(LlamaSampler::greedy());
        } else {
            samplers.push(LlamaSampler::top_k(40));
            samplers.push(LlamaSampler::top_p(0.9, 1));
            samplers.push(LlamaSampler::temp(req.temperature));
            samplers.push(LlamaSampler::dist(req.seed.unwrap_or(1) as u32));
        }
        let mut sampler = LlamaSampler::chain_simple(samplers);
        let started = Instant::now();
        let mut out = vec![];
        let mut n = 0u32;
        let mut position = tokens.len() as i32;
        let mut finished = false;
        while n < req.max_tokens && (position as u32) < n_ctx {
            if stop.load(Ordering::Relaxed) {
                return Err(Failure::Final(format!("{what}: the request was cancelled after {n} tokens")));
            }
            // `sample` also accepts the token into every sampler (the grammar's state moves on).
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            if model.vocab().is_eog(token) {
                finished = true;
                break;
            }
            out.extend(model.vocab().token_to_piece(token, false, None));
            batch.clear();
            batch.add(token, position, &[0], true).map_err(|e| fail(e.to_string()))?;
            ctx.decode(&mut batch).map_err(|e| fail(e.to_string()))?;
            position += 1;
            n += 1;
            self.tokens.fetch_add(1, Ordering::Relaxed);
        }
        let speed = Speed {
            load_s,
            prompt_tokens: tokens.len() as u64,
            prompt_s,
            answer_tokens: u64::from(n),
            answer_s: started.elapsed().as_secs_f64(),
        };
        let text = String::from_utf8_lossy(&out).into_owned();
        if !finished {
            // The caller's checks name what is missing; the repair loop asks again.
            tracing::info!(model = %self.name, tokens = n, "local model: the answer reached the token limit");
        }
        Ok((text, speed))
    }
}

#[async_trait]
impl LanguageModel for LocalModel {
    fn provider(&self) -> &str {
        "local"
    }

    fn model(&self) -> &str {
        &self.inner.name
    }

    async fn complete_json(&self, req: &JsonRequest) -> Result<Completion, Failure> {
        // The thread keeps the turn until it ends, even when this future is dropped first.
        let turn = self.busy.clone().lock_owned().await;
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stop.clone());
        let (inner, request) = (self.inner.clone(), req.clone());
        let (text, speed) = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            inner.answer(&request, &stop)
        })
        .await
        .map_err(|e| Failure::Final(format!("local model: {e}")))??;
        tracing::info!(
            model = %self.inner.name,
            load_s = speed.load_s,
            prompt_tokens = speed.prompt_tokens,
            answer_tokens = speed.answer_tokens,
            tokens_per_s = speed.answer_tokens as f64 / speed.answer_s.max(1e-9),
            "local model answered"
        );
        Ok(Completion {
            content: text,
            model: self.inner.name.clone(),
            prompt_tokens: speed.prompt_tokens,
            completion_tokens: speed.answer_tokens,
            est_cost_usd: 0.0,
            attempts: Default::default(),
        })
    }
}
