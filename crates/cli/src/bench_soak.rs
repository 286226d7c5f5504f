//! `reelsmith bench soak`: the service under mixed load for a while, with a worker killed
//! (`kill -9`) every few minutes. One API node (`serve --no-worker`) and `--workers` worker
//! processes share a data folder and a PostgreSQL schema; a client submits small renders, starts
//! and cancels longer ones, reads statuses and follows SSE streams. Every `--sample-secs` it
//! records each process's RSS and open files and the disk used; at the end every accepted
//! generation must have finished exactly once (none lost, none rendered twice).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::bench_cluster::{Node, start};

#[derive(clap::Args)]
pub struct SoakArgs {
    #[arg(long, env = "REELSMITH_DATABASE__URL", hide_env_values = true)]
    database_url: String,
    /// How long the load runs (the final drain comes on top).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// A worker is killed with SIGKILL (and started again) this often.
    #[arg(long, default_value_t = 180)]
    kill_every_secs: u64,
    #[arg(long, default_value_t = 60)]
    sample_secs: u64,
    /// Growth is measured from the first sample at or after this many minutes (allocators and
    /// caches fill up first); default: half the run.
    #[arg(long)]
    warmup_minutes: Option<f64>,
    /// A small render is submitted this often (every fifth submission is a long one, cancelled
    /// soon after).
    #[arg(long, default_value_t = 3.0)]
    submit_every_secs: f64,
    #[arg(long, default_value = "bench-soak")]
    dir: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
struct Sample {
    at_s: f64,
    api_rss_mb: f64,
    workers_rss_mb: f64,
    api_fds: usize,
    disk_mb: f64,
    accepted: u64,
    finished: u64,
}

#[derive(Debug, Serialize)]
struct Outcome {
    accepted: u64,
    succeeded: u64,
    cancelled: u64,
    failed: u64,
    /// Accepted but never finished.
    lost: u64,
    /// Finished with more than one successful attempt.
    duplicated: u64,
    worker_kills: u64,
    requests: u64,
    request_errors: u64,
    samples: Vec<Sample>,
    api_rss_growth_after_warmup: f64,
    api_fds_growth_after_warmup: f64,
}

fn proc_status_kb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(field).map(|v| v.trim().trim_end_matches("kB").trim().to_string()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn disk_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

pub fn run(a: &SoakArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let out = rt.block_on(soak(a))?;
    println!("| minute | API RSS MB | workers RSS MB | API open files | disk MB | accepted | finished |");
    println!("|---|---|---|---|---|---|---|");
    for s in &out.samples {
        println!(
            "| {:.1} | {:.0} | {:.0} | {} | {:.0} | {} | {} |",
            s.at_s / 60.0,
            s.api_rss_mb,
            s.workers_rss_mb,
            s.api_fds,
            s.disk_mb,
            s.accepted,
            s.finished
        );
    }
    println!(
        "accepted {}, succeeded {}, cancelled {}, failed {}, lost {}, duplicated {}; {} worker kills; {} requests ({} errors); API RSS {:+.1}% and open files {:+.1}% from the first sample after warm-up to the last",
        out.accepted,
        out.succeeded,
        out.cancelled,
        out.failed,
        out.lost,
        out.duplicated,
        out.worker_kills,
        out.requests,
        out.request_errors,
        out.api_rss_growth_after_warmup * 100.0,
        out.api_fds_growth_after_warmup * 100.0
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&out)?)?;
    }
    if out.lost > 0 || out.duplicated > 0 {
        bail!("{} generations lost, {} rendered twice", out.lost, out.duplicated);
    }
    Ok(())
}

async fn soak(a: &SoakArgs) -> Result<Outcome> {
    let tag = reelsmith_store::new_id("soak").replace('-', "_");
    let root = std::path::absolute(a.dir.join(&tag))?;
    let data = root.join("data");
    let env: Vec<(String, String)> = [
        ("REELSMITH_DATABASE__URL", a.database_url.as_str()),
        ("REELSMITH_DATABASE__SCHEMA", tag.as_str()),
        ("REELSMITH_WEBHOOKS__SECRET", "whsec_bench_soak"),
        ("REELSMITH_SIGNING_SECRET", "bench-soak-signing-secret-0123456789abcdef"),
        ("REELSMITH_LEASE_SECS", "5"),
        ("REELSMITH_RETRY_BASE_MS", "500"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // Every process shares the data folder (artifacts, assets); each has its own stage cache.
    let node_env = |name: &str| {
        let mut e = env.clone();
        e.push(("REELSMITH_CACHE_DIR".into(), root.join(format!("cache-{name}")).display().to_string()));
        e
    };
    let api = start(&["serve", "--no-worker"], &data, &node_env("api"))?;
    let mut workers: Vec<Node> = vec![];
    for i in 0..a.workers {
        workers.push(start(&["worker"], &data, &node_env(&format!("w{i}")))?);
    }
    let workers = Arc::new(Mutex::new(workers));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let base = api.url.clone();
    let accepted: Arc<Mutex<Vec<String>>> = Default::default();
    let (requests, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load_for = Duration::from_secs_f64(a.minutes * 60.0);

    // Submissions: small renders, and now and then a long one cancelled soon after.
    let submitter = {
        let (http, base, accepted, requests, errors, stop) =
            (http.clone(), base.clone(), accepted.clone(), requests.clone(), errors.clone(), stop.clone());
        let every = Duration::from_secs_f64(a.submit_every_secs);
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let long = n.is_multiple_of(5);
                let spec = if long { long_spec(n) } else { small_spec(n) };
                requests.fetch_add(1, Ordering::Relaxed);
                let r = http
                    .post(format!("{base}/api/v1/generations"))
                    .json(&json!({"spec": spec, "dedupe": false}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => {
                        let id = r.json::<Value>().await.ok().and_then(|v| v["id"].as_str().map(str::to_string));
                        if let Some(id) = id {
                            accepted.lock().await.push(id.clone());
                            if long {
                                let (http, base) = (http.clone(), base.clone());
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_secs(3)).await;
                                    let _ = http.post(format!("{base}/api/v1/generations/{id}/cancel")).send().await;
                                });
                            }
                        }
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    // Readers: lists, statuses, and short SSE follows.
    let reader = {
        let (http, base, accepted, requests, errors, stop) =
            (http.clone(), base.clone(), accepted.clone(), requests.clone(), errors.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = {
                    let ids = accepted.lock().await;
                    (!ids.is_empty()).then(|| ids[n * 7919 % ids.len()].clone())
                };
                let path = match (&id, n % 10) {
                    (Some(id), 0) => format!("/api/v1/generations/{id}/events"),
                    (Some(id), 1..=5) => format!("/api/v1/generations/{id}"),
                    _ => "/api/v1/generations?limit=20".to_string(),
                };
                requests.fetch_add(1, Ordering::Relaxed);
                let sse = path.ends_with("/events");
                let r = http.get(format!("{base}{path}")).send().await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        if sse {
                            // Follow for a moment, then hang up.
                            let _ = tokio::time::timeout(Duration::from_secs(2), r.bytes()).await;
                        } else {
                            let _ = r.bytes().await;
                        }
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let mut samples = vec![];
    let mut kills = 0u64;
    let mut next_sample = Duration::from_secs(a.sample_secs);
    let mut next_kill = Duration::from_secs(a.kill_every_secs);
    while started.elapsed() < load_for {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if started.elapsed() >= next_kill {
            next_kill += Duration::from_secs(a.kill_every_secs);
            let mut w = workers.lock().await;
            let i = kills as usize % w.len();
            let name = format!("w{i}-{kills}");
            w[i].kill_now();
            w[i] = start(&["worker"], &data, &node_env(&name))?;
            kills += 1;
            eprintln!(
                "soak: killed worker {i} (kill -9) at {:.0} s and started it again",
                started.elapsed().as_secs_f64()
            );
        }
        if started.elapsed() >= next_sample {
            next_sample += Duration::from_secs(a.sample_secs);
            let s = sample(&http, &base, &api, &workers, &root, &accepted, started).await;
            eprintln!("soak: {s:?}");
            samples.push(s);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = submitter.await;
    let _ = reader.await;

    // Drain: every accepted generation ends.
    let ids = accepted.lock().await.clone();
    let drain = Instant::now();
    let (mut succeeded, mut cancelled, mut failed, mut duplicated, mut lost) = (0, 0, 0, 0, 0);
    for id in &ids {
        loop {
            let v: Value = http
                .get(format!("{base}/api/v1/generations/{id}"))
                .send()
                .await
                .context("status")?
                .json()
                .await
                .context("status json")?;
            let status = v["status"].as_str().unwrap_or_default().to_string();
            if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
                match status.as_str() {
                    "succeeded" => succeeded += 1,
                    "cancelled" => cancelled += 1,
                    _ => failed += 1,
                }
                let wins = v["attempt_history"]
                    .as_array()
                    .map(|a| a.iter().filter(|x| x["outcome"] == "succeeded").count())
                    .unwrap_or(0);
                if wins > 1 {
                    duplicated += 1;
                }
                break;
            }
            if drain.elapsed() > Duration::from_secs(600) {
                lost += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    samples.push(sample(&http, &base, &api, &workers, &root, &accepted, started).await);
    // Growth from the first sample after warm-up to the last.
    let warmup_s = a.warmup_minutes.unwrap_or(a.minutes / 2.0) * 60.0;
    let after_warmup = samples.iter().find(|s| s.at_s >= warmup_s).or(samples.last());
    let growth = |f: fn(&Sample) -> f64| match (after_warmup, samples.last()) {
        (Some(a), Some(b)) if f(a) > 0.0 => f(b) / f(a) - 1.0,
        _ => 0.0,
    };
    let out = Outcome {
        accepted: ids.len() as u64,
        succeeded,
        cancelled,
        failed,
        lost,
        duplicated,
        worker_kills: kills,
        requests: requests.load(Ordering::Relaxed),
        request_errors: errors.load(Ordering::Relaxed),
        api_rss_growth_after_warmup: growth(|s| s.api_rss_mb),
        api_fds_growth_after_warmup: growth(|s| s.api_fds as f64),
        samples,
    };
    drop(workers);
    drop(api);
    if let Ok(pg) = reelsmith_store::PgStore::connect(&a.database_url, Some(&tag), 1).await {
        let _ = pg.drop_schema().await;
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(out)
}

async fn sample(
    http: &reqwest::Client,
    base: &str,
    api: &Node,
    workers: &Mutex<Vec<Node>>,
    root: &Path,
    accepted: &Mutex<Vec<String>>,
    started: Instant,
) -> Sample {
    let workers_rss: f64 = workers.lock().await.iter().map(|w| proc_status_kb(w.pid, "VmRSS:")).sum::<f64>() / 1024.0;
    let accepted_n = accepted.lock().await.len() as u64;
    let mut finished = 0;
    for s in ["succeeded", "failed", "cancelled"] {
        // Pages of 200: count them all.
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{base}/api/v1/generations?status={s}&limit=200");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let Ok(v) = async { http.get(&url).send().await?.json::<Value>().await }.await else { break };
            let n = v["items"].as_array().map_or(0, Vec::len);
            finished += n as u64;
            cursor = v["next_cursor"].as_str().map(str::to_string);
            if n < 200 || cursor.is_none() {
                break;
            }
        }
    }
    Sample {
        at_s: started.elapsed().as_secs_f64(),
        api_rss_mb: proc_status_kb(api.pid, "VmRSS:") / 1024.0,
        workers_rss_mb: workers_rss,
        api_fds: open_fds(api.pid),
        disk_mb: disk_bytes(root) as f64 / 1e6,
        accepted: accepted_n,
        finished,
    }
}

fn small_spec(n: u64) -> Value {
    json!({"version": 1, "output": {"width": 320, "height": 180, "fps": 15, "quality": {"preset": "veryfast"}},
    "scenes": [
        {"title": format!("Soak {n}"), "narration": {"text": format!("Soak test number {n}.")},
         "background": {"color": "#204080"}},
        {"background": {"color": "#c03020"}, "duration": 1, "motion": {"type": "ken-burns", "zoom_to": 1.2}}
    ]})
}

/// A render of a minute or more (720p, 60 s, preset medium), cancelled a few seconds in.
fn long_spec(n: u64) -> Value {
    json!({"version": 1, "output": {"width": 1280, "height": 720, "fps": 30, "quality": {"preset": "medium"}},
        "scenes": [{"title": format!("Cancelled {n}"), "duration": 60,
            "motion": {"type": "ken-burns", "zoom_to": 1.5},
            "background": {"gradient": {"from": "#000000", "to": "#ffffff"}}}]})
}
