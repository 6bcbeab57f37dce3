//! Restart safety: sessions the store says were running when the server stopped are
//! ended as `infra_lost`, with their sandboxes torn down and the ending audited; then
//! every backend resource not owned by a live session is reaped.

use std::sync::Arc;

use enclave_core::{AuditRecord, Backend, LostSession, Plan, WallClock, end_lost_session};
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
        end_in_store(store, backend.as_ref(), &session).await?;
        tracing::warn!(session = %session.id, "session was running when the server stopped: ended as infra_lost");
        done.sessions.push(session.id.to_string());
    }
    match backend.reap_orphans(&[]).await {
        Ok(reaped) => done.reaped = reaped.iter().map(ToString::to_string).collect(),
        Err(e) => tracing::error!(error = %e, "orphan reaping failed"),
    }
    Ok(done)
}

/// Ends `session` as lost (core decides the ending) and stores its ending.
async fn end_in_store(store: &dyn Store, backend: &dyn Backend, session: &StoredSession) -> Result<(), StoreError> {
    let jsonl = store.audit_jsonl(&session.id).await?;
    let last_audit = match jsonl.lines().last().map(serde_json::from_str::<AuditRecord>) {
        Some(Ok(last)) => Some(last),
        Some(Err(source)) => return Err(StoreError::Corrupt { what: "audit record", source }),
        None => None,
    };
    let plan: Option<Plan> = serde_json::from_str(&session.plan).ok();
    let next_event_seq = store.events_after(&session.id, None, u32::MAX).await?.last().map_or(0, |e| e.seq + 1);
    let lost = LostSession {
        session: session.id.clone(),
        name: session.name.clone(),
        backend: session.backend.clone(),
        plan: plan.as_ref(),
        plan_digest: session.plan_digest.clone(),
        started_ms: u64::try_from(session.created_ms).unwrap_or(0),
        last_audit: last_audit.as_ref(),
        next_event_seq,
        detail: INFRA_LOST_DETAIL.to_owned(),
    };
    let end = end_lost_session(backend, &WallClock, lost).await;
    for record in &end.audit {
        store.append_audit(record).await?;
    }
    store.finish_session(&session.id, &end.result, i64::try_from(end.finished_ms).unwrap_or(i64::MAX)).await?;
    for event in &end.events {
        store.append_event(&session.id, event).await?;
    }
    Ok(())
}
