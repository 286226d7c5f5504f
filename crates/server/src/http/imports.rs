//! `POST /api/v1/imports`: a deck or document (multipart: a `file` part, an optional `request`
//! JSON part, and for Markdown the pictures it names as further file parts) → a storyboard draft.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::imports::ImportRequest;
use crate::state::AppState;

/// Most pictures a Markdown upload may bring.
const MAX_FILES: usize = 64;

pub async fn create_import(State(state): State<AppState>, caller: Caller, req: Request) -> ApiResult<Response> {
    let mut mp = Multipart::from_request(req, &state).await.map_err(|e| {
        ApiError::bad_request(
            "invalid_multipart",
            format!("{}; send multipart/form-data with a 'file' part", e.body_text()),
        )
    })?;
    let mut doc = None;
    let mut request = ImportRequest::default();
    let mut images = HashMap::new();
    while let Some(field) = mp.next_field().await.map_err(crate::http::guard::multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(crate::http::guard::multipart_error)?;
        match (name.as_str(), file_name) {
            ("request", None) => {
                let de = &mut serde_json::Deserializer::from_slice(&data);
                request = serde_path_to_error::deserialize(de).map_err(|e| {
                    ApiError::unprocessable("invalid_request", format!("request part: {}: {}", e.path(), e.inner()))
                })?;
            }
            ("file", Some(f)) => doc = Some((f, data)),
            (_, Some(f)) if images.len() < MAX_FILES => {
                images.insert(f, data);
            }
            (_, Some(_)) => {
                return Err(ApiError::unprocessable(
                    "too_many_files",
                    format!("at most {MAX_FILES} pictures per import"),
                ));
            }
            (other, None) => {
                return Err(ApiError::unprocessable(
                    "invalid_multipart",
                    format!("unexpected form field '{other}': send a 'file' part (and optionally 'request')"),
                ));
            }
        }
    }
    let Some((name, bytes)) = doc else {
        return Err(ApiError::unprocessable(
            "invalid_multipart",
            "no 'file' part: send the deck or document as a file part named 'file'",
        ));
    };
    // A file name is shown back in messages: keep it short and printable.
    let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
    let draft = crate::imports::import(&state, &caller, name, bytes, images, request).await?;
    Ok((StatusCode::CREATED, Json(draft)).into_response())
}
