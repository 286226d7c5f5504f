//! D-ID's API (`https://api.d-id.com`): the calls a talk needs. Auth is `Basic <key>` (D-ID
//! hands out keys ready for it); uploads are multipart (`POST /images` field `image`,
//! `POST /audios` field `audio`) answering `{id, url}`; `POST /talks` answers `{id, status}`;
//! `GET /talks/{id}` reports `created`, `started`, `done` (with `result_url`, a pre-signed link)
//! or `error`/`rejected` (with `error: {kind, description}`); errors are `{kind, description}`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::http::{MAX_JSON_BYTES, send};
use crate::{Failure, Gate, Limits};

#[cfg(feature = "fake")]
pub mod fake;

/// A small client for the parts of D-ID's API a talk needs. Every call goes through its gate
/// (breaker, concurrency, deadline, retries by failure class), like every other provider's.
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: String,
    gate: Arc<Gate>,
}

/// How the service calls D-ID by default: a few talks at once, a minute per call.
pub fn limits() -> Limits {
    Limits { concurrency: 8, timeout: Duration::from_secs(60), max_attempts: 3, ..Limits::default() }
}

impl Client {
    pub fn new(http: reqwest::Client, base: &str, api_key: &str, gate: Arc<Gate>) -> Self {
        // D-ID hands out keys ready for Basic auth (`base64(user):secret`).
        Self { http, base: base.trim_end_matches('/').to_string(), auth: format!("Basic {api_key}"), gate }
    }

    /// One call: `build` makes the request afresh for each attempt. Answers are bounded and
    /// classified (D-ID's errors are `{kind, description}`; 402 is out of credits).
    async fn call(
        &self,
        what: &str,
        build: impl Fn() -> Result<reqwest::RequestBuilder, Failure>,
    ) -> Result<Value, Failure> {
        let what = format!("D-ID {what}");
        let attempt = || async {
            let req = build()?.header("authorization", &self.auth).header("accept", "application/json");
            let (_, body) = send(req.timeout(self.gate.limits().timeout), &what, MAX_JSON_BYTES).await?;
            serde_json::from_slice::<Value>(&body).map_err(|e| Failure::Retryable(format!("{what}: not JSON: {e}")))
        };
        self.gate.call("d-id", attempt).await.0
    }

    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// `POST /images` or `/audios` (multipart); returns the `url` to use in a talk.
    pub async fn upload(&self, kind: &str, path: &Path, media_type: &str) -> Result<String, Failure> {
        let bytes =
            tokio::fs::read(path).await.map_err(|e| Failure::Retryable(format!("reading {}: {e}", path.display())))?;
        let (endpoint, field, name) = match kind {
            "image" => ("images", "image", "photo"),
            _ => ("audios", "audio", "audio"),
        };
        let ext = media_type.rsplit('/').next().unwrap_or("bin");
        let url = format!("{}/{endpoint}", self.base);
        let v = self
            .call(&format!("POST /{endpoint}"), || {
                let part = reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name(format!("{name}.{ext}"))
                    .mime_str(media_type)
                    .map_err(|e| Failure::Final(e.to_string()))?;
                Ok(self.http.post(&url).multipart(reqwest::multipart::Form::new().part(field, part)))
            })
            .await?;
        v["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Failure::Final(format!("D-ID POST /{endpoint}: no url in {v}")))
    }

    pub async fn create_talk(&self, body: &Value) -> Result<String, Failure> {
        let url = format!("{}/talks", self.base);
        let v = self.call("POST /talks", || Ok(self.http.post(&url).json(body))).await?;
        v["id"].as_str().map(str::to_string).ok_or_else(|| Failure::Final(format!("D-ID POST /talks: no id in {v}")))
    }

    pub async fn talk(&self, id: &str) -> Result<Value, Failure> {
        let url = format!("{}/talks/{id}", self.base);
        self.call("GET /talks", || Ok(self.http.get(&url))).await
    }

    /// Downloads a result (D-ID's `result_url` is a pre-signed link: no auth header).
    pub async fn download(&self, url: &str, dest: &Path, limit: u64) -> Result<u64, Failure> {
        crate::http::download_to(&self.http, url, dest, limit, "the D-ID result").await
    }
}
