//! How the egress proxy on Kubernetes tells which session a connection comes from: by
//! its source address, looked up among session pods as the API reports them, never from
//! anything the workload sends (a header, a proxy user name). Pure; the proxy feeds it
//! from a pod watch on the sessions namespace (deploy/rbac.yaml grants it exactly that).

use std::collections::HashMap;
use std::net::IpAddr;

use enclave_core::SessionId;
use k8s_openapi::api::core::v1::Pod;

use crate::labels;

/// Live session pods by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPods {
    by_ip: HashMap<IpAddr, Vec<SessionId>>,
}

impl SessionPods {
    /// Indexes the session pods of `namespace` that may hold an address now: labelled as
    /// Enclave session pods, pending or running, not being deleted, not on the host's
    /// network (whose address is the node's, shared by everything on it).
    pub fn from_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>, namespace: &str) -> Self {
        let mut by_ip: HashMap<IpAddr, Vec<SessionId>> = HashMap::new();
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
            let mut addresses: Vec<&str> =
                status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| p.ip.as_str()).collect();
            addresses.extend(status.and_then(|s| s.pod_ip.as_deref()));
            addresses.sort_unstable();
            addresses.dedup();
            for ip in addresses.into_iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                by_ip.entry(ip).or_default().push(session.clone());
            }
        }
        Self { by_ip }
    }

    /// The session a connection from `ip` belongs to; `None` when no live session pod
    /// has that address, or when more than one claims it (a reused address mid-change is
    /// never guessed).
    pub fn session_for(&self, ip: IpAddr) -> Option<&SessionId> {
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
        assert_eq!(index.session_for(ip("10.1.0.5")).map(SessionId::as_str), Some("ses-a"));
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
    fn an_address_claimed_twice_belongs_to_no_one() {
        let pods = [
            pod("a", "ses-a", "10.1.0.5", "Running", serde_json::json!({})),
            pod("b", "ses-b", "10.1.0.5", "Pending", serde_json::json!({})),
        ];
        assert_eq!(SessionPods::from_pods(&pods, "enclave-sessions").session_for(ip("10.1.0.5")), None);
    }
}
