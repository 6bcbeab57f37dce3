//! The OpenAPI document: generated from the code, checked in at
//! `runner/server/openapi.json`, and compared here. Regenerate it with
//! `UPDATE_GOLDEN=1 cargo test -p enclave-server --test openapi`.
//!
//! Also checks that the document and the router agree (every documented operation is
//! routed) and that real responses validate against the documented schemas.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::sync::Arc;

use enclave_server::{App, Credentials, ServerConfig, openapi, openapi_json};
use enclave_sim::SimBackend;
use enclave_store::{SqliteStore, Store, StoreOptions};
use serde_json::{Value, json};

#[test]
fn the_checked_in_openapi_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let fresh = openapi_json();
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("runner/server/openapi.json is missing; generate it with `UPDATE_GOLDEN=1 cargo test -p enclave-server --test openapi`")
    });
    if checked_in != fresh {
        let line = checked_in.lines().zip(fresh.lines()).position(|(a, b)| a != b).unwrap_or(0) + 1;
        panic!(
            "runner/server/openapi.json is stale (first difference at line {line}); regenerate it with \
             `UPDATE_GOLDEN=1 cargo test -p enclave-server --test openapi` and commit it"
        );
    }
}

#[test]
fn the_document_declares_no_secret_or_token_in_a_session() {
    let doc = openapi();
    let session = &doc["components"]["schemas"]["Session"]["properties"];
    let names: Vec<&String> = session.as_object().unwrap().keys().collect();
    for name in &names {
        let lower = name.to_ascii_lowercase();
        assert!(!lower.contains("token") && !lower.contains("secret"), "Session has a field {name}");
    }
    assert!(names.iter().any(|n| *n == "planDigest"), "{names:?}");
}

/// Validates `instance` against `#/components/schemas/{name}` of the document.
fn validate(doc: &Value, name: &str, instance: &Value) {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{instance:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed_and_responses_match_their_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("enclave.db"), StoreOptions::default()).await.unwrap());
    let app = App::new(ServerConfig::default(), store, Arc::new(SimBackend::new()), Credentials::admin("admin-token"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(app.serve(listener, futures::future::pending()));
    let http = reqwest::Client::new();
    let doc = openapi();

    let tenant: Value = http
        .post(format!("{base}/v1/admin/tenants"))
        .bearer_auth("admin-token")
        .json(&json!({ "name": "acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    validate(&doc, "TenantCreated", &tenant);
    let token = tenant["token"].as_str().unwrap();
    let created: Value = http
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(token)
        .body(include_str!("../../../examples/sessions/killed-deadline.yaml"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    validate(&doc, "Created", &created);
    let id = created["id"].as_str().unwrap();
    // Follow the events to the end so the session has its result.
    let events = http.get(format!("{base}/v1/sessions/{id}/events")).bearer_auth(token).send().await.unwrap();
    let events = events.text().await.unwrap();
    for data in events.lines().filter_map(|l| l.strip_prefix("data: ")) {
        validate(&doc, "TimedEvent", &serde_json::from_str(data).unwrap());
    }

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let url = format!("{base}{}", path.replace("{id}", id).replace("{name}", "some-secret"));
            let request = match method.as_str() {
                "get" => http.get(&url),
                "post" => http.post(&url),
                "put" => http.put(&url),
                other => panic!("unexpected method {other}"),
            };
            let admin = path.starts_with("/v1/admin");
            let response = request.bearer_auth(if admin { "admin-token" } else { token }).send().await.unwrap();
            let status = response.status().as_u16().to_string();
            let body = response.text().await.unwrap();
            assert!(
                operation["responses"].get(&status).is_some(),
                "{method} {path} answered {status}, which the document does not list: {body}"
            );
            assert!(!body.contains("no such route"), "{method} {path} is not routed");
            let schema = &operation["responses"][&status]["content"]["application/json"]["schema"]["$ref"];
            if let Some(reference) = schema.as_str() {
                let name = reference.rsplit('/').next().unwrap();
                validate(&doc, name, &serde_json::from_str(&body).unwrap());
            }
        }
    }
}
