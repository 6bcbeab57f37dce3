//! Launching a session: the plan checked against what this daemon can enforce, its
//! resources described (`session_resources.rs`), then created in order up to the
//! holder. The clone and workload containers are left to `wait`.

use std::path::PathBuf;

use bollard::query_parameters::CreateContainerOptionsBuilder;
use enclave_core::{BackendError, BackendEvents, Isolation, Plan, RunHandle, SecretStore, SessionId};
use tokio::sync::watch;

use crate::backend::{DockerBackend, Run};
use crate::container_spec::{Names, runtime_for};
use crate::error::DockerError;
use crate::network;
use crate::session_resources::{SessionResources, needs_reach};

impl DockerBackend {
    /// Creates a session's resources in order and registers its run: the images are
    /// checked first, then the volumes, the reach and the holder are created.
    pub(crate) async fn launch_session(
        &self,
        session: &SessionId,
        plan: &Plan,
        secrets: &dyn SecretStore,
        events: BackendEvents,
    ) -> Result<RunHandle, BackendError> {
        self.check_plan(plan)?;
        let resources = SessionResources::describe(plan, session, &self.config);
        let names = Names::of(session);
        for image in &resources.images {
            if self.docker.inspect_image(image).await.is_err() {
                return Err(BackendError::Unsupported(format!(
                    "image {image:?} is not present locally and no registry is used; build it first (scripts/setup-docker.sh builds enclave/base:latest and enclave/git:latest)"
                )));
            }
        }
        for volume in &resources.volumes {
            self.docker.create_volume(volume.clone()).await.map_err(DockerError::call("volume create"))?;
        }
        let reach = match &resources.reach {
            Some(spec) => Some(self.start_reach(session, spec, plan, secrets, &events).await?),
            None => None,
        };

        // Enclave's holder goes first: it keeps the (empty) volumes mounted and owns the
        // network namespace, which is guarded before any other process joins it.
        let options = CreateContainerOptionsBuilder::default().name(&resources.holder.name).build();
        let holder = self
            .docker
            .create_container(Some(options), resources.holder.body.clone())
            .await
            .map_err(DockerError::call("holder create"))?;
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
            containers: resources.phases,
            reach,
            clone_credential,
            plan: plan.clone(),
            events,
            volumes,
            killed: watch::Sender::new(false),
        };
        Ok(self.register(session, run))
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
        if needs_reach(plan) && !self.runtimes.contains(&self.config.gvisor_netns_runtime) {
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

    async fn container_pid(&self, id: &str) -> Result<u32, DockerError> {
        let inspect = self.docker.inspect_container(id, None).await.map_err(DockerError::call("container inspect"))?;
        inspect
            .state
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| DockerError::Setup(format!("container {id} has no process")))
    }

    async fn volume_path(&self, name: &str) -> Option<PathBuf> {
        self.docker.inspect_volume(name).await.ok().map(|v| PathBuf::from(v.mountpoint))
    }
}
