//! The sessions a remote proxy may serve, kept by the orchestrating side.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use enclave_core::{BackendEvent, BackendEvents, Decision, EgressPhase, Plan, Secret, SecretStore, SessionId};
use tokio::sync::watch;

use super::MILESTONE_WAIT;
use super::grant::{Grant, is_proxy_record};

struct Entry {
    plan: Plan,
    secrets: BTreeMap<String, Secret>,
    events: BackendEvents,
    /// Set once the proxy reports that it revoked the clone reach.
    clone_revoked: watch::Sender<bool>,
    /// The milestones the backend has reported so far.
    reached: watch::Sender<Reached>,
}

/// A point in a session's run that the backend reports from the platform's view, after
/// which a proxy's records of the matching phase take their place in the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// The backend reported the clone step started.
    CloneStarted,
    /// The backend reported the workload started.
    WorkloadStarted,
}

#[derive(Debug, Clone, Copy, Default)]
struct Reached {
    clone_started: bool,
    workload_started: bool,
}

/// The sessions a remote proxy may serve, kept by the orchestrating side.
#[derive(Default)]
pub struct RelayRegistry {
    sessions: RwLock<HashMap<SessionId, Arc<Entry>>>,
}

impl RelayRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Offers `session` to proxies: its plan, the values of the secrets its bindings name
    /// (resolved now; a missing one stays missing and the binding call fails), and where
    /// its records go. The proxy's revocation of the clone reach is not passed on as an
    /// event: the backend reports it in its place in the session's order
    /// ([`RelayRegistry::clone_revoked`]).
    pub fn register(&self, session: &SessionId, plan: &Plan, secrets: &dyn SecretStore, events: BackendEvents) {
        let secrets = plan
            .bindings
            .iter()
            .filter_map(|b| secrets.resolve(&b.secret).map(|value| (b.secret.clone(), value)))
            .collect();
        let entry = Entry {
            plan: plan.clone(),
            secrets,
            events,
            clone_revoked: watch::Sender::new(false),
            reached: watch::Sender::new(Reached::default()),
        };
        self.sessions.write().unwrap_or_else(PoisonError::into_inner).insert(session.clone(), Arc::new(entry));
    }

    /// Withdraws `session`: from now on proxies get no grant and no record is accepted.
    pub fn remove(&self, session: &SessionId) {
        let removed = self.sessions.write().unwrap_or_else(PoisonError::into_inner).remove(session);
        // Records waiting for a milestone find the session gone at once.
        if let Some(entry) = removed {
            entry.reached.send_replace(Reached { clone_started: true, workload_started: true });
        }
    }

    /// Whether `session` is offered.
    pub fn contains(&self, session: &SessionId) -> bool {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner).contains_key(session)
    }

    /// A receiver that turns `true` once a proxy has reported revoking `session`'s clone
    /// reach; `None` for a session not offered.
    pub fn clone_revoked(&self, session: &SessionId) -> Option<watch::Receiver<bool>> {
        self.entry(session).map(|e| e.clone_revoked.subscribe())
    }

    fn entry(&self, session: &SessionId) -> Option<Arc<Entry>> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner).get(session).cloned()
    }

    pub(super) fn grant(&self, session: &SessionId) -> Option<Grant> {
        self.entry(session).map(|e| Grant {
            plan: e.plan.clone(),
            secrets: e.secrets.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect(),
            clone_revoked: *e.clone_revoked.borrow(),
        })
    }

    /// Notes that the backend reported `milestone` for `session` (after sending its
    /// event).
    pub fn reached(&self, session: &SessionId, milestone: Milestone) {
        if let Some(entry) = self.entry(session) {
            entry.reached.send_modify(|r| match milestone {
                Milestone::CloneStarted => r.clone_started = true,
                Milestone::WorkloadStarted => r.workload_started = true,
            });
        }
    }

    /// Takes a record; `false` when the session is not offered or its events are closed
    /// (the orchestrator could not write its audit), and for a clone-phase allow once a
    /// proxy has revoked the clone's reach: the relay is the one place that knows, so a
    /// proxy replica that missed the clone step's signal still cannot let it through.
    ///
    /// A platform reports a container's start a little after it happens, and a pod's
    /// first connections can come before that. So the audit reads in the order things
    /// happened (clone started, its egress, ..., workload started, its egress), a record
    /// of a phase waits until the backend has reported that phase's start, up to
    /// [`MILESTONE_WAIT`]; after that it is taken anyway: a record is never dropped for
    /// its place in the order.
    pub async fn record(&self, session: &SessionId, record: BackendEvent) -> bool {
        if !is_proxy_record(&record) {
            return false;
        }
        let Some(entry) = self.entry(session) else { return false };
        let phase = match &record {
            BackendEvent::Egress { phase, .. } => Some(*phase),
            BackendEvent::BindingUsed { .. } => Some(EgressPhase::Run),
            _ => None,
        };
        if let Some(phase) = phase {
            let mut reached = entry.reached.subscribe();
            let wait = reached.wait_for(|r| match phase {
                EgressPhase::Clone => r.clone_started || r.workload_started,
                EgressPhase::Run => r.workload_started,
            });
            let _ = tokio::time::timeout(MILESTONE_WAIT, wait).await;
            // Withdrawn while it waited (the run ended): refused like any later record.
            if !self.entry(session).is_some_and(|now| Arc::ptr_eq(&now, &entry)) {
                return false;
            }
        }
        if entry.events.is_closed() {
            return false;
        }
        if let BackendEvent::Egress { phase: EgressPhase::Clone, decision: Decision::Allow { .. }, .. } = &record
            && *entry.clone_revoked.borrow()
        {
            return false;
        }
        match record {
            BackendEvent::CloneReachRevoked => {
                entry.clone_revoked.send_replace(true);
                true
            }
            other => entry.events.unbounded_send(other).is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clone_plan() -> Plan {
        let yaml = "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: r\nspec:\n  repo:\n    url: https://git.test/app.git\n  command: [\"true\"]\n";
        let parsed = enclave_spec::parse("r.yaml", yaml.as_bytes()).expect("spec");
        enclave_core::plan(&parsed.spec, &enclave_core::Policy::default()).expect("plan")
    }

    fn clone_allow() -> BackendEvent {
        BackendEvent::Egress {
            phase: EgressPhase::Clone,
            host: "git.test".into(),
            port: 443,
            decision: Decision::Allow { rule: enclave_core::RuleRef::CloneRepo },
        }
    }

    #[tokio::test]
    async fn after_the_clone_reach_is_revoked_no_clone_phase_allow_is_recorded() {
        let registry = RelayRegistry::new();
        let session = SessionId::new("ses-relay").expect("id");
        let (events, mut rx) = futures_channel();
        registry.register(&session, &clone_plan(), &enclave_core::NoSecrets, events);
        registry.reached(&session, Milestone::CloneStarted);
        assert!(registry.record(&session, clone_allow()).await);
        assert!(!registry.grant(&session).expect("offered").clone_revoked);
        assert!(registry.record(&session, BackendEvent::CloneReachRevoked).await);
        assert!(*registry.clone_revoked(&session).expect("offered").borrow());
        assert!(registry.grant(&session).expect("offered").clone_revoked);
        // Another replica, still in its clone phase: refused, so it denies.
        assert!(!registry.record(&session, clone_allow()).await);
        let deny = BackendEvent::Egress {
            phase: EgressPhase::Clone,
            host: "git.test".into(),
            port: 443,
            decision: Decision::Deny { reason: enclave_core::DenyReason::CloneOnlyRepoHost },
        };
        assert!(registry.record(&session, deny).await);
        // The revocation itself is the backend's to report, in its place: only the
        // first allow and the deny reached the session's events.
        let mut got = Vec::new();
        while let Ok(event) = rx.try_recv() {
            got.push(event);
        }
        assert_eq!(got.len(), 2, "{got:?}");
        registry.remove(&session);
        assert!(!registry.record(&session, BackendEvent::CloneReachRevoked).await);
        assert!(registry.grant(&session).is_none());
    }

    fn futures_channel() -> (BackendEvents, futures::channel::mpsc::UnboundedReceiver<BackendEvent>) {
        futures::channel::mpsc::unbounded()
    }

    #[tokio::test]
    async fn a_phase_record_waits_for_the_backend_to_report_the_phase_start() {
        let registry = RelayRegistry::new();
        let session = SessionId::new("ses-relay-order").expect("id");
        let (events, mut rx) = futures_channel();
        registry.register(&session, &clone_plan(), &enclave_core::NoSecrets, events);
        let run_allow = BackendEvent::Egress {
            phase: EgressPhase::Run,
            host: "a.test".into(),
            port: 443,
            decision: Decision::Allow { rule: enclave_core::RuleRef::Allow(0) },
        };
        let pending = {
            let (registry, session) = (registry.clone(), session.clone());
            tokio::spawn(async move { registry.record(&session, run_allow).await })
        };
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(rx.try_recv().is_err(), "a run-phase record was taken before the workload was reported");
        // The backend reports the workload (its event went first), then the record goes.
        registry.reached(&session, Milestone::WorkloadStarted);
        assert!(pending.await.expect("task"));
        assert!(matches!(rx.try_recv(), Ok(BackendEvent::Egress { phase: EgressPhase::Run, .. })));
    }

    #[tokio::test]
    async fn a_record_held_for_its_milestone_is_refused_once_the_session_is_withdrawn() {
        let registry = RelayRegistry::new();
        let session = SessionId::new("ses-relay-withdrawn").expect("id");
        let (events, mut rx) = futures_channel();
        registry.register(&session, &clone_plan(), &enclave_core::NoSecrets, events);
        // A clone-phase record waits for the clone's start as a run-phase one waits for
        // the workload's.
        let pending = {
            let (registry, session) = (registry.clone(), session.clone());
            tokio::spawn(async move { registry.record(&session, clone_allow()).await })
        };
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(rx.try_recv().is_err(), "a clone-phase record was taken before the clone was reported");
        // Withdrawn (and offered again under the same id, as a new entry): the waiting
        // record is refused, not taken into either.
        registry.remove(&session);
        let (again, mut rx_again) = futures_channel();
        registry.register(&session, &clone_plan(), &enclave_core::NoSecrets, again);
        registry.reached(&session, Milestone::CloneStarted);
        assert!(!pending.await.expect("task"), "a record for a withdrawn session was taken");
        assert!(rx.try_recv().is_err());
        assert!(rx_again.try_recv().is_err());
    }

    #[test]
    fn every_event_a_proxy_makes_has_a_wire_form_and_back() {
        let events = [
            BackendEvent::Egress {
                phase: EgressPhase::Run,
                host: "a.test".into(),
                port: 443,
                decision: Decision::Allow { rule: enclave_core::RuleRef::Allow(0) },
            },
            BackendEvent::BindingUsed {
                binding: "api".into(),
                host: "api.test".into(),
                method: "GET".into(),
                path: "/v1".into(),
                allowed: true,
                status: Some(200),
                reason: None,
            },
            BackendEvent::CloneReachRevoked,
        ];
        for event in events {
            assert!(is_proxy_record(&event), "{event:?}");
            let text = serde_json::to_string(&event).expect("json");
            let back: BackendEvent = serde_json::from_str(&text).expect("parse");
            assert_eq!(back, event);
        }
        // What only a backend may report is refused from a proxy.
        let registry = RelayRegistry::new();
        let session = SessionId::new("ses-relay-kinds").expect("id");
        let (events, _rx) = futures_channel();
        registry.register(&session, &clone_plan(), &enclave_core::NoSecrets, events);
        for event in [
            BackendEvent::WorkloadStarted,
            BackendEvent::DiskFull,
            BackendEvent::Output { stream: enclave_core::Stream::Stdout, data: b"x".to_vec() },
        ] {
            assert!(!is_proxy_record(&event));
            assert!(!futures::executor::block_on(registry.record(&session, event)));
        }
    }
}
