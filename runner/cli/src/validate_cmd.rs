//! `enclave validate`: every problem of each spec, with its file:line:column.

use std::path::PathBuf;

use clap::Args;
use enclave_spec::Diagnostic;

use crate::shared_args::Format;
use crate::{exit, spec_input};

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Spec files to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    output: Format,
}

/// `enclave validate`.
pub(crate) fn validate(args: &ValidateArgs) -> u8 {
    let json = args.output == Format::Json;
    let mut worst = exit::OK;
    let mut reports = Vec::new();
    for file in &args.files {
        let (name, bytes) = match spec_input::read(Some(file)) {
            Ok(spec) => spec,
            Err(e) => {
                eprintln!("error: {e:#}");
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
            spec_input::print_diagnostics(&diagnostics);
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
