//! Templates kept by the service (`tpl_…`): made by `POST /api/v1/templates`, checked without
//! rendering when made, and named by generations and batches instead of being sent each time.

use std::collections::HashMap;

use reelsmith_spec::template::{Template, TemplateError};
use reelsmith_store::{TemplateRecord, new_id, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::error::{ApiError, ApiResult, IssueBody};
use crate::state::AppState;

/// Largest template document (the spec and its fields).
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
/// Longest template name.
pub const MAX_NAME_CHARS: usize = 200;

/// The body of `POST /api/v1/templates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    pub name: String,
    /// A spec with `{{ NAME }}` placeholders and its `fields`.
    pub template: Value,
}

/// A template's problems as issues, each path under `prefix`.
pub fn issues(e: TemplateError, prefix: &str) -> Vec<IssueBody> {
    e.issues.into_iter().map(|i| IssueBody { path: format!("{prefix}{}", i.path), message: i.message }).collect()
}

/// 422 with `code`, the first issue as the message.
pub fn refuse(code: &'static str, issues: Vec<IssueBody>) -> ApiError {
    let first = issues.first().map(|i| format!("{}: {}", i.path, i.message)).unwrap_or_default();
    ApiError::unprocessable(code, first).with_issues(issues)
}

fn invalid(path: &str, message: impl Into<String>) -> ApiError {
    refuse("template_invalid", vec![IssueBody { path: path.into(), message: message.into() }])
}

/// Reads a template document: a spec with its `fields`, whose placeholders and fields agree.
pub fn parse(doc: &Value) -> ApiResult<Template> {
    if !Template::is_template(doc) {
        return Err(invalid("template", "a template is a spec with its `fields`"));
    }
    let bytes = doc.to_string().len();
    if bytes > MAX_TEMPLATE_BYTES {
        return Err(invalid("template", format!("{bytes} bytes; a template is at most {MAX_TEMPLATE_BYTES}")));
    }
    Template::parse(doc).map_err(|e| refuse("template_invalid", issues(e, "template.")))
}

/// A stored template the caller may use (another key's templates do not exist for it).
pub async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<TemplateRecord> {
    match state.meta.template(id).await? {
        Some(t) if caller.0.is_none() || t.api_key_id == caller.key_id() => Ok(t),
        _ => Err(ApiError::not_found("template", id)),
    }
}

/// The template a request names: one of the caller's stored templates by id, or a document
/// sent inline. Returns it with the stored template it came from.
pub async fn resolve(state: &AppState, caller: &Caller, doc: &Value) -> ApiResult<(Template, Option<TemplateRecord>)> {
    match doc {
        Value::String(id) => {
            let stored = visible(state, caller, id).await?;
            Ok((parse(&stored.body)?, Some(stored)))
        }
        doc => Ok((parse(doc)?, None)),
    }
}

/// Checks a template without rendering it: its spec with every field at its default (or a
/// stand-in where it has none) parses, the files it names are the caller's assets of the
/// right kind, and the engine's checks pass, except about the stand-ins, which only rows name.
/// Issues are named under `template.`.
pub async fn check(state: &AppState, api_key_id: Option<&str>, t: &Template) -> ApiResult<()> {
    let under_template = |issues: Vec<IssueBody>, skip: &[String]| -> Vec<IssueBody> {
        issues
            .into_iter()
            .filter(|i| !skip.contains(&i.path))
            .map(|i| IssueBody { path: format!("template.{}", i.path.trim_start_matches("spec.")), message: i.message })
            .collect()
    };
    let stand_ins = t.stand_in_paths();
    let mut spec = reelsmith_spec::parse(&t.sample().to_string()).map_err(|e| {
        invalid(&format!("template.{}", e.path.trim_start_matches('$').trim_start_matches('.')), e.message)
    })?;
    let (files, _) = crate::assets::resolve_files(state, &mut spec, &HashMap::new(), api_key_id, &stand_ins).await?;
    if !files.is_empty() {
        return Err(refuse("template_invalid", under_template(files, &[])));
    }
    let engine_spec = crate::assets::engine_view(&spec);
    let (engine, assets) = (state.engine.clone(), state.assets_dir.clone());
    let checked = tokio::task::spawn_blocking(move || engine.validate(&engine_spec, &assets))
        .await
        .map_err(ApiError::internal)?;
    match checked {
        Ok(()) => Ok(()),
        Err(reelsmith_engine::RenderError::Invalid(v)) => {
            let found: Vec<IssueBody> =
                v.issues.into_iter().map(|i| IssueBody { path: i.path, message: i.message }).collect();
            let left = under_template(found, &stand_ins);
            if left.is_empty() { Ok(()) } else { Err(refuse("template_invalid", left)) }
        }
        Err(e) => Err(ApiError::from(e)),
    }
}

/// Stores a template for the caller once it is checked.
pub async fn create(state: &AppState, caller: &Caller, req: NewTemplate) -> ApiResult<TemplateRecord> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(refuse(
            "invalid_request",
            vec![IssueBody { path: "name".into(), message: format!("must be 1 to {MAX_NAME_CHARS} characters") }],
        ));
    }
    let template = parse(&req.template)?;
    let key_id = caller.key_id();
    check(state, key_id.as_deref(), &template).await?;
    let max = state.config.max_templates_per_key;
    if state.meta.templates_of(key_id.as_deref(), None, max).await?.len() >= max as usize {
        return Err(ApiError::too_many(
            "quota_exceeded",
            format!("this key keeps at most {max} templates; delete one with DELETE /api/v1/templates/{{id}}"),
            60,
        ));
    }
    let record = TemplateRecord {
        id: new_id("tpl"),
        api_key_id: key_id,
        name: name.to_string(),
        body: req.template,
        created_at_ms: now_ms(),
    };
    state.meta.put_template(&record).await?;
    Ok(record)
}

/// The public JSON of a stored template; `with_body` adds the document itself.
pub fn template_json(t: &TemplateRecord, with_body: bool) -> Value {
    let mut v = json!({
        "id": t.id,
        "object": "template",
        "name": t.name,
        "fields": t.body.get("fields").cloned().unwrap_or(json!({})),
        "created_at_ms": t.created_at_ms,
        "links": {"self": format!("/api/v1/templates/{}", t.id)},
    });
    if with_body {
        v["template"] = t.body.clone();
    }
    v
}
