//! Authentication: bearer (or basic) tokens to keys, per-key rate limits, the `Caller` extractor.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use reelsmith_store::hash_token;

use crate::access::{Caller, CallerKey};
use crate::error::ApiError;
use crate::state::AppState;

fn token_of(req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
        return v.strip_prefix("Basic ").map(|b| basic_token(b.trim()));
    }
    h.get("x-api-key").and_then(|v| v.to_str().ok()).map(|t| t.trim().to_string())
}

/// `Authorization: Basic` as D-ID clients send it: base64 of `user:key` (the key is the
/// password), base64 of the key alone, or the key as is.
fn basic_token(b: &str) -> String {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(b).ok().and_then(|d| String::from_utf8(d).ok()) {
        Some(text) => text.rsplit_once(':').map_or(text.clone(), |(_, key)| key.to_string()),
        None => b.to_string(),
    }
}

/// Resolves the caller's key (when given or required) and applies its rate limit.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = token_of(&req);
    let key = match token {
        Some(t) => match state.meta.api_key_by_hash(&hash_token(&t)).await {
            Ok(Some(k)) if k.revoked_at_ms.is_none() => Some(k),
            Ok(Some(_)) => return unauthorized("this API key was revoked"),
            Ok(None) => return unauthorized("unknown API key"),
            Err(e) => return ApiError::from(e).into_response(),
        },
        None if state.config.keys_required() => {
            return unauthorized(
                "an API key is required: send 'Authorization: Bearer <key>' (create one with `reelsmith keys create`)",
            );
        }
        None => None,
    };
    if let Some(k) = &key
        && let Err(wait) = state.limiter.take(k)
    {
        return ApiError::too_many(
            "rate_limited",
            format!("rate limit of {} requests/s (burst {}) exceeded for key '{}'", k.rate_per_s, k.burst, k.name),
            wait.ceil() as u64,
        )
        .into_response();
    }
    let caller_key = key.as_ref().map(|k| CallerKey(Arc::from(k.id.as_str())));
    req.extensions_mut().insert(Caller(key));
    let mut resp = next.run(req).await;
    if let Some(k) = caller_key {
        resp.extensions_mut().insert(k);
    }
    resp
}

fn unauthorized(msg: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned().unwrap_or(Caller(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_carries_the_key_as_password_or_alone() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(basic_token(&b64("user@example.com:rsk_abc")), "rsk_abc");
        assert_eq!(basic_token(&b64("rsk_abc")), "rsk_abc");
        assert_eq!(basic_token("rsk_abc"), "rsk_abc");
    }
}
