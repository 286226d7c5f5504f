//! Artifacts on S3-compatible object storage (AWS S3, MinIO, Ceph RGW, R2, …) through the
//! `object_store` crate: the same keys and semantics as [`LocalArtifacts`](crate::LocalArtifacts),
//! checked by the same suite ([`crate::conformance::run_artifact_suite`]).
//!
//! - Uploads stream from the file: one PUT up to `multipart_threshold_bytes`, a multipart upload
//!   of `multipart_part_bytes` parts above it (a few parts in flight, never the whole file in
//!   memory). Both are atomic per object, so readers see the old object or the new one.
//! - Reads are ranged GETs streamed as they arrive; a range past the end is clipped, and one that
//!   starts at or after the end reads as empty, exactly as with local files.
//! - `delete_prefix` lists `prefix/` (ListObjectsV2) and deletes in batches (DeleteObjects).
//! - `presigned_get` hands out a SigV4 presigned URL, so a server can redirect downloads to the
//!   storage instead of streaming them through itself.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::artifacts::{ArtifactStore, ByteStream, valid_key};
use crate::{Result, StoreError};

const MIB: u64 = 1024 * 1024;
/// S3 refuses multipart parts (all but the last) smaller than this.
pub const MIN_PART_BYTES: u64 = 5 * MIB;
/// SigV4 presigned URLs live at most a week.
const MAX_PRESIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where and how to reach the bucket. Credentials left out here come from the standard AWS
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity,
/// ECS/EC2 instance metadata).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct S3Config {
    /// For S3-compatible servers (`http://127.0.0.1:9000`); None means AWS itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    /// Keys are stored under `prefix/` (several deployments can share a bucket).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    /// Permit plain-HTTP endpoints (local test servers).
    #[serde(default)]
    pub allow_http: bool,
    /// Path-style URLs (`endpoint/bucket/key`) rather than virtual-hosted ones
    /// (`bucket.endpoint/key`). Unset: path style for custom endpoints, virtual-hosted for AWS.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Files larger than this go up as multipart uploads.
    #[serde(default = "default_part_bytes")]
    pub multipart_threshold_bytes: u64,
    /// Size of each multipart part (at least 5 MiB, S3's minimum).
    #[serde(default = "default_part_bytes")]
    pub multipart_part_bytes: u64,
    /// Parts in flight at once (memory use is about `(concurrency + 1) × part size`).
    #[serde(default = "default_concurrency")]
    pub multipart_concurrency: usize,
    /// Create the bucket at startup when it is missing ([`S3Artifacts::connect`]).
    #[serde(default)]
    pub create_bucket: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_part_bytes() -> u64 {
    8 * MIB
}
fn default_concurrency() -> usize {
    4
}

impl S3Config {
    /// Defaults for everything but the bucket.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            endpoint: None,
            region: default_region(),
            bucket: bucket.into(),
            prefix: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            path_style: None,
            multipart_threshold_bytes: default_part_bytes(),
            multipart_part_bytes: default_part_bytes(),
            multipart_concurrency: default_concurrency(),
            create_bucket: false,
        }
    }

    pub fn path_style(&self) -> bool {
        self.path_style.unwrap_or(self.endpoint.is_some())
    }
}

/// Secrets stay out of logs.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .field("multipart_threshold_bytes", &self.multipart_threshold_bytes)
            .field("multipart_part_bytes", &self.multipart_part_bytes)
            .field("multipart_concurrency", &self.multipart_concurrency)
            .field("create_bucket", &self.create_bucket)
            .finish()
    }
}

/// `scheme://user:pass@host` → `scheme://host`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Artifacts as objects in a bucket, under an optional key prefix.
pub struct S3Artifacts {
    store: Arc<AmazonS3>,
    cfg: S3Config,
    /// The configured prefix without surrounding slashes.
    root: Option<String>,
    http: reqwest::Client,
}

fn object_err(e: object_store::Error) -> StoreError {
    match e {
        // Same kind of error as a missing local file, so callers treat both backends alike.
        object_store::Error::NotFound { path, .. } => {
            StoreError::Io(std::io::Error::new(std::io::ErrorKind::NotFound, format!("artifact {path} not found")))
        }
        e => StoreError::Object(e.to_string()),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

fn empty_stream() -> ByteStream {
    Box::pin(futures_util::stream::empty())
}

impl S3Artifacts {
    /// Builds the client (no request is made; see [`connect`](Self::connect) and
    /// [`ping`](ArtifactStore::ping)).
    pub fn new(cfg: S3Config) -> Result<Self> {
        let invalid = |m: String| StoreError::Object(format!("invalid S3 configuration: {m}"));
        if cfg.bucket.is_empty() {
            return Err(invalid("bucket is empty".into()));
        }
        if cfg.multipart_part_bytes < MIN_PART_BYTES {
            return Err(invalid(format!("multipart_part_bytes must be at least {MIN_PART_BYTES}")));
        }
        if cfg.multipart_part_bytes > usize::MAX as u64 || cfg.multipart_concurrency == 0 {
            return Err(invalid("multipart_part_bytes / multipart_concurrency out of range".into()));
        }
        let root = match cfg.prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => None,
            Some(p) => {
                valid_key(p).map_err(|_| invalid(format!("prefix {p:?} is not a valid key prefix")))?;
                Some(p.to_string())
            }
        };
        // Client options first: `with_allow_http` is one of them, and would be reset.
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(ClientOptions::new().with_connect_timeout(Duration::from_secs(5)))
            .with_allow_http(cfg.allow_http)
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(!cfg.path_style());
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &cfg.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        if let Some(t) = &cfg.session_token {
            b = b.with_token(t);
        }
        let store = b.build().map_err(|e| invalid(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self { store: Arc::new(store), cfg, root, http })
    }

    /// [`new`](Self::new), then creates the bucket when `create_bucket` is set and it is missing.
    pub async fn connect(cfg: S3Config) -> Result<Self> {
        let s = Self::new(cfg)?;
        if s.cfg.create_bucket {
            s.ensure_bucket().await?;
        }
        Ok(s)
    }

    /// Creates the bucket unless it is already there and readable; true when it was created.
    /// (A presigned `PUT /bucket`, since `object_store` has no bucket operations.)
    pub async fn ensure_bucket(&self) -> Result<bool> {
        if self.ping().await.is_ok() {
            return Ok(false);
        }
        let bucket = &self.cfg.bucket;
        let url = self
            .store
            .signed_url(reqwest::Method::PUT, &ObjectPath::ROOT, Duration::from_secs(300))
            .await
            .map_err(object_err)?;
        let body = if self.cfg.region == "us-east-1" {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.cfg.region
            )
        };
        // An explicit Content-Length, even 0: some servers refuse a PUT without one.
        let req = self.http.put(url.as_str()).header(reqwest::header::CONTENT_LENGTH, body.len()).body(body);
        let resp = req.send().await.map_err(|e| StoreError::Object(format!("create bucket {bucket}: {e}")))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(true)
        } else if body.contains("BucketAlreadyOwnedByYou") {
            Ok(false)
        } else {
            Err(StoreError::Object(format!("create bucket {bucket}: {status}: {}", body.trim())))
        }
    }

    /// The underlying client (for tools and tests that need more than the trait).
    pub fn object_store(&self) -> Arc<AmazonS3> {
        self.store.clone()
    }

    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// The object path of `key` (under the prefix).
    pub fn location(&self, key: &str) -> Result<ObjectPath> {
        valid_key(key)?;
        Ok(match &self.root {
            Some(r) => ObjectPath::from(format!("{r}/{key}")),
            None => ObjectPath::from(key),
        })
    }

    async fn put_multipart(&self, location: &ObjectPath, f: &mut tokio::fs::File) -> Result<u64> {
        let upload = self.store.put_multipart(location).await.map_err(object_err)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.cfg.multipart_part_bytes as usize);
        let mut buf = vec![0u8; MIB as usize];
        let mut total = 0u64;
        let sent: Result<()> = async {
            loop {
                // Back-pressure: at most `concurrency` parts in flight, plus the one filling.
                w.wait_for_capacity(self.cfg.multipart_concurrency).await.map_err(object_err)?;
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                w.write(&buf[..n]);
                total += n as u64;
            }
            Ok(())
        }
        .await;
        // `finish` uploads the last part and completes; a failed part never completes, so the
        // object is replaced by the whole new file or not at all.
        match sent {
            Ok(()) => {
                w.finish().await.map_err(object_err)?;
                Ok(total)
            }
            Err(e) => {
                if let Err(abort) = w.abort().await {
                    tracing::warn!(error = %abort, %location, "aborting a multipart upload failed");
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl ArtifactStore for S3Artifacts {
    async fn put_file(&self, key: &str, src: &Path) -> Result<u64> {
        let location = self.location(key)?;
        let mut f = tokio::fs::File::open(src).await?;
        let len = f.metadata().await?.len();
        if len > self.cfg.multipart_threshold_bytes {
            return self.put_multipart(&location, &mut f).await;
        }
        // Small enough to hold: one PUT.
        let mut buf = Vec::with_capacity(len as usize);
        f.read_to_end(&mut buf).await?;
        let n = buf.len() as u64;
        self.store.put(&location, PutPayload::from(buf)).await.map_err(object_err)?;
        Ok(n)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.store.head(&self.location(key)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(object_err(e)),
        }
    }

    async fn read_range(&self, key: &str, start: u64, len: u64) -> Result<ByteStream> {
        let location = self.location(key)?;
        if len == 0 {
            // Nothing to read, but a missing key is still an error (as with local files).
            self.store.head(&location).await.map_err(object_err)?;
            return Ok(empty_stream());
        }
        let range = GetRange::Bounded(start..start.saturating_add(len));
        match self.store.get_opts(&location, GetOptions::new().with_range(Some(range))).await {
            Ok(r) => Ok(Box::pin(r.into_stream().map_err(std::io::Error::other))),
            Err(e) if is_not_found(&e) => Err(object_err(e)),
            // S3 answers 416 for a range starting at or past the end (any range of an empty
            // object); a local file reads as empty there.
            Err(e) => match self.store.head(&location).await {
                Ok(meta) if start >= meta.size => Ok(empty_stream()),
                _ => Err(object_err(e)),
            },
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let dir = self.location(prefix)?;
        // Listing is by whole segments: `gen_1` lists `gen_1/…`, never `gen_1x/…`.
        let listed = self.store.list(Some(&dir)).map_ok(|meta| meta.location).boxed();
        let mut deleted = self.store.delete_stream(listed);
        let mut n = 0;
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) => n += 1,
                Err(e) if is_not_found(&e) => {} // deleted meanwhile by someone else
                Err(e) => return Err(object_err(e)),
            }
        }
        Ok(n)
    }

    async fn free_bytes(&self) -> Option<u64> {
        None
    }

    async fn presigned_get(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        let location = self.location(key)?;
        let url = self
            .store
            .signed_url(reqwest::Method::GET, &location, ttl.min(MAX_PRESIGN_TTL))
            .await
            .map_err(object_err)?;
        Ok(Some(url.to_string()))
    }

    /// One ListObjectsV2 request for at most one key (bucket reachable, credentials accepted).
    async fn ping(&self) -> Result<()> {
        let prefix = self.root.as_ref().map(|r| format!("{r}/"));
        let opts = PaginatedListOptions { max_keys: Some(1), ..Default::default() };
        match tokio::time::timeout(Duration::from_secs(10), self.store.list_paginated(prefix.as_deref(), opts)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(object_err(e)),
            Err(_) => Err(StoreError::Object(format!("{}: no answer within 10 s", self.describe()))),
        }
    }

    fn describe(&self) -> String {
        let at = match &self.cfg.endpoint {
            Some(e) => redact_url(e),
            None => format!("AWS {}", self.cfg.region),
        };
        format!("s3://{}/{} at {at}", self.cfg.bucket, self.root.as_deref().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{run_artifact_isolation_suite, run_artifact_suite};

    fn endpoint() -> String {
        std::env::var("REELSMITH_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9333".into())
    }

    /// Fails (never skips) when no S3 server answers: CI starts one with scripts/s3-server.sh.
    async fn require_server() -> String {
        let ep = endpoint();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        if let Err(e) = client.get(&ep).send().await {
            panic!(
                "no S3 test server answers at {ep} ({e}). Start one with `bash scripts/s3-server.sh` \
                 (CI runs it from scripts/test.sh), or point REELSMITH_TEST_S3_ENDPOINT at another"
            );
        }
        ep
    }

    fn unique_bucket() -> String {
        // Bucket names: 3-63 lowercase letters, digits and hyphens.
        format!("reelsmith-test-{}", crate::new_id("b").replace('_', "-"))
    }

    fn config(ep: &str, bucket: &str, prefix: Option<&str>) -> S3Config {
        S3Config {
            endpoint: Some(ep.into()),
            prefix: prefix.map(Into::into),
            access_key_id: Some("reelsmith-test".into()),
            secret_access_key: Some("reelsmith-test-secret".into()),
            allow_http: ep.starts_with("http://"),
            create_bucket: true,
            ..S3Config::new(bucket)
        }
    }

    /// Empties and removes a test bucket.
    async fn drop_bucket(s: &S3Artifacts) {
        let store = s.object_store();
        let all = store.list(None).map_ok(|m| m.location).boxed();
        let left: Vec<_> = store.delete_stream(all).collect().await;
        assert!(left.iter().all(|r| r.is_ok()), "cleanup: {left:?}");
        let url = store.signed_url(reqwest::Method::DELETE, &ObjectPath::ROOT, Duration::from_secs(60)).await.unwrap();
        let resp = reqwest::Client::new().delete(url.as_str()).send().await.unwrap();
        assert!(resp.status().is_success(), "delete bucket: {}", resp.status());
    }

    #[tokio::test]
    async fn s3_artifacts_pass_the_artifact_conformance_suite() {
        let ep = require_server().await;
        let bucket = unique_bucket();
        let scratch = tempfile::tempdir().unwrap();
        let a = S3Artifacts::connect(config(&ep, &bucket, Some("deploy-a/artifacts"))).await.unwrap();
        run_artifact_suite(&a, scratch.path()).await;
        // Two stores in one bucket, told apart by their prefixes; and the bucket root.
        let b = S3Artifacts::connect(config(&ep, &bucket, Some("deploy-b"))).await.unwrap();
        run_artifact_isolation_suite(&a, &b, scratch.path()).await;
        let root = S3Artifacts::connect(config(&ep, &bucket, None)).await.unwrap();
        run_artifact_suite(&root, scratch.path()).await;
        drop_bucket(&a).await;
    }

    #[tokio::test]
    async fn s3_big_files_go_up_in_parts_and_small_ones_in_one_put() {
        let ep = require_server().await;
        let bucket = unique_bucket();
        let a = S3Artifacts::connect(config(&ep, &bucket, Some("mp"))).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.bin");
        // 20 MiB + 1 in 8 MiB parts: 3 parts.
        let data: Vec<u8> = (0..20 * MIB + 1).map(|i| (i % 251) as u8).collect();
        std::fs::write(&big, &data).unwrap();
        assert_eq!(a.put_file("gen_mp/video.mp4", &big).await.unwrap(), data.len() as u64);
        let small = dir.path().join("small.bin");
        std::fs::write(&small, vec![7u8; (8 * MIB) as usize]).unwrap(); // exactly the threshold
        a.put_file("gen_mp/thumb.jpg", &small).await.unwrap();
        // S3 (and moto) give a multipart object the ETag `"md5-of-part-md5s-N"`.
        let store = a.object_store();
        let etag = store.head(&a.location("gen_mp/video.mp4").unwrap()).await.unwrap().e_tag.unwrap();
        assert!(etag.trim_matches('"').ends_with("-3"), "a 20 MiB file is uploaded in 3 parts, ETag {etag}");
        let etag = store.head(&a.location("gen_mp/thumb.jpg").unwrap()).await.unwrap().e_tag.unwrap();
        assert!(!etag.contains('-'), "a file at the threshold is one PUT, ETag {etag}");
        // The source stays where it was (object storage copies it).
        assert!(big.exists());
        drop_bucket(&a).await;
    }

    #[tokio::test]
    async fn s3_presigned_get_serves_byte_ranges_without_credentials() {
        let ep = require_server().await;
        let bucket = unique_bucket();
        let a = S3Artifacts::connect(config(&ep, &bucket, Some("signed"))).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("v.bin");
        std::fs::write(&src, b"0123456789").unwrap();
        a.put_file("gen_sig/video.mp4", &src).await.unwrap();
        let url = a.presigned_get("gen_sig/video.mp4", Duration::from_secs(300)).await.unwrap().unwrap();
        assert!(url.contains("X-Amz-Signature=") && url.contains("/signed/gen_sig/video.mp4"), "{url}");
        let resp = reqwest::Client::new().get(&url).header("Range", "bytes=2-5").send().await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::PARTIAL_CONTENT);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), b"2345");
        let whole = reqwest::get(&url).await.unwrap();
        assert_eq!(whole.status(), reqwest::StatusCode::OK);
        assert_eq!(whole.bytes().await.unwrap().as_ref(), b"0123456789");
        assert!(a.presigned_get("../x", Duration::from_secs(60)).await.is_err());
        drop_bucket(&a).await;
    }

    #[tokio::test]
    async fn s3_ping_fails_on_a_missing_bucket_and_connect_creates_it() {
        let ep = require_server().await;
        let bucket = unique_bucket();
        let cfg = S3Config { create_bucket: false, ..config(&ep, &bucket, Some("p")) };
        let missing = S3Artifacts::connect(cfg.clone()).await.unwrap();
        let e = missing.ping().await.unwrap_err();
        assert_eq!(e.code(), "object_store", "{e}");
        assert!(missing.describe().starts_with(&format!("s3://{bucket}/p at http")), "{}", missing.describe());
        let a = S3Artifacts::connect(S3Config { create_bucket: true, ..cfg.clone() }).await.unwrap();
        a.ping().await.unwrap();
        assert!(!a.ensure_bucket().await.unwrap(), "an existing bucket is kept");
        missing.ping().await.unwrap();
        drop_bucket(&a).await;
    }

    #[test]
    fn s3_config_defaults_validation_and_redaction() {
        let cfg: S3Config = serde_json::from_value(serde_json::json!({
            "endpoint": "http://127.0.0.1:9333", "bucket": "b",
            "access_key_id": "k", "secret_access_key": "hunter2"
        }))
        .unwrap();
        assert_eq!(
            (cfg.region.as_str(), cfg.multipart_threshold_bytes, cfg.multipart_part_bytes),
            ("us-east-1", 8 * MIB, 8 * MIB)
        );
        assert!(cfg.path_style(), "custom endpoints default to path style");
        assert!(!S3Config::new("b").path_style(), "AWS defaults to virtual-hosted style");
        assert!(!format!("{cfg:?}").contains("hunter2"), "secrets are redacted");
        assert_eq!(redact_url("https://u:p@minio.local:9000"), "https://minio.local:9000");
        assert!(S3Artifacts::new(S3Config { multipart_part_bytes: MIB, ..cfg.clone() }).is_err(), "parts under 5 MiB");
        assert!(S3Artifacts::new(S3Config { prefix: Some("../up".into()), ..cfg.clone() }).is_err());
        let a = S3Artifacts::new(S3Config { prefix: Some("/x/y/".into()), ..cfg }).unwrap();
        assert_eq!(a.location("gen_1/v.mp4").unwrap().as_ref(), "x/y/gen_1/v.mp4");
        assert!(a.location("gen_1/../v").is_err());
    }
}
