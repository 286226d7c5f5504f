//! Redis as the scale-out accelerator: the shared stage-cache tier ([`RedisTier`]) and the
//! cross-node progress bus ([`RedisBus`]). Neither holds anything that cannot be lost: cache
//! entries carry TTLs (and Redis's own `maxmemory` eviction bounds the whole), and events are
//! live notifications whose durable copy is in the database.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tiers::{CacheTier, read_entry, valid_file_name, valid_tier_key};
use crate::{Result, StoreError};

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Redis(e.to_string())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:6379/0`
    pub url: String,
    /// Every key and channel starts with it, so several deployments (or tests) share a server.
    pub prefix: String,
    /// A cache entry unused this long expires (each hit renews it).
    pub cache_ttl_secs: u64,
    /// Larger entries are not shared (the node keeps them on its own disk).
    pub cache_max_entry_mb: u64,
    /// Connect, read and write timeout: a hung Redis must not hang renders.
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "reelsmith".into(),
            cache_ttl_secs: 7 * 24 * 3600,
            cache_max_entry_mb: 256,
            timeout_ms: 2000,
        }
    }
}

/// Stage-cache entries as Redis hashes (file name → bytes) under `<prefix>:cache:<key>`.
pub struct RedisTier {
    client: redis::Client,
    idle: Mutex<Vec<redis::Connection>>,
    prefix: String,
    ttl_secs: u64,
    max_entry_bytes: u64,
    timeout: Duration,
}

impl RedisTier {
    pub fn new(c: &RedisConfig) -> Result<Self> {
        Ok(Self {
            client: redis::Client::open(c.url.as_str())?,
            idle: Mutex::new(vec![]),
            prefix: c.prefix.clone(),
            ttl_secs: c.cache_ttl_secs.max(1),
            max_entry_bytes: c.cache_max_entry_mb * 1024 * 1024,
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
        })
    }

    fn key(&self, key: &str) -> Result<String> {
        valid_tier_key(key)?;
        Ok(format!("{}:cache:{key}", self.prefix))
    }

    /// Runs `f` on a pooled connection; a connection that saw an error is dropped, not reused.
    fn with_conn<T>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T> {
        let pooled = self.idle.lock().map_err(|_| StoreError::Redis("pool lock poisoned".into()))?.pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = self.client.get_connection_with_timeout(self.timeout)?;
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                c
            }
        };
        let out = f(&mut conn)?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < 8
        {
            idle.push(conn);
        }
        Ok(out)
    }
}

impl RedisTier {
    /// Redis's memory bound and eviction policy (`INFO memory`): 0 means unbounded, in which case
    /// only the entries' TTLs limit what the cache holds.
    pub fn memory_limit(&self) -> Result<(u64, String)> {
        let info: String = self.with_conn(|c| redis::cmd("INFO").arg("memory").query(c))?;
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim)
        };
        let max = field("maxmemory").and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((max, field("maxmemory_policy").unwrap_or("unknown").to_string()))
    }
}

impl CacheTier for RedisTier {
    fn describe(&self) -> String {
        let info = self.client.get_connection_info();
        format!("redis://{} ({}:cache:*)", info.addr(), self.prefix)
    }

    fn fetch(&self, key: &str, dest: &Path) -> Result<bool> {
        let k = self.key(key)?;
        let (files, _): (Vec<(String, Vec<u8>)>, i64) = self.with_conn(|c| {
            // Reading renews the TTL: entries in use stay, unused ones expire.
            redis::pipe().atomic().hgetall(&k).expire(&k, self.ttl_secs as i64).query(c)
        })?;
        if files.is_empty() {
            return Ok(false);
        }
        for (name, bytes) in files {
            if !valid_file_name(&name) {
                return Err(StoreError::Corrupt(format!("cache entry {key} has a file named {name:?}")));
            }
            std::fs::write(dest.join(name), bytes)?;
        }
        Ok(true)
    }

    fn store(&self, key: &str, src: &Path) -> Result<bool> {
        let k = self.key(key)?;
        let Some(files) = read_entry(src, self.max_entry_bytes)? else {
            return Ok(false);
        };
        if files.is_empty() {
            return Ok(false);
        }
        self.with_conn(|c| {
            // One transaction: readers see the old entry or the new one, never a mix.
            let mut p = redis::pipe();
            p.atomic().del(&k).ignore();
            p.hset_multiple(&k, &files).ignore();
            p.expire(&k, self.ttl_secs as i64).ignore();
            p.query::<()>(c)
        })?;
        Ok(true)
    }

    fn contains(&self, key: &str) -> Result<bool> {
        let k = self.key(key)?;
        Ok(self.with_conn(|c| redis::cmd("EXISTS").arg(&k).query::<i64>(c))? > 0)
    }

    fn ping(&self) -> Result<()> {
        self.with_conn(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(())
    }
}

/// Progress events across nodes: every node publishes its workers' events on one channel and
/// hands the others' to its own followers.
pub struct RedisBus {
    client: redis::Client,
    channel: String,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    timeout: Duration,
}

impl RedisBus {
    pub fn new(c: &RedisConfig) -> Result<Self> {
        Ok(Self {
            client: redis::Client::open(c.url.as_str())?,
            channel: format!("{}:events", c.prefix),
            conn: Default::default(),
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
        })
    }

    pub async fn publish(&self, payload: &[u8]) -> Result<()> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let cfg = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout));
            *guard = Some(self.client.get_multiplexed_async_connection_with_config(&cfg).await?);
        }
        let conn = guard.as_mut().expect("connection just set");
        let r: redis::RedisResult<i64> = redis::cmd("PUBLISH").arg(&self.channel).arg(payload).query_async(conn).await;
        if r.is_err() {
            *guard = None; // reconnect on the next event
        }
        r?;
        Ok(())
    }

    /// Calls `on_event` with every event published on the channel (by any node), for as long as
    /// `stop` is not cancelled; reconnects with backoff while Redis is away.
    pub async fn subscribe(
        &self,
        stop: tokio_util::sync::CancellationToken,
        on_event: impl Fn(&[u8]) + Send + Sync + 'static,
        on_connected: impl Fn(bool) + Send + Sync + 'static,
    ) {
        use futures_util::StreamExt;
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let sub = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            match tokio::time::timeout(self.timeout, sub).await {
                Ok(Ok(ps)) => {
                    on_connected(true);
                    backoff = Duration::from_millis(100);
                    let mut stream = ps.into_on_message();
                    loop {
                        tokio::select! {
                            m = stream.next() => match m {
                                Some(m) => on_event(m.get_payload_bytes()),
                                None => break, // connection lost
                            },
                            _ = stop.cancelled() => return,
                        }
                    }
                    on_connected(false);
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "redis events: cannot subscribe"),
                Err(_) => tracing::debug!("redis events: subscribe timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::run_tier_suite;

    /// The Redis that runs on this machine and in CI; each test uses its own key prefix.
    fn config() -> RedisConfig {
        RedisConfig {
            url: std::env::var("REELSMITH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            prefix: format!("test-{}", crate::new_id("r")),
            cache_max_entry_mb: 1,
            ..Default::default()
        }
    }

    fn cleanup(c: &RedisConfig) {
        let client = redis::Client::open(c.url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", c.prefix)).query(&mut conn).unwrap();
        for k in keys {
            let _: i64 = redis::cmd("DEL").arg(k).query(&mut conn).unwrap();
        }
    }

    #[test]
    fn redis_tier_passes_the_tier_suite() {
        let c = config();
        let t = RedisTier::new(&c).unwrap();
        let dir = tempfile::tempdir().unwrap();
        run_tier_suite(&t, dir.path(), 1024 * 1024);
        // Entries carry a TTL, so Redis memory stays bounded even without eviction settings.
        let client = redis::Client::open(c.url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:cache:*", c.prefix)).query(&mut conn).unwrap();
        assert!(!keys.is_empty());
        for k in keys {
            let ttl: i64 = redis::cmd("TTL").arg(&k).query(&mut conn).unwrap();
            assert!(ttl > 0 && ttl <= c.cache_ttl_secs as i64, "{k} has ttl {ttl}");
        }
        cleanup(&c);
    }

    #[test]
    fn memory_bound_and_policy_are_read() {
        let t = RedisTier::new(&config()).unwrap();
        let (_, policy) = t.memory_limit().unwrap();
        // One of Redis's policies (noeviction, allkeys-lru, volatile-ttl…), not a parse failure.
        assert!(policy != "unknown" && policy.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{policy}");
    }

    #[test]
    fn an_unreachable_redis_is_an_error_not_a_hang() {
        // Port 1 refuses at once on loopback; the timeout bounds any other failure.
        let c = RedisConfig { url: "redis://127.0.0.1:1/0".into(), ..config() };
        let t = RedisTier::new(&c).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(t.fetch("abc", dir.path()), Err(StoreError::Redis(_))));
        assert!(t.ping().is_err());
    }

    #[tokio::test]
    async fn events_reach_every_subscriber() {
        let c = config();
        let a = std::sync::Arc::new(RedisBus::new(&c).unwrap());
        let b = RedisBus::new(&c).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let (ctx, mut connected) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let sub = {
            let (a, stop) = (a.clone(), stop.clone());
            tokio::spawn(async move {
                a.subscribe(
                    stop,
                    move |p| {
                        let _ = tx.send(p.to_vec());
                    },
                    move |up| {
                        let _ = ctx.send(up);
                    },
                )
                .await
            })
        };
        assert_eq!(connected.recv().await, Some(true));
        b.publish(b"{\"id\":\"gen_1\"}").await.unwrap();
        b.publish(b"{\"id\":\"gen_2\"}").await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), b"{\"id\":\"gen_1\"}");
        assert_eq!(rx.recv().await.unwrap(), b"{\"id\":\"gen_2\"}");
        // Another prefix is another channel.
        let other = RedisBus::new(&RedisConfig { prefix: format!("{}-other", c.prefix), ..c.clone() }).unwrap();
        other.publish(b"elsewhere").await.unwrap();
        b.publish(b"last").await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), b"last", "events of other prefixes are not delivered");
        stop.cancel();
        sub.await.unwrap();
    }
}
