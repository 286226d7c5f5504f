//! Wake-ups: one LISTEN connection per process turns `pg_notify` from enqueues into wake-ups
//! of idle workers, and survives the database restarting.

use super::*;

/// Per-queue notification counters. A claim that finds nothing records the counter it saw
/// before looking; `wait_for_work` returns as soon as the counter moves past it, so a
/// notification that lands between the empty claim and the wait is not lost.
#[derive(Default)]
pub(super) struct Wakeups {
    pub(super) queues: Mutex<HashMap<String, QueueWake>>,
    /// Times the listener re-established LISTEN after losing its connection.
    pub(super) reconnects: std::sync::atomic::AtomicU64,
}

pub(super) struct QueueWake {
    pub(super) epoch: watch::Sender<u64>,
    /// The newest epoch at which a claim found this queue empty.
    pub(super) idle_at: u64,
}

impl Wakeups {
    fn with<T>(&self, queue: &str, f: impl FnOnce(&mut QueueWake) -> T) -> T {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let entry =
            queues.entry(queue.to_string()).or_insert_with(|| QueueWake { epoch: watch::Sender::new(0), idle_at: 0 });
        f(entry)
    }

    pub(super) fn epoch(&self, queue: &str) -> u64 {
        self.with(queue, |w| *w.epoch.borrow())
    }

    pub(super) fn note_empty(&self, queue: &str, epoch: u64) {
        self.with(queue, |w| w.idle_at = w.idle_at.max(epoch));
    }

    pub(super) fn subscribe(&self, queue: &str) -> (watch::Receiver<u64>, u64) {
        self.with(queue, |w| (w.epoch.subscribe(), w.idle_at))
    }

    /// Only queues someone claims from or waits on have an entry; others need no wake-up.
    fn bump(&self, queue: &str) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = queues.get(queue) {
            w.epoch.send_modify(|e| *e += 1);
        }
    }

    /// After the listener was disconnected: notifications may have been missed, so everyone
    /// looks again.
    fn bump_all(&self) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for w in queues.values() {
            w.epoch.send_modify(|e| *e += 1);
        }
    }
}

pub(super) async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Feeds notifications to the waiters until the store is dropped, reconnecting with backoff
/// whenever the connection drops (the database restarted, say).
pub(super) async fn listen_loop(
    pool: PgPool,
    first: PgListener,
    channel: String,
    wake: Arc<Wakeups>,
    stop: CancellationToken,
) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let mut listener = match current.take() {
            Some(l) => l,
            None => match listen(&pool, &channel).await {
                Ok(l) => {
                    tracing::info!(%channel, "job notifications listening again");
                    backoff = Duration::from_millis(100);
                    wake.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    wake.bump_all();
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "job listener cannot connect");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = listener.try_recv() => match r {
                    Ok(Some(n)) => wake.bump(n.payload()),
                    // The connection dropped and was re-established: what was sent meanwhile is gone.
                    Ok(None) => {
                        wake.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        wake.bump_all();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "job listener lost its connection");
                        wake.bump_all();
                        break;
                    }
                },
            }
        }
        // A connection that fails as soon as it is made must not turn this into a busy loop.
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    pool.close().await;
}
