//! Following generations: SSE per generation and a WebSocket for many.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::access::Caller;
use crate::error::ApiResult;
use crate::events::{Event, StreamSlot};
use crate::state::AppState;

async fn snapshot(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Event> {
    Ok(crate::events::event_of(&crate::submit::visible(state, caller, id).await?))
}

/// May `caller` see events of a generation owned by `owner`?
fn may_see(caller: &Caller, owner: &Option<String>) -> bool {
    caller.0.is_none() || caller.key_id() == *owner
}

/// `GET /api/v1/generations/{id}/events`: `status` events until the generation finishes.
pub async fn sse(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let slot = state.streams.open(&caller, state.config.max_streams_per_key)?;
    // Subscribe before reading the snapshot, so no change falls between the two.
    let rx = state.hub.subscribe();
    let first = snapshot(&state, &caller, &id).await?;
    let follow =
        Follow { rx, id, state, caller, pending: Some(first), last: None, last_attempt: 0, done: false, _slot: slot };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let ev = f.next().await?;
        let sse = SseEvent::default().event("status").json_data(&ev).unwrap_or_default();
        Some((Ok(sse), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One SSE follower: events from this process's hub, plus a look at the store every second, so
/// progress made by workers in other processes (API-only nodes, scale-out) still arrives.
struct Follow {
    rx: broadcast::Receiver<Event>,
    id: String,
    state: AppState,
    caller: Caller,
    pending: Option<Event>,
    last: Option<(String, f64, Option<String>)>,
    last_attempt: u32,
    done: bool,
    /// Counted as one of its key's open streams while it lives.
    _slot: StreamSlot,
}

const STORE_POLL: Duration = Duration::from_secs(1);

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let ev = match self.pending.take() {
            Some(ev) => ev,
            None => {
                let mut poll_at = tokio::time::Instant::now() + STORE_POLL;
                loop {
                    match tokio::time::timeout_at(poll_at, self.rx.recv()).await {
                        Ok(Ok(ev)) if ev.id == self.id => break ev,
                        Ok(Ok(_)) => continue,
                        Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                        // Fell behind, or no news of it for a second: read the store.
                        Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => {
                            poll_at = tokio::time::Instant::now() + STORE_POLL;
                            let ev = snapshot(&self.state, &self.caller, &self.id).await.ok()?;
                            // The store is written about once a second: a snapshot behind the
                            // last hub event of the same state would move progress backwards.
                            let behind = ev.attempt == self.last_attempt
                                && self.last.as_ref().is_some_and(|(s, p, _)| *s == ev.status && ev.progress < *p);
                            if !behind
                                && self.last.as_ref() != Some(&(ev.status.clone(), ev.progress, ev.stage.clone()))
                            {
                                break ev;
                            }
                        }
                    }
                }
            }
        };
        self.last = Some((ev.status.clone(), ev.progress, ev.stage.clone()));
        self.last_attempt = ev.attempt;
        self.done = ev.is_final();
        Some(ev)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    action: String,
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all: bool,
}

/// `GET /ws/generations`: send `{"action":"subscribe","ids":[…]}` (or `"all":true`) and
/// `{"action":"unsubscribe","ids":[…]}`; receive events as JSON text messages.
pub async fn websocket(
    State(state): State<AppState>,
    caller: Caller,
    ws: WebSocketUpgrade,
) -> ApiResult<impl IntoResponse> {
    let slot = state.streams.open(&caller, state.config.max_streams_per_key)?;
    // Commands are small; a 64 MiB message of ids is an attack.
    Ok(ws.max_message_size(MAX_WS_MESSAGE_BYTES).max_frame_size(MAX_WS_MESSAGE_BYTES).on_upgrade(
        move |socket| async move {
            follow(socket, state, caller).await;
            drop(slot);
        },
    ))
}

/// Largest WebSocket command accepted.
const MAX_WS_MESSAGE_BYTES: usize = 64 * 1024;

/// Most ids one socket follows (each subscribe looks each id up).
const MAX_WS_IDS: usize = 1000;

async fn follow(socket: WebSocket, state: AppState, caller: Caller) {
    let (mut tx, mut rx_ws) = socket.split();
    let mut events = state.hub.subscribe();
    let mut ids: HashSet<String> = HashSet::new();
    let mut all = false;
    loop {
        tokio::select! {
            msg = rx_ws.next() => {
                let Some(Ok(msg)) = msg else { break };
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let reply = match serde_json::from_str::<Command>(&text) {
                    Ok(c) if c.action == "subscribe" && ids.len() + c.ids.len() > MAX_WS_IDS => {
                        vec![serde_json::json!({"error": {"code": "too_many_ids", "message":
                            format!("a socket follows at most {MAX_WS_IDS} ids (or subscribe with \"all\": true)")}}).to_string()]
                    }
                    Ok(c) if c.action == "subscribe" => {
                        all |= c.all;
                        let mut out = vec![];
                        for id in c.ids {
                            // Each id is a lookup: charged to the key's rate like a request.
                            if let Some(key) = &caller.0 && let Err(wait) = state.limiter.take(key) {
                                out.push(serde_json::json!({"error": {"code": "rate_limited", "id": id, "message":
                                    format!("rate limit of {} lookups/s exceeded for key '{}'; retry in {wait:.1} s", key.rate_per_s, key.name)}}).to_string());
                                continue;
                            }
                            match snapshot(&state, &caller, &id).await {
                                Ok(ev) => { out.push(serde_json::to_string(&ev).unwrap_or_default()); ids.insert(id); }
                                Err(e) => out.push(serde_json::json!({"error": {"code": e.code, "message": e.message}}).to_string()),
                            }
                        }
                        out
                    }
                    Ok(c) if c.action == "unsubscribe" => {
                        for id in &c.ids { ids.remove(id); }
                        if c.all { all = false; }
                        vec![]
                    }
                    Ok(c) => vec![serde_json::json!({"error": {"code": "bad_command",
                        "message": format!("unknown action '{}'; use subscribe or unsubscribe", c.action)}}).to_string()],
                    Err(e) => vec![serde_json::json!({"error": {"code": "bad_command", "message": e.to_string()}}).to_string()],
                };
                for m in reply {
                    if tx.send(Message::Text(m.into())).await.is_err() { return; }
                }
            }
            ev = events.recv() => {
                match ev {
                    Ok(ev) if (all && may_see(&caller, &ev.owner)) || ids.contains(&ev.id) => {
                        if tx.send(Message::Text(serde_json::to_string(&ev).unwrap_or_default().into())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for id in ids.clone() {
                            if let Ok(ev) = snapshot(&state, &caller, &id).await {
                                let _ = tx.send(Message::Text(serde_json::to_string(&ev).unwrap_or_default().into())).await;
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
