//! `reelsmith bench talking-photo`: a talking photo rendered cold, each time in a process of its
//! own (model loads included), beside the work no talking photo can skip, measured in the same
//! run: the voice speaking the narration alone (`reelsmith speak`, a process of its own) and
//! FFmpeg encoding the rendered frames from RAM with the same settings. The ratio is what the
//! render adds (face, mouth, blinks, head motion, subtitles, sound, joins) to that floor, and,
//! unlike the absolute seconds, it holds from a fast day of this VM to a slow one.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use reelsmith_engine::report::cpu_seconds;
use serde_json::json;

use crate::bench_measure::{check_limits, encode_only, parse_limits};

#[derive(clap::Args)]
pub struct TalkingPhotoArgs {
    /// The talking photo's spec.
    #[arg(default_value = "examples/talking-photo/talking-photo-10s.json")]
    pub spec: PathBuf,
    #[arg(long, default_value = "bench-out/talking-photo")]
    pub dir: PathBuf,
    /// Cold renders (each with its reference); the figures are their medians.
    #[arg(long, default_value_t = 3)]
    pub iterations: usize,
    /// Fail (exit 1) when a figure is above its limit, e.g. `vs_reference=1.3`; repeatable.
    /// Figures: wall_s (the render's seconds), vs_reference, cpu_vs_reference, peak_rss_mb.
    #[arg(long = "fail-if", value_name = "FIGURE=LIMIT")]
    pub fail_if: Vec<String>,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One child process's wall and CPU seconds (its own children's included, as they are waited
/// for).
fn timed_child(mut cmd: Command, what: &str) -> Result<(f64, f64)> {
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).stdout(Stdio::null()).output().with_context(|| format!("starting {what}"))?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok((wall, cpu))
}

/// The narrations the spec speaks: (engine, voice, speed, text) per scene with text.
fn narrations(spec: &reelsmith_spec::Spec) -> Vec<(String, String, f32, String)> {
    spec.scenes
        .iter()
        .filter_map(|scene| {
            let n = scene.narration.as_ref()?;
            let text = n.text.as_ref()?;
            let v = spec.voice.with(&n.voice);
            let name = if v.name.is_empty() { reelsmith_spec::default_voice(&v.engine).to_string() } else { v.name };
            Some((v.engine, name, v.speed, text.clone()))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Run {
    render_wall: f64,
    render_cpu: f64,
    peak_rss_mb: f64,
    speak_wall: f64,
    speak_cpu: f64,
    encode_wall: f64,
    encode_cpu: f64,
}

impl Run {
    fn reference_wall(&self) -> f64 {
        self.speak_wall + self.encode_wall
    }
    fn reference_cpu(&self) -> f64 {
        self.speak_cpu + self.encode_cpu
    }
}

pub fn run(args: &TalkingPhotoArgs) -> Result<()> {
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let limits = parse_limits(&args.fail_if)?;
    let text = std::fs::read_to_string(&args.spec).with_context(|| format!("reading {}", args.spec.display()))?;
    let spec = reelsmith_spec::parse(&text).with_context(|| format!("{}", args.spec.display()))?;
    let spoken = narrations(&spec);
    if spoken.is_empty() {
        bail!("{} has no narration text to speak", args.spec.display());
    }
    std::fs::create_dir_all(&args.dir)?;
    let exe = std::env::current_exe().context("finding this program")?;
    let video = args.dir.join("talking.mp4");
    let report = args.dir.join("report.json");

    let mut runs = vec![];
    let mut seconds = 0.0;
    for i in 0..args.iterations {
        eprintln!("run {} of {}: cold render, the voice alone, the encoder alone…", i + 1, args.iterations);
        let mut render = Command::new(&exe);
        render.args(["render", "-q", "--no-cache", "--report"]).arg(&report).arg(&args.spec).arg("-o").arg(&video);
        let (render_wall, render_cpu) = timed_child(render, "the render")?;
        let r: reelsmith_engine::Report = serde_json::from_slice(&std::fs::read(&report)?)?;
        let peak_rss_mb = r.peak_tree_rss_mb;
        seconds = r.duration_s;

        let (mut speak_wall, mut speak_cpu) = (0.0, 0.0);
        for (n, (engine, voice, speed, text)) in spoken.iter().enumerate() {
            let mut speak = Command::new(&exe);
            speak
                .args(["speak", "--engine", engine, "--voice", voice, "--speed", &speed.to_string(), "-o"])
                .arg(args.dir.join(format!("speech-{n}.wav")))
                .arg(text);
            let (w, c) = timed_child(speak, "the voice alone")?;
            speak_wall += w;
            speak_cpu += c;
        }

        let (encode_wall, encode_cpu, _) = encode_only(&video, r.width, r.height, r.fps)?;
        let run = Run { render_wall, render_cpu, peak_rss_mb, speak_wall, speak_cpu, encode_wall, encode_cpu };
        eprintln!(
            "  render {:.2} s ({:.2} CPU-s, {:.0} MB) · voice {:.2} s + encoder {:.2} s = {:.2} s ({:.2} CPU-s) → {:.2}x",
            run.render_wall,
            run.render_cpu,
            run.peak_rss_mb,
            run.speak_wall,
            run.encode_wall,
            run.reference_wall(),
            run.reference_cpu(),
            run.render_wall / run.reference_wall()
        );
        runs.push(run);
    }

    let m = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let wall = m(&|r| r.render_wall);
    let vs_reference = m(&|r| r.render_wall / r.reference_wall());
    let cpu_vs_reference = m(&|r| r.render_cpu / r.reference_cpu().max(1e-9));
    let peak = runs.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
    println!(
        "Reelsmith talking-photo benchmark — {} ({seconds:.1} s of video), {} cold runs, {} cores",
        args.spec.display(),
        runs.len(),
        reelsmith_engine::cores()
    );
    println!(
        "  reference (the voice alone, then FFmpeg encoding the frames from RAM): {:.2} s = {:.2} s voice + {:.2} s encoder, {:.2} CPU-s",
        m(&|r| r.reference_wall()),
        m(&|r| r.speak_wall),
        m(&|r| r.encode_wall),
        m(&|r| r.reference_cpu())
    );
    println!(
        "  cold render (a process of its own): {wall:.2} s = {vs_reference:.2}x reference; {:.2} CPU-s = {cpu_vs_reference:.2}x; peak tree {peak:.0} MB RSS",
        m(&|r| r.render_cpu)
    );
    if let Some(p) = &args.json {
        let rows: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({
                    "render": { "wall_s": r.render_wall, "cpu_s": r.render_cpu, "peak_tree_rss_mb": r.peak_rss_mb },
                    "voice_alone": { "wall_s": r.speak_wall, "cpu_s": r.speak_cpu },
                    "encoder_alone": { "wall_s": r.encode_wall, "cpu_s": r.encode_cpu },
                })
            })
            .collect();
        let figures = json!({
            "spec": args.spec, "seconds": seconds, "machine": { "cores": reelsmith_engine::cores() },
            "wall_s": wall, "vs_reference": vs_reference, "cpu_vs_reference": cpu_vs_reference,
            "peak_rss_mb": peak, "runs": rows,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&figures)?)?;
    }
    check_limits(
        &limits,
        &[
            ("wall_s", Some(wall)),
            ("vs_reference", Some(vs_reference)),
            ("cpu_vs_reference", Some(cpu_vs_reference)),
            ("peak_rss_mb", Some(peak)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_speaks_each_scene_with_its_own_voice() {
        let spec = reelsmith_spec::parse(
            r#"{"version":1,"voice":{"engine":"piper","name":"en_US-joe-medium"},"scenes":[
                {"title":"Silent","duration":1},
                {"narration":{"text":"One."}},
                {"narration":{"text":"Two.","engine":"espeak-ng","speed":1.5}}]}"#,
        )
        .unwrap();
        let n = narrations(&spec);
        assert_eq!(n.len(), 2, "the scene without narration speaks nothing");
        assert_eq!(n[0], ("piper".into(), "en_US-joe-medium".into(), 1.0, "One.".into()));
        assert_eq!(n[1].0, "espeak-ng");
        assert_eq!(n[1].1, reelsmith_spec::default_voice("espeak-ng"));
        assert_eq!(n[1].2, 1.5);
    }

    #[test]
    fn the_median_takes_the_middle_run() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
