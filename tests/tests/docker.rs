//! The Docker backend against a real daemon with gVisor: every containment claim is
//! tried from inside the sandbox, and every kill reason is triggered for real.
//!
//! Needs Docker with the `enclave-runsc` runtime and the `enclave/base:latest` image
//! (`scripts/setup-docker.sh`; `.ci/run` runs it). Without Docker these tests fail under
//! `CI=true` and are skipped, loudly, elsewhere. Containers run with no network at all.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use enclave_core::{Backend, KillReason, MemorySecrets, NoSecrets, Policy, Secret, SessionStatus, to_jsonl_line};
use enclave_docker::DockerConfig;
mod common;

use common::docker::*;

#[test]
fn docker_containment_holds_from_inside_the_sandbox() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    // Each probe prints PASS or FAIL; the workload never decides the test's outcome alone.
    let probes = r#"
      run: |
        check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }
        check uid '[ "$(id -u)" = 65534 ] && [ "$(id -g)" = 65534 ]'
        check gvisor 'dmesg 2>/dev/null | grep -q gVisor'
        check readonly-root '! touch /probe 2>/dev/null'
        check readonly-etc '! sh -c "echo x >> /etc/passwd" 2>/dev/null'
        check no-caps 'grep -q "^CapEff:[[:space:]]*0000000000000000" /proc/self/status'
        check no-bounding-caps 'grep -q "^CapBnd:[[:space:]]*0000000000000000" /proc/self/status'
        check no-new-privs-or-unreported 'grep -q "^NoNewPrivs:[[:space:]]*1" /proc/self/status || ! grep -q "^NoNewPrivs" /proc/self/status'
        check only-loopback '[ "$(grep -c : /proc/net/dev)" -le 1 ] && ! grep -q eth /proc/net/dev'
        check workspace-writable 'echo ok > /workspace/f && [ "$(cat /workspace/f)" = ok ]'
        check tmp-writable 'echo ok > /tmp/f'
        check no-docker-socket '[ ! -e /var/run/docker.sock ] && [ ! -e /run/docker.sock ]'
        check no-service-token '[ ! -e /var/run/secrets/kubernetes.io ]'
        check env-from-plan-only '[ "$PLAN_VAR" = planned ] && [ -z "$HOSTNAME_LEAK" ]'
"#;
    let plan = spec(
        "containment",
        &format!("  env:\n    PLAN_VAR: planned\n  steps:\n    - name: probes\n{}", probes.trim_start_matches('\n')),
    );
    let out = run(&rt, backend.clone(), &plan, Arc::new(NoSecrets), None);
    let lines = out.stdout();
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "containment probes failed: {failed:?}\nall output: {lines:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("PASS")).count(), 13, "{lines:?}");
    assert_eq!(out.result.status, SessionStatus::Succeeded);
    assert!(!out.result.simulated);
    assert_eq!(leftovers(&rt, &backend, &out.result.session), Vec::<String>::new(), "teardown removed everything");
}

#[test]
fn docker_steps_run_in_order_in_one_sandbox_and_stop_at_the_first_failure() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let plan = spec(
        "steps",
        "  steps:\n    - name: write\n      run: echo one > /workspace/state\n    - name: fail\n      run: cat /workspace/state; exit 3\n    - name: never\n      run: echo must-not-run\n",
    );
    let out = run(&rt, backend, &plan, Arc::new(NoSecrets), None);
    assert_eq!(out.result.status, SessionStatus::Failed { exit_code: 3 });
    let steps: Vec<(String, i32)> = out.result.steps.iter().map(|s| (s.name.clone(), s.exit_code)).collect();
    assert_eq!(steps, vec![("write".to_owned(), 0), ("fail".to_owned(), 3)]);
    let lines = out.stdout();
    assert!(lines.contains(&"one".to_owned()), "step 2 saw step 1's file: {lines:?}");
    assert!(!lines.iter().any(|l| l.contains("must-not-run")));
}

#[test]
fn docker_deadline_kills_with_deadline_exceeded() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let plan = spec("deadline", "  command: [sleep, \"600\"]\n  quotas:\n    deadline: 2s\n");
    let out = run(&rt, backend.clone(), &plan, Arc::new(NoSecrets), None);
    assert_eq!(out.result.kill_reason, Some(KillReason::DeadlineExceeded), "{:?}", out.result.status);
    assert_eq!(leftovers(&rt, &backend, &out.result.session), Vec::<String>::new());
}

#[test]
fn docker_cancel_kills_with_cancelled_and_cleans_up() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let plan = spec("cancel", "  command: [sleep, \"600\"]\n");
    let out = run(&rt, backend.clone(), &plan, Arc::new(NoSecrets), Some(std::time::Duration::from_secs(1)));
    assert_eq!(out.result.kill_reason, Some(KillReason::Cancelled));
    assert_eq!(leftovers(&rt, &backend, &out.result.session), Vec::<String>::new());
}

#[test]
fn docker_output_over_log_bytes_is_cut_and_killed() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let plan = spec(
        "logs",
        "  command: [sh, -c, \"yes enclave | head -c 5000000; sleep 30\"]\n  quotas:\n    logBytes: 64Ki\n",
    );
    let out = run(&rt, backend, &plan, Arc::new(NoSecrets), None);
    assert_eq!(out.result.kill_reason, Some(KillReason::LogLimitExceeded), "{:?}", out.result.status);
    assert!(out.result.log_truncated);
    let kept: usize = out.stdout().iter().filter(|l| !l.starts_with("[enclave]")).map(|l| l.len() + 1).sum();
    assert!(kept <= 64 * 1024 + 1, "kept {kept} bytes");
    assert!(out.stdout().iter().any(|l| l.starts_with("[enclave] output truncated")));
}

#[test]
fn docker_secret_values_are_redacted_from_streamed_output() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let secret = "canary-Secret-4f1e2d3c";
    let mut secrets = MemorySecrets::default();
    secrets.insert("canary", Secret::new(secret));
    // The workload builds the value itself, so the spec holds no secret: the test is
    // about what comes back out.
    let plan =
        spec("redact", "  command: [sh, -c, \"a=canary-Secret; b=4f1e2d3c; echo $a-$b; echo $a-$b | base64\"]\n");
    let out = run(&rt, backend, &plan, Arc::new(secrets), None);
    assert_eq!(out.result.status, SessionStatus::Succeeded);
    let everything = format!(
        "{}{}",
        serde_json::to_string(&out.events).unwrap(),
        out.audit.iter().map(to_jsonl_line).collect::<String>()
    );
    assert!(!everything.contains(secret), "secret leaked: {:?}", out.stdout());
    assert!(out.stdout().iter().filter(|l| l.contains("***")).count() >= 2, "{:?}", out.stdout());
}

#[test]
fn docker_refuses_to_run_without_gvisor_unless_host_kernel_is_requested() {
    let rt = runtime();
    let missing = DockerConfig { gvisor_runtime: "enclave-runsc-not-registered".into(), ..DockerConfig::default() };
    let Some(backend) = backend(&rt, missing) else { return };
    let plan = spec("nogvisor", "  command: [\"true\"]\n");
    let out = run(&rt, backend.clone(), &plan, Arc::new(NoSecrets), None);
    match &out.result.status {
        SessionStatus::Errored { message } => assert!(message.contains("--isolation host-kernel"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(leftovers(&rt, &backend, &out.result.session), Vec::<String>::new());

    let policy =
        Policy { isolation: enclave_core::Isolation::HostKernel, permit_weaker_isolation: true, ..Policy::default() };
    // Under runc /proc reports NoNewPrivs (gVisor's does not), so the flag is proven here.
    let plan = plan_with(
        "hostkernel",
        "  command: [sh, -c, \"dmesg 2>/dev/null | grep -c gVisor || true; grep NoNewPrivs /proc/self/status\"]\n",
        &policy,
    );
    let out = run(&rt, backend, &plan, Arc::new(NoSecrets), None);
    assert_eq!(out.result.status, SessionStatus::Succeeded);
    assert_eq!(out.result.isolation, enclave_core::Isolation::HostKernel);
    assert!(out.result.warnings.iter().any(|w| w.contains("host-kernel")));
    assert!(out.audit.iter().any(|r| r.event.type_name() == "isolation_weakened"));
    let lines = out.stdout();
    assert_eq!(lines.first().map(String::as_str), Some("0"), "runc: no gVisor kernel: {lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')), "{lines:?}");
}

#[test]
fn docker_reaps_orphans_of_sessions_that_are_not_live() {
    let rt = runtime();
    // A scope of its own: the reaper must not touch sessions of tests running alongside.
    let scope = DockerConfig { scope: format!("reaper-test-{}", std::process::id()), ..DockerConfig::default() };
    let Some(backend) = backend(&rt, scope) else { return };
    // Launch without an orchestrator, as a server that crashed mid-session would leave it.
    let plan = spec("orphan", "  command: [sleep, \"600\"]\n");
    let orphan = session_id("orphan");
    let (events, _receiver) = futures::channel::mpsc::unbounded();
    rt.block_on(backend.launch(&orphan, &plan, &NoSecrets, events)).unwrap();
    assert_eq!(leftovers(&rt, &backend, &orphan).len(), 3, "container and two volumes");
    let live = session_id("live");
    let reaped = rt.block_on(backend.reap_orphans(std::slice::from_ref(&live))).unwrap();
    assert!(reaped.contains(&orphan), "{reaped:?}");
    assert_eq!(leftovers(&rt, &backend, &orphan), Vec::<String>::new());
}

#[test]
fn docker_memory_bomb_is_oom_killed_every_time() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    // Docker's OOMKilled flag alone is not reliable under gVisor (docs/docker-gvisor-notes.md):
    // 20 runs of a string-doubling bomb (it reaches 64 MiB in about a second) must all be
    // classified oom_killed, and none may report surviving.
    let awk = spec(
        "membomb",
        "  command: [awk, \"BEGIN { s = \\\"xxxxxxxxxxxxxxxx\\\"; while (1) s = s s; print \\\"survived\\\" }\"]\n  quotas:\n    memory: 64Mi\n    deadline: 5m\n",
    );
    // The pipe bomb of the dependency notes grows slowly under gVisor (~30 s): run it once.
    let pipe = spec(
        "pipebomb",
        "  command: [sh, -c, \"x=$(yes | head -c 400000000); echo survived\"]\n  quotas:\n    memory: 64Mi\n    deadline: 5m\n",
    );
    let mut reasons = Vec::new();
    for plan in std::iter::repeat_n(&awk, 20).chain([&pipe]) {
        let out = run(&rt, backend.clone(), plan, Arc::new(NoSecrets), None);
        assert!(!out.stdout().contains(&"survived".to_owned()));
        assert_eq!(leftovers(&rt, &backend, &out.result.session), Vec::<String>::new());
        reasons.push(out.result.kill_reason);
    }
    assert!(reasons.iter().all(|r| *r == Some(KillReason::OomKilled)), "{reasons:?}");
}

#[test]
fn docker_memory_use_below_the_limit_and_plain_failures_are_not_oom() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    // Half the limit, held while it exits 0.
    let half = spec(
        "memhalf",
        "  command: [sh, -c, \"x=$(yes | head -c 24000000); echo ${#x}\"]\n  quotas:\n    memory: 128Mi\n",
    );
    let out = run(&rt, backend.clone(), &half, Arc::new(NoSecrets), None);
    assert_eq!(out.result.status, SessionStatus::Succeeded, "{:?}", out.stdout());
    let failing = spec("exit2", "  command: [sh, -c, \"exit 2\"]\n  quotas:\n    memory: 64Mi\n");
    let out = run(&rt, backend, &failing, Arc::new(NoSecrets), None);
    assert_eq!(out.result.status, SessionStatus::Failed { exit_code: 2 });
}

#[test]
fn docker_fork_storm_is_pids_exceeded() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let plan = spec(
        "pids",
        "  command: [sh, -c, \"i=0; while [ $i -lt 300 ]; do sleep 60 & i=$((i+1)); done; wait\"]\n  quotas:\n    pids: 64\n    deadline: 2m\n",
    );
    for _ in 0..5 {
        let out = run(&rt, backend.clone(), &plan, Arc::new(NoSecrets), None);
        assert_eq!(
            out.result.kill_reason,
            Some(KillReason::PidsExceeded),
            "{:?} {:?}",
            out.result.status,
            out.stdout()
        );
        assert_eq!(leftovers(&rt, &backend, &out.result.session), Vec::<String>::new());
    }
}

#[test]
fn docker_filling_the_workspace_or_tmp_is_disk_exceeded() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    for target in ["/workspace/fill", "/tmp/fill"] {
        let plan = spec(
            "disk",
            &format!(
                "  command: [sh, -c, \"dd if=/dev/zero of={target} bs=1M count=64; sleep 60\"]\n  quotas:\n    disk: 8Mi\n    deadline: 2m\n"
            ),
        );
        let out = run(&rt, backend.clone(), &plan, Arc::new(NoSecrets), None);
        assert_eq!(
            out.result.kill_reason,
            Some(KillReason::DiskExceeded),
            "{target}: {:?} {:?}",
            out.result.status,
            out.stdout()
        );
        assert_eq!(leftovers(&rt, &backend, &out.result.session), Vec::<String>::new());
    }
}

#[test]
fn docker_artifacts_are_copied_out_without_following_links_and_capped() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let policy = Policy { artifact_bytes: 1 << 20, ..Policy::default() };
    let plan = plan_with(
        "artifacts",
        r#"  steps:
    - name: build
      run: |
        mkdir -p dist/sub reports
        echo hello > dist/a.txt
        echo nested > dist/sub/b.txt
        ln -s a.txt dist/inside
        ln -s /etc/passwd dist/outside
        ln -s ../../../etc/shadow dist/climb
        head -c 3000000 /dev/zero > dist/sub/big.bin
        echo '<testsuite/>' > reports/junit.xml
  artifacts:
    - dist
    - reports/junit.xml
    - missing
  quotas:
    disk: 8Mi
"#,
        &policy,
    );
    let mut kept = KeptBundle::default();
    let out = run_collecting(&rt, backend.clone(), &plan, Arc::new(NoSecrets), None, Some(&mut kept));
    assert_eq!(out.result.status, SessionStatus::Succeeded, "{:?}", out.stdout());
    let files: Vec<&str> = out.result.artifacts.iter().map(|f| f.path.as_str()).collect();
    for want in ["dist/a.txt", "dist/sub/b.txt", "dist/inside", "reports/junit.xml"] {
        assert!(files.contains(&want), "{want} missing from {files:?}");
    }
    let skipped: Vec<(&str, &str)> =
        out.result.artifacts_skipped.iter().map(|s| (s.path.as_str(), s.reason.as_str())).collect();
    let reason = |path: &str| skipped.iter().find(|(p, _)| *p == path).map(|(_, r)| *r).unwrap_or("");
    assert!(reason("dist/outside").contains("outside the workspace"), "{skipped:?}");
    assert!(reason("dist/climb").contains("outside the workspace"), "{skipped:?}");
    assert!(reason("dist/sub/big.bin").contains("size cap"), "{skipped:?}");
    assert_eq!(reason("missing"), "not found in the workspace", "{skipped:?}");
    // The bundle holds exactly what the result lists, and no content from outside.
    let bundle = kept.0.expect("bundle stored");
    let mut archive = tar::Archive::new(bundle.tar.as_slice());
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut content = String::new();
        if entry.header().entry_type().is_file() {
            std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
            assert!(!content.contains("root:"), "host or image files leaked into {name}");
        }
        names.push(name);
    }
    assert!(names.contains(&"dist/a.txt".to_owned()) && !names.iter().any(|n| n.ends_with("outside")), "{names:?}");
    assert!(out.audit.iter().any(|r| r.event.type_name() == "artifacts_collected"));
    assert_eq!(leftovers(&rt, &backend, &out.result.session), Vec::<String>::new());
}

#[test]
fn docker_reaps_sessions_whose_owner_process_is_gone_and_keeps_live_ones() {
    let rt = runtime();
    let scope = format!("owner-test-{}", std::process::id());
    // A pid far above pid_max: no such process can exist.
    let dead = DockerConfig { scope: scope.clone(), owner_pid: 999_999_999, ..DockerConfig::default() };
    let Some(dead_owner) = backend(&rt, dead) else { return };
    let Some(this_process) = backend(&rt, DockerConfig { scope, ..DockerConfig::default() }) else { return };
    let plan = spec("abandoned", "  command: [sleep, \"600\"]\n");
    let (abandoned, live) = (session_id("abandoned"), session_id("alive"));
    let (events, _rx1) = futures::channel::mpsc::unbounded();
    rt.block_on(dead_owner.launch(&abandoned, &plan, &NoSecrets, events)).unwrap();
    let (events, _rx2) = futures::channel::mpsc::unbounded();
    rt.block_on(this_process.launch(&live, &plan, &NoSecrets, events)).unwrap();
    let reaped = rt.block_on(this_process.reap_abandoned()).unwrap();
    assert_eq!(reaped, vec![abandoned.clone()]);
    assert_eq!(leftovers(&rt, &this_process, &abandoned), Vec::<String>::new());
    assert_eq!(leftovers(&rt, &this_process, &live).len(), 3, "the live session is untouched");
    rt.block_on(this_process.teardown(&live)).unwrap();
    assert_eq!(leftovers(&rt, &this_process, &live), Vec::<String>::new());
}

#[test]
fn docker_a_step_past_its_timeout_is_deadline_exceeded() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let plan = spec(
        "steptimeout",
        "  steps:\n    - name: quick\n      run: \"true\"\n    - name: hangs\n      run: sleep 600\n      timeout: 1s\n    - name: never\n      run: echo must-not-run\n  quotas:\n    deadline: 5m\n",
    );
    let out = run(&rt, backend.clone(), &plan, Arc::new(NoSecrets), None);
    match &out.result.status {
        SessionStatus::Killed { reason: KillReason::DeadlineExceeded, detail } => {
            assert!(detail.contains("\"hangs\""), "{detail}")
        }
        other => panic!("expected the step timeout to kill the session, got {other:?}"),
    }
    assert!(!out.stdout().iter().any(|l| l.contains("must-not-run")));
    assert_eq!(leftovers(&rt, &backend, &out.result.session), Vec::<String>::new());
}
