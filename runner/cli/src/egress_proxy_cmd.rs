//! `enclave egress-proxy`: the egress proxy Deployment of a Kubernetes cluster.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use enclave_kube::{ClusterProxy, ProxySettings};

use crate::exit;

#[derive(Debug, Args)]
pub(crate) struct EgressProxyArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:3128", env = "ENCLAVE_PROXY_LISTEN")]
    listen: SocketAddr,
    /// Namespace of the session pods.
    #[arg(long, value_name = "NAMESPACE", default_value = "enclave-sessions")]
    sessions_namespace: String,
    /// The server's relay (`https://HOST:PORT`, or `http://` for a relay without TLS).
    #[arg(long, value_name = "URL", env = "ENCLAVE_RELAY_URL")]
    relay: String,
    /// The CA (PEM) that signed the relay's certificate; the only root trusted for it.
    #[arg(long, value_name = "FILE", env = "ENCLAVE_RELAY_CA")]
    relay_ca: Option<PathBuf>,
    /// File holding the relay's bearer token (`ENCLAVE_RELAY_TOKEN` takes precedence).
    #[arg(long, value_name = "FILE", env = "ENCLAVE_RELAY_TOKEN_FILE")]
    relay_token_file: Option<PathBuf>,
    /// One of the proxy's own addresses (its pod IP, its Service's cluster IP): never
    /// a destination, whatever a rule says. Repeatable.
    #[arg(long = "self-address", value_name = "IP")]
    self_addresses: Vec<IpAddr>,
    /// A private network (CIDR) the clone step may reach when the repository host
    /// resolves into it (an internal git server); never the workload, never the
    /// metadata address. Repeatable.
    #[arg(long = "trust-clone-network", value_name = "CIDR", value_delimiter = ',')]
    trusted_clone_networks: Vec<ipnet::IpNet>,
    /// Extra CA certificates (PEM file) trusted for binding upstreams.
    #[arg(long, value_name = "FILE")]
    extra_ca: Option<PathBuf>,
}

/// Runs until interrupted.
pub(crate) fn egress_proxy(args: &EgressProxyArgs) -> u8 {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let result = runtime.context("cannot start the async runtime").and_then(|rt| rt.block_on(run(args)));
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        exit::ERRORED
    })
}

async fn run(args: &EgressProxyArgs) -> anyhow::Result<u8> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let token = crate::serve_cmd::relay_token(args.relay_token_file.as_deref())?;
    let read = |path: &Option<PathBuf>| -> anyhow::Result<Option<String>> {
        path.as_ref()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
            .transpose()
    };
    let relay_ca = read(&args.relay_ca)?;
    let relay = enclave_egress::RelayClient::new(&args.relay, token, relay_ca.as_deref())?;
    if relay_ca.is_none() {
        eprintln!("warning: the relay is plain http: binding secrets reach this proxy in clear");
    }
    let extra_ca = read(&args.extra_ca)?;
    let settings = ProxySettings {
        resolver: Arc::new(enclave_egress::DnsResolver::from_system().map_err(anyhow::Error::msg)?),
        upstream_tls: enclave_egress::upstream_tls_pem(extra_ca.as_deref()).map_err(anyhow::Error::msg)?,
        proxy_addresses: args.self_addresses.clone(),
        trusted_clone_networks: args.trusted_clone_networks.clone(),
    };
    let client =
        kube::Client::try_default().await.context("no Kubernetes configuration found (in-cluster or kubeconfig)")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let proxy = ClusterProxy::start(client, &args.sessions_namespace, listener, relay, settings)
        .context("cannot start the proxy")?;
    eprintln!(
        "enclave egress proxy on {} for the session pods of namespace {} (relay {})",
        proxy.address, args.sessions_namespace, args.relay
    );
    if tokio::signal::ctrl_c().await.is_err() {
        futures::future::pending::<()>().await;
    }
    Ok(exit::OK)
}
