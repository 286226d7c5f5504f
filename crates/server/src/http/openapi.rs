//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`. Written by hand around the spec's
//! generated JSON Schema; a test checks that it lists exactly the routes the router serves.

use serde_json::{Value, json};

fn op(summary: &str, tag: &str, responses: Value) -> Value {
    json!({"summary": summary, "tags": [tag], "responses": responses})
}

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok_json(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}])
}

fn file(desc: &str, mime: &str) -> Value {
    json!({
        "summary": desc, "tags": ["results"], "parameters": id_param(),
        "description": "Supports Range (206/416), ETag with If-None-Match (304) and If-Range; immutable, cached for a year.",
        "responses": {
            "200": {"description": "the file", "content": {mime: {}}},
            "206": {"description": "a byte range"},
            "304": {"description": "not modified"},
            "404": err("unknown generation, or not finished"),
            "416": err("range outside the file"),
        }
    })
}

pub fn document() -> Value {
    let mut spec_schema = reelsmith_spec::json_schema();
    // Nested definitions move to components so $refs resolve inside this document.
    let defs = spec_schema.as_object_mut().and_then(|o| o.remove("$defs")).unwrap_or(json!({}));
    let spec_text = spec_schema.to_string().replace("#/$defs/", "#/components/schemas/");
    let mut schemas: serde_json::Map<String, Value> =
        serde_json::from_str(&defs.to_string().replace("#/$defs/", "#/components/schemas/")).unwrap_or_default();
    schemas.insert("Spec".into(), serde_json::from_str(&spec_text).unwrap_or(json!({})));
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "description": "stable machine-readable code"},
                "message": {"type": "string", "description": "what is wrong, for people"},
                "issues": {"type": "array", "items": {"type": "object", "properties": {
                    "path": {"type": "string"}, "message": {"type": "string"}}}}}}}
        }),
    );
    schemas.insert("GenerationRequest".into(), json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "spec": {"$ref": "#/components/schemas/Spec"},
            "prompt": {"type": "object", "description": "instead of a spec: a topic or a text the director plans (see the README's \"From a prompt\")"},
            "template": {"description": "instead of a spec: a stored template's id (`tpl_…`), or a spec with `{{ NAME }}` placeholders and its `fields` ({NAME: {type: string|number|color|image|audio|video, default, max_length}}), filled with `merge`", "oneOf": [{"type": "string"}, {"type": "object"}]},
            "merge": {"description": "the template's row: {NAME: value} or Shotstack's [{find, replace}]; each bad value is a 422 issue `merge.NAME`", "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object", "required": ["find", "replace"]}}]},
            "priority": {"type": "integer", "minimum": 0, "maximum": 9, "default": 5},
            "webhook_url": {"type": "string", "format": "uri"},
            "metadata": {"type": "object", "description": "kept and returned; at most 16 KiB"},
            "dedupe": {"type": "boolean", "default": true,
                "description": "false renders afresh even when the same spec is queued, running or done (stages still come from the cache)"}
        },
        "description": "One of `spec`, `prompt` or `template`. Files in the spec are `asset:<id>` references, or names of file parts sent in the same multipart request."
    }));
    schemas.insert(
        "Generation".into(),
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                "progress": {"type": "number", "description": "percent, 0-100"},
                "stage": {"type": ["string", "null"]},
                "priority": {"type": "integer"},
                "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
                "created_at_ms": {"type": "integer"}, "started_at_ms": {"type": ["integer", "null"]},
                "finished_at_ms": {"type": ["integer", "null"]},
                "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
                "result": {"type": "object", "properties": {
                    "video_url": {"type": "string"}, "thumbnail_url": {"type": "string"},
                    "subtitles_url": {"type": ["string", "null"]}, "report_url": {"type": "string"},
                    "bytes": {"type": "integer"}, "duration_s": {"type": "number"},
                    "width": {"type": "integer"}, "height": {"type": "integer"}}},
                "timings": {"type": "object", "description": "per-stage wall/CPU time and cache hits"},
                "attempt_history": {"type": "array"},
                "webhook_deliveries": {"type": "array"},
                "segment_jobs": {"type": "array", "description": "Distributed renders: one entry per segment job (index, frames, render_attempt, status, attempts with each worker and outcome)", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "frames": {"type": "integer"}, "render_attempt": {"type": "integer"}, "status": {"type": "string"}, "attempts": {"type": "array"}}}},
                "spec": {"$ref": "#/components/schemas/Spec", "description": "as stored, files as asset references (GET of one generation only)"},
                "deduplicated": {"type": "boolean"}
            }
        }),
    );
    schemas.insert(
        "GenerationList".into(),
        json!({"type": "object", "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Generation"}},
        "next_cursor": {"type": ["string", "null"]}}}),
    );
    schemas.insert(
        "Asset".into(),
        json!({"type": "object", "properties": {
        "id": {"type": "string"}, "ref": {"type": "string", "description": "use this string in a spec"},
        "sha256": {"type": "string"}, "media_type": {"type": "string"}, "bytes": {"type": "integer"},
        "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]}}}),
    );

    schemas.insert(
        "Template".into(),
        json!({"type": "object", "properties": {
        "id": {"type": "string", "description": "tpl_…"}, "object": {"const": "template"}, "name": {"type": "string"},
        "fields": {"type": "object", "description": "{NAME: {type, default, max_length, description}}"},
        "template": {"type": "object", "description": "the document (GET of one template, and on creation)"},
        "created_at_ms": {"type": "integer"}}}),
    );
    schemas.insert(
        "BatchRequest".into(),
        json!({"type": "object", "additionalProperties": false, "required": ["template"],
        "properties": {
            "template": {"oneOf": [{"type": "string", "description": "a stored template's id"}, {"type": "object", "description": "a template sent inline"}]},
            "rows": {"type": "array", "maxItems": 10000, "items": {"oneOf": [{"type": "object"}, {"type": "array"}]}, "description": "each {NAME: value} or Shotstack's [{find, replace}]"},
            "csv": {"type": "string", "description": "or the rows as CSV: a header of field names; an empty cell takes the default"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 4, "default": 1, "description": "below interactive requests"},
            "webhook_url": {"type": "string", "format": "uri", "description": "one `batch.finished` event when the batch ends"},
            "metadata": {"type": "object", "description": "given to every row's generation with `batch` and `row`"}},
        "description": "`rows` or `csv`: one of them"}),
    );
    schemas.insert(
        "Batch".into(),
        json!({"type": "object", "properties": {
        "id": {"type": "string", "description": "bat_…"}, "object": {"const": "batch"},
        "status": {"enum": ["running", "completed", "cancelled"]},
        "template_id": {"type": ["string", "null"]}, "total": {"type": "integer"},
        "counts": {"type": "object", "description": "rows by outcome: pending, queued, running, succeeded, failed, cancelled, invalid, refused, expired"},
        "progress": {"type": "number", "description": "percent of rows finished"},
        "rows": {"type": "array", "items": {"type": "object", "properties": {
            "row": {"type": "integer"}, "status": {"type": "string"}, "generation_id": {"type": ["string", "null"]},
            "video_url": {"type": ["string", "null"]}, "error": {"type": ["object", "null"]}, "merge": {"type": "object"}}}},
        "invalid_rows": {"type": "array", "description": "on creation: the first 100 rows refused"},
        "next_after": {"type": ["integer", "null"]}}}),
    );
    let page_params = json!([
        {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}}
    ]);
    let limited = json!({"description": "rate limit or job quota exceeded; see Retry-After",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Reelsmith generation API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit storyboards, follow progress live, download results. Every response carries X-Request-Id and X-Response-Time. Webhook events are signed: `Reelsmith-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`, with a stable `Reelsmith-Event-Id` to de-duplicate on."
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "keys from `reelsmith keys create`; required when the server listens beyond loopback"}}
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/health": {"get": op("Liveness", "ops", json!({"200": {"description": "alive"}}))},
            "/ready": {"get": op("Readiness: database, storage, disk space, FFmpeg; the shared cache and cross-node events when Redis is configured (without them: `degraded`, still 200)", "ops", json!({"200": {"description": "ready or degraded, with every check, the node's role and id"}, "503": {"description": "not ready, with the failing checks"}}))},
            "/metrics": {"get": op("Prometheus metrics", "ops", json!({"200": {"description": "text exposition format"}}))},
            "/ws/generations": {"get": op("WebSocket: send {\"action\":\"subscribe\",\"ids\":[...]} or {\"action\":\"subscribe\",\"all\":true}; receive status events", "events", json!({"101": {"description": "switching protocols"}}))},
            "/api/v1/openapi.json": {"get": op("This document", "ops", json!({"200": {"description": "OpenAPI 3.1"}}))},
            "/api/v1/generations": {
                "post": {
                    "summary": "Submit a generation (stored durably before the answer)", "tags": ["generations"],
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 255}}],
                    "requestBody": {"required": true, "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/GenerationRequest"}},
                        "multipart/form-data": {"schema": {"type": "object", "properties": {
                            "request": {"$ref": "#/components/schemas/GenerationRequest"},
                            "spec": {"$ref": "#/components/schemas/Spec"}},
                            "description": "a 'request' (or 'spec') JSON part plus file parts named as the spec names them"}}}},
                    "responses": {
                        "202": ok_json("accepted (or an idempotent replay: header Idempotent-Replayed)", "Generation"),
                        "200": ok_json("an identical spec is already queued, running or done: that generation", "Generation"),
                        "400": err("malformed JSON or multipart"), "401": err("missing or unknown API key"),
                        "409": err("Idempotency-Key reused with a different request"),
                        "413": err("body or image too large"), "415": err("unsupported file type"),
                        "422": err("invalid request or spec; `issues` name each field"), "429": limited
                    }
                },
                "get": {
                    "summary": "List generations, newest first", "tags": ["generations"],
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]}},
                        {"name": "created_after_ms", "in": "query", "schema": {"type": "integer"}},
                        {"name": "created_before_ms", "in": "query", "schema": {"type": "integer"}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page"},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}}
                    ],
                    "responses": {"200": ok_json("a page", "GenerationList"), "400": err("bad filter")}
                }
            },
            "/api/v1/generations/{id}": {
                "get": {"summary": "Status, progress, per-stage timings, attempts, webhook deliveries", "tags": ["generations"],
                    "parameters": id_param(), "responses": {"200": ok_json("the generation", "Generation"), "404": err("unknown id")}},
                "delete": {"summary": "Delete a generation and its files", "tags": ["generations"],
                    "parameters": id_param(), "responses": {"204": {"description": "deleted"}, "404": err("unknown id")}}
            },
            "/api/v1/generations/{id}/cancel": {"post": {"summary": "Cancel (queued: at once; running: within seconds)", "tags": ["generations"],
                "parameters": id_param(), "responses": {"200": ok_json("cancelled", "Generation"), "202": ok_json("cancellation requested", "Generation"),
                "404": err("unknown id"), "409": err("already finished")}}},
            "/api/v1/generations/{id}/events": {"get": {"summary": "Server-sent events: `status` events until the generation finishes", "tags": ["events"],
                "parameters": id_param(), "responses": {"200": {"description": "text/event-stream"}, "404": err("unknown id")}}},
            "/api/v1/generations/{id}/video": {"get": file("The MP4", "video/mp4")},
            "/api/v1/generations/{id}/thumbnail": {"get": file("A poster frame", "image/jpeg")},
            "/api/v1/generations/{id}/subtitles.vtt": {"get": file("WebVTT subtitles", "text/vtt")},
            "/api/v1/generations/{id}/stream.m3u8": {"get": {"summary": "Live HLS playlist (fMP4 pieces) that grows while the render runs and ends with #EXT-X-ENDLIST; asked for before the first piece, it waits for it (up to 20 s)", "tags": ["results"],
                "parameters": id_param(), "responses": {"200": {"description": "the playlist", "content": {"application/vnd.apple.mpegurl": {}}},
                "404": err("unknown id, finished without a stream, or no piece yet (ask again)")}}},
            "/api/v1/generations/{id}/stream/{piece}": {"get": {"summary": "A piece of the live stream: init.mp4 or seg-N.m4s", "tags": ["results"],
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "piece", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^(init\\.mp4|seg-[0-9]{1,6}\\.m4s)$"}}],
                "responses": {"200": {"description": "the piece", "content": {"video/iso.segment": {}, "video/mp4": {}}}, "206": {"description": "a byte range"}, "304": {"description": "not modified"}, "404": err("unknown generation or piece")}}},
            "/api/v1/generations/{id}/report": {"get": file("The render report: per-stage wall/CPU time, cache hits, memory", "application/json")},
            "/api/v1/assets": {"post": {"summary": "Upload an image, audio or font (raw body with X-File-Name, or multipart); returns a `ref` for specs", "tags": ["assets"],
                "responses": {"201": ok_json("stored (same bytes: same asset)", "Asset"), "413": err("too large (bytes or pixels), or the key's storage quota (asset_quota_mb) is used up"),
                "415": err("not an image, audio or font"), "422": err("corrupt file")}}},
            "/api/v1/assets/{id}": {"get": {"summary": "Asset metadata", "tags": ["assets"], "parameters": id_param(),
                "responses": {"200": ok_json("the asset", "Asset"), "404": err("unknown id")}},
                "delete": {"summary": "Delete an asset (its file and shared copy); assets unused for asset_retention_hours go by themselves", "tags": ["assets"], "parameters": id_param(),
                "responses": {"204": {"description": "deleted"}, "404": err("unknown id"), "409": err("a queued or running generation uses it")}}},
            "/api/v1/templates": {
                "post": {"summary": "Store a template (checked without rendering: placeholders against fields, the spec at the defaults)", "tags": ["templates"],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name", "template"], "properties": {"name": {"type": "string", "maxLength": 200}, "template": {"type": "object"}}}}}},
                    "responses": {"201": ok_json("stored", "Template"), "422": err("invalid template; `issues` name each place (template.…)"), "429": limited}},
                "get": {"summary": "The key's templates, newest first", "tags": ["templates"], "parameters": page_params.clone(),
                    "responses": {"200": {"description": "`{items: [Template], next_cursor}`"}}}
            },
            "/api/v1/templates/{id}": {
                "get": {"summary": "A template with its document", "tags": ["templates"], "parameters": id_param(),
                    "responses": {"200": ok_json("the template", "Template"), "404": err("unknown id")}},
                "delete": {"summary": "Delete a template (batches made from it keep their copy)", "tags": ["templates"], "parameters": id_param(),
                    "responses": {"204": {"description": "deleted"}, "404": err("unknown id")}}
            },
            "/api/v1/imports": {"post": {"summary": "A slide deck or document as a storyboard draft: PDF pages narrated by their text, PPTX/ODP slides by their speaker notes (or own text), Markdown headings as title cards, paragraphs narrated, images as pictures. Slide pictures become the caller's assets", "tags": ["imports"],
                "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary", "description": "deck.pdf, deck.pptx, deck.odp or notes.md"},
                    "request": {"type": "object", "properties": {"size": {"type": "string", "description": "WIDTHxHEIGHT, default 1280x720"}, "voice": {"type": "object"}}}},
                    "description": "Markdown's pictures as further file parts, named as the document names them"}}}},
                "responses": {"201": {"description": "`{object: import, file, kind, scenes, spec, assets}`: submit `spec` to POST /api/v1/generations"},
                    "413": err("too large"), "422": err("unsupported, corrupt, password-protected, too many pages, a zip bomb, nothing to narrate, or a picture not uploaded; the message names the file and page"),
                    "429": err("every import slot is busy"), "503": err("a converter is missing or did not finish")}}},
            "/api/v1/batches": {
                "post": {"summary": "Render a template for many rows: each row checked (bad rows reported and skipped), rendered below interactive priority within half the key's concurrency", "tags": ["batches"],
                    "requestBody": {"required": true, "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}},
                        "multipart/form-data": {"schema": {"type": "object", "description": "a 'request' JSON part (BatchRequest without rows) and one CSV file part"}}}},
                    "responses": {"202": ok_json("accepted, with `invalid_rows`", "Batch"), "404": err("unknown template"), "413": err("body too large"),
                        "422": err("invalid template, options, CSV, no rows or too many rows"), "429": limited}},
                "get": {"summary": "The key's batches, newest first", "tags": ["batches"], "parameters": page_params,
                    "responses": {"200": {"description": "`{items: [Batch], next_cursor}`"}}}
            },
            "/api/v1/batches/{id}": {"get": {"summary": "A batch: counts by outcome, progress, a page of rows with their generations and errors", "tags": ["batches"],
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "schema": {"type": "integer"}, "description": "rows after this index (next_after of the previous page)"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
                "responses": {"200": ok_json("the batch", "Batch"), "404": err("unknown id")}}},
            "/api/v1/batches/{id}/cancel": {"post": {"summary": "Cancel: pending rows at once, rendering ones within seconds; the webhook follows when they have stopped", "tags": ["batches"],
                "parameters": id_param(), "responses": {"200": ok_json("cancelled", "Batch"), "404": err("unknown id"), "409": err("already finished")}}},
            "/api/v1/batches/{id}/manifest": {"get": {"summary": "Every row's outcome, generation, video link, error and values", "tags": ["batches"],
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"], "default": "json"}}],
                "responses": {"200": {"description": "application/json (Batch with all rows) or text/csv"}, "404": err("unknown id")}}},
            "/api/v1/keys/self": {"get": {"summary": "The calling key: its limits, its budgets per UTC day and what it used of them today", "tags": ["keys"],
                "responses": {"200": {"description": "`{id, name, max_priority, max_concurrent_jobs, limits: {job_megapixel_frames, daily_megapixel_frames, daily_did_scenes, daily_provider_usd}, used_today: {megapixel_frames, did_scenes}, provider_usd_today}` (null: no limit)"}, "400": err("no API key")}}},
            "/api/v1/keys/self/webhook-secret": {"post": {"summary": "A new webhook signing secret for the calling key (shown only in this answer; the old one stops at once)", "tags": ["keys"],
                "responses": {"201": {"description": "`{\"key_id\", \"webhook_secret\"}`"}, "400": err("no API key (keyless webhooks use the server's webhook_secret)")}}},
            "/api/v1/performance/report": {"get": {"summary": "Count, success rate, p50/p95/p99 per route and per stage over a window", "tags": ["ops"],
                "parameters": [{"name": "window", "in": "query", "schema": {"type": "string", "default": "15m"}, "description": "90s, 15m, 2h, 1d"}],
                "responses": {"200": {"description": "the report"}, "400": err("bad window")}}},
            "/talks": {
                "post": {"summary": "D-ID-compatible: create a talk (photo `source_url` + `script` text or audio; `config`, `webhook`, `name`, `user_data`; Reelsmith's `engine`: local or d-id). Errors are D-ID's `{kind, description}`", "tags": ["talks"],
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["source_url", "script"]}}}},
                    "responses": {"201": {"description": "`{id: tlk_…, object: talk, created_at, created_by, status: created}`"}, "400": {"description": "`{kind: BadRequestError, description}`"}}},
                "get": {"summary": "D-ID-compatible: list talks, newest first (`limit`, `token`)", "tags": ["talks"],
                    "responses": {"200": {"description": "`{talks: [...], token}`"}}}
            },
            "/talks/{id}": {
                "get": {"summary": "D-ID-compatible: a talk with status created, started, done (with `result_url`, `duration`) or error", "tags": ["talks"],
                    "parameters": id_param(), "responses": {"200": {"description": "the talk"}, "404": {"description": "`{kind: NotFoundError}`"}}},
                "delete": {"summary": "D-ID-compatible: delete a talk and its video", "tags": ["talks"],
                    "parameters": id_param(), "responses": {"200": {"description": "deleted"}, "404": {"description": "`{kind: NotFoundError}`"}}}
            },
            "/talks/{id}/result.mp4": {"get": {"summary": "The talk's video behind its signed `result_url` (no key; Range, ETag)", "tags": ["talks"],
                "parameters": id_param(), "responses": {"200": {"description": "video/mp4"}, "206": {"description": "a range"}, "403": {"description": "bad or expired signature"}}}},
            "/images": {"post": {"summary": "D-ID-compatible upload (multipart `image`): `{id, url}`, the url usable as `source_url`", "tags": ["talks"],
                "responses": {"201": {"description": "stored"}, "400": {"description": "not an image"}}}},
            "/audios": {"post": {"summary": "D-ID-compatible upload (multipart `audio`): `{id, url, duration}`, the url usable as `audio_url`", "tags": ["talks"],
                "responses": {"201": {"description": "stored"}, "400": {"description": "not audio"}}}},
            "/callbacks/d-id/{generation}": {"post": {"summary": "D-ID's webhook for a talk it renders for this server (signed link; wakes the worker)", "tags": ["talks"],
                "parameters": [{"name": "generation", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "a worker was waiting"}, "202": {"description": "no worker waiting here"}, "403": {"description": "bad signature"}}}},
            "/callbacks/replicate": {"post": {"summary": "Replicate's webhook for a finished prediction (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature, keyed by [providers.replicate] webhook_secret)", "tags": ["generations"],
                "responses": {"200": {"description": "taken"}, "401": err("bad or stale signature"), "404": err("no webhook secret configured")}}}
        }
    })
}
