//! Labels on everything the backend creates, so teardown and the orphan reaper find it
//! and the session's NetworkPolicy selects exactly its pod.

use std::collections::BTreeMap;

use enclave_core::SessionId;

/// Marks an object as Enclave's.
pub(crate) const MANAGED: &str = "enclave.dev/managed";
/// The session an object belongs to.
pub(crate) const SESSION: &str = "enclave.dev/session";
/// Which Enclave instance owns the object.
pub(crate) const SCOPE: &str = "enclave.dev/scope";
/// What the object is for (`session`, `clone-credential`, `network-policy`).
pub(crate) const ROLE: &str = "enclave.dev/role";

/// The labels of one object of a session. The standard `app.kubernetes.io/*` labels
/// come first in meaning; the `enclave.dev/*` ones are what selectors use.
pub(crate) fn for_session(session: &SessionId, scope: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "enclave-session".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), session.to_string()),
        ("app.kubernetes.io/component".to_owned(), role.to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "enclave".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "enclave".to_owned()),
        (MANAGED.to_owned(), "true".to_owned()),
        (SCOPE.to_owned(), scope.to_owned()),
        (SESSION.to_owned(), session.to_string()),
        (ROLE.to_owned(), role.to_owned()),
    ])
}

/// The labels that select a session's pod (and nothing else).
pub(crate) fn pod_selector(session: &SessionId) -> BTreeMap<String, String> {
    BTreeMap::from([(SESSION.to_owned(), session.to_string()), (ROLE.to_owned(), "session".to_owned())])
}

/// A label selector string matching every object of one session.
pub(crate) fn session_selector(session: &SessionId) -> String {
    format!("{MANAGED}=true,{SESSION}={session}")
}

/// A label selector string matching every object this instance manages.
pub(crate) fn scope_selector(scope: &str) -> String {
    format!("{MANAGED}=true,{SCOPE}={scope}")
}
