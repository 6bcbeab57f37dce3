//! The egress proxy as it runs on Kubernetes, end to end without a cluster: the
//! Kubernetes backend runs a session against the fake API server and offers it through
//! the relay; the cluster proxy (`enclave egress-proxy`) watches the same fake API for
//! session pods and serves them on one listener (the cluster: `common/kube_cluster.rs`).
//! The clone is played with the host's real `git` through the proxy, including the clone
//! step's end-of-clone signal.
//!
//! Every server is on loopback and started here (canaries on 127.0.0.2 and 127.0.0.3, a
//! git server on 127.0.0.1); nothing is sent anywhere else.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::fake_kube::PodScript;
use common::kube_cluster::*;
use common::{TestCa, status};
use enclave_core::{Secret, SessionId};
use enclave_egress::{CLONE_DONE_URL, RelayClient, StaticResolver};
use enclave_kube::{ClusterProxy, ProxySettings};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_proxy_serves_a_session_pod_by_its_address_through_the_relay() {
    let c = cluster(PodScript::RunsUntilReleased(0), Address::AtOnce).await;
    // The API reports the workload's start only when the test says: its first egress
    // must still come after `workload_started` in the audit.
    c.fake.hold_workload_status();
    let session = SessionId::new("ses-kube-egress").unwrap();
    let run = start(c.backend(), c.plan(), session.clone());
    let proxy = c.proxy.address;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{GIT_PASSWORD}"));
    let auth = format!("Authorization: Basic {basic}");
    let repo = format!("https://git.test:{}/app.git", c.git.addr.port());
    let canary = format!("http://canary.test:{}/", c.a.port());

    // Clone phase: the pod reaches the repository host, and only that.
    c.fake.clone_running().await;
    known(&c.proxy, &session).await;
    let listed = c.git(&["ls-remote", &repo], Some(&auth)).await;
    assert!(listed.status.success(), "clone phase ls-remote: {}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("refs/heads/main"));
    assert_eq!(status(&from(POD, proxy, &get(&canary, "canary.test")).await), 403, "workload rule in clone phase");
    // The other replica serves the clone too (the Service spreads connections).
    known(&c.replica, &session).await;
    let listed = c.git_via(c.replica.address, &["ls-remote", &repo], Some(&auth)).await;
    assert!(listed.status.success(), "replica ls-remote: {}", String::from_utf8_lossy(&listed.stderr));
    // Another address is no session's: closed without a byte, nothing dialled.
    assert_eq!(from(OTHER_POD, proxy, &get(&canary, "canary.test")).await, "");
    assert_eq!(c.a.connections(), 0);

    // The clone step's signal: revoked and recorded before the answer, so git succeeds.
    let signal = c.git(&["ls-remote", CLONE_DONE_URL], None).await;
    assert!(signal.status.success(), "clone-done: {}", String::from_utf8_lossy(&signal.stderr));
    assert!(*c.registry.clone_revoked(&session).unwrap().borrow(), "the relay heard the revocation");
    let after = c.git(&["ls-remote", &repo], Some(&auth)).await;
    assert!(!after.status.success(), "the repository host after the clone");
    // The replica did not hear the signal and the API still shows the clone running:
    // the relay refuses its clone-phase allow, so it denies too.
    let after = c.git_via(c.replica.address, &["ls-remote", &repo], Some(&auth)).await;
    assert!(!after.status.success(), "the repository host through the other replica");
    let git_requests = c.git.requests().len();

    // Workload phase.
    c.fake.finish_clone(0);
    let url = canary.clone();
    let mut first = tokio::spawn(async move { from(POD, proxy, &get(&url, "canary.test")).await });
    // Its record waits in the relay until the backend has reported the workload (the
    // relay holds it up to 5 s; a short look cannot see it answered before then).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut first).await.is_err(),
        "answered before the API reported the workload"
    );
    c.fake.report_workload();
    c.fake.running().await;
    let allowed = first.await.unwrap();
    assert_eq!(status(&allowed), 200, "{allowed}");
    let denied = from(POD, proxy, &get(&format!("http://evil.test:{}/", c.b.port()), "evil.test")).await;
    assert_eq!(status(&denied), 403, "{denied}");
    assert_eq!(c.b.connections(), 0);
    let binding = from(POD, proxy, &get("http://api.binding.test/v1/user", "api.binding.test")).await;
    assert_eq!(status(&binding), 200, "{binding}");
    assert!(!binding.contains(BINDING_SECRET), "the binding's secret came back: {binding}");
    let upstream = c.api.requests().join("\n");
    assert!(upstream.contains(&format!("Bearer {BINDING_SECRET}")), "injected at the boundary: {upstream}");
    assert_eq!(from(OTHER_POD, proxy, &get(&canary, "canary.test")).await, "");
    assert_eq!(c.git.requests().len(), git_requests, "no request reached git after the revocation");

    c.fake.release();
    let (result, records) = run.await.unwrap();
    assert_eq!(result.status.to_string(), "succeeded", "{result:?}");
    let audit = audit_text(&records);
    let position = |needle: &str| {
        audit.iter().position(|r| r.contains(needle)).unwrap_or_else(|| panic!("{needle} in audit:\n{audit:#?}"))
    };
    assert!(position("\"clone_finished\"") < position("\"clone_reach_revoked\""));
    assert!(position("\"clone_reach_revoked\"") < position("\"workload_started\""));
    // The API's lag does not reorder the chain: each phase's egress after its start.
    let egress = |phase: &str, host: &str| {
        audit
            .iter()
            .position(|r| {
                r.contains("\"egress_decision\"") && r.contains(&format!("\"phase\":\"{phase}\"")) && r.contains(host)
            })
            .unwrap_or_else(|| panic!("egress to {host} in audit:\n{audit:#?}"))
    };
    assert!(position("\"clone_started\"") < egress("clone", "git.test"));
    assert!(position("\"workload_started\"") < egress("run", "canary.test"));
    for needle in ["\"git.test\"", "\"canary.test\"", "\"evil.test\"", "\"binding_used\""] {
        position(needle);
    }
    assert!(audit.iter().all(|r| !r.contains(BINDING_SECRET) && !r.contains(GIT_PASSWORD)));
    let jsonl: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    assert!(enclave_core::verify_jsonl(jsonl.as_bytes()).is_ok(), "the chain holds");

    // The session is over: the relay no longer offers it, and once the API shows its pod
    // gone, its address gets nothing.
    assert!(!c.registry.contains(&session));
    tokio::time::timeout(HANG_GUARD, c.proxy.forgets(&session)).await.expect("the pod watch saw the pod go");
    assert_eq!(from(POD, proxy, &get(&canary, "canary.test")).await, "");
    assert_eq!(c.a.connections(), 1, "only the one allowed request reached the canary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_proxy_denies_what_it_cannot_record_and_the_clone_fails_without_the_proxy() {
    let c = cluster(PodScript::RunsUntilKilled, Address::Late).await;
    // The proxies' pod watches drop (an API server restart); they must come back.
    tokio::time::timeout(HANG_GUARD, async {
        while c.fake.open_watches() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the proxies watch session pods");
    c.fake.drop_watches();
    let session = SessionId::new("ses-kube-norecord").unwrap();
    let run = start(c.backend(), c.plan(), session.clone());
    c.fake.clone_running().await;
    // The clone's first connection comes before the API reports the pod's address: it
    // waits for it and is served (here: denied as a clone-phase request to a workload
    // host, which proves the session was found and its decision recorded).
    let canary = format!("http://canary.test:{}/", c.a.port());
    let (url, proxy) = (canary.clone(), c.proxy.address);
    let mut early = tokio::spawn(async move { from(POD, proxy, &get(&url, "canary.test")).await });
    // It waits for the address (up to 5 s; a short look cannot see it answered first).
    assert!(tokio::time::timeout(Duration::from_millis(500), &mut early).await.is_err(), "answered without an address");
    c.fake.assign_pod_ip(&POD.to_string());
    let early = early.await.unwrap();
    assert_eq!(status(&early), 403, "{early}");
    known(&c.proxy, &session).await;
    // The relay stops offering the session (its server lost it): nothing is recorded,
    // so nothing passes, and the clone step's signal fails: git exits non-zero and the
    // pod would fail before its workload starts.
    c.registry.remove(&session);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{GIT_PASSWORD}"));
    let repo = format!("https://git.test:{}/app.git", c.git.addr.port());
    let listed = c.git(&["ls-remote", &repo], Some(&format!("Authorization: Basic {basic}"))).await;
    assert!(!listed.status.success(), "an unrecorded clone went through");
    let signal = c.git(&["ls-remote", CLONE_DONE_URL], None).await;
    assert!(!signal.status.success(), "the clone-done signal succeeded without a record");
    assert!(c.git.requests().is_empty(), "nothing reached the git server");
    c.fake.finish_clone(128);
    let (result, _) = run.await.unwrap();
    assert_eq!(result.exit_code, Some(128), "{result:?}");
    // A relay without the token answers nothing.
    let relay_url = format!("https://{}", c.relay.address);
    let stranger = RelayClient::new(&relay_url, Secret::new("x".repeat(40)), Some(&c.ca.pem())).unwrap();
    assert!(stranger.grant(&session).await.is_err());
    // Nor to a client that trusts another CA (a relay impostor looks the same from here).
    let other_ca = TestCa::new();
    let misled = RelayClient::new(&relay_url, Secret::new(TOKEN), Some(&other_ca.pem())).unwrap();
    let refused = misled.grant(&session).await.expect_err("a certificate from another CA");
    assert!(!refused.to_string().contains(TOKEN), "{refused}");
    // And plain http to a TLS relay gets nothing either.
    let plain = RelayClient::new(&format!("http://{}", c.relay.address), Secret::new(TOKEN), None).unwrap();
    assert!(plain.grant(&session).await.is_err());
    assert!(RelayClient::new(&relay_url, Secret::new(TOKEN), None).is_err(), "https without a CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_whose_relay_cannot_be_reached_lets_nothing_through() {
    let c = cluster(PodScript::RunsUntilKilled, Address::AtOnce).await;
    // A proxy replica configured with a relay nothing listens on (port 1 on loopback).
    let dead = RelayClient::new("http://127.0.0.1:1", Secret::new(TOKEN), None).unwrap();
    let settings = ProxySettings {
        resolver: Arc::new(StaticResolver::new(HashMap::from([("canary.test".to_owned(), vec![IpAddr::V4(A)])]))),
        upstream_tls: enclave_egress::upstream_tls(&[]).unwrap(),
        proxy_addresses: vec![IpAddr::V4(ORPHAN)],
        trusted_clone_networks: Vec::new(),
    };
    let listener = TcpListener::bind((ORPHAN, 0)).await.unwrap();
    let orphan = ClusterProxy::start(c.fake.client(), "enclave-sessions", listener, dead, settings).unwrap();
    let session = SessionId::new("ses-kube-norelay").unwrap();
    let run = start(c.backend(), c.plan(), session.clone());
    c.fake.clone_running().await;
    known(&orphan, &session).await;
    let canary = format!("http://canary.test:{}/", c.a.port());
    assert_eq!(from(POD, orphan.address, &get(&canary, "canary.test")).await, "", "no grant, no service");
    assert_eq!(c.a.connections(), 0);
    c.fake.finish_clone(128);
    let (result, _) = run.await.unwrap();
    assert_eq!(result.exit_code, Some(128), "{result:?}");
}
