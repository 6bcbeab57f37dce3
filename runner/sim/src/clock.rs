//! The simulator's clock, [`VirtualClock`]: time moves only when the model says so (the
//! real one, `WallClock`, is core's).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use enclave_core::Clock;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

/// Modelled time for one simulated session. It starts at the wall-clock time of its
/// creation and only moves when the simulator calls [`VirtualClock::advance_to`]; timers
/// due on the way fire in order, so an orchestrator's deadline lands at exactly the
/// modelled instant, without waiting in real time.
#[derive(Debug)]
pub struct VirtualClock {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    now_ms: u64,
    next_id: u64,
    timers: Vec<Timer>,
}

#[derive(Debug)]
struct Timer {
    due_ms: u64,
    id: u64,
    wake: oneshot::Sender<()>,
}

impl VirtualClock {
    /// A clock starting now (wall time).
    pub fn starting_now() -> Arc<Self> {
        Self::starting_at(enclave_core::WallClock.now_ms())
    }

    /// A clock starting at `epoch_ms`.
    pub fn starting_at(epoch_ms: u64) -> Arc<Self> {
        Arc::new(Self { inner: Mutex::new(Inner { now_ms: epoch_ms, next_id: 0, timers: Vec::new() }) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves time forward to `target_ms`, firing every timer due on the way in order
    /// and yielding after each so that its owner can react before time moves on.
    pub async fn advance_to(&self, target_ms: u64) {
        loop {
            let due = {
                let mut inner = self.lock();
                let earliest = inner
                    .timers
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.due_ms <= target_ms)
                    .min_by_key(|(_, t)| (t.due_ms, t.id))
                    .map(|(i, _)| i);
                earliest.map(|index| {
                    let timer = inner.timers.swap_remove(index);
                    inner.now_ms = inner.now_ms.max(timer.due_ms);
                    timer
                })
            };
            match due {
                Some(timer) => {
                    if timer.wake.send(()).is_ok() {
                        // Two yields: one for the woken future's task to be polled, one
                        // for whatever it triggers (a kill) to land.
                        tokio::task::yield_now().await;
                        tokio::task::yield_now().await;
                    }
                }
                None => break,
            }
        }
        let mut inner = self.lock();
        inner.now_ms = inner.now_ms.max(target_ms);
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> u64 {
        self.lock().now_ms
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let (wake, done) = oneshot::channel();
        let mut inner = self.lock();
        let due_ms = inner.now_ms.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        if due_ms <= inner.now_ms {
            return Box::pin(async {});
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.timers.push(Timer { due_ms, id, wake });
        Box::pin(async move {
            // A dropped clock never fires: the sleep then never completes, like a
            // timer on a stopped runtime.
            if done.await.is_err() {
                futures::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timers_fire_in_order_as_time_advances() {
        let clock = VirtualClock::starting_at(1_000);
        let late = clock.sleep(Duration::from_millis(500));
        let early = clock.sleep(Duration::from_millis(100));
        let fired = Arc::new(Mutex::new(Vec::new()));
        let (f1, f2) = (fired.clone(), fired.clone());
        let a = tokio::spawn(async move {
            late.await;
            f1.lock().expect("lock").push("late");
        });
        let b = tokio::spawn(async move {
            early.await;
            f2.lock().expect("lock").push("early");
        });
        clock.advance_to(1_200).await;
        assert_eq!(clock.now_ms(), 1_200);
        tokio::task::yield_now().await;
        assert_eq!(*fired.lock().expect("lock"), vec!["early"]);
        clock.advance_to(2_000).await;
        a.await.expect("join");
        b.await.expect("join");
        assert_eq!(*fired.lock().expect("lock"), vec!["early", "late"]);
    }
}
