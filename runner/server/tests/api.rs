//! The real server on a loopback port, driven over HTTP: create/get/list, SSE with
//! resume, cancel, tenant isolation on every session route, authentication failures,
//! malformed and oversized bodies, tenant ceilings and rate limits, restart
//! reconciliation, and a canary secret that must appear in no response and no stored
//! byte.
//!
//! Each server runs in its own tokio runtime, so a test can kill it mid-session the way
//! a crash would (the runtime is dropped with its tasks; nothing is torn down).
//! Sessions that must stay running use the simulator at wall-clock pace with a long
//! modelled duration; nothing here asserts on elapsed time.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use enclave_core::{
    Backend, BackendError, BackendEvent, BackendEvents, Capabilities, Observation, Plan, RunHandle, SecretStore,
    SessionId, Stream, TeardownReport,
};
use enclave_server::{App, Credentials, Reconciled, ServerConfig};
use enclave_sim::SimBackend;
use enclave_store::{SecretKey, SqliteStore, Store, StoreOptions};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tests-0123456789";

const HELLO: &str = include_str!("../../../examples/sessions/hello.yaml");

/// A spec that stays running (10 modelled minutes at wall-clock pace) until cancelled.
const LONG: &str = include_str!("fixtures/long-running.yaml");

/// One server process: its own runtime, its data directory, its backend.
struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    base: String,
    reconciled: Reconciled,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Server {
    async fn start(data: &Path, backend: Arc<dyn Backend>, config: ServerConfig, key: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel::<()>();
        let db = data.join("enclave.db");
        let key = SecretKey::parse(key).unwrap();
        runtime.spawn(async move {
            let options = StoreOptions { secret_key: Some(key), ..StoreOptions::default() };
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db, options).await.unwrap());
            let app = App::new(config, store, backend, Credentials::admin(ADMIN)).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tx.send((addr, app.reconciled().clone())).unwrap();
            let shutdown = async move {
                // A dropped sender (the test ended) is not a stop request.
                if stop_rx.await.is_err() {
                    futures::future::pending::<()>().await;
                }
            };
            app.serve(listener, shutdown).await.unwrap();
            let _ = stopped_tx.send(());
        });
        let (addr, reconciled) = rx.await.expect("server started");
        Self {
            runtime: Some(runtime),
            base: format!("http://{addr}"),
            reconciled,
            stop: Some(stop),
            stopped: Some(stopped),
        }
    }

    /// Stops the server the orderly way and waits until `serve` returned.
    async fn stop(&mut self) {
        self.stop.take().expect("running").send(()).unwrap();
        self.stopped.take().expect("running").await.expect("serve returned");
    }

    /// Stops the server the way a crash would: tasks dropped mid-flight, no teardown.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test fixture: data directory, key, backend, server, HTTP client.
struct Fixture {
    dir: tempfile::TempDir,
    key: String,
    backend: Arc<dyn Backend>,
    server: Server,
    http: reqwest::Client,
}

impl Fixture {
    async fn new(config: ServerConfig) -> Self {
        Self::with_backend(config, Arc::new(SimBackend::new())).await
    }

    async fn real_time(config: ServerConfig) -> Self {
        Self::with_backend(config, Arc::new(SimBackend::real_time())).await
    }

    async fn with_backend(config: ServerConfig, backend: Arc<dyn Backend>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate_hex().unwrap().to_string();
        let server = Server::start(dir.path(), backend.clone(), config, &key).await;
        Self { dir, key, backend, server, http: reqwest::Client::new() }
    }

    async fn restart(&mut self, config: ServerConfig) {
        self.server.kill();
        self.server = Server::start(self.dir.path(), self.backend.clone(), config, &self.key).await;
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    async fn tenant(&self, name: &str, limits: Option<Value>) -> String {
        let mut body = json!({ "name": name });
        if let Some(limits) = limits {
            body["limits"] = limits;
        }
        let response =
            self.http.post(self.url("/v1/admin/tenants")).bearer_auth(ADMIN).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.unwrap();
        created["token"].as_str().unwrap().to_owned()
    }

    async fn create(&self, token: &str, spec: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/sessions"))
            .bearer_auth(token)
            .header("content-type", "application/yaml")
            .body(spec.to_owned())
            .send()
            .await
            .unwrap()
    }

    async fn create_ok(&self, token: &str, spec: &str) -> Value {
        let response = self.create(token, spec).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    async fn get_json(&self, token: &str, path: &str) -> Value {
        let response = self.get(token, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    /// Every SSE event of a session from `last_id` on, until the stream ends.
    async fn events(&self, token: &str, id: &str, last_id: Option<&str>) -> Vec<eventsource_stream::Event> {
        let mut request = self.http.get(self.url(&format!("/v1/sessions/{id}/events"))).bearer_auth(token);
        if let Some(last) = last_id {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = response.bytes_stream().eventsource();
        let mut out = Vec::new();
        while let Some(event) = stream.next().await {
            out.push(event.unwrap());
        }
        out
    }

    /// Waits (by following the event stream, not by timing) until the session runs.
    async fn wait_running(&self, token: &str, id: &str) {
        let response =
            self.http.get(self.url(&format!("/v1/sessions/{id}/events"))).bearer_auth(token).send().await.unwrap();
        let mut stream = response.bytes_stream().eventsource();
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            let body: Value = serde_json::from_str(&event.data).unwrap();
            if body["type"] == "status" && body["status"]["state"] == "running" {
                return;
            }
            assert_ne!(body["type"], "finished", "the session ended before it was seen running");
        }
        panic!("the stream ended before the session ran");
    }

    async fn wait_finished(&self, token: &str, id: &str) -> Value {
        let events = self.events(token, id, None).await;
        let last = events.last().expect("events");
        assert_eq!(last.event, "finished");
        let body: Value = serde_json::from_str(&last.data).unwrap();
        body["result"].clone()
    }

    fn store_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path()).unwrap().map(|e| e.unwrap().path()).collect()
    }
}

fn config() -> ServerConfig {
    ServerConfig::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_and_list_with_cursor_and_status_filter() {
    let f = Fixture::new(config()).await;
    let token = f.tenant("acme", None).await;
    let created = f.create_ok(&token, HELLO).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ses-"));
    assert_eq!(created["name"], "hello");
    assert!(created["planDigest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(created["links"]["events"], format!("/v1/sessions/{id}/events"));

    let result = f.wait_finished(&token, &id).await;
    assert_eq!(result["status"]["state"], "succeeded");
    assert_eq!(result["simulated"], true);
    let session = f.get_json(&token, &format!("/v1/sessions/{id}")).await;
    assert_eq!(session["status"]["state"], "succeeded");
    assert_eq!(session["result"]["auditDigest"], result["auditDigest"]);

    // JSON bodies are accepted too.
    let as_json = json!({
        "apiVersion": "enclave.dev/v1", "kind": "Session", "metadata": { "name": "json-one" },
        "spec": { "command": ["false"], "simulate": { "exitCode": 1 } }
    });
    let response = f
        .http
        .post(f.url("/v1/sessions"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(as_json.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let failing: Value = response.json().await.unwrap();
    let failing_id = failing["id"].as_str().unwrap().to_owned();
    assert_eq!(f.wait_finished(&token, &failing_id).await["status"]["state"], "failed");
    for _ in 0..3 {
        let extra = f.create_ok(&token, HELLO).await;
        f.wait_finished(&token, extra["id"].as_str().unwrap()).await;
    }

    // Five sessions, pages of two, newest first, each once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sessions?limit=2&cursor={c}"),
            None => "/v1/sessions?limit=2".to_owned(),
        };
        let page = f.get_json(&token, &path).await;
        seen.extend(page["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    assert_eq!(seen.last(), Some(&id));

    let failed = f.get_json(&token, "/v1/sessions?status=failed").await;
    let failed_ids: Vec<&str> =
        failed["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(failed_ids, [failing_id.as_str()]);
    for bad in [
        "/v1/sessions?status=sleeping",
        "/v1/sessions?limit=0",
        "/v1/sessions?limit=100000",
        "/v1/sessions?cursor=NOT%20AN%20ID",
        "/v1/sessions?colour=red",
    ] {
        let response = f.get(&token, bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "bad_request", "{bad}");
    }

    // Logs, audit and its verification, artifacts, metrics.
    let logs = f.get_json(&token, &format!("/v1/sessions/{id}/logs")).await;
    assert_eq!(logs["entries"][0]["type"], "log_volume");
    let audit = f.get(&token, &format!("/v1/sessions/{id}/audit")).await;
    assert_eq!(audit.headers()["content-type"], "application/jsonl");
    let audit = audit.text().await.unwrap();
    let report = enclave_core::verify_jsonl(audit.as_bytes());
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.digest.as_deref(), result["auditDigest"].as_str());
    let verify = f.get_json(&token, &format!("/v1/sessions/{id}/audit/verify")).await;
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["matchesResult"], true);
    let artifacts = f.get_json(&token, &format!("/v1/sessions/{id}/artifacts")).await;
    assert_eq!(artifacts["files"], json!([]));
    let metrics = f.http.get(f.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("enclave_sessions{state=\"succeeded\",kill_reason=\"\"} 4"), "{metrics}");
    assert!(metrics.contains("enclave_sessions{state=\"failed\",kill_reason=\"\"} 1"), "{metrics}");
    assert!(metrics.contains("enclave_session_duration_seconds_count 5"), "{metrics}");
    assert!(metrics.contains("enclave_sessions_created_total 5"), "{metrics}");
    assert_eq!(f.http.get(f.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(f.http.get(f.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_ends_with_the_result_and_resumes_after_last_event_id() {
    let f = Fixture::new(config()).await;
    let token = f.tenant("acme", None).await;
    let spec = include_str!("../../../examples/sessions/allowlist-python-deps.yaml");
    let id = f.create_ok(&token, spec).await["id"].as_str().unwrap().to_owned();
    let all = f.events(&token, &id, None).await;
    assert!(all.len() > 4, "{all:?}");
    let ids: Vec<u64> = all.iter().map(|e| e.id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert_eq!(all.last().unwrap().event, "finished");
    let result: Value = serde_json::from_str(&all.last().unwrap().data).unwrap();
    let expected = spec.lines().next().unwrap().trim_start_matches("# expect: ");
    assert_eq!(result["result"]["status"]["state"], expected);
    // Its egress decisions are counted: 4 allowed (clone and three rules), 2 denied.
    let metrics = f.http.get(f.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("enclave_egress_decisions_total{decision=\"allow\"} 4"), "{metrics}");
    assert!(metrics.contains("enclave_egress_decisions_total{decision=\"deny\"} 2"), "{metrics}");
    for (event, data) in all.iter().map(|e| (&e.event, serde_json::from_str::<Value>(&e.data).unwrap())) {
        assert_eq!(data["type"], event.as_str());
    }

    // Resume from the middle: exactly the rest, in order.
    let middle = &all[all.len() / 2];
    let rest = f.events(&token, &id, Some(&middle.id)).await;
    assert_eq!(
        rest.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        all[all.len() / 2 + 1..].iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );
    // Resume after the end: nothing.
    assert!(f.events(&token, &id, Some(&all.last().unwrap().id)).await.is_empty());
    let bad = f
        .http
        .get(f.url(&format!("/v1/sessions/{id}/events")))
        .bearer_auth(&token)
        .header("last-event-id", "not-a-number")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_streams_resumes_and_is_cancelled_with_an_audited_result() {
    let f = Fixture::real_time(config()).await;
    let token = f.tenant("acme", None).await;
    let id = f.create_ok(&token, LONG).await["id"].as_str().unwrap().to_owned();
    f.wait_running(&token, &id).await;
    let session = f.get_json(&token, &format!("/v1/sessions/{id}")).await;
    assert_eq!(session["status"]["state"], "running");
    assert!(session.get("result").is_none());

    // A subscriber that joined mid-run, resuming after event 0.
    let follower = {
        let (http, url, token) = (f.http.clone(), f.url(&format!("/v1/sessions/{id}/events")), token.clone());
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(token).header("last-event-id", "0").send().await.unwrap();
            let mut stream = response.bytes_stream().eventsource();
            let mut events = Vec::new();
            while let Some(event) = stream.next().await {
                events.push(event.unwrap());
            }
            events
        })
    };
    let cancel = f.http.post(f.url(&format!("/v1/sessions/{id}/cancel"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    let events = follower.await.unwrap();
    assert_eq!(events.first().unwrap().id, "1", "resumed right after event 0");
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["type"], "finished");
    assert_eq!(last["result"]["status"]["state"], "killed");
    assert_eq!(last["result"]["killReason"], "cancelled");

    let session = f.get_json(&token, &format!("/v1/sessions/{id}")).await;
    assert_eq!(session["status"]["reason"], "cancelled");
    let verify = f.get_json(&token, &format!("/v1/sessions/{id}/audit/verify")).await;
    assert_eq!(verify["ok"], true, "{verify}");
    let audit = f.get(&token, &format!("/v1/sessions/{id}/audit")).await.text().await.unwrap();
    assert!(audit.contains("\"type\":\"kill\"") && audit.contains("cancelled by the user"), "{audit}");
    assert!(audit.contains("\"type\":\"teardown\""));
    // Cancelling an ended session is a conflict, not a success.
    let again = f.http.post(f.url(&format!("/v1/sessions/{id}/cancel"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_session_is_not_found_on_every_route() {
    let f = Fixture::new(config()).await;
    let owner = f.tenant("owner", None).await;
    let intruder = f.tenant("intruder", None).await;
    let id = f.create_ok(&owner, HELLO).await["id"].as_str().unwrap().to_owned();
    f.wait_finished(&owner, &id).await;
    let get_routes = ["", "/events", "/logs", "/audit", "/audit/verify", "/artifacts"];
    for route in get_routes {
        let path = format!("/v1/sessions/{id}{route}");
        assert_eq!(f.get(&owner, &path).await.status(), StatusCode::OK, "owner {route}");
        let response = f.get(&intruder, &path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "intruder {route}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({ "code": "not_found", "message": "no such session" }), "{route}");
        // The same answer as for an id that does not exist at all.
        let missing = f.get(&intruder, &format!("/v1/sessions/ses-0000{route}")).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.json::<Value>().await.unwrap(), body);
    }
    let cancel = f.http.post(f.url(&format!("/v1/sessions/{id}/cancel"))).bearer_auth(&intruder).send().await.unwrap();
    assert_eq!(cancel.status(), StatusCode::NOT_FOUND);
    let listed = f.get_json(&intruder, "/v1/sessions").await;
    assert_eq!(listed["sessions"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_invalid_and_expired_tokens_are_refused() {
    let f = Fixture::new(config()).await;
    let token = f.tenant("acme", None).await;
    // An expired token for the same tenant, issued straight into the store.
    let store = SqliteStore::open(&f.dir.path().join("enclave.db"), StoreOptions::default()).await.unwrap();
    let tenant = store.tenant_by_name("acme").await.unwrap().unwrap();
    let expired = store.issue_token(&tenant.id, Some(chrono_now() - 1_000)).await.unwrap();
    let mut tampered = token.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let cases: [(Option<String>, &str); 6] = [
        (None, "unauthenticated"),
        (Some("Bearer".to_owned()), "unauthenticated"),
        (Some(format!("Basic {token}")), "unauthenticated"),
        (Some("Bearer enc_0123456789abcdef_nope".to_owned()), "unauthenticated"),
        (Some(format!("Bearer {tampered}")), "unauthenticated"),
        (Some(format!("Bearer {}", expired.token.as_str())), "token_expired"),
    ];
    for path in ["/v1/sessions", "/v1/sessions/ses-x", "/v1/sessions/ses-x/events", "/v1/secrets"] {
        for (header, code) in &cases {
            let mut request = f.http.get(f.url(path));
            if let Some(value) = header {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path} {header:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], *code, "{path} {header:?}");
        }
    }
    let post = f.http.post(f.url("/v1/sessions")).body(HELLO).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED);
    // Admin routes: no token, a tenant token, the admin token.
    let admin = f.url("/v1/admin/tenants");
    assert_eq!(f.http.get(&admin).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(f.http.get(&admin).bearer_auth(&token).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(f.http.get(&admin).bearer_auth(ADMIN).send().await.unwrap().status(), StatusCode::OK);
    let duplicate = f.http.post(&admin).bearer_auth(ADMIN).json(&json!({ "name": "acme" })).send().await.unwrap();
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    let bad_name = f.http.post(&admin).bearer_auth(ADMIN).json(&json!({ "name": "Not Valid" })).send().await.unwrap();
    assert_eq!(bad_name.status(), StatusCode::BAD_REQUEST);
    let unknown_field =
        f.http.post(&admin).bearer_auth(ADMIN).json(&json!({ "name": "x", "root": true })).send().await.unwrap();
    assert_eq!(unknown_field.status(), StatusCode::BAD_REQUEST);
    // The admin token is not a tenant token.
    assert_eq!(f.get(ADMIN, "/v1/sessions").await.status(), StatusCode::UNAUTHORIZED);
}

fn chrono_now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_invalid_and_oversized_bodies_get_clear_errors() {
    let mut cfg = config();
    cfg.limits.max_body_bytes = 64 * 1024;
    cfg.policy.max_deadline_ms = Some(60 * 60_000);
    let f = Fixture::new(cfg).await;
    let token = f.tenant("acme", None).await;

    let unknown_key = HELLO.replace("  command:", "  comand:");
    let response = f.create(&token, &unknown_key).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_spec");
    let line = HELLO.lines().position(|l| l.starts_with("  command:")).unwrap() as u64 + 1;
    assert_eq!(body["diagnostics"][0]["line"], line, "{body}");
    assert_eq!(body["diagnostics"][0]["column"], 3, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with(&format!("invalid spec: {line}:3:")), "{body}");

    for malformed in ["", "{", "\u{0}", "[1, 2", "spec: [unclosed"] {
        let response = f.create(&token, malformed).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{malformed:?}");
        let body: Value = response.json().await.unwrap();
        assert!(body["diagnostics"][0]["line"].as_u64().unwrap() >= 1, "{body}");
    }
    let binary = f
        .http
        .post(f.url("/v1/sessions"))
        .bearer_auth(&token)
        .body(vec![0xff_u8, 0xfe, 0x00, 0x41])
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let over_policy = HELLO.replace("deadline: 30s", "deadline: 2h");
    let response = f.create(&token, &over_policy).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("above the server's maximum"), "{body}");
    let line = HELLO.lines().position(|l| l.contains("deadline: 30s")).unwrap() as u64 + 1;
    assert_eq!(body["diagnostics"][0]["line"], line);

    let huge = format!("{HELLO}\n# {}\n", "x".repeat(128 * 1024));
    let response = f.create(&token, &huge).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large");

    let form = f
        .http
        .post(f.url("/v1/sessions"))
        .bearer_auth(&token)
        .header("content-type", "multipart/form-data; boundary=x")
        .body(HELLO)
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let nowhere = f.get(&token, "/v2/sessions").await;
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    assert_eq!(nowhere.json::<Value>().await.unwrap()["code"], "not_found");
    // Nothing above created a session.
    assert_eq!(f.get_json(&token, "/v1/sessions").await["sessions"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_concurrency_and_daily_quota_are_enforced_with_clear_messages() {
    let f = Fixture::real_time(config()).await;
    let one_at_a_time = f.tenant("narrow", Some(json!({ "maxConcurrent": 1, "dailySessions": 2 }))).await;
    let first = f.create_ok(&one_at_a_time, LONG).await["id"].as_str().unwrap().to_owned();
    let refused = f.create(&one_at_a_time, LONG).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "concurrency_limit");
    assert!(body["message"].as_str().unwrap().contains("1 sessions running"), "{body}");

    // Another tenant is not affected.
    let other = f.tenant("other", None).await;
    let other_id = f.create_ok(&other, HELLO).await["id"].as_str().unwrap().to_owned();

    // Once the first ends, a second fits; the third of the day is over quota.
    f.http.post(f.url(&format!("/v1/sessions/{first}/cancel"))).bearer_auth(&one_at_a_time).send().await.unwrap();
    f.wait_finished(&one_at_a_time, &first).await;
    let second = f.create_ok(&one_at_a_time, HELLO).await["id"].as_str().unwrap().to_owned();
    f.wait_finished(&one_at_a_time, &second).await;
    let over = f.create(&one_at_a_time, HELLO).await;
    assert_eq!(over.status(), StatusCode::FORBIDDEN);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["code"], "quota_exceeded");
    assert!(body["message"].as_str().unwrap().contains("its quota is 2"), "{body}");
    f.wait_finished(&other, &other_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_event_streams_are_capped_per_tenant_and_freed_on_close() {
    let mut cfg = config();
    cfg.limits.max_streams_per_tenant = 1;
    let f = Fixture::real_time(cfg).await;
    let token = f.tenant("acme", None).await;
    let other = f.tenant("other", None).await;
    let id = f.create_ok(&token, LONG).await["id"].as_str().unwrap().to_owned();
    let other_id = f.create_ok(&other, HELLO).await["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/sessions/{id}/events");
    let open = f.get(&token, &path).await;
    assert_eq!(open.status(), StatusCode::OK);
    let refused = f.get(&token, &path).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "too_many_streams");
    // Another tenant has its own allowance.
    assert_eq!(f.events(&other, &other_id, None).await.last().unwrap().event, "finished");
    // Closing the stream frees the slot: cancelling ends the session and its stream.
    f.http.post(f.url(&format!("/v1/sessions/{id}/cancel"))).bearer_auth(&token).send().await.unwrap();
    let body = open.text().await.unwrap();
    assert!(body.contains("event: finished"));
    assert_eq!(f.events(&token, &id, None).await.last().unwrap().event, "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_tenant_rate_are_refused_with_retry_after() {
    let mut cfg = config();
    cfg.limits.requests_per_second = 1;
    cfg.limits.request_burst = 1;
    let f = Fixture::new(cfg).await;
    let token = f.tenant("acme", None).await;
    let other = f.tenant("other", None).await;
    let mut limited = None;
    // The second of any two requests within a second is refused; 30 requests cannot
    // all be a second apart unless each takes a second.
    for _ in 0..30 {
        let response = f.get(&token, "/v1/sessions").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("no request was rate limited");
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(limited.json::<Value>().await.unwrap()["code"], "rate_limited");
    // Limits are per tenant.
    assert_eq!(f.get(&other, "/v1/sessions").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_running_sessions_as_infra_lost_and_leaves_nothing_running() {
    let mut f = Fixture::real_time(config()).await;
    let token = f.tenant("acme", None).await;
    let running = f.create_ok(&token, LONG).await["id"].as_str().unwrap().to_owned();
    let done = f.create_ok(&token, HELLO).await["id"].as_str().unwrap().to_owned();
    f.wait_running(&token, &running).await;
    f.wait_finished(&token, &done).await;
    assert!(f.server.reconciled.sessions.is_empty());

    f.restart(config()).await;
    assert_eq!(f.server.reconciled.sessions, std::slice::from_ref(&running), "only the running session is reconciled");

    let session = f.get_json(&token, &format!("/v1/sessions/{running}")).await;
    assert_eq!(session["status"]["state"], "killed");
    assert_eq!(session["status"]["reason"], "infra_lost");
    assert_eq!(session["status"]["detail"], enclave_server::INFRA_LOST_DETAIL);
    assert_eq!(session["result"]["killReason"], "infra_lost");
    let verify = f.get_json(&token, &format!("/v1/sessions/{running}/audit/verify")).await;
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["matchesResult"], true);
    let audit = f.get(&token, &format!("/v1/sessions/{running}/audit")).await.text().await.unwrap();
    let types: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"]["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("session_created"));
    assert_eq!(&types[types.len() - 3..], ["kill", "result", "teardown"]);
    let events = f.events(&token, &running, None).await;
    assert_eq!(events.last().unwrap().event, "finished");

    // The finished session is untouched; nothing is left on the backend.
    let untouched = f.get_json(&token, &format!("/v1/sessions/{done}")).await;
    assert_eq!(untouched["status"]["state"], "succeeded");
    assert!(f.backend.reap_orphans(&[]).await.unwrap().is_empty(), "the backend still held a session");
    assert_eq!(f.get_json(&token, "/v1/sessions?status=running").await["sessions"], json!([]));
    // A second restart finds nothing to do.
    f.restart(config()).await;
    assert!(f.server.reconciled.sessions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_stop_cancels_running_sessions_so_a_restart_finds_nothing() {
    let mut f = Fixture::real_time(config()).await;
    let token = f.tenant("acme", None).await;
    let id = f.create_ok(&token, LONG).await["id"].as_str().unwrap().to_owned();
    f.wait_running(&token, &id).await;
    // A subscriber still streaming must not hold the stop up: its stream ends with the session.
    let (connected, is_connected) = tokio::sync::oneshot::channel();
    let follower = {
        let (http, url, token) = (f.http.clone(), f.url(&format!("/v1/sessions/{id}/events")), token.clone());
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            connected.send(()).unwrap();
            response.text().await.unwrap()
        })
    };
    // Stop only once the stream is open (its headers arrived).
    is_connected.await.unwrap();
    f.server.stop().await;
    let streamed = follower.await.unwrap();
    assert!(streamed.contains("event: finished"), "{streamed}");

    f.restart(config()).await;
    assert!(f.server.reconciled.sessions.is_empty(), "the stop ended the session itself");
    let session = f.get_json(&token, &format!("/v1/sessions/{id}")).await;
    assert_eq!(session["status"]["reason"], "cancelled");
    assert_eq!(f.get_json(&token, &format!("/v1/sessions/{id}/audit/verify")).await["ok"], true);
    assert!(f.backend.reap_orphans(&[]).await.unwrap().is_empty());
}

/// The simulator, plus what a real workload can do that the simulator never does:
/// print the clone credential it was handed (as a hostile or careless program would:
/// raw, base64-encoded, and inside a URL), and leave a file (`report.txt`) to copy out.
struct LeakingBackend {
    sim: SimBackend,
    /// Print the clone credential (needs a plan with a credential).
    leak: bool,
}

#[async_trait]
impl Backend for LeakingBackend {
    fn name(&self) -> &'static str {
        "sim"
    }
    fn capabilities(&self) -> Capabilities {
        self.sim.capabilities()
    }
    fn session_clock(&self, session: &SessionId) -> Option<Arc<dyn enclave_core::Clock>> {
        self.sim.session_clock(session)
    }
    async fn launch(
        &self,
        session: &SessionId,
        plan: &Plan,
        secrets: &dyn SecretStore,
        events: BackendEvents,
    ) -> Result<RunHandle, BackendError> {
        if !self.leak {
            return self.sim.launch(session, plan, secrets, events).await;
        }
        let name = plan.clone_phase().and_then(|c| c.credential.clone()).expect("a clone credential");
        let value = secrets.resolve(&name).expect("the clone step can resolve the tenant's secret");
        let encoded = base64::engine::general_purpose::STANDARD.encode(value.expose());
        let line = format!("token={} b64={encoded} url=https://x:{}@example.com/\n", value.expose(), value.expose());
        let handle = self.sim.launch(session, plan, secrets, events.clone()).await?;
        events.unbounded_send(BackendEvent::Output { stream: Stream::Stdout, data: line.into_bytes() }).unwrap();
        Ok(handle)
    }
    async fn wait(&self, run: &RunHandle) -> Result<Observation, BackendError> {
        self.sim.wait(run).await
    }
    async fn artifact_archive<'a>(
        &'a self,
        _run: &'a RunHandle,
        _path: &'a str,
    ) -> Result<Option<enclave_core::ArtifactArchive<'a>>, BackendError> {
        let mut builder = tar::Builder::new(Vec::new());
        let body = b"artifact-ok\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "report.txt", &body[..]).unwrap();
        let archive = builder.into_inner().unwrap();
        Ok(Some(futures::stream::iter([Ok(archive)]).boxed()))
    }
    async fn kill(&self, run: &RunHandle) -> Result<(), BackendError> {
        self.sim.kill(run).await
    }
    async fn teardown(&self, session: &SessionId) -> Result<TeardownReport, BackendError> {
        self.sim.teardown(session).await
    }
    async fn reap_orphans(&self, live: &[SessionId]) -> Result<Vec<SessionId>, BackendError> {
        self.sim.reap_orphans(live).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_appears_in_no_response_and_no_stored_byte() {
    let canary = "canary-7d3f9a1e5b2c-do-not-leak";
    let f = Fixture::with_backend(config(), Arc::new(LeakingBackend { sim: SimBackend::new(), leak: true })).await;
    let token = f.tenant("acme", None).await;
    let put = f
        .http
        .put(f.url("/v1/secrets/billing-repo-deploy-token"))
        .bearer_auth(&token)
        .body(canary)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert!(put.text().await.unwrap().is_empty());
    let mut responses = Vec::new();
    let names = f.get(&token, "/v1/secrets").await.text().await.unwrap();
    assert!(names.contains("billing-repo-deploy-token"));
    responses.push(names);

    let spec = include_str!("../../../examples/sessions/private-repo-credential.yaml");
    let created = f.create(&token, spec).await.text().await.unwrap();
    let id = serde_json::from_str::<Value>(&created).unwrap()["id"].as_str().unwrap().to_owned();
    responses.push(created);
    let events = f.events(&token, &id, None).await;
    let result: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(result["result"]["status"]["state"], "succeeded", "{result}");
    // The workload did print it; what is stored and streamed is the redacted line.
    let logs = f.get_json(&token, &format!("/v1/sessions/{id}/logs")).await;
    let printed: Vec<&str> = logs["entries"].as_array().unwrap().iter().filter_map(|e| e["line"].as_str()).collect();
    assert_eq!(printed, ["token=*** b64=*** url=https://x:***@example.com/"], "{logs}");
    responses.extend(events.iter().map(|e| format!("{}\n{}\n{}", e.id, e.event, e.data)));
    for path in ["", "/logs", "/audit", "/audit/verify", "/artifacts"] {
        responses.push(f.get(&token, &format!("/v1/sessions/{id}{path}")).await.text().await.unwrap());
    }
    responses.push(f.get(&token, "/v1/sessions").await.text().await.unwrap());
    responses.push(f.http.get(f.url("/metrics")).send().await.unwrap().text().await.unwrap());
    responses
        .push(f.http.get(f.url("/v1/admin/tenants")).bearer_auth(ADMIN).send().await.unwrap().text().await.unwrap());
    for response in &responses {
        assert!(!response.contains(canary), "the canary leaked: {response}");
    }
    // Nor is it anywhere on disk in the clear (database, WAL, shared memory).
    for file in f.store_files() {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(canary.len()).any(|w| w == canary.as_bytes()), "in {}", file.display());
    }
    // It is stored, and opens with the key: the test would pass vacuously otherwise.
    let store = SqliteStore::open(
        &f.dir.path().join("enclave.db"),
        StoreOptions { secret_key: Some(SecretKey::parse(&f.key).unwrap()), ..StoreOptions::default() },
    )
    .await
    .unwrap();
    let tenant = store.tenant_by_name("acme").await.unwrap().unwrap();
    let opened = store.open_secrets(&tenant.id).await.unwrap();
    assert_eq!(opened[0].1.expose(), canary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_come_back_as_a_manifest_and_a_tar_to_their_tenant_only() {
    let f = Fixture::with_backend(config(), Arc::new(LeakingBackend { sim: SimBackend::new(), leak: false })).await;
    let owner = f.tenant("owner", None).await;
    let intruder = f.tenant("intruder", None).await;
    let spec = "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: with-artifacts\nspec:\n  command: [make]\n  artifacts: [report.txt]\n";
    let id = f.create_ok(&owner, spec).await["id"].as_str().unwrap().to_owned();
    f.wait_finished(&owner, &id).await;
    let manifest = f.get_json(&owner, &format!("/v1/sessions/{id}/artifacts")).await;
    assert!(manifest["files"].to_string().contains("report.txt"), "{manifest}");
    let tar = f.get(&owner, &format!("/v1/sessions/{id}/artifacts.tar")).await;
    assert_eq!(tar.status(), StatusCode::OK);
    assert_eq!(tar.headers()["content-type"], "application/x-tar");
    let bytes = tar.bytes().await.unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let names: Vec<String> =
        archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert!(names.iter().any(|n| n.ends_with("report.txt")), "{names:?}");
    assert_eq!(f.get(&intruder, &format!("/v1/sessions/{id}/artifacts.tar")).await.status(), StatusCode::NOT_FOUND);
    // A session without artifacts says so.
    let plain = f.create_ok(&owner, HELLO).await["id"].as_str().unwrap().to_owned();
    f.wait_finished(&owner, &plain).await;
    let none = f.get(&owner, &format!("/v1/sessions/{plain}/artifacts.tar")).await;
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["code"], "no_artifacts");
}
