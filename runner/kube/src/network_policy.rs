//! The per-session NetworkPolicy: no ingress at all; egress nowhere (deny mode without a
//! clone) or only to the egress proxy pods on the proxy port (allowlist mode, and the
//! clone step). The proxy enforces hosts, CIDRs and bindings; the cluster enforces that
//! the proxy is the only way out.

use std::collections::BTreeMap;

use enclave_core::{Plan, SessionId};
use enclave_spec::EgressMode;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::KubeConfig;
use crate::labels;
use crate::names::Names;

/// Role label of the NetworkPolicy.
pub(crate) const ROLE: &str = "network-policy";

/// Whether a plan's pod needs to reach the egress proxy at all (allowlist mode, a
/// repository to clone, or a binding).
pub(crate) fn needs_proxy(plan: &Plan) -> bool {
    plan.egress.mode == EgressMode::Allowlist || plan.clone_phase().is_some() || !plan.bindings.is_empty()
}

/// The NetworkPolicy of a session. `config.egress_proxy` must be set when
/// [`needs_proxy`] holds (the backend refuses such plans otherwise); without a proxy the
/// policy denies all egress.
pub(crate) fn session_network_policy(plan: &Plan, session: &SessionId, config: &KubeConfig) -> NetworkPolicy {
    let egress = match (&config.egress_proxy, needs_proxy(plan)) {
        (Some(proxy), true) => vec![NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_owned(),
                        proxy.namespace.clone(),
                    )])),
                    ..Default::default()
                }),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(proxy.pod_labels.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: Some(vec![NetworkPolicyPort {
                protocol: Some("TCP".to_owned()),
                port: Some(IntOrString::Int(i32::from(proxy.port))),
                ..Default::default()
            }]),
        }],
        _ => Vec::new(),
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(Names::of(session).network_policy),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels::for_session(session, &config.scope, ROLE)),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::pod_selector(session)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: None,
            egress: (!egress.is_empty()).then_some(egress),
        }),
    }
}
