//! How a workload ended, inferred from what `wait` saw once its program was over: the
//! container's inspected state, the host's cgroup readings, whether Enclave ordered a
//! kill, and whether Docker sent an `oom` event. Pure: `wait` inspects, sleeps through
//! the grace and listens for the event; the rules are here, tested without a daemon.
//!
//! Under gVisor Docker's OOMKilled flag is not reliable: a memory breach kills the whole
//! sandbox, which exits with 137 as if killed by any SIGKILL. So a sandbox that died with
//! 137 that Enclave did not order, while memory sat at its limit, counts as an OOM kill
//! too. Memory at the limit alone is not enough: page cache fills it as well.

use std::time::Duration;

use bollard::models::ContainerState;
use enclave_core::ExitObservation;

use crate::usage::Usage;

/// How long `wait` waits for Docker's `oom` event when `needs_oom_grace` says so: the
/// event can trail `die` by tens of milliseconds.
pub(crate) const OOM_EVENT_GRACE: Duration = Duration::from_secs(1);

/// The exit code of a process killed by SIGKILL.
const SIGKILL_EXIT: i64 = 137;

/// How the workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct End {
    /// Whether it was killed for memory.
    pub(crate) oom_killed: bool,
    /// How its process ended.
    pub(crate) exit: ExitObservation,
}

/// Whether the sandbox itself is gone with 137 (it was SIGKILLed, by Enclave, by the
/// OOM killer, or by gVisor on a memory breach).
fn sandbox_killed(state: Option<&ContainerState>) -> bool {
    state.is_some_and(|s| s.running != Some(true) && s.exit_code == Some(SIGKILL_EXIT))
}

/// Whether Docker's flag or the kernel's cgroup counter recorded an OOM kill.
fn oom_recorded(state: Option<&ContainerState>, usage: &Usage) -> bool {
    state.and_then(|s| s.oom_killed).unwrap_or(false) || usage.oom_kills > 0
}

/// Whether `wait` should give Docker's `oom` event time to arrive before it reads it: the
/// sandbox died with 137 that Enclave did not order, and nothing recorded an OOM kill yet.
pub(crate) fn needs_oom_grace(state: Option<&ContainerState>, usage: &Usage, kill_ordered: bool) -> bool {
    sandbox_killed(state) && !oom_recorded(state, usage) && !kill_ordered
}

/// How the workload ended, from its container's state (`None` when it could not be
/// inspected), the cgroup readings, whether Enclave ordered a kill, whether an `oom`
/// event arrived, and the program's last exit code (`None` when it did not finish).
///
/// A kill, ordered or of the sandbox, is SIGKILL; otherwise the program's code, else the
/// container's, else 137. It is an OOM kill when Docker says so (flag or event), the
/// kernel counted one in the cgroup, or the sandbox died with 137 that Enclave did not
/// order while memory sat at the limit.
pub(crate) fn infer_end(
    state: Option<&ContainerState>,
    usage: &Usage,
    kill_ordered: bool,
    oom_event_seen: bool,
    program_exit: Option<i64>,
) -> End {
    let sandbox_killed = sandbox_killed(state);
    let exit = if kill_ordered || sandbox_killed {
        ExitObservation::Signaled { signal: 9 }
    } else {
        let code = program_exit.or_else(|| state.and_then(|s| s.exit_code)).unwrap_or(SIGKILL_EXIT);
        ExitObservation::Exited { code: i32::try_from(code).unwrap_or(i32::MAX) }
    };
    let oom_killed =
        oom_recorded(state, usage) || oom_event_seen || (sandbox_killed && !kill_ordered && usage.memory_at_limit());
    End { oom_killed, exit }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 256 << 20;
    const KILLED: ExitObservation = ExitObservation::Signaled { signal: 9 };

    fn exited(code: i32) -> ExitObservation {
        ExitObservation::Exited { code }
    }

    /// A stopped container with this exit code and OOMKilled flag.
    fn stopped(exit_code: i64, oom_flag: bool) -> Option<ContainerState> {
        Some(ContainerState {
            running: Some(false),
            exit_code: Some(exit_code),
            oom_killed: Some(oom_flag),
            ..Default::default()
        })
    }

    fn usage(memory_peak: u64, oom_kills: u64) -> Usage {
        Usage { memory_peak, memory_limit: LIMIT, oom_kills, cgroup_seen: true, ..Default::default() }
    }

    /// What `wait` sees.
    struct Seen {
        state: Option<ContainerState>,
        usage: Usage,
        kill_ordered: bool,
        oom_event: bool,
        program_exit: Option<i64>,
    }

    fn seen(state: Option<ContainerState>, usage: Usage) -> Seen {
        Seen { state, usage, kill_ordered: false, oom_event: false, program_exit: None }
    }

    fn check(name: &str, seen: Seen, grace: bool, oom_killed: bool, exit: ExitObservation) {
        let state = seen.state.as_ref();
        assert_eq!(needs_oom_grace(state, &seen.usage, seen.kill_ordered), grace, "{name}: grace");
        let end = infer_end(state, &seen.usage, seen.kill_ordered, seen.oom_event, seen.program_exit);
        assert_eq!(end, End { oom_killed, exit }, "{name}");
    }

    #[test]
    fn docker_oom_flag_is_an_oom_kill() {
        check("flag, 137", seen(stopped(137, true), usage(0, 0)), false, true, KILLED);
        check(
            "flag, program failed",
            Seen { program_exit: Some(1), ..seen(stopped(1, true), usage(0, 0)) },
            false,
            true,
            exited(1),
        );
    }

    #[test]
    fn a_cgroup_oom_kill_is_an_oom_kill() {
        check("oom_kill counted", seen(stopped(137, false), usage(0, 1)), false, true, KILLED);
    }

    #[test]
    fn an_oom_event_after_the_grace_is_an_oom_kill() {
        let late = Seen { oom_event: true, ..seen(stopped(137, false), usage(0, 0)) };
        check("event, not at limit", late, true, true, KILLED);
    }

    #[test]
    fn sandbox_137_at_the_memory_limit_without_a_kill_is_an_oom_kill() {
        // runsc: no flag, no counter, no event yet; memory sat at the limit.
        check("137 at limit", seen(stopped(137, false), usage(LIMIT, 0)), true, true, KILLED);
        check("137 within a page of it", seen(stopped(137, false), usage(LIMIT - 4096, 0)), true, true, KILLED);
    }

    #[test]
    fn sandbox_137_with_a_kill_ordered_is_not_inferred_as_oom() {
        let ordered = Seen { kill_ordered: true, ..seen(stopped(137, false), usage(LIMIT, 0)) };
        check("ordered kill at limit", ordered, false, false, KILLED);
        let running = Seen {
            kill_ordered: true,
            ..seen(Some(ContainerState { running: Some(true), ..Default::default() }), usage(0, 0))
        };
        check("ordered kill, still running", running, false, false, KILLED);
    }

    #[test]
    fn an_ordered_kill_still_reports_an_oom_docker_or_the_kernel_recorded() {
        let flagged = Seen { kill_ordered: true, ..seen(stopped(137, true), usage(0, 0)) };
        check("ordered kill, flag", flagged, false, true, KILLED);
        let counted = Seen { kill_ordered: true, ..seen(stopped(137, false), usage(LIMIT, 1)) };
        check("ordered kill, oom_kill counted", counted, false, true, KILLED);
    }

    #[test]
    fn sandbox_137_below_the_memory_limit_is_a_kill_not_oom() {
        // Page cache may fill the limit too, but here memory never reached it.
        check("137 below limit", seen(stopped(137, false), usage(LIMIT / 2, 0)), true, false, KILLED);
        let no_cgroup = Usage::default();
        check("137, no cgroup readings", seen(stopped(137, false), no_cgroup), true, false, KILLED);
    }

    #[test]
    fn a_normal_exit_reports_the_program_code() {
        let ok = Seen { program_exit: Some(0), ..seen(stopped(0, false), usage(LIMIT, 0)) };
        check("exit 0 at limit", ok, false, false, exited(0));
        let failed = Seen { program_exit: Some(3), ..seen(stopped(0, false), usage(0, 0)) };
        check("program code over container's", failed, false, false, exited(3));
        // The program exited 137 itself while the sandbox runs on: not the sandbox's kill.
        let running = Some(ContainerState { running: Some(true), exit_code: Some(137), ..Default::default() });
        let own_137 = Seen { program_exit: Some(137), ..seen(running, usage(LIMIT, 0)) };
        check("program's own 137", own_137, false, false, exited(137));
    }

    #[test]
    fn exit_code_falls_back_to_the_container_then_137() {
        check("container's code", seen(stopped(5, false), usage(0, 0)), false, false, exited(5));
        check("no state at all", seen(None, usage(LIMIT, 0)), false, false, exited(137));
        let no_code = Some(ContainerState { running: Some(false), ..Default::default() });
        check("state without a code", seen(no_code, usage(0, 0)), false, false, exited(137));
        // `running` unknown counts as not running.
        let unknown = Some(ContainerState { exit_code: Some(137), ..Default::default() });
        check("running unknown, 137", seen(unknown, usage(LIMIT, 0)), true, true, KILLED);
        let huge = Seen { program_exit: Some(i64::from(i32::MAX) + 1), ..seen(stopped(0, false), usage(0, 0)) };
        check("code beyond i32", huge, false, false, exited(i32::MAX));
    }
}
