//! A content-addressed, on-disk stage cache with a size limit and LRU eviction.
//!
//! Each entry is a directory `objects/<2 hex>/<64 hex>/` holding a stage's output files. An
//! entry is built in `tmp/` and renamed into place, so readers never see half an entry and two
//! renders racing on one key both end up with a complete one. A hit refreshes the entry's
//! mtime, which is the LRU clock eviction sorts by.
//!
//! With a shared tier (Redis, a network folder: [`reelsmith_store::CacheTier`]), a local miss
//! asks the tier before building, and what is built is handed to the tier, so nodes reuse each
//! other's stages. The tier is an accelerator: when it fails, the cache carries on without it
//! for a few seconds and then tries again.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reelsmith_store::CacheTier;

use serde::{Deserialize, Serialize};

/// Bumped whenever a stage's output for the same inputs changes, so old entries stop matching.
pub const ENGINE_VERSION: &str = "reelsmith-engine/1";

/// A cache key: BLAKE3 over the engine version, the stage name and everything the output depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key [`Key::hex`] wrote, or `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Self(k))
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex()[..16])
    }
}

/// Builds a [`Key`] from a stage name and serialisable parameters.
pub fn key(stage: &str, params: &impl Serialize) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(ENGINE_VERSION.as_bytes());
    h.update(&[0]);
    h.update(stage.as_bytes());
    h.update(&[0]);
    // serde_json writes struct fields in declaration order and maps sorted (BTreeMap), so the
    // bytes are stable for equal parameters.
    h.update(&serde_json::to_vec(params).expect("cache parameters serialise"));
    Key(*h.finalize().as_bytes())
}

/// BLAKE3 of a file's contents, so a changed input file changes every key built on it.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Hit and miss counts for one stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitMiss {
    pub hits: u64,
    pub misses: u64,
}

impl HitMiss {
    pub fn ratio(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 { 0.0 } else { self.hits as f64 / n as f64 }
    }
}

/// What the cache holds and how well it has served, across runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CacheStats {
    pub root: PathBuf,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Cumulative per stage, kept in `stats.json`.
    pub stages: BTreeMap<String, HitMiss>,
}

pub struct Cache {
    root: PathBuf,
    max_bytes: u64,
    /// When disabled, nothing is looked up and entries land in a throwaway directory.
    enabled: bool,
    run: Mutex<BTreeMap<String, HitMiss>>,
    shared: Option<Shared>,
    /// Entries renders in progress still need, with how many renders need each: evicting while
    /// writing never removes them. Each also holds a shared lock on its file in `pins/`, so
    /// renders in other processes on the same folder (isolated renders, CLI runs) do not
    /// remove them either.
    pins: Mutex<HashMap<Key, (usize, Option<fs::File>)>>,
    /// Bytes in `objects/`: counted on first need, then kept up to date by installs and evictions.
    approx_bytes: Mutex<Option<u64>>,
    /// When `objects/` was last walked whole (by an eviction).
    last_walk: Mutex<Option<Instant>>,
}

/// How long a finished render trusts this process's running count of the cache's size before
/// walking it again (other processes sharing the directory add entries it does not see). A
/// walk stats every file: done after every render, it made each of a batch's renders slower
/// than the one before.
const WALK_EVERY: Duration = Duration::from_secs(30);

/// The shared tier and its health: after an error it is skipped for [`SHARED_RETRY`].
struct Shared {
    tier: Arc<dyn CacheTier>,
    down_until: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    hits: AtomicU64,
    stores: AtomicU64,
    errors: AtomicU64,
}

const SHARED_RETRY: Duration = Duration::from_secs(5);

/// How the shared tier has fared in this process.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SharedStats {
    pub tier: String,
    pub hits: u64,
    pub stores: u64,
    pub errors: u64,
    /// Skipped after an error until it answers again.
    pub down: bool,
    pub last_error: Option<String>,
}

impl Shared {
    fn usable(&self) -> bool {
        let mut d = self.down_until.lock().expect("shared tier lock");
        match *d {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                *d = None;
                true
            }
            None => true,
        }
    }

    fn failed(&self, what: &str, e: &reelsmith_store::StoreError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let first = self.down_until.lock().expect("shared tier lock").replace(Instant::now() + SHARED_RETRY).is_none();
        if first {
            tracing::warn!(tier = %self.tier.describe(), error = %e, "shared cache {what} failed; carrying on without it for {SHARED_RETRY:?}");
        }
        *self.last_error.lock().expect("shared tier lock") = Some(e.to_string());
    }
}

impl Cache {
    /// Opens (creating) a cache at `root` holding at most `max_bytes`.
    pub fn open(root: impl Into<PathBuf>, max_bytes: u64) -> io::Result<Self> {
        // Absolute: entry paths go into FFmpeg's concat lists, which resolve relative paths
        // against the list's own folder, not ours.
        let root = std::path::absolute(root.into())?;
        fs::create_dir_all(root.join("objects"))?;
        fs::create_dir_all(root.join("tmp"))?;
        fs::create_dir_all(root.join("pins"))?;
        sweep_stale_staging(&root.join("tmp"));
        Ok(Self {
            root,
            max_bytes,
            enabled: true,
            run: Default::default(),
            shared: None,
            pins: Default::default(),
            approx_bytes: Default::default(),
            last_walk: Default::default(),
        })
    }

    /// Adds a shared tier behind this cache (see the module docs).
    pub fn with_shared(mut self, tier: Arc<dyn CacheTier>) -> Self {
        if self.enabled {
            self.shared = Some(Shared {
                tier,
                down_until: Mutex::new(None),
                last_error: Mutex::new(None),
                hits: AtomicU64::new(0),
                stores: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            });
        }
        self
    }

    /// The shared tier's hits, stores and errors in this process so far (none without a tier).
    pub fn shared_counts(&self) -> Option<[u64; 3]> {
        let s = self.shared.as_ref()?;
        Some([s.hits.load(Ordering::Relaxed), s.stores.load(Ordering::Relaxed), s.errors.load(Ordering::Relaxed)])
    }

    /// Adds what renders in other processes (see `shared_counts`) did with the shared tier to
    /// this process's counters, which `shared_status` reports.
    pub fn add_shared_counts(&self, [hits, stores, errors]: [u64; 3]) {
        if let Some(s) = &self.shared {
            s.hits.fetch_add(hits, Ordering::Relaxed);
            s.stores.fetch_add(stores, Ordering::Relaxed);
            s.errors.fetch_add(errors, Ordering::Relaxed);
        }
    }

    /// The shared tier's counters, and whether it answers now (a live check).
    pub fn shared_status(&self) -> Option<(SharedStats, Result<(), String>)> {
        let s = self.shared.as_ref()?;
        let live = s.tier.ping().map_err(|e| e.to_string());
        if live.is_ok() {
            *s.down_until.lock().expect("shared tier lock") = None;
        }
        let stats = SharedStats {
            tier: s.tier.describe(),
            hits: s.hits.load(Ordering::Relaxed),
            stores: s.stores.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            down: live.is_err(),
            last_error: s.last_error.lock().expect("shared tier lock").clone(),
        };
        Some((stats, live))
    }

    /// A cache that never hits (`--no-cache`): outputs still go to disk, under `scratch`.
    pub fn disabled(scratch: impl Into<PathBuf>) -> io::Result<Self> {
        let mut c = Self::open(scratch, u64::MAX)?;
        c.enabled = false;
        Ok(c)
    }

    /// The default location: `$REELSMITH_CACHE_DIR`, else the user cache dir.
    pub fn default_root() -> PathBuf {
        std::env::var_os("REELSMITH_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("reelsmith")))
            .unwrap_or_else(|| std::env::temp_dir().join("reelsmith-cache"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn entry_path(&self, k: &Key) -> PathBuf {
        let hex = k.hex();
        self.root.join("objects").join(&hex[..2]).join(&hex)
    }

    fn count(&self, stage: &str, hit: bool) {
        let mut run = self.run.lock().expect("cache stats lock");
        let e = run.entry(stage.to_string()).or_default();
        if hit { e.hits += 1 } else { e.misses += 1 }
    }

    /// Whether an entry exists here or in the shared tier (not counted, not refreshed).
    pub fn contains(&self, k: &Key) -> bool {
        if !self.enabled {
            return false;
        }
        if self.entry_path(k).is_dir() {
            return true;
        }
        match self.shared.as_ref().filter(|s| s.usable()) {
            Some(s) => s.tier.contains(&k.hex()).unwrap_or_else(|e| {
                s.failed("lookup", &e);
                false
            }),
            None => false,
        }
    }

    /// Copies `k` from the shared tier into this cache, when it is there.
    fn fetch_shared(&self, k: &Key) -> Option<PathBuf> {
        let s = self.shared.as_ref().filter(|s| s.usable())?;
        let tmp = self.staging(k).ok()?;
        match s.tier.fetch(&k.hex(), tmp.path()) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                s.failed("fetch", &e);
                return None;
            }
        }
        let dest = self.install(k, tmp).ok()?;
        s.hits.fetch_add(1, Ordering::Relaxed);
        Some(dest)
    }

    /// A fresh folder in which an entry is built before [`Cache::install`] moves it in place.
    fn staging(&self, k: &Key) -> io::Result<tempfile::TempDir> {
        tempfile::Builder::new().prefix(&k.hex()[..16]).tempdir_in(self.root.join("tmp"))
    }

    /// Renames a complete staged entry into place, so readers never see half of one; then
    /// evicts (entries no render in progress needs) when the cache has grown past its limit, so
    /// one render cannot fill the disk before it ends.
    fn install(&self, k: &Key, staged: tempfile::TempDir) -> io::Result<PathBuf> {
        let dest = self.entry_path(k);
        fs::create_dir_all(dest.parent().expect("entry has a parent"))?;
        let tmp_path = staged.keep();
        let size = dir_size(&tmp_path);
        if let Err(e) = fs::rename(&tmp_path, &dest) {
            // Another render finished the same key first: theirs is as good as ours.
            let _ = fs::remove_dir_all(&tmp_path);
            if !dest.is_dir() {
                return Err(e);
            }
            return Ok(dest);
        }
        if self.enabled {
            let mut approx = self.approx_bytes.lock().expect("cache size lock");
            let total = match *approx {
                Some(t) => t + size,
                None => self.entries().iter().map(|e| e.1).sum(),
            };
            *approx = Some(total);
            if total > self.max_bytes {
                drop(approx);
                self.evict()?;
            }
        }
        Ok(dest)
    }

    /// Marks `k` as needed by a render in progress (see [`Cache::unpin`]).
    pub fn pin(&self, k: &Key) {
        let mut pins = self.pins.lock().expect("pins lock");
        let pin = pins.entry(*k).or_insert((0, None));
        if pin.0 == 0 && self.enabled {
            // Without the lock file the pin still holds in this process; an error here (a full
            // disk) must not fail the render.
            pin.1 = lock_pin_file(&self.pin_path(&k.hex())).ok();
        }
        pin.0 += 1;
    }

    pub fn unpin(&self, k: &Key) {
        let mut pins = self.pins.lock().expect("pins lock");
        if let Some(pin) = pins.get_mut(k) {
            pin.0 -= 1;
            if pin.0 == 0 {
                // Dropping the file releases its lock; the file stays for the next pin (removing
                // it here could race with another process taking it).
                pins.remove(k);
            }
        }
    }

    /// The pin file of entry `name` (its key's hex).
    fn pin_path(&self, name: &str) -> PathBuf {
        self.root.join("pins").join(name)
    }

    /// Takes entry `name` (its key's hex) away from every pin: `Some` holds the exclusive lock
    /// on its pin file until the entry is gone; `None` when a render in some process has it
    /// pinned. The file is made if missing, so a render pinning the entry meanwhile waits for
    /// the eviction and then finds the entry gone (and builds it again).
    fn claim_for_eviction(&self, name: &str) -> Option<fs::File> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.pin_path(name))
            .ok()?;
        f.try_lock().ok()?;
        Some(f)
    }

    /// The most bytes the cache holds.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Hands a freshly built entry to the shared tier (best effort).
    fn share(&self, k: &Key, dir: &Path) {
        let Some(s) = self.shared.as_ref().filter(|s| s.usable()) else {
            return;
        };
        match s.tier.store(&k.hex(), dir) {
            Ok(true) => {
                s.stores.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => s.failed("store", &e),
        }
    }

    /// The entry directory if present (counted as a hit and refreshed for LRU).
    pub fn get(&self, stage: &str, k: &Key) -> Option<PathBuf> {
        let p = self.entry_path(k);
        if self.enabled && p.is_dir() {
            touch(&p);
            self.count(stage, true);
            Some(p)
        } else {
            None
        }
    }

    /// The entry from this cache or, fetched into it, from the shared tier (counted as a hit).
    pub fn lookup(&self, stage: &str, k: &Key) -> Option<PathBuf> {
        if let Some(p) = self.get(stage, k) {
            return Some(p);
        }
        let p = self.fetch_shared(k)?;
        self.count(stage, true);
        Some(p)
    }

    /// Returns the entry, building it with `build` (which fills the directory it is given) on a miss.
    pub fn get_or_build<E: From<io::Error>>(
        &self,
        stage: &str,
        k: &Key,
        build: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<(PathBuf, bool), E> {
        if let Some(p) = self.get(stage, k) {
            return Ok((p, true));
        }
        // (A disabled cache has no shared tier: `with_shared` leaves it out.)
        if let Some(p) = self.fetch_shared(k) {
            self.count(stage, true);
            return Ok((p, true));
        }
        self.count(stage, false);
        let tmp = self.staging(k)?;
        build(tmp.path())?;
        let dest = self.install(k, tmp)?;
        self.share(k, &dest);
        Ok((dest, false))
    }

    /// Hits and misses of this process so far, per stage.
    pub fn run_stats(&self) -> BTreeMap<String, HitMiss> {
        self.run.lock().expect("cache stats lock").clone()
    }

    /// Adds this run's counts to the cumulative `stats.json` and evicts down to the size limit.
    pub fn finish_run(&self) -> io::Result<()> {
        let run = std::mem::take(&mut *self.run.lock().expect("cache stats lock"));
        if !self.enabled {
            return Ok(());
        }
        let _guard = StatsLock::acquire(&self.root)?;
        let mut total = self.cumulative();
        for (stage, hm) in run {
            let e = total.entry(stage).or_default();
            e.hits += hm.hits;
            e.misses += hm.misses;
        }
        let tmp = self.root.join("stats.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&total).expect("stats serialise"))?;
        fs::rename(tmp, self.root.join("stats.json"))?;
        let over = self.approx_bytes.lock().expect("cache size lock").is_none_or(|t| t > self.max_bytes);
        let stale = self.last_walk.lock().expect("cache walk lock").is_none_or(|t| t.elapsed() >= WALK_EVERY);
        if over || stale {
            self.evict()?;
        }
        Ok(())
    }

    fn cumulative(&self) -> BTreeMap<String, HitMiss> {
        fs::read(self.root.join("stats.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn entries(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut out = vec![];
        let Ok(fans) = fs::read_dir(self.root.join("objects")) else {
            return out;
        };
        for fan in fans.flatten() {
            let Ok(items) = fs::read_dir(fan.path()) else {
                continue;
            };
            for item in items.flatten() {
                let p = item.path();
                let mtime = item.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((p.clone(), dir_size(&p), mtime));
            }
        }
        out
    }

    /// Deletes least recently used entries until the cache fits its limit, except those a
    /// render in progress still needs.
    pub fn evict(&self) -> io::Result<u64> {
        let mut approx = self.approx_bytes.lock().expect("cache size lock");
        *self.last_walk.lock().expect("cache walk lock") = Some(Instant::now());
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total > self.max_bytes {
            entries.sort_by_key(|e| e.2);
            let pinned: std::collections::HashSet<String> =
                self.pins.lock().expect("pins lock").keys().map(Key::hex).collect();
            let mut removed = 0;
            for (p, size, _) in entries {
                if total <= self.max_bytes {
                    break;
                }
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if pinned.contains(&name) {
                    continue;
                }
                let Some(_claim) = self.claim_for_eviction(&name) else {
                    continue;
                };
                fs::remove_dir_all(&p)?;
                // Under the exclusive lock: a process pinning it next finds the file gone and
                // makes a new one (see `lock_pin_file`).
                let _ = fs::remove_file(self.pin_path(&name));
                total -= size;
                removed += 1;
            }
            *approx = Some(total);
            return Ok(removed);
        }
        *approx = Some(total);
        Ok(0)
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.entries();
        CacheStats {
            root: self.root.clone(),
            entries: entries.len() as u64,
            bytes: entries.iter().map(|e| e.1).sum(),
            max_bytes: self.max_bytes,
            stages: self.cumulative(),
        }
    }

    /// Removes every entry and the statistics.
    pub fn clear(&self) -> io::Result<()> {
        for sub in ["objects", "tmp", "pins"] {
            let p = self.root.join(sub);
            if p.exists() {
                fs::remove_dir_all(&p)?;
            }
            fs::create_dir_all(&p)?;
        }
        let _ = fs::remove_file(self.root.join("stats.json"));
        Ok(())
    }
}

/// Opens `path` (creating it) with a shared lock held. The file must still be the one at
/// `path` once locked: an eviction removes it under its exclusive lock, and a lock on the
/// removed file would protect nothing.
fn lock_pin_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let f = fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        f.lock_shared()?;
        let held = f.metadata()?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(f),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Removes staging folders older than a day: what renders killed mid-build left behind (a
/// render in progress builds for minutes, not days).
fn sweep_stale_staging(tmp: &Path) {
    let Ok(items) = fs::read_dir(tmp) else { return };
    let day = Duration::from_secs(24 * 3600);
    for item in items.flatten() {
        let old = item.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a > day));
        if old {
            let _ = fs::remove_dir_all(item.path());
        }
    }
}

fn touch(p: &Path) {
    if let Ok(f) = fs::File::open(p) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Bytes of the files in a cache entry.
pub(crate) fn dir_size(p: &Path) -> u64 {
    fs::read_dir(p).map(|it| it.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

/// An exclusive lock file around the stats read-modify-write (several renders may share a cache).
struct StatsLock(fs::File);

impl StatsLock {
    fn acquire(root: &Path) -> io::Result<Self> {
        let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(root.join("stats.lock"))?;
        f.lock()?;
        Ok(Self(f))
    }
}

impl Drop for StatsLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_root_is_made_absolute() {
        // Entry paths end up in FFmpeg concat lists, which would resolve them elsewhere.
        let dir = tempfile::tempdir().unwrap();
        let rel = dir.path().strip_prefix(std::env::current_dir().unwrap()).map(Path::to_path_buf);
        let c = Cache::open(rel.unwrap_or_else(|_| dir.path().to_path_buf()), 1 << 20).unwrap();
        assert!(c.root().is_absolute());
        let c = Cache::open(Path::new("target").join("relative-cache-test"), 1 << 20).unwrap();
        assert!(c.root().is_absolute() && c.root().ends_with("target/relative-cache-test"));
        let _ = fs::remove_dir_all(c.root());
    }

    #[test]
    fn keys_depend_on_stage_and_params() {
        assert_eq!(key("tts", &("a", 1)), key("tts", &("a", 1)));
        assert_ne!(key("tts", &("a", 1)), key("tts", &("a", 2)));
        assert_ne!(key("tts", &("a", 1)), key("image", &("a", 1)));
    }

    #[test]
    fn build_once_then_hit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let k = key("s", &1);
        let mut builds = 0;
        for _ in 0..2 {
            let (p, _) = cache
                .get_or_build::<io::Error>("s", &k, |d| {
                    builds += 1;
                    fs::write(d.join("out"), b"x")
                })
                .unwrap();
            assert_eq!(fs::read(p.join("out")).unwrap(), b"x");
        }
        assert_eq!(builds, 1);
        assert_eq!(cache.run_stats()["s"], HitMiss { hits: 1, misses: 1 });
        cache.finish_run().unwrap();
        assert_eq!(cache.stats().stages["s"].hits, 1);
        assert_eq!(cache.stats().entries, 1);
    }

    #[test]
    fn failed_build_leaves_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let k = key("s", &2);
        let r = cache.get_or_build("s", &k, |_| Err(io::Error::other("boom")));
        assert!(r.is_err());
        assert!(cache.get("s", &k).is_none());
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 2500).unwrap();
        let keys: Vec<Key> = (0..3).map(|i| key("s", &i)).collect();
        for (i, k) in keys[..2].iter().enumerate() {
            cache.get_or_build::<io::Error>("s", k, |d| fs::write(d.join("f"), vec![0u8; 1000])).unwrap();
            // Distinct, ordered mtimes without sleeping.
            let p = cache.entry_path(k);
            fs::File::open(&p)
                .unwrap()
                .set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64))
                .unwrap();
        }
        // Using the oldest makes it the newest.
        assert!(cache.get("s", &keys[0]).is_some());
        // The third entry goes past the limit: the least recently used one goes as it is written.
        cache.get_or_build::<io::Error>("s", &keys[2], |d| fs::write(d.join("f"), vec![0u8; 1000])).unwrap();
        assert!(cache.get("s", &keys[0]).is_some());
        assert!(cache.get("s", &keys[1]).is_none(), "the least recently used entry goes");
        assert!(cache.get("s", &keys[2]).is_some());
        assert_eq!(cache.evict().unwrap(), 0);
    }

    #[test]
    fn writing_past_the_limit_evicts_at_once_but_never_what_a_render_needs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 3000).unwrap();
        let keys: Vec<Key> = (0..10).map(|i| key("s", &i)).collect();
        // A render in progress needs the first entry (it will read it again later).
        cache.pin(&keys[0]);
        for k in &keys {
            cache.get_or_build::<io::Error>("s", k, |d| fs::write(d.join("f"), vec![0u8; 1000])).unwrap();
            // Never more than the limit on disk, at any point of the run.
            assert!(cache.stats().bytes <= 3000, "{} bytes", cache.stats().bytes);
            assert!(cache.entry_path(&keys[0]).is_dir(), "a pinned entry was evicted");
        }
        cache.unpin(&keys[0]);
        // Unpinned, it is an entry like any other again.
        for k in &keys[..3] {
            let _ = cache.get("s", k);
        }
        assert!(cache.stats().entries <= 3);
    }

    #[test]
    fn an_entry_pinned_by_another_process_is_not_evicted() {
        let dir = tempfile::tempdir().unwrap();
        // Two caches on one folder stand for two processes: pins are file locks, which one
        // process's open files hold against another's as against its own.
        let render = Cache::open(dir.path(), 3000).unwrap();
        let other = Cache::open(dir.path(), 3000).unwrap();
        let keys: Vec<Key> = (0..10).map(|i| key("s", &i)).collect();
        render.pin(&keys[0]);
        render.get_or_build::<io::Error>("s", &keys[0], |d| fs::write(d.join("f"), vec![0u8; 1000])).unwrap();
        for k in &keys[1..] {
            other.get_or_build::<io::Error>("s", k, |d| fs::write(d.join("f"), vec![0u8; 1000])).unwrap();
            assert!(render.entry_path(&keys[0]).is_dir(), "an entry another process pinned was evicted");
        }
        assert!(other.stats().bytes <= 3000, "{} bytes", other.stats().bytes);
        render.unpin(&keys[0]);
        // Released, it goes like any other entry (the oldest here), and its pin file with it.
        fs::File::open(render.entry_path(&keys[0]))
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        other.get_or_build::<io::Error>("s", &key("s", &10), |d| fs::write(d.join("f"), vec![0u8; 1000])).unwrap();
        assert!(!render.entry_path(&keys[0]).exists(), "an unpinned old entry stayed");
        assert!(!dir.path().join("pins").join(keys[0].hex()).exists(), "its pin file stayed");
        // Pinned again later, the pin holds again (a new file).
        render.pin(&keys[1]);
        assert!(other.claim_for_eviction(&keys[1].hex()).is_none());
        render.unpin(&keys[1]);
        assert!(other.claim_for_eviction(&keys[1].hex()).is_some());
    }

    #[test]
    fn disabled_cache_never_hits() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::disabled(dir.path()).unwrap();
        let k = key("s", &1);
        for _ in 0..2 {
            let (_, hit) = cache.get_or_build::<io::Error>("s", &k, |d| fs::write(d.join("f"), b"1")).unwrap();
            assert!(!hit);
        }
    }

    /// A shared tier that fails every call, like a Redis that went away.
    struct Broken;
    impl CacheTier for Broken {
        fn describe(&self) -> String {
            "broken".into()
        }
        fn fetch(&self, _: &str, _: &Path) -> reelsmith_store::Result<bool> {
            Err(reelsmith_store::StoreError::Redis("connection refused".into()))
        }
        fn store(&self, _: &str, _: &Path) -> reelsmith_store::Result<bool> {
            Err(reelsmith_store::StoreError::Redis("connection refused".into()))
        }
        fn contains(&self, _: &str) -> reelsmith_store::Result<bool> {
            Err(reelsmith_store::StoreError::Redis("connection refused".into()))
        }
        fn ping(&self) -> reelsmith_store::Result<()> {
            Err(reelsmith_store::StoreError::Redis("connection refused".into()))
        }
    }

    #[test]
    fn nodes_reuse_each_others_entries_through_the_shared_tier() {
        let dir = tempfile::tempdir().unwrap();
        let tier: Arc<dyn CacheTier> =
            Arc::new(reelsmith_store::DiskTier::new(dir.path().join("l2"), 1 << 20).unwrap());
        let a = Cache::open(dir.path().join("a"), 1 << 30).unwrap().with_shared(tier.clone());
        let b = Cache::open(dir.path().join("b"), 1 << 30).unwrap().with_shared(tier);
        let k = key("segment", &42);
        let (_, hit) =
            a.get_or_build::<io::Error>("segment", &k, |d| fs::write(d.join("segment.mp4"), b"frames")).unwrap();
        assert!(!hit);
        assert!(b.contains(&k), "the other node sees the entry in the shared tier");
        let (p, hit) = b.get_or_build::<io::Error>("segment", &k, |_| panic!("built again on the other node")).unwrap();
        assert!(hit);
        assert_eq!(fs::read(p.join("segment.mp4")).unwrap(), b"frames");
        assert!(p.starts_with(b.root()), "copied into the node's own cache");
        let (stats, live) = b.shared_status().unwrap();
        assert_eq!((stats.hits, stats.errors), (1, 0));
        assert!(live.is_ok());
        assert_eq!(a.shared_status().unwrap().0.stores, 1);
    }

    #[test]
    fn a_failing_shared_tier_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 30).unwrap().with_shared(Arc::new(Broken));
        let k = key("s", &7);
        assert!(!c.contains(&k));
        let (p, hit) = c.get_or_build::<io::Error>("s", &k, |d| fs::write(d.join("f"), b"1")).unwrap();
        assert!(!hit);
        assert_eq!(fs::read(p.join("f")).unwrap(), b"1", "built locally when the tier fails");
        let (stats, live) = c.shared_status().unwrap();
        assert!(stats.errors >= 1 && stats.last_error.unwrap().contains("refused"));
        assert!(live.is_err());
        // Served from the local cache meanwhile.
        assert!(c.get_or_build::<io::Error>("s", &k, |_| panic!("rebuilt")).unwrap().1);
    }

    #[test]
    fn clear_empties_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        cache.get_or_build::<io::Error>("s", &key("s", &1), |d| fs::write(d.join("f"), b"1")).unwrap();
        cache.clear().unwrap();
        assert_eq!(cache.stats().entries, 0);
    }
}
