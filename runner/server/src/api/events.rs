//! `GET /v1/sessions/{id}/events`: Server-Sent Events, resumable with `Last-Event-ID`,
//! ending with the `finished` event that carries the result.
//!
//! Replay comes from the store and live events from the session's broadcast; the
//! subscription is taken before the store is read, and events are persisted before they
//! are broadcast, so nothing falls between the two. A subscriber that lags behind the
//! broadcast catches up from the store.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use enclave_core::SessionId;
use enclave_store::StoredEvent;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::owned_session;
use crate::AppState;
use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::runner::LiveEvents;

const REPLAY_PAGE: u32 = 500;

/// Event streams open per tenant, so one tenant cannot hold the server's connections.
#[derive(Debug, Default)]
pub(crate) struct OpenStreams(Arc<Mutex<HashMap<String, u32>>>);

/// One open stream; closing it (dropping the guard) frees the slot.
pub(crate) struct StreamSlot {
    streams: Arc<Mutex<HashMap<String, u32>>>,
    tenant: String,
}

impl OpenStreams {
    fn open(&self, tenant: &str, max: u32) -> Option<StreamSlot> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(tenant.to_owned()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(StreamSlot { streams: self.0.clone(), tenant: tenant.to_owned() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

struct Follow {
    _slot: StreamSlot,
    state: Arc<AppState>,
    session: SessionId,
    last: Option<u64>,
    backlog: VecDeque<StoredEvent>,
    live: Option<LiveEvents>,
    done: bool,
}

fn event_type(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "message".to_owned())
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                if self.last.is_some_and(|last| event.seq <= last) {
                    continue;
                }
                self.last = Some(event.seq);
                let kind = event_type(&event.body);
                self.done = kind == "finished";
                return Some(Event::default().id(event.seq.to_string()).event(kind).data(event.body));
            }
            if self.done {
                return None;
            }
            match self.state.store.events_after(&self.session, self.last, REPLAY_PAGE).await {
                Ok(batch) if !batch.is_empty() => {
                    self.backlog.extend(batch);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(session = %self.session, error = %e, "events could not be read");
                    return None;
                }
            }
            let live = self.live.as_mut()?;
            match live.recv().await {
                Ok(event) => self.backlog.push_back(Arc::unwrap_or_clone(event)),
                // Behind the broadcast: the store has everything.
                Err(RecvError::Lagged(_)) => {}
                // The session ended here: one last read of the store, then stop.
                Err(RecvError::Closed) => self.live = None,
            }
        }
    }
}

/// `GET /v1/sessions/{id}/events`.
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stored = owned_session(&state, &tenant.id, &id).await?;
    let last = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event id from this stream"))?,
        ),
    };
    let max = state.config.limits.max_streams_per_tenant;
    let slot = state.streams.open(&tenant.id, max).ok_or_else(|| {
        ApiError::too_many(
            "too_many_streams",
            format!("this tenant has {max} event streams open, its limit; close one and retry"),
            5,
        )
    })?;
    let live = state.runner.subscribe(&stored.id);
    let follow = Follow {
        _slot: slot,
        state: state.clone(),
        session: stored.id,
        last,
        backlog: VecDeque::new(),
        live,
        done: false,
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        follow.next().await.map(|event| (Ok::<_, Infallible>(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
