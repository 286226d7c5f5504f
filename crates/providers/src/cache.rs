//! Provider results, kept on disk by what was asked: the key is the provider, the model and the
//! canonical request (object keys sorted), so the same question is never paid for twice. Calls
//! for one key run one at a time (single flight): the second caller finds the first one's
//! answer. Failures and empty answers are never kept; stock searches expire (24 h), generated
//! media and plans do not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::Failure;

/// A cache key: BLAKE3 of (provider, model, canonical request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    pub fn new(provider: &str, model: &str, request: &Value) -> Self {
        let mut h = blake3::Hasher::new();
        for part in [provider, model, &canonical(request)] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Self(*h.finalize().as_bytes())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// JSON with object keys sorted at every level (serde_json's map keeps insertion order).
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// The results of one kind of call (`plans`, `images`, `stock-search`…) under a folder.
pub struct ResultCache {
    dir: PathBuf,
    /// How long an entry serves (None: for ever).
    ttl: Option<Duration>,
    flights: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl ResultCache {
    pub fn new(dir: impl Into<PathBuf>, ttl: Option<Duration>) -> Self {
        Self { dir: dir.into(), ttl, flights: Mutex::new(HashMap::new()) }
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        let hex = key.hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The entry, when present and fresh.
    pub async fn get(&self, key: &CacheKey) -> Option<Vec<u8>> {
        let path = self.path(key);
        let meta = tokio::fs::metadata(&path).await.ok()?;
        if let (Some(ttl), Ok(modified)) = (self.ttl, meta.modified())
            && SystemTime::now().duration_since(modified).unwrap_or_default() > ttl
        {
            return None;
        }
        tokio::fs::read(&path).await.ok()
    }

    /// Keeps `bytes` as the answer for `key` (what a caller computed itself, such as a checked
    /// plan or a decision).
    pub async fn put(&self, key: &CacheKey, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await?;
        // Written aside and renamed: a reader never sees half an entry.
        let tmp = dir.join(format!(".{}.{}", key.hex(), rand::random::<u64>()));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, &path).await
    }

    /// The cached answer for `key`, or `fetch`'s, kept when it is not empty. Returns whether it
    /// came from the cache. Concurrent calls for one key wait for the first.
    pub async fn get_or_fetch<F, Fut>(&self, key: &CacheKey, fetch: F) -> Result<(Vec<u8>, bool), Failure>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, Failure>>,
    {
        if let Some(hit) = self.get(key).await {
            return Ok((hit, true));
        }
        let flight = self.flights.lock().expect("flights lock").entry(*key).or_default().clone();
        let guard = flight.lock().await;
        let result = match self.get(key).await {
            Some(hit) => Ok((hit, true)),
            None => match fetch().await {
                Ok(bytes) => {
                    if !bytes.is_empty() {
                        // A cache that cannot be written only costs a second call later.
                        if let Err(e) = self.put(key, &bytes).await {
                            tracing::warn!(dir = %self.dir.display(), error = %e, "provider cache: cannot write");
                        }
                    }
                    Ok((bytes, false))
                }
                Err(f) => Err(f),
            },
        };
        drop(guard);
        // The last one out removes the flight.
        let mut flights = self.flights.lock().expect("flights lock");
        if Arc::strong_count(&flight) <= 2 {
            flights.remove(key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::json;

    use super::*;

    #[test]
    fn keys_ignore_key_order_but_not_values() {
        let a = CacheKey::new("openai", "m", &json!({"a": 1, "b": {"x": [1, 2], "y": null}}));
        let b = CacheKey::new("openai", "m", &json!({"b": {"y": null, "x": [1, 2]}, "a": 1}));
        assert_eq!(a, b);
        assert_ne!(a, CacheKey::new("openai", "m", &json!({"a": 2, "b": {"x": [1, 2], "y": null}})));
        assert_ne!(a, CacheKey::new("openai", "other", &json!({"a": 1, "b": {"x": [1, 2], "y": null}})));
        assert_ne!(a, CacheKey::new("ollama", "m", &json!({"a": 1, "b": {"x": [1, 2], "y": null}})));
    }

    #[tokio::test]
    async fn one_flight_per_key_and_failures_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ResultCache::new(dir.path(), None));
        let key = CacheKey::new("p", "m", &json!({"q": "volcano"}));
        let calls = Arc::new(AtomicU32::new(0));
        let err = cache.get_or_fetch(&key, || async { Err(Failure::Retryable("503".into())) }).await;
        assert!(err.is_err());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(&key, || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(b"answer".to_vec())
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut hits = 0;
        for t in tasks {
            let (bytes, hit) = t.await.unwrap();
            assert_eq!(bytes, b"answer");
            hits += hit as u32;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for eight callers");
        assert_eq!(hits, 7);
        // Empty answers are not kept.
        let empty = CacheKey::new("p", "m", &json!({"q": "nothing"}));
        cache.get_or_fetch(&empty, || async { Ok(vec![]) }).await.unwrap();
        assert!(cache.get(&empty).await.is_none());
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path(), Some(Duration::from_millis(100)));
        let key = CacheKey::new("pexels", "search", &json!({"query": "ocean"}));
        cache.get_or_fetch(&key, || async { Ok(b"x".to_vec()) }).await.unwrap();
        assert!(cache.get(&key).await.is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(cache.get(&key).await.is_none());
    }
}
