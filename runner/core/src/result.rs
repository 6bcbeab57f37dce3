//! The result of a session, as every reporter sees it. No secret field, by construction.

use serde::{Deserialize, Serialize};

use crate::backend::Capabilities;
use crate::kill_reason::{KillReason, SessionStatus};
use crate::plan::Isolation;
use crate::session_id::SessionId;

/// A finished session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionResult {
    /// Session id.
    pub session: SessionId,
    /// Session name.
    pub name: String,
    /// Backend that ran (or modelled) it.
    pub backend: String,
    /// True when the backend only modelled the session: nothing was executed.
    pub simulated: bool,
    /// Final status.
    pub status: SessionStatus,
    /// Exit code, when the workload exited on its own or was killed with a code.
    pub exit_code: Option<i32>,
    /// Kill reason, when killed.
    pub kill_reason: Option<KillReason>,
    /// Start time (RFC 3339 UTC).
    pub started_at: String,
    /// End time (RFC 3339 UTC).
    pub finished_at: String,
    /// Total duration in milliseconds.
    pub duration_ms: u64,
    /// Clone step duration, if there was one.
    pub clone_duration_ms: Option<u64>,
    /// Workload duration.
    pub run_duration_ms: Option<u64>,
    /// Digest of the plan that ran.
    pub plan_digest: String,
    /// Hash of the last audit record.
    pub audit_digest: String,
    /// Isolation level in force.
    pub isolation: Isolation,
    /// What the backend enforces.
    pub capabilities: Capabilities,
    /// Denied egress attempts, grouped by destination.
    pub egress_denied: Vec<DeniedEgress>,
    /// Output bytes seen (including any cut off).
    pub log_bytes: u64,
    /// Whether output was cut at `logBytes`.
    pub log_truncated: bool,
    /// Steps that ran, in order.
    pub steps: Vec<StepResult>,
    /// Artifact files copied out.
    pub artifacts: Vec<crate::artifact::ArtifactFile>,
    /// Artifact entries left out, with why.
    pub artifacts_skipped: Vec<crate::artifact::SkippedArtifact>,
    /// Where the artifact bundle was stored, if any.
    pub artifacts_location: Option<String>,
    /// Warnings shown to the user.
    pub warnings: Vec<String>,
}

/// Denied egress attempts to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeniedEgress {
    /// Host as written.
    pub host: String,
    /// Port.
    pub port: u16,
    /// How many attempts.
    pub attempts: u64,
    /// The reason of the first denial.
    pub reason: String,
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// Step name.
    pub name: String,
    /// Exit code.
    pub exit_code: i32,
    /// Duration.
    pub duration_ms: u64,
}
