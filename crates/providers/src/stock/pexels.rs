//! Pexels (`https://api.pexels.com`): `Authorization: <key>` (no "Bearer"); photos at
//! `GET /v1/search?query&orientation&per_page` answering `{photos: [{id, width, height, url,
//! photographer, src: {original, large2x, large, medium, …}}]}`; videos at
//! `GET /videos/search?query&orientation&per_page` answering `{videos: [{id, width, height, url,
//! duration, user: {name}, video_files: [{quality, file_type, width, height, link}]}]}`. Rate
//! headers come on 200s only; a 429 has none (the gate's backoff applies).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{MediaKind, Orientation, Search, StockItem, StockSource, pick_rendition};
use crate::http::{MAX_JSON_BYTES, send};
use crate::{Failure, Gate};

pub struct Pexels {
    http: reqwest::Client,
    base: String,
    key: String,
    gate: Arc<Gate>,
}

impl Pexels {
    /// `base`: `https://api.pexels.com` (or a test server).
    pub fn new(http: reqwest::Client, base: &str, key: &str, gate: Arc<Gate>) -> Self {
        Self { http, base: base.trim_end_matches('/').to_string(), key: key.to_string(), gate }
    }

    async fn attempt(&self, s: &Search) -> Result<Vec<StockItem>, Failure> {
        let (path, what) = match s.kind {
            MediaKind::Photo => ("/v1/search", "pexels GET /v1/search"),
            MediaKind::Video => ("/videos/search", "pexels GET /videos/search"),
        };
        let orientation = match s.orientation {
            Orientation::Landscape => "landscape",
            Orientation::Portrait => "portrait",
            Orientation::Square => "square",
        };
        let per_page = s.per_page.clamp(1, 80).to_string();
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .query(&[("query", s.query.as_str()), ("orientation", orientation), ("per_page", &per_page)])
            .header("authorization", &self.key)
            // Pexels refuses some requests without one (403).
            .header("user-agent", concat!("reelsmith/", env!("CARGO_PKG_VERSION")));
        let (_, body) = send(req, what, MAX_JSON_BYTES).await?;
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| Failure::Retryable(format!("{what}: not JSON: {e}")))?;
        Ok(match s.kind {
            MediaKind::Photo => photos(&v, s.min_width),
            MediaKind::Video => videos(&v, s.min_width),
        })
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string()))
}

fn photos(v: &Value, min_width: u32) -> Vec<StockItem> {
    let list = v["photos"].as_array().map_or(&[][..], Vec::as_slice);
    list.iter()
        .filter_map(|p| {
            let (w, h) = (p["width"].as_u64()? as u32, p["height"].as_u64()? as u32);
            // `large2x` is 940 px tall at twice the density; `original` is the upload itself.
            let url = if min_width > 1300 { p["src"]["original"].as_str() } else { p["src"]["large2x"].as_str() }
                .or(p["src"]["original"].as_str())?;
            Some(StockItem {
                provider: "pexels".into(),
                id: text(&p["id"])?,
                kind: MediaKind::Photo,
                url: url.to_string(),
                width: w,
                height: h,
                duration_s: None,
                author: p["photographer"].as_str().map(str::to_string),
                page_url: p["url"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

fn videos(v: &Value, min_width: u32) -> Vec<StockItem> {
    let list = v["videos"].as_array().map_or(&[][..], Vec::as_slice);
    list.iter()
        .filter_map(|item| {
            let files: Vec<&Value> = item["video_files"]
                .as_array()?
                .iter()
                .filter(|f| f["file_type"] == "video/mp4" && f["link"].is_string() && f["width"].is_u64())
                .collect();
            let file = pick_rendition(&files, |f| f["width"].as_u64().unwrap_or(0) as u32, min_width)?;
            Some(StockItem {
                provider: "pexels".into(),
                id: text(&item["id"])?,
                kind: MediaKind::Video,
                url: file["link"].as_str()?.to_string(),
                width: file["width"].as_u64()? as u32,
                height: file["height"].as_u64().unwrap_or(0) as u32,
                duration_s: item["duration"].as_f64(),
                author: item["user"]["name"].as_str().map(str::to_string),
                page_url: item["url"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

#[async_trait]
impl StockSource for Pexels {
    fn name(&self) -> &str {
        "pexels"
    }

    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    async fn search(&self, s: &Search) -> Result<Vec<StockItem>, Failure> {
        self.gate.call("search", || self.attempt(s)).await.0
    }
}
