//! The clone phase on Docker: the clone container runs git in the holder's network
//! namespace, inside the session's deadline and cancel, and its reach is revoked after.

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use enclave_core::{BackendError, BackendEvent, ExitObservation, Observation};
use futures::StreamExt as _;

use crate::backend::{DockerBackend, Run};
use crate::clone::{auth_header, clone_command, clone_via_proxy};
use crate::container_spec::WORKSPACE;
use crate::error::DockerError;
use crate::reach::Reach;
use crate::session_resources::ContainerSpec;

/// How long a failed clone exec waits to see whether its sandbox exited too.
const SANDBOX_EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// Most bytes of the clone's output kept while it runs (its tail).
const TRANSCRIPT_TAIL_BYTES: usize = 8 << 10;
/// Most characters of one output line in the clone's detail.
const DETAIL_LINE_CHARS: usize = 512;

/// How a clone ended.
pub(crate) struct CloneOutcome {
    code: i32,
    detail: String,
}

impl DockerBackend {
    /// Runs the clone container to completion in the holder's network namespace; the
    /// credential goes in on stdin only. Ends at once when the clone's sandbox dies (an
    /// exec attached to a dead gVisor sandbox may never see end-of-stream).
    pub(crate) async fn run_clone(
        &self,
        run: &Run,
        clone: &enclave_core::ClonePhase,
        container: &ContainerSpec,
        reach: &Reach,
    ) -> Result<CloneOutcome, DockerError> {
        let credential = match &run.clone_credential {
            Ok(credential) => credential.as_ref(),
            Err(detail) => return Ok(CloneOutcome { code: 128, detail: detail.clone() }),
        };
        let mut body = container.body.clone();
        clone_via_proxy(&mut body, &reach.url());
        let options = CreateContainerOptionsBuilder::default().name(&container.name).build();
        let created =
            self.docker.create_container(Some(options), body).await.map_err(DockerError::call("clone create"))?;
        self.docker.start_container(&created.id, None).await.map_err(DockerError::call("clone start"))?;
        let exec_options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(true),
            tty: Some(false),
            cmd: Some(clone_command(clone)),
            user: Some(format!("{}:{}", run.plan.containment.run_as_user, run.plan.containment.run_as_group)),
            working_dir: Some(WORKSPACE.to_owned()),
            privileged: Some(false),
            ..Default::default()
        };
        let exec = self.docker.create_exec(&created.id, exec_options).await.map_err(DockerError::call("clone exec"))?;
        let started = self.docker.start_exec(&exec.id, None).await.map_err(DockerError::call("clone exec start"))?;
        let mut transcript = Vec::new();
        let mut sandbox_exit = self.docker.wait_container(&created.id, None);
        if let StartExecResults::Attached { mut output, mut input } = started {
            use tokio::io::AsyncWriteExt as _;
            // The first line is the credential (empty without one), the rest CA
            // certificates to trust (possibly none).
            let mut stdin = zeroize::Zeroizing::new(Vec::new());
            if let Some(value) = credential {
                stdin.extend_from_slice(value.expose().as_bytes());
            }
            stdin.push(b'\n');
            if let Some(pem) = &self.config.extra_ca_pem {
                stdin.extend_from_slice(pem.as_bytes());
            }
            let written = input.write_all(&stdin).await;
            let _ = input.shutdown().await;
            drop(input);
            written.map_err(|e| DockerError::Setup(format!("clone stdin: {e}")))?;
            loop {
                tokio::select! {
                    item = output.next() => match item {
                        Some(Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message })) => {
                            // Only a bounded tail is kept: the repository host writes
                            // into git's output, and may write without end.
                            transcript.extend_from_slice(&message);
                            if transcript.len() > TRANSCRIPT_TAIL_BYTES {
                                transcript.drain(..transcript.len() - TRANSCRIPT_TAIL_BYTES);
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                    _ = sandbox_exit.next() => {
                        return Ok(CloneOutcome { code: 128, detail: "the clone's sandbox exited before the clone finished".to_owned() });
                    }
                }
            }
        }
        let inspect = self.docker.inspect_exec(&exec.id).await.map_err(DockerError::call("clone exec inspect"))?;
        let code = inspect.exit_code.map_or(128, |c| i32::try_from(c).unwrap_or(128));
        // A sandbox that dies under the exec may end the exec's stream (with runsc's own
        // words about the lost process) a moment before Docker sees the container exit:
        // a failed exec looks for that exit before it is read as git's failure.
        if code != 0 && tokio::time::timeout(SANDBOX_EXIT_GRACE, sandbox_exit.next()).await.is_ok() {
            return Ok(CloneOutcome {
                code: 128,
                detail: "the clone's sandbox exited before the clone finished".to_owned(),
            });
        }
        // git's own words, last lines only; the orchestrator redacts secret values again.
        let text = String::from_utf8_lossy(&transcript).to_string();
        // The header's own form (basic auth of `user:token`) is redacted too: it is not a
        // base64 form of the token alone.
        let mut redact = Vec::new();
        if let Some(value) = credential {
            let header = zeroize::Zeroizing::new(auth_header(value.expose()));
            redact.push(enclave_core::Secret::new(value.expose()));
            redact.extend(header.split_once("Basic ").map(|(_, b64)| enclave_core::Secret::new(b64)));
        }
        let redactor = enclave_core::Redactor::new(&redact);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.chars().take(DETAIL_LINE_CHARS).collect())
            .collect();
        let detail = redactor.redact(&lines[lines.len().saturating_sub(4)..].join("; "));
        let detail = if detail.is_empty() { format!("git exited with {code}") } else { detail };
        Ok(CloneOutcome { code, detail })
    }

    /// The clone phase inside `wait`, so the session's deadline and a cancel cover it:
    /// a kill ends it at once. The clone container goes first, then its reach, so nothing
    /// it opened outlives it; `Some` is how the session ended when the clone did not
    /// succeed.
    pub(crate) async fn clone_phase(&self, run: &Run) -> Result<Option<Observation>, BackendError> {
        let (Some(clone), Some(container)) = (run.plan.clone_phase(), &run.containers.clone) else { return Ok(None) };
        let Some(reach) = &run.reach else {
            return Err(BackendError::Unsupported("a clone phase without a session network".into()));
        };
        let _ = run.events.unbounded_send(BackendEvent::CloneStarted);
        let mut killed = run.killed.subscribe();
        let outcome = tokio::select! {
            outcome = self.run_clone(run, clone, container, reach) => Some(outcome),
            _ = killed.wait_for(|k| *k) => None,
        };
        let _ = self.remove_container(&container.name).await;
        reach.proxy.proxy().revoke_clone_reach();
        let (ok, detail, code) = match outcome {
            Some(Ok(CloneOutcome { code: 0, detail })) => (true, detail, 0),
            Some(Ok(CloneOutcome { code, detail })) => (false, detail, code),
            Some(Err(e)) => (false, e.to_string(), 128),
            None => (false, "stopped before the clone finished".to_owned(), 137),
        };
        let _ = run.events.unbounded_send(BackendEvent::CloneFinished { ok, detail });
        let _ = run.events.unbounded_send(BackendEvent::CloneReachRevoked);
        let was_killed = *killed.borrow();
        Ok(match (ok, was_killed) {
            (_, true) => Some(Observation::from_exit(ExitObservation::Signaled { signal: 9 })),
            (true, false) => None,
            // A repository that inflates past the session's disk (a small pack of very
            // compressible content) is the session's disk quota, not git's failure.
            (false, false) => Some(Observation {
                disk_full: run.volumes.iter().any(|path| crate::usage::volume_nearly_full(path)),
                ..Observation::from_exit(ExitObservation::Exited { code })
            }),
        })
    }
}
