//! The cluster the Kubernetes egress tests run against, without a cluster: the fake API
//! server, the relay (TLS, as deploy/ sets it up), two replicas of the cluster proxy
//! watching the fake API, a git server over TLS with basic auth and canaries. The fake
//! kubelet gives the session pod the address 127.0.0.1, so connections made from
//! 127.0.0.1 are the pod's; 127.0.0.9 stands for any other pod. Every server is on
//! loopback and started here.

#![allow(dead_code, reason = "shared by several test files; each uses a part")]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use enclave_core::WallClock;
use enclave_core::{
    AuditRecord, MemoryAuditSink, MemorySecrets, Orchestrator, Plan, Policy, Secret, SessionId, SessionResult,
    SessionRun,
};
use enclave_egress::{RelayClient, RelayRegistry, StaticResolver, serve_relay};
use enclave_kube::{ClusterProxy, EgressProxy, KubeBackend, KubeConfig, ProxySettings};
use futures::FutureExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::fake_kube::{FakeKube, PodScript};
use super::git_server::GitServer;
use super::{Canary, TestCa};

pub(crate) const POD: Ipv4Addr = Ipv4Addr::LOCALHOST;
pub(crate) const OTHER_POD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
pub(crate) const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// A second replica of the proxy Deployment, behind the same Service.
pub(crate) const REPLICA: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// A proxy replica that cannot reach its relay.
pub(crate) const ORPHAN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
pub(crate) const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub(crate) const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
pub(crate) const TOKEN: &str = "relay-token-for-tests-0123456789abcdef";
pub(crate) const BINDING_SECRET: &str = "kube-binding-secret-5e1d";
pub(crate) const GIT_PASSWORD: &str = "git-pass-kube-42";
/// Guards against a hang turning into a stuck CI job; never a timing assertion.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(120);

pub(crate) fn plan_of(yaml: &str) -> Plan {
    let parsed = enclave_spec::parse("inline.yaml", yaml.as_bytes()).unwrap_or_else(|e| panic!("{:#?}", e.errors));
    enclave_core::plan(
        &parsed.spec,
        &Policy { host_loopback: vec!["127.0.0.0/8".parse().unwrap()], ..Policy::default() },
    )
    .unwrap()
}

pub(crate) struct Cluster {
    pub(crate) fake: FakeKube,
    pub(crate) registry: Arc<RelayRegistry>,
    pub(crate) proxy: ClusterProxy,
    pub(crate) replica: ClusterProxy,
    pub(crate) relay: enclave_egress::RelayTask,
    pub(crate) ca: TestCa,
    pub(crate) a: Canary,
    pub(crate) b: Canary,
    pub(crate) api: Canary,
    pub(crate) git: GitServer,
}

/// When the API reports the session pod's address.
#[derive(PartialEq)]
pub(crate) enum Address {
    /// With the pod's creation.
    AtOnce,
    /// Only when the test calls `assign_pod_ip`.
    Late,
}

pub(crate) async fn cluster(script: PodScript, address: Address) -> Cluster {
    cluster_with(script, address, |_| {}).await
}

/// As [`cluster`], with `repository` writing more files into the git server's one commit
/// (a hostile repository's content).
pub(crate) async fn cluster_with(script: PodScript, address: Address, repository: impl FnOnce(&Path)) -> Cluster {
    let ca = TestCa::new();
    let a = Canary::http(A).await;
    let b = Canary::http(B).await;
    let api = Canary::https(A, ca.server_config(&["api.binding.test"])).await;
    let git = GitServer::start_with(
        ca.server_config(&["git.test"]),
        "x-access-token",
        GIT_PASSWORD,
        "kube clone\n",
        repository,
    )
    .await;
    let fake = FakeKube::new(script, None, b"done\n".to_vec());
    if address == Address::AtOnce {
        fake.set_pod_ip(&POD.to_string());
    }
    fake.hold_clone();
    let registry = RelayRegistry::new();
    let relay_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    // The relay speaks TLS with a certificate from files, as deploy/ sets it up.
    let (cert, key) = ca.server_pem(&["127.0.0.1"]);
    let tls = enclave_egress::relay_server_tls(&cert, &key).unwrap();
    let relay = serve_relay(relay_listener, registry.clone(), Secret::new(TOKEN), Some(tls)).unwrap();
    let relay_url = format!("https://{}", relay.address);
    let client = RelayClient::new(&relay_url, Secret::new(TOKEN), Some(&ca.pem())).unwrap();
    let settings = || ProxySettings {
        resolver: Arc::new(StaticResolver::new(HashMap::from([
            ("canary.test".to_owned(), vec![IpAddr::V4(A)]),
            ("evil.test".to_owned(), vec![IpAddr::V4(B)]),
            ("api.binding.test".to_owned(), vec![IpAddr::V4(A)]),
            ("git.test".to_owned(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        ]))),
        upstream_tls: enclave_egress::upstream_tls(&[ca.der()]).unwrap(),
        proxy_addresses: vec![IpAddr::V4(PROXY), IpAddr::V4(REPLICA)],
        // The git server is on loopback, an address no workload may reach.
        trusted_clone_networks: vec!["127.0.0.1/32".parse().unwrap()],
    };
    let listener = TcpListener::bind((PROXY, 0)).await.unwrap();
    let proxy = ClusterProxy::start(fake.client(), "enclave-sessions", listener, client.clone(), settings()).unwrap();
    let listener = TcpListener::bind((REPLICA, 0)).await.unwrap();
    let replica = ClusterProxy::start(fake.client(), "enclave-sessions", listener, client, settings()).unwrap();
    Cluster { fake, registry, proxy, replica, relay, ca, a, b, api, git }
}

impl Cluster {
    pub(crate) fn plan(&self) -> Plan {
        plan_of(&format!(
            r#"
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: kube-egress
spec:
  repo:
    url: https://git.test:{git}/app.git
  command: ["true"]
  egress:
    mode: allowlist
    allow:
      - host: canary.test
        ports: [{ap}]
      # Names the canary's port; also acknowledges 127.0.0.2 for the binding's upstream,
      # whose port it does not open to the workload.
      - cidr: 127.0.0.2/32
        ports: [{ap}]
{binding}"#,
            git = self.git.addr.port(),
            ap = self.a.port(),
            binding = super::api_binding_yaml(self.api.port()),
        ))
    }

    pub(crate) fn backend(&self) -> Arc<KubeBackend> {
        let proxy = EgressProxy { url: format!("http://{}", self.proxy.address), ..EgressProxy::default() };
        let config = KubeConfig { egress_proxy: Some(proxy), ..KubeConfig::default() };
        Arc::new(KubeBackend::new(self.fake.client(), config).with_relay(self.registry.clone()))
    }

    /// `git` as the clone container runs it: through the proxy, trusting the test CA.
    pub(crate) async fn git(&self, args: &[&str], header: Option<&str>) -> std::process::Output {
        self.git_via(self.proxy.address, args, header).await
    }

    pub(crate) async fn git_via(&self, proxy: SocketAddr, args: &[&str], header: Option<&str>) -> std::process::Output {
        let proxy_url = format!("http://{proxy}");
        let home = tempfile::tempdir().unwrap();
        let ca = home.path().join("ca.pem");
        std::fs::write(&ca, self.ca.pem()).unwrap();
        let mut command = tokio::process::Command::new("git");
        if let Some(header) = header {
            command.arg("-c").arg(format!("http.extraHeader={header}"));
        }
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSL_CAINFO", &ca)
            .env("http_proxy", &proxy_url)
            .env("https_proxy", &proxy_url)
            .kill_on_drop(true);
        tokio::time::timeout(HANG_GUARD, command.output()).await.expect("git finished").expect("git runs")
    }
}

/// Runs the session in the background; returns its result and audit.
pub(crate) fn start(
    backend: Arc<KubeBackend>,
    plan: Plan,
    session: SessionId,
) -> tokio::task::JoinHandle<(SessionResult, Vec<AuditRecord>)> {
    start_with_cancel(backend, plan, session, futures::future::pending().boxed())
}

/// As [`start`], cancelled when `cancel` completes. The binding's secret is `api-token`,
/// the repository credential `repo-token` (the git server's password).
pub(crate) fn start_with_cancel(
    backend: Arc<KubeBackend>,
    plan: Plan,
    session: SessionId,
    cancel: futures::future::BoxFuture<'static, ()>,
) -> tokio::task::JoinHandle<(SessionResult, Vec<AuditRecord>)> {
    let mut secrets = MemorySecrets::default();
    secrets.insert("api-token", Secret::new(BINDING_SECRET));
    secrets.insert("repo-token", Secret::new(GIT_PASSWORD));
    tokio::spawn(async move {
        let orchestrator = Orchestrator::new(backend, Arc::new(WallClock), Arc::new(secrets));
        let mut audit = MemoryAuditSink::default();
        let mut listener = |_: &enclave_core::TimedEvent| {};
        let run = orchestrator.run(SessionRun {
            session,
            plan: &plan,
            audit: &mut audit,
            listener: &mut listener,
            cancel,
            artifacts: None,
        });
        let result = tokio::time::timeout(HANG_GUARD, run).await.expect("session ended").expect("orchestrator");
        (result, audit.records)
    })
}

/// A plain HTTP proxy request from `source`; the raw response ("" if the proxy closed
/// the connection unanswered). Panics if the proxy neither answers nor closes.
pub(crate) async fn from(source: Ipv4Addr, proxy: SocketAddr, request: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy neither answered nor closed");
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits (bounded) for a proxy's pod watch to report `session`.
pub(crate) async fn known(proxy: &ClusterProxy, session: &SessionId) {
    tokio::time::timeout(HANG_GUARD, proxy.knows(session)).await.expect("the pod watch reports the session");
}

pub(crate) fn get(url: &str, host: &str) -> String {
    format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

pub(crate) fn audit_text(records: &[AuditRecord]) -> Vec<String> {
    records.iter().map(|r| serde_json::to_string(&r.event).unwrap()).collect()
}
