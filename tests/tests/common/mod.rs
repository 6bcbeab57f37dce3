//! What the cross-crate suites share: the loopback servers of `enclave-test-servers`
//! (re-exported, so a suite writes `common::Canary`), the
//! Docker and clone helpers, a git server, and the fake Kubernetes API
//! (`enclave-fake-kube`, re-exported as `common::fake_kube`) with its cluster and
//! kubelet. Nothing here ever talks to an address the test did not create.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    reason = "shared by every test binary; each uses a part, and nothing here is public API"
)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test support")]

pub mod clone;
pub mod docker;
pub mod git_server;
pub mod kube_cluster;
pub mod kubelet;

pub use enclave_fake_kube as fake_kube;
pub use enclave_test_servers::*;
