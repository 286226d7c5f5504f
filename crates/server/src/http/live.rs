//! A generation's live stream: `GET /api/v1/generations/{id}/stream.m3u8` (an HLS playlist of
//! fragmented MP4 pieces that grows while the render runs and ends with `#EXT-X-ENDLIST`) and
//! its pieces under `stream/`. A player may ask for the playlist right after submitting: the
//! request waits until the first piece is stored.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast;

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::submit::visible;

/// How long a playlist request waits for the first piece of a queued or running render.
const FIRST_PIECE_WAIT: Duration = Duration::from_secs(20);
/// How often it looks meanwhile, besides when this node stores the playlist (a render on
/// another node is seen this way).
const POLL: Duration = Duration::from_millis(200);
/// A playlist is a few lines per segment: anything larger is not ours.
const MAX_PLAYLIST_BYTES: u64 = 1 << 20;

pub async fn playlist(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let key = format!("{id}/live/{}", reelsmith_engine::LIVE_PLAYLIST);
    let deadline = Instant::now() + FIRST_PIECE_WAIT;
    // Subscribed before the first look, so a playlist stored in between is not missed.
    let mut stored = state.hub.subscribe_live();
    loop {
        let g = visible(&state, &caller, &id).await?;
        if let Some(len) = state.artifacts.size(&key).await? {
            if len > MAX_PLAYLIST_BYTES {
                return Err(ApiError::internal(format!("the live playlist of {id} is {len} bytes")));
            }
            let body = Body::from_stream(state.artifacts.read_range(&key, 0, len).await?);
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl"));
            // It grows until the render ends: players must ask again.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            return Ok((StatusCode::OK, h, body).into_response());
        }
        let why = if g.state.is_final() {
            Some(format!("generation {id} is {} and has no live stream", g.state.as_str()))
        } else if !state.config.live_stream {
            Some("live streams are off on this server (live_stream = false)".to_string())
        } else if Instant::now() >= deadline {
            Some(format!("generation {id} is {} and no piece of it is ready yet; ask again", g.state.as_str()))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "no_stream", why));
        }
        stored_or_poll(&mut stored, &id, POLL).await;
    }
}

/// Returns when this node tells that generation `id`'s playlist was stored (or when it cannot
/// tell: too many notices missed), or after `poll`.
async fn stored_or_poll(stored: &mut broadcast::Receiver<String>, id: &str, poll: Duration) {
    let ours = async {
        loop {
            match stored.recv().await {
                Ok(other) if other != id => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    };
    let _ = tokio::time::timeout(poll, ours).await;
}

/// The content type of a piece name the engine writes, or `None` for any other name.
fn piece_type(name: &str) -> Option<&'static str> {
    if name == "init.mp4" {
        return Some("video/mp4");
    }
    let n = name.strip_prefix("seg-")?.strip_suffix(".m4s")?;
    (!n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit())).then_some("video/iso.segment")
}

pub async fn piece(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(content_type) = piece_type(&name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{name:?} is not a piece of a live stream"),
        ));
    };
    visible(&state, &caller, &id).await?;
    crate::http::download::serve(&state, &format!("{id}/live/{name}"), "live", content_type, &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits poll once an hour: only a notice can end them within the test's bounds.
    #[tokio::test]
    async fn a_waiting_playlist_request_wakes_when_its_playlist_is_stored_not_for_others() {
        let hub = crate::events::Hub::default();
        let hour = Duration::from_secs(3600);
        let woken = Duration::from_secs(30);
        let mut rx = hub.subscribe_live();
        hub.live_stored("gen_other");
        let other = tokio::time::timeout(Duration::from_millis(300), stored_or_poll(&mut rx, "gen_mine", hour)).await;
        assert!(other.is_err(), "another generation's playlist does not wake it");

        let notifier = hub.clone();
        let later = tokio::spawn(async move {
            notifier.live_stored("gen_other");
            notifier.live_stored("gen_mine");
        });
        tokio::time::timeout(woken, stored_or_poll(&mut rx, "gen_mine", hour))
            .await
            .expect("woken when its own playlist is stored");
        later.await.unwrap();

        // Missed notices (a lagging receiver) mean a look at the store at once.
        for _ in 0..300 {
            hub.live_stored("gen_other");
        }
        tokio::time::timeout(woken, stored_or_poll(&mut rx, "gen_mine", hour)).await.expect("woken by missed notices");
    }

    #[test]
    fn only_the_engines_piece_names_are_served() {
        assert_eq!(piece_type("init.mp4"), Some("video/mp4"));
        assert_eq!(piece_type("seg-0.m4s"), Some("video/iso.segment"));
        assert_eq!(piece_type("seg-123456.m4s"), Some("video/iso.segment"));
        for bad in
            ["seg-.m4s", "seg-1234567.m4s", "seg-1.mp4", "../video.mp4", "stream.m3u8", "seg-1a.m4s", "video.mp4"]
        {
            assert_eq!(piece_type(bad), None, "{bad}");
        }
    }
}
