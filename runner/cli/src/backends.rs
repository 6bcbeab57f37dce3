//! The one place a backend is built, for `enclave run` and `enclave serve` alike: which
//! backend, its operator settings (the Docker flags), the scope its reaper owns, and the
//! relay that hands plans to the cluster's egress proxy. `enclave doctor` connects to
//! Docker through [`connect_docker`] too.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use enclave_core::{Backend, SessionId};
use enclave_docker::{DockerBackend, DockerConfig, DockerError};
use enclave_egress::RelayRegistry;
use enclave_kube::{KubeBackend, KubeConfig};
use enclave_sim::SimBackend;

/// Where sessions run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendKind {
    /// The simulator: models behaviour, never executes code.
    #[default]
    Sim,
    /// Docker with gVisor (runsc) on this host: executes the workload, contained.
    Docker,
    /// A Kubernetes cluster set up with deploy/ (a Job per session under the gVisor
    /// RuntimeClass), from the in-cluster or kubeconfig configuration.
    Kube,
}

impl BackendKind {
    /// The kind a configuration file names (`sim`, `docker` or `kube`).
    pub(crate) fn from_name(name: &str) -> Result<Self, BackendSetupError> {
        <Self as ValueEnum>::from_str(name, false).map_err(|_| BackendSetupError::UnknownBackend(name.to_owned()))
    }

    /// The name the command line and configuration use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Docker => "docker",
            Self::Kube => "kube",
        }
    }
}

/// Operator settings of the Docker backend, the same for `run` and `serve`.
#[derive(Debug, Default, Args)]
pub(crate) struct DockerArgs {
    /// Docker: a private network (CIDR) that the clone step may reach when the
    /// repository host resolves into it (an internal git server). Never opens it to
    /// the workload, and never opens the metadata address. Repeatable.
    #[arg(
        long = "trust-clone-network",
        value_name = "CIDR",
        env = "ENCLAVE_TRUST_CLONE_NETWORKS",
        value_delimiter = ','
    )]
    trusted_clone_networks: Vec<ipnet::IpNet>,
    /// Docker: resolve NAME to IP in the egress proxy without DNS (an internal host).
    /// Repeatable.
    #[arg(long = "static-host", value_name = "NAME=IP")]
    static_hosts: Vec<String>,
    /// Docker: extra CA certificates (PEM file) trusted by the clone step and by
    /// binding upstreams, for an internal git server or API.
    #[arg(long, value_name = "FILE", env = "ENCLAVE_EXTRA_CA")]
    extra_ca: Option<PathBuf>,
}

impl DockerArgs {
    /// The Docker backend's settings these flags give, checked before anything is made.
    pub(crate) fn config(&self) -> Result<DockerConfig, BackendSetupError> {
        let mut config =
            DockerConfig { trusted_clone_networks: self.trusted_clone_networks.clone(), ..Default::default() };
        for pair in &self.static_hosts {
            let setting = |problem: String| BackendSetupError::Setting(format!("--static-host {pair:?}: {problem}"));
            let (name, ip) = pair.split_once('=').ok_or_else(|| setting("expected NAME=IP".to_owned()))?;
            let ip: std::net::IpAddr = ip.parse().map_err(|e| setting(format!("{e}")))?;
            let name = match enclave_spec::canonical_host(name) {
                Ok(enclave_spec::Host::Domain(name)) => name,
                _ => return Err(setting(format!("{name:?} is not a host name"))),
            };
            config.static_hosts.entry(name).or_default().push(ip);
        }
        if let Some(path) = &self.extra_ca {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| BackendSetupError::Setting(format!("--extra-ca {}: {e}", path.display())))?;
            config.extra_ca_pem = Some(pem);
        }
        Ok(config)
    }
}

/// Everything a backend is built from.
#[derive(Default)]
pub(crate) struct BackendSetup {
    pub(crate) kind: BackendKind,
    /// The owner label of the backend's resources (Docker and kube); its reaper only
    /// touches resources of its own scope. `None` keeps the backend's default.
    pub(crate) scope: Option<String>,
    /// The Docker backend's operator settings (its `scope` is set from `scope`).
    pub(crate) docker: DockerConfig,
    /// On the simulator, modelled time passes at wall-clock pace.
    pub(crate) sim_real_time: bool,
    /// On kube, the registry the cluster's egress proxy reads plans from. Without it,
    /// sessions that need the proxy are refused.
    pub(crate) relay: Option<Arc<RelayRegistry>>,
    /// On Docker, remove first the sessions whose owning process is gone (`enclave
    /// run`). A server reconciles its own sessions instead.
    pub(crate) reap_abandoned: bool,
}

/// A built backend, with what building it found.
pub(crate) struct Built {
    pub(crate) backend: Arc<dyn Backend>,
    /// Abandoned sessions removed before this one (`reap_abandoned`).
    pub(crate) reaped: Vec<SessionId>,
    /// What went wrong without stopping the build.
    pub(crate) warnings: Vec<String>,
}

/// Why a backend could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendSetupError {
    /// An operator setting is malformed (a usage error).
    #[error("{0}")]
    Setting(String),
    /// A configuration names a backend there is none of.
    #[error("unknown backend {0:?}: use sim, docker or kube")]
    UnknownBackend(String),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Kube(#[from] enclave_core::BackendError),
}

impl BackendSetupError {
    /// Whether the error is in what the operator wrote, not in what was reached.
    pub(crate) fn is_usage(&self) -> bool {
        matches!(self, Self::Setting(_) | Self::UnknownBackend(_))
    }
}

/// Connects to the Docker daemon with `config` (its gVisor runtime is checked there).
pub(crate) async fn connect_docker(config: DockerConfig) -> Result<DockerBackend, BackendSetupError> {
    Ok(DockerBackend::connect(config).await?)
}

/// Builds the backend `setup` names.
pub(crate) async fn build(setup: BackendSetup) -> Result<Built, BackendSetupError> {
    let mut reaped = Vec::new();
    let mut warnings = Vec::new();
    let backend: Arc<dyn Backend> = match setup.kind {
        BackendKind::Sim if setup.sim_real_time => Arc::new(SimBackend::real_time()),
        BackendKind::Sim => Arc::new(SimBackend::new()),
        BackendKind::Docker => {
            let mut config = setup.docker;
            if let Some(scope) = setup.scope {
                config.scope = scope;
            }
            let backend = connect_docker(config).await?;
            if setup.reap_abandoned {
                match backend.reap_abandoned().await {
                    Ok(ids) => reaped = ids,
                    Err(e) => warnings.push(format!("could not reap abandoned sessions: {e}")),
                }
            }
            Arc::new(backend)
        }
        // The cluster from the ambient configuration (in-cluster, or KUBECONFIG /
        // ~/.kube/config), with the objects of deploy/. Orphans are left to the server:
        // a CLI process cannot tell another process's live session from an abandoned one.
        BackendKind::Kube => {
            let mut config = KubeConfig::default();
            if let Some(scope) = setup.scope {
                config.scope = scope;
            }
            let backend = KubeBackend::from_environment(config).await?;
            match setup.relay {
                Some(relay) => Arc::new(backend.with_relay(relay)),
                None => Arc::new(backend),
            }
        }
    };
    Ok(Built { backend, reaped, warnings })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_configured_name_is_a_kind_or_an_error_naming_the_choices() {
        assert_eq!(BackendKind::from_name("kube").unwrap(), BackendKind::Kube);
        assert_eq!(BackendKind::from_name("sim").unwrap(), BackendKind::Sim);
        for kind in [BackendKind::Sim, BackendKind::Docker, BackendKind::Kube] {
            assert_eq!(BackendKind::from_name(kind.name()).unwrap(), kind);
        }
        let e = BackendKind::from_name("Docker ").unwrap_err();
        assert_eq!(e.to_string(), "unknown backend \"Docker \": use sim, docker or kube");
        assert!(e.is_usage());
    }

    #[test]
    fn docker_flags_are_checked_before_anything_is_made() {
        let args = DockerArgs { static_hosts: vec!["git.internal=10.0.0.7".into()], ..Default::default() };
        let config = args.config().unwrap();
        assert_eq!(config.static_hosts["git.internal"], vec!["10.0.0.7".parse::<std::net::IpAddr>().unwrap()]);
        for (pair, problem) in [
            ("git.internal", "expected NAME=IP"),
            ("git.internal=ten", "invalid IP address syntax"),
            ("10.0.0.1=10.0.0.7", "is not a host name"),
        ] {
            let args = DockerArgs { static_hosts: vec![pair.into()], ..Default::default() };
            let e = args.config().unwrap_err();
            assert!(e.is_usage() && e.to_string().contains(problem), "{pair}: {e}");
        }
    }

    #[tokio::test]
    async fn the_simulator_is_built_without_a_daemon() {
        let built = build(BackendSetup::default()).await.unwrap();
        assert_eq!(built.backend.name(), "sim");
        assert!(!built.backend.capabilities().executes_code);
        assert!(built.reaped.is_empty() && built.warnings.is_empty());
    }
}
