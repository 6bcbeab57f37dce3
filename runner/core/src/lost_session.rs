//! Ending a session whose runner is gone: the process that drove it stopped while it
//! ran, so no orchestrator will see it finish. [`end_lost_session`] tears its sandbox
//! down and returns the same ending the orchestrator writes (a kill, a result and a
//! teardown record continuing its audit chain; the kill, status and finished events;
//! the result), with its status derived by [`derive_status`] from a lost sandbox.
//! Storing the ending is the caller's.

use crate::audit::{AuditChain, AuditEvent, AuditRecord};
use crate::backend::Backend;
use crate::clock::{Clock, rfc3339};
use crate::event::{SessionEvent, TimedEvent};
use crate::kill_reason::{ExitObservation, KillReason, Observation, derive_status};
use crate::plan::{Isolation, Plan};
use crate::result::SessionResult;
use crate::session_id::SessionId;

/// What is still known of a session whose runner is gone.
pub struct LostSession<'a> {
    /// Its id.
    pub session: SessionId,
    /// Its name.
    pub name: String,
    /// The backend it ran on, as recorded when it started.
    pub backend: String,
    /// Its plan; `None` when the recorded plan cannot be read (the ending says so).
    pub plan: Option<&'a Plan>,
    /// The digest of its plan, as recorded.
    pub plan_digest: String,
    /// When it started (epoch milliseconds).
    pub started_ms: u64,
    /// The last record of its audit chain, which the ending continues; `None` when it
    /// has none yet.
    pub last_audit: Option<&'a AuditRecord>,
    /// The sequence number its next event takes.
    pub next_event_seq: u64,
    /// Why it was lost, for the kill record and the status.
    pub detail: String,
}

/// A lost session's ending, for the caller to store in this order: audit records,
/// result, events.
#[derive(Debug, Clone, PartialEq)]
pub struct LostSessionEnd {
    /// Kill, result and teardown records, continuing the session's chain.
    pub audit: Vec<AuditRecord>,
    /// The final result.
    pub result: SessionResult,
    /// Kill, status and finished events, numbered on from `next_event_seq`.
    pub events: Vec<TimedEvent>,
    /// When it ended (epoch milliseconds), as the result says.
    pub finished_ms: u64,
}

/// Tears down `lost`'s sandbox on `backend` and builds its ending as `infra_lost`, timed
/// by `clock`.
pub async fn end_lost_session(backend: &dyn Backend, clock: &dyn Clock, lost: LostSession<'_>) -> LostSessionEnd {
    let observation = Observation::from_exit(ExitObservation::Lost { detail: lost.detail.clone() });
    let status = derive_status(&observation, None);
    let (removed, teardown_ok, mut warnings) = teardown(backend, &lost.session).await;
    let finished_ms = clock.now_ms();
    let now = rfc3339(finished_ms);
    let duration_ms = finished_ms.saturating_sub(lost.started_ms);
    let capabilities = backend.capabilities();
    let simulated = !capabilities.executes_code;

    let mut chain = match lost.last_audit {
        Some(last) => AuditChain::resume(last),
        None => AuditChain::new(lost.session.clone()),
    };
    let audit = [
        AuditEvent::Kill { reason: KillReason::InfraLost, detail: lost.detail.clone() },
        AuditEvent::Result { status: status.clone(), exit_code: None, duration_ms, simulated },
        AuditEvent::Teardown { removed, ok: teardown_ok },
    ]
    .into_iter()
    .map(|event| chain.append(now.clone(), event))
    .collect();

    if lost.plan.is_none() {
        warnings.push("the stored plan could not be read".to_owned());
    }
    let result = SessionResult {
        session: lost.session,
        name: lost.name,
        backend: lost.backend,
        simulated,
        kill_reason: status.kill_reason(),
        status: status.clone(),
        exit_code: None,
        started_at: rfc3339(lost.started_ms),
        finished_at: now.clone(),
        duration_ms,
        clone_duration_ms: None,
        run_duration_ms: None,
        plan_digest: lost.plan_digest,
        audit_digest: chain.digest().to_owned(),
        isolation: lost.plan.map_or(Isolation::Gvisor, |plan| plan.containment.isolation),
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
    let events = [
        SessionEvent::Kill { reason: KillReason::InfraLost, detail: lost.detail },
        SessionEvent::Status { status },
        SessionEvent::Finished { result: Box::new(result.clone()) },
    ]
    .into_iter()
    .zip(lost.next_event_seq..)
    .map(|(event, seq)| TimedEvent { seq, at: now.clone(), event })
    .collect();
    LostSessionEnd { audit, result, events, finished_ms }
}

/// Tears `session` down: what was removed, whether everything was, and a warning for
/// each thing that could not be removed. Shared with the orchestrator's own ending.
pub(crate) async fn teardown(backend: &dyn Backend, session: &SessionId) -> (Vec<String>, bool, Vec<String>) {
    match backend.teardown(session).await {
        Ok(report) => {
            let warnings: Vec<String> =
                report.failed.iter().map(|failed| format!("teardown could not remove {failed}")).collect();
            (report.removed, warnings.is_empty(), warnings)
        }
        Err(e) => (Vec::new(), false, vec![format!("teardown failed: {e}")]),
    }
}
