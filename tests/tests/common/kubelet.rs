//! The fake kubelet of the Kubernetes clone suites: it runs a session pod's clone init
//! container as the backend submitted it (command, environment, mounts, the per-session
//! Secret's content) with the host's `sh` and `git`, and keeps what it saw; plus what the
//! suites look at afterwards.

#![allow(dead_code, reason = "shared by several test files; each uses a part")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use enclave_core::{AuditEvent, AuditRecord};
use futures::FutureExt as _;
use serde_json::Value;

use super::fake_kube::{FakeKube, InitRun};
use super::kube_cluster::{Cluster, GIT_PASSWORD};

/// Every form of the credential a leak could take.
pub(crate) fn leaks(haystack: &[u8]) -> Vec<&'static str> {
    let text = String::from_utf8_lossy(haystack);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{GIT_PASSWORD}"));
    let secret_b64 = base64::engine::general_purpose::STANDARD.encode(GIT_PASSWORD);
    let mut found = Vec::new();
    for (name, needle) in [("plain", GIT_PASSWORD), ("basic header", basic.as_str()), ("base64", secret_b64.as_str())] {
        if text.contains(needle) {
            found.push(name);
        }
    }
    found
}

/// What the fake kubelet saw of one clone it ran.
pub(crate) struct Ran {
    /// The workspace volume after the clone: what the workload container would mount.
    pub(crate) workspace: PathBuf,
    /// The clone's stderr (its pod log).
    pub(crate) stderr: String,
    pub(crate) code: i32,
}

/// How the fake kubelet prepares the pod before it runs the clone container.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Node {
    /// A new, empty `emptyDir`, as a kubelet creates it.
    Fresh,
    /// A workspace someone else wrote first: hooks and a `.git/config` that would run
    /// code and print the credential if git used them.
    Planted,
    /// The container dies under the clone (SIGKILL, as when its sandbox crashes) once
    /// the repository host holds its connection.
    DiesWhenConnected,
}

/// A kubelet that runs the clone init container with the host's `sh` and `git`.
#[derive(Clone)]
pub(crate) struct Kubelet {
    root: Arc<tempfile::TempDir>,
    ca_file: PathBuf,
    node: Node,
    /// The repository host's accepted connections (for `DiesWhenConnected`).
    connected: Arc<AtomicUsize>,
    ran: Arc<Mutex<Vec<Ran>>>,
    submitted: Arc<Mutex<Vec<InitRun>>>,
}

impl Kubelet {
    pub(crate) fn new(c: &Cluster, node: Node, connected: Arc<AtomicUsize>) -> Self {
        let root = Arc::new(tempfile::tempdir().unwrap());
        // The clone image's trust store: the system roots plus the test CA.
        let ca_file = root.path().join("ca.pem");
        std::fs::write(&ca_file, c.ca.pem()).unwrap();
        Self { root, ca_file, node, connected, ran: Arc::default(), submitted: Arc::default() }
    }

    pub(crate) fn install(&self, fake: &FakeKube) {
        let kubelet = self.clone();
        fake.run_clones_with(move |init| {
            let kubelet = kubelet.clone();
            async move { kubelet.run(init).await }.boxed()
        });
    }

    pub(crate) fn pod(&self) -> Value {
        self.submitted.lock().unwrap().first().expect("a pod was run").pod.clone()
    }

    pub(crate) fn ran(&self) -> Vec<(PathBuf, String, i32)> {
        self.ran.lock().unwrap().iter().map(|r| (r.workspace.clone(), r.stderr.clone(), r.code)).collect()
    }

    pub(crate) async fn run(&self, init: InitRun) -> i32 {
        let spec = &init.pod["spec"];
        let container = &spec["initContainers"][0];
        assert_eq!(container["name"], "clone");
        let n = self.submitted.lock().unwrap().len();
        let pod_dir = self.root.path().join(format!("pod-{n}"));
        // Each volume the container mounts, as the kubelet provides it.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in container["volumeMounts"].as_array().unwrap() {
            let name = mount["name"].as_str().unwrap();
            let host = pod_dir.join(name);
            std::fs::create_dir_all(&host).unwrap();
            let volume = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == name).expect("volume");
            if let Some(secret_name) = volume["secret"]["secretName"].as_str() {
                let secret = init.secrets.iter().find(|s| s["metadata"]["name"] == secret_name).expect("secret");
                for (key, value) in secret["data"].as_object().expect("secret data") {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap()).unwrap();
                    std::fs::write(host.join(key), bytes).unwrap();
                }
            } else {
                assert!(volume["emptyDir"].is_object(), "{volume}");
            }
            mounts.push((mount["mountPath"].as_str().unwrap().to_owned(), host));
        }
        let workspace = mounts.iter().find(|(path, _)| path == "/workspace").expect("workspace mount").1.clone();
        if self.node == Node::Planted {
            plant(&workspace, &pod_dir.join("leaked"));
        }
        let map = |value: &str| {
            mounts
                .iter()
                .fold(value.to_owned(), |v, (path, host)| v.replace(path.as_str(), &host.display().to_string()))
        };
        let argv: Vec<String> =
            container["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
        let mut command = tokio::process::Command::new(&argv[0]);
        // Its own process group: the container's processes die together, as with their
        // sandbox, when it is killed or its pod is deleted.
        command.args(&argv[1..]).current_dir(&workspace).env_clear().process_group(0);
        for var in container["env"].as_array().unwrap() {
            command.env(var["name"].as_str().unwrap(), map(var["value"].as_str().unwrap_or_default()));
        }
        command.env("GIT_SSL_CAINFO", &self.ca_file);
        command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        self.submitted.lock().unwrap().push(init);
        let child = command.spawn().expect("sh runs");
        let group = Group(child.id().expect("pid"));
        if self.node == Node::DiesWhenConnected {
            let (connected, pid) = (self.connected.clone(), group.0);
            tokio::spawn(async move {
                while connected.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Group(pid).kill();
            });
        }
        let out = child.wait_with_output().await.expect("clone container");
        drop(group);
        let code = out.status.code().unwrap_or(137);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        self.ran.lock().unwrap().push(Ran { workspace, stderr, code });
        code
    }
}

/// A container's process group, killed when dropped (its pod deleted under it).
pub(crate) struct Group(u32);

impl Group {
    pub(crate) fn kill(&self) {
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0)]).status();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Hooks and a `.git/config` that would write git's environment (the credential header)
/// to `marker` if any git process used them.
pub(crate) fn plant(workspace: &Path, marker: &Path) {
    let hooks = workspace.join(".git/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let payload = format!("#!/bin/sh\nenv > {}\n", marker.display());
    for hook in ["post-checkout", "reference-transaction", "pre-fetch"] {
        std::fs::write(hooks.join(hook), &payload).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(hooks.join(hook)).status().unwrap();
    }
    std::fs::write(
        workspace.join(".git/config"),
        format!("[core]\n\tfsmonitor = {}\n\thooksPath = .git/hooks\n", hooks.join("post-checkout").display()),
    )
    .unwrap();
}

pub(crate) fn clone_finished(records: &[AuditRecord]) -> Option<(bool, String)> {
    records.iter().find_map(|r| match &r.event {
        AuditEvent::CloneFinished { ok, detail } => Some((*ok, detail.clone())),
        _ => None,
    })
}

pub(crate) fn workload_started(records: &[AuditRecord]) -> bool {
    records.iter().any(|r| matches!(r.event, AuditEvent::WorkloadStarted { .. }))
}

pub(crate) fn all_gone(fake: &FakeKube) {
    for kind in ["jobs", "pods", "secrets", "networkpolicies"] {
        assert_eq!(fake.names(kind), Vec::<String>::new(), "{kind} left behind");
    }
}

/// Every file under `dir`, with its content.
pub(crate) fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                out.push((entry.path(), std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    out
}

/// The workload image the clone suites' specs name: the tenant's, so hostile.
pub(crate) const TENANT_IMAGE: &str = "tenant/hostile:latest";

/// A session that clones `app.git` from `git.test:port` with the credential and runs the
/// tenant's image.
pub(crate) fn clone_plan(port: u16, deadline: &str) -> enclave_core::Plan {
    super::kube_cluster::plan_of(&format!(
        r#"
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: kube-clone-attack
spec:
  repo:
    url: https://git.test:{port}/app.git
    ref: main
    credential: repo-token
  image: {TENANT_IMAGE}
  command: [cat, README.md]
  quotas:
    deadline: {deadline}
"#
    ))
}
