//! Enclave core: the plan and its planner, the egress decision, the backend trait, the
//! orchestrator, kill-reason derivation, the audit chain, and secret handling.
//!
//! Main design decision: everything that decides (policy, egress, status, kill reason)
//! lives here, once, and backends only report facts. The crate does no IO: no async
//! runtime, no filesystem, no network. Time comes from an injected [`Clock`], audit
//! records go to an injected [`AuditSink`], and secrets come from an injected
//! [`SecretStore`]. It must never let a secret value reach a plan, an event, an audit
//! record, an error or a result.

mod address;
mod archive_stream;
mod artifact;
mod audit;
mod backend;
mod bearer;
mod behaviour;
mod clock;
mod clone_step;
mod egress;
mod event;
mod kill_reason;
mod lost_session;
mod orchestrator;
mod plan;
mod planner;
mod quota;
mod result;
mod rule_ref;
mod secret;
mod secret_forms;
mod session_id;

pub use address::{
    AddressClass, METADATA_ENDPOINTS, address_components, classify, classify_alone, effective_address, embedded_ipv4,
    embedded_ipv4_ranges, embedded_ipv4s, special_ranges,
};
pub use artifact::{ArtifactArchive, ArtifactBundle, ArtifactFile, ArtifactSink, SkippedArtifact};
pub use audit::{
    AuditChain, AuditEvent, AuditRecord, AuditSink, AuditWriteError, BrokenRecord, MemoryAuditSink, VerifyReport,
    genesis, to_jsonl_line, verify_jsonl,
};
pub use backend::{Backend, BackendError, Capabilities, RunHandle, Support, TeardownReport};
pub use bearer::{BearerError, bearer_token};
pub use behaviour::{Behaviour, ModelledConnection, ModelledLogs};
pub use clock::{Clock, WallClock, rfc3339};
pub use clone_step::{CLONE_HOME, CLONE_SCRIPT, CredentialDelivery};
pub use egress::{
    BINDING_PORT, BindingScopeError, Decision, DecisionContext, DenyReason, EgressPhase, Resolution,
    check_binding_scope, decide,
};
pub use event::{BackendEvent, BackendEvents, CloneStage, SessionEvent, Stream, TimedEvent};
pub use kill_reason::{ExitObservation, KillOrder, KillReason, Observation, SessionStatus, derive_status};
pub use lost_session::{LostSession, LostSessionEnd, end_lost_session};
pub use orchestrator::{Orchestrator, OrchestratorError, SessionRun};
pub use plan::{
    BindingPlan, ClonePhase, CloneResources, Containment, EgressPolicy, EgressRule, GitSetting, ImplicitDeny,
    Isolation, NetworkMode, PLAN_FORMAT, Phase, Plan, PlanDigest, Program, RuleTarget, RunPhase, StepPlan,
};
pub use planner::{WORKLOAD_UID, plan};
pub use quota::{PlanError, Policy, Quotas};
pub use result::{DeniedEgress, SessionResult, StepResult};
pub use rule_ref::{InvalidRuleRef, RuleRef};
pub use secret::{MemorySecrets, NoSecrets, Redactor, Secret, SecretStore};
pub use session_id::{InvalidSessionId, SessionId};
