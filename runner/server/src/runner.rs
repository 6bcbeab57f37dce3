//! Runs sessions: one task per session drives the core orchestrator; one writer task
//! per session persists its events in order and only then publishes them live, so a
//! subscriber that reads the store after subscribing misses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use enclave_core::{
    ArtifactBundle, ArtifactSink, AuditRecord, AuditSink, AuditWriteError, Backend, MemorySecrets, Orchestrator, Plan,
    SessionEvent, SessionId, SessionRun, TimedEvent,
};
use enclave_store::{Store, StoredEvent, TenantId};
use futures::FutureExt as _;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::Metrics;

/// Live events of one session, for SSE subscribers.
pub(crate) type LiveEvents = broadcast::Receiver<Arc<StoredEvent>>;

struct Running {
    live: broadcast::Sender<Arc<StoredEvent>>,
    cancel: Option<oneshot::Sender<()>>,
}

/// Starts, cancels and follows sessions.
pub(crate) struct SessionRunner {
    store: Arc<dyn Store>,
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    running: Mutex<HashMap<SessionId, Running>>,
}

/// Writes each audit record to the store before the orchestrator goes on: nothing runs
/// unaudited. The orchestrator's sink is synchronous, so the write blocks this worker
/// thread (the runtime must be multi-threaded; `enclave serve` and the tests are).
struct StoreAuditSink {
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
}

impl AuditSink for StoreAuditSink {
    fn append(&mut self, record: &AuditRecord) -> Result<(), AuditWriteError> {
        let (store, runtime) = (self.store.clone(), self.runtime.clone());
        tokio::task::block_in_place(|| runtime.block_on(store.append_audit(record)))
            .map_err(|e| AuditWriteError { seq: record.seq, source: Box::new(e) })
    }
}

/// Stores a session's artifact bundle (blocking, like the audit sink).
struct StoreArtifactSink {
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
    session: SessionId,
}

impl ArtifactSink for StoreArtifactSink {
    fn store(&mut self, bundle: &ArtifactBundle) -> Result<String, String> {
        let (store, runtime) = (self.store.clone(), self.runtime.clone());
        tokio::task::block_in_place(|| runtime.block_on(store.put_artifacts(&self.session, bundle)))
            .map(|()| format!("/v1/sessions/{}/artifacts", self.session))
            .map_err(|e| e.to_string())
    }
}

impl SessionRunner {
    pub(crate) fn new(store: Arc<dyn Store>, backend: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Self {
        Self { store, backend, metrics, running: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to a running session's live events; `None` once it has ended here.
    pub(crate) fn subscribe(&self, session: &SessionId) -> Option<LiveEvents> {
        self.lock().get(session).map(|r| r.live.subscribe())
    }

    /// Asks a running session to stop; false if it is not running here.
    pub(crate) fn cancel(&self, session: &SessionId) -> bool {
        let mut running = self.lock();
        match running.get_mut(session).and_then(|r| r.cancel.take()) {
            Some(cancel) => cancel.send(()).is_ok(),
            None => running.contains_key(session),
        }
    }

    /// Asks every running session to stop (server shutdown): each still ends through
    /// the orchestrator, torn down and audited.
    pub(crate) fn cancel_all(&self) {
        for running in self.lock().values_mut() {
            if let Some(cancel) = running.cancel.take() {
                let _ = cancel.send(());
            }
        }
    }

    /// Whether no session is running here.
    pub(crate) fn is_idle(&self) -> bool {
        self.lock().is_empty()
    }

    /// Starts a recorded session. Its secrets are opened now, for the clone step and
    /// redaction only, and dropped (zeroized) when the session ends.
    pub(crate) fn start(self: &Arc<Self>, session: SessionId, tenant: TenantId, plan: Plan) {
        let (live, _) = broadcast::channel(1024);
        let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
        self.lock().insert(session.clone(), Running { live: live.clone(), cancel: Some(cancel_tx) });
        let (events_tx, events_rx) = mpsc::unbounded_channel::<TimedEvent>();
        let writer = tokio::spawn(self.clone().write_events(session.clone(), events_rx, live));
        let runner = self.clone();
        tokio::spawn(async move {
            runner.drive(session.clone(), tenant, plan, events_tx, cancel_rx).await;
            // The writer ends when the listener (and with it the sender) is dropped.
            if let Err(e) = writer.await {
                tracing::error!(%session, error = %e, "event writer task failed");
            }
            runner.lock().remove(&session);
        });
    }

    async fn drive(
        &self,
        session: SessionId,
        tenant: TenantId,
        plan: Plan,
        events: mpsc::UnboundedSender<TimedEvent>,
        cancel: oneshot::Receiver<()>,
    ) {
        let mut secrets = MemorySecrets::default();
        match self.store.open_secrets(&tenant).await {
            Ok(opened) => {
                for (name, value) in opened {
                    secrets.insert(name, value);
                }
            }
            // No key configured and no secrets stored is the common case and is not an
            // error (open_secrets returns empty then); anything else is logged and the
            // session runs without secrets, so a clone that needs one fails visibly.
            Err(e) => tracing::error!(%session, error = %e, "tenant secrets could not be opened"),
        }
        let orchestrator =
            Orchestrator::new(self.backend.clone(), Arc::new(enclave_core::WallClock), Arc::new(secrets));
        let requested = cancel.then(|sent| async move {
            if sent.is_err() {
                // The runner dropped the sender without cancelling: never fires.
                futures::future::pending::<()>().await;
            }
        });
        let cancel = requested.boxed();
        let runtime = tokio::runtime::Handle::current();
        let mut audit = StoreAuditSink { store: self.store.clone(), runtime: runtime.clone() };
        let mut artifacts = StoreArtifactSink { store: self.store.clone(), runtime, session: session.clone() };
        let mut listener = move |event: &TimedEvent| {
            // The writer only goes away if it failed; the session still ends and tears down.
            let _ = events.send(event.clone());
        };
        let outcome = orchestrator
            .run(SessionRun {
                session: session.clone(),
                plan: &plan,
                audit: &mut audit,
                listener: &mut listener,
                cancel,
                artifacts: Some(&mut artifacts),
            })
            .await;
        if let Err(e) = outcome {
            tracing::error!(%session, error = %e, "session stopped: audit could not be written");
        }
    }

    async fn write_events(
        self: Arc<Self>,
        session: SessionId,
        mut events: mpsc::UnboundedReceiver<TimedEvent>,
        live: broadcast::Sender<Arc<StoredEvent>>,
    ) {
        // Events that queued up while the last batch was written go in one transaction.
        let mut batch = Vec::new();
        while events.recv_many(&mut batch, 256).await > 0 {
            let mut finished = false;
            let mut latest_status = None;
            for event in &batch {
                self.metrics.observe(&event.event);
                match &event.event {
                    SessionEvent::Status { status } if !status.is_terminal() => latest_status = Some(status),
                    SessionEvent::Finished { result } => {
                        finished = true;
                        // The result is stored before the event that announces it.
                        let now = chrono::Utc::now().timestamp_millis();
                        if let Err(e) = self.store.finish_session(&session, result, now).await {
                            tracing::error!(%session, error = %e, "result could not be stored");
                        }
                    }
                    _ => {}
                }
            }
            if let (Some(status), false) = (latest_status, finished)
                && let Err(e) = self.store.set_status(&session, status).await
            {
                tracing::error!(%session, error = %e, "status could not be stored");
            }
            match self.store.append_events(&session, &batch).await {
                Ok(kept) => {
                    for (event, kept) in batch.iter().zip(kept) {
                        if kept {
                            let body = serde_json::to_string(event).unwrap_or_default();
                            // No subscriber is not an error.
                            let _ = live.send(Arc::new(StoredEvent { seq: event.seq, body }));
                        }
                    }
                }
                Err(e) => tracing::error!(%session, error = %e, "events could not be stored"),
            }
            batch.clear();
            if finished {
                break;
            }
        }
    }
}
