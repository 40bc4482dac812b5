//! JSON Schema validation of configuration trees: compiling a schema (draft 2020-12 unless its `$schema`
//! names another draft) without ever fetching external references, and listing every violation by pointer.

use std::collections::BinaryHeap;

use serde_json::Value;

use super::format::{location_suffix, Format};

/// At most this many violations are reported by [`Schema::check`].
pub const MAX_VIOLATIONS: usize = 100;

/// A compiled JSON Schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("schema is not valid JSON: {message}{}", location_suffix(.line, .column))]
    NotJson { message: String, line: Option<usize>, column: Option<usize> },
    #[error("schema is not a valid JSON Schema: {0}")]
    Invalid(String),
}

/// One way an instance fails its schema.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// JSON pointer of the failing instance value, "" for the root.
    pub pointer: String,
    pub message: String,
}

/// Refuses every external reference: schemas are self-contained, nothing is read from the network or disk.
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "external reference {uri} is never fetched: put the referenced schema under \"$defs\" and refer to it \
             as \"#/$defs/...\""
        )
        .into())
    }
}

impl Schema {
    /// Compiles a schema given as JSON bytes. Draft 2020-12 applies unless `$schema` names another known draft.
    pub fn compile(schema: &[u8]) -> Result<Schema, SchemaError> {
        let tree = match Format::Json.parse_tree(schema) {
            Ok(tree) => tree.unwrap_or_default(),
            Err(e) => {
                let message = e.message.strip_prefix("invalid JSON: ").unwrap_or(&e.message).to_owned();
                return Err(SchemaError::NotJson { message, line: e.line, column: e.column });
            }
        };
        Schema::from_tree(&tree)
    }

    /// Compiles a schema that is already a JSON tree.
    pub fn from_tree(schema: &Value) -> Result<Schema, SchemaError> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(SchemaError::Invalid("the schema must be a JSON object or a boolean".into()));
        }
        let validator = jsonschema::options().with_retriever(NoRetrieval).build(schema).map_err(|e| {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() { String::new() } else { format!(" (at {at} in the schema)") };
            SchemaError::Invalid(format!("{}{at}", lowercase_first(&e.to_string())))
        })?;
        Ok(Schema { validator })
    }

    /// Every violation (at most [`MAX_VIOLATIONS`]), in a deterministic order (sort by pointer then message).
    pub fn check(&self, instance: &Value) -> Vec<Violation> {
        // Keep the smallest violations in a bounded max-heap, so a huge instance cannot grow the list.
        let mut kept = BinaryHeap::with_capacity(MAX_VIOLATIONS + 1);
        for error in self.validator.iter_errors(instance) {
            let pointer = error.instance_path().as_str().to_owned();
            kept.push(Violation { pointer, message: lowercase_first(&error.to_string()) });
            if kept.len() > MAX_VIOLATIONS {
                kept.pop();
            }
        }
        let mut violations = kept.into_sorted_vec();
        violations.dedup();
        violations
    }
}

/// "Additional properties are ..." becomes "additional properties are ...", acronyms ("JSON") stay.
fn lowercase_first(message: &str) -> String {
    let mut chars = message.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(message.chars().skip(1)).collect()
        }
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SERVICE: &str = r#"{
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["db", "servers"],
        "additionalProperties": false,
        "properties": {
            "db": {
                "type": "object",
                "required": ["url", "pool"],
                "properties": {"url": {"type": "string"}, "pool": {"type": "integer", "minimum": 1}}
            },
            "servers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["port"],
                    "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}}
                }
            }
        }
    }"#;

    fn pointers(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.pointer.as_str()).collect()
    }

    #[test]
    fn a_valid_instance_has_no_violations() {
        let schema = Schema::compile(SERVICE.as_bytes()).unwrap();
        let ok = json!({"db": {"url": "pg://x", "pool": 4}, "servers": [{"port": 80}, {"port": 443}]});
        assert_eq!(schema.check(&ok), vec![]);
    }

    #[test]
    fn violations_name_the_exact_pointer_sorted_by_pointer_then_message() {
        let schema = Schema::compile(SERVICE.as_bytes()).unwrap();
        let bad = json!({"db": {"pool": 0}, "servers": [{"port": 80}, {"port": 70000}, {}], "extra": true});
        let violations = schema.check(&bad);
        assert_eq!(
            pointers(&violations),
            vec!["", "/db", "/db/pool", "/servers/1/port", "/servers/2"],
            "{violations:#?}"
        );
        assert!(violations[0].message.contains("extra"), "{violations:#?}");
        assert!(violations[0].message.starts_with("additional properties"), "{violations:#?}");
        assert!(violations[1].message.contains("\"url\" is a required property"), "{violations:#?}");
        assert!(violations[2].message.contains("minimum of 1"), "{violations:#?}");
        assert!(violations[3].message.contains("maximum of 65535"), "{violations:#?}");
        assert!(violations[4].message.contains("\"port\" is a required property"), "{violations:#?}");
        assert_eq!(
            schema.check(&json!([])),
            vec![Violation { pointer: String::new(), message: "[] is not of type \"object\"".into() }]
        );
    }

    #[test]
    fn at_most_one_hundred_violations_are_reported_and_they_are_the_first_in_order() {
        let schema = Schema::compile(br#"{"type": "array", "items": {"type": "string"}}"#).unwrap();
        let violations = schema.check(&json!(vec![1; 250]));
        assert_eq!(violations.len(), MAX_VIOLATIONS);
        assert_eq!(violations[0].pointer, "/0");
        assert_eq!(violations[1].pointer, "/1");
        assert_eq!(violations[2].pointer, "/10"); // pointers sort as strings
        let mut sorted = violations.clone();
        sorted.sort();
        assert_eq!(sorted, violations);
    }

    #[test]
    fn the_default_draft_is_2020_12_and_an_explicit_older_draft_is_honoured() {
        // `prefixItems` exists only in 2020-12; draft 7 ignores it but applies array-form `items`.
        let modern = Schema::compile(br#"{"prefixItems": [{"type": "string"}]}"#).unwrap();
        assert_eq!(pointers(&modern.check(&json!([1]))), vec!["/0"]);
        let draft7 = br#"{"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}],
                          "prefixItems": [{"type": "integer"}]}"#;
        let draft7 = Schema::compile(draft7).unwrap();
        assert_eq!(pointers(&draft7.check(&json!([1]))), vec!["/0"]);
        assert_eq!(draft7.check(&json!(["a"])), vec![]);
    }

    #[test]
    fn a_schema_that_is_not_json_is_refused_with_its_position() {
        let err = Schema::compile(b"{\n  \"type\": }").unwrap_err();
        assert!(matches!(err, SchemaError::NotJson { line: Some(2), column: Some(11), .. }), "{err:?}");
        assert_eq!(err.to_string(), "schema is not valid JSON: expected value at line 2, column 11");
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        let err = Schema::compile(br#"{"type": "strnig"}"#).unwrap_err();
        assert!(matches!(err, SchemaError::Invalid(_)), "{err:?}");
        assert!(err.to_string().starts_with("schema is not a valid JSON Schema: "), "{err}");
        assert!(err.to_string().contains("/type"), "{err}");
        let err = Schema::compile(br#"{"minimum": "five"}"#).unwrap_err();
        assert!(matches!(err, SchemaError::Invalid(_)), "{err:?}");
        assert!(matches!(Schema::compile(b"42"), Err(SchemaError::Invalid(_))));
    }

    #[test]
    fn an_external_ref_is_refused_without_fetching_and_local_refs_work() {
        let err = Schema::compile(br#"{"$ref": "https://example.com/x.json"}"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("https://example.com/x.json") && text.contains("never fetched"), "{text}");
        let err = Schema::compile(br#"{"$schema": "https://example.com/meta", "type": "object"}"#).unwrap_err();
        assert!(matches!(err, SchemaError::Invalid(_)), "{err:?}");
        let local = br##"{"$defs": {"port": {"type": "integer"}}, "properties": {"p": {"$ref": "#/$defs/port"}}}"##;
        let schema = Schema::compile(local).unwrap();
        assert_eq!(pointers(&schema.check(&json!({"p": "x"}))), vec!["/p"]);
    }

    #[test]
    fn yaml_content_is_checked_through_its_tree() {
        let schema = Schema::compile(SERVICE.as_bytes()).unwrap();
        let yaml = "db:\n  url: pg://x\n  pool: 0\nservers:\n  - port: 80\n  - port: \"8080\"\n";
        let tree = Format::Yaml.parse_tree(yaml.as_bytes()).unwrap().unwrap();
        let violations = schema.check(&tree);
        assert_eq!(pointers(&violations), vec!["/db/pool", "/servers/1/port"], "{violations:#?}");
        assert_eq!(violations[1].message, "\"8080\" is not of type \"integer\"");
    }

    #[test]
    fn a_compiled_schema_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Schema>();
    }
}
