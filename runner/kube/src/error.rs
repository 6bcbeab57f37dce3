//! Errors of the Kubernetes backend.

use enclave_core::SessionId;

/// What went wrong. Messages are safe to show a user (no secret, no token).
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The session id does not make valid object names.
    #[error(
        "session id {session} is too long for Kubernetes object names (at most {max} characters, ending in a letter or digit)"
    )]
    SessionId {
        /// The id.
        session: SessionId,
        /// The longest accepted.
        max: usize,
    },
    /// The plan reaches the network (allowlist, clone or bindings) and no egress proxy
    /// is configured.
    #[error("this plan needs the egress proxy (allowlist egress, a clone or bindings) and none is configured")]
    NeedsProxy,
    /// The clone credential is not in the secret store.
    #[error("the clone credential {name:?} is not in the secret store")]
    MissingCredential {
        /// The secret's name.
        name: String,
    },
    /// A manifest could not be rendered as YAML.
    #[error("manifest could not be rendered: {detail}")]
    Render {
        /// What the serializer said.
        detail: String,
    },
    /// An API call failed (after retries, where retrying made sense).
    #[error("kubernetes {operation} {object} failed")]
    Api {
        /// What was being done (`create`, `delete`, `list`, ...).
        operation: &'static str,
        /// `kind/name` or the kind listed.
        object: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

impl From<KubeError> for enclave_core::BackendError {
    fn from(e: KubeError) -> Self {
        match e {
            KubeError::SessionId { .. } | KubeError::NeedsProxy | KubeError::MissingCredential { .. } => {
                enclave_core::BackendError::Unsupported(e.to_string())
            }
            KubeError::Api { operation, ref object, ref source } => {
                let message = format!("kubernetes {operation} {object} failed: {}", short(source));
                enclave_core::BackendError::Infra { message, source: Some(Box::new(e)) }
            }
            KubeError::Render { .. } => {
                enclave_core::BackendError::Infra { message: e.to_string(), source: Some(Box::new(e)) }
            }
        }
    }
}

/// The API's reason for a failure, without request detail.
fn short(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        _ => "the API server could not be reached".to_owned(),
    }
}
