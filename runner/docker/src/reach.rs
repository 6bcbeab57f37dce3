//! A session's reach: its own network, guarded, and its egress proxy on the network's
//! gateway, the only peer the session's containers can reach.

use std::sync::Arc;

use enclave_core::{BackendError, BackendEvents, Plan, SecretStore, SessionId};

use crate::backend::DockerBackend;
use crate::error::DockerError;
use crate::network;
use crate::session_resources::ReachSpec;

/// A session's reach: its network and the proxy listening on the network's gateway.
pub(crate) struct Reach {
    pub(crate) net: network::SessionNetwork,
    pub(crate) proxy: enclave_egress::ProxyTask,
}

impl Reach {
    /// The proxy as sandboxes name it in `HTTP(S)_PROXY`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.proxy.address)
    }

    pub(crate) fn port(&self) -> u16 {
        self.proxy.address.port()
    }
}

impl DockerBackend {
    /// Creates the session network, guards it, and starts the session's proxy on its
    /// gateway. Binding secrets are copied into the proxy (on the host), never further.
    pub(crate) async fn start_reach(
        &self,
        session: &SessionId,
        spec: &ReachSpec,
        plan: &Plan,
        secrets: &dyn SecretStore,
        events: &BackendEvents,
    ) -> Result<Reach, BackendError> {
        let net = network::create(&self.docker, session, &spec.network).await?;
        let listener = tokio::net::TcpListener::bind((net.gateway, 0))
            .await
            .map_err(|e| DockerError::Setup(format!("proxy listener on {}: {e}", net.gateway)))?;
        let port = listener.local_addr().map_err(|e| DockerError::Setup(e.to_string()))?.port();
        network::guard_host(&self.config.scope, session, &net, port).await?;
        let mut proxy_secrets = enclave_core::MemorySecrets::default();
        for binding in &plan.bindings {
            if let Some(value) = secrets.resolve(&binding.secret) {
                proxy_secrets.insert(binding.secret.clone(), value);
            }
        }
        let resolver: Arc<dyn enclave_egress::Resolve> = Arc::new(enclave_egress::Layered(
            enclave_egress::StaticResolver::new(self.config.static_hosts.clone()),
            enclave_egress::DnsResolver::from_system().map_err(DockerError::from)?,
        ));
        let upstream_tls =
            enclave_egress::upstream_tls_pem(self.config.extra_ca_pem.as_deref()).map_err(DockerError::from)?;
        let proxy = enclave_egress::SessionProxy::new(enclave_egress::SessionProxyConfig {
            plan: Arc::new(plan.clone()),
            secrets: Arc::new(proxy_secrets),
            resolver,
            recorder: Arc::new(events.clone()),
            proxy_addresses: vec![std::net::IpAddr::V4(net.gateway)],
            host_addresses: enclave_egress::HostAddresses::Live,
            trusted_clone_networks: self.config.trusted_clone_networks.clone(),
            upstream_tls,
            phase: spec.proxy_phase,
        });
        let task = proxy.serve(listener).map_err(|e| DockerError::Setup(format!("proxy: {e}")))?;
        Ok(Reach { net, proxy: task })
    }
}
