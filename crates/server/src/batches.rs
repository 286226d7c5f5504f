//! Batches: one template and many rows (JSON or CSV), each row a generation. Rows are checked
//! one by one when the batch is made (a row that does not fit the template is reported and
//! skipped, the rest render). A pump job per batch ([`run_round`]) then submits rows a few at a
//! time, at a lower priority than interactive requests and within half of the key's
//! concurrency, so a batch of 10,000 rows neither floods the queue nor crowds out the key's own
//! requests; every submitted row goes through the same checks, limits and budgets as a
//! `POST /api/v1/generations`. When the last row ends, one webhook (`batch.finished`) is sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::http::StatusCode;
use reelsmith_spec::template::{FieldType, Template, row_from_json};
use reelsmith_store::{BatchRecord, BatchRow, BatchState, JobState, NewBatchRow, NewJob, RowStatus, new_id, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::assets::{ASSET_PREFIX, Kind, sniff_kind};
use crate::error::{ApiError, ApiResult, IssueBody};
use crate::state::AppState;
use crate::submit::Envelope;
use crate::templates::{issues, refuse};

/// Batches render below interactive requests (default 5): priorities 0-4, default 1.
pub const MAX_BATCH_PRIORITY: i64 = 4;
pub const DEFAULT_BATCH_PRIORITY: i64 = 1;
/// Largest metadata a batch gives its rows (each row's generation adds its batch and row).
const MAX_METADATA_BYTES: usize = 15 * 1024;
/// Rows read from the store at once when walking a whole batch.
const PAGE: u32 = 1000;

/// The body of `POST /api/v1/batches` (or the `request` part of a multipart body, whose file
/// part is the CSV).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// A stored template's id (`tpl_…`) or a template sent inline.
    pub template: Value,
    /// Rows: each `{"NAME": value}` or Shotstack's `[{"find", "replace"}]`.
    #[serde(default)]
    pub rows: Option<Vec<Value>>,
    /// Or the rows as CSV text: a header of field names, a line per row (an empty cell takes
    /// the field's default).
    #[serde(default)]
    pub csv: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    /// Called once, when the batch ends.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Given to every row's generation, with `batch` and `row` added.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// One issue under `path`.
fn issue(path: impl Into<String>, message: impl Into<String>) -> Vec<IssueBody> {
    vec![IssueBody { path: path.into(), message: message.into() }]
}

/// An API error as a row's stored error.
fn error_json(e: &ApiError) -> Value {
    json!({"code": e.code, "message": e.message, "issues": e.issues})
}

/// CSV text as rows: the header names the fields; empty cells are left out (the field's
/// default applies). A malformed line is named by its number.
pub fn rows_from_csv(text: &str, max_rows: usize) -> ApiResult<Vec<Value>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let bad = |line: String, message: String| refuse("csv_invalid", issue(format!("csv.{line}"), message));
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| bad("line 1".into(), e.to_string()))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(bad("line 1".into(), "the first line names the template's fields".into()));
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = headers.iter().find(|h| !h.is_empty() && !seen.insert(h.as_str())) {
        return Err(bad("line 1".into(), format!("the column {dup:?} is named twice")));
    }
    let mut rows = vec![];
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or_else(|| "line ?".to_string(), |p| format!("line {}", p.line()));
            bad(line, e.to_string())
        })?;
        if rows.len() == max_rows {
            return Err(too_many_rows(max_rows));
        }
        let row: serde_json::Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .filter(|(h, cell)| !h.is_empty() && !cell.is_empty())
            .map(|(h, cell)| (h.clone(), Value::from(cell)))
            .collect();
        rows.push(Value::Object(row));
    }
    Ok(rows)
}

fn too_many_rows(max: usize) -> ApiError {
    refuse("too_many_rows", issue("rows", format!("a batch has at most {max} rows; split it into several batches")))
}

/// What every row's generation is submitted with (stored as the batch's `options`).
fn options(state: &AppState, caller: &Caller, req: &BatchRequest) -> ApiResult<Value> {
    let priority = match req.priority {
        None => DEFAULT_BATCH_PRIORITY,
        Some(p @ 0..=MAX_BATCH_PRIORITY) => p,
        Some(p) => {
            return Err(refuse(
                "invalid_request",
                issue("priority", format!("{p}: batches render at 0-{MAX_BATCH_PRIORITY}, below interactive requests")),
            ));
        }
    };
    if let (Some(key), Some(p)) = (&caller.0, req.priority)
        && p > i64::from(key.max_priority)
    {
        return Err(refuse(
            "priority_not_allowed",
            issue("priority", format!("this key may use priorities 0-{}", key.max_priority)),
        ));
    }
    if let Some(u) = &req.webhook_url {
        crate::submit::check_webhook_url(u, state.config.webhook_allow_private)?;
    }
    let metadata = req.metadata.clone().unwrap_or(json!({}));
    if !metadata.is_object() || metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(refuse("invalid_request", issue("metadata", "must be a JSON object of at most 15 KiB")));
    }
    Ok(json!({
        "priority": priority,
        "priority_given": req.priority.is_some(),
        "webhook_url": req.webhook_url,
        "metadata": metadata,
    }))
}

/// For each asset rows name: the rows, fields and field kinds naming it.
type AssetUses = BTreeMap<String, Vec<(u32, String, FieldType)>>;

/// Checks each row against the template (CPU work, run off the async runtime): a row that
/// does not fit is `Invalid` with its issues (`merge.NAME`); media fields must name uploaded
/// assets. Returns the rows and, for each asset named, the rows and field kind naming it.
fn check_rows(template: &Template, rows: Vec<Value>) -> (Vec<NewBatchRow>, AssetUses) {
    let mut out = Vec::with_capacity(rows.len());
    let mut assets = AssetUses::new();
    for (i, row) in rows.into_iter().enumerate() {
        let index = i as u32;
        let checked = row_from_json(&row).and_then(|values| template.merge(&values).map(|_| values));
        let values = match checked {
            Ok(values) => values,
            Err(e) => {
                let e = refuse("merge_invalid", issues(e, ""));
                out.push(NewBatchRow { index, merge: row, status: RowStatus::Invalid, error: Some(error_json(&e)) });
                continue;
            }
        };
        let mut problems = vec![];
        for (name, field) in &template.fields {
            if !matches!(field.kind, FieldType::Image | FieldType::Audio | FieldType::Video) {
                continue;
            }
            let Some(Value::String(file)) = values.get(name).or(field.default.as_ref()) else { continue };
            match file.strip_prefix(ASSET_PREFIX) {
                Some(id) => assets.entry(id.to_string()).or_default().push((index, name.clone(), field.kind)),
                None => problems.push(IssueBody {
                    path: format!("merge.{name}"),
                    message: format!(
                        "{file:?} is not an uploaded asset: upload it with POST /api/v1/assets and use \"asset:<id>\""
                    ),
                }),
            }
        }
        let merge = Value::Object(values.into_iter().collect());
        if problems.is_empty() {
            out.push(NewBatchRow { index, merge, status: RowStatus::Pending, error: None });
        } else {
            let e = refuse("missing_asset", problems);
            out.push(NewBatchRow { index, merge, status: RowStatus::Invalid, error: Some(error_json(&e)) });
        }
    }
    (out, assets)
}

/// Marks rows invalid whose media fields name an asset that is not the caller's, or not of the
/// field's kind (each asset looked up once).
async fn check_row_assets(
    state: &AppState,
    caller: &Caller,
    rows: &mut [NewBatchRow],
    assets: AssetUses,
) -> ApiResult<()> {
    let mut bad: BTreeMap<u32, Vec<IssueBody>> = BTreeMap::new();
    for (id, uses) in assets {
        let asset = state.meta.asset(&id).await?.filter(|a| caller.0.is_none() || a.api_key_id == caller.key_id());
        for (index, name, kind) in uses {
            let wanted = match kind {
                FieldType::Image => Kind::Image,
                FieldType::Audio => Kind::Audio,
                _ => Kind::Video,
            };
            let message = match &asset {
                None => format!("no asset with id '{id}' (upload it with POST /api/v1/assets)"),
                Some(a) if sniff_kind(&a.media_type) != Some(wanted) => {
                    format!("asset '{id}' is {}, not {}", a.media_type, wanted.describe())
                }
                Some(_) => continue,
            };
            bad.entry(index).or_default().push(IssueBody { path: format!("merge.{name}"), message });
        }
    }
    for (index, problems) in bad {
        let row = &mut rows[index as usize];
        if row.status == RowStatus::Pending {
            row.status = RowStatus::Invalid;
            row.error = Some(error_json(&refuse("missing_asset", problems)));
        }
    }
    Ok(())
}

/// Makes a batch: the template resolved and checked, every row checked, the batch and its rows
/// stored with the first round of its pump. Refused as a whole (nothing stored) only when the
/// request itself is wrong: the template, the options, no rows or too many.
pub async fn create(state: &AppState, caller: &Caller, req: BatchRequest) -> ApiResult<BatchRecord> {
    let (template, stored) = crate::templates::resolve(state, caller, &req.template).await?;
    if stored.is_none() {
        crate::templates::check(state, caller.key_id().as_deref(), &template).await?;
    }
    let options = options(state, caller, &req)?;
    let max = state.config.max_batch_rows;
    let rows = match (req.rows, req.csv) {
        (Some(rows), None) => rows,
        (None, Some(text)) => rows_from_csv(&text, max)?,
        _ => {
            return Err(refuse(
                "invalid_request",
                issue("rows", "send the rows as `rows` (JSON) or `csv`: one of them"),
            ));
        }
    };
    if rows.is_empty() {
        return Err(refuse("invalid_request", issue("rows", "the batch has no rows")));
    }
    if rows.len() > max {
        return Err(too_many_rows(max));
    }
    let parsed = template.clone();
    let (mut rows, assets) =
        tokio::task::spawn_blocking(move || check_rows(&parsed, rows)).await.map_err(ApiError::internal)?;
    check_row_assets(state, caller, &mut rows, assets).await?;
    // The template as read above: the batch keeps its own copy.
    let (template_id, body) = match stored {
        Some(t) => (Some(t.id), t.body),
        None => (None, req.template),
    };
    let batch = BatchRecord {
        id: new_id("bat"),
        api_key_id: caller.key_id(),
        template_id,
        template: body,
        options,
        state: BatchState::Running,
        total: rows.len() as u32,
        created_at_ms: now_ms(),
        finished_at_ms: None,
    };
    state.meta.create_batch(&batch, &rows, pump_job(state, &batch.id, 0)).await?;
    metrics::counter!("reelsmith_batch_rows_total", "status" => "accepted").increment(rows.len() as u64);
    Ok(batch)
}

/// The next round of a batch's pump, `delay_ms` from now.
pub fn pump_job(state: &AppState, batch: &str, delay_ms: u64) -> NewJob {
    let mut job = crate::queues::Job::Batch { batch: batch.into() }.to_new_job();
    job.subject = Some(batch.into());
    job.run_at_ms = now_ms() + delay_ms as i64;
    job.priority = 5;
    // A round is short; a failing one (the database away) is tried again for minutes.
    job.retry =
        reelsmith_store::RetryPolicy { max_attempts: 30, backoff_base_ms: 500, backoff_max_ms: 30_000, jitter: 0.2 };
    job.timeout = std::time::Duration::from_secs_f64(state.config.lease_secs.max(30.0));
    job
}

/// What a round of the pump leaves to do.
pub enum Round {
    /// Rows are pending or rendering: another round follows.
    Again,
    /// The batch has ended: these jobs (its webhook) follow, and no further round.
    Ended(Vec<NewJob>),
}

/// The generations one key's batches may keep queued or rendering at once: half its
/// concurrency (its interactive requests keep the other half), at most `batch_concurrency`.
fn key_share(state: &AppState, key: Option<&reelsmith_store::ApiKey>) -> u64 {
    let cap = state.config.batch_concurrency.max(1);
    u64::from(key.map_or(cap, |k| (k.max_concurrent_jobs / 2).max(1).min(cap)))
}

/// One round: rows whose generation finished are noted, then (while the batch runs) the next
/// pending rows are submitted as the key's share allows. A row that its template, the engine
/// or the key's budget refuses is recorded as such and skipped; a full queue or a passing
/// fault leaves it pending for the next round.
pub async fn run_round(state: &AppState, id: &str) -> ApiResult<Round> {
    let Some(batch) = state.meta.batch(id).await? else { return Ok(Round::Ended(vec![])) };
    if batch.state == BatchState::Completed {
        return Ok(Round::Ended(vec![]));
    }
    let mut active = 0u64;
    for row in state.meta.batch_rows(id, Some(RowStatus::Submitted), None, 10_000).await? {
        match row.generation_state {
            Some(s) if !s.is_final() => active += 1,
            _ => {
                state
                    .meta
                    .move_batch_row(id, row.index, RowStatus::Submitted, RowStatus::Done, None, row.error.as_ref())
                    .await?;
            }
        }
    }
    if batch.state == BatchState::Cancelled {
        return Ok(if active == 0 { Round::Ended(finished_event(state, id).await?) } else { Round::Again });
    }
    let key = match &batch.api_key_id {
        Some(k) => state.meta.api_key(k).await?,
        None => None,
    };
    if batch.api_key_id.is_some() && key.as_ref().is_none_or(|k| k.revoked_at_ms.is_some()) {
        let e = ApiError::new(StatusCode::FORBIDDEN, "key_revoked", "the batch's API key was revoked");
        refuse_pending(state, id, RowStatus::Refused, &e).await?;
    } else {
        active += submit_rows(state, &batch, Caller(key)).await?;
    }
    let pending = state.meta.batch_rows(id, Some(RowStatus::Pending), None, 1).await?.len();
    if pending == 0 && active == 0 && state.meta.finish_batch(id, BatchState::Completed, now_ms()).await? {
        return Ok(Round::Ended(finished_event(state, id).await?));
    }
    Ok(Round::Again)
}

/// Marks every pending row of a batch `to`, with the error.
async fn refuse_pending(state: &AppState, id: &str, to: RowStatus, e: &ApiError) -> ApiResult<()> {
    let error = error_json(e);
    loop {
        let rows = state.meta.batch_rows(id, Some(RowStatus::Pending), None, PAGE).await?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in rows {
            state.meta.move_batch_row(id, row.index, RowStatus::Pending, to, None, Some(&error)).await?;
        }
    }
}

/// Submits the next pending rows within the key's share; returns how many became generations.
async fn submit_rows(state: &AppState, batch: &BatchRecord, caller: Caller) -> ApiResult<u64> {
    let share = key_share(state, caller.0.as_ref());
    let busy = state.meta.key_batch_active(batch.api_key_id.as_deref()).await?;
    let free = share.saturating_sub(busy);
    if free == 0 {
        return Ok(0);
    }
    let template = crate::templates::parse(&batch.template)?;
    let mut submitted = 0;
    for row in state.meta.batch_rows(&batch.id, Some(RowStatus::Pending), None, free as u32).await? {
        match submit_row(state, &caller, batch, &template, &row).await {
            Ok(generation) => {
                let moved = state
                    .meta
                    .move_batch_row(
                        &batch.id,
                        row.index,
                        RowStatus::Pending,
                        RowStatus::Submitted,
                        Some(&generation),
                        None,
                    )
                    .await?;
                if moved {
                    submitted += 1;
                    metrics::counter!("reelsmith_batch_rows_total", "status" => "submitted").increment(1);
                } else if let Some(g) = state.meta.generation(&generation).await? {
                    // The batch was cancelled while this row was being submitted.
                    crate::submit::cancel_generation(state, &g).await?;
                }
            }
            // The key's queue is full, or a passing fault: the row waits for the next round.
            Err(e) if e.code == "quota_exceeded" || e.status.is_server_error() => break,
            Err(e) => {
                let to = if e.code == "budget_exceeded" { RowStatus::Refused } else { RowStatus::Invalid };
                state
                    .meta
                    .move_batch_row(&batch.id, row.index, RowStatus::Pending, to, None, Some(&error_json(&e)))
                    .await?;
                metrics::counter!("reelsmith_batch_rows_total", "status" => to.as_str()).increment(1);
            }
        }
    }
    Ok(submitted)
}

/// One row as a generation, like `POST /api/v1/generations` with the template and the row;
/// its idempotency key makes a round that runs again find the same generation.
async fn submit_row(
    state: &AppState,
    caller: &Caller,
    batch: &BatchRecord,
    template: &Template,
    row: &BatchRow,
) -> ApiResult<String> {
    let values = row_from_json(&row.merge).map_err(|e| refuse("merge_invalid", issues(e, "")))?;
    let spec = template.merge(&values).map_err(|e| refuse("merge_invalid", issues(e, "")))?;
    let mut metadata = batch.options["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["batch"] = json!(batch.id);
    metadata["row"] = json!(row.index);
    let env = Envelope {
        spec: Some(spec),
        prompt: None,
        template: None,
        merge: None,
        priority: Some(batch.options["priority"].as_i64().unwrap_or(DEFAULT_BATCH_PRIORITY)),
        webhook_url: None,
        metadata: Some(metadata),
        dedupe: Some(true),
    };
    let mut prepared = crate::submit::prepare(state, env, &HashMap::new(), caller.key_id().as_deref()).await?;
    // A default priority the key may not use is lowered to its own, as for any request.
    prepared.priority_given = batch.options["priority_given"].as_bool().unwrap_or(false);
    let key = format!("batch-{}-{}", batch.id, row.index);
    let (_, generation, _) = crate::submit::enqueue(state, caller, prepared, Some(key)).await?;
    Ok(generation)
}

/// The batch's one webhook event, when it has a URL.
async fn finished_event(state: &AppState, id: &str) -> ApiResult<Vec<NewJob>> {
    let Some(batch) = state.meta.batch(id).await? else { return Ok(vec![]) };
    let Some(url) = batch.options["webhook_url"].as_str() else { return Ok(vec![]) };
    let data = batch_json(state, &batch).await?;
    let mut job = crate::webhooks::event_job(
        url,
        &batch.id,
        "batch.finished",
        data,
        state.config.webhook_max_attempts,
        state.config.webhook_retry_base_ms,
    );
    if let Some(k) = &batch.api_key_id {
        job.payload["key_id"] = json!(k);
    }
    Ok(vec![job])
}

/// A batch the caller may see (another key's batches do not exist for it).
pub async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<BatchRecord> {
    match state.meta.batch(id).await? {
        Some(b) if caller.0.is_none() || b.api_key_id == caller.key_id() => Ok(b),
        _ => Err(ApiError::not_found("batch", id)),
    }
}

/// Cancels a running batch: pending rows are cancelled, rendering ones asked to stop; the
/// webhook follows once the last of them has stopped.
pub async fn cancel(state: &AppState, caller: &Caller, id: &str) -> ApiResult<BatchRecord> {
    let batch = visible(state, caller, id).await?;
    if batch.state != BatchState::Running || !state.meta.finish_batch(id, BatchState::Cancelled, now_ms()).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_finished",
            format!("batch {id} already {}", batch.state.as_str()),
        ));
    }
    let mut after = None;
    loop {
        let rows = state.meta.batch_rows(id, Some(RowStatus::Submitted), after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.index);
        for row in &rows {
            let Some(generation) = &row.generation_id else { continue };
            if let Some(g) = state.meta.generation(generation).await?
                && !g.state.is_final()
            {
                crate::submit::cancel_generation(state, &g).await?;
            }
        }
    }
    visible(state, caller, id).await
}

/// The public JSON of a batch: its state, counts by outcome and progress.
pub async fn batch_json(state: &AppState, b: &BatchRecord) -> ApiResult<Value> {
    let counts = state.meta.batch_counts(&b.id).await?;
    let unfinished: u64 =
        counts.iter().filter(|(k, _)| matches!(k.as_str(), "pending" | "queued" | "running")).map(|(_, n)| n).sum();
    let total = u64::from(b.total).max(1);
    let progress = (total.saturating_sub(unfinished)) as f64 / total as f64;
    let base = format!("/api/v1/batches/{}", b.id);
    Ok(json!({
        "id": b.id,
        "object": "batch",
        "status": b.state.as_str(),
        "template_id": b.template_id,
        "total": b.total,
        "counts": counts,
        "progress": (progress * 1000.0).round() / 10.0,
        "priority": b.options["priority"],
        "webhook_url": b.options["webhook_url"],
        "metadata": b.options["metadata"],
        "created_at_ms": b.created_at_ms,
        "finished_at_ms": b.finished_at_ms,
        "links": {
            "self": base,
            "manifest": format!("{base}/manifest"),
            "manifest_csv": format!("{base}/manifest?format=csv"),
            "cancel": format!("{base}/cancel"),
        },
    }))
}

/// A row in the batch's JSON and manifest.
pub fn row_json(row: &BatchRow) -> Value {
    let outcome = row.outcome();
    json!({
        "row": row.index,
        "status": outcome,
        "generation_id": row.generation_id,
        "video_url": (outcome == JobState::Succeeded.as_str())
            .then(|| row.generation_id.as_ref().map(|g| format!("/api/v1/generations/{g}/video")))
            .flatten(),
        "error": row.error,
        "merge": row.merge,
    })
}

/// Every row of a batch, in order.
pub async fn all_rows(state: &AppState, id: &str) -> ApiResult<Vec<BatchRow>> {
    let mut out = vec![];
    loop {
        let after = out.last().map(|r: &BatchRow| r.index);
        let page = state.meta.batch_rows(id, None, after, PAGE).await?;
        let done = page.len() < PAGE as usize;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// The manifest as CSV: a line per row (its outcome, generation, video link and error), then
/// the row's values in the template's field order.
pub fn manifest_csv(fields: &[String], rows: &[BatchRow]) -> ApiResult<Vec<u8>> {
    let mut w = csv::Writer::from_writer(vec![]);
    let mut header = vec!["row", "status", "generation_id", "video_url", "error_code", "error_message"];
    header.extend(fields.iter().map(String::as_str));
    w.write_record(&header).map_err(ApiError::internal)?;
    for row in rows {
        let v = row_json(row);
        let text = |v: &Value| match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut line = vec![
            row.index.to_string(),
            text(&v["status"]),
            text(&v["generation_id"]),
            text(&v["video_url"]),
            text(&v["error"]["code"]),
            text(&v["error"]["message"]),
        ];
        line.extend(fields.iter().map(|f| text(&row.merge[f.as_str()])));
        w.write_record(&line).map_err(ApiError::internal)?;
    }
    w.into_inner().map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_take_their_header_and_leave_empty_cells_to_defaults() {
        let rows = rows_from_csv("\u{feff}NAME, COLOUR\nAda,#ff0000\n\"Grace, H.\",\n", 10).unwrap();
        assert_eq!(rows, vec![json!({"NAME": "Ada", "COLOUR": "#ff0000"}), json!({"NAME": "Grace, H."})]);
        let e = rows_from_csv("NAME,COLOUR\nAda,#ff0000,extra\n", 10).unwrap_err();
        assert_eq!(e.code, "csv_invalid");
        assert_eq!(e.issues[0].path, "csv.line 2", "{:?}", e.issues);
        let e = rows_from_csv("NAME,NAME\nAda,Bo\n", 10).unwrap_err();
        assert!(e.message.contains("named twice"), "{}", e.message);
        let e = rows_from_csv("NAME\na\nb\nc\n", 2).unwrap_err();
        assert_eq!(e.code, "too_many_rows");
    }

    #[test]
    fn rows_are_checked_one_by_one() {
        let doc = json!({
            "fields": {"NAME": {"type": "string", "max_length": 5}, "PHOTO": {"type": "image", "default": "asset:abc"}},
            "scenes": [{"text": "Hi {{ NAME }}", "image": "{{ PHOTO }}"}]
        });
        let template = Template::parse(&doc).unwrap();
        let rows = vec![
            json!({"NAME": "Ada"}),
            json!({"NAME": "Much too long"}),
            json!([{"find": "NAME", "replace": "Bo"}, {"find": "PHOTO", "replace": "asset:def"}]),
            json!({"NAME": "Cy", "PHOTO": "/etc/passwd"}),
            json!({"NAME": "Di", "COLOUR": "red"}),
        ];
        let (rows, assets) = check_rows(&template, rows);
        let status: Vec<RowStatus> = rows.iter().map(|r| r.status).collect();
        use RowStatus::*;
        assert_eq!(status, [Pending, Invalid, Pending, Invalid, Invalid]);
        assert_eq!(rows[1].error.as_ref().unwrap()["issues"][0]["path"], "merge.NAME");
        assert_eq!(rows[3].error.as_ref().unwrap()["code"], "missing_asset");
        assert_eq!(rows[4].error.as_ref().unwrap()["issues"][0]["path"], "merge.COLOUR");
        assert_eq!(
            rows[2].merge,
            json!({"NAME": "Bo", "PHOTO": "asset:def"}),
            "Shotstack's form is stored as an object"
        );
        let named: Vec<(&str, Vec<u32>)> =
            assets.iter().map(|(id, uses)| (id.as_str(), uses.iter().map(|u| u.0).collect())).collect();
        assert_eq!(named, [("abc", vec![0]), ("def", vec![2])], "defaults name assets too");
    }
}
