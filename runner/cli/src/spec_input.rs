//! Reading spec files and printing diagnostics.

use std::path::Path;

use enclave_spec::{Diagnostic, Parsed, SpecErrors};

use crate::exit;

/// The built-in example run by `enclave run` without a file.
pub(crate) const DEFAULT_SPEC_NAME: &str = "<built-in: examples/sessions/hello.yaml>";
pub(crate) const DEFAULT_SPEC: &str = include_str!("../../../examples/sessions/hello.yaml");

/// Reads and parses a spec; on failure prints every diagnostic to stderr and returns the
/// exit code to use.
pub(crate) fn load(path: Option<&Path>) -> Result<(String, Parsed), u8> {
    let (name, bytes) = match path {
        None => (DEFAULT_SPEC_NAME.to_owned(), DEFAULT_SPEC.as_bytes().to_vec()),
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => (path.display().to_string(), bytes),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return Err(exit::USAGE);
            }
        },
    };
    match enclave_spec::parse(&name, &bytes) {
        Ok(parsed) => {
            print_diagnostics(&parsed.warnings);
            Ok((name, parsed))
        }
        Err(errors) => {
            print_errors(&errors);
            Err(exit::USAGE)
        }
    }
}

pub(crate) fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}

pub(crate) fn print_errors(errors: &SpecErrors) {
    for d in errors.diagnostics() {
        eprintln!("{d}");
    }
    eprintln!("{errors}");
}

/// `enclave validate`.
pub(crate) fn validate(files: &[std::path::PathBuf], json: bool) -> u8 {
    let mut worst = exit::OK;
    let mut reports = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("error: cannot read {name}: {e}");
                worst = exit::USAGE;
                continue;
            }
        };
        let (valid, diagnostics) = match enclave_spec::parse(&name, &bytes) {
            Ok(parsed) => match enclave_core::plan(&parsed.spec, &enclave_core::Policy::default()) {
                Ok(_) => (true, parsed.warnings),
                Err(e) => {
                    let mut diagnostics = vec![plan_diagnostic(&name, &e)];
                    diagnostics.extend(parsed.warnings);
                    (false, diagnostics)
                }
            },
            Err(errors) => (false, errors.diagnostics().cloned().collect()),
        };
        if !valid {
            worst = exit::USAGE;
        }
        if json {
            reports.push(serde_json::json!({ "file": name, "valid": valid, "diagnostics": diagnostics }));
        } else {
            print_diagnostics(&diagnostics);
            let warnings = diagnostics.iter().filter(|d| d.severity == enclave_spec::Severity::Warning).count();
            let errors = diagnostics.len() - warnings;
            if valid {
                println!("ok: {name} is valid{}", plural(warnings, "warning"));
            } else {
                println!("invalid: {name}: {}{}", count(errors, "error"), plural(warnings, "warning"));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports).unwrap_or_default());
    }
    worst
}

/// A plan error as a diagnostic, at the position of the value it concerns.
fn plan_diagnostic(file: &str, error: &enclave_core::PlanError) -> Diagnostic {
    let position = error.position();
    let text = error.to_string();
    // The error's own text starts with its position; the diagnostic carries it separately.
    let message =
        text.split_once(": ").filter(|_| position.is_known()).map_or(text.clone(), |(_, rest)| rest.to_owned());
    Diagnostic::error(file, position, message)
}

fn count(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

fn plural(n: usize, what: &str) -> String {
    if n == 0 { String::new() } else { format!(" ({})", count(n, what)) }
}
