//! The Kubernetes backend: creates a session's objects in order, watches its Job and
//! pod, streams the workload's log, reports what the API says, and deletes everything
//! by label.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use enclave_core::{
    Backend, BackendError, BackendEvent, BackendEvents, Capabilities, ExitObservation, Observation, Plan, RunHandle,
    SecretStore, SessionId, Support, TeardownReport,
};
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::config::KubeConfig;
use crate::error::KubeError;
use crate::labels;
use crate::manifests::{CredentialSource, SessionManifests};
use crate::network_policy::needs_proxy;
use crate::observe::{CloneState, job_deadline_exceeded, observe_pod, step_reports};
use crate::retry::with_retries;
use crate::session_watch::{Progress, Step, fold, gone, stream_log};
use enclave_egress::{Milestone, RelayRegistry};

/// How long the log stream may trail the pod's end before the run is reported.
const LOG_DRAIN: Duration = Duration::from_secs(10);
/// How long teardown waits for a session's pods to go before it removes the
/// NetworkPolicy that confines them.
const POD_GONE_POLLS: u32 = 50;
const POD_GONE_INTERVAL: Duration = Duration::from_millis(200);

/// Runs sessions as Jobs on a Kubernetes cluster.
pub struct KubeBackend {
    client: Client,
    config: KubeConfig,
    runs: Mutex<HashMap<SessionId, Arc<Run>>>,
    /// Where the egress proxy Deployment gets sessions' grants and sends their records;
    /// without it, plans that need the proxy are refused.
    relay: Option<Arc<RelayRegistry>>,
}

struct Run {
    job: String,
    has_clone: bool,
    /// The clone credential Secret, removed as soon as the clone has finished.
    clone_secret: Option<String>,
    /// Step names and timeouts, by index, for the driver's reports.
    steps: Vec<(String, Option<u64>)>,
    events: BackendEvents,
    /// Set once by `kill`; the wait loop then reads a vanished pod as the kill's doing.
    killed: watch::Sender<bool>,
}

/// What the Kubernetes backend enforces, with (`relay`) or without a relay to the egress
/// proxy Deployment. Nothing is `Enforced` yet: every setting is in every manifest (unit-
/// and golden-tested, schema- and policy-checked) and the backend's reading of the API,
/// the proxy's session lookup and the relay are tested against a fake API server, but no
/// test has tried to break it on a real cluster (docs/kubernetes.md).
pub fn capabilities(relay: bool) -> Capabilities {
    let through_proxy = if relay { Support::Configured } else { Support::NotYet };
    Capabilities {
        executes_code: true,
        gvisor: Support::Configured,
        hardened_container: Support::Configured,
        egress_deny: Support::Configured,
        // Routed to the egress proxy Deployment by NetworkPolicy; the proxy serves a
        // session only through the relay of the server that runs it.
        egress_allowlist: through_proxy,
        bindings: through_proxy,
        deadline: Support::Configured,
        memory_kill_reason: Support::Configured,
        // A PodSpec cannot set a pids limit (only the kubelet's node-wide podPidsLimit),
        // and the API reports no fork failure: the reason cannot be derived.
        pids_kill_reason: Support::NotDerivable,
        disk_kill_reason: Support::Configured,
        log_limit: Support::Configured,
        // The credential stays in the init container; the clone's network reach goes
        // through the egress proxy, which revokes it before the workload starts.
        clone: through_proxy,
        artifacts: Support::NotYet,
    }
}

impl KubeBackend {
    /// A backend on `client` (from a kubeconfig, in-cluster config, or a test service).
    pub fn new(client: Client, config: KubeConfig) -> Self {
        Self { client, config, runs: Mutex::new(HashMap::new()), relay: None }
    }

    /// Offers sessions that need the egress proxy (allowlist, bindings, a repository)
    /// through `relay`, which the server serves to the proxy Deployment.
    #[must_use]
    pub fn with_relay(mut self, relay: Arc<RelayRegistry>) -> Self {
        self.relay = Some(relay);
        self
    }

    /// A backend using the ambient configuration (in-cluster service account, or
    /// `KUBECONFIG`/`~/.kube/config`).
    pub async fn from_environment(config: KubeConfig) -> Result<Self, BackendError> {
        let client = Client::try_default().await.map_err(|e| BackendError::Infra {
            message: "no Kubernetes configuration found (in-cluster or kubeconfig)".to_owned(),
            source: Some(Box::new(e)),
        })?;
        Ok(Self::new(client, config))
    }

    /// The configuration.
    pub fn config(&self) -> &KubeConfig {
        &self.config
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn run(&self, session: &SessionId) -> Result<Arc<Run>, BackendError> {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(session)
            .cloned()
            .ok_or_else(|| BackendError::Unsupported(format!("session {session} is not running here")))
    }

    /// Creates `object`; an object of that name that already carries this session's
    /// label is one an earlier attempt created (its response was lost) and counts.
    async fn create<K>(&self, object: &K, session: &SessionId) -> Result<(), KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let api: Api<K> = self.api();
        let name = object.meta().name.clone().unwrap_or_default();
        let described = format!("{}/{name}", K::kind(&()));
        let api_error = |operation, source| KubeError::Api { operation, object: described.clone(), source };
        let post = PostParams::default();
        match with_retries(|| api.create(&post, object)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                let existing = with_retries(|| api.get(&name)).await.map_err(|e| api_error("get", e))?;
                if existing.labels().get(labels::SESSION).map(String::as_str) == Some(session.as_str()) {
                    Ok(())
                } else {
                    Err(api_error("create", kube::Error::Api(status)))
                }
            }
            Err(e) => Err(api_error("create", e)),
        }
    }

    /// Deletes every object of kind `K` matching `selector`, recording each.
    async fn delete_matching<K>(
        &self,
        selector: &str,
        params: &DeleteParams,
        report: &mut TeardownReport,
    ) -> Result<(), KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let api: Api<K> = self.api();
        let kind = K::kind(&()).to_ascii_lowercase();
        let list_params = ListParams::default().labels(selector);
        let list = with_retries(|| api.list(&list_params)).await.map_err(|source| KubeError::Api {
            operation: "list",
            object: kind.clone(),
            source,
        })?;
        for object in list {
            let name = object.name_any();
            match with_retries(|| api.delete(&name, params)).await {
                Ok(_) => report.removed.push(format!("{kind}:{name}")),
                // Gone already (the Job's deletion took its pod): nothing to remove.
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => report.failed.push(format!("{kind}:{name}: {e}")),
            }
        }
        Ok(())
    }

    /// Whether the session's Job reports that its deadline passed (false if it is gone
    /// or cannot be read: the caller then treats the pod as lost).
    async fn job_deadline_passed(&self, job: &str) -> bool {
        let jobs: Api<Job> = self.api();
        with_retries(|| jobs.get(job)).await.is_ok_and(|j| job_deadline_exceeded(&j))
    }

    /// Deletes the clone credential once the clone is over: the token then exists in
    /// the cluster only while it is needed. A failure is left to teardown.
    async fn remove_clone_credential(&self, run: &Run) {
        let Some(name) = &run.clone_secret else { return };
        let secrets: Api<Secret> = self.api();
        let params = DeleteParams::default();
        match with_retries(|| secrets.delete(name, &params)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => tracing::warn!(error = %e, secret = %name, "clone credential not removed yet; teardown retries"),
        }
    }

    async fn session_pods(&self, session: &SessionId) -> Result<Vec<Pod>, KubeError> {
        let api: Api<Pod> = self.api();
        let selector = labels::session_selector(session);
        let params = ListParams::default().labels(&selector);
        with_retries(|| api.list(&params)).await.map(|l| l.items).map_err(|source| KubeError::Api {
            operation: "list",
            object: "pod".to_owned(),
            source,
        })
    }

    /// Sessions (by label) that have any object of kind `K` in this scope.
    async fn sessions_with<K>(&self, found: &mut BTreeSet<String>) -> Result<(), KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let api: Api<K> = self.api();
        let selector = labels::scope_selector(&self.config.scope);
        let params = ListParams::default().labels(&selector);
        let list = with_retries(|| api.list(&params)).await.map_err(|source| KubeError::Api {
            operation: "list",
            object: K::kind(&()).to_ascii_lowercase(),
            source,
        })?;
        found.extend(list.items.iter().filter_map(|o| o.labels().get(labels::SESSION).cloned()));
        Ok(())
    }
}

impl KubeBackend {
    /// Reports what a pod object says; returns the observation once the run is over.
    async fn on_pod(&self, session: &SessionId, run: &Run, pod: &Pod, progress: &mut Progress) -> Option<Observation> {
        let mut facts = observe_pod(pod);
        match facts.clone {
            Some(CloneState::Started) | Some(CloneState::Finished { .. }) if !progress.clone_started => {
                progress.clone_started = true;
                let _ = run.events.unbounded_send(BackendEvent::CloneStarted);
                self.reached(session, Milestone::CloneStarted);
            }
            _ => {}
        }
        if let Some(CloneState::Finished { ok, detail, .. }) = &facts.clone
            && !progress.clone_finished
        {
            progress.clone_finished = true;
            let _ = run.events.unbounded_send(BackendEvent::CloneFinished { ok: *ok, detail: detail.clone() });
            // The token goes first: it is not needed any more, whatever comes next.
            self.remove_clone_credential(run).await;
            if let Err(lost) = self.clone_reach_revoked(session, *ok).await {
                return Some(lost);
            }
        }
        if let Some(ended) = facts.ended.as_mut()
            && !run.steps.is_empty()
        {
            ended.failed_step = self.report_steps(run, pod);
        }
        if facts.workload_started && !progress.workload_started {
            progress.workload_started = true;
            let _ = run.events.unbounded_send(BackendEvent::WorkloadStarted);
            self.reached(session, Milestone::WorkloadStarted);
            progress.log_task = Some(tokio::spawn(stream_log(self.api(), pod.name_any(), run.events.clone())));
        }
        facts.ended
    }
}

impl KubeBackend {
    /// Tells the relay the backend has reported `milestone` (see [`RelayRegistry::record`]).
    fn reached(&self, session: &SessionId, milestone: Milestone) {
        if let Some(relay) = &self.relay {
            relay.reached(session, milestone);
        }
    }

    /// Reports the revocation of the clone's reach, in its place after the clone's end.
    /// A failed clone ended its pod, and nothing holds a reach any more. A clone that
    /// succeeded asked the proxy to revoke before it exited; the backend reports the
    /// revocation once the relay confirms it, and ends the session as lost if it never
    /// does (the workload would start with the repo host reachable).
    async fn clone_reach_revoked(&self, session: &SessionId, ok: bool) -> Result<(), Observation> {
        let confirmed = match (ok, self.relay.as_ref().and_then(|r| r.clone_revoked(session))) {
            (false, _) => true,
            (true, Some(mut revoked)) => {
                let wait = Duration::from_millis(self.config.clone_revocation_timeout_ms);
                matches!(tokio::time::timeout(wait, revoked.wait_for(|r| *r)).await, Ok(Ok(_)))
            }
            (true, None) => false,
        };
        if confirmed {
            if let Ok(run) = self.run(session) {
                let _ = run.events.unbounded_send(BackendEvent::CloneReachRevoked);
            }
            Ok(())
        } else {
            tracing::error!(session = %session, "the egress proxy never confirmed revoking the clone's reach");
            // Withdrawn at once: every record the proxy sends from now on is refused, so
            // it lets nothing through while the session is torn down.
            if let Some(relay) = &self.relay {
                relay.remove(session);
            }
            Err(Observation::from_exit(ExitObservation::Lost {
                detail: "the egress proxy did not confirm that the clone's reach was revoked".to_owned(),
            }))
        }
    }

    /// Reports the steps the driver recorded (after the pod ended: the termination
    /// message is only written then); returns the failing step's name.
    fn report_steps(&self, run: &Run, pod: &Pod) -> Option<String> {
        let mut failed = None;
        for report in step_reports(pod) {
            let Some((name, timeout_ms)) = run.steps.get(report.index) else { continue };
            let send = |event| {
                let _ = run.events.unbounded_send(event);
            };
            send(BackendEvent::StepStarted { name: name.clone() });
            if let (true, Some(timeout_ms)) = (report.timed_out, timeout_ms) {
                send(BackendEvent::StepTimedOut { name: name.clone(), timeout_ms: *timeout_ms });
            }
            send(BackendEvent::StepFinished {
                name: name.clone(),
                exit_code: report.exit_code,
                duration_ms: report.duration_ms,
            });
            if report.exit_code != 0 {
                failed = Some(name.clone());
            }
        }
        failed
    }
}

#[async_trait]
impl Backend for KubeBackend {
    fn name(&self) -> &'static str {
        "kube"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(self.relay.is_some())
    }

    async fn launch(
        &self,
        session: &SessionId,
        plan: &Plan,
        secrets: &dyn SecretStore,
        events: BackendEvents,
    ) -> Result<RunHandle, BackendError> {
        let relay = match (&self.relay, needs_proxy(plan)) {
            (Some(relay), true) => Some(relay),
            (None, true) => {
                return Err(BackendError::Unsupported(
                    "this session needs the egress proxy (allowlist egress, a binding or a repository to clone); \
                     on Kubernetes the proxy Deployment serves only sessions of a server it can reach: run it \
                     through `enclave serve --backend kube` in the cluster (`enclave run --server URL ...`)"
                        .to_owned(),
                ));
            }
            (_, false) => None,
        };
        let manifests = SessionManifests::build(plan, session, &self.config, CredentialSource::Resolve(secrets))?;
        if let Some(relay) = relay {
            // Offered before the pod can exist, so the proxy finds its grant.
            relay.register(session, plan, secrets, events.clone());
        }
        // Order matters: the pod must never exist without its NetworkPolicy, and the
        // Secret it mounts must exist before it.
        self.create(&manifests.network_policy, session).await?;
        if let Some(secret) = &manifests.clone_secret {
            self.create(secret, session).await?;
        }
        self.create(&manifests.job, session).await?;
        let job = manifests.job.name_any();
        let run = Arc::new(Run {
            job: job.clone(),
            has_clone: plan.clone_phase().is_some(),
            clone_secret: manifests.clone_secret.as_ref().map(|secret| secret.name_any()),
            steps: match plan.run_phase().map(|r| &r.program) {
                Some(enclave_core::Program::Steps { steps }) => {
                    steps.iter().map(|s| (s.name.clone(), s.timeout_ms)).collect()
                }
                _ => Vec::new(),
            },
            events,
            killed: watch::Sender::new(false),
        });
        self.runs.lock().unwrap_or_else(PoisonError::into_inner).insert(session.clone(), run);
        Ok(RunHandle { session: session.clone(), id: job })
    }

    async fn wait(&self, handle: &RunHandle) -> Result<Observation, BackendError> {
        let run = self.run(&handle.session)?;
        let pod_config = watcher::Config::default().labels(&labels::session_selector(&handle.session));
        let job_config = watcher::Config::default().fields(&format!("metadata.name={}", run.job));
        let mut pods = pin!(watcher(self.api::<Pod>(), pod_config).default_backoff());
        let mut jobs = pin!(watcher(self.api::<Job>(), job_config).default_backoff());
        let mut killed = run.killed.subscribe();
        let mut progress = Progress::default();
        let observation = loop {
            tokio::select! {
                Some(event) = pods.next() => {
                    match fold(event, &mut progress.pod_seen, &mut progress.pod_relisted) {
                        Step::Object(pod) => {
                            let ended = self.on_pod(&handle.session, &run, &pod, &mut progress).await;
                            if let Some(ended) = ended {
                                break ended;
                            }
                        }
                        Step::Deleted => {
                            // The Job controller deletes the pod when the Job's deadline
                            // passes; the pod watch may see that before the Job watch.
                            if !*run.killed.borrow() && self.job_deadline_passed(&run.job).await {
                                if !progress.deadline_reported {
                                    let _ = run.events.unbounded_send(BackendEvent::DeadlineReached);
                                }
                                break gone(true, "pod");
                            }
                            break gone(*run.killed.borrow(), "pod");
                        }
                        Step::Nothing => {}
                    }
                }
                Some(event) = jobs.next() => {
                    match fold(event, &mut progress.job_seen, &mut progress.job_relisted) {
                        Step::Object(job) => {
                            if job_deadline_exceeded(&job) && !progress.deadline_reported {
                                progress.deadline_reported = true;
                                let _ = run.events.unbounded_send(BackendEvent::DeadlineReached);
                            }
                        }
                        Step::Deleted => break gone(*run.killed.borrow(), "job"),
                        Step::Nothing => {}
                    }
                }
                // A kill (possibly ordered before this wait was first polled) ends a run
                // whose pod is already gone or never came; otherwise the pod watch sees
                // it go.
                true = killed.wait_for(|k| *k).map(|r| r.is_ok()), if !progress.kill_seen => {
                    progress.kill_seen = true;
                    // If the list fails, the pod watch still sees the pod go.
                    if self.session_pods(&handle.session).await.is_ok_and(|pods| pods.is_empty()) {
                        break gone(true, "pod");
                    }
                }
            }
        };
        if run.has_clone && !progress.clone_finished && matches!(observation.exit, ExitObservation::Exited { .. }) {
            // The pod ended without the clone ever reporting (it was not scheduled).
            let _ = run
                .events
                .unbounded_send(BackendEvent::CloneFinished { ok: false, detail: "clone did not run".into() });
        }
        // The run is over: the proxy gets nothing more for it, even while teardown waits
        // for the pod to go (its address may soon be another pod's).
        if let Some(relay) = &self.relay {
            relay.remove(&handle.session);
        }
        if let Some(task) = progress.log_task.take()
            && tokio::time::timeout(LOG_DRAIN, task).await.is_err()
        {
            tracing::warn!(session = %handle.session, "workload log still open after the pod ended");
        }
        Ok(observation)
    }

    async fn kill(&self, handle: &RunHandle) -> Result<(), BackendError> {
        let run = self.run(&handle.session)?;
        run.killed.send_replace(true);
        let jobs: Api<Job> = self.api();
        let params = DeleteParams::foreground().grace_period(0);
        match with_retries(|| jobs.delete(&run.job, &params)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(source) => {
                return Err(KubeError::Api { operation: "delete", object: format!("Job/{}", run.job), source }.into());
            }
        }
        // The Job's deletion takes its pod with it; deleting the pod as well, without a
        // grace period, stops the workload now rather than when the collector gets to it.
        let mut report = TeardownReport::default();
        self.delete_matching::<Pod>(&labels::session_selector(&handle.session), &params, &mut report).await?;
        Ok(())
    }

    async fn teardown(&self, session: &SessionId) -> Result<TeardownReport, BackendError> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner).remove(session);
        // The proxy gets nothing more for this session, and records nothing more.
        if let Some(relay) = &self.relay {
            relay.remove(session);
        }
        let selector = labels::session_selector(session);
        let mut report = TeardownReport::default();
        let now = DeleteParams::foreground().grace_period(0);
        self.delete_matching::<Job>(&selector, &now, &mut report).await?;
        self.delete_matching::<Pod>(&selector, &now, &mut report).await?;
        self.delete_matching::<Secret>(&selector, &DeleteParams::default(), &mut report).await?;
        // The NetworkPolicy goes last, and only once no pod of the session is left:
        // a terminating pod must stay confined.
        let mut polls = 0;
        while !self.session_pods(session).await?.is_empty() {
            polls += 1;
            if polls >= POD_GONE_POLLS {
                report.failed.push(format!(
                    "networkpolicy:{}: kept while the session pod terminates; the orphan reaper removes it",
                    crate::names::Names::of(session).network_policy
                ));
                return Ok(report);
            }
            tokio::time::sleep(POD_GONE_INTERVAL).await;
        }
        self.delete_matching::<NetworkPolicy>(&selector, &DeleteParams::default(), &mut report).await?;
        Ok(report)
    }

    async fn reap_orphans(&self, live: &[SessionId]) -> Result<Vec<SessionId>, BackendError> {
        let mut found = BTreeSet::new();
        self.sessions_with::<Job>(&mut found).await?;
        self.sessions_with::<Pod>(&mut found).await?;
        self.sessions_with::<Secret>(&mut found).await?;
        self.sessions_with::<NetworkPolicy>(&mut found).await?;
        let mut reaped = Vec::new();
        for id in found {
            let Ok(session) = SessionId::new(id) else { continue };
            if live.contains(&session) {
                continue;
            }
            self.teardown(&session).await?;
            reaped.push(session);
        }
        Ok(reaped)
    }
}
