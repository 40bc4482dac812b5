//! Fuzz target `schema`: JSON Schema documents as a client (or a forwarded `SetSchema`) sends
//! them, compiled by `model::schema::Schema::compile` (draft 2020-12, no external references),
//! then a JSON instance checked against the compiled schema.
//!
//! The input is the schema, a `\0`, then the instance.

#![no_main]

use conflux::model::format::Format;
use conflux::model::schema::{Schema, MAX_VIOLATIONS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (schema, instance) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(schema) = Schema::compile(schema) else { return };
    let Ok(Some(instance)) = Format::Json.parse_tree(instance) else { return };
    let violations = schema.check(&instance);
    assert!(violations.len() <= MAX_VIOLATIONS);
});
