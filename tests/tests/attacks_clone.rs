//! Attacks on the clone step, on Docker + gVisor: a hostile workload image that tries to
//! reach into the clone while it runs, a hostile repository, and a clone that hangs or
//! whose sandbox dies. Every server is the test's own, on loopback: a git smart-HTTP
//! server over TLS with basic auth, and a listener that accepts and never answers.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::TestCa;
use common::clone::{GIT_HOST, clone_finished, docker_cli, repo_spec, workload_started};
use common::docker::*;
use common::git_server::GitServer;
use enclave_core::{AuditEvent, CloneStage, KillReason, MemorySecrets, SessionEvent, SessionStatus};
use enclave_docker::DockerConfig;

const TOKEN: &str = "repo-token-attack-7c41d9e0";
const HOSTILE_IMAGE: &str = "enclave/test-hostile-keeper:latest";

fn clone_config(ca: &TestCa, scope: &str) -> DockerConfig {
    common::clone::clone_config(ca, scope, &[])
}

fn secrets() -> Arc<MemorySecrets> {
    common::clone::secrets(TOKEN)
}

fn leaks(haystack: &[u8]) -> Vec<&'static str> {
    common::clone::leaks(TOKEN, haystack)
}

/// A git server whose one commit `extra` adds hostile content to.
fn hostile_repository(rt: &tokio::runtime::Runtime, ca: &TestCa, extra: impl FnOnce(&std::path::Path)) -> GitServer {
    rt.block_on(GitServer::start_with(ca.server_config(&[GIT_HOST]), "x-access-token", TOKEN, "hostile\n", extra))
}

/// A workload image whose `sleep` (what Docker's keeper runs) is the attacker's: it notes
/// what the workspace held when it started, then plants hooks and a `.git/config` that
/// would run code in any git process working in the workspace, and print its
/// environment (the credential header) where the workload can read it back.
fn hostile_image() {
    let script = r#"#!/bin/sh
{ echo "keeper-start"; ls -A /workspace; } > /tmp/keeper.txt 2>&1
plant() {
  mkdir -p /workspace/.git/hooks
  for h in post-checkout reference-transaction pre-auto-gc post-index-change; do
    printf '#!/bin/sh\n{ echo "hook $0"; env; } >> /workspace/stolen.txt 2>&1\n' > /workspace/.git/hooks/$h
    chmod +x /workspace/.git/hooks/$h
  done
  if [ -f /workspace/.git/config ] && ! grep -q fsmonitor /workspace/.git/config; then
    printf '[core]\n\tfsmonitor = /workspace/.git/hooks/post-checkout\n\thooksPath = /workspace/.git/hooks\n' >> /workspace/.git/config
  fi
}
( i=0; while [ $i -lt 4000 ]; do plant 2>/dev/null; i=$((i+1)); /bin/busybox usleep 2000; done ) &
exec /bin/busybox sleep "$@"
"#;
    let name = format!("hostile-build-{}", std::process::id());
    let _ = std::process::Command::new("docker").args(["rm", "-f", &name]).output();
    docker_cli(&[
        "run",
        "--name",
        &name,
        "-e",
        &format!("SCRIPT={script}"),
        "enclave/base:latest",
        "sh",
        "-c",
        "rm -f /bin/sleep && printf '%s' \"$SCRIPT\" > /bin/sleep && chmod 755 /bin/sleep",
    ]);
    docker_cli(&["commit", &name, HOSTILE_IMAGE]);
    docker_cli(&["rm", "-f", &name]);
}

#[test]
fn a_hostile_workload_image_runs_nothing_before_the_clone_is_over() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    hostile_image();
    let server = rt.block_on(GitServer::start(
        ca.server_config(&["git.enclave.test"]),
        "x-access-token",
        TOKEN,
        "hello from the private repo\n",
    ));
    let body = format!(
        r#"  repo:
    url: https://git.enclave.test:{port}/app.git
    ref: main
    credential: repo-token
  image: {HOSTILE_IMAGE}
  steps:
    - name: collect
      run: |
        mkdir -p out
        cp /tmp/keeper.txt out/keeper.txt
        cat stolen.txt > out/stolen.txt 2>/dev/null || true
        cat README.md > out/readme.txt
  artifacts: [out]
"#,
        port = server.addr.port()
    );
    let plan = plan_with("hostile-keeper", &body, &loopback_policy());
    let mut kept = KeptBundle::default();
    let outcome = run_collecting(&rt, backend.clone(), &plan, secrets(), None, Some(&mut kept));
    assert_eq!(outcome.result.status, SessionStatus::Succeeded, "{:#?}", outcome.result);
    assert_eq!(withheld_for_secrets(&outcome), Vec::<String>::new(), "a leaked file hides as withheld");
    let tar = kept.0.expect("artifacts").tar;
    let text = String::from_utf8_lossy(&tar).to_string();
    assert!(text.contains("hello from the private repo"), "the clone worked");
    // The image's first process saw the finished clone: nothing of it ran during the clone.
    let keeper = text.split("keeper-start").nth(1).unwrap_or_default();
    let keeper = keeper.split('\0').next().unwrap_or_default();
    assert!(keeper.contains("README.md"), "the keeper started before the clone finished: {keeper:?}");
    assert!(!text.contains("hook /workspace"), "a planted hook ran in the clone");
    assert_eq!(leaks(&tar), Vec::<&str>::new(), "the credential reached the workload");
    // Only the clone's own requests reached the git server, all of them expected.
    let requests = server.requests();
    assert!(requests.iter().all(|(path, _)| path.starts_with("/app.git/")), "{requests:?}");
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

#[test]
fn a_hostile_repository_is_refused_by_fsck() {
    // A `.gitmodules` whose URL is an option to git (CVE-2018-17456's shape): fsck
    // refuses it when objects are checked, whatever the workload then does with it.
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    let server = hostile_repository(&rt, &ca, |work| {
        std::fs::write(work.join(".gitmodules"), "[submodule \"x\"]\n\tpath = x\n\turl = -u./payload\n").unwrap();
    });
    let plan =
        plan_with("hostile-repo", &repo_spec(server.addr.port(), "  command: [cat, README.md]\n"), &loopback_policy());
    let outcome = run(&rt, backend.clone(), &plan, secrets(), None);
    let (ok, detail) = clone_finished(&outcome).expect("clone finished record");
    assert!(!ok, "the clone must fail: {detail}");
    assert!(detail.contains("gitmodules") || detail.contains("fsck"), "{detail}");
    assert!(!workload_started(&outcome));
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

/// A repository host that accepts connections and never answers: the clone hangs in
/// its TLS handshake.
struct Stall {
    port: u16,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Stall {
    fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self { port, accepted }
    }

    fn spec(&self, deadline: &str) -> String {
        format!(
            "  repo:\n    url: https://git.enclave.test:{}/app.git\n    ref: main\n    credential: repo-token\n  image: enclave/base:latest\n  command: [true]\n  quotas:\n    deadline: {deadline}\n",
            self.port
        )
    }

    /// Blocks until the clone's connection is held here.
    fn wait_for_clone(&self) {
        while self.accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn the_deadline_covers_a_hanging_clone() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    let stall = Stall::start();
    let plan = plan_with("clone-deadline", &stall.spec("8s"), &loopback_policy());
    let outcome = run(&rt, backend.clone(), &plan, secrets(), None);
    assert!(stall.accepted.load(std::sync::atomic::Ordering::SeqCst) > 0, "the clone reached the stalling host");
    assert!(
        matches!(&outcome.result.status, SessionStatus::Killed { reason: KillReason::DeadlineExceeded, .. }),
        "{:#?}",
        outcome.result.status
    );
    assert!(outcome.audit.iter().any(|r| matches!(r.event, AuditEvent::Teardown { .. })));
    assert!(!workload_started(&outcome));
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

#[test]
fn a_cancel_during_the_clone_ends_the_session_cancelled() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    let stall = Stall::start();
    let plan = plan_with("clone-cancel", &stall.spec("10m"), &loopback_policy());
    let outcome = run(&rt, backend.clone(), &plan, secrets(), Some(Duration::from_secs(6)));
    assert!(stall.accepted.load(std::sync::atomic::Ordering::SeqCst) > 0, "the clone reached the stalling host");
    assert!(
        matches!(&outcome.result.status, SessionStatus::Killed { reason: KillReason::Cancelled, .. }),
        "{:#?}",
        outcome.result.status
    );
    assert!(outcome.audit.iter().any(|r| matches!(r.event, AuditEvent::Teardown { .. })));
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

#[test]
fn a_dead_clone_sandbox_ends_the_clone_at_once() {
    let rt = runtime();
    let ca = TestCa::new();
    let scope = format!("clone-death-{}", std::process::id());
    let Some(backend) = backend(&rt, clone_config(&ca, &scope)) else { return };
    let stall = Stall::start();
    let plan = plan_with("clone-death", &stall.spec("10m"), &loopback_policy());
    let killer = {
        let scope = scope.clone();
        let accepted = stall.accepted.clone();
        std::thread::spawn(move || {
            while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            let clone = docker_cli(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=dev.enclave.scope={scope}"),
                "--filter",
                "label=dev.enclave.role=clone",
            ]);
            assert!(!clone.is_empty(), "the clone container is running");
            // The sandbox dies under the clone, as when gVisor crashes: its host process
            // is killed, not the container through Docker.
            let pid = docker_cli(&["inspect", "-f", "{{.State.Pid}}", clone.lines().next().unwrap()]);
            let killed = std::process::Command::new("kill").args(["-9", &pid]).status().unwrap();
            assert!(killed.success(), "kill {pid}");
        })
    };
    let outcome = run(&rt, backend.clone(), &plan, secrets(), None);
    killer.join().unwrap();
    stall.wait_for_clone();
    let detail = clone_finished(&outcome).map(|(_, d)| d).unwrap_or_default();
    // Seen at once: the sandbox's exit or the exec's end, never a wait for a time limit.
    assert!(detail.contains("sandbox exited") || detail.contains("exited with 137"), "{detail}");
    assert!(matches!(outcome.result.status, SessionStatus::Failed { .. }), "{:#?}", outcome.result.status);
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

#[test]
fn a_cancel_as_the_clone_ends_never_starts_the_workload() {
    // The cancel arrives the moment the clone's reach is revoked, while the workload
    // container is being created: the tenant's image must never start, and Docker's
    // event stream is the witness (the session's own record would not show a start
    // that Enclave did not report).
    let rt = runtime();
    let ca = TestCa::new();
    let scope = format!("clone-end-{}", std::process::id());
    let Some(backend) = backend(&rt, clone_config(&ca, &scope)) else { return };
    let server = rt.block_on(GitServer::start(ca.server_config(&[GIT_HOST]), "x-access-token", TOKEN, "readme\n"));
    let body = repo_spec(server.addr.port(), "  command: [sleep, \"30\"]\n");
    let plan = plan_with("clone-end-cancel", &body, &loopback_policy());
    let starts = Starts::watch(&scope, "workload");
    let outcome = run_cancelled(
        &rt,
        backend.clone(),
        &plan,
        secrets(),
        Cancel::On(|e| matches!(&e.event, SessionEvent::Clone { stage: CloneStage::ReachRevoked, .. })),
    );
    let started = starts.stop();
    let clone_ok = clone_finished(&outcome).map(|(ok, _)| ok);
    assert_eq!(clone_ok, Some(true), "the clone itself succeeded");
    assert!(
        matches!(&outcome.result.status, SessionStatus::Killed { reason: KillReason::Cancelled, .. }),
        "{:#?}",
        outcome.result.status
    );
    assert_eq!(started, "", "the workload container started after the cancel");
    assert!(!workload_started(&outcome));
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

/// A repository whose one blob is 96 MiB of one byte: its pack is tiny, its checkout
/// does not fit the session's 32 MiB disk. The clone fails for want of space, and that is
/// the session's disk quota (`disk_exceeded`), not an exit code of git's. (A blob of
/// zeros would not do: git writes it sparse, and it takes no space at all.)
#[test]
fn an_inflating_repository_ends_the_session_disk_exceeded() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    let server = hostile_repository(&rt, &ca, |work| {
        std::fs::write(work.join("inflated.bin"), vec![b'A'; 96 << 20]).unwrap();
    });
    let rest = "  command: [cat, README.md]\n  quotas:\n    disk: 32Mi\n";
    let plan = plan_with("inflating-repo", &repo_spec(server.addr.port(), rest), &loopback_policy());
    let outcome = run(&rt, backend.clone(), &plan, secrets(), None);
    let clone_ok = clone_finished(&outcome).map(|(ok, _)| ok);
    assert_eq!(clone_ok, Some(false), "the checkout cannot fit");
    assert!(
        matches!(&outcome.result.status, SessionStatus::Killed { reason: KillReason::DiskExceeded, .. }),
        "{:#?}",
        outcome.result.status
    );
    assert!(!workload_started(&outcome));
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

/// A repository host that hands the credential back in what it serves (here written in
/// beforehand, as a reflecting host would from the request): the basic-auth header in a
/// file, the token as another file's name. The clone refuses the repository, so the
/// workload never starts and nothing of it reaches a bundle.
#[test]
fn a_repository_holding_the_credential_is_refused() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    for (tag, plant) in [("content", 0), ("name", 1), ("token-base64", 2)] {
        let server = hostile_repository(&rt, &ca, |work| {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"));
            match plant {
                0 => std::fs::write(work.join("SEEN"), format!("Authorization: Basic {basic}\n")).unwrap(),
                1 => std::fs::write(work.join(format!("seen-{TOKEN}")), "x\n").unwrap(),
                _ => {
                    std::fs::write(work.join("SEEN"), base64::engine::general_purpose::STANDARD.encode(TOKEN)).unwrap()
                }
            }
        });
        let rest = "  command: [sh, -c, 'cat SEEN; ls']\n  artifacts: ['.']\n";
        let plan = plan_with(&format!("reflected-{tag}"), &repo_spec(server.addr.port(), rest), &loopback_policy());
        let mut kept = KeptBundle::default();
        let outcome = run_collecting(&rt, backend.clone(), &plan, secrets(), None, Some(&mut kept));
        let (ok, detail) = clone_finished(&outcome).expect("clone finished record");
        assert!(!ok, "{tag}: the clone must refuse the repository");
        assert!(detail.contains("holds the clone credential"), "{tag}: {detail}");
        assert!(!workload_started(&outcome), "{tag}: the workload started");
        assert!(
            matches!(outcome.result.status, SessionStatus::Failed { exit_code: 3 }),
            "{tag}: {:?}",
            outcome.result.status
        );
        let everything = format!("{:?}{:?}{:?}", outcome.events, outcome.audit, kept.0);
        assert_eq!(leaks(everything.as_bytes()), Vec::<&str>::new(), "{tag}");
        assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
    }
}
