//! Labels on everything the backend creates, so teardown and the orphan reaper find it.

use std::collections::HashMap;

use enclave_core::SessionId;

/// Marks a resource as Enclave's.
pub const MANAGED: &str = "dev.enclave.managed";
/// The session a resource belongs to.
pub const SESSION: &str = "dev.enclave.session";
/// What the resource is for (`workload`, `clone`, `workspace`, `tmp`).
pub const ROLE: &str = "dev.enclave.role";
/// Which Enclave instance owns the resource: the orphan reaper only touches its own, so
/// several servers (or parallel test runs) can share one daemon.
pub const SCOPE: &str = "dev.enclave.scope";
/// The process id of the Enclave process that runs the session, so a later process can
/// tell a live session from one abandoned by a process that died.
pub const OWNER_PID: &str = "dev.enclave.owner-pid";

/// The labels for one resource of a session.
pub(crate) fn for_session(session: &SessionId, role: &str, scope: &str, owner_pid: u32) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED.to_owned(), "true".to_owned()),
        (SCOPE.to_owned(), scope.to_owned()),
        (OWNER_PID.to_owned(), owner_pid.to_string()),
        (SESSION.to_owned(), session.to_string()),
        (ROLE.to_owned(), role.to_owned()),
    ])
}

/// A label filter matching every resource of one session.
pub(crate) fn session_filter(session: &SessionId) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{SESSION}={session}")])])
}

/// A label filter matching every resource this Enclave instance (scope) manages.
pub(crate) fn managed_filter(scope: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{MANAGED}=true"), format!("{SCOPE}={scope}")])])
}
