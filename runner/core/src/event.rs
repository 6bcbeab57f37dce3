//! Events: what backends report while a session runs ([`BackendEvent`]) and what the
//! orchestrator publishes to reporters ([`SessionEvent`]).

use futures::channel::mpsc;
use serde::{Deserialize, Serialize};

use crate::egress::{Decision, EgressPhase};
use crate::kill_reason::{KillReason, SessionStatus};
use crate::result::SessionResult;

/// Output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A fact a backend reports while running. Backends never decide status or policy; the
/// orchestrator turns these into audit records and session events. Serializable so a
/// proxy running elsewhere can send its events through the relay (`enclave-egress`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum BackendEvent {
    /// The clone step started.
    CloneStarted,
    /// The clone step finished.
    CloneFinished {
        /// Whether it succeeded.
        ok: bool,
        /// Detail (never a token).
        detail: String,
    },
    /// The clone step's reach was revoked.
    CloneReachRevoked,
    /// The workload started.
    WorkloadStarted,
    /// A step started.
    StepStarted {
        /// Step name.
        name: String,
    },
    /// A step finished.
    StepFinished {
        /// Step name.
        name: String,
        /// Exit code.
        exit_code: i32,
        /// Duration.
        duration_ms: u64,
    },
    /// A step ran past its own `timeout` (the orchestrator kills on it).
    StepTimedOut {
        /// Step name.
        name: String,
        /// The step's timeout.
        timeout_ms: u64,
    },
    /// Raw output from the workload.
    Output {
        /// Stream.
        stream: Stream,
        /// Bytes as produced.
        data: Vec<u8>,
    },
    /// Output volume without content: what the simulator reports, since it never
    /// invents output.
    OutputVolume {
        /// Lines.
        lines: u64,
        /// Bytes.
        bytes: u64,
    },
    /// An egress attempt and the decision the proxy (or the simulator, with the same
    /// code) made.
    Egress {
        /// Phase.
        phase: EgressPhase,
        /// Host as written.
        host: String,
        /// Port.
        port: u16,
        /// The decision.
        decision: Decision,
    },
    /// A request through a binding.
    BindingUsed {
        /// Binding name.
        binding: String,
        /// Upstream host.
        host: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Forwarded or refused.
        allowed: bool,
        /// Upstream status.
        status: Option<u16>,
        /// Refusal reason.
        reason: Option<String>,
    },
    /// The process limit was hit (the orchestrator kills on it).
    PidsLimitHit,
    /// The workspace or /tmp filled up (the orchestrator kills on it).
    DiskFull,
    /// The platform's own deadline fired first (a Kubernetes Job's
    /// `activeDeadlineSeconds`); the orchestrator kills on it as on its own deadline.
    DeadlineReached,
    /// The backend itself saw the user cancel: only the simulator, whose behaviour
    /// model can say so (`simulate.cancelAfter`). The orchestrator kills on it as on a
    /// cancel from its caller.
    CancelRequested,
}

/// Sender half given to a backend at launch.
pub type BackendEvents = mpsc::UnboundedSender<BackendEvent>;

/// A stage of the clone step, as reporters show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloneStage {
    /// The clone started (detail: the repository URL).
    Started,
    /// The clone succeeded (detail: what was cloned).
    Finished,
    /// The clone failed (detail: why).
    Failed,
    /// The clone's reach was revoked (detail: `host:port`).
    ReachRevoked,
}

impl std::fmt::Display for CloneStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Started => "started",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::ReachRevoked => "reach_revoked",
        })
    }
}

/// Something a reporter (CLI, API stream) shows. Log text is already redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum SessionEvent {
    /// The status changed.
    Status {
        /// New status.
        status: SessionStatus,
    },
    /// A warning for the user.
    Warning {
        /// The warning.
        message: String,
    },
    /// Clone step progress.
    Clone {
        /// Where the clone step is.
        stage: CloneStage,
        /// Detail.
        detail: String,
    },
    /// A step started.
    StepStarted {
        /// Step name.
        name: String,
    },
    /// A step finished.
    StepFinished {
        /// Step name.
        name: String,
        /// Exit code.
        exit_code: i32,
        /// Duration.
        duration_ms: u64,
    },
    /// One line of output (redacted).
    Log {
        /// Stream.
        stream: Stream,
        /// The line, without its newline.
        line: String,
    },
    /// Output volume, for backends that model output instead of producing it.
    LogVolume {
        /// Lines.
        lines: u64,
        /// Bytes.
        bytes: u64,
    },
    /// An egress decision.
    Egress {
        /// Phase.
        phase: EgressPhase,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Decision.
        decision: Decision,
    },
    /// A binding call.
    Binding {
        /// Binding name.
        binding: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Forwarded or refused.
        allowed: bool,
        /// Upstream status.
        status: Option<u16>,
    },
    /// The orchestrator is killing the session.
    Kill {
        /// Why.
        reason: KillReason,
        /// Detail.
        detail: String,
    },
    /// The session ended.
    Finished {
        /// The result.
        result: Box<SessionResult>,
    },
}

/// A session event with its time and per-session sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TimedEvent {
    /// Sequence number within the session, from 0.
    pub seq: u64,
    /// RFC 3339 UTC time.
    pub at: String,
    /// The event.
    #[serde(flatten)]
    pub event: SessionEvent,
}
