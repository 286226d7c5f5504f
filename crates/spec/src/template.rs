//! Templates: a spec whose string values may hold `{{ NAME }}` placeholders, with the fields
//! it declares (`{"fields": {"NAME": {"type": "string", "default": "Ada", "max_length": 40}},
//! …the spec…}`). A value that is one placeholder and nothing else takes the field's own JSON
//! type, so numbers and colours merge too; placeholders inside longer text are replaced by the
//! value's text. [`Template::parse`] checks the declarations against the placeholders (an
//! undeclared placeholder or an unused field is an error naming it); [`Template::merge`] checks
//! a row (missing, unknown, wrong type, too long: each named `merge.NAME`) and returns the spec.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Issue;

/// Most fields a template may declare.
pub const MAX_FIELDS: usize = 100;
/// Longest text a field's value may have (a field's own `max_length` may be lower).
pub const MAX_VALUE_CHARS: usize = 5_000;

/// What a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Number,
    Color,
    Image,
    Audio,
    Video,
}

impl FieldType {
    fn describe(self) -> &'static str {
        match self {
            Self::String => "text",
            Self::Number => "a number",
            Self::Color => "a colour (#rgb, #rrggbb or #rrggbbaa)",
            Self::Image => "an image (a file or an asset: ref)",
            Self::Audio => "an audio file (a file or an asset: ref)",
            Self::Video => "a video file (a file or an asset: ref)",
        }
    }

    /// A stand-in value for checking a template whose field has no default.
    fn sample(self) -> Value {
        match self {
            Self::String => Value::from("Sample"),
            Self::Number => Value::from(1),
            Self::Color => Value::from("#808080"),
            Self::Image => Value::from("sample.png"),
            Self::Audio => Value::from("sample.wav"),
            Self::Video => Value::from("sample.mp4"),
        }
    }
}

/// One declared field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    #[serde(rename = "type")]
    pub kind: FieldType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A parsed template: its fields and the spec with its placeholders.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub fields: BTreeMap<String, Field>,
    /// The spec as written (placeholders unreplaced).
    pub spec: Value,
}

/// A template or a merge that is wrong; every problem named by path.
#[derive(Debug, thiserror::Error)]
#[error("{}", .issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect::<Vec<_>>().join("; "))]
pub struct TemplateError {
    pub issues: Vec<Issue>,
}

impl TemplateError {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { issues: vec![Issue { path: path.into(), message: message.into() }] }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// The placeholders in a text: `(start, end, name)` of each `{{ NAME }}`.
fn placeholders(text: &str) -> Vec<(usize, usize, &str)> {
    let mut out = vec![];
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| from + i) {
        let Some(close) = text[open + 2..].find("}}").map(|i| open + 2 + i) else { break };
        let name = text[open + 2..close].trim();
        if valid_name(name) {
            out.push((open, close + 2, name));
        }
        from = close + 2;
    }
    out
}

/// Every string value of `v` with its JSON path.
fn strings<'a>(v: &'a Value, path: &str, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path.to_string(), s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                strings(item, &p, out);
            }
        }
        _ => {}
    }
}

/// Whether `v` is a value of `kind` (and within `max_length`); the problem otherwise.
fn check_value(kind: FieldType, v: &Value, max_length: Option<usize>) -> Result<(), String> {
    let text_ok = |s: &str| {
        let n = s.chars().count();
        let cap = max_length.unwrap_or(MAX_VALUE_CHARS).min(MAX_VALUE_CHARS);
        if n > cap { Err(format!("is {n} characters; at most {cap}")) } else { Ok(()) }
    };
    match (kind, v) {
        (FieldType::Number, Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => Ok(()),
        (FieldType::Number, Value::String(s)) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => Ok(()),
        (FieldType::Color, Value::String(s)) => {
            s.parse::<crate::Color>().map(drop).map_err(|_| format!("{s:?} is not {}", kind.describe()))
        }
        (FieldType::String, Value::String(s)) => text_ok(s),
        (FieldType::String, Value::Number(n)) => text_ok(&n.to_string()),
        (FieldType::Image | FieldType::Audio | FieldType::Video, Value::String(s)) => {
            if s.trim().is_empty() {
                Err("is empty".into())
            } else {
                text_ok(s)
            }
        }
        _ => Err(format!("must be {}", kind.describe())),
    }
}

/// A value as a placeholder inside longer text writes it.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Template {
    /// Whether a JSON document is a template (it declares `fields`).
    pub fn is_template(doc: &Value) -> bool {
        doc.get("fields").is_some()
    }

    /// Reads a template document and checks its declarations against its placeholders.
    pub fn parse(doc: &Value) -> Result<Self, TemplateError> {
        let Some(map) = doc.as_object() else { return Err(TemplateError::one("$", "a template is a JSON object")) };
        let mut spec = map.clone();
        let fields_json = spec.remove("fields").unwrap_or(Value::Object(Default::default()));
        let fields: BTreeMap<String, Field> = serde_json::from_value(fields_json)
            .map_err(|e| TemplateError::one("fields", format!("{e} (each field: {{\"type\": \"string|number|color|image|audio|video\", \"default\", \"max_length\"}})")))?;
        let spec = Value::Object(spec);
        let mut issues = vec![];
        if fields.len() > MAX_FIELDS {
            issues.push(Issue {
                path: "fields".into(),
                message: format!("{} fields; at most {MAX_FIELDS}", fields.len()),
            });
        }
        for (name, f) in &fields {
            if !valid_name(name) {
                issues.push(Issue {
                    path: format!("fields.{name}"),
                    message: "a field name is letters, digits and _ (not first), at most 64".into(),
                });
            }
            if f.max_length.is_some_and(|m| m == 0 || m > MAX_VALUE_CHARS) {
                issues.push(Issue {
                    path: format!("fields.{name}.max_length"),
                    message: format!("must be 1 to {MAX_VALUE_CHARS}"),
                });
            }
            if let Some(d) = &f.default
                && let Err(m) = check_value(f.kind, d, f.max_length)
            {
                issues.push(Issue { path: format!("fields.{name}.default"), message: m });
            }
        }
        let mut texts = vec![];
        strings(&spec, "", &mut texts);
        let mut used = BTreeSet::new();
        for (path, text) in &texts {
            for (start, end, name) in placeholders(text) {
                used.insert(name.to_string());
                match fields.get(name) {
                    None => issues.push(Issue {
                        path: path.clone(),
                        message: format!("{{{{ {name} }}}} is not a declared field (declare it under \"fields\")"),
                    }),
                    // Media and numbers are whole values: "Hello {{ PHOTO }}" means nothing.
                    Some(f)
                        if !matches!(f.kind, FieldType::String | FieldType::Number)
                            && (start, end) != (0, text.len()) =>
                    {
                        issues.push(Issue {
                            path: path.clone(),
                            message: format!("{{{{ {name} }}}} is {}: it must be the whole value", f.kind.describe()),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        for name in fields.keys().filter(|n| !used.contains(*n)) {
            issues
                .push(Issue { path: format!("fields.{name}"), message: "declared but never used in the spec".into() });
        }
        if issues.is_empty() { Ok(Self { fields, spec }) } else { Err(TemplateError { issues }) }
    }

    /// The spec with every field at its default, or a stand-in where it has none: what
    /// checking a template without a row renders.
    pub fn sample(&self) -> Value {
        let row: BTreeMap<String, Value> = self
            .fields
            .iter()
            .map(|(k, f)| (k.clone(), f.default.clone().unwrap_or_else(|| f.kind.sample())))
            .collect();
        self.fill(&row)
    }

    /// Where [`Template::sample`] put a stand-in file (a media field without a default): a
    /// check of the sample ignores what it says about those paths.
    pub fn stand_in_paths(&self) -> Vec<String> {
        let mut texts = vec![];
        strings(&self.spec, "", &mut texts);
        texts
            .into_iter()
            .filter(|(_, text)| match placeholders(text).as_slice() {
                [(0, end, name)] if *end == text.len() => self.fields.get(*name).is_some_and(|f| {
                    f.default.is_none() && matches!(f.kind, FieldType::Image | FieldType::Audio | FieldType::Video)
                }),
                _ => false,
            })
            .map(|(path, _)| path)
            .collect()
    }

    /// The spec for one row: every field from `row` or its default. Problems are named
    /// `merge.NAME`; nothing is filled unless the whole row is right.
    pub fn merge(&self, row: &BTreeMap<String, Value>) -> Result<Value, TemplateError> {
        let mut issues = vec![];
        for name in row.keys().filter(|k| !self.fields.contains_key(*k)) {
            issues.push(Issue { path: format!("merge.{name}"), message: "not a field of this template".into() });
        }
        let mut values = BTreeMap::new();
        for (name, f) in &self.fields {
            match row.get(name).or(f.default.as_ref()) {
                None => issues.push(Issue {
                    path: format!("merge.{name}"),
                    message: "missing (the field has no default)".into(),
                }),
                Some(v) => match check_value(f.kind, v, f.max_length) {
                    Ok(()) => {
                        // A number given as text merges as a number.
                        let v = match (f.kind, v) {
                            (FieldType::Number, Value::String(s)) => {
                                serde_json::Number::from_f64(s.trim().parse().unwrap_or_default())
                                    .map_or(v.clone(), Value::Number)
                            }
                            _ => v.clone(),
                        };
                        values.insert(name.clone(), v);
                    }
                    Err(m) => issues.push(Issue { path: format!("merge.{name}"), message: m }),
                },
            }
        }
        if !issues.is_empty() {
            return Err(TemplateError { issues });
        }
        Ok(self.fill(&values))
    }

    fn fill(&self, values: &BTreeMap<String, Value>) -> Value {
        fn walk(v: &Value, values: &BTreeMap<String, Value>) -> Value {
            match v {
                Value::String(s) => {
                    let found = placeholders(s);
                    if let [(0, end, name)] = found.as_slice()
                        && *end == s.len()
                        && let Some(value) = values.get(*name)
                    {
                        return value.clone();
                    }
                    let mut out = String::with_capacity(s.len());
                    let mut at = 0;
                    for (start, end, name) in found {
                        out.push_str(&s[at..start]);
                        match values.get(name) {
                            Some(value) => out.push_str(&as_text(value)),
                            None => out.push_str(&s[start..end]),
                        }
                        at = end;
                    }
                    out.push_str(&s[at..]);
                    Value::String(out)
                }
                Value::Array(items) => Value::Array(items.iter().map(|i| walk(i, values)).collect()),
                Value::Object(map) => Value::Object(map.iter().map(|(k, i)| (k.clone(), walk(i, values))).collect()),
                other => other.clone(),
            }
        }
        walk(&self.spec, values)
    }
}

/// A row in Shotstack's form (`[{"find": "NAME", "replace": "Ada"}, …]`) or as an object.
pub fn row_from_json(merge: &Value) -> Result<BTreeMap<String, Value>, TemplateError> {
    match merge {
        Value::Object(map) => Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Value::Array(items) => {
            let mut row = BTreeMap::new();
            for (i, item) in items.iter().enumerate() {
                let (Some(find), Some(replace)) = (item.get("find").and_then(Value::as_str), item.get("replace"))
                else {
                    return Err(TemplateError::one(
                        format!("merge[{i}]"),
                        "each entry is {\"find\": NAME, \"replace\": value}",
                    ));
                };
                row.insert(find.trim().to_string(), replace.clone());
            }
            Ok(row)
        }
        _ => Err(TemplateError::one("merge", "an object of field values, or Shotstack's [{\"find\", \"replace\"}]")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template() -> Value {
        json!({
            "fields": {
                "NAME": {"type": "string", "max_length": 20},
                "SECONDS": {"type": "number", "default": 3},
                "BRAND": {"type": "color", "default": "#ff6600"},
                "PHOTO": {"type": "image"}
            },
            "version": 1,
            "scenes": [
                {"duration": "{{ SECONDS }}", "background": {"color": "{{BRAND}}"}, "title": "Hello, {{ NAME }}!"},
                {"image": "{{ PHOTO }}", "narration": {"text": "Thanks {{NAME}}, see you in {{ SECONDS }} days."}}
            ]
        })
    }

    fn row(v: Value) -> BTreeMap<String, Value> {
        row_from_json(&v).unwrap()
    }

    #[test]
    fn whole_values_keep_their_type_and_text_takes_the_value_as_text() {
        let t = Template::parse(&template()).unwrap();
        let spec = t.merge(&row(json!({"NAME": "Ada", "PHOTO": "asset:ast_1", "SECONDS": 4.5}))).unwrap();
        assert_eq!(spec["scenes"][0]["duration"], json!(4.5));
        assert_eq!(spec["scenes"][0]["background"]["color"], "#ff6600");
        assert_eq!(spec["scenes"][0]["title"], "Hello, Ada!");
        assert_eq!(spec["scenes"][1]["image"], "asset:ast_1");
        assert_eq!(spec["scenes"][1]["narration"]["text"], "Thanks Ada, see you in 4.5 days.");
        assert!(spec.get("fields").is_none());
        crate::parse(&spec.to_string()).unwrap();
        // A number as text (a CSV cell) merges as a number; Shotstack's form works the same.
        let s = t.merge(&row(json!([{"find": "NAME", "replace": "Bo"}, {"find": "PHOTO", "replace": "p.png"}, {"find": "SECONDS", "replace": "2"}]))).unwrap();
        assert_eq!(
            (s["scenes"][0]["duration"].as_f64(), s["scenes"][0]["title"].as_str()),
            (Some(2.0), Some("Hello, Bo!"))
        );
        // The sample fills defaults and stand-ins, and parses as a spec.
        crate::parse(&t.sample().to_string()).unwrap();
        assert_eq!(t.stand_in_paths(), ["scenes[1].image"]);
    }

    #[test]
    fn bad_rows_are_refused_naming_each_field() {
        let t = Template::parse(&template()).unwrap();
        let err = t
            .merge(&row(json!({"NAME": "x".repeat(21), "SECONDS": "soon", "BRAND": "orange-ish", "AGE": 3})))
            .unwrap_err();
        let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["merge.AGE", "merge.BRAND", "merge.NAME", "merge.PHOTO", "merge.SECONDS"], "{err}");
        let msg = err.to_string();
        assert!(msg.contains("merge.NAME: is 21 characters; at most 20"), "{msg}");
        assert!(msg.contains("merge.PHOTO: missing (the field has no default)"), "{msg}");
        assert!(msg.contains("merge.AGE: not a field of this template"), "{msg}");
        assert!(msg.contains("merge.SECONDS: must be a number"), "{msg}");
        assert!(row_from_json(&json!([{"name": "x"}])).unwrap_err().to_string().contains("merge[0]"));
    }

    #[test]
    fn templates_whose_fields_and_placeholders_disagree_are_refused() {
        let mut doc = template();
        doc["scenes"][0]["title"] = json!("Hi {{ NICKNAME }}");
        doc["fields"]["UNUSED"] = json!({"type": "string"});
        doc["fields"]["BRAND"]["default"] = json!("not a colour");
        doc["scenes"][1]["narration"]["text"] = json!("Look: {{ PHOTO }}");
        let err = Template::parse(&doc).unwrap_err().to_string();
        assert!(err.contains("scenes[0].title: {{ NICKNAME }} is not a declared field"), "{err}");
        assert!(err.contains("fields.UNUSED: declared but never used"), "{err}");
        assert!(err.contains("fields.BRAND.default"), "{err}");
        assert!(err.contains("scenes[1].narration.text: {{ PHOTO }} is an image"), "{err}");
        assert!(err.contains("fields.NAME: declared but never used"), "{err}");
        let bad_type = json!({"fields": {"X": {"type": "gif"}}, "version": 1, "scenes": []});
        assert!(Template::parse(&bad_type).unwrap_err().to_string().starts_with("fields: "));
    }
}
