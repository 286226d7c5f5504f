//! End-to-end tests of `reelsmith serve`: a real server process on a random port, a real HTTP
//! client, real renders checked with ffprobe, a real webhook receiver.

mod batches;
#[path = "../common/mod.rs"]
mod common;
mod harness;
mod hostile;
mod imports;
mod live;
mod prompts;
mod scaleout;
mod talks;
mod templates;
mod tools;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::png_header_only;
use futures_util::{SinkExt, StreamExt};
use harness::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

/// Reads `status` events from an SSE response until a final one; returns them all.
async fn sse_until_final(resp: reqwest::Response) -> Vec<Value> {
    let mut events = vec![];
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = tokio::time::timeout(LIMIT, body.next()).await.expect("SSE stalled") {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                let ev: Value = serde_json::from_str(data).unwrap();
                let fin = matches!(ev["status"].as_str(), Some("succeeded" | "failed" | "cancelled"));
                events.push(ev);
                if fin {
                    return events;
                }
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_follow_progress_download_and_verify_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(&[]).await;
    let s = Server::start(dir.path(), &[]);
    let (code, created) = s
        .submit(&json!({"spec": small_spec("Reelsmith renders this sentence."), "priority": 7,
            "webhook_url": hook.url, "metadata": {"ticket": 42}}))
        .await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // The answer shows the generation as it is now: an idle worker may already have taken it.
    assert!(matches!(created["status"].as_str(), Some("queued" | "running")), "{created}");
    assert_eq!(created["priority"], 7);

    // SSE: status events until the final one, progress never going backwards within an attempt.
    let resp = s.get(&format!("/api/v1/generations/{id}/events")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_until_final(resp).await;
    let last = events.last().expect("events");
    assert_eq!(last["status"], "succeeded", "{events:?}");
    assert_eq!(last["progress"], 1.0);
    let running: Vec<f64> =
        events.iter().filter(|e| e["status"] == "running").map(|e| e["progress"].as_f64().unwrap()).collect();
    assert!(running.windows(2).all(|w| w[1] >= w[0]), "progress is monotonic: {running:?}");

    let st = s.status(&id).await;
    assert_eq!(st["status"], "succeeded");
    assert_eq!(st["progress"], 100.0);
    assert_eq!(st["metadata"]["ticket"], 42);
    assert_eq!(st["attempt_history"][0]["outcome"], "succeeded");
    for stage in ["narration", "canvas", "audio", "segments", "concat"] {
        assert!(st["timings"]["stages"][stage]["wall_s"].as_f64().is_some(), "stage {stage} timed: {st}");
    }

    // The video: real H.264 + AAC at the requested size and about the expected length.
    let video = s.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap();
    assert_eq!(video.status(), 200);
    assert_eq!(video.headers()["content-type"], "video/mp4");
    let etag = video.headers()["etag"].to_str().unwrap().to_string();
    assert!(video.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    let bytes = video.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, st["result"]["bytes"].as_u64().unwrap());
    let path = dir.path().join("out.mp4");
    std::fs::write(&path, &bytes).unwrap();
    let probe = ffprobe(&path);
    let streams = probe["streams"].as_array().unwrap();
    let v = streams.iter().find(|s| s["codec_type"] == "video").expect("video stream");
    assert_eq!(
        (v["codec_name"].as_str(), v["width"].as_u64(), v["height"].as_u64()),
        (Some("h264"), Some(320), Some(180))
    );
    assert!(streams.iter().any(|s| s["codec_type"] == "audio" && s["codec_name"] == "aac"));
    let dur: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((dur - st["result"]["duration_s"].as_f64().unwrap()).abs() < 0.1, "{dur} vs {st}");
    assert!(dur > 2.0, "narration + 1 s card: {dur}");

    // Range, conditional requests.
    let part = s.get(&format!("/api/v1/generations/{id}/video")).header("range", "bytes=100-199").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"].to_str().unwrap(), format!("bytes 100-199/{}", bytes.len()));
    assert_eq!(part.bytes().await.unwrap(), bytes.slice(100..200));
    let tail = s.get(&format!("/api/v1/generations/{id}/video")).header("range", "bytes=-10").send().await.unwrap();
    assert_eq!(tail.bytes().await.unwrap(), bytes.slice(bytes.len() - 10..));
    let r = s.get(&format!("/api/v1/generations/{id}/video")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304);
    let r = s
        .get(&format!("/api/v1/generations/{id}/video"))
        .header("range", format!("bytes={}-", bytes.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);

    // Poster frame and subtitles.
    let thumb = s.get(&format!("/api/v1/generations/{id}/thumbnail")).send().await.unwrap().bytes().await.unwrap();
    let img = image::load_from_memory(&thumb).unwrap();
    assert_eq!((img.width(), img.height()), (320, 180));
    let vtt = s.get(&format!("/api/v1/generations/{id}/subtitles.vtt")).send().await.unwrap().text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT") && vtt.contains("-->") && vtt.contains("sentence"), "{vtt}");
    let report: Value = s.get(&format!("/api/v1/generations/{id}/report")).send().await.unwrap().json().await.unwrap();
    assert_eq!(report["width"], 320);

    // The webhook: one signed success event whose id is stable.
    let got = hook.wait_for(1, LIMIT).await;
    let d = &got[0];
    let secret = webhook_secret(dir.path());
    let sig = d.headers["reelsmith-signature"].to_str().unwrap();
    let now = (reelsmith_store::now_ms() / 1000) as i64;
    assert!(reelsmith_server::webhooks::verify(secret.as_bytes(), sig, &d.body, now, 300), "signature verifies");
    assert!(!reelsmith_server::webhooks::verify(b"wrong", sig, &d.body, now, 300));
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["type"], "generation.succeeded");
    assert_eq!(body["data"]["id"], id.as_str());
    assert_eq!(body["id"], d.headers["reelsmith-event-id"].to_str().unwrap());
    // The worker records the delivery once the receiver has answered, so just after it.
    let t = std::time::Instant::now();
    loop {
        let st = s.status(&id).await;
        if st["webhook_deliveries"][0]["status"] == "delivered" {
            break;
        }
        assert_eq!(st["webhook_deliveries"][0]["status"], "delivering", "{st}");
        assert!(t.elapsed() < Duration::from_secs(10), "the delivery was never recorded: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Listing and metrics see it.
    let list: Value = s.get("/api/v1/generations?status=succeeded").send().await.unwrap().json().await.unwrap();
    assert!(list["items"].as_array().unwrap().iter().any(|g| g["id"] == id.as_str()));
    let metrics = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reelsmith_jobs_total{queue=\"render\",outcome=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("reelsmith_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("reelsmith_queue_depth{queue=\"render\""));
    assert!(metrics.contains("reelsmith_worker_busy_milliseconds_total{queue=\"render\"}"), "{metrics}");
    assert!(metrics.contains("reelsmith_stage_duration_seconds_count{stage=\"segments\"}"), "{metrics}");
    assert!(metrics.contains("reelsmith_cache_hit_ratio"), "{metrics}");
    dashboard_queries_known_metrics(&metrics);
    let perf: Value = s.get("/api/v1/performance/report?window=10m").send().await.unwrap().json().await.unwrap();
    assert!(perf["routes"]["GET /api/v1/generations/{id}/video"]["count"].as_u64().unwrap() >= 4, "{perf}");
    assert!(perf["stages"]["segments"]["count"].as_u64().unwrap() >= 1, "{perf}");

    // Delete removes it and its files.
    assert_eq!(s.delete(&format!("/api/v1/generations/{id}")).send().await.unwrap().status(), 204);
    assert_eq!(s.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap().status(), 404);
    assert!(!dir.path().join("artifacts").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_specs_deduplicate_and_idempotency_keys_replay() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let body = json!({"spec": small_spec("Same words.")});
    let (c1, a) = s.submit(&body).await;
    assert_eq!(c1, 202);
    let (c2, b) = s.submit(&body).await;
    assert_eq!((c2, &b["id"], &b["deduplicated"]), (200, &a["id"], &json!(true)));
    // The same spec written differently (defaults spelled out) is the same spec.
    let mut explicit = small_spec("Same words.");
    explicit["output"]["quality"] = json!({"preset": "veryfast"});
    let (_, c) = s.submit(&json!({ "spec": explicit })).await;
    assert_eq!(c["id"], a["id"]);

    let post = |key: &str, text: &str| {
        s.post("/api/v1/generations").header("idempotency-key", key).json(&json!({"spec": small_spec(text)})).send()
    };
    let r1 = post("order-1", "Other words.").await.unwrap();
    assert_eq!(r1.status(), 202);
    let id1 = r1.json::<Value>().await.unwrap()["id"].clone();
    let r2 = post("order-1", "Other words.").await.unwrap();
    assert_eq!(r2.status(), 202);
    assert_eq!(r2.headers()["idempotent-replayed"], "true");
    assert_eq!(r2.json::<Value>().await.unwrap()["id"], id1);
    let r3 = post("order-1", "Different words.").await.unwrap();
    assert_eq!(r3.status(), 409);
    assert_eq!(r3.json::<Value>().await.unwrap()["error"]["code"], "conflict");
    let done = s.wait_final(a["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded");
    // Once done, the same spec still returns the finished generation.
    let (c4, d) = s.submit(&body).await;
    assert_eq!((c4, &d["id"], &d["status"]), (200, &a["id"], &json!("succeeded")));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_running_and_queued_generations() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(&[]).await;
    let s = Server::start(dir.path(), &[]);
    let (_, running) = s.submit(&json!({"spec": long_spec("cancel-running", 30.0), "webhook_url": hook.url})).await;
    let (_, queued) =
        s.submit(&json!({"spec": long_spec("cancel-queued", 30.0), "priority": 0, "webhook_url": hook.url})).await;
    let (rid, qid) = (running["id"].as_str().unwrap(), queued["id"].as_str().unwrap());
    // Wait for the first to be rendering frames.
    let t = std::time::Instant::now();
    loop {
        let st = s.status(rid).await;
        if st["status"] == "running" && st["progress"].as_f64().unwrap() > 10.0 {
            break;
        }
        assert!(t.elapsed() < LIMIT, "never started: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = s.post(&format!("/api/v1/generations/{qid}/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.status(qid).await["status"], "cancelled");
    let r = s.post(&format!("/api/v1/generations/{rid}/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let fin = s.wait_final(rid, Duration::from_secs(20)).await;
    assert_eq!(fin["status"], "cancelled", "{fin}");
    assert_eq!(fin["attempt_history"][0]["outcome"], "cancelled");
    let r = s.post(&format!("/api/v1/generations/{rid}/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let got = hook.wait_for(2, LIMIT).await;
    let ids: HashSet<String> = got
        .iter()
        .map(|d| {
            let body: Value = serde_json::from_str(&d.body).unwrap();
            assert_eq!(body["type"], "generation.cancelled");
            body["data"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids, HashSet::from([rid.to_string(), qid.to_string()]), "one event for each");
    assert_eq!(s.get(&format!("/api/v1/generations/{rid}/video")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_failures_are_retried_with_attempts_visible() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(&[500, 503]).await;
    let s = Server::start(dir.path(), &[]);
    let (_, g) = s.submit(&json!({"spec": small_spec("Retry the hook."), "webhook_url": hook.url})).await;
    let id = g["id"].as_str().unwrap();
    let got = hook.wait_for(3, LIMIT).await;
    let ids: HashSet<_> = got.iter().map(|d| d.headers["reelsmith-event-id"].to_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 1, "every retry carries the same event id");
    let secret = webhook_secret(dir.path());
    let now = (reelsmith_store::now_ms() / 1000) as i64;
    for d in &got {
        let sig = d.headers["reelsmith-signature"].to_str().unwrap();
        assert!(reelsmith_server::webhooks::verify(secret.as_bytes(), sig, &d.body, now, 300));
    }
    // The delivery record settles once the third attempt's answer is recorded.
    let t = std::time::Instant::now();
    let st = loop {
        let st = s.status(id).await;
        if st["webhook_deliveries"][0]["status"] == "delivered" {
            break st;
        }
        assert!(t.elapsed() < LIMIT, "{st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attempts = st["webhook_deliveries"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{st}");
    assert!(attempts[0]["error"].as_str().unwrap().contains("HTTP 500"));
    assert!(attempts[1]["error"].as_str().unwrap().contains("HTTP 503"));
    assert_eq!(attempts[2]["outcome"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_panic_and_ffmpeg_failure_fail_the_attempt_then_retry() {
    let dir = tempfile::tempdir().unwrap();
    // An ffmpeg that fails its first two picture encodes, then behaves. Pictures and sound are
    // encoded in the process by default; REELSMITH_X264=ffmpeg sends pictures to FFmpeg
    // children, as hardware encoders do.
    let wrapper = dir.path().join("ffmpeg-flaky");
    let counter = dir.path().join("failures-left");
    std::fs::write(&counter, "2").unwrap();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *libx264*)\n  n=$(cat {c})\n  if [ \"$n\" -gt 0 ]; then echo $((n-1)) > {c}; echo 'injected encoder crash' >&2; exit 1; fi;;\nesac\nexec ffmpeg \"$@\"\n",
            c = counter.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            ("REELSMITH_FFMPEG", wrapper.to_str().unwrap()),
            ("REELSMITH_X264", "ffmpeg"),
            ("REELSMITH_MAX_ATTEMPTS", "4"),
        ],
    );
    let (_, g) = s.submit(&json!({"spec": small_spec("Flaky encoder.")})).await;
    let fin = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(fin["status"], "succeeded", "{fin}");
    let history = fin["attempt_history"].as_array().unwrap();
    assert!(history.len() >= 2, "{fin}");
    assert_eq!(history[0]["outcome"], "failed");
    assert!(history[0]["error"].as_str().unwrap().contains("ffmpeg"), "{fin}");
    assert_eq!(history.last().unwrap()["outcome"], "succeeded");
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("REELSMITH_FAULT_PANIC_ATTEMPTS", "1")]);
    let (_, g) = s.submit(&json!({"spec": small_spec("Panic once.")})).await;
    let fin = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(fin["status"], "succeeded", "{fin}");
    let history = fin["attempt_history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[0]["error"].as_str().unwrap().contains("panicked"), "{fin}");
    // The server kept serving throughout.
    assert_eq!(s.get("/health").send().await.unwrap().status(), 200);

    // Every attempt panicking: the job fails with the reason after max_attempts.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("REELSMITH_FAULT_PANIC_ATTEMPTS", "9"), ("REELSMITH_MAX_ATTEMPTS", "2")]);
    let (_, g) = s.submit(&json!({"spec": small_spec("Always panics.")})).await;
    let fin = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(fin["status"], "failed");
    assert_eq!(fin["error"]["code"], "worker_panic");
    assert_eq!(fin["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_render_then_restart_completes_every_job_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(&[]).await;
    let mut s = Server::start(dir.path(), &[]);
    let mut ids = vec![];
    for i in 0..4 {
        let (code, g) =
            s.submit(&json!({"spec": long_spec(&format!("crash {i}"), 4.0), "webhook_url": hook.url})).await;
        assert_eq!(code, 202);
        ids.push(g["id"].as_str().unwrap().to_string());
    }
    // Kill while the first render is encoding frames.
    let t = std::time::Instant::now();
    loop {
        let st = s.status(&ids[0]).await;
        if st["status"] == "running" && st["progress"].as_f64().unwrap() > 15.0 {
            break;
        }
        assert!(t.elapsed() < LIMIT, "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill_and_restart();
    for id in &ids {
        let fin = s.wait_final(id, LIMIT).await;
        assert_eq!(fin["status"], "succeeded", "{fin}");
    }
    let first = s.status(&ids[0]).await;
    let history = first["attempt_history"].as_array().unwrap();
    assert_eq!(history[0]["outcome"], "lost", "{first}");
    assert_eq!(history.last().unwrap()["outcome"], "succeeded");
    // One result file per job, and one success event id per job.
    for id in &ids {
        let files: Vec<_> = std::fs::read_dir(dir.path().join("artifacts").join(id))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .collect();
        assert_eq!(files.len(), 4, "video, thumbnail, subtitles, report");
        // The retry wrote the live stream again from its start, to its end.
        let playlist = std::fs::read_to_string(dir.path().join("artifacts").join(id).join("live/stream.m3u8")).unwrap();
        assert!(playlist.trim_end().ends_with("#EXT-X-ENDLIST"), "{playlist}");
        let r = s.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let got = hook.wait_for(4, LIMIT).await;
    let mut per_gen: HashMap<String, HashSet<String>> = HashMap::new();
    for d in &got {
        let body: Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["type"], "generation.succeeded");
        per_gen
            .entry(body["data"]["id"].as_str().unwrap().into())
            .or_default()
            .insert(body["id"].as_str().unwrap().into());
    }
    assert_eq!(per_gen.len(), 4);
    assert!(per_gen.values().all(|ids| ids.len() == 1), "one event id per generation: {per_gen:?}");
    // Nothing left behind in the queue.
    let metrics = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reelsmith_queue_depth{queue=\"render\",state=\"queued\"} 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_follows_many_generations() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let (_, a) = s.submit(&json!({"spec": small_spec("First of two.")})).await;
    let (_, b) = s.submit(&json!({"spec": small_spec("Second of two.")})).await;
    let ids: HashSet<String> = [&a, &b].iter().map(|g| g["id"].as_str().unwrap().to_string()).collect();
    let ws_url = format!("{}/ws/generations", s.url.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"action": "subscribe", "ids": ids.iter().collect::<Vec<_>>()}).to_string(),
    ))
    .await
    .unwrap();
    let mut done = HashSet::new();
    let mut seen = HashSet::new();
    while done.len() < 2 {
        let msg = tokio::time::timeout(LIMIT, ws.next()).await.expect("ws stalled").unwrap().unwrap();
        let ev: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        let id = ev["id"].as_str().unwrap().to_string();
        assert!(ids.contains(&id), "only subscribed ids: {ev}");
        seen.insert(id.clone());
        if ev["status"] == "succeeded" {
            done.insert(id);
        }
    }
    assert_eq!(seen, ids);
    ws.send(tokio_tungstenite::tungstenite::Message::text("{\"action\": \"dance\"}")).await.unwrap();
    let msg = tokio::time::timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert!(msg.to_text().unwrap().contains("bad_command"));
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_and_multipart_submissions_resolve_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let mut png = vec![];
    image::RgbImage::from_pixel(64, 36, image::Rgb([0, 200, 0]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // Raw upload → asset ref usable in a spec.
    let r = s.post("/api/v1/assets").header("x-file-name", "green.png").body(png.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let asset: Value = r.json().await.unwrap();
    assert_eq!((asset["width"].as_u64(), asset["media_type"].as_str()), (Some(64), Some("image/png")));
    let same: Value = s.post("/api/v1/assets").body(png.clone()).send().await.unwrap().json().await.unwrap();
    assert_eq!(same["id"], asset["id"], "content-addressed");
    let spec = json!({"version": 1, "output": {"width": 320, "height": 180, "fps": 10},
        "scenes": [{"image": asset["ref"], "duration": 1}]});
    let (code, g) = s.submit(&json!({ "spec": spec })).await;
    assert_eq!(code, 202, "{g}");
    // Multipart: the spec names a file sent in the same request.
    let spec2 = json!({"spec": {"version": 1, "output": {"width": 320, "height": 180, "fps": 10},
        "scenes": [{"image": "photo.png", "duration": 1, "title": "multipart"}]}});
    let form = reqwest::multipart::Form::new()
        .text("request", spec2.to_string())
        .part("files", reqwest::multipart::Part::bytes(png.clone()).file_name("photo.png"));
    let r = s.post("/api/v1/generations").multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let g2: Value = r.json().await.unwrap();
    for g in [&g, &g2] {
        let fin = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
        assert_eq!(fin["status"], "succeeded", "{fin}");
    }
    let video = s.get(&format!("/api/v1/generations/{}/video", g["id"].as_str().unwrap())).send().await.unwrap();
    let path = dir.path().join("green.mp4");
    std::fs::write(&path, video.bytes().await.unwrap()).unwrap();
    let (w, h, rgb) = reelsmith_media::ffmpeg::frame_rgb_at(&path, 0.5).unwrap();
    let mid = ((h / 2 * w + w / 2) * 3) as usize;
    assert!(rgb[mid] < 60 && rgb[mid + 1] > 150 && rgb[mid + 2] < 60, "the uploaded green picture fills the frame");
}

/// Every kind of bad input gets a 4xx JSON error naming the problem, and the server keeps going.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            ("REELSMITH_MAX_BODY_BYTES", "65536"),
            ("REELSMITH_MAX_UPLOAD_BYTES", "200000"),
            ("REELSMITH_WEBHOOKS__ALLOW_PRIVATE", "false"),
        ],
    );
    let raw =
        |body: Vec<u8>| s.post("/api/v1/generations").header("content-type", "application/json").body(body).send();
    let expect = |status: u16, code: &'static str, needle: &'static str| {
        move |r: (u16, Value)| {
            assert_eq!(r.0, status, "{}", r.1);
            assert_eq!(r.1["error"]["code"], code, "{}", r.1);
            let msg = r.1["error"]["message"].as_str().unwrap();
            assert!(msg.contains(needle), "message {msg:?} should name {needle:?}");
        }
    };
    async fn parts(r: reqwest::Response) -> (u16, Value) {
        let code = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("application/json"), "JSON error body, got {ct}");
        (code, r.json().await.unwrap())
    }
    expect(400, "invalid_json", "line 1")(parts(raw(b"{\"spec\": ".to_vec()).await.unwrap()).await);
    expect(400, "empty_body", "empty")(parts(raw(vec![]).await.unwrap()).await);
    expect(422, "invalid_request", "colour")(
        parts(raw(br#"{"spec": {"version": 1, "scenes": []}, "colour": 1}"#.to_vec()).await.unwrap()).await,
    );
    expect(422, "invalid_request", "priority")(
        parts(raw(br#"{"spec": {}, "priority": "high"}"#.to_vec()).await.unwrap()).await,
    );
    expect(422, "invalid_request", "priority")(
        parts(raw(json!({"spec": small_spec("x"), "priority": 12}).to_string().into_bytes()).await.unwrap()).await,
    );
    let mut wrong = small_spec("x");
    wrong["scenes"][0]["duration"] = json!("long");
    expect(422, "spec_parse", "spec.scenes[0].duration")(
        parts(raw(json!({ "spec": wrong }).to_string().into_bytes()).await.unwrap()).await,
    );
    let mut unknown = small_spec("x");
    unknown["scenes"][1]["zoom"] = json!(2);
    expect(422, "spec_parse", "zoom")(
        parts(raw(json!({ "spec": unknown }).to_string().into_bytes()).await.unwrap()).await,
    );
    let mut invalid = small_spec("x");
    invalid["output"]["fps"] = json!(1000);
    expect(422, "spec_invalid", "spec.output.fps")(
        parts(raw(json!({ "spec": invalid }).to_string().into_bytes()).await.unwrap()).await,
    );
    let missing = json!({"spec": {"version": 1, "scenes": [{"image": "nowhere.jpg"}]}});
    expect(422, "missing_asset", "spec.scenes[0].image")(
        parts(raw(missing.to_string().into_bytes()).await.unwrap()).await,
    );
    let unknown_asset = json!({"spec": {"version": 1, "scenes": [{"image": "asset:ast_nope"}]}});
    expect(422, "missing_asset", "ast_nope")(parts(raw(unknown_asset.to_string().into_bytes()).await.unwrap()).await);
    expect(422, "invalid_request", "webhook_url")(
        parts(raw(json!({"spec": small_spec("x"), "webhook_url": "ftp://x"}).to_string().into_bytes()).await.unwrap())
            .await,
    );
    let r = parts(
        raw(json!({"spec": small_spec("x"), "webhook_url": "http://127.0.0.1:9/hook"}).to_string().into_bytes())
            .await
            .unwrap(),
    )
    .await;
    expect(422, "invalid_request", "private")(r);
    let huge = format!("{{\"spec\": {{\"version\": 1, \"scenes\": [{{\"title\": \"{}\"}}]}}}}", "a".repeat(100_000));
    expect(413, "body_too_large", "65536")(parts(raw(huge.into_bytes()).await.unwrap()).await);
    let long_text = small_spec(&"word ".repeat(20_000));
    let r = parts(raw(json!({ "spec": long_text }).to_string().into_bytes()).await.unwrap()).await;
    assert!(r.0 == 413 || r.0 == 422, "{r:?}");

    // Uploads: not an image, a decompression bomb, too many bytes, corrupt audio.
    let up = |body: Vec<u8>| s.post("/api/v1/assets").body(body).send();
    expect(415, "unsupported_media_type", "not an image")(
        parts(up(b"%PDF-1.7 not a picture".to_vec()).await.unwrap()).await,
    );
    expect(413, "image_too_large", "30000x30000")(parts(up(png_header_only(30000, 30000)).await.unwrap()).await);
    expect(413, "body_too_large", "200000")(parts(up(vec![0xFF; 300_000]).await.unwrap()).await);
    let mut fake_wav = b"RIFF\x24\0\0\0WAVEfmt ".to_vec();
    fake_wav.extend([0u8; 64]);
    expect(422, "corrupt_audio", "cannot read the audio")(parts(up(fake_wav).await.unwrap()).await);
    let form = reqwest::multipart::Form::new()
        .text("request", json!({"spec": {"version": 1, "scenes": [{"image": "x.png", "duration": 1}]}}).to_string())
        .part("files", reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("x.png"));
    let r = s.post("/api/v1/generations").multipart(form).send().await.unwrap();
    expect(415, "unsupported_media_type", "x.png")(parts(r).await);

    // Unknown things.
    expect(404, "not_found", "gen_missing")(
        parts(s.get("/api/v1/generations/gen_missing").send().await.unwrap()).await,
    );
    expect(404, "not_found", "route")(parts(s.get("/api/v2/nothing").send().await.unwrap()).await);
    expect(400, "invalid_query", "status")(
        parts(s.get("/api/v1/generations?status=sleeping").send().await.unwrap()).await,
    );
    expect(400, "invalid_query", "window")(
        parts(s.get("/api/v1/performance/report?window=forever").send().await.unwrap()).await,
    );

    // Still serving, and nothing bad was stored.
    assert_eq!(s.get("/health").send().await.unwrap().status(), 200);
    let list: Value = s.get("/api/v1/generations").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (code, _) = s.submit(&json!({"spec": small_spec("Good after bad.")})).await;
    assert_eq!(code, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_required_beyond_loopback_rate_limited_and_quota_bound() {
    let dir = tempfile::tempdir().unwrap();
    let create = |name: &str, extra: &[&str]| create_key(dir.path(), name, extra);
    let token = create("ci", &["--rate", "1", "--burst", "3", "--max-jobs", "1"]);
    assert!(token.starts_with("rsk_"));
    let mut s = Server::start(dir.path(), &[("REELSMITH_REQUIRE_API_KEY", "true")]);
    let r = s.get("/api/v1/generations").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    s.token = Some("rsk_wrong".into());
    assert_eq!(s.get("/api/v1/generations").send().await.unwrap().status(), 401);
    assert_eq!(s.get("/health").send().await.unwrap().status(), 200, "health needs no key");
    s.token = Some(token.clone());
    // Quota: one job at a time.
    let (code, first) = s.submit(&json!({"spec": long_spec("quota", 10.0)})).await;
    assert_eq!(code, 202);
    let first_id = first["id"].as_str().unwrap().to_string();
    let mut png = vec![];
    image::RgbImage::new(4, 4).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let asset: Value = s.post("/api/v1/assets").body(png).send().await.unwrap().json().await.unwrap();
    let first_asset = asset["id"].as_str().unwrap().to_string();
    let (code, body) = s.submit(&json!({"spec": long_spec("quota 2", 10.0)})).await;
    assert_eq!((code, body["error"]["code"].as_str()), (429, Some("quota_exceeded")), "{body}");
    // Rate: burst 3 at 1/s, all used (submit, upload, refused submit): 429 with Retry-After.
    let r = s.get("/api/v1/generations").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Another key sees none of this key's generations, events or assets.
    let other = create("other", &[]);
    s.token = Some(other);
    let list: Value = s.get("/api/v1/generations").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    assert_eq!(s.get(&format!("/api/v1/generations/{first_id}")).send().await.unwrap().status(), 404);
    assert_eq!(s.get(&format!("/api/v1/generations/{first_id}/events")).send().await.unwrap().status(), 404);
    assert_eq!(s.get(&format!("/api/v1/generations/{first_id}/video")).send().await.unwrap().status(), 404);
    let spec = json!({"spec": {"version": 1, "scenes": [{"image": format!("asset:{first_asset}"), "duration": 1}]}});
    let (code, body) = s.submit(&spec).await;
    assert_eq!((code, body["error"]["code"].as_str()), (422, Some("missing_asset")), "{body}");
    let ws_url = format!("{}/ws/generations", s.url.replace("http://", "ws://"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.token.clone().unwrap()).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"action": "subscribe", "ids": [first_id]}).to_string(),
    ))
    .await
    .unwrap();
    let msg = tokio::time::timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert!(msg.to_text().unwrap().contains("not_found"), "{msg}");
    // Revoked keys stop working.
    let out =
        std::process::Command::new(BIN).args(["keys", "--data-dir"]).arg(dir.path()).arg("list").output().unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    let ci_line = listing.lines().find(|l| l.contains("\tci\t")).unwrap();
    assert!(ci_line.contains("\town webhook secret\t"), "a new key signs with its own secret: {ci_line}");
    let ci_id = ci_line.split('\t').next().unwrap().to_string();
    let out = std::process::Command::new(BIN)
        .args(["keys", "--data-dir"])
        .arg(dir.path())
        .args(["revoke", &ci_id])
        .output()
        .unwrap();
    assert!(out.status.success());
    s.token = Some(token);
    let r = s.get("/api/v1/generations").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("revoked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_endpoints_openapi_compression_and_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let r = s.get("/ready").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["checks"]["database"]["ok"], true);
    assert_eq!(ready["checks"]["ffmpeg"]["ok"], true);
    let r = s.get("/health").header("x-request-id", "trace-me").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me");
    assert!(r.headers()["x-response-time"].to_str().unwrap().ends_with("ms"));
    let r = s.get("/health").send().await.unwrap();
    assert!(r.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    let doc: Value = s.get("/api/v1/openapi.json").send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/generations"]["post"].is_object());
    // Text bodies are compressed when the client asks.
    let raw = reqwest::Client::new();
    let r = raw.get(format!("{}/api/v1/openapi.json", s.url)).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
}

#[tokio::test(flavor = "multi_thread")]
async fn time_limit_fails_the_job_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("REELSMITH_JOB_TIMEOUT_SECS", "1")]);
    let (_, g) = s.submit(&json!({"spec": long_spec("too long", 60.0)})).await;
    let fin = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(fin["status"], "failed", "{fin}");
    assert_eq!(fin["error"]["code"], "time_limit");
    assert!(fin["error"]["message"].as_str().unwrap().contains("time limit of 1 s"), "{fin}");
    assert_eq!(fin["attempts"], 1, "a time limit is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_old_generations_and_their_files() {
    let dir = tempfile::tempdir().unwrap();
    // Two seconds of retention: cleanup runs every second.
    let s = Server::start(dir.path(), &[("REELSMITH_RETENTION_HOURS", "0.00056")]);
    let (_, g) = s.submit(&json!({"spec": small_spec("Soon gone.")})).await;
    let id = g["id"].as_str().unwrap();
    assert_eq!(s.wait_final(id, LIMIT).await["status"], "succeeded");
    assert!(dir.path().join("artifacts").join(id).exists());
    let t = std::time::Instant::now();
    loop {
        let r = s.get(&format!("/api/v1/generations/{id}")).send().await.unwrap();
        if r.status() == 404 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "not cleaned up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!dir.path().join("artifacts").join(id).exists(), "files removed with it");
    let metrics = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reelsmith_jobs_total{queue=\"maintenance\",outcome=\"succeeded\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_promptly_with_streams_open_and_the_job_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    let (_, g) = s.submit(&json!({"spec": long_spec("interrupted", 20.0)})).await;
    let id = g["id"].as_str().unwrap().to_string();
    // A follower that never ends on its own, and a render in progress.
    let sse = s.get(&format!("/api/v1/generations/{id}/events")).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    let t = std::time::Instant::now();
    while s.status(&id).await["status"] != "running" {
        assert!(t.elapsed() < LIMIT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = s.terminate(Duration::from_secs(20));
    assert!(took < Duration::from_secs(15), "{took:?}");
    drop(sse);
    // The render finished within the grace period, or is taken again after a restart once
    // its lease runs out: either way it completes.
    let s = Server::start(dir.path(), &[]);
    let fin = s.wait_final(&id, LIMIT).await;
    assert_eq!(fin["status"], "succeeded", "{fin}");
}

/// An API-only process and a worker process on the same data dir: the API node's SSE follower
/// sees the other process's progress through to the end (from the store, not its own hub).
#[tokio::test(flavor = "multi_thread")]
async fn api_only_node_streams_progress_of_a_render_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let api = Server::start(dir.path(), &[("REELSMITH_WORKERS", "false")]);
    let (code, g) = api.submit(&json!({"spec": long_spec("elsewhere", 6.0)})).await;
    assert_eq!(code, 202);
    let id = g["id"].as_str().unwrap().to_string();
    let resp = api.get(&format!("/api/v1/generations/{id}/events")).send().await.unwrap();
    let _worker = Server::start(dir.path(), &[]);
    let statuses: Vec<String> =
        sse_until_final(resp).await.iter().map(|e| e["status"].as_str().unwrap().to_string()).collect();
    assert_eq!(statuses.first().map(String::as_str), Some("queued"));
    assert_eq!(statuses.last().map(String::as_str), Some("succeeded"), "{statuses:?}");
    let fin = api.status(&id).await;
    // Callers see which node rendered, not which machine or process (S22): a random node
    // name (no `node_name` set), the queue and the worker's number.
    let worker = fin["attempt_history"][0]["worker"].as_str().unwrap();
    let (node, rest) = worker.split_at("node-12345678".len().min(worker.len()));
    assert!(
        node.strip_prefix("node-").is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            && rest.starts_with("-render-"),
        "{worker}"
    );
    assert!(rest["-render-".len()..].parse::<u32>().is_ok(), "{worker}");
}

/// Every query of the Grafana dashboard in deploy/ names metrics and labels this server exports
/// (`metrics`: a /metrics text after a render with a webhook).
fn dashboard_queries_known_metrics(metrics: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/reelsmith.json");
    let dash: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut exprs = vec![];
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    let exported: HashSet<&str> =
        metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    for e in &exprs {
        let names: Vec<&str> = e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("reelsmith_"))
            .collect();
        assert!(!names.is_empty(), "no metric in {e}");
        for n in names {
            assert!(exported.contains(n), "dashboard query uses {n}, which /metrics does not export: {e}");
            // Labels it groups or filters by exist on that metric.
            let sample = metrics.lines().find(|l| l.starts_with(&format!("{n}{{"))).unwrap_or_default();
            for label in e.split("by (").skip(1).filter_map(|s| s.split(')').next()).flat_map(|s| s.split(", ")) {
                assert!(sample.contains(&format!("{label}=\"")), "{n} has no label {label}: {sample}");
            }
            for part in e.split(&format!("{n}{{")).skip(1) {
                let filters = part.split('}').next().unwrap();
                for f in filters.split(',').filter_map(|f| f.split(['=', '!']).next()) {
                    assert!(f == "instance" || sample.contains(&format!("{f}=\"")), "{n} has no label {f}: {sample}");
                }
            }
        }
    }
}
