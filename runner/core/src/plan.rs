//! The plan: everything a backend needs to carry out a session, fully resolved.

use std::collections::BTreeMap;
use std::fmt;

use enclave_spec::{EgressMode, Host, HostPattern, HttpMethod, PathPattern, RepoScheme};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address::AddressClass;
use crate::behaviour::Behaviour;
use crate::quota::Quotas;
use crate::rule_ref::RuleRef;

/// Version tag of the plan format, part of every digest.
pub const PLAN_FORMAT: &str = "enclave.dev/plan/v1";

/// A resolved session plan. Built only by [`crate::plan`]; its digest covers every field
/// except the simulator's behaviour model, so the same spec has the same digest on every
/// backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Always [`PLAN_FORMAT`].
    pub format: String,
    /// sha256 of the plan's canonical JSON (see [`Plan::compute_digest`]).
    pub digest: PlanDigest,
    /// Session name from the spec.
    pub name: String,
    /// Labels from the spec.
    pub labels: BTreeMap<String, String>,
    /// Phases in order: an optional clone, then the workload.
    pub phases: Vec<Phase>,
    /// The containment profile.
    pub containment: Containment,
    /// Egress rules, explicit and implicit.
    pub egress: EgressPolicy,
    /// Service bindings by name; values stay in the secret store.
    pub bindings: Vec<BindingPlan>,
    /// Quotas with defaults applied.
    pub quotas: Quotas,
    /// Workspace-relative paths to copy out.
    pub artifacts: Vec<String>,
    /// Most bytes of the artifact bundle, tar headers included (from the policy).
    pub artifact_bytes_max: u64,
    /// Warnings a user should see (e.g. weaker isolation).
    pub warnings: Vec<String>,
    /// The simulator's behaviour model, if the spec has one. Not part of the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulate: Option<Behaviour>,
}

/// A plan digest: `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct PlanDigest(pub String);

impl fmt::Display for PlanDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Plan {
    /// Recomputes the digest: sha256 over the canonical JSON of the plan with the digest
    /// field emptied and the behaviour model removed. Struct fields serialize in
    /// declaration order and maps are sorted, so the JSON is canonical.
    pub fn compute_digest(&self) -> PlanDigest {
        let mut canonical = self.clone();
        canonical.digest = PlanDigest::default();
        canonical.simulate = None;
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        PlanDigest(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
    }

    /// The clone phase, if any.
    pub fn clone_phase(&self) -> Option<&ClonePhase> {
        self.phases.iter().find_map(|p| match p {
            Phase::Clone(c) => Some(c),
            Phase::Run(_) => None,
        })
    }

    /// The workload phase.
    pub fn run_phase(&self) -> Option<&RunPhase> {
        self.phases.iter().find_map(|p| match p {
            Phase::Run(r) => Some(r),
            Phase::Clone(_) => None,
        })
    }
}

/// One phase of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub enum Phase {
    /// Clone the repository into the workspace (the only phase that sees the git token).
    Clone(ClonePhase),
    /// Run the workload.
    Run(RunPhase),
}

/// The clone phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClonePhase {
    /// Normalised repository URL (never with credentials).
    pub url: String,
    /// Transport.
    pub scheme: RepoScheme,
    /// Canonical repository host: the only destination the clone may reach.
    pub host: Host,
    /// Repository port.
    pub port: u16,
    /// Ref to check out; `None` for the remote's default branch.
    pub git_ref: Option<String>,
    /// Secret holding the token, by name.
    pub credential: Option<String>,
    /// What the clone step may use.
    pub resources: CloneResources,
    /// The git settings the clone runs under, in order (environment-provided
    /// configuration: `GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`).
    pub git_config: Vec<GitSetting>,
    /// The clone script (POSIX `sh`), the same on every backend.
    pub script: String,
}

/// Resources of the clone step's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloneResources {
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Process (task) limit, where the backend can set one.
    pub pids: u32,
    /// Size of the clone's own scratch space (`/tmp`).
    pub scratch_bytes: u64,
}

/// One git configuration setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSetting {
    /// The key, e.g. `core.hooksPath`.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// The workload phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPhase {
    /// Container image.
    pub image: String,
    /// Working directory relative to the workspace.
    pub workdir: String,
    /// Environment (plain values from the spec only).
    pub env: BTreeMap<String, String>,
    /// What runs.
    pub program: Program,
}

/// What the workload runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Program {
    /// One argv, no shell.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// Shell steps in order, stopping at the first failure.
    Steps {
        /// The steps.
        steps: Vec<StepPlan>,
    },
}

/// One planned step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepPlan {
    /// Step name.
    pub name: String,
    /// Script for `sh -c`.
    pub run: String,
    /// Step environment merged over the session's.
    pub env: BTreeMap<String, String>,
    /// Step time limit, if any.
    pub timeout_ms: Option<u64>,
}

/// Kernel isolation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// gVisor (runsc): the workload talks to a user-space kernel. The default.
    Gvisor,
    /// The host kernel (runc): weaker; must be requested explicitly.
    HostKernel,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Gvisor => "gvisor",
            Isolation::HostKernel => "host-kernel",
        })
    }
}

/// The containment profile. Every field but `isolation` is fixed: secure defaults are
/// not options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Containment {
    /// Kernel isolation.
    pub isolation: Isolation,
    /// User id the workload runs as (65534, nobody).
    pub run_as_user: u32,
    /// Group id the workload runs as.
    pub run_as_group: u32,
    /// Root filesystem mounted read-only.
    pub read_only_root_fs: bool,
    /// `no_new_privileges` set.
    pub no_new_privileges: bool,
    /// Linux capabilities kept (always empty: all dropped).
    pub capabilities: Vec<String>,
    /// Whether a service-account token is mounted (never).
    pub service_account_token: bool,
    /// Host paths mounted (always empty).
    pub host_mounts: Vec<String>,
    /// Workload network: none at all, or only the egress proxy.
    pub network: NetworkMode,
}

/// How the workload is attached to a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// No network interface but loopback.
    None,
    /// Only the egress proxy is reachable; it enforces the rules.
    ProxyOnly,
}

/// Egress rules for the workload, explicit and implicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressPolicy {
    /// Deny (no network) or allowlist.
    pub mode: EgressMode,
    /// Explicit allow rules, in spec order.
    pub rules: Vec<EgressRule>,
    /// Address ranges denied unless a rule names them by CIDR; metadata, loopback and
    /// link-local are denied always.
    pub implicit_denies: Vec<ImplicitDeny>,
    /// Loopback ranges on the Enclave host the operator opened with the unsafe test
    /// setting (`Policy::host_loopback`); a CIDR rule must still name them. Empty in
    /// every plan made under a production policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_loopback: Vec<IpNet>,
}

/// An explicit allow rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Stable id used in decisions and the audit: `allow[N]`.
    pub id: RuleRef,
    /// What the rule matches.
    pub target: RuleTarget,
    /// Allowed ports.
    pub ports: Vec<u16>,
}

/// What an allow rule matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleTarget {
    /// A DNS name or wildcard suffix.
    Host(HostPattern),
    /// An address range.
    Cidr(IpNet),
}

impl fmt::Display for RuleTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleTarget::Host(h) => write!(f, "{h}"),
            RuleTarget::Cidr(c) => write!(f, "{c}"),
        }
    }
}

/// A range denied unless named by an explicit CIDR rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImplicitDeny {
    /// The range.
    pub cidr: IpNet,
    /// Its class.
    pub class: AddressClass,
    /// Rules that name part of it (and so re-open that part). Never set for metadata.
    pub opened_by: Vec<RuleRef>,
}

/// A planned service binding (no secret value, only its name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingPlan {
    /// Binding name.
    pub name: String,
    /// Upstream host, canonical and always a domain name (the spec refuses a wildcard,
    /// and a plan read back refuses an address); the credential is sent nowhere else.
    #[serde(deserialize_with = "domain_host")]
    pub host: Host,
    /// Upstream HTTPS port.
    pub port: u16,
    /// Secret name.
    pub secret: String,
    /// Header the proxy sets.
    pub header: String,
    /// Header value template with `{secret}`.
    pub format: String,
    /// Allowed methods; `None` means all.
    pub methods: Option<Vec<HttpMethod>>,
    /// Allowed path patterns; `None` means all.
    pub paths: Option<Vec<PathPattern>>,
}

/// Reads a binding host: canonical (through [`Host`]'s own reading), and a domain name,
/// as the planner makes it. A plan from the wire naming an address is refused, so a
/// binding never matches an address-literal request.
fn domain_host<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Host, D::Error> {
    match Host::deserialize(deserializer)? {
        Host::Domain(name) => Ok(Host::Domain(name)),
        Host::Ip(ip) => Err(serde::de::Error::custom(format!("binding host {ip} is an address, not a domain name"))),
    }
}

#[cfg(test)]
mod binding_host_tests {
    use super::*;

    fn binding_json(host: &str) -> String {
        format!(
            r#"{{"name":"api","host":"{host}","port":443,"secret":"s","header":"Authorization","format":"{{secret}}","methods":null,"paths":null}}"#
        )
    }

    #[test]
    fn a_binding_host_reads_back_canonical_and_only_as_a_domain() {
        let read: BindingPlan = serde_json::from_str(&binding_json("API.Example.com.")).expect("a domain reads");
        assert_eq!(read.host, Host::Domain("api.example.com".to_owned()));
        for address in ["10.0.0.1", "[::1]", "[::ffff:127.0.0.1]"] {
            let err = serde_json::from_str::<BindingPlan>(&binding_json(address)).expect_err(address);
            assert!(err.to_string().contains("is an address, not a domain name"), "{address}: {err}");
        }
    }
}
