//! Attacks on artifact collection, on Docker + gVisor: the workload and its spec try to
//! make Enclave hold far more than the artifact cap (one big file listed many times, and
//! inside overlapping paths), and to carry a registered secret value out in a file
//! (plain, base64, and in its name). The bundle must hold each workspace file once,
//! stay bounded while it is read, and leave out every file that holds a secret value,
//! naming it (never the value) in the result and the audit.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::docker::*;
use enclave_core::{AuditEvent, MemorySecrets, NoSecrets, Policy, Secret, SessionStatus};
use enclave_docker::DockerConfig;

const BIG: u64 = 48 << 20;

/// Resets this process's peak resident size (`VmHWM`) to its current size.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

/// A `Vm*` figure of this process, in bytes.
fn vm(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

fn names_in(tar: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar);
    archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
}

fn audited_skips(outcome: &Outcome) -> Vec<String> {
    outcome
        .audit
        .iter()
        .find_map(|r| match &r.event {
            AuditEvent::ArtifactsCollected { skipped, .. } => Some(skipped.clone()),
            _ => None,
        })
        .expect("an artifacts_collected record")
}

#[test]
fn artifacts_one_big_file_listed_thirty_times_is_read_once_within_the_cap() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let policy = Policy::default();
    let cap = policy.artifact_bytes;
    let mut listed: Vec<String> = vec!["out/big.bin".into(); 30];
    listed.extend(["./out//big.bin", "out", "out/small.txt", "out/sub", "out/sub/big-copy.bin"].map(String::from));
    let artifacts: String = listed.iter().map(|p| format!("    - {p}\n")).collect();
    let plan = plan_with(
        "artifacts-amplified",
        &format!(
            r#"  steps:
    - name: write
      run: |
        mkdir -p out/sub
        head -c {BIG} /dev/zero > out/big.bin
        echo small > out/small.txt
        ln -s ../big.bin out/sub/big-copy.bin
  artifacts:
{artifacts}  quotas:
    disk: 128Mi
"#
        ),
        &policy,
    );
    let mut kept = KeptBundle::default();
    reset_peak_rss();
    let before = vm("VmRSS:");
    let out = run_collecting(&rt, backend.clone(), &plan, Arc::new(NoSecrets), None, Some(&mut kept));
    let growth = vm("VmHWM:").saturating_sub(before);
    eprintln!("peak RSS grew by {} MiB (cap {} MiB)", growth >> 20, cap >> 20);
    assert_eq!(out.result.status, SessionStatus::Succeeded, "{:?}", out.stdout());
    // The bundle itself (and the copy the test's sink keeps) is at most the cap: what
    // the listings add beyond that must be small buffers, not whole archives.
    assert!(growth < 3 * cap, "peak RSS grew by {growth} bytes for a cap of {cap}");

    let bundle = kept.0.expect("bundle stored");
    assert!(bundle.tar.len() as u64 <= cap, "{} bytes", bundle.tar.len());
    let names = names_in(&bundle.tar);
    assert_eq!(names.iter().filter(|n| *n == "out/big.bin").count(), 1, "{names:?}");
    assert!(names.contains(&"out/small.txt".to_owned()), "{names:?}");
    let files: Vec<&str> = out.result.artifacts.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files.iter().filter(|f| **f == "out/big.bin").count(), 1, "{files:?}");
    let duplicates: Vec<&str> = out
        .result
        .artifacts_skipped
        .iter()
        .filter(|s| s.reason.starts_with("duplicate"))
        .map(|s| s.path.as_str())
        .collect();
    // 29 more listings of the file, its `./` spelling, and `out/small.txt`, `out/sub`
    // and the link inside it once `out` was read whole; `out/big.bin` again inside `out`.
    assert_eq!(duplicates.iter().filter(|p| **p == "out/big.bin").count(), 31, "{duplicates:?}");
    for inside in ["out/small.txt", "out/sub", "out/sub/big-copy.bin"] {
        assert!(duplicates.contains(&inside), "{inside} not refused as a duplicate: {duplicates:?}");
    }
    let audited = audited_skips(&out);
    assert!(audited.iter().filter(|s| s.starts_with("out/big.bin: duplicate")).count() == 31, "{audited:?}");
    assert!(leftovers(&rt, &backend, &out.result.session).is_empty());
}

#[test]
fn artifacts_files_holding_a_registered_secret_value_are_left_out_and_named() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    // Secrets never enter the sandbox; the workload writes a known string, and the
    // run registers that same string as a secret, as if it had got hold of one.
    let value = "artifact-canary-5f0e9b27c4d1";
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("token: {value}"));
    let plan = plan_with(
        "artifacts-secret",
        &format!(
            r#"  steps:
    - name: write
      run: |
        mkdir -p out
        echo "prefix {value} suffix" > out/plain.txt
        echo "{b64}" > out/encoded.txt
        head -c 200000 /dev/zero > out/padded.bin
        printf '{value}' >> out/padded.bin
        echo "nothing secret" > out/clean.txt
        echo x > "out/{value}.txt"
  artifacts: [out]
"#
        ),
        &Policy::default(),
    );
    let mut secrets = MemorySecrets::default();
    secrets.insert("canary", Secret::new(value));
    let mut kept = KeptBundle::default();
    let out = run_collecting(&rt, backend.clone(), &plan, Arc::new(secrets), None, Some(&mut kept));
    assert_eq!(out.result.status, SessionStatus::Succeeded, "{:?}", out.stdout());

    let bundle = kept.0.expect("bundle stored");
    let files: Vec<&str> = out.result.artifacts.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, ["out/clean.txt"], "{:?}", out.result.artifacts_skipped);
    assert_eq!(names_in(&bundle.tar), ["out", "out/clean.txt"]);
    let text = String::from_utf8_lossy(&bundle.tar);
    assert!(!text.contains(value) && !text.contains(&b64), "the value left the sandbox in the bundle");
    let reason = |path: &str| {
        out.result.artifacts_skipped.iter().find(|s| s.path == path).map(|s| s.reason.clone()).unwrap_or_default()
    };
    for path in ["out/plain.txt", "out/encoded.txt", "out/padded.bin"] {
        assert_eq!(reason(path), "it held a secret value", "{:?}", out.result.artifacts_skipped);
    }
    assert!(reason("out/***.txt").contains("name holds a secret value"), "{:?}", out.result.artifacts_skipped);
    let audited = audited_skips(&out);
    for path in ["out/plain.txt", "out/encoded.txt", "out/padded.bin"] {
        assert!(audited.contains(&format!("{path}: it held a secret value")), "{audited:?}");
    }
    let records = serde_json::to_string(&out.audit).unwrap() + &serde_json::to_string(&out.result).unwrap();
    assert!(!records.contains(value) && !records.contains(&b64), "the value reached the audit or the result");
    assert!(leftovers(&rt, &backend, &out.result.session).is_empty());
}
