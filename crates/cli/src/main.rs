//! `reelsmith`: render storyboards, inspect the machine, manage the cache, benchmark.

mod bench;
mod bench_cluster;
mod bench_measure;
mod bench_soak;
mod bench_talking;
mod generate;
mod serve;
mod tracing_setup;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reelsmith_engine::{Cache, Engine, Progress, RenderError, RenderOptions};

#[derive(Parser)]
#[command(name = "reelsmith", version, about = "Fast, cached, parallel video generation from JSON storyboards")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The stage cache, for the commands that use one.
#[derive(clap::Args, Clone, Debug)]
struct CacheArgs {
    /// Cache directory (default: $REELSMITH_CACHE_DIR or ~/.cache/reelsmith).
    #[arg(long, global = true, env = "REELSMITH_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Cache size limit in MB; least recently used entries go first.
    #[arg(long, global = true, default_value_t = 4096)]
    cache_size_mb: u64,
}

/// Tracing export, for the commands that render or serve.
#[derive(clap::Args, Clone, Debug, Default)]
struct TraceArgs {
    /// Export tracing spans (HTTP requests, jobs, renders, stages) as OpenTelemetry traces over
    /// OTLP/HTTP to this collector URL.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// The service's cache directory (its size comes from the config's `cache_size_mb`).
#[derive(clap::Args, Clone, Debug)]
struct ServiceCacheArgs {
    /// Cache directory (default: config `cache_dir`, else <data-dir>/cache).
    #[arg(long, env = "REELSMITH_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Render a spec to an MP4.
    Render {
        /// A spec, or a template (a spec with `{{ NAME }}` placeholders and its `fields`).
        spec: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// A template's field: `NAME=value` (repeatable; over `--merge-file`).
        #[arg(long, value_name = "NAME=VALUE")]
        merge: Vec<String>,
        /// A template's fields as JSON: `{"NAME": "Ada"}` or `[{"find": "NAME", "replace": "Ada"}]`.
        #[arg(long, value_name = "FILE")]
        merge_file: Option<PathBuf>,
        /// Write a JSON report: per-stage wall/CPU time, cache hits, peak memory, frames/s.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Ignore the cache (nothing is read from or kept in it).
        #[arg(long)]
        no_cache: bool,
        /// Segments encoded in parallel (default: cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Threads per encoder (default: cores / jobs).
        #[arg(long)]
        encoder_threads: Option<u32>,
        /// No progress bar.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        cache: CacheArgs,
        #[command(flatten)]
        trace: TraceArgs,
    },
    /// Write a storyboard from a topic (planned by the configured language model) or a text
    /// (narrated as written, no model): edit it, then `reelsmith render` it.
    Plan {
        #[command(flatten)]
        prompt: generate::PromptArgs,
        /// The storyboard to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Also write the plan, each scene's picture source and the provider cost ledger.
        #[arg(long)]
        details: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Make a video from a topic or a text: plan, then render (the storyboard is kept beside the
    /// video, `<output>.storyboard.json`, to edit and render again).
    Generate {
        #[command(flatten)]
        prompt: generate::PromptArgs,
        #[arg(short, long)]
        output: PathBuf,
        /// Where to keep the storyboard (default: beside the video).
        #[arg(long)]
        storyboard: Option<PathBuf>,
        /// No progress bar.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// A slide deck or document as a storyboard to edit and render: PDF pages (narrated by
    /// their text), PPTX/ODP slides (narrated by their speaker notes), or Markdown (headings as
    /// title cards, paragraphs narrated, images as pictures). Slide pictures are written into
    /// `<output stem>-slides/` beside the storyboard.
    Import {
        /// deck.pdf, deck.pptx, deck.odp or notes.md.
        input: PathBuf,
        /// The storyboard to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The video's size, WIDTHxHEIGHT.
        #[arg(long, default_value = "1280x720")]
        size: String,
        /// The narration voice engine: espeak-ng or piper.
        #[arg(long)]
        voice: Option<String>,
    },
    /// Speak a text with a local voice into a WAV file, to hear a voice before rendering with
    /// it; prints the sound's length and, with --words, when each word is said.
    Speak {
        text: String,
        #[arg(short, long)]
        output: PathBuf,
        /// The speech engine: piper or espeak-ng.
        #[arg(long, default_value = "piper")]
        engine: String,
        /// The engine's voice (default: its first), e.g. en_US-joe-medium or en-us.
        #[arg(long)]
        voice: Option<String>,
        /// 1 is normal; 0.5-2.5.
        #[arg(long, default_value_t = 1.0)]
        speed: f32,
        /// Print each word's start and end, in seconds.
        #[arg(long)]
        words: bool,
    },
    /// Check spec files without rendering.
    Validate { specs: Vec<PathBuf> },
    /// Print the spec's JSON Schema.
    Schema,
    /// What this machine can do: FFmpeg, encoders that really work, voices, fonts, cache.
    Doctor {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Inspect or empty the cache.
    Cache {
        #[command(flatten)]
        cache: CacheArgs,
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Run the generation service: HTTP API, job queue and workers in one process.
    Serve {
        #[command(flatten)]
        args: serve::ServeArgs,
        #[command(flatten)]
        cache: ServiceCacheArgs,
        #[command(flatten)]
        trace: TraceArgs,
    },
    /// Run workers only (any number, on any machine, sharing the service's PostgreSQL, Redis
    /// and S3): they take jobs from the queue; /health, /ready and /metrics are served on --bind
    /// (default 127.0.0.1:0, any free port).
    Worker {
        #[command(flatten)]
        args: serve::ServeArgs,
        #[command(flatten)]
        cache: ServiceCacheArgs,
        #[command(flatten)]
        trace: TraceArgs,
    },
    /// Create, list and revoke API keys (stored hashed in the service's database).
    Keys {
        #[command(flatten)]
        args: serve::DatabaseArgs,
        #[command(subcommand)]
        action: serve::KeysCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// One render for the service, in a process of its own (started by `serve` and `worker`).
    #[command(name = "render-child", hide = true)]
    RenderChild,
}

#[derive(Subcommand)]
enum CacheAction {
    Stats {
        #[arg(long)]
        json: bool,
    },
    Clear,
}

/// `reelsmith speak`: one synthesis, as a narration of a render would make it (same engines,
/// same limits), written as a WAV.
fn speak(text: &str, output: &Path, engine: &str, voice: Option<&str>, speed: f32, words: bool) -> Result<()> {
    let chars = text.chars().count();
    if chars > reelsmith_spec::limits::MAX_TEXT_CHARS {
        anyhow::bail!("the text has {chars} characters; at most {} are spoken", reelsmith_spec::limits::MAX_TEXT_CHARS);
    }
    if !(speed.is_finite() && (0.5..=2.5).contains(&speed)) {
        anyhow::bail!("--speed {speed} is outside 0.5-2.5");
    }
    let voices = reelsmith_engine::Voices::detect()?;
    let speech = voices.get(engine).ok_or_else(|| anyhow::anyhow!(voices.why_not(engine)))?;
    let voice = match voice {
        Some(v) => v.to_string(),
        None => speech.voices()?.into_iter().next().map(|v| v.name).context("the engine has no voice")?,
    };
    if !speech.has_voice(&voice) {
        let have: Vec<String> = speech.voices()?.into_iter().map(|v| v.name).collect();
        anyhow::bail!("{engine} has no voice {voice:?}; it has: {}", have.join(", "));
    }
    let audio = speech.synthesize(&reelsmith_media::tts::TtsRequest { text, voice: &voice, speed, pitch: 1.0 })?;
    audio.write_wav(output).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{}: {:.2} s, {} Hz, {} words ({engine} {voice})",
        output.display(),
        audio.duration(),
        audio.sample_rate,
        audio.words.len()
    );
    if words {
        for w in &audio.words {
            println!("{:>7.3} {:>7.3}  {}", w.start, w.end, w.word);
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    tune_malloc(&cli.command);
    let otlp = match &cli.command {
        Command::Render { trace, .. } | Command::Serve { trace, .. } | Command::Worker { trace, .. } => {
            trace.otlp_endpoint.clone()
        }
        // Started by `serve` or `worker`, which pass the endpoint in the environment.
        Command::RenderChild => std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok(),
        _ => None,
    };
    if let (Command::Serve { .. } | Command::Worker { .. }, Some(endpoint)) = (&cli.command, &otlp) {
        // Render processes export their spans to the same collector.
        // SAFETY: no other thread exists yet to read the environment meanwhile.
        unsafe { std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint) };
    }
    let tracing = match tracing_setup::init(otlp.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: tracing: {e:#}");
            std::process::exit(1);
        }
    };
    let result = run(cli);
    drop(tracing);
    if let Err(e) = result {
        // Spec problems are listed one per line, each with its JSON path.
        eprintln!("error: {e:#}");
        let input_error = e.downcast_ref::<RenderError>().is_some_and(RenderError::is_input_error)
            || e.downcast_ref::<reelsmith_import::ImportError>()
                .is_some_and(reelsmith_import::ImportError::is_input_error)
            || matches!(e.downcast_ref(), Some(reelsmith_director::DirectorError::Invalid { .. }));
        let code = if input_error { 2 } else { 1 };
        std::process::exit(code);
    }
}

/// glibc's allocator, set before any other thread exists.
///
/// Frame-sized buffers come and go per segment; a fixed 1 MB mmap threshold returns them to
/// the system at once instead of letting glibc's adaptive threshold keep them in the heap,
/// while a high trim threshold spares small allocations from brk churn (measured: 256 KB
/// alone cost ~10% of render speed).
///
/// A process that renders keeps one arena: its threads (encoders, scene workers, the
/// soundtrack, each stage's pool) then reuse each other's freed memory instead of every arena
/// keeping its own high-water mark. Measured at 1080p: a fresh render 379-383 MB instead of
/// 392-401, and renders after four others in one process 375-382 MB instead of 414-419, at the
/// same CPU. The API server (`serve`) keeps glibc's arena per thread: one arena cost it 11% of
/// its requests per second under `bench load`. `MALLOC_ARENA_MAX` (or a glibc tunable) wins.
fn tune_malloc(command: &Command) {
    let arena_tuned = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    let one_arena = !arena_tuned && !matches!(command, Command::Serve { .. });
    // SAFETY: mallopt only changes allocator tuning; no other thread has started yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        if one_arena {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// The spec to render: the file itself, or a template's spec for the row given by
/// `--merge-file` and `--merge` (every field checked, each problem named `merge.NAME`).
fn read_spec(
    path: &std::path::Path,
    merge: &[String],
    merge_file: Option<&std::path::Path>,
) -> Result<reelsmith_spec::Spec, RenderError> {
    use reelsmith_spec::template::{Template, row_from_json};
    let json = std::fs::read_to_string(path)
        .map_err(|e| RenderError::at("$", format!("cannot read spec {}: {e}", path.display())))?;
    let doc: serde_json::Value = match serde_json::from_str(&json) {
        Ok(d) => d,
        // Not JSON at all: the spec parser says where.
        Err(_) => return Ok(reelsmith_spec::parse(&json)?),
    };
    let merging = !merge.is_empty() || merge_file.is_some();
    if !Template::is_template(&doc) {
        if merging {
            return Err(RenderError::at(
                "fields",
                format!("{} declares no fields: it is not a template", path.display()),
            ));
        }
        return Ok(reelsmith_spec::parse(&json)?);
    }
    let invalid = |e: reelsmith_spec::template::TemplateError| {
        RenderError::Invalid(reelsmith_spec::ValidationError { issues: e.issues })
    };
    let template = Template::parse(&doc).map_err(invalid)?;
    let mut row = match merge_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| RenderError::at("merge", format!("cannot read {}: {e}", f.display())))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| RenderError::at("merge", format!("{} is not JSON: {e}", f.display())))?;
            row_from_json(&v).map_err(invalid)?
        }
        None => Default::default(),
    };
    for m in merge {
        let Some((name, value)) = m.split_once('=') else {
            return Err(RenderError::at("merge", format!("--merge {m:?}: write NAME=VALUE")));
        };
        row.insert(name.trim().to_string(), serde_json::Value::String(value.to_string()));
    }
    let spec = template.merge(&row).map_err(invalid)?;
    Ok(reelsmith_spec::parse(&spec.to_string())?)
}

fn open_cache(args: &CacheArgs) -> Result<Cache> {
    let root = args.cache_dir.clone().unwrap_or_else(Cache::default_root);
    Cache::open(&root, args.cache_size_mb * 1024 * 1024).with_context(|| format!("opening cache at {}", root.display()))
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Render {
            spec,
            output,
            report,
            no_cache,
            jobs,
            encoder_threads,
            quiet,
            cache,
            merge,
            merge_file,
            ..
        } => {
            let scratch;
            let cache = if *no_cache {
                scratch = tempfile::tempdir()?;
                Cache::disabled(scratch.path())?
            } else {
                open_cache(cache)?
            };
            let engine = Engine::new(cache)?;
            let bar = progress_bar(*quiet);
            let opts = RenderOptions {
                jobs: *jobs,
                encoder_threads: *encoder_threads,
                progress: Some(progress_fn(bar.clone())),
                ..Default::default()
            };
            let rep = match read_spec(spec, merge, merge_file.as_deref()) {
                Ok(s) => {
                    let base = spec.parent().map(std::path::Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
                    engine.render(&s, &base, output, &opts)
                }
                Err(e) => Err(e),
            };
            bar.finish_and_clear();
            let rep = rep?;
            if let Some(path) = report {
                std::fs::write(path, serde_json::to_vec_pretty(&rep)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if !quiet {
                eprintln!(
                    "{}: {}x{} {} frames ({:.2} s) in {:.2} s — {} of {} segments encoded, cache {}/{} hits, peak memory {:.0} MB (PSS {:.0} MB)",
                    output.display(),
                    rep.width,
                    rep.height,
                    rep.frames,
                    rep.duration_s,
                    rep.wall_s,
                    rep.segments_encoded,
                    rep.segments_total,
                    rep.cache_hits,
                    rep.cache_hits + rep.cache_misses,
                    rep.peak_tree_rss_mb,
                    rep.peak_tree_pss_mb
                );
            }
            Ok(())
        }
        Command::Validate { specs } => {
            let scratch = tempfile::tempdir()?;
            let engine = Engine::new(Cache::disabled(scratch.path())?)?;
            let mut failed = false;
            for path in specs {
                match validate(&engine, path) {
                    Ok(()) => println!("{}: ok", path.display()),
                    Err(e) => {
                        failed = true;
                        println!("{}:\n{e}", path.display());
                    }
                }
            }
            drop(engine);
            drop(scratch);
            if failed {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Import { input, output, size, voice } => import_command(input, output, size, voice.as_deref()),
        Command::Plan { prompt, output, details, cache } => {
            generate::plan_command(prompt, output, details.as_deref(), cache)
        }
        Command::Generate { prompt, output, storyboard, quiet, cache } => {
            generate::generate_command(prompt, output, storyboard.as_deref(), *quiet, cache)
        }
        Command::Speak { text, output, engine, voice, speed, words } => {
            speak(text, output, engine, voice.as_deref(), *speed, *words)
        }
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&reelsmith_spec::json_schema())?);
            Ok(())
        }
        Command::Doctor { json, cache } => doctor(cache, *json),
        Command::Cache { cache, action } => {
            let cache = open_cache(cache)?;
            match action {
                CacheAction::Stats { json } => {
                    let s = cache.stats();
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&s)?);
                    } else {
                        println!("cache: {}", s.root.display());
                        println!(
                            "entries: {}, size: {:.1} MB of {:.0} MB",
                            s.entries,
                            s.bytes as f64 / 1e6,
                            s.max_bytes as f64 / 1048576.0
                        );
                        for (stage, hm) in &s.stages {
                            println!(
                                "  {stage:<10} hits {:>6}  misses {:>6}  hit ratio {:.0}%",
                                hm.hits,
                                hm.misses,
                                hm.ratio() * 100.0
                            );
                        }
                    }
                }
                CacheAction::Clear => {
                    cache.clear()?;
                    println!("cleared {}", cache.root().display());
                }
            }
            Ok(())
        }
        Command::Bench { what } => bench::run(what),
        Command::RenderChild => match reelsmith_server::isolation::child_main(tracing_setup::render_hooks()) {
            0 => Ok(()),
            code => anyhow::bail!("render-child ended with status {code}"),
        },
        Command::Serve { args, cache, .. } => serve::serve(args, cache.cache_dir.clone()),
        Command::Worker { args, cache, .. } => serve::worker(args, cache.cache_dir.clone()),
        Command::Keys { args, action } => serve::keys(args, action),
    }
}

/// `reelsmith import`: the draft written as a storyboard, its slide pictures beside it and its
/// Markdown images named relative to it.
fn import_command(input: &Path, output: &Path, size: &str, voice: Option<&str>) -> anyhow::Result<()> {
    use anyhow::Context;
    let (width, height) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|&(w, h)| (16..=4096).contains(&w) && (16..=4096).contains(&h))
        .with_context(|| format!("--size {size}: give WIDTHxHEIGHT, each 16 to 4096"))?;
    let name = input.file_name().map_or_else(|| input.display().to_string(), |n| n.to_string_lossy().into_owned());
    let opts = reelsmith_import::ImportOptions {
        width,
        height,
        display_name: name.clone(),
        voice: voice.map(|engine| serde_json::json!({"engine": engine, "name": reelsmith_spec::default_voice(engine)})),
        ..Default::default()
    };
    let work = tempfile::tempdir()?;
    let mut draft = reelsmith_import::import(input, &opts, work.path())?;
    let out_dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(out_dir)?;
    let stem = output.file_stem().map_or_else(|| "storyboard".into(), |s| s.to_string_lossy().into_owned());
    if !draft.pictures.is_empty() {
        let slides = format!("{stem}-slides");
        std::fs::create_dir_all(out_dir.join(&slides))?;
        for (i, picture) in draft.pictures.iter().enumerate() {
            let file = picture.file_name().context("a slide picture without a name")?;
            std::fs::copy(picture, out_dir.join(&slides).join(file))?;
            draft.spec["scenes"][i]["image"] = serde_json::json!(format!("{slides}/{}", file.to_string_lossy()));
        }
    }
    // Markdown images are named relative to the document; the storyboard names them from its
    // own folder.
    let doc_dir = input.parent().unwrap_or(Path::new("."));
    for image in &draft.images {
        let found = doc_dir.join(&image.reference);
        if !found.is_file() {
            anyhow::bail!(reelsmith_import::ImportError::Line {
                file: name.clone(),
                line: image.line,
                detail: format!("the image '{}' is not there ({})", image.reference, found.display()),
            });
        }
        let absolute = std::fs::canonicalize(&found)?;
        draft.spec["scenes"][image.scene]["image"] = serde_json::json!(absolute.to_string_lossy());
    }
    std::fs::write(output, serde_json::to_string_pretty(&draft.spec)? + "\n")?;
    let scenes = draft.spec["scenes"].as_array().map_or(0, Vec::len);
    eprintln!(
        "{}: {scenes} scenes from {} ({}); render it with `reelsmith render {} -o video.mp4`",
        output.display(),
        name,
        draft.kind.as_str(),
        output.display()
    );
    Ok(())
}

fn validate(engine: &Engine, path: &Path) -> Result<(), RenderError> {
    use reelsmith_spec::template::Template;
    let json = std::fs::read_to_string(path)
        .map_err(|e| RenderError::at("$", format!("cannot read {}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let template = serde_json::from_str::<serde_json::Value>(&json).ok().filter(Template::is_template);
    let Some(doc) = template else {
        let spec = reelsmith_spec::parse(&json)?;
        return engine.validate(&spec, base);
    };
    // A template: checked with every field at its default (or a stand-in), except the files
    // that only a row will name.
    let t = Template::parse(&doc)
        .map_err(|e| RenderError::Invalid(reelsmith_spec::ValidationError { issues: e.issues }))?;
    let stand_ins = t.stand_in_paths();
    let spec = reelsmith_spec::parse(&t.sample().to_string())?;
    match engine.validate(&spec, base) {
        Err(RenderError::Invalid(mut v)) => {
            v.issues.retain(|i| !stand_ins.contains(&i.path));
            if v.issues.is_empty() { Ok(()) } else { Err(RenderError::Invalid(v)) }
        }
        other => other,
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ETA {eta} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn progress_fn(bar: ProgressBar) -> Arc<dyn Fn(Progress) + Send + Sync> {
    Arc::new(move |p| match p {
        Progress::Stage { name, total } => {
            bar.set_prefix(name);
            bar.set_length(total);
            bar.set_position(0);
            bar.reset_eta();
            bar.set_message(if name == "render" { "frames" } else { "" });
        }
        Progress::Frames { done, total } => {
            bar.set_length(total);
            bar.set_position(done);
        }
    })
}

fn doctor(cache_args: &CacheArgs, json: bool) -> Result<()> {
    use reelsmith_media::ffmpeg;
    let version = ffmpeg::version().map_err(|e| anyhow::anyhow!("{e}"));
    let encoders: Vec<&str> = reelsmith_engine::encoders::working_encoders().iter().map(|e| e.ffmpeg_name()).collect();
    let speech = reelsmith_media::tts::EspeakNg::new();
    use reelsmith_media::tts::SpeechEngine;
    let (speech_version, voices) = match &speech {
        Ok(s) => (
            s.version(),
            s.voices()
                .map(|v| v.into_iter().map(|v| v.languages.first().cloned().unwrap_or(v.name)).collect::<Vec<_>>())
                .unwrap_or_default(),
        ),
        Err(e) => (format!("unavailable: {e}"), vec![]),
    };
    let text = reelsmith_media::text::TextRenderer::new();
    let default_font = "DejaVu Sans";
    let cache = open_cache(cache_args)?;
    let stats = cache.stats();
    // Neural models: found (with sizes) or why not; the rest works without them.
    let (models_dir, models, models_error) = match reelsmith_models::inventory() {
        Ok((dir, files)) => (Some(dir), files, None),
        Err(e) => (None, vec![], Some(e.to_string())),
    };
    let piper = reelsmith_models::Piper::discover();
    let piper_voices: Vec<String> = match &piper {
        Ok(p) => p.voices().map(|v| v.into_iter().map(|v| v.name).collect()).unwrap_or_default(),
        Err(_) => vec![],
    };
    let report = serde_json::json!({
        "models": {
            "dir": models_dir,
            "files": models.iter().map(|(n, b)| serde_json::json!({"name": n, "bytes": b})).collect::<Vec<_>>(),
            "error": models_error,
            "piper": match &piper { Ok(_) => serde_json::json!({"voices": piper_voices}), Err(e) => serde_json::json!({"error": e.to_string()}) },
        },
        "ffmpeg": version.as_ref().map(|s| s.as_str()).unwrap_or("missing"),
        "encoders": encoders,
        "speech": { "engine": "espeak-ng", "version": speech_version, "voices": voices.len(), "sample": voices.iter().take(12).collect::<Vec<_>>() },
        "fonts": { "default_family": default_font, "installed": text.has_family(default_font) },
        "cache": { "root": stats.root, "entries": stats.entries, "bytes": stats.bytes, "max_bytes": stats.max_bytes },
        "cores": reelsmith_engine::cores(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let ok = |b: bool| if b { "ok " } else { "!! " };
        println!("{}ffmpeg: {}", ok(version.is_ok()), report["ffmpeg"].as_str().unwrap_or_default());
        println!("{}working H.264 encoders: {}", ok(!encoders.is_empty()), encoders.join(", "));
        println!(
            "{}speech: espeak-ng {} — {} voices (e.g. {})",
            ok(!voices.is_empty()),
            speech_version,
            voices.len(),
            voices.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
        );
        match &piper {
            Ok(_) => println!("ok speech: piper — voices {}", piper_voices.join(", ")),
            Err(e) => println!("-- speech: piper not available ({e}); espeak-ng still works"),
        }
        match &models_dir {
            Some(d) => {
                let list: Vec<String> =
                    models.iter().map(|(n, b)| format!("{n} ({:.1} MB)", *b as f64 / 1e6)).collect();
                println!("ok models: {} — {}", d.display(), list.join(", "));
            }
            None => println!("-- models: {}", models_error.clone().unwrap_or_default()),
        }
        println!("{}font: {default_font}", ok(text.has_family(default_font)));
        println!(
            "ok cache: {} — {} entries, {:.1} MB of {:.0} MB",
            stats.root.display(),
            stats.entries,
            stats.bytes as f64 / 1e6,
            stats.max_bytes as f64 / 1048576.0
        );
        println!("ok cores: {}", reelsmith_engine::cores());
    }
    if version.is_err() || encoders.is_empty() || speech.is_err() {
        anyhow::bail!("some required parts are missing: run scripts/setup.sh");
    }
    Ok(())
}
