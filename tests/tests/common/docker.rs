//! Helpers for tests against the real Docker backend: a runtime, the backend (or a loud
//! skip outside CI), inline specs, and a full orchestrated run that verifies the audit.

use std::sync::Arc;

use enclave_core::WallClock;
use enclave_core::{
    AuditRecord, MemoryAuditSink, Orchestrator, Policy, SecretStore, SessionEvent, SessionId, SessionResult,
    SessionRun, TimedEvent, to_jsonl_line, verify_jsonl,
};
use enclave_docker::{DockerBackend, DockerConfig};
use futures::FutureExt as _;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The backend, or `None` (with a loud message) when Docker is not available outside CI.
pub fn backend(rt: &tokio::runtime::Runtime, config: DockerConfig) -> Option<Arc<DockerBackend>> {
    match rt.block_on(DockerBackend::connect(config)) {
        Ok(backend) => Some(Arc::new(backend)),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("Docker is required in CI (run scripts/setup-docker.sh): {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: Docker is not available here ({e}); CI runs this test");
            None
        }
    }
}

pub struct Outcome {
    pub result: SessionResult,
    pub events: Vec<TimedEvent>,
    pub audit: Vec<AuditRecord>,
}

impl Outcome {
    pub fn stdout(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match &e.event {
                SessionEvent::Log { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }
}

pub fn spec(name: &str, body: &str) -> enclave_core::Plan {
    plan_with(name, body, &Policy::default())
}

pub fn plan_with(name: &str, body: &str, policy: &Policy) -> enclave_core::Plan {
    let yaml = format!("apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n{body}");
    let parsed = enclave_spec::parse("test.yaml", yaml.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    enclave_core::plan(&parsed.spec, policy).unwrap()
}

pub fn session_id(tag: &str) -> SessionId {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    SessionId::new(format!("ses-test-{tag}-{}", nanos % 1_000_000_000_000)).unwrap()
}

pub fn run(
    rt: &tokio::runtime::Runtime,
    backend: Arc<DockerBackend>,
    plan: &enclave_core::Plan,
    secrets: Arc<dyn SecretStore>,
    cancel_after: Option<std::time::Duration>,
) -> Outcome {
    run_collecting(rt, backend, plan, secrets, cancel_after, None)
}

/// Keeps the artifact bundle in memory.
#[derive(Default)]
pub struct KeptBundle(pub Option<enclave_core::ArtifactBundle>);

impl enclave_core::ArtifactSink for KeptBundle {
    fn store(&mut self, bundle: &enclave_core::ArtifactBundle) -> Result<String, String> {
        self.0 = Some(bundle.clone());
        Ok("memory".into())
    }
}

pub fn run_collecting(
    rt: &tokio::runtime::Runtime,
    backend: Arc<DockerBackend>,
    plan: &enclave_core::Plan,
    secrets: Arc<dyn SecretStore>,
    cancel_after: Option<std::time::Duration>,
    artifacts: Option<&mut KeptBundle>,
) -> Outcome {
    let cancel = match cancel_after {
        Some(after) => Cancel::After(after),
        None => Cancel::Never,
    };
    orchestrate(rt, backend, plan, secrets, cancel, artifacts)
}

/// When a test run is cancelled.
pub enum Cancel {
    Never,
    After(std::time::Duration),
    /// As soon as the orchestrator reports an event for which this is true.
    On(fn(&TimedEvent) -> bool),
}

/// Runs `plan`, cancelled as `cancel` says.
pub fn run_cancelled(
    rt: &tokio::runtime::Runtime,
    backend: Arc<DockerBackend>,
    plan: &enclave_core::Plan,
    secrets: Arc<dyn SecretStore>,
    cancel: Cancel,
) -> Outcome {
    orchestrate(rt, backend, plan, secrets, cancel, None)
}

fn orchestrate(
    rt: &tokio::runtime::Runtime,
    backend: Arc<DockerBackend>,
    plan: &enclave_core::Plan,
    secrets: Arc<dyn SecretStore>,
    cancel: Cancel,
    artifacts: Option<&mut KeptBundle>,
) -> Outcome {
    let orchestrator = Orchestrator::new(backend, Arc::new(WallClock), secrets);
    let session = session_id(&plan.name);
    let mut audit = MemoryAuditSink::default();
    let mut events = Vec::new();
    let (trigger, fired) = futures::channel::oneshot::channel::<()>();
    let (cancel, mut when) = match cancel {
        Cancel::Never => (futures::future::pending().boxed(), None),
        Cancel::After(after) => (async move { tokio::time::sleep(after).await }.boxed(), None),
        Cancel::On(when) => (
            async move {
                let _ = fired.await;
            }
            .boxed(),
            Some((when, trigger)),
        ),
    };
    let mut listener = |e: &TimedEvent| {
        if when.as_ref().is_some_and(|(when, _)| when(e))
            && let Some((_, trigger)) = when.take()
        {
            let _ = trigger.send(());
        }
        events.push(e.clone());
    };
    let result = rt
        .block_on(orchestrator.run(SessionRun {
            session,
            plan,
            audit: &mut audit,
            listener: &mut listener,
            cancel,
            artifacts: artifacts.map(|a| a as &mut dyn enclave_core::ArtifactSink),
        }))
        .unwrap();
    let jsonl: String = audit.records.iter().map(to_jsonl_line).collect();
    assert!(verify_jsonl(jsonl.as_bytes()).is_ok(), "audit chain verifies");
    Outcome { result, events, audit: audit.records }
}

pub fn leftovers(rt: &tokio::runtime::Runtime, backend: &DockerBackend, session: &SessionId) -> Vec<String> {
    rt.block_on(backend.resources(Some(session))).unwrap()
}

/// The policy of tests whose servers (git, binding upstreams, canaries) listen on this
/// host's loopback: the operator's unsafe test setting for exactly those addresses.
pub fn loopback_policy() -> Policy {
    Policy {
        host_loopback: vec!["127.0.0.1/32".parse().unwrap(), "127.0.0.2/32".parse().unwrap()],
        ..Policy::default()
    }
}

/// Artifacts left out for holding a secret value. A test that searches the bundle for a
/// leaked credential must see this empty: a leaked file is withheld from the bundle, so
/// the search alone would pass.
pub fn withheld_for_secrets(outcome: &Outcome) -> Vec<String> {
    outcome
        .result
        .artifacts_skipped
        .iter()
        .filter(|s| s.reason.contains("secret value"))
        .map(|s| format!("{}: {}", s.path, s.reason))
        .collect()
}

/// docker0's own IPv4 address on the host (Docker 20.10 leaves the bridge's IPAM gateway
/// empty, so it is read from the interface).
pub fn docker0() -> std::net::Ipv4Addr {
    let ip = std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "docker0"]).output().unwrap();
    String::from_utf8_lossy(&ip.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("docker0 has an IPv4 address")
}

/// Runs `plan` with the tests' binding secret `api-token` set to `secret`, keeping the
/// artifact bundle; the session must succeed.
pub fn run_binding_session(
    rt: &tokio::runtime::Runtime,
    backend: Arc<DockerBackend>,
    plan: &enclave_core::Plan,
    secret: &str,
) -> (Outcome, KeptBundle) {
    let mut secrets = enclave_core::MemorySecrets::default();
    secrets.insert("api-token", enclave_core::Secret::new(secret));
    let mut kept = KeptBundle::default();
    let outcome = run_collecting(rt, backend, plan, Arc::new(secrets), None, Some(&mut kept));
    assert_eq!(outcome.result.status, enclave_core::SessionStatus::Succeeded, "{:#?}", outcome.result);
    (outcome, kept)
}

/// Docker's own record of containers starting in a scope: `docker events` from now on.
pub struct Starts {
    child: std::process::Child,
}

impl Starts {
    pub fn watch(scope: &str, role: &str) -> Self {
        let child = std::process::Command::new("docker")
            .args(["events", "--filter", "type=container", "--filter", "event=start"])
            .args(["--filter", &format!("label=dev.enclave.scope={scope}")])
            .args(["--filter", &format!("label=dev.enclave.role={role}")])
            .args(["--format", "{{.Actor.Attributes.name}}"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("docker events");
        // `docker events` reports from its subscription on: let it subscribe first.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Self { child }
    }

    /// Every start seen so far (the stream is read after a moment for late events).
    pub fn stop(mut self) -> String {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = self.child.kill();
        let out = self.child.wait_with_output().expect("docker events output");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
