//! Turning a request into a durable generation: the envelope, the spec, its files (uploaded with
//! it or earlier as assets), validation by the engine, content hashes for dedup and idempotency.
//!
//! Specs in the service never name server paths: every file is `asset:<id>`, where the id is a
//! hash of the file's bytes, so the same picture uploaded twice is one asset and the same
//! storyboard with the same files is the same spec hash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::http::StatusCode;
use reelsmith_spec::Spec;
use reelsmith_store::{Asset, JobState, ListFilter, now_ms};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::IssueBody;
use crate::{ApiError, ApiResult, AppState};

pub const ASSET_PREFIX: &str = "asset:";

/// The JSON body of `POST /generations` (or the `request` part of a multipart body).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub spec: serde_json::Value,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// false: render afresh even when the same spec is queued, running or done (the stage
    /// cache still applies, so an unchanged spec re-renders from cache).
    #[serde(default)]
    pub dedupe: Option<bool>,
}

pub fn parse_envelope(body: &[u8]) -> ApiResult<Envelope> {
    if body.is_empty() {
        return Err(ApiError::bad_request("empty_body", "the request body is empty; send {\"spec\": {...}}"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (status, code) = if inner.is_syntax() || inner.is_eof() {
            (StatusCode::BAD_REQUEST, "invalid_json")
        } else {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        };
        let path = if path == "." { "$".to_string() } else { path };
        ApiError::new(status, code, format!("{path}: {inner}"))
            .with_issues(vec![IssueBody { path, message: inner.to_string() }])
    })
}

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
    crate::distribute::share_asset(state, &id, &path).await.map_err(ApiError::internal)?;
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

/// A spec ready to store: files resolved to assets, validated, hashed.
pub struct Prepared {
    pub spec: Spec,
    pub spec_json: serde_json::Value,
    pub spec_hash: String,
    pub request_hash: String,
    pub priority: i32,
    /// Whether the caller asked for `priority` (or it is the default).
    pub priority_given: bool,
    pub webhook_url: Option<String>,
    pub metadata: serde_json::Value,
    pub dedupe: bool,
    /// What the generation costs the caller's daily budget.
    pub charge: reelsmith_store::Usage,
}

pub async fn prepare(
    state: &AppState,
    env: Envelope,
    uploads: &HashMap<String, String>,
    api_key_id: Option<&str>,
) -> ApiResult<Prepared> {
    let priority = match env.priority {
        None => 5,
        Some(p @ 0..=9) => p as i32,
        Some(p) => {
            return Err(ApiError::unprocessable("invalid_request", format!("priority: {p} is out of range 0-9"))
                .with_issues(vec![IssueBody { path: "priority".into(), message: "must be 0-9".into() }]));
        }
    };
    if let Some(u) = &env.webhook_url {
        check_webhook_url(u, state.config.webhook_allow_private)?;
    }
    let metadata = env.metadata.unwrap_or(serde_json::json!({}));
    if !metadata.is_object() || metadata.to_string().len() > 16 * 1024 {
        return Err(ApiError::unprocessable("invalid_request", "metadata: must be a JSON object of at most 16 KiB"));
    }
    let spec_text = env.spec.to_string();
    let mut spec = reelsmith_spec::parse(&spec_text).map_err(|e| {
        let path = format!("spec.{}", e.path.trim_start_matches("$").trim_start_matches('.'));
        ApiError::unprocessable("spec_parse", format!("{path}: {}", e.message))
            .with_issues(vec![IssueBody { path, message: e.message.clone() }])
    })?;
    let mut issues = vec![];
    let mut used = vec![];
    for (path, field_kind, file) in spec.files_mut() {
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
                        issues.push(IssueBody {
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
                _ => issues.push(IssueBody {
                    path: format!("spec.{path}"),
                    message: format!("no asset with id '{id}' (upload it with POST /api/v1/assets)"),
                }),
            }
        } else {
            issues.push(IssueBody {
                path: format!("spec.{path}"),
                message: format!(
                    "'{file}' was not uploaded: send it in the same multipart request (a file part named '{file}'), or upload it with POST /api/v1/assets and use \"asset:<id>\""
                ),
            });
        }
    }
    if !issues.is_empty() {
        let first = format!("{}: {}", issues[0].path, issues[0].message);
        return Err(ApiError::unprocessable("missing_asset", first).with_issues(issues));
    }
    // Used now: retention counts from here.
    state.meta.touch_assets(&used, now_ms()).await?;
    // The engine checks everything else: ranges, limits, that images decode, voices, fonts.
    let engine_spec = engine_view(&spec);
    let engine = state.engine.clone();
    let assets = state.assets_dir.clone();
    let cost = tokio::task::spawn_blocking(move || engine.check(&engine_spec, &assets))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            let mut e = ApiError::from(e);
            for i in &mut e.issues {
                i.path = format!("spec.{}", i.path);
            }
            if let Some(i) = e.issues.first() {
                e.message = format!("invalid spec: {}: {}", i.path, i.message);
            }
            e
        })?;
    check_cost(&state.config, &cost)?;
    let did_scenes: Vec<usize> =
        spec.scenes.iter().enumerate().filter(|(_, s)| s.is_d_id_talking_head()).map(|(i, _)| i).collect();
    if did_scenes.len() > state.config.max_did_scenes_per_spec {
        let path = format!("spec.scenes[{}].motion.provider", did_scenes[state.config.max_did_scenes_per_spec]);
        let msg = format!(
            "{} scenes go to D-ID (each a paid talk); this server sends at most {} per spec",
            did_scenes.len(),
            state.config.max_did_scenes_per_spec
        );
        return Err(ApiError::unprocessable("too_costly", format!("{path}: {msg}"))
            .with_issues(vec![IssueBody { path, message: msg }]));
    }
    if state.config.did_api_key.is_none() {
        let remote: Vec<IssueBody> = spec
            .scenes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_d_id_talking_head())
            .map(|(i, _)| IssueBody {
                path: format!("spec.scenes[{i}].motion.provider"),
                message: "d-id needs did_api_key on this server; use provider local to animate the face here".into(),
            })
            .collect();
        if let Some(first) = remote.first() {
            let msg = format!("{}: {}", first.path, first.message);
            return Err(ApiError::unprocessable("provider_unavailable", msg).with_issues(remote));
        }
    }
    let spec_json = serde_json::to_value(&spec).map_err(ApiError::internal)?;
    let canonical = serde_json::to_vec(&spec_json).map_err(ApiError::internal)?;
    let spec_hash = blake3::hash(&canonical).to_hex().to_string();
    let dedupe = env.dedupe.unwrap_or(true);
    let request = serde_json::json!([spec_hash, priority, env.webhook_url, metadata, dedupe]);
    let request_hash = blake3::hash(request.to_string().as_bytes()).to_hex().to_string();
    Ok(Prepared {
        spec,
        spec_json,
        spec_hash,
        request_hash,
        priority,
        priority_given: env.priority.is_some(),
        webhook_url: env.webhook_url,
        metadata,
        dedupe,
        charge: reelsmith_store::Usage { megapixel_frames: cost.megapixel_frames, did_scenes: did_scenes.len() as u64 },
    })
}

/// Refuses a spec whose estimated cost is over the server's limits, before any work.
pub fn check_cost(config: &crate::Config, cost: &reelsmith_engine::cost::Cost) -> ApiResult<()> {
    let mut issues = vec![];
    if cost.megapixel_frames > config.max_job_megapixel_frames {
        issues.push(IssueBody {
            path: "spec.output".into(),
            message: format!(
                "about {:.0} s: {} frames of {} pixels, {:.0} megapixel-frames; this server renders at most {:.0} per job (use a smaller size, a lower fps or a shorter video)",
                cost.seconds,
                cost.frames,
                cost.frame_pixels,
                cost.megapixel_frames,
                config.max_job_megapixel_frames
            ),
        });
    }
    if cost.canvas_megapixels > config.max_job_canvas_megapixels {
        issues.push(IssueBody {
            path: "spec.scenes".into(),
            message: format!(
                "the scenes' canvases (each the frame at its largest Ken Burns zoom) add up to {:.0} megapixels; the limit is {:.0} (fewer scenes, less zoom or a smaller size)",
                cost.canvas_megapixels, config.max_job_canvas_megapixels
            ),
        });
    }
    if cost.text_chars > config.max_job_text_chars {
        issues.push(IssueBody {
            path: "spec.scenes".into(),
            message: format!(
                "{} characters of text in all; the limit is {} per job",
                cost.text_chars, config.max_job_text_chars
            ),
        });
    }
    match issues.first() {
        None => Ok(()),
        Some(first) => {
            let msg = format!("{}: {}", first.path, first.message);
            Err(ApiError::unprocessable("too_costly", msg).with_issues(issues))
        }
    }
}

/// Removes an asset's record, its file and its shared copy.
pub async fn remove_asset(state: &AppState, id: &str) -> ApiResult<()> {
    state.meta.delete_asset(id).await?;
    let _ = tokio::fs::remove_file(state.assets_dir.join(id)).await;
    if state.shared_assets {
        state.artifacts.delete_prefix(&crate::distribute::asset_key(id)).await?;
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

pub fn check_webhook_url(u: &str, allow_private: bool) -> ApiResult<()> {
    let bad = |m: String| {
        Err(ApiError::unprocessable("invalid_request", format!("webhook_url: {m}"))
            .with_issues(vec![IssueBody { path: "webhook_url".into(), message: m }]))
    };
    if u.len() > 2048 {
        return bad("longer than 2048 characters".into());
    }
    let url = match reqwest::Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
        Ok(url) => return bad(format!("'{}' URLs are not supported; use http or https", url.scheme())),
        Err(e) => return bad(format!("not a URL: {e}")),
    };
    let private = match url.host() {
        Some(url::Host::Ipv4(ip)) => crate::webhooks::is_private(ip.into()),
        Some(url::Host::Ipv6(ip)) => crate::webhooks::is_private(ip.into()),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost"),
        None => false,
    };
    if private && !allow_private {
        return bad(format!(
            "'{}' is a private or loopback address; webhooks go to public addresses unless the server sets webhook_allow_private = true",
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(())
}

/// Where uploaded assets live on disk.
pub fn assets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("assets")
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

    #[test]
    fn envelope_errors_name_the_problem() {
        let e = parse_envelope(b"{\"spec\": 1, \"colour\": 2}").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("colour"), "{}", e.message);
        let e = parse_envelope(b"{\"spec\": ").unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "invalid_json"));
        let e = parse_envelope(b"{\"spec\": {}, \"priority\": \"high\"}").unwrap_err();
        assert!(e.message.starts_with("priority"), "{}", e.message);
        assert_eq!(parse_envelope(b"").unwrap_err().code, "empty_body");
    }

    #[test]
    fn webhook_urls() {
        assert!(check_webhook_url("https://example.com/hook", false).is_ok());
        assert!(check_webhook_url("http://127.0.0.1:9000/h", true).is_ok());
        for private in [
            "http://127.0.0.1:9000/h",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest",
            "http://[::1]/",
            "http://localhost:8080/",
            "http://192.168.0.1/",
        ] {
            let e = check_webhook_url(private, false).unwrap_err();
            assert!(e.message.contains("private"), "{private}: {}", e.message);
        }
        assert!(check_webhook_url("ftp://x/y", true).is_err());
        assert!(check_webhook_url("not a url", true).is_err());
    }
}
