//! Reaping and volume checks: which of a scope's resources this process may remove
//! (judged per resource by its own owner labels), and whether a session's volumes are
//! the ones Enclave created for it with their limits.

use std::collections::{BTreeSet, HashMap};
use std::sync::PoisonError;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};
use enclave_core::{BackendError, Plan, SessionId};

use crate::backend::DockerBackend;
use crate::container_spec::{Names, tmpfs_volume_options};
use crate::error::DockerError;
use crate::{labels, network};

impl DockerBackend {
    /// Reaps sessions of this scope whose owning Enclave process no longer exists (it
    /// crashed or was killed mid-session). Each resource is judged by its own owner
    /// labels, so sessions of live processes (other `enclave run`s, a server) are left
    /// alone whatever they create meanwhile; this process's own running sessions too.
    pub async fn reap_abandoned(&self) -> Result<Vec<SessionId>, BackendError> {
        let live: Vec<SessionId> = self.runs.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        self.reap(&live).await
    }

    /// Whether this process may remove a resource with these labels: its owner is gone,
    /// or it is this process's own and its session is not live.
    fn reapable(&self, labels: &HashMap<String, String>, live: &[SessionId]) -> bool {
        if labels::owned_by(labels, &self.config) {
            return labels.get(labels::SESSION).is_none_or(|s| !live.iter().any(|l| l.as_str() == s));
        }
        !labels::owner_alive(labels)
    }

    /// The sessions that hold a resource this process may not remove.
    async fn protected_sessions(&self, live: &[SessionId]) -> Result<BTreeSet<String>, BackendError> {
        let filter = labels::managed_filter(&self.config.scope);
        let mut label_sets: Vec<HashMap<String, String>> = Vec::new();
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filter).build()))
            .await
            .map_err(DockerError::call("container list"))?;
        label_sets.extend(containers.into_iter().filter_map(|c| c.labels));
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filter).build()))
            .await
            .map_err(DockerError::call("volume list"))?;
        label_sets.extend(volumes.volumes.unwrap_or_default().into_iter().map(|v| v.labels));
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filter).build()))
            .await
            .map_err(DockerError::call("network list"))?;
        label_sets.extend(networks.into_iter().filter_map(|n| n.labels));
        Ok(label_sets
            .iter()
            .filter(|l| !self.reapable(l, live))
            .filter_map(|l| l.get(labels::SESSION).cloned())
            .collect())
    }

    /// Checks that a session's volumes are the ones Enclave created for it, with their
    /// size limit: Docker silently creates a missing named volume, unlimited and
    /// unlabelled, when a container names it.
    pub(crate) async fn verify_volumes(
        &self,
        session: &SessionId,
        plan: &Plan,
        names: &Names,
    ) -> Result<(), DockerError> {
        for name in [&names.workspace, &names.tmp] {
            let volume = self
                .docker
                .inspect_volume(name)
                .await
                .map_err(|e| DockerError::Setup(format!("volume {name} is missing: {e}")))?;
            let expected = tmpfs_volume_options(plan.quotas.disk_bytes, enclave_core::WORKLOAD_UID);
            let ours = volume.labels.get(labels::SESSION).map(String::as_str) == Some(session.as_str())
                && labels::owned_by(&volume.labels, &self.config)
                && volume.driver == "local"
                && volume.options == expected;
            if !ours {
                return Err(DockerError::Setup(format!(
                    "volume {name} is not the one Enclave created for this session with its size limit (it was removed and recreated by someone else); refusing to run without the disk quota"
                )));
            }
        }
        Ok(())
    }

    pub(crate) async fn reap(&self, live: &[SessionId]) -> Result<Vec<SessionId>, BackendError> {
        // Firewall rules carry no owner: listed first, they are removed only for sessions
        // that, listed after them, hold nothing this process may not remove (a session's
        // network, labelled with its owner, exists before its rules do).
        let guarded = network::guarded_sessions(&self.config.scope).await;
        let filter = labels::managed_filter(&self.config.scope);
        let mut reaped = BTreeSet::new();
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filter).build()))
            .await
            .map_err(DockerError::call("container list"))?;
        for container in containers {
            let Some(labels) = container.labels else { continue };
            if !self.reapable(&labels, live) {
                continue;
            }
            let options = RemoveContainerOptionsBuilder::default().force(true).v(false).build();
            if self.docker.remove_container(container.id.as_deref().unwrap_or_default(), Some(options)).await.is_ok() {
                reaped.extend(labels.get(labels::SESSION).cloned());
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filter).build()))
            .await
            .map_err(DockerError::call("volume list"))?;
        for volume in volumes.volumes.unwrap_or_default() {
            if !self.reapable(&volume.labels, live) {
                continue;
            }
            let options = RemoveVolumeOptionsBuilder::default().force(true).build();
            if self.docker.remove_volume(&volume.name, Some(options)).await.is_ok() {
                reaped.extend(volume.labels.get(labels::SESSION).cloned());
            }
        }
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filter).build()))
            .await
            .map_err(DockerError::call("network list"))?;
        for net in networks {
            let Some(labels) = net.labels else { continue };
            if !self.reapable(&labels, live) {
                continue;
            }
            if self.docker.remove_network(net.id.as_deref().unwrap_or_default()).await.is_ok() {
                reaped.extend(labels.get(labels::SESSION).cloned());
            }
        }
        let protected = self.protected_sessions(live).await?;
        for session in guarded {
            if protected.contains(&session) || live.iter().any(|l| l.as_str() == session) {
                continue;
            }
            if let Ok(id) = SessionId::new(session.clone()) {
                network::unguard_host(&self.config.scope, &id).await?;
                reaped.insert(session);
            }
        }
        Ok(reaped.into_iter().filter_map(|s| SessionId::new(s).ok()).collect())
    }
}
