//! What a pod's and a Job's status say, as facts for the orchestrator: clone progress,
//! workload start, and how the run ended (exit code, OOM kill, ephemeral-storage
//! eviction, a lost pod). Pure functions over API objects, unit-tested without a cluster.

use enclave_core::{ExitObservation, Observation};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::pod::{CLONE_CONTAINER, WORKLOAD_CONTAINER};

/// How the clone init container stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloneState {
    /// It has started (running or already ended).
    Started,
    /// It ended.
    Finished {
        /// Exit code 0.
        ok: bool,
        /// Exit code and the kubelet's reason (never the container's output).
        detail: String,
        /// Its exit code.
        code: i32,
    },
}

/// Facts read from one pod object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PodFacts {
    /// Clone progress, when the pod has a clone container that has started.
    pub clone: Option<CloneState>,
    /// The workload container has started (running or ended).
    pub workload_started: bool,
    /// How the run ended, once it has.
    pub ended: Option<Observation>,
}

/// Waiting reasons that never resolve on their own: the session cannot start.
const STUCK_REASONS: [&str; 4] = ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"];

/// Reads the facts of a session pod.
pub(crate) fn observe_pod(pod: &Pod) -> PodFacts {
    let mut facts = PodFacts::default();
    let Some(status) = &pod.status else { return facts };
    let find = |list: &Option<Vec<ContainerStatus>>, name: &str| {
        list.as_ref().and_then(|l| l.iter().find(|c| c.name == name)).cloned()
    };
    if let Some(clone) = find(&status.init_container_statuses, CLONE_CONTAINER) {
        let state = clone.state.unwrap_or_default();
        if let Some(done) = state.terminated {
            let reason = done.reason.unwrap_or_default();
            facts.clone = Some(CloneState::Finished {
                ok: done.exit_code == 0,
                detail: format!("clone exited {} {reason}", done.exit_code).trim_end().to_owned(),
                code: done.exit_code,
            });
            if done.exit_code != 0 {
                facts.ended = Some(Observation::from_exit(ExitObservation::Exited { code: done.exit_code }));
                if reason == "OOMKilled" {
                    facts.ended = Some(oom());
                }
            }
        } else if state.running.is_some() {
            facts.clone = Some(CloneState::Started);
        } else if let Some(stuck) = state.waiting.and_then(|w| stuck(w.reason.as_deref(), CLONE_CONTAINER)) {
            facts.ended = Some(stuck);
        }
    }
    let workload = find(&status.container_statuses, WORKLOAD_CONTAINER);
    if let Some(state) = workload.and_then(|w| w.state) {
        if let Some(done) = state.terminated {
            facts.workload_started = true;
            facts.ended = Some(if done.reason.as_deref() == Some("OOMKilled") {
                oom()
            } else {
                match done.signal {
                    Some(signal) if signal > 0 => Observation::from_exit(ExitObservation::Signaled { signal }),
                    _ => Observation::from_exit(ExitObservation::Exited { code: done.exit_code }),
                }
            });
        } else if state.running.is_some() {
            facts.workload_started = true;
        } else if let Some(stuck) = state.waiting.and_then(|w| stuck(w.reason.as_deref(), WORKLOAD_CONTAINER)) {
            facts.ended = Some(stuck);
        }
    }
    if status.phase.as_deref() == Some("Failed") {
        let reason = status.reason.clone().unwrap_or_default();
        let message = status.message.clone().unwrap_or_default();
        if reason == "Evicted" {
            // The kubelet evicts a pod whose emptyDir passes its sizeLimit, or whose
            // ephemeral storage passes the containers' limits; other evictions (node
            // pressure) are not the workload's doing.
            facts.ended = Some(if is_storage_eviction(&message) {
                Observation { disk_full: true, ..Observation::from_exit(ExitObservation::Signaled { signal: 9 }) }
            } else {
                Observation::from_exit(ExitObservation::Lost { detail: format!("pod evicted: {message}") })
            });
        } else if facts.ended.is_none() {
            let detail = format!("pod failed: {reason} {message}").trim_end().to_owned();
            facts.ended = Some(Observation::from_exit(ExitObservation::Lost { detail }));
        }
    }
    facts
}

fn oom() -> Observation {
    Observation { oom_killed: true, ..Observation::from_exit(ExitObservation::Signaled { signal: 9 }) }
}

fn stuck(reason: Option<&str>, container: &str) -> Option<Observation> {
    let reason = reason.filter(|r| STUCK_REASONS.contains(r))?;
    Some(Observation::from_exit(ExitObservation::Lost {
        detail: format!("container {container} cannot start: {reason}"),
    }))
}

/// Whether an eviction message is about local storage (emptyDir size limits or the
/// ephemeral-storage limit), as the kubelet words it.
fn is_storage_eviction(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("ephemeral") || m.contains("emptydir") || m.contains("local storage")
}

/// One finished step as the step driver reported it in the workload's termination
/// message. The workload can write that file too, so these are the workload's own
/// account: used for step reporting only; the exit code that decides the status comes
/// from the kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepReport {
    /// Index of the step in the plan.
    pub index: usize,
    /// Its exit code.
    pub exit_code: i32,
    /// How long it ran (whole seconds, in milliseconds).
    pub duration_ms: u64,
    /// The driver killed it at its timeout.
    pub timed_out: bool,
}

/// The step reports of a terminated workload container, in order; malformed lines and
/// repeated indices are dropped.
pub(crate) fn step_reports(pod: &Pod) -> Vec<StepReport> {
    let message = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|l| l.iter().find(|c| c.name == WORKLOAD_CONTAINER))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.message.clone())
        .unwrap_or_default();
    let mut reports: Vec<StepReport> = Vec::new();
    for line in message.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let ["step", index, code, ms, timed] = fields.as_slice() else { continue };
        let (Ok(index), Ok(exit_code), Ok(duration_ms)) = (index.parse(), code.parse(), ms.parse()) else { continue };
        if reports.iter().any(|r| r.index == index) {
            continue;
        }
        reports.push(StepReport { index, exit_code, duration_ms, timed_out: *timed == "1" });
    }
    reports
}

/// Whether the Job failed because its `activeDeadlineSeconds` passed.
pub(crate) fn job_deadline_exceeded(job: &Job) -> bool {
    job.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
        conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True" && c.reason.as_deref() == Some("DeadlineExceeded"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status})).expect("pod")
    }

    fn terminated(name: &str, code: i32, reason: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason}}})
    }

    #[test]
    fn pod_states_map_to_observations() {
        let cases: Vec<(&str, serde_json::Value, Option<Observation>)> = vec![
            (
                "succeeded",
                serde_json::json!({"phase": "Succeeded", "containerStatuses": [terminated("workload", 0, "Completed")]}),
                Some(Observation::from_exit(ExitObservation::Exited { code: 0 })),
            ),
            (
                "failed exit 3",
                serde_json::json!({"phase": "Failed", "containerStatuses": [terminated("workload", 3, "Error")]}),
                Some(Observation::from_exit(ExitObservation::Exited { code: 3 })),
            ),
            (
                "oom",
                serde_json::json!({"phase": "Failed", "containerStatuses": [terminated("workload", 137, "OOMKilled")]}),
                Some(oom()),
            ),
            (
                "emptyDir eviction",
                serde_json::json!({"phase": "Failed", "reason": "Evicted",
                "message": "Usage of EmptyDir volume \"workspace\" exceeds the limit \"128Mi\"."}),
                Some(Observation {
                    disk_full: true,
                    ..Observation::from_exit(ExitObservation::Signaled { signal: 9 })
                }),
            ),
            (
                "node pressure eviction",
                serde_json::json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
                Some(Observation::from_exit(ExitObservation::Lost {
                    detail: "pod evicted: The node was low on resource: memory.".into(),
                })),
            ),
            (
                "clone failed",
                serde_json::json!({"phase": "Failed", "initContainerStatuses": [terminated("clone", 128, "Error")]}),
                Some(Observation::from_exit(ExitObservation::Exited { code: 128 })),
            ),
            ("pending", serde_json::json!({"phase": "Pending"}), None),
        ];
        for (name, status, expected) in cases {
            assert_eq!(observe_pod(&pod(status)).ended, expected, "{name}");
        }
    }

    #[test]
    fn an_unpullable_image_is_a_lost_session_not_a_hang() {
        let status = serde_json::json!({"phase": "Pending", "containerStatuses": [{"name": "workload", "image": "i",
            "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]});
        let facts = observe_pod(&pod(status));
        assert!(matches!(facts.ended, Some(Observation { exit: ExitObservation::Lost { .. }, .. })));
    }

    #[test]
    fn step_reports_are_read_from_the_termination_message() {
        let status = serde_json::json!({"phase": "Failed", "containerStatuses": [{"name": "workload", "image": "i",
            "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137,
            "message": "step 0 0 2000 0\nstep 1 137 5000 1\ngarbage\nstep 1 0 1 0\nstep x 1 1 0\n"}}}]});
        assert_eq!(
            step_reports(&pod(status)),
            vec![
                StepReport { index: 0, exit_code: 0, duration_ms: 2000, timed_out: false },
                StepReport { index: 1, exit_code: 137, duration_ms: 5000, timed_out: true },
            ]
        );
    }

    #[test]
    fn job_deadline_condition_is_recognised() {
        let job: Job = serde_json::from_value(serde_json::json!({"metadata": {"name": "j"}, "status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}))
        .expect("job");
        assert!(job_deadline_exceeded(&job));
        let other: Job =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "j"}, "status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}))
            .expect("job");
        assert!(!job_deadline_exceeded(&other));
    }
}
