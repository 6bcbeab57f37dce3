//! The backend trait: a backend carries out a plan and reports observations. It never
//! decides policy, status or kill reasons, and never formats results.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::artifact::ArtifactArchive;
use crate::clock::Clock;
use crate::event::BackendEvents;
use crate::kill_reason::Observation;
use crate::plan::Plan;
use crate::secret::SecretStore;
use crate::session_id::SessionId;

/// How far a backend goes for one guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// Enforced on real workloads, with a test that tries to break it.
    Enforced,
    /// Set on every workload and left to the platform to enforce (a Kubernetes
    /// manifest setting), with the backend's reading of the outcome tested, but not yet
    /// proven by a test that tries to break it on the real platform.
    Configured,
    /// Modelled only (the simulator): computed from the declared behaviour.
    Modelled,
    /// Cannot be derived on this backend (said plainly rather than guessed).
    NotDerivable,
    /// Not implemented yet on this backend.
    NotYet,
}

/// What a backend enforces, honestly. Printed by `enclave doctor`, recorded in results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Whether the backend executes code at all.
    pub executes_code: bool,
    /// gVisor kernel isolation.
    pub gvisor: Support,
    /// Non-root, no capabilities, read-only root, no privilege escalation, no host mounts.
    pub hardened_container: Support,
    /// Deny-mode egress (no network).
    pub egress_deny: Support,
    /// Allowlist egress through the proxy.
    pub egress_allowlist: Support,
    /// Service bindings injected at the proxy.
    pub bindings: Support,
    /// Deadline kill.
    pub deadline: Support,
    /// Memory limit with `oom_killed`.
    pub memory_kill_reason: Support,
    /// Process limit with `pids_exceeded`.
    pub pids_kill_reason: Support,
    /// Disk limit with `disk_exceeded`.
    pub disk_kill_reason: Support,
    /// Log cap with `log_limit_exceeded`.
    pub log_limit: Support,
    /// Clone step with the credential kept out of the workload.
    pub clone: Support,
    /// Artifacts copied out.
    pub artifacts: Support,
}

/// A running (or finished) session on a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHandle {
    /// The session.
    pub session: SessionId,
    /// Backend-specific id (container id, job name, ...).
    pub id: String,
}

/// What teardown removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeardownReport {
    /// Resources removed, as `kind:name`.
    pub removed: Vec<String>,
    /// Resources that could not be removed.
    pub failed: Vec<String>,
}

/// A backend failure. `message` is safe to show a user; the source holds detail.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run this plan (e.g. it lacks a required capability).
    #[error("backend cannot run this plan: {0}")]
    Unsupported(String),
    /// The backend's infrastructure is unavailable or failed.
    #[error("backend infrastructure error: {message}")]
    Infra {
        /// What failed.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// A place sessions run. Object-safe: used as `Arc<dyn Backend>`.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Short name (`sim`, `docker`, `kube`).
    fn name(&self) -> &'static str;
    /// What this backend enforces.
    fn capabilities(&self) -> Capabilities;
    /// A backend that models time (the simulator) returns the virtual clock that times
    /// this session; the orchestrator then uses it for the deadline and timestamps.
    /// Repeated calls for one session return the same clock. Real backends return `None`.
    fn session_clock(&self, _session: &SessionId) -> Option<Arc<dyn Clock>> {
        None
    }
    /// Starts the session: clone phase (if any), then the workload. Reports facts on
    /// `events` as they happen. `secrets` is for the clone step only.
    async fn launch(
        &self,
        session: &SessionId,
        plan: &Plan,
        secrets: &dyn SecretStore,
        events: BackendEvents,
    ) -> Result<RunHandle, BackendError>;
    /// Waits until the run ends and reports what was observed.
    async fn wait(&self, run: &RunHandle) -> Result<Observation, BackendError>;
    /// A raw tar archive of one requested workspace path, streamed, taken after the
    /// program ended and before teardown; `None` if this backend collects no artifacts.
    /// The orchestrator reads it as it arrives and filters it (confinement, links,
    /// duplicates, secrets, size cap) in one place, and drops it once it has read
    /// enough, so a backend must not buffer the archive itself.
    async fn artifact_archive<'a>(
        &'a self,
        _run: &'a RunHandle,
        _path: &'a str,
    ) -> Result<Option<ArtifactArchive<'a>>, BackendError> {
        Ok(None)
    }
    /// Stops the run now (the orchestrator decided to kill it).
    async fn kill(&self, run: &RunHandle) -> Result<(), BackendError>;
    /// Removes everything the session created. Must work for a partly launched session.
    async fn teardown(&self, session: &SessionId) -> Result<TeardownReport, BackendError>;
    /// Removes resources of sessions that are not in `live`; returns the sessions reaped.
    async fn reap_orphans(&self, live: &[SessionId]) -> Result<Vec<SessionId>, BackendError>;
}
