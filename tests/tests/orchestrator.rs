//! Orchestrator behaviour against a scripted backend that records every call: kill
//! reasons derived in one place, guaranteed teardown, log cap, redaction, audit
//! failure. The backend runs on the simulator's virtual clock, so deadlines land at
//! exact modelled instants and nothing here depends on real time.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use enclave_core::WallClock;
use enclave_core::{
    AuditEvent, AuditRecord, AuditSink, AuditWriteError, Backend, BackendError, BackendEvent, BackendEvents,
    Capabilities, Clock, ExitObservation, KillReason, MemoryAuditSink, MemorySecrets, Observation, Orchestrator,
    OrchestratorError, Plan, Policy, RunHandle, Secret, SecretStore, SessionEvent, SessionId, SessionResult,
    SessionRun, Stream, TeardownReport, TimedEvent, to_jsonl_line, verify_jsonl,
};
use enclave_sim::VirtualClock;
use futures::FutureExt as _;
use tokio::sync::Notify;

/// One scripted backend action.
#[derive(Clone)]
enum Step {
    Emit(BackendEvent),
    /// Let modelled time pass.
    Advance(u64),
    End(Observation),
    /// Run until killed.
    UntilKilled,
    /// `wait` fails (the backend lost contact).
    FailWait,
}

struct ScriptBackend {
    script: Vec<Step>,
    launch_error: bool,
    clock: Arc<VirtualClock>,
    killed: Notify,
    events: Mutex<Option<BackendEvents>>,
    calls: Mutex<Vec<String>>,
}

impl ScriptBackend {
    fn new(script: Vec<Step>) -> Arc<Self> {
        Arc::new(Self {
            script,
            launch_error: false,
            clock: VirtualClock::starting_at(1_700_000_000_000),
            killed: Notify::new(),
            events: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn failing_launch() -> Arc<Self> {
        let mut backend = Arc::into_inner(Self::new(Vec::new())).unwrap();
        backend.launch_error = true;
        Arc::new(backend)
    }

    fn call(&self, what: &str) {
        self.calls.lock().unwrap().push(what.to_owned());
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn exited(code: i32) -> Observation {
    Observation::from_exit(ExitObservation::Exited { code })
}

fn signaled() -> Observation {
    Observation { exit: ExitObservation::Signaled { signal: 9 }, ..exited(0) }
}

#[async_trait]
impl Backend for ScriptBackend {
    fn name(&self) -> &'static str {
        "script"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities { executes_code: true, ..enclave_sim::capabilities() }
    }
    fn session_clock(&self, _session: &SessionId) -> Option<Arc<dyn Clock>> {
        Some(self.clock.clone())
    }
    async fn launch(
        &self,
        session: &SessionId,
        _plan: &Plan,
        _secrets: &dyn SecretStore,
        events: BackendEvents,
    ) -> Result<RunHandle, BackendError> {
        self.call("launch");
        if self.launch_error {
            return Err(BackendError::Infra { message: "daemon unreachable".into(), source: None });
        }
        *self.events.lock().unwrap() = Some(events);
        Ok(RunHandle { session: session.clone(), id: "run-1".into() })
    }
    async fn wait(&self, _run: &RunHandle) -> Result<Observation, BackendError> {
        self.call("wait");
        let sender = self.events.lock().unwrap().clone().unwrap();
        for step in &self.script {
            if self.killed.notified().now_or_never().is_some() {
                return Ok(signaled());
            }
            match step {
                Step::Emit(event) => {
                    sender.unbounded_send(event.clone()).unwrap();
                    tokio::task::yield_now().await;
                }
                Step::Advance(ms) => {
                    let target = self.clock.now_ms() + ms;
                    tokio::select! {
                        biased;
                        () = self.killed.notified() => return Ok(signaled()),
                        () = self.clock.advance_to(target) => {}
                    }
                }
                Step::End(observation) => return Ok(observation.clone()),
                Step::UntilKilled => loop {
                    let target = self.clock.now_ms() + 60_000;
                    tokio::select! {
                        biased;
                        () = self.killed.notified() => return Ok(signaled()),
                        () = self.clock.advance_to(target) => {}
                    }
                },
                Step::FailWait => {
                    return Err(BackendError::Infra { message: "lost contact with the sandbox".into(), source: None });
                }
            }
        }
        Ok(exited(0))
    }
    async fn kill(&self, _run: &RunHandle) -> Result<(), BackendError> {
        if self.events.lock().unwrap().as_ref().is_some_and(futures::channel::mpsc::UnboundedSender::is_closed) {
            // What the egress proxy's recorder would see: it then denies.
            self.call("events-closed");
        }
        self.call("kill");
        self.killed.notify_one();
        Ok(())
    }
    async fn teardown(&self, _session: &SessionId) -> Result<TeardownReport, BackendError> {
        self.call("teardown");
        Ok(TeardownReport { removed: vec!["container:run-1".into()], failed: vec![] })
    }
    async fn reap_orphans(&self, _live: &[SessionId]) -> Result<Vec<SessionId>, BackendError> {
        Ok(Vec::new())
    }
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
    backend: Arc<ScriptBackend>,
    plan: &Plan,
    secrets: Arc<dyn SecretStore>,
    cancel_now: bool,
    audit: &mut dyn AuditSink,
) -> (Result<SessionResult, OrchestratorError>, Vec<TimedEvent>) {
    let orchestrator = Orchestrator::new(backend, Arc::new(WallClock), secrets);
    let mut events = Vec::new();
    let mut listener = |e: &TimedEvent| events.push(e.clone());
    let cancel = if cancel_now { futures::future::ready(()).boxed() } else { futures::future::pending().boxed() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let session = SessionId::new("ses-test").unwrap();
    let result = runtime.block_on(orchestrator.run(SessionRun {
        session,
        plan,
        audit,
        listener: &mut listener,
        cancel,
        artifacts: None,
    }));
    (result, events)
}

fn run(backend: Arc<ScriptBackend>, plan: &Plan) -> Outcome {
    let mut audit = MemoryAuditSink::default();
    let (result, events) = run_with(backend, plan, Arc::new(enclave_core::NoSecrets), false, &mut audit);
    Outcome { result, audit: audit.records, events }
}

fn audit_types(records: &[AuditRecord]) -> Vec<String> {
    records.iter().map(|r| r.event.type_name()).collect()
}

fn assert_chain_verifies(records: &[AuditRecord], result: &SessionResult) {
    let jsonl: String = records.iter().map(to_jsonl_line).collect();
    let report = verify_jsonl(jsonl.as_bytes());
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.digest.as_deref(), Some(result.audit_digest.as_str()));
}

#[test]
fn a_clean_exit_succeeds_and_is_torn_down_once() {
    let backend =
        ScriptBackend::new(vec![Step::Emit(BackendEvent::WorkloadStarted), Step::Advance(500), Step::End(exited(0))]);
    let out = run(backend.clone(), &plan_of("    deadline: 10s\n"));
    let result = out.result.unwrap();
    assert_eq!(result.status.name(), "succeeded");
    assert_eq!(backend.calls(), ["launch", "wait", "teardown"]);
    let types = audit_types(&out.audit);
    assert_eq!(types.first().map(String::as_str), Some("session_created"));
    assert_eq!(types.last().map(String::as_str), Some("teardown"));
    assert!(types.contains(&"result".to_owned()));
    assert_chain_verifies(&out.audit, &result);
    assert_eq!(result.duration_ms, 500, "modelled time, not wall time");
}

#[test]
fn the_deadline_kills_at_the_modelled_instant() {
    let backend = ScriptBackend::new(vec![Step::Emit(BackendEvent::WorkloadStarted), Step::UntilKilled]);
    let out = run(backend.clone(), &plan_of("    deadline: 10s\n"));
    let result = out.result.unwrap();
    assert_eq!(result.kill_reason, Some(KillReason::DeadlineExceeded));
    assert_eq!(result.duration_ms, 10_000);
    assert_eq!(backend.calls(), ["launch", "wait", "kill", "teardown"]);
    let types = audit_types(&out.audit);
    let kill = types.iter().position(|t| t == "kill").unwrap();
    let result_at = types.iter().position(|t| t == "result").unwrap();
    assert!(kill < result_at, "{types:?}");
    assert_chain_verifies(&out.audit, &result);
}

#[test]
fn a_cancel_is_a_kill_with_reason_cancelled() {
    let backend = ScriptBackend::new(vec![Step::UntilKilled]);
    let mut audit = MemoryAuditSink::default();
    let (result, _) =
        run_with(backend.clone(), &plan_of("    deadline: 1h\n"), Arc::new(enclave_core::NoSecrets), true, &mut audit);
    assert_eq!(result.unwrap().kill_reason, Some(KillReason::Cancelled));
    let calls = backend.calls();
    assert!(calls.contains(&"kill".to_owned()), "{calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some("teardown"));
}

#[test]
fn resource_signals_and_observations_map_to_their_kill_reasons() {
    let cases = [
        (vec![Step::Emit(BackendEvent::PidsLimitHit), Step::UntilKilled], KillReason::PidsExceeded),
        (vec![Step::Emit(BackendEvent::DiskFull), Step::UntilKilled], KillReason::DiskExceeded),
        // A platform deadline (a Job's activeDeadlineSeconds) is the same kill reason.
        (vec![Step::Emit(BackendEvent::DeadlineReached), Step::UntilKilled], KillReason::DeadlineExceeded),
        (vec![Step::End(Observation { oom_killed: true, ..signaled() })], KillReason::OomKilled),
        (
            vec![Step::End(Observation { exit: ExitObservation::Lost { detail: "node gone".into() }, ..exited(0) })],
            KillReason::InfraLost,
        ),
        (vec![Step::FailWait], KillReason::InfraLost),
    ];
    for (script, want) in cases {
        let backend = ScriptBackend::new(script);
        let out = run(backend.clone(), &plan_of("    deadline: 1h\n"));
        let result = out.result.unwrap();
        assert_eq!(result.kill_reason, Some(want), "{:?}", result.status);
        assert!(backend.calls().ends_with(&["teardown".to_owned()]));
        let kills = out.audit.iter().filter(|r| matches!(r.event, AuditEvent::Kill { .. })).count();
        assert_eq!(kills, 1, "exactly one kill record for {want}");
        assert_chain_verifies(&out.audit, &result);
    }
}

#[test]
fn a_failed_launch_is_errored_and_still_torn_down() {
    let backend = ScriptBackend::failing_launch();
    let out = run(backend.clone(), &plan_of("    deadline: 1h\n"));
    let result = out.result.unwrap();
    assert_eq!(result.status.name(), "errored");
    assert_eq!(backend.calls(), ["launch", "teardown"]);
    assert_eq!(audit_types(&out.audit).last().map(String::as_str), Some("teardown"));
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
    let backend = ScriptBackend::new(script);
    let out = run(backend, &plan_of("    deadline: 1h\n    logBytes: 2Ki\n"));
    let result = out.result.unwrap();
    assert_eq!(result.kill_reason, Some(KillReason::LogLimitExceeded));
    assert!(result.log_truncated);
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
    let backend = ScriptBackend::new(script);
    let mut audit = MemoryAuditSink::default();
    let (result, events) = run_with(backend, &plan_of("    deadline: 1h\n"), Arc::new(secrets), false, &mut audit);
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
    let backend = ScriptBackend::new(vec![
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
    let (result, _) =
        run_with(backend.clone(), &plan_of("    deadline: 1h\n"), Arc::new(enclave_core::NoSecrets), false, &mut sink);
    assert!(matches!(result, Err(OrchestratorError::Audit { .. })), "nothing runs unaudited");
    assert_eq!(backend.calls(), ["launch", "wait", "events-closed", "kill", "teardown"]);
}
