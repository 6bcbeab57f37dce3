//! Helpers for the clone-step suites on Docker: the backend configured for a git server
//! on loopback, the repository credential, the forms a leak of it could take, specs that
//! clone, and what the audit says of the clone.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use base64::Engine as _;
use enclave_core::{AuditEvent, MemorySecrets, Secret};
use enclave_docker::DockerConfig;

use super::TestCa;
use super::docker::Outcome;

/// The repository host of every clone spec here.
pub const GIT_HOST: &str = "git.enclave.test";

/// The backend for repository hosts on loopback (`GIT_HOST` and `also`), trusted for the
/// clone phase only, with the test CA.
pub fn clone_config(ca: &TestCa, scope: &str, also: &[&str]) -> DockerConfig {
    let loopback = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    DockerConfig {
        static_hosts: std::iter::once(GIT_HOST)
            .chain(also.iter().copied())
            .map(|h| (h.to_owned(), loopback.clone()))
            .collect::<HashMap<_, _>>(),
        trusted_clone_networks: vec!["127.0.0.1/32".parse().unwrap()],
        extra_ca_pem: Some(ca.pem()),
        scope: scope.to_owned(),
        ..DockerConfig::default()
    }
}

/// The secret store holding `token` as `repo-token`.
pub fn secrets(token: &str) -> Arc<MemorySecrets> {
    let mut s = MemorySecrets::default();
    s.insert("repo-token", Secret::new(token));
    Arc::new(s)
}

/// Every form of `token` a leak could take that `haystack` holds.
pub fn leaks(token: &str, haystack: &[u8]) -> Vec<&'static str> {
    let text = String::from_utf8_lossy(haystack);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    let mut found = Vec::new();
    if text.contains(token) {
        found.push("token");
    }
    if text.contains(&basic) {
        found.push("basic-auth form");
    }
    found
}

/// A spec body cloning `app.git` at `main` from `GIT_HOST:port` with the credential,
/// running `enclave/base:latest`; `rest` follows (the command, quotas).
pub fn repo_spec(port: u16, rest: &str) -> String {
    format!(
        "  repo:\n    url: https://{GIT_HOST}:{port}/app.git\n    ref: main\n    credential: repo-token\n  image: enclave/base:latest\n{rest}"
    )
}

/// The audit's clone-finished record: (ok, detail).
pub fn clone_finished(outcome: &Outcome) -> Option<(bool, String)> {
    outcome.audit.iter().find_map(|r| match &r.event {
        AuditEvent::CloneFinished { ok, detail } => Some((*ok, detail.clone())),
        _ => None,
    })
}

/// Whether the workload ever started.
pub fn workload_started(outcome: &Outcome) -> bool {
    outcome.audit.iter().any(|r| matches!(r.event, AuditEvent::WorkloadStarted { .. }))
}

/// Runs the docker CLI; its trimmed stdout. Panics when it fails.
pub fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker").args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
