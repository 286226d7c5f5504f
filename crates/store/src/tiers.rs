//! Shared tiers of the render engine's stage cache. Every node keeps its own disk cache (L1);
//! a shared tier (L2) lets a node reuse what another node built: a segment rendered by one
//! worker is assembled by another. A tier is an accelerator, never a source of truth: any
//! error means "not cached here", and the engine builds the entry itself.
//!
//! An entry is a flat folder of files named by a content key (hex). [`DiskTier`] keeps them in
//! a shared folder (NFS, a mounted volume); [`crate::redis_backend::RedisTier`] keeps them in Redis.
//! Both pass [`run_tier_suite`].

use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// One shared cache tier. Synchronous: the engine calls it from its render threads.
pub trait CacheTier: Send + Sync + 'static {
    /// Where the tier lives, for logs and readiness (`redis://…`, `disk:/…`).
    fn describe(&self) -> String;
    /// Copies entry `key` into the empty folder `dest`; false when absent.
    fn fetch(&self, key: &str, dest: &Path) -> Result<bool>;
    /// Stores the files of the folder `src` as entry `key`, replacing any entry there. False
    /// when the tier declines it (larger than its entry limit).
    fn store(&self, key: &str, src: &Path) -> Result<bool>;
    fn contains(&self, key: &str) -> Result<bool>;
    /// Is the tier answering?
    fn ping(&self) -> Result<()>;
}

/// A cache entry's files: (name, bytes).
pub(crate) type EntryFiles = Vec<(String, Vec<u8>)>;

/// An entry's files, read whole (None past `limit` bytes): entries are bounded by the tier's limit.
pub(crate) fn read_entry(src: &Path, limit: u64) -> Result<Option<EntryFiles>> {
    let mut files = vec![];
    let mut total = 0u64;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        total += e.metadata()?.len();
        if total > limit {
            return Ok(None);
        }
        let name = e.file_name().into_string().map_err(|n| StoreError::Corrupt(format!("file name {n:?}")))?;
        files.push((name, std::fs::read(e.path())?));
    }
    Ok(Some(files))
}

pub(crate) fn valid_tier_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(StoreError::Conflict(format!("invalid cache key {key:?}")));
    }
    Ok(())
}

pub(crate) fn valid_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0')
}

/// Entries as folders under a directory shared by every node (a network file system).
pub struct DiskTier {
    root: PathBuf,
    max_entry_bytes: u64,
}

impl DiskTier {
    pub fn new(root: impl Into<PathBuf>, max_entry_bytes: u64) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(".tmp"))?;
        Ok(Self { root, max_entry_bytes })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        valid_tier_key(key)?;
        Ok(self.root.join(key))
    }
}

impl CacheTier for DiskTier {
    fn describe(&self) -> String {
        format!("disk:{}", self.root.display())
    }

    fn fetch(&self, key: &str, dest: &Path) -> Result<bool> {
        let dir = self.path(key)?;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        for e in rd {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::copy(e.path(), dest.join(e.file_name()))?;
            }
        }
        Ok(true)
    }

    fn store(&self, key: &str, src: &Path) -> Result<bool> {
        let dest = self.path(key)?;
        if crate::tiers::dir_bytes(src)? > self.max_entry_bytes {
            return Ok(false);
        }
        // Built aside and renamed in, so readers on other nodes never see half an entry.
        let tmp = self.root.join(".tmp").join(crate::new_id("tier"));
        std::fs::create_dir_all(&tmp)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::copy(e.path(), tmp.join(e.file_name()))?;
            }
        }
        let _ = std::fs::remove_dir_all(&dest);
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another node stored the same key at the same moment: same content.
            if !dest.is_dir() {
                return Err(e.into());
            }
        }
        Ok(true)
    }

    fn contains(&self, key: &str) -> Result<bool> {
        Ok(self.path(key)?.is_dir())
    }

    fn ping(&self) -> Result<()> {
        std::fs::metadata(&self.root)?;
        Ok(())
    }
}

pub(crate) fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let m = e?.metadata()?;
        if m.is_file() {
            n += m.len();
        }
    }
    Ok(n)
}

/// The semantics every tier must have. `scratch` is an empty folder for the suite's files.
pub fn run_tier_suite(t: &dyn CacheTier, scratch: &Path, max_entry_bytes: u64) {
    let key = |tag: &str| format!("{tag}{}", crate::new_id("k").trim_start_matches("k_"));
    let entry = scratch.join("entry");
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("segment.mp4"), vec![7u8; 100_000]).unwrap();
    std::fs::write(entry.join("meta.json"), b"{\"frames\": 12}").unwrap();
    let fetched = |k: &str, tag: &str| {
        let d = scratch.join(tag);
        std::fs::create_dir_all(&d).unwrap();
        let found = t.fetch(k, &d).unwrap();
        (found, d)
    };

    let k = key("a");
    assert!(!t.contains(&k).unwrap(), "a new key is absent");
    assert!(!fetched(&k, "miss").0, "fetching an absent key finds nothing");
    assert!(t.store(&k, &entry).unwrap(), "an entry within the limit is stored");
    assert!(t.contains(&k).unwrap());
    let (found, d) = fetched(&k, "hit");
    assert!(found);
    assert_eq!(std::fs::read(d.join("segment.mp4")).unwrap(), vec![7u8; 100_000], "binary files round-trip");
    assert_eq!(std::fs::read(d.join("meta.json")).unwrap(), b"{\"frames\": 12}");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2, "exactly the entry's files");

    // Replacing an entry leaves only the new files.
    let other = scratch.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("canvas.yuv"), b"yuv").unwrap();
    assert!(t.store(&k, &other).unwrap());
    let (_, d) = fetched(&k, "replaced");
    let names: Vec<String> =
        std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["canvas.yuv"], "a replaced entry holds only the new files");

    // Keys do not interfere.
    let k2 = key("b");
    assert!(!t.contains(&k2).unwrap());

    // Oversized entries are declined, not stored half.
    let big = scratch.join("big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("huge.bin"), vec![1u8; max_entry_bytes as usize + 1]).unwrap();
    let k3 = key("c");
    assert!(!t.store(&k3, &big).unwrap(), "an entry over the limit is declined");
    assert!(!t.contains(&k3).unwrap());

    // Keys that could escape or collide are refused.
    for bad in ["", "../x", "a/b", "a b", ".hidden"] {
        assert!(t.contains(bad).is_err(), "key {bad:?} is refused");
    }
    t.ping().expect("a working tier answers ping");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_tier_passes_the_tier_suite() {
        let dir = tempfile::tempdir().unwrap();
        let t = DiskTier::new(dir.path().join("shared"), 1 << 20).unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        run_tier_suite(&t, &scratch, 1 << 20);
    }
}
