//! Documents as storyboard drafts over HTTP (`POST /api/v1/imports`): the upload converted by
//! `reelsmith_import` off the async runtime, one conversion per permit, its slide pictures made
//! the caller's assets, the draft returned to edit and submit. Nothing is kept when it fails.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use reelsmith_import::{ImportError, ImportOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::assets::ASSET_PREFIX;
use crate::error::{ApiError, ApiResult, IssueBody};
use crate::state::AppState;

/// The optional `request` part of an import.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The video's size, `WIDTHxHEIGHT` (default 1280x720).
    #[serde(default)]
    pub size: Option<String>,
    /// The narration voice for every scene (the spec's `voice`).
    #[serde(default)]
    pub voice: Option<Value>,
}

/// How long an import waits for a free conversion slot before it is refused.
const QUEUE_WAIT: Duration = Duration::from_secs(20);

fn import_error(e: ImportError) -> ApiError {
    let message = e.to_string();
    let code = e.code();
    if e.is_input_error() {
        ApiError::unprocessable(code, message.clone()).with_issues(vec![IssueBody { path: "file".into(), message }])
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

fn size(req: &ImportRequest) -> ApiResult<(u32, u32)> {
    let Some(text) = &req.size else { return Ok((1280, 720)) };
    text.split_once('x')
        .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)))
        .filter(|&(w, h)| (16..=4096).contains(&w) && (16..=4096).contains(&h) && w % 2 == 0 && h % 2 == 0)
        .ok_or_else(|| {
            let message = format!("{text:?}: give WIDTHxHEIGHT, each even, 16 to 4096");
            ApiError::unprocessable("invalid_request", format!("size: {message}"))
                .with_issues(vec![IssueBody { path: "size".into(), message }])
        })
}

/// Imports `doc` (named `name` by its uploader) for the caller. `images` are the other files
/// of the upload by name: a Markdown document's pictures.
pub async fn import(
    state: &AppState,
    caller: &Caller,
    name: String,
    doc: Bytes,
    images: HashMap<String, Bytes>,
    req: ImportRequest,
) -> ApiResult<Value> {
    let (width, height) = size(&req)?;
    if doc.is_empty() {
        return Err(ApiError::unprocessable("empty_file", format!("{name} is empty")));
    }
    let permit = tokio::time::timeout(QUEUE_WAIT, state.imports.clone().acquire_owned())
        .await
        .map_err(|_| {
            ApiError::too_many("import_busy", "every import slot of this server is busy; try again shortly", 10)
        })?
        .map_err(ApiError::internal)?;
    let tmp_root = state.config.data_dir.join("tmp");
    tokio::fs::create_dir_all(&tmp_root).await.map_err(ApiError::internal)?;
    let work = tempfile::tempdir_in(&tmp_root).map_err(ApiError::internal)?;
    let input = work.path().join("upload");
    tokio::fs::write(&input, &doc).await.map_err(ApiError::internal)?;
    let opts = ImportOptions {
        width,
        height,
        display_name: name.clone(),
        deadline: Duration::from_secs_f64(state.config.import_timeout_secs),
        max_bytes: state.config.max_upload_bytes as u64,
        voice: req.voice,
        ..Default::default()
    };
    let out = work.path().join("out");
    let draft = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&out).map_err(|source| ImportError::Io { file: opts.display_name.clone(), source })?;
        let draft = reelsmith_import::import(&input, &opts, &out);
        drop(permit);
        draft
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(import_error)?;
    let mut spec = draft.spec;
    let mut made: Vec<String> = vec![];
    let stored =
        attach_files(state, caller, &name, &draft.pictures, &draft.images, &images, &mut spec, &mut made).await;
    if let Err(e) = stored {
        for id in &made {
            let _ = crate::assets::remove_asset(state, id).await;
        }
        return Err(e);
    }
    metrics::counter!("reelsmith_imports_total", "kind" => draft.kind.as_str()).increment(1);
    let scenes = spec["scenes"].as_array().map_or(0, Vec::len);
    Ok(json!({
        "object": "import",
        "file": name,
        "kind": draft.kind.as_str(),
        "scenes": scenes,
        "spec": spec,
        "assets": made,
    }))
}

/// Slide pictures become assets; Markdown images are `asset:` refs of the caller's or files of
/// the same upload. Assets made are listed in `made` (removed by the caller on failure).
#[allow(clippy::too_many_arguments)]
async fn attach_files(
    state: &AppState,
    caller: &Caller,
    name: &str,
    pictures: &[std::path::PathBuf],
    refs: &[reelsmith_import::ImageRef],
    uploads: &HashMap<String, Bytes>,
    spec: &mut Value,
    made: &mut Vec<String>,
) -> ApiResult<()> {
    for (i, picture) in pictures.iter().enumerate() {
        let bytes = tokio::fs::read(picture).await.map_err(ApiError::internal)?;
        let file = picture.file_name().map(|n| n.to_string_lossy().into_owned());
        let what = format!("{name}'s slide {}", i + 1);
        let (asset, new) = crate::assets::store_new_asset(state, bytes.into(), file, caller.key_id(), &what).await?;
        if new {
            made.push(asset.id.clone());
        }
        spec["scenes"][i]["image"] = json!(format!("{ASSET_PREFIX}{}", asset.id));
    }
    for image in refs {
        let bad = |message: String| {
            let path = format!("file.line {}", image.line);
            ApiError::unprocessable("missing_asset", format!("{name}, line {}: {message}", image.line))
                .with_issues(vec![IssueBody { path, message }])
        };
        let id = if let Some(id) = image.reference.strip_prefix(ASSET_PREFIX) {
            match state.meta.asset(id).await? {
                Some(a) if caller.0.is_none() || a.api_key_id == caller.key_id() => id.to_string(),
                _ => return Err(bad(format!("no asset with id '{id}'"))),
            }
        } else if let Some(bytes) = uploads.get(&image.reference) {
            let what = format!("the image '{}'", image.reference);
            let (asset, new) = crate::assets::store_new_asset(
                state,
                bytes.clone(),
                Some(image.reference.clone()),
                caller.key_id(),
                &what,
            )
            .await?;
            if new {
                made.push(asset.id.clone());
            }
            asset.id
        } else {
            return Err(bad(format!(
                "the image '{}' was not uploaded: send it as a file part named '{}', or use an asset: ref",
                image.reference, image.reference
            )));
        };
        spec["scenes"][image.scene]["image"] = json!(format!("{ASSET_PREFIX}{id}"));
    }
    Ok(())
}
