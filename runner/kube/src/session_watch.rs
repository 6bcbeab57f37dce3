//! The pieces of the wait loop that need no backend: what it has reported so far, how a
//! watcher event folds into "object", "gone" or "nothing", and the log stream.

use enclave_core::{BackendEvent, BackendEvents, ExitObservation, Observation, Stream};
use futures::AsyncReadExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kube::runtime::watcher;

use crate::pod::WORKLOAD_CONTAINER;

/// What the wait loop has reported so far.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) clone_started: bool,
    pub(crate) clone_finished: bool,
    pub(crate) workload_started: bool,
    pub(crate) deadline_reported: bool,
    pub(crate) kill_seen: bool,
    pub(crate) pod_seen: bool,
    pub(crate) pod_relisted: bool,
    pub(crate) job_seen: bool,
    pub(crate) job_relisted: bool,
    pub(crate) log_task: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) enum Step<K> {
    Object(K),
    Deleted,
    Nothing,
}

/// Folds one watcher event into "an object", "it is gone" or "nothing new". A watch
/// that dropped and re-listed without the object reports it gone: the watcher only
/// sees deletions while it is connected.
pub(crate) fn fold<K>(
    event: Result<watcher::Event<K>, watcher::Error>,
    seen: &mut bool,
    relisted: &mut bool,
) -> Step<K> {
    match event {
        Ok(watcher::Event::Apply(object)) => {
            *seen = true;
            Step::Object(object)
        }
        Ok(watcher::Event::InitApply(object)) => {
            *seen = true;
            *relisted = true;
            Step::Object(object)
        }
        Ok(watcher::Event::Delete(_)) => Step::Deleted,
        Ok(watcher::Event::Init) => {
            *relisted = false;
            Step::Nothing
        }
        Ok(watcher::Event::InitDone) if *seen && !*relisted => Step::Deleted,
        Ok(watcher::Event::InitDone) => Step::Nothing,
        Err(e) => {
            // The watcher backs off and reconnects by itself.
            tracing::warn!(error = %e, "kubernetes watch failed; reconnecting");
            Step::Nothing
        }
    }
}

pub(crate) fn gone(killed: bool, what: &str) -> Observation {
    if killed {
        Observation::from_exit(ExitObservation::Signaled { signal: 9 })
    } else {
        Observation::from_exit(ExitObservation::Lost { detail: format!("the session {what} was deleted") })
    }
}

/// Streams the workload container's log into output events until it ends. The API
/// merges stdout and stderr into one stream; it is reported as stdout.
pub(crate) async fn stream_log(pods: Api<Pod>, pod: String, events: BackendEvents) {
    let params = LogParams { container: Some(WORKLOAD_CONTAINER.to_owned()), follow: true, ..Default::default() };
    let mut reader = match pods.log_stream(&pod, &params).await {
        Ok(reader) => Box::pin(reader),
        Err(e) => {
            tracing::warn!(error = %e, pod, "workload log could not be streamed");
            return;
        }
    };
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => {
                let data = buffer[..n].to_vec();
                if events.unbounded_send(BackendEvent::Output { stream: Stream::Stdout, data }).is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, pod, "workload log stream ended early");
                break;
            }
        }
    }
}
