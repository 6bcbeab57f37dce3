//! Per-session networks for sessions that need reach (a clone step, or allowlist
//! egress): an internal Docker network whose only reachable peer is the session's egress
//! proxy, listening on the network's gateway address.
//!
//! An internal network is not a wall against the host (a container on it reaches host
//! listeners through the gateway address), so the host firewall closes everything on
//! the session's bridge except the proxy port, and the container's own network namespace
//! gets the same rule from the inside, which also shuts Docker's embedded DNS
//! (127.0.0.11), a resolver that would otherwise forward any name the workload asks.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use enclave_core::SessionId;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::config::DockerConfig;
use crate::error::DockerError;
use crate::labels;

/// A session's network, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionNetwork {
    /// Docker's name for it.
    pub(crate) name: String,
    /// The host-side bridge interface.
    pub(crate) bridge: String,
    /// The gateway (host-side) address: where the proxy listens.
    pub(crate) gateway: Ipv4Addr,
}

/// The network name of a session.
pub(crate) fn network_name(session: &SessionId) -> String {
    format!("enclave-{session}")
}

/// A bridge name within Linux's 15-character limit, stable for the session.
pub(crate) fn bridge_name(session: &SessionId) -> String {
    let digest = Sha256::digest(session.to_string().as_bytes());
    format!("encl{}", &hex::encode(&digest[..6])[..11])
}

/// The comment that marks a session's firewall rules, so teardown finds them.
pub(crate) fn rule_comment(scope: &str, session: &SessionId) -> String {
    format!("enclave:{scope}:{session}")
}

/// The session's internal network: no way out, no inter-container traffic, on a bridge
/// of its own name (so the host firewall can close it).
pub(crate) fn session_network(session: &SessionId, config: &DockerConfig) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: network_name(session),
        driver: Some("bridge".to_owned()),
        internal: Some(true),
        attachable: Some(false),
        enable_ipv6: Some(false),
        options: Some(HashMap::from([
            ("com.docker.network.bridge.name".to_owned(), bridge_name(session)),
            // No inter-container traffic: the clone and the workload never overlap, and
            // nothing else is on the network.
            ("com.docker.network.bridge.enable_icc".to_owned(), "false".to_owned()),
        ])),
        labels: Some(labels::for_session(session, "network", config)),
        ..Default::default()
    }
}

/// Creates the session's internal network (`session_network`) and reads its gateway.
pub(crate) async fn create(
    docker: &Docker,
    session: &SessionId,
    request: &NetworkCreateRequest,
) -> Result<SessionNetwork, DockerError> {
    let name = request.name.clone();
    let bridge = bridge_name(session);
    docker.create_network(request.clone()).await.map_err(DockerError::call("network create"))?;
    let inspected = docker
        .inspect_network(&name, None::<bollard::query_parameters::InspectNetworkOptions>)
        .await
        .map_err(DockerError::call("network inspect"))?;
    let gateway = inspected
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| c.gateway.and_then(|g| g.parse::<Ipv4Addr>().ok()))
        .ok_or_else(|| DockerError::Setup(format!("network {name} has no IPv4 gateway")))?;
    Ok(SessionNetwork { name, bridge, gateway })
}

/// Runs one iptables command (with the xtables lock wait).
async fn iptables(args: &[&str], netns_pid: Option<u32>) -> Result<(), DockerError> {
    let mut command = match netns_pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg("--").arg("iptables");
            c
        }
        None => Command::new("iptables"),
    };
    command.arg("-w").args(args);
    let output = command.output().await.map_err(|e| DockerError::Setup(format!("running iptables: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(DockerError::Setup(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Host side: on the session's bridge, only the proxy port on the gateway answers.
pub(crate) async fn guard_host(
    scope: &str,
    session: &SessionId,
    net: &SessionNetwork,
    proxy_port: u16,
) -> Result<(), DockerError> {
    let comment = rule_comment(scope, session);
    let gateway = net.gateway.to_string();
    let port = proxy_port.to_string();
    // Inserted in reverse order at the top of INPUT: accept the proxy, drop the rest.
    iptables(&["-I", "INPUT", "1", "-i", &net.bridge, "-m", "comment", "--comment", &comment, "-j", "DROP"], None)
        .await?;
    iptables(
        &[
            "-I",
            "INPUT",
            "1",
            "-i",
            &net.bridge,
            "-d",
            &gateway,
            "-p",
            "tcp",
            "--dport",
            &port,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "ACCEPT",
        ],
        None,
    )
    .await
}

/// Container side (its own network namespace): out only to the proxy port, and to
/// itself on 127.0.0.1; not to Docker's embedded DNS, not anywhere else.
pub(crate) async fn guard_container(pid: u32, gateway: Ipv4Addr, proxy_port: u16) -> Result<(), DockerError> {
    let gateway = gateway.to_string();
    let port = proxy_port.to_string();
    let ns = Some(pid);
    iptables(&["-A", "OUTPUT", "-d", &gateway, "-p", "tcp", "--dport", &port, "-j", "ACCEPT"], ns).await?;
    iptables(&["-A", "OUTPUT", "-o", "lo", "-d", "127.0.0.1", "-j", "ACCEPT"], ns).await?;
    iptables(&["-A", "OUTPUT", "-j", "DROP"], ns).await?;
    iptables(&["-P", "OUTPUT", "DROP"], ns).await
}

/// Removes every host rule carrying a session's comment; returns how many.
pub(crate) async fn unguard_host(scope: &str, session: &SessionId) -> Result<usize, DockerError> {
    let comment = rule_comment(scope, session);
    let output = Command::new("iptables")
        .args(["-w", "-S", "INPUT"])
        .output()
        .await
        .map_err(|e| DockerError::Setup(format!("running iptables: {e}")))?;
    let listing = String::from_utf8_lossy(&output.stdout).to_string();
    let mut removed = 0;
    for rule in listing.lines().filter(|l| l.contains(&format!("\"{comment}\"")) || l.ends_with(&comment)) {
        let Some(spec) = rule.strip_prefix("-A INPUT ") else { continue };
        let mut args = vec!["-D", "INPUT"];
        let parts = split_rule(spec);
        args.extend(parts.iter().map(String::as_str));
        if iptables(&args, None).await.is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Sessions that have host rules (for the orphan reaper).
pub(crate) async fn guarded_sessions(scope: &str) -> Vec<String> {
    let prefix = format!("enclave:{scope}:");
    let Ok(output) = Command::new("iptables").args(["-w", "-S", "INPUT"]).output().await else {
        return Vec::new();
    };
    let listing = String::from_utf8_lossy(&output.stdout).to_string();
    let mut sessions: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split(prefix.as_str()).nth(1))
        .map(|rest| rest.trim_end_matches(['"', ' ']).split(['"', ' ']).next().unwrap_or("").to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    sessions.sort();
    sessions.dedup();
    sessions
}

/// Splits an `iptables -S` rule into arguments (quoted comments stay whole).
fn split_rule(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_linux_and_differ_per_session() {
        let a = bridge_name(&SessionId::new("ses-1").expect("id"));
        let b = bridge_name(&SessionId::new("ses-2").expect("id"));
        assert!(a.len() <= 15, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn rules_split_with_quoted_comments_intact() {
        let rule = r#"-i encl0 -m comment --comment "enclave:ses-1" -j DROP"#;
        assert_eq!(split_rule(rule), vec!["-i", "encl0", "-m", "comment", "--comment", "enclave:ses-1", "-j", "DROP"]);
    }
}
