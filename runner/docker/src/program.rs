//! The program inside the workload sandbox: each process through `exec` (one per step,
//! with its own exit code and the step's timeout), its output streamed as events, and
//! the host-side watchers of the sandbox's resources (Docker's `oom` events, the cgroup
//! and volume sampler).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::EventsOptionsBuilder;
use enclave_core::{BackendEvent, BackendEvents, Program, Stream};
use futures::StreamExt as _;

use crate::backend::{DockerBackend, Run};
use crate::container_spec::{env_list, workdir};
use crate::error::DockerError;
use crate::usage::{Usage, UsageReader};

impl DockerBackend {
    /// Runs one process in the sandbox, streaming its output; returns its exit code, or
    /// `None` when it did not finish (killed, sandbox gone).
    pub(crate) async fn exec(&self, run: &Run, cmd: Vec<String>, env: Vec<String>) -> Result<Option<i64>, DockerError> {
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            tty: Some(false),
            cmd: Some(cmd),
            env: Some(env),
            user: Some(format!("{}:{}", run.plan.containment.run_as_user, run.plan.containment.run_as_group)),
            working_dir: Some(workdir(&run.plan)),
            privileged: Some(false),
            ..Default::default()
        };
        let exec = self.docker.create_exec(run.container(), options).await.map_err(DockerError::call("exec create"))?;
        let started = self.docker.start_exec(&exec.id, None).await.map_err(DockerError::call("exec start"))?;
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) => {
                        let _ = run
                            .events
                            .unbounded_send(BackendEvent::Output { stream: Stream::Stdout, data: message.to_vec() });
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        let _ = run
                            .events
                            .unbounded_send(BackendEvent::Output { stream: Stream::Stderr, data: message.to_vec() });
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        let inspect = self.docker.inspect_exec(&exec.id).await.map_err(DockerError::call("exec inspect"))?;
        Ok(if inspect.running == Some(true) { None } else { inspect.exit_code })
    }

    /// Runs the plan's program; returns (last exit code, failed step).
    pub(crate) async fn run_program(&self, run: &Run) -> Result<(Option<i64>, Option<String>), DockerError> {
        let Some(phase) = run.plan.run_phase() else { return Ok((Some(0), None)) };
        match &phase.program {
            Program::Command { argv } => Ok((self.exec(run, argv.clone(), env_list(&phase.env, None)).await?, None)),
            Program::Steps { steps } => {
                let mut last = Some(0);
                for step in steps {
                    let _ = run.events.unbounded_send(BackendEvent::StepStarted { name: step.name.clone() });
                    let started = Instant::now();
                    let cmd = vec!["sh".to_owned(), "-c".to_owned(), step.run.clone()];
                    let exec = self.exec(run, cmd, env_list(&phase.env, Some(&step.env)));
                    last = match step.timeout_ms {
                        None => exec.await?,
                        Some(timeout_ms) => match tokio::time::timeout(Duration::from_millis(timeout_ms), exec).await {
                            Ok(result) => result?,
                            Err(_) => {
                                // The orchestrator decides to kill on this; wait for it.
                                let _ = run
                                    .events
                                    .unbounded_send(BackendEvent::StepTimedOut { name: step.name.clone(), timeout_ms });
                                futures::future::pending::<()>().await;
                                None
                            }
                        },
                    };
                    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let code = last.and_then(|c| i32::try_from(c).ok()).unwrap_or(137);
                    let _ = run.events.unbounded_send(BackendEvent::StepFinished {
                        name: step.name.clone(),
                        exit_code: code,
                        duration_ms,
                    });
                    if code != 0 {
                        return Ok((last, Some(step.name.clone())));
                    }
                }
                Ok((last, None))
            }
        }
    }
}

/// Sets `seen` when Docker reports an `oom` event for the container.
pub(crate) async fn watch_oom_events(docker: Docker, container: String, seen: Arc<AtomicBool>) {
    let filters = HashMap::from([
        ("type", vec!["container".to_owned()]),
        ("event", vec!["oom".to_owned()]),
        ("container", vec![container]),
    ]);
    let mut events = docker.events(Some(EventsOptionsBuilder::default().filters(&filters).build()));
    while let Some(event) = events.next().await {
        if event.is_ok() {
            seen.store(true, Ordering::SeqCst);
        }
    }
}

/// Samples usage until told to stop; reports pids and disk signals as they appear. Runs
/// on its own OS thread: a pids breach crashes the sandbox within a second and its cgroup
/// (with the only evidence) vanishes tens of milliseconds later, so the sampler must not
/// wait behind busy async tasks.
pub(crate) fn sample_usage(
    reader: UsageReader,
    events: BackendEvents,
    every: std::time::Duration,
    stop: &AtomicBool,
) -> Usage {
    let mut seen = Usage::default();
    let (mut pids_reported, mut disk_reported) = (false, false);
    loop {
        seen = seen.merge(reader.read());
        if seen.pids_limit_hits > 0 && !pids_reported {
            pids_reported = true;
            let _ = events.unbounded_send(BackendEvent::PidsLimitHit);
        }
        if seen.disk_full && !disk_reported {
            disk_reported = true;
            let _ = events.unbounded_send(BackendEvent::DiskFull);
        }
        if stop.load(Ordering::SeqCst) {
            return seen;
        }
        std::thread::sleep(every);
    }
}
