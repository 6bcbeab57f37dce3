//! Red-team attempts on the clone step, on Docker + gVisor: a hostile repository host
//! (floods, redirects), hostile repository content (symlinks, attributes, a pack that
//! inflates past the workspace), a workload that tries the repository host once the
//! clone is over, and a look at every Docker object and host process while the clone
//! holds the credential. Every server is the test's own, on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::clone::{docker_cli, repo_spec};
use common::docker::*;
use common::git_server::GitServer;
use common::{Canary, Reply, TestCa, response};
use enclave_core::{MemorySecrets, SessionStatus};
use enclave_docker::DockerConfig;

/// What the inspector read: (where, bytes).
type Seen = Vec<(String, Vec<u8>)>;

const TOKEN: &str = "repo-token-redteam-3f9a6c21";

fn clone_config(ca: &TestCa, scope: &str) -> DockerConfig {
    common::clone::clone_config(ca, scope, &["other.enclave.test"])
}

fn secrets() -> Arc<MemorySecrets> {
    common::clone::secrets(TOKEN)
}

/// Every form of the credential a leak could take.
fn leaks(haystack: &[u8]) -> Vec<&'static str> {
    common::clone::leaks(TOKEN, haystack)
}

fn assert_outcome_clean(outcome: &Outcome) {
    let events = serde_json::to_string(&outcome.events).unwrap();
    let audit = serde_json::to_string(&outcome.audit).unwrap();
    let result = serde_json::to_string(&outcome.result).unwrap();
    assert_eq!(leaks(events.as_bytes()), Vec::<&str>::new(), "events");
    assert_eq!(leaks(audit.as_bytes()), Vec::<&str>::new(), "audit");
    assert_eq!(leaks(result.as_bytes()), Vec::<&str>::new(), "result");
}

fn clone_finished(outcome: &Outcome) -> (bool, String) {
    common::clone::clone_finished(outcome).expect("a clone-finished record")
}

/// A repository host that answers every request with a 404 whose `text/plain` body is
/// 16 MiB on one line. git prints such a body (`remote: ...`) before it dies, and
/// Enclave keeps the clone's transcript to report why it failed. The report must stay
/// bounded: the audit record, the event and the result are not the place for megabytes
/// a tenant's server chose.
#[test]
fn redteam_a_flooding_repository_host_does_not_fill_the_audit() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    let flood = Arc::new("A".repeat(16 << 20));
    let reply: Reply = {
        let flood = flood.clone();
        Arc::new(move |_req: &str| response(404, &[("Content-Type", "text/plain")], &flood))
    };
    let server = rt.block_on(Canary::start(Ipv4Addr::LOCALHOST, Some(ca.server_config(&["git.enclave.test"])), reply));
    let plan = plan_with("rt-flood", &repo_spec(server.port(), "  command: [true]\n"), &loopback_policy());
    let outcome = run(&rt, backend.clone(), &plan, secrets(), None);
    assert!(server.connections() > 0, "the clone reached the flooding host");
    let (ok, detail) = clone_finished(&outcome);
    assert!(!ok, "the clone fails");
    assert!(detail.len() <= 64 << 10, "the clone's report holds {} bytes of the host's text", detail.len());
    let audit = serde_json::to_string(&outcome.audit).unwrap();
    assert!(audit.len() <= 1 << 20, "the audit holds {} bytes", audit.len());
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

/// A repository host that redirects, to another path on itself and to another port of
/// the same (trusted) address: git must follow neither, so the credential is never
/// presented anywhere but the repository URL.
#[test]
fn redteam_a_redirecting_repository_host_gets_no_second_request() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    let tls = ca.server_config(&["git.enclave.test", "other.enclave.test"]);
    let elsewhere = rt.block_on(Canary::https(Ipv4Addr::LOCALHOST, tls.clone()));
    for (tag, target) in [
        ("path", None),
        (
            "port",
            Some(format!("https://git.enclave.test:{}/app.git/info/refs?service=git-upload-pack", elsewhere.port())),
        ),
        (
            "host",
            Some(format!("https://other.enclave.test:{}/app.git/info/refs?service=git-upload-pack", elsewhere.port())),
        ),
    ] {
        let seen = Arc::new(AtomicUsize::new(0));
        let reply: Reply = {
            let (seen, target) = (seen.clone(), target.clone());
            Arc::new(move |req: &str| {
                seen.fetch_add(1, Ordering::SeqCst);
                let location = target.clone().unwrap_or_else(|| "/stolen.git/info/refs?service=git-upload-pack".into());
                if req.starts_with("GET /stolen.git/") {
                    return response(200, &[], "stolen");
                }
                response(302, &[("Location", &location)], "")
            })
        };
        let server = rt.block_on(Canary::start(Ipv4Addr::LOCALHOST, Some(tls.clone()), reply));
        let plan = plan_with(
            &format!("rt-redirect-{tag}"),
            &repo_spec(server.port(), "  command: [true]\n"),
            &loopback_policy(),
        );
        let outcome = run(&rt, backend.clone(), &plan, secrets(), None);
        let (ok, detail) = clone_finished(&outcome);
        assert!(!ok, "{tag}: a redirect fails the clone: {detail}");
        let requests = server.requests();
        assert!(!requests.is_empty(), "{tag}: the clone reached the host");
        assert!(
            requests.iter().all(|r| r.starts_with("GET /app.git/info/refs")),
            "{tag}: only the repository URL was asked: {requests:#?}"
        );
        assert_eq!(elsewhere.connections(), 0, "{tag}: the redirect target was reached");
        assert_outcome_clean(&outcome);
        assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
    }
}

/// Once the clone is over, a workload whose own allowlist names the repository host
/// still cannot reach it: the host's loopback address was trusted for the clone phase
/// only. Nor by its address, nor through a tunnel the clone left open.
#[test]
fn redteam_the_workload_cannot_reach_the_repository_host_after_the_clone() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    let server =
        rt.block_on(GitServer::start(ca.server_config(&["git.enclave.test"]), "x-access-token", TOKEN, "private\n"));
    let port = server.addr.port();
    let rest = format!(
        r#"  egress:
    mode: allowlist
    allow:
      - host: git.enclave.test
        ports: [{port}]
  steps:
    - name: probe
      run: |
        gw=$(echo "$http_proxy" | sed 's#http://##; s#:.*##')
        try() {{ printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" | timeout 10 nc -w 5 "$gw" "${{http_proxy##*:}}" | head -1; }}
        echo "by-name: $(try git.enclave.test:{port})"
        echo "by-address: $(try 127.0.0.1:{port})"
        echo "other-port: $(try git.enclave.test:443)"
"#
    );
    let plan = plan_with("rt-after-clone", &repo_spec(port, &rest), &loopback_policy());
    let clone_requests_before = server.requests().len();
    let outcome = run(&rt, backend.clone(), &plan, secrets(), None);
    assert_eq!(outcome.result.status, SessionStatus::Succeeded, "{:#?}", outcome.result);
    let stdout = outcome.stdout();
    for probe in ["by-name", "by-address", "other-port"] {
        let line = stdout.iter().find(|l| l.starts_with(probe)).unwrap_or_else(|| panic!("{probe}: {stdout:#?}"));
        assert!(line.contains(" 403"), "{probe} answered: {line}");
    }
    // Every request the server saw came from the clone (info/refs, then upload-pack).
    let requests = server.requests();
    assert!(requests.len() > clone_requests_before, "the clone ran");
    assert!(requests.iter().all(|(p, _)| p.starts_with("/app.git/")), "{requests:?}");
    assert_outcome_clean(&outcome);
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

/// While the clone holds the credential (its git process is stuck in the TLS handshake
/// of a host that never answers), nothing Docker keeps, nothing containerd wrote for the
/// container and no host process's environment or arguments holds any form of it.
#[test]
fn redteam_no_docker_object_or_host_process_holds_the_credential_during_the_clone() {
    let rt = runtime();
    let ca = TestCa::new();
    let scope = format!("rt-inspect-{}", std::process::id());
    let Some(backend) = backend(&rt, clone_config(&ca, &scope)) else { return };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let results: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let inspector = {
        let results = results.clone();
        let (scope, accepted) = (scope.clone(), accepted.clone());
        std::thread::spawn(move || {
            while accepted.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
            let ids = docker_cli(&["ps", "-aq", "--no-trunc", "--filter", &format!("label=dev.enclave.scope={scope}")]);
            for id in ids.lines() {
                seen.push((format!("inspect {id}"), docker_cli(&["inspect", id]).into_bytes()));
                let execs = docker_cli(&["inspect", "-f", "{{range .ExecIDs}}{{.}} {{end}}", id]);
                for exec in execs.split_whitespace() {
                    let out = std::process::Command::new("curl")
                        .args(["-s", "--unix-socket", "/var/run/docker.sock", &format!("http://d/exec/{exec}/json")])
                        .output()
                        .unwrap();
                    seen.push((format!("exec {exec}"), out.stdout));
                }
                for dir in [
                    format!("/run/containerd/io.containerd.runtime.v2.task/moby/{id}"),
                    format!("/var/lib/docker/containers/{id}"),
                ] {
                    let out = std::process::Command::new("sh")
                        .args(["-c", &format!("find {dir} -type f -size -4M -exec cat {{}} + 2>/dev/null")])
                        .output()
                        .unwrap();
                    seen.push((dir, out.stdout));
                }
            }
            // Every host process's environment and arguments (runsc, the shim, dockerd).
            let out = std::process::Command::new("sh")
                .args(["-c", "for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; echo; done"])
                .output()
                .unwrap();
            seen.push(("host /proc".into(), out.stdout));
            *results.lock().unwrap() = seen;
            done_tx.send(()).unwrap();
        })
    };
    let plan = plan_with(
        "rt-inspect",
        &repo_spec(port, "  command: [true]\n  quotas:\n    deadline: 10m\n"),
        &loopback_policy(),
    );
    let cancel = async move {
        let _ = tokio::task::spawn_blocking(move || done_rx.recv()).await;
    };
    let outcome = run_with_cancel(&rt, backend.clone(), &plan, cancel);
    inspector.join().unwrap();
    let results = results.lock().unwrap().clone();
    assert!(
        results.iter().any(|(what, body)| what.starts_with("exec ") && !body.is_empty()),
        "the clone exec was inspected"
    );
    for (what, body) in &results {
        assert_eq!(leaks(body), Vec::<&str>::new(), "{what}");
    }
    assert!(
        matches!(&outcome.result.status, SessionStatus::Killed { reason: enclave_core::KillReason::Cancelled, .. }),
        "{:#?}",
        outcome.result.status
    );
    assert_outcome_clean(&outcome);
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

/// A full orchestrated run, cancelled when `cancel` completes.
fn run_with_cancel(
    rt: &tokio::runtime::Runtime,
    backend: Arc<enclave_docker::DockerBackend>,
    plan: &enclave_core::Plan,
    cancel: impl std::future::Future<Output = ()> + Send + 'static,
) -> Outcome {
    use futures::FutureExt as _;
    let orchestrator = enclave_core::Orchestrator::new(backend, Arc::new(enclave_core::WallClock), secrets());
    let mut audit = enclave_core::MemoryAuditSink::default();
    let mut events = Vec::new();
    let mut listener = |e: &enclave_core::TimedEvent| events.push(e.clone());
    let result = rt
        .block_on(orchestrator.run(enclave_core::SessionRun {
            session: session_id(&plan.name),
            plan,
            audit: &mut audit,
            listener: &mut listener,
            cancel: cancel.boxed(),
            artifacts: None,
        }))
        .unwrap();
    let jsonl: String = audit.records.iter().map(enclave_core::to_jsonl_line).collect();
    assert!(enclave_core::verify_jsonl(jsonl.as_bytes()).is_ok(), "audit chain verifies");
    Outcome { result, events, audit: audit.records }
}

/// Hostile repository content: symlinks to the clone container's scratch files (the CA
/// bundle, `$HOME`) and to `/proc` files, a `.gitattributes` that asks for filters,
/// smudge/clean drivers and encodings no configuration defines, and a directory link
/// under which a later path would be written. The workload reads every link and the
/// whole `.git` back as artifacts; nothing of the credential is there.
#[test]
fn redteam_hostile_links_and_attributes_leak_nothing() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca, "default")) else { return };
    let server = rt.block_on(GitServer::start_with(
        ca.server_config(&["git.enclave.test"]),
        "x-access-token",
        TOKEN,
        "hostile links\n",
        |work| {
            use std::os::unix::fs::symlink;
            for (name, target) in [
                ("ca", "/tmp/enclave-ca.pem"),
                ("home", "/tmp/enclave-home"),
                ("environ", "/proc/self/environ"),
                ("parent-environ", "/proc/1/environ"),
                ("fd0", "/proc/self/fd/0"),
                ("tmp", "/tmp"),
            ] {
                symlink(target, work.join(name)).unwrap();
            }
            std::fs::write(work.join(".gitattributes"), "* filter=steal diff=steal merge=steal ident\n").unwrap();
            std::fs::write(work.join("note.txt"), "$Id$\n").unwrap();
        },
    ));
    let rest = r#"  steps:
    - name: collect
      run: |
        mkdir -p out
        for l in ca home environ parent-environ fd0 tmp; do
          echo "== $l -> $(readlink $l)"; cat $l 2>&1; ls -la $l/ 2>&1
        done > out/links.txt
        tar cf out/dotgit.tar .git
        cat note.txt > out/note.txt
  artifacts: [out]
"#;
    let plan = plan_with("rt-links", &repo_spec(server.addr.port(), rest), &loopback_policy());
    let mut kept = KeptBundle::default();
    let outcome = run_collecting(&rt, backend.clone(), &plan, secrets(), None, Some(&mut kept));
    assert_eq!(outcome.result.status, SessionStatus::Succeeded, "{:#?}", outcome.result);
    assert_eq!(withheld_for_secrets(&outcome), Vec::<String>::new(), "a leaked file hides as withheld");
    let tar = kept.0.expect("artifacts").tar;
    let text = String::from_utf8_lossy(&tar).to_string();
    assert!(text.contains("== ca -> /tmp/enclave-ca.pem"), "the links were checked out as links");
    assert_eq!(leaks(&tar), Vec::<&str>::new(), "the credential reached the workload");
    assert_outcome_clean(&outcome);
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}
