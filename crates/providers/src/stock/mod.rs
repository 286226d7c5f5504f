//! Stock photos and videos: Pexels (`Authorization: <key>`, photos under `/v1/search`, videos
//! under `/videos/search`) and Pixabay (`key` in the query; images at `/api/`, videos at
//! `/api/videos/`). Each search answers with items carrying what attribution needs (author,
//! page) and the link to download; searches are cached for 24 hours (Pixabay requires it) and
//! empty results are never kept.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Failure, Gate};

#[cfg(feature = "fake")]
pub mod fake;
pub mod pexels;
pub mod pixabay;

/// Photo or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Photo,
    Video,
}

/// The frame's shape, as searches filter by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Orientation {
    Landscape,
    Portrait,
    Square,
}

impl Orientation {
    pub fn of(width: u32, height: u32) -> Self {
        match width.cmp(&height) {
            std::cmp::Ordering::Greater => Orientation::Landscape,
            std::cmp::Ordering::Less => Orientation::Portrait,
            std::cmp::Ordering::Equal => Orientation::Square,
        }
    }
}

/// One search result: what to download and whom to credit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockItem {
    pub provider: String,
    pub id: String,
    pub kind: MediaKind,
    /// The file to download (a rendition near the wanted width).
    pub url: String,
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The item's page on the provider's site (attribution links there).
    pub page_url: String,
}

/// A search: what, which kind, which shape, and the width the video needs (renditions are
/// chosen near it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Search {
    pub query: String,
    pub kind: MediaKind,
    pub orientation: Orientation,
    pub min_width: u32,
    pub per_page: u32,
}

#[async_trait]
pub trait StockSource: Send + Sync {
    fn name(&self) -> &str;
    fn gate(&self) -> &Arc<Gate>;
    /// One page of results, best first (uncached; see [`crate::cache`]).
    async fn search(&self, s: &Search) -> Result<Vec<StockItem>, Failure>;
}

/// Largest stock file downloaded.
pub const MAX_DOWNLOAD_BYTES: u64 = 200 << 20;

/// Downloads `url` to `dest` (written aside, then renamed), at most `limit` bytes.
pub async fn download(http: &reqwest::Client, url: &str, dest: &Path, limit: u64, what: &str) -> Result<u64, Failure> {
    crate::http::download_to(http, url, dest, limit, what).await
}

/// The rendition to download: the narrowest at least `min_width` wide, else the widest.
pub(crate) fn pick_rendition<T>(items: &[T], width: impl Fn(&T) -> u32, min_width: u32) -> Option<&T> {
    items
        .iter()
        .filter(|i| width(i) >= min_width)
        .min_by_key(|i| width(i))
        .or_else(|| items.iter().max_by_key(|i| width(i)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::fake::{FAKE_PEXELS_KEY, FAKE_PIXABAY_KEY, FakeStock, Offer};
    use super::*;
    use crate::Limits;

    fn quick() -> Arc<Gate> {
        Arc::new(Gate::new(
            "stock",
            Limits {
                base_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                ..Limits::default()
            },
        ))
    }

    fn search(q: &str, kind: MediaKind) -> Search {
        Search { query: q.into(), kind, orientation: Orientation::Landscape, min_width: 320, per_page: 10 }
    }

    fn offer(q: &str, kind: &'static str, name: &str) -> Offer {
        Offer { query: q.into(), kind, name: name.into(), width: 640, height: 360, bytes: vec![7; 1000] }
    }

    #[tokio::test]
    async fn pexels_and_pixabay_searches_read_their_wire_formats() {
        let fake = FakeStock::start().await;
        fake.offer(offer("lava", "photo", "lava.jpg"));
        fake.offer(offer("lava", "video", "lava.mp4"));
        let http = reqwest::Client::new();
        let pexels = pexels::Pexels::new(http.clone(), &fake.base, FAKE_PEXELS_KEY, quick());
        let pixabay = pixabay::Pixabay::new(http.clone(), &fake.base, FAKE_PIXABAY_KEY, quick());
        for source in [&pexels as &dyn StockSource, &pixabay] {
            let photos = source.search(&search("lava", MediaKind::Photo)).await.unwrap();
            assert_eq!(photos.len(), 1, "{}", source.name());
            assert!(photos[0].url.ends_with("/media/lava.jpg"));
            assert!(photos[0].author.is_some() && photos[0].page_url.starts_with("https://"));
            let videos = source.search(&search("lava", MediaKind::Video)).await.unwrap();
            assert_eq!(videos.len(), 1, "{}", source.name());
            assert_eq!((videos[0].width, videos[0].duration_s), (640, Some(8.0)));
            assert!(source.search(&search("penguin", MediaKind::Photo)).await.unwrap().is_empty());
        }
        let seen = fake.searches();
        assert_eq!(seen[0].authorization.as_deref(), Some(FAKE_PEXELS_KEY));
        assert_eq!(seen[0].query["orientation"], "landscape");
        let pix = seen.iter().find(|s| s.path == "/api/").unwrap();
        assert_eq!((pix.query["key"].as_str(), pix.query["orientation"].as_str()), (FAKE_PIXABAY_KEY, "horizontal"));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.jpg");
        let n = download(&http, &format!("{}/media/lava.jpg", fake.base), &dest, 10_000, "pexels").await.unwrap();
        assert_eq!(n, 1000);
        let err = download(&http, &format!("{}/media/lava.jpg", fake.base), &dest, 999, "pexels").await.unwrap_err();
        assert!(err.to_string().contains("larger than 999 bytes"));
    }

    #[tokio::test]
    async fn a_wrong_key_is_final_and_a_429_waits_for_its_hint() {
        let fake = FakeStock::start().await;
        fake.offer(offer("ocean", "photo", "o.jpg"));
        let http = reqwest::Client::new();
        let bad = pixabay::Pixabay::new(http.clone(), &fake.base, "wrong", quick());
        let err = bad.search(&search("ocean", MediaKind::Photo)).await.unwrap_err();
        assert!(matches!(&err, Failure::Final(m) if m.contains("Invalid or missing API key")), "{err:?}");
        // The key travels in Pixabay's query string: errors never show the URL.
        assert!(!err.to_string().contains("wrong"), "{err}");
        let pexels = pexels::Pexels::new(http, &fake.base, FAKE_PEXELS_KEY, quick());
        fake.refuse_next(429, Some(1));
        let start = Instant::now();
        assert_eq!(pexels.search(&search("ocean", MediaKind::Photo)).await.unwrap().len(), 1);
        let at: Vec<Instant> = fake.searches().iter().skip(1).map(|s| s.at).collect();
        assert!(at[1].duration_since(at[0]) >= Duration::from_secs(1), "{:?}", at[1].duration_since(at[0]));
        assert!(start.elapsed() >= Duration::from_secs(1));
    }
}
