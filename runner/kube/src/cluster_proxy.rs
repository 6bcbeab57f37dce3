//! The egress proxy as a cluster service (`enclave egress-proxy`, the
//! `enclave-egress-proxy` Deployment): one listener for every session pod.
//!
//! A connection's session is the one whose live pod has the connection's source address,
//! as the API reports it ([`SessionPods`], fed by a watch on the sessions namespace);
//! nothing the connection says is trusted for that. The session's rules, bindings and
//! binding secrets come from the orchestrating server's relay ([`RelayClient`]), and
//! every decision goes back through it before anything passes. The clone phase ends
//! when the clone step says so ([`enclave_egress::CLONE_DONE_URL`]) or, failing that,
//! when the API shows the clone finished or the workload started; a session whose pod
//! is gone loses everything at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use enclave_core::{BackendEvent, EgressPhase, SessionId};
use enclave_egress::{
    Directory, DirectoryTask, GrantSecrets, RelayClient, Resolve, Sent, SessionProxy, SessionProxyConfig,
    serve_directory,
};
use futures::StreamExt as _;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

use crate::labels;
use crate::pod_identity::SessionPods;

/// What every session's proxy shares.
pub struct ProxySettings {
    /// DNS for destinations.
    pub resolver: Arc<dyn Resolve>,
    /// TLS client settings for binding upstreams.
    pub upstream_tls: Arc<rustls::ClientConfig>,
    /// The proxy's own addresses (its pod IP, its Service's cluster IP): never a
    /// destination.
    pub proxy_addresses: Vec<IpAddr>,
    /// Networks the operator trusts for the clone phase (an internal git server).
    pub trusted_clone_networks: Vec<IpNet>,
}

type Slot = Arc<OnceCell<Arc<SessionProxy>>>;

/// How long a connection from an address the API has not reported yet waits for it.
const ADDRESS_WAIT: Duration = Duration::from_secs(5);
/// How long, and how far apart, the proxy tries to record a revocation it made on the
/// API's word.
const REVOCATION_BUDGET: Duration = Duration::from_secs(8);
const REVOCATION_RETRY: Duration = Duration::from_millis(500);

/// The sessions this proxy knows, by the pods the API reports.
struct ClusterDirectory {
    pods: watch::Receiver<SessionPods>,
    relay: RelayClient,
    settings: ProxySettings,
    proxies: std::sync::Mutex<HashMap<SessionId, Slot>>,
}

impl ClusterDirectory {
    fn slot(&self, session: &SessionId) -> Slot {
        let mut proxies = self.proxies.lock().unwrap_or_else(PoisonError::into_inner);
        proxies.entry(session.clone()).or_default().clone()
    }

    /// The session's proxy, built from its grant the first time it is needed. `None` if
    /// the relay does not offer the session or cannot be reached; the slot then stays
    /// empty and the next connection asks again ([`ClusterDirectory::sync`] drops slots
    /// of sessions whose pods are gone).
    async fn proxy_of(&self, session: &SessionId, cloning: bool) -> Option<Arc<SessionProxy>> {
        let slot = self.slot(session);
        slot.get_or_try_init(|| async {
            let mut grant = match self.relay.grant(session).await {
                Ok(Some(grant)) => grant,
                Ok(None) => {
                    tracing::warn!(session = %session, "a session pod the relay does not offer; refusing it");
                    return Err(());
                }
                Err(e) => {
                    tracing::warn!(session = %session, error = %e, "no grant; refusing the connection");
                    return Err(());
                }
            };
            let secrets = Arc::new(GrantSecrets::take(&mut grant));
            let phase = if cloning && !grant.clone_revoked && grant.plan.clone_phase().is_some() {
                EgressPhase::Clone
            } else {
                EgressPhase::Run
            };
            Ok(SessionProxy::new(SessionProxyConfig {
                plan: Arc::new(grant.plan),
                secrets,
                resolver: self.settings.resolver.clone(),
                recorder: self.relay.recorder(session),
                proxy_addresses: self.settings.proxy_addresses.clone(),
                host_addresses: enclave_egress::HostAddresses::Live,
                trusted_clone_networks: self.settings.trusted_clone_networks.clone(),
                upstream_tls: self.settings.upstream_tls.clone(),
                phase,
            }))
        })
        .await
        .ok()
        .cloned()
    }

    /// Revokes `proxy`'s clone reach; if it had it, records that through the relay in
    /// the background (retried: the backend waits for it), never holding up the caller.
    fn revoke(&self, session: &SessionId, proxy: &SessionProxy) {
        if !proxy.revoke_clone_reach() {
            return;
        }
        let (relay, session) = (self.relay.clone(), session.clone());
        tokio::spawn(async move {
            // Within the backend's wait for it (10 s by default); a withdrawn session
            // needs no record.
            let tries = async {
                loop {
                    match relay.send(&session, BackendEvent::CloneReachRevoked).await {
                        Sent::Taken | Sent::Refused => return,
                        Sent::Unavailable => tokio::time::sleep(REVOCATION_RETRY).await,
                    }
                }
            };
            if tokio::time::timeout(REVOCATION_BUDGET, tries).await.is_err() {
                tracing::warn!(session = %session, "the clone's revocation could not be recorded; the server ends the session");
            }
        });
    }

    /// Brings every known session in line with the API: a session without a live pod
    /// is closed and forgotten; one the API shows past its clone loses the clone reach
    /// (if the clone step's own signal has not already taken it). Never waits on the
    /// relay: the pod watch runs it after every change.
    fn sync(&self) {
        let pods = self.pods.borrow().clone();
        let mut gone = Vec::new();
        let known: Vec<(SessionId, Slot)> = {
            let mut proxies = self.proxies.lock().unwrap_or_else(PoisonError::into_inner);
            proxies.retain(|session, slot| {
                let live = pods.session(session).is_some();
                if !live {
                    gone.extend(slot.get().cloned());
                }
                live
            });
            proxies.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for proxy in gone {
            proxy.close();
        }
        for (session, slot) in known {
            if let (Some(proxy), Some(state)) = (slot.get(), pods.session(&session))
                && !state.cloning
            {
                self.revoke(&session, proxy);
            }
        }
    }
}

#[async_trait]
impl Directory for ClusterDirectory {
    async fn session_for(&self, peer: IpAddr) -> Option<Arc<SessionProxy>> {
        // A pod's first connection can beat the API's report of its address to this
        // watch (the clone starts as soon as the pod's network is up): wait a little
        // for it rather than fail the clone.
        let mut pods = self.pods.clone();
        let found = match tokio::time::timeout(ADDRESS_WAIT, pods.wait_for(|p| p.session_for(peer).is_some())).await {
            Ok(Ok(pods)) => pods.session_for(peer).cloned(),
            _ => None,
        }?;
        let proxy = self.proxy_of(&found.session, found.cloning).await?;
        // The grant took a moment: judge the connection on what the API says now. A pod
        // that ended meanwhile gets nothing; one past its clone loses the clone reach.
        let now = self.pods.borrow().session_for(peer).cloned();
        match now {
            Some(now) if now.session == found.session => {
                if !now.cloning {
                    self.revoke(&now.session, &proxy);
                }
            }
            _ => return None,
        }
        proxy.phase().map(|_| proxy)
    }
}

/// A running cluster proxy; stops when dropped.
pub struct ClusterProxy {
    _accept: DirectoryTask,
    watch: JoinHandle<()>,
    /// Where it listens.
    pub address: SocketAddr,
    pods: watch::Receiver<SessionPods>,
}

impl Drop for ClusterProxy {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl ClusterProxy {
    /// Watches the session pods of `namespace` through `client` and serves them on
    /// `listener`, with each session's grant from `relay`.
    pub fn start(
        client: Client,
        namespace: &str,
        listener: TcpListener,
        relay: RelayClient,
        settings: ProxySettings,
    ) -> std::io::Result<Self> {
        let (pods_tx, pods) = watch::channel(SessionPods::default());
        let directory = Arc::new(ClusterDirectory {
            pods: pods.clone(),
            relay,
            settings,
            proxies: std::sync::Mutex::new(HashMap::new()),
        });
        let accept = serve_directory(listener, directory.clone())?;
        let address = accept.address;
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let selector = format!("{}=true,{}={}", labels::MANAGED, labels::ROLE, crate::job::ROLE);
        let namespace = namespace.to_owned();
        let watch = tokio::spawn(async move {
            let (reader, writer) = reflector::store();
            let stream = watcher(api, watcher::Config::default().labels(&selector)).default_backoff().reflect(writer);
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => {
                        let state = reader.state();
                        let index = SessionPods::from_pods(state.iter().map(AsRef::as_ref), &namespace);
                        pods_tx.send_replace(index);
                        directory.sync();
                    }
                    Err(e) => tracing::warn!(error = %e, "session pod watch interrupted; retrying"),
                }
            }
        });
        Ok(Self { _accept: accept, watch, address, pods })
    }

    /// Completes once the pod watch has reported `session` with an address.
    pub async fn knows(&self, session: &SessionId) {
        let mut pods = self.pods.clone();
        let _ = pods.wait_for(|p| p.session(session).is_some()).await;
    }

    /// Completes once the pod watch no longer reports `session` (its pods ended or were
    /// deleted); from then on its address gets nothing.
    pub async fn forgets(&self, session: &SessionId) {
        let mut pods = self.pods.clone();
        let _ = pods.wait_for(|p| p.session(session).is_none()).await;
    }
}
