//! Red team: concurrent `enclave run --backend docker` processes on one daemon, some
//! SIGKILLed at spread-out moments (during the launch, while the holder starts, while the
//! workload runs, during teardown), half of them in allowlist mode (a session network,
//! an egress proxy and host firewall rules). No surviving session may lose its
//! size-limited volumes, and one more run afterwards must reap everything the killed
//! ones left: containers, volumes, networks and host firewall rules. Nothing is sent on
//! any network: the allowlisted name is never asked for.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 6;

fn docker_available() -> bool {
    let ok = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    assert!(ok || std::env::var("CI").as_deref() != Ok("true"), "Docker is required in CI");
    ok
}

fn out(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("command");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Every Docker object or host firewall rule still tagged with one of these sessions.
fn leftovers(sessions: &[String]) -> Vec<String> {
    let rules = out("iptables", &["-w", "-S", "INPUT"]);
    let mut found = Vec::new();
    for session in sessions {
        let filter = format!("label=dev.enclave.session={session}");
        for (kind, args) in [
            ("container", vec!["ps", "-aq", "--filter", &filter]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
            ("network", vec!["network", "ls", "-q", "--filter", &filter]),
        ] {
            let listed = out("docker", &args);
            if !listed.is_empty() {
                found.push(format!("{kind} of {session}: {listed}"));
            }
        }
        if rules.lines().any(|l| l.contains(session.as_str())) {
            found.push(format!("firewall rule of {session}"));
        }
    }
    found
}

/// Removes what a failed run of this test left (the reaper is under test, so the test
/// does not rely on it to clean up).
fn scrub(sessions: &[String]) {
    for session in sessions {
        let filter = format!("label=dev.enclave.session={session}");
        for id in out("docker", &["ps", "-aq", "--filter", &filter]).lines() {
            out("docker", &["rm", "-f", id]);
        }
        for id in out("docker", &["volume", "ls", "-q", "--filter", &filter]).lines() {
            out("docker", &["volume", "rm", "-f", id]);
        }
        for id in out("docker", &["network", "ls", "-q", "--filter", &filter]).lines() {
            out("docker", &["network", "rm", id]);
        }
    }
}

/// Held. Six concurrent runs (three deny mode, three allowlist), three of them SIGKILLed
/// at 0.3 s, 1.5 s and 4.5 s after their start (launch, early run, run/teardown), the
/// kill moments shifted by this process's pid so repeated runs try different ones. Every
/// surviving session stops at its 32 MiB disk, and one more run leaves nothing of any of
/// them, firewall rules included.
#[test]
fn spread_out_kills_of_concurrent_runs_keep_disk_limits_and_leave_nothing() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sessions_dir = dir.path().join("sessions");
    let fill = "[\"sh\", \"-c\", \"sleep 3; dd if=/dev/zero of=/workspace/fill bs=1M count=48 && echo wrote-it-all\"]";
    let deny = dir.path().join("deny.yaml");
    std::fs::write(
        &deny,
        format!("apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: fill\nspec:\n  image: enclave/base:latest\n  command: {fill}\n  quotas:\n    disk: 32Mi\n    memory: 256Mi\n    deadline: 50s\n"),
    )
    .unwrap();
    let allow = dir.path().join("allow.yaml");
    std::fs::write(
        &allow,
        format!("apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: fill-net\nspec:\n  image: enclave/base:latest\n  egress:\n    mode: allowlist\n    allow:\n      - host: never-asked.enclave.test\n        ports: [443]\n  command: {fill}\n  quotas:\n    disk: 32Mi\n    memory: 256Mi\n    deadline: 50s\n"),
    )
    .unwrap();
    let start = |spec: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_enclave"))
            .args(["run"])
            .arg(spec)
            .args(["--backend", "docker", "--sessions-dir"])
            .arg(&sessions_dir)
            .current_dir(dir.path())
            .env_remove("ENCLAVE_SESSIONS_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn enclave")
    };
    let shift = u64::from(std::process::id() % 7) * 100;
    // (index, kill after): the others run to the end.
    let kills: [(usize, u64); 3] = [(1, 300 + shift), (2, 1500 + shift), (4, 4500 + shift)];
    let began = Instant::now();
    let mut children: Vec<_> = (0..RUNS).map(|i| start(if i % 2 == 0 { &deny } else { &allow })).collect();
    let mut pending: Vec<(usize, u64)> = kills.to_vec();
    while !pending.is_empty() && began.elapsed() < Duration::from_secs(20) {
        let now = u64::try_from(began.elapsed().as_millis()).unwrap();
        pending.retain(|(index, at)| {
            if now >= *at {
                let _ = children[*index].kill();
                false
            } else {
                true
            }
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut failures = Vec::new();
    for (index, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        if kills.iter().any(|(k, _)| *k == index) {
            continue;
        }
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        if !stdout.contains("disk_exceeded") || stdout.contains("wrote-it-all") {
            failures.push(format!("run {index}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
        }
    }
    let hello = dir.path().join("hello.yaml");
    std::fs::write(
        &hello,
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: hello\nspec:\n  image: enclave/base:latest\n  command: [\"true\"]\n",
    )
    .unwrap();
    let last = start(&hello).wait_with_output().unwrap();
    let sessions: Vec<String> = std::fs::read_dir(&sessions_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".audit.jsonl").map(str::to_owned))
        .collect();
    let left = leftovers(&sessions);
    scrub(&sessions);
    assert!(failures.is_empty(), "a session ran without its disk limit, or failed:\n{}", failures.join("\n---\n"));
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    assert_eq!(left, Vec::<String>::new(), "after one more run (kills at {kills:?} ms)");
}
