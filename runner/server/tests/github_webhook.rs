//! `POST /v1/github/webhook` on the real server over loopback, with real signed payloads:
//! GitHub's documented test vector, a push that is queued once however often it is
//! delivered, and every refusal a hostile sender can provoke (forged, unsigned, SHA-1
//! only, oversized declared and streamed, malformed, unknown content type), each with
//! its status; an unknown event is answered 202; a full queue 503; a sender holding
//! half-sent bodies cannot take every permit for good.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::sync::Arc;

use enclave_github::sign;
use enclave_server::{App, Credentials, ServerConfig, WebhookSecrets};
use enclave_sim::SimBackend;
use enclave_store::{SqliteStore, Store, StoreOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// GitHub's documented example: "Validating webhook deliveries".
const VECTOR_SECRET: &str = "It's a Secret to Everybody";
const VECTOR_BODY: &str = "Hello, World!";
const VECTOR_SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

/// The secret the tests sign with (the second line of the file: rotation).
const SECRET: &str = "webhook-test-secret-0123456789";

const APP_ID: u64 = 4242;

struct Hook {
    base: String,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start(config: ServerConfig, secrets: &str) -> Hook {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("enclave.db"), StoreOptions::default()).await.unwrap());
    let credentials =
        Credentials { webhook_secrets: WebhookSecrets::from_file_text(secrets), ..Credentials::default() };
    let app = App::new(config, store.clone(), Arc::new(SimBackend::new()), credentials).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(app.serve(listener, futures::future::pending()));
    Hook { base, store, http: reqwest::Client::new(), _dir: dir }
}

fn configured() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.github.app_id = Some(APP_ID);
    config.github.queue_limit = 2;
    config
}

async fn hook() -> Hook {
    start(configured(), &format!("{VECTOR_SECRET}\n{SECRET}\n")).await
}

fn push(sha: &str, installation: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main", "before": "0".repeat(40), "after": sha, "deleted": false,
        "installation": { "id": installation },
        "repository": { "id": 1, "full_name": "acme/app", "clone_url": "https://github.test/acme/app.git",
                        "private": true, "a_field_github_added_later": [1, 2] },
        "sender": { "login": "octocat", "id": 9 },
    }))
    .unwrap()
}

fn delivery_id(n: u32) -> String {
    format!("72d3162e-cc78-11e3-81ab-{n:012x}")
}

impl Hook {
    fn url(&self) -> String {
        format!("{}/v1/github/webhook", self.base)
    }

    /// A delivery as GitHub sends it: `signature` `None` signs with [`SECRET`].
    async fn send(&self, event: &str, id: &str, body: &[u8], signature: Option<&str>) -> (StatusCode, Value) {
        let signature = signature.map_or_else(|| sign(SECRET.as_bytes(), body), str::to_owned);
        let response = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", signature)
            .header("user-agent", "GitHub-Hookshot/test")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn pending(&self) -> Vec<String> {
        self.store.pending_deliveries(100).await.unwrap().into_iter().map(|d| d.id).collect()
    }
}

#[tokio::test]
async fn githubs_documented_test_vector_verifies_on_the_wire() {
    let hook = hook().await;
    assert_eq!(sign(VECTOR_SECRET.as_bytes(), VECTOR_BODY.as_bytes()), VECTOR_SIGNATURE);
    // A ping is answered without reading the payload, so GitHub's plain-text example
    // body can travel as it is documented.
    let (status, body) = hook.send("ping", &delivery_id(1), VECTOR_BODY.as_bytes(), Some(VECTOR_SIGNATURE)).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("pong")), "{body}");
    let forged = VECTOR_SIGNATURE.replace("757107", "757108");
    let (status, body) = hook.send("ping", &delivery_id(1), VECTOR_BODY.as_bytes(), Some(&forged)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("webhook_refused")), "{body}");
}

#[tokio::test]
async fn a_push_is_queued_once_however_often_it_is_delivered() {
    let hook = hook().await;
    let body = push(&"a".repeat(40), 7);
    let (status, answer) = hook.send("push", &delivery_id(2), &body, None).await;
    assert_eq!((status, answer["outcome"].as_str()), (StatusCode::ACCEPTED, Some("queued")), "{answer}");
    assert_eq!(answer["delivery"], delivery_id(2));
    let kept = hook.store.delivery(&delivery_id(2)).await.unwrap().expect("kept");
    assert_eq!((kept.event.as_str(), kept.payload.as_slice(), kept.outcome), ("push", body.as_slice(), None));
    // A replay of the same signed bytes, and GitHub's manual redelivery (same id).
    for _ in 0..3 {
        let (status, answer) = hook.send("push", &delivery_id(2), &body, None).await;
        assert_eq!((status, answer["outcome"].as_str()), (StatusCode::OK, Some("duplicate")), "{answer}");
    }
    assert_eq!(hook.pending().await, vec![delivery_id(2)]);
    // Processed: a redelivery still starts nothing.
    hook.store.finish_delivery(&delivery_id(2), "ran 2 specs", 1).await.unwrap();
    let (status, answer) = hook.send("push", &delivery_id(2), &body, None).await;
    assert_eq!((status, answer["outcome"].as_str()), (StatusCode::OK, Some("duplicate")), "{answer}");
    assert!(hook.pending().await.is_empty());
}

#[tokio::test]
async fn forged_unsigned_and_sha1_only_deliveries_are_refused_before_anything_is_kept() {
    let hook = hook().await;
    let body = push(&"b".repeat(40), 7);
    let wrong_secret = sign(b"not-the-secret", &body);
    let other_body = sign(SECRET.as_bytes(), &push(&"c".repeat(40), 7));
    for (signature, what) in [
        (wrong_secret.as_str(), "another secret"),
        (other_body.as_str(), "the signature of another body"),
        ("sha256=zz", "a malformed signature"),
        ("", "an empty signature"),
    ] {
        let (status, answer) = hook.send("push", &delivery_id(3), &body, Some(signature)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {answer}");
    }
    let unsigned = hook
        .http
        .post(hook.url())
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery_id(3))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let sha1_only = hook
        .http
        .post(hook.url())
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery_id(3))
        .header("x-hub-signature", "sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(sha1_only.status(), StatusCode::UNAUTHORIZED);
    let message = sha1_only.json::<Value>().await.unwrap()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("X-Hub-Signature-256"), "{message}");
    assert!(hook.pending().await.is_empty(), "nothing refused is kept");
    assert!(hook.store.delivery(&delivery_id(3)).await.unwrap().is_none());
}

#[tokio::test]
async fn oversized_bodies_are_refused_declared_or_streamed() {
    let hook = hook().await;
    let limit = enclave_github::MAX_BODY_BYTES;
    let big = vec![b' '; limit + 1];
    let (status, answer) = hook.send("push", &delivery_id(4), &big, None).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));
    // No Content-Length: chunks until the limit is passed.
    let chunks = futures::stream::iter((0..=limit / (1 << 20)).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1 << 20])));
    let streamed = hook
        .http
        .post(hook.url())
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery_id(4))
        .header("x-hub-signature-256", sign(SECRET.as_bytes(), b"{}"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A body at the limit, well over the API's own limit, is read and verified.
    let at_limit = vec![b' '; limit];
    let (status, answer) = hook.send("ping", &delivery_id(5), &at_limit, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn malformed_payloads_and_unknown_content_types_are_refused() {
    let hook = hook().await;
    let malformed = b"{\"installation\": {\"id\": 7}, \"repository\": {\"id\": 1, \"full_name\": \"acme/app\"},\n \
                      \"ref\": \"refs/heads/main\", \"after\": 7}";
    let (status, answer) = hook.send("push", &delivery_id(6), malformed, None).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("push payload") && message.contains("line 2"), "{message}");
    let body = push(&"d".repeat(40), 7);
    let text = hook
        .http
        .post(hook.url())
        .header("content-type", "text/plain")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery_id(6))
        .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = hook.send("push", "../../etc/passwd", &body, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a delivery id is a GUID");
    let (status, _) = hook.send("Push; rm -rf", &delivery_id(6), &body, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an event name is lower-case letters");
    assert!(hook.pending().await.is_empty());
}

#[tokio::test]
async fn unknown_events_and_other_apps_are_answered_202_and_not_kept() {
    let hook = hook().await;
    let (status, answer) = hook.send("star", &delivery_id(7), br#"{"action":"created"}"#, None).await;
    assert_eq!((status, answer["outcome"].as_str()), (StatusCode::ACCEPTED, Some("ignored")), "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("star"), "{answer}");
    let tag = serde_json::to_vec(&json!({
        "ref": "refs/tags/v1", "after": "e".repeat(40),
        "installation": { "id": 7 }, "repository": { "id": 1, "full_name": "acme/app" },
    }))
    .unwrap();
    let (status, answer) = hook.send("push", &delivery_id(8), &tag, None).await;
    assert_eq!((status, answer["outcome"].as_str()), (StatusCode::ACCEPTED, Some("ignored")), "{answer}");
    assert!(hook.pending().await.is_empty());
}

#[tokio::test]
async fn an_installation_without_a_tenant_is_ignored_when_auto_tenants_is_off() {
    let mut config = configured();
    config.github.auto_tenants = false;
    config.github.installation_tenants = BTreeMap::from([(7, "acme".to_owned())]);
    let hook = start(config, SECRET).await;
    let (status, answer) = hook.send("push", &delivery_id(9), &push(&"f".repeat(40), 8), None).await;
    assert_eq!((status, answer["outcome"].as_str()), (StatusCode::ACCEPTED, Some("ignored")), "{answer}");
    let (status, answer) = hook.send("push", &delivery_id(10), &push(&"f".repeat(40), 7), None).await;
    assert_eq!((status, answer["outcome"].as_str()), (StatusCode::ACCEPTED, Some("queued")), "{answer}");
    assert_eq!(hook.pending().await, vec![delivery_id(10)]);
}

#[tokio::test]
async fn a_full_queue_answers_503_so_github_shows_a_failed_delivery() {
    let hook = hook().await;
    for n in 11..13 {
        let (status, _) = hook.send("push", &delivery_id(n), &push(&"1".repeat(40), 7), None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, answer) = hook.send("push", &delivery_id(13), &push(&"2".repeat(40), 7), None).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("webhook_queue_full")));
    assert_eq!(hook.pending().await, vec![delivery_id(11), delivery_id(12)]);
    // Once one is processed, the redelivery is queued.
    hook.store.finish_delivery(&delivery_id(11), "done", 1).await.unwrap();
    let (status, _) = hook.send("push", &delivery_id(13), &push(&"2".repeat(40), 7), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn without_an_app_id_or_a_secret_every_delivery_is_refused_503() {
    for (config, secrets, missing) in [
        (ServerConfig::default(), "", "app_id and webhook_secret_file"),
        (configured(), "", "webhook_secret_file"),
        (ServerConfig::default(), SECRET, "app_id"),
    ] {
        let hook = start(config, secrets).await;
        let (status, answer) = hook.send("ping", &delivery_id(14), b"{}", None).await;
        assert_eq!((status, answer["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("github_not_configured")));
        assert!(answer["message"].as_str().unwrap().contains(missing), "{answer}");
    }
}

#[tokio::test]
async fn half_sent_bodies_take_a_bounded_number_of_permits_and_give_them_back() {
    let hook = hook().await;
    let address = hook.base.trim_start_matches("http://").to_owned();
    // Eight senders that declare a body and never send it hold every permit.
    let mut holders = Vec::new();
    for n in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /v1/github/webhook HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
             x-github-event: ping\r\nx-github-delivery: {}\r\nx-hub-signature-256: sha256={}\r\n\
             content-length: 1000\r\n\r\n{{",
            delivery_id(100 + n),
            "0".repeat(64)
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        holders.push(stream);
    }
    // The handlers have taken their permits once a ninth is refused; poll, bounded.
    let mut busy = None;
    for _ in 0..200 {
        let (status, answer) = hook.send("ping", &delivery_id(15), b"{}", None).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            busy = Some(answer);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(busy.expect("a ninth body is refused while eight are held")["code"], "webhook_busy");
    // The rest of the API is not held up by them.
    let health = hook.http.get(format!("{}/healthz", hook.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Senders that go away give their permits back.
    for mut holder in holders.drain(..) {
        holder.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = holder.read_to_end(&mut rest).await;
    }
    let mut answered = None;
    for _ in 0..200 {
        let (status, _) = hook.send("ping", &delivery_id(16), b"{}", None).await;
        if status == StatusCode::OK {
            answered = Some(status);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(answered, Some(StatusCode::OK), "the permits came back");
}
