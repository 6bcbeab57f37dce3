//! JSON Schema for session specs, generated from the spec types: field doc comments
//! become descriptions. `schema/session.schema.json` is this output, golden-checked.

use crate::session::SessionSpec;

/// The JSON Schema (draft 2020-12) of a session spec, pretty-printed with a final newline.
pub fn session_schema_json() -> String {
    let schema = schemars::schema_for!(SessionSpec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
