//! A JSON Schema validator for the keywords souk's published schemas use (and only those: a
//! schema using another keyword fails loudly rather than being half checked): `type`, `const`,
//! `enum`, `properties`, `required`, `additionalProperties` (boolean), `items`, `minimum`,
//! `format` (`date-time`, `date`), and the annotations `$schema`, `$id`, `title`,
//! `description`, `examples`.

use serde_json::Value;

const ANNOTATIONS: &[&str] = &["$schema", "$id", "title", "description", "examples"];

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// The ways `v` breaks `schema`, each with its JSON pointer; empty when it validates.
pub fn errors(schema: &Value, v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(schema, v, "", &mut out);
    out
}

fn check(schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    let s = schema.as_object().expect("a schema is an object");
    for (k, rule) in s {
        match k.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("bad type at {at}"),
                };
                if !types.iter().any(|t| type_ok(t, v)) {
                    out.push(format!("{at}: {v} is not {types:?}"));
                }
            }
            "const" if rule != v => out.push(format!("{at}: {v} is not {rule}")),
            "const" => {}
            "enum" => {
                if !rule.as_array().expect("enum is an array").contains(v) {
                    out.push(format!("{at}: {v} is not one of {rule}"));
                }
            }
            "minimum" => {
                if let (Some(x), Some(min)) = (v.as_f64(), rule.as_f64()) {
                    if x < min {
                        out.push(format!("{at}: {x} < {min}"));
                    }
                }
            }
            "format" => {
                if let Some(text) = v.as_str() {
                    let ok = match rule.as_str() {
                        Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                        Some("date") => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
                        other => panic!("unknown format {other:?}"),
                    };
                    if !ok {
                        out.push(format!("{at}: {text:?} is not a {rule}"));
                    }
                }
            }
            "required" => {
                if let Some(o) = v.as_object() {
                    for name in rule.as_array().expect("required is an array") {
                        let name = name.as_str().unwrap();
                        if !o.contains_key(name) {
                            out.push(format!("{at}: missing {name}"));
                        }
                    }
                }
            }
            "properties" => {
                if let Some(o) = v.as_object() {
                    for (name, sub) in rule.as_object().expect("properties is an object") {
                        if let Some(x) = o.get(name) {
                            check(sub, x, &format!("{at}/{name}"), out);
                        }
                    }
                }
            }
            "additionalProperties" => {
                let allowed = rule.as_bool().expect("additionalProperties is a boolean here");
                if let (false, Some(o)) = (allowed, v.as_object()) {
                    let known = s.get("properties").and_then(Value::as_object);
                    for name in o.keys() {
                        if !known.is_some_and(|p| p.contains_key(name)) {
                            out.push(format!("{at}: unexpected field {name}"));
                        }
                    }
                }
            }
            "items" => {
                if let Some(a) = v.as_array() {
                    for (i, x) in a.iter().enumerate() {
                        check(rule, x, &format!("{at}/{i}"), out);
                    }
                }
            }
            other => panic!("schema keyword {other} at {at} is not supported by this validator"),
        }
    }
}

/// The published webhook schemas of version 2, by event type.
pub fn webhook_schemas() -> std::collections::BTreeMap<String, Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema/webhooks/v2");
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let t = schema["properties"]["type"]["const"].as_str().unwrap().to_owned();
        out.insert(t, schema);
    }
    out
}

/// Checks a received webhook body against its type's schema.
pub fn check_webhook(
    schemas: &std::collections::BTreeMap<String, Value>,
    body: &Value,
) -> Result<(), String> {
    let t = body["type"].as_str().ok_or("a body without type")?;
    let schema = schemas.get(t).ok_or_else(|| format!("no schema for {t}"))?;
    let e = errors(schema, body);
    if e.is_empty() {
        Ok(())
    } else {
        Err(format!("{t}: {}", e.join("; ")))
    }
}
