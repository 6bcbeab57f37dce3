//! Where the proxy's decisions go: the session's audit, through the orchestrator.

use async_trait::async_trait;
use enclave_core::{BackendEvent, BackendEvents};

/// Receives every decision and binding use. A `false` return means the record could not
/// be taken (the session's audit is gone), and the proxy then denies: nothing passes
/// unaudited.
#[async_trait]
pub trait Recorder: Send + Sync {
    /// Records one event; `false` if it could not be recorded. The proxy waits for the
    /// answer before it lets anything through.
    async fn record(&self, event: BackendEvent) -> bool;
}

#[async_trait]
impl Recorder for BackendEvents {
    async fn record(&self, event: BackendEvent) -> bool {
        self.unbounded_send(event).is_ok()
    }
}
