//! Prometheus metrics. Session counts by state and kill reason come from the store (they
//! survive restarts); egress decisions and durations are counted by this process.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use enclave_core::{Decision, SessionEvent};
use enclave_store::StateCount;

/// Upper bounds of the duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// Counters of this process.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    egress_allowed: AtomicU64,
    egress_denied: AtomicU64,
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_ms: AtomicU64,
    sessions_created: AtomicU64,
    sessions_refused: AtomicU64,
}

impl Metrics {
    pub(crate) fn created(&self) {
        self.sessions_created.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.sessions_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what an event tells.
    pub(crate) fn observe(&self, event: &SessionEvent) {
        match event {
            SessionEvent::Egress { decision: Decision::Allow { .. }, .. } => {
                self.egress_allowed.fetch_add(1, Ordering::Relaxed);
            }
            SessionEvent::Egress { decision: Decision::Deny { .. }, .. } => {
                self.egress_denied.fetch_add(1, Ordering::Relaxed);
            }
            SessionEvent::Finished { result } => {
                let seconds = result.duration_ms as f64 / 1_000.0;
                for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
                    if seconds <= *bound {
                        bucket.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.duration_count.fetch_add(1, Ordering::Relaxed);
                self.duration_sum_ms.fetch_add(result.duration_ms, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self, states: &[StateCount]) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP enclave_sessions Sessions by state and kill reason.\n# TYPE enclave_sessions gauge\n");
        for state in states {
            let reason = state.kill_reason.as_deref().unwrap_or("");
            let _ =
                writeln!(out, "enclave_sessions{{state=\"{}\",kill_reason=\"{reason}\"}} {}", state.state, state.count);
        }
        out.push_str(
            "# HELP enclave_sessions_created_total Sessions accepted by this process.\n\
             # TYPE enclave_sessions_created_total counter\n",
        );
        let _ = writeln!(out, "enclave_sessions_created_total {}", load(&self.sessions_created));
        out.push_str(
            "# HELP enclave_sessions_refused_total Sessions refused by a tenant ceiling.\n\
             # TYPE enclave_sessions_refused_total counter\n",
        );
        let _ = writeln!(out, "enclave_sessions_refused_total {}", load(&self.sessions_refused));
        out.push_str(
            "# HELP enclave_egress_decisions_total Egress decisions by verdict.\n\
             # TYPE enclave_egress_decisions_total counter\n",
        );
        let _ = writeln!(out, "enclave_egress_decisions_total{{decision=\"allow\"}} {}", load(&self.egress_allowed));
        let _ = writeln!(out, "enclave_egress_decisions_total{{decision=\"deny\"}} {}", load(&self.egress_denied));
        out.push_str(
            "# HELP enclave_session_duration_seconds Session durations (modelled time on the simulator).\n\
             # TYPE enclave_session_duration_seconds histogram\n",
        );
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
            let _ = writeln!(out, "enclave_session_duration_seconds_bucket{{le=\"{bound}\"}} {}", load(bucket));
        }
        let count = load(&self.duration_count);
        let _ = writeln!(out, "enclave_session_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "enclave_session_duration_seconds_sum {}", load(&self.duration_sum_ms) as f64 / 1_000.0);
        let _ = writeln!(out, "enclave_session_duration_seconds_count {count}");
        out
    }
}
