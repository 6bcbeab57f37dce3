//! Resolved quotas and the policy that bounds them.

use std::fmt;

use enclave_spec::{ByteSize, DurationMs, Millicores, Position};
use serde::{Deserialize, Serialize};

use crate::plan::Isolation;

/// Concrete quotas for one session: every value set, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quotas {
    /// CPU limit in millicores.
    pub cpu_millis: u64,
    /// Memory limit in bytes (swap equals memory: none extra).
    pub memory_bytes: u64,
    /// Process and thread limit.
    pub pids: u32,
    /// Wall-clock deadline in milliseconds, enforced by the orchestrator's clock.
    pub deadline_ms: u64,
    /// Size of the workspace and of `/tmp`, in bytes each.
    pub disk_bytes: u64,
    /// Output kept, in bytes; past it output is cut and the session killed.
    pub log_bytes: u64,
}

impl fmt::Display for Quotas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu {}, memory {}, pids {}, deadline {}, disk {}, logs {}",
            Millicores(self.cpu_millis),
            ByteSize(self.memory_bytes),
            self.pids,
            DurationMs(self.deadline_ms),
            ByteSize(self.disk_bytes),
            ByteSize(self.log_bytes)
        )
    }
}

/// Server (or tenant) policy: quota defaults and ceilings, and the isolation level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Quotas used where the spec sets none.
    pub defaults: Quotas,
    /// Highest quotas a spec may ask for.
    pub max: Quotas,
    /// Lowest quotas a spec may ask for (below these no sandbox can start reliably).
    pub min: Quotas,
    /// Image used when the spec names none.
    pub default_image: String,
    /// Most bytes of one session's artifact bundle (file content and tar headers).
    pub artifact_bytes: u64,
    /// Isolation level to plan for. Anything but gVisor is weaker and needs
    /// `permit_weaker_isolation`.
    pub isolation: Isolation,
    /// Whether a weaker isolation level may be planned at all. Off by default; the CLI
    /// turns it on only when the user passes `--isolation host-kernel` explicitly.
    pub permit_weaker_isolation: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            defaults: Quotas {
                cpu_millis: 1_000,
                memory_bytes: 512 << 20,
                pids: 256,
                deadline_ms: 10 * 60_000,
                disk_bytes: 1 << 30,
                log_bytes: 10 << 20,
            },
            max: Quotas {
                cpu_millis: 4_000,
                memory_bytes: 8 << 30,
                pids: 4_096,
                deadline_ms: 2 * 3_600_000,
                disk_bytes: 20 << 30,
                log_bytes: 100 << 20,
            },
            // gVisor's own threads count against the pids limit: below ~64 the sandbox
            // may fail to start at all.
            min: Quotas {
                cpu_millis: 10,
                memory_bytes: 16 << 20,
                pids: 64,
                deadline_ms: 1_000,
                disk_bytes: 1 << 20,
                log_bytes: 1_024,
            },
            default_image: "enclave/base:latest".to_owned(),
            artifact_bytes: 64 << 20,
            isolation: Isolation::Gvisor,
            permit_weaker_isolation: false,
        }
    }
}

/// Why a valid spec could not be planned under a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A quota above the policy's ceiling.
    #[error("{position}: quota `{quota}` {requested} is above the server's maximum {max}")]
    QuotaAboveMax {
        /// Quota key as written in the spec.
        quota: &'static str,
        /// What the spec asked for, formatted.
        requested: String,
        /// The ceiling, formatted.
        max: String,
        /// Where the spec asked for it.
        position: Position,
    },
    /// A quota below the policy's floor.
    #[error("{position}: quota `{quota}` {requested} is below the minimum {min}")]
    QuotaBelowMin {
        /// Quota key as written in the spec.
        quota: &'static str,
        /// What the spec asked for, formatted.
        requested: String,
        /// The floor, formatted.
        min: String,
        /// Where the spec asked for it.
        position: Position,
    },
    /// A weaker isolation level that the policy does not permit.
    #[error("isolation {0} is weaker than gvisor and this policy does not permit it")]
    WeakerIsolationNotPermitted(Isolation),
}
