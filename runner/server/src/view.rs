//! What the API returns. The public [`Session`] has no token or secret field, by
//! construction: it is built only from a stored session, whose type has none either.

use enclave_core::{SessionResult, SessionStatus, rfc3339};
use enclave_store::StoredSession;
use serde::Serialize;

/// A session as clients see it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Session id.
    pub id: String,
    /// Name from the spec.
    pub name: String,
    /// Current status (`state` plus detail).
    pub status: SessionStatus,
    /// Backend it runs on.
    pub backend: String,
    /// Digest of its plan.
    pub plan_digest: String,
    /// When it was created (RFC 3339 UTC).
    pub created_at: String,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The result, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<SessionResult>,
    /// Log lines not stored because the session's stored output hit its bound.
    pub logs_dropped: u64,
    /// Where to find more.
    pub links: Links,
}

/// Related resources of a session.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Links {
    /// This session.
    #[serde(rename = "self")]
    pub self_: String,
    /// Server-sent events.
    pub events: String,
    /// Log lines.
    pub logs: String,
    /// Audit chain (JSONL).
    pub audit: String,
    /// Audit verification.
    pub audit_verify: String,
    /// Artifacts.
    pub artifacts: String,
    /// Cancel (POST).
    pub cancel: String,
}

impl Session {
    /// The public view of a stored session.
    pub fn from_stored(stored: StoredSession) -> Self {
        let base = format!("/v1/sessions/{}", stored.id);
        Self {
            id: stored.id.to_string(),
            name: stored.name,
            status: stored.status,
            backend: stored.backend,
            plan_digest: stored.plan_digest,
            created_at: rfc3339(u64::try_from(stored.created_ms).unwrap_or(0)),
            finished_at: stored.finished_ms.map(|ms| rfc3339(u64::try_from(ms).unwrap_or(0))),
            result: stored.result,
            logs_dropped: stored.logs_dropped,
            links: Links {
                events: format!("{base}/events"),
                logs: format!("{base}/logs"),
                audit: format!("{base}/audit"),
                audit_verify: format!("{base}/audit/verify"),
                artifacts: format!("{base}/artifacts"),
                cancel: format!("{base}/cancel"),
                self_: base,
            },
        }
    }
}

/// A page of sessions.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionPage {
    /// Sessions, newest first.
    pub sessions: Vec<Session>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A created session, with the spec's warnings.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// The session.
    #[serde(flatten)]
    pub session: Session,
    /// Warnings about the spec (it was accepted).
    pub warnings: Vec<enclave_spec::Diagnostic>,
    /// True when the server's backend only models sessions (the simulator): nothing
    /// will be executed.
    pub simulated: bool,
}
