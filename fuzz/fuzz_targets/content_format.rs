//! Fuzz target `content_format`: every content format's validator, `Format::parse_tree` for json,
//! yaml, toml, properties and text (what a config write, a forwarded write and a stored version
//! go through), the format names and media types a request names, and the diffs the API computes
//! between two versions' contents.
//!
//! The first byte selects: its low bits the format, bit 0x80 a diff of two contents separated by
//! the first `\0`, bit 0x40 the format's name and media type parsers on the rest.

#![no_main]

use conflux::model::diff;
use conflux::model::format::{Format, MAX_DEPTH};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const FORMATS: [Format; 5] = [Format::Json, Format::Yaml, Format::Toml, Format::Properties, Format::Text];

/// Containers nested in `tree`, measured without recursion.
fn depth(tree: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(tree, 0usize)];
    while let Some((value, above)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(above + 1);
        stack.extend(children.map(|child| (child, above + 1)));
    }
    deepest
}

/// Parses as a write does and holds the result to what the rest of the node relies on.
fn parse(format: Format, content: &[u8]) -> Option<Value> {
    match format.parse_tree(content) {
        Ok(Some(tree)) => {
            assert!(format.is_structured());
            assert!(depth(&tree) <= MAX_DEPTH, "a parsed tree is held to MAX_DEPTH");
            serde_json::to_vec(&tree).expect("a parsed tree serializes as JSON");
            Some(tree)
        }
        Ok(None) => {
            assert_eq!(format, Format::Text);
            None
        }
        Err(e) => {
            assert!(e.line.is_none_or(|l| l >= 1) && e.column.is_none_or(|c| c >= 1), "positions are 1-based");
            let _ = e.to_string();
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let format = FORMATS[usize::from(selector & 0x07) % FORMATS.len()];
    if selector & 0x40 != 0 {
        let text = String::from_utf8_lossy(body);
        if let Ok(named) = Format::parse(&text) {
            assert!(named.name().eq_ignore_ascii_case(&text));
        }
        if let Some(typed) = Format::from_content_type(&text) {
            assert_eq!(Format::from_content_type(typed.content_type()), Some(typed));
        }
        return;
    }
    if selector & 0x80 == 0 {
        parse(format, body);
        return;
    }
    let (old, new) = match body.iter().position(|b| *b == 0) {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => (body, &[][..]),
    };
    if let (Some(old_tree), Some(new_tree)) = (parse(format, old), parse(format, new)) {
        let changes = diff::paths(&old_tree, &new_tree);
        assert_eq!(changes.is_empty(), old_tree == new_tree, "paths differ exactly when the trees do");
    }
    if let (Ok(old_text), Ok(new_text)) = (std::str::from_utf8(old), std::str::from_utf8(new)) {
        let _ = diff::unified(old_text, new_text, "v1", "v2");
    }
});
