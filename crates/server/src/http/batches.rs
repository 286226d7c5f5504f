//! `/api/v1/templates` and `/api/v1/batches`: stored templates, batches of rows, their
//! manifests.

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use reelsmith_store::RowStatus;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::batches::{BatchRequest, batch_json, row_json};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::templates::{NewTemplate, template_json};

/// Reads a JSON body of at most `limit` bytes as `T`, naming what is wrong.
async fn json_body<T: serde::de::DeserializeOwned>(req: Request, limit: usize) -> ApiResult<T> {
    crate::http::guard::require_json(req.headers(), false)?;
    let body = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over {limit} bytes"),
        )
    })?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty_body", "the request body is empty"));
    }
    crate::error::from_json(&body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

impl PageQuery {
    fn limit(&self) -> ApiResult<u32> {
        match self.limit.unwrap_or(20) {
            n @ 1..=200 => Ok(n),
            _ => Err(ApiError::bad_request("invalid_query", "limit must be 1-200")),
        }
    }
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> ApiResult<T> {
    q.map(|Query(q)| q).map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

pub async fn create_template(State(state): State<AppState>, caller: Caller, req: Request) -> ApiResult<Response> {
    let limit = crate::templates::MAX_TEMPLATE_BYTES + 4096;
    let new: NewTemplate = json_body(req, limit).await?;
    let t = crate::templates::create(&state, &caller, new).await?;
    let mut resp = (StatusCode::CREATED, Json(template_json(&t, true))).into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/api/v1/templates/{}", t.id)).map_err(ApiError::internal)?,
    );
    Ok(resp)
}

pub async fn list_templates(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let limit = q.limit()?;
    let items = state.meta.templates_of(caller.key_id().as_deref(), q.cursor.as_deref(), limit).await?;
    let next = (items.len() == limit as usize).then(|| items.last().map(|t| t.id.clone())).flatten();
    Ok(Json(json!({
        "items": items.iter().map(|t| template_json(t, false)).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

pub async fn get_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = crate::templates::visible(&state, &caller, &id).await?;
    Ok(Json(template_json(&t, true)))
}

/// Deleting a template changes no batch made from it (each keeps the template it was made with).
pub async fn delete_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    crate::templates::visible(&state, &caller, &id).await?;
    state.meta.delete_template(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/batches`: JSON (`{"template", "rows"|"csv", …}`), or multipart with a
/// `request` JSON part and a CSV file part.
pub async fn create_batch(State(state): State<AppState>, caller: Caller, req: Request) -> ApiResult<Response> {
    let limit = state.config.max_batch_body_bytes;
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("multipart/form-data"));
    let request = if is_multipart { read_multipart(&state, req, limit).await? } else { json_body(req, limit).await? };
    let batch = crate::batches::create(&state, &caller, request).await?;
    let mut body = batch_json(&state, &batch).await?;
    // Rows refused as the batch was made, so the caller sees them at once.
    let invalid = state.meta.batch_rows(&batch.id, Some(RowStatus::Invalid), None, 100).await?;
    body["invalid_rows"] = json!(invalid.iter().map(row_json).collect::<Vec<_>>());
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/api/v1/batches/{}", batch.id)).map_err(ApiError::internal)?,
    );
    Ok(resp)
}

async fn read_multipart(state: &AppState, req: Request, limit: usize) -> ApiResult<BatchRequest> {
    let mut mp = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let (mut request, mut csv): (Option<BatchRequest>, Option<String>) = (None, None);
    let mut read = 0usize;
    while let Some(field) = mp.next_field().await.map_err(crate::http::guard::multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field.file_name().is_some();
        let data = field.bytes().await.map_err(crate::http::guard::multipart_error)?;
        read += data.len();
        if read > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request is over {limit} bytes"),
            ));
        }
        match (name.as_str(), is_file) {
            ("request", false) => {
                let de = &mut serde_json::Deserializer::from_slice(&data);
                request = Some(serde_path_to_error::deserialize(de).map_err(|e| {
                    ApiError::unprocessable("invalid_request", format!("request part: {}: {}", e.path(), e.inner()))
                })?);
            }
            (_, true) if csv.is_none() => {
                csv = Some(String::from_utf8(data.to_vec()).map_err(|_| {
                    ApiError::unprocessable("csv_invalid", format!("the file part '{name}' is not UTF-8 text"))
                })?);
            }
            (other, _) => {
                return Err(ApiError::unprocessable(
                    "invalid_multipart",
                    format!("unexpected part '{other}': send a 'request' JSON part and one CSV file part"),
                ));
            }
        }
    }
    let mut request = request.ok_or_else(|| {
        ApiError::unprocessable("invalid_multipart", "the multipart body has no 'request' part (the template)")
    })?;
    if let Some(text) = csv {
        if request.rows.is_some() || request.csv.is_some() {
            return Err(ApiError::unprocessable(
                "invalid_request",
                "rows: send them in the file part or in the request, not both",
            ));
        }
        request.csv = Some(text);
    }
    Ok(request)
}

pub async fn list_batches(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let limit = q.limit()?;
    let items = state.meta.batches_of(caller.key_id().as_deref(), q.cursor.as_deref(), limit).await?;
    let next = (items.len() == limit as usize).then(|| items.last().map(|b| b.id.clone())).flatten();
    let mut out = vec![];
    for b in &items {
        out.push(batch_json(&state, b).await?);
    }
    Ok(Json(json!({"items": out, "next_cursor": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowsQuery {
    /// Rows after this index.
    after: Option<u32>,
    limit: Option<u32>,
}

/// A batch with a page of its rows (`?after=N&limit=M`, at most 1000).
pub async fn get_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<RowsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let limit = match q.limit.unwrap_or(100) {
        n @ 1..=1000 => n,
        _ => return Err(ApiError::bad_request("invalid_query", "limit must be 1-1000")),
    };
    let b = crate::batches::visible(&state, &caller, &id).await?;
    let rows = state.meta.batch_rows(&id, None, q.after, limit).await?;
    let mut v = batch_json(&state, &b).await?;
    v["rows"] = json!(rows.iter().map(row_json).collect::<Vec<_>>());
    v["next_after"] = json!((rows.len() == limit as usize).then(|| rows.last().map(|r| r.index)).flatten());
    Ok(Json(v))
}

pub async fn cancel_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let b = crate::batches::cancel(&state, &caller, &id).await?;
    Ok(Json(batch_json(&state, &b).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestQuery {
    format: Option<String>,
}

/// Every row's outcome: JSON (default) or CSV (`?format=csv`), with the generation, its video
/// link, the error and the row's values.
pub async fn manifest(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<ManifestQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let b = crate::batches::visible(&state, &caller, &id).await?;
    let rows = crate::batches::all_rows(&state, &id).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            let mut v = batch_json(&state, &b).await?;
            v["rows"] = json!(rows.iter().map(row_json).collect::<Vec<_>>());
            Ok(Json(v).into_response())
        }
        "csv" => {
            let fields: Vec<String> = b
                .template
                .get("fields")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let body = crate::batches::manifest_csv(&fields, &rows)?;
            let disposition = format!("attachment; filename=\"{id}.csv\"");
            Ok((
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
                    (header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(ApiError::internal)?),
                ],
                body,
            )
                .into_response())
        }
        other => Err(ApiError::bad_request("invalid_query", format!("format '{other}' is not json or csv"))),
    }
}
