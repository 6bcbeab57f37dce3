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
