//! Resolved quotas and the policy that bounds them.

use std::fmt;

use enclave_spec::{ByteSize, DurationMs, Millicores, Position};
use serde::{Deserialize, Serialize};

use ipnet::IpNet;

use crate::address::AddressClass;
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
    /// Special ranges (private, carrier-grade NAT, reserved, ...) a spec's CIDR rules
    /// may name; a rule naming one that is not inside an entry here is refused at plan
    /// time. Metadata, loopback and link-local ranges cannot be listed. Server config
    /// `policy.allow_networks`, CLI `--allow-network`.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// UNSAFE, for tests and local development only: loopback ranges on the Enclave
    /// host that a spec's CIDR rules may name, and that a clone may reach. Every plan
    /// made under it says so in its warnings and records the ranges. Server config
    /// `policy.unsafe_host_loopback`, CLI `--unsafe-host-loopback`.
    pub host_loopback: Vec<ipnet::IpNet>,
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
            allow_networks: Vec::new(),
            host_loopback: Vec::new(),
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
    /// A binding host written as a wildcard (validation refuses it first; the planner
    /// does not trust that it ran).
    #[error("{position}: a binding host must be an exact name, not a wildcard")]
    WildcardBinding {
        /// Where the binding's `host` is.
        position: Position,
    },
    /// A weaker isolation level that the policy does not permit.
    #[error("isolation {0} is weaker than gvisor and this policy does not permit it")]
    WeakerIsolationNotPermitted(Isolation),
    /// A CIDR rule naming or (in an IPv6 embedding form) covering addresses no session
    /// may reach.
    #[error("{position}: cidr {cidr} reaches {range} ({class}), which a session can never reach{hint}")]
    NeverReachable {
        /// The rule's range as written.
        cidr: IpNet,
        /// The never-reachable range it reaches.
        range: IpNet,
        /// That range's class.
        class: AddressClass,
        /// What an operator could do, if anything.
        hint: &'static str,
        /// Where the rule's `cidr` is.
        position: Position,
    },
    /// A CIDR rule naming a special range the operator's policy does not list.
    #[error(
        "{position}: cidr {cidr} names a {class} range ({range}) that this server's policy does not list; an operator lists it with `policy.allow_networks` in the server config or `--allow-network {cidr}` on the CLI"
    )]
    NetworkNotListed {
        /// The rule's range as written.
        cidr: IpNet,
        /// The special range it names.
        range: IpNet,
        /// That range's class.
        class: AddressClass,
        /// Where the rule's `cidr` is.
        position: Position,
    },
    /// A policy listing a never-reachable range in `allow_networks` or a non-loopback
    /// range in `host_loopback`.
    #[error("policy: {setting} lists {cidr}, which it cannot open ({why})")]
    PolicyNetwork {
        /// The setting.
        setting: &'static str,
        /// The listed range.
        cidr: IpNet,
        /// Why it cannot be listed.
        why: String,
    },
}

impl PlanError {
    /// Where in the spec the error is (line 1, column 1 for what concerns the whole spec
    /// or the policy).
    pub fn position(&self) -> Position {
        match self {
            PlanError::QuotaAboveMax { position, .. }
            | PlanError::QuotaBelowMin { position, .. }
            | PlanError::NeverReachable { position, .. }
            | PlanError::NetworkNotListed { position, .. }
            | PlanError::WildcardBinding { position } => *position,
            PlanError::WeakerIsolationNotPermitted(_) | PlanError::PolicyNetwork { .. } => {
                Position { line: 1, column: 1 }
            }
        }
    }
}
