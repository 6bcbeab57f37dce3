//! Benchmark: parse + plan + simulate + audit for many sessions, in process.
//!
//! Not a test: it prints numbers. Run with `cargo bench -p enclave-tests`
//! (`BENCH_SESSIONS=N` to change the count, default 10,000). Sessions cycle through
//! every spec in `examples/sessions/`, so each kill reason and egress mix is exercised.
//! The peer measured in the same run is the bare cost of parsing the same specs, so the
//! numbers read as "a full simulated session costs k parses", which stays comparable
//! across machines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use enclave_core::WallClock;
use enclave_core::{
    MemoryAuditSink, NoSecrets, Orchestrator, Policy, SessionId, SessionRun, TimedEvent, plan, to_jsonl_line,
    verify_jsonl,
};
use enclave_sim::SimBackend;

fn examples() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sessions");
    let mut specs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("read example")))
        .collect();
    specs.sort();
    specs
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn main() {
    let sessions: usize = std::env::var("BENCH_SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let specs = examples();
    let policy = Policy::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    // Peer: parsing alone.
    let started = Instant::now();
    for i in 0..sessions {
        let (name, bytes) = &specs[i % specs.len()];
        std::hint::black_box(enclave_spec::parse(name, bytes).expect("example parses"));
    }
    let parse_only = started.elapsed();

    // Full pipeline: parse, plan, simulate with the orchestrator, audit to JSONL, verify.
    let backend = Arc::new(SimBackend::new());
    let orchestrator = Orchestrator::new(backend, Arc::new(WallClock), Arc::new(NoSecrets));
    let mut plan_time = Duration::ZERO;
    let mut run_time = Duration::ZERO;
    let mut audit_time = Duration::ZERO;
    let mut records = 0usize;
    let mut events = 0usize;
    let started = Instant::now();
    for i in 0..sessions {
        let (name, bytes) = &specs[i % specs.len()];
        let t = Instant::now();
        let parsed = enclave_spec::parse(name, bytes).expect("example parses");
        let planned = plan(&parsed.spec, &policy).expect("example plans");
        plan_time += t.elapsed();

        let t = Instant::now();
        let session = SessionId::new(format!("ses-bench-{i}")).expect("id");
        let mut audit = MemoryAuditSink::default();
        let mut count = 0usize;
        let mut listener = |_: &TimedEvent| count += 1;
        let cancel = Box::pin(futures::future::pending());
        let result = runtime
            .block_on(orchestrator.run(SessionRun {
                session,
                plan: &planned,
                audit: &mut audit,
                listener: &mut listener,
                cancel,
                artifacts: None,
            }))
            .expect("session runs");
        run_time += t.elapsed();
        events += count;

        let t = Instant::now();
        let jsonl: String = audit.records.iter().map(to_jsonl_line).collect();
        let report = verify_jsonl(jsonl.as_bytes());
        assert!(report.is_ok() && report.digest.as_deref() == Some(result.audit_digest.as_str()));
        records += audit.records.len();
        audit_time += t.elapsed();
    }
    let total = started.elapsed();

    let rate = per_second(sessions, total);
    println!("simulate_throughput: {sessions} sessions over {} example specs", specs.len());
    println!("  full pipeline   {:>10.0} sessions/s  ({:.1} s total)", rate, total.as_secs_f64());
    println!(
        "    parse+plan    {:>5.1}%   simulate {:>5.1}%   audit jsonl+verify {:>5.1}%",
        100.0 * plan_time.as_secs_f64() / total.as_secs_f64(),
        100.0 * run_time.as_secs_f64() / total.as_secs_f64(),
        100.0 * audit_time.as_secs_f64() / total.as_secs_f64()
    );
    println!(
        "    {:.1} audit records and {:.1} events per session",
        records as f64 / sessions as f64,
        events as f64 / sessions as f64
    );
    println!("  peer: parse only {:>10.0} sessions/s", per_second(sessions, parse_only));
    println!("  ratio: a full simulated session costs {:.1} parses", total.as_secs_f64() / parse_only.as_secs_f64());
}
