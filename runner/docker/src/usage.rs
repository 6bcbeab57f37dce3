//! Host-side resource readings for one container: cgroup memory and pids counters, and
//! how full the session's tmpfs volumes are. Under gVisor the container's own view is
//! the sandbox's, so these host readings are what the backend reports as facts.

use std::path::{Path, PathBuf};

/// One reading. Counters only grow; `merge` keeps the maximum of two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Highest memory use seen, in bytes (cgroup `max_usage_in_bytes` / `memory.peak`).
    pub memory_peak: u64,
    /// The memory limit the cgroup enforces.
    pub memory_limit: u64,
    /// Times the memory limit was hit (`memory.failcnt`, v2 `max` events).
    pub memory_limit_hits: u64,
    /// Kernel OOM kills in the cgroup.
    pub oom_kills: u64,
    /// Times a fork was refused at the pids limit (`pids.events` `max`).
    pub pids_limit_hits: u64,
    /// Whether any cgroup file could be read at all.
    pub cgroup_seen: bool,
    /// Whether a session volume was full (no free block).
    pub disk_full: bool,
}

impl Usage {
    /// The maximum of two readings, field by field.
    pub fn merge(self, other: Usage) -> Usage {
        Usage {
            memory_peak: self.memory_peak.max(other.memory_peak),
            memory_limit: self.memory_limit.max(other.memory_limit),
            memory_limit_hits: self.memory_limit_hits.max(other.memory_limit_hits),
            oom_kills: self.oom_kills.max(other.oom_kills),
            pids_limit_hits: self.pids_limit_hits.max(other.pids_limit_hits),
            cgroup_seen: self.cgroup_seen || other.cgroup_seen,
            disk_full: self.disk_full || other.disk_full,
        }
    }

    /// Whether memory use reached the limit (within one page of it).
    pub fn memory_at_limit(&self) -> bool {
        self.memory_limit > 0 && self.memory_peak.saturating_add(64 * 1024) >= self.memory_limit
    }
}

/// Reads a container's usage from the host.
#[derive(Debug, Clone)]
pub struct UsageReader {
    memory_dirs: Vec<PathBuf>,
    pids_dirs: Vec<PathBuf>,
    volumes: Vec<PathBuf>,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`oom_kill 1`, `max 3`).
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl UsageReader {
    /// A reader for `container_id` under the cgroup root (v1 `cgroupfs` layout or v2
    /// systemd layout, whichever exists), watching the given volume mountpoints.
    pub fn new(cgroup_root: &Path, container_id: &str, volumes: Vec<PathBuf>) -> Self {
        let v2 = cgroup_root.join("system.slice").join(format!("docker-{container_id}.scope"));
        Self {
            memory_dirs: vec![cgroup_root.join("memory/docker").join(container_id), v2.clone()],
            pids_dirs: vec![cgroup_root.join("pids/docker").join(container_id), v2],
            volumes,
        }
    }

    /// One reading now. Missing files read as zero (the container may be gone).
    pub fn read(&self) -> Usage {
        let mut usage = Usage::default();
        for dir in &self.memory_dirs {
            if let Some(peak) =
                read_u64(&dir.join("memory.max_usage_in_bytes")).or_else(|| read_u64(&dir.join("memory.peak")))
            {
                usage.cgroup_seen = true;
                usage.memory_peak = usage.memory_peak.max(peak);
            }
            if let Some(limit) =
                read_u64(&dir.join("memory.limit_in_bytes")).or_else(|| read_u64(&dir.join("memory.max")))
            {
                usage.memory_limit = usage.memory_limit.max(limit);
            }
            let hits = read_u64(&dir.join("memory.failcnt")).or_else(|| read_key(&dir.join("memory.events"), "max"));
            usage.memory_limit_hits = usage.memory_limit_hits.max(hits.unwrap_or(0));
            let kills = read_key(&dir.join("memory.oom_control"), "oom_kill")
                .or_else(|| read_key(&dir.join("memory.events"), "oom_kill"));
            usage.oom_kills = usage.oom_kills.max(kills.unwrap_or(0));
        }
        for dir in &self.pids_dirs {
            if let Some(hits) = read_key(&dir.join("pids.events"), "max") {
                usage.cgroup_seen = true;
                usage.pids_limit_hits = usage.pids_limit_hits.max(hits);
            }
        }
        usage.disk_full = self.volumes.iter().any(|path| volume_full(path));
        usage
    }
}

/// Whether a mounted volume has no free block left.
fn volume_full(path: &Path) -> bool {
    match rustix::fs::statvfs(path) {
        Ok(stat) => stat.f_blocks > 0 && stat.f_bavail == 0,
        Err(_) => false,
    }
}

/// Whether a mounted volume has less than 1/64 of its blocks free: what a writer that
/// failed for want of space leaves behind once it has removed its small temporary files
/// (git drops its `index.lock`), where `volume_full` may no longer hold.
pub(crate) fn volume_nearly_full(path: &Path) -> bool {
    match rustix::fs::statvfs(path) {
        Ok(stat) => stat.f_blocks > 0 && stat.f_bavail < stat.f_blocks.div_ceil(64),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cgroup_v1_and_v2_layouts() {
        let root = std::env::temp_dir().join(format!("enclave-usage-test-{}", std::process::id()));
        let v1 = root.join("memory/docker/abc");
        let pids = root.join("pids/docker/abc");
        std::fs::create_dir_all(&v1).expect("dir");
        std::fs::create_dir_all(&pids).expect("dir");
        std::fs::write(v1.join("memory.max_usage_in_bytes"), "67108864\n").expect("write");
        std::fs::write(v1.join("memory.limit_in_bytes"), "67108864\n").expect("write");
        std::fs::write(v1.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").expect("write");
        std::fs::write(pids.join("pids.events"), "max 7\n").expect("write");
        let usage = UsageReader::new(&root, "abc", Vec::new()).read();
        assert!(usage.cgroup_seen && usage.memory_at_limit());
        assert_eq!((usage.oom_kills, usage.pids_limit_hits), (1, 7));

        let v2 = root.join("system.slice/docker-def.scope");
        std::fs::create_dir_all(&v2).expect("dir");
        std::fs::write(v2.join("memory.peak"), "1000\n").expect("write");
        std::fs::write(v2.join("memory.max"), "4096000\n").expect("write");
        std::fs::write(v2.join("memory.events"), "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n").expect("write");
        let usage = UsageReader::new(&root, "def", Vec::new()).read();
        assert_eq!((usage.memory_peak, usage.memory_limit_hits, usage.oom_kills), (1000, 2, 1));
        assert!(!usage.memory_at_limit());
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
