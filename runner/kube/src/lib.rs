//! Enclave's Kubernetes backend: each session is one Job whose single pod runs under a
//! gVisor RuntimeClass, confined by its own NetworkPolicy, with requests equal to limits
//! and size-limited `emptyDir` volumes; an optional init container clones the repository
//! and is the only container that ever mounts the credential Secret.
//!
//! Main design decision: manifests are typed k8s-openapi objects built by pure
//! functions from a [`enclave_core::Plan`] (so every containment setting is unit-tested
//! and golden-checked without a cluster), and the backend only creates, watches and
//! deletes them through a [`kube::Client`] built on an injected service, so tests run
//! against a fake API server in the test process.
//!
//! It must never decide status, kill reasons or policy (the orchestrator does), never
//! give the workload container a Secret, a service-account token, a host path or a host
//! namespace, and never create a session pod before its NetworkPolicy.

mod backend;
mod clone_secret;
mod cluster_proxy;
mod config;
mod error;
mod job;
mod labels;
mod manifests;
mod names;
mod network_policy;
mod observe;
mod pod;
mod pod_identity;
mod retry;
mod session_watch;
#[cfg(test)]
mod test_plan;

pub use backend::{KubeBackend, capabilities};
pub use cluster_proxy::{ClusterProxy, ProxySettings};
pub use config::{EgressProxy, KubeConfig};
pub use error::KubeError;
pub use manifests::render_plan;
