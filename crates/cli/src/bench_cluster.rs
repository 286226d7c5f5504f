//! `reelsmith bench cluster`: the scale-out deployment measured end to end. For each worker
//! count it starts an API node (`serve --no-worker`) and that many `worker` processes, each with
//! its own data folder and cold cache, on the PostgreSQL, Redis and S3 it is given; then it
//! measures job throughput (many small videos) and one long video's wall time (rendered as
//! segment jobs across the workers).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[arg(long, env = "REELSMITH_DATABASE__URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, env = "REELSMITH_REDIS__URL", default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
    /// S3-compatible endpoint (`bash scripts/s3-server.sh` starts one on loopback).
    #[arg(long, env = "REELSMITH_S3__ENDPOINT", default_value = "http://127.0.0.1:9333")]
    s3_endpoint: String,
    #[arg(long, default_value = "reelsmith-bench")]
    s3_bucket: String,
    /// Worker counts to compare, e.g. 1,2.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Small videos for the throughput figure.
    #[arg(long, default_value_t = 20)]
    jobs: usize,
    /// Scenes of 5 s in the long video.
    #[arg(long, default_value_t = 12)]
    long_scenes: usize,
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// Segment jobs at once per worker process.
    #[arg(long)]
    segment_workers: Option<usize>,
    #[arg(long, default_value = "bench-cluster")]
    dir: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Run {
    workers: usize,
    jobs: usize,
    jobs_wall_s: f64,
    jobs_per_minute: f64,
    long_video_s: f64,
    long_wall_s: f64,
    long_segments: usize,
    /// Segments made by each worker process.
    long_segments_per_worker: Vec<usize>,
}

pub(crate) struct Node {
    child: Child,
    pub(crate) url: String,
    pub(crate) pid: u32,
}

impl Node {
    /// `kill -9`: no chance to finish anything.
    pub(crate) fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(role: &[&str], data: &Path, env: &[(String, String)]) -> Result<Node> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(role)
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("REELSMITH_CACHE_DIR", data.join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("starting a node")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("node stdout")?).read_line(&mut line)?;
    let url = line.trim().split_once("listening on ").map(|(_, u)| u.to_string()).context("node address")?;
    let pid = child.id();
    Ok(Node { child, url, pid })
}

pub fn run(a: &ClusterArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    std::fs::create_dir_all(&a.dir)?;
    let mut runs = vec![];
    for &w in &a.workers {
        eprintln!("cluster bench: 1 API node + {w} worker(s)");
        let r = rt.block_on(one(a, w))?;
        eprintln!(
            "  {} jobs in {:.1} s = {:.1} jobs/min; long video ({:.0} s, {} segments) in {:.1} s, segments per worker {:?}",
            r.jobs,
            r.jobs_wall_s,
            r.jobs_per_minute,
            r.long_video_s,
            r.long_segments,
            r.long_wall_s,
            r.long_segments_per_worker
        );
        runs.push(r);
    }
    println!(
        "| workers | {} small jobs | jobs/min | long video ({} scenes) wall | segments per worker |",
        a.jobs, a.long_scenes
    );
    println!("|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {:.1} s | {:.1} | {:.1} s | {:?} |",
            r.workers, r.jobs_wall_s, r.jobs_per_minute, r.long_wall_s, r.long_segments_per_worker
        );
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&json!({"runs": runs}))?)?;
    }
    Ok(())
}

async fn one(a: &ClusterArgs, workers: usize) -> Result<Run> {
    let tag = reelsmith_store::new_id("bench").replace('-', "_");
    let root = a.dir.join(&tag);
    let mut env: Vec<(String, String)> = [
        ("REELSMITH_DATABASE__URL", a.database_url.as_str()),
        ("REELSMITH_DATABASE__SCHEMA", tag.as_str()),
        ("REELSMITH_REDIS__URL", a.redis_url.as_str()),
        ("REELSMITH_REDIS__PREFIX", tag.as_str()),
        ("REELSMITH_REDIS__CACHE_TTL_SECS", "3600"),
        ("REELSMITH_S3__BUCKET", a.s3_bucket.as_str()),
        ("REELSMITH_S3__ENDPOINT", a.s3_endpoint.as_str()),
        ("REELSMITH_S3__PREFIX", tag.as_str()),
        ("REELSMITH_S3__ALLOW_HTTP", "true"),
        ("REELSMITH_S3__CREATE_BUCKET", "true"),
        ("REELSMITH_DISTRIBUTED_RENDER", "true"),
        ("REELSMITH_WEBHOOKS__SECRET", "whsec_bench_cluster"),
        ("REELSMITH_SIGNING_SECRET", "bench-cluster-signing-secret-0123456789abcdef"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        if std::env::var_os(k).is_none() {
            env.push((k.into(), "bench".into()));
        }
    }
    if let Some(n) = a.segment_workers {
        env.push(("REELSMITH_SEGMENT_WORKERS".into(), n.to_string()));
    }
    let api = start(&["serve", "--no-worker"], &root.join("api"), &env)?;
    let mut nodes = vec![];
    for i in 0..workers {
        nodes.push(start(&["worker"], &root.join(format!("worker{i}")), &env)?);
    }
    let http = reqwest::Client::new();
    let submit = |spec: Value| {
        let http = http.clone();
        let url = format!("{}/api/v1/generations", api.url);
        async move {
            let r = http.post(url).json(&json!({"spec": spec, "dedupe": false})).send().await?;
            if r.status() != 202 {
                bail!("submit: {} {}", r.status(), r.text().await.unwrap_or_default());
            }
            let v: Value = r.json().await?;
            Ok::<String, anyhow::Error>(v["id"].as_str().unwrap_or_default().to_string())
        }
    };
    let wait = |id: String| {
        let http = http.clone();
        let url = format!("{}/api/v1/generations/{id}", api.url);
        async move {
            loop {
                let v: Value = http.get(&url).send().await?.json().await?;
                match v["status"].as_str() {
                    Some("succeeded") => return Ok::<Value, anyhow::Error>(v),
                    Some("failed" | "cancelled") => bail!("generation {id} ended {}", v["status"]),
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    };

    // Throughput: small distinct videos (two 2.5 s scenes with a spoken line each).
    let t = Instant::now();
    let mut ids = vec![];
    for i in 0..a.jobs {
        ids.push(submit(small(a, &format!("Job {i} of {tag}."))).await?);
    }
    for id in ids {
        wait(id).await?;
    }
    let jobs_wall_s = t.elapsed().as_secs_f64();

    // One long video, split into segment jobs.
    let t = Instant::now();
    let id = submit(long(a, &tag)).await?;
    let done = wait(id).await?;
    let long_wall_s = t.elapsed().as_secs_f64();
    let long_video_s = done["result"]["duration_s"].as_f64().or_else(|| done["duration_s"].as_f64()).unwrap_or(0.0);
    let segs = done["segment_jobs"].as_array().cloned().unwrap_or_default();
    let mut per_worker = vec![0usize; workers];
    for j in &segs {
        let w = j["attempts"].as_array().and_then(|a| a.iter().rev().find(|a| a["outcome"] == "succeeded"));
        if let Some(w) = w.and_then(|w| w["worker"].as_str()) {
            for (i, n) in nodes.iter().enumerate() {
                if w.contains(&format!("-{}-", n.pid)) {
                    per_worker[i] += 1;
                }
            }
        }
    }
    drop(nodes);
    drop(api);
    if let Ok(pg) = reelsmith_store::PgStore::connect(&a.database_url, Some(&tag), 1).await {
        let _ = pg.drop_schema().await;
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(Run {
        workers,
        jobs: a.jobs,
        jobs_wall_s,
        jobs_per_minute: a.jobs as f64 / jobs_wall_s * 60.0,
        long_video_s,
        long_wall_s,
        long_segments: segs.len(),
        long_segments_per_worker: per_worker,
    })
}

fn small(a: &ClusterArgs, text: &str) -> Value {
    json!({"version": 1, "output": {"width": a.width, "height": a.height, "fps": 30},
    "scenes": [
        {"title": "Reelsmith", "narration": {"text": text}, "background": {"gradient": {"from": "#1e3c72", "to": "#2a5298"}}},
        {"background": {"color": "#c03020"}, "duration": 2.5, "motion": {"type": "ken-burns", "zoom_to": 1.2}}
    ]})
}

fn long(a: &ClusterArgs, tag: &str) -> Value {
    let scenes: Vec<Value> = (0..a.long_scenes)
        .map(|i| {
            json!({"title": format!("Part {i}"), "duration": 5.0,
                "background": {"gradient": {"from": format!("#{:02x}3c72", (i * 37) % 256), "to": "#2a5298"}},
                "motion": {"type": "ken-burns", "zoom_from": 1.0, "zoom_to": 1.25, "pan": "right"},
                "overlay": {"text": tag}})
        })
        .collect();
    json!({"version": 1, "output": {"width": a.width, "height": a.height, "fps": 30}, "scenes": scenes})
}
