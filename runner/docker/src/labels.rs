//! Labels on everything the backend creates, so teardown and the orphan reaper find it.

use std::collections::HashMap;

use enclave_core::SessionId;

use crate::DockerConfig;

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
/// That process's start time (clock ticks since boot, `/proc/<pid>/stat` field 22): a
/// pid reused by another process does not make an abandoned session look live.
pub const OWNER_START: &str = "dev.enclave.owner-start";

/// The labels for one resource of a session.
pub(crate) fn for_session(session: &SessionId, role: &str, config: &DockerConfig) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (MANAGED.to_owned(), "true".to_owned()),
        (SCOPE.to_owned(), config.scope.clone()),
        (OWNER_PID.to_owned(), config.owner_pid.to_string()),
        (SESSION.to_owned(), session.to_string()),
        (ROLE.to_owned(), role.to_owned()),
    ]);
    if let Some(start) = config.owner_start {
        labels.insert(OWNER_START.to_owned(), start.to_string());
    }
    labels
}

/// A process's start time, `None` when there is no such process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process a resource's labels name as its owner still runs (the same
/// process: pid and start time, where the start time was recorded).
pub(crate) fn owner_alive(labels: &HashMap<String, String>) -> bool {
    let Some(pid) = labels.get(OWNER_PID).and_then(|p| p.parse::<u32>().ok()) else { return false };
    let Some(start) = process_start(pid) else { return false };
    labels.get(OWNER_START).and_then(|s| s.parse::<u64>().ok()).is_none_or(|recorded| recorded == start)
}

/// Whether the labels name `config`'s own process as the owner.
pub(crate) fn owned_by(labels: &HashMap<String, String>, config: &DockerConfig) -> bool {
    labels.get(OWNER_PID).and_then(|p| p.parse::<u32>().ok()) == Some(config.owner_pid)
        && labels.get(OWNER_START).and_then(|s| s.parse::<u64>().ok()) == config.owner_start
}

/// A label filter matching every resource of one session.
pub(crate) fn session_filter(session: &SessionId) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{SESSION}={session}")])])
}

/// A label filter matching every resource this Enclave instance (scope) manages.
pub(crate) fn managed_filter(scope: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{MANAGED}=true"), format!("{SCOPE}={scope}")])])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_is_not_the_owner() {
        let me = std::process::id();
        let start = process_start(me).unwrap();
        let labels = |start: u64| {
            HashMap::from([(OWNER_PID.to_owned(), me.to_string()), (OWNER_START.to_owned(), start.to_string())])
        };
        assert!(owner_alive(&labels(start)));
        assert!(!owner_alive(&labels(start + 1)), "same pid, another process");
        assert!(!owner_alive(&HashMap::from([(OWNER_PID.to_owned(), "999999999".to_owned())])));
    }
}
