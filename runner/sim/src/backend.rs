//! The simulator as a [`Backend`]: walks the modelled timeline on a per-session
//! virtual clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use enclave_core::{
    Backend, BackendError, BackendEvents, Capabilities, Clock, ExitObservation, Observation, Plan, RunHandle,
    SecretStore, SessionId, Support, TeardownReport,
};
use tokio::sync::Notify;

use crate::clock::VirtualClock;
use crate::model::{Action, timeline};

/// The simulator backend. Never executes code; every result it yields is marked
/// `simulated: true` by the orchestrator because `executes_code` is false.
#[derive(Debug, Default)]
pub struct SimBackend {
    sessions: Mutex<HashMap<SessionId, Arc<SimSession>>>,
    real_time: bool,
}

#[derive(Debug)]
struct SimSession {
    clock: Arc<VirtualClock>,
    run: Mutex<Option<Arc<SimRun>>>,
}

#[derive(Debug)]
struct SimRun {
    timeline: Vec<(u64, Action)>,
    started_ms: u64,
    events: BackendEvents,
    killed: Notify,
}

impl SimBackend {
    /// A simulator with no sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// A simulator whose modelled time passes at wall-clock pace: a session modelled to
    /// last 30 s takes 30 s, so a server's clients can watch it run and cancel it. Still
    /// nothing is executed.
    pub fn real_time() -> Self {
        Self { real_time: true, ..Self::default() }
    }

    fn session(&self, id: &SessionId) -> Arc<SimSession> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .entry(id.clone())
            .or_insert_with(|| Arc::new(SimSession { clock: VirtualClock::starting_now(), run: Mutex::new(None) }))
            .clone()
    }

    fn run(&self, handle: &RunHandle) -> Result<Arc<SimRun>, BackendError> {
        let session = self.session(&handle.session);
        let run = session.run.lock().unwrap_or_else(PoisonError::into_inner).clone();
        run.ok_or_else(|| BackendError::Unsupported(format!("session {} was not launched", handle.session)))
    }
}

/// What the simulator can say about each guarantee: it models them all and enforces none.
pub fn capabilities() -> Capabilities {
    let m = Support::Modelled;
    Capabilities {
        executes_code: false,
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

#[async_trait]
impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    fn session_clock(&self, session: &SessionId) -> Option<Arc<dyn Clock>> {
        Some(self.session(session).clock.clone())
    }

    async fn launch(
        &self,
        session: &SessionId,
        plan: &Plan,
        _secrets: &dyn SecretStore,
        events: BackendEvents,
    ) -> Result<RunHandle, BackendError> {
        let state = self.session(session);
        let run = Arc::new(SimRun {
            timeline: timeline(plan),
            started_ms: state.clock.now_ms(),
            events,
            killed: Notify::new(),
        });
        *state.run.lock().unwrap_or_else(PoisonError::into_inner) = Some(run);
        Ok(RunHandle { session: session.clone(), id: format!("sim-{session}") })
    }

    async fn wait(&self, handle: &RunHandle) -> Result<Observation, BackendError> {
        let run = self.run(handle)?;
        let clock = self.session(&handle.session).clock.clone();
        let killed = Observation::from_exit(ExitObservation::Signaled { signal: 9 });
        for (offset, action) in &run.timeline {
            let ahead = (run.started_ms + offset).saturating_sub(clock.now_ms());
            if self.real_time && ahead > 0 {
                tokio::select! {
                    biased;
                    () = run.killed.notified() => return Ok(killed),
                    () = tokio::time::sleep(std::time::Duration::from_millis(ahead)) => {}
                }
            }
            tokio::select! {
                biased;
                () = run.killed.notified() => return Ok(killed),
                () = clock.advance_to(run.started_ms + offset) => {}
            }
            // A timer that fired on the way (deadline, cancel) may have killed the run.
            if futures::FutureExt::now_or_never(run.killed.notified()).is_some() {
                return Ok(killed);
            }
            match action {
                Action::Emit(event) => {
                    // The orchestrator may have stopped listening; the model goes on.
                    let _ = run.events.unbounded_send(event.clone());
                    tokio::task::yield_now().await;
                }
                Action::End(observation) => return Ok(observation.clone()),
            }
        }
        Err(BackendError::Unsupported("the modelled timeline has no end".into()))
    }

    async fn kill(&self, handle: &RunHandle) -> Result<(), BackendError> {
        // `notify_one` stores a permit, so a kill is seen even if `wait` is not parked.
        self.run(handle)?.killed.notify_one();
        Ok(())
    }

    async fn teardown(&self, session: &SessionId) -> Result<TeardownReport, BackendError> {
        // The simulator created nothing outside its own memory.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(session);
        Ok(TeardownReport::default())
    }

    async fn reap_orphans(&self, live: &[SessionId]) -> Result<Vec<SessionId>, BackendError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let orphans: Vec<SessionId> = sessions.keys().filter(|id| !live.contains(id)).cloned().collect();
        for id in &orphans {
            sessions.remove(id);
        }
        Ok(orphans)
    }
}
