//! D-ID's API (`https://api.d-id.com`): the calls a talk needs. Auth is `Basic <key>` (D-ID
//! hands out keys ready for it); uploads are multipart (`POST /images` field `image`,
//! `POST /audios` field `audio`) answering `{id, url}`; `POST /talks` answers `{id, status}`;
//! `GET /talks/{id}` reports `created`, `started`, `done` (with `result_url`, a pre-signed link)
//! or `error`/`rejected` (with `error: {kind, description}`); errors are `{kind, description}`.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::Failure;

#[cfg(feature = "fake")]
pub mod fake;

/// A small client for the parts of D-ID's API a talk needs.
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Client {
    pub fn new(http: reqwest::Client, base: &str, api_key: &str) -> Self {
        // D-ID hands out keys ready for Basic auth (`base64(user):secret`).
        Self { http, base: base.trim_end_matches('/').to_string(), auth: format!("Basic {api_key}") }
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, Failure> {
        let resp = req
            .header("authorization", &self.auth)
            .header("accept", "application/json")
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| Failure::Retryable(format!("D-ID {what}: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        // D-ID's errors: {"kind": "...", "description": "..."}.
        let why = match (body["kind"].as_str(), body["description"].as_str()) {
            (Some(k), Some(d)) => format!("{k}: {d}"),
            _ => body.to_string(),
        };
        let msg = format!("D-ID {what} answered {status}: {why}");
        Err(if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Failure::Retryable(msg)
        } else {
            Failure::Final(msg)
        })
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
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(format!("{name}.{ext}"))
            .mime_str(media_type)
            .map_err(|e| Failure::Final(e.to_string()))?;
        let form = reqwest::multipart::Form::new().part(field, part);
        let v = self
            .call(self.http.post(format!("{}/{endpoint}", self.base)).multipart(form), &format!("POST /{endpoint}"))
            .await?;
        v["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Failure::Final(format!("D-ID POST /{endpoint}: no url in {v}")))
    }

    pub async fn create_talk(&self, body: &Value) -> Result<String, Failure> {
        let v = self.call(self.http.post(format!("{}/talks", self.base)).json(body), "POST /talks").await?;
        v["id"].as_str().map(str::to_string).ok_or_else(|| Failure::Final(format!("D-ID POST /talks: no id in {v}")))
    }

    pub async fn talk(&self, id: &str) -> Result<Value, Failure> {
        self.call(self.http.get(format!("{}/talks/{id}", self.base)), "GET /talks").await
    }

    /// Downloads a result (D-ID's `result_url` is a pre-signed link: no auth header).
    pub async fn download(&self, url: &str, dest: &Path, limit: u64) -> Result<u64, Failure> {
        crate::http::download_to(&self.http, url, dest, limit, "the D-ID result").await
    }
}
