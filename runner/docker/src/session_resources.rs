//! Every resource of a session, described as plain data before any is created, in the
//! order they are created (as the kube backend's `SessionManifests`). Pure: the launch and
//! `wait` only carry the description out, so what a session gets is unit-tested here
//! without a daemon.
//!
//! Only the proxy's address is not known up front (its port is the one the host hands
//! out when the proxy listens): the containers that reach it get it when they are
//! created, from `clone_via_proxy` and `attach_to_proxy`.

use bollard::models::{ContainerCreateBody, NetworkCreateRequest, VolumeCreateRequest};
use enclave_core::{EgressPhase, Plan, SessionId};
use enclave_spec::EgressMode;

use crate::clone::{clone_container, clone_container_name};
use crate::config::DockerConfig;
use crate::container_spec::{Names, holder_container, session_volume, workload_container};
use crate::network;

/// One container: its name and its definition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerSpec {
    /// Its name (the session's resources are found by label, the containers also by name).
    pub(crate) name: String,
    /// Its definition, as Docker gets it (but for the proxy's address, see the module doc).
    pub(crate) body: ContainerCreateBody,
}

/// A session's reach, for a session with a clone step or allowlist egress.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReachSpec {
    /// The internal network. The proxy listens on its gateway, and the host firewall
    /// closes everything else on its bridge before the proxy serves.
    pub(crate) network: NetworkCreateRequest,
    /// The phase the proxy starts in: the clone's when there is a clone step (the
    /// revocation after the clone moves it on), else the run's.
    pub(crate) proxy_phase: EgressPhase,
}

/// The containers of a session's phases, created by `wait` (so the deadline and a kill
/// cover them), after the launch's resources.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PhaseContainers {
    /// The clone container, in the holder's network namespace; removed once the clone
    /// is over, before the workload exists.
    pub(crate) clone: Option<ContainerSpec>,
    /// The workload container, from the tenant's image.
    pub(crate) workload: ContainerSpec,
    /// Whether the workload joins the holder's network namespace with the proxy as its
    /// only way out (allowlist egress); otherwise it has no network at all.
    pub(crate) workload_via_proxy: bool,
}

/// A session's resources. The launch checks the images, then creates the rest in field
/// order: the volumes, the reach (network, host firewall, proxy), then the holder (its
/// own network namespace guarded once it runs); `wait` creates the phase containers.
/// Teardown removes them all by label.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionResources {
    /// Images that must be present locally before anything is created (no registry is
    /// ever used): the workload's, the holder's, and the clone's when there is a clone.
    pub(crate) images: Vec<String>,
    /// The workspace and `/tmp` volumes, size-limited tmpfs owned by the workload user.
    pub(crate) volumes: Vec<VolumeCreateRequest>,
    /// The session's reach, when it needs one.
    pub(crate) reach: Option<ReachSpec>,
    /// Enclave's holder container: it keeps the volumes mounted and owns the network
    /// namespace, guarded before any other process joins it.
    pub(crate) holder: ContainerSpec,
    /// The containers `wait` creates.
    pub(crate) phases: PhaseContainers,
}

/// Whether a session needs a reach: a clone step, or allowlist egress.
pub(crate) fn needs_reach(plan: &Plan) -> bool {
    plan.clone_phase().is_some() || plan.egress.mode == EgressMode::Allowlist
}

impl SessionResources {
    /// Describes the resources of `session` running `plan`.
    pub(crate) fn describe(plan: &Plan, session: &SessionId, config: &DockerConfig) -> Self {
        let names = Names::of(session);
        let image = plan.run_phase().map(|r| r.image.clone()).unwrap_or_default();
        let mut images = vec![image.clone(), config.holder_image.clone()];
        if plan.clone_phase().is_some() {
            images.push(config.clone_image.clone());
        }
        let disk = plan.quotas.disk_bytes;
        let volumes = vec![
            session_volume(session, &names.workspace, "workspace", disk, config),
            session_volume(session, &names.tmp, "tmp", disk, config),
        ];
        let reach = needs_reach(plan).then(|| ReachSpec {
            network: network::session_network(session, config),
            proxy_phase: if plan.clone_phase().is_some() { EgressPhase::Clone } else { EgressPhase::Run },
        });
        let network = reach.as_ref().map(|r| r.network.name.as_str());
        let holder =
            ContainerSpec { name: names.holder.clone(), body: holder_container(plan, session, network, config) };
        let clone = plan.clone_phase().map(|clone| ContainerSpec {
            name: clone_container_name(session),
            body: clone_container(plan, clone, session, config),
        });
        let workload =
            ContainerSpec { name: names.container.clone(), body: workload_container(plan, session, &image, config) };
        let workload_via_proxy = plan.egress.mode == EgressMode::Allowlist;
        Self { images, volumes, reach, holder, phases: PhaseContainers { clone, workload, workload_via_proxy } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels;

    fn plan(yaml_tail: &str) -> Plan {
        let yaml = format!("apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: t\nspec:\n{yaml_tail}");
        let parsed = enclave_spec::parse("t.yaml", yaml.as_bytes()).expect("spec");
        enclave_core::plan(&parsed.spec, &enclave_core::Policy::default()).expect("plan")
    }

    const REPO_AND_ALLOWLIST: &str = "  image: enclave/base:latest\n  command: [true]\n  repo:\n    url: https://git.example/org/repo.git\n  egress:\n    mode: allowlist\n    allow:\n      - host: pypi.org\n        ports: [443]\n";
    const DENY: &str = "  image: enclave/base:latest\n  command: [true]\n  egress:\n    mode: deny\n";

    fn session() -> SessionId {
        SessionId::new("ses-1").expect("id")
    }

    /// The resources as `kind:name`, in creation order.
    fn inventory(r: &SessionResources) -> Vec<String> {
        let mut out: Vec<String> = r.images.iter().map(|i| format!("image:{i}")).collect();
        out.extend(r.volumes.iter().map(|v| format!("volume:{}", v.name.as_deref().unwrap_or("?"))));
        if let Some(reach) = &r.reach {
            out.push(format!("network:{}", reach.network.name));
            out.push(format!("proxy:{}", reach.proxy_phase));
        }
        out.push(format!("container:{}", r.holder.name));
        out.extend(r.phases.clone.iter().map(|c| format!("container:{}", c.name)));
        out.push(format!("container:{}", r.phases.workload.name));
        out
    }

    fn network_mode(c: &ContainerSpec) -> Option<&str> {
        c.body.host_config.as_ref().and_then(|h| h.network_mode.as_deref())
    }

    #[test]
    fn a_repo_with_allowlist_egress_gets_a_network_proxy_holder_clone_and_workload_in_order() {
        let r = SessionResources::describe(&plan(REPO_AND_ALLOWLIST), &session(), &DockerConfig::default());
        assert_eq!(
            inventory(&r),
            [
                "image:enclave/base:latest",
                "image:enclave/base:latest",
                "image:enclave/git:latest",
                "volume:enclave-ses-1-workspace",
                "volume:enclave-ses-1-tmp",
                "network:enclave-ses-1",
                "proxy:clone",
                "container:enclave-ses-1-holder",
                "container:enclave-ses-1-clone",
                "container:enclave-ses-1",
            ]
        );
        assert_eq!(network_mode(&r.holder), Some("enclave-ses-1"), "the holder owns the session network");
        let clone = r.phases.clone.as_ref().expect("clone");
        assert_eq!(network_mode(clone), Some("container:enclave-ses-1-holder"));
        assert!(r.phases.workload_via_proxy, "allowlist: the workload reaches out through the proxy");
        let reach = r.reach.as_ref().expect("reach");
        assert_eq!(reach.network.internal, Some(true));
        let roles: Vec<_> = r
            .volumes
            .iter()
            .map(|v| v.labels.as_ref().and_then(|l| l.get(labels::ROLE)).cloned().unwrap_or_default())
            .collect();
        assert_eq!(roles, ["workspace", "tmp"]);
    }

    #[test]
    fn deny_egress_without_a_repo_gets_no_network_proxy_or_clone() {
        let r = SessionResources::describe(&plan(DENY), &session(), &DockerConfig::default());
        assert_eq!(
            inventory(&r),
            [
                "image:enclave/base:latest",
                "image:enclave/base:latest",
                "volume:enclave-ses-1-workspace",
                "volume:enclave-ses-1-tmp",
                "container:enclave-ses-1-holder",
                "container:enclave-ses-1",
            ]
        );
        assert_eq!(network_mode(&r.holder), Some("none"));
        assert_eq!(network_mode(&r.phases.workload), Some("none"));
        assert!(!r.phases.workload_via_proxy);
    }

    #[test]
    fn deny_egress_with_a_repo_has_a_reach_for_the_clone_only() {
        let tail = "  image: enclave/base:latest\n  command: [true]\n  repo:\n    url: https://git.example/org/repo.git\n  egress:\n    mode: deny\n";
        let r = SessionResources::describe(&plan(tail), &session(), &DockerConfig::default());
        assert_eq!(r.reach.as_ref().map(|r| r.proxy_phase), Some(EgressPhase::Clone));
        assert!(r.phases.clone.is_some());
        assert!(!r.phases.workload_via_proxy, "the workload stays without a network");
        assert_eq!(network_mode(&r.phases.workload), Some("none"));
    }
}
