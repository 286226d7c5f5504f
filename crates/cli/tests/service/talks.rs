//! The D-ID-compatible Talks API against the real server, and the D-ID provider against a
//! local fake that speaks D-ID's documented wire format (Basic auth, `/images`, `/audios`,
//! `/talks`, statuses created → started → done, `{kind, description}` errors, webhooks).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

pub(crate) use reelsmith_providers::did::fake::FAKE_KEY;
pub(crate) use reelsmith_providers::did::fake::fake_did;

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(180);

pub(crate) fn astronaut() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/astronaut.jpg")
}

/// Serves files over HTTP (the photo a talk's `source_url` points at).
async fn file_server(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let mut app = Router::new();
    for (name, bytes) in files {
        app = app.route(&format!("/{name}"), get(move || async move { bytes.clone() }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Polls `GET /talks/{id}` until done or error.
async fn talk_final(s: &Server, auth: Option<&str>, id: &str) -> Value {
    let t = Instant::now();
    loop {
        let mut req = s.get(&format!("/talks/{id}"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if matches!(v["status"].as_str(), Some("done" | "error" | "rejected")) {
            return v;
        }
        assert!(t.elapsed() < LIMIT, "talk {id} not finished: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn basic(token: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("me@example.com:{token}")))
}

/// A D-ID client's calls, unchanged but for the base URL, make a talking video locally.
#[tokio::test(flavor = "multi_thread")]
async fn talks_api_speaks_d_ids_wire_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["keys", "--data-dir"])
        .arg(dir.path())
        .args(["create", "did-client"])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let s = Server::start(dir.path(), &[("REELSMITH_REQUIRE_API_KEY", "true")]);
    let auth = basic(&token);
    let photos =
        file_server(vec![("astronaut.jpg", std::fs::read(astronaut()).unwrap()), ("notes.txt", b"hello".to_vec())])
            .await;
    let hook = Receiver::start(&[]).await;

    let text = "Hello! I am speaking through an API that D-ID clients already know.";
    let body = json!({
        "source_url": format!("{photos}/astronaut.jpg"),
        "script": {"type": "text", "input": text, "provider": {"type": "microsoft", "voice_id": "en-US-JennyNeural"}},
        "config": {"stitch": true, "fluent": false},
        "webhook": hook.url,
        "name": "greeting", "user_data": "order-42"
    });
    let r = s.post("/talks").header("authorization", &auth).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("tlk_"), "{created}");
    assert_eq!((created["object"].as_str(), created["status"].as_str()), (Some("talk"), Some("created")));
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'), "{created}");
    // No key, no talk; a key in D-ID's Basic form works.
    assert_eq!(s.get(&format!("/talks/{id}")).send().await.unwrap().status(), 401);

    let talk = talk_final(&s, Some(&auth), &id).await;
    assert_eq!(talk["status"], "done", "{talk}");
    assert_eq!((talk["name"].as_str(), talk["user_data"].as_str()), (Some("greeting"), Some("order-42")));
    assert_eq!(talk["config"]["stitch"], true);
    let duration = talk["duration"].as_f64().unwrap();
    assert!(duration > 2.0 && duration < 15.0, "{talk}");
    // result_url works without a key, like D-ID's pre-signed links.
    let url = talk["result_url"].as_str().unwrap();
    let video = reqwest::get(url).await.unwrap();
    assert_eq!(video.status(), 200);
    assert_eq!(video.headers()["content-type"], "video/mp4");
    let path = dir.path().join("talk.mp4");
    std::fs::write(&path, video.bytes().await.unwrap()).unwrap();
    let probe = ffprobe(&path);
    let streams = probe["streams"].as_array().unwrap();
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(512), Some(512)), "framed as the photo");
    assert!(streams.iter().any(|s| s["codec_type"] == "audio"));
    let probed: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((probed - duration).abs() < 0.15, "{probed} vs {duration}");
    let tampered = url.replace("signature=", "signature=00");
    let r = reqwest::get(&tampered).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "PermissionError");

    // The webhook body is the talk itself, as D-ID sends it.
    let got = hook.wait_for(1, LIMIT).await;
    let sent: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!((sent["id"].as_str(), sent["status"].as_str()), (Some(id.as_str()), Some("done")), "{sent}");
    assert!(sent["result_url"].as_str().unwrap().contains("/result.mp4?"));

    // Uploads as D-ID has them, then a talk from a recording.
    let photo_part = reqwest::multipart::Part::bytes(std::fs::read(astronaut()).unwrap()).file_name("me.jpg");
    let r = s
        .post("/images")
        .header("authorization", &auth)
        .multipart(reqwest::multipart::Form::new().part("image", photo_part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let image: Value = r.json().await.unwrap();
    let wav = dir.path().join("speech.wav");
    let said = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .arg("This recording was made elsewhere.")
        .status()
        .unwrap();
    assert!(said.success());
    let audio_part = reqwest::multipart::Part::bytes(std::fs::read(&wav).unwrap()).file_name("speech.wav");
    let r = s
        .post("/audios")
        .header("authorization", &auth)
        .multipart(reqwest::multipart::Form::new().part("audio", audio_part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let audio: Value = r.json().await.unwrap();
    let recorded = audio["duration"].as_f64().unwrap();
    let r = s
        .post("/talks")
        .header("authorization", &auth)
        .json(&json!({"source_url": image["url"], "script": {"type": "audio", "audio_url": audio["url"]}, "config": {"pad_audio": 0.5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let audio_talk = talk_final(&s, Some(&auth), r.json::<Value>().await.unwrap()["id"].as_str().unwrap()).await;
    assert_eq!(audio_talk["status"], "done", "{audio_talk}");
    let d = audio_talk["duration"].as_f64().unwrap();
    assert!((d - (recorded + 0.5)).abs() < 0.3, "video {d} s for {recorded} s of audio + 0.5 s pad");

    let list: Value = s.get("/talks").header("authorization", &auth).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["talks"].as_array().unwrap().len(), 2, "{list}");

    // Errors in D-ID's shape, nothing stored.
    let bad = |body: Value| {
        let (s, auth) = (&s, &auth);
        async move {
            let r = s.post("/talks").header("authorization", auth).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let photo = format!("{photos}/astronaut.jpg");
    for (body, needle) in [
        (json!({"source_url": photo}), "script"),
        (json!({"source_url": format!("{photos}/missing.jpg"), "script": {"type": "text", "input": "Hi"}}), "404"),
        (json!({"source_url": format!("{photos}/notes.txt"), "script": {"type": "text", "input": "Hi"}}), "source_url"),
        (json!({"source_url": "ftp://example.com/a.jpg", "script": {"type": "text", "input": "Hi"}}), "ftp"),
        (json!({"source_url": photo, "script": {"type": "text", "input": "<speak>Hi</speak>", "ssml": true}}), "SSML"),
        (
            json!({"source_url": photo, "script": {"type": "text", "input": "Hi"}, "config": {"result_format": "gif"}}),
            "gif",
        ),
        (
            json!({"source_url": photo, "script": {"type": "text", "input": "Hi"}, "config": {"premium_render": true}}),
            "config.premium_render",
        ),
        (json!({"source_url": photo, "script": {"type": "text", "input": "Hi"}, "engine": "d-id"}), "did_api_key"),
    ] {
        let (code, err) = bad(body.clone()).await;
        assert_eq!(code, 400, "{body}: {err}");
        assert_eq!(err["kind"], "BadRequestError", "{err}");
        assert!(err["description"].as_str().unwrap().contains(needle), "{needle}: {err}");
    }
    let huge = json!({"source_url": photo, "script": {"type": "text", "input": "a".repeat(2 << 20)}});
    let r = s.post("/talks").header("authorization", &auth).json(&huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    // The unread body makes the connection unusable: the client is told not to reuse it.
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "PayloadTooLargeError");
    let r = s.get("/talks/tlk_nosuchtalk").header("authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "NotFoundError");
    let list: Value = s.get("/talks").header("authorization", &auth).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["talks"].as_array().unwrap().len(), 2, "refused talks were not stored");
    let r = s.delete(&format!("/talks/{id}")).header("authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(reqwest::get(url).await.unwrap().status(), 404, "deleted with its video");
}

/// A small real MP4 standing in for D-ID's rendering.
fn result_mp4(dir: &Path) -> Vec<u8> {
    let p = dir.join("did-result.mp4");
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=256x256:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
        ])
        .args(["-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-y"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::read(p).unwrap()
}

/// `"engine": "d-id"` sends the talk to D-ID: photo uploaded, talk created with the caller's
/// voice, finished by D-ID's webhook (mode 1) or by polling when no webhook comes (mode 2);
/// D-ID's failure becomes the talk's error (mode 3).
#[tokio::test(flavor = "multi_thread")]
async fn d_id_provider_finishes_by_webhook_or_polling_against_a_fake_d_id() {
    let dir = tempfile::tempdir().unwrap();
    let result = result_mp4(dir.path());
    let photos = file_server(vec![("astronaut.jpg", std::fs::read(astronaut()).unwrap())]).await;
    let body = json!({
        "source_url": format!("{photos}/astronaut.jpg"),
        "script": {"type": "text", "input": "Rendered far away.", "provider": {"type": "microsoft", "voice_id": "en-US-JennyNeural"}},
        "config": {"fluent": true},
        "engine": "d-id"
    });
    for (mode, webhooks, fail, poll_secs) in
        [("webhook", true, false, "30"), ("polling", false, false, "0.1"), ("error", false, true, "0.1")]
    {
        let fake = fake_did(webhooks, fail, result.clone()).await;
        let base = fake.lock().unwrap().base.clone();
        let data = dir.path().join(mode);
        let s = Server::start(
            &data,
            &[
                ("REELSMITH_DID__API_KEY", FAKE_KEY),
                ("REELSMITH_DID__BASE_URL", &base),
                ("REELSMITH_DID__POLL_SECS", poll_secs),
            ],
        );
        let r = s.post("/talks").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201, "{mode}: {}", r.text().await.unwrap());
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let talk = talk_final(&s, None, &id).await;
        let polls = {
            let f = fake.lock().unwrap();
            assert!(
                !f.auth.is_empty() && f.auth.iter().all(|a| a == &format!("Basic {FAKE_KEY}")),
                "{mode}: {:?}",
                f.auth
            );
            assert_eq!(f.images, vec![std::fs::read(astronaut()).unwrap()], "{mode}: the photo was uploaded as is");
            let (sent, polls, _) = f.talks.values().next().unwrap().clone();
            assert_eq!(sent["script"]["input"], "Rendered far away.");
            assert_eq!(sent["script"]["provider"]["voice_id"], "en-US-JennyNeural", "the caller's D-ID voice");
            assert_eq!(sent["config"]["fluent"], true);
            assert!(sent["webhook"].as_str().unwrap().contains("/callbacks/d-id/"), "{sent}");
            polls
        };
        match mode {
            "webhook" => {
                assert_eq!(talk["status"], "done", "{talk}");
                // Polls every 30 s: finishing now means D-ID's webhook woke the worker
                // (one look after creating the talk, one after the webhook).
                assert_eq!(polls, 2, "{mode}");
            }
            "polling" => {
                assert_eq!(talk["status"], "done", "{talk}");
                assert_eq!(polls, 3, "created, started, done, seen by polling");
            }
            _ => {
                assert_eq!(talk["status"], "error", "{talk}");
                assert!(talk["error"]["description"].as_str().unwrap().contains("Failed to detect a face"), "{talk}");
                let g = s.status(&format!("gen_{}", id.trim_start_matches("tlk_"))).await;
                assert_eq!(g["attempts"], 1, "D-ID's refusal is final, not retried: {g}");
                continue;
            }
        }
        // The video is D-ID's, byte for byte, behind our own signed result_url.
        let got = reqwest::get(talk["result_url"].as_str().unwrap()).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.len(), result.len());
        assert!(got[..] == result[..], "{mode}: the stored video is D-ID's result");
        assert!((talk["duration"].as_f64().unwrap() - 2.0).abs() < 0.1, "{talk}");
    }
}

/// A clip standing in for D-ID's animation of a scene: red for 1 s, then blue, 256x256 with sound.
pub(crate) fn did_scene_clip(dir: &Path) -> Vec<u8> {
    let p = dir.join("did-scene.mp4");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "color=red:size=256x256:rate=25:duration=1"])
        .args(["-f", "lavfi", "-i", "color=blue:size=256x256:rate=25:duration=5"])
        .args(["-f", "lavfi", "-i", "sine=frequency=300:duration=6"])
        .args(["-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::read(p).unwrap()
}

/// A storyboard whose second scene's talking head D-ID animates: the narration is synthesised
/// here and sent to (a fake) D-ID as audio with the photo; D-ID's clip plays in the scene in
/// time with the narration, beside a user's own video clip; a later render with another scene
/// edited reuses the clip without calling D-ID; without a D-ID key the spec is refused.
#[tokio::test(flavor = "multi_thread")]
async fn storyboard_talking_head_scene_is_animated_by_d_id_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_did(true, false, did_scene_clip(dir.path())).await;
    let base = fake.lock().unwrap().base.clone();
    let s = Server::start(
        &dir.path().join("data"),
        &[("REELSMITH_DID__API_KEY", FAKE_KEY), ("REELSMITH_DID__BASE_URL", &base), ("REELSMITH_DID__POLL_SECS", "30")],
    );
    let upload = |bytes: Vec<u8>| async { s.post("/api/v1/assets").body(bytes).send().await.unwrap() };
    let photo: Value = upload(std::fs::read(astronaut()).unwrap()).await.json().await.unwrap();
    // The user's own clip is a video asset.
    let r = upload(result_mp4(dir.path())).await;
    assert_eq!(r.status(), 201);
    let broll: Value = r.json().await.unwrap();
    assert_eq!((broll["media_type"].as_str(), broll["width"].as_u64()), (Some("video/mp4"), Some(256)), "{broll}");
    let text = "This scene was animated far away, by a fake D-ID service.";
    let spec = |first: f64| {
        json!({"spec": {
            "version": 1,
            "output": {"width": 320, "height": 180, "fps": 25, "quality": {"preset": "ultrafast"}},
            "subtitles": {"enabled": false},
            "scenes": [
                {"video": {"file": format!("asset:{}", broll["id"].as_str().unwrap())}, "duration": first},
                {"image": format!("asset:{}", photo["id"].as_str().unwrap()), "narration": {"text": text},
                 "motion": {"type": "talking-head", "provider": "d-id"}}
            ]
        }})
    };
    let (code, g) = s.submit(&spec(1.0)).await;
    assert_eq!(code, 202, "{g}");
    let done = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    {
        let f = fake.lock().unwrap();
        assert_eq!(f.talks.len(), 1, "one talk for the one D-ID scene");
        let (sent, polls, _) = f.talks.values().next().unwrap().clone();
        assert_eq!(sent["script"]["type"], "audio", "{sent}");
        assert_eq!(sent["config"]["stitch"], true, "photo framing keeps the photo: {sent}");
        assert!(
            sent["webhook"].as_str().unwrap().contains(&format!("/callbacks/d-id/{}.s1?", g["id"].as_str().unwrap()))
        );
        assert_eq!(polls, 2, "D-ID's webhook woke the worker (polls every 30 s)");
        assert_eq!(f.images[0], std::fs::read(astronaut()).unwrap(), "the photo as uploaded");
        let wav = &f.images[1];
        assert!(wav.starts_with(b"RIFF") && &wav[8..12] == b"WAVE", "the narration went as a WAV");
    }
    let report: Value = s
        .get(&format!("/api/v1/generations/{}/report", g["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (report["stages"]["d-id"]["items"].as_u64(), report["stages"]["d-id"]["runs"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let video = s.get(&format!("/api/v1/generations/{}/video", g["id"].as_str().unwrap())).send().await.unwrap();
    let path = dir.path().join("story.mp4");
    std::fs::write(&path, video.bytes().await.unwrap()).unwrap();
    let info = reelsmith_media::ffmpeg::probe(&path).unwrap();
    let duration = report["duration_s"].as_f64().unwrap();
    assert!((info.duration - duration).abs() < 0.1 && duration > 3.0, "{} vs {duration}", info.duration);
    // The narration (and D-ID's clip) start with scene 1 at 1 s: red for its first second, then blue.
    let mean = |t: f64| crate::common::mean_rgb(&path, t, 0, 0, 320, 180);
    let (a, b) = (mean(1.5), mean(2.6));
    assert!(a[0] > 180.0 && a[2] < 70.0, "D-ID's first second at 1.5 s: {a:?}");
    assert!(b[2] > 180.0 && b[0] < 70.0, "then its blue part: {b:?}");
    // The narration is ours, under D-ID's pictures: speech (not D-ID's 300 Hz tone) in scene 1.
    let mono = reelsmith_media::ffmpeg::decode_audio(&path, 16_000, 1, None, 60.0).unwrap();
    let loud = mono[16_000 * 3 / 2..16_000 * 5 / 2].iter().map(|s| s * s).sum::<f32>() / 16_000.0;
    assert!(loud > 1e-4, "narration plays in scene 1: {loud}");

    // Another scene edited: D-ID's clip comes from the cache.
    let (code, g2) = s.submit(&spec(1.4)).await;
    assert_eq!(code, 202, "{g2}");
    let done = s.wait_final(g2["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(fake.lock().unwrap().talks.len(), 1, "no second call to D-ID");
    let report: Value = s
        .get(&format!("/api/v1/generations/{}/report", g2["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["stages"]["d-id"]["runs"], 0, "the clip came from the cache: {report}");
    assert_eq!(report["stages"]["d-id"]["cache_hits"], 1, "{report}");
    drop(s);

    // A server without a D-ID key refuses such a storyboard at once, naming the scene.
    let s = Server::start(&dir.path().join("nokey"), &[]);
    let photo: Value =
        s.post("/api/v1/assets").body(std::fs::read(astronaut()).unwrap()).send().await.unwrap().json().await.unwrap();
    let body = json!({"spec": {"version": 1, "scenes": [{"image": format!("asset:{}", photo["id"].as_str().unwrap()),
        "narration": {"text": "Hi."}, "motion": {"type": "talking-head", "provider": "d-id"}}]}});
    let (code, e) = s.submit(&body).await;
    assert_eq!(code, 422, "{e}");
    assert_eq!(e["error"]["code"], "provider_unavailable", "{e}");
    assert!(e.to_string().contains("spec.scenes[0].motion.provider"), "{e}");
}

/// S20: listing talks reads a bounded number of generations per call. A caller with many other
/// generations gets a short page and a token to go on from, and following the tokens still
/// finds every talk.
#[tokio::test(flavor = "multi_thread")]
async fn listing_talks_reads_a_bounded_number_of_generations_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let token = create_key(dir.path(), "lister", &["--rate", "1000", "--burst", "1000"]);
    // No worker: the generations stay queued, which is all listing needs.
    let mut s = Server::start_as(&["serve", "--no-worker"], dir.path(), &[("REELSMITH_REQUIRE_API_KEY", "true")]);
    s.token = Some(token.clone());
    let auth = basic(&token);
    let photos = file_server(vec![("astronaut.jpg", std::fs::read(astronaut()).unwrap())]).await;
    let body =
        json!({"source_url": format!("{photos}/astronaut.jpg"), "script": {"type": "text", "input": "Hello there."}});
    let r = s.post("/talks").header("authorization", &auth).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let talk: Value = r.json().await.unwrap();
    // Twelve newer generations that are not talks, listed before it (newest first).
    for k in 0..12 {
        let (code, g) = s.submit(&json!({"spec": small_spec(&format!("Not a talk {k}."))})).await;
        assert_eq!(code, 202, "{g}");
    }
    let mut pages: Vec<Value> = vec![];
    let mut next: Option<String> = None;
    loop {
        let url = match &next {
            Some(t) => format!("/talks?limit=2&token={t}"),
            None => "/talks?limit=2".to_string(),
        };
        let page: Value = s.get(&url).header("authorization", &auth).send().await.unwrap().json().await.unwrap();
        next = page["token"].as_str().map(str::to_string);
        pages.push(page);
        if next.is_none() {
            break;
        }
        assert!(pages.len() < 10, "tokens never end: {pages:?}");
    }
    // A call reads 5 pages of 2: the first finds only the ten newest generations.
    assert_eq!(pages[0]["talks"].as_array().unwrap().len(), 0, "{pages:?}");
    assert!(pages[0]["token"].is_string(), "a short page says where to go on: {pages:?}");
    let found: Vec<&str> =
        pages.iter().flat_map(|p| p["talks"].as_array().unwrap()).filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(found, [talk["id"].as_str().unwrap()], "{pages:?}");
    assert_eq!(pages.len(), 2, "{pages:?}");
}
