//! Ending a session: `kill` (while nothing polls `wait`: it only sets the run's flag and
//! kills what exists, and never waits on anything `wait` holds), and teardown, which
//! removes every resource of the session by label, whatever `wait` got to create.

use std::sync::PoisonError;

use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use enclave_core::{BackendError, RunHandle, SessionId, TeardownReport};

use crate::backend::DockerBackend;
use crate::clone::clone_container_name;
use crate::container_spec::Names;
use crate::error::DockerError;
use crate::{labels, network};

impl DockerBackend {
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

    pub(crate) async fn remove_container(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        self.docker.remove_container(name, Some(options)).await.map_err(DockerError::call("container remove"))
    }

    /// Marks the run killed, then kills whichever of its containers exists by now. What
    /// `wait` is creating meanwhile it checks the mark for itself (`start_workload`).
    pub(crate) async fn kill_session(&self, handle: &RunHandle) -> Result<(), BackendError> {
        let run = self.run(&handle.session)?;
        run.killed.send_replace(true);
        // The clone container, or the workload's, whichever exists by now.
        for name in [clone_container_name(&handle.session), run.container().to_owned()] {
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

    /// Removes everything of `session`: its containers, volumes (also unlabelled ones of
    /// its names), networks and host firewall rules.
    pub(crate) async fn teardown_session(&self, session: &SessionId) -> Result<TeardownReport, BackendError> {
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
}
