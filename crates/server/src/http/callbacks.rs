//! Provider callbacks: D-ID calls `POST /callbacks/d-id/{generation}` when a talk is done.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
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
