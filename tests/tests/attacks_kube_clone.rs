//! Attacks on the Kubernetes clone step, as far as they apply without a cluster: the
//! Kubernetes backend runs each session against the fake API server, and the fake
//! kubelet runs the clone init container *as the backend submitted it*: its command,
//! environment, mounts and the per-session Secret's content, with the host's `sh` and
//! `git` (Debian's, as in the clone image), through the cluster proxy to a git server
//! over TLS with basic auth. What a kubelet would add (the image, the uid, gVisor) is not
//! played here; what the pod spec promises about them is checked on the submitted pod.
//!
//! The attack classes are those of the Docker suite (`attacks_clone.rs`): a workload
//! image that acts before the clone is over, a workspace someone else wrote, a hostile
//! repository, a clone that hangs (deadline, cancel) and a clone container that dies.
//! Every server is on loopback and started here; nothing is sent anywhere else.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::fake_kube::PodScript;
use common::kube_cluster::*;
use common::kubelet::*;
use enclave_core::{AuditEvent, AuditRecord, KillReason, SessionId, SessionResult, SessionStatus};
use enclave_kube::KubeConfig;
use futures::FutureExt as _;
use serde_json::Value;

/// A repository host on 127.0.0.1 that accepts connections and never answers: the clone
/// hangs in its TLS handshake.
struct Stall {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Stall {
    fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self { port, accepted }
    }

    async fn connected(&self) {
        tokio::time::timeout(HANG_GUARD, async {
            while self.accepted.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the clone reached the stalling host");
    }
}

/// A session stopped while its clone hangs: killed for `reason`, torn down and audited,
/// its workload never started, its clone stopped (it never finished on its own), nothing
/// left. The clone is stopped by whichever comes first: its pod's deletion kills it, or
/// the proxy, told the run is over, closes its tunnel and git fails. Either way it never
/// exits 0: the stalling host never answered.
fn stopped_in_the_clone(
    c: &Cluster,
    kubelet: &Kubelet,
    result: &SessionResult,
    records: &[AuditRecord],
    reason: KillReason,
) {
    assert!(matches!(&result.status, SessionStatus::Killed { reason: r, .. } if *r == reason), "{:?}", result.status);
    assert!(records.iter().any(|r| matches!(r.event, AuditEvent::Teardown { .. })));
    assert!(!workload_started(records));
    let ran = kubelet.ran();
    assert!(ran.iter().all(|(_, _, code)| *code != 0), "the clone finished on its own: {ran:?}");
    all_gone(&c.fake);
}

async fn session_of(
    c: &Cluster,
    kubelet: &Kubelet,
    plan: enclave_core::Plan,
    id: &str,
) -> (SessionResult, Vec<AuditRecord>) {
    kubelet.install(&c.fake);
    start(c.backend(), plan, SessionId::new(id).unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_the_submitted_clone_step_alone_holds_the_credential_and_leaves_none() {
    let c = cluster(PodScript::Exit(0), Address::AtOnce).await;
    let kubelet = Kubelet::new(&c, Node::Fresh, Arc::default());
    let (result, records) = session_of(&c, &kubelet, clone_plan(c.git.addr.port(), "10m"), "ses-kube-clone-1").await;
    let ran = kubelet.ran();
    assert_eq!(ran.len(), 1);
    let (workspace, stderr, code) = &ran[0];
    assert_eq!(*code, 0, "the clone container as submitted: {stderr}");
    assert_eq!(result.status.to_string(), "succeeded", "{result:?}");
    assert_eq!(clone_finished(&records).map(|(ok, _)| ok), Some(true));

    // The clone presented the credential to the repository URL, and only there.
    let requests = c.git.requests();
    assert!(requests.iter().any(|(_, authorized)| *authorized), "{requests:?}");
    assert!(requests.iter().all(|(path, _)| path.starts_with("/app.git/")), "{requests:?}");

    // The clone step's own end-of-clone request revoked its reach before the workload.
    let audit = audit_text(&records);
    let position = |needle: &str| audit.iter().position(|r| r.contains(needle)).unwrap_or_else(|| panic!("{needle}"));
    assert!(position("\"clone_finished\"") < position("\"clone_reach_revoked\""));
    assert!(position("\"clone_reach_revoked\"") < position("\"workload_started\""));

    // No process of the tenant's image runs before the clone is over: the only init
    // container is Enclave's clone image, not a sidecar (which would run beside the
    // workload), and the pod shares no process namespace.
    let pod = kubelet.pod();
    let spec = &pod["spec"];
    let inits = spec["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 1, "{inits:?}");
    assert_eq!(inits[0]["image"].as_str(), Some(KubeConfig::default().clone_image.as_str()));
    assert!(inits[0]["restartPolicy"].is_null(), "the clone is not a sidecar");
    assert_ne!(spec["shareProcessNamespace"], Value::Bool(true));
    let containers = spec["containers"].as_array().unwrap();
    assert!(containers.iter().all(|c| c["image"] == TENANT_IMAGE), "{containers:?}");
    // The credential Secret is mounted by the clone container alone, and no field of
    // the pod holds any form of the credential.
    let secret_volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["secret"].is_object())
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(secret_volumes.len(), 1, "{secret_volumes:?}");
    for container in containers {
        let mounts = container["volumeMounts"].as_array().cloned().unwrap_or_default();
        assert!(mounts.iter().all(|m| m["name"] != secret_volumes[0]), "the workload mounts the credential");
    }
    assert_eq!(leaks(&serde_json::to_vec(&pod).unwrap()), Vec::<&str>::new(), "the pod spec holds the credential");

    // What the workload container gets, the workspace, holds the repository and no form
    // of the credential (`.git/config`, `FETCH_HEAD`, the objects, everything).
    let content = files(workspace);
    assert!(content.iter().any(|(p, body)| p.ends_with("README.md") && body == b"kube clone\n"), "the clone is there");
    for (path, body) in &content {
        assert_eq!(leaks(body), Vec::<&str>::new(), "{} holds the credential", path.display());
    }
    assert!(audit.iter().all(|r| leaks(r.as_bytes()).is_empty()), "the audit holds the credential");
    all_gone(&c.fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_workspace_someone_else_wrote_is_refused_before_git_runs() {
    let c = cluster(PodScript::Exit(0), Address::AtOnce).await;
    let kubelet = Kubelet::new(&c, Node::Planted, Arc::default());
    let (result, records) = session_of(&c, &kubelet, clone_plan(c.git.addr.port(), "10m"), "ses-kube-clone-2").await;
    let ran = kubelet.ran();
    let (workspace, stderr, code) = &ran[0];
    assert_eq!(*code, 2, "refused: {stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
    assert!(!workspace.parent().unwrap().join("leaked").exists(), "a planted hook or fsmonitor ran");
    assert!(c.git.requests().is_empty(), "git reached the repository host");
    assert_eq!(clone_finished(&records).map(|(ok, _)| ok), Some(false));
    assert!(!workload_started(&records));
    assert!(matches!(result.status, SessionStatus::Failed { .. }), "{:?}", result.status);
    all_gone(&c.fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_hostile_repository_is_refused_by_fsck() {
    // A `.gitmodules` whose URL is an option to git (CVE-2018-17456's shape).
    let c = cluster_with(PodScript::Exit(0), Address::AtOnce, |work| {
        std::fs::write(work.join(".gitmodules"), "[submodule \"x\"]\n\tpath = x\n\turl = -u./payload\n").unwrap();
    })
    .await;
    let kubelet = Kubelet::new(&c, Node::Fresh, Arc::default());
    let (result, records) = session_of(&c, &kubelet, clone_plan(c.git.addr.port(), "10m"), "ses-kube-clone-3").await;
    let ran = kubelet.ran();
    let (workspace, stderr, code) = &ran[0];
    assert_ne!(*code, 0, "{stderr}");
    assert!(stderr.contains("gitmodules"), "refused by fsck: {stderr}");
    assert!(!workspace.join(".gitmodules").exists(), "nothing checked out");
    assert_eq!(clone_finished(&records).map(|(ok, _)| ok), Some(false));
    assert!(!workload_started(&records));
    assert!(matches!(result.status, SessionStatus::Failed { .. }), "{:?}", result.status);
    all_gone(&c.fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_the_deadline_covers_a_hanging_clone() {
    let c = cluster(PodScript::Exit(0), Address::AtOnce).await;
    let stall = Stall::start();
    let kubelet = Kubelet::new(&c, Node::Fresh, Arc::default());
    let (result, records) = session_of(&c, &kubelet, clone_plan(stall.port, "3s"), "ses-kube-clone-4").await;
    assert!(stall.accepted.load(Ordering::SeqCst) > 0, "the clone reached the stalling host");
    stopped_in_the_clone(&c, &kubelet, &result, &records, KillReason::DeadlineExceeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_cancel_during_the_clone_ends_the_session_cancelled() {
    let c = cluster(PodScript::Exit(0), Address::AtOnce).await;
    let stall = Arc::new(Stall::start());
    let kubelet = Kubelet::new(&c, Node::Fresh, Arc::default());
    kubelet.install(&c.fake);
    let held = stall.clone();
    let cancel = async move { held.connected().await }.boxed();
    let session = SessionId::new("ses-kube-clone-5").unwrap();
    let (result, records) =
        start_with_cancel(c.backend(), clone_plan(stall.port, "10m"), session, cancel).await.unwrap();
    stopped_in_the_clone(&c, &kubelet, &result, &records, KillReason::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_dead_clone_container_ends_the_clone_at_once() {
    let c = cluster(PodScript::Exit(0), Address::AtOnce).await;
    let stall = Stall::start();
    let kubelet = Kubelet::new(&c, Node::DiesWhenConnected, stall.accepted.clone());
    // A deadline of ten minutes: only the container's death can end this in time.
    let (result, records) = session_of(&c, &kubelet, clone_plan(stall.port, "10m"), "ses-kube-clone-6").await;
    let ran = kubelet.ran();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].2, 137, "{}", ran[0].1);
    let (ok, detail) = clone_finished(&records).expect("clone finished record");
    assert!(!ok);
    assert!(detail.contains("137"), "{detail}");
    assert!(!workload_started(&records));
    assert!(matches!(result.status, SessionStatus::Failed { .. }), "{:?}", result.status);
    all_gone(&c.fake);
}
