//! Red-team attempts on a binding's path scope (`paths: ["/v1/*"]`, `methods: [GET]`):
//! request paths and request forms that pass the scope check but that a common upstream
//! (nginx, Apache, Express/Node, Go net/http, Python, Spring/Tomcat, IIS) would route
//! outside `/v1/`, or to another virtual host than the binding's.
//!
//! Two levels: the decision itself (`enclave_core::check_binding_scope`, which the proxy
//! calls on the request line), and the in-process egress proxy where the wire matters
//! (what the upstream actually receives). The upstream is the test's own TLS server on
//! 127.0.0.2; nothing is ever sent to an address the test did not create.
//!
//! Each test's comment says FAILED (a hole) or "held" (passed) on the code it was
//! written against (abefdea). Failing tests are kept as they are, not ignored.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{ProxySetup, proxy_listener, serve_proxy};
use enclave_core::{BackendEvent, BindingPlan, EgressPhase, Plan, Policy, check_binding_scope};
use enclave_egress::{ProxyTask, StaticResolver};
use enclave_test_servers::{Canary, RawReply, TestCa};
use futures::channel::mpsc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SECRET: &str = "redteam-scope-secret-8d2f61";

fn spec_yaml(port: u16) -> String {
    format!(
        r#"
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: redteam-scope
spec:
  command: ["true"]
  egress:
    mode: allowlist
    allow:
      - cidr: 127.0.0.2/32
        ports: [{port}]
{binding}"#,
        binding = enclave_test_servers::api_binding_yaml(port),
    )
}

fn plan_for(port: u16) -> Plan {
    let yaml = spec_yaml(port);
    let parsed = enclave_spec::parse("inline.yaml", yaml.as_bytes()).unwrap_or_else(|e| panic!("{:#?}", e.errors));
    let policy = Policy { host_loopback: vec!["127.0.0.0/8".parse().unwrap()], ..Policy::default() };
    enclave_core::plan(&parsed.spec, &policy).expect("plan")
}

/// The tests' binding `api`: GET on `/v1/*`.
fn binding() -> BindingPlan {
    plan_for(443).bindings[0].clone()
}

struct World {
    api: Canary,
    proxy: ProxyTask,
    _events: mpsc::UnboundedReceiver<BackendEvent>,
}

async fn world() -> World {
    let ca = TestCa::new();
    let reply: RawReply =
        Arc::new(|_: &str| b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec());
    let api = Canary::start_raw(A, Some(ca.server_config(&["api.binding.test"])), reply).await;
    let setup = ProxySetup {
        plan: Arc::new(plan_for(api.port())),
        secret: SECRET.to_owned(),
        resolver: Arc::new(StaticResolver::new(HashMap::from([("api.binding.test".to_owned(), vec![IpAddr::V4(A)])]))),
        phase: EgressPhase::Run,
        broken_audit: false,
    };
    let (proxy, events) = serve_proxy(proxy_listener().await, setup, &ca);
    World { api, proxy, _events: events }
}

impl World {
    fn addr(&self) -> SocketAddr {
        self.proxy.address
    }

    async fn send(&self, request: &str) -> Vec<u8> {
        let mut stream = TcpStream::connect(self.addr()).await.expect("connect to proxy");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        // Bounded: a proxy that neither answers nor closes ends the read, not the test run.
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out)).await;
        out
    }
}

fn status(answer: &[u8]) -> u16 {
    String::from_utf8_lossy(answer).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn show(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer).to_string();
    if text.len() > 1000 { format!("{}...", &text[..1000]) } else { text }
}

// ---------------------------------------------------------------------------------
// Holes.
// ---------------------------------------------------------------------------------

/// FAILED on abefdea. The proxy sets `Host` to the binding's host, but passes every
/// other header that common upstreams read as the request's host: `X-Forwarded-Host`
/// (Express with `trust proxy` -> `req.hostname` and the `vhost` middleware; Django
/// with `USE_X_FORWARDED_HOST`; Symfony/Laravel trusted proxies; ASP.NET Core's
/// ForwardedHeaders; gorilla/handlers.ProxyHeaders, which rewrites `r.Host`; Spring's
/// ForwardedHeaderFilter), RFC 7239 `Forwarded: host=...` (Spring, ASP.NET Core,
/// Werkzeug), `X-Host`, `X-Forwarded-Server` and `X-HTTP-Host-Override`. Seen: all five
/// reach the upstream on a GET to `/v1/x` that the scope admits, with the credential
/// injected. Why it matters: the binding's scope is a host and a set of paths; an
/// upstream that routes by host (one TLS endpoint serving several virtual hosts or
/// tenants) then serves the credentialed call as `admin.internal`'s, outside the
/// binding. The proxy already drops the path and method override headers for the same
/// reason (`OVERRIDE_HEADERS`); the host overrides are not on that list.
#[tokio::test]
async fn host_override_headers_reach_the_binding_upstream() {
    let w = world().await;
    let request = "GET http://api.binding.test/v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\
                   X-Forwarded-Host: admin.internal\r\n\
                   Forwarded: host=admin.internal;proto=https\r\n\
                   X-Host: admin.internal\r\n\
                   X-Forwarded-Server: admin.internal\r\n\
                   X-HTTP-Host-Override: admin.internal\r\n\r\n";
    let answer = w.send(request).await;
    assert_eq!(status(&answer), 200, "the scope admits GET /v1/x: {}", show(&answer));
    let seen = w.api.requests().join("\n").to_ascii_lowercase();
    assert!(seen.contains(&SECRET.to_ascii_lowercase()), "the credential was injected: {seen}");
    let passed: Vec<&str> =
        ["x-forwarded-host:", "forwarded:", "x-host:", "x-forwarded-server:", "x-http-host-override:"]
            .into_iter()
            .filter(|h| seen.lines().any(|l| l.starts_with(h)))
            .collect();
    assert!(passed.is_empty(), "host overrides reached the upstream with the credential: {passed:?}\n{seen}");
}

// ---------------------------------------------------------------------------------
// What held (regression value).
// ---------------------------------------------------------------------------------

/// Held on abefdea. Decision level: every spelling of a climb out of `/v1/` that a
/// common upstream normalises is refused by `check_binding_scope`: dot segments raw,
/// percent-encoded in either case, mixed, double-encoded (nginx, Apache, Node's
/// WHATWG URL, Go's `path.Clean` on the decoded path, Python's `normpath(unquote())`);
/// `..;/` and `%3b`-free path parameters (Tomcat/Spring); backslashes raw and encoded
/// (IIS, WHATWG special schemes); `%u002e`, overlong and full-width dots (IIS, Jetty,
/// NFKC servers); NUL truncation (`..%00`); `%2f` joined dots (Apache with
/// `AllowEncodedSlashes`, Go's decoded `r.URL.Path`); tab/newline stripping (WHATWG);
/// a prefix merely resembling the scope (`/v1..`, `/v1%2f`, `/V1/`, `//v1/`).
#[test]
fn every_traversal_spelling_of_common_upstreams_is_refused() {
    let b = binding();
    let refused = [
        "/v1/../admin",
        "/v1/./../admin",
        "/v1//../admin",
        "/v1/x/../../admin",
        "/v1/%2e%2e/admin",
        "/v1/%2E%2E/admin",
        "/v1/.%2e/admin",
        "/v1/%2e./admin",
        "/v1/%252e%252e/admin",
        "/v1/%25252e/admin",
        "/v1/..%2fadmin",
        "/v1/%2e%2e%2fadmin",
        "/v1/..;/admin",
        "/v1/x;/../admin",
        "/v1/..\\admin",
        "/v1/..%5cadmin",
        "/v1/%5c..%5cadmin",
        "/v1/%u002e%u002e/admin",
        "/v1/%uff0e%uff0e/admin",
        "/v1/%c0%ae%c0%ae/admin",
        "/v1/%e0%80%ae%e0%80%ae/admin",
        "/v1/%ef%bc%8e%ef%bc%8e/admin",
        "/v1/\u{ff0e}\u{ff0e}/admin",
        "/v1/..%00/admin",
        "/v1/%00/../admin",
        "/v1/.\t./admin",
        "/v1/.%09./admin",
        "/v1/.%0a./admin",
        "/v1/%%32%65%%32%65/admin",
        "/v1/..",
        "/v1/.",
        "/v1..",
        "/v1../admin",
        "/v1%2fadmin",
        "/v1%2f..%2fadmin",
        "/V1/x",
        "//v1/x",
        "/admin",
        "admin",
        "",
    ];
    let passed: Vec<&str> = refused.iter().copied().filter(|p| check_binding_scope(&b, "GET", p).is_ok()).collect();
    assert!(passed.is_empty(), "admitted by /v1/*: {passed:?}");
    // The query and the fragment are not part of the path that is matched, and nothing
    // in them rescues a path outside the scope.
    for p in ["/admin?/v1/x", "/admin#/v1/x", "/v1/../admin?x=1", "/admin?path=/v1/"] {
        assert!(check_binding_scope(&b, "GET", p).is_err(), "{p}");
    }
    // Methods are compared exactly: a lower-case or padded GET is another method.
    for m in ["get", "Get", "GET ", "HEAD", "POST", "GETS"] {
        assert!(check_binding_scope(&b, m, "/v1/x").is_err(), "{m:?}");
    }
}

/// Held on abefdea. The check is not vacuous: paths inside `/v1/` are admitted,
/// including printable escapes and a query that mentions a dot segment (the query is
/// never normalised into the path by the upstreams listed above).
#[test]
fn paths_inside_the_scope_are_admitted() {
    let b = binding();
    for p in ["/v1/", "/v1/x", "/v1/a/b/c", "/v1/a%20b", "/v1/a%41", "/v1/x?next=../admin", "/v1/x.json", "/v1/...x"] {
        assert!(check_binding_scope(&b, "GET", p).is_ok(), "{p} refused");
    }
}

/// Held on abefdea. Request-target forms other than absolute-form never reach the
/// binding: origin-form with the binding's `Host` (no authority: refused as not a proxy
/// request), asterisk-form (`OPTIONS *`), authority-form (`CONNECT api.binding.test:80`,
/// refused for a binding), absolute-form with userinfo; and in absolute-form the
/// upstream gets the binding's `Host` whatever the workload wrote, and no fragment (the
/// path checked is the path sent).
#[tokio::test]
async fn request_target_forms_and_the_host_header_hold() {
    let w = world().await;
    for request in [
        "GET /v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: api.binding.test\r\n\r\n",
        "CONNECT api.binding.test:80 HTTP/1.1\r\nHost: api.binding.test:80\r\n\r\n",
        "GET http://x@api.binding.test/v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\r\n",
        "GET http://api.binding.test/admin?/v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\r\n",
        "GET http://api.binding.test/v1/..%2fadmin HTTP/1.1\r\nHost: api.binding.test\r\n\r\n",
    ] {
        let answer = w.send(request).await;
        assert!(status(&answer) != 200, "{request:?} -> {}", show(&answer));
    }
    assert_eq!(w.api.connections(), 0, "nothing refused reached the upstream");
    let answer = w.send("GET http://api.binding.test/v1/ok#/../../admin HTTP/1.1\r\nHost: evil.test\r\n\r\n").await;
    assert_eq!(status(&answer), 200, "{}", show(&answer));
    let seen = w.api.requests().join("\n");
    assert!(seen.starts_with("GET /v1/ok HTTP/1.1\r\n"), "{seen}");
    assert!(seen.to_ascii_lowercase().contains("\r\nhost: api.binding.test"), "{seen}");
    assert!(!seen.contains("evil.test") && !seen.contains('#'), "{seen}");
}
