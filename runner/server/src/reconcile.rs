//! Restart safety: sessions the store says were running when the server stopped are
//! ended as `infra_lost`, with their sandboxes torn down and the ending audited; then
//! every backend resource not owned by a live session is reaped.

use std::sync::Arc;

use enclave_core::{
    AuditChain, AuditEvent, AuditRecord, Backend, KillReason, Plan, SessionEvent, SessionResult, SessionStatus,
    TimedEvent, rfc3339,
};
use enclave_store::{Store, StoreError, StoredSession};

/// What reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Sessions ended as `infra_lost`.
    pub sessions: Vec<String>,
    /// Sessions whose leftovers the backend's orphan reaper removed.
    pub reaped: Vec<String>,
}

/// The detail recorded on a session that was running when the server stopped.
pub const INFRA_LOST_DETAIL: &str =
    "the server stopped while the session was running; its sandbox was torn down when the server restarted";

/// Ends every session left running by a previous server process. Call before serving.
pub async fn reconcile(store: &dyn Store, backend: &Arc<dyn Backend>) -> Result<Reconciled, StoreError> {
    let mut done = Reconciled::default();
    for session in store.active_sessions().await? {
        end_lost_session(store, backend.as_ref(), &session).await?;
        tracing::warn!(session = %session.id, "session was running when the server stopped: ended as infra_lost");
        done.sessions.push(session.id.to_string());
    }
    match backend.reap_orphans(&[]).await {
        Ok(reaped) => done.reaped = reaped.iter().map(ToString::to_string).collect(),
        Err(e) => tracing::error!(error = %e, "orphan reaping failed"),
    }
    Ok(done)
}

async fn end_lost_session(store: &dyn Store, backend: &dyn Backend, session: &StoredSession) -> Result<(), StoreError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let now = rfc3339(u64::try_from(now_ms).unwrap_or(0));
    let status = SessionStatus::Killed { reason: KillReason::InfraLost, detail: INFRA_LOST_DETAIL.to_owned() };
    let (removed, teardown_ok, mut warnings) = match backend.teardown(&session.id).await {
        Ok(report) => {
            let warnings = report.failed.iter().map(|f| format!("teardown could not remove {f}")).collect();
            (report.removed, true, warnings)
        }
        Err(e) => (Vec::new(), false, vec![format!("teardown failed: {e}")]),
    };
    let jsonl = store.audit_jsonl(&session.id).await?;
    let mut chain = match jsonl.lines().last().map(serde_json::from_str::<AuditRecord>) {
        Some(Ok(last)) => AuditChain::resume(&last),
        Some(Err(source)) => return Err(StoreError::Corrupt { what: "audit record", source }),
        None => AuditChain::new(session.id.clone()),
    };
    let capabilities = backend.capabilities();
    let duration_ms = u64::try_from(now_ms - session.created_ms).unwrap_or(0);
    let records = [
        AuditEvent::Kill { reason: KillReason::InfraLost, detail: INFRA_LOST_DETAIL.to_owned() },
        AuditEvent::Result {
            status: status.clone(),
            exit_code: None,
            duration_ms,
            simulated: !capabilities.executes_code,
        },
        AuditEvent::Teardown { removed, ok: teardown_ok && warnings.is_empty() },
    ];
    for event in records {
        store.append_audit(&chain.append(now.clone(), event)).await?;
    }
    let plan: Option<Plan> = serde_json::from_str(&session.plan).ok();
    if plan.is_none() {
        warnings.push("the stored plan could not be read".to_owned());
    }
    let result = SessionResult {
        session: session.id.clone(),
        name: session.name.clone(),
        backend: session.backend.clone(),
        simulated: !capabilities.executes_code,
        status: status.clone(),
        exit_code: None,
        kill_reason: Some(KillReason::InfraLost),
        started_at: rfc3339(u64::try_from(session.created_ms).unwrap_or(0)),
        finished_at: now.clone(),
        duration_ms,
        clone_duration_ms: None,
        run_duration_ms: None,
        plan_digest: session.plan_digest.clone(),
        audit_digest: chain.digest().to_owned(),
        isolation: plan.as_ref().map_or(enclave_core::Isolation::Gvisor, |p| p.containment.isolation),
        capabilities,
        egress_denied: Vec::new(),
        log_bytes: 0,
        log_truncated: false,
        steps: Vec::new(),
        artifacts: Vec::new(),
        artifacts_skipped: Vec::new(),
        artifacts_location: None,
        warnings,
    };
    let next_seq = store.events_after(&session.id, None, u32::MAX).await?.last().map_or(0, |e| e.seq + 1);
    store.finish_session(&session.id, &result, now_ms).await?;
    let events = [
        SessionEvent::Kill { reason: KillReason::InfraLost, detail: INFRA_LOST_DETAIL.to_owned() },
        SessionEvent::Status { status },
        SessionEvent::Finished { result: Box::new(result) },
    ];
    for (offset, event) in (0u64..).zip(events) {
        store.append_event(&session.id, &TimedEvent { seq: next_seq + offset, at: now.clone(), event }).await?;
    }
    Ok(())
}
