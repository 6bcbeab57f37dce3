//! `enclave audit verify|show`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use enclave_core::{AuditRecord, verify_jsonl};

use crate::exit;
use crate::shared_args::Format;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Recompute the hash chain and name the first record that does not hold.
    Verify {
        /// The audit file (JSONL).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also require the chain to end at this digest (from the session result), which
        /// detects records cut off the end.
        #[arg(long, value_name = "SHA256")]
        digest: Option<String>,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Print the chain as a timeline.
    Show {
        /// The audit file (JSONL).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `enclave audit verify|show`.
pub(crate) fn audit(command: &AuditCommand) -> u8 {
    match command {
        AuditCommand::Verify { file, digest, output } => verify(file, digest.as_deref(), *output == Format::Json),
        AuditCommand::Show { file } => show(file),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, u8> {
    std::fs::read(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        exit::USAGE
    })
}

/// `enclave audit verify`.
fn verify(path: &Path, expected_digest: Option<&str>, json: bool) -> u8 {
    let bytes = match read(path) {
        Ok(bytes) => bytes,
        Err(code) => return code,
    };
    let report = verify_jsonl(&bytes);
    let digest_mismatch = match (expected_digest, &report.digest) {
        (Some(want), Some(got)) if report.broken.is_none() && want != got => Some(want),
        _ => None,
    };
    let ok = report.is_ok() && digest_mismatch.is_none();
    if json {
        let doc = serde_json::json!({
            "file": path.display().to_string(),
            "ok": ok,
            "report": report,
            "expectedDigest": expected_digest,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else if let Some(broken) = &report.broken {
        println!("BROKEN: {}: {broken}", path.display());
        println!("  {} record(s) before it verified", report.verified);
    } else if let Some(want) = digest_mismatch {
        println!(
            "BROKEN: {}: all {} records link, but the chain ends at {} instead of {want} (records missing at the end?)",
            path.display(),
            report.verified,
            report.digest.as_deref().unwrap_or("-")
        );
    } else {
        let session = report.session.as_ref().map(ToString::to_string).unwrap_or_default();
        println!("ok: {} records of session {session} verify", report.verified);
        println!("digest {}", report.digest.as_deref().unwrap_or("-"));
    }
    if ok { exit::OK } else { exit::FAILED }
}

/// `enclave audit show`.
fn show(path: &Path) -> u8 {
    let bytes = match read(path) {
        Ok(bytes) => bytes,
        Err(code) => return code,
    };
    let text = String::from_utf8_lossy(&bytes);
    for (index, line) in text.lines().enumerate() {
        match serde_json::from_str::<AuditRecord>(line) {
            Ok(record) => {
                let mut detail = serde_json::to_value(&record.event).unwrap_or_default();
                if let Some(map) = detail.as_object_mut() {
                    map.remove("type");
                }
                println!("{:>4}  {}  {:<20} {}", record.seq, record.at, record.event.type_name(), detail);
            }
            Err(e) => println!("{:>4}  (line {} is not a valid record: {e})", "?", index + 1),
        }
    }
    let report = verify_jsonl(&bytes);
    match report.broken {
        Some(broken) => {
            println!("chain BROKEN at {broken}");
            exit::FAILED
        }
        None => {
            println!("chain ok, digest {}", report.digest.unwrap_or_default());
            exit::OK
        }
    }
}
