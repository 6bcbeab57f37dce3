//! The behaviour model read by the simulator backend. Real backends ignore it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::egress::{HttpMethod, Port};
use crate::located::Located;
use crate::quantity::{ByteSize, DurationMs};

/// What the workload is declared to do, for the simulator. The simulator checks this
/// model against the plan (quotas, egress rules) and reports what a real backend would
/// observe; it never runs the command and never invents output.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SimulateSpec {
    /// Exit code the workload would return if nothing stops it first. Default 0.
    #[serde(default)]
    pub exit_code: i32,
    /// How long the workload would run. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Located<DurationMs>>,
    /// Peak memory the workload would use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory: Option<Located<ByteSize>>,
    /// Peak number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Located<u32>>,
    /// Bytes the workload would write to the workspace and `/tmp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_written: Option<Located<ByteSize>>,
    /// Connections the workload would attempt, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Located<SimulatedConnection>>,
    /// Output the workload would produce (sizes only: the simulator never invents text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<SimulatedLogs>,
    /// Model a user cancelling the session after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_after: Option<Located<DurationMs>>,
    /// Model the backend losing the sandbox (node failure) after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra_lost_after: Option<Located<DurationMs>>,
}

/// One modelled connection attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SimulatedConnection {
    /// Host exactly as the workload would write it (a name or an IP literal). Hostile
    /// spellings are allowed here: they get the decision the proxy would make.
    pub host: String,
    /// Destination port.
    pub port: Port,
    /// Addresses the name would resolve to, to model DNS answers (e.g. rebinding to a
    /// private address). Default: a public address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolves_to: Vec<std::net::IpAddr>,
    /// For a call through a binding: the HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// For a call through a binding: the request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Offset from the workload's start at which the attempt happens. Default: spread over
    /// the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DurationMs>,
}

/// Modelled output volume.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SimulatedLogs {
    /// Number of lines.
    #[serde(default)]
    pub lines: u64,
    /// Total bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<ByteSize>,
}
