//! The orchestrator: drives one session through its lifecycle on any backend, turns
//! backend facts into audit records and session events, enforces the deadline and the
//! log cap by its own clock and counters, derives the final status in one place
//! ([`derive_status`]), and always tears down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::{StreamExt, channel::mpsc};

use crate::archive_stream::Flow;
use crate::artifact::{ArtifactBundler, ArtifactSink};
use crate::audit::{AuditChain, AuditEvent, AuditSink, AuditWriteError};
use crate::backend::{Backend, BackendError, RunHandle};
use crate::clock::{Clock, rfc3339};
use crate::egress::Decision;
use crate::event::{BackendEvent, CloneStage, SessionEvent, Stream, TimedEvent};
use crate::kill_reason::{ExitObservation, KillOrder, KillReason, Observation, SessionStatus, derive_status};
use crate::lost_session::teardown;
use crate::plan::{Isolation, Plan};
use crate::result::{DeniedEgress, SessionResult, StepResult};
use crate::secret::{Redactor, SecretStore};
use crate::session_id::SessionId;

/// How long a backend has to stop a run after the orchestrator kills it.
const KILL_GRACE: Duration = Duration::from_secs(30);

/// The detail of a kill for a user's cancel, from the caller or seen by the backend.
const CANCELLED: &str = "cancelled by the user";

/// Longest line kept in the line buffer before it is flushed as is.
const MAX_LINE: usize = 64 * 1024;

/// Runs sessions on one backend.
pub struct Orchestrator {
    backend: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
    secrets: Arc<dyn SecretStore>,
}

/// One session to run.
pub struct SessionRun<'a> {
    /// Its id.
    pub session: SessionId,
    /// Its plan.
    pub plan: &'a Plan,
    /// Where audit records go.
    pub audit: &'a mut dyn AuditSink,
    /// Called with every session event, in order.
    pub listener: &'a mut (dyn FnMut(&TimedEvent) + Send),
    /// Completes when the user cancels.
    pub cancel: BoxFuture<'static, ()>,
    /// Where the artifact bundle goes; without one, artifacts are not collected.
    pub artifacts: Option<&'a mut dyn ArtifactSink>,
}

/// The session could not be run safely.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// An audit record could not be written; the session was stopped and torn down.
    #[error("audit write failed; session {session} was stopped")]
    Audit {
        /// The session.
        session: SessionId,
        /// The cause.
        #[source]
        source: AuditWriteError,
    },
}

impl Orchestrator {
    /// An orchestrator for `backend`, timed by `clock`, with `secrets` for the clone
    /// step and for redaction.
    pub fn new(backend: Arc<dyn Backend>, clock: Arc<dyn Clock>, secrets: Arc<dyn SecretStore>) -> Self {
        Self { backend, clock, secrets }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The clock that times `session`: the backend's virtual clock if it models time,
    /// otherwise the orchestrator's. Use it for anything timed against the session
    /// (such as a modelled cancel).
    pub fn clock_for(&self, session: &SessionId) -> Arc<dyn Clock> {
        self.backend.session_clock(session).unwrap_or_else(|| self.clock.clone())
    }

    /// Runs one session to the end, tearing it down whatever happens.
    pub async fn run(&self, run: SessionRun<'_>) -> Result<SessionResult, OrchestratorError> {
        let clock = self.clock_for(&run.session);
        let mut driver = Driver::new(self, clock, &run.session, run.plan, run.audit, run.listener);
        // Re-borrowed for the driver's (shorter) lifetime.
        driver.artifact_sink = run.artifacts.map(|sink| -> &mut dyn ArtifactSink { sink });
        let outcome = driver.drive(run.cancel).await;
        driver.finish(outcome).await
    }
}

struct Driver<'a> {
    orchestrator: &'a Orchestrator,
    clock: Arc<dyn Clock>,
    session: SessionId,
    plan: &'a Plan,
    audit: &'a mut dyn AuditSink,
    listener: &'a mut (dyn FnMut(&TimedEvent) + Send),
    chain: AuditChain,
    audit_failure: Option<AuditWriteError>,
    event_seq: u64,
    redactor: Redactor,
    started_ms: u64,
    clone_started_ms: Option<u64>,
    clone_finished_ms: Option<u64>,
    run_started_ms: Option<u64>,
    order: Option<KillOrder>,
    kill_sent: bool,
    log_bytes: u64,
    log_truncated: bool,
    line_buffers: BTreeMap<u8, Vec<u8>>,
    denied: BTreeMap<(String, u16), DeniedEgress>,
    steps: Vec<StepResult>,
    warnings: Vec<String>,
    artifact_sink: Option<&'a mut dyn ArtifactSink>,
    artifacts: Vec<crate::artifact::ArtifactFile>,
    artifacts_skipped: Vec<crate::artifact::SkippedArtifact>,
    artifacts_location: Option<String>,
}

enum Outcome {
    Observed(Observation),
    LaunchFailed(String),
}

impl<'a> Driver<'a> {
    fn new(
        orchestrator: &'a Orchestrator,
        clock: Arc<dyn Clock>,
        session: &SessionId,
        plan: &'a Plan,
        audit: &'a mut dyn AuditSink,
        listener: &'a mut (dyn FnMut(&TimedEvent) + Send),
    ) -> Self {
        Self {
            orchestrator,
            started_ms: clock.now_ms(),
            clock,
            session: session.clone(),
            plan,
            audit,
            listener,
            chain: AuditChain::new(session.clone()),
            audit_failure: None,
            event_seq: 0,
            redactor: Redactor::new(&orchestrator.secrets.redaction_values()),
            clone_started_ms: None,
            clone_finished_ms: None,
            run_started_ms: None,
            order: None,
            kill_sent: false,
            log_bytes: 0,
            log_truncated: false,
            line_buffers: BTreeMap::new(),
            denied: BTreeMap::new(),
            steps: Vec::new(),
            warnings: plan.warnings.clone(),
            artifact_sink: None,
            artifacts: Vec::new(),
            artifacts_skipped: Vec::new(),
            artifacts_location: None,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn backend(&self) -> &'a dyn Backend {
        self.orchestrator.backend.as_ref()
    }

    fn record(&mut self, event: AuditEvent) {
        if self.audit_failure.is_some() {
            return;
        }
        let record = self.chain.append(rfc3339(self.now()), event);
        if let Err(e) = self.audit.append(&record) {
            self.audit_failure = Some(e);
        }
    }

    fn publish(&mut self, event: SessionEvent) {
        let timed = TimedEvent { seq: self.event_seq, at: rfc3339(self.now()), event };
        self.event_seq += 1;
        (self.listener)(&timed);
    }

    async fn drive(&mut self, cancel: BoxFuture<'static, ()>) -> Outcome {
        let backend = self.backend();
        self.record(AuditEvent::SessionCreated {
            name: self.plan.name.clone(),
            backend: backend.name().to_owned(),
            simulated: !backend.capabilities().executes_code,
        });
        self.record(AuditEvent::PlanResolved {
            plan_digest: self.plan.digest.to_string(),
            isolation: self.plan.containment.isolation,
        });
        if self.plan.containment.isolation != Isolation::Gvisor {
            self.record(AuditEvent::IsolationWeakened { isolation: self.plan.containment.isolation });
        }
        for warning in self.plan.warnings.clone() {
            self.publish(SessionEvent::Warning { message: warning });
        }
        self.publish(SessionEvent::Status { status: SessionStatus::Pending });
        if self.audit_failure.is_some() {
            return Outcome::LaunchFailed("audit could not be written".to_owned());
        }

        let (sender, mut receiver) = mpsc::unbounded();
        let secrets = self.orchestrator.secrets.clone();
        let handle = match backend.launch(&self.session, self.plan, secrets.as_ref(), sender).await {
            Ok(handle) => handle,
            Err(e) => return Outcome::LaunchFailed(e.to_string()),
        };

        let elapsed = self.now().saturating_sub(self.started_ms);
        let remaining = self.plan.quotas.deadline_ms.saturating_sub(elapsed);
        let mut deadline = self.clock.sleep(Duration::from_millis(remaining)).fuse();
        let mut cancel = cancel.fuse();
        let mut wait = backend.wait(&handle).fuse();
        // Armed when a kill is sent: a backend that does not stop the run by then has
        // lost control of it, and the session must still end (and be torn down).
        let mut kill_grace: futures::future::Fuse<BoxFuture<'static, ()>> = futures::future::Fuse::terminated();
        let observed = loop {
            futures::select_biased! {
                event = receiver.next() => {
                    // `None`: all senders dropped; the stream is terminated and select skips it.
                    if let Some(event) = event {
                        self.handle(event);
                    }
                }
                // Timers before `wait`: on a virtual clock a due timer fires while the
                // backend yields, and must be seen before the backend moves on.
                () = deadline => self.order_kill(KillReason::DeadlineExceeded, format!(
                    "deadline of {} reached", enclave_spec::DurationMs(self.plan.quotas.deadline_ms))),
                () = cancel => self.order_kill(KillReason::Cancelled, CANCELLED.to_owned()),
                observed = wait => break observed,
                () = kill_grace => break Err(BackendError::Infra {
                    message: format!("the backend did not stop the session within {}s of the kill", KILL_GRACE.as_secs()),
                    source: None,
                }),
            }
            if self.audit_failure.is_some() && self.order.is_none() {
                self.order = Some(KillOrder { reason: KillReason::Cancelled, detail: "audit write failed".into() });
                // Closing the channel makes every later record fail at its sender, so the
                // egress proxy denies from here on: nothing passes unaudited.
                receiver.close();
            }
            if self.order.is_some() && !self.kill_sent {
                self.kill_sent = true;
                kill_grace = self.clock.sleep(KILL_GRACE).fuse();
                if let Err(e) = backend.kill(&handle).await {
                    self.warnings.push(format!("kill failed: {e}"));
                }
            }
        };
        // The run is over: nothing more is taken (a proxy's later record fails, so it
        // denies), and what was sent before is drained.
        receiver.close();
        while let Ok(event) = receiver.try_recv() {
            self.handle(event);
        }
        self.flush_lines();
        if observed.is_ok() {
            // Collecting is part of the session: a cancel or the deadline ends it, as
            // anywhere else (the collection is dropped; nothing half-read is stored).
            let deadline_ms = self.plan.quotas.deadline_ms;
            let stopped = {
                let collect = self.collect_artifacts(&handle).fuse();
                futures::pin_mut!(collect);
                futures::select_biased! {
                    () = collect => None,
                    () = cancel => Some((KillReason::Cancelled, CANCELLED.to_owned())),
                    () = deadline => Some((KillReason::DeadlineExceeded, format!(
                        "deadline of {} reached while collecting artifacts",
                        enclave_spec::DurationMs(deadline_ms)))),
                }
            };
            if let Some((reason, detail)) = stopped {
                self.order_kill(reason, detail);
            }
        }
        Outcome::Observed(
            observed.unwrap_or_else(|e: BackendError| {
                Observation::from_exit(ExitObservation::Lost { detail: e.to_string() })
            }),
        )
    }

    /// Copies out the plan's artifacts before teardown, one path at a time, each read
    /// only as far as the bundle still has room (the policy's cap).
    async fn collect_artifacts(&mut self, handle: &RunHandle) {
        if self.plan.artifacts.is_empty() || self.artifact_sink.is_none() {
            return;
        }
        let plan = self.plan;
        let backend = self.backend();
        let mut bundler = ArtifactBundler::new(plan.artifact_bytes_max, &self.redactor);
        for path in &plan.artifacts {
            if !bundler.begin(path) {
                continue;
            }
            let mut archive = match backend.artifact_archive(handle, path).await {
                Ok(Some(archive)) => archive,
                // This backend collects no artifacts.
                Ok(None) => return,
                Err(e) => {
                    self.warnings.push(format!("artifacts could not be collected: {e}"));
                    return;
                }
            };
            while let Some(chunk) = archive.next().await {
                match chunk {
                    Ok(bytes) if bundler.feed(&bytes) == Flow::Continue => {}
                    // Enough was read: dropping the archive stops the download.
                    Ok(_) => break,
                    Err(reason) => {
                        bundler.fail(&reason);
                        break;
                    }
                }
            }
            bundler.end();
        }
        let bundle = bundler.finish();
        self.record(AuditEvent::ArtifactsCollected {
            files: bundle.files.iter().map(|f| f.path.clone()).collect(),
            bytes: bundle.files.iter().map(|f| f.bytes).sum(),
            skipped: bundle.skipped.iter().map(|s| format!("{}: {}", s.path, s.reason)).collect(),
        });
        if let Some(sink) = self.artifact_sink.as_mut() {
            match sink.store(&bundle) {
                Ok(location) => self.artifacts_location = Some(location),
                Err(e) => self.warnings.push(format!("artifacts could not be stored: {e}")),
            }
        }
        self.artifacts = bundle.files;
        self.artifacts_skipped = bundle.skipped;
    }

    fn order_kill(&mut self, reason: KillReason, detail: String) {
        if self.order.is_some() {
            return;
        }
        self.record(AuditEvent::Kill { reason, detail: detail.clone() });
        self.publish(SessionEvent::Kill { reason, detail: detail.clone() });
        self.order = Some(KillOrder { reason, detail });
    }

    fn handle(&mut self, event: BackendEvent) {
        let clone = self.plan.clone_phase();
        match event {
            BackendEvent::CloneStarted => {
                self.clone_started_ms = Some(self.now());
                if let Some(c) = clone {
                    self.record(AuditEvent::CloneStarted { host: c.host.to_string(), port: c.port });
                }
                self.publish(SessionEvent::Status { status: SessionStatus::Cloning });
                self.publish(SessionEvent::Clone {
                    stage: CloneStage::Started,
                    detail: clone.map(|c| c.url.clone()).unwrap_or_default(),
                });
            }
            BackendEvent::CloneFinished { ok, detail } => {
                self.clone_finished_ms = Some(self.now());
                let detail = self.redactor.redact(&detail);
                self.record(AuditEvent::CloneFinished { ok, detail: detail.clone() });
                let stage = if ok { CloneStage::Finished } else { CloneStage::Failed };
                self.publish(SessionEvent::Clone { stage, detail });
            }
            BackendEvent::CloneReachRevoked => {
                if let Some(c) = clone {
                    self.record(AuditEvent::CloneReachRevoked { host: c.host.to_string(), port: c.port });
                    self.publish(SessionEvent::Clone {
                        stage: CloneStage::ReachRevoked,
                        detail: format!("{}:{}", c.host, c.port),
                    });
                }
            }
            BackendEvent::WorkloadStarted => {
                self.run_started_ms = Some(self.now());
                let image = self.plan.run_phase().map(|r| r.image.clone()).unwrap_or_default();
                self.record(AuditEvent::WorkloadStarted { image });
                self.publish(SessionEvent::Status { status: SessionStatus::Running });
            }
            BackendEvent::StepStarted { name } => self.publish(SessionEvent::StepStarted { name }),
            BackendEvent::StepFinished { name, exit_code, duration_ms } => {
                self.steps.push(StepResult { name: name.clone(), exit_code, duration_ms });
                self.publish(SessionEvent::StepFinished { name, exit_code, duration_ms });
            }
            BackendEvent::Output { stream, data } => self.output(stream, &data),
            BackendEvent::OutputVolume { lines, bytes } => {
                let kept = self.count_log_bytes(bytes);
                let kept_lines = lines.saturating_mul(kept).checked_div(bytes).unwrap_or(lines);
                if kept > 0 {
                    self.publish(SessionEvent::LogVolume { lines: kept_lines, bytes: kept });
                }
            }
            BackendEvent::Egress { phase, host, port, decision } => {
                self.record(AuditEvent::EgressDecision { phase, host: host.clone(), port, decision: decision.clone() });
                if let Decision::Deny { reason } = &decision {
                    self.count_denied(&host, port, &reason.to_string());
                }
                self.publish(SessionEvent::Egress { phase, host, port, decision });
            }
            BackendEvent::BindingUsed { binding, host, method, path, allowed, status, reason } => {
                if let (false, Some(why)) = (allowed, &reason) {
                    self.count_denied(&host, crate::egress::BINDING_PORT, why);
                }
                self.record(AuditEvent::BindingUsed {
                    binding: binding.clone(),
                    host,
                    method: method.clone(),
                    path: path.clone(),
                    allowed,
                    status,
                    reason,
                });
                self.publish(SessionEvent::Binding { binding, method, path, allowed, status });
            }
            BackendEvent::StepTimedOut { name, timeout_ms } => self.order_kill(
                KillReason::DeadlineExceeded,
                format!("step {name:?} ran past its timeout of {}", enclave_spec::DurationMs(timeout_ms)),
            ),
            BackendEvent::PidsLimitHit => self
                .order_kill(KillReason::PidsExceeded, format!("process limit of {} exhausted", self.plan.quotas.pids)),
            BackendEvent::DeadlineReached => self.order_kill(
                KillReason::DeadlineExceeded,
                format!("deadline of {} reached", enclave_spec::DurationMs(self.plan.quotas.deadline_ms)),
            ),
            BackendEvent::DiskFull => self.order_kill(
                KillReason::DiskExceeded,
                format!("workspace or /tmp full ({} each)", enclave_spec::ByteSize(self.plan.quotas.disk_bytes)),
            ),
            BackendEvent::CancelRequested => self.order_kill(KillReason::Cancelled, CANCELLED.to_owned()),
        }
    }

    fn count_denied(&mut self, host: &str, port: u16, reason: &str) {
        let entry = self.denied.entry((host.to_owned(), port)).or_insert_with(|| DeniedEgress {
            host: host.to_owned(),
            port,
            attempts: 0,
            reason: reason.to_owned(),
        });
        entry.attempts += 1;
    }

    /// Counts output against the cap; returns how many of `bytes` are kept. Crossing the
    /// cap orders the log-limit kill.
    fn count_log_bytes(&mut self, bytes: u64) -> u64 {
        let cap = self.plan.quotas.log_bytes;
        let before = self.log_bytes;
        self.log_bytes = self.log_bytes.saturating_add(bytes);
        if self.log_bytes <= cap {
            return bytes;
        }
        let kept = cap.saturating_sub(before);
        if !self.log_truncated {
            self.log_truncated = true;
            let marker = format!("[enclave] output truncated at {} (logBytes)", enclave_spec::ByteSize(cap));
            self.publish(SessionEvent::Log { stream: Stream::Stderr, line: marker });
            self.order_kill(KillReason::LogLimitExceeded, format!("output exceeded {}", enclave_spec::ByteSize(cap)));
        }
        kept
    }

    fn output(&mut self, stream: Stream, data: &[u8]) {
        let kept = self.count_log_bytes(data.len() as u64) as usize;
        let key = stream as u8;
        let mut buffer = self.line_buffers.remove(&key).unwrap_or_default();
        buffer.extend_from_slice(&data[..kept.min(data.len())]);
        while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=newline).collect();
            self.emit_line(stream, &line[..line.len() - 1]);
        }
        if buffer.len() > MAX_LINE {
            let line = std::mem::take(&mut buffer);
            self.emit_line(stream, &line);
        }
        self.line_buffers.insert(key, buffer);
    }

    fn flush_lines(&mut self) {
        for (key, buffer) in std::mem::take(&mut self.line_buffers) {
            if !buffer.is_empty() {
                let stream = if key == Stream::Stdout as u8 { Stream::Stdout } else { Stream::Stderr };
                self.emit_line(stream, &buffer);
            }
        }
    }

    fn emit_line(&mut self, stream: Stream, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let line = self.redactor.redact(text.trim_end_matches('\r'));
        self.publish(SessionEvent::Log { stream, line });
    }

    async fn finish(mut self, outcome: Outcome) -> Result<SessionResult, OrchestratorError> {
        let (status, exit_code) = match outcome {
            Outcome::LaunchFailed(message) => (SessionStatus::Errored { message }, None),
            Outcome::Observed(observation) => {
                let status = if self.audit_failure.is_some() {
                    SessionStatus::Errored { message: "audit could not be written; session stopped".into() }
                } else {
                    derive_status(&observation, self.order.as_ref())
                };
                if let (SessionStatus::Killed { reason, detail }, None) = (&status, &self.order) {
                    // A kill the backend observed (OOM, lost sandbox) rather than ordered.
                    self.record(AuditEvent::Kill { reason: *reason, detail: detail.clone() });
                }
                let exit_code = match observation.exit {
                    ExitObservation::Exited { code } => Some(code),
                    ExitObservation::Signaled { signal } => Some(128 + signal),
                    ExitObservation::Lost { .. } => None,
                };
                (status, exit_code)
            }
        };
        let finished_ms = self.now();
        let duration_ms = finished_ms.saturating_sub(self.started_ms);
        let capabilities = self.backend().capabilities();
        self.record(AuditEvent::Result {
            status: status.clone(),
            exit_code,
            duration_ms,
            simulated: !capabilities.executes_code,
        });

        let (removed, ok, warnings) = teardown(self.backend(), &self.session).await;
        self.warnings.extend(warnings);
        self.record(AuditEvent::Teardown { removed, ok });

        let result = SessionResult {
            session: self.session.clone(),
            name: self.plan.name.clone(),
            backend: self.backend().name().to_owned(),
            simulated: !capabilities.executes_code,
            kill_reason: status.kill_reason(),
            status: status.clone(),
            exit_code,
            started_at: rfc3339(self.started_ms),
            finished_at: rfc3339(finished_ms),
            duration_ms,
            clone_duration_ms: match (self.clone_started_ms, self.clone_finished_ms) {
                (Some(start), Some(end)) => Some(end.saturating_sub(start)),
                _ => None,
            },
            run_duration_ms: self.run_started_ms.map(|start| finished_ms.saturating_sub(start)),
            plan_digest: self.plan.digest.to_string(),
            audit_digest: self.chain.digest().to_owned(),
            isolation: self.plan.containment.isolation,
            capabilities,
            egress_denied: std::mem::take(&mut self.denied).into_values().collect(),
            log_bytes: self.log_bytes,
            log_truncated: self.log_truncated,
            steps: std::mem::take(&mut self.steps),
            artifacts: std::mem::take(&mut self.artifacts),
            artifacts_skipped: std::mem::take(&mut self.artifacts_skipped),
            artifacts_location: self.artifacts_location.take(),
            warnings: std::mem::take(&mut self.warnings),
        };
        self.publish(SessionEvent::Status { status });
        self.publish(SessionEvent::Finished { result: Box::new(result.clone()) });
        match self.audit_failure.take() {
            Some(source) => Err(OrchestratorError::Audit { session: self.session.clone(), source }),
            None => Ok(result),
        }
    }
}
