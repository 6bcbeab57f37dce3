//! Orchestrator behaviour against a recording backend (`recording/`) that plays a script
//! of backend facts and records every call made to it: kill reasons derived in one place,
//! a kill ordered once, guaranteed teardown, log cap, redaction, audit failure. The
//! script moves a manual clock, so deadlines land at exact modelled instants and nothing
//! here depends on real time.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod recording;

use std::sync::Arc;

use base64::Engine as _;
use enclave_core::{
    AuditEvent, AuditRecord, AuditSink, AuditWriteError, BackendEvent, ExitObservation, KillReason, MemoryAuditSink,
    MemorySecrets, NoSecrets, Observation, Orchestrator, OrchestratorError, Plan, Policy, Secret, SecretStore,
    SessionEvent, SessionId, SessionResult, SessionRun, Stream, TimedEvent, to_jsonl_line, verify_jsonl,
};
use futures::FutureExt as _;
use recording::{Call, RUN_ID, RecordingBackend, Step, exited, signaled};

/// The session every test runs.
const SESSION: &str = "ses-test";

fn session() -> SessionId {
    SessionId::new(SESSION).unwrap()
}

fn launch() -> Call {
    Call::Launch(session())
}

fn wait() -> Call {
    Call::Wait(RUN_ID.to_owned())
}

fn kill() -> Call {
    Call::Kill { run: RUN_ID.to_owned(), events_closed: false }
}

fn teardown() -> Call {
    Call::Teardown(session())
}

fn plan_of(quotas: &str) -> Plan {
    let yaml = format!(
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: t\nspec:\n  command: [run]\n  quotas:\n{quotas}"
    );
    let parsed = enclave_spec::parse("t.yaml", yaml.as_bytes()).unwrap();
    enclave_core::plan(&parsed.spec, &Policy::default()).unwrap()
}

struct Outcome {
    result: Result<SessionResult, OrchestratorError>,
    audit: Vec<AuditRecord>,
    events: Vec<TimedEvent>,
}

fn run_with(
    backend: Arc<RecordingBackend>,
    plan: &Plan,
    secrets: Arc<dyn SecretStore>,
    cancel_now: bool,
    audit: &mut dyn AuditSink,
) -> (Result<SessionResult, OrchestratorError>, Vec<TimedEvent>) {
    let orchestrator = Orchestrator::new(backend.clone(), backend.clock(), secrets);
    let mut events = Vec::new();
    let mut listener = |e: &TimedEvent| events.push(e.clone());
    let cancel = if cancel_now { futures::future::ready(()).boxed() } else { futures::future::pending().boxed() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let result = runtime.block_on(orchestrator.run(SessionRun {
        session: session(),
        plan,
        audit,
        listener: &mut listener,
        cancel,
        artifacts: None,
    }));
    (result, events)
}

fn run(backend: Arc<RecordingBackend>, plan: &Plan) -> Outcome {
    let mut audit = MemoryAuditSink::default();
    let (result, events) = run_with(backend, plan, Arc::new(NoSecrets), false, &mut audit);
    Outcome { result, audit: audit.records, events }
}

fn audit_types(records: &[AuditRecord]) -> Vec<String> {
    records.iter().map(|r| r.event.type_name()).collect()
}

/// The reasons of the kill records, in order.
fn kill_records(records: &[AuditRecord]) -> Vec<KillReason> {
    records
        .iter()
        .filter_map(|r| match r.event {
            AuditEvent::Kill { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

fn assert_chain_verifies(records: &[AuditRecord], result: &SessionResult) {
    let jsonl: String = records.iter().map(to_jsonl_line).collect();
    let report = verify_jsonl(jsonl.as_bytes());
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.digest.as_deref(), Some(result.audit_digest.as_str()));
}

/// Teardown was asked for exactly once, and last.
fn assert_torn_down_last(calls: &[Call]) {
    assert_eq!(calls.last(), Some(&teardown()), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| **c == teardown()).count(), 1, "{calls:?}");
}

#[test]
fn a_clean_exit_succeeds_and_is_torn_down_once() {
    let backend = RecordingBackend::new(vec![
        Step::Emit(BackendEvent::WorkloadStarted),
        Step::Advance(500),
        Step::End(exited(0)),
    ]);
    let out = run(backend.clone(), &plan_of("    deadline: 10s\n"));
    let result = out.result.unwrap();
    assert_eq!(result.status.name(), "succeeded");
    assert_eq!(backend.calls(), [launch(), wait(), teardown()]);
    let types = audit_types(&out.audit);
    assert_eq!(types.first().map(String::as_str), Some("session_created"));
    assert_eq!(types.last().map(String::as_str), Some("teardown"));
    assert!(types.contains(&"result".to_owned()));
    assert_chain_verifies(&out.audit, &result);
    assert_eq!(result.duration_ms, 500, "modelled time, not wall time");
}

#[test]
fn the_deadline_kills_at_the_modelled_instant() {
    let backend = RecordingBackend::new(vec![Step::Emit(BackendEvent::WorkloadStarted), Step::UntilKilled]);
    let out = run(backend.clone(), &plan_of("    deadline: 10s\n"));
    let result = out.result.unwrap();
    assert_eq!(result.kill_reason, Some(KillReason::DeadlineExceeded));
    assert_eq!(result.duration_ms, 10_000);
    assert_eq!(backend.calls(), [launch(), wait(), kill(), teardown()]);
    assert_eq!(kill_records(&out.audit), [KillReason::DeadlineExceeded]);
    let types = audit_types(&out.audit);
    let kill = types.iter().position(|t| t == "kill").unwrap();
    let result_at = types.iter().position(|t| t == "result").unwrap();
    assert!(kill < result_at, "{types:?}");
    assert_chain_verifies(&out.audit, &result);
}

#[test]
fn a_cancel_is_a_kill_with_reason_cancelled() {
    let backend = RecordingBackend::new(vec![Step::UntilKilled]);
    let mut audit = MemoryAuditSink::default();
    let (result, _) = run_with(backend.clone(), &plan_of("    deadline: 1h\n"), Arc::new(NoSecrets), true, &mut audit);
    assert_eq!(result.unwrap().kill_reason, Some(KillReason::Cancelled));
    assert_eq!(kill_records(&audit.records), [KillReason::Cancelled]);
    // The cancel is ready before `wait` is first polled, so where `wait` falls is not
    // pinned; the kill is ordered once and teardown comes last.
    let calls = backend.calls();
    assert_eq!(backend.kills(), 1, "{calls:?}");
    assert!(calls.contains(&kill()), "{calls:?}");
    assert_torn_down_last(&calls);
}

#[test]
fn resource_signals_and_observations_map_to_their_kill_reasons() {
    // (script, kill reason, whether the orchestrator orders the kill: a signal it acts
    // on, or an end of the run the backend observed)
    let cases = [
        (vec![Step::Emit(BackendEvent::PidsLimitHit), Step::UntilKilled], KillReason::PidsExceeded, true),
        (vec![Step::Emit(BackendEvent::DiskFull), Step::UntilKilled], KillReason::DiskExceeded, true),
        // A platform deadline (a Job's activeDeadlineSeconds) is the same kill reason.
        (vec![Step::Emit(BackendEvent::DeadlineReached), Step::UntilKilled], KillReason::DeadlineExceeded, true),
        (vec![Step::End(Observation { oom_killed: true, ..signaled() })], KillReason::OomKilled, false),
        (
            vec![Step::End(Observation { exit: ExitObservation::Lost { detail: "node gone".into() }, ..exited(0) })],
            KillReason::InfraLost,
            false,
        ),
        (vec![Step::FailWait], KillReason::InfraLost, false),
    ];
    for (script, want, ordered) in cases {
        let backend = RecordingBackend::new(script);
        let out = run(backend.clone(), &plan_of("    deadline: 1h\n"));
        let result = out.result.unwrap();
        assert_eq!(result.kill_reason, Some(want), "{:?}", result.status);
        let expected_calls =
            if ordered { vec![launch(), wait(), kill(), teardown()] } else { vec![launch(), wait(), teardown()] };
        assert_eq!(backend.calls(), expected_calls, "calls for {want}");
        assert_eq!(kill_records(&out.audit), [want], "exactly one kill record for {want}");
        assert_chain_verifies(&out.audit, &result);
    }
}

#[test]
fn a_failed_launch_is_errored_and_still_torn_down() {
    let backend = RecordingBackend::failing_launch();
    let out = run(backend.clone(), &plan_of("    deadline: 1h\n"));
    let result = out.result.unwrap();
    assert_eq!(result.status.name(), "errored");
    assert_eq!(backend.calls(), [launch(), teardown()]);
    assert_eq!(audit_types(&out.audit).last().map(String::as_str), Some("teardown"));
}

#[test]
fn a_backend_that_ignores_the_kill_is_given_up_on_after_the_grace_and_torn_down() {
    let backend = RecordingBackend::new(vec![Step::Emit(BackendEvent::WorkloadStarted), Step::IgnoreKill]);
    let out = run(backend.clone(), &plan_of("    deadline: 10s\n"));
    let result = out.result.unwrap();
    // The run is lost to the orchestrator: the deadline's kill was ordered (and
    // recorded), but what ends the session is the 30s grace running out.
    assert_eq!(result.kill_reason, Some(KillReason::InfraLost), "{:?}", result.status);
    assert!(format!("{:?}", result.status).contains("did not stop the session within 30s"), "{:?}", result.status);
    assert_eq!(result.duration_ms, 40_000);
    assert_eq!(backend.calls(), [launch(), wait(), kill(), teardown()]);
    assert_eq!(kill_records(&out.audit), [KillReason::DeadlineExceeded]);
    assert_eq!(audit_types(&out.audit).last().map(String::as_str), Some("teardown"));
    assert_chain_verifies(&out.audit, &result);
}

#[test]
fn output_past_log_bytes_is_cut_with_a_marker_and_killed() {
    let line = format!("{}\n", "x".repeat(99));
    let chunk = line.repeat(15); // 1500 bytes
    let script = vec![
        Step::Emit(BackendEvent::Output { stream: Stream::Stdout, data: chunk.clone().into_bytes() }),
        Step::Emit(BackendEvent::Output { stream: Stream::Stdout, data: chunk.into_bytes() }),
        Step::UntilKilled,
    ];
    let backend = RecordingBackend::new(script);
    let out = run(backend.clone(), &plan_of("    deadline: 1h\n    logBytes: 2Ki\n"));
    let result = out.result.unwrap();
    assert_eq!(result.kill_reason, Some(KillReason::LogLimitExceeded));
    assert!(result.log_truncated);
    assert_eq!(backend.calls(), [launch(), wait(), kill(), teardown()]);
    let logs: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| match &e.event {
            SessionEvent::Log { line, .. } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    let workload: Vec<&&str> = logs.iter().filter(|l| !l.starts_with("[enclave]")).collect();
    let text_bytes: usize = workload.iter().map(|l| l.len()).sum();
    // Exactly the first 2048 bytes are kept: whole lines plus the start of the one that
    // crossed the cap (without its newline).
    assert!(text_bytes <= 2048 && text_bytes + workload.len() >= 2048, "kept {text_bytes} text bytes");
    assert!(logs.iter().any(|l| l.contains("output truncated at 2Ki")), "{logs:?}");
}

#[test]
fn secrets_are_redacted_even_when_split_across_chunks() {
    let secret = "s3cr3t-value-0123456789";
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let mut secrets = MemorySecrets::default();
    secrets.insert("token", Secret::new(secret));
    let script = vec![
        Step::Emit(BackendEvent::Output { stream: Stream::Stdout, data: b"token=s3cr3t-val".to_vec() }),
        Step::Emit(BackendEvent::Output { stream: Stream::Stdout, data: b"ue-0123456789 ok\n".to_vec() }),
        Step::Emit(BackendEvent::Output { stream: Stream::Stderr, data: format!("b64 {b64}\n").into_bytes() }),
        Step::Emit(BackendEvent::CloneFinished { ok: false, detail: format!("auth failed for {secret}") }),
        Step::End(exited(1)),
    ];
    let backend = RecordingBackend::new(script);
    let mut audit = MemoryAuditSink::default();
    let (result, events) =
        run_with(backend.clone(), &plan_of("    deadline: 1h\n"), Arc::new(secrets), false, &mut audit);
    let result = result.unwrap();
    let everything = format!(
        "{}\n{}\n{}",
        serde_json::to_string(&events).unwrap(),
        audit.records.iter().map(to_jsonl_line).collect::<String>(),
        serde_json::to_string(&result).unwrap()
    );
    assert!(!everything.contains(secret), "secret leaked");
    assert!(!everything.contains(&b64), "base64 secret leaked");
    assert!(everything.contains("token=*** ok"), "{everything}");
    assert_eq!(backend.calls(), [launch(), wait(), teardown()]);
}

/// Fails the n-th append.
struct FailingSink {
    fail_at: usize,
    seen: usize,
}

impl AuditSink for FailingSink {
    fn append(&mut self, record: &AuditRecord) -> Result<(), AuditWriteError> {
        self.seen += 1;
        if self.seen >= self.fail_at {
            return Err(AuditWriteError { seq: record.seq, source: "disk full".into() });
        }
        Ok(())
    }
}

#[test]
fn an_audit_write_failure_stops_the_session_and_tears_down() {
    let backend = RecordingBackend::new(vec![
        Step::Emit(BackendEvent::WorkloadStarted),
        Step::Emit(BackendEvent::Egress {
            phase: enclave_core::EgressPhase::Run,
            host: "example.com".into(),
            port: 443,
            decision: enclave_core::Decision::Deny { reason: enclave_core::DenyReason::NoNetwork },
        }),
        Step::UntilKilled,
    ]);
    let mut sink = FailingSink { fail_at: 4, seen: 0 };
    let (result, _) = run_with(backend.clone(), &plan_of("    deadline: 1h\n"), Arc::new(NoSecrets), false, &mut sink);
    assert!(matches!(result, Err(OrchestratorError::Audit { .. })), "nothing runs unaudited");
    // The event channel is closed before the kill: from the failure on, a record fails
    // at its sender, so the egress proxy denies.
    let closed_kill = Call::Kill { run: RUN_ID.to_owned(), events_closed: true };
    assert_eq!(backend.calls(), [launch(), wait(), closed_kill, teardown()]);
}
