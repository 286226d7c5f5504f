//! `reelsmith bench render`: a generated storyboard rendered cold, re-rendered identically and
//! after a one-scene edit, compared in the same run against FFmpeg encoding the very same
//! frames from a raw file (the encode-only limit of this machine).
//!
//! `reelsmith bench clip`: a video clip scene (decoded, fitted, titled, subtitled and encoded
//! through the engine) against FFmpeg alone transcoding the same clip to the same size.
//!
//! `reelsmith bench load`: virtual users against a running server (see `reelsmith-loadgen`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use image::{Rgb, RgbImage};
use reelsmith_engine::report::cpu_seconds;
use reelsmith_engine::{Cache, Engine, RenderOptions, Report};
use reelsmith_loadgen::{LoadConfig, Pattern, Scenario, ThinkTime, parse_duration};
use serde_json::json;

use crate::bench_measure::{check_limits, encode_only, parse_limits};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Cold, identical and one-scene-edited renders of a generated storyboard vs. encode-only.
    Render {
        #[arg(long, default_value = "bench-out")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1920)]
        width: u32,
        #[arg(long, default_value_t = 1080)]
        height: u32,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        #[arg(long, default_value_t = 6)]
        scenes: usize,
        /// Sentences of narration per scene (~2.4 s each).
        #[arg(long, default_value_t = 3)]
        sentences: usize,
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long)]
        encoder_threads: Option<u32>,
        /// Also render 1- and 5-minute videos and compare their peak memory.
        #[arg(long)]
        memory_scaling: bool,
        /// Also render it cold once more with a live stream, and time its first piece.
        #[arg(long)]
        live: bool,
        /// Music under the narration (a generated 20 s chord, looped and ducked).
        #[arg(long)]
        music: bool,
        /// Fail (exit 1) when a figure is above its limit, e.g. `cold_vs_reference=1.5`;
        /// repeatable. Figures: cold_vs_reference, cpu_vs_reference, edit_vs_cold,
        /// identical_ms, peak_rss_mb, cores_idle (the share of the cores' time the cold
        /// render left idle), first_piece_s (with --live), memory_ratio (with --memory-scaling:
        /// the 5-minute render's peak over the 1-minute one's).
        #[arg(long = "fail-if", value_name = "FIGURE=LIMIT")]
        fail_if: Vec<String>,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A scene playing a video clip vs. FFmpeg alone transcoding that clip to the same size.
    Clip {
        #[arg(long, default_value = "bench-out")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1280)]
        width: u32,
        #[arg(long, default_value_t = 720)]
        height: u32,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Length of the generated clip (1080p, 30 fps), seconds.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
    },
    /// A template batch: a 6-scene template whose third scene carries `{{ NAME }}`, rendered for
    /// N rows with one cache; each further row's time vs. the cold first row, and the batch's
    /// total vs. one cold render (a hosted API bills every row in full).
    Batch {
        #[arg(long, default_value = "bench-out")]
        dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        rows: usize,
        #[arg(long, default_value_t = 1280)]
        width: u32,
        #[arg(long, default_value_t = 720)]
        height: u32,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A slide deck → video: a generated PDF deck (or `--input`) imported and rendered cold,
    /// beside FFmpeg encoding the same frames alone; and the same render drawing every frame
    /// of its still slides (what detecting them saves).
    Deck {
        #[arg(long, default_value = "bench-out")]
        dir: PathBuf,
        /// A deck of your own (PDF, PPTX, ODP, Markdown); default: a generated 20-slide PDF.
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        slides: usize,
        #[arg(long, default_value_t = 1280)]
        width: u32,
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A talking photo rendered cold, each time in a process of its own, beside the voice
    /// speaking its narration alone and FFmpeg encoding its frames from RAM, in the same run.
    TalkingPhoto(crate::bench_talking::TalkingPhotoArgs),
    /// HTTP load against a running server: latency percentiles per endpoint, errors, req/s.
    Load(LoadArgs),
    /// The full API round trip of a spec, N times: upload + submit, progress, download, report.
    E2e(E2eArgs),
    /// Job-queue claim throughput: N jobs, M concurrent claimers doing claim + complete.
    Queue(QueueArgs),
    /// Scale-out: an API node and 1, 2… worker processes on PostgreSQL + Redis + S3; job
    /// throughput and one long video's wall time per worker count.
    Cluster(crate::bench_cluster::ClusterArgs),
    /// The service under mixed load with workers killed (`kill -9`) every few minutes: RSS, open
    /// files and disk per minute; every accepted job must finish exactly once.
    Soak(crate::bench_soak::SoakArgs),
}

#[derive(clap::Args)]
pub struct QueueArgs {
    /// A postgres:// URL to bench PostgreSQL (in a fresh schema, dropped afterwards); without
    /// it, SQLite in a temporary folder.
    #[arg(long, env = "REELSMITH_DATABASE__URL", hide_env_values = true)]
    database_url: Option<String>,
    #[arg(long, default_value_t = 5000)]
    jobs: usize,
    #[arg(long, default_value_t = 8)]
    claimers: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn queue_bench(args: &QueueArgs) -> Result<()> {
    use std::sync::Arc;

    use reelsmith_store::bench::claim_throughput;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let (backend, result) = match &args.database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let schema = reelsmith_store::new_id("bench");
                let connections = u32::try_from(args.claimers).unwrap_or(u32::MAX).saturating_add(2);
                let store = reelsmith_store::PgStore::connect(url, Some(&schema), connections)
                    .await
                    .context("connecting to PostgreSQL")?;
                let result = claim_throughput(Arc::new(store.clone()), args.jobs, args.claimers).await;
                // Dropped whether or not the run worked.
                store.drop_schema().await.context("dropping the benchmark schema")?;
                ("postgres", result?)
            }
            Some(url) => bail!("--database-url must be a postgres:// URL, got {url}"),
            None => {
                let dir = tempfile::tempdir()?;
                let store = reelsmith_store::SqliteStore::open(
                    &dir.path().join("bench.sqlite"),
                    reelsmith_store::sqlite::Durability::Normal,
                )
                .await?;
                let result = claim_throughput(Arc::new(store.clone()), args.jobs, args.claimers).await?;
                store.close().await;
                ("sqlite", result)
            }
        };
        if args.json {
            let mut v = serde_json::to_value(&result)?;
            v["backend"] = json!(backend);
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!(
                "{backend}: {} claim+complete pairs, {} claimers: {:.2} s, {:.0} claims/s, claim latency p50 {:.2} ms, p99 {:.2} ms",
                result.jobs, result.claimers, result.seconds, result.claims_per_s, result.p50_ms, result.p99_ms
            );
        }
        Ok(())
    })
}

#[derive(clap::Args)]
pub struct E2eArgs {
    /// The spec to submit; files it names are uploaded with it.
    spec: PathBuf,
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// A running server; without it, one is started in this process on a fresh data folder
    /// (so the first iteration is cold).
    #[arg(long)]
    url: Option<String>,
    /// Data folder of the server started without --url (default: a temporary one).
    #[arg(long, conflicts_with = "url")]
    data_dir: Option<PathBuf>,
    /// Sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "REELSMITH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Longest wait for one generation.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fail (exit 1) when a figure is above its limit, e.g. `first_playable_s=2`; repeatable.
    /// Figures: first_playable_s (the slowest cold iteration's, submission to the live
    /// stream's first piece on the client; "not measured" when there was no live stream, or no
    /// piece within three 20 s waits), cold_total_s (median cold submission to video).
    #[arg(long = "fail-if", value_name = "FIGURE=LIMIT")]
    fail_if: Vec<String>,
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Virtual users (each one request at a time, over its own keep-alive connection).
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// How long to run, e.g. 30s or 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Start the users evenly over this time.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    ramp_up: Duration,
    /// Pause after each request: fixed (100ms) or random in a range (100ms..500ms).
    #[arg(long, default_value = "0ms")]
    think: ThinkTime,
    /// mixed (30% health, 20% submit, 50% poll), health, submit, poll, or mixed:H/S/P.
    #[arg(long, default_value = "mixed")]
    scenario: Scenario,
    /// Start a spike of --spike-users extra users this long into the run.
    #[arg(long, value_parser = parse_duration, requires = "spike_users")]
    spike_at: Option<Duration>,
    #[arg(long, requires = "spike_at")]
    spike_users: Option<usize>,
    /// How long the spike lasts (default: until the end).
    #[arg(long, value_parser = parse_duration, requires = "spike_users")]
    spike_hold: Option<Duration>,
    /// Sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "REELSMITH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// JSON body for submissions; `{{n}}` becomes a number unique to each submission.
    #[arg(long)]
    template: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit with status 3 when any of these failing conditions holds, e.g.
    /// `p95>500ms,error_rate>1%,rps<100,GET /health:p99>5ms`.
    #[arg(long)]
    fail_if: Option<String>,
}

fn load(args: &LoadArgs) -> Result<()> {
    let thresholds = reelsmith_loadgen::parse_thresholds(args.fail_if.as_deref().unwrap_or(""))?;
    let submit_template = match &args.template {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading template {}", p.display()))?,
        None => reelsmith_loadgen::default_submit_template(),
    };
    let pattern = match (args.spike_at, args.spike_users) {
        (Some(at), Some(users)) => {
            Pattern::Spike { at, users, hold: args.spike_hold.unwrap_or(args.duration.saturating_sub(at)) }
        }
        _ => Pattern::Steady,
    };
    let cfg = LoadConfig {
        url: args.url.clone(),
        users: args.users,
        duration: args.duration,
        ramp_up: args.ramp_up,
        think_time: args.think,
        scenario: args.scenario,
        pattern,
        api_key: args.api_key.clone().filter(|k| !k.trim().is_empty()),
        submit_template,
        request_timeout: args.timeout,
        ..Default::default()
    };
    eprintln!("{} users against {} for {:.1} s…", args.users, args.url, args.duration.as_secs_f64());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(reelsmith_loadgen::run(&cfg))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    if let Some(p) = &args.out {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", p.display()))?;
    }
    let violations = reelsmith_loadgen::check(&report, &thresholds);
    if !violations.is_empty() {
        for v in &violations {
            eprintln!("threshold failed: {v}");
        }
        std::process::exit(3);
    }
    Ok(())
}

fn e2e(args: &E2eArgs) -> Result<()> {
    let limits = parse_limits(&args.fail_if)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Without --url: a server of our own, on loopback, with a data folder of its own.
        let mut embedded = None;
        let _temp;
        let url = match &args.url {
            Some(u) => u.clone(),
            None => {
                let data_dir = match &args.data_dir {
                    Some(d) => d.clone(),
                    None => {
                        let t = tempfile::tempdir()?;
                        let p = t.path().to_path_buf();
                        _temp = t;
                        p
                    }
                };
                let mut config = reelsmith_server::Config::load(None)?;
                config.bind = "127.0.0.1:0".parse()?;
                config.data_dir = data_dir;
                config.cache_dir = None;
                config.render_program = reelsmith_server::isolation::this_executable();
                config.render_trace = crate::tracing_setup::render_hooks();
                let running = reelsmith_server::start(config).await?;
                let url = format!("http://{}", running.addr);
                embedded = Some(running);
                url
            }
        };
        eprintln!("{} iteration(s) of {} against {url}…", args.iterations, args.spec.display());
        let cfg = reelsmith_loadgen::e2e::E2eConfig {
            url,
            api_key: args.api_key.clone().filter(|k| !k.trim().is_empty()),
            spec: args.spec.clone(),
            iterations: args.iterations,
            timeout: args.timeout,
        };
        let report = reelsmith_loadgen::e2e::run(&cfg).await;
        if let Some(r) = embedded {
            r.shutdown().await;
        }
        let report = report?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.to_table());
        }
        if let Some(p) = &args.out {
            std::fs::write(p, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        let cold = report.summary.get("cold");
        let measured = [
            ("first_playable_s", cold.and_then(|c| c.first_playable_max_ms).map(|ms| ms / 1000.0)),
            ("cold_total_s", cold.map(|c| c.total_p50_ms / 1000.0)),
        ];
        check_limits(&limits, &measured)
    })
}

const SENTENCES: &[&str] = &[
    "The morning light spills over the quiet harbour.",
    "Fishing boats rock gently against the wooden pier.",
    "A gull circles twice before landing on a post.",
    "Down the street the bakery opens its shutters.",
    "Fresh bread fills the air with a warm sweet smell.",
    "Children race past on their way to the old school.",
    "By noon the market square is loud with voices.",
    "Traders call out the prices of fruit and fish.",
];

/// A photo-like test picture: smooth gradients, soft blobs and fine noise, so the encoder has
/// real texture to work on.
fn picture(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(12345);
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..6)
        .map(|_| {
            let c = [(rnd() % 255) as f32, (rnd() % 255) as f32, (rnd() % 255) as f32];
            ((rnd() % w) as f32, (rnd() % h) as f32, (w / 6 + rnd() % (w / 4)) as f32, c)
        })
        .collect();
    let base = [(seed * 40 % 255) as f32, (seed * 90 % 255) as f32, (seed * 150 % 255) as f32];
    RgbImage::from_fn(w, h, |x, y| {
        let mut c = [base[0] * (1.0 - y as f32 / h as f32), base[1] * (x as f32 / w as f32), base[2] * 0.6];
        for (bx, by, r, col) in &blobs {
            let d = ((x as f32 - bx).powi(2) + (y as f32 - by).powi(2)).sqrt() / r;
            let k = (1.0 - d).clamp(0.0, 1.0);
            for i in 0..3 {
                c[i] = c[i] * (1.0 - k * 0.8) + col[i] * k * 0.8;
            }
        }
        let n = ((x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663) ^ seed) % 21) as f32 - 10.0;
        Rgb([
            (c[0] + n).clamp(0.0, 255.0) as u8,
            (c[1] + n).clamp(0.0, 255.0) as u8,
            (c[2] + n).clamp(0.0, 255.0) as u8,
        ])
    })
}

/// Writes pictures and the storyboard `bench render` renders (Ken Burns pictures with narration
/// and word-highlight subtitles, crossfades, slides and fades to black, and with `music` a
/// looped, ducked chord); returns the spec path.
#[allow(clippy::too_many_arguments)]
fn storyboard(
    dir: &Path,
    name: &str,
    w: u32,
    h: u32,
    fps: u32,
    scenes: usize,
    sentences: usize,
    edit: bool,
    music: bool,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut list = vec![];
    for i in 0..scenes {
        let img = dir.join(format!("photo{}.jpg", i % 6));
        if !img.exists() {
            picture(w, h, i as u32 % 6 + 1).save(&img)?;
        }
        let mut text: Vec<&str> = (0..sentences).map(|k| SENTENCES[(i * sentences + k) % SENTENCES.len()]).collect();
        if edit && i == scenes / 2 {
            text[0] = "This sentence was edited after the first render.";
        }
        let pans = ["left", "right", "up", "down", "center"];
        list.push(json!({
            "image": img.file_name().unwrap().to_string_lossy(),
            "narration": { "text": text.join(" ") },
            "motion": { "type": "ken-burns", "zoom_from": 1.0, "zoom_to": 1.1, "pan": pans[i % pans.len()] },
            "transition": { "type": (["crossfade", "slide", "fade-black"][i % 3]), "duration": 0.5 }
        }));
    }
    let mut spec = json!({
        "version": 1,
        "output": { "width": w, "height": h, "fps": fps, "quality": { "preset": "veryfast", "crf": 23 } },
        "subtitles": { "style": "word-highlight" },
        "scenes": list
    });
    if music {
        let file = dir.join("music.wav");
        if !file.exists() {
            let status = Command::new(reelsmith_media::ffmpeg::ffmpeg_bin())
                .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
                .args(["-f", "lavfi", "-i", "sine=f=220:d=20", "-f", "lavfi", "-i", "sine=f=277:d=20"])
                .args(["-f", "lavfi", "-i", "sine=f=330:d=20", "-filter_complex", "amix=inputs=3", "-ac", "2", "-y"])
                .arg(&file)
                .status()?;
            if !status.success() {
                bail!("could not make the music file");
            }
        }
        spec["music"] = json!({ "file": "music.wav", "volume": 0.3, "loop": true, "fade": 1.0 });
    }
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(path)
}

fn render(cache_dir: &Path, spec: &Path, out: &Path, jobs: Option<usize>, threads: Option<u32>) -> Result<Report> {
    let engine = Engine::new(Cache::open(cache_dir, 64 << 30)?)?;
    let opts = RenderOptions { jobs, encoder_threads: threads, ..Default::default() };
    Ok(engine.render_file(spec, out, &opts)?)
}

pub fn run(cmd: &BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Load(args) => load(args),
        BenchCommand::TalkingPhoto(args) => crate::bench_talking::run(args),
        BenchCommand::E2e(args) => e2e(args),
        BenchCommand::Queue(args) => queue_bench(args),
        BenchCommand::Cluster(args) => crate::bench_cluster::run(args),
        BenchCommand::Soak(args) => crate::bench_soak::run(args),
        BenchCommand::Render { .. } => render_bench(cmd),
        BenchCommand::Deck { dir, input, slides, width, height, json } => {
            deck_bench(dir, input.as_deref(), *slides, (*width, *height), json.as_deref())
        }
        BenchCommand::Batch { dir, rows, width, height, fps, json } => {
            batch_bench(dir, *rows, (*width, *height, *fps), json.as_deref())
        }
        BenchCommand::Clip { dir, width, height, fps, seconds } => clip_bench(dir, *width, *height, *fps, *seconds),
    }
}

fn ffmpeg_status(args: &[&str], what: &str) -> Result<f64> {
    let t = Instant::now();
    let status = Command::new(reelsmith_media::ffmpeg::ffmpeg_bin())
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .stdin(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(t.elapsed().as_secs_f64())
}

fn clip_bench(dir: &Path, w: u32, h: u32, fps: u32, seconds: f64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let clip = dir.join("clip-1080p.mp4");
    let clip_s = clip.to_string_lossy().to_string();
    if !clip.exists() {
        eprintln!("generating a {seconds} s 1080p clip…");
        let src = format!("testsrc2=size=1920x1080:rate=30:duration={seconds}");
        ffmpeg_status(
            &["-f", "lavfi", "-i", &src, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", &clip_s],
            "clip",
        )?;
    }
    let spec = json!({
        "version": 1,
        "output": { "width": w, "height": h, "fps": fps, "quality": { "preset": "veryfast", "crf": 23 } },
        "scenes": [{ "video": { "file": "clip-1080p.mp4" }, "title": "Clip", "overlay": { "text": "bench" } }]
    });
    let spec_path = dir.join("clip.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let cache = dir.join("cache-clip");
    let _ = std::fs::remove_dir_all(&cache);
    eprintln!("engine: clip scene at {w}x{h}@{fps}…");
    let rep = render(&cache, &spec_path, &dir.join("clip-out.mp4"), None, None)?;
    eprintln!("reference: ffmpeg transcoding the clip alone…");
    let out = dir.join("clip-ref.mp4").to_string_lossy().to_string();
    let vf = format!("fps={fps},scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}");
    let cpu0 = cpu_seconds();
    let reference = ffmpeg_status(
        &["-i", &clip_s, "-vf", &vf, "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-an", &out],
        "reference transcode",
    )?;
    let ref_cpu = cpu_seconds() - cpu0;
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "Reelsmith clip benchmark: a {seconds} s 1080p clip as one scene at {w}x{h}@{fps}, {} cores",
        reelsmith_engine::cores()
    );
    println!("  reference (ffmpeg transcode alone): {reference:.2} s wall, {ref_cpu:.2} s cpu");
    println!(
        "  engine (title, overlay, soundtrack, join): {:.2} s wall, {:.2} s cpu = {:.2}x reference, peak tree {:.0} MB RSS / {:.0} MB PSS",
        rep.wall_s,
        rep.cpu_s,
        rep.wall_s / reference,
        rep.peak_tree_rss_mb,
        rep.peak_tree_pss_mb
    );
    Ok(())
}

/// The batch benchmark's template: six narrated scenes (pictures with Ken Burns, cards, a
/// crossfade, a slide and a fade), word-highlight subtitles; `{{ NAME }}` in scene 3 only.
fn batch_template(dir: &Path, w: u32, h: u32, fps: u32) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    let mut photos = vec![];
    for i in 0..3u32 {
        let img = dir.join(format!("photo{i}.jpg"));
        if !img.exists() {
            picture(w, h, i + 1).save(&img)?;
        }
        photos.push(img.to_string_lossy().into_owned());
    }
    Ok(json!({
        "fields": {"NAME": {"type": "string", "max_length": 40}},
        "version": 1,
        "output": {"width": w, "height": h, "fps": fps, "quality": {"preset": "veryfast", "crf": 23}},
        "subtitles": {"style": "word-highlight"},
        "scenes": [
            {"background": {"gradient": {"from": "#1e3c72", "to": "#2a5298", "angle": 45}}, "title": "Our product",
             "narration": {"text": "Here is what we built this year."}, "transition": {"type": "crossfade", "duration": 0.5}},
            {"image": photos[0], "narration": {"text": "It renders videos from one file."},
             "motion": {"type": "ken-burns", "zoom_from": 1.0, "zoom_to": 1.15}, "transition": {"type": "slide", "duration": 0.5}},
            {"background": {"color": "#203040"}, "title": "Welcome, {{ NAME }}",
             "narration": {"text": "Welcome aboard, {{ NAME }}."}, "transition": {"type": "fade-black", "duration": 0.5}},
            {"image": photos[1], "fit": "contain-blur", "narration": {"text": "Every scene is cached by its content."}},
            {"image": photos[2], "narration": {"text": "An edit renders one scene again."},
             "motion": {"type": "ken-burns", "zoom_from": 1.1, "zoom_to": 1.0}},
            {"background": {"gradient": {"from": "#402010", "to": "#a04020", "angle": 90}}, "title": "Thank you",
             "narration": {"text": "See you soon."}}
        ]
    }))
}

const BATCH_NAMES: &[&str] =
    &["Ada", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Donald", "Radia", "Edsger", "Hedy"];

/// The benchmark's deck: `slides` slides of alternating colours, each with a title and two
/// sentences of notes, made by LibreOffice as a PDF (its notes pages are not exported: the PDF
/// narrates its slide text, which carries the sentences).
fn generated_deck(dir: &Path, slides: usize) -> Result<PathBuf> {
    use reelsmith_import::fixtures::{TestSlide, convert, fodp};
    std::fs::create_dir_all(dir)?;
    let colors = ["#1e3c72", "#7a1f3d", "#20603a", "#604010"];
    let texts: Vec<String> = (0..slides)
        .map(|i| {
            format!("Slide {}. {} {}", i + 1, SENTENCES[i % SENTENCES.len()], SENTENCES[(i + 3) % SENTENCES.len()])
        })
        .collect();
    let deck: Vec<TestSlide<'_>> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| TestSlide { color: colors[i % colors.len()], text: t, notes: &[] })
        .collect();
    let source = dir.join("deck.fodp");
    std::fs::write(&source, fodp(&deck))?;
    Ok(convert(&source, "pdf", dir))
}

fn deck_bench(
    dir: &Path,
    input: Option<&Path>,
    slides: usize,
    (w, h): (u32, u32),
    json_out: Option<&Path>,
) -> Result<()> {
    let deck = match input {
        Some(p) => p.to_path_buf(),
        None => {
            eprintln!("making a {slides}-slide PDF with LibreOffice…");
            generated_deck(&dir.join("deck"), slides)?
        }
    };
    let name = deck.file_name().map_or_else(|| "deck".into(), |n| n.to_string_lossy().into_owned());
    let work = tempfile::tempdir()?;
    let t = Instant::now();
    let opts =
        reelsmith_import::ImportOptions { width: w, height: h, display_name: name.clone(), ..Default::default() };
    let draft = reelsmith_import::import(&deck, &opts, work.path())?;
    let import_s = t.elapsed().as_secs_f64();
    let spec_path = work.path().join("deck.json");
    let mut spec = draft.spec.clone();
    spec["output"]["quality"] = json!({"preset": "veryfast", "crf": 23});
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
    let out = dir.join("deck.mp4");
    let run = |cache: &str, redraw: bool| -> Result<Report> {
        let cache = dir.join(cache);
        let _ = std::fs::remove_dir_all(&cache);
        let engine = Engine::new(Cache::open(&cache, 64 << 30)?)?;
        let opts = RenderOptions { redraw_still_spans: redraw, ..Default::default() };
        let r = engine.render_file(&spec_path, &out, &opts)?;
        let _ = std::fs::remove_dir_all(&cache);
        Ok(r)
    };
    eprintln!("render with every frame drawn ({} slides)…", draft.pictures.len());
    let redrawn = run("cache-deck-redraw", true)?;
    eprintln!("render with still slides detected…");
    let still = run("cache-deck", false)?;
    eprintln!("encode-only reference on the same frames…");
    let (ref_wall, ref_cpu, _) = encode_only(&out, w, h, 30)?;
    let figures = json!({
        "machine": {"cores": reelsmith_engine::cores()},
        "deck": {"file": name, "slides": draft.pictures.len(), "width": w, "height": h, "seconds": still.duration_s, "frames": still.frames},
        "import_s": import_s,
        "render_still_detected": {"wall_s": still.wall_s, "cpu_s": still.cpu_s, "vs_reference": still.wall_s / ref_wall, "peak_tree_rss_mb": still.peak_tree_rss_mb},
        "render_every_frame_drawn": {"wall_s": redrawn.wall_s, "cpu_s": redrawn.cpu_s, "vs_reference": redrawn.wall_s / ref_wall},
        "still_detection_saves": 1.0 - still.wall_s / redrawn.wall_s,
        "reference_encode_only": {"wall_s": ref_wall, "cpu_s": ref_cpu},
        "import_and_render_vs_reference": (import_s + still.wall_s) / ref_wall,
    });
    println!(
        "{name}: {} slides, {:.1} s of video at {w}x{h}; import {:.2} s; render {:.2} s ({:.2}x the encode-only reference {:.2} s; import + render {:.2}x); every frame drawn {:.2} s: still detection saves {:.0}%",
        draft.pictures.len(),
        still.duration_s,
        import_s,
        still.wall_s,
        still.wall_s / ref_wall,
        ref_wall,
        (import_s + still.wall_s) / ref_wall,
        redrawn.wall_s,
        (1.0 - still.wall_s / redrawn.wall_s) * 100.0
    );
    if let Some(p) = json_out {
        std::fs::write(p, serde_json::to_vec_pretty(&figures)?)?;
    }
    Ok(())
}

fn batch_bench(dir: &Path, rows: usize, (w, h, fps): (u32, u32, u32), json_out: Option<&Path>) -> Result<()> {
    use reelsmith_spec::template::Template;
    if rows < 2 {
        bail!("--rows: at least 2 (the first row, then the further ones)");
    }
    // The template names its pictures by path and each row's spec lives in `rows/`: absolute
    // paths keep a relative --dir working.
    let dir = &std::path::absolute(dir)?;
    let template = Template::parse(&batch_template(&dir.join("assets"), w, h, fps)?)
        .map_err(|e| anyhow::anyhow!("the benchmark's template: {e}"))?;
    let row_spec = |i: usize| -> Result<PathBuf> {
        let name = format!("{} {}", BATCH_NAMES[i % BATCH_NAMES.len()], i / BATCH_NAMES.len() + 1);
        let row = [("NAME".to_string(), json!(name))].into_iter().collect();
        let spec = template.merge(&row).map_err(|e| anyhow::anyhow!("row {i}: {e}"))?;
        let path = dir.join("rows").join(format!("row{i}.json"));
        std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
        std::fs::write(&path, serde_json::to_vec(&spec)?)?;
        Ok(path)
    };
    let cache = dir.join("cache-batch");
    let cold_cache = dir.join("cache-cold");
    for c in [&cache, &cold_cache] {
        let _ = std::fs::remove_dir_all(c);
    }
    let out = dir.join("batch-row.mp4");
    // One row with a cache of its own: what a hosted API's every row costs.
    eprintln!("one cold render (no cache) at {w}x{h}@{fps}…");
    let cold = render(&cold_cache, &row_spec(rows)?, &out, None, None).context("cold render")?;
    let _ = std::fs::remove_dir_all(&cold_cache);
    eprintln!("row 1 of {rows} (cold)…");
    let first = render(&cache, &row_spec(0)?, &out, None, None).context("first row")?;
    let mut further = vec![];
    let mut encoded = vec![];
    for i in 1..rows {
        let r = render(&cache, &row_spec(i)?, &out, None, None).with_context(|| format!("row {}", i + 1))?;
        if i % 10 == 0 {
            eprintln!("row {} of {rows}: {:.2} s", i + 1, r.wall_s);
        }
        further.push(r.wall_s);
        encoded.push(r.segments_encoded as f64 / r.segments_total.max(1) as f64);
    }
    let total: f64 = first.wall_s + further.iter().sum::<f64>();
    let mut sorted = further.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mean = further.iter().sum::<f64>() / further.len() as f64;
    let stage = |r: &Report, name: &str| r.stages.get(name).map_or(0.0, |s| s.wall_s);
    let last = render(&cache, &row_spec(rows + 1)?, &out, None, None)?;
    let figures = json!({
        "machine": {"cores": reelsmith_engine::cores()},
        "video": {"width": w, "height": h, "fps": fps, "seconds": first.duration_s, "segments": first.segments_total},
        "rows": rows,
        "cold_no_cache_s": cold.wall_s,
        "first_row_s": first.wall_s,
        "further_row_mean_s": mean,
        "further_row_median_s": median,
        "further_vs_first": median / first.wall_s,
        "segments_encoded_per_further_row": encoded.iter().sum::<f64>() / encoded.len() as f64,
        "batch_total_s": total,
        "batch_vs_one_cold_render": total / cold.wall_s,
        "a_further_row_by_stage_s": {
            "segments": stage(&last, "segments"), "audio": stage(&last, "audio"), "concat": stage(&last, "concat"),
            "narration": stage(&last, "narration"), "canvas": stage(&last, "canvas"), "wall": last.wall_s,
        },
        "targets": {"further_vs_first": 0.2, "batch_vs_one_cold_render": 25.0},
    });
    println!(
        "batch of {rows} rows at {w}x{h}: first row {:.2} s (no-cache render {:.2} s); a further row {:.2} s median = {:.3}x the first (target 0.2x); {:.0}% of segments encoded per row; the batch {:.1} s = {:.1}x one cold render (target 25x; a hosted API bills {rows}x)",
        first.wall_s,
        cold.wall_s,
        median,
        median / first.wall_s,
        figures["segments_encoded_per_further_row"].as_f64().unwrap_or(0.0) * 100.0,
        total,
        total / cold.wall_s
    );
    if let Some(p) = json_out {
        std::fs::write(p, serde_json::to_vec_pretty(&figures)?)?;
    }
    Ok(())
}

fn render_bench(cmd: &BenchCommand) -> Result<()> {
    let BenchCommand::Render {
        dir,
        width,
        height,
        fps,
        scenes,
        sentences,
        jobs,
        encoder_threads,
        memory_scaling,
        live,
        music,
        fail_if,
        json: json_out,
    } = cmd
    else {
        bail!("not a render benchmark");
    };
    let limits = parse_limits(fail_if)?;
    let (w, h, fps) = (*width, *height, *fps);
    let assets = dir.join("assets");
    let cache = dir.join("cache");
    if cache.exists() {
        std::fs::remove_dir_all(&cache)?;
    }
    let spec = storyboard(&assets, "storyboard.json", w, h, fps, *scenes, *sentences, false, *music)?;
    let edited = storyboard(&assets, "storyboard-edited.json", w, h, fps, *scenes, *sentences, true, *music)?;
    let out = dir.join("bench.mp4");

    eprintln!("cold render of {} scenes at {w}x{h}@{fps}…", scenes);
    let cold = render(&cache, &spec, &out, *jobs, *encoder_threads).context("cold render")?;
    eprintln!("encode-only reference on the same frames…");
    let (ref_wall, ref_cpu, ref_peak) = encode_only(&out, w, h, fps)?;
    eprintln!("identical re-render…");
    let same = render(&cache, &spec, &out, *jobs, *encoder_threads)?;
    eprintln!("re-render after editing one scene's narration…");
    let edit = render(&cache, &edited, &dir.join("bench-edited.mp4"), *jobs, *encoder_threads)?;

    let mut figures = json!({
        "machine": { "cores": reelsmith_engine::cores() },
        "video": { "width": w, "height": h, "fps": fps, "frames": cold.frames, "seconds": cold.duration_s, "scenes": scenes },
        "reference_encode_only": { "wall_s": ref_wall, "cpu_s": ref_cpu, "peak_tree_rss_mb": ref_peak.rss_mb, "peak_tree_pss_mb": ref_peak.pss_mb },
        "cold": { "wall_s": cold.wall_s, "cpu_s": cold.cpu_s, "peak_tree_rss_mb": cold.peak_tree_rss_mb, "peak_tree_pss_mb": cold.peak_tree_pss_mb, "vs_reference": cold.wall_s / ref_wall, "stages": cold.stages },
        "identical_rerender": { "wall_s": same.wall_s, "segments_encoded": same.segments_encoded, "narration_runs": same.stages["narration"].runs },
        "one_scene_edit": { "wall_s": edit.wall_s, "vs_cold": edit.wall_s / cold.wall_s, "segments_encoded": edit.segments_encoded, "segments_total": edit.segments_total, "stages": edit.stages },
    });

    let mut first_piece = None;
    if *live {
        eprintln!("cold render with a live stream…");
        let scratch = dir.join("cache-live");
        let _ = std::fs::remove_dir_all(&scratch);
        let started = Instant::now();
        let first = std::sync::Arc::new(std::sync::OnceLock::<f64>::new());
        let opts = RenderOptions {
            jobs: *jobs,
            encoder_threads: *encoder_threads,
            live: Some(reelsmith_engine::LiveOptions {
                dir: dir.join("live"),
                uri_prefix: String::new(),
                publish: {
                    let first = first.clone();
                    std::sync::Arc::new(move |name: &str, file: &Path| {
                        if name == "stream.m3u8" {
                            let _ = first.set(started.elapsed().as_secs_f64());
                        }
                        let _ = std::fs::remove_file(file);
                    })
                },
            }),
            ..Default::default()
        };
        let engine = Engine::new(Cache::open(&scratch, 64 << 30)?)?;
        let r = engine.render_file(&spec, &dir.join("bench-live.mp4"), &opts)?;
        let _ = std::fs::remove_dir_all(&scratch);
        first_piece = first.get().copied();
        figures["live"] =
            json!({ "first_piece_s": first_piece, "wall_s": r.wall_s, "vs_cold": r.wall_s / cold.wall_s });
    }

    if *memory_scaling {
        let mut peaks = vec![];
        for minutes in [1usize, 5] {
            // ~7.5 s per scene: 8 scenes a minute.
            let n = minutes * 8;
            let spec =
                storyboard(&assets, &format!("storyboard-{minutes}min.json"), w, h, fps, n, *sentences, false, *music)?;
            eprintln!("{minutes}-minute render for memory scaling…");
            let scratch = dir.join(format!("cache-{minutes}min"));
            let _ = std::fs::remove_dir_all(&scratch);
            let r = render(&scratch, &spec, &dir.join(format!("bench-{minutes}min.mp4")), *jobs, *encoder_threads)?;
            let _ = std::fs::remove_dir_all(&scratch);
            peaks.push((minutes, r.duration_s, r.peak_tree_rss_mb, r.wall_s, r.peak_tree_pss_mb));
        }
        figures["memory_scaling"] = json!({
            "one_minute": { "seconds": peaks[0].1, "peak_tree_mb": peaks[0].2, "peak_tree_pss_mb": peaks[0].4, "wall_s": peaks[0].3 },
            "five_minutes": { "seconds": peaks[1].1, "peak_tree_mb": peaks[1].2, "peak_tree_pss_mb": peaks[1].4, "wall_s": peaks[1].3 },
            "ratio": peaks[1].2 / peaks[0].2,
            "pss_ratio": peaks[1].4 / peaks[0].4,
        });
    }

    let cores = reelsmith_engine::cores();
    // CPU-seconds over what the cores could have given in the render's wall time.
    let cores_idle = (1.0 - cold.cpu_s / (cold.wall_s * cores as f64).max(1e-9)).max(0.0);
    figures["cold"]["cores_busy"] = json!(1.0 - cores_idle);
    println!(
        "Reelsmith render benchmark — {w}x{h}@{fps}, {} frames ({:.1} s), {} scenes, {} cores",
        cold.frames, cold.duration_s, scenes, cores
    );
    println!(
        "  encode-only reference (ffmpeg, raw frames from RAM): {:.2} s wall, peak {:.0} MB RSS / {:.0} MB PSS",
        ref_wall, ref_peak.rss_mb, ref_peak.pss_mb
    );
    println!(
        "  cold render (TTS included):   {:.2} s = {:.2}x reference, peak tree {:.0} MB RSS / {:.0} MB PSS",
        cold.wall_s,
        cold.wall_s / ref_wall,
        cold.peak_tree_rss_mb,
        cold.peak_tree_pss_mb
    );
    for (name, s) in &cold.stages {
        println!(
            "      {name:<10} {:>6.2} s wall {:>6.2} s cpu  ({} items, {} computed)",
            s.wall_s, s.cpu_s, s.items, s.runs
        );
    }
    println!(
        "  cold CPU: {:.1} s vs the reference's {:.1} s = {:.2}x; the {} cores {:.0}% busy for the render's wall time",
        cold.cpu_s,
        ref_cpu,
        cold.cpu_s / ref_cpu.max(1e-9),
        cores,
        (1.0 - cores_idle) * 100.0
    );
    println!(
        "  identical re-render:          {:.2} s ({} segments encoded, {} syntheses)",
        same.wall_s, same.segments_encoded, same.stages["narration"].runs
    );
    println!(
        "  one scene's narration edited: {:.2} s = {:.2}x cold ({} of {} segments encoded)",
        edit.wall_s,
        edit.wall_s / cold.wall_s,
        edit.segments_encoded,
        edit.segments_total
    );
    for (name, s) in edit.stages.iter().filter(|(_, s)| s.runs > 0) {
        println!(
            "      {name:<10} {:>6.2} s wall {:>6.2} s cpu  ({} items, {} computed)",
            s.wall_s, s.cpu_s, s.items, s.runs
        );
    }
    if let Some(m) = figures.get("memory_scaling") {
        let f = |k: &str, v: &str| m[k][v].as_f64().unwrap_or(0.0);
        println!(
            "  memory: {:.0} s video {:.0} MB RSS / {:.0} MB PSS; {:.0} s video {:.0} MB RSS / {:.0} MB PSS (ratio {:.2} / {:.2})",
            f("one_minute", "seconds"),
            f("one_minute", "peak_tree_mb"),
            f("one_minute", "peak_tree_pss_mb"),
            f("five_minutes", "seconds"),
            f("five_minutes", "peak_tree_mb"),
            f("five_minutes", "peak_tree_pss_mb"),
            m["ratio"].as_f64().unwrap_or(0.0),
            m["pss_ratio"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(t) = first_piece {
        println!("  live stream: first piece {t:.2} s after the render started");
    }
    if let Some(p) = json_out {
        std::fs::write(p, serde_json::to_vec_pretty(&figures)?)?;
    }
    let measured = [
        ("cold_vs_reference", Some(cold.wall_s / ref_wall)),
        ("cpu_vs_reference", Some(cold.cpu_s / ref_cpu.max(1e-9))),
        ("edit_vs_cold", Some(edit.wall_s / cold.wall_s)),
        ("identical_ms", Some(same.wall_s * 1000.0)),
        ("peak_rss_mb", Some(cold.peak_tree_rss_mb)),
        ("first_piece_s", first_piece),
        ("cores_idle", Some(cores_idle)),
        ("memory_ratio", figures.get("memory_scaling").and_then(|m| m["ratio"].as_f64())),
    ];
    check_limits(&limits, &measured)
}
