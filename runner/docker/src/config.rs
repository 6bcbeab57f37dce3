//! Backend configuration.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// How the Docker backend runs sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The gVisor runtime registered in daemon.json (runsc with `--network=none`).
    pub gvisor_runtime: String,
    /// How often resource usage is sampled while a session runs.
    pub sample_interval: std::time::Duration,
    /// Root of the host's cgroup v1 hierarchy (for memory and pids usage).
    pub cgroup_root: std::path::PathBuf,
    /// The owner label of everything this instance creates; the orphan reaper only
    /// removes resources of its own scope.
    pub scope: String,
    /// The pid recorded as the owner of new sessions (this process by default).
    pub owner_pid: u32,
    /// That owner's start time (this process's by default), recorded with the pid so a
    /// reused pid never passes for the owner.
    pub owner_start: Option<u64>,
    /// The gVisor runtime for sessions with a network (runsc with `--network=host`
    /// inside the container's own namespace): clone steps and allowlist workloads.
    pub gvisor_netns_runtime: String,
    /// The image of the clone step (git plus a shell); never used for workloads.
    pub clone_image: String,
    /// Enclave's own image for the holder container (it needs `sleep`); never the
    /// tenant's.
    pub holder_image: String,
    /// Names the egress proxy resolves without DNS (an operator's internal hosts).
    pub static_hosts: HashMap<String, Vec<IpAddr>>,
    /// Private networks the clone step may reach when the repository host is in one
    /// (an internal git server). Never widens the workload's reach; never metadata.
    pub trusted_clone_networks: Vec<IpNet>,
    /// Extra CA certificates (PEM) trusted by the clone step and binding upstreams.
    pub extra_ca_pem: Option<String>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            gvisor_runtime: "enclave-runsc".to_owned(),
            // A pids breach crashes the sandbox 0.4-0.8 s after start and its cgroup vanishes
            // with it: the counter must be read often to be seen at all.
            sample_interval: std::time::Duration::from_millis(10),
            cgroup_root: std::path::PathBuf::from("/sys/fs/cgroup"),
            scope: "default".to_owned(),
            owner_pid: crate::labels::own_pid(),
            owner_start: crate::labels::process_start(crate::labels::own_pid()),
            gvisor_netns_runtime: "enclave-runsc-netns".to_owned(),
            clone_image: "enclave/git:latest".to_owned(),
            holder_image: "enclave/base:latest".to_owned(),
            static_hosts: HashMap::new(),
            trusted_clone_networks: Vec::new(),
            extra_ca_pem: None,
        }
    }
}
