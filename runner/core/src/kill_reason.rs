//! Kill reasons and the one place where a session's final status is derived from what a
//! backend observed and what the orchestrator itself did.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a session was stopped before its workload finished on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    /// The memory limit was breached and the kernel killed the workload.
    OomKilled,
    /// The deadline passed; the orchestrator killed the session.
    DeadlineExceeded,
    /// The process limit was exhausted.
    PidsExceeded,
    /// The workspace or `/tmp` filled up.
    DiskExceeded,
    /// Output passed `logBytes`; output was cut and the session killed.
    LogLimitExceeded,
    /// A user cancelled the session.
    Cancelled,
    /// The sandbox was lost (daemon, node or server failure).
    InfraLost,
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned));
        f.write_str(text.as_deref().unwrap_or("unknown"))
    }
}

/// How the workload's process ended, as the backend saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum ExitObservation {
    /// It exited with a code.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// It was killed by a signal.
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// The backend lost track of it.
    Lost {
        /// What happened.
        detail: String,
    },
}

/// Everything a backend observed about a finished run. Backends report facts; they
/// never decide the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// How the workload ended.
    pub exit: ExitObservation,
    /// The memory limit was hit and the kernel's OOM killer acted.
    pub oom_killed: bool,
    /// The process limit was hit (fork/clone refused).
    pub pids_limit_hit: bool,
    /// The workspace or `/tmp` filled up (ENOSPC).
    pub disk_full: bool,
    /// Failing step, for multi-step programs.
    pub failed_step: Option<String>,
}

impl Observation {
    /// An ending with no resource facts: the process ended as `exit` says.
    pub fn from_exit(exit: ExitObservation) -> Self {
        Self { exit, oom_killed: false, pids_limit_hit: false, disk_full: false, failed_step: None }
    }
}

/// A kill the orchestrator itself ordered, with why. The first one wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillOrder {
    /// Why.
    pub reason: KillReason,
    /// Human-readable detail.
    pub detail: String,
}

/// The session's final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum SessionStatus {
    /// Accepted, not yet started.
    Pending,
    /// The clone step is running.
    Cloning,
    /// The workload is running.
    Running,
    /// The workload exited 0.
    Succeeded,
    /// The workload exited non-zero.
    Failed {
        /// Exit code.
        exit_code: i32,
    },
    /// The session was stopped.
    Killed {
        /// Why.
        reason: KillReason,
        /// Human-readable detail.
        detail: String,
    },
    /// Enclave could not run the session (launch or backend error).
    Errored {
        /// What went wrong (no secrets, no internal paths).
        message: String,
    },
}

impl SessionStatus {
    /// Short name: `succeeded`, `killed`, ...
    pub fn name(&self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Cloning => "cloning",
            SessionStatus::Running => "running",
            SessionStatus::Succeeded => "succeeded",
            SessionStatus::Failed { .. } => "failed",
            SessionStatus::Killed { .. } => "killed",
            SessionStatus::Errored { .. } => "errored",
        }
    }

    /// Whether the session is over.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, SessionStatus::Pending | SessionStatus::Cloning | SessionStatus::Running)
    }

    /// The kill reason, if killed.
    pub fn kill_reason(&self) -> Option<KillReason> {
        match self {
            SessionStatus::Killed { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionStatus::Failed { exit_code } => write!(f, "failed (exit {exit_code})"),
            SessionStatus::Killed { reason, detail } => write!(f, "killed: {reason} ({detail})"),
            SessionStatus::Errored { message } => write!(f, "errored: {message}"),
            other => f.write_str(other.name()),
        }
    }
}

/// Derives the final status. The ONE place this happens, for every backend.
///
/// Precedence: a lost sandbox, then the orchestrator's own first kill order (cancel,
/// deadline, log limit, or a resource signal it acted on), then resource facts the
/// backend observed (OOM, pids, disk), then the exit code.
pub fn derive_status(observation: &Observation, order: Option<&KillOrder>) -> SessionStatus {
    let killed = |reason, detail: String| SessionStatus::Killed { reason, detail };
    if let ExitObservation::Lost { detail } = &observation.exit {
        return killed(KillReason::InfraLost, detail.clone());
    }
    if let Some(order) = order {
        return killed(order.reason, order.detail.clone());
    }
    if observation.oom_killed {
        return killed(KillReason::OomKilled, "memory limit exceeded".to_owned());
    }
    if observation.pids_limit_hit {
        return killed(KillReason::PidsExceeded, "process limit exhausted".to_owned());
    }
    if observation.disk_full {
        return killed(KillReason::DiskExceeded, "workspace or /tmp is full".to_owned());
    }
    match observation.exit {
        ExitObservation::Exited { code: 0 } => SessionStatus::Succeeded,
        ExitObservation::Exited { code } => SessionStatus::Failed { exit_code: code },
        ExitObservation::Signaled { signal } => SessionStatus::Failed { exit_code: 128 + signal },
        ExitObservation::Lost { .. } => killed(KillReason::InfraLost, "sandbox lost".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(exit: ExitObservation) -> Observation {
        Observation::from_exit(exit)
    }

    #[test]
    fn derivation_table() {
        let order = |reason| KillOrder { reason, detail: "x".into() };
        let cases: Vec<(Observation, Option<KillOrder>, &str, Option<KillReason>)> = vec![
            (obs(ExitObservation::Exited { code: 0 }), None, "succeeded", None),
            (obs(ExitObservation::Exited { code: 3 }), None, "failed", None),
            (
                Observation { oom_killed: true, ..obs(ExitObservation::Signaled { signal: 9 }) },
                None,
                "killed",
                Some(KillReason::OomKilled),
            ),
            (
                Observation { pids_limit_hit: true, ..obs(ExitObservation::Exited { code: 1 }) },
                None,
                "killed",
                Some(KillReason::PidsExceeded),
            ),
            (
                Observation { disk_full: true, ..obs(ExitObservation::Exited { code: 1 }) },
                None,
                "killed",
                Some(KillReason::DiskExceeded),
            ),
            (
                obs(ExitObservation::Signaled { signal: 9 }),
                Some(order(KillReason::DeadlineExceeded)),
                "killed",
                Some(KillReason::DeadlineExceeded),
            ),
            (
                Observation { oom_killed: true, ..obs(ExitObservation::Signaled { signal: 9 }) },
                Some(order(KillReason::Cancelled)),
                "killed",
                Some(KillReason::Cancelled),
            ),
            (
                obs(ExitObservation::Lost { detail: "gone".into() }),
                Some(order(KillReason::Cancelled)),
                "killed",
                Some(KillReason::InfraLost),
            ),
        ];
        for (observation, order, name, reason) in cases {
            let status = derive_status(&observation, order.as_ref());
            assert_eq!(status.name(), name, "{observation:?}");
            assert_eq!(status.kill_reason(), reason, "{observation:?}");
        }
    }

    #[test]
    fn kill_reasons_serialize_snake_case() {
        assert_eq!(KillReason::OomKilled.to_string(), "oom_killed");
        assert_eq!(KillReason::LogLimitExceeded.to_string(), "log_limit_exceeded");
    }
}
