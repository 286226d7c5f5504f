//! The plan: what a model (or the text mode) writes, scene by scene, before any picture or
//! voice exists. Its JSON Schema is generated from these types and made strict (every property
//! required, nothing else allowed, optional values nullable), as OpenAI's structured outputs
//! and local grammar-constrained servers require.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Most scenes in one plan.
pub const MAX_SCENES: usize = 60;
/// Longest narration of one scene (about 40 s of speech).
pub const MAX_NARRATION_CHARS: usize = 600;
const MAX_TITLE_CHARS: usize = 80;
const MAX_TERMS: usize = 6;
const MAX_TERM_CHARS: usize = 50;
const MAX_PROMPT_CHARS: usize = 600;

/// A storyboard before its pictures and voices: the model's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The video's title.
    pub title: String,
    #[schemars(length(min = 1, max = 60))]
    pub scenes: Vec<PlanScene>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanScene {
    /// What the voice says in this scene: one to three plain sentences, no stage directions.
    pub narration: String,
    /// A short on-screen title (at most six words), or null.
    pub title: Option<String>,
    pub visual: PlanVisual,
    pub motion: PlanMotion,
}

/// What the scene should show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanVisual {
    /// Two or three concrete, visible things in English, one or two words each, for a stock
    /// photo or video search ("lava flow", "ocean").
    #[schemars(length(min = 1, max = 6))]
    pub search_terms: Vec<String>,
    /// One sentence describing a picture for this scene, for an image generator.
    pub image_prompt: String,
}

/// The camera over the scene's picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlanMotion {
    ZoomIn,
    ZoomOut,
    PanLeft,
    PanRight,
    Still,
}

/// The plan's JSON Schema in the strict form.
pub fn plan_schema() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true);
    let schema = settings.into_generator().into_root_schema_for::<Plan>();
    let mut v = serde_json::to_value(schema).expect("schema serialises");
    strictify(&mut v);
    if let Value::Object(m) = &mut v {
        m.remove("$schema");
        m.remove("title");
    }
    v
}

/// Every object: all properties required, no others; keywords strict mode rejects removed.
fn strictify(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("type") == Some(&json!("object")) || m.contains_key("properties") {
                let keys: Vec<Value> = m
                    .get("properties")
                    .and_then(Value::as_object)
                    .map_or(vec![], |p| p.keys().cloned().map(Value::String).collect());
                m.insert("required".into(), Value::Array(keys));
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for k in ["format", "minimum", "maximum", "default"] {
                m.remove(k);
            }
            for (_, child) in m.iter_mut() {
                strictify(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strictify),
        _ => {}
    }
}

/// One thing wrong with a plan, at its JSON path (the spec's own issue type).
pub use reelsmith_spec::Issue as Problem;

/// Reads a model's answer as a plan, or says everything wrong with it.
pub fn parse_plan(text: &str) -> Result<Plan, Vec<Problem>> {
    // Some servers wrap JSON in a Markdown fence even when asked for JSON.
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .unwrap_or(trimmed);
    let de = &mut serde_json::Deserializer::from_str(body);
    let plan: Plan = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        vec![Problem { path: if path == "." { "$".into() } else { path }, message: e.into_inner().to_string() }]
    })?;
    let problems = check_plan(&plan);
    if problems.is_empty() { Ok(plan) } else { Err(problems) }
}

/// The bounds the schema cannot say.
pub fn check_plan(plan: &Plan) -> Vec<Problem> {
    let mut out = vec![];
    let mut bad = |path: String, message: String| out.push(Problem { path, message });
    let chars = |s: &str| s.chars().count();
    if plan.title.trim().is_empty() {
        bad("title".into(), "is empty".into());
    }
    if chars(&plan.title) > MAX_TITLE_CHARS {
        bad("title".into(), format!("at most {MAX_TITLE_CHARS} characters"));
    }
    if plan.scenes.is_empty() {
        bad("scenes".into(), "the plan has no scenes".into());
    }
    if plan.scenes.len() > MAX_SCENES {
        bad("scenes".into(), format!("{} scenes; at most {MAX_SCENES}", plan.scenes.len()));
    }
    for (i, s) in plan.scenes.iter().enumerate() {
        let at = |f: &str| format!("scenes[{i}].{f}");
        if !s.narration.chars().any(char::is_alphanumeric) {
            bad(at("narration"), "is empty: every scene needs words to speak".into());
        }
        if chars(&s.narration) > MAX_NARRATION_CHARS {
            bad(
                at("narration"),
                format!("is {} characters; at most {MAX_NARRATION_CHARS} (split the scene)", chars(&s.narration)),
            );
        }
        if s.title.as_deref().is_some_and(|t| chars(t) > MAX_TITLE_CHARS) {
            bad(at("title"), format!("at most {MAX_TITLE_CHARS} characters"));
        }
        if s.visual.search_terms.len() > MAX_TERMS {
            bad(at("visual.search_terms"), format!("at most {MAX_TERMS} terms"));
        }
        for (j, t) in s.visual.search_terms.iter().enumerate() {
            if t.trim().is_empty() || chars(t) > MAX_TERM_CHARS {
                bad(at(&format!("visual.search_terms[{j}]")), format!("must be 1 to {MAX_TERM_CHARS} characters"));
            }
        }
        if chars(&s.visual.image_prompt) > MAX_PROMPT_CHARS {
            bad(at("visual.image_prompt"), format!("at most {MAX_PROMPT_CHARS} characters"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_strict_at_every_level() {
        let s = plan_schema();
        fn walk(v: &Value, objects: &mut usize) {
            if let Some(p) = v.get("properties").and_then(Value::as_object) {
                *objects += 1;
                assert_eq!(v["additionalProperties"], false, "{v}");
                let req: Vec<&str> = v["required"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
                for k in p.keys() {
                    assert!(req.contains(&k.as_str()), "{k} not required in {v}");
                }
            }
            match v {
                Value::Object(m) => m.values().for_each(|c| walk(c, objects)),
                Value::Array(a) => a.iter().for_each(|c| walk(c, objects)),
                _ => {}
            }
        }
        let mut objects = 0;
        walk(&s, &mut objects);
        assert_eq!(objects, 3, "plan, scene, visual: {s}");
        assert!(!s.to_string().contains("$ref"), "inlined: {s}");
        // The optional title is nullable, the motion an enum.
        let scene = &s["properties"]["scenes"]["items"];
        assert!(scene["properties"]["title"].to_string().contains("null"), "{scene}");
        assert!(scene["properties"]["motion"].to_string().contains("zoom-in"), "{scene}");
        // Counts a schema can say (structured outputs and grammars honour them).
        assert_eq!(
            (s["properties"]["scenes"]["minItems"].as_u64(), s["properties"]["scenes"]["maxItems"].as_u64()),
            (Some(1), Some(60))
        );
        let terms = &scene["properties"]["visual"]["properties"]["search_terms"];
        assert_eq!((terms["minItems"].as_u64(), terms["maxItems"].as_u64()), (Some(1), Some(6)), "{terms}");
    }

    #[test]
    fn problems_are_found_with_their_paths() {
        let bad = r#"{"title":"Volcanoes","scenes":[
            {"narration":"Lava flows.","title":null,"visual":{"search_terms":["lava"],"image_prompt":"lava"},"motion":"zoom-in"},
            {"narration":"  ","title":null,"visual":{"search_terms":[""],"image_prompt":"x"},"motion":"still"}]}"#;
        let problems = parse_plan(bad).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["scenes[1].narration", "scenes[1].visual.search_terms[0]"]);
        let truncated = parse_plan(r#"{"title":"V","scenes":[{"narration":"a""#).unwrap_err();
        assert!(truncated[0].message.contains("EOF"), "{truncated:?}");
        let wrong = parse_plan(r#"{"title":"V","scenes":[{"narration":"a","title":null,"visual":{"search_terms":[],"image_prompt":""},"motion":"spin"}]}"#)
            .unwrap_err();
        assert_eq!(wrong[0].path, "scenes[0].motion");
        let fenced = "```json\n{\"title\":\"V\",\"scenes\":[{\"narration\":\"a\",\"title\":null,\"visual\":{\"search_terms\":[],\"image_prompt\":\"\"},\"motion\":\"still\"}]}\n```";
        assert_eq!(parse_plan(fenced).unwrap().scenes.len(), 1);
    }
}
