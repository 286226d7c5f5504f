//! Pixabay (`https://pixabay.com`): the key goes in the query string (so URLs are never
//! logged); images at `GET /api/?key&q&image_type=photo&orientation=horizontal|vertical&per_page`
//! answering `{totalHits, hits: [{id, pageURL, largeImageURL, imageWidth, imageHeight, user}]}`;
//! videos at `GET /api/videos/?key&q&per_page` answering `{hits: [{id, pageURL, duration, user,
//! videos: {large, medium, small, tiny: {url, width, height}}}]}`. Results must be cached for
//! 24 hours. Behind Cloudflare a 429 may be an HTML page; it classifies the same.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{MediaKind, Orientation, Search, StockItem, StockSource, pick_rendition};
use crate::http::{MAX_JSON_BYTES, send};
use crate::{Failure, Gate};

pub struct Pixabay {
    http: reqwest::Client,
    base: String,
    key: String,
    gate: Arc<Gate>,
}

impl Pixabay {
    /// `base`: `https://pixabay.com` (or a test server).
    pub fn new(http: reqwest::Client, base: &str, key: &str, gate: Arc<Gate>) -> Self {
        Self { http, base: base.trim_end_matches('/').to_string(), key: key.to_string(), gate }
    }

    async fn attempt(&self, s: &Search) -> Result<Vec<StockItem>, Failure> {
        let (path, what) = match s.kind {
            MediaKind::Photo => ("/api/", "pixabay GET /api/"),
            MediaKind::Video => ("/api/videos/", "pixabay GET /api/videos/"),
        };
        // Queries are at most 100 characters.
        let q: String = s.query.chars().take(100).collect();
        let per_page = s.per_page.clamp(3, 200).to_string();
        let mut params = vec![("key", self.key.as_str()), ("q", q.as_str()), ("per_page", per_page.as_str())];
        if s.kind == MediaKind::Photo {
            params.push(("image_type", "photo"));
            params.push(match s.orientation {
                Orientation::Landscape => ("orientation", "horizontal"),
                Orientation::Portrait => ("orientation", "vertical"),
                Orientation::Square => ("orientation", "all"),
            });
        }
        let req = self.http.get(format!("{}{path}", self.base)).query(&params);
        let (_, body) = send(req, what, MAX_JSON_BYTES).await?;
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| Failure::Retryable(format!("{what}: not JSON: {e}")))?;
        let hits = v["hits"].as_array().map_or(&[][..], Vec::as_slice);
        Ok(hits
            .iter()
            .filter_map(|h| match s.kind {
                MediaKind::Photo => photo(h),
                MediaKind::Video => video(h, s.min_width, s.orientation),
            })
            .collect())
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string()))
}

fn photo(h: &Value) -> Option<StockItem> {
    Some(StockItem {
        provider: "pixabay".into(),
        id: text(&h["id"])?,
        kind: MediaKind::Photo,
        url: h["largeImageURL"].as_str().or(h["webformatURL"].as_str())?.to_string(),
        width: h["imageWidth"].as_u64()? as u32,
        height: h["imageHeight"].as_u64()? as u32,
        duration_s: None,
        author: h["user"].as_str().map(str::to_string),
        page_url: h["pageURL"].as_str().unwrap_or_default().to_string(),
    })
}

fn video(h: &Value, min_width: u32, orientation: Orientation) -> Option<StockItem> {
    let renditions: Vec<&Value> = ["large", "medium", "small", "tiny"]
        .iter()
        .map(|k| &h["videos"][k])
        .filter(|r| r["url"].as_str().is_some_and(|u| !u.is_empty()) && r["width"].as_u64().unwrap_or(0) > 0)
        .collect();
    let r = pick_rendition(&renditions, |r| r["width"].as_u64().unwrap_or(0) as u32, min_width)?;
    let (w, h2) = (r["width"].as_u64()? as u32, r["height"].as_u64().unwrap_or(0) as u32);
    // Video search has no orientation filter: keep the ones of the wanted shape.
    if Orientation::of(w, h2) != orientation {
        return None;
    }
    Some(StockItem {
        provider: "pixabay".into(),
        id: text(&h["id"])?,
        kind: MediaKind::Video,
        url: r["url"].as_str()?.to_string(),
        width: w,
        height: h2,
        duration_s: h["duration"].as_f64(),
        author: h["user"].as_str().map(str::to_string),
        page_url: h["pageURL"].as_str().unwrap_or_default().to_string(),
    })
}

#[async_trait]
impl StockSource for Pixabay {
    fn name(&self) -> &str {
        "pixabay"
    }

    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    async fn search(&self, s: &Search) -> Result<Vec<StockItem>, Failure> {
        self.gate.call("search", || self.attempt(s)).await.0
    }
}
