//! The Docker backend: one hardened container per session under gVisor, the program run
//! through `exec` (one process per step), resource facts read from the host.
//!
//! This file holds the backend's state and its `Backend` impl, which hands each call to
//! its own module: `launch.rs` creates a session's resources, `wait.rs` follows the
//! session to its end, `teardown.rs` kills and removes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::DownloadFromContainerOptionsBuilder;
use enclave_core::{
    ArtifactArchive, Backend, BackendError, BackendEvents, Capabilities, Observation, Plan, RunHandle, SecretStore,
    SessionId, Support, TeardownReport,
};
use futures::StreamExt as _;
use tokio::sync::watch;

use crate::config::DockerConfig;
use crate::container_spec::WORKSPACE;
use crate::error::DockerError;
use crate::reach::Reach;
use crate::session_resources::PhaseContainers;

/// Runs sessions in Docker.
pub struct DockerBackend {
    pub(crate) docker: Docker,
    pub(crate) config: DockerConfig,
    pub(crate) runtimes: Vec<String>,
    pub(crate) runs: Mutex<HashMap<SessionId, Arc<Run>>>,
}

/// A launched session, shared by `wait`, `kill` and the artifact reads. Nothing in it is
/// locked across an await: `kill` must never wait on what `wait` holds (the orchestrator
/// does not poll `wait` while it kills).
pub(crate) struct Run {
    /// The clone and workload containers, described at launch. `wait` creates them, once
    /// the clone is over and its reach revoked for the workload: no process of the
    /// workload image runs before that.
    pub(crate) containers: PhaseContainers,
    /// The session's network and egress proxy (clone step or allowlist mode); the proxy
    /// stops on drop.
    pub(crate) reach: Option<Reach>,
    /// The clone step's credential, resolved from the secret store at launch (the only
    /// place outside the proxy that holds a value), or why it could not be.
    pub(crate) clone_credential: Result<Option<enclave_core::Secret>, String>,
    pub(crate) plan: Plan,
    pub(crate) events: BackendEvents,
    pub(crate) volumes: Vec<PathBuf>,
    /// Set once by `kill`; everything waiting on the run watches it.
    pub(crate) killed: watch::Sender<bool>,
}

impl Run {
    /// The workload container's name.
    pub(crate) fn container(&self) -> &str {
        &self.containers.workload.name
    }
}

/// What the Docker backend enforces today.
pub fn capabilities() -> Capabilities {
    Capabilities {
        executes_code: true,
        gvisor: Support::Enforced,
        hardened_container: Support::Enforced,
        egress_deny: Support::Enforced,
        egress_allowlist: Support::Enforced,
        bindings: Support::Enforced,
        deadline: Support::Enforced,
        memory_kill_reason: Support::Enforced,
        pids_kill_reason: Support::Enforced,
        disk_kill_reason: Support::Enforced,
        log_limit: Support::Enforced,
        clone: Support::Enforced,
        artifacts: Support::Enforced,
    }
}

impl DockerBackend {
    /// Connects to the local daemon (API 1.41 or newer) with `config`.
    pub async fn connect(config: DockerConfig) -> Result<Self, DockerError> {
        let docker = crate::connect::connect().await?;
        let info = docker.info().await.map_err(DockerError::call("info"))?;
        let runtimes = info.runtimes.map(|r| r.into_keys().collect()).unwrap_or_default();
        Ok(Self { docker, config, runtimes, runs: Mutex::new(HashMap::new()) })
    }

    /// Runtimes dockerd has registered.
    pub fn runtimes(&self) -> &[String] {
        &self.runtimes
    }

    /// The runtime gVisor sessions use.
    pub fn gvisor_runtime(&self) -> &str {
        &self.config.gvisor_runtime
    }

    /// The daemon's version and API version.
    pub async fn server_version(&self) -> Result<(String, String), DockerError> {
        let v = self.docker.version().await.map_err(DockerError::call("version"))?;
        Ok((v.version.unwrap_or_default(), v.api_version.unwrap_or_default()))
    }

    /// Whether an image is present locally (no registry is ever used).
    pub async fn has_image(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// The run of a launched session; the lock is held only to clone it out.
    pub(crate) fn run(&self, session: &SessionId) -> Result<Arc<Run>, BackendError> {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(session)
            .cloned()
            .ok_or_else(|| BackendError::Unsupported(format!("session {session} is not running here")))
    }

    pub(crate) fn register(&self, session: &SessionId, run: Run) -> RunHandle {
        let id = run.container().to_owned();
        self.runs.lock().unwrap_or_else(PoisonError::into_inner).insert(session.clone(), Arc::new(run));
        RunHandle { session: session.clone(), id }
    }
}

#[async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    async fn launch(
        &self,
        session: &SessionId,
        plan: &Plan,
        secrets: &dyn SecretStore,
        events: BackendEvents,
    ) -> Result<RunHandle, BackendError> {
        self.launch_session(session, plan, secrets, events).await
    }

    async fn wait(&self, handle: &RunHandle) -> Result<Observation, BackendError> {
        self.wait_session(handle).await
    }

    async fn artifact_archive<'a>(
        &'a self,
        handle: &'a RunHandle,
        path: &'a str,
    ) -> Result<Option<ArtifactArchive<'a>>, BackendError> {
        let run = self.run(&handle.session)?;
        // Docker archives links as links (it never follows them); core drops those that
        // point outside the workspace. The chunks go on as they arrive: core reads only
        // as far as the bundle has room and then drops the stream, which ends the download.
        let options = DownloadFromContainerOptionsBuilder::default().path(&format!("{WORKSPACE}/{path}")).build();
        let archive = self.docker.download_from_container(run.container(), Some(options)).map(|chunk| {
            chunk.map(Vec::from).map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => {
                    "not found in the workspace".to_owned()
                }
                e => format!("could not be read: {e}"),
            })
        });
        Ok(Some(archive.boxed()))
    }

    async fn kill(&self, handle: &RunHandle) -> Result<(), BackendError> {
        self.kill_session(handle).await
    }

    async fn teardown(&self, session: &SessionId) -> Result<TeardownReport, BackendError> {
        self.teardown_session(session).await
    }

    async fn reap_orphans(&self, live: &[SessionId]) -> Result<Vec<SessionId>, BackendError> {
        self.reap(live).await
    }
}
