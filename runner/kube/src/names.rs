//! Names of a session's objects, derived from its id.

use enclave_core::SessionId;

/// Longest session id the backend accepts: Job names, and the `job-name` label on
/// their pods, must fit 63 characters.
pub(crate) const MAX_SESSION_ID: usize = 50;

/// Names of a session's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// The Job (and, as a prefix, its pod).
    pub job: String,
    /// The per-session NetworkPolicy.
    pub network_policy: String,
    /// The per-session Secret holding the clone credential.
    pub clone_secret: String,
}

impl Names {
    /// Names derived from the session id (lowercase letters, digits and `-`).
    pub(crate) fn of(session: &SessionId) -> Self {
        Self {
            job: format!("enclave-{session}"),
            network_policy: format!("enclave-{session}"),
            clone_secret: format!("enclave-{session}-git"),
        }
    }
}

/// Whether a session id makes valid object names and label values: short enough, and
/// ending in a letter or digit (DNS-1123).
pub(crate) fn fits(session: &SessionId) -> bool {
    let id = session.as_str();
    id.len() <= MAX_SESSION_ID && id.ends_with(|c: char| c.is_ascii_alphanumeric())
}
