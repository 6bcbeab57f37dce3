//! Enclave's Docker backend: each session runs in one hardened container under gVisor
//! (`runsc`), created through bollard against Docker 20.10 (API 1.41) or newer.
//!
//! Main design decision: the container's own process only keeps the sandbox alive; the
//! program runs through `exec`, one process per step, so every step has its own exit
//! code and output stream while all steps share one sandbox. Resource facts (memory at
//! its limit, forks refused at the pids limit, full volumes) are read from the host's
//! cgroups and mounts, because under gVisor Docker's own OOM flag is not reliable.
//!
//! It must never decide status, kill reasons or policy (the orchestrator does), never
//! mount a host path into a workload, and never start a workload with fewer restrictions
//! than its plan's containment profile.

mod backend;
mod clone;
mod clone_run;
mod config;
mod connect;
mod container_spec;
mod end;
mod error;
mod labels;
mod launch;
mod network;
mod program;
mod reach;
mod reaper;
mod session_resources;
mod teardown;
mod usage;
mod wait;

pub use backend::{DockerBackend, capabilities};
pub use config::DockerConfig;
pub use connect::{MIN_API, connect};
pub use container_spec::{Names, WORKSPACE, attach_to_proxy, workload_container};
pub use error::DockerError;
pub use labels::{MANAGED, OWNER_PID, OWNER_PROC, OWNER_START, ROLE, SCOPE, SESSION, own_pid, process_start};
pub use usage::{Usage, UsageReader};
