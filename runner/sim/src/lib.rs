//! The simulator backend: models a session's declared behaviour (the spec's `simulate`
//! block) against its plan and reports what a real backend would observe.
//!
//! Main design decision: the model is a pure timeline ([`timeline`]) walked on a
//! per-session [`VirtualClock`], so the orchestrator's own deadline timer, log counter
//! and kill-reason derivation run unchanged, exactly as on a real backend, without
//! waiting in real time. Egress attempts are decided by `enclave_core::decide`, the
//! code the egress proxy uses.
//!
//! It must never run user code and never invent output: output is modelled as volume
//! only, and every result is marked `simulated: true`.

mod backend;
mod clock;
mod model;

pub use backend::{SimBackend, capabilities};
pub use clock::VirtualClock;
pub use model::{Action, DEFAULT_DURATION_MS, timeline};

/// When the model says the user cancels, if it does: callers time it on the session's
/// clock (`Orchestrator::clock_for`).
pub fn modelled_cancel(plan: &enclave_core::Plan) -> Option<std::time::Duration> {
    plan.simulate.as_ref()?.cancel_after.as_ref().map(|d| d.value.as_std())
}

/// The cancel future for a session run by a program with no user to press Ctrl-C (tests,
/// benchmarks): the modelled cancel on the session's clock, or never.
pub fn modelled_cancel_or_never(
    plan: &enclave_core::Plan,
    clock: &dyn enclave_core::Clock,
) -> futures::future::BoxFuture<'static, ()> {
    match modelled_cancel(plan) {
        Some(after) => clock.sleep(after),
        None => Box::pin(futures::future::pending()),
    }
}
