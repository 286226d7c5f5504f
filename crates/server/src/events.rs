//! Live progress: workers publish to a hub; clients follow one generation over SSE or many over
//! one WebSocket. A client first gets the stored status, then every change; SSE ends after the
//! final state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reelsmith_store::{GenerationRecord, JobState};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};

use crate::access::Caller;
use crate::error::ApiResult;

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
    /// A running generation's progress (0-1, kept to three decimals) at `stage`.
    pub fn running(id: &str, owner: Option<String>, attempt: u32, stage: &str, progress: f64) -> Self {
        Self {
            id: id.to_string(),
            status: "running".into(),
            progress: (progress * 1000.0).round() / 1000.0,
            stage: Some(stage.to_string()),
            attempt,
            error: None,
            owner,
        }
    }

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
    /// Ids of generations whose live playlist was just stored by this node, so a player's
    /// request waiting for the first piece answers at once (other nodes' waiters poll).
    live: broadcast::Sender<String>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
            latest: Default::default(),
            outbox: Default::default(),
            live: broadcast::channel(256).0,
        }
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
    /// Generation `id`'s live playlist was stored (this node only).
    pub fn live_stored(&self, id: &str) {
        let _ = self.live.send(id.to_string()); // no waiters is fine
    }
    pub fn subscribe_live(&self) -> broadcast::Receiver<String> {
        self.live.subscribe()
    }
    pub fn forget(&self, id: &str) {
        self.latest.lock().expect("hub").remove(id);
    }
    pub fn latest(&self, id: &str) -> Option<Event> {
        self.latest.lock().expect("hub").get(id).cloned()
    }
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
            return Err(crate::error::ApiError::new(
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

/// The live-progress view of a stored generation.
pub fn event_of(g: &GenerationRecord) -> Event {
    Event {
        id: g.id.clone(),
        status: g.state.as_str().into(),
        progress: if g.state == JobState::Succeeded { 1.0 } else { g.progress },
        stage: g.stage.clone(),
        attempt: g.attempts,
        error: match g.state {
            JobState::Failed => g.error_message.clone().or_else(|| g.last_error.clone()),
            _ => None,
        },
        owner: g.api_key_id.clone(),
    }
}

/// Remote talks waiting for their provider's webhook, by generation id.
pub type Waits = Arc<Mutex<HashMap<String, Arc<Notify>>>>;
