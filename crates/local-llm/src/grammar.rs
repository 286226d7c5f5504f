//! A JSON Schema (the strict form the director asks every model for) as a GBNF grammar, so a
//! local model can only write JSON of that shape: objects with exactly their properties in
//! order, arrays of their items, strings, numbers, booleans, nulls, enums, constants and unions.
//! What a schema says beyond shape (lengths, counts) the caller still checks, as it does for a
//! remote model's answer.

use serde_json::Value;

/// The grammar for `schema`, its start rule named `root`. With `nonempty` (for small local
/// models), every array has an item and every string 1 to [`MAX_STRING`] characters unless the
/// schema says otherwise: such models otherwise close an array at once or write one string
/// until the token limit, which the shape allows and the plan's checks then refuse.
pub fn gbnf(schema: &Value, nonempty: bool) -> Result<String, String> {
    let mut g = Grammar { rules: vec![], nonempty };
    let root = g.value(schema, "root")?;
    let mut out = format!("root ::= {root}\n");
    for (name, body) in &g.rules {
        out.push_str(&format!("{name} ::= {body}\n"));
    }
    out.push_str(PRIMITIVES);
    if g.nonempty {
        out.push_str(&format!("nonempty-string ::= \"\\\"\" char{{1,{MAX_STRING}}} \"\\\"\"\n"));
    }
    Ok(out)
}

/// The longest string a `nonempty` grammar lets a model write (a scene's narration is a few
/// sentences).
pub const MAX_STRING: usize = 400;

/// JSON's own pieces. Whitespace is bounded so a model cannot pad forever; strings take any
/// character but quotes, backslashes and controls (escapes allowed).
const PRIMITIVES: &str = r#"ws ::= [ \t\n]{0,4}
string ::= "\"" char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
number ::= "-"? ([0-9] | [1-9] [0-9]{1,15}) ("." [0-9]{1,15})? ([eE] [-+]? [0-9]{1,3})?
integer ::= "-"? ([0-9] | [1-9] [0-9]{1,15})
boolean ::= "true" | "false"
null ::= "null"
"#;

struct Grammar {
    rules: Vec<(String, String)>,
    nonempty: bool,
}

/// A JSON string literal as a GBNF literal (the quotes of the JSON included).
fn literal(v: &Value) -> String {
    let json = v.to_string();
    let escaped = json.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

impl Grammar {
    /// An expression for `schema`; nested objects and arrays get rules of their own named
    /// after where they are (`root-scenes-item`).
    fn value(&mut self, schema: &Value, name: &str) -> Result<String, String> {
        if let Some(c) = schema.get("const") {
            return Ok(literal(c));
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if options.is_empty() {
                return Err(format!("{name}: an empty enum"));
            }
            return Ok(format!("({})", options.iter().map(literal).collect::<Vec<_>>().join(" | ")));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                let alts: Result<Vec<String>, String> =
                    options.iter().enumerate().map(|(i, o)| self.value(o, &format!("{name}-{i}"))).collect();
                return Ok(format!("({})", alts?.join(" | ")));
            }
        }
        match schema.get("type") {
            Some(Value::Array(types)) => {
                let alts: Result<Vec<String>, String> = types
                    .iter()
                    .map(|t| {
                        let mut one = schema.clone();
                        one["type"] = t.clone();
                        self.value(&one, &format!("{name}-{}", t.as_str().unwrap_or("t")))
                    })
                    .collect();
                Ok(format!("({})", alts?.join(" | ")))
            }
            Some(Value::String(t)) => match t.as_str() {
                "object" => self.object(schema, name),
                "array" => self.array(schema, name),
                "string" if self.nonempty && schema.get("minLength").is_none() => Ok("nonempty-string".into()),
                "string" => Ok("string".into()),
                "number" => Ok("number".into()),
                "integer" => Ok("integer".into()),
                "boolean" => Ok("boolean".into()),
                "null" => Ok("null".into()),
                other => Err(format!("{name}: type {other:?} is not JSON")),
            },
            _ if schema.get("properties").is_some() => self.object(schema, name),
            _ => Err(format!("{name}: no type, enum or const to follow")),
        }
    }

    fn object(&mut self, schema: &Value, name: &str) -> Result<String, String> {
        let empty = serde_json::Map::new();
        let props = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let mut parts = vec![];
        for (key, sub) in props {
            let v = self.value(sub, &format!("{name}-{}", rule_name(key)))?;
            parts.push(format!("{} ws \":\" ws {v}", literal(&Value::String(key.clone()))));
        }
        let body = if parts.is_empty() {
            "\"{\" ws \"}\"".to_string()
        } else {
            format!("\"{{\" ws {} ws \"}}\"", parts.join(" ws \",\" ws "))
        };
        Ok(self.rule(name, body))
    }

    fn array(&mut self, schema: &Value, name: &str) -> Result<String, String> {
        let item = match schema.get("items") {
            Some(items) => self.value(items, &format!("{name}-item"))?,
            None => return Err(format!("{name}: an array without items")),
        };
        let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(u64::from(self.nonempty));
        let max = schema.get("maxItems").and_then(Value::as_u64);
        let more = |n: u64| format!("(ws \",\" ws {item}){{{n}}}");
        let body = match (min, max) {
            (_, Some(0)) => "\"[\" ws \"]\"".to_string(),
            (0, None) => format!("\"[\" ws ({item} (ws \",\" ws {item})*)? ws \"]\""),
            (0, Some(m)) => format!("\"[\" ws ({item} (ws \",\" ws {item}){{0,{}}})? ws \"]\"", m - 1),
            (1, None) => format!("\"[\" ws {item} (ws \",\" ws {item})* ws \"]\""),
            (n, None) => format!("\"[\" ws {item} {} (ws \",\" ws {item})* ws \"]\"", more(n - 1)),
            (n, Some(m)) => format!("\"[\" ws {item} (ws \",\" ws {item}){{{},{}}} ws \"]\"", n - 1, m.max(n) - 1),
        };
        Ok(self.rule(name, body))
    }

    fn rule(&mut self, name: &str, body: String) -> String {
        let name = if name == "root" { "root-object".to_string() } else { name.to_string() };
        self.rules.push((name.clone(), body));
        name
    }
}

/// A property name as part of a rule name (GBNF names are letters, digits and dashes).
fn rule_name(key: &str) -> String {
    let s: String = key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    if s.is_empty() { "p".into() } else { s }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_plan_schema_becomes_rules_for_each_object() {
        let g = gbnf(&reelsmith_director::plan::plan_schema(), false).unwrap();
        assert!(g.starts_with("root ::= root-object\n"), "{g}");
        for rule in ["root-object ::=", "root-scenes ::=", "root-scenes-item ::=", "root-scenes-item-visual ::="] {
            assert!(g.contains(rule), "{rule} missing in:\n{g}");
        }
        // Each property's value, the title nullable, the motion one of its names.
        assert!(g.contains(r#""\"narration\"" ws ":" ws string"#), "{g}");
        assert!(g.contains("(string | null)"), "{g}");
        assert!(g.contains(r#""\"zoom-in\"""#), "{g}");
        assert!(g.contains(r#""\"still\"""#), "{g}");
    }

    #[test]
    fn arrays_keep_their_bounds_and_unknown_types_are_refused() {
        let g =
            gbnf(&json!({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4}), false).unwrap();
        assert!(g.contains(r#"root-object ::= "[" ws integer (ws "," ws integer){1,3} ws "]""#), "{g}");
        let g = gbnf(&json!({"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"const": 3}}}), false)
            .unwrap();
        // Properties in the schema's (sorted) order.
        assert!(g.contains(r#""\"n\"" ws ":" ws "3" ws "," ws "\"ok\"" ws ":" ws boolean"#), "{g}");
        assert!(gbnf(&json!({"type": "date"}), false).unwrap_err().contains("date"));
        assert!(gbnf(&json!({"type": "array"}), false).unwrap_err().contains("without items"));
    }

    #[test]
    fn nonempty_asks_for_an_item_and_a_character() {
        let g = gbnf(&json!({"type": "array", "items": {"type": "string"}}), true).unwrap();
        assert!(g.contains(r#"root-object ::= "[" ws nonempty-string (ws "," ws nonempty-string)* ws "]""#), "{g}");
        assert!(g.contains(r#"nonempty-string ::= "\"" char{1,400} "\"""#), "{g}");
        let g = gbnf(&json!({"type": "array", "items": {"type": "string"}}), false).unwrap();
        assert!(g.contains(r#""[" ws (string (ws "," ws string)*)? ws "]""#), "{g}");
    }
}
