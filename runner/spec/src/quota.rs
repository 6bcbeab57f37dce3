//! Resource quotas as written in a spec. Unset values take the policy's defaults.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::located::Located;
use crate::quantity::{ByteSize, DurationMs, Millicores};

/// Resource quotas. Each unset value takes the server's default; each set value must be
/// within the server's maximum.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QuotaSpec {
    /// CPU limit, e.g. `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Located<Millicores>>,
    /// Memory limit (swap is not granted), e.g. `512Mi`. Exceeding it kills the session
    /// with `oom_killed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Located<ByteSize>>,
    /// Maximum number of processes and threads. Exhausting it reports `pids_exceeded`
    /// where the backend can observe it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Located<u32>>,
    /// Wall-clock limit for the whole session, e.g. `10m`. Exceeding it kills the session
    /// with `deadline_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Located<DurationMs>>,
    /// Size of the writable workspace and of `/tmp`, e.g. `1Gi`. Filling it reports
    /// `disk_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Located<ByteSize>>,
    /// Maximum bytes of stdout and stderr kept; output past it is cut with a marker and the
    /// session is killed with `log_limit_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<Located<ByteSize>>,
}
