//! Backend configuration.

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
            owner_pid: std::process::id(),
        }
    }
}
