//! Attacks on the host boundary, on Docker + gVisor: a spec whose rules (allowed by an
//! operator who lists Docker's private ranges) name the Enclave host's own addresses,
//! directly or through names that resolve to them, tries to read a listener the test
//! runs on the host. The proxy dials from the host's network namespace, so it is the one
//! that must refuse. Every address involved is this machine's own.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::docker::*;
use enclave_core::{AuditEvent, Decision, DenyReason, MemorySecrets, SessionStatus};
use enclave_docker::DockerConfig;

#[test]
fn a_spec_cannot_reach_the_enclave_host_through_the_proxy() {
    let rt = runtime();
    if backend(&rt, DockerConfig::default()).is_none() {
        return;
    }
    let docker0 = docker0();
    let config = DockerConfig {
        static_hosts: HashMap::from([
            ("host-loopback.test".to_owned(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            ("host-gateway.test".to_owned(), vec![IpAddr::V4(docker0)]),
        ]),
        scope: format!("attack-host-{}", std::process::id()),
        ..DockerConfig::default()
    };
    let backend = backend(&rt, config).unwrap();
    // A listener on every host address: loopback, docker0, each session's gateway.
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = host.local_addr().unwrap().port();
    host.set_nonblocking(true).unwrap();
    // The operator lists Docker's private ranges (as one would for an internal API): the
    // host's own addresses inside them must stay closed.
    let policy = enclave_core::Policy {
        allow_networks: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"].iter().map(|n| n.parse().unwrap()).collect(),
        ..enclave_core::Policy::default()
    };
    let body = format!(
        r#"  image: enclave/base:latest
  egress:
    mode: allowlist
    allow:
      - cidr: {docker0}/32
        ports: [{port}]
      - host: host-loopback.test
        ports: [{port}]
      - host: host-gateway.test
        ports: [{port}]
  steps:
    - name: probe
      run: |
        gw=$(echo "$http_proxy" | sed 's#http://##; s#:.*##')
        pp=${{http_proxy##*:}}
        get() {{ printf 'GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" "$1" | timeout 10 nc -w 5 "$gw" "$pp" | head -1; }}
        tunnel() {{ printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" | timeout 10 nc -w 5 "$gw" "$pp" | head -1; }}
        echo "docker0 $(get {docker0}:{port})"
        echo "docker0-tunnel $(tunnel {docker0}:{port})"
        echo "mapped-docker0 $(get [::ffff:{docker0}]:{port})"
        echo "loopback-name $(get host-loopback.test:{port})"
        echo "gateway-name $(get host-gateway.test:{port})"
        echo "own-gateway $(get "$gw":{port})"
"#
    );
    let plan = plan_with("attack-host", &body, &policy);
    let outcome = run(&rt, backend.clone(), &plan, Arc::new(MemorySecrets::default()), None);
    assert_eq!(outcome.result.status, SessionStatus::Succeeded, "{:#?}", outcome.result);
    let stdout = outcome.stdout();
    for probe in ["docker0", "docker0-tunnel", "mapped-docker0", "loopback-name", "gateway-name", "own-gateway"] {
        let line = stdout.iter().find(|l| l.starts_with(&format!("{probe} "))).unwrap_or_else(|| panic!("{stdout:#?}"));
        assert!(line.contains(" 403 "), "{probe} was not refused: {line}\n{stdout:#?}");
    }
    assert!(host.accept().is_err(), "a connection reached the host listener");
    let reasons: Vec<String> = outcome
        .audit
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::EgressDecision { decision: Decision::Deny { reason }, host, .. } => {
                Some(format!("{host}: {reason:?}"))
            }
            _ => None,
        })
        .collect();
    let docker0_denied = outcome.audit.iter().any(|r| {
        matches!(
            &r.event,
            AuditEvent::EgressDecision { decision: Decision::Deny { reason: DenyReason::HostAddress { .. } }, .. }
        )
    });
    assert!(docker0_denied, "{reasons:#?}");
    let loopback_denied = outcome.audit.iter().any(|r| {
        matches!(
            &r.event,
            AuditEvent::EgressDecision { decision: Decision::Deny { reason: DenyReason::NeverReachable { .. } }, .. }
        )
    });
    assert!(loopback_denied, "{reasons:#?}");
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}
