//! Live progress: workers publish to a hub; clients follow one generation over SSE or many over
//! one WebSocket. A client first gets the stored status, then every change; SSE ends after the
//! final state.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::auth::Caller;
use crate::{ApiResult, AppState, api};

/// One change of one generation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: String,
    /// queued, running, succeeded, failed, cancelled
    pub status: String,
    pub progress: f64,
    pub stage: Option<String>,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The API key the generation belongs to: followers see only their own.
    #[serde(skip)]
    pub owner: Option<String>,
}

impl Event {
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// Fan-out of events to every follower in this process, plus each running generation's latest
/// event (fresher than the store, which is written once a second). With Redis, events also go
/// to every other node and theirs come here ([`bridge`]).
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Event>,
    latest: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Event>>>,
    /// Events to send to the other nodes (set by [`bridge`]).
    outbox: std::sync::Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Event>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self { tx: broadcast::channel(4096).0, latest: Default::default(), outbox: Default::default() }
    }
}

/// An event on the wire between nodes: the owner travels too (it is not shown to clients).
#[derive(Serialize, Deserialize)]
struct Relayed {
    node: String,
    event: Event,
    owner: Option<String>,
}

/// Connects the hub to the other nodes through Redis: this node's events are published, the
/// others' are handed to this node's followers. Runs until `stop`.
pub fn bridge(
    hub: &Hub,
    bus: std::sync::Arc<reelsmith_store::RedisBus>,
    node: std::sync::Arc<str>,
    connected: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    if hub.outbox.set(tx).is_err() {
        return vec![]; // bridged already
    }
    let publisher = {
        let (bus, node, stop) = (bus.clone(), node.clone(), stop.clone());
        tokio::spawn(async move {
            // After a failed publish, events are dropped for a second rather than each waiting
            // out Redis's timeout (and piling up behind it). Lost events are fine: followers
            // also read the store every second.
            let mut quiet_until = tokio::time::Instant::now();
            loop {
                let ev = tokio::select! {
                    ev = rx.recv() => match ev { Some(ev) => ev, None => return },
                    _ = stop.cancelled() => return,
                };
                if tokio::time::Instant::now() < quiet_until {
                    continue;
                }
                let owner = ev.owner.clone();
                let msg = Relayed { node: node.to_string(), event: ev, owner };
                let bytes = serde_json::to_vec(&msg).unwrap_or_default();
                if let Err(e) = bus.publish(&bytes).await {
                    tracing::debug!(error = %e, "cannot relay an event");
                    quiet_until = tokio::time::Instant::now() + Duration::from_secs(1);
                }
            }
        })
    };
    let subscriber = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let on_event = move |bytes: &[u8]| {
                let Ok(m) = serde_json::from_slice::<Relayed>(bytes) else { return };
                if *m.node != *node {
                    let mut ev = m.event;
                    ev.owner = m.owner;
                    hub.publish_local(ev);
                }
            };
            let on_connected = move |up: bool| {
                connected.store(up, std::sync::atomic::Ordering::Relaxed);
                if up {
                    tracing::info!("following other nodes' progress through redis");
                } else {
                    tracing::warn!("lost redis; progress of other nodes comes from the database until it is back");
                }
            };
            bus.subscribe(stop, on_event, on_connected).await
        })
    };
    vec![publisher, subscriber]
}

impl Hub {
    pub fn publish(&self, e: Event) {
        if let Some(out) = self.outbox.get() {
            let _ = out.send(e.clone());
        }
        self.publish_local(e);
    }

    /// To this node's followers only.
    fn publish_local(&self, e: Event) {
        {
            let mut latest = self.latest.lock().expect("hub");
            if e.status == "running" {
                latest.insert(e.id.clone(), e.clone());
            } else {
                latest.remove(&e.id);
            }
        }
        let _ = self.tx.send(e); // no followers is fine
    }
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
    pub fn forget(&self, id: &str) {
        self.latest.lock().expect("hub").remove(id);
    }
    pub fn latest(&self, id: &str) -> Option<Event> {
        self.latest.lock().expect("hub").get(id).cloned()
    }
}

async fn snapshot(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Event> {
    Ok(api::event_of(&api::visible(state, caller, id).await?))
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

/// Open event streams per key: one key cannot hold the server's connections (each SSE follower
/// also looks at the store once a second).
#[derive(Clone, Default)]
pub struct StreamCounts(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>);

/// One open stream, counted until dropped.
pub struct StreamSlot(StreamCounts, String);

impl StreamCounts {
    pub fn open(&self, caller: &Caller, max: usize) -> ApiResult<StreamSlot> {
        let key = caller.key_id().unwrap_or_default();
        let mut m = self.0.lock().expect("streams lock");
        let n = m.entry(key.clone()).or_default();
        if *n >= max {
            return Err(crate::ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "this key has {max} event streams open already; close one, or follow many generations over one WebSocket"
                ),
            ));
        }
        *n += 1;
        Ok(StreamSlot(self.clone(), key))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut m = self.0.0.lock().expect("streams lock");
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
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
