//! HTTP: axum routes, extractors and response shapes over the domain. Never imports `jobs/`.

pub mod auth;
pub mod batches;
pub mod callbacks;
pub mod download;
pub mod generations;
pub mod guard;
pub mod imports;
pub mod listener;
pub mod live;
pub mod openapi;
pub mod ops;
pub mod progress;
pub mod studio;
pub mod talks;
pub mod telemetry;

use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::http::header;
use axum::middleware;
use axum::routing::get;
use axum::routing::post;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::Predicate;
use tower_http::compression::predicate::SizeAbove;

/// Every route: (method, path). The OpenAPI test checks the document against this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/ws/generations"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/generations"),
    ("get", "/api/v1/generations"),
    ("get", "/api/v1/generations/{id}"),
    ("delete", "/api/v1/generations/{id}"),
    ("post", "/api/v1/generations/{id}/cancel"),
    ("get", "/api/v1/generations/{id}/events"),
    ("get", "/api/v1/generations/{id}/video"),
    ("get", "/api/v1/generations/{id}/thumbnail"),
    ("get", "/api/v1/generations/{id}/subtitles.vtt"),
    ("get", "/api/v1/generations/{id}/report"),
    ("get", "/api/v1/generations/{id}/stream.m3u8"),
    ("get", "/api/v1/generations/{id}/stream/{piece}"),
    ("post", "/api/v1/assets"),
    ("get", "/api/v1/assets/{id}"),
    ("delete", "/api/v1/assets/{id}"),
    ("post", "/api/v1/templates"),
    ("get", "/api/v1/templates"),
    ("get", "/api/v1/templates/{id}"),
    ("delete", "/api/v1/templates/{id}"),
    ("post", "/api/v1/imports"),
    ("post", "/api/v1/batches"),
    ("get", "/api/v1/batches"),
    ("get", "/api/v1/batches/{id}"),
    ("post", "/api/v1/batches/{id}/cancel"),
    ("get", "/api/v1/batches/{id}/manifest"),
    ("get", "/api/v1/keys/self"),
    ("post", "/api/v1/keys/self/webhook-secret"),
    ("get", "/api/v1/performance/report"),
    ("post", "/talks"),
    ("get", "/talks"),
    ("get", "/talks/{id}"),
    ("delete", "/talks/{id}"),
    ("get", "/talks/{id}/result.mp4"),
    ("post", "/images"),
    ("post", "/audios"),
    ("post", "/callbacks/d-id/{generation}"),
    ("post", "/callbacks/replicate"),
];

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/api/v1/generations",
            post(crate::http::generations::create_generation).get(crate::http::generations::list_generations),
        )
        .route(
            "/api/v1/generations/{id}",
            get(crate::http::generations::get_generation).delete(crate::http::generations::delete_generation),
        )
        .route("/api/v1/generations/{id}/cancel", post(crate::http::generations::cancel_generation))
        .route("/api/v1/generations/{id}/events", get(crate::http::progress::sse))
        .route("/api/v1/generations/{id}/video", crate::http::generations::file_route("video.mp4", "video/mp4"))
        .route(
            "/api/v1/generations/{id}/thumbnail",
            crate::http::generations::file_route("thumbnail.jpg", "image/jpeg"),
        )
        .route(
            "/api/v1/generations/{id}/subtitles.vtt",
            crate::http::generations::file_route("subtitles.vtt", "text/vtt; charset=utf-8"),
        )
        .route(
            "/api/v1/generations/{id}/report",
            crate::http::generations::file_route("report.json", "application/json"),
        )
        .route("/api/v1/generations/{id}/stream.m3u8", get(crate::http::live::playlist))
        .route("/api/v1/generations/{id}/stream/{piece}", get(crate::http::live::piece))
        .route("/api/v1/assets", post(crate::http::generations::upload_asset))
        .route(
            "/api/v1/assets/{id}",
            get(crate::http::generations::get_asset).delete(crate::http::generations::delete_asset),
        )
        .route(
            "/api/v1/templates",
            post(crate::http::batches::create_template).get(crate::http::batches::list_templates),
        )
        .route(
            "/api/v1/templates/{id}",
            get(crate::http::batches::get_template).delete(crate::http::batches::delete_template),
        )
        .route("/api/v1/imports", post(crate::http::imports::create_import))
        .route("/api/v1/batches", post(crate::http::batches::create_batch).get(crate::http::batches::list_batches))
        .route("/api/v1/batches/{id}", get(crate::http::batches::get_batch))
        .route("/api/v1/batches/{id}/cancel", post(crate::http::batches::cancel_batch))
        .route("/api/v1/batches/{id}/manifest", get(crate::http::batches::manifest))
        .route("/api/v1/keys/self", get(crate::http::generations::own_key))
        .route("/api/v1/keys/self/webhook-secret", post(crate::http::generations::rotate_webhook_secret))
        .route("/api/v1/performance/report", get(crate::http::ops::performance_report))
        .route("/ws/generations", get(crate::http::progress::websocket))
        .route("/talks", post(crate::http::talks::create_talk).get(crate::http::talks::list_talks))
        .route("/talks/{id}", get(crate::http::talks::get_talk).delete(crate::http::talks::delete_talk))
        .route("/images", post(crate::http::talks::upload_image))
        .route("/audios", post(crate::http::talks::upload_audio))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::http::auth::authenticate));
    // Text only: videos and images are compressed already, and Range must address real bytes.
    let compress = SizeAbove::new(256).and(
        |_: StatusCode, _: axum::http::Version, h: &header::HeaderMap, _: &axum::http::Extensions| {
            h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| {
                c.starts_with("application/json") || c.starts_with("text/") && !c.starts_with("text/event-stream")
            })
        },
    );
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics_text))
        .route("/api/v1/openapi.json", get(ops::openapi_doc))
        // Signed links and provider callbacks: the signature is the permission, not a key.
        .route("/talks/{id}/result.mp4", get(crate::http::talks::result))
        .route("/callbacks/d-id/{generation}", post(crate::http::callbacks::callback))
        .route("/callbacks/replicate", post(crate::http::callbacks::replicate))
        .merge(crate::http::studio::routes())
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_upload_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), crate::http::guard::browser_guard))
        .layer(CompressionLayer::new().compress_when(compress))
        .layer(middleware::from_fn_with_state(state.clone(), crate::http::telemetry::track))
        .with_state(state)
}

/// A worker-only process answers probes and scrapes, nothing else.
pub fn worker_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics_text))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), crate::http::telemetry::track))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /api/v1/openapi.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc = openapi::document();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = vec![];
        for (p, ops) in paths {
            for m in ops.as_object().unwrap().keys() {
                documented.push((m.clone(), p.clone()));
            }
        }
        let mut served: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
        // Every $ref resolves inside the document.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = &r[..r.find('"').unwrap()];
            let name = target.strip_prefix("#/components/schemas/").expect("local ref");
            assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {target}");
        }
    }
}
