//! Reading spec files (or the built-in example), planning them, and printing
//! diagnostics. `plan` and `run` load and plan a spec only through `load_plan`;
//! `validate` and `run --server` read files through `read` and report in their own way.

use std::path::Path;

use anyhow::Context as _;
use enclave_core::{Plan, Policy};
use enclave_spec::{Diagnostic, Parsed, SpecErrors};

use crate::exit;

/// The built-in example run by `enclave run` without a file.
const DEFAULT_SPEC_NAME: &str = "<built-in: examples/sessions/hello.yaml>";
const DEFAULT_SPEC: &str = include_str!("../../../examples/sessions/hello.yaml");

/// A spec's name (as diagnostics show it) and bytes: the file at `path`, or the
/// built-in example without one.
pub(crate) fn read(path: Option<&Path>) -> anyhow::Result<(String, Vec<u8>)> {
    match path {
        None => Ok((DEFAULT_SPEC_NAME.to_owned(), DEFAULT_SPEC.as_bytes().to_vec())),
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok((path.display().to_string(), bytes))
        }
    }
}

/// Reads and parses a spec; on failure prints every diagnostic to stderr and returns the
/// exit code to use.
fn load(path: Option<&Path>) -> Result<(String, Parsed), u8> {
    let (name, bytes) = read(path).map_err(|e| {
        eprintln!("error: {e:#}");
        exit::USAGE
    })?;
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

/// Parses and plans a spec file (or the built-in example), printing a plan error with
/// its position.
pub(crate) fn load_plan(path: Option<&Path>, policy: &Policy) -> Result<Plan, u8> {
    let (name, parsed) = load(path)?;
    enclave_core::plan(&parsed.spec, policy).map_err(|e| {
        eprintln!("{name}:{e}");
        exit::USAGE
    })
}

pub(crate) fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}

fn print_errors(errors: &SpecErrors) {
    for d in errors.diagnostics() {
        eprintln!("{d}");
    }
    eprintln!("{errors}");
}
