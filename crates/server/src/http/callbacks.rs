//! Provider callbacks: D-ID calls `POST /callbacks/d-id/{generation}` when a talk is done;
//! Replicate calls `POST /callbacks/replicate` when a prediction ends.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::signing::Purpose;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct CallbackQuery {
    signature: String,
}

/// `POST /callbacks/d-id/{generation}?signature=`: D-ID's webhook for a talk it rendered. The
/// body is not trusted: it only wakes the worker, which asks D-ID for the talk itself.
pub async fn callback(
    State(state): State<AppState>,
    UrlPath(generation_id): UrlPath<String>,
    Query(q): Query<CallbackQuery>,
) -> StatusCode {
    if !state.signing.verify(Purpose::DidCallback, &crate::signing::did_callback_message(&generation_id), &q.signature)
    {
        return StatusCode::FORBIDDEN;
    }
    let waiter = state.remote_waits.lock().expect("waits").get(&generation_id).cloned();
    match waiter {
        Some(n) => {
            n.notify_one();
            StatusCode::OK
        }
        // Not waiting here (another node, or already done): its poll will see the result.
        None => StatusCode::ACCEPTED,
    }
}

/// `POST /callbacks/replicate`: Replicate's webhook for a finished prediction, signed by the
/// Standard Webhooks scheme with `[providers.replicate] webhook_secret` (checked in full, in
/// constant time, and refused when over 5 minutes old). The prediction ends the wait of the
/// call that made it on this node; a call on another node finds it by polling.
pub async fn replicate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, crate::error::ApiError> {
    use crate::error::ApiError;
    let Some(secret) = state.config.providers.replicate.as_ref().and_then(|r| r.webhook_secret.as_deref()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "this server takes no Replicate webhooks ([providers.replicate] webhook_secret is not set)",
        ));
    };
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    reelsmith_providers::images::replicate::receive(
        secret,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
    )
    .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))?;
    Ok(StatusCode::OK)
}
