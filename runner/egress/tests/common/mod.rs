//! The egress proxy of one session, in process, for this crate's proxy suites (the
//! proxy's own, and the red team's): its records go to a channel the test reads.

#![allow(unreachable_pub, reason = "test support, not public API")]
#![allow(dead_code, reason = "shared by several test binaries; each uses a part")]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use enclave_core::{BackendEvent, EgressPhase, MemorySecrets, Plan, Secret};
use enclave_egress::{ProxyTask, Recorder, Resolve, SessionProxy, SessionProxyConfig};
use enclave_test_servers::TestCa;
use futures::channel::mpsc;
use tokio::net::TcpListener;

/// Records into a channel, or refuses every record (an audit that cannot be written).
pub struct TestRecorder {
    pub tx: mpsc::UnboundedSender<BackendEvent>,
    pub broken: bool,
}

#[async_trait::async_trait]
impl Recorder for TestRecorder {
    async fn record(&self, event: BackendEvent) -> bool {
        !self.broken && self.tx.unbounded_send(event).is_ok()
    }
}

/// How the proxy of a test is set up.
pub struct ProxySetup {
    pub plan: Arc<Plan>,
    /// The value of the binding secret `api-token`.
    pub secret: String,
    pub resolver: Arc<dyn Resolve>,
    pub phase: EgressPhase,
    /// Refuse every record.
    pub broken_audit: bool,
}

/// A loopback listener for a test's proxy.
pub async fn proxy_listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind proxy")
}

/// Serves `setup` on `listener`, trusting upstreams signed by `ca`; the proxy and the
/// stream of its records.
pub fn serve_proxy(
    listener: TcpListener,
    setup: ProxySetup,
    ca: &TestCa,
) -> (ProxyTask, mpsc::UnboundedReceiver<BackendEvent>) {
    let mut secrets = MemorySecrets::default();
    secrets.insert("api-token", Secret::new(setup.secret));
    let (tx, events) = mpsc::unbounded();
    let proxy = SessionProxy::new(SessionProxyConfig {
        plan: setup.plan,
        secrets: Arc::new(secrets),
        resolver: setup.resolver,
        recorder: Arc::new(TestRecorder { tx, broken: setup.broken_audit }),
        proxy_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        host_addresses: enclave_egress::HostAddresses::Live,
        trusted_clone_networks: Vec::new(),
        upstream_tls: enclave_egress::upstream_tls(&[ca.der()]).expect("tls config"),
        phase: setup.phase,
    });
    (proxy.serve(listener).expect("serve"), events)
}
