//! Where the proxy's decisions go: the session's audit, through the orchestrator.

use enclave_core::{BackendEvent, BackendEvents};

/// Receives every decision and binding use. A `false` return means the record could not
/// be taken (the session's audit is gone), and the proxy then denies: nothing passes
/// unaudited.
pub trait Recorder: Send + Sync {
    /// Records one event; `false` if it could not be recorded.
    fn record(&self, event: BackendEvent) -> bool;
}

impl Recorder for BackendEvents {
    fn record(&self, event: BackendEvent) -> bool {
        self.unbounded_send(event).is_ok()
    }
}
