//! A fake Kubernetes API server inside the test process: a tower service that kube's
//! `Client` talks to directly (no socket at all). It keeps objects in memory, serves
//! create/get/list/delete, watches replayed from a resource-version log, pod logs, and
//! plays a scripted kubelet and Job controller for each Job created. Tests inject API
//! failures, drop watches, and read back every request.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test support: a broken fake fails the test")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::channel::mpsc;
use http_body_util::{BodyExt as _, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};
use tokio::sync::Notify;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How the scripted kubelet plays a session pod.
#[derive(Debug, Clone)]
pub enum PodScript {
    /// The workload exits with this code.
    Exit(i32),
    /// The kernel OOM-kills the workload.
    OomKilled,
    /// The kubelet evicts the pod for passing its emptyDir size limit.
    EvictedForDisk,
    /// The Job's activeDeadlineSeconds passes: the controller fails the Job and
    /// deletes the pod.
    DeadlineExceeded,
    /// The pod vanishes (node lost, pod garbage-collected).
    Lost,
    /// The workload runs until deleted.
    RunsUntilKilled,
    /// The workload runs until the test calls `release`, then exits with this code.
    RunsUntilReleased(i32),
    /// The workload exits with this code and termination message (the step driver's
    /// reports).
    ExitWithMessage(i32, String),
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Resource kind (plural, e.g. `jobs`).
    pub kind: String,
    /// Object name, if any.
    pub name: Option<String>,
    /// Whether it was a watch.
    pub watch: bool,
    /// Status code returned.
    pub status: u16,
}

struct Event {
    rv: u64,
    kind: String,
    kind_type: &'static str,
    object: Value,
}

struct Watch {
    kind: String,
    labels: Vec<(String, String)>,
    name: Option<String>,
    sender: mpsc::UnboundedSender<Result<http_body::Frame<Bytes>, Infallible>>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<(String, String), Value>,
    rv: u64,
    log: Vec<Event>,
    watches: Vec<Watch>,
    faults: Vec<(String, String, u16)>,
    calls: Vec<Call>,
    pod_logs: BTreeMap<String, Vec<u8>>,
    script: Option<(PodScript, Option<i32>, Vec<u8>)>,
    /// The address the kubelet gives session pods.
    pod_ip: Option<String>,
    /// Called with the session id when a clone succeeds, just before the clone
    /// container exits: where the clone step tells the egress proxy it is done.
    clone_done: Option<CloneDone>,
    /// Whether the clone container stays running until `finish_clone`.
    hold_clone: bool,
    /// The held clone's exit code.
    held_clone_exit: Option<i32>,
    /// Whether the workload's start is reported only on `report_workload` (an API that
    /// lags behind the container).
    hold_workload_status: bool,
    /// Runs the clone init container for real instead of playing it.
    clone_runner: Option<CloneRunner>,
}

type CloneDone = Arc<dyn Fn(&str) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// What a kubelet is given to run a pod's init container: the pod as stored (its spec as
/// the backend submitted it) and every Secret of the namespace at that moment.
pub struct InitRun {
    /// The pod as stored.
    pub pod: Value,
    /// Every Secret of the namespace when the init container starts.
    pub secrets: Vec<Value>,
}

/// Runs an init container; returns its exit code. Dropped (so its process is killed) when
/// the pod is deleted while it runs.
type CloneRunner = Arc<dyn Fn(InitRun) -> futures::future::BoxFuture<'static, i32> + Send + Sync>;

/// The fake API server. Cheap to clone; all clones share one cluster.
#[derive(Clone, Default)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
    release: Arc<Notify>,
    running: Arc<Notify>,
    clone_running: Arc<Notify>,
    clone_release: Arc<Notify>,
    workload_status: Arc<Notify>,
}

fn selector_pairs(selector: &str) -> Vec<(String, String)> {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn matches(object: &Value, labels: &[(String, String)], name: Option<&str>) -> bool {
    let have = &object["metadata"]["labels"];
    labels.iter().all(|(k, v)| have[k].as_str() == Some(v.as_str()))
        && name.is_none_or(|n| object["metadata"]["name"].as_str() == Some(n))
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("fake: {reason}"), "reason": reason, "code": code})
}

fn full(bytes: Vec<u8>) -> Body {
    http_body_util::Full::new(Bytes::from(bytes)).map_err(|e| match e {}).boxed_unsync()
}

fn respond(code: u16, body: &Value) -> http::Response<Body> {
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap_or_else(|_| http::Response::new(full(Vec::new())))
}

fn api_version(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "jobs" => ("batch/v1", "Job"),
        "networkpolicies" => ("networking.k8s.io/v1", "NetworkPolicy"),
        "secrets" => ("v1", "Secret"),
        _ => ("v1", "Pod"),
    }
}

impl FakeKube {
    /// A fake cluster whose next Job plays `script`, with `clone_exit` for its clone
    /// container (if the pod has one) and `logs` as the workload's output.
    pub fn new(script: PodScript, clone_exit: Option<i32>, logs: Vec<u8>) -> Self {
        let fake = Self::default();
        fake.lock().script = Some((script, clone_exit, logs));
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kube client talking to this fake.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(request).await) }
        });
        kube::Client::new(service, "enclave-sessions")
    }

    /// The next `count` requests of `method` on `kind` fail with `code`.
    pub fn fail_next(&self, method: &str, kind: &str, code: u16, count: usize) {
        let mut state = self.lock();
        for _ in 0..count {
            state.faults.push((method.to_owned(), kind.to_owned(), code));
        }
    }

    /// Ends every open watch, as an API server restart or a load balancer would.
    pub fn drop_watches(&self) {
        self.lock().watches.clear();
    }

    /// Session pods get this address (from the moment they exist, as a CNI assigns it
    /// before init containers run).
    pub fn set_pod_ip(&self, ip: &str) {
        self.lock().pod_ip = Some(ip.to_owned());
    }

    /// Runs `hook` with the session id when a clone succeeds, before its container exits.
    pub fn on_clone_done(
        &self,
        hook: impl Fn(&str) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static,
    ) {
        self.lock().clone_done = Some(Arc::new(hook));
    }

    /// Runs each session pod's clone init container with `runner` (a real process), its
    /// exit code becoming the container's. The clone then reports its end itself, as
    /// the real one does; `on_clone_done` is not called.
    pub fn run_clones_with(
        &self,
        runner: impl Fn(InitRun) -> futures::future::BoxFuture<'static, i32> + Send + Sync + 'static,
    ) {
        self.lock().clone_runner = Some(Arc::new(runner));
    }

    /// Whether the pod `name` exists.
    fn pod_exists(&self, name: &str) -> bool {
        self.lock().objects.contains_key(&("pods".to_owned(), name.to_owned()))
    }

    /// Keeps the clone container running until `finish_clone`.
    pub fn hold_clone(&self) {
        self.lock().hold_clone = true;
    }

    /// Completes once a held clone container is running.
    pub async fn clone_running(&self) {
        self.clone_running.notified().await;
    }

    /// Lets a held clone container exit with `code`.
    pub fn finish_clone(&self, code: i32) {
        self.lock().held_clone_exit = Some(code);
        self.clone_release.notify_one();
    }

    /// Reports the workload's start only when `report_workload` is called.
    pub fn hold_workload_status(&self) {
        self.lock().hold_workload_status = true;
    }

    /// Lets the API report a held workload start.
    pub fn report_workload(&self) {
        self.workload_status.notify_one();
    }

    /// Gives every session pod this address now (a pod whose address the API reports
    /// late).
    pub fn assign_pod_ip(&self, ip: &str) {
        let mut state = self.lock();
        state.pod_ip = Some(ip.to_owned());
        let pods: Vec<Value> = state.objects.iter().filter(|((k, _), _)| k == "pods").map(|(_, o)| o.clone()).collect();
        for mut pod in pods {
            pod["status"]["podIP"] = json!(ip);
            pod["status"]["podIPs"] = json!([{"ip": ip}]);
            state.put("pods", pod, "MODIFIED");
        }
    }

    /// Lets a `RunsUntilReleased` workload exit.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// Completes once a session pod's workload is running.
    pub async fn running(&self) {
        self.running.notified().await;
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Names of the objects of `kind` that exist now.
    pub fn names(&self, kind: &str) -> Vec<String> {
        self.lock().objects.keys().filter(|(k, _)| k == kind).map(|(_, n)| n.clone()).collect()
    }

    /// Stores an object as if another client had created it.
    pub fn insert(&self, kind: &str, object: Value) {
        let mut state = self.lock();
        state.put(kind, object, "ADDED");
    }

    /// The number of open watches.
    pub fn open_watches(&self) -> usize {
        let mut state = self.lock();
        state.watches.retain(|w| !w.sender.is_closed());
        state.watches.len()
    }

    /// Serves this fake over plain HTTP on a loopback port, for a process that reads a
    /// kubeconfig (`server: http://ADDR`).
    pub async fn serve_tcp(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake API");
        let address = listener.local_addr().expect("address");
        let fake = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let fake = fake.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let fake = fake.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            let request = http::Request::from_parts(parts, kube::client::Body::from(bytes));
                            Ok::<_, Infallible>(fake.handle(request).await)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        address
    }

    async fn handle(&self, request: http::Request<kube::client::Body>) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let path: Vec<String> = parts.uri.path().trim_matches('/').split('/').map(str::to_owned).collect();
        let query: BTreeMap<String, String> = parts.uri.query().map(url_pairs).unwrap_or_default();
        // .../namespaces/{ns}/{kind}[/{name}[/log]]
        let Some(at) = path.iter().position(|p| p == "namespaces") else {
            return respond(404, &status(404, "NotFound"));
        };
        let kind = path.get(at + 2).cloned().unwrap_or_default();
        let name = path.get(at + 3).cloned();
        let sub = path.get(at + 4).cloned();
        let method = parts.method.as_str().to_owned();
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let mut state = self.lock();
        let fault = state.faults.iter().position(|(m, k, _)| *m == method && *k == kind);
        let record = |state: &mut State, code: u16| {
            state.calls.push(Call {
                method: method.clone(),
                kind: kind.clone(),
                name: name.clone(),
                watch,
                status: code,
            });
        };
        if let Some(index) = fault {
            let (_, _, code) = state.faults.remove(index);
            record(&mut state, code);
            let reason = match code {
                409 => "Conflict",
                429 => "TooManyRequests",
                _ => "InternalError",
            };
            return respond(code, &status(code, reason));
        }
        let labels = selector_pairs(query.get("labelSelector").map(String::as_str).unwrap_or(""));
        let field_name = query.get("fieldSelector").and_then(|f| f.strip_prefix("metadata.name=")).map(str::to_owned);
        match (method.as_str(), name.clone(), sub.as_deref()) {
            ("GET", Some(pod), Some("log")) => {
                record(&mut state, 200);
                let logs = state.pod_logs.get(&pod).cloned().unwrap_or_default();
                http::Response::new(full(logs))
            }
            ("GET", None, _) if watch => {
                record(&mut state, 200);
                let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                let (sender, receiver) = mpsc::unbounded();
                for event in state.log.iter().filter(|e| e.rv > since && e.kind == kind) {
                    if matches(&event.object, &labels, field_name.as_deref()) {
                        let line = watch_line(event.kind_type, &event.object);
                        let _ = sender.unbounded_send(Ok(http_body::Frame::data(line)));
                    }
                }
                state.watches.push(Watch { kind: kind.clone(), labels, name: field_name, sender });
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(StreamBody::new(receiver).boxed_unsync())
                    .unwrap_or_else(|_| http::Response::new(full(Vec::new())))
            }
            ("GET", None, _) => {
                record(&mut state, 200);
                let (api_version, object_kind) = api_version(&kind);
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|((k, _), o)| *k == kind && matches(o, &labels, field_name.as_deref()))
                    .map(|(_, o)| o.clone())
                    .collect();
                respond(
                    200,
                    &json!({"apiVersion": api_version, "kind": format!("{object_kind}List"),
                    "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
                )
            }
            ("GET", Some(name), None) => match state.objects.get(&(kind.clone(), name.clone())).cloned() {
                Some(object) => {
                    record(&mut state, 200);
                    respond(200, &object)
                }
                None => {
                    record(&mut state, 404);
                    respond(404, &status(404, "NotFound"))
                }
            },
            ("POST", None, _) => {
                let object: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                if state.objects.contains_key(&(kind.clone(), name.clone())) {
                    state.calls.push(Call {
                        method: method.clone(),
                        kind: kind.clone(),
                        name: Some(name),
                        watch,
                        status: 409,
                    });
                    return respond(409, &status(409, "AlreadyExists"));
                }
                state.calls.push(Call {
                    method: method.clone(),
                    kind: kind.clone(),
                    name: Some(name),
                    watch,
                    status: 201,
                });
                let stored = state.put(&kind, object, "ADDED");
                if kind == "jobs" {
                    drop(state);
                    self.start_kubelet(stored.clone());
                }
                respond(201, &stored)
            }
            ("DELETE", Some(name), None) => {
                let Some(object) = state.remove(&kind, &name) else {
                    record(&mut state, 404);
                    return respond(404, &status(404, "NotFound"));
                };
                record(&mut state, 200);
                if kind == "jobs" {
                    // Foreground propagation: the Job's pods go with it.
                    let pods: Vec<String> = state
                        .objects
                        .iter()
                        .filter(|((k, _), o)| {
                            k == "pods" && o["metadata"]["labels"]["job-name"].as_str() == Some(&name)
                        })
                        .map(|((_, n), _)| n.clone())
                        .collect();
                    for pod in pods {
                        state.remove("pods", &pod);
                    }
                }
                respond(200, &object)
            }
            _ => {
                record(&mut state, 405);
                respond(405, &status(405, "MethodNotAllowed"))
            }
        }
    }

    /// The scripted kubelet and Job controller for one Job.
    fn start_kubelet(&self, job: Value) {
        let fake = self.clone();
        tokio::spawn(async move {
            let Some((script, clone_exit, logs)) = fake.lock().script.clone() else { return };
            let job_name = job["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let pod_name = format!("{job_name}-fk8s1");
            let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
            labels["job-name"] = json!(job_name);
            let has_clone = job["spec"]["template"]["spec"]["initContainers"].is_array();
            let session = labels["enclave.dev/session"].as_str().unwrap_or_default().to_owned();
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": "enclave-sessions", "labels": labels},
                "spec": job["spec"]["template"]["spec"].clone(),
                "status": {"phase": "Pending"}});
            let (pod_ip, clone_done, hold_clone, clone_runner) = {
                let state = fake.lock();
                (state.pod_ip.clone(), state.clone_done.clone(), state.hold_clone, state.clone_runner.clone())
            };
            if let Some(ip) = pod_ip {
                pod["status"]["podIP"] = json!(ip);
                pod["status"]["podIPs"] = json!([{"ip": ip}]);
            }
            fake.lock().put("pods", pod.clone(), "ADDED");
            tokio::task::yield_now().await;
            if has_clone {
                let code = if let Some(runner) = clone_runner {
                    pod["status"]["initContainerStatuses"] = json!([container("clone", json!({"running": {}}))]);
                    pod["status"]["containerStatuses"] =
                        json!([container("workload", json!({"waiting": {"reason": "PodInitializing"}}))]);
                    fake.update_pod(&pod);
                    fake.clone_running.notify_one();
                    let secrets: Vec<Value> = fake
                        .lock()
                        .objects
                        .iter()
                        .filter(|((k, _), _)| k == "secrets")
                        .map(|(_, o)| o.clone())
                        .collect();
                    let run = runner(InitRun { pod: pod.clone(), secrets });
                    // The kubelet kills the container with its pod.
                    let gone = {
                        let (fake, name) = (fake.clone(), pod_name.clone());
                        async move {
                            while fake.pod_exists(&name) {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            }
                        }
                    };
                    tokio::select! {
                        code = run => code,
                        () = gone => return,
                    }
                } else if hold_clone {
                    pod["status"]["initContainerStatuses"] = json!([container("clone", json!({"running": {}}))]);
                    pod["status"]["containerStatuses"] =
                        json!([container("workload", json!({"waiting": {"reason": "PodInitializing"}}))]);
                    fake.update_pod(&pod);
                    fake.clone_running.notify_one();
                    fake.clone_release.notified().await;
                    fake.lock().held_clone_exit.unwrap_or(0)
                } else {
                    clone_exit.unwrap_or(0)
                };
                let ran_for_real = fake.lock().clone_runner.is_some();
                if let (0, Some(hook), false) = (code, &clone_done, ran_for_real) {
                    hook(&session).await;
                }
                pod["status"]["initContainerStatuses"] = json!([container(
                    "clone",
                    json!({"terminated": {"exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" }}})
                )]);
                if code != 0 {
                    pod["status"]["phase"] = json!("Failed");
                    fake.update_pod(&pod);
                    return;
                }
                fake.update_pod(&pod);
                tokio::task::yield_now().await;
            }
            fake.lock().pod_logs.insert(pod_name.clone(), logs);
            if fake.lock().hold_workload_status {
                fake.workload_status.notified().await;
            }
            pod["status"]["phase"] = json!("Running");
            pod["status"]["containerStatuses"] = json!([container("workload", json!({"running": {}}))]);
            if !fake.update_pod(&pod) {
                return;
            }
            fake.running.notify_one();
            tokio::task::yield_now().await;
            let terminated = |code: i32, reason: &str| {
                json!([container("workload", json!({"terminated": {"exitCode": code, "reason": reason}}))])
            };
            match script {
                PodScript::Exit(code) => {
                    pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
                    pod["status"]["containerStatuses"] =
                        terminated(code, if code == 0 { "Completed" } else { "Error" });
                    fake.update_pod(&pod);
                }
                PodScript::ExitWithMessage(code, message) => {
                    pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
                    pod["status"]["containerStatuses"] = json!([container(
                        "workload",
                        json!({"terminated": {
                        "exitCode": code, "reason": "Error", "message": message}})
                    )]);
                    fake.update_pod(&pod);
                }
                PodScript::RunsUntilReleased(code) => {
                    fake.release.notified().await;
                    pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
                    pod["status"]["containerStatuses"] =
                        terminated(code, if code == 0 { "Completed" } else { "Error" });
                    fake.update_pod(&pod);
                }
                PodScript::OomKilled => {
                    pod["status"]["phase"] = json!("Failed");
                    pod["status"]["containerStatuses"] = terminated(137, "OOMKilled");
                    fake.update_pod(&pod);
                }
                PodScript::EvictedForDisk => {
                    pod["status"]["phase"] = json!("Failed");
                    pod["status"]["reason"] = json!("Evicted");
                    pod["status"]["message"] =
                        json!("Usage of EmptyDir volume \"workspace\" exceeds the limit \"128Mi\".");
                    pod["status"]["containerStatuses"] = terminated(137, "Error");
                    fake.update_pod(&pod);
                }
                PodScript::DeadlineExceeded => {
                    let mut state = fake.lock();
                    if let Some(mut job) = state.objects.get(&("jobs".to_owned(), job_name.clone())).cloned() {
                        job["status"] = json!({"conditions": [{"type": "Failed", "status": "True",
                            "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]});
                        state.put("jobs", job, "MODIFIED");
                        state.remove("pods", &pod_name);
                    }
                }
                PodScript::Lost => {
                    fake.lock().remove("pods", &pod_name);
                }
                PodScript::RunsUntilKilled => {}
            }
        });
    }

    /// Stores a pod status update unless the pod was deleted meanwhile.
    fn update_pod(&self, pod: &Value) -> bool {
        let mut state = self.lock();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        if !state.objects.contains_key(&("pods".to_owned(), name)) {
            return false;
        }
        let mut pod = pod.clone();
        // The address, once assigned, stays in every later status.
        if let Some(ip) = state.pod_ip.clone() {
            pod["status"]["podIP"] = json!(ip);
            pod["status"]["podIPs"] = json!([{"ip": ip}]);
        }
        state.put("pods", pod, "MODIFIED");
        true
    }
}

fn container(name: &str, state: Value) -> Value {
    json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": state})
}

fn watch_line(kind_type: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind_type, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn url_pairs(query: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

impl State {
    fn put(&mut self, kind: &str, mut object: Value, kind_type: &'static str) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let (api_version, object_kind) = api_version(kind);
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(object_kind);
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        self.objects.insert((kind.to_owned(), name), object.clone());
        self.publish(kind, kind_type, &object);
        object
    }

    fn remove(&mut self, kind: &str, name: &str) -> Option<Value> {
        let mut object = self.objects.remove(&(kind.to_owned(), name.to_owned()))?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.publish(kind, "DELETED", &object);
        Some(object)
    }

    fn publish(&mut self, kind: &str, kind_type: &'static str, object: &Value) {
        self.log.push(Event { rv: self.rv, kind: kind.to_owned(), kind_type, object: object.clone() });
        self.watches.retain(|w| {
            if w.kind != kind || !matches(object, &w.labels, w.name.as_deref()) {
                return !w.sender.is_closed();
            }
            w.sender.unbounded_send(Ok(http_body::Frame::data(watch_line(kind_type, object)))).is_ok()
        });
    }
}
