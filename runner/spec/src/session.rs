//! The session spec document: `apiVersion`, `kind`, `metadata`, `spec`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::egress::{Binding, EgressSpec};
use crate::located::Located;
use crate::names::{ArtifactPath, EnvName, SecretName, SessionName};
use crate::quantity::DurationMs;
use crate::quota::QuotaSpec;
use crate::repo::RepoUrl;
use crate::simulate::SimulateSpec;

/// The spec format version. Only `enclave.dev/v1` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// Session spec v1.
    #[serde(rename = "enclave.dev/v1")]
    V1,
}

/// The document kind. Only `Session` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    /// A session: one repo checkout and one workload in one ephemeral sandbox.
    Session,
}

/// An Enclave session spec: what to clone, what to run, what it may reach, and
/// how much it may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Enclave session spec v1")]
pub struct SessionSpec {
    /// Spec format version; must be `enclave.dev/v1`.
    pub api_version: ApiVersion,
    /// Document kind; must be `Session`.
    pub kind: Kind,
    /// Name and labels of the session.
    pub metadata: Metadata,
    /// What the session does.
    pub spec: SessionBody,
}

/// Identifying data for a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Session name: lowercase letters, digits and `-`, at most 63 characters.
    pub name: Located<SessionName>,
    /// Free-form labels copied to the result and to every resource a backend creates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The body of a session spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SessionBody {
    /// Repository cloned into the workspace before the workload starts. Optional: without
    /// it the workload starts in an empty workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoSpec>,
    /// Container image for the workload. Defaults to the server's base image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Located<String>>,
    /// Working directory, relative to the workspace root. Defaults to the workspace root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<Located<ArtifactPath>>,
    /// Plain environment variables for the workload. Never put secrets here: use
    /// `bindings` (injected by the egress proxy) or `repo.credential`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvName, Located<String>>,
    /// The program to run, as an argv list (no shell). Exactly one of `command` and
    /// `steps` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Located<Vec<String>>>,
    /// Steps run in order in the same sandbox, each with `sh -c`; the session stops at the
    /// first failing step. Exactly one of `command` and `steps` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Located<Vec<Step>>>,
    /// Network egress. Default: no network at all.
    #[serde(default)]
    pub egress: EgressSpec,
    /// Service bindings: credentials the egress proxy injects into requests to one host,
    /// so that the workload never holds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Located<Binding>>,
    /// Resource quotas. Unset values take the server's defaults.
    #[serde(default)]
    pub quotas: QuotaSpec,
    /// Workspace-relative paths copied out into the result bundle after the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Located<ArtifactPath>>,
    /// Behaviour model used only by the simulator backend; ignored by real backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulate: Option<SimulateSpec>,
}

/// The repository to clone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RepoSpec {
    /// Remote URL: `https://host/path`, `ssh://user@host/path` or `user@host:path`.
    /// Local paths and `file://` are refused.
    pub url: Located<RepoUrl>,
    /// Branch, tag or commit to check out. Defaults to the remote's default branch.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<Located<String>>,
    /// Name of a secret holding the token for a private repository. Only the clone step
    /// ever sees its value; the workload never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Located<SecretName>>,
}

/// One step of a multi-step session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// Step name, unique within the session.
    pub name: Located<String>,
    /// Shell script run with `sh -c`.
    pub run: Located<String>,
    /// Extra environment variables for this step (merged over `spec.env`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvName, Located<String>>,
    /// Time limit for this step; the session deadline still applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<DurationMs>>,
}
