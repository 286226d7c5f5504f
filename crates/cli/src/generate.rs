//! `reelsmith plan` and `reelsmith generate`: a topic (planned by the configured language
//! model) or a text (narrated as written, no model) becomes a storyboard, and `generate`
//! renders it. The storyboard is kept beside the video so one scene can be edited and the video
//! rendered again (`reelsmith render`), re-encoding only that scene.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reelsmith_director::config::{LlmSettings, ProvidersConfig, StockSettings};
use reelsmith_director::plan::Problem;
use reelsmith_director::visuals::{Asset, ImageChain, Source, StockChain};
use reelsmith_director::voices::VoiceChain;
use reelsmith_director::{Director, Planned, PromptRequest, spec_problems};
use reelsmith_engine::{Engine, RenderError, RenderOptions};
use reelsmith_providers::cache::ResultCache;
use serde_json::{Value, json};

use crate::CacheArgs;

/// What to make a video of, and how.
#[derive(clap::Args, Clone, Debug)]
pub struct PromptArgs {
    /// What the video is about: the configured language model writes the storyboard.
    topic: Option<String>,
    /// Narrate this text file as written instead (`-` reads standard input): no model needed.
    #[arg(long, conflicts_with = "topic")]
    text: Option<PathBuf>,
    /// Target length in seconds (a topic; a text's length sets its own).
    #[arg(long)]
    duration: Option<f64>,
    /// landscape, vertical, square, 1080p, 720p, 360p, or WIDTHxHEIGHT.
    #[arg(long)]
    size: Option<String>,
    /// Words about the look and tone.
    #[arg(long)]
    style: Option<String>,
    /// Narration language (en, de, fr, pt-br…).
    #[arg(long, default_value = "en")]
    language: String,
    /// Speech engine: espeak-ng or piper (local), elevenlabs or openai (remote: configured in
    /// --config, or by $REELSMITH_ELEVENLABS_API_KEY / $REELSMITH_OPENAI_API_KEY).
    #[arg(long)]
    voice: Option<String>,
    /// The engine's voice (default: the engine's own default).
    #[arg(long)]
    voice_name: Option<String>,
    /// Picture sources in order of preference, comma-separated: assets,stock,generate,cards.
    #[arg(long, value_delimiter = ',')]
    visuals: Vec<String>,
    /// A folder of your own pictures, matched to scenes by file name and a same-named .txt caption.
    #[arg(long)]
    assets: Option<PathBuf>,
    /// Background music file.
    #[arg(long)]
    music: Option<PathBuf>,
    /// Service config file: its [providers.llm] plans topics, [providers.pexels] and
    /// [providers.pixabay] find stock pictures, [providers.sd_webui], [providers.replicate] and
    /// [providers.openai_images] draw them.
    #[arg(long, env = "REELSMITH_CONFIG")]
    config: Option<PathBuf>,
    /// An OpenAI-compatible server for topics (instead of the config's), e.g. http://127.0.0.1:11434/v1.
    #[arg(long, requires = "llm_model")]
    llm_base_url: Option<String>,
    #[arg(long, requires = "llm_base_url")]
    llm_model: Option<String>,
    /// A GGUF model to plan topics in this process (builds with the `local-llm` feature; the
    /// default planner from `scripts/models.sh --llm` is used when nothing else is configured).
    #[arg(long, conflicts_with = "llm_base_url")]
    local_model: Option<PathBuf>,
    /// Threads for the local model (default 1).
    #[arg(long, requires = "local_model")]
    local_threads: Option<u32>,
}

impl PromptArgs {
    /// The request, with file paths relative to `base` (where the storyboard is written).
    fn request(&self, base: &Path) -> Result<PromptRequest> {
        let mut r = json!({"language": self.language});
        match (&self.topic, &self.text) {
            (Some(t), _) => r["topic"] = json!(t),
            (None, Some(path)) => {
                let text = if path.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin()).context("reading the text from standard input")?
                } else {
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
                };
                r["text"] = json!(text);
            }
            (None, None) => bail!("give a topic (\"reelsmith plan 'how volcanoes work'\") or --text FILE"),
        }
        if let Some(d) = self.duration {
            r["duration_s"] = json!(d);
        }
        if let Some(s) = &self.size {
            r["size"] = match s.split_once('x') {
                Some((w, h)) => json!({"width": w.parse::<u32>().context("--size WIDTHxHEIGHT")?,
                                       "height": h.parse::<u32>().context("--size WIDTHxHEIGHT")?}),
                None => json!(s),
            };
        }
        if let Some(s) = &self.style {
            r["style"] = json!(s);
        }
        if let Some(engine) = &self.voice {
            r["voice"] = json!({"engine": engine});
            if let Some(n) = &self.voice_name {
                r["voice"]["name"] = json!(n);
            }
        } else if self.voice_name.is_some() {
            bail!("--voice-name needs --voice (espeak-ng, piper, elevenlabs or openai)");
        }
        if !self.visuals.is_empty() {
            r["visuals"] = json!(self.visuals);
        }
        if let Some(m) = &self.music {
            r["music"] = json!(relative_to(m, base)?);
        }
        Ok(PromptRequest::from_json(r)?)
    }

    /// The providers: the config file's `[providers]`, the command line's model, and stock
    /// keys from `$REELSMITH_PEXELS_API_KEY` / `$REELSMITH_PIXABAY_API_KEY`.
    fn providers(&self) -> Result<ProvidersConfig> {
        let mut providers = match &self.config {
            None => ProvidersConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let table: toml::Table = text.parse().with_context(|| format!("config file {}", path.display()))?;
                match table.get("providers") {
                    Some(v) => {
                        v.clone().try_into().with_context(|| format!("config file {}: [providers]", path.display()))?
                    }
                    None => ProvidersConfig::default(),
                }
            }
        };
        if let (Some(base_url), Some(model)) = (&self.llm_base_url, &self.llm_model) {
            providers.local_llm = None;
            providers.llm = Some(LlmSettings {
                name: None,
                base_url: base_url.clone(),
                model: model.clone(),
                api_key: None,
                rpm: None,
                burst: None,
                concurrency: 1,
                timeout_secs: 300.0,
                usd_per_mtok_in: 0.0,
                usd_per_mtok_out: 0.0,
                daily_budget_usd: None,
            });
        }
        for (slot, var) in
            [(&mut providers.pexels, "REELSMITH_PEXELS_API_KEY"), (&mut providers.pixabay, "REELSMITH_PIXABAY_API_KEY")]
        {
            if slot.is_none()
                && let Ok(key) = std::env::var(var)
            {
                *slot = Some(StockSettings {
                    api_key: key,
                    base_url: None,
                    rpm: None,
                    concurrency: 4,
                    daily_budget_usd: None,
                });
            }
        }
        if let Some(model) = &self.local_model {
            providers.llm = None;
            providers.local_llm = Some(reelsmith_director::config::LocalLlmSettings {
                model: model.clone(),
                threads: self.local_threads.unwrap_or(1),
            });
        }
        if providers.elevenlabs.is_none()
            && let Ok(key) = std::env::var("REELSMITH_ELEVENLABS_API_KEY")
        {
            providers.elevenlabs = serde_json::from_value(json!({"api_key": key})).ok();
        }
        if providers.openai_speech.is_none()
            && let Ok(key) = std::env::var("REELSMITH_OPENAI_API_KEY")
        {
            providers.openai_speech = serde_json::from_value(json!({"api_key": key})).ok();
        }
        providers.check().map_err(anyhow::Error::msg)?;
        Ok(providers)
    }

    /// The caller's pictures: images in the folder (not below), each with an optional caption
    /// in a same-named `.txt` file, named relative to `base`.
    fn assets(&self, base: &Path) -> Result<Vec<Asset>> {
        let Some(dir) = &self.assets else { return Ok(vec![]) };
        let mut out = vec![];
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading --assets {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            if !matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "webp") {
                continue;
            }
            let caption = std::fs::read_to_string(path.with_extension("txt")).unwrap_or_default();
            out.push(Asset::new(relative_to(&path, base)?, &caption));
        }
        Ok(out)
    }
}

/// `path` as the storyboard in `base` names it: relative when possible.
fn relative_to(path: &Path, base: &Path) -> Result<String> {
    let abs = |p: &Path| -> Result<PathBuf> {
        Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) })
    };
    let normal = |p: PathBuf| -> PathBuf {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    };
    let (path, base) = (normal(abs(path)?), normal(abs(base)?));
    let common = path.components().zip(base.components()).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in base.components().skip(common) {
        rel.push("..");
    }
    for c in path.components().skip(common) {
        rel.push(c);
    }
    Ok(rel.to_string_lossy().into_owned())
}

/// The engine's validation of a storyboard in `base`, as problems by path.
fn engine_check(engine: &Engine, base: &Path) -> impl Fn(&Value) -> Vec<Problem> + Sync {
    move |board: &Value| {
        spec_problems(board, base, |spec| match engine.validate(spec, base) {
            Ok(()) => vec![],
            Err(RenderError::Invalid(e)) => e.issues,
            Err(e) => vec![Problem { path: "$".into(), message: e.to_string() }],
        })
    }
}

fn plan(args: &PromptArgs, engine: &Engine, base: &Path, cache_root: &Path) -> Result<Planned> {
    let req = args.request(base)?;
    let providers = args.providers()?;
    let http = reqwest::Client::builder().build().context("HTTP client")?;
    let sources = providers.stock_sources(&http);
    let base_dir = base.to_path_buf();
    let stock = (!sources.is_empty()).then(|| StockChain {
        sources,
        searches: ResultCache::new(cache_root.join("stock-searches"), Some(Duration::from_secs(24 * 3600))),
        http: http.clone(),
        // Downloads stay beside the storyboard, which names them relatively.
        media_dir: base.join("media"),
        media_name: Arc::new(move |p: &Path| relative_to(p, &base_dir).unwrap_or_else(|_| p.display().to_string())),
    });
    let image_sources = providers.image_sources(&http);
    let base_dir = base.to_path_buf();
    let images = (!image_sources.is_empty()).then(|| ImageChain {
        sources: image_sources,
        cache: ResultCache::new(cache_root.join("images"), None),
        media_dir: base.join("media"),
        media_name: Arc::new(move |p: &Path| relative_to(p, &base_dir).unwrap_or_else(|_| p.display().to_string())),
        style: req.style.clone(),
    });
    let speech_sources = providers.speech_sources(&http);
    let base_dir = base.to_path_buf();
    let voices = (!speech_sources.is_empty()).then(|| VoiceChain {
        sources: speech_sources,
        cache: ResultCache::new(cache_root.join("speech"), None),
        media_dir: base.join("media"),
        media_name: Arc::new(move |p: &Path| relative_to(p, &base_dir).unwrap_or_else(|_| p.display().to_string())),
    });
    let director = Director {
        voices,
        assets: args.assets(base)?,
        plans: Some(ResultCache::new(cache_root.join("plans"), None)),
        model: reelsmith_server::planner(&providers).map_err(anyhow::Error::msg)?,
        stock,
        images,
        decisions: Some(ResultCache::new(cache_root.join("visual-decisions"), Some(Duration::from_secs(24 * 3600)))),
    };
    let check = engine_check(engine, base);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(rt.block_on(director.direct(&req, &check))?)
}

fn summary(planned: &Planned) -> String {
    let count = |s: Source| planned.visuals.iter().filter(|v| v.source == s).count();
    let cost: f64 = planned.ledger.iter().fold(0.0, |sum, e| sum + e.est_cost_usd);
    let calls = planned.ledger.iter().filter(|e| !e.cache_hit).count();
    let hits = planned.ledger.len() - calls;
    let plan_s = planned.stages.iter().find(|s| s.stage == "plan").map_or(0.0, |s| s.seconds);
    format!(
        "{} scenes \"{}\" (pictures: {} assets, {} stock, {} generated, {} cards); plan {plan_s:.2} s; provider calls {calls} ({hits} cached), est. ${cost:.4}",
        planned.plan.scenes.len(),
        planned.plan.title,
        count(Source::Asset),
        count(Source::Stock),
        count(Source::Generated),
        count(Source::Card),
    )
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(v)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// `reelsmith plan`: writes the storyboard (and, with `details`, the plan, visuals and ledger).
pub fn plan_command(args: &PromptArgs, output: &Path, details: Option<&Path>, cache: &CacheArgs) -> Result<()> {
    let base = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let engine = Engine::new(crate::open_cache(cache)?)?;
    let planned = plan(args, &engine, base, &engine.cache.root().join("director"))?;
    write_json(output, &planned.storyboard)?;
    if let Some(d) = details {
        write_json(d, &planned)?;
    }
    eprintln!("{}: {}", output.display(), summary(&planned));
    Ok(())
}

/// `reelsmith generate`: plans, keeps the storyboard beside the video, renders.
pub fn generate_command(
    args: &PromptArgs,
    output: &Path,
    storyboard: Option<&Path>,
    quiet: bool,
    cache: &CacheArgs,
) -> Result<()> {
    let started = Instant::now();
    let board_path = storyboard.map(Path::to_path_buf).unwrap_or_else(|| output.with_extension("storyboard.json"));
    let base = board_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let engine = Engine::new(crate::open_cache(cache)?)?;
    let planned = plan(args, &engine, &base, &engine.cache.root().join("director"))?;
    write_json(&board_path, &planned.storyboard)?;
    let planning_s = started.elapsed().as_secs_f64();
    let bar = crate::progress_bar(quiet);
    let opts = RenderOptions { progress: Some(crate::progress_fn(bar.clone())), ..Default::default() };
    let spec = reelsmith_spec::parse(&planned.storyboard.to_string())?;
    let rep = engine.render(&spec, &base, output, &opts);
    bar.finish_and_clear();
    let rep = rep?;
    if !quiet {
        eprintln!("{}: {}", board_path.display(), summary(&planned));
        eprintln!(
            "{}: {}x{} {:.1} s video; planned in {planning_s:.2} s, rendered in {:.2} s",
            output.display(),
            rep.width,
            rep.height,
            rep.duration_s,
            rep.wall_s
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_named_relative_to_the_storyboard() {
        assert_eq!(relative_to(Path::new("/a/b/pics/x.jpg"), Path::new("/a/b")).unwrap(), "pics/x.jpg");
        assert_eq!(relative_to(Path::new("/a/pics/x.jpg"), Path::new("/a/b/out")).unwrap(), "../../pics/x.jpg");
        assert_eq!(relative_to(Path::new("/a/b/./c/../x.jpg"), Path::new("/a/b/")).unwrap(), "x.jpg");
    }
}
