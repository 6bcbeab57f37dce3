//! Errors of the Docker backend.

/// What went wrong talking to Docker. Messages are safe to show a user.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The daemon could not be reached.
    #[error("cannot reach the Docker daemon (is dockerd running? try scripts/setup-docker.sh)")]
    Unreachable(#[source] bollard::errors::Error),
    /// The daemon speaks an API older than the backend needs.
    #[error("the Docker daemon speaks API {found}; Enclave needs {needed} or newer")]
    TooOld {
        /// The daemon's API version.
        found: String,
        /// The minimum supported.
        needed: &'static str,
    },
    /// A Docker call failed.
    #[error("docker {operation} failed")]
    Call {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: bollard::errors::Error,
    },
    /// Host set-up for a session (network, firewall, proxy) failed.
    #[error("session set-up failed: {0}")]
    Setup(String),
    /// The session's egress proxy could not be set up (its resolver or TLS settings).
    #[error("session set-up failed: {0}")]
    Egress(#[from] enclave_egress::EgressError),
}

impl DockerError {
    /// Wraps a failed call.
    pub fn call(operation: &'static str) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        move |source| DockerError::Call { operation, source }
    }
}

impl From<DockerError> for enclave_core::BackendError {
    fn from(e: DockerError) -> Self {
        let message = match &e {
            DockerError::Call { operation, source } => format!("docker {operation} failed: {source}"),
            other => other.to_string(),
        };
        enclave_core::BackendError::Infra { message, source: Some(Box::new(e)) }
    }
}
