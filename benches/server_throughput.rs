//! Benchmark: the Enclave service on the simulator backend, over loopback HTTP.
//!
//! Not a test: it prints numbers. Run with `cargo bench -p enclave-tests --bench
//! server_throughput` (`BENCH_CREATES=N`, default 2,000; `BENCH_CLIENTS=N`, default 100;
//! `BENCH_SUBSCRIBERS=N`, default 200).
//!
//! 1. Session creations per second and latency percentiles with 100 concurrent clients
//!    (each POST parses, plans, stores and starts a session). The peer measured in the
//!    same run is `GET /healthz` at the same concurrency: the HTTP floor of this
//!    machine, so the ratio says what a create costs beyond it.
//! 2. SSE fan-out: 200 subscribers follow one live session (simulator paced in real
//!    time) to its end; reported as events delivered per second and the spread between
//!    the first and the last subscriber to see the result. The peer is the same 200
//!    subscribers replaying the finished session from the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use enclave_server::{App, Credentials, ServerConfig};
use enclave_sim::SimBackend;
use enclave_store::{SqliteStore, Store, StoreOptions, TenantLimits};
use serde_json::{Value, json};

const HELLO: &str = include_str!("../examples/sessions/hello.yaml");

/// A live session with a few seconds of modelled events.
const STREAMED: &str = "\
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: fan-out
spec:
  command: [\"make\", \"test\"]
  egress:
    mode: allowlist
    allow:
      - host: pypi.org
        ports: [443]
  quotas:
    deadline: 1m
  simulate:
    exitCode: 0
    duration: 3s
    logs:
      lines: 1000
      bytes: 100k
    egress:
      - host: pypi.org
        port: 443
        at: 1s
      - host: example.net
        port: 443
        at: 2s
";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn start(backend: Arc<SimBackend>, dir: &std::path::Path) -> (String, String) {
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.join("enclave.db"), StoreOptions::default()).await.expect("store"));
    let mut config = ServerConfig::default();
    config.limits.requests_per_second = 1_000_000;
    config.limits.request_burst = 1_000_000;
    let app = App::new(config, store, backend, Credentials::admin("bench-admin")).await.expect("app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(app.serve(listener, futures::future::pending()));
    let limits = TenantLimits { max_concurrent: 100_000, daily_sessions: 10_000_000 };
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/v1/admin/tenants"))
        .bearer_auth("bench-admin")
        .json(&json!({ "name": "bench", "limits": limits }))
        .send()
        .await
        .expect("tenant")
        .json()
        .await
        .expect("tenant json");
    (base, created["token"].as_str().expect("token").to_owned())
}

/// Runs `total` requests from `clients` concurrent clients; returns (elapsed, latencies).
async fn load<F, Fut>(clients: usize, total: usize, request: F) -> (Duration, Vec<Duration>)
where
    F: Fn(reqwest::Client) -> Fut + Send + Sync + 'static + Clone,
    Fut: Future<Output = bool> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, request) = (next.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                assert!(request(http.clone()).await, "request failed");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    let elapsed = started.elapsed();
    all.sort();
    (elapsed, all)
}

fn report(label: &str, elapsed: Duration, latencies: &[Duration]) -> f64 {
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{label:<28} {:>6} requests in {:>6.2}s = {rate:>8.0}/s   p50 {:>7.1?}  p99 {:>7.1?}  max {:>7.1?}",
        latencies.len(),
        elapsed.as_secs_f64(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    rate
}

/// Follows a session's events to the end; returns (events, when the last arrived).
async fn follow(http: reqwest::Client, url: String, token: String) -> (usize, Instant) {
    use eventsource_stream::Eventsource as _;
    use futures::StreamExt as _;
    let response = http.get(url).bearer_auth(token).send().await.expect("events");
    let mut stream = response.bytes_stream().eventsource();
    let mut count = 0;
    while let Some(event) = stream.next().await {
        event.expect("event");
        count += 1;
    }
    (count, Instant::now())
}

async fn fan_out(base: &str, token: &str, id: &str, subscribers: usize) -> (Duration, usize, Duration) {
    let url = format!("{base}/v1/sessions/{id}/events");
    let started = Instant::now();
    let tasks: Vec<_> =
        (0..subscribers).map(|_| tokio::spawn(follow(reqwest::Client::new(), url.clone(), token.to_owned()))).collect();
    let mut ends = Vec::new();
    let mut events = 0;
    for task in tasks {
        let (count, end) = task.await.expect("subscriber");
        events += count;
        ends.push(end);
    }
    ends.sort();
    let spread = ends.last().copied().unwrap_or(started) - ends.first().copied().unwrap_or(started);
    (started.elapsed(), events, spread)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let total = env_usize("BENCH_CREATES", 2_000);
        let clients = env_usize("BENCH_CLIENTS", 100);
        let subscribers = env_usize("BENCH_SUBSCRIBERS", 200);
        let dir = tempfile::tempdir().expect("temp dir");
        let (base, token) = start(Arc::new(SimBackend::new()), dir.path()).await;
        println!("Enclave service on the simulator, loopback HTTP, {clients} concurrent clients");

        let health = format!("{base}/healthz");
        let (elapsed, latencies) = load(clients, total, move |http: reqwest::Client| {
            let url = health.clone();
            async move { http.get(url).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        let floor = report("peer: GET /healthz", elapsed, &latencies);

        let (url, bearer) = (format!("{base}/v1/sessions"), token.clone());
        let (elapsed, latencies) = load(clients, total, move |http: reqwest::Client| {
            let (url, bearer) = (url.clone(), bearer.clone());
            async move {
                let response = http.post(url).bearer_auth(bearer).body(HELLO).send().await;
                response.is_ok_and(|r| r.status().as_u16() == 201)
            }
        })
        .await;
        let creates = report("POST /v1/sessions", elapsed, &latencies);
        println!("creates run at {:.2}x the HTTP floor (1.0 = free)", creates / floor);

        // SSE fan-out: a live session on a real-time simulator.
        let live_dir = tempfile::tempdir().expect("temp dir");
        let (base, token) = start(Arc::new(SimBackend::real_time()), live_dir.path()).await;
        let created: Value = reqwest::Client::new()
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(&token)
            .body(STREAMED)
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("created");
        let id = created["id"].as_str().expect("id").to_owned();
        let (elapsed, events, spread) = fan_out(&base, &token, &id, subscribers).await;
        println!(
            "SSE live fan-out              {subscribers} subscribers, {events} events in {:.2}s (session lasts ~3s): \
             last subscriber done {spread:.1?} after the first",
            elapsed.as_secs_f64()
        );
        let (elapsed, replayed, spread) = fan_out(&base, &token, &id, subscribers).await;
        println!(
            "peer: SSE replay from store   {subscribers} subscribers, {replayed} events in {:.2}s = {:.0} events/s; \
             spread {spread:.1?}",
            elapsed.as_secs_f64(),
            replayed as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(events, replayed, "every live subscriber saw every event");
    });
    // The servers' tasks (and the database pools' timers) are still alive; leave without
    // dropping the runtime under them.
    std::process::exit(0);
}
