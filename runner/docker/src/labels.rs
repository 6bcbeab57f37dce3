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
/// Which `/proc` the owner's pid and start time were read from (the device number of
/// that procfs instance): only a process that reads the same `/proc` can tell whether the
/// owner lives. A process in another PID namespace with its own `/proc` (a container
/// given the Docker socket) numbers its pids otherwise.
pub const OWNER_PROC: &str = "dev.enclave.owner-proc";

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
    if let Some(proc_id) = proc_identity() {
        labels.insert(OWNER_PROC.to_owned(), proc_id);
    }
    labels
}

/// This process's pid as `/proc` numbers it (`/proc/self`), which is what every reader of
/// the labels looks up; `getpid()` differs from it in a PID namespace that kept the
/// host's `/proc`.
pub fn own_pid() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(std::process::id)
}

/// The identity of the `/proc` this process reads: its device number.
pub(crate) fn proc_identity() -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc").ok().map(|m| format!("dev:{}", m.dev()))
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
    // Numbered in another `/proc`: nothing here can tell, so it counts as live (its
    // containers still end at their deadline on their own).
    if labels.get(OWNER_PROC).is_some_and(|recorded| Some(recorded) != proc_identity().as_ref()) {
        return true;
    }
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

    #[test]
    fn an_owner_numbered_in_another_proc_counts_as_live() {
        let dead = |proc_id: &str| {
            HashMap::from([(OWNER_PID.to_owned(), "999999999".to_owned()), (OWNER_PROC.to_owned(), proc_id.to_owned())])
        };
        assert!(owner_alive(&dead("dev:1")), "another /proc's pid 999999999 may live");
        assert!(!owner_alive(&dead(&proc_identity().unwrap())), "this /proc's pid 999999999 does not");
        assert_eq!(own_pid(), std::process::id(), "no PID namespace here");
    }
}
