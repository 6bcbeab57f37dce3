//! YAML to [`SessionSpec`]: input checks, parsing with limits, and error mapping.

use serde_saphyr::Budget;

use crate::diagnostic::{Diagnostic, SpecErrors};
use crate::located::Position;
use crate::session::SessionSpec;
use crate::validate::validate;

/// Limits applied to untrusted spec input before and during parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest accepted file, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most YAML alias uses (`*name`) accepted.
    pub max_aliases: usize,
    /// Most events that alias replay may produce in total (stops "billion laughs").
    pub max_alias_replay_events: usize,
    /// Most nodes in the document.
    pub max_nodes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self { max_bytes: 256 * 1024, max_depth: 32, max_aliases: 64, max_alias_replay_events: 4096, max_nodes: 50_000 }
    }
}

/// A spec that parsed and validated, with any warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The spec.
    pub spec: SessionSpec,
    /// Warnings (the spec is usable, but something looks wrong).
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates a spec with the default limits. `file` names the source in
/// diagnostics. Never panics; every problem becomes a [`Diagnostic`].
pub fn parse(file: &str, bytes: &[u8]) -> Result<Parsed, SpecErrors> {
    parse_with_limits(file, bytes, &ParseLimits::default())
}

/// Parses and validates a spec with explicit limits.
pub fn parse_with_limits(file: &str, bytes: &[u8], limits: &ParseLimits) -> Result<Parsed, SpecErrors> {
    let refuse = |d: Diagnostic| SpecErrors { file: file.to_owned(), errors: vec![d], warnings: vec![] };
    let text = check_input(file, bytes, limits).map_err(refuse)?;
    let spec = deserialize(file, text, limits).map_err(refuse)?;
    let (errors, warnings) = validate(file, &spec);
    if errors.is_empty() {
        Ok(Parsed { spec, warnings })
    } else {
        Err(SpecErrors { file: file.to_owned(), errors, warnings })
    }
}

/// Byte-level checks that YAML parsers handle poorly or not at all.
fn check_input<'a>(file: &str, bytes: &'a [u8], limits: &ParseLimits) -> Result<&'a str, Diagnostic> {
    let whole = Position { line: 1, column: 1 };
    if bytes.len() > limits.max_bytes {
        return Err(Diagnostic::error(
            file,
            whole,
            format!("file is {} bytes; the limit is {} bytes", bytes.len(), limits.max_bytes),
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() as u64 + 1;
            return Err(Diagnostic::error(
                file,
                Position { line, column },
                format!("file is not valid UTF-8 (invalid byte 0x{:02x})", bytes[e.valid_up_to()]),
            )
            .with_help("save the spec as UTF-8"));
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let meaningful = text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---" && t != "..."
    });
    if !meaningful {
        return Err(Diagnostic::error(file, whole, "file is empty")
            .with_help("start from an example: `enclave validate examples/sessions/hello.yaml`"));
    }
    for (index, line) in text.lines().enumerate() {
        let line_no = index as u64 + 1;
        if let Some(col) = line.find('\0') {
            return Err(Diagnostic::error(
                file,
                Position { line: line_no, column: col as u64 + 1 },
                "file contains a NUL character",
            ));
        }
        let indent_len = line.len() - line.trim_start_matches([' ', '\t']).len();
        if let Some(col) = line[..indent_len].find('\t') {
            return Err(Diagnostic::error(
                file,
                Position { line: line_no, column: col as u64 + 1 },
                "tab character in indentation",
            )
            .with_help("YAML indentation must use spaces"));
        }
    }
    Ok(text)
}

fn deserialize(file: &str, text: &str, limits: &ParseLimits) -> Result<SessionSpec, Diagnostic> {
    let mut options = serde_saphyr::Options::default();
    let mut budget = Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_aliases = limits.max_aliases;
    budget.max_nodes = limits.max_nodes;
    budget.max_total_scalar_bytes = limits.max_bytes;
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = limits.max_alias_replay_events;
    options.alias_limits.max_replay_stack_depth = 8;
    options.alias_limits.max_alias_expansions_per_anchor = 16;
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<SessionSpec>(text, options).map_err(|e| map_error(file, &e))
}

/// Turns a parser error into a diagnostic with a precise message and a hint.
fn map_error(file: &str, error: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;
    let position =
        error.location().map_or(Position { line: 1, column: 1 }, |l| Position { line: l.line(), column: l.column() });
    let position = if position.is_known() { position } else { Position { line: 1, column: 1 } };
    let diag = |message: String| Diagnostic::error(file, position, message);
    match error {
        E::SerdeUnknownField { field, expected, .. } => {
            let d = diag(format!("unknown key {field:?}"));
            match suggest(field, expected) {
                Some(best) => d.with_help(format!("did you mean {best:?}?")),
                None => d.with_help(format!("expected one of: {}", expected.join(", "))),
            }
        }
        E::SerdeUnknownVariant { variant, expected, .. } => {
            let d = diag(format!("unknown value {variant:?}"));
            match suggest(variant, expected) {
                Some(best) => d.with_help(format!("did you mean {best:?}?")),
                None => d.with_help(format!("expected one of: {}", expected.join(", "))),
            }
        }
        E::SerdeMissingField { field, .. } => diag(format!("missing required key {field:?}")),
        E::DuplicateMappingKey { key, .. } => match key {
            Some(k) => diag(format!("duplicate key {k:?}")),
            None => diag("duplicate key".to_owned()),
        }
        .with_help("each key may appear only once in a mapping"),
        E::Budget { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => diag(format!(
            "document exceeds parser limits ({}): refusing it as too deep, too large or too alias-heavy",
            strip_location(&error.to_string())
        ))
        .with_help("session specs rarely need anchors and aliases; write values out"),
        E::MultipleDocuments { .. } => {
            diag("file holds more than one YAML document".to_owned()).with_help("put one session per file")
        }
        E::Eof { .. } => diag("unexpected end of file".to_owned()),
        E::Unexpected { expected, .. } => diag(format!("expected {}", plain_kind(expected))),
        E::InvalidScalar { ty, .. } => diag(format!("invalid value: expected {}", plain_kind(ty))),
        _ => diag(strip_location(&error.to_string())),
    }
}

/// What the parser expected, in the user's terms rather than YAML event or Rust
/// type names (`sequence start`, `u32`).
fn plain_kind(expected: &str) -> &str {
    match expected {
        "string scalar" => "a string",
        "scalar" => "a single value, not a list or mapping",
        "sequence start" => "a list",
        "mapping start" => "a mapping of `key: value` pairs",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, zero or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "boolean" => "`true` or `false`",
        other => other,
    }
}

/// serde-saphyr appends " at line L, column C" to messages; the diagnostic carries the
/// position itself.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The closest expected key, if it is close enough to be a likely typo.
fn suggest<'a>(given: &str, expected: &[&'a str]) -> Option<&'a str> {
    let lower = given.to_ascii_lowercase();
    expected
        .iter()
        .map(|candidate| (strsim::jaro_winkler(&lower, &candidate.to_ascii_lowercase()), *candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}
