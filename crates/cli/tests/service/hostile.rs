//! The hardening issue's attacks, each as requests against a real server: every one of them
//! worked before the fix, and the server must keep serving after each.

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(120);

/// A server that requires keys, with two tenants: (server, alice's token, mallory's token).
fn two_tenants(dir: &std::path::Path, env: &[(&str, &str)]) -> (Server, String, String) {
    let create = |name: &str| create_key(dir, name, &["--rate", "1000", "--burst", "1000"]);
    let (alice, mallory) = (create("alice"), create("mallory"));
    let mut env = env.to_vec();
    env.push(("REELSMITH_REQUIRE_API_KEY", "true"));
    (Server::start(dir, &env), alice, mallory)
}

async fn healthy(s: &Server) {
    // A new connection: a refused upload may have closed the pooled one.
    let r = reqwest::Client::new().get(format!("{}/health", s.url)).send().await.expect("the server is gone");
    assert_eq!(r.status(), 200);
}

/// S1: a talk link's signature is checked in full; a link never serves a storyboard, and never
/// lives longer than result_url_ttl_secs, even when correctly signed.
#[tokio::test(flavor = "multi_thread")]
async fn signed_links_and_callbacks_need_the_whole_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, alice, _) = two_tenants(dir.path(), &[]);
    s.token = Some(alice);
    let (code, g) = s.submit(&json!({"spec": small_spec("Alice's secret video.")})).await;
    assert_eq!(code, 202, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_final(&gid, LIMIT).await["status"], "succeeded");
    let tid = format!("tlk_{}", gid.trim_start_matches("gen_"));
    let anonymous = reqwest::Client::new();
    let get = |q: String| {
        let url = format!("{}/talks/{tid}/result.mp4?{q}", s.url);
        let c = anonymous.clone();
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    let far = 99_999_999_999i64;
    for sig in ["", "0", "a", "00", &"0".repeat(63), &"0".repeat(64), &"0".repeat(65), &"zz".repeat(32)] {
        assert_eq!(get(format!("expires={far}&signature={sig}")).await, 403, "signature {sig:?}");
    }
    // A correct signature (made here with the server's own key) for a storyboard: not a talk.
    let keys = signing_keys(dir.path());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let sign = |expires: i64| {
        keys.sign(reelsmith_server::signing::Purpose::TalkResult, format!("talk-result:{gid}:{expires}").as_bytes())
    };
    let soon = now + 600;
    assert_eq!(get(format!("expires={soon}&signature={}", sign(soon))).await, 404);
    // Upper case is the same signature; a tampered one is not.
    assert_eq!(get(format!("expires={soon}&signature={}", sign(soon).to_uppercase())).await, 404);
    let mut tampered = sign(soon).into_bytes();
    tampered[10] = if tampered[10] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(get(format!("expires={soon}&signature={tampered}")).await, 403);
    // Correctly signed, but past the TTL (an hour by default): refused.
    assert_eq!(get(format!("expires={far}&signature={}", sign(far))).await, 403);
    // What a tenant knows (the webhook secret) mints nothing.
    let webhook = webhook_secret(dir.path());
    let forged = reelsmith_server::signing::sign(webhook.as_bytes(), format!("talk-result:{gid}:{soon}").as_bytes());
    assert_eq!(get(format!("expires={soon}&signature={forged}")).await, 403);
    // The D-ID callback route: no empty, short or forged signature wakes anything.
    for sig in ["", "0", &"0".repeat(64)] {
        let r = anonymous.post(format!("{}/callbacks/d-id/{gid}?signature={sig}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 403, "callback signature {sig:?}");
    }
    healthy(&s).await;
}

fn signing_keys(data_dir: &std::path::Path) -> reelsmith_server::signing::Keys {
    let master = std::fs::read_to_string(data_dir.join("signing_secret")).unwrap();
    reelsmith_server::signing::Keys::derive(master.trim().as_bytes())
}

fn id3_wrapped(body: &str) -> Vec<u8> {
    let mut b = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    b.extend_from_slice(body.as_bytes());
    b
}

/// The DASH manifest of the media tests (the attack's payload) pointing at `base_url`.
fn dash(base_url: &str, mime: &str) -> String {
    include_str!("../../../media/tests/fixtures/dash-manifest.xml").replace("BASE_URL", base_url).replace("MIME", mime)
}

/// S2: an "audio" upload that is a manifest pointing at another tenant's video (on disk) or at
/// an internal service (over HTTP) is refused, nothing is fetched, no server path is shown; an
/// audio asset is never a clip.
#[tokio::test(flavor = "multi_thread")]
async fn manifest_uploads_read_nothing_and_assets_keep_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, alice, mallory) = two_tenants(dir.path(), &[]);
    s.token = Some(alice);
    let (code, g) = s.submit(&json!({"spec": small_spec("Alice's video.")})).await;
    assert_eq!(code, 202, "{g}");
    let victim = g["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_final(&victim, LIMIT).await["status"], "succeeded");
    s.token = Some(mallory);
    // Stands for an internal service: it must see no connection at all.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = dir.path().display().to_string();
    let uploads = [
        ("file.mp3", id3_wrapped(&dash(&format!("../artifacts/{victim}/video.mp4"), "video/mp4"))),
        ("abs.mp3", id3_wrapped(&dash(&format!("{data}/artifacts/{victim}/video.mp4"), "video/mp4"))),
        ("http.mp3", id3_wrapped(&dash(&format!("http://127.0.0.1:{port}/ssrf-dash"), "audio/mp4"))),
        (
            "hls.mp3",
            id3_wrapped(&format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5,\nhttp://127.0.0.1:{port}/ssrf-hls\n#EXT-X-ENDLIST\n"
            )),
        ),
    ];
    for (name, bytes) in uploads {
        let r = s.post("/api/v1/assets").header("x-file-name", name).body(bytes).send().await.unwrap();
        let code = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(code, 422, "{name}: {body}");
        assert!(!body.contains(&data) && !body.contains("/assets/"), "{name}: a server path in {body}");
        assert!(body.contains(name), "{name}: the error names the upload: {body}");
    }
    assert!(listener.accept().is_err(), "the server connected to the listener");

    // A real audio upload is audio, and audio is not a clip (nor a picture).
    let mut wav = vec![];
    {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(std::io::Cursor::new(&mut wav), spec).unwrap();
        for i in 0..16_000 {
            w.write_sample(((i as f32 * 0.05).sin() * 8000.0) as i16).unwrap();
        }
        w.finalize().unwrap();
    }
    let a: Value = s.post("/api/v1/assets").body(wav).send().await.unwrap().json().await.unwrap();
    assert_eq!(a["media_type"], "audio/wav", "{a}");
    let id = a["id"].as_str().unwrap();
    for (field, scene) in [
        ("spec.scenes[0].video.file", json!({"video": {"file": format!("asset:{id}")}})),
        ("spec.scenes[0].image", json!({"image": format!("asset:{id}"), "duration": 1})),
    ] {
        let (code, body) = s.submit(&json!({"spec": {"version": 1, "scenes": [scene]}})).await;
        assert_eq!(code, 422, "{body}");
        assert_eq!(body["error"]["issues"][0]["path"], field, "{body}");
        assert!(body["error"]["issues"][0]["message"].as_str().unwrap().contains("audio/wav"), "{body}");
    }
    healthy(&s).await;
}

fn rss_kb(pid: u32) -> u64 {
    let mut s = String::new();
    std::fs::File::open(format!("/proc/{pid}/status")).unwrap().read_to_string(&mut s).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// S3: 5,000 characters of overlay at the largest font on a 4096x4096 frame, and a title at
/// zoom 4, render in bounded memory (they asked for tens of GB and killed the process); absurd
/// specs are refused by their estimated cost before any work.
#[tokio::test(flavor = "multi_thread")]
async fn huge_text_renders_in_bounded_memory_and_absurd_specs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _, mallory) = two_tenants(dir.path(), &[]);
    s.token = Some(mallory);
    let w = "W".repeat(5_000);
    let spec = json!({"version": 1, "output": {"width": 4096, "height": 4096, "fps": 1,
    "quality": {"preset": "ultrafast"}}, "subtitles": {"enabled": false},
    "scenes": [
        {"duration": 1, "background": {"color": "#000000"}, "overlay": {"text": w, "font": {"size": 0.3}}},
        {"duration": 1, "title": w, "motion": {"type": "ken-burns", "zoom_from": 4, "zoom_to": 4}},
    ]});
    let (code, g) = s.submit(&json!({"spec": spec, "dedupe": false})).await;
    assert_eq!(code, 202, "{g}");
    let done = s.wait_final(g["id"].as_str().unwrap(), Duration::from_secs(300)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Peak RSS of the server and of the render's own process tree: frames of 4096² are 25 MB
    // (yuv) and 67 MB (RGBA); the unbounded layout asked for over 30 GB.
    let peak_mb = rss_kb(s.pid()) / 1024;
    assert!(peak_mb < 2048, "the server peaked at {peak_mb} MB");
    let id = done["id"].as_str().unwrap();
    let report: Value = s.get(&format!("/api/v1/generations/{id}/report")).send().await.unwrap().json().await.unwrap();
    let render_mb = report["peak_tree_rss_mb"].as_f64().unwrap();
    assert!(render_mb > 0.0 && render_mb < 2048.0, "the render peaked at {render_mb} MB");
    healthy(&s).await;

    // Twenty minutes of 4096² at 120 fps: refused at once, naming the field and the limit.
    let absurd = json!({"version": 1, "output": {"width": 4096, "height": 4096, "fps": 120,
        "quality": {"preset": "veryslow", "crf": 0}},
        "scenes": [{"duration": 600, "background": {"gradient": {"from": "#000000", "to": "#ffffff"}}},
                   {"duration": 600, "background": {"color": "#ffffff"}}]});
    let (code, body) = s.submit(&json!({"spec": absurd, "priority": 9})).await;
    assert_eq!((code, body["error"]["code"].as_str()), (422, Some("too_costly")), "{body}");
    assert_eq!(body["error"]["issues"][0]["path"], "spec.output", "{body}");
    // Padding boxes are bounded too.
    let padded = json!({"version": 1, "scenes": [{"duration": 1,
        "overlay": {"text": "x", "box": {"color": "#000000", "padding": 100000}}}]});
    let (code, body) = s.submit(&json!({"spec": padded})).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"]["issues"][0]["path"], "spec.scenes[0].overlay.box.padding", "{body}");
    healthy(&s).await;
}

/// S9: with no keys (the loopback default) a web page cannot post across sites, rebind a name
/// to the server, or follow generations over a cross-site WebSocket; the server's own pages can.
#[tokio::test(flavor = "multi_thread")]
async fn web_pages_cannot_drive_the_keyless_loopback_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let body = json!({"spec": small_spec("csrf")}).to_string();
    let post = |ct: Option<&str>, origin: Option<&str>| {
        let mut r = s.post("/api/v1/generations").body(body.clone());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        async move {
            let r = r.send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap())
        }
    };
    // A browser's "simple" cross-site POST: text/plain, a foreign Origin.
    let (code, b) = post(Some("text/plain"), Some("https://evil.example")).await;
    assert_eq!((code, b["error"]["code"].as_str()), (403, Some("cross_origin")), "{b}");
    let (code, b) = post(Some("text/plain"), None).await;
    assert_eq!((code, b["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{b}");
    let (code, b) = post(Some("application/x-www-form-urlencoded"), None).await;
    assert_eq!(code, 415, "{b}");
    let (code, b) = post(Some("application/json"), Some("null")).await;
    assert_eq!(code, 403, "{b}");
    // DNS rebinding: the attacker's name pointing at 127.0.0.1.
    let r = s.get("/api/v1/generations").header("host", "rebind.attacker.example:8081").send().await.unwrap();
    assert_eq!(r.status(), 421);
    // Cross-site WebSocket.
    let ws_url = format!("{}/ws/generations", s.url.replace("http://", "ws://"));
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    req.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(req).await;
    assert!(refused.is_err(), "a cross-site WebSocket was accepted");
    // Nothing above created anything.
    let list: Value = s.get("/api/v1/generations").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    // The server's own origin (the Studio page) and programs without an Origin work.
    let own = s.url.clone();
    let (code, b) = post(Some("application/json"), Some(&own)).await;
    assert_eq!(code, 202, "{b}");
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    req.headers_mut().insert("origin", own.parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    let r = s.get("/").header("host", "localhost").send().await.unwrap();
    assert_eq!(r.status(), 200, "the Studio page by name");
}

/// S16 and S20: webhook URLs into NAT64/6to4/benchmark/reserved ranges are refused; a huge
/// POST /talks body is refused after its own limit, not after the upload limit.
#[tokio::test(flavor = "multi_thread")]
async fn private_ranges_and_oversized_talk_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, alice, _) = two_tenants(dir.path(), &[("REELSMITH_WEBHOOKS__ALLOW_PRIVATE", "false")]);
    s.token = Some(alice);
    for url in [
        "http://[64:ff9b::a9fe:a9fe]/x",
        "http://[2002:a9fe:a9fe::1]/x",
        "http://[::a9fe:a9fe]/x",
        "http://198.18.0.1/x",
        "http://240.0.0.1/x",
    ] {
        let (code, body) =
            s.submit(&json!({"webhook_url": url, "spec": {"version": 1, "scenes": [{"duration": 1}]}})).await;
        assert_eq!(code, 422, "{url}: {body}");
        assert_eq!(body["error"]["issues"][0]["path"], "webhook_url", "{body}");
    }
    // A body one byte over the 1 MiB JSON limit, sent whole over a raw connection: the server
    // reads all of it before it can refuse, so its answer is never lost to a reset (a client
    // still writing a larger body may see the connection closed instead of the 413).
    let server: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let (status, body) = post_raw(server, s.token.as_deref(), "/talks", &vec![b' '; (1 << 20) + 1]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("PayloadTooLargeError"), "the D-ID error kind: {body}");
    healthy(&s).await;
}

/// `POST path` with a JSON `body` over a fresh connection: the status and the response body.
async fn post_raw(server: std::net::SocketAddr, token: Option<&str>, path: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(server).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {server}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(body).await.unwrap();
    let mut answer = vec![];
    tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut answer)).await.expect("no answer").unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// A PNG of noise (does not compress), about `w*h*3` bytes.
fn noise_png(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        image::Rgb([x as u8, (x >> 8) as u8, (x >> 16) as u8])
    });
    let mut png = vec![];
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().filter(|e| e.path().is_file()).count()).unwrap_or(0)
}

/// S6: assets can be deleted (by their owner only, never while a job needs them), a key keeps
/// at most its storage quota, a refused multipart submission keeps none of its files, and
/// assets nobody uses expire.
#[tokio::test(flavor = "multi_thread")]
async fn assets_are_deletable_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, alice, mallory) = two_tenants(dir.path(), &[("REELSMITH_ASSET_QUOTA_MB", "1")]);
    let assets = dir.path().join("assets");
    s.token = Some(alice.clone());
    let up = |s: &Server, png: Vec<u8>| {
        let r = s.post("/api/v1/assets").body(png);
        async move {
            let r = r.send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap())
        }
    };
    let (code, a) = up(&s, noise_png(500, 500, 1)).await;
    assert_eq!(code, 201, "{a}");
    let first = a["id"].as_str().unwrap().to_string();
    assert!(a["bytes"].as_u64().unwrap() > 600_000);
    // Over the 1 MB quota with the second.
    let (code, b) = up(&s, noise_png(500, 500, 2)).await;
    assert_eq!((code, b["error"]["code"].as_str()), (413, Some("storage_quota_exceeded")), "{b}");
    // Another key can neither see nor delete it.
    s.token = Some(mallory);
    assert_eq!(s.delete(&format!("/api/v1/assets/{first}")).send().await.unwrap().status(), 404);
    s.token = Some(alice);
    // In use by a job that has not finished: kept.
    let spec = json!({"version": 1, "output": {"width": 320, "height": 180, "fps": 30, "quality": {"preset": "medium"}},
        "scenes": [{"image": format!("asset:{first}"), "duration": 20, "motion": {"type": "ken-burns", "zoom_to": 1.5}}]});
    let (code, g) = s.submit(&json!({"spec": spec})).await;
    assert_eq!(code, 202, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    let r = s.delete(&format!("/api/v1/assets/{first}")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    s.post(&format!("/api/v1/generations/{gid}/cancel")).send().await.unwrap();
    s.wait_final(&gid, LIMIT).await;
    // Deleted: record and file; the quota has room again.
    let before = files_in(&assets);
    assert_eq!(s.delete(&format!("/api/v1/assets/{first}")).send().await.unwrap().status(), 204);
    assert_eq!(s.get(&format!("/api/v1/assets/{first}")).send().await.unwrap().status(), 404);
    assert_eq!(files_in(&assets), before - 1);
    let (code, b) = up(&s, noise_png(500, 500, 2)).await;
    assert_eq!(code, 201, "{b}");

    // A multipart submission refused after its files arrived keeps none of them.
    let before = files_in(&assets);
    let form = reqwest::multipart::Form::new()
        .part(
            "request",
            reqwest::multipart::Part::text(
                json!({"spec": {"version": 1,
            "scenes": [{"video": {"file": "pic.png"}}]}})
                .to_string(),
            )
            .mime_str("application/json")
            .unwrap(),
        )
        .part("pic.png", reqwest::multipart::Part::bytes(noise_png(64, 64, 3)).file_name("pic.png"));
    let r = s.post("/api/v1/generations").multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 422, "{}", r.text().await.unwrap());
    assert_eq!(files_in(&assets), before, "a refused request left a file");
    healthy(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unused_assets_expire() {
    let dir = tempfile::tempdir().unwrap();
    // About a second of retention; cleanup runs every second.
    let s = Server::start(dir.path(), &[("REELSMITH_ASSET_RETENTION_HOURS", "0.0003")]);
    let a: Value = s.post("/api/v1/assets").body(noise_png(32, 32, 4)).send().await.unwrap().json().await.unwrap();
    let id = a["id"].as_str().unwrap().to_string();
    let t = std::time::Instant::now();
    while s.get(&format!("/api/v1/assets/{id}")).send().await.unwrap().status() != 404 {
        assert!(t.elapsed() < Duration::from_secs(30), "the asset never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!dir.path().join("assets").join(&id).exists());
}

/// S17: one tenant's render never hits another tenant's cache entries (a hit would confirm what
/// the other rendered); the same tenant's re-render still does.
#[tokio::test(flavor = "multi_thread")]
async fn the_cache_tells_no_tenant_what_another_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, alice, mallory) = two_tenants(dir.path(), &[]);
    let spec = json!({"spec": small_spec("Project Falcon launches March third."), "dedupe": false});
    let narration_hits = |v: &Value| v["timings"]["stages"]["narration"]["cache_hits"].as_u64();
    async fn render(s: &mut Server, token: &str, spec: &Value) -> Value {
        s.token = Some(token.to_string());
        let (code, g) = s.submit(spec).await;
        assert_eq!(code, 202, "{g}");
        let done = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        done
    }
    let first = render(&mut s, &alice, &spec).await;
    assert_eq!(narration_hits(&first), Some(0), "{first}");
    let guess = render(&mut s, &mallory, &spec).await;
    assert_eq!(narration_hits(&guess), Some(0), "another tenant's narration was a hit: {guess}");
    let again = render(&mut s, &alice, &spec).await;
    assert_eq!(narration_hits(&again), Some(1), "the same tenant's cache still works: {again}");
    // What a tenant reads back names no folder of the server's.
    let id = again["id"].as_str().unwrap();
    let report = s.get(&format!("/api/v1/generations/{id}/report")).send().await.unwrap().text().await.unwrap();
    let data = dir.path().display().to_string();
    assert!(!report.contains(&data) && !again.to_string().contains(&data), "a server path in {report}");
}

/// S22: a render that fails on a picture (its header passes the upload's check, its pixels are
/// broken) says which file failed without naming the server's folders, in its status and its
/// attempts alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_render_names_its_file_but_no_server_folder() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let mut png = vec![];
    image::RgbImage::from_pixel(64, 64, image::Rgb([200, 40, 40]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // Signature and IHDR (the size) stay; the pixel data is cut short.
    png.truncate(8 + 25 + 12);
    let r = s.post("/api/v1/assets").header("x-file-name", "broken.png").body(png).send().await.unwrap();
    assert_eq!(r.status(), 201, "the header alone passes the upload");
    let asset = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let spec = json!({"spec": {"version": 1, "output": {"width": 320, "height": 180, "fps": 10},
                               "scenes": [{"image": format!("asset:{asset}"), "duration": 1}]}});
    let (code, g) = s.submit(&spec).await;
    assert_eq!(code, 202, "{g}");
    let done = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "failed", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(message.contains("image") && message.contains(&asset), "the failure names the file: {message}");
    let data = std::fs::canonicalize(dir.path()).unwrap().display().to_string();
    let shown = done.to_string();
    assert!(!shown.contains(&data) && !shown.contains(&dir.path().display().to_string()), "a server path in {shown}");
    assert!(!shown.contains("/assets/") && !shown.contains("/tmp/"), "a server folder in {shown}");
}

/// S12: one key holds at most `max_streams_per_key` event streams (SSE and WebSocket together);
/// a stream closed frees its place.
#[tokio::test(flavor = "multi_thread")]
async fn event_streams_per_key_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, alice, mallory) = two_tenants(dir.path(), &[("REELSMITH_MAX_STREAMS_PER_KEY", "2")]);
    s.token = Some(mallory.clone());
    let (code, g) = s.submit(&json!({"spec": long_spec("streams", 20.0)})).await;
    assert_eq!(code, 202, "{g}");
    let id = g["id"].as_str().unwrap().to_string();
    let events = format!("/api/v1/generations/{id}/events");
    let first = s.get(&events).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let ws_url = format!("{}/ws/generations", s.url.replace("http://", "ws://"));
    let ws_req = |token: &str| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    let (ws, _) = tokio_tungstenite::connect_async(ws_req(&mallory)).await.unwrap();
    // Both places taken: a third stream of either kind is refused.
    let third = s.get(&events).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(third.json::<Value>().await.unwrap()["error"]["code"], "too_many_streams");
    assert!(tokio_tungstenite::connect_async(ws_req(&mallory)).await.is_err());
    // Another key is not affected.
    let (other, _) = tokio_tungstenite::connect_async(ws_req(&alice)).await.unwrap();
    drop(other);
    // Closing one frees a place (the server notices the socket close).
    drop(ws);
    let t = std::time::Instant::now();
    loop {
        let r = s.get(&events).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the closed stream's place was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first);
    s.post(&format!("/api/v1/generations/{id}/cancel")).send().await.unwrap();
}

/// S10: priority is an entitlement, and claims are fair between keys: a key that floods the
/// queue delays another key's first render by at most the one the worker is on.
#[tokio::test(flavor = "multi_thread")]
async fn one_key_flooding_the_queue_does_not_starve_another() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, alice, mallory) = two_tenants(dir.path(), &[]);
    s.token = Some(mallory.clone());
    let (code, body) = s.submit(&json!({"spec": small_spec("Me first."), "priority": 9})).await;
    assert_eq!((code, body["error"]["code"].as_str()), (422, Some("priority_not_allowed")), "{body}");
    assert_eq!(body["error"]["issues"][0]["path"], "priority");
    let mut flood = vec![];
    for i in 0..4 {
        let (code, g) = s.submit(&json!({"spec": long_spec(&format!("flood {i}"), 20.0), "dedupe": false})).await;
        assert_eq!(code, 202, "{g}");
        flood.push(g["id"].as_str().unwrap().to_string());
    }
    // The worker is on mallory's first render when alice asks for hers.
    let t = std::time::Instant::now();
    while s.status(&flood[0]).await["status"] == "queued" {
        assert!(t.elapsed() < LIMIT, "the flood never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.token = Some(alice);
    let (code, g) = s.submit(&json!({"spec": small_spec("Just one."), "priority": 5})).await;
    assert_eq!(code, 202, "{g}");
    let done = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    s.token = Some(mallory);
    let mut started = 0;
    for id in &flood {
        if s.status(id).await["status"] != "queued" {
            started += 1;
        }
    }
    // Mallory's first, and at most the next one (taken after alice's): not all four.
    assert!(started <= 2, "{started} of mallory's renders ran before alice's finished");
    for id in &flood {
        s.post(&format!("/api/v1/generations/{id}/cancel")).send().await.unwrap();
    }
    healthy(&s).await;
}

/// S11: one spec cannot send more than `max_did_scenes_per_spec` scenes to D-ID (each a paid talk).
#[tokio::test(flavor = "multi_thread")]
async fn d_id_scenes_per_spec_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, alice, _) = two_tenants(dir.path(), &[("REELSMITH_MAX_DID_SCENES_PER_SPEC", "1")]);
    s.token = Some(alice);
    let a: Value = s.post("/api/v1/assets").body(noise_png(64, 64, 5)).send().await.unwrap().json().await.unwrap();
    let face = format!("asset:{}", a["id"].as_str().unwrap());
    let scene = json!({"image": face, "narration": {"text": "Hello."},
        "motion": {"type": "talking-head", "provider": "d-id"}});
    let (code, body) = s.submit(&json!({"spec": {"version": 1, "scenes": [scene.clone(), scene]}})).await;
    assert_eq!((code, body["error"]["code"].as_str()), (422, Some("too_costly")), "{body}");
    assert_eq!(body["error"]["issues"][0]["path"], "spec.scenes[1].motion.provider", "{body}");
}

/// S4: each key's webhooks are signed with its own secret (shown once at creation, rotatable):
/// neither the server's webhook secret nor another key's verifies them, and after a rotation
/// only the new one does.
#[tokio::test(flavor = "multi_thread")]
async fn each_key_signs_its_webhooks_with_its_own_secret() {
    let dir = tempfile::tempdir().unwrap();
    let create = |name: &str| {
        let out = std::process::Command::new(BIN)
            .args(["keys", "--data-dir"])
            .arg(dir.path())
            .args(["create", name])
            .output()
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        let secret = stderr.split_whitespace().find(|w| w.starts_with("whsec_")).expect("a webhook secret").to_string();
        (String::from_utf8(out.stdout).unwrap().trim().to_string(), secret)
    };
    let ((alice, alice_secret), (_, mallory_secret)) = (create("alice"), create("mallory"));
    let hook = Receiver::start(&[]).await;
    let mut s = Server::start(dir.path(), &[("REELSMITH_REQUIRE_API_KEY", "true")]);
    s.token = Some(alice);
    let verifies = |d: &Delivery, secret: &str| {
        let header = d.headers["reelsmith-signature"].to_str().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        reelsmith_server::webhooks::verify(secret.as_bytes(), header, &d.body, now, 300)
    };
    let (code, g) = s.submit(&json!({"spec": small_spec("Signed for alice."), "webhook_url": hook.url})).await;
    assert_eq!(code, 202, "{g}");
    let got = hook.wait_for(1, LIMIT).await;
    assert!(verifies(&got[0], &alice_secret), "alice's secret must verify her webhook");
    assert!(!verifies(&got[0], &webhook_secret(dir.path())), "the server's shared secret verified a key's webhook");
    assert!(!verifies(&got[0], &mallory_secret));
    // Rotated over the API: shown once, and only the new secret signs from now on.
    let r = s.post("/api/v1/keys/self/webhook-secret").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let fresh = r.json::<Value>().await.unwrap()["webhook_secret"].as_str().unwrap().to_string();
    assert!(fresh.starts_with("whsec_") && fresh != alice_secret);
    let (code, g) =
        s.submit(&json!({"spec": small_spec("Signed again."), "webhook_url": hook.url, "dedupe": false})).await;
    assert_eq!(code, 202, "{g}");
    let got = hook.wait_for(2, LIMIT).await;
    assert!(verifies(&got[1], &fresh) && !verifies(&got[1], &alice_secret));
}

/// S3/S10: cost limits per key. A job over the key's own per-job limit gets 422; daily budgets
/// (megapixel-frames, D-ID scenes) refuse submissions past them with 429 until midnight UTC;
/// replays and duplicates cost nothing; a refused submission is not charged; other keys and
/// the server's defaults apply to keys without limits of their own.
#[tokio::test(flavor = "multi_thread")]
async fn each_key_spends_within_its_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let create = |name: &str, limits: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["keys", "--data-dir"])
            .arg(dir.path())
            .args(["create", name, "--rate", "1000", "--burst", "1000"])
            .args(limits)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let alice = create("alice", &["--max-job-megapixel-frames", "2", "--daily-megapixel-frames", "3"]);
    let bob = create("bob", &[]);
    // Bad limits are refused by the CLI, naming the flag.
    let out = std::process::Command::new(BIN)
        .args(["keys", "--data-dir"])
        .arg(dir.path())
        .args(["create", "carol", "--daily-megapixel-frames", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--daily-megapixel-frames"));
    // No workers: budgets count submissions, and nothing reaches D-ID.
    let mut s = Server::start(
        dir.path(),
        &[
            ("REELSMITH_REQUIRE_API_KEY", "true"),
            ("REELSMITH_WORKERS", "false"),
            ("REELSMITH_DID__API_KEY", "test-key"),
            ("REELSMITH_DEFAULT_DAILY_DID_SCENES", "2"),
        ],
    );
    // 320x180 at 10 fps: 2 s is 20 frames of 57,600 pixels, 1.152 megapixel-frames.
    let spec = |seconds: f64, color: &str| {
        json!({"version": 1, "output": {"width": 320, "height": 180, "fps": 10},
            "scenes": [{"duration": seconds, "background": {"color": color}}]})
    };
    let used = |s: &Server| {
        let r = s.get("/api/v1/keys/self");
        async move {
            let body: Value = r.send().await.unwrap().json().await.unwrap();
            body
        }
    };
    s.token = Some(alice.clone());
    let (code, body) = s.submit(&json!({"spec": spec(4.0, "#000001")})).await;
    assert_eq!((code, body["error"]["code"].as_str()), (422, Some("too_costly")), "over the per-job limit: {body}");
    assert_eq!(body["error"]["issues"][0]["path"], "spec.output");
    let submit_first = || {
        let r = s.post("/api/v1/generations").header("idempotency-key", "first");
        async move {
            let r = r.json(&json!({"spec": spec(2.0, "#000002")})).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, first) = submit_first().await;
    assert_eq!(code, 202, "{first}");
    let (code, second) = s.submit(&json!({"spec": spec(2.0, "#000003")})).await;
    assert_eq!(code, 202, "{second}");
    let me = used(&s).await;
    assert_eq!(me["limits"]["daily_megapixel_frames"], 3.0, "{me}");
    assert_eq!(me["limits"]["job_megapixel_frames"], 2.0, "{me}");
    let spent = me["used_today"]["megapixel_frames"].as_f64().unwrap();
    assert!((spent - 2.304).abs() < 1e-6, "two 1.152 megapixel-frame jobs: {me}");
    // The third does not fit: 429 with the budget named and Retry-After until midnight UTC.
    let third = s.post("/api/v1/generations").json(&json!({"spec": spec(2.0, "#000004")})).send().await.unwrap();
    assert_eq!(third.status(), 429);
    let retry: u64 = third.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "retry after {retry} s");
    let third: Value = third.json().await.unwrap();
    assert_eq!(third["error"]["code"], "budget_exceeded", "{third}");
    assert_eq!(third["error"]["issues"][0]["path"], "spec.output", "{third}");
    assert!(third["error"]["message"].as_str().unwrap().contains("megapixel-frames per day"), "{third}");
    // A retried request and a duplicate still answer, and cost nothing more.
    let (code, replay) = submit_first().await;
    assert_eq!((code, &replay["id"]), (202, &first["id"]), "{replay}");
    let (code, dup) = s.submit(&json!({"spec": spec(2.0, "#000003")})).await;
    assert_eq!((code, &dup["id"]), (200, &second["id"]), "{dup}");
    let me = used(&s).await;
    assert!((me["used_today"]["megapixel_frames"].as_f64().unwrap() - 2.304).abs() < 1e-6, "{me}");

    // Bob has no limits of his own: rendering is unlimited by default, D-ID scenes are not.
    s.token = Some(bob);
    let (code, body) = s.submit(&json!({"spec": spec(2.0, "#000005")})).await;
    assert_eq!(code, 202, "alice's budget is hers: {body}");
    let a: Value = s.post("/api/v1/assets").body(noise_png(64, 64, 9)).send().await.unwrap().json().await.unwrap();
    let face = format!("asset:{}", a["id"].as_str().unwrap());
    let talk = |text: &str| json!({"image": face, "narration": {"text": text}, "motion": {"type": "talking-head", "provider": "d-id"}});
    let (code, body) = s.submit(&json!({"spec": {"version": 1, "scenes": [talk("One."), talk("Two.")]}})).await;
    assert_eq!(code, 202, "{body}");
    let (code, body) = s.submit(&json!({"spec": {"version": 1, "scenes": [talk("Three.")]}})).await;
    assert_eq!((code, body["error"]["code"].as_str()), (429, Some("budget_exceeded")), "{body}");
    assert_eq!(body["error"]["issues"][0]["path"], "spec.scenes", "{body}");
    let me = used(&s).await;
    assert_eq!(me["limits"]["daily_did_scenes"], 2, "{me}");
    assert!(me["limits"]["daily_megapixel_frames"].is_null(), "{me}");
    assert_eq!(me["used_today"]["did_scenes"], 2, "the refused scene is not charged: {me}");
    // Specs without D-ID scenes still go through.
    let (code, body) = s.submit(&json!({"spec": spec(2.0, "#000006")})).await;
    assert_eq!(code, 202, "{body}");
    healthy(&s).await;
}

/// S15: the performance report is read incrementally and shows a key only its own requests and
/// generations (it used to load every report in the window, for everyone, on each call).
#[tokio::test(flavor = "multi_thread")]
async fn performance_reports_show_each_key_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, alice, mallory) = two_tenants(dir.path(), &[]);
    let report = |s: &Server| {
        let r = s.get("/api/v1/performance/report?window=30d");
        async move {
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    s.token = Some(alice.clone());
    let mut runs = 0;
    for text in ["First of alice's.", "Second of alice's."] {
        let (code, g) = s.submit(&json!({"spec": small_spec(text)})).await;
        assert_eq!(code, 202, "{g}");
        let done = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        runs += 1;
        // Each report reads only what finished since the one before, and counts everything.
        let mine = report(&s).await;
        assert_eq!(mine["generations"]["run"]["count"], runs, "{mine}");
        assert_eq!(mine["stages"]["total"]["count"], runs, "{mine}");
        assert!(mine["routes"]["POST /api/v1/generations"]["count"].as_u64().unwrap() >= runs, "{mine}");
    }
    s.token = Some(mallory);
    let theirs = report(&s).await;
    assert_eq!(theirs["generations"]["run"]["count"], 0, "mallory sees none of alice's renders: {theirs}");
    assert!(theirs["stages"].as_object().unwrap().is_empty(), "{theirs}");
    assert!(theirs["routes"].get("POST /api/v1/generations").is_none(), "nor her requests: {theirs}");
    assert!(theirs["cache_hit_ratio"].is_null(), "{theirs}");
    // Many reports at once over the longest window are cheap and all agree.
    s.token = Some(alice);
    let all = futures_util::future::join_all((0..20).map(|_| report(&s))).await;
    assert!(all.iter().all(|r| r["generations"]["run"]["count"] == 2), "{:?}", all[0]);
    healthy(&s).await;
}

/// This machine's first address that is not loopback (the test reaches the server through it).
fn non_loopback_ipv4() -> std::net::Ipv4Addr {
    let out = std::process::Command::new("hostname").arg("-I").output().expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
        .expect("this test needs a network interface with a non-loopback IPv4 address")
}

/// S11/S22: `/ready` tells a remote peer (a load balancer) its status and role only; the
/// checks, which name hosts, paths and versions, go to callers on the machine itself.
#[tokio::test(flavor = "multi_thread")]
async fn ready_details_stay_on_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("REELSMITH_BIND", "0.0.0.0:0")]);
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let get = |host: String| {
        let url = format!("http://{host}:{port}/ready");
        async move {
            let r = reqwest::Client::new().get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, local) = get("127.0.0.1".into()).await;
    assert_eq!(code, 200, "{local}");
    assert_eq!(local["checks"]["database"]["ok"], true, "{local}");
    assert!(local["checks"]["ffmpeg"]["version"].is_string(), "{local}");
    let (code, remote) = get(non_loopback_ipv4().to_string()).await;
    assert_eq!(code, 200, "{remote}");
    assert_eq!(remote["status"], local["status"], "{remote}");
    let fields: Vec<&str> = remote.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["role", "status"], "nothing but status and role: {remote}");
    assert!(!remote.to_string().contains(dir.path().to_str().unwrap()));
}

/// A TCP connection to `server` from the loopback address `from` (127.0.0.0/8 is all
/// loopback on Linux, so each address is another client to the server).
async fn connect_from(from: [u8; 4], server: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::Ipv4Addr::from(from), 0).into()).unwrap();
    socket.connect(server).await.unwrap()
}

/// One keep-alive `GET /health` on `stream`: its status, or `None` when the server closed the
/// connection without answering.
async fn health_over(stream: &mut tokio::net::TcpStream, server: std::net::SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET /health HTTP/1.1\r\nHost: {server}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await.expect("no answer").ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text.split(' ').nth(1).and_then(|c| c.parse().ok());
            }
        }
    }
}

/// S12: a client that sends its request head a byte at a time holds the connection only until
/// the head's deadline (the server closes it), however long it keeps sending.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_its_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("REELSMITH_HEADER_TIMEOUT_SECS", "1")]);
    let server: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let (mut read, mut write) = connect_from([127, 0, 0, 1], server).await.into_split();
    let started = std::time::Instant::now();
    // The attack's pace: one byte of an endless header every 100 ms.
    let trickle = tokio::spawn(async move {
        let head = b"GET /health HTTP/1.1\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'));
        for byte in head {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let closed = async {
        // Whatever the server says before closing (hyper may answer 408), then the close.
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), closed).await.expect("the slow connection was held open");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(900), "closed before its deadline: {held:?}");
    trickle.abort();
    healthy(&s).await;
}

/// S12: one client address cannot take every connection. Past its share the server closes its
/// new connections at once; other clients are served, up to the server's own limit; a place
/// given back is free again.
#[tokio::test(flavor = "multi_thread")]
async fn one_client_piling_up_connections_does_not_lock_others_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            ("REELSMITH_HEADER_TIMEOUT_SECS", "600"),
            ("REELSMITH_MAX_CONNECTIONS", "30"),
            ("REELSMITH_MAX_CONNECTIONS_PER_CLIENT", "20"),
        ],
    );
    let server: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let (piler, other) = ([127, 0, 0, 3], [127, 0, 0, 2]);
    let mut held = vec![];
    for k in 0..20 {
        let mut c = connect_from(piler, server).await;
        assert_eq!(health_over(&mut c, server).await, Some(200), "connection {k} of the client's 20");
        held.push(c);
    }
    let mut extra = connect_from(piler, server).await;
    assert_eq!(health_over(&mut extra, server).await, None, "a 21st connection from one client is closed");
    // Another client is served, until the server's 30 are taken.
    let mut others = vec![];
    let refused_at = loop {
        let mut c = connect_from(other, server).await;
        match health_over(&mut c, server).await {
            Some(code) => assert_eq!(code, 200),
            None => break others.len(),
        }
        others.push(c);
        assert!(others.len() <= 10, "more than 30 connections open");
    };
    assert_eq!(refused_at, 10, "the other client gets the 10 places left, then is refused");
    // A held connection given back frees its place (once the server sees it close).
    drop(others);
    drop(held.pop());
    let t = std::time::Instant::now();
    loop {
        let mut c = connect_from(piler, server).await;
        if health_over(&mut c, server).await == Some(200) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the closed connection's place was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files under `dir`, for a failure message.
fn listing(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into()).collect())
        .unwrap_or_default()
}

/// S21: a generation deleted while its results are being stored leaves no file behind. A fault
/// hook pauses the worker after its first file until the delete has happened, so the delete
/// clears the prefix before the rest of the files arrive, for certain.
#[tokio::test(flavor = "multi_thread")]
async fn a_generation_deleted_while_its_files_are_stored_leaves_none_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pauses = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("REELSMITH_FAULT_PAUSE_STORING", pauses.path().to_str().unwrap())]);
    let (code, g) = s.submit(&json!({"spec": small_spec("Deleted while its files are stored.")})).await;
    assert_eq!(code, 202, "{g}");
    let id = g["id"].as_str().unwrap().to_string();
    let (marker, stored) = (pauses.path().join(&id), dir.path().join("artifacts").join(&id));
    let t = std::time::Instant::now();
    while !marker.exists() {
        assert!(t.elapsed() < LIMIT, "the render never reached storing: {}", s.status(&id).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stored.join("thumbnail.jpg").exists(), "the first file is stored: {:?}", listing(&stored));
    let r = s.delete(&format!("/api/v1/generations/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // The worker records how the job ended once it is done with the files.
    let ended = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("reelsmith_jobs_total{") && l.contains("queue=\"render\""))
            .map(str::to_string)
    };
    let t = std::time::Instant::now();
    let line = loop {
        let metrics = s.get("/metrics").send().await.unwrap().text().await.unwrap();
        if let Some(line) = ended(&metrics) {
            break line;
        }
        assert!(t.elapsed() < LIMIT, "the render job never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!line.contains("outcome=\"succeeded\""), "a deleted generation cannot succeed: {line}");
    assert!(
        !stored.exists() || listing(&stored).is_empty(),
        "files of a deleted generation stayed: {:?}",
        listing(&stored)
    );
    assert_eq!(s.get(&format!("/api/v1/generations/{id}")).send().await.unwrap().status(), 404);
}

/// S12: every id a WebSocket subscribe names is a lookup, charged to the key's rate like a
/// request: a socket cannot make the server look up unknown ids without limit.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_lookups_are_charged_to_the_keys_rate() {
    use futures_util::{SinkExt, StreamExt};
    let dir = tempfile::tempdir().unwrap();
    let token = create_key(dir.path(), "slow", &["--rate", "0.01", "--burst", "5"]);
    let s = Server::start(dir.path(), &[("REELSMITH_REQUIRE_API_KEY", "true")]);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("{}/ws/generations", s.url.replace("http://", "ws://")).as_str(),
    )
    .unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    // The upgrade takes one token of the burst of 5.
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let ids: Vec<String> = (0..20).map(|k| format!("gen_unknown{k}")).collect();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"action": "subscribe", "ids": ids}).to_string().into(),
    ))
    .await
    .unwrap();
    let mut codes = vec![];
    while codes.len() < 20 {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("no reply").unwrap().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        codes.push(v["error"]["code"].as_str().unwrap_or_default().to_string());
    }
    let looked_up = codes.iter().filter(|c| *c == "not_found").count();
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    assert_eq!((looked_up, limited), (4, 16), "4 tokens left after the upgrade, then refused: {codes:?}");
}

/// S14: any token is a valid HTTP method, but metrics label only the standard ones: requests
/// with made-up methods cannot grow the label sets (and the scrape) without bound.
#[tokio::test(flavor = "multi_thread")]
async fn made_up_methods_do_not_grow_the_metric_labels() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    for k in 0..40 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{k}").as_bytes()).unwrap();
        let r = client.request(method, format!("{}/health", s.url)).send().await.unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let metrics = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("MADEUP"), "a made-up method reached the labels");
    assert!(
        metrics.lines().any(|l| l.starts_with("reelsmith_http_request_duration_seconds") && l.contains("other")),
        "made-up methods are counted together as `other`"
    );
}

/// The S3 spec (5,000 characters of text at the largest sizes on 4096² frames): bounded, it
/// still needs 0.5-0.8 GB of data, past the 384 MB the next test allows a render.
fn hungry_spec() -> Value {
    let w = "W".repeat(5_000);
    json!({"version": 1, "output": {"width": 4096, "height": 4096, "fps": 1,
    "quality": {"preset": "ultrafast"}}, "subtitles": {"enabled": false},
    "scenes": [
        {"duration": 1, "background": {"color": "#000000"}, "overlay": {"text": w, "font": {"size": 0.3}}},
        {"duration": 1, "title": w, "motion": {"type": "ken-burns", "zoom_from": 4, "zoom_to": 4}},
    ]})
}

/// The render processes (`reelsmith render-child`) the server `parent` has started.
fn render_processes(parent: u32) -> Vec<u32> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // `pid (comm) state ppid …`: the name may hold spaces, so read after its last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && cmdline.split(|b| *b == 0).any(|arg| arg == b"render-child") {
            found.push(pid);
        }
    }
    found
}

/// S3, S21.1: renders run in processes of their own. One that needs more memory than a render
/// may use fails alone, at once, with the reason and without retries, while another tenant's
/// render beside it finishes; one whose process dies (the OOM killer, a crash) costs its job an
/// attempt, never the server or another job. Before, either took the whole server down, and
/// every job it was running lost an attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_render_past_its_memory_limit_or_killed_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("REELSMITH_RENDER_MEMORY_LIMIT_MB", "384"), ("REELSMITH_RENDER_WORKERS", "2")];
    let (mut s, alice, mallory) = two_tenants(dir.path(), &env);
    s.token = Some(alice.clone());
    let (code, a) = s.submit(&json!({"spec": long_spec("alice", 4.0), "dedupe": false})).await;
    assert_eq!(code, 202, "{a}");
    s.token = Some(mallory);
    let (code, m) = s.submit(&json!({"spec": hungry_spec(), "dedupe": false})).await;
    assert_eq!(code, 202, "{m}");
    let fin = s.wait_final(m["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(fin["status"], "failed", "{fin}");
    assert_eq!(fin["error"]["code"], "out_of_memory", "{fin}");
    assert!(fin["error"]["message"].as_str().unwrap().contains("384 MB"), "{fin}");
    assert_eq!(fin["attempts"], 1, "more memory will not come with another attempt: {fin}");
    healthy(&s).await;
    s.token = Some(alice);
    let fin = s.wait_final(a["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(fin["status"], "succeeded", "{fin}");
    assert_eq!(fin["attempts"], 1, "{fin}");

    // A render process killed mid-render: that attempt fails, the next one renders the video.
    let (code, k) = s.submit(&json!({"spec": long_spec("killed", 10.0), "dedupe": false})).await;
    assert_eq!(code, 202, "{k}");
    let id = k["id"].as_str().unwrap();
    // Once it draws frames, every render process of the server goes (idle ones too: the pool
    // must notice them gone).
    let t = std::time::Instant::now();
    while s.status(id).await["progress"].as_f64().unwrap_or(0.0) < 10.0 {
        assert!(t.elapsed() < LIMIT, "the render never drew a frame: {}", s.status(id).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let victims = render_processes(s.pid());
    assert!(!victims.is_empty(), "no render process");
    for pid in &victims {
        let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        assert!(killed.success());
    }
    let fin = s.wait_final(id, LIMIT).await;
    assert_eq!(fin["status"], "succeeded", "{fin}");
    let history = fin["attempt_history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{fin}");
    assert_eq!(history[0]["outcome"], "failed", "{fin}");
    assert!(history[0]["error"].as_str().unwrap().contains("render process"), "{fin}");
    healthy(&s).await;
    // The ones left wait for renders, at most one per render worker.
    let left = render_processes(s.pid());
    assert!(left.iter().all(|pid| !victims.contains(pid)), "{left:?} / {victims:?}");
    assert!(left.len() <= 2, "render processes beyond the render workers: {left:?}");

    // The server dies mid-render: its render processes stop too (their stdin closes), idle or not.
    let (code, k) = s.submit(&json!({"spec": long_spec("orphaned", 30.0), "dedupe": false})).await;
    assert_eq!(code, 202, "{k}");
    let t = std::time::Instant::now();
    while s.status(k["id"].as_str().unwrap()).await["status"] != "running" {
        assert!(t.elapsed() < LIMIT, "the render never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let orphans = render_processes(s.pid());
    assert!(!orphans.is_empty());
    s.kill();
    let t = std::time::Instant::now();
    while let Some(pid) = orphans.iter().find(|pid| alive(**pid)) {
        assert!(t.elapsed() < LIMIT, "render process {pid} outlived its server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether process `pid` still runs (a zombie waiting for its new parent to reap it does not).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z")
}
