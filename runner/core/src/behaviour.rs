//! The simulator's behaviour model as the plan carries it: plain values, read from the
//! spec's `simulate` block once by the planner. Positions in the spec source stay with
//! the spec (they feed its diagnostics); a plan, and so the relay wire, never holds them.

use std::net::IpAddr;

use enclave_spec::{HttpMethod, SimulateSpec, SimulatedConnection};
use serde::{Deserialize, Serialize};

/// What the workload is declared to do. Real backends ignore it; the digest leaves it out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Behaviour {
    /// Exit code the workload returns if nothing stops it first.
    pub exit_code: i32,
    /// How long the workload runs, if the spec says.
    pub duration_ms: Option<u64>,
    /// Peak memory in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Peak number of processes and threads.
    pub processes: Option<u32>,
    /// Bytes written to the workspace and `/tmp`.
    pub disk_written_bytes: Option<u64>,
    /// Connections attempted, in order.
    pub egress: Vec<ModelledConnection>,
    /// Output volume, if any.
    pub logs: Option<ModelledLogs>,
    /// A user cancels the session after this long.
    pub cancel_after_ms: Option<u64>,
    /// The backend loses the sandbox after this long.
    pub infra_lost_after_ms: Option<u64>,
}

/// One modelled connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelledConnection {
    /// Host exactly as the workload writes it (hostile spellings included).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Modelled DNS answer; empty: not modelled.
    pub resolves_to: Vec<IpAddr>,
    /// For a binding call: the HTTP method.
    pub method: Option<HttpMethod>,
    /// For a binding call: the request path.
    pub path: Option<String>,
    /// Offset from the workload's start, if the spec says.
    pub at_ms: Option<u64>,
}

/// Modelled output volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelledLogs {
    /// Number of lines.
    pub lines: u64,
    /// Total bytes.
    pub bytes: u64,
}

impl Behaviour {
    /// The plain model of a spec's `simulate` block.
    pub fn from_spec(spec: &SimulateSpec) -> Self {
        Self {
            exit_code: spec.exit_code,
            duration_ms: spec.duration.as_ref().map(|d| d.value.0),
            peak_memory_bytes: spec.peak_memory.as_ref().map(|m| m.value.0),
            processes: spec.processes.as_ref().map(|p| p.value),
            disk_written_bytes: spec.disk_written.as_ref().map(|d| d.value.0),
            egress: spec.egress.iter().map(|c| ModelledConnection::from_spec(&c.value)).collect(),
            logs: spec.logs.map(|l| ModelledLogs { lines: l.lines, bytes: l.bytes.map_or(0, |b| b.0) }),
            cancel_after_ms: spec.cancel_after.as_ref().map(|d| d.value.0),
            infra_lost_after_ms: spec.infra_lost_after.as_ref().map(|d| d.value.0),
        }
    }
}

impl ModelledConnection {
    fn from_spec(spec: &SimulatedConnection) -> Self {
        Self {
            host: spec.host.clone(),
            port: spec.port.0,
            resolves_to: spec.resolves_to.clone(),
            method: spec.method,
            path: spec.path.clone(),
            at_ms: spec.at.map(|a| a.0),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_plan_model_keeps_every_value_and_no_position() {
        let spec: SimulateSpec = serde_json::from_value(serde_json::json!({
            "exitCode": 3,
            "duration": "2s",
            "peakMemory": "64Mi",
            "processes": 12,
            "diskWritten": "1Ki",
            "egress": [{
                "host": "Example.COM", "port": 443, "resolvesTo": ["10.0.0.1"],
                "method": "POST", "path": "/v1", "at": "500ms"
            }],
            "logs": { "lines": 4, "bytes": 100 },
            "cancelAfter": "1s",
            "infraLostAfter": "3s"
        }))
        .unwrap();
        let model = Behaviour::from_spec(&spec);
        assert_eq!(
            model,
            Behaviour {
                exit_code: 3,
                duration_ms: Some(2_000),
                peak_memory_bytes: Some(64 << 20),
                processes: Some(12),
                disk_written_bytes: Some(1024),
                egress: vec![ModelledConnection {
                    host: "Example.COM".into(),
                    port: 443,
                    resolves_to: vec!["10.0.0.1".parse().unwrap()],
                    method: Some(HttpMethod::Post),
                    path: Some("/v1".into()),
                    at_ms: Some(500),
                }],
                logs: Some(ModelledLogs { lines: 4, bytes: 100 }),
                cancel_after_ms: Some(1_000),
                infra_lost_after_ms: Some(3_000),
            }
        );
        let json = serde_json::to_string(&model).unwrap();
        assert_eq!(serde_json::from_str::<Behaviour>(&json).unwrap(), model, "it reads back from the wire");
        assert!(!json.contains("column"), "no source position in {json}");
    }
}
