//! A clock that only the script moves: it starts at a fixed instant, and
//! [`ManualClock::advance_to`] stops at every timer due on the way, so a deadline fires at
//! exactly its instant and nothing depends on real time.
//!
//! Why not the simulator's clock: core's tests would then depend on `enclave-sim`, which
//! depends on core. Why not tokio's paused time: it needs tokio's `test-util` feature,
//! which would then be on in every test build of the workspace.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use enclave_core::Clock;
use futures::future::BoxFuture;
use tokio::sync::watch;

/// Where every test's time starts (2023-11-14T22:13:20Z).
pub const START_MS: u64 = 1_700_000_000_000;

/// Time for one test session, moved by the recording backend's script.
pub struct ManualClock {
    now: watch::Sender<u64>,
    /// The instants sleepers wait for; `advance_to` stops at each.
    due: Mutex<BTreeSet<u64>>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self { now: watch::Sender::new(START_MS), due: Mutex::default() }
    }

    /// Moves time to `target_ms`, stopping at each due instant on the way and yielding
    /// there so that the sleeper's owner reacts (orders a kill) before time moves on.
    pub async fn advance_to(&self, target_ms: u64) {
        loop {
            let next = {
                let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
                let now = *self.now.borrow();
                due.retain(|instant| *instant > now);
                due.first().copied().filter(|instant| *instant <= target_ms)
            };
            let Some(instant) = next else { break };
            self.now.send_replace(instant);
            // Two yields: one for the woken sleeper's task to be polled, one for what it
            // triggers (a kill) to land.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        self.now.send_modify(|now| *now = (*now).max(target_ms));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let due = self.now_ms().saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        self.due.lock().unwrap_or_else(PoisonError::into_inner).insert(due);
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // A dropped clock never fires, like a timer on a stopped runtime.
            if now.wait_for(|now| *now >= due).await.is_err() {
                futures::future::pending::<()>().await;
            }
        })
    }
}
