//! Following a session to its end: the clone phase (`clone_run.rs`), then the workload
//! container created and started, its program raced against a kill and against the
//! sandbox dying, the container killed once the program is over, and how it ended
//! inferred (`end.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bollard::query_parameters::{CreateContainerOptionsBuilder, KillContainerOptionsBuilder};
use enclave_core::{BackendError, BackendEvent, ExitObservation, Observation, RunHandle, SessionId};
use futures::StreamExt as _;

use crate::backend::{DockerBackend, Run};
use crate::container_spec::{Names, attach_to_proxy};
use crate::end::{OOM_EVENT_GRACE, infer_end, needs_oom_grace};
use crate::error::DockerError;
use crate::program::{sample_usage, watch_oom_events};
use crate::usage::UsageReader;

impl DockerBackend {
    /// Runs the session's phases and reports how it ended.
    pub(crate) async fn wait_session(&self, handle: &RunHandle) -> Result<Observation, BackendError> {
        let run = self.run(&handle.session)?;
        if let Some(ended) = self.clone_phase(&run).await? {
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

        let kill_ordered = *run.killed.borrow();
        if needs_oom_grace(state.as_ref(), &usage, kill_ordered) {
            tokio::time::sleep(OOM_EVENT_GRACE).await;
        }
        oom_watch.abort();
        let end = infer_end(state.as_ref(), &usage, kill_ordered, oom_seen.load(Ordering::SeqCst), last);
        Ok(Observation {
            oom_killed: end.oom_killed,
            pids_limit_hit: usage.pids_limit_hits > 0,
            disk_full: usage.disk_full,
            failed_step,
            exit: end.exit,
        })
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
        let workload = &run.containers.workload;
        let mut body = workload.body.clone();
        if let Some(reach) = run.reach.as_ref().filter(|_| run.containers.workload_via_proxy) {
            attach_to_proxy(&mut body, &run.plan, &names.holder, &reach.url(), &self.config);
        }
        let options = CreateContainerOptionsBuilder::default().name(&workload.name).build();
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
}
