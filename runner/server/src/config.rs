//! Server configuration: a TOML file with every field optional, then environment
//! overrides applied by the caller (`enclave serve`).

use std::net::SocketAddr;
use std::path::PathBuf;

use enclave_core::Policy;
use enclave_store::TenantLimits;
use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default: exposing the API is a deliberate act.
    pub listen: SocketAddr,
    /// Backend sessions run on: `sim`, `docker` or `kube`.
    pub backend: String,
    /// How the simulator paces modelled time: `virtual` (instant) or `real-time`.
    pub sim_pace: SimPace,
    /// On Docker and kube, the owner label of this server's resources. At start the
    /// server reaps every resource of its scope that no live session owns, so two servers
    /// sharing a daemon or a namespace need different scopes. (`docker_scope`, its
    /// earlier name, is still read.)
    #[serde(alias = "docker_scope")]
    pub scope: String,
    /// Directory of the SQLite database (`enclave.db`).
    pub data_dir: PathBuf,
    /// File holding the secrets key (64 hex digits or base64 of 32 bytes). The
    /// `ENCLAVE_SECRET_KEY` environment variable, when set, is used instead.
    pub secret_key_file: Option<PathBuf>,
    /// File holding the admin token. The `ENCLAVE_ADMIN_TOKEN` environment variable,
    /// when set, is used instead. Without either, admin endpoints are disabled.
    pub admin_token_file: Option<PathBuf>,
    /// Request and storage limits.
    pub limits: Limits,
    /// Ceilings on what a spec may ask for.
    pub policy: PolicyLimits,
    /// The GitHub App (`[github]`; each key also `ENCLAVE_GITHUB_<KEY>`). Webhooks are
    /// answered 503 until `app_id` and `webhook_secret_file` are set.
    pub github: enclave_github::GithubConfig,
}

/// How the simulator paces modelled time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimPace {
    /// Modelled time passes instantly.
    Virtual,
    /// Modelled time passes at wall-clock pace, so clients can watch and cancel.
    RealTime,
}

/// Request and storage limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted, in bytes (a spec is at most 256 KiB).
    pub max_body_bytes: usize,
    /// Requests per second per tenant (sustained).
    pub requests_per_second: u32,
    /// Burst of requests per tenant above the sustained rate.
    pub request_burst: u32,
    /// Ceilings given to a new tenant.
    pub tenant_defaults: TenantLimits,
    /// Bytes of events (log lines included) kept per session.
    pub event_bytes_per_session: u64,
    /// Largest page of sessions in a list.
    pub max_page: u32,
    /// Most event streams (SSE) a tenant may hold open at once.
    pub max_streams_per_tenant: u32,
}

/// Ceilings on session quotas (unset: the built-in policy's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct PolicyLimits {
    /// Longest deadline, in milliseconds.
    pub max_deadline_ms: Option<u64>,
    /// Most memory, in bytes.
    pub max_memory_bytes: Option<u64>,
    /// Most CPU, in millicores.
    pub max_cpu_millis: Option<u64>,
    /// Most processes.
    pub max_pids: Option<u32>,
    /// Most disk, in bytes.
    pub max_disk_bytes: Option<u64>,
    /// Most output, in bytes.
    pub max_log_bytes: Option<u64>,
    /// Private and other special ranges (not metadata, loopback or link-local) that a
    /// spec's `cidr` rules may name; a rule naming any other special range is refused.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// UNSAFE, for tests and local development only: loopback ranges on this host that
    /// sessions may reach where a `cidr` rule names them (and a clone may reach). Every
    /// plan says so in its warnings.
    pub unsafe_host_loopback: Vec<ipnet::IpNet>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            requests_per_second: 50,
            request_burst: 100,
            tenant_defaults: TenantLimits::default(),
            event_bytes_per_session: 16 << 20,
            max_page: 100,
            max_streams_per_tenant: 64,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            backend: "sim".into(),
            sim_pace: SimPace::Virtual,
            scope: "server".into(),
            data_dir: PathBuf::from(".enclave/server"),
            secret_key_file: None,
            admin_token_file: None,
            limits: Limits::default(),
            policy: PolicyLimits::default(),
            github: enclave_github::GithubConfig::default(),
        }
    }
}

impl PolicyLimits {
    /// The planning policy: the built-in one with these ceilings (a default above its
    /// ceiling is lowered to it). Weaker isolation is never permitted from here.
    pub fn policy(&self) -> Policy {
        let mut policy = Policy::default();
        let max = &mut policy.max;
        let defaults = policy.defaults;
        if let Some(v) = self.max_deadline_ms {
            max.deadline_ms = v;
            policy.defaults.deadline_ms = defaults.deadline_ms.min(v);
        }
        if let Some(v) = self.max_memory_bytes {
            max.memory_bytes = v;
            policy.defaults.memory_bytes = defaults.memory_bytes.min(v);
        }
        if let Some(v) = self.max_cpu_millis {
            max.cpu_millis = v;
            policy.defaults.cpu_millis = defaults.cpu_millis.min(v);
        }
        if let Some(v) = self.max_pids {
            max.pids = v;
            policy.defaults.pids = defaults.pids.min(v);
        }
        if let Some(v) = self.max_disk_bytes {
            max.disk_bytes = v;
            policy.defaults.disk_bytes = defaults.disk_bytes.min(v);
        }
        if let Some(v) = self.max_log_bytes {
            max.log_bytes = v;
            policy.defaults.log_bytes = defaults.log_bytes.min(v);
        }
        policy.allow_networks.clone_from(&self.allow_networks);
        policy.host_loopback.clone_from(&self.unsafe_host_loopback);
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_sets_what_it_says() {
        let text = include_str!("../../../examples/server/enclave.toml");
        let config: ServerConfig = toml::from_str(text).expect("examples/server/enclave.toml parses");
        assert_eq!(config.backend, "sim");
        assert_eq!(config.limits.tenant_defaults.max_concurrent, 8);
        assert_eq!(config.policy.policy().max.deadline_ms, 3_600_000);
        assert_eq!(config.policy.policy().max.memory_bytes, 4 << 30);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<ServerConfig>("listen_adress = \"0.0.0.0:1\"").is_err());
        assert!(toml::from_str::<ServerConfig>("[limits]\nmax_bodybytes = 1").is_err());
    }

    #[test]
    fn a_ceiling_below_a_default_lowers_the_default() {
        let limits = PolicyLimits { max_deadline_ms: Some(60_000), ..PolicyLimits::default() };
        let policy = limits.policy();
        assert_eq!(policy.max.deadline_ms, 60_000);
        assert_eq!(policy.defaults.deadline_ms, 60_000);
        assert!(!policy.permit_weaker_isolation);
    }
}
