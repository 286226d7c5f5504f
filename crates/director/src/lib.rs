//! From a prompt or an article to a storyboard the engine renders.
//!
//! 1. `plan`: a text is split into scenes here ([`text::text_plan`], no model); a topic is
//!    planned by a language model asked for JSON to a strict schema ([`plan::plan_schema`]),
//!    checked locally and against the engine's own validation, and asked again with the
//!    problems listed (at most [`PLAN_ATTEMPTS`] times) before failing with the stage named.
//!    Valid plans are cached by (provider, model, request): the same prompt again costs nothing.
//! 2. `visuals`: each scene's picture from the request's sources in order, ending at a
//!    designed card ([`visuals`]).
//! 3. `voice`, for a remote voice ([`voices`]): each scene's narration spoken by the provider
//!    (timed word by word where it says when), alongside the visuals.
//! 4. The storyboard ([`storyboard::storyboard`]): the engine's spec, voiced and subtitled.
//!
//! Every provider call is recorded in the ledger: stage, provider, model, units, estimated
//! cost, and whether the cache answered.

pub mod config;
pub mod ledger;
pub mod plan;
pub mod request;
pub mod storyboard;
pub mod text;
pub mod visuals;
pub mod voices;

use std::sync::Arc;
use std::time::Instant;

use reelsmith_providers::Failure;
use reelsmith_providers::cache::{CacheKey, ResultCache};
use reelsmith_providers::llm::{JsonRequest, LanguageModel, Message};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::ledger::{Budgets, Ledger};
use crate::plan::{Plan, Problem};
pub use crate::request::PromptRequest;
use crate::visuals::{Asset, Chosen};

/// Times a model is asked for a plan before the stage fails.
pub const PLAN_ATTEMPTS: usize = 3;

/// Bumped when the prompt changes, so cached plans from an older prompt are not reused.
const PROMPT_VERSION: u32 = 2;

/// Why a prompt could not become a storyboard. Each names its stage or field.
#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    /// The request is wrong (HTTP 422): `field` is its JSON path.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The model gave no usable plan.
    #[error("plan: {0}")]
    Plan(String),
    /// A provider failed (its class says whether waiting helps).
    #[error("{stage}: {failure}")]
    Provider { stage: &'static str, failure: Failure },
    /// A topic needs a model, and none is configured.
    #[error(
        "plan: a topic needs a language model and none is configured (set [providers.llm] base_url and model, or [providers.local_llm] model in a build with the local-llm feature), or send `text` to narrate as written"
    )]
    NoModel,
}

impl DirectorError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }

    /// A stable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "prompt_invalid",
            Self::Plan(_) => "plan_failed",
            Self::NoModel => "no_model",
            Self::Provider { failure, .. } => match failure {
                Failure::Quota(_) => "provider_quota",
                Failure::RateLimited { .. } => "provider_rate_limited",
                Failure::Unavailable(_) => "provider_unavailable",
                Failure::Retryable(_) => "provider_failed",
                Failure::Final(_) => "provider_refused",
            },
        }
    }

    /// Worth trying again later (a provider outage or rate limit), not a fault of the request.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Provider { failure, .. } if failure.is_retryable())
    }
}

/// One provider call (or cache answer) made for a generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub stage: String,
    pub provider: String,
    pub model: String,
    pub units: f64,
    pub unit_kind: String,
    pub est_cost_usd: f64,
    pub cache_hit: bool,
}

/// How long a stage took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
}

/// A prompt made into a storyboard, with what it took.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Planned {
    pub plan: Plan,
    /// The engine's spec (JSON), ready to render or edit.
    pub storyboard: Value,
    /// Scene by scene: where its picture came from.
    pub visuals: Vec<Chosen>,
    /// Scene by scene: the recording a remote voice made (empty for local voices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voices: Vec<voices::Voiced>,
    pub ledger: Vec<LedgerEntry>,
    pub stages: Vec<StageTime>,
}

/// Checks a storyboard as the engine will (voices, fonts, files, ranges): problems by spec path.
pub type Checker<'a> = &'a (dyn Fn(&Value) -> Vec<Problem> + Sync);

/// A storyboard's problems as the spec sees them (it parses; ranges, limits and files under
/// `base`), then `more` of them from whoever renders it (the engine: voices and fonts).
pub fn spec_problems(
    board: &Value,
    base: &std::path::Path,
    more: impl FnOnce(&reelsmith_spec::Spec) -> Vec<Problem>,
) -> Vec<Problem> {
    let spec = match reelsmith_spec::parse(&board.to_string()) {
        Ok(s) => s,
        Err(e) => return vec![Problem { path: e.path, message: e.message }],
    };
    if let Err(e) = spec.validate(base) {
        return e.issues;
    }
    more(&spec)
}

/// What a director works with: a model for topics (optional), a cache for plans, the caller's
/// pictures.
#[derive(Default)]
pub struct Director {
    pub model: Option<Arc<dyn LanguageModel>>,
    pub plans: Option<ResultCache>,
    pub assets: Vec<Asset>,
    /// Stock photo and video providers, when configured.
    pub stock: Option<visuals::StockChain>,
    /// Image generators, when configured.
    pub images: Option<visuals::ImageChain>,
    /// Each scene's last choice of picture (see [`visuals::choose`]).
    pub decisions: Option<ResultCache>,
    /// Remote voices, when configured.
    pub voices: Option<voices::VoiceChain>,
}

impl Director {
    /// Every provider's gate (its breaker state is part of readiness and metrics).
    pub fn gates(&self) -> Vec<Arc<reelsmith_providers::Gate>> {
        let mut out: Vec<Arc<reelsmith_providers::Gate>> =
            self.model.iter().filter_map(|m| m.gate().cloned()).collect();
        out.extend(self.stock.iter().flat_map(|s| s.sources.iter().map(|p| p.gate().clone())));
        out.extend(self.images.iter().flat_map(|s| s.sources.iter().map(|p| p.gate().clone())));
        out.extend(self.voices.iter().flat_map(|s| s.sources.iter().map(|p| p.gate().clone())));
        out
    }

    /// What can be said of a request before any provider is called: its bounds, and that this
    /// director has what it needs (a model for a topic, the remote voice it names).
    pub fn precheck(&self, req: &PromptRequest) -> Result<(), DirectorError> {
        req.check()?;
        if req.text.is_none() && self.model.is_none() {
            return Err(DirectorError::NoModel);
        }
        self.speaker(req).map(|_| ())
    }

    /// The providers a request cannot do without (no other source stands in for them): the
    /// planner for a topic, the remote voice it names.
    pub fn needed_providers(&self, req: &PromptRequest) -> Vec<String> {
        let planner = self.model.as_ref().filter(|_| req.text.is_none()).map(|m| m.provider().to_string());
        let voice = self.speaker(req).ok().flatten().map(|(_, s)| s.name().to_string());
        planner.into_iter().chain(voice).collect()
    }

    /// The remote voice a request names, with its chain (`None` for a local voice).
    #[allow(clippy::type_complexity)]
    fn speaker(
        &self,
        req: &PromptRequest,
    ) -> Result<Option<(&voices::VoiceChain, &Arc<dyn reelsmith_providers::speech::SpeechSource>)>, DirectorError> {
        let Some(v) = req.voice.as_ref().filter(|v| !request::is_local_voice(&v.engine)) else { return Ok(None) };
        let found = self.voices.as_ref().and_then(|c| c.source(&v.engine).map(|s| (c, s)));
        found.map(Some).ok_or_else(|| {
            DirectorError::invalid(
                "prompt.voice.engine",
                format!("{} voices are not configured on this server (see [providers] in its config)", v.engine),
            )
        })
    }

    /// Plans `req` into a storyboard. `check` is the engine's validation of the storyboard.
    pub async fn direct(&self, req: &PromptRequest, check: Checker<'_>) -> Result<Planned, DirectorError> {
        self.direct_with(req, check, &self.assets, &Ledger::default()).await
    }

    /// [`Director::direct`] with this caller's own pictures instead of the director's, its
    /// calls recorded in `ledger` (and counted against its budgets) as they happen: a failed
    /// plan's calls are in it too.
    pub async fn direct_with(
        &self,
        req: &PromptRequest,
        check: Checker<'_>,
        assets: &[Asset],
        ledger: &Ledger,
    ) -> Result<Planned, DirectorError> {
        self.precheck(req)?;
        let speaker = self.speaker(req)?;
        let mut stages = vec![];
        let started = Instant::now();
        let plan = match (&req.text, &req.topic) {
            (Some(text), _) => {
                let plan = text::text_plan(text);
                if let Some(p) = plan::check_plan(&plan).into_iter().next() {
                    return Err(DirectorError::invalid("prompt.text", p.to_string()));
                }
                plan
            }
            (None, Some(topic)) => self.model_plan(req, topic, check, ledger).await?,
            (None, None) => return Err(DirectorError::invalid("prompt.topic", "give a topic or a text")),
        };
        stages.push(StageTime { stage: "plan".into(), seconds: started.elapsed().as_secs_f64() });
        // Pictures and voices do not depend on each other: both run at once.
        let timed = |stage: &'static str, started: Instant| StageTime {
            stage: stage.into(),
            seconds: started.elapsed().as_secs_f64(),
        };
        let pictures = async {
            let started = Instant::now();
            let chosen = visuals::choose(
                &plan.scenes,
                &req.visuals,
                assets,
                self.stock.as_ref(),
                self.images.as_ref(),
                self.decisions.as_ref(),
                req.dimensions(),
                ledger,
            )
            .await;
            (chosen, timed("visuals", started))
        };
        let speech = async {
            let started = Instant::now();
            let (chain, source) = speaker?;
            let v = req.voice.as_ref().expect("a remote voice was asked for");
            let spoken = chain
                .speak(source, &plan.scenes, v.name.as_deref(), v.speed.unwrap_or(1.0), &req.language, ledger)
                .await;
            Some((spoken, timed("voice", started)))
        };
        let ((visuals, pictures_took), spoken) = tokio::join!(pictures, speech);
        stages.push(pictures_took);
        let mut voices = vec![];
        if let Some((result, took)) = spoken {
            stages.push(took);
            voices = result?;
        }
        let storyboard = storyboard::storyboard(req, &plan, &visuals, &voices);
        // What is still wrong now is not the plan's doing (a voice, a music file): the request's.
        if let Some(p) = check(&storyboard).into_iter().next() {
            return Err(DirectorError::invalid("prompt", format!("the storyboard does not validate: {p}")));
        }
        Ok(Planned { plan, storyboard, visuals, voices, ledger: ledger.entries(), stages })
    }

    /// Asks the model for a plan, feeding back what was wrong, at most [`PLAN_ATTEMPTS`] times.
    async fn model_plan(
        &self,
        req: &PromptRequest,
        topic: &str,
        check: Checker<'_>,
        ledger: &Ledger,
    ) -> Result<Plan, DirectorError> {
        let model = self.model.as_ref().ok_or(DirectorError::NoModel)?;
        let seconds = req.target_seconds();
        let scenes = (seconds / 7.0).round().clamp(1.0, 20.0) as usize;
        let words = (seconds * text::WORDS_PER_SECOND).round() as usize;
        let system = format!(
            "You direct short narrated videos. Write the storyboard as JSON matching the schema. \
             Each scene: `narration` is what the voice says (one to three plain sentences, no stage directions, \
             no markup); `title` is a short on-screen title of at most six words, or null; \
             `visual.search_terms` are two or three concrete things a camera could film, in English, one or two words \
             each, that show what this scene's narration says; `visual.image_prompt` describes one picture for the \
             scene in a sentence; `motion` moves the camera. Write the narration in the language `{}`.",
            req.language
        );
        let mut user = format!(
            "Topic: {topic}\nLength: about {seconds:.0} seconds: {scenes} scenes and about {words} words of narration in all."
        );
        if let Some(style) = &req.style {
            user.push_str(&format!("\nStyle: {style}"));
        }
        let request = JsonRequest {
            messages: vec![Message::system(system), Message::user(user)],
            schema_name: "storyboard".into(),
            // At most about twice the scenes asked for: a model that runs on stops in time.
            schema: {
                let mut schema = plan::plan_schema();
                schema["properties"]["scenes"]["maxItems"] = json!((scenes * 2 + 1).min(plan::MAX_SCENES));
                schema
            },
            temperature: 0.4,
            max_tokens: (words as u32 * 3 + 400).min(8_000),
            seed: Some(1),
        };
        let key = CacheKey::new(
            model.provider(),
            model.model(),
            &json!({"v": PROMPT_VERSION, "messages": request.messages.iter().map(|m| [m.role, &m.content]).collect::<Vec<_>>(),
                    "size": req.dimensions(), "voice": req.voice, "visuals": req.visuals}),
        );
        if let Some(cache) = &self.plans
            && let Some(bytes) = cache.get(&key).await
            && let Ok(plan) = serde_json::from_slice::<Plan>(&bytes)
        {
            ledger
                .record(LedgerEntry {
                    stage: "plan".into(),
                    provider: model.provider().into(),
                    model: model.model().into(),
                    units: 0.0,
                    unit_kind: "tokens".into(),
                    est_cost_usd: 0.0,
                    cache_hit: true,
                })
                .await;
            return Ok(plan);
        }
        let mut request = request;
        let mut last_problems = vec![];
        for attempt in 1..=PLAN_ATTEMPTS {
            let provider_failed = |failure| DirectorError::Provider { stage: "plan", failure };
            ledger.allow(model.provider()).await.map_err(provider_failed)?;
            let completion = model.complete_json(&request).await.map_err(provider_failed)?;
            ledger
                .record(LedgerEntry {
                    stage: "plan".into(),
                    provider: model.provider().into(),
                    model: completion.model.clone(),
                    units: (completion.prompt_tokens + completion.completion_tokens) as f64,
                    unit_kind: "tokens".into(),
                    est_cost_usd: completion.est_cost_usd,
                    cache_hit: false,
                })
                .await;
            let problems = match plan::parse_plan(&completion.content) {
                Ok(plan) => {
                    let board = storyboard::storyboard(req, &plan, &visuals::choose_local(&plan.scenes, &[], &[]), &[]);
                    // Problems in scenes are the plan's to fix; others are the request's.
                    let scene_problems: Vec<Problem> =
                        check(&board).into_iter().filter(|p| p.path.starts_with("scenes")).collect();
                    if scene_problems.is_empty() {
                        if let Some(cache) = &self.plans {
                            let bytes = serde_json::to_vec(&plan).expect("plan serialises");
                            // A cache that cannot be written only costs a call next time.
                            let _ = cache.put(&key, &bytes).await;
                        }
                        return Ok(plan);
                    }
                    scene_problems
                }
                Err(problems) => problems,
            };
            tracing::info!(attempt, problems = problems.len(), "plan: the model's answer needs repair");
            let list: Vec<String> = problems.iter().take(20).map(|p| format!("- {p}")).collect();
            request.messages.push(Message::assistant(completion.content));
            request.messages.push(Message::user(format!(
                "That JSON has these problems:\n{}\nAnswer again with the whole corrected JSON only.",
                list.join("\n")
            )));
            last_problems = problems;
        }
        let first: Vec<String> = last_problems.iter().take(3).map(Problem::to_string).collect();
        Err(DirectorError::Plan(format!(
            "the language model ({} {}) gave no valid plan in {PLAN_ATTEMPTS} attempts; last problems: {}",
            model.provider(),
            model.model(),
            first.join("; ")
        )))
    }
}
