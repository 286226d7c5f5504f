//! The tools around the service: the Studio page in real headless Chromium, `reelsmith bench
//! load` and `bench e2e` against real servers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// Requests per route, from the server's Prometheus text (all statuses together).
async fn served_per_route(s: &Server) -> BTreeMap<String, u64> {
    let text = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("reelsmith_http_request_duration_seconds_count{")) {
        let route = line.split("route=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *out.entry(route).or_default() += n as u64;
    }
    out
}

fn picture(path: &Path) {
    image::RgbImage::from_fn(640, 360, |x, y| image::Rgb([(x * 255 / 640) as u8, (y * 255 / 360) as u8, 96]))
        .save(path)
        .unwrap();
}

/// tests/browser/studio.test.mjs drives the page in Debian's Chromium with playwright-core:
/// a storyboard submitted through the form (picture dropped on it), progress to 100%, the video
/// playing with subtitles, the list, errors next to fields, the performance panel.
#[tokio::test(flavor = "multi_thread")]
async fn studio_page_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let page = s.get("/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert!(page.text().await.unwrap().contains("/studio.js"));

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    assert!(
        root.join("node_modules/playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Chromium and playwright-core: run scripts/test.sh (it installs both)"
    );
    let image = dir.path().join("picture.png");
    picture(&image);
    let shots = std::env::var("STUDIO_SCREENSHOTS").unwrap_or_default();
    let run = tokio::process::Command::new("node")
        .arg("studio.test.mjs")
        .current_dir(&root)
        .env("STUDIO_URL", &s.url)
        .env("STUDIO_IMAGE", &image)
        .env("STUDIO_PHOTO", Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/astronaut.jpg"))
        .env("STUDIO_SCREENSHOTS", shots)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run).await.expect("browser test hung").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok - no script errors"), "the script ran to its end:\n{stdout}");

    // What the page did, seen from the API: one generation, rendered from the dropped picture.
    let list: Value = s.get("/api/v1/generations").send().await.unwrap().json().await.unwrap();
    let all = list["items"].as_array().unwrap();
    // The batch tab's two good rows, then what the other tabs made.
    let (batch, items): (Vec<&Value>, Vec<&Value>) = all.iter().partition(|g| g["metadata"].get("batch").is_some());
    assert_eq!(batch.len(), 2, "the batch's two good rows: {list}");
    assert!(batch.iter().all(|g| g["status"] == "succeeded"), "{list}");
    assert_eq!(items.len(), 3, "only the valid submissions were stored: {list}");
    // Newest first: the prompt, the talking photo, then the storyboard.
    let prompt = s.status(items[0]["id"].as_str().unwrap()).await;
    assert_eq!(prompt["status"], "succeeded", "{prompt}");
    assert_eq!(prompt["prompt"]["request"]["visuals"], serde_json::json!(["cards"]), "{prompt}");
    assert_eq!(prompt["spec"]["scenes"].as_array().unwrap().len(), 2, "{prompt}");
    let talk = s.status(items[1]["id"].as_str().unwrap()).await;
    assert_eq!(talk["spec"]["scenes"][0]["motion"]["framing"], "face", "{talk}");
    assert_eq!(talk["spec"]["scenes"][0]["replace_background"]["blur"], 16.0, "{talk}");
    let g = s.status(items[2]["id"].as_str().unwrap()).await;
    assert_eq!(g["status"], "succeeded");
    let spec = &g["spec"];
    assert!(spec["scenes"][0]["image"].as_str().unwrap().starts_with("asset:"), "{spec}");
    assert_eq!(spec["scenes"][1]["background"]["color"], "#7a1f3d", "{spec}");
}

/// The counts in `bench load`'s report are the server's own counts of the same requests.
#[tokio::test(flavor = "multi_thread")]
async fn bench_load_counts_match_the_servers_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // API only: submissions stay queued, so the machine's cores serve requests.
    let s = Server::start(dir.path(), &[("REELSMITH_WORKERS", "false")]);
    let before = served_per_route(&s).await;
    let report_path = dir.path().join("load.json");
    let out = tokio::process::Command::new(BIN)
        .args(["bench", "load", "--url", &s.url, "--users", "6", "--duration", "2s", "--scenario", "mixed"])
        .args(["--think", "5ms..20ms", "--out"])
        .arg(&report_path)
        .args(["--fail-if", "error_rate>0%"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("GET /health") && table.contains("p99"), "{table}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let after = served_per_route(&s).await;
    let delta = |route: &str| after.get(route).copied().unwrap_or(0) - before.get(route).copied().unwrap_or(0);
    let sent = |route: &str| report["endpoints"][route]["count"].as_u64().unwrap_or(0);
    assert_eq!(report["total_errors"], 0, "{report}");
    for route in ["GET /health", "GET /api/v1/generations/{id}"] {
        assert!(sent(route) > 10, "{route}: {report}");
        assert_eq!(delta(route), sent(route), "{route}: server vs client");
    }
    // Setup: one listing, plus one submission when there was nothing to poll yet.
    let setup_submissions = report["setup_requests"].as_u64().unwrap() - 1;
    assert_eq!(delta("POST /api/v1/generations"), sent("POST /api/v1/generations") + setup_submissions);
    assert_eq!(delta("GET /api/v1/generations"), 1);
    let total: u64 =
        ["GET /health", "GET /api/v1/generations/{id}", "POST /api/v1/generations"].iter().map(|r| sent(r)).sum();
    assert_eq!(report["total_requests"].as_u64().unwrap(), total);
    // Mixed is 30/20/50: each share within a wide band of its weight.
    for (route, share) in
        [("GET /health", 0.3), ("POST /api/v1/generations", 0.2), ("GET /api/v1/generations/{id}", 0.5)]
    {
        let got = sent(route) as f64 / total as f64;
        assert!((got - share).abs() < 0.12, "{route}: {got:.2} of requests, weight {share}");
    }
}

/// `bench e2e` with its own embedded server: files uploaded with the spec, every iteration a
/// real render; the first is cold, the next come from the stage cache.
#[tokio::test(flavor = "multi_thread")]
async fn bench_e2e_round_trips_cold_then_cached() {
    let dir = tempfile::tempdir().unwrap();
    picture(&dir.path().join("photo.png"));
    let spec = json!({
        "version": 1,
        "output": {"width": 320, "height": 180, "fps": 15},
        "scenes": [
            {"image": "photo.png", "narration": {"text": "Benchmarks run the whole round trip."},
             "transition": {"type": "crossfade", "duration": 0.4}},
            {"background": {"color": "#224466"}, "duration": 1.0}
        ]
    });
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let json_path = dir.path().join("e2e.json");
    let out = tokio::process::Command::new(BIN)
        .args(["bench", "e2e"])
        .arg(&spec_path)
        .args(["--iterations", "3", "--data-dir"])
        .arg(dir.path().join("server"))
        .arg("--out")
        .arg(&json_path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cold (1 run)") && stdout.contains("cached (2 runs)"), "{stdout}");
    let r: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let its = r["iterations"].as_array().unwrap();
    assert_eq!(its.len(), 3);
    let kinds: Vec<&str> = its.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["cold", "cached", "cached"]);
    let ids: std::collections::HashSet<&str> = its.iter().map(|i| i["generation"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "each iteration is a generation of its own (no dedup)");
    for it in its {
        assert!(it["video_bytes"].as_u64().unwrap() > 1000, "{it}");
        assert!((it["duration_s"].as_f64().unwrap() - 3.0).abs() < 1.5, "{it}");
        let total = it["total_ms"].as_f64().unwrap();
        let parts: f64 =
            ["submit_ms", "wait_ms", "render_ms", "download_ms"].iter().map(|k| it[k].as_f64().unwrap()).sum();
        assert!(parts <= total + 0.5, "parts {parts} within total {total}");
        assert!(it["stages"].as_object().unwrap().len() >= 3, "{it}");
    }
    // The cold render did the work and the cached ones found all of it in the cache: counted,
    // not timed (CI runs tests side by side, and a cold 320x180 render takes a few tenths of a
    // second, as long as a cached one can wait for a core there).
    assert!(its[0]["cache_misses"].as_u64().unwrap() > 0 && its[0]["cache_hits"] == 0, "{}", its[0]);
    for it in &its[1..] {
        assert!(it["cache_misses"] == 0 && it["cache_hits"].as_u64().unwrap() > 0, "{it}");
    }
    assert!(r["summary"]["cold"]["stages_mean_s"].as_object().unwrap().contains_key("segments"), "{r}");
}

/// Spans of one OTLP/HTTP JSON export: (name, span id, parent span id, string attributes).
type Span = (String, String, String, BTreeMap<String, String>);

fn spans_of(export: &Value) -> Vec<Span> {
    let mut out = vec![];
    for rs in export["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for sp in ss["spans"].as_array().into_iter().flatten() {
                let attrs = sp["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let v = &a["value"];
                        let text = v["stringValue"].as_str().map(str::to_string).unwrap_or_else(|| {
                            v.as_object().and_then(|o| o.values().next()).map(|x| x.to_string()).unwrap_or_default()
                        });
                        (a["key"].as_str().unwrap_or_default().to_string(), text.trim_matches('"').to_string())
                    })
                    .collect();
                let s = |k: &str| sp[k].as_str().unwrap_or_default().to_string();
                out.push((s("name"), s("spanId"), s("parentSpanId"), attrs));
            }
        }
    }
    out
}

/// With OTEL_EXPORTER_OTLP_ENDPOINT set, the server exports its spans to an OTLP/HTTP collector
/// (here a minimal one that keeps what it receives): each request, and each render as a job span
/// holding the render span holding one span per stage.
#[tokio::test(flavor = "multi_thread")]
async fn spans_export_over_otlp_http() {
    use axum::routing::post;
    let received: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let sink = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let (code, g) = s.submit(&json!({"spec": small_spec("traced")})).await;
    assert_eq!(code, 202, "{g}");
    let id = g["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_final(&id, Duration::from_secs(120)).await["status"], "succeeded");
    // Spans leave in batches; stopping the server flushes the last one.
    s.terminate(Duration::from_secs(20));

    let exports = received.lock().unwrap().clone();
    assert!(!exports.is_empty(), "the collector received nothing");
    let service = exports[0]["resourceSpans"][0]["resource"]["attributes"].to_string();
    assert!(service.contains("service.name") && service.contains("reelsmith"), "{service}");
    let spans: Vec<Span> = exports.iter().flat_map(spans_of).collect();
    let job = spans.iter().find(|s| s.0 == "job" && s.3.get("generation") == Some(&id)).expect("a job span");
    let render = spans.iter().find(|s| s.0 == "render" && s.2 == job.1).expect("a render span inside the job span");
    let stages: std::collections::HashSet<&str> = spans
        .iter()
        .filter(|s| s.0 == "stage" && s.2 == render.1)
        .filter_map(|s| s.3.get("stage"))
        .map(String::as_str)
        .collect();
    for st in ["narration", "canvas", "segments", "concat"] {
        assert!(stages.contains(st), "no {st} stage span under the render: {stages:?}");
    }
    let submit = spans.iter().find(|s| {
        s.0 == "request"
            && s.3.get("route").map(String::as_str) == Some("/api/v1/generations")
            && s.3.get("method").map(String::as_str) == Some("POST")
    });
    let submit = submit.unwrap_or_else(|| {
        panic!(
            "no request span for the submission: {:?}",
            spans.iter().filter(|s| s.0 == "request").map(|s| &s.3).collect::<Vec<_>>()
        )
    });
    assert_eq!(submit.3.get("status").map(String::as_str), Some("202"), "{submit:?}");
}
