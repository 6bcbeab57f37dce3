//! What the store holds, as plain data. No type here has a token or secret field.

use enclave_core::{SessionId, SessionResult, SessionStatus};
use serde::{Deserialize, Serialize};

/// A tenant's id (`ten-...`).
pub type TenantId = String;

/// Per-tenant ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantLimits {
    /// Most sessions running at once; past it a create is refused (HTTP 429).
    pub max_concurrent: u64,
    /// Most sessions created in any 24 hours; past it a create is refused (HTTP 403).
    pub daily_sessions: u64,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self { max_concurrent: 8, daily_sessions: 1_000 }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Its unique name.
    pub name: String,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Its ceilings.
    pub limits: TenantLimits,
}

/// What a presented token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// A valid token of this tenant.
    Valid(Tenant),
    /// A real token past its expiry.
    Expired,
    /// Not a token this store issued (or revoked).
    Invalid,
}

/// A session to record before it starts.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Its id.
    pub id: SessionId,
    /// Owner.
    pub tenant: TenantId,
    /// Name from the spec.
    pub name: String,
    /// Backend it runs on.
    pub backend: String,
    /// Plan digest.
    pub plan_digest: String,
    /// The plan as JSON (plans hold no secret values, by construction).
    pub plan: String,
    /// Creation time, unix ms.
    pub created_ms: i64,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    /// Its id.
    pub id: SessionId,
    /// Owner.
    pub tenant: TenantId,
    /// Name from the spec.
    pub name: String,
    /// Current status.
    pub status: SessionStatus,
    /// Backend.
    pub backend: String,
    /// Plan digest.
    pub plan_digest: String,
    /// The plan as JSON.
    pub plan: String,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// End time, unix ms.
    pub finished_ms: Option<i64>,
    /// The result, once finished.
    pub result: Option<SessionResult>,
    /// Log events dropped because the session's stored events hit their bound.
    pub logs_dropped: u64,
}

/// A filter and page for listing sessions, newest first.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Only sessions in this state (`running`, `succeeded`, ...).
    pub state: Option<String>,
    /// Only sessions older than this id (the cursor: the last id of the previous page).
    pub before: Option<SessionId>,
    /// Page size.
    pub limit: u32,
}

/// One stored session event: its sequence number and JSON body (a `TimedEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Sequence number within the session.
    pub seq: u64,
    /// The event as JSON.
    pub body: String,
}

/// Count of sessions in one state (and kill reason), for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    /// State name.
    pub state: String,
    /// Kill reason, for killed sessions.
    pub kill_reason: Option<String>,
    /// How many.
    pub count: u64,
}

/// A session's stored artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactManifest {
    /// Files kept.
    pub files: Vec<enclave_core::ArtifactFile>,
    /// Entries left out.
    pub skipped: Vec<enclave_core::SkippedArtifact>,
    /// Size of the tar bundle.
    pub tar_bytes: u64,
}

/// States of a session that has not ended.
pub const ACTIVE_STATES: [&str; 3] = ["pending", "cloning", "running"];

/// A verified GitHub webhook delivery, to keep before it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// `X-GitHub-Delivery`: the same on a redelivery, so the idempotency key.
    pub id: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// The JSON payload, as received.
    pub payload: Vec<u8>,
    /// When it was received, unix ms.
    pub received_ms: i64,
}

/// A kept delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    /// Its id.
    pub id: String,
    /// Its event.
    pub event: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// When it was received, unix ms.
    pub received_ms: i64,
    /// What processing it came to (`None` while pending).
    pub outcome: Option<String>,
}

/// What keeping a delivery came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryAccepted {
    /// New, and queued (pending).
    Queued,
    /// Kept before (a replay or a redelivery): nothing is queued again.
    Duplicate,
    /// The queue holds `limit` pending deliveries already; nothing was kept.
    QueueFull {
        /// The limit.
        limit: u64,
    },
}
