//! A recording backend for the orchestrator tests, in the manner of youki's recording
//! syscall layer: it runs nothing, plays a scripted sequence of [`Step`]s (backend facts,
//! passing time, the end of the run) and records every call the orchestrator makes to
//! it, so that a test asserts on what the orchestrator asked of the backend as well as on
//! the result. Its time is a [`ManualClock`] that only the script moves.

#![allow(dead_code, unreachable_pub, reason = "test support; each test uses a part, nothing here is public API")]

pub mod clock;

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use enclave_core::{
    Backend, BackendError, BackendEvent, BackendEvents, Capabilities, Clock, ExitObservation, Observation, Plan,
    RunHandle, SecretStore, SessionId, Support, TeardownReport,
};
use futures::FutureExt as _;
use tokio::sync::Notify;

pub use clock::ManualClock;

/// The id of the run every launch returns.
pub const RUN_ID: &str = "run-1";

/// One scripted backend action, played in order by `wait`.
#[derive(Clone)]
pub enum Step {
    /// Report this fact on the session's event channel.
    Emit(BackendEvent),
    /// Let this many milliseconds of modelled time pass (a kill ends the run there).
    Advance(u64),
    /// The run ends with this observation.
    End(Observation),
    /// Run until killed.
    UntilKilled,
    /// Run on, ignoring any kill (a backend that lost control of the run).
    IgnoreKill,
    /// `wait` fails (the backend lost contact).
    FailWait,
}

/// A call the orchestrator made to the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `launch` for this session.
    Launch(SessionId),
    /// `wait` on this run (recorded when the orchestrator first polls it).
    Wait(String),
    /// `kill` of this run. `events_closed`: the event channel was already closed, so a
    /// record sent now would fail (what the egress proxy's recorder would see: it then
    /// denies).
    Kill { run: String, events_closed: bool },
    /// `teardown` of this session.
    Teardown(SessionId),
}

/// Plays a script and records every call.
pub struct RecordingBackend {
    script: Vec<Step>,
    launch_fails: bool,
    clock: Arc<ManualClock>,
    killed: Notify,
    events: Mutex<Option<BackendEvents>>,
    calls: Mutex<Vec<Call>>,
}

impl RecordingBackend {
    /// A backend whose run plays `script`.
    pub fn new(script: Vec<Step>) -> Arc<Self> {
        Arc::new(Self::with(script, false))
    }

    /// A backend whose launch fails (its daemon is unreachable).
    pub fn failing_launch() -> Arc<Self> {
        Arc::new(Self::with(Vec::new(), true))
    }

    fn with(script: Vec<Step>, launch_fails: bool) -> Self {
        Self {
            script,
            launch_fails,
            clock: Arc::new(ManualClock::new()),
            killed: Notify::new(),
            events: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The clock the script moves; the orchestrator under test is given it.
    pub fn clock(&self) -> Arc<ManualClock> {
        self.clock.clone()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// How many calls so far were kills.
    pub fn kills(&self) -> usize {
        self.calls().iter().filter(|call| matches!(call, Call::Kill { .. })).count()
    }

    fn record(&self, call: Call) {
        lock(&self.calls).push(call);
    }

    /// Lets `ms` pass, unless a kill comes first (then `false`).
    async fn advance(&self, ms: u64) -> bool {
        let target = self.clock.now_ms() + ms;
        tokio::select! {
            biased;
            () = self.killed.notified() => false,
            () = self.clock.advance_to(target) => true,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The workload exited with `code`.
pub fn exited(code: i32) -> Observation {
    Observation::from_exit(ExitObservation::Exited { code })
}

/// The workload died of SIGKILL.
pub fn signaled() -> Observation {
    Observation { exit: ExitObservation::Signaled { signal: 9 }, ..exited(0) }
}

#[async_trait]
impl Backend for RecordingBackend {
    fn name(&self) -> &'static str {
        "recording"
    }

    /// A backend that executes code as far as the orchestrator can tell (results are
    /// not marked simulated); what it guarantees is whatever the script models.
    fn capabilities(&self) -> Capabilities {
        let m = Support::Modelled;
        Capabilities {
            executes_code: true,
            gvisor: m,
            hardened_container: m,
            egress_deny: m,
            egress_allowlist: m,
            bindings: m,
            deadline: m,
            memory_kill_reason: m,
            pids_kill_reason: m,
            disk_kill_reason: m,
            log_limit: m,
            clone: m,
            artifacts: Support::NotYet,
        }
    }

    async fn launch(
        &self,
        session: &SessionId,
        _plan: &Plan,
        _secrets: &dyn SecretStore,
        events: BackendEvents,
    ) -> Result<RunHandle, BackendError> {
        self.record(Call::Launch(session.clone()));
        if self.launch_fails {
            return Err(BackendError::Infra { message: "daemon unreachable".into(), source: None });
        }
        *lock(&self.events) = Some(events);
        Ok(RunHandle { session: session.clone(), id: RUN_ID.into() })
    }

    async fn wait(&self, run: &RunHandle) -> Result<Observation, BackendError> {
        self.record(Call::Wait(run.id.clone()));
        let Some(sender) = lock(&self.events).clone() else {
            return Err(BackendError::Infra { message: "wait before launch".into(), source: None });
        };
        for step in &self.script {
            if self.killed.notified().now_or_never().is_some() {
                return Ok(signaled());
            }
            match step {
                Step::Emit(event) => {
                    sender.unbounded_send(event.clone()).expect("the orchestrator takes events while it waits");
                    tokio::task::yield_now().await;
                }
                Step::Advance(ms) => {
                    if !self.advance(*ms).await {
                        return Ok(signaled());
                    }
                }
                Step::End(observation) => return Ok(observation.clone()),
                Step::UntilKilled => {
                    while self.advance(60_000).await {}
                    return Ok(signaled());
                }
                Step::IgnoreKill => loop {
                    let target = self.clock.now_ms() + 60_000;
                    self.clock.advance_to(target).await;
                },
                Step::FailWait => {
                    return Err(BackendError::Infra { message: "lost contact with the sandbox".into(), source: None });
                }
            }
        }
        Ok(exited(0))
    }

    async fn kill(&self, run: &RunHandle) -> Result<(), BackendError> {
        let events_closed = lock(&self.events).as_ref().is_some_and(futures::channel::mpsc::UnboundedSender::is_closed);
        self.record(Call::Kill { run: run.id.clone(), events_closed });
        self.killed.notify_one();
        Ok(())
    }

    async fn teardown(&self, session: &SessionId) -> Result<TeardownReport, BackendError> {
        self.record(Call::Teardown(session.clone()));
        Ok(TeardownReport { removed: vec![format!("container:{RUN_ID}")], failed: vec![] })
    }

    async fn reap_orphans(&self, _live: &[SessionId]) -> Result<Vec<SessionId>, BackendError> {
        Ok(Vec::new())
    }
}
