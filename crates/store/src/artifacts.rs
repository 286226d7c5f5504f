//! Result files (videos, thumbnails, subtitles, reports) by key (`gen_…/video.mp4`), readable
//! by byte range. Local disk is the embedded default; object storage implements the same trait.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{Result, StoreError};

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<tokio_util::bytes::Bytes>> + Send>>;

#[async_trait]
pub trait ArtifactStore: Send + Sync + 'static {
    /// Stores `src` under `key`, replacing what was there atomically (readers see the old or the
    /// new file, never half of one). `src` may be moved.
    async fn put_file(&self, key: &str, src: &Path) -> Result<u64>;
    /// Size in bytes, or None when absent.
    async fn size(&self, key: &str) -> Result<Option<u64>>;
    /// Bytes `[start, start + len)`, streamed.
    async fn read_range(&self, key: &str, start: u64, len: u64) -> Result<ByteStream>;
    /// Removes every key under `prefix/`; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64>;
    /// Free bytes where artifacts go, when known (for readiness).
    async fn free_bytes(&self) -> Option<u64>;
    /// A URL that serves `key` (with `Range` requests) without credentials for `ttl`, when the
    /// backend can hand one out (object storage); None means "stream it through the server".
    async fn presigned_get(&self, key: &str, _ttl: std::time::Duration) -> Result<Option<String>> {
        valid_key(key)?;
        Ok(None)
    }
    /// Is the backend answering? (A cheap request for readiness; local disk always is.)
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
    /// Where the artifacts live, for readiness reports and logs (`local:/var/lib/…`,
    /// `s3://bucket/prefix at http://…`). Never includes credentials.
    fn describe(&self) -> String {
        std::any::type_name::<Self>().to_string()
    }
}

/// The one rule for artifact keys (and key prefixes), shared by every backend: non-empty
/// `/`-separated segments of ASCII letters, digits, `-`, `_` and `.`, none empty, `.`, `..` or
/// starting with a dot. Keys can never escape a directory or name hidden files.
pub fn valid_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.split('/').all(|p| !p.is_empty() && p != "." && p != ".." && !p.starts_with('.'))
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok { Ok(()) } else { Err(StoreError::Conflict(format!("invalid artifact key {key:?}"))) }
}

/// Artifacts as files under a directory.
pub struct LocalArtifacts {
    root: PathBuf,
}

impl LocalArtifacts {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(".tmp"))?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        valid_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl ArtifactStore for LocalArtifacts {
    async fn put_file(&self, key: &str, src: &Path) -> Result<u64> {
        let dst = self.path(key)?;
        if let Some(dir) = dst.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let tmp = self.root.join(".tmp").join(crate::new_id("put"));
        // A rename when on the same filesystem, a copy otherwise; then an atomic rename in place.
        if tokio::fs::rename(src, &tmp).await.is_err() {
            tokio::fs::copy(src, &tmp).await?;
        }
        let len = tokio::fs::metadata(&tmp).await?.len();
        tokio::fs::rename(&tmp, &dst).await?;
        Ok(len)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_range(&self, key: &str, start: u64, len: u64) -> Result<ByteStream> {
        let mut f = tokio::fs::File::open(self.path(key)?).await?;
        f.seek(SeekFrom::Start(start)).await?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(f.take(len), 64 * 1024)))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let dir = self.path(prefix)?;
        // Every file below the prefix counts, nested ones too (as with object storage).
        let mut n = 0;
        let mut pending = vec![dir.clone()];
        while let Some(d) = pending.pop() {
            let mut rd = match tokio::fs::read_dir(&d).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // `prefix` names a file, not a folder: nothing lies under `prefix/`.
                Err(e) if d == dir && e.kind() == std::io::ErrorKind::NotADirectory => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            while let Some(e) = rd.next_entry().await? {
                let t = e.file_type().await?;
                if t.is_dir() {
                    pending.push(e.path());
                } else if t.is_file() {
                    n += 1;
                }
            }
        }
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e.into());
        }
        Ok(n)
    }

    async fn free_bytes(&self) -> Option<u64> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || free_bytes_at(&root)).await.ok().flatten()
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_bytes_at(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc_statvfs::Statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    let rc = unsafe { libc_statvfs::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

mod libc_statvfs {
    pub use libc::{statvfs, statvfs as Statvfs};
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    async fn read_all(a: &LocalArtifacts, key: &str, start: u64, len: u64) -> Vec<u8> {
        let chunks: Vec<_> = a.read_range(key, start, len).await.unwrap().try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn put_read_ranges_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalArtifacts::new(dir.path().join("artifacts")).unwrap();
        let src = dir.path().join("v.bin");
        std::fs::write(&src, b"0123456789").unwrap();
        assert_eq!(a.put_file("gen_1/video.mp4", &src).await.unwrap(), 10);
        assert_eq!(a.size("gen_1/video.mp4").await.unwrap(), Some(10));
        assert_eq!(a.size("gen_1/none").await.unwrap(), None);
        assert_eq!(read_all(&a, "gen_1/video.mp4", 0, 10).await, b"0123456789");
        assert_eq!(read_all(&a, "gen_1/video.mp4", 3, 4).await, b"3456");
        // Replacing keeps one file.
        std::fs::write(&src, b"abc").unwrap();
        a.put_file("gen_1/video.mp4", &src).await.unwrap();
        assert_eq!(read_all(&a, "gen_1/video.mp4", 0, 100).await, b"abc");
        assert_eq!(a.delete_prefix("gen_1").await.unwrap(), 1);
        assert_eq!(a.size("gen_1/video.mp4").await.unwrap(), None);
        assert_eq!(a.delete_prefix("gen_1").await.unwrap(), 0);
        assert!(a.free_bytes().await.unwrap() > 0);
    }

    #[tokio::test]
    async fn local_artifacts_pass_the_artifact_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let a = LocalArtifacts::new(dir.path().join("a")).unwrap();
        crate::conformance::run_artifact_suite(&a, &scratch).await;
        let b = LocalArtifacts::new(dir.path().join("b")).unwrap();
        crate::conformance::run_artifact_isolation_suite(&a, &b, &scratch).await;
        assert_eq!(a.describe(), format!("local:{}", dir.path().join("a").display()));
        assert_eq!(a.presigned_get("gen_1/video.mp4", std::time::Duration::from_secs(60)).await.unwrap(), None);
        // Nothing is left behind but the (empty) temporary folder.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("a")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from(".tmp")]);
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalArtifacts::new(dir.path()).unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "a//b", ".tmp/x", "a b"] {
            assert!(a.size(bad).await.is_err(), "{bad}");
        }
    }
}
