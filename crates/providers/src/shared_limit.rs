//! A request-rate limit shared by every node through Redis: GCRA (the generic cell-rate
//! algorithm) in one Lua script, on Redis's own clock, so nodes with different clocks agree.
//! Each call reserves the next slot and learns how long to wait for it. When Redis cannot be
//! reached the gate falls back to its own in-process bucket (a node then limits only itself).

use std::time::Duration;

/// Reserves a slot: returns the milliseconds to wait before the call may go.
/// KEYS[1]: the limiter's key; ARGV[1]: milliseconds between calls; ARGV[2]: burst (calls).
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - (burst - 1) * interval - now
if wait < 0 then wait = 0 end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', next_tat - now + burst * interval)
return wait
";

pub struct SharedLimit {
    client: redis::Client,
    key: String,
    interval_ms: u64,
    burst: u32,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl SharedLimit {
    /// `rpm` calls a minute for everything using `key` (`{prefix}:ratelimit:{provider}`), at most
    /// `burst` at once after a quiet spell.
    pub fn new(redis_url: &str, key: String, rpm: u32, burst: u32) -> Result<Self, String> {
        let client = redis::Client::open(redis_url).map_err(|e| format!("redis: {e}"))?;
        Ok(Self {
            client,
            key,
            interval_ms: (60_000 / u64::from(rpm.max(1))).max(1),
            burst: burst.max(1),
            conn: Default::default(),
        })
    }

    /// How long to wait for the reserved slot (an error: Redis is unreachable).
    pub async fn reserve(&self) -> Result<Duration, String> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let cfg = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(1)));
            let c = self
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            *guard = Some(c);
        }
        let conn = guard.as_mut().expect("connection just set");
        let r: redis::RedisResult<u64> =
            redis::Script::new(GCRA).key(&self.key).arg(self.interval_ms).arg(self.burst).invoke_async(conn).await;
        match r {
            Ok(ms) => Ok(Duration::from_millis(ms)),
            Err(e) => {
                *guard = None;
                Err(format!("redis: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use crate::llm::fake::{FakeChat, Reply};
    use crate::llm::{ChatClient, ChatConfig, JsonRequest, LanguageModel, Message};
    use crate::{Gate, Limits};

    fn redis_url() -> String {
        std::env::var("REELSMITH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// A node: its own client and gate, the limit shared through Redis under `prefix`.
    fn node(fake: &FakeChat, prefix: &str, shared: bool) -> ChatClient {
        let limits = Limits { rpm: Some(600), concurrency: 64, ..Limits::default() };
        let mut gate = Gate::new("openai", limits);
        if shared {
            gate = gate.shared_through_redis(&redis_url(), prefix).unwrap();
        }
        let cfg = ChatConfig {
            provider: "openai".into(),
            base_url: fake.base_url(),
            api_key: None,
            model: "m".into(),
            usd_per_mtok_in: 0.0,
            usd_per_mtok_out: 0.0,
        };
        ChatClient::new(reqwest::Client::new(), cfg, Arc::new(gate))
    }

    fn request() -> JsonRequest {
        JsonRequest {
            messages: vec![Message::user("x")],
            schema_name: "s".into(),
            schema: serde_json::json!({"type": "object"}),
            temperature: 0.0,
            max_tokens: 10,
            seed: None,
        }
    }

    /// 70 calls from two nodes at 600 a minute (a burst of 60, then one per 100 ms): shared,
    /// the last 10 wait their turn, about a second in all; each node alone would let its 35
    /// through at once.
    async fn spread(shared: bool) -> std::time::Duration {
        let fake = FakeChat::start().await;
        fake.respond_with(|_| Reply::content("{}"));
        let prefix = format!("reelsmith-test-{}", rand::random::<u64>());
        let (a, b) = (node(&fake, &prefix, shared), node(&fake, &prefix, shared));
        let req = request();
        let calls = (0..70).map(|i| {
            let (client, req) = (if i % 2 == 0 { &a } else { &b }, &req);
            async move { client.complete_json(req).await.unwrap() }
        });
        let start = Instant::now();
        futures_util::future::join_all(calls).await;
        let at: Vec<Instant> = fake.requests().iter().map(|r| r.at).collect();
        assert_eq!(at.len(), 70);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        at.iter().max().unwrap().duration_since(*at.iter().min().unwrap())
    }

    #[tokio::test]
    async fn the_rate_limit_holds_across_nodes_sharing_redis() {
        let shared = spread(true).await;
        assert!(shared >= std::time::Duration::from_millis(850), "70 calls over {shared:?}");
        let alone = spread(false).await;
        assert!(alone < std::time::Duration::from_millis(800), "each node alone lets its calls through: {alone:?}");
    }
}
