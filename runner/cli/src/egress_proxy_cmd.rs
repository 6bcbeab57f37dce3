//! `enclave egress-proxy`: the egress proxy Deployment of a Kubernetes cluster.

use std::sync::Arc;

use anyhow::Context as _;
use enclave_kube::{ClusterProxy, ProxySettings};

use crate::{EgressProxyArgs, exit};

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
    let read = |path: &Option<std::path::PathBuf>| -> anyhow::Result<Option<String>> {
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
