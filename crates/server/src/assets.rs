//! Uploaded assets: kinds and sniffing, storage on this node and in shared storage, and
//! references (`asset:<id>`) in specs.

use std::collections::HashMap;
use std::path::Path;

use axum::body::Bytes;
use axum::http::StatusCode;
use reelsmith_spec::Spec;
use reelsmith_store::{Asset, JobState, ListFilter, now_ms};
use sha2::Digest;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub const ASSET_PREFIX: &str = "asset:";

/// What kinds of files a spec may use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Image,
    Audio,
    Font,
    /// A container with a video stream (MP4/MOV, WebM/Matroska): a scene's `video` clip.
    Video,
}

impl From<reelsmith_spec::FileKind> for Kind {
    fn from(k: reelsmith_spec::FileKind) -> Self {
        match k {
            reelsmith_spec::FileKind::Image => Kind::Image,
            reelsmith_spec::FileKind::Audio => Kind::Audio,
            reelsmith_spec::FileKind::Video => Kind::Video,
            reelsmith_spec::FileKind::Font => Kind::Font,
        }
    }
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Image => "an image",
            Kind::Audio => "audio",
            Kind::Font => "a font",
            Kind::Video => "a video",
        }
    }
}

/// The demuxer FFmpeg must find for a sniffed audio/video media type (an ID3 tag in front of a
/// playlist is not an MP3).
fn expected_format(media_type: &str) -> &'static [&'static str] {
    match media_type {
        "audio/mpeg" => &["mp3", "aac"],
        "audio/wav" => &["wav"],
        "audio/ogg" => &["ogg"],
        "audio/flac" => &["flac"],
        "audio/mp4" => &["mov"],
        "audio/webm" => &["matroska"],
        _ => &[],
    }
}

/// Recognises a file from its first bytes (never from its name).
pub fn sniff(bytes: &[u8]) -> Option<(Kind, &'static str)> {
    if let Ok(f) = image::guess_format(bytes) {
        return Some((Kind::Image, f.to_mime_type()));
    }
    let b = bytes;
    let audio = if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WAVE") {
        Some("audio/wav")
    } else if b.starts_with(b"OggS") {
        Some("audio/ogg")
    } else if b.starts_with(b"fLaC") {
        Some("audio/flac")
    } else if b.starts_with(b"ID3") || (b.len() > 1 && b[0] == 0xFF && b[1] & 0xE0 == 0xE0) {
        Some("audio/mpeg")
    } else if b.get(4..8) == Some(b"ftyp") {
        Some("audio/mp4")
    } else if b.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("audio/webm")
    } else {
        None
    };
    if let Some(m) = audio {
        return Some((Kind::Audio, m));
    }
    if b.starts_with(&[0, 1, 0, 0]) || b.starts_with(b"true") {
        return Some((Kind::Font, "font/ttf"));
    }
    if b.starts_with(b"OTTO") {
        return Some((Kind::Font, "font/otf"));
    }
    if b.starts_with(b"ttcf") {
        return Some((Kind::Font, "font/collection"));
    }
    None
}

/// The kind of a stored asset, from the media type [`sniff`] gave it.
pub fn sniff_kind(media_type: &str) -> Option<Kind> {
    match media_type.split('/').next()? {
        "image" => Some(Kind::Image),
        "audio" => Some(Kind::Audio),
        "font" => Some(Kind::Font),
        "video" => Some(Kind::Video),
        _ => None,
    }
}

/// Checks and stores uploaded bytes as an asset (idempotent: same bytes, same asset).
pub async fn store_asset(
    state: &AppState,
    bytes: Bytes,
    file_name: Option<String>,
    api_key_id: Option<String>,
    what: &str,
) -> ApiResult<Asset> {
    store_new_asset(state, bytes, file_name, api_key_id, what).await.map(|(a, _)| a)
}

/// [`store_asset`], also saying whether the asset is new (not held by this key before).
pub async fn store_new_asset(
    state: &AppState,
    bytes: Bytes,
    file_name: Option<String>,
    api_key_id: Option<String>,
    what: &str,
) -> ApiResult<(Asset, bool)> {
    if bytes.is_empty() {
        return Err(ApiError::unprocessable("empty_file", format!("{what} is empty")));
    }
    let Some((kind, mut media_type)) = sniff(&bytes) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{what} is not an image (JPEG, PNG, WebP, GIF, BMP, TIFF), audio (WAV, MP3, OGG, FLAC, M4A), video (MP4, MOV, WebM) or font (TTF, OTF) file"
            ),
        ));
    };
    let hashed = bytes.clone();
    let sha = tokio::task::spawn_blocking(move || hex::encode(sha2::Sha256::digest(&hashed)))
        .await
        .map_err(ApiError::internal)?;
    // Content-addressed per key: the same bytes from one key are one asset, and keys never share.
    let scope = api_key_id.as_deref().unwrap_or("");
    let id = format!("ast_{}", &hex::encode(sha2::Sha256::digest(format!("{scope}:{sha}").as_bytes()))[..32]);
    let path = state.assets_dir.join(&id);
    let known = state.meta.asset(&id).await?.is_some();
    if !known {
        // The key's storage quota: what it keeps, plus this upload.
        let (_, used) = state.meta.asset_usage(api_key_id.as_deref()).await?;
        let quota = state.config.asset_quota_mb.saturating_mul(1 << 20);
        if used.saturating_add(bytes.len() as u64) > quota {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "storage_quota_exceeded",
                format!(
                    "{what}: this key keeps {} MB of assets and may keep {} MB; delete some (DELETE /api/v1/assets/{{id}}) first",
                    used >> 20,
                    state.config.asset_quota_mb
                ),
            ));
        }
    }
    let (mut width, mut height) = (None, None);
    if kind == Kind::Image {
        // Header only: a decompression bomb is refused before a single pixel is decoded.
        let (w, h) = image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
            .with_guessed_format()
            .map_err(ApiError::internal)?
            .into_dimensions()
            .map_err(|e| ApiError::unprocessable("corrupt_image", format!("{what}: cannot read the image: {e}")))?;
        let limit = reelsmith_spec::limits::MAX_IMAGE_PIXELS;
        if w as u64 * h as u64 > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "image_too_large",
                format!("{what} is {w}x{h} pixels; the limit is {} megapixels", limit / 1_000_000),
            ));
        }
        (width, height) = (Some(w), Some(h));
    }
    let stored = tokio::fs::metadata(&path).await.is_ok();
    let file = if stored { path.clone() } else { state.assets_dir.join(format!(".{}", reelsmith_store::new_id("up"))) };
    if !stored {
        tokio::fs::write(&file, &bytes).await.map_err(ApiError::internal)?;
    }
    if kind == Kind::Audio {
        // MP4 and WebM hold audio, video or both: the streams decide.
        let probe_path = file.clone();
        let probed = tokio::task::spawn_blocking(move || reelsmith_media::ffmpeg::probe(&probe_path))
            .await
            .map_err(ApiError::internal)?
            .and_then(|p| {
                let expected = expected_format(media_type);
                if p.format.split(',').any(|f| expected.contains(&f)) {
                    Ok(p)
                } else {
                    Err(reelsmith_media::ffmpeg::FfmpegError::Probe(format!(
                        "it starts like {media_type} but FFmpeg reads it as '{}'",
                        p.format
                    )))
                }
            });
        // FFmpeg's words name the staging file; the caller knows the upload by its own name.
        let staged = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let probed = probed.map_err(|e| e.to_string().replace(&staged, what).replace(&id, what));
        let refuse = |e: ApiError| async {
            if !stored {
                let _ = tokio::fs::remove_file(&file).await;
            }
            Err(e)
        };
        match probed.as_ref().ok().and_then(|p| p.video()).filter(|v| v.width > 0) {
            Some(v) if matches!(media_type, "audio/mp4" | "audio/webm") => {
                let limit = reelsmith_spec::limits::MAX_VIDEO_PIXELS;
                if v.width as u64 * v.height as u64 > limit {
                    let msg =
                        format!("{what} is a {}x{} video; the limit is {limit} pixels per frame", v.width, v.height);
                    return refuse(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "video_too_large", msg)).await;
                }
                media_type = if media_type == "audio/mp4" { "video/mp4" } else { "video/webm" };
                (width, height) = (Some(v.width), Some(v.height));
            }
            _ if probed.as_ref().is_ok_and(|p| p.audio().is_some()) => {}
            _ => {
                let why = probed.err().unwrap_or_else(|| "it has no audio stream".to_string());
                let msg = format!("{what}: cannot read the audio: {why}");
                return refuse(ApiError::unprocessable("corrupt_audio", msg)).await;
            }
        }
    }
    if !stored {
        tokio::fs::rename(&file, &path).await.map_err(ApiError::internal)?;
    }
    // Workers on other nodes read it from shared storage.
    crate::assets::share_asset(state, &id, &path).await.map_err(ApiError::internal)?;
    let asset = Asset {
        id,
        sha256: sha,
        media_type: media_type.into(),
        bytes: bytes.len() as u64,
        width,
        height,
        file_name,
        api_key_id,
        created_at_ms: now_ms(),
    };
    state.meta.put_asset(&asset).await?;
    Ok((asset, !known))
}

/// Removes an asset's record, its file and its shared copy.
pub async fn remove_asset(state: &AppState, id: &str) -> ApiResult<()> {
    state.meta.delete_asset(id).await?;
    let _ = tokio::fs::remove_file(state.assets_dir.join(id)).await;
    if state.shared_assets {
        state.artifacts.delete_prefix(&crate::assets::asset_key(id)).await?;
    }
    Ok(())
}

/// Which of `ids` queued or running generations (of `key`, or of anyone with None) use:
/// (asset, generation) pairs.
pub async fn assets_in_use(state: &AppState, key: Option<&str>, ids: &[String]) -> ApiResult<Vec<(String, String)>> {
    let mut users = vec![];
    for s in [JobState::Queued, JobState::Running] {
        let mut cursor = None;
        loop {
            let f = ListFilter {
                state: Some(s),
                api_key_id: key.map(str::to_string),
                cursor: cursor.clone(),
                limit: 500,
                ..Default::default()
            };
            let page = state.meta.list_generations(&f).await?;
            for g in &page {
                let text = g.spec.to_string();
                for id in ids.iter().filter(|id| text.contains(&format!("\"{ASSET_PREFIX}{id}\""))) {
                    users.push((id.clone(), g.id.clone()));
                }
            }
            if page.len() < 500 {
                break;
            }
            cursor = page.last().map(|g| g.id.clone());
        }
    }
    Ok(users)
}

/// The spec as the engine reads it: assets are files in the assets folder.
pub fn engine_view(spec: &Spec) -> Spec {
    let mut s = spec.clone();
    for (_, _, file) in s.files_mut() {
        if let Some(id) = file.strip_prefix(ASSET_PREFIX) {
            *file = id.to_string();
        }
    }
    s
}

/// Makes every asset the spec names present in this node's assets folder, fetching it from
/// shared artifact storage when another node received the upload.
pub(crate) async fn ensure_assets(state: &AppState, spec: &Spec) -> Result<(), String> {
    if !state.shared_assets {
        return Ok(());
    }
    let mut spec = spec.clone();
    let ids: Vec<String> = spec.files_mut().into_iter().map(|(_, _, f)| f.clone()).collect();
    for id in ids {
        let path = state.assets_dir.join(&id);
        if tokio::fs::metadata(&path).await.is_ok() {
            continue;
        }
        fetch_asset(state, &id, &path).await?;
    }
    Ok(())
}

async fn fetch_asset(state: &AppState, id: &str, path: &Path) -> Result<(), String> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let key = asset_key(id);
    let size = state
        .artifacts
        .size(&key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("asset {id} is neither on this node nor in shared storage"))?;
    let tmp = state.assets_dir.join(format!(".{}", reelsmith_store::new_id("dl")));
    let mut f = tokio::fs::File::create(&tmp).await.map_err(|e| e.to_string())?;
    let mut body = state.artifacts.read_range(&key, 0, size).await.map_err(|e| e.to_string())?;
    while let Some(chunk) = body.next().await {
        f.write_all(&chunk.map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    }
    f.flush().await.map_err(|e| e.to_string())?;
    drop(f);
    tokio::fs::rename(&tmp, path).await.map_err(|e| e.to_string())
}

/// Where an uploaded asset lives in artifact storage.
pub fn asset_key(id: &str) -> String {
    format!("assets/{id}")
}

/// Copies a freshly uploaded asset to shared storage, so workers on other nodes can read it.
pub(crate) async fn share_asset(state: &AppState, id: &str, path: &Path) -> Result<(), String> {
    if !state.shared_assets {
        return Ok(());
    }
    if state.artifacts.size(&asset_key(id)).await.map_err(|e| e.to_string())?.is_some() {
        return Ok(());
    }
    // put_file may move its source: hand it a copy.
    let tmp = state.assets_dir.join(format!(".{}", reelsmith_store::new_id("sh")));
    tokio::fs::copy(path, &tmp).await.map_err(|e| e.to_string())?;
    let r = state.artifacts.put_file(&asset_key(id), &tmp).await.map_err(|e| e.to_string());
    let _ = tokio::fs::remove_file(&tmp).await;
    r.map(|_| ())
}

/// Every file a spec names, as the caller's assets: a file uploaded with the request becomes
/// its `asset:` ref, an `asset:` ref must be one of the caller's assets of the field's kind.
/// Returns what is wrong (paths under `spec.`) and the assets used. Paths in `skip` are left
/// alone (a template's stand-ins, which only its rows will name).
pub async fn resolve_files(
    state: &AppState,
    spec: &mut Spec,
    uploads: &HashMap<String, String>,
    api_key_id: Option<&str>,
    skip: &[String],
) -> ApiResult<(Vec<crate::error::IssueBody>, Vec<String>)> {
    let mut issues = vec![];
    let mut used = vec![];
    for (path, field_kind, file) in spec.files_mut() {
        if skip.contains(&path) {
            continue;
        }
        let id = match (file.strip_prefix(ASSET_PREFIX), uploads.get(file.as_str())) {
            (Some(id), _) => Some(id.to_string()),
            (None, Some(id)) => {
                *file = format!("{ASSET_PREFIX}{id}");
                Some(id.clone())
            }
            (None, None) => None,
        };
        if let Some(id) = id {
            match state.meta.asset(&id).await? {
                Some(a) if api_key_id.is_none() || a.api_key_id.as_deref() == api_key_id => {
                    // An asset serves only fields of its own kind: audio is never opened as a clip.
                    let kind = sniff_kind(&a.media_type);
                    if kind != Some(Kind::from(field_kind)) {
                        issues.push(crate::error::IssueBody {
                            path: format!("spec.{path}"),
                            message: format!(
                                "asset '{id}' is {}, not {}",
                                a.media_type,
                                Kind::from(field_kind).describe()
                            ),
                        });
                    }
                    used.push(id);
                }
                // Another key's asset does not exist for this one.
                _ => issues.push(crate::error::IssueBody {
                    path: format!("spec.{path}"),
                    message: format!("no asset with id '{id}' (upload it with POST /api/v1/assets)"),
                }),
            }
        } else {
            issues.push(crate::error::IssueBody {
                path: format!("spec.{path}"),
                message: format!(
                    "'{file}' was not uploaded: send it in the same multipart request (a file part named '{file}'), or upload it with POST /api/v1/assets and use \"asset:<id>\""
                ),
            });
        }
    }
    Ok((issues, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_uses_bytes_not_names() {
        let mut png = vec![];
        image::RgbImage::new(2, 2).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        assert_eq!(sniff(&png), Some((Kind::Image, "image/png")));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt ").map(|s| s.0), Some(Kind::Audio));
        assert_eq!(sniff(b"OggS\0\x02").map(|s| s.1), Some("audio/ogg"));
        assert_eq!(sniff(b"%PDF-1.4 hello"), None);
        assert_eq!(sniff(b"<html>"), None);
        assert_eq!(sniff(b"OTTO\0\0").map(|s| s.0), Some(Kind::Font));
    }
}
