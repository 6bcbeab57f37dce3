//! Concurrent launches on one Docker daemon: eight `enclave run --backend docker`
//! processes at once, two of them killed with SIGKILL mid-session. Each launch reaps
//! abandoned sessions while the others create theirs; no session may lose its
//! size-limited volumes to that (Docker would silently recreate them unlimited), and
//! once one more run has reaped the killed ones, nothing of any of them is left.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 8;
const KILLED: [usize; 2] = [2, 5];

fn docker_available() -> bool {
    let ok = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    assert!(ok || std::env::var("CI").as_deref() != Ok("true"), "Docker is required in CI");
    ok
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Every Docker object still labelled with one of these sessions.
fn leftovers(sessions: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for session in sessions {
        let filter = format!("label=dev.enclave.session={session}");
        for (kind, args) in [
            ("container", vec!["ps", "-aq", "--filter", &filter]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
            ("network", vec!["network", "ls", "-q", "--filter", &filter]),
        ] {
            let out = docker(&args);
            if !out.is_empty() {
                found.push(format!("{kind} of {session}: {out}"));
            }
        }
    }
    found
}

#[test]
fn concurrent_launches_with_kills_keep_every_disk_limit_and_leave_nothing() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sessions_dir = dir.path().join("sessions");
    // The workload waits, so the launches and reaps of the others overlap with it, then
    // writes past its 32 MiB disk: only the size-limited volume stops that.
    let spec = dir.path().join("fill.yaml");
    std::fs::write(
        &spec,
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: fill\nspec:\n  image: enclave/base:latest\n  command: [\"sh\", \"-c\", \"sleep 4; dd if=/dev/zero of=/workspace/fill bs=1M count=48 && echo wrote-it-all\"]\n  quotas:\n    disk: 32Mi\n    memory: 256Mi\n    deadline: 3m\n",
    )
    .unwrap();
    let start = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_enclave"))
            .args(["run", name, "--backend", "docker", "--sessions-dir"])
            .arg(&sessions_dir)
            .current_dir(dir.path())
            .env_remove("ENCLAVE_SESSIONS_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn enclave")
    };
    let mut children: Vec<_> = (0..RUNS).map(|_| start(spec.to_str().unwrap())).collect();
    // Kill two once their sessions exist (their audit files are written at the start).
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&sessions_dir).map_or(0, |d| d.count()) < RUNS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    for index in KILLED {
        let _ = children[index].kill();
    }
    let mut failures = Vec::new();
    for (index, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        if KILLED.contains(&index) {
            continue;
        }
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !stdout.contains("disk_exceeded") || stdout.contains("wrote-it-all") {
            failures.push(format!("run {index}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(failures.is_empty(), "a session ran without its disk limit, or failed:\n{}", failures.join("\n---\n"));

    // One more run reaps the two whose process was killed.
    let hello = dir.path().join("hello.yaml");
    std::fs::write(
        &hello,
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: hello\nspec:\n  image: enclave/base:latest\n  command: [\"true\"]\n",
    )
    .unwrap();
    let last = start(hello.to_str().unwrap()).wait_with_output().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    let sessions: Vec<String> = std::fs::read_dir(&sessions_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".audit.jsonl").map(str::to_owned))
        .collect();
    assert_eq!(sessions.len(), RUNS + 1, "{sessions:?}");
    assert_eq!(leftovers(&sessions), Vec::<String>::new());
}
