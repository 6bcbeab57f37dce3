//! Diagnostics: every problem found in a spec, with file, line, column and a hint.

use std::fmt;

use serde::Serialize;

use crate::located::Position;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The spec is refused.
    Error,
    /// The spec is accepted, but something looks wrong.
    Warning,
}

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file (or source name) the spec came from.
    pub file: String,
    /// 1-based line (1 when the problem concerns the whole file).
    pub line: u64,
    /// 1-based column (1 when the problem concerns the whole file).
    pub column: u64,
    /// What is wrong, in lowercase without a trailing period.
    pub message: String,
    /// How to fix it, when there is something specific to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at a position.
    pub fn error(file: &str, position: Position, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.to_owned(),
            line: position.line,
            column: position.column,
            message: message.into(),
            help: None,
        }
    }

    /// A warning at a position.
    pub fn warning(file: &str, position: Position, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, ..Self::error(file, position, message) }
    }

    /// Adds a hint.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The position as `line:column`.
    pub fn position(&self) -> Position {
        Position { line: self.line, column: self.column }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {level}: {}", self.file, self.line, self.column, self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// A spec that was refused: its errors (at least one) and any warnings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} in {}", count(self.errors.len()), self.file)]
pub struct SpecErrors {
    /// The source name.
    pub file: String,
    /// Every error found, in source order.
    pub errors: Vec<Diagnostic>,
    /// Warnings found along the way.
    pub warnings: Vec<Diagnostic>,
}

fn count(n: usize) -> String {
    if n == 1 { "1 error".to_owned() } else { format!("{n} errors") }
}

impl SpecErrors {
    /// Every diagnostic, errors then warnings, each in source order.
    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.errors.iter().chain(&self.warnings)
    }
}
