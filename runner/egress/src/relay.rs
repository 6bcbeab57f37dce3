//! The relay between a session's orchestrator and a proxy that runs elsewhere (the
//! egress proxy Deployment on Kubernetes).
//!
//! The orchestrating side keeps a [`RelayRegistry`]: for each session that needs the
//! proxy, its plan, the values of its binding secrets and the channel its backend events
//! go to. [`serve_relay`] serves that registry to proxies holding the relay token; a
//! proxy fetches a session's [`Grant`] when it first sees the session, and sends every
//! decision, binding use and clone revocation back through a [`RelayRecorder`], waiting
//! for the answer before it lets anything through. A session the registry no longer
//! holds gets nothing: its records are refused, so the proxy denies.
//!
//! Nothing here names a session by what a sandbox says: the proxy finds the session
//! from the connection's source address ([`crate::Directory`]) and only then asks the
//! relay about that session.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use enclave_core::{BackendEvent, BackendEvents, Decision, EgressPhase, Plan, Secret, SecretStore, SessionId};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::record::Recorder;

/// The largest record or grant the relay reads.
const MAX_BODY: usize = 4 << 20;
/// How long a proxy waits for the relay to answer (then it denies).
const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a record waits for the backend to report its phase's start (less than
/// [`RELAY_TIMEOUT`], so the proxy still gets its answer).
pub const MILESTONE_WAIT: Duration = Duration::from_secs(5);
const _: () = assert!(MILESTONE_WAIT.as_secs() < RELAY_TIMEOUT.as_secs());

/// What a proxy needs to enforce one session: its plan (rules, bindings, clone host) and
/// the values of the secrets its bindings name. Secret values travel only to the proxy.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// The session's plan.
    pub plan: Plan,
    /// Binding secret values by secret name (only those the plan's bindings name).
    pub secrets: BTreeMap<String, String>,
    /// A proxy already reported revoking the clone's reach (a proxy that restarts, or a
    /// second replica, must not grant it again whatever the API still shows).
    pub clone_revoked: bool,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant").field("plan", &self.plan).field("secrets", &self.secrets.keys()).finish()
    }
}

/// A grant's secrets as a store for [`crate::SessionProxyConfig`].
pub struct GrantSecrets(BTreeMap<String, Secret>);

impl GrantSecrets {
    /// Takes the values out of a grant.
    pub fn take(grant: &mut Grant) -> Self {
        Self(std::mem::take(&mut grant.secrets).into_iter().map(|(k, v)| (k, Secret::new(v))).collect())
    }
}

impl SecretStore for GrantSecrets {
    fn resolve(&self, name: &str) -> Option<Secret> {
        self.0.get(name).map(|s| Secret::new(s.expose()))
    }
    fn redaction_values(&self) -> Vec<Secret> {
        self.0.values().map(|s| Secret::new(s.expose())).collect()
    }
}

/// Whether a proxy may send `event` through the relay: its decisions, binding uses and
/// its revocation of the clone reach, nothing a backend alone may report (a workload's
/// exit, output, a kill).
pub fn is_proxy_record(event: &BackendEvent) -> bool {
    matches!(event, BackendEvent::Egress { .. } | BackendEvent::BindingUsed { .. } | BackendEvent::CloneReachRevoked)
}

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

    fn grant(&self, session: &SessionId) -> Option<Grant> {
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

/// The relay's accept loop; stops when dropped.
pub struct RelayTask {
    accept: JoinHandle<()>,
    /// Where the relay listens.
    pub address: std::net::SocketAddr,
}

impl Drop for RelayTask {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// TLS settings of a relay that serves `cert_pem` (its chain, leaf first) with `key_pem`.
pub fn relay_server_tls(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("relay certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("relay certificate PEM: no certificate".to_owned());
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("relay key PEM: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("relay certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// Serves `registry` to proxies that present `token` (`Authorization: Bearer`), over
/// TLS when `tls` is given:
///
/// - `GET /v1/sessions/{id}/grant`: the session's [`Grant`] (404 if not offered);
/// - `POST /v1/sessions/{id}/records`: one proxy [`BackendEvent`] ([`is_proxy_record`]),
///   204 once taken, 410 if the
///   session is not offered or cannot record.
pub fn serve_relay(
    listener: TcpListener,
    registry: Arc<RelayRegistry>,
    token: Secret,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<RelayTask> {
    let address = listener.local_addr()?;
    let token = Arc::new(token);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let accept = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: let some close before trying again.
                    tracing::warn!(error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (registry, token, acceptor) = (registry.clone(), token.clone(), acceptor.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (registry, token) = (registry.clone(), token.clone());
                    async move { Ok::<_, Infallible>(relay_request(&registry, &token, req).await) }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                // A client that trickles its request head holds nothing open for long.
                http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(RELAY_TIMEOUT);
                match acceptor {
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(RELAY_TIMEOUT, acceptor.accept(stream)).await;
                        let Ok(Ok(stream)) = handshake else { return };
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    Ok(RelayTask { accept, address })
}

fn reply(status: StatusCode, body: Bytes, json: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let kind = if json { "application/json" } else { "text/plain; charset=utf-8" };
    response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
    response
}

fn authorized(req: &Request<Incoming>, token: &Secret) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    constant_time_eq(presented.as_bytes(), token.expose().as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

async fn relay_request(registry: &RelayRegistry, token: &Secret, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if token.expose().is_empty() || !authorized(&req, token) {
        return reply(StatusCode::UNAUTHORIZED, Bytes::from_static(b"relay token required\n"), false);
    }
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (session, action) = match parts.as_slice() {
        ["v1", "sessions", id, action] => match SessionId::new(*id) {
            Ok(session) => (session, *action),
            Err(_) => return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"no such session\n"), false),
        },
        _ => return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"), false),
    };
    match (req.method().clone(), action) {
        (Method::GET, "grant") => match registry.grant(&session).map(|g| serde_json::to_vec(&g)) {
            Some(Ok(body)) => reply(StatusCode::OK, Bytes::from(body), true),
            Some(Err(_)) => reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new(), false),
            None => reply(StatusCode::NOT_FOUND, Bytes::from_static(b"no such session\n"), false),
        },
        (Method::POST, "records") => {
            let Ok(body) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
                return reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"unreadable body\n"), false);
            };
            let Ok(record) = serde_json::from_slice::<BackendEvent>(&body.to_bytes()) else {
                return reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"not a record\n"), false);
            };
            if registry.record(&session, record).await {
                reply(StatusCode::NO_CONTENT, Bytes::new(), false)
            } else {
                reply(StatusCode::GONE, Bytes::from_static(b"the session does not record\n"), false)
            }
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new(), false),
    }
}

/// Why the relay could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The relay could not be reached or answered garbage.
    #[error("the relay at {url} cannot be used: {message}")]
    Unavailable {
        /// The relay.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// A proxy's side of the relay.
#[derive(Clone)]
pub struct RelayClient {
    base: String,
    token: Arc<Secret>,
    http: reqwest::Client,
}

impl RelayClient {
    /// A client of the relay at `base`: `https://host:port`, verified against `ca_pem`
    /// only (no public roots: the relay's certificate is the operator's), or plain
    /// `http://host:port` without a CA.
    pub fn new(base: &str, token: Secret, ca_pem: Option<&str>) -> Result<Self, RelayError> {
        let error = |message: String| RelayError::Unavailable { url: base.to_owned(), message };
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            return Err(error("the relay URL must start with https:// or http://".to_owned()));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(RELAY_TIMEOUT)
            // The relay is named by the operator; a proxy never follows it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_built_in_root_certs(false)
            .https_only(https);
        match (https, ca_pem) {
            (true, Some(pem)) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(|e| error(format!("relay CA PEM: {e}")))?;
                if certs.is_empty() {
                    return Err(error("relay CA PEM: no certificate".to_owned()));
                }
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            (true, None) => return Err(error("an https relay needs the CA that signed its certificate".to_owned())),
            (false, Some(_)) => return Err(error("a relay CA was given for a plain http:// relay".to_owned())),
            (false, None) => {}
        }
        let http = builder.build().map_err(|e| error(e.to_string()))?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), token: Arc::new(token), http })
    }

    fn url(&self, session: &SessionId, action: &str) -> String {
        format!("{}/v1/sessions/{session}/{action}", self.base)
    }

    fn unavailable(&self, message: impl std::fmt::Display) -> RelayError {
        RelayError::Unavailable { url: self.base.clone(), message: message.to_string() }
    }

    /// The grant of `session`, or `None` if the relay does not offer it.
    pub async fn grant(&self, session: &SessionId) -> Result<Option<Grant>, RelayError> {
        let response = self
            .http
            .get(self.url(session, "grant"))
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        match response.status() {
            StatusCode::OK => {
                let body = response.bytes().await.map_err(|e| self.unavailable(e))?;
                serde_json::from_slice(&body).map(Some).map_err(|e| self.unavailable(format!("bad grant: {e}")))
            }
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(self.unavailable(format!("grant answered {other}"))),
        }
    }

    /// Records `event` for `session`; `false` unless the relay took it.
    pub async fn record(&self, session: &SessionId, event: BackendEvent) -> bool {
        self.send(session, event).await == Sent::Taken
    }

    /// Sends `event` for `session` and says what became of it.
    pub async fn send(&self, session: &SessionId, event: BackendEvent) -> Sent {
        if !is_proxy_record(&event) {
            return Sent::Refused;
        }
        let sent = self.http.post(self.url(session, "records")).bearer_auth(self.token.expose()).json(&event).send();
        match sent.await {
            Ok(response) if response.status() == StatusCode::NO_CONTENT => Sent::Taken,
            Ok(response) if response.status() == StatusCode::GONE => Sent::Refused,
            Ok(response) => {
                tracing::warn!(session = %session, status = %response.status(), "relay refused a record; denying");
                Sent::Unavailable
            }
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "relay unreachable; denying");
                Sent::Unavailable
            }
        }
    }

    /// A recorder sending `session`'s records through this relay.
    pub fn recorder(&self, session: &SessionId) -> Arc<dyn Recorder> {
        Arc::new(RelayRecorder { client: self.clone(), session: session.clone() })
    }
}

/// What became of a record sent to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Taken into the session's audit.
    Taken,
    /// Refused for good: the session is withdrawn, cannot record, or the record is not
    /// one a proxy may send.
    Refused,
    /// The relay could not be reached or failed; trying again may help.
    Unavailable,
}

/// Records one session's events through the relay.
pub struct RelayRecorder {
    client: RelayClient,
    session: SessionId,
}

#[async_trait]
impl Recorder for RelayRecorder {
    async fn record(&self, event: BackendEvent) -> bool {
        self.client.record(&self.session, event).await
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

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
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
