//! Turning a request into a durable generation: the envelope, the spec, its files (uploaded with
//! it or earlier as assets), validation by the engine, content hashes for dedup and idempotency.
//!
//! Specs in the service never name server paths: every file is `asset:<id>`, where the id is a
//! hash of the file's bytes, so the same picture uploaded twice is one asset and the same
//! storyboard with the same files is the same spec hash.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use reelsmith_store::{CreateOutcome, GenerationRecord, NewGeneration, new_id, now_ms};
use serde::{Deserialize, Serialize};

use crate::access::Caller;
use crate::assets::{ASSET_PREFIX, engine_view};
use crate::error::{ApiError, ApiResult, IssueBody};
use crate::state::AppState;

/// The JSON body of `POST /generations` (or the `request` part of a multipart body).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// A storyboard as written.
    #[serde(default)]
    pub spec: Option<serde_json::Value>,
    /// Or a prompt the director turns into one (`reelsmith_director::PromptRequest`).
    #[serde(default)]
    pub prompt: Option<serde_json::Value>,
    /// Or a template (a spec with `{{ NAME }}` placeholders and its `fields`), filled with
    /// `merge`.
    #[serde(default)]
    pub template: Option<serde_json::Value>,
    /// The template's row: `{"NAME": value}` or Shotstack's `[{"find", "replace"}]`.
    #[serde(default)]
    pub merge: Option<serde_json::Value>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// false: render afresh even when the same spec is queued, running or done (the stage
    /// cache still applies, so an unchanged spec re-renders from cache).
    #[serde(default)]
    pub dedupe: Option<bool>,
}

pub fn parse_envelope(body: &[u8]) -> ApiResult<Envelope> {
    if body.is_empty() {
        return Err(ApiError::bad_request("empty_body", "the request body is empty; send {\"spec\": {...}}"));
    }
    crate::error::from_json(body)
}

/// A template and its row become the envelope's spec, before any other work. The template is
/// sent inline (its placeholders checked against its fields: 422 `template_invalid`, issues
/// under `template.`) or named by a stored template's id (`tpl_…`, one of the caller's); then
/// every value of the row is checked (422 `merge_invalid`, each issue `merge.NAME`: missing,
/// unknown, wrong type, too long). The spec then goes through [`prepare`] like any other
/// (media fields take `asset:` refs).
pub async fn apply_template(state: &AppState, caller: &Caller, mut env: Envelope) -> ApiResult<Envelope> {
    use reelsmith_spec::template::row_from_json;
    let Some(doc) = env.template.take() else {
        if env.merge.is_some() {
            return Err(crate::templates::refuse(
                "invalid_request",
                vec![IssueBody { path: "merge".into(), message: "given without a template".into() }],
            ));
        }
        return Ok(env);
    };
    if env.spec.is_some() || env.prompt.is_some() {
        return Err(crate::templates::refuse(
            "invalid_request",
            vec![IssueBody {
                path: "template".into(),
                message: "send a template, a spec or a prompt: one of them".into(),
            }],
        ));
    }
    let (template, _) = crate::templates::resolve(state, caller, &doc).await?;
    let row = match env.merge.take() {
        Some(m) => {
            row_from_json(&m).map_err(|e| crate::templates::refuse("merge_invalid", crate::templates::issues(e, "")))?
        }
        None => Default::default(),
    };
    env.spec = Some(
        template.merge(&row).map_err(|e| crate::templates::refuse("merge_invalid", crate::templates::issues(e, "")))?,
    );
    Ok(env)
}

/// A spec ready to store: files resolved to assets, validated, hashed.
pub struct Prepared {
    pub spec_json: serde_json::Value,
    pub spec_hash: String,
    pub request_hash: String,
    pub priority: i32,
    /// Whether the caller asked for `priority` (or it is the default).
    pub priority_given: bool,
    pub webhook_url: Option<String>,
    pub metadata: serde_json::Value,
    pub dedupe: bool,
    /// What the generation costs the caller's daily budget.
    pub charge: reelsmith_store::Usage,
    /// Made from a prompt: the request until its job plans it, then the plan, visuals, voices
    /// and ledger (see [`plan_prompt`]).
    pub prompt: Option<serde_json::Value>,
}

/// What identifies a submission for idempotency: what it renders (a spec's or a prompt's hash)
/// and everything else it asks for.
fn request_hash(
    spec_hash: &str,
    priority: i32,
    webhook_url: Option<&str>,
    metadata: &serde_json::Value,
    dedupe: bool,
) -> String {
    let request = serde_json::json!([spec_hash, priority, webhook_url, metadata, dedupe]);
    blake3::hash(request.to_string().as_bytes()).to_hex().to_string()
}

/// Seconds from `now_ms` until the UTC `day` ends (when daily budgets renew), at least one.
fn seconds_until_day_ends(day: i64, now_ms: i64) -> u64 {
    ((day + 1) * 86_400_000 - now_ms).max(1000) as u64 / 1000
}

/// What any envelope asks besides its storyboard or prompt: the priority (0-9, default 5), a
/// webhook URL the server may call, metadata (a JSON object of at most 16 KiB).
fn envelope_options(state: &AppState, env: &Envelope) -> ApiResult<(i32, serde_json::Value)> {
    let priority = match env.priority {
        None => 5,
        Some(p @ 0..=9) => p as i32,
        Some(p) => {
            return Err(ApiError::unprocessable("invalid_request", format!("priority: {p} is out of range 0-9"))
                .with_issues(vec![IssueBody { path: "priority".into(), message: "must be 0-9".into() }]));
        }
    };
    if let Some(u) = &env.webhook_url {
        check_webhook_url(u, state.config.webhook_allow_private)?;
    }
    let metadata = env.metadata.clone().unwrap_or(serde_json::json!({}));
    if !metadata.is_object() || metadata.to_string().len() > 16 * 1024 {
        return Err(ApiError::unprocessable("invalid_request", "metadata: must be a JSON object of at most 16 KiB"));
    }
    Ok((priority, metadata))
}

pub async fn prepare(
    state: &AppState,
    env: Envelope,
    uploads: &HashMap<String, String>,
    api_key_id: Option<&str>,
) -> ApiResult<Prepared> {
    let (priority, metadata) = envelope_options(state, &env)?;
    let Some(spec_json) = &env.spec else {
        return Err(ApiError::unprocessable("invalid_request", "send a storyboard as `spec` or a `prompt`")
            .with_issues(vec![IssueBody { path: "spec".into(), message: "missing".into() }]));
    };
    let spec_text = spec_json.to_string();
    let mut spec = reelsmith_spec::parse(&spec_text).map_err(|e| {
        let path = format!("spec.{}", e.path.trim_start_matches("$").trim_start_matches('.'));
        ApiError::unprocessable("spec_parse", format!("{path}: {}", e.message))
            .with_issues(vec![IssueBody { path, message: e.message.clone() }])
    })?;
    let (issues, used) = crate::assets::resolve_files(state, &mut spec, uploads, api_key_id, &[]).await?;
    if !issues.is_empty() {
        let first = format!("{}: {}", issues[0].path, issues[0].message);
        return Err(ApiError::unprocessable("missing_asset", first).with_issues(issues));
    }
    // Used now: retention counts from here.
    state.meta.touch_assets(&used, now_ms()).await?;
    // The engine checks everything else: ranges, limits, that images decode, voices, fonts.
    let engine_spec = engine_view(&spec);
    let engine = state.engine.clone();
    let assets = state.assets_dir.clone();
    let cost = tokio::task::spawn_blocking(move || engine.check(&engine_spec, &assets))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            let mut e = ApiError::from(e);
            for i in &mut e.issues {
                i.path = format!("spec.{}", i.path);
            }
            if let Some(i) = e.issues.first() {
                e.message = format!("invalid spec: {}: {}", i.path, i.message);
            }
            e
        })?;
    check_cost(&state.config, &cost)?;
    let did_scenes: Vec<usize> =
        spec.scenes.iter().enumerate().filter(|(_, s)| s.is_d_id_talking_head()).map(|(i, _)| i).collect();
    if did_scenes.len() > state.config.max_did_scenes_per_spec {
        let path = format!("spec.scenes[{}].motion.provider", did_scenes[state.config.max_did_scenes_per_spec]);
        let msg = format!(
            "{} scenes go to D-ID (each a paid talk); this server sends at most {} per spec",
            did_scenes.len(),
            state.config.max_did_scenes_per_spec
        );
        return Err(ApiError::unprocessable("too_costly", format!("{path}: {msg}"))
            .with_issues(vec![IssueBody { path, message: msg }]));
    }
    if state.config.did_api_key.is_none() {
        let remote: Vec<IssueBody> = spec
            .scenes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_d_id_talking_head())
            .map(|(i, _)| IssueBody {
                path: format!("spec.scenes[{i}].motion.provider"),
                message: "d-id needs did_api_key on this server; use provider local to animate the face here".into(),
            })
            .collect();
        if let Some(first) = remote.first() {
            let msg = format!("{}: {}", first.path, first.message);
            return Err(ApiError::unprocessable("provider_unavailable", msg).with_issues(remote));
        }
    }
    let spec_json = serde_json::to_value(&spec).map_err(ApiError::internal)?;
    let canonical = serde_json::to_vec(&spec_json).map_err(ApiError::internal)?;
    let spec_hash = blake3::hash(&canonical).to_hex().to_string();
    let dedupe = env.dedupe.unwrap_or(true);
    let request_hash = request_hash(&spec_hash, priority, env.webhook_url.as_deref(), &metadata, dedupe);
    Ok(Prepared {
        spec_json,
        spec_hash,
        request_hash,
        priority,
        priority_given: env.priority.is_some(),
        webhook_url: env.webhook_url,
        metadata,
        dedupe,
        charge: reelsmith_store::Usage { megapixel_frames: cost.megapixel_frames, did_scenes: did_scenes.len() as u64 },
        prompt: None,
    })
}

/// A prompt, accepted: its request checked (every field bounded, the voice and model it needs
/// configured) and priced by its target length, to be planned by its job ([`plan_prompt`]),
/// so no request waits on a language model. `None` when the envelope carries a storyboard.
pub async fn accept_prompt(state: &AppState, caller: &Caller, env: &Envelope) -> ApiResult<Option<Prepared>> {
    let Some(prompt) = env.prompt.clone() else { return Ok(None) };
    if env.spec.is_some() {
        return Err(ApiError::unprocessable("invalid_request", "send a storyboard as `spec` or a `prompt`, not both")
            .with_issues(vec![IssueBody { path: "prompt".into(), message: "given with spec".into() }]));
    }
    let req = reelsmith_director::PromptRequest::from_json(prompt).map_err(director_error)?;
    if req.music.as_deref().is_some_and(|m| !m.starts_with(ASSET_PREFIX)) {
        return Err(director_error(reelsmith_director::DirectorError::invalid(
            "prompt.music",
            format!("name an uploaded audio asset by its ref ({ASSET_PREFIX}…, from POST /api/v1/assets)"),
        )));
    }
    state.director.precheck(&req).map_err(director_error)?;
    check_provider_budget(state, caller.0.as_ref()).await?;
    check_needed_providers(state, &req).await?;
    let (priority, metadata) = envelope_options(state, env)?;
    // Priced before planning by what it asks for; the storyboard is checked again once planned.
    let (width, height) = req.dimensions();
    let seconds = req.target_seconds();
    let frames = (seconds * 30.0).ceil() as u64;
    let frame_pixels = u64::from(width) * u64::from(height);
    let cost = reelsmith_engine::cost::Cost {
        seconds,
        frames,
        frame_pixels,
        megapixel_frames: frames as f64 * frame_pixels as f64 / 1e6,
        canvas_megapixels: 0.0,
        text_chars: 0,
    };
    check_cost(&state.config, &cost)?;
    let request = serde_json::to_value(&req).map_err(ApiError::internal)?;
    let canonical = reelsmith_providers::cache::canonical(&serde_json::json!({"prompt": request}));
    let spec_hash = blake3::hash(canonical.as_bytes()).to_hex().to_string();
    let dedupe = env.dedupe.unwrap_or(true);
    let request_hash = request_hash(&spec_hash, priority, env.webhook_url.as_deref(), &metadata, dedupe);
    Ok(Some(Prepared {
        spec_json: serde_json::Value::Null,
        spec_hash,
        request_hash,
        priority,
        priority_given: env.priority.is_some(),
        webhook_url: env.webhook_url.clone(),
        metadata,
        dedupe,
        charge: reelsmith_store::Usage { megapixel_frames: cost.megapixel_frames, did_scenes: 0 },
        prompt: Some(serde_json::json!({"request": request})),
    }))
}

/// The key's daily provider budget (its own, else the server's default): 429
/// `budget_exceeded` once what its prompts spent today reaches it, until midnight UTC.
async fn check_provider_budget(state: &AppState, key: Option<&reelsmith_store::ApiKey>) -> ApiResult<()> {
    let Some(key) = key else { return Ok(()) };
    let Some(cap) = key.limits.daily_provider_usd.or(state.config.default_daily_provider_usd) else { return Ok(()) };
    let now = reelsmith_store::now_ms();
    let day = reelsmith_store::usage_day(now);
    let spent = state.meta.provider_spend(&key.id, day).await?;
    if spent < cap {
        return Ok(());
    }
    let until_midnight = seconds_until_day_ends(day, now);
    let msg = format!(
        "this key may spend ${cap:.4} per day (UTC) on paid providers (models, stock, pictures, voices); ${spent:.4} spent today"
    );
    Err(ApiError::too_many("budget_exceeded", format!("prompt: {msg}"), until_midnight)
        .with_issues(vec![IssueBody { path: "prompt".into(), message: msg }]))
}

/// 429 `budget_exceeded` when a provider the request cannot do without (its planner, its
/// remote voice) has spent this server's daily budget for it.
async fn check_needed_providers(state: &AppState, req: &reelsmith_director::PromptRequest) -> ApiResult<()> {
    use reelsmith_director::Budgets as _;
    let budgets = crate::budgets::StoreBudgets::new(state, None);
    for provider in state.director.needed_providers(req) {
        match budgets.allow(&provider).await {
            Ok(()) => {}
            Err(reelsmith_providers::Failure::Quota(msg)) => {
                let now = reelsmith_store::now_ms();
                let until_midnight = seconds_until_day_ends(reelsmith_store::usage_day(now), now);
                return Err(ApiError::too_many("budget_exceeded", format!("prompt: {msg}"), until_midnight)
                    .with_issues(vec![IssueBody { path: "prompt".into(), message: msg }]));
            }
            Err(other) => return Err(ApiError::internal(other.message())),
        }
    }
    Ok(())
}

/// Why planning a stored prompt failed, and whether a later attempt may succeed (a provider's
/// outage or rate limit) or not (the request's or the plan's own fault).
#[derive(Debug)]
pub struct PlanFailure {
    pub error: ApiError,
    pub retry: bool,
}

impl From<ApiError> for PlanFailure {
    fn from(error: ApiError) -> Self {
        let retry = error.status.is_server_error() && error.code != "plan_failed";
        Self { error, retry }
    }
}

impl From<reelsmith_store::StoreError> for PlanFailure {
    fn from(e: reelsmith_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// Plans a stored prompt (its job's first stage): the director's storyboard, with fetched,
/// drawn and spoken media made the caller's assets, checked like any submitted storyboard and
/// stored with the plan, visuals, voices and ledger. Returns the spec to render and what was
/// kept of the planning.
pub async fn plan_prompt(
    state: &AppState,
    g: &GenerationRecord,
) -> Result<(serde_json::Value, serde_json::Value), PlanFailure> {
    let request = g.prompt.as_ref().map(|p| p["request"].clone()).unwrap_or_default();
    let req = reelsmith_director::PromptRequest::from_json(request)
        .map_err(|e| PlanFailure { retry: e.is_retryable(), error: director_error(e) })?;
    // The key may have spent its day's provider budget since this was queued.
    let key = match &g.api_key_id {
        Some(id) => state.meta.api_key(id).await?,
        None => None,
    };
    check_provider_budget(state, key.as_ref()).await.map_err(|error| PlanFailure { error, retry: false })?;
    check_needed_providers(state, &req).await.map_err(|error| PlanFailure { error, retry: false })?;
    let mut new_assets = vec![];
    // Every paid call counts against the key's and the provider's day as it is made, whether
    // or not the plan then succeeds.
    let ledger =
        reelsmith_director::Ledger::new(Some(Arc::new(crate::budgets::StoreBudgets::new(state, key.as_ref()))));
    let (storyboard, kept) = direct_request(state, &req, g.api_key_id.clone(), &mut new_assets, &ledger).await?;
    let env = Envelope {
        spec: Some(storyboard),
        prompt: None,
        template: None,
        merge: None,
        priority: None,
        webhook_url: None,
        metadata: None,
        dedupe: None,
    };
    let prepared = prepare(state, env, &HashMap::new(), g.api_key_id.as_deref()).await?;
    // The plan's own length, not the estimate accepted at POST: a model that wrote longer
    // narration than asked for must still fit the key's per-job limit.
    if let Some(key) = &key {
        check_key_job_limit(key, prepared.charge).map_err(|error| PlanFailure { error, retry: false })?;
    }
    state.meta.set_plan(&g.id, &prepared.spec_json, &kept).await.map_err(ApiError::from)?;
    Ok((prepared.spec_json, kept))
}

/// A prompt's storyboard: the director plans it (a text here, a topic with the configured
/// model) and the storyboard then goes through [`prepare`] like any other. Returns it with what
/// to keep with the generation: the request, the plan, each scene's picture and voice source,
/// the cost ledger.
async fn direct_request(
    state: &AppState,
    req: &reelsmith_director::PromptRequest,
    api_key_id: Option<String>,
    new_assets: &mut Vec<String>,
    ledger: &reelsmith_director::Ledger,
) -> Result<(serde_json::Value, serde_json::Value), PlanFailure> {
    let engine = state.engine.clone();
    // What the plan can get wrong (text limits, voices); files are checked by `prepare`.
    let check = move |board: &serde_json::Value| {
        let mut board = board.clone();
        if let Some(m) = board.as_object_mut() {
            m.remove("music");
        }
        // The caller's assets are not files here; `prepare` checks them.
        for scene in board["scenes"].as_array_mut().into_iter().flatten() {
            if let Some(s) = scene.as_object_mut()
                && s.get("image").and_then(|v| v.as_str()).is_some_and(|f| f.starts_with(ASSET_PREFIX))
            {
                s.remove("image");
            }
        }
        // The engine's checks read fonts and probe clips: blocking work, kept off the runtime's
        // other tasks.
        let run = || {
            reelsmith_director::spec_problems(&board, std::path::Path::new("."), |spec| {
                match engine.validate(spec, std::path::Path::new(".")) {
                    Ok(()) => vec![],
                    Err(reelsmith_engine::RenderError::Invalid(e)) => e.issues,
                    Err(e) => vec![reelsmith_spec::Issue { path: "$".into(), message: e.to_string() }],
                }
            })
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    };
    // The caller's own pictures, matched by their file names (newest used first).
    let mut mine = vec![];
    if req.visuals.contains(&reelsmith_director::request::VisualKind::Assets) {
        for a in state.meta.assets_of(api_key_id.as_deref(), 1000).await? {
            if a.media_type.starts_with("image/") {
                let mut asset = reelsmith_director::visuals::Asset::new(a.file_name.clone().unwrap_or_default(), "");
                asset.file = format!("{ASSET_PREFIX}{}", a.id);
                mine.push(asset);
            }
        }
    }
    let planned = state
        .director
        .direct_with(req, &check, &mine, ledger)
        .await
        .map_err(|e| PlanFailure { retry: e.is_retryable(), error: director_error(e) })?;
    // (Costs are counted as they are spent, by the budgets.)
    for e in &planned.ledger {
        metrics::counter!("reelsmith_provider_cache_total", "provider" => e.provider.clone(), "hit" => e.cache_hit.to_string())
            .increment(1);
    }
    // Downloaded and drawn pictures become the caller's assets; the storyboard names them so.
    let mut planned = planned;
    for (i, chosen) in planned.visuals.iter_mut().enumerate() {
        // The caller's own assets are named so already.
        if chosen.source == reelsmith_director::visuals::Source::Asset {
            continue;
        }
        let Some(file) = chosen.file.clone() else { continue };
        let bytes = tokio::fs::read(&file).await.map_err(ApiError::internal)?;
        // The asset is the copy kept; searches and drawings stay cached by their providers' keys.
        let _ = tokio::fs::remove_file(&file).await;
        let name = std::path::Path::new(&file).file_name().map(|n| n.to_string_lossy().into_owned());
        let what = format!("scenes[{i}]'s picture from {}", chosen.provider.as_deref().unwrap_or("a provider"));
        let (asset, new) = crate::assets::store_new_asset(state, bytes.into(), name, api_key_id.clone(), &what).await?;
        if new {
            new_assets.push(asset.id.clone());
        }
        let reference = format!("{ASSET_PREFIX}{}", asset.id);
        let scene = &mut planned.storyboard["scenes"][i];
        if chosen.video {
            scene["video"]["file"] = serde_json::json!(reference);
        } else {
            scene["image"] = serde_json::json!(reference);
        }
        chosen.file = Some(reference);
    }
    // Remote voices' recordings too (the speech cache keeps its own copy).
    for (i, voiced) in planned.voices.iter_mut().enumerate() {
        let Some(path) = voiced.local_path.take() else { continue };
        let bytes = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
        let _ = tokio::fs::remove_file(&path).await;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let what = format!("scenes[{i}]'s narration from {}", voiced.provider);
        let (asset, new) = crate::assets::store_new_asset(state, bytes.into(), name, api_key_id.clone(), &what).await?;
        if new {
            new_assets.push(asset.id.clone());
        }
        let reference = format!("{ASSET_PREFIX}{}", asset.id);
        planned.storyboard["scenes"][i]["narration"]["audio"] = serde_json::json!(reference);
        voiced.file = reference;
    }
    let kept = serde_json::json!({
        "request": req,
        "plan": planned.plan,
        "visuals": planned.visuals,
        "voices": planned.voices,
        "ledger": planned.ledger,
        "stages": planned.stages,
    });
    Ok((planned.storyboard, kept))
}

/// The director's failures as API errors: the request's fault (422, naming the field), no
/// model configured (422), or the provider's (502/503, naming the stage and provider).
fn director_error(e: reelsmith_director::DirectorError) -> ApiError {
    use reelsmith_director::DirectorError as D;
    let code = e.code();
    match e {
        D::Invalid { field, message } => ApiError::unprocessable(code, format!("{field}: {message}"))
            .with_issues(vec![IssueBody { path: field, message }]),
        D::NoModel => ApiError::unprocessable(code, D::NoModel.to_string()),
        D::Plan(_) => ApiError::new(StatusCode::BAD_GATEWAY, code, e.to_string()),
        D::Provider { ref failure, .. } => {
            let wait = match failure {
                reelsmith_providers::Failure::RateLimited { retry_after, .. } => {
                    Some(retry_after.map_or(30, |d| d.as_secs().max(1)))
                }
                reelsmith_providers::Failure::Unavailable(_) => Some(30),
                _ => None,
            };
            let status = if wait.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_GATEWAY };
            let mut err = ApiError::new(status, code, e.to_string());
            err.retry_after_s = wait;
            err
        }
    }
}

/// 422 `too_costly` when one generation costs more than the key may render per job.
fn check_key_job_limit(key: &reelsmith_store::ApiKey, charge: reelsmith_store::Usage) -> ApiResult<()> {
    match key.limits.job_megapixel_frames {
        Some(max) if charge.megapixel_frames > max => {
            let msg = format!(
                "about {:.0} megapixel-frames (frames × pixels); this key renders at most {max:.0} per job",
                charge.megapixel_frames
            );
            Err(ApiError::unprocessable("too_costly", format!("spec.output: {msg}"))
                .with_issues(vec![crate::error::IssueBody { path: "spec.output".into(), message: msg }]))
        }
        _ => Ok(()),
    }
}

/// Refuses a spec whose estimated cost is over the server's limits, before any work.
pub fn check_cost(config: &crate::config::Config, cost: &reelsmith_engine::cost::Cost) -> ApiResult<()> {
    let mut issues = vec![];
    if cost.megapixel_frames > config.max_job_megapixel_frames {
        issues.push(IssueBody {
            path: "spec.output".into(),
            message: format!(
                "about {:.0} s: {} frames of {} pixels, {:.0} megapixel-frames; this server renders at most {:.0} per job (use a smaller size, a lower fps or a shorter video)",
                cost.seconds,
                cost.frames,
                cost.frame_pixels,
                cost.megapixel_frames,
                config.max_job_megapixel_frames
            ),
        });
    }
    if cost.canvas_megapixels > config.max_job_canvas_megapixels {
        issues.push(IssueBody {
            path: "spec.scenes".into(),
            message: format!(
                "the scenes' canvases (each the frame at its largest Ken Burns zoom) add up to {:.0} megapixels; the limit is {:.0} (fewer scenes, less zoom or a smaller size)",
                cost.canvas_megapixels, config.max_job_canvas_megapixels
            ),
        });
    }
    if cost.text_chars > config.max_job_text_chars {
        issues.push(IssueBody {
            path: "spec.scenes".into(),
            message: format!(
                "{} characters of text in all; the limit is {} per job",
                cost.text_chars, config.max_job_text_chars
            ),
        });
    }
    match issues.first() {
        None => Ok(()),
        Some(first) => {
            let msg = format!("{}: {}", first.path, first.message);
            Err(ApiError::unprocessable("too_costly", msg).with_issues(issues))
        }
    }
}

pub fn check_webhook_url(u: &str, allow_private: bool) -> ApiResult<()> {
    let bad = |m: String| {
        Err(ApiError::unprocessable("invalid_request", format!("webhook_url: {m}"))
            .with_issues(vec![IssueBody { path: "webhook_url".into(), message: m }]))
    };
    if u.len() > 2048 {
        return bad("longer than 2048 characters".into());
    }
    let url = match reqwest::Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
        Ok(url) => return bad(format!("'{}' URLs are not supported; use http or https", url.scheme())),
        Err(e) => return bad(format!("not a URL: {e}")),
    };
    let private = match url.host() {
        Some(url::Host::Ipv4(ip)) => crate::net::is_private(ip.into()),
        Some(url::Host::Ipv6(ip)) => crate::net::is_private(ip.into()),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost"),
        None => false,
    };
    if private && !allow_private {
        return bad(format!(
            "'{}' is a private or loopback address; webhooks go to public addresses unless the server sets webhook_allow_private = true",
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(())
}

/// Cancels a generation: a queued one at once (its webhook event enqueued with the
/// cancellation, its watchers told), a running one at its worker's next heartbeat.
pub async fn cancel_generation(state: &AppState, g: &GenerationRecord) -> ApiResult<reelsmith_store::CancelOutcome> {
    let mut cancelled = g.clone();
    cancelled.state = reelsmith_store::JobState::Cancelled;
    let event = crate::webhooks::for_generation(state, &cancelled, "generation.cancelled");
    let outcome = state.queue.cancel(&g.job_id, event).await?;
    if outcome == reelsmith_store::CancelOutcome::Cancelled
        && let Some(now) = state.meta.generation(&g.id).await?
    {
        state.hub.publish(crate::events::event_of(&now));
    }
    Ok(outcome)
}

/// Loads a generation the caller may see (another key's generations do not exist for it).
pub async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<GenerationRecord> {
    match state.meta.generation(id).await? {
        Some(g) if caller.0.is_none() || g.api_key_id == caller.key_id() => Ok(g),
        _ => Err(ApiError::not_found("generation", id)),
    }
}

/// Stores a prepared generation with its render job (one transaction); wakes a worker.
/// Returns the HTTP status, the generation's id and how it came about.
pub async fn enqueue(
    state: &AppState,
    caller: &Caller,
    p: crate::submit::Prepared,
    idempotency_key: Option<String>,
) -> ApiResult<(StatusCode, String, &'static str)> {
    let mut p = p;
    // Priority is an entitlement: a key asks for at most its own maximum.
    if let Some(key) = &caller.0
        && p.priority > i32::from(key.max_priority)
    {
        if p.priority_given {
            let msg = format!("this key may use priorities 0-{}", key.max_priority);
            return Err(ApiError::unprocessable("priority_not_allowed", format!("priority: {msg}"))
                .with_issues(vec![crate::error::IssueBody { path: "priority".into(), message: msg }]));
        }
        p.priority = i32::from(key.max_priority);
    }
    // The key's own cost limits: per job here, per day charged by the store in the same
    // transaction as the insert (replays and duplicates cost nothing).
    if let Some(key) = &caller.0 {
        check_key_job_limit(key, p.charge)?;
    }
    // Fair between keys: a key's k-th unfinished generation is queued below every other key's
    // earlier ones at the same priority.
    let unfinished = match caller.key_id() {
        Some(k) => state.meta.active_generations(&k).await?,
        None => 0,
    };
    let id = new_id("gen");
    let mut job = crate::queues::Job::Render { generation: id.clone() }.to_new_job();
    job.subject = Some(id.clone());
    job.priority = fair_priority(p.priority, unfinished);
    job.retry = state.config.render_retry();
    job.timeout = std::time::Duration::from_secs_f64(state.config.job_timeout_secs);
    let budget = caller.0.as_ref().map(|k| daily_budget(&state.config, k, p.charge));
    let g = NewGeneration {
        id,
        spec: p.spec_json,
        spec_hash: p.spec_hash,
        priority: p.priority,
        webhook_url: p.webhook_url,
        idempotency_key,
        request_hash: p.request_hash,
        api_key_id: caller.key_id(),
        metadata: p.metadata,
        max_active: caller.0.as_ref().map(|k| k.max_concurrent_jobs),
        dedupe: p.dedupe,
        budget,
        prompt: p.prompt,
    };
    let created = match state.meta.create_generation(g, job).await {
        Err(reelsmith_store::StoreError::Budget { used }) => return Err(over_budget(p.charge, used, budget)),
        other => other?,
    };
    let (status, id, how) = match created {
        CreateOutcome::Created(id) => {
            state.wake.renders.notify_waiters();
            (StatusCode::ACCEPTED, id, "created")
        }
        CreateOutcome::Idempotent(id) => (StatusCode::ACCEPTED, id, "idempotent_replay"),
        CreateOutcome::Deduplicated(id) => (StatusCode::OK, id, "deduplicated"),
    };
    Ok((status, id, how))
}

/// What a generation costs its key today and the most the key may spend per UTC day (its own
/// limits, else the server's defaults).
fn daily_budget(
    config: &crate::config::Config,
    key: &reelsmith_store::ApiKey,
    charge: reelsmith_store::Usage,
) -> reelsmith_store::Budget {
    reelsmith_store::Budget {
        day: reelsmith_store::usage_day(reelsmith_store::now_ms()),
        charge,
        cap: reelsmith_store::Usage {
            megapixel_frames: key
                .limits
                .daily_megapixel_frames
                .or(config.default_daily_megapixel_frames)
                .unwrap_or(f64::MAX),
            did_scenes: key.limits.daily_did_scenes.unwrap_or(config.default_daily_did_scenes),
        },
    }
}

/// 429 `budget_exceeded`, naming the budget that ran out and when it renews (midnight UTC).
fn over_budget(
    charge: reelsmith_store::Usage,
    used: reelsmith_store::Usage,
    budget: Option<reelsmith_store::Budget>,
) -> ApiError {
    let cap = budget.map(|b| b.cap).unwrap_or_default();
    let day = budget.map(|b| b.day).unwrap_or_default();
    let until_midnight = seconds_until_day_ends(day, reelsmith_store::now_ms());
    let (path, msg) = if charge.did_scenes > 0 && used.did_scenes + charge.did_scenes > cap.did_scenes {
        (
            "spec.scenes",
            format!(
                "this key may send {} scenes to D-ID per day (UTC); {} sent today, this spec has {}",
                cap.did_scenes, used.did_scenes, charge.did_scenes
            ),
        )
    } else {
        (
            "spec.output",
            format!(
                "this key may render {:.0} megapixel-frames per day (UTC); {:.0} used today, this spec needs {:.0}",
                cap.megapixel_frames, used.megapixel_frames, charge.megapixel_frames
            ),
        )
    };
    ApiError::too_many("budget_exceeded", format!("{path}: {msg}"), until_midnight)
        .with_issues(vec![crate::error::IssueBody { path: path.into(), message: msg }])
}

/// The queue priority of a generation asked for at `priority` (0-9) by a key that already has
/// `unfinished` generations queued or running. Claims take the highest first, so within a
/// priority each key's first generation comes before any key's second, and so on: a key with a
/// thousand queued renders delays another key's first by at most the one each worker is on.
/// Priority still orders one key's own generations (it dominates the rank).
pub fn fair_priority(priority: i32, unfinished: u64) -> i32 {
    priority * 10_000 - unfinished.min(9_999) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_errors_name_the_problem() {
        let e = parse_envelope(b"{\"spec\": 1, \"colour\": 2}").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("colour"), "{}", e.message);
        let e = parse_envelope(b"{\"spec\": ").unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "invalid_json"));
        let e = parse_envelope(b"{\"spec\": {}, \"priority\": \"high\"}").unwrap_err();
        assert!(e.message.starts_with("priority"), "{}", e.message);
        assert_eq!(parse_envelope(b"").unwrap_err().code, "empty_body");
    }

    #[test]
    fn webhook_urls() {
        assert!(check_webhook_url("https://example.com/hook", false).is_ok());
        assert!(check_webhook_url("http://127.0.0.1:9000/h", true).is_ok());
        for private in [
            "http://127.0.0.1:9000/h",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest",
            "http://[::1]/",
            "http://localhost:8080/",
            "http://192.168.0.1/",
        ] {
            let e = check_webhook_url(private, false).unwrap_err();
            assert!(e.message.contains("private"), "{private}: {}", e.message);
        }
        assert!(check_webhook_url("ftp://x/y", true).is_err());
        assert!(check_webhook_url("not a url", true).is_err());
    }
}
