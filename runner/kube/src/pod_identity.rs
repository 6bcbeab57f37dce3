//! How the egress proxy on Kubernetes tells which session a connection comes from: by
//! its source address, looked up among session pods as the API reports them, never from
//! anything the workload sends (a header, a proxy user name). Pure; the proxy feeds it
//! from a pod watch on the sessions namespace (deploy/rbac.yaml grants it exactly that).

use std::collections::HashMap;
use std::net::IpAddr;

use enclave_core::SessionId;
use k8s_openapi::api::core::v1::Pod;

use crate::labels;

/// A live session pod as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionAddress {
    /// The session.
    pub session: SessionId,
    /// The pod has a clone container that the API does not yet report finished, and its
    /// workload has not started: the only state in which the proxy may grant the clone's
    /// reach (the repo host). The API reports a container's start and end a little after
    /// they happen, so this is read generously at the start (a clone just started may
    /// still show as waiting) and the end is not left to it: the clone step tells the
    /// proxy itself when it is done ([`enclave_egress::CLONE_DONE_URL`]), before its
    /// container exits.
    pub cloning: bool,
}

/// Live session pods by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionPods {
    by_ip: HashMap<IpAddr, Vec<SessionAddress>>,
}

impl SessionPods {
    /// Indexes the session pods of `namespace` that may hold an address now: labelled as
    /// Enclave session pods, pending or running, not being deleted, not on the host's
    /// network (whose address is the node's, shared by everything on it).
    pub(crate) fn from_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>, namespace: &str) -> Self {
        let mut by_ip: HashMap<IpAddr, Vec<SessionAddress>> = HashMap::new();
        for pod in pods {
            let meta = &pod.metadata;
            let labels_of = meta.labels.as_ref();
            let label = |key: &str| labels_of.and_then(|l| l.get(key)).map(String::as_str);
            let eligible = meta.namespace.as_deref() == Some(namespace)
                && meta.deletion_timestamp.is_none()
                && label(labels::MANAGED) == Some("true")
                && label(labels::ROLE) == Some(crate::job::ROLE)
                && pod.spec.as_ref().is_none_or(|s| s.host_network != Some(true))
                && matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending" | "Running"));
            let Some(session) = label(labels::SESSION).and_then(|s| SessionId::new(s).ok()).filter(|_| eligible) else {
                continue;
            };
            let status = pod.status.as_ref();
            let state_of = |list: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>, name: &str| {
                list.and_then(|l| l.iter().find(|c| c.name == name)).and_then(|c| c.state.clone()).unwrap_or_default()
            };
            let clone = state_of(status.and_then(|s| s.init_container_statuses.as_ref()), crate::pod::CLONE_CONTAINER);
            let workload = state_of(status.and_then(|s| s.container_statuses.as_ref()), crate::pod::WORKLOAD_CONTAINER);
            let has_clone = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.name == crate::pod::CLONE_CONTAINER));
            let cloning =
                has_clone && clone.terminated.is_none() && workload.running.is_none() && workload.terminated.is_none();
            let mut addresses: Vec<&str> =
                status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| p.ip.as_str()).collect();
            addresses.extend(status.and_then(|s| s.pod_ip.as_deref()));
            addresses.sort_unstable();
            addresses.dedup();
            for ip in addresses.into_iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                by_ip.entry(ip).or_default().push(SessionAddress { session: session.clone(), cloning });
            }
        }
        Self { by_ip }
    }

    /// Where `session` stands, if one of its pods is live and holds an address of its own.
    pub(crate) fn session(&self, session: &SessionId) -> Option<&SessionAddress> {
        self.by_ip
            .values()
            .filter_map(|v| match v.as_slice() {
                [only] => Some(only),
                _ => None,
            })
            .find(|a| &a.session == session)
    }

    /// The session a connection from `ip` belongs to; `None` when no live session pod
    /// has that address, or when more than one claims it (a reused address mid-change is
    /// never guessed).
    pub(crate) fn session_for(&self, ip: IpAddr) -> Option<&SessionAddress> {
        match self.by_ip.get(&ip).map(Vec::as_slice) {
            Some([only]) => Some(only),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, session: &str, ip: &str, phase: &str, extra: serde_json::Value) -> Pod {
        let mut value = serde_json::json!({
            "metadata": {"name": name, "namespace": "enclave-sessions", "labels": {
                "enclave.dev/managed": "true", "enclave.dev/role": "session", "enclave.dev/session": session}},
            "spec": {"containers": []},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}});
        if let (Some(target), Some(patch)) = (value.as_object_mut(), extra.as_object()) {
            for (key, v) in patch {
                target.insert(key.clone(), v.clone());
            }
        }
        serde_json::from_value(value).expect("pod")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn a_live_session_pod_is_found_by_its_address() {
        let pods = [pod("a", "ses-a", "10.1.0.5", "Running", serde_json::json!({}))];
        let index = SessionPods::from_pods(&pods, "enclave-sessions");
        let found = index.session_for(ip("10.1.0.5")).expect("found");
        assert_eq!(found.session.as_str(), "ses-a");
        assert!(!found.cloning);
        assert_eq!(index.session_for(ip("10.1.0.6")), None);
    }

    #[test]
    fn pods_that_cannot_vouch_for_their_address_are_ignored() {
        let cases = [
            ("finished", pod("a", "ses-a", "10.1.0.5", "Succeeded", serde_json::json!({}))),
            ("being deleted", {
                let mut p = pod("a", "ses-a", "10.1.0.5", "Running", serde_json::json!({}));
                p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
                p
            }),
            (
                "host network",
                pod(
                    "a",
                    "ses-a",
                    "10.1.0.5",
                    "Running",
                    serde_json::json!({"spec": {"containers": [], "hostNetwork": true}}),
                ),
            ),
            (
                "not a session pod",
                pod(
                    "a",
                    "ses-a",
                    "10.1.0.5",
                    "Running",
                    serde_json::json!({"metadata": {"name": "a",
                "namespace": "enclave-sessions", "labels": {"enclave.dev/session": "ses-a"}}}),
                ),
            ),
        ];
        for (why, p) in cases {
            let index = SessionPods::from_pods([&p], "enclave-sessions");
            assert_eq!(index.session_for(ip("10.1.0.5")), None, "{why}");
        }
        let elsewhere = pod("a", "ses-a", "10.1.0.5", "Running", serde_json::json!({}));
        assert_eq!(SessionPods::from_pods([&elsewhere], "other").session_for(ip("10.1.0.5")), None);
    }

    #[test]
    fn the_clone_phase_lasts_until_the_api_shows_the_clone_finished_or_the_workload_started() {
        let status = |clone: serde_json::Value, workload: serde_json::Value| {
            serde_json::json!({"spec": {"containers": [], "initContainers": [{"name": "clone"}]},
                "status": {"phase": "Pending", "podIP": "10.1.0.5",
                "initContainerStatuses": [{"name": "clone", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": clone}],
                "containerStatuses": [{"name": "workload", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": workload}]}})
        };
        let cases = [
            (
                status(
                    serde_json::json!({"running": {}}),
                    serde_json::json!({"waiting": {"reason": "PodInitializing"}}),
                ),
                true,
            ),
            (status(serde_json::json!({"terminated": {"exitCode": 0}}), serde_json::json!({"waiting": {}})), false),
            (status(serde_json::json!({"terminated": {"exitCode": 0}}), serde_json::json!({"running": {}})), false),
            // Started but not yet reported as running.
            (status(serde_json::json!({"waiting": {}}), serde_json::json!({"waiting": {}})), true),
        ];
        for (extra, cloning) in cases {
            let p = pod("a", "ses-a", "10.1.0.5", "Pending", extra);
            let index = SessionPods::from_pods([&p], "enclave-sessions");
            assert_eq!(index.session_for(ip("10.1.0.5")).map(|a| a.cloning), Some(cloning), "{:?}", p.status);
        }
        // A pod without a clone container never has a clone phase.
        let plain = pod("a", "ses-a", "10.1.0.5", "Pending", serde_json::json!({}));
        let index = SessionPods::from_pods([&plain], "enclave-sessions");
        assert_eq!(index.session_for(ip("10.1.0.5")).map(|a| a.cloning), Some(false));
        assert_eq!(index.session(&SessionId::new("ses-a").expect("id")).map(|a| a.cloning), Some(false));
        assert_eq!(index.session(&SessionId::new("ses-b").expect("id")), None);
    }

    #[test]
    fn an_address_claimed_twice_belongs_to_no_one() {
        let pods = [
            pod("a", "ses-a", "10.1.0.5", "Running", serde_json::json!({})),
            pod("b", "ses-b", "10.1.0.5", "Pending", serde_json::json!({})),
        ];
        assert_eq!(SessionPods::from_pods(&pods, "enclave-sessions").session_for(ip("10.1.0.5")), None);
    }
}
