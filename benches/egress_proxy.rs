//! Egress proxy throughput and added latency, side by side with Debian's `tinyproxy` on
//! the same loopback upstream, and with the upstream reached directly as the floor.
//! Two Enclave shapes: the per-session proxy of the Docker backend (records go to an
//! in-process channel), and the shared proxy of the Kubernetes Deployment (the session
//! named by source address, every record a round trip to the server's relay, which runs
//! on its own runtime as the server would in its own process).
//!
//! Each run: `CLIENTS` concurrent clients, each sending one request per fresh
//! connection (Enclave's proxy serves one request per connection, by design) for
//! `SECONDS` seconds. Reported: requests/s, p50 and p99 latency, and latency added over
//! direct. Everything stays on loopback (upstream on 127.0.0.2). Run with
//! `cargo bench -p enclave-tests --bench egress_proxy`; needs `tinyproxy` on PATH for
//! the comparison (`apt-get install tinyproxy`), and reports the proxy alone without it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, reason = "benchmark")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use enclave_core::{BackendEvent, EgressPhase, MemorySecrets, Plan, Policy, Secret, SessionId};
use enclave_egress::{
    DirectoryTask, Recorder, RelayClient, RelayRegistry, RelayTask, SessionProxy, SessionProxyConfig, StaticDirectory,
    StaticResolver, serve_directory, serve_relay,
};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CLIENTS: usize = 32;
const SECONDS: u64 = 5;
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

struct Discard;

#[async_trait::async_trait]
impl Recorder for Discard {
    async fn record(&self, _event: BackendEvent) -> bool {
        true
    }
}

async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind((UPSTREAM, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "ok from upstream\n";
                let reply =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

fn bench_plan(upstream: SocketAddr) -> Plan {
    let yaml = format!(
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: bench\nspec:\n  command: [\"true\"]\n  egress:\n    mode: allowlist\n    allow:\n      - cidr: {}/32\n        ports: [{}]\n",
        upstream.ip(),
        upstream.port()
    );
    let parsed = enclave_spec::parse("bench.yaml", yaml.as_bytes()).unwrap();
    // The upstream is on this host's loopback: the operator's unsafe test setting.
    let policy = Policy { host_loopback: vec!["127.0.0.0/8".parse().unwrap()], ..Policy::default() };
    enclave_core::plan(&parsed.spec, &policy).unwrap()
}

async fn enclave_proxy(upstream: SocketAddr) -> (SocketAddr, enclave_egress::ProxyTask) {
    let proxy = SessionProxy::new(SessionProxyConfig {
        plan: Arc::new(bench_plan(upstream)),
        secrets: Arc::new(MemorySecrets::default()),
        resolver: Arc::new(StaticResolver::default()),
        recorder: Arc::new(Discard),
        proxy_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        host_addresses: enclave_egress::HostAddresses::Live,
        trusted_clone_networks: Vec::new(),
        upstream_tls: enclave_egress::upstream_tls(&[]).unwrap(),
        phase: EgressPhase::Run,
    });
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, proxy.serve(listener).unwrap())
}

const RELAY_TOKEN: &str = "bench-relay-token-0123456789abcdef0123";

/// The server's side: a registry offering one session, its relay, and a task taking the
/// session's events as the orchestrator would.
async fn relay(upstream: SocketAddr, session: &SessionId) -> RelayTask {
    let registry = RelayRegistry::new();
    let (events, mut rx) = futures::channel::mpsc::unbounded();
    registry.register(session, &bench_plan(upstream), &MemorySecrets::default(), events);
    // The backend has reported the workload's start: records are taken at once.
    registry.reached(session, enclave_egress::Milestone::WorkloadStarted);
    tokio::spawn(async move { while rx.next().await.is_some() {} });
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    serve_relay(listener, registry, Secret::new(RELAY_TOKEN), None).unwrap()
}

/// The proxy Deployment's shape: one listener, the session found by source address, its
/// grant and every record through the relay.
async fn relayed_proxy(relay: SocketAddr, session: &SessionId) -> (SocketAddr, DirectoryTask) {
    let client = RelayClient::new(&format!("http://{relay}"), Secret::new(RELAY_TOKEN), None).unwrap();
    let grant = client.grant(session).await.unwrap().expect("the relay offers the session");
    let proxy = SessionProxy::new(SessionProxyConfig {
        plan: Arc::new(grant.plan),
        secrets: Arc::new(MemorySecrets::default()),
        resolver: Arc::new(StaticResolver::default()),
        recorder: client.recorder(session),
        proxy_addresses: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5))],
        host_addresses: enclave_egress::HostAddresses::Live,
        trusted_clone_networks: Vec::new(),
        upstream_tls: enclave_egress::upstream_tls(&[]).unwrap(),
        phase: EgressPhase::Run,
    });
    let directory = Arc::new(StaticDirectory::default());
    // Clients connect from 127.0.0.1: that is the session's "pod address".
    directory.insert(IpAddr::V4(Ipv4Addr::LOCALHOST), proxy);
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 5), 0)).await.unwrap();
    let task = serve_directory(listener, directory).unwrap();
    (task.address, task)
}

/// Starts tinyproxy on a free loopback port; `None` if it is not installed.
fn tinyproxy(dir: &std::path::Path) -> Option<(SocketAddr, std::process::Child)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 256\nLogLevel Critical\nDisableViaHeader Yes\n"
        ),
    )
    .ok()?;
    let child = std::process::Command::new("tinyproxy")
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for _ in 0..50 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Some((addr, child));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// One request over a fresh connection; its latency, if it got a 200.
async fn one(target: SocketAddr, request: &[u8]) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(target).await.ok()?;
    stream.write_all(request).await.ok()?;
    let mut out = Vec::with_capacity(256);
    stream.read_to_end(&mut out).await.ok()?;
    out.starts_with(b"HTTP/1.1 200")
        .then(|| started.elapsed())
        .or_else(|| out.starts_with(b"HTTP/1.0 200").then(|| started.elapsed()))
}

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

async fn load(target: SocketAddr, request: Vec<u8>) -> Stats {
    let stop = Arc::new(AtomicBool::new(false));
    let request = Arc::new(request);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, request) = (stop.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while !stop.load(Ordering::Relaxed) {
                match one(target, &request).await {
                    Some(d) => lat.push(d),
                    None => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (lat, e) = task.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    Stats { rps: all.len() as f64 / elapsed, p50: pct(0.50), p99: pct(0.99), errors }
}

fn report(name: &str, s: &Stats, direct: &Stats) {
    let added = |a: Duration, b: Duration| a.as_secs_f64() * 1e3 - b.as_secs_f64() * 1e3;
    println!(
        "{name:<14} {:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   added p50 {:>7.3} ms   added p99 {:>7.3} ms   errors {}",
        s.rps,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        added(s.p50, direct.p50),
        added(s.p99, direct.p99),
        s.errors
    );
}

fn main() {
    // The proxy gets its own runtime threads, as tinyproxy has its own process.
    let proxy_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let up = rt.block_on(upstream());
    let (proxy_addr, task) = proxy_rt.block_on(enclave_proxy(up));
    // The server's relay, on its own thread as in its own process.
    let relay_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let session = SessionId::new("ses-bench-relay").unwrap();
    let relay_task = relay_rt.block_on(relay(up, &session));
    let (relayed_addr, relayed_task) = proxy_rt.block_on(relayed_proxy(relay_task.address, &session));
    let dir = tempfile::tempdir().unwrap();
    let tiny = tinyproxy(dir.path());
    rt.block_on(async {
        let absolute = format!("GET http://{up}/ HTTP/1.1\r\nHost: {up}\r\nConnection: close\r\n\r\n").into_bytes();
        let origin = format!("GET / HTTP/1.1\r\nHost: {up}\r\nConnection: close\r\n\r\n").into_bytes();
        println!("{CLIENTS} clients, {SECONDS} s each, one request per connection, upstream {up}");
        // Warm-up, then each target in turn on the same machine, same upstream.
        let _ = load(up, origin.clone()).await;
        let direct = load(up, origin).await;
        report("direct", &direct, &direct);
        let enclave = load(proxy_addr, absolute.clone()).await;
        report("enclave-proxy", &enclave, &direct);
        let relayed = load(relayed_addr, absolute.clone()).await;
        report("enclave+relay", &relayed, &direct);
        println!(
            "relayed/per-session: throughput x{:.2}, p99 x{:.2} (the cost of a relay round trip per decision)",
            relayed.rps / enclave.rps.max(1.0),
            relayed.p99.as_secs_f64() / enclave.p99.as_secs_f64().max(1e-9)
        );
        match &tiny {
            Some((addr, _)) => {
                let peer = load(*addr, absolute).await;
                report("tinyproxy", &peer, &direct);
                println!(
                    "enclave/tinyproxy: throughput x{:.2}, p99 x{:.2} (lower is better)",
                    enclave.rps / peer.rps.max(1.0),
                    enclave.p99.as_secs_f64() / peer.p99.as_secs_f64().max(1e-9)
                );
            }
            None => println!("tinyproxy: not installed (apt-get install tinyproxy); no peer measured"),
        }
    });
    drop(task);
    drop(relayed_task);
    drop(relay_task);
    proxy_rt.shutdown_background();
    relay_rt.shutdown_background();
    if let Some((_, mut child)) = tiny {
        let _ = child.kill();
        let _ = child.wait();
    }
}
