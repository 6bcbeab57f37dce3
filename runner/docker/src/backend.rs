//! The Docker backend: one hardened container per session under gVisor, the program run
//! through `exec` (one process per step), resource facts read from the host.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};
use enclave_core::{
    ArtifactArchive, Backend, BackendError, BackendEvent, BackendEvents, Capabilities, ExitObservation, Isolation,
    Observation, Plan, RunHandle, SecretStore, SessionId, Support, TeardownReport,
};
use enclave_spec::EgressMode;
use futures::StreamExt as _;
use tokio::sync::watch;

use crate::clone::clone_container_name;
use crate::config::DockerConfig;
use crate::container_spec::attach_to_proxy;
use crate::container_spec::holder_container;
use crate::container_spec::{Names, WORKSPACE, runtime_for, tmpfs_volume_options, workload_container};
use crate::error::DockerError;
use crate::reach::Reach;
use crate::{labels, network};

use crate::program::{sample_usage, watch_oom_events};
use crate::usage::UsageReader;

/// Runs sessions in Docker.
pub struct DockerBackend {
    pub(crate) docker: Docker,
    pub(crate) config: DockerConfig,
    runtimes: Vec<String>,
    pub(crate) runs: Mutex<HashMap<SessionId, Arc<Run>>>,
}

pub(crate) struct Run {
    /// The workload container's name. It is created in `wait`, once the clone is over
    /// and its reach revoked: no process of the workload image runs before that.
    pub(crate) container: String,
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

    /// Every resource Enclave created for `session` (or for any session when `None`), as
    /// `kind:name`: what teardown would remove.
    pub async fn resources(&self, session: Option<&SessionId>) -> Result<Vec<String>, DockerError> {
        let filter = session.map_or_else(|| labels::managed_filter(&self.config.scope), labels::session_filter);
        let mut found = Vec::new();
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filter).build()))
            .await
            .map_err(DockerError::call("container list"))?;
        for c in containers {
            let name = c.names.and_then(|n| n.first().cloned()).or(c.id).unwrap_or_default();
            found.push(format!("container:{}", name.trim_start_matches('/')));
        }
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filter).build()))
            .await
            .map_err(DockerError::call("volume list"))?;
        found.extend(volumes.volumes.unwrap_or_default().into_iter().map(|v| format!("volume:{}", v.name)));
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filter).build()))
            .await
            .map_err(DockerError::call("network list"))?;
        found.extend(networks.into_iter().map(|n| format!("network:{}", n.name.unwrap_or_default())));
        for guarded in network::guarded_sessions(&self.config.scope).await {
            if session.is_none_or(|s| s.to_string() == guarded) {
                found.push(format!("firewall:{guarded}"));
            }
        }
        Ok(found)
    }

    fn run(&self, session: &SessionId) -> Result<Arc<Run>, BackendError> {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(session)
            .cloned()
            .ok_or_else(|| BackendError::Unsupported(format!("session {session} is not running here")))
    }

    fn register(&self, session: &SessionId, run: Run) -> RunHandle {
        let id = run.container.clone();
        self.runs.lock().unwrap_or_else(PoisonError::into_inner).insert(session.clone(), Arc::new(run));
        RunHandle { session: session.clone(), id }
    }

    /// Creates and starts the workload container from the tenant's image, in the
    /// holder's guarded network namespace (allowlist mode) or with no network at all;
    /// `None` when the session was killed first (nothing of the image then runs).
    ///
    /// `kill` sets `killed` and then kills whatever container exists; it cannot wait for
    /// this (the orchestrator does not poll `wait` while it kills). So `killed` is read
    /// again after each step: a kill during the create leaves the container unstarted,
    /// and one during the start (which found the container not running yet) is carried
    /// out here.
    async fn start_workload(&self, session: &SessionId, run: &Run) -> Result<Option<String>, DockerError> {
        if *run.killed.borrow() {
            return Ok(None);
        }
        let names = Names::of(session);
        let image = run.plan.run_phase().map(|r| r.image.clone()).unwrap_or_default();
        let mut body = workload_container(&run.plan, session, &image, &self.config);
        if let (EgressMode::Allowlist, Some(reach)) = (run.plan.egress.mode, &run.reach) {
            attach_to_proxy(&mut body, &run.plan, &names.holder, &reach.url(), &self.config);
        }
        let options = CreateContainerOptionsBuilder::default().name(&names.container).build();
        let created =
            self.docker.create_container(Some(options), body).await.map_err(DockerError::call("container create"))?;
        // A kill during the create found no container to kill: the created one is never
        // started (teardown removes it).
        if *run.killed.borrow() {
            return Ok(None);
        }
        // The container names the session's volumes again: had anything removed them
        // since the launch, Docker made new ones, unlimited and unlabelled. It runs only
        // on Enclave's own.
        self.verify_volumes(session, &run.plan, &names).await?;
        self.docker.start_container(&created.id, None).await.map_err(DockerError::call("container start"))?;
        if *run.killed.borrow() {
            let options = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
            let _ = self.docker.kill_container(&created.id, Some(options)).await;
            return Ok(None);
        }
        Ok(Some(created.id))
    }

    async fn container_pid(&self, id: &str) -> Result<u32, DockerError> {
        let inspect = self.docker.inspect_container(id, None).await.map_err(DockerError::call("container inspect"))?;
        inspect
            .state
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| DockerError::Setup(format!("container {id} has no process")))
    }

    pub(crate) async fn remove_container(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        self.docker.remove_container(name, Some(options)).await.map_err(DockerError::call("container remove"))
    }

    /// Refuses plans this backend cannot carry out faithfully, before creating anything.
    fn check_plan(&self, plan: &Plan) -> Result<(), BackendError> {
        if let Some(clone) = plan.clone_phase() {
            if clone.scheme != enclave_spec::RepoScheme::Https {
                return Err(BackendError::Unsupported(
                    "the Docker backend clones over https only (ssh would bypass the egress proxy's checks)".into(),
                ));
            }
            if clone.git_ref.as_deref().is_some_and(|r| r.starts_with('-')) {
                return Err(BackendError::Unsupported("a git ref may not start with '-'".into()));
            }
        }
        let needs_network = plan.clone_phase().is_some() || plan.egress.mode == EgressMode::Allowlist;
        if needs_network && !self.runtimes.contains(&self.config.gvisor_netns_runtime) {
            return Err(BackendError::Unsupported(format!(
                "the gVisor runtime {:?} (for sessions with a network) is not registered with dockerd; run scripts/setup-docker.sh",
                self.config.gvisor_netns_runtime
            )));
        }
        let runtime = runtime_for(plan, &self.config);
        if plan.containment.isolation == Isolation::Gvisor && !self.runtimes.contains(&runtime) {
            return Err(BackendError::Unsupported(format!(
                "the gVisor runtime {runtime:?} is not registered with dockerd; run scripts/setup-docker.sh, or pass --isolation host-kernel to accept the host kernel"
            )));
        }
        Ok(())
    }

    async fn create_volume(&self, session: &SessionId, name: &str, role: &str, size: u64) -> Result<(), DockerError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            driver: Some("local".to_owned()),
            driver_opts: Some(tmpfs_volume_options(size, enclave_core::WORKLOAD_UID)),
            labels: Some(labels::for_session(session, role, &self.config)),
            ..Default::default()
        };
        self.docker.create_volume(request).await.map_err(DockerError::call("volume create"))?;
        Ok(())
    }

    async fn volume_path(&self, name: &str) -> Option<PathBuf> {
        self.docker.inspect_volume(name).await.ok().map(|v| PathBuf::from(v.mountpoint))
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
        self.check_plan(plan)?;
        let names = Names::of(session);
        let image = plan.run_phase().map(|r| r.image.clone()).unwrap_or_default();
        let mut images = vec![image.clone(), self.config.holder_image.clone()];
        if plan.clone_phase().is_some() {
            images.push(self.config.clone_image.clone());
        }
        for image in images {
            if self.docker.inspect_image(&image).await.is_err() {
                return Err(BackendError::Unsupported(format!(
                    "image {image:?} is not present locally and no registry is used; build it first (scripts/setup-docker.sh builds enclave/base:latest and enclave/git:latest)"
                )));
            }
        }
        self.create_volume(session, &names.workspace, "workspace", plan.quotas.disk_bytes).await?;
        self.create_volume(session, &names.tmp, "tmp", plan.quotas.disk_bytes).await?;

        let needs_network = plan.clone_phase().is_some() || plan.egress.mode == EgressMode::Allowlist;
        let reach = match needs_network {
            true => Some(self.start_proxy(session, plan, secrets, &events).await?),
            false => None,
        };

        // Enclave's holder goes first: it keeps the (empty) volumes mounted and owns the
        // network namespace, which is guarded before any other process joins it.
        let body = holder_container(plan, session, reach.as_ref().map(|r| r.net.name.as_str()), &self.config);
        let options = CreateContainerOptionsBuilder::default().name(&names.holder).build();
        let holder =
            self.docker.create_container(Some(options), body).await.map_err(DockerError::call("holder create"))?;
        // The holder now keeps the volumes in use (no one can remove them): they must be
        // the ones created above, with their limits, or nothing runs.
        self.verify_volumes(session, plan, &names).await?;
        self.docker.start_container(&holder.id, None).await.map_err(DockerError::call("holder start"))?;
        if let Some(reach) = &reach {
            let pid = self.container_pid(&holder.id).await?;
            network::guard_container(pid, reach.net.gateway, reach.port()).await?;
        }
        let clone_credential = match plan.clone_phase().and_then(|c| c.credential.as_ref()) {
            None => Ok(None),
            Some(name) => secrets
                .resolve(name)
                .map(Some)
                .ok_or_else(|| format!("the clone credential secret {name:?} is not set")),
        };
        let mut volumes = Vec::new();
        for name in [&names.workspace, &names.tmp] {
            volumes.extend(self.volume_path(name).await);
        }
        let run = Run {
            container: names.container.clone(),
            reach,
            clone_credential,
            plan: plan.clone(),
            events,
            volumes,
            killed: watch::Sender::new(false),
        };
        Ok(self.register(session, run))
    }

    async fn wait(&self, handle: &RunHandle) -> Result<Observation, BackendError> {
        let run = self.run(&handle.session)?;
        if let Some(ended) = self.clone_phase(&handle.session, &run).await? {
            return Ok(ended);
        }
        let Some(container) = self.start_workload(&handle.session, &run).await? else {
            return Ok(Observation::from_exit(ExitObservation::Signaled { signal: 9 }));
        };
        let _ = run.events.unbounded_send(BackendEvent::WorkloadStarted);
        let reader = UsageReader::new(&self.config.cgroup_root, &container, run.volumes.clone());
        // Docker's `oom` events: OOMKilled alone misses the kill when the event comes after
        // `die` (a race seen in ~4 % of runs under load), the event stream does not.
        let oom_seen = Arc::new(AtomicBool::new(false));
        let oom_watch = tokio::spawn(watch_oom_events(self.docker.clone(), container.clone(), oom_seen.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (events, every, stop) = (run.events.clone(), self.config.sample_interval, stop.clone());
            tokio::task::spawn_blocking(move || sample_usage(reader, events, every, &stop))
        };
        // The program ends on its own, or is cut short by a kill or by the sandbox dying
        // (an exec attached to a dead gVisor sandbox may never see end-of-stream).
        let mut killed = run.killed.subscribe();
        let mut sandbox_exit = self.docker.wait_container(&container, None);
        let program = tokio::select! {
            result = self.run_program(&run) => Some(result),
            _ = killed.wait_for(|k| *k) => None,
            _ = sandbox_exit.next() => None,
        };
        let state = self.docker.inspect_container(&container, None).await.ok().and_then(|c| c.state);
        // The program is over: nothing it left in the background runs on while artifacts
        // are collected (they are read from the stopped container's volumes).
        let options = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
        let _ = self.docker.kill_container(&container, Some(options)).await;
        stop.store(true, Ordering::SeqCst);
        let usage = sampler.await.unwrap_or_default();
        let (last, failed_step) = program.transpose()?.unwrap_or((None, None));

        let killed = *run.killed.borrow();
        let container_died = state.as_ref().is_some_and(|s| s.running != Some(true));
        let sandbox_137 = container_died && state.as_ref().and_then(|s| s.exit_code) == Some(137);
        let mut docker_oom = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false) || usage.oom_kills > 0;
        if sandbox_137 && !docker_oom && !killed {
            // The `oom` event can trail `die` by tens of milliseconds.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        oom_watch.abort();
        docker_oom |= oom_seen.load(Ordering::SeqCst);
        let exit = if killed || sandbox_137 {
            ExitObservation::Signaled { signal: 9 }
        } else {
            let code = last.or_else(|| state.as_ref().and_then(|s| s.exit_code)).unwrap_or(137);
            ExitObservation::Exited { code: i32::try_from(code).unwrap_or(i32::MAX) }
        };
        Ok(Observation {
            // A memory breach kills the whole gVisor sandbox (137). It is an OOM kill when
            // Docker says so (flag or event), the kernel counted one in the cgroup, or the
            // sandbox died with 137 that Enclave did not order while memory sat at the
            // limit. Memory at the limit alone is not enough: page cache fills it too.
            oom_killed: docker_oom || (sandbox_137 && !killed && usage.memory_at_limit()),
            pids_limit_hit: usage.pids_limit_hits > 0,
            disk_full: usage.disk_full,
            failed_step,
            exit,
        })
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
        let archive = self.docker.download_from_container(&run.container, Some(options)).map(|chunk| {
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
        let run = self.run(&handle.session)?;
        run.killed.send_replace(true);
        // The clone container, or the workload's, whichever exists by now.
        for name in [clone_container_name(&handle.session), run.container.clone()] {
            let options = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
            match self.docker.kill_container(&name, Some(options)).await {
                // Already stopped (e.g. the OOM killer was faster), or not created (yet, or
                // any more): nothing to kill.
                Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404 | 409, .. }) => {}
                Err(e) => return Err(DockerError::call("container kill")(e).into()),
            }
        }
        Ok(())
    }

    async fn teardown(&self, session: &SessionId) -> Result<TeardownReport, BackendError> {
        // Dropping the run stops its proxy: no connection outlives the session.
        let run = self.runs.lock().unwrap_or_else(PoisonError::into_inner).remove(session);
        if let Some(reach) = run.as_ref().and_then(|r| r.reach.as_ref()) {
            reach.proxy.proxy().close();
        }
        drop(run);
        let filter = labels::session_filter(session);
        let mut report = TeardownReport::default();
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filter).build()))
            .await
            .map_err(DockerError::call("container list"))?;
        for container in containers {
            let id = container.id.unwrap_or_default();
            let name = container.names.and_then(|n| n.first().cloned()).unwrap_or_else(|| id.clone());
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            match self.docker.remove_container(&id, Some(options)).await {
                Ok(()) => report.removed.push(format!("container:{}", name.trim_start_matches('/'))),
                Err(e) => report.failed.push(format!("container:{name}: {e}")),
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filter).build()))
            .await
            .map_err(DockerError::call("volume list"))?;
        for volume in volumes.volumes.unwrap_or_default() {
            let options = RemoveVolumeOptionsBuilder::default().force(true).build();
            match self.docker.remove_volume(&volume.name, Some(options)).await {
                Ok(()) => report.removed.push(format!("volume:{}", volume.name)),
                Err(e) => report.failed.push(format!("volume:{}: {e}", volume.name)),
            }
        }
        // Volumes of the session's names that carry no label: Docker made them up for a
        // container whose own went missing (the launch refuses to run on them).
        let names = Names::of(session);
        for name in [&names.workspace, &names.tmp] {
            if report.removed.iter().any(|r| r == &format!("volume:{name}")) {
                continue;
            }
            let options = RemoveVolumeOptionsBuilder::default().force(true).build();
            match self.docker.remove_volume(name, Some(options)).await {
                Ok(()) => report.removed.push(format!("volume:{name} (unlabelled)")),
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => report.failed.push(format!("volume:{name}: {e}")),
            }
        }
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filter).build()))
            .await
            .map_err(DockerError::call("network list"))?;
        for network in networks {
            let name = network.name.unwrap_or_default();
            match self.docker.remove_network(&name).await {
                Ok(()) => report.removed.push(format!("network:{name}")),
                Err(e) => report.failed.push(format!("network:{name}: {e}")),
            }
        }
        match network::unguard_host(&self.config.scope, session).await {
            Ok(0) => {}
            Ok(n) => report.removed.push(format!("firewall:{n} host rules")),
            Err(e) => report.failed.push(format!("firewall: {e}")),
        }
        Ok(report)
    }

    async fn reap_orphans(&self, live: &[SessionId]) -> Result<Vec<SessionId>, BackendError> {
        self.reap(live).await
    }
}
