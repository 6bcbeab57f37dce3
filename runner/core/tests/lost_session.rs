//! Ending a session whose runner is gone (`end_lost_session`), against the recording
//! backend: the sandbox is torn down, the ending continues the session's audit chain,
//! and its status is `infra_lost` as `derive_status` decides it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod recording;

use enclave_core::{
    AuditChain, AuditEvent, AuditRecord, Isolation, KillReason, LostSession, LostSessionEnd, Plan, Policy,
    SessionEvent, SessionId, SessionStatus, end_lost_session, to_jsonl_line, verify_jsonl,
};
use recording::clock::START_MS;
use recording::{Call, RecordingBackend};

const DETAIL: &str = "the runner stopped";

fn session() -> SessionId {
    SessionId::new("ses-lost").unwrap()
}

fn host_kernel_plan() -> Plan {
    let yaml = "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: t\nspec:\n  command: [run]\n";
    let parsed = enclave_spec::parse("t.yaml", yaml.as_bytes()).unwrap();
    let policy =
        Policy { isolation: enclave_core::Isolation::HostKernel, permit_weaker_isolation: true, ..Policy::default() };
    enclave_core::plan(&parsed.spec, &policy).unwrap()
}

fn end(
    backend: &RecordingBackend,
    plan: Option<&Plan>,
    last_audit: Option<&AuditRecord>,
    started_ms: u64,
) -> LostSessionEnd {
    let lost = LostSession {
        session: session(),
        name: "t".into(),
        backend: "docker".into(),
        plan,
        plan_digest: "sha256:recorded".into(),
        started_ms,
        last_audit,
        next_event_seq: 7,
        detail: DETAIL.into(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(end_lost_session(backend, backend.clock().as_ref(), lost))
}

#[test]
fn a_lost_session_is_torn_down_and_its_chain_continued_as_infra_lost() {
    let backend = RecordingBackend::new(Vec::new());
    let mut chain = AuditChain::new(session());
    let started = chain.append(
        "2023-11-14T22:13:19.000Z".into(),
        AuditEvent::SessionCreated { name: "t".into(), backend: "docker".into(), simulated: false },
    );
    let plan = host_kernel_plan();
    let end = end(&backend, Some(&plan), Some(&started), START_MS - 1_000);

    assert_eq!(backend.calls(), vec![Call::Teardown(session())], "the sandbox is torn down, nothing else");
    let types: Vec<String> = end.audit.iter().map(|r| r.event.type_name()).collect();
    assert_eq!(types, ["kill", "result", "teardown"]);
    let jsonl: String = std::iter::once(&started).chain(&end.audit).map(to_jsonl_line).collect();
    let report = verify_jsonl(jsonl.as_bytes());
    assert!(report.is_ok(), "the ending continues the stored chain: {report:?}");
    assert_eq!(report.digest.as_deref(), Some(end.result.audit_digest.as_str()));
    assert!(matches!(&end.audit[2].event, AuditEvent::Teardown { ok: true, removed } if !removed.is_empty()));

    let status = SessionStatus::Killed { reason: KillReason::InfraLost, detail: DETAIL.into() };
    assert_eq!(end.result.status, status);
    assert_eq!(end.result.kill_reason, Some(KillReason::InfraLost));
    assert_eq!(end.result.backend, "docker", "the backend it ran on, as recorded");
    assert_eq!(end.result.plan_digest, "sha256:recorded");
    assert_eq!(end.result.isolation, Isolation::HostKernel, "the isolation its plan ran under");
    assert_eq!(end.result.duration_ms, 1_000, "from its start to now by the clock given");
    assert_eq!(end.finished_ms, START_MS);
    assert!(!end.result.simulated);
    assert!(end.result.warnings.is_empty(), "{:?}", end.result.warnings);

    let seqs: Vec<u64> = end.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [7, 8, 9], "events are numbered on from the stored ones");
    assert!(matches!(&end.events[0].event, SessionEvent::Kill { reason: KillReason::InfraLost, .. }));
    assert!(matches!(&end.events[1].event, SessionEvent::Status { status: s } if *s == status));
    assert!(matches!(&end.events[2].event, SessionEvent::Finished { result } if **result == end.result));
}

#[test]
fn a_lost_session_without_a_chain_or_a_readable_plan_still_ends_verifiably() {
    let backend = RecordingBackend::new(Vec::new());
    let end = end(&backend, None, None, START_MS);

    let jsonl: String = end.audit.iter().map(to_jsonl_line).collect();
    let report = verify_jsonl(jsonl.as_bytes());
    assert!(report.is_ok(), "a new chain is started: {report:?}");
    assert_eq!(end.result.isolation, Isolation::Gvisor);
    assert_eq!(end.result.warnings, ["the stored plan could not be read"]);
    assert_eq!(end.result.duration_ms, 0);
}
