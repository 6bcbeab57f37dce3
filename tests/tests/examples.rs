//! Every checked-in example: validated, planned, run on the simulator, and its outcome
//! checked against the expectation on its first line (`# expect: ...`). Each run's
//! audit chain verifies, and any single changed byte in it is detected at its record.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::PathBuf;
use std::sync::Arc;

use enclave_core::WallClock;
use enclave_core::{
    AuditRecord, MemoryAuditSink, NoSecrets, Orchestrator, Policy, SessionEvent, SessionId, SessionResult, SessionRun,
    SessionStatus, TimedEvent, to_jsonl_line, verify_jsonl,
};
use enclave_sim::SimBackend;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/sessions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// What an example's first line promises.
#[derive(Debug, PartialEq)]
enum Expect {
    Succeeded,
    Failed(i32),
    Killed(String),
}

fn expectation(text: &str, file: &str) -> Expect {
    let first = text.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("# expect: ").unwrap_or_else(|| panic!("{file}: first line must be `# expect: ...`"));
    match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["succeeded"] => Expect::Succeeded,
        ["failed", code] => Expect::Failed(code.strip_prefix("exit=").unwrap().parse().unwrap()),
        ["killed", reason] => Expect::Killed((*reason).to_owned()),
        other => panic!("{file}: unknown expectation {other:?}"),
    }
}

struct Run {
    result: SessionResult,
    audit: Vec<AuditRecord>,
    events: Vec<TimedEvent>,
}

fn run_on_sim(file: &str, bytes: &[u8], index: usize) -> Run {
    let parsed = enclave_spec::parse(file, bytes).unwrap_or_else(|e| panic!("{file}: {e:?}"));
    assert!(parsed.warnings.is_empty(), "{file}: unexpected warnings {:?}", parsed.warnings);
    let plan = enclave_core::plan(&parsed.spec, &Policy::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let orchestrator = Orchestrator::new(Arc::new(SimBackend::new()), Arc::new(WallClock), Arc::new(NoSecrets));
    let session = SessionId::new(format!("ses-example-{index}")).unwrap();
    let mut audit = MemoryAuditSink::default();
    let mut events = Vec::new();
    let mut listener = |e: &TimedEvent| events.push(e.clone());
    // The simulator reports the spec's modelled cancel itself; no user cancels here.
    let cancel = Box::pin(futures::future::pending());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let result = runtime
        .block_on(orchestrator.run(SessionRun {
            session,
            plan: &plan,
            audit: &mut audit,
            listener: &mut listener,
            cancel,
            artifacts: None,
        }))
        .unwrap();
    Run { result, audit: audit.records, events }
}

#[test]
fn every_example_gives_its_expected_outcome_on_the_simulator() {
    let files = examples();
    assert!(files.len() >= 6, "at least six examples");
    let mut kill_reasons = std::collections::BTreeSet::new();
    for (index, path) in files.iter().enumerate() {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let expect = expectation(&text, &file);
        let run = run_on_sim(&file, text.as_bytes(), index);
        let result = &run.result;
        let got = match &result.status {
            SessionStatus::Succeeded => Expect::Succeeded,
            SessionStatus::Failed { exit_code } => Expect::Failed(*exit_code),
            SessionStatus::Killed { reason, .. } => Expect::Killed(reason.to_string()),
            other => panic!("{file}: unexpected status {other:?}"),
        };
        assert_eq!(got, expect, "{file}");
        if let Some(reason) = result.kill_reason {
            kill_reasons.insert(reason.to_string());
        }

        assert!(result.simulated, "{file}: simulator results are marked simulated");
        let jsonl: String = run.audit.iter().map(to_jsonl_line).collect();
        let report = verify_jsonl(jsonl.as_bytes());
        assert!(report.is_ok(), "{file}: {report:?}");
        assert_eq!(report.digest.as_deref(), Some(result.audit_digest.as_str()), "{file}");
        assert_eq!(run.audit.last().map(|r| r.event.type_name()).as_deref(), Some("teardown"), "{file}");

        // The simulator never invents output: the only text lines are Enclave's own markers.
        for event in &run.events {
            if let SessionEvent::Log { line, .. } = &event.event {
                assert!(line.starts_with("[enclave]"), "{file}: invented output {line:?}");
            }
        }
    }
    let all: std::collections::BTreeSet<String> = [
        "oom_killed",
        "deadline_exceeded",
        "pids_exceeded",
        "disk_exceeded",
        "log_limit_exceeded",
        "cancelled",
        "infra_lost",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(kill_reasons, all, "every kill reason has an example");
}

#[test]
fn audit_verify_names_the_record_for_any_changed_byte_of_a_real_chain() {
    let path = examples().into_iter().find(|p| p.ends_with("egress-hostile-spellings.yaml")).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let run = run_on_sim("hostile.yaml", text.as_bytes(), 99);
    let bytes: Vec<u8> = run.audit.iter().map(to_jsonl_line).collect::<String>().into_bytes();
    assert!(run.audit.len() > 10);
    let line_of = |pos: usize| bytes[..pos].iter().filter(|b| **b == b'\n').count() + 1;
    for pos in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[pos] = if bytes[pos] == b'a' { b'b' } else { b'a' };
        let report = verify_jsonl(&tampered);
        let broken = report.broken.unwrap_or_else(|| panic!("change at byte {pos} went unnoticed"));
        let line = line_of(pos);
        // A changed newline merges two records: the first of them is named.
        assert_eq!(broken.line, line, "byte {pos} is in line {line}, reported {}", broken.line);
        assert_eq!(report.verified, line - 1, "records before the change still verify");
    }
}
