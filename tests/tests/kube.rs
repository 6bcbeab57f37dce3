//! The Kubernetes backend against a fake API server in the test process (no cluster,
//! no socket): success, OOM, deadline, cancel, API conflicts and server errors, a
//! dropped watch, teardown and orphan reaping; and parity with the simulator on every
//! example session wherever the backend can derive the outcome.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::fake_kube::{FakeKube, PodScript};
use enclave_core::WallClock;
use enclave_core::{
    Backend, CloneStage, MemoryAuditSink, MemorySecrets, NoSecrets, Orchestrator, Plan, Policy, Secret, SecretStore,
    SessionEvent, SessionId, SessionResult, SessionRun, Stream, TimedEvent,
};
use enclave_egress::RelayRegistry;
use enclave_kube::{KubeBackend, KubeConfig};
use enclave_sim::SimBackend;
use futures::FutureExt as _;

/// Guards against a hang turning into a stuck CI job; never a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn example(name: &str) -> Plan {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/sessions").join(name);
    let parsed = enclave_spec::parse(name, &std::fs::read(path).unwrap()).unwrap();
    enclave_core::plan(&parsed.spec, &Policy::default()).unwrap()
}

fn session(n: &str) -> SessionId {
    SessionId::new(format!("ses-kube-{n}")).unwrap()
}

struct Outcome {
    result: SessionResult,
    events: Vec<TimedEvent>,
}

async fn run_with(
    fake: &FakeKube,
    plan: &Plan,
    id: &SessionId,
    secrets: Arc<dyn SecretStore>,
    cancel: futures::future::BoxFuture<'static, ()>,
) -> Outcome {
    // What the egress proxy Deployment does when a clone step reports its end: revoke,
    // and have the revocation recorded through the relay (tests/tests/kube_egress.rs
    // runs the real proxy and relay).
    let relay = RelayRegistry::new();
    let proxy = relay.clone();
    fake.on_clone_done(move |session| {
        let (proxy, session) = (proxy.clone(), SessionId::new(session).expect("session id"));
        async move {
            let taken = proxy.record(&session, enclave_core::BackendEvent::CloneReachRevoked).await;
            assert!(taken, "the relay offers {session}");
        }
        .boxed()
    });
    let backend = Arc::new(KubeBackend::new(fake.client(), KubeConfig::default()).with_relay(relay));
    run_on(backend, plan, id, secrets, cancel).await
}

/// Runs `plan` on `backend` to its end (bounded by `HANG_GUARD`).
async fn run_on(
    backend: Arc<KubeBackend>,
    plan: &Plan,
    id: &SessionId,
    secrets: Arc<dyn SecretStore>,
    cancel: futures::future::BoxFuture<'static, ()>,
) -> Outcome {
    let orchestrator = Orchestrator::new(backend, Arc::new(WallClock), secrets);
    let mut audit = MemoryAuditSink::default();
    let mut events = Vec::new();
    let mut listener = |e: &TimedEvent| events.push(e.clone());
    let run = orchestrator.run(SessionRun {
        session: id.clone(),
        plan,
        audit: &mut audit,
        listener: &mut listener,
        cancel,
        artifacts: None,
    });
    let result = tokio::time::timeout(HANG_GUARD, run).await.expect("session ended").expect("orchestrator");
    Outcome { result, events }
}

async fn run(fake: &FakeKube, plan: &Plan, id: &SessionId) -> Outcome {
    run_with(fake, plan, id, Arc::new(NoSecrets), futures::future::pending().boxed()).await
}

fn kill_reason(result: &SessionResult) -> Option<String> {
    result.kill_reason.map(|r| r.to_string())
}

fn all_gone(fake: &FakeKube) {
    for kind in ["jobs", "pods", "secrets", "networkpolicies"] {
        assert_eq!(fake.names(kind), Vec::<String>::new(), "{kind} left behind");
    }
}

#[tokio::test]
async fn kube_session_succeeds_streams_its_log_and_creates_the_policy_first() {
    let fake = FakeKube::new(PodScript::Exit(0), None, b"hello from the pod\n".to_vec());
    let out = run(&fake, &example("hello.yaml"), &session("ok")).await;
    assert_eq!(out.result.status.name(), "succeeded", "{:?}", out.result);
    assert!(out.events.iter().any(|e| matches!(&e.event,
        SessionEvent::Log { stream: Stream::Stdout, line } if line == "hello from the pod")));
    let creates: Vec<String> = fake.calls().into_iter().filter(|c| c.method == "POST").map(|c| c.kind).collect();
    assert_eq!(creates, vec!["networkpolicies", "jobs"], "the pod never exists before its NetworkPolicy");
    all_gone(&fake);
}

#[tokio::test]
async fn kube_oom_killed_container_is_oom_killed() {
    let fake = FakeKube::new(PodScript::OomKilled, None, Vec::new());
    let out = run(&fake, &example("killed-oom.yaml"), &session("oom")).await;
    assert_eq!(kill_reason(&out.result).as_deref(), Some("oom_killed"), "{:?}", out.result.status);
    all_gone(&fake);
}

#[tokio::test]
async fn kube_job_deadline_is_deadline_exceeded_not_a_lost_pod() {
    // The Job controller deletes the pod when activeDeadlineSeconds passes; that
    // deletion must not read as infrastructure loss.
    let fake = FakeKube::new(PodScript::DeadlineExceeded, None, Vec::new());
    let out = run(&fake, &example("killed-deadline.yaml"), &session("deadline")).await;
    assert_eq!(kill_reason(&out.result).as_deref(), Some("deadline_exceeded"), "{:?}", out.result.status);
    all_gone(&fake);
}

#[tokio::test]
async fn kube_emptydir_eviction_is_disk_exceeded() {
    let fake = FakeKube::new(PodScript::EvictedForDisk, None, Vec::new());
    let out = run(&fake, &example("killed-disk.yaml"), &session("disk")).await;
    assert_eq!(kill_reason(&out.result).as_deref(), Some("disk_exceeded"), "{:?}", out.result.status);
}

#[tokio::test]
async fn kube_cancel_deletes_the_job_and_is_cancelled() {
    let fake = FakeKube::new(PodScript::RunsUntilKilled, None, Vec::new());
    let running = fake.clone();
    let cancel = async move { running.running().await }.boxed();
    let out = run_with(&fake, &example("hello.yaml"), &session("cancel"), Arc::new(NoSecrets), cancel).await;
    assert_eq!(kill_reason(&out.result).as_deref(), Some("cancelled"), "{:?}", out.result.status);
    let job_deletes = fake.calls().into_iter().filter(|c| c.method == "DELETE" && c.kind == "jobs").count();
    assert!(job_deletes >= 1, "the kill deletes the Job");
    all_gone(&fake);
}

#[tokio::test]
async fn kube_cancel_at_once_ends_the_session_even_before_its_pod_runs() {
    // The cancel is already due when the orchestrator starts waiting: the kill may
    // land before the pod exists, and the session must still end, cancelled and clean.
    let fake = FakeKube::new(PodScript::RunsUntilKilled, None, Vec::new());
    let out = run_with(
        &fake,
        &example("hello.yaml"),
        &session("early"),
        Arc::new(NoSecrets),
        futures::future::ready(()).boxed(),
    )
    .await;
    assert_eq!(kill_reason(&out.result).as_deref(), Some("cancelled"), "{:?}", out.result.status);
    all_gone(&fake);
}

#[tokio::test]
async fn kube_pod_deleted_by_someone_else_is_infra_lost() {
    let fake = FakeKube::new(PodScript::Lost, None, Vec::new());
    let out = run(&fake, &example("hello.yaml"), &session("lost")).await;
    assert_eq!(kill_reason(&out.result).as_deref(), Some("infra_lost"), "{:?}", out.result.status);
    all_gone(&fake);
}

#[tokio::test]
async fn kube_step_reports_give_step_results_and_a_step_timeout_is_deadline_exceeded() {
    let plan = {
        let yaml = "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: steps\nspec:\n  steps:\n    - name: build\n      run: make\n    - name: test\n      run: make test\n      timeout: 5s\n    - name: never\n      run: true\n";
        let parsed = enclave_spec::parse("steps.yaml", yaml.as_bytes()).unwrap();
        enclave_core::plan(&parsed.spec, &Policy::default()).unwrap()
    };
    let fake =
        FakeKube::new(PodScript::ExitWithMessage(137, "step 0 0 3000 0\nstep 1 137 5000 1\n".into()), None, Vec::new());
    let out = run(&fake, &plan, &session("steps")).await;
    assert_eq!(kill_reason(&out.result).as_deref(), Some("deadline_exceeded"), "{:?}", out.result.status);
    assert!(out.result.status.to_string().contains("\"test\""), "the detail names the step: {}", out.result.status);
    let steps: Vec<(String, i32)> = out.result.steps.iter().map(|s| (s.name.clone(), s.exit_code)).collect();
    assert_eq!(steps, vec![("build".to_owned(), 0), ("test".to_owned(), 137)]);
    all_gone(&fake);
}

#[tokio::test]
async fn kube_retries_conflicts_throttling_and_server_errors() {
    let fake = FakeKube::new(PodScript::Exit(0), None, Vec::new());
    fake.fail_next("POST", "networkpolicies", 500, 2);
    fake.fail_next("POST", "jobs", 409, 1);
    fake.fail_next("POST", "jobs", 429, 1);
    fake.fail_next("DELETE", "jobs", 503, 1);
    let out = run(&fake, &example("hello.yaml"), &session("retry")).await;
    assert_eq!(out.result.status.name(), "succeeded", "{:?}", out.result);
    let statuses: Vec<(String, String, u16)> =
        fake.calls().into_iter().filter(|c| c.method != "GET").map(|c| (c.method, c.kind, c.status)).collect();
    for expected in [
        ("POST", "networkpolicies", 500),
        ("POST", "networkpolicies", 201),
        ("POST", "jobs", 409),
        ("POST", "jobs", 429),
        ("POST", "jobs", 201),
        ("DELETE", "jobs", 503),
        ("DELETE", "jobs", 200),
    ] {
        assert!(
            statuses.contains(&(expected.0.to_owned(), expected.1.to_owned(), expected.2)),
            "{expected:?} not in {statuses:?}"
        );
    }
    all_gone(&fake);
}

#[tokio::test]
async fn kube_persistent_server_errors_end_the_session_errored_and_still_clean_up() {
    let fake = FakeKube::new(PodScript::Exit(0), None, Vec::new());
    fake.fail_next("POST", "jobs", 500, 50);
    let out = run(&fake, &example("hello.yaml"), &session("down")).await;
    assert_eq!(out.result.status.name(), "errored", "{:?}", out.result);
    assert_eq!(fake.names("jobs"), Vec::<String>::new());
    // The NetworkPolicy created before the failure is torn down too.
    all_gone(&fake);
}

#[tokio::test]
async fn kube_create_that_already_exists_counts_only_when_it_is_this_sessions() {
    let id = session("exists");
    let fake = FakeKube::new(PodScript::Exit(0), None, Vec::new());
    // An earlier attempt landed (its response was lost): same name, same session label.
    fake.insert("networkpolicies", serde_json::json!({"metadata": {"name": format!("enclave-{id}"),
        "labels": {"enclave.dev/managed": "true", "enclave.dev/session": id.as_str(), "enclave.dev/scope": "default"}}}));
    let out = run(&fake, &example("hello.yaml"), &id).await;
    assert_eq!(out.result.status.name(), "succeeded", "{:?}", out.result);

    let other = session("foreign");
    let fake = FakeKube::new(PodScript::Exit(0), None, Vec::new());
    fake.insert(
        "networkpolicies",
        serde_json::json!({"metadata": {"name": format!("enclave-{other}"),
        "labels": {"enclave.dev/session": "someone-else"}}}),
    );
    let out = run(&fake, &example("hello.yaml"), &other).await;
    assert_eq!(out.result.status.name(), "errored", "someone else's object is never adopted");
    assert!(fake.names("jobs").is_empty(), "no Job without this session's own NetworkPolicy");
}

#[tokio::test]
async fn kube_survives_a_dropped_watch() {
    let fake = FakeKube::new(PodScript::RunsUntilReleased(3), None, Vec::new());
    let driver = fake.clone();
    let plan = example("hello.yaml");
    let id = session("drop");
    let session_run = run(&fake, &plan, &id);
    let interfere = async move {
        driver.running().await;
        // Let the backend's watches open, then cut them all before the pod ends.
        while driver.open_watches() < 2 {
            tokio::task::yield_now().await;
        }
        let watches_before = driver.calls().iter().filter(|c| c.watch).count();
        driver.drop_watches();
        driver.release();
        watches_before
    };
    let (out, watches_before) = tokio::join!(session_run, interfere);
    assert_eq!(out.result.status.to_string(), "failed (exit 3)", "{:?}", out.result);
    let watches_after = fake.calls().iter().filter(|c| c.watch).count();
    assert!(watches_after > watches_before, "the backend re-opened its watches");
}

#[tokio::test]
async fn kube_watch_that_cannot_start_backs_off_and_recovers() {
    let fake = FakeKube::new(PodScript::Exit(4), None, Vec::new());
    // The pod and Job watches' first lists fail; the watchers retry with backoff.
    fake.fail_next("GET", "pods", 500, 2);
    fake.fail_next("GET", "jobs", 503, 1);
    let out = run(&fake, &example("hello.yaml"), &session("watch-retry")).await;
    assert_eq!(out.result.status.to_string(), "failed (exit 4)", "{:?}", out.result);
    let failed_gets = fake.calls().iter().filter(|c| c.method == "GET" && c.status >= 500).count();
    assert_eq!(failed_gets, 3);
    all_gone(&fake);
}

#[tokio::test]
async fn kube_teardown_deletes_everything_it_created_including_the_credential() {
    let mut store = MemorySecrets::default();
    store.insert("billing-repo-deploy-token", Secret::new("ghp_kube_test_token"));
    let fake = FakeKube::new(PodScript::Exit(0), Some(0), b"ok\n".to_vec());
    let id = session("teardown");
    let out = run_with(
        &fake,
        &example("private-repo-credential.yaml"),
        &id,
        Arc::new(store),
        futures::future::pending().boxed(),
    )
    .await;
    assert_eq!(out.result.status.name(), "succeeded", "{:?}", out.result);
    let created: Vec<(String, String)> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.status == 201)
        .map(|c| (c.kind, c.name.unwrap_or_default()))
        .collect();
    assert_eq!(created.len(), 3, "NetworkPolicy, Secret, Job: {created:?}");
    assert_eq!(created[1].0, "secrets");
    for (kind, name) in &created {
        let deleted =
            fake.calls().iter().any(|c| c.method == "DELETE" && &c.kind == kind && c.name.as_ref() == Some(name));
        assert!(deleted, "{kind}/{name} was not deleted");
    }
    all_gone(&fake);
    assert!(out.events.iter().any(|e| matches!(&e.event, SessionEvent::Clone { stage: CloneStage::Finished, .. })));
    // The credential goes as soon as the clone is over, before the Job is torn down.
    let calls = fake.calls();
    let secret_deleted =
        calls.iter().position(|c| c.method == "DELETE" && c.kind == "secrets").expect("secret deleted");
    let job_deleted = calls.iter().position(|c| c.method == "DELETE" && c.kind == "jobs").expect("job deleted");
    assert!(secret_deleted < job_deleted, "the token outlived the clone");
}

#[tokio::test]
async fn kube_reaps_orphans_of_its_own_scope_only() {
    let fake = FakeKube::new(PodScript::Exit(0), None, Vec::new());
    let labels = |session: &str, scope: &str| {
        serde_json::json!({"enclave.dev/managed": "true",
        "enclave.dev/session": session, "enclave.dev/scope": scope})
    };
    fake.insert(
        "jobs",
        serde_json::json!({"metadata": {"name": "enclave-ses-dead", "labels": labels("ses-dead", "default")}}),
    );
    fake.insert(
        "secrets",
        serde_json::json!({"metadata": {"name": "enclave-ses-dead-git", "labels": labels("ses-dead", "default")}}),
    );
    fake.insert(
        "networkpolicies",
        serde_json::json!({"metadata": {"name": "enclave-ses-live", "labels": labels("ses-live", "default")}}),
    );
    fake.insert(
        "networkpolicies",
        serde_json::json!({"metadata": {"name": "enclave-ses-other", "labels": labels("ses-other", "elsewhere")}}),
    );
    let backend = KubeBackend::new(fake.client(), KubeConfig::default());
    let reaped = backend.reap_orphans(&[SessionId::new("ses-live").unwrap()]).await.unwrap();
    assert_eq!(reaped, vec![SessionId::new("ses-dead").unwrap()]);
    assert!(fake.names("jobs").is_empty() && fake.names("secrets").is_empty());
    assert_eq!(fake.names("networkpolicies"), vec!["enclave-ses-live", "enclave-ses-other"]);
}

/// How the fake kubelet plays an example: the first thing its `simulate` block says
/// would stop the workload, as the cluster would report it. `None` where the cluster
/// reports nothing the backend can derive a reason from (a pids breach).
fn script_for(plan: &Plan) -> Option<(PodScript, Vec<u8>)> {
    let sim = plan.simulate.clone().unwrap_or_default();
    let q = plan.quotas;
    let duration = sim.duration_ms.unwrap_or(1_000);
    let bytes = sim.logs.map_or(0, |l| l.bytes);
    let logs: Vec<u8> = (0..bytes).map(|i| if i % 64 == 63 { b'\n' } else { b'x' }).collect();
    if sim.processes.is_some_and(|p| p > q.pids) {
        return None;
    }
    let script = if sim.infra_lost_after_ms.is_some_and(|t| t < duration.min(q.deadline_ms)) {
        PodScript::Lost
    } else if sim.cancel_after_ms.is_some() {
        PodScript::RunsUntilKilled
    } else if duration > q.deadline_ms {
        PodScript::DeadlineExceeded
    } else if sim.peak_memory_bytes.is_some_and(|m| m > q.memory_bytes) {
        PodScript::OomKilled
    } else if sim.disk_written_bytes.is_some_and(|d| d > q.disk_bytes) {
        PodScript::EvictedForDisk
    } else {
        PodScript::Exit(sim.exit_code)
    };
    Some((script, logs))
}

#[tokio::test]
async fn kube_examples_match_the_simulator_wherever_derivable() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/sessions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut compared = 0;
    for (index, file) in files.iter().enumerate() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let plan = example(&name);
        let Some((script, logs)) = script_for(&plan) else { continue };
        let id = SessionId::new(format!("ses-parity-{index}")).unwrap();

        let sim = Orchestrator::new(Arc::new(SimBackend::new()), Arc::new(WallClock), Arc::new(NoSecrets));
        let mut audit = MemoryAuditSink::default();
        let mut ignore = |_: &TimedEvent| {};
        let sim_result = sim
            .run(SessionRun {
                session: id.clone(),
                plan: &plan,
                audit: &mut audit,
                listener: &mut ignore,
                cancel: futures::future::pending().boxed(),
                artifacts: None,
            })
            .await
            .unwrap();

        let mut store = MemorySecrets::default();
        if let Some(credential) = plan.clone_phase().and_then(|c| c.credential.clone()) {
            store.insert(credential, Secret::new("parity-token-value"));
        }
        let cancels = plan.simulate.as_ref().is_some_and(|model| model.cancel_after_ms.is_some());
        let fake = FakeKube::new(script, plan.clone_phase().map(|_| 0), logs);
        let running = fake.clone();
        let cancel =
            if cancels { async move { running.running().await }.boxed() } else { futures::future::pending().boxed() };
        let kube = run_with(&fake, &plan, &id, Arc::new(store), cancel).await.result;

        assert_eq!(
            kube.status.name(),
            sim_result.status.name(),
            "{name}: {:?} vs {:?}",
            kube.status,
            sim_result.status
        );
        assert_eq!(kube.kill_reason, sim_result.kill_reason, "{name}");
        assert_eq!(
            kube.exit_code.filter(|_| kube.status.name() == "failed"),
            sim_result.exit_code.filter(|_| sim_result.status.name() == "failed"),
            "{name}"
        );
        all_gone(&fake);
        compared += 1;
    }
    assert!(compared >= files.len() - 1, "only the pids example may be skipped ({compared} of {})", files.len());
}

#[tokio::test]
async fn kube_without_a_relay_refuses_sessions_that_need_the_egress_proxy() {
    let fake = FakeKube::new(PodScript::Exit(0), Some(0), Vec::new());
    let backend = KubeBackend::new(fake.client(), KubeConfig::default());
    assert_eq!(backend.capabilities().egress_allowlist, enclave_core::Support::NotYet);
    let (events, _rx) = futures::channel::mpsc::unbounded();
    for name in ["allowlist-python-deps.yaml", "binding-github-api.yaml", "private-repo-credential.yaml"] {
        let plan = example(name);
        let err = backend.launch(&session("norelay"), &plan, &NoSecrets, events.clone()).await.expect_err(name);
        assert!(err.to_string().contains("egress proxy"), "{name}: {err}");
    }
    // Nothing was created for them.
    all_gone(&fake);
    let with_relay = KubeBackend::new(fake.client(), KubeConfig::default()).with_relay(RelayRegistry::new());
    assert_eq!(with_relay.capabilities().egress_allowlist, enclave_core::Support::Configured);
}

#[tokio::test]
async fn kube_reports_the_clone_reach_revoked_between_the_clone_and_the_workload() {
    let fake = FakeKube::new(PodScript::Exit(0), Some(0), b"ok\n".to_vec());
    let mut store = MemorySecrets::default();
    store.insert("billing-repo-deploy-token", Secret::new("ghp_kube_test_token"));
    let plan = example("private-repo-credential.yaml");
    let out = run_with(&fake, &plan, &session("revoked"), Arc::new(store), futures::future::pending().boxed()).await;
    assert_eq!(out.result.status.to_string(), "succeeded", "{:?}", out.result);
    let stages: Vec<String> = out
        .events
        .iter()
        .filter_map(|e| match &e.event {
            SessionEvent::Clone { stage, .. } => Some(stage.to_string()),
            SessionEvent::Status { status } => Some(status.to_string()),
            _ => None,
        })
        .collect();
    let at = |what: &str| stages.iter().position(|s| s == what).unwrap_or_else(|| panic!("{what} in {stages:?}"));
    assert!(at("finished") < at("reach_revoked") && at("reach_revoked") < at("running"), "{stages:?}");
}

#[tokio::test]
async fn kube_clone_whose_revocation_is_never_confirmed_ends_the_session_lost() {
    let fake = FakeKube::new(PodScript::RunsUntilKilled, Some(0), Vec::new());
    // A relay, but nothing plays the proxy: the clone's end is never confirmed.
    let config = KubeConfig { clone_revocation_timeout_ms: 200, ..KubeConfig::default() };
    let backend = Arc::new(KubeBackend::new(fake.client(), config).with_relay(RelayRegistry::new()));
    let mut store = MemorySecrets::default();
    store.insert("billing-repo-deploy-token", Secret::new("ghp_kube_test_token"));
    let plan = example("private-repo-credential.yaml");
    let pending = futures::future::pending().boxed();
    let out = run_on(backend, &plan, &session("unconfirmed"), Arc::new(store), pending).await;
    let result = out.result;
    assert_eq!(kill_reason(&result).as_deref(), Some("infra_lost"), "{result:?}");
    all_gone(&fake);
}
