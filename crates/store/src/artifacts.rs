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
        let ok = !key.is_empty()
            && key.split('/').all(|p| !p.is_empty() && p != "." && p != ".." && !p.starts_with('.'))
            && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !ok {
            return Err(StoreError::Conflict(format!("invalid artifact key {key:?}")));
        }
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
        let mut n = 0;
        match tokio::fs::read_dir(&dir).await {
            Ok(mut rd) => {
                while let Some(e) = rd.next_entry().await? {
                    if e.file_type().await?.is_file() {
                        n += 1;
                    }
                }
                tokio::fs::remove_dir_all(&dir).await?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(n)
    }

    async fn free_bytes(&self) -> Option<u64> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || free_bytes_at(&root)).await.ok().flatten()
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
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalArtifacts::new(dir.path()).unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "a//b", ".tmp/x", "a b"] {
            assert!(a.size(bad).await.is_err(), "{bad}");
        }
    }
}
