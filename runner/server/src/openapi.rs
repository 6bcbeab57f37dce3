//! The OpenAPI 3.1 document of the API, generated from the code: every schema comes
//! from the Rust type the handler returns (via `schemars`, with the serde attributes
//! that shape the JSON), and the operations are listed here beside the router. It is
//! checked in as `runner/server/openapi.json` and golden-tested.

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::api::admin::{NewTenant, SecretNames, TenantCreated};
use crate::api::github::DeliveryAnswer;
use crate::api::records::{Logs, Verification};
use crate::error::ErrorBody;
use crate::view::{Created, Session, SessionPage};

struct Builder {
    generator: SchemaGenerator,
}

impl Builder {
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    fn json<T: JsonSchema>(&mut self, description: &str) -> Value {
        json!({ "description": description, "content": { "application/json": { "schema": self.schema::<T>() } } })
    }

    fn error(&mut self, description: &str) -> Value {
        self.json::<ErrorBody>(description)
    }

    /// Responses every authenticated route can give.
    fn authenticated(&mut self, mut responses: Map<String, Value>) -> Value {
        responses.insert("401".into(), self.error("Missing, invalid or expired bearer token"));
        responses.insert("429".into(), self.error("Rate limited (see Retry-After)"));
        responses.insert("500".into(), self.error("Internal error (details in the server log only)"));
        Value::Object(responses)
    }

    fn session_route(&mut self, responses: Map<String, Value>) -> Value {
        let mut responses = responses;
        responses.insert("404".into(), self.error("No such session (or another tenant's)"));
        self.authenticated(responses)
    }
}

fn map(entries: Vec<(&str, Value)>) -> Map<String, Value> {
    entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": "Session id",
            "schema": { "type": "string" } })
}

/// A valid spec, as the request body's example.
const EXAMPLE_SPEC_YAML: &str = include_str!("../../../examples/sessions/hello.yaml");

fn example_spec_json() -> Value {
    json!({
        "apiVersion": "enclave.dev/v1",
        "kind": "Session",
        "metadata": { "name": "hello" },
        "spec": {
            "command": ["echo", "hello from the sandbox"],
            "quotas": { "memory": "128Mi", "deadline": "30s" },
            "simulate": { "exitCode": 0, "duration": "200ms" }
        }
    })
}

/// Links from a created session to the operations on it (the stateful fuzzer follows them).
fn session_links() -> Value {
    let ops = [
        ("GetSession", "getSession"),
        ("CancelSession", "cancelSession"),
        ("SessionEvents", "sessionEvents"),
        ("SessionLogs", "sessionLogs"),
        ("SessionAudit", "sessionAudit"),
        ("VerifySessionAudit", "verifySessionAudit"),
        ("SessionArtifacts", "sessionArtifacts"),
    ];
    let links: Map<String, Value> = ops
        .iter()
        .map(|(name, op)| {
            ((*name).to_owned(), json!({ "operationId": op, "parameters": { "id": "$response.body#/id" } }))
        })
        .collect();
    Value::Object(links)
}

fn text(description: &str, media: &str) -> Value {
    json!({ "description": description, "content": { media: { "schema": { "type": "string" } } } })
}

/// The document as JSON.
pub fn openapi() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    settings.contract = Contract::Serialize;
    let mut b = Builder { generator: settings.into_generator() };
    let secured = json!([{ "bearer": [] }]);

    let create = {
        let responses = map(vec![
            ("201", {
                let mut created = b.json::<Created>("The session was created and started");
                created["links"] = session_links();
                created
            }),
            ("400", b.error("The body could not be read")),
            ("403", b.error("The tenant's daily session quota is used up")),
            ("413", b.error("The body is over the server's limit")),
            ("415", b.error("The body is neither YAML nor JSON")),
            ("422", b.error("The spec is invalid or cannot be planned; diagnostics give line and column")),
        ]);
        json!({
            "operationId": "createSession", "summary": "Create a session from a spec (YAML or JSON)",
            "security": secured,
            "requestBody": { "required": true, "content": {
                "application/yaml": { "schema": { "type": "string" }, "example": EXAMPLE_SPEC_YAML },
                "application/json": { "schema": { "type": "object",
                    "description": "A session spec (schema/session.schema.json)" },
                    "example": example_spec_json() } } },
            "responses": b.authenticated(responses),
        })
    };
    let list = {
        let responses = map(vec![
            ("200", b.json::<SessionPage>("The tenant's sessions, newest first")),
            ("400", b.error("Invalid query")),
        ]);
        json!({
            "operationId": "listSessions", "summary": "List the tenant's sessions", "security": secured,
            "parameters": [
                { "name": "status", "in": "query", "required": false, "schema": { "type": "string",
                  "enum": ["pending", "cloning", "running", "succeeded", "failed", "killed", "errored"] } },
                { "name": "cursor", "in": "query", "required": false, "schema": { "type": "string" },
                  "description": "nextCursor of the previous page" },
                { "name": "limit", "in": "query", "required": false,
                  "schema": { "type": "integer", "minimum": 1, "maximum": 100 } }
            ],
            "responses": b.authenticated(responses),
        })
    };
    let session_op = |b: &mut Builder, id: &str, summary: &str, responses: Vec<(&str, Value)>| {
        let responses = b.session_route(map(responses));
        json!({ "operationId": id, "summary": summary, "security": [{ "bearer": [] }],
                "parameters": [id_param()], "responses": responses })
    };
    let get_session = {
        let ok = b.json::<Session>("The session");
        session_op(&mut b, "getSession", "Get a session", vec![("200", ok)])
    };
    let cancel = {
        let ok = b.json::<Session>("Cancel requested; the session ends as killed: cancelled");
        let conflict = b.error("The session has already ended");
        session_op(&mut b, "cancelSession", "Cancel a running session", vec![("202", ok), ("409", conflict)])
    };
    let events = {
        let event = b.schema::<enclave_core::TimedEvent>();
        let ok = json!({
            "description": "Server-Sent Events: `id` is the event's sequence number, `event` its type, `data` the \
                            event as JSON; the stream ends with `finished`, which carries the result",
            "content": { "text/event-stream": { "schema": {
                "description": "One event of the stream",
                "type": "object",
                "required": ["id", "event", "data"],
                "properties": {
                    "id": { "type": "string", "pattern": "^[0-9]+$" },
                    "event": { "type": "string" },
                    "data": { "type": "string", "contentMediaType": "application/json", "contentSchema": event },
                },
            } } },
        });
        let bad = b.error("Invalid Last-Event-ID");
        let mut op = session_op(&mut b, "sessionEvents", "Stream a session's events", vec![("200", ok), ("400", bad)]);
        if let Some(params) = op["parameters"].as_array_mut() {
            params.push(json!({ "name": "Last-Event-ID", "in": "header", "required": false,
                                "description": "Resume after this event id", "schema": { "type": "string" } }));
        }
        op
    };
    let logs = {
        let ok = b.json::<Logs>("The session's stored output (redacted)");
        session_op(&mut b, "sessionLogs", "A session's log lines", vec![("200", ok)])
    };
    let audit = session_op(
        &mut b,
        "sessionAudit",
        "A session's audit chain as JSONL",
        vec![("200", text("One canonical audit record per line", "application/jsonl"))],
    );
    let verify = {
        let ok = b.json::<Verification>("The chain check");
        session_op(&mut b, "verifySessionAudit", "Verify a session's audit chain", vec![("200", ok)])
    };
    let artifacts = {
        let ok = b.json::<enclave_store::ArtifactManifest>("What was copied out");
        session_op(&mut b, "sessionArtifacts", "A session's artifact manifest", vec![("200", ok)])
    };
    let artifacts_tar = {
        let ok = json!({ "description": "The artifact bundle",
                         "content": { "application/x-tar": { "schema": { "type": "string", "contentEncoding": "binary" } } } });
        let none = b.error("The session has no artifacts");
        session_op(&mut b, "sessionArtifactsTar", "A session's artifacts as a tar", vec![("200", ok), ("404", none)])
    };
    let list_secrets = {
        let ok = b.json::<SecretNames>("Secret names (values are never returned)");
        json!({ "operationId": "listSecrets", "summary": "The tenant's secret names", "security": secured,
                "responses": b.authenticated(map(vec![("200", ok)])) })
    };
    let put_secret = {
        let name_schema = b.schema::<enclave_spec::SecretName>();
        let responses = map(vec![
            ("204", json!({ "description": "Stored, sealed at rest" })),
            ("400", b.error("Invalid name or value")),
            ("503", b.error("The server has no secret key")),
        ]);
        json!({ "operationId": "putSecret", "summary": "Set a secret (write-only)", "security": secured,
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": name_schema }],
                "requestBody": { "required": true,
                                 "content": { "text/plain": { "schema": { "type": "string", "minLength": 1 } } } },
                "responses": b.authenticated(responses) })
    };
    let admin_errors = |b: &mut Builder, mut responses: Map<String, Value>| {
        responses.insert("401".into(), b.error("Missing bearer token"));
        responses.insert("403".into(), b.error("Not the admin token, or admin operations disabled"));
        responses.insert("500".into(), b.error("Internal error"));
        Value::Object(responses)
    };
    let create_tenant = {
        let request = b.schema::<NewTenant>();
        let responses = map(vec![
            ("201", b.json::<TenantCreated>("The tenant and its token, shown once")),
            ("400", b.error("Invalid body or name")),
            ("409", b.error("The tenant exists")),
        ]);
        json!({ "operationId": "createTenant", "summary": "Create a tenant (admin)", "security": secured,
                "requestBody": { "required": true, "content": { "application/json": { "schema": request } } },
                "responses": admin_errors(&mut b, responses) })
    };
    let list_tenants = {
        let ok = b.json::<Vec<enclave_store::Tenant>>("Every tenant");
        json!({ "operationId": "listTenants", "summary": "List tenants (admin)", "security": secured,
                "responses": admin_errors(&mut b, map(vec![("200", ok)])) })
    };
    let github_webhook = {
        let header = |name: &str, description: &str| {
            json!({ "name": name, "in": "header", "required": true, "description": description,
                    "schema": { "type": "string" } })
        };
        let responses = map(vec![
            ("200", b.json::<DeliveryAnswer>("A ping, or a delivery id kept before (nothing is done again)")),
            ("202", b.json::<DeliveryAnswer>("Queued to be processed, or ignored (the reason says why)")),
            ("400", b.error("A header GitHub always sends is missing, or the payload does not read")),
            ("401", b.error("Unsigned, SHA-1 only, or the signature does not verify")),
            ("408", b.error("The body did not arrive within 10 s")),
            ("413", b.error("The body is over 25 MB, GitHub's maximum")),
            ("415", b.error("Neither application/json nor application/x-www-form-urlencoded")),
            ("500", b.error("Internal error (details in the server log only)")),
            ("503", b.error("GitHub is not configured, too many bodies are being read, or the queue is full")),
        ]);
        json!({
            "operationId": "githubWebhook",
            "summary": "Receive a GitHub App webhook delivery (signed with X-Hub-Signature-256; no bearer token)",
            "description": "The signature is checked over the raw body before anything is parsed. Deliveries \
                            that ask for runs are kept by their X-GitHub-Delivery id and queued; processing the \
                            queue into sessions and check runs is not built yet.",
            "parameters": [
                header("X-Hub-Signature-256", "sha256= and the HMAC-SHA256 of the body under a webhook secret"),
                header("X-GitHub-Event", "The event: ping, push, pull_request, check_suite, check_run, ..."),
                header("X-GitHub-Delivery", "The delivery's GUID, the same on a redelivery"),
            ],
            "requestBody": { "required": true, "content": {
                "application/json": { "schema": { "type": "object", "description": "GitHub's event payload" } },
                "application/x-www-form-urlencoded": { "schema": { "type": "object",
                    "properties": { "payload": { "type": "string" } } } } } },
            "responses": Value::Object(responses),
        })
    };
    let not_ready = b.error("The store is not reachable");
    let metrics_error = b.error("The store is not reachable");

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Enclave",
            "version": "1",
            "description": "Run untrusted code in ephemeral, contained sessions. Every /v1 route needs a \
                            bearer token; a session of another tenant is answered 404.",
        },
        "paths": {
            "/v1/sessions": { "post": create, "get": list },
            "/v1/sessions/{id}": { "get": get_session },
            "/v1/sessions/{id}/cancel": { "post": cancel },
            "/v1/sessions/{id}/events": { "get": events },
            "/v1/sessions/{id}/logs": { "get": logs },
            "/v1/sessions/{id}/audit": { "get": audit },
            "/v1/sessions/{id}/audit/verify": { "get": verify },
            "/v1/sessions/{id}/artifacts": { "get": artifacts },
            "/v1/sessions/{id}/artifacts.tar": { "get": artifacts_tar },
            "/v1/secrets": { "get": list_secrets },
            "/v1/secrets/{name}": { "put": put_secret },
            "/v1/admin/tenants": { "post": create_tenant, "get": list_tenants },
            "/v1/github/webhook": { "post": github_webhook },
            "/healthz": { "get": { "operationId": "healthz", "summary": "Liveness",
                                   "responses": { "200": text("ok", "text/plain") } } },
            "/readyz": { "get": { "operationId": "readyz", "summary": "Readiness (the store answers)",
                                  "responses": { "200": text("ready", "text/plain"), "503": not_ready } } },
            "/metrics": { "get": { "operationId": "metrics", "summary": "Prometheus metrics",
                                   "responses": { "200": text("Prometheus text format", "text/plain"),
                                                  "500": metrics_error } } },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": b.generator.take_definitions(true),
        },
    })
}

/// The document as checked in: pretty JSON with a final newline.
pub fn openapi_json() -> String {
    let mut text = serde_json::to_string_pretty(&openapi()).unwrap_or_default();
    text.push('\n');
    text
}
