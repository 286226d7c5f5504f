//! The live stream of a render, read by FFmpeg as an HLS client while it grows.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{StatusCode, Uri, header};
use serde_json::json;

use crate::common::{decoded_sound, picture_sums, sound_match_db};
use crate::harness::*;

/// Six scenes with narration, Ken Burns, a crossfade and a fade to black: about 12 s at 320x180.
fn six_scenes() -> serde_json::Value {
    let colours = ["#204080", "#c03020", "#20a040", "#a0a020", "#6020a0", "#20a0a0"];
    let scenes: Vec<serde_json::Value> = colours
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"title": format!("Scene {}", i + 1), "background": {"gradient": {"from": c, "to": "#000000"}},
                   "narration": {"text": format!("This is scene number {}, spoken while it shows.", i + 1)},
                   "motion": {"type": "ken-burns", "zoom_to": 1.3},
                   "transition": {"type": if i % 2 == 0 { "crossfade" } else { "fade-black" }, "duration": 0.3}})
        })
        .collect();
    json!({"version": 1, "output": {"width": 320, "height": 180, "fps": 25, "quality": {"preset": "medium"}},
           "subtitles": {"style": "word-highlight"}, "scenes": scenes})
}

/// An HTTP proxy in front of `server` that keeps every playlist it hands out. Its first playlist
/// answer is `first`: what the server answered the test a moment before, while the render ran,
/// so the client starts on a playlist that is still growing however fast the render is. Every
/// other request goes to the server as it is.
async fn playlist_recorder(server: String, first: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let given = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback({
        let given = given.clone();
        move |uri: Uri| {
            let (given, client, server, first) = (given.clone(), client.clone(), server.clone(), first.clone());
            async move {
                let playlist = uri.path().ends_with("/stream.m3u8");
                let (status, content_type, body) = if playlist && given.lock().unwrap().is_empty() {
                    (StatusCode::OK, "application/vnd.apple.mpegurl".to_string(), first.into_bytes())
                } else {
                    let path = uri.path_and_query().map_or("/", |p| p.as_str());
                    let r = client.get(format!("{server}{path}")).send().await.unwrap();
                    let content_type = r.headers().get(header::CONTENT_TYPE).map_or("", |v| v.to_str().unwrap());
                    (r.status(), content_type.to_string(), r.bytes().await.unwrap().to_vec())
                };
                if playlist {
                    given.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                }
                (status, [(header::CONTENT_TYPE, content_type)], body)
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), given)
}

#[tokio::test(flavor = "multi_thread")]
async fn ffmpeg_plays_the_live_stream_while_it_grows_and_gets_the_mp4s_pictures_and_sound() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let submitted = Instant::now();
    let (code, created) = s.submit(&json!({"spec": six_scenes()})).await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let playlist_url = format!("{}/api/v1/generations/{id}/stream.m3u8", s.url);

    // Asked for at once, the playlist answers when its first piece is stored, before the end.
    let first = s.get(&format!("/api/v1/generations/{id}/stream.m3u8")).send().await.unwrap();
    let first_playable = submitted.elapsed();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let text = first.text().await.unwrap();
    assert!(text.contains("#EXT-X-MAP:URI=\"stream/init.mp4\"") && text.contains("stream/seg-0.m4s"), "{text}");
    let pieces_then = text.matches("#EXTINF").count();
    assert!(!text.contains("#EXT-X-ENDLIST"), "the first playlist came after the render's end: {text}");

    // FFmpeg follows the growing playlist (from its first piece) to its end, copying what it gets.
    let (proxy, given) = playlist_recorder(s.url.clone(), text.clone()).await;
    let copied = dir.path().join("live.mp4");
    let ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-live_start_index", "0", "-i"])
        .arg(playlist_url.replace(&s.url, &proxy))
        .args(["-c", "copy", "-f", "mp4", "-y"])
        .arg(&copied)
        .output();
    let done =
        tokio::time::timeout(Duration::from_secs(120), ffmpeg).await.expect("ffmpeg followed the stream").unwrap();
    assert!(done.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&done.stderr));
    let g = s.wait_final(&id, Duration::from_secs(120)).await;
    assert_eq!(g["status"], "succeeded", "{g}");
    let report: serde_json::Value =
        s.get(&format!("/api/v1/generations/{id}/report")).send().await.unwrap().json().await.unwrap();

    let last = s.get(&format!("/api/v1/generations/{id}/stream.m3u8")).send().await.unwrap().text().await.unwrap();
    assert!(last.trim_end().ends_with("#EXT-X-ENDLIST"), "{last}");
    let pieces = last.matches("#EXTINF").count();
    assert!(pieces >= 6, "{last}");
    assert_eq!(Some(pieces as u64), report["segments_total"].as_u64(), "a piece per segment");
    assert!(pieces_then < pieces, "the first playlist ({pieces_then} pieces) came before the last ({pieces})");
    // FFmpeg read the playlist again as it grew, until the server's own ended one.
    let given = given.lock().unwrap().clone();
    assert!(given.len() >= 2, "FFmpeg asked for the playlist {} time(s)", given.len());
    assert_eq!(given.last().unwrap(), &last, "FFmpeg's last playlist is the finished one");
    let counts: Vec<usize> = given.iter().map(|p| p.matches("#EXTINF").count()).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]) && counts[0] < pieces, "pieces per playlist read: {counts:?}");
    eprintln!(
        "first playable piece {first_playable:?} after submission; {pieces_then} then, {pieces} in all; \
         FFmpeg read the playlist {} times ({counts:?} pieces)",
        given.len()
    );

    // What FFmpeg played is the MP4: the same pictures, frame for frame, and the same sound in step.
    let mp4 = dir.path().join("final.mp4");
    let bytes = s.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap().bytes().await.unwrap();
    std::fs::write(&mp4, &bytes).unwrap();
    let (live, whole) = (copied.to_str().unwrap(), mp4.to_str().unwrap());
    assert_eq!(picture_sums(live), picture_sums(whole), "frame-exact");
    let snr = sound_match_db(&decoded_sound(live), &decoded_sound(whole));
    assert!(snr > 30.0, "live sound in step with the MP4's: {snr:.1} dB");

    // Pieces: only the engine's names; each with a long-lived ETag.
    let init = s.get(&format!("/api/v1/generations/{id}/stream/init.mp4")).send().await.unwrap();
    assert_eq!(init.status(), 200);
    assert_eq!(init.headers()["content-type"], "video/mp4");
    assert!(init.headers().contains_key("etag"));
    for bad in ["video.mp4", "seg-1.mp4", "..%2Fvideo.mp4", "seg-99.m4s"] {
        let r = s.get(&format!("/api/v1/generations/{id}/stream/{bad}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }
    let unknown = s.get("/api/v1/generations/gen_nope/stream.m3u8").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}
