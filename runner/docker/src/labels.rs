//! Labels on everything the backend creates, so teardown and the orphan reaper find it.

use std::collections::HashMap;

use enclave_core::SessionId;

/// Marks a resource as Enclave's.
pub const MANAGED: &str = "dev.enclave.managed";
/// The session a resource belongs to.
pub const SESSION: &str = "dev.enclave.session";
/// What the resource is for (`workload`, `clone`, `workspace`, `tmp`).
pub const ROLE: &str = "dev.enclave.role";

/// The labels for one resource of a session.
pub(crate) fn for_session(session: &SessionId, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED.to_owned(), "true".to_owned()),
        (SESSION.to_owned(), session.to_string()),
        (ROLE.to_owned(), role.to_owned()),
    ])
}

/// A label filter matching every resource of one session.
pub(crate) fn session_filter(session: &SessionId) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{SESSION}={session}")])])
}

/// A label filter matching every resource Enclave manages.
pub(crate) fn managed_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{MANAGED}=true")])])
}
