//! Pure builders: the container and volume definitions for a plan. No Docker calls here,
//! so every containment setting is unit-tested without a daemon.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use enclave_core::{Isolation, NetworkMode, Plan, SessionId};

use crate::config::DockerConfig;
use crate::labels;

/// Where the workspace volume is mounted in the workload.
pub const WORKSPACE: &str = "/workspace";

/// Names of a session's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The workload container.
    pub container: String,
    /// The workspace volume.
    pub workspace: String,
    /// The `/tmp` volume.
    pub tmp: String,
    /// Enclave's holder container: it keeps the volumes mounted and owns the guarded
    /// network namespace that the clone and the workload join.
    pub holder: String,
}

impl Names {
    /// Names derived from the session id (which is safe as a Docker name).
    pub fn of(session: &SessionId) -> Self {
        Self {
            container: format!("enclave-{session}"),
            workspace: format!("enclave-{session}-workspace"),
            tmp: format!("enclave-{session}-tmp"),
            holder: format!("enclave-{session}-holder"),
        }
    }
}

/// The runtime for a plan: gVisor with no network (deny mode), or plain runc when the
/// user explicitly asked for host-kernel isolation.
pub(crate) fn runtime_for(plan: &Plan, config: &DockerConfig) -> String {
    match plan.containment.isolation {
        Isolation::Gvisor => config.gvisor_runtime.clone(),
        Isolation::HostKernel => "runc".to_owned(),
    }
}

/// Options of a size-limited tmpfs volume owned by the workload user. Docker's local
/// driver mounts it on the host, so the host can see how full it is.
pub(crate) fn tmpfs_volume_options(size_bytes: u64, uid: u32) -> HashMap<String, String> {
    HashMap::from([
        ("type".to_owned(), "tmpfs".to_owned()),
        ("device".to_owned(), "tmpfs".to_owned()),
        ("o".to_owned(), format!("size={size_bytes},uid={uid},gid={uid},mode=0770")),
    ])
}

/// A session volume: a size-limited tmpfs owned by the workload user, labelled with its
/// role (`workspace`, `tmp`).
pub(crate) fn session_volume(
    session: &SessionId,
    name: &str,
    role: &str,
    size_bytes: u64,
    config: &DockerConfig,
) -> VolumeCreateRequest {
    VolumeCreateRequest {
        name: Some(name.to_owned()),
        driver: Some("local".to_owned()),
        driver_opts: Some(tmpfs_volume_options(size_bytes, enclave_core::WORKLOAD_UID)),
        labels: Some(labels::for_session(session, role, config)),
        ..Default::default()
    }
}

/// How long a session's idle keeper (`sleep`, the holder's and the workload's first
/// process) lives: the session's deadline and a short margin. The orchestrator ends the
/// session by then anyway; should the Enclave process die, the sandbox still ends at its
/// deadline on its own (its first process exits, and every process of the sandbox with it).
pub(crate) fn keeper_seconds(plan: &enclave_core::Plan) -> u64 {
    plan.quotas.deadline_ms.div_ceil(1000) + KEEPER_MARGIN_SECONDS
}

/// What a keeper outlives the deadline by: the orchestrator's kill and its teardown.
const KEEPER_MARGIN_SECONDS: u64 = 5;

/// Resource limits of one container.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Memory in bytes (swap is set equal: no swap at all).
    pub(crate) memory: i64,
    /// CPU in billionths of a CPU.
    pub(crate) nano_cpus: i64,
    /// Host tasks.
    pub(crate) pids: i64,
}

/// The host configuration every Enclave container gets (workload and clone alike): the
/// given runtime, read-only root, no capabilities, no new privileges, not privileged,
/// private IPC, no binds or devices, and these limits, network and volume mounts.
pub(crate) fn hardened_host_config(runtime: String, limits: Limits, network: &str, mounts: Vec<Mount>) -> HostConfig {
    HostConfig {
        runtime: Some(runtime),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".to_owned()]),
        cap_add: Some(Vec::new()),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        privileged: Some(false),
        memory: Some(limits.memory),
        memory_swap: Some(limits.memory),
        nano_cpus: Some(limits.nano_cpus),
        pids_limit: Some(limits.pids),
        network_mode: Some(network.to_owned()),
        mounts: Some(mounts),
        ipc_mode: Some("private".to_owned()),
        binds: Some(Vec::new()),
        devices: Some(Vec::new()),
        auto_remove: Some(false),
        ..Default::default()
    }
}

/// Resources of the holder: it runs one idle process of Enclave's base image.
const HOLDER_MEMORY: i64 = 64 << 20;

/// Enclave's holder container, created before anything else runs: it holds the
/// session's volumes mounted (a tmpfs volume's content lives only while some container
/// mounts it) and, for a session with reach, owns the network namespace on the session
/// network that the host guards before the clone or the workload joins it. It comes from
/// Enclave's own base image, never the tenant's, so nothing of the workload image runs
/// before the clone is over.
pub(crate) fn holder_container(
    plan: &Plan,
    session: &SessionId,
    network: Option<&str>,
    config: &DockerConfig,
) -> ContainerCreateBody {
    let names = Names::of(session);
    let c = &plan.containment;
    let volume = |source: &str, target: &str| Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_owned()),
        typ: Some(MountType::VOLUME),
        read_only: Some(false),
        ..Default::default()
    };
    // gVisor's own tasks count as pids: about 75 at start.
    let limits = Limits { memory: HOLDER_MEMORY, nano_cpus: 250_000_000, pids: 128 };
    let runtime = match (network, c.isolation) {
        (_, Isolation::HostKernel) => "runc".to_owned(),
        (Some(_), Isolation::Gvisor) => config.gvisor_netns_runtime.clone(),
        (None, Isolation::Gvisor) => config.gvisor_runtime.clone(),
    };
    let mut host_config = hardened_host_config(
        runtime,
        limits,
        network.unwrap_or("none"),
        vec![volume(&names.workspace, WORKSPACE), volume(&names.tmp, "/tmp")],
    );
    if network.is_some() {
        host_config.dns = Some(Vec::new());
    }
    ContainerCreateBody {
        image: Some(config.holder_image.clone()),
        user: Some(format!("{}:{}", c.run_as_user, c.run_as_group)),
        entrypoint: Some(vec!["sleep".to_owned()]),
        cmd: Some(vec![keeper_seconds(plan).to_string()]),
        env: Some(Vec::new()),
        network_disabled: Some(network.is_none()),
        labels: Some(labels::for_session(session, "holder", config)),
        host_config: Some(host_config),
        attach_stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

/// The workload container: an idle process that keeps the sandbox alive while the
/// program (command or steps) runs in it through `exec`, one process per step.
pub fn workload_container(plan: &Plan, session: &SessionId, image: &str, config: &DockerConfig) -> ContainerCreateBody {
    let names = Names::of(session);
    let c = &plan.containment;
    let q = &plan.quotas;
    let memory = i64::try_from(q.memory_bytes).unwrap_or(i64::MAX);
    let user = format!("{}:{}", c.run_as_user, c.run_as_group);
    let volume = |source: &str, target: &str| Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_owned()),
        typ: Some(MountType::VOLUME),
        read_only: Some(false),
        ..Default::default()
    };
    let limits = Limits {
        memory,
        nano_cpus: i64::try_from(q.cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
        pids: i64::from(q.pids),
    };
    // Allowlist mode: `attach_to_proxy` later puts it on the session network.
    let network = match c.network {
        NetworkMode::None | NetworkMode::ProxyOnly => "none",
    };
    let mut host_config = hardened_host_config(
        runtime_for(plan, config),
        limits,
        network,
        vec![volume(&names.workspace, WORKSPACE), volume(&names.tmp, "/tmp")],
    );
    host_config.readonly_rootfs = Some(c.read_only_root_fs);
    ContainerCreateBody {
        image: Some(image.to_owned()),
        user: Some(user),
        // The idle keeper: the program runs through exec so each step has its own exit
        // code. `sleep` exists in every image Enclave builds (busybox).
        entrypoint: Some(vec!["sleep".to_owned()]),
        cmd: Some(vec![keeper_seconds(plan).to_string()]),
        env: Some(Vec::new()),
        working_dir: Some(WORKSPACE.to_owned()),
        network_disabled: Some(c.network == NetworkMode::None),
        labels: Some(labels::for_session(session, "workload", config)),
        host_config: Some(host_config),
        attach_stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

/// Puts an allowlist-mode workload into the holder's network namespace (on the session
/// network, guarded before the workload container exists), with the session's proxy as
/// its only way out: gVisor's host-network mode inside that namespace, and the proxy in
/// the standard environment variables (the only variables added to the plan's
/// environment).
pub fn attach_to_proxy(
    body: &mut ContainerCreateBody,
    plan: &Plan,
    holder: &str,
    proxy_url: &str,
    config: &DockerConfig,
) {
    if let Some(host) = body.host_config.as_mut() {
        host.network_mode = Some(format!("container:{holder}"));
        if plan.containment.isolation == Isolation::Gvisor {
            host.runtime = Some(config.gvisor_netns_runtime.clone());
        }
    }
    body.network_disabled = Some(false);
    let mut env = body.env.take().unwrap_or_default();
    for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"] {
        env.push(format!("{name}={proxy_url}"));
    }
    env.push("NO_PROXY=".to_owned());
    env.push("no_proxy=".to_owned());
    body.env = Some(env);
}

/// `KEY=value` strings for a process: the plan's environment, then the step's.
pub(crate) fn env_list(
    base: &std::collections::BTreeMap<String, String>,
    step: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<String> {
    let mut merged = base.clone();
    if let Some(step) = step {
        merged.extend(step.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    merged.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The working directory for the program, inside the workspace.
pub(crate) fn workdir(plan: &Plan) -> String {
    match plan.run_phase().map(|r| r.workdir.as_str()) {
        None | Some(".") => WORKSPACE.to_owned(),
        Some(dir) => format!("{WORKSPACE}/{dir}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml_tail: &str) -> Plan {
        let yaml = format!(
            "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: t\nspec:\n  command: [echo, hi]\n{yaml_tail}"
        );
        let parsed = enclave_spec::parse("t.yaml", yaml.as_bytes()).expect("spec");
        enclave_core::plan(&parsed.spec, &enclave_core::Policy::default()).expect("plan")
    }

    #[test]
    fn the_workload_container_carries_every_containment_setting() {
        let p = plan("  quotas:\n    memory: 256Mi\n    cpu: 500m\n    pids: 128\n");
        let session = SessionId::new("ses-1").expect("id");
        let body = workload_container(&p, &session, "enclave/base:latest", &DockerConfig::default());
        let host = body.host_config.clone().expect("host config");
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(host.runtime.as_deref(), Some("enclave-runsc"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, Some(vec![]));
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(host.memory_swap, Some(256 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(128));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(body.network_disabled, Some(true));
        assert_eq!(host.binds, Some(vec![]), "no host mounts");
        let mounts = host.mounts.expect("mounts");
        assert!(mounts.iter().all(|m| m.typ == Some(MountType::VOLUME)), "volumes only, never bind mounts");
        assert_eq!(body.labels.expect("labels").get(labels::SESSION).map(String::as_str), Some("ses-1"));
    }

    #[test]
    fn host_kernel_isolation_uses_runc_only_when_planned() {
        let mut p = plan("");
        assert_eq!(runtime_for(&p, &DockerConfig::default()), "enclave-runsc");
        p.containment.isolation = Isolation::HostKernel;
        assert_eq!(runtime_for(&p, &DockerConfig::default()), "runc");
    }

    #[test]
    fn step_env_overrides_session_env() {
        let base =
            std::collections::BTreeMap::from([("A".to_owned(), "1".to_owned()), ("B".to_owned(), "2".to_owned())]);
        let step = std::collections::BTreeMap::from([("B".to_owned(), "3".to_owned())]);
        assert_eq!(env_list(&base, Some(&step)), vec!["A=1", "B=3"]);
    }
}
