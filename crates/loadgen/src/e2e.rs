//! `reelsmith bench e2e`: the whole API round trip of one spec, N times — upload its files and
//! submit (multipart), follow progress over SSE, download the video, read the render report —
//! with the client's view (submit, wait, render, download) and the server's per-stage breakdown.
//! Beside the events, a player's view: from submission until the live stream's first piece is
//! on the client (`GET stream.m3u8`, which the server holds until a piece is stored, then the
//! init segment and the first piece), when a player can start.
//!
//! Each iteration asks for a fresh render (`"dedupe": false`), so the first is as cold as the
//! server's stage cache and later ones show what the cache saves. An iteration is labelled from
//! its report's cache counts, not from its position: `cold` (no stage hit the cache), `cached`
//! (no stage missed) or `partial`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode, Url};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{LoadError, percentile};

#[derive(Clone, Debug)]
pub struct E2eConfig {
    pub url: String,
    pub api_key: Option<String>,
    /// The spec file; files it names are read relative to its folder.
    pub spec: PathBuf,
    pub iterations: usize,
    /// Longest wait for one generation to finish.
    pub timeout: Duration,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Iteration {
    pub iteration: usize,
    pub generation: String,
    /// cold, cached or partial (from the report's cache counts).
    pub kind: &'static str,
    /// POST /generations, files included, until its response.
    pub submit_ms: f64,
    /// Response until the first `running` event (the client's view of the queue wait).
    pub wait_ms: f64,
    /// First `running` event until the final one.
    pub render_ms: f64,
    /// Downloading the MP4, first byte to last.
    pub download_ms: f64,
    /// Submit until the video is on the client: what a user waits.
    pub total_ms: f64,
    /// Submit until the live stream's playlist, init segment and first piece are on the client:
    /// when a player can start. None when the render wrote no live stream (a cached render, or
    /// a server with live streams off).
    pub first_playable_ms: Option<f64>,
    pub video_bytes: u64,
    pub duration_s: f64,
    /// The engine's own wall time and per-stage wall times (seconds), from the report.
    pub engine_wall_s: f64,
    pub stages: BTreeMap<String, f64>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Each stage name as the progress events announced it, with seconds since submit.
    pub progress: Vec<(String, f64)>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KindSummary {
    pub count: usize,
    pub total_p50_ms: f64,
    pub total_p95_ms: f64,
    pub total_max_ms: f64,
    pub submit_p50_ms: f64,
    pub wait_p50_ms: f64,
    pub render_p50_ms: f64,
    pub download_p50_ms: f64,
    /// Over the iterations that had a live stream.
    pub first_playable_p50_ms: Option<f64>,
    pub first_playable_max_ms: Option<f64>,
    /// Mean seconds per engine stage.
    pub stages_mean_s: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct E2eReport {
    pub url: String,
    pub spec: String,
    pub iterations: Vec<Iteration>,
    /// Per kind: cold, cached, partial.
    pub summary: BTreeMap<String, KindSummary>,
}

/// The spec's JSON and the local files it names (name as written → path to read).
pub fn load_spec(path: &Path) -> Result<(Value, Vec<(String, PathBuf)>), LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::Config(format!("cannot read spec {}: {e}", path.display())))?;
    let mut spec = reelsmith_spec::parse(&text)
        .map_err(|e| LoadError::Config(format!("{}: {}: {}", path.display(), e.path, e.message)))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<(String, PathBuf)> = vec![];
    for (_, _, f) in spec.files_mut() {
        if f.starts_with("asset:") || files.iter().any(|(n, _)| n == f) {
            continue;
        }
        files.push((f.clone(), base.join(f.as_str())));
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| LoadError::Config(e.to_string()))?;
    Ok((value, files))
}

pub async fn run(cfg: &E2eConfig) -> Result<E2eReport, LoadError> {
    if cfg.iterations == 0 {
        return Err(LoadError::Config("--iterations must be at least 1".into()));
    }
    let base = Url::parse(&cfg.url).map_err(|e| LoadError::Config(format!("--url {}: {e}", cfg.url)))?;
    let (spec, files) = load_spec(&cfg.spec)?;
    let mut contents = vec![];
    for (name, path) in &files {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| LoadError::Config(format!("spec names {name}: cannot read {}: {e}", path.display())))?;
        contents.push((name.clone(), bytes));
    }
    let mut headers = HeaderMap::new();
    if let Some(k) = &cfg.api_key {
        let v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| LoadError::Config("bad API key".into()))?;
        headers.insert(AUTHORIZATION, v);
    }
    let client = Client::builder().default_headers(headers).build()?;
    let mut iterations = vec![];
    for i in 1..=cfg.iterations {
        let it = once(&client, &base, &spec, &contents, i, cfg.timeout).await?;
        tracing::info!(iteration = i, kind = it.kind, total_ms = it.total_ms, "e2e iteration");
        iterations.push(it);
    }
    let summary = summarize(&iterations);
    Ok(E2eReport { url: cfg.url.clone(), spec: cfg.spec.display().to_string(), iterations, summary })
}

fn join(base: &Url, path: &str) -> Result<Url, LoadError> {
    base.join(path).map_err(|e| LoadError::Config(format!("{base} + {path}: {e}")))
}

fn setup_err(url: &Url, reason: impl std::fmt::Display) -> LoadError {
    LoadError::Setup { url: url.to_string(), reason: reason.to_string() }
}

/// The server's error body as one line, for messages.
async fn failure(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(body);
    format!("{status}: {message}")
}

async fn once(
    client: &Client,
    base: &Url,
    spec: &Value,
    files: &[(String, Vec<u8>)],
    i: usize,
    timeout: Duration,
) -> Result<Iteration, LoadError> {
    let submit_url = join(base, "api/v1/generations")?;
    let request = json!({"spec": spec, "dedupe": false, "metadata": {"bench": "e2e", "iteration": i}});
    let mut form = reqwest::multipart::Form::new().text("request", request.to_string());
    for (name, bytes) in files {
        form = form.part(name.clone(), reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone()));
    }
    let start = Instant::now();
    let resp = client.post(submit_url.clone()).multipart(form).send().await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Err(setup_err(&submit_url, format!("submission refused: {}", failure(resp).await)));
    }
    let created: Value = resp.json().await?;
    let submitted = start.elapsed();
    let id = created["id"].as_str().ok_or_else(|| setup_err(&submit_url, "no id in the response"))?.to_string();

    // A player, meanwhile: the live stream's first piece.
    let mut first_piece =
        AbortOnDrop(tokio::spawn(first_playable(client.clone(), join(base, &format!("api/v1/generations/{id}/"))?)));

    // Follow the events until the generation is final.
    let events_url = join(base, &format!("api/v1/generations/{id}/events"))?;
    let mut resp = client.get(events_url.clone()).header(ACCEPT, "text/event-stream").send().await?;
    if !resp.status().is_success() {
        return Err(setup_err(&events_url, failure(resp).await));
    }
    let deadline = start + timeout;
    let (mut running_at, mut final_at) = (None, None);
    let mut progress: Vec<(String, f64)> = vec![];
    let mut buf = String::new();
    'stream: loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .map_err(|_| setup_err(&events_url, format!("{id} did not finish within {timeout:?}")))??;
        let Some(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            let Ok(ev) = serde_json::from_str::<Value>(&data) else { continue };
            let now = start.elapsed();
            let status = ev["status"].as_str().unwrap_or_default();
            if status == "running" && running_at.is_none() {
                running_at = Some(now);
            }
            if let Some(stage) = ev["stage"].as_str()
                && progress.last().is_none_or(|(s, _)| s != stage)
            {
                progress.push((stage.to_string(), now.as_secs_f64()));
            }
            if matches!(status, "succeeded" | "failed" | "cancelled") {
                final_at = Some(now);
                if status != "succeeded" {
                    let why = ev["error"].as_str().unwrap_or("no reason given");
                    return Err(setup_err(&events_url, format!("generation {id} {status}: {why}")));
                }
                break 'stream;
            }
        }
    }
    let final_at = final_at.ok_or_else(|| setup_err(&events_url, "the event stream ended before the render did"))?;
    // A render can finish between two events: then it never showed `running`.
    let running_at = running_at.unwrap_or(final_at).max(submitted);

    let video_url = join(base, &format!("api/v1/generations/{id}/video"))?;
    let t = Instant::now();
    let mut resp = client.get(video_url.clone()).send().await?;
    if !resp.status().is_success() {
        return Err(setup_err(&video_url, failure(resp).await));
    }
    let declared = resp.content_length();
    let mut video_bytes = 0u64;
    while let Some(c) = resp.chunk().await? {
        video_bytes += c.len() as u64;
    }
    if declared.is_some_and(|d| d != video_bytes) || video_bytes == 0 {
        return Err(setup_err(&video_url, format!("got {video_bytes} bytes, Content-Length said {declared:?}")));
    }
    let download = t.elapsed();
    let total = start.elapsed();
    let first_playable_at = match (&mut first_piece.0).await {
        Ok(Ok(at)) => at.map(|at| at - start),
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(setup_err(base, format!("the live stream reader stopped: {e}"))),
    };

    let report_url = join(base, &format!("api/v1/generations/{id}/report"))?;
    let resp = client.get(report_url.clone()).send().await?;
    if !resp.status().is_success() {
        return Err(setup_err(&report_url, failure(resp).await));
    }
    let report: Value = resp.json().await?;
    let stages = report["stages"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v["wall_s"].as_f64()?))).collect())
        .unwrap_or_default();
    let (hits, misses) = (report["cache_hits"].as_u64().unwrap_or(0), report["cache_misses"].as_u64().unwrap_or(0));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Iteration {
        iteration: i,
        generation: id,
        kind: kind_of(hits, misses),
        submit_ms: ms(submitted),
        wait_ms: ms(running_at - submitted),
        render_ms: ms(final_at - running_at),
        download_ms: ms(download),
        total_ms: ms(total),
        first_playable_ms: first_playable_at.map(ms),
        video_bytes,
        duration_s: report["duration_s"].as_f64().unwrap_or(0.0),
        engine_wall_s: report["wall_s"].as_f64().unwrap_or(0.0),
        stages,
        cache_hits: hits,
        cache_misses: misses,
        progress,
    })
}

/// Aborts its task when dropped: an iteration that fails early leaves no reader running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// When the live stream's first piece and its init segment have arrived, or None when the
/// generation has no live stream (the server answers 404 `no_stream`).
async fn first_playable(client: Client, generation: Url) -> Result<Option<Instant>, LoadError> {
    let playlist_url = join(&generation, "stream.m3u8")?;
    // The server holds the request up to 20 s for the first piece; a slower render is asked
    // again. A final generation without a stream answers 404 at once.
    let mut asked = 0;
    let resp = loop {
        let resp = client.get(playlist_url.clone()).send().await?;
        asked += 1;
        if resp.status() != StatusCode::NOT_FOUND {
            break resp;
        }
        if asked == 3 {
            return Ok(None);
        }
    };
    if !resp.status().is_success() {
        return Err(setup_err(&playlist_url, failure(resp).await));
    }
    let playlist = resp.text().await?;
    let (map, first) = first_piece_uris(&playlist)
        .ok_or_else(|| setup_err(&playlist_url, format!("no init segment or piece in:\n{playlist}")))?;
    for uri in [map, first] {
        let url = join(&generation, uri)?;
        let resp = client.get(url.clone()).send().await?;
        if !resp.status().is_success() {
            return Err(setup_err(&url, failure(resp).await));
        }
        let bytes = resp.bytes().await?;
        if bytes.is_empty() {
            return Err(setup_err(&url, "an empty piece"));
        }
    }
    Ok(Some(Instant::now()))
}

/// The `#EXT-X-MAP` URI and the first piece's URI of an HLS media playlist.
fn first_piece_uris(playlist: &str) -> Option<(&str, &str)> {
    let lines = || playlist.lines().map(str::trim);
    let map = lines().find_map(|l| l.strip_prefix("#EXT-X-MAP:"))?.split("URI=\"").nth(1)?.split('"').next()?;
    let first = lines().find(|l| !l.is_empty() && !l.starts_with('#'))?;
    Some((map, first))
}

pub fn kind_of(hits: u64, misses: u64) -> &'static str {
    match (hits, misses) {
        (0, _) => "cold",
        (_, 0) => "cached",
        _ => "partial",
    }
}

pub fn summarize(iterations: &[Iteration]) -> BTreeMap<String, KindSummary> {
    let mut out = BTreeMap::new();
    for kind in ["cold", "cached", "partial"] {
        let its: Vec<&Iteration> = iterations.iter().filter(|i| i.kind == kind).collect();
        if its.is_empty() {
            continue;
        }
        let sorted = |f: fn(&Iteration) -> f64| {
            let mut v: Vec<f64> = its.iter().map(|i| f(i)).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let total = sorted(|i| i.total_ms);
        let mut first_playable: Vec<f64> = its.iter().filter_map(|i| i.first_playable_ms).collect();
        first_playable.sort_by(f64::total_cmp);
        let mut stages: BTreeMap<String, f64> = BTreeMap::new();
        for it in &its {
            for (k, v) in &it.stages {
                *stages.entry(k.clone()).or_default() += v / its.len() as f64;
            }
        }
        out.insert(
            kind.to_string(),
            KindSummary {
                count: its.len(),
                total_p50_ms: percentile(&total, 50.0),
                total_p95_ms: percentile(&total, 95.0),
                total_max_ms: *total.last().unwrap_or(&f64::NAN),
                submit_p50_ms: percentile(&sorted(|i| i.submit_ms), 50.0),
                wait_p50_ms: percentile(&sorted(|i| i.wait_ms), 50.0),
                render_p50_ms: percentile(&sorted(|i| i.render_ms), 50.0),
                download_p50_ms: percentile(&sorted(|i| i.download_ms), 50.0),
                first_playable_p50_ms: (!first_playable.is_empty()).then(|| percentile(&first_playable, 50.0)),
                first_playable_max_ms: first_playable.last().copied(),
                stages_mean_s: stages,
            },
        );
    }
    out
}

impl E2eReport {
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "{} against {}", self.spec, self.url);
        let _ = writeln!(
            s,
            "{:>4} {:<7} {:>10} {:>9} {:>10} {:>11} {:>10} {:>13} {:>9} {:>8}",
            "iter",
            "kind",
            "submit ms",
            "wait ms",
            "render ms",
            "download ms",
            "total ms",
            "first play ms",
            "engine s",
            "video s"
        );
        for i in &self.iterations {
            let first_play = i.first_playable_ms.map_or("-".to_string(), |v| format!("{v:.1}"));
            let _ = writeln!(
                s,
                "{:>4} {:<7} {:>10.1} {:>9.1} {:>10.1} {:>11.1} {:>10.1} {:>13} {:>9.3} {:>8.2}",
                i.iteration,
                i.kind,
                i.submit_ms,
                i.wait_ms,
                i.render_ms,
                i.download_ms,
                i.total_ms,
                first_play,
                i.engine_wall_s,
                i.duration_s
            );
        }
        for (kind, k) in &self.summary {
            let _ = writeln!(
                s,
                "\n{kind} ({} run{}): total p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
                k.count,
                if k.count == 1 { "" } else { "s" },
                k.total_p50_ms,
                k.total_p95_ms,
                k.total_max_ms
            );
            if let (Some(p50), Some(max)) = (k.first_playable_p50_ms, k.first_playable_max_ms) {
                let _ = writeln!(s, "  first playable second: p50 {p50:.1} ms, max {max:.1} ms after submission");
            }
            let _ = writeln!(s, "  {:<14} {:>9}", "stage", "mean s");
            for (stage, v) in &k.stages_mean_s {
                let _ = writeln!(s, "  {stage:<14} {v:>9.3}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(kind: &'static str, total: f64, stage_s: f64) -> Iteration {
        Iteration {
            iteration: 1,
            generation: "gen".into(),
            kind,
            submit_ms: 1.0,
            wait_ms: 2.0,
            render_ms: total - 10.0,
            download_ms: 3.0,
            total_ms: total,
            first_playable_ms: (kind == "cold").then_some(total / 3.0),
            video_bytes: 10,
            duration_s: 2.0,
            engine_wall_s: stage_s,
            stages: BTreeMap::from([("segments".to_string(), stage_s)]),
            cache_hits: 0,
            cache_misses: 1,
            progress: vec![],
        }
    }

    #[test]
    fn kinds_come_from_cache_counts() {
        assert_eq!(kind_of(0, 7), "cold");
        assert_eq!(kind_of(0, 0), "cold");
        assert_eq!(kind_of(7, 0), "cached");
        assert_eq!(kind_of(3, 4), "partial");
    }

    #[test]
    fn summary_groups_by_kind_with_percentiles_and_mean_stages() {
        let its = vec![it("cold", 900.0, 0.8), it("cached", 40.0, 0.01), it("cached", 60.0, 0.03)];
        let s = summarize(&its);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["cached", "cold"]);
        let c = &s["cached"];
        assert_eq!((c.count, c.total_p50_ms, c.total_p95_ms, c.total_max_ms), (2, 40.0, 60.0, 60.0));
        assert!((c.stages_mean_s["segments"] - 0.02).abs() < 1e-12);
        assert_eq!(s["cold"].total_p50_ms, 900.0);
        assert_eq!((s["cold"].first_playable_p50_ms, s["cold"].first_playable_max_ms), (Some(300.0), Some(300.0)));
        assert_eq!(s["cached"].first_playable_p50_ms, None);
        let table = E2eReport { url: "u".into(), spec: "s".into(), iterations: its, summary: s }.to_table();
        assert!(table.contains("cold (1 run): total p50 900.0 ms"), "{table}");
        assert!(table.contains("cached (2 runs)"), "{table}");
        assert!(table.contains("first playable second: p50 300.0 ms"), "{table}");
    }

    #[test]
    fn the_first_piece_is_found_in_a_live_playlist() {
        let playlist = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:EVENT\n\
                        #EXT-X-MAP:URI=\"stream/init.mp4\"\n#EXTINF:3.200,\nstream/seg-0.m4s\n#EXTINF:2.0,\nstream/seg-1.m4s\n";
        assert_eq!(first_piece_uris(playlist), Some(("stream/init.mp4", "stream/seg-0.m4s")));
        assert_eq!(first_piece_uris("#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n"), None);
        assert_eq!(first_piece_uris("#EXTM3U\nseg-0.m4s\n"), None);
    }

    #[test]
    fn spec_files_are_listed_once_relative_to_the_spec() {
        let dir = std::env::temp_dir().join(format!("e2e-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.json");
        std::fs::write(
            &p,
            r#"{"version":1,"scenes":[{"image":"a.png","narration":{"text":"x"}},{"image":"a.png"},{"image":"asset:ast_1"}]}"#,
        )
        .unwrap();
        let (v, files) = load_spec(&p).unwrap();
        assert_eq!(v["scenes"][0]["image"], "a.png");
        assert_eq!(files, vec![("a.png".to_string(), dir.join("a.png"))]);
        std::fs::write(&p, r#"{"version":1,"scenes":[{"colour":1}]}"#).unwrap();
        let e = load_spec(&p).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
