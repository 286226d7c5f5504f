//! A D-ID-compatible Talks API, so clients written for `https://api.d-id.com` switch to a local
//! backend by changing the base URL: `POST /talks` (photo + text or audio → talking video),
//! `GET /talks/{id}` with D-ID's statuses (`created`, `started`, `done`, `error`), `GET /talks`,
//! `DELETE /talks/{id}`, `POST /images` and `POST /audios` uploads, D-ID's error bodies
//! (`{"kind", "description"}`), `Authorization: Basic` keys, and webhooks whose body is the talk.
//!
//! A talk is a generation with one talking-head scene; its id is the generation's with a `tlk_`
//! prefix. `result_url` is a signed link that works without a key, like D-ID's S3 links.
//! `"engine": "d-id"` (a Reelsmith extension) sends the talk to D-ID itself (see [`crate::jobs::did`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use reelsmith_store::{Asset, GenerationRecord, JobState, ListFilter, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::assets::ASSET_PREFIX;
use crate::error::ApiError;
use crate::signing::Purpose;
use crate::state::AppState;
use crate::submit::Envelope;
use crate::views::{TALK_PREFIX, is_talk, iso, result_message, talk_id, talk_json};

/// An error as D-ID sends it: `{"kind": "BadRequestError", "description": "…"}`.
#[derive(Debug)]
pub struct DidError(pub ApiError);

impl From<ApiError> for DidError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for DidError {
    fn into_response(self) -> Response {
        let e = self.0;
        let (status, kind) = match e.status.as_u16() {
            400 | 422 => (StatusCode::BAD_REQUEST, "BadRequestError"),
            401 => (e.status, "AuthorizationError"),
            402 => (e.status, "InsufficientCreditsError"),
            403 => (e.status, "PermissionError"),
            404 => (e.status, "NotFoundError"),
            409 => (e.status, "ConflictError"),
            413 => (e.status, "PayloadTooLargeError"),
            415 => (StatusCode::BAD_REQUEST, "BadRequestError"),
            429 => (e.status, "TooManyRequestsError"),
            _ => (e.status, "InternalServerError"),
        };
        let mut r = (status, Json(json!({"kind": kind, "description": e.message}))).into_response();
        if let Some(s) = e.retry_after_s
            && let Ok(v) = header::HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        crate::error::close_if_body_unread(&mut r);
        r
    }
}

type DidResult<T> = Result<T, DidError>;

fn bad(message: impl Into<String>) -> DidError {
    DidError(ApiError::bad_request("bad_request", message))
}

#[derive(Debug, Deserialize)]
pub struct TalkRequest {
    pub source_url: String,
    pub script: Script,
    #[serde(default)]
    pub config: TalkConfig,
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub user_data: Option<String>,
    /// D-ID fields that change nothing here (the face and motion come from the photo).
    #[serde(default)]
    pub driver_url: Option<String>,
    #[serde(default)]
    pub persist: Option<bool>,
    #[serde(default)]
    pub face: Option<Value>,
    #[serde(default)]
    pub result_url: Option<String>,
    /// Reelsmith extension: `local` (default) or `d-id` (needs `did_api_key`).
    #[serde(default)]
    pub engine: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Script {
    Text {
        input: String,
        #[serde(default)]
        provider: Option<Provider>,
        #[serde(default)]
        ssml: Option<bool>,
        #[serde(default)]
        subtitles: Option<bool>,
    },
    Audio {
        audio_url: String,
        #[serde(default)]
        subtitles: Option<bool>,
        #[serde(default)]
        reduce_noise: Option<bool>,
    },
}

#[derive(Debug, Deserialize, serde::Serialize, Clone)]
pub struct Provider {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub voice_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_config: Option<Value>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize, Clone)]
pub struct TalkConfig {
    #[serde(default)]
    pub stitch: Option<bool>,
    #[serde(default)]
    pub fluent: Option<bool>,
    #[serde(default)]
    pub pad_audio: Option<f64>,
    #[serde(default)]
    pub result_format: Option<String>,
    #[serde(default, flatten)]
    pub other: serde_json::Map<String, Value>,
}

fn generation_id(talk_id: &str) -> DidResult<String> {
    match talk_id.strip_prefix(TALK_PREFIX) {
        Some(rest) if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()) => Ok(format!("gen_{rest}")),
        _ => Err(DidError(ApiError::not_found("talk", talk_id))),
    }
}

/// The base URL clients reached this server with (for links in responses).
fn base_of(state: &AppState, headers: &HeaderMap) -> String {
    if state.config.public_url.is_some() {
        return state.public_url.to_string();
    }
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if !host.is_empty() && !host.contains(['/', ' ']) => format!("http://{host}"),
        _ => state.public_url.to_string(),
    }
}

/// Downloads `url` (or resolves an `asset:` reference) into an asset of `kind`.
async fn fetch_asset(
    state: &AppState,
    caller: &Caller,
    url: &str,
    field: &str,
    kind: crate::assets::Kind,
) -> DidResult<Asset> {
    let asset = if let Some(id) = url.strip_prefix(ASSET_PREFIX) {
        match state.meta.asset(id).await.map_err(ApiError::from)? {
            Some(a) if caller.0.is_none() || a.api_key_id == caller.key_id() => a,
            _ => return Err(bad(format!("{field}: no asset with id '{id}'"))),
        }
    } else {
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("{field}: not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad(format!("{field}: '{}' URLs are not supported; use https", parsed.scheme())));
        }
        let client = crate::net::outbound_client(&state.http, &parsed, state.config.fetch_allow_private)
            .await
            .map_err(|e| bad(format!("{field}: {e}")))?;
        let mut resp = client
            .get(parsed.clone())
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| bad(format!("{field}: cannot download {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(bad(format!("{field}: downloading {url} answered {}", resp.status())));
        }
        let limit = state.config.max_upload_bytes;
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| bad(format!("{field}: reading {url}: {e}")))? {
            if bytes.len() + chunk.len() > limit {
                return Err(DidError(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("{field}: {url} is larger than {limit} bytes"),
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let name = parsed.path_segments().and_then(|mut s| s.next_back()).filter(|s| !s.is_empty()).map(str::to_string);
        crate::assets::store_asset(state, Bytes::from(bytes), name, caller.key_id(), field).await?
    };
    let is = |k: crate::assets::Kind| crate::assets::sniff_kind(&asset.media_type) == Some(k);
    if !is(kind) {
        let want = if kind == crate::assets::Kind::Image { "an image" } else { "audio" };
        return Err(bad(format!("{field}: {url} is {}, not {want}", asset.media_type)));
    }
    Ok(asset)
}

/// The local voice for a D-ID provider: `piper`/`espeak-ng` pick a local engine (voice_id is its
/// voice); any other provider (microsoft, elevenlabs, amazon…) speaks with the default local voice.
fn local_voice(state: &AppState, provider: Option<&Provider>) -> Value {
    let piper = state.engine.voices.get("piper").is_some();
    match provider {
        Some(p) if p.kind == "piper" || p.kind == "espeak-ng" => {
            let default = if p.kind == "piper" { "en_US-joe-medium" } else { "en-us" };
            json!({"engine": p.kind, "name": p.voice_id.as_deref().unwrap_or(default)})
        }
        _ if piper => json!({"engine": "piper", "name": "en_US-joe-medium"}),
        _ => json!({"engine": "espeak-ng", "name": "en-us"}),
    }
}

fn even(x: f64) -> u32 {
    ((x / 2.0).round() as u32).max(1) * 2
}

/// `config` keys D-ID documents for `POST /talks` besides the four this server reads itself.
const D_ID_CONFIG_KEYS: &[&str] = &[
    "align_driver",
    "align_expand_factor",
    "auto_match",
    "driver_expressions",
    "logo",
    "motion_factor",
    "normalization_factor",
    "output_resolution",
    "reduce_noise",
    "sharpen",
];

/// A `POST /talks` body, parsed and checked as far as it can be without the server's state:
/// every refusal names its field, in D-ID's error shape.
pub fn parse_talk_request(body: &[u8], did_enabled: bool) -> Result<TalkRequest, DidError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: TalkRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        bad(format!("{path}: {}", e.into_inner()))
    })?;
    match req.engine.as_deref().unwrap_or("local") {
        "local" => {}
        "d-id" if did_enabled => {}
        "d-id" => return Err(bad("engine: 'd-id' needs the server's did_api_key setting")),
        other => return Err(bad(format!("engine: '{other}' is not one of local, d-id"))),
    }
    if let Some(f) = req.config.result_format.as_deref()
        && !matches!(f.trim_start_matches('.'), "mp4")
    {
        return Err(bad(format!("config.result_format: '{f}' is not supported; use mp4")));
    }
    let pad = req.config.pad_audio.unwrap_or(0.0);
    if !(0.0..=60.0).contains(&pad) {
        return Err(bad("config.pad_audio: must be 0 to 60 seconds"));
    }
    // Settings go on to D-ID with `engine: d-id`: only the ones it documents, so a caller
    // cannot reach undocumented (or future, costlier) options on the operator's account.
    if let Some(key) = req.config.other.keys().find(|k| !D_ID_CONFIG_KEYS.contains(&k.as_str())) {
        return Err(bad(format!(
            "config.{key}: not a talk setting (stitch, fluent, pad_audio, result_format, {})",
            D_ID_CONFIG_KEYS.join(", ")
        )));
    }
    if let Script::Text { input, ssml, .. } = &req.script {
        if ssml.unwrap_or(false) {
            return Err(bad("script.ssml: SSML is not supported; send plain text"));
        }
        if input.trim().is_empty() {
            return Err(bad("script.input: the text is empty"));
        }
    }
    Ok(req)
}

pub async fn create_talk(State(state): State<AppState>, caller: Caller, req: Request) -> DidResult<Response> {
    crate::http::guard::require_json(req.headers(), false)?;
    // Read no more than the JSON limit: the upload limit (much larger) is for files.
    let body: Bytes = axum::body::to_bytes(req.into_body(), state.config.max_body_bytes).await.map_err(|_| {
        DidError(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body is over {} bytes; upload files with POST /images or /audios",
                state.config.max_body_bytes
            ),
        ))
    })?;
    let req = parse_talk_request(&body, state.config.did_api_key.is_some())?;
    let engine = req.engine.clone().unwrap_or_else(|| "local".into());
    let pad = req.config.pad_audio.unwrap_or(0.0);
    let photo = fetch_asset(&state, &caller, &req.source_url, "source_url", crate::assets::Kind::Image).await?;
    let (w, h) = (photo.width.unwrap_or(720) as f64, photo.height.unwrap_or(720) as f64);
    // As D-ID does: `stitch: true` keeps the whole photo (long side at most 720 px); otherwise
    // a square headshot cropped around the face.
    let stitch = req.config.stitch.unwrap_or(false);
    let (width, height, framing) = if stitch {
        let s = (720.0 / w.max(h)).min(1.0);
        (even(w * s).max(64), even(h * s).max(64), "photo")
    } else {
        let side = even(w.min(h).min(720.0)).max(64);
        (side, side, "face")
    };
    let (narration, voice, subtitles, audio_url) = match &req.script {
        Script::Text { input, provider, subtitles, .. } => {
            (json!({"text": input}), local_voice(&state, provider.as_ref()), subtitles.unwrap_or(false), None)
        }
        Script::Audio { audio_url, subtitles, .. } => {
            let a = fetch_asset(&state, &caller, audio_url, "script.audio_url", crate::assets::Kind::Audio).await?;
            let voice = local_voice(&state, None);
            (json!({"audio": format!("{ASSET_PREFIX}{}", a.id)}), voice, subtitles.unwrap_or(false), Some(audio_url))
        }
    };
    let spec = json!({
        "version": 1,
        "output": {"width": width, "height": height, "fps": 25},
        "voice": voice,
        "subtitles": {"enabled": subtitles, "style": "word-highlight"},
        "scenes": [{
            "image": format!("{ASSET_PREFIX}{}", photo.id),
            "fit": "cover",
            "motion": {"type": "talking-head", "framing": framing},
            "narration": narration,
            "padding": pad.max(0.2),
        }],
    });
    let mut config = serde_json::to_value(&req.config).unwrap_or_else(|_| json!({}));
    for (k, v) in [
        ("stitch", json!(false)),
        ("fluent", json!(false)),
        ("pad_audio", json!(0.0)),
        ("result_format", json!(".mp4")),
    ] {
        if config.get(k).is_none_or(Value::is_null) {
            config[k] = v;
        }
    }
    let script = match &req.script {
        Script::Text { input, provider, .. } => json!({"type": "text", "input": input, "provider": provider}),
        Script::Audio { audio_url, .. } => json!({"type": "audio", "audio_url": audio_url}),
    };
    let metadata = json!({"talk": {
        "source_url": req.source_url, "audio_url": audio_url, "script": script, "config": config,
        "name": req.name, "user_data": req.user_data, "engine": engine,
    }});
    let env = Envelope {
        spec: Some(spec),
        prompt: None,
        template: None,
        merge: None,
        priority: None,
        webhook_url: req.webhook.clone(),
        metadata: Some(metadata),
        dedupe: Some(false),
    };
    let key = caller.key_id();
    let prepared = crate::submit::prepare(&state, env, &Default::default(), key.as_deref()).await?;
    let (_, id, _) = crate::submit::enqueue(&state, &caller, prepared, None).await?;
    let g =
        state.meta.generation(&id).await.map_err(ApiError::from)?.ok_or_else(|| ApiError::not_found("talk", &id))?;
    let body = json!({
        "id": talk_id(&id),
        "object": "talk",
        "created_at": iso(g.created_at_ms),
        "created_by": g.api_key_id.as_deref().unwrap_or("local"),
        "status": "created",
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn visible_talk(state: &AppState, caller: &Caller, id: &str) -> DidResult<GenerationRecord> {
    let gid = generation_id(id)?;
    match crate::submit::visible(state, caller, &gid).await {
        Ok(g) if is_talk(&g) => Ok(g),
        _ => Err(DidError(ApiError::not_found("talk", id))),
    }
}

pub async fn get_talk(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> DidResult<Json<Value>> {
    let g = visible_talk(&state, &caller, &id).await?;
    Ok(Json(talk_json(&state, &g, &base_of(&state, &headers))))
}

#[derive(Deserialize)]
pub struct ListTalks {
    limit: Option<u32>,
    token: Option<String>,
}

/// `GET /talks?limit=&token=`: newest first, `token` continues a page.
pub async fn list_talks(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListTalks>,
    headers: HeaderMap,
) -> DidResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 200);
    let cursor = match q.token.as_deref() {
        Some(t) => Some(generation_id(t)?),
        None => None,
    };
    let base = base_of(&state, &headers);
    let mut talks = vec![];
    let mut cursor_now = cursor;
    // Talks are generations with a talk record; skip the others page by page, reading at most
    // LIST_PAGES pages per call: a caller with many other generations gets a short page and a
    // token to go on from, instead of one request that reads all of them.
    let mut pages = 0;
    let mut stopped_early = false;
    loop {
        let page = state
            .meta
            .list_generations(&ListFilter {
                api_key_id: caller.key_id(),
                cursor: cursor_now.clone(),
                limit,
                ..Default::default()
            })
            .await
            .map_err(ApiError::from)?;
        let full = page.len() == limit as usize;
        cursor_now = page.last().map(|g| g.id.clone());
        talks.extend(page.iter().filter(|g| is_talk(g)).map(|g| talk_json(&state, g, &base)));
        pages += 1;
        if talks.len() >= limit as usize || !full {
            break;
        }
        if pages == LIST_PAGES {
            stopped_early = true;
            break;
        }
    }
    talks.truncate(limit as usize);
    let token = if talks.len() == limit as usize {
        talks.last().and_then(|t| t["id"].as_str().map(str::to_string))
    } else if stopped_early {
        // Where the reading stopped, in the token's own form (it names a generation).
        cursor_now.as_deref().map(talk_id)
    } else {
        None
    };
    Ok(Json(json!({"talks": talks, "token": token})))
}

/// Most pages of generations one `GET /talks` reads.
const LIST_PAGES: u32 = 5;

pub async fn delete_talk(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> DidResult<Response> {
    let g = visible_talk(&state, &caller, &id).await?;
    crate::http::generations::delete_generation(State(state), caller, Path(g.id.clone())).await?;
    Ok((StatusCode::OK, Json(json!({"deleted": 1, "id": id}))).into_response())
}

#[derive(Deserialize)]
pub struct Signed {
    expires: i64,
    signature: String,
}

/// `GET /talks/{id}/result.mp4?expires=&signature=`: the video behind `result_url` (no key:
/// the signature is the permission), with Range and ETag.
pub async fn result(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<Signed>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> DidResult<Response> {
    let forbidden = |why: &str| DidError(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why));
    let Query(q) = q.map_err(|_| forbidden("missing signature"))?;
    let gid = generation_id(&id)?;
    if !state.signing.verify(Purpose::TalkResult, &result_message(&gid, q.expires), &q.signature) {
        return Err(forbidden("bad signature"));
    }
    let now = now_ms() / 1000;
    if q.expires < now {
        return Err(forbidden("this link has expired; GET the talk for a new one"));
    }
    // Links are made valid for result_url_ttl_secs; one that claims longer was not made here
    // (or was made under a longer TTL that the operator has since cut).
    if q.expires > now.saturating_add(state.config.result_url_ttl_secs as i64) {
        return Err(forbidden("this link outlives result_url_ttl_secs; GET the talk for a new one"));
    }
    // The link serves talks only: a storyboard generation's video needs a key.
    let g = state
        .meta
        .generation(&gid)
        .await
        .map_err(ApiError::from)?
        .filter(|g| g.state == JobState::Succeeded && is_talk(g))
        .ok_or_else(|| ApiError::not_found("talk result", &id))?;
    let etag = g.result.as_ref().map(|r| r.video_etag.clone()).unwrap_or_default();
    Ok(crate::http::download::serve(&state, &format!("{gid}/video.mp4"), &etag, "video/mp4", &headers).await?)
}

/// `POST /images` / `POST /audios` (multipart, field `image` / `audio`): D-ID's uploads. The
/// returned `url` is an `asset:` reference to use as `source_url` / `audio_url`.
pub async fn upload_image(state: State<AppState>, caller: Caller, req: Request) -> DidResult<Response> {
    upload(state, caller, req, crate::assets::Kind::Image).await
}

pub async fn upload_audio(state: State<AppState>, caller: Caller, req: Request) -> DidResult<Response> {
    upload(state, caller, req, crate::assets::Kind::Audio).await
}

async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
    kind: crate::assets::Kind,
) -> DidResult<Response> {
    let (data, name) = crate::http::generations::read_upload(&state, req).await?;
    let what = name.as_deref().map_or_else(|| "the upload".to_string(), |n| format!("'{n}'"));
    let asset = crate::assets::store_asset(&state, data, name, caller.key_id(), &what).await?;
    if crate::assets::sniff_kind(&asset.media_type) != Some(kind) {
        return Err(bad(format!(
            "{what} is {}, not {}",
            asset.media_type,
            if kind == crate::assets::Kind::Image { "an image" } else { "audio" }
        )));
    }
    let mut body = json!({"id": asset.id, "url": format!("{ASSET_PREFIX}{}", asset.id)});
    if kind == crate::assets::Kind::Audio {
        let path = state.assets_dir.join(&asset.id);
        let probed =
            tokio::task::spawn_blocking(move || reelsmith_media::ffmpeg::probe(&path)).await.ok().and_then(Result::ok);
        if let Some(p) = probed {
            body["duration"] = json!(p.duration);
        }
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso(1_796_000_000_000), "2026-11-30T00:53:20.000Z");
    }

    #[test]
    fn talk_ids_map_to_generations() {
        assert_eq!(talk_id("gen_01abc"), "tlk_01abc");
        assert_eq!(generation_id("tlk_01abc").unwrap(), "gen_01abc");
        for bad in ["gen_01abc", "tlk_", "tlk_../x", "x"] {
            assert_eq!(generation_id(bad).unwrap_err().0.status, StatusCode::NOT_FOUND, "{bad}");
        }
    }

    #[test]
    fn requests_parse_as_d_id_documents_them() {
        let r: TalkRequest = serde_json::from_value(json!({
            "source_url": "https://example.com/a.jpg",
            "script": {"type": "text", "input": "Hello", "provider": {"type": "microsoft", "voice_id": "en-US-JennyNeural"}},
            "config": {"fluent": true, "result_format": "mp4", "align_driver": true},
            "webhook": "https://example.com/hook", "name": "n", "user_data": "u", "driver_url": "bank://lively"
        }))
        .unwrap();
        assert!(matches!(r.script, Script::Text { ref input, .. } if input == "Hello"));
        assert_eq!(r.config.fluent, Some(true));
        assert!(r.config.other.contains_key("align_driver"));
        let a: TalkRequest = serde_json::from_value(
            json!({"source_url": "asset:x", "script": {"type": "audio", "audio_url": "https://e.com/a.mp3"}}),
        )
        .unwrap();
        assert!(matches!(a.script, Script::Audio { .. }));
        assert!(
            serde_json::from_value::<TalkRequest>(json!({"source_url": "x", "script": {"type": "video"}})).is_err()
        );
    }

    #[test]
    fn only_documented_settings_are_accepted() {
        let talk = |config: Value| {
            let body = json!({"source_url": "asset:x", "script": {"type": "text", "input": "Hi"}, "config": config});
            parse_talk_request(body.to_string().as_bytes(), true)
        };
        assert!(talk(json!({"stitch": true, "align_driver": true, "sharpen": false, "logo": {"url": "x"}})).is_ok());
        let e = talk(json!({"stitch": true, "premium_render": true})).unwrap_err().0;
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.starts_with("config.premium_render: not a talk setting"), "{}", e.message);
    }

    #[test]
    fn errors_use_d_id_kinds() {
        let r = DidError(ApiError::unprocessable("x", "bad thing")).into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = DidError(ApiError::not_found("talk", "tlk_1")).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
