//! The egress proxy under attack: a table of hostile requests and a set of flows, all
//! against servers this test starts on loopback (127.0.0.2 is the allowlisted canary,
//! 127.0.0.3 a canary no rule names). Nothing is ever sent elsewhere: the metadata
//! address (169.254.169.254) appears here only as a target the proxy must deny; it is
//! refused before any dial, and the proxy's dialer skips metadata addresses whatever a
//! decision said. The canaries' connection counters prove that nothing slipped through.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use common::{ProxySetup, TestRecorder, serve_proxy};
use enclave_core::{BackendEvent, EgressPhase, MemorySecrets, Plan, Policy};
use enclave_egress::{DnsResolver, ProxyTask, Resolve, SessionProxy, SessionProxyConfig, StaticResolver};
use enclave_test_servers::{Canary, DnsStub, Reply, TestCa, Tunnel, connect_raw, connect_tls, raw, response, status};
use futures::channel::mpsc;
use tokio::net::TcpListener;

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const SECRET: &str = "canary-binding-secret-7f3a9c";

fn plan_of(yaml: &str) -> Plan {
    let parsed =
        enclave_spec::parse("inline.yaml", yaml.as_bytes()).unwrap_or_else(|e| panic!("spec refused: {:#?}", e.errors));
    enclave_core::plan(
        &parsed.spec,
        &Policy { host_loopback: vec!["127.0.0.0/8".parse().unwrap()], ..Policy::default() },
    )
    .unwrap_or_else(|e| panic!("spec not planned: {e}"))
}

/// The servers and the proxy of one test.
struct World {
    ca: TestCa,
    /// Plain HTTP canary, allowlisted as canary.test and by CIDR.
    a: Canary,
    /// Plain HTTP canary that no rule names (evil.test resolves here).
    b: Canary,
    /// TLS canary for tls.test (and its IP), allowlisted.
    tls: Canary,
    /// The binding's upstream (TLS, api.binding.test), echoing request heads.
    api: Canary,
    proxy: ProxyTask,
    events: mpsc::UnboundedReceiver<BackendEvent>,
}

struct Options {
    phase: EgressPhase,
    broken_audit: bool,
    resolver: Option<Arc<dyn Resolve>>,
    api_reply: Option<Reply>,
    a_reply: Option<Reply>,
    /// Extra allow rules, given canary A's port.
    extra_allow: Option<Box<dyn Fn(u16) -> String>>,
    /// A `repo:` block, given the TLS canary's port.
    repo: Option<Box<dyn Fn(u16) -> String>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            phase: EgressPhase::Run,
            broken_audit: false,
            resolver: None,
            api_reply: None,
            a_reply: None,
            extra_allow: None,
            repo: None,
        }
    }
}

async fn world(options: Options) -> World {
    let ca = TestCa::new();
    let a = match options.a_reply {
        Some(reply) => Canary::start(A, None, reply).await,
        None => Canary::http(A).await,
    };
    let b = Canary::http(B).await;
    let tls = Canary::https(A, ca.server_config(&["tls.test", "127.0.0.2"])).await;
    let api_tls = ca.server_config(&["api.binding.test"]);
    let api = match options.api_reply {
        Some(reply) => Canary::start(A, Some(api_tls), reply).await,
        None => Canary::https(A, api_tls).await,
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind proxy");
    let proxy_port = listener.local_addr().expect("addr").port();
    let (ap, tp, apip) = (a.port(), tls.port(), api.port());
    let yaml = format!(
        r#"
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: proxy-attacks
spec:
  {repo}
  command: ["true"]
  egress:
    mode: allowlist
    allow:
      - host: canary.test
        ports: [{ap}]
      - host: tls.test
        ports: [{tp}]
      - cidr: 127.0.0.2/32
        ports: [80, {ap}, {tp}, {apip}]
      - cidr: 127.0.0.1/32
        ports: [{proxy_port}]
{extra}
{binding}"#,
        repo = options.repo.map_or_else(String::new, |f| f(tls.port())),
        extra = options.extra_allow.map_or_else(String::new, |f| f(a.port())),
        binding = enclave_test_servers::api_binding_yaml(apip),
    );
    let plan = Arc::new(plan_of(&yaml));
    let resolver: Arc<dyn Resolve> = options.resolver.unwrap_or_else(|| {
        Arc::new(StaticResolver::new(HashMap::from([
            ("canary.test".to_owned(), vec![IpAddr::V4(A)]),
            ("tls.test".to_owned(), vec![IpAddr::V4(A)]),
            ("api.binding.test".to_owned(), vec![IpAddr::V4(A)]),
            ("evil.test".to_owned(), vec![IpAddr::V4(B)]),
        ])))
    });
    let setup = ProxySetup {
        plan,
        secret: SECRET.to_owned(),
        resolver,
        phase: options.phase,
        broken_audit: options.broken_audit,
    };
    let (proxy, events) = serve_proxy(listener, setup, &ca);
    World { ca, a, b, tls, api, proxy, events }
}

impl World {
    fn addr(&self) -> SocketAddr {
        self.proxy.address
    }

    /// Every event recorded since the last call.
    fn drain(&mut self) -> Vec<BackendEvent> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }

    /// The last egress decision recorded since the last drain, as JSON.
    fn last_decision(&mut self) -> Option<serde_json::Value> {
        self.drain().into_iter().rev().find_map(|e| match e {
            BackendEvent::Egress { decision, .. } => serde_json::to_value(decision).ok(),
            _ => None,
        })
    }

    fn canary_connections(&self) -> [usize; 4] {
        [self.a.connections(), self.b.connections(), self.tls.connections(), self.api.connections()]
    }
}

fn get(url: &str, host: &str) -> String {
    format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn deny_kind(decision: &serde_json::Value) -> String {
    decision["reason"]["kind"].as_str().unwrap_or("(allow)").to_owned()
}

/// One hostile request: what the workload sends and what it must get back.
struct Attack {
    name: &'static str,
    request: String,
    /// Sent as `CONNECT` (the request is the authority), or raw.
    connect: bool,
    status: u16,
    /// The recorded deny reason, where the proxy records one (hyper may refuse a
    /// request line before the proxy sees it; then `None`).
    reason: Option<&'static str>,
}

#[tokio::test]
async fn hostile_requests_are_refused_before_any_dial() {
    let mut w = world(Options::default()).await;
    let (ap, bp, pp) = (w.a.port(), w.b.port(), w.addr().port());
    let attack = |name, request: String, status, reason| Attack { name, request, connect: false, status, reason };
    let tunnel = |name, authority: String, status, reason| Attack {
        name,
        request: authority,
        connect: true,
        status,
        reason: Some(reason),
    };
    let attacks = vec![
        attack("decimal IPv4", get("http://2852039166/", "x"), 403, Some("invalid_host")),
        attack("hex IPv4", get("http://0xA9FEA9FE/", "x"), 403, Some("invalid_host")),
        attack("octal IPv4", get("http://0251.0376.0251.0376/", "x"), 403, Some("invalid_host")),
        attack("short IPv4", get("http://169.254.43518/", "x"), 403, Some("invalid_host")),
        attack("metadata address", get("http://169.254.169.254/latest/meta-data/", "x"), 403, Some("metadata")),
        attack("mapped metadata", get("http://[::ffff:169.254.169.254]/", "x"), 403, Some("metadata")),
        attack("mapped metadata (hex)", get("http://[::ffff:a9fe:a9fe]/", "x"), 403, Some("metadata")),
        attack("unnamed loopback", get(&format!("http://127.0.0.3:{bp}/"), "x"), 403, Some("special_address")),
        attack("IPv6 loopback", get(&format!("http://[::1]:{ap}/"), "x"), 403, Some("never_reachable")),
        attack("private range", get("http://10.0.0.1/", "x"), 403, Some("special_address")),
        attack("mapped loopback", get(&format!("http://[::ffff:7f00:3]:{bp}/"), "x"), 403, Some("special_address")),
        attack("proxy itself", get(&format!("http://127.0.0.1:{pp}/"), "x"), 403, Some("proxy_self")),
        attack("not allowlisted", get(&format!("http://evil.test:{bp}/"), "x"), 403, Some("not_allowlisted")),
        attack("port not allowed", get("http://canary.test:9/", "x"), 403, Some("port_not_allowed")),
        attack("userinfo", get(&format!("http://user@canary.test:{ap}/"), "x"), 400, Some("bad_request")),
        attack("https absolute form", get("https://canary.test/", "x"), 400, Some("bad_request")),
        attack("origin form", get("/", "canary.test"), 400, Some("bad_request")),
        attack(
            "CL+TE smuggling",
            format!(
                "POST http://canary.test:{ap}/ HTTP/1.1\r\nHost: canary.test\r\nContent-Length: 4\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET http://evil.test/ HTTP/1.1\r\n\r\n"
            ),
            400,
            Some("bad_request"),
        ),
        attack(
            "duplicate Content-Length",
            format!(
                "POST http://canary.test:{ap}/ HTTP/1.1\r\nHost: canary.test\r\nContent-Length: 3\r\n\
                 Content-Length: 30\r\nConnection: close\r\n\r\nabc"
            ),
            400,
            Some("bad_request"),
        ),
        attack(
            "Transfer-Encoding other than chunked",
            format!(
                "POST http://canary.test:{ap}/ HTTP/1.1\r\nHost: canary.test\r\nTransfer-Encoding: gzip, chunked\r\n\
                 Connection: close\r\n\r\n0\r\n\r\n"
            ),
            400,
            None,
        ),
        attack("percent in host", get(&format!("http://canary%2etest:{ap}/"), "x"), 400, None),
        attack(
            "header folding",
            format!(
                "GET http://canary.test:{ap}/ HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n"
            ),
            400,
            Some("bad_request"),
        ),
        attack(
            "space before colon",
            format!("GET http://canary.test:{ap}/ HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"),
            400,
            Some("bad_request"),
        ),
        attack("fullwidth digits", get("http://\u{ff11}\u{ff12}\u{ff17}.0.0.2/", "x"), 400, None),
        tunnel("CONNECT to an unnamed IP", format!("127.0.0.3:{bp}"), 403, "special_address"),
        tunnel("CONNECT to metadata", "169.254.169.254:443".to_owned(), 403, "metadata"),
        tunnel("CONNECT decimal IP", "2852039166:443".to_owned(), 403, "invalid_host"),
        tunnel("CONNECT not allowlisted", "evil.test:443".to_owned(), 403, "not_allowlisted"),
        tunnel("CONNECT to a binding (no tunnel injection)", "api.binding.test:80".to_owned(), 400, "bad_request"),
        tunnel("CONNECT mapped loopback", format!("[::ffff:127.0.0.3]:{bp}"), 403, "special_address"),
    ];
    assert!(attacks.len() >= 25, "the table is the point: keep it large");
    let mut failures = Vec::new();
    for attack in &attacks {
        let before = w.canary_connections();
        let (got, text) = if attack.connect {
            connect_raw(w.addr(), &attack.request, b"").await
        } else {
            let text = raw(w.addr(), &attack.request).await;
            (status(&text), text)
        };
        let decision = w.last_decision();
        let kind = decision.as_ref().map(deny_kind);
        if got != attack.status {
            failures.push(format!("{}: status {got}, want {} ({text:?})", attack.name, attack.status));
        }
        if let Some(want) = attack.reason
            && kind.as_deref() != Some(want)
        {
            failures.push(format!("{}: recorded {kind:?}, want {want}", attack.name));
        }
        if attack.reason.is_none() && decision.as_ref().is_some_and(|d| d["decision"] == "allow") {
            failures.push(format!("{}: recorded an allow", attack.name));
        }
        if w.canary_connections() != before {
            failures.push(format!("{}: a canary was contacted", attack.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} attacks misbehaved:\n{}",
        failures.len(),
        attacks.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn plain_http_gets_a_rebuilt_host_and_no_proxy_headers() {
    let mut w = world(Options::default()).await;
    let ap = w.a.port();
    let request = format!(
        "GET http://canary.test:{ap}/path?q=1 HTTP/1.1\r\nHost: evil.test\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
         Proxy-Connection: keep-alive\r\nX-Drop: 1\r\nConnection: close, X-Drop\r\nX-Keep: yes\r\n\r\n"
    );
    let answer = raw(w.addr(), &request).await;
    assert_eq!(status(&answer), 200, "{answer}");
    let seen = w.a.requests();
    assert_eq!(seen.len(), 1);
    let head = seen[0].to_ascii_lowercase();
    assert!(head.starts_with("get /path?q=1 http/1.1"), "origin form upstream: {head}");
    assert!(head.contains(&format!("host: canary.test:{ap}")), "Host rebuilt from the checked authority: {head}");
    assert!(!head.contains("evil.test"), "spoofed Host dropped: {head}");
    assert!(!head.contains("proxy-"), "Proxy-* headers stripped: {head}");
    assert!(!head.contains("x-drop"), "headers named by Connection stripped: {head}");
    assert!(head.contains("x-keep: yes"));
    assert_eq!(w.b.connections(), 0);
    let decision = w.last_decision().expect("recorded");
    assert_eq!(decision["decision"], "allow");
    assert_eq!(decision["rule"], "allow[0]");
}

#[tokio::test]
async fn a_tunnel_opens_only_for_a_matching_sni() {
    let mut w = world(Options::default()).await;
    let tp = w.tls.port();
    let client = w.ca.client_config();
    let request = "GET /inside HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n";

    // Matching SNI: the bytes pass untouched, end to end TLS.
    let ok = connect_tls(w.addr(), &format!("tls.test:{tp}"), "tls.test", client.clone(), request).await;
    assert!(matches!(&ok, Tunnel::Answered(body) if body.contains("GET /inside")), "{ok:?}");
    assert_eq!(w.last_decision().map(|d| d["decision"].clone()), Some("allow".into()));
    assert_eq!(w.tls.connections(), 1);

    // SNI naming another server (domain fronting): refused before upstream is dialled.
    let fronted = connect_tls(w.addr(), &format!("tls.test:{tp}"), "evil.test", client.clone(), request).await;
    assert!(matches!(fronted, Tunnel::TlsFailed(_)), "{fronted:?}");
    let d = w.last_decision().expect("recorded");
    assert_eq!(deny_kind(&d), "sni_mismatch");
    assert_eq!(d["reason"]["sni"], "evil.test");

    // No SNI at all for a named host.
    let bare = connect_tls(w.addr(), &format!("tls.test:{tp}"), "127.0.0.2", client.clone(), request).await;
    assert!(matches!(bare, Tunnel::TlsFailed(_)), "{bare:?}");
    assert_eq!(w.last_decision().map(|d| deny_kind(&d)).as_deref(), Some("sni_mismatch"));

    // Not TLS at all (plain HTTP smuggled into a tunnel).
    let (code, _) = connect_raw(w.addr(), &format!("tls.test:{tp}"), request.as_bytes()).await;
    assert_eq!(code, 200, "CONNECT itself is accepted; the bytes after it are judged");
    assert_eq!(w.last_decision().map(|d| deny_kind(&d)).as_deref(), Some("sni_mismatch"));
    assert_eq!(w.tls.connections(), 1, "no refused tunnel reached the upstream");
}

#[tokio::test]
async fn a_tunnel_resolves_its_host_once_and_dials_that_answer() {
    let resolver = Arc::new(StaticResolver::new(HashMap::from([("tls.test".to_owned(), vec![IpAddr::V4(A)])])));
    let mut w = world(Options { resolver: Some(resolver.clone()), ..Options::default() }).await;
    let tp = w.tls.port();
    let request = "GET /once HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n";
    let ok = connect_tls(w.addr(), &format!("tls.test:{tp}"), "tls.test", w.ca.client_config(), request).await;
    assert!(matches!(&ok, Tunnel::Answered(body) if body.contains("GET /once")), "{ok:?}");
    assert_eq!(w.last_decision().map(|d| d["decision"].clone()), Some("allow".into()));
    assert_eq!(resolver.lookups(), 1, "one CONNECT, one DNS answer: the one checked and dialled");
}

#[tokio::test]
async fn an_ip_named_by_a_cidr_rule_tunnels_without_sni() {
    let mut w = world(Options::default()).await;
    let tp = w.tls.port();
    let request = "GET /by-ip HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n\r\n";
    let got = connect_tls(w.addr(), &format!("127.0.0.2:{tp}"), "127.0.0.2", w.ca.client_config(), request).await;
    assert!(matches!(&got, Tunnel::Answered(body) if body.contains("/by-ip")), "{got:?}");
    assert_eq!(w.last_decision().map(|d| d["rule"].clone()), Some("allow[2]".into()));
}

#[tokio::test]
async fn a_spoofed_host_inside_a_tunnel_reaches_only_the_checked_address() {
    let mut w = world(Options::default()).await;
    let tp = w.tls.port();
    let request = "GET /spoof HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n";
    let got = connect_tls(w.addr(), &format!("tls.test:{tp}"), "tls.test", w.ca.client_config(), request).await;
    assert!(matches!(&got, Tunnel::Answered(body) if body.contains("Host: evil.test")), "{got:?}");
    assert_eq!(w.tls.requests().len(), 1, "the request went to the vetted address");
    assert_eq!(w.b.connections(), 0, "evil.test's address was never dialled");
    assert!(!w.tls.requests()[0].contains(SECRET), "nothing is injected into a tunnel");
    w.drain();
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let target = Canary::http(B).await;
    let location = format!("http://127.0.0.3:{}/", target.port());
    let reply_location = location.clone();
    let mut w = world(Options {
        a_reply: Some(Arc::new(move |_: &str| response(302, &[("Location", &reply_location)], ""))),
        ..Options::default()
    })
    .await;
    let answer = raw(w.addr(), &get(&format!("http://canary.test:{}/", w.a.port()), "x")).await;
    assert_eq!(status(&answer), 302, "{answer}");
    assert!(answer.contains(&location), "the Location goes back to the workload as sent");
    let follow = raw(w.addr(), &get(&location, "x")).await;
    assert_eq!(status(&follow), 403, "the workload's own follow-up is decided like any request");
    assert_eq!(w.last_decision().map(|d| deny_kind(&d)).as_deref(), Some("special_address"));
    assert_eq!(target.connections(), 0, "the redirect target was never contacted");
}

#[tokio::test]
async fn dns_rebinding_cannot_move_a_checked_connection() {
    // First answer: the allowlisted canary; every later answer: a loopback address no
    // rule names, where a canary listens on the same port.
    let dns = DnsStub::start(vec![A, B]).await;
    let resolver: Arc<dyn Resolve> = Arc::new(DnsResolver::with_server(dns.addr).expect("resolver"));
    let mut w = world(Options {
        resolver: Some(resolver),
        extra_allow: Some(Box::new(|port| format!("      - host: rebind.test\n        ports: [{port}]"))),
        ..Options::default()
    })
    .await;
    let port = w.a.port();
    let rebound = Canary::start(B, None, enclave_test_servers::echo()).await;
    let rebound_same_port = tokio::net::TcpListener::bind((B, port)).await.ok();
    let answer = raw(w.addr(), &get(&format!("http://rebind.test:{port}/first"), "x")).await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(dns.a_queries(), 1, "exactly one lookup for one connection");
    assert!(w.a.requests()[0].contains("/first"), "dialled the address that was checked");
    // The next connection resolves again and gets the rebound answer: denied.
    let second = raw(w.addr(), &get(&format!("http://rebind.test:{port}/second"), "x")).await;
    assert_eq!(status(&second), 403, "{second}");
    assert_eq!(dns.a_queries(), 2);
    assert_eq!(w.last_decision().map(|d| deny_kind(&d)).as_deref(), Some("special_address"));
    assert_eq!(rebound.connections(), 0);
    if let Some(listener) = rebound_same_port {
        let accepted = tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "nothing connected to the rebound address");
    }
}

#[tokio::test]
async fn a_name_no_rule_admits_is_never_looked_up() {
    let resolver = Arc::new(StaticResolver::new(HashMap::new()));
    let mut w = world(Options { resolver: Some(resolver.clone()), ..Options::default() }).await;
    let answer = raw(w.addr(), &get("http://exfiltrate-this.evil.test/", "x")).await;
    assert_eq!(status(&answer), 403);
    assert_eq!(w.last_decision().map(|d| deny_kind(&d)).as_deref(), Some("not_allowlisted"));
    assert_eq!(resolver.lookups(), 0, "DNS is not a side channel for denied names");
}

#[tokio::test]
async fn a_binding_gets_its_credential_at_the_boundary_and_never_back() {
    let mut w = world(Options::default()).await;
    let request = "GET http://api.binding.test/v1/user?x=1 HTTP/1.1\r\nHost: api.binding.test\r\n\
                   Authorization: Bearer forged-by-workload\r\nConnection: close\r\n\r\n";
    let answer = raw(w.addr(), request).await;
    assert_eq!(status(&answer), 200, "{answer}");
    let seen = w.api.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].contains(&format!("authorization: Bearer {SECRET}")), "injected upstream: {}", seen[0]);
    assert!(!seen[0].contains("forged-by-workload"), "the workload's header was overwritten");
    assert!(seen[0].starts_with("GET /v1/user?x=1 HTTP/1.1"), "{}", seen[0]);
    // The echo upstream sent the credential back; the workload sees only ***.
    assert!(!answer.contains(SECRET), "echoed credential stripped: {answer}");
    assert!(answer.contains("Bearer ***"), "{answer}");
    let events = w.drain();
    let uses: Vec<_> = events.iter().filter(|e| matches!(e, BackendEvent::BindingUsed { .. })).collect();
    assert!(uses.iter().any(|e| matches!(e, BackendEvent::BindingUsed { allowed: true, status: Some(200), .. })));
    assert!(!format!("{events:?}").contains(SECRET), "no record carries the value");
}

#[tokio::test]
async fn an_echoed_credential_is_stripped_from_headers_too() {
    let reply: Reply = Arc::new(|req: &str| {
        let token = req.lines().find_map(|l| l.strip_prefix("authorization: ")).unwrap_or("").to_owned();
        response(200, &[("X-Echo", &token)], "ok")
    });
    let mut w = world(Options { api_reply: Some(reply), ..Options::default() }).await;
    let answer = raw(w.addr(), &get("http://api.binding.test/v1/me", "api.binding.test")).await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(!answer.contains(SECRET), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("x-echo"), "the echoing header is dropped: {answer}");
    w.drain();
}

#[tokio::test]
async fn binding_scope_is_enforced_before_the_upstream_is_touched() {
    let mut w = world(Options::default()).await;
    let delete =
        "DELETE http://api.binding.test/v1/user HTTP/1.1\r\nHost: api.binding.test\r\nConnection: close\r\n\r\n";
    assert_eq!(status(&raw(w.addr(), delete).await), 403);
    let outside = get("http://api.binding.test/admin/keys", "api.binding.test");
    assert_eq!(status(&raw(w.addr(), &outside).await), 403);
    let dotdot = get("http://api.binding.test/v1/../admin/keys", "api.binding.test");
    assert_eq!(status(&raw(w.addr(), &dotdot).await), 403);
    let encoded = get("http://api.binding.test/v1/%2e%2e/admin/keys", "api.binding.test");
    assert_eq!(status(&raw(w.addr(), &encoded).await), 403);
    let slash = get("http://api.binding.test/v1%2f..%2fadmin", "api.binding.test");
    assert_eq!(status(&raw(w.addr(), &slash).await), 403);
    assert_eq!(w.api.connections(), 0, "the upstream never saw a refused call");
    let refused: Vec<_> = w
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            BackendEvent::BindingUsed { allowed: false, method, path, .. } => Some(format!("{method} {path}")),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 5, "{refused:?}");
}

#[tokio::test]
async fn a_binding_credential_never_goes_to_another_host() {
    // The binding's upstream redirects to the allowlisted canary: the redirect goes back
    // to the workload, and the canary never sees the credential.
    let canary = Canary::http(A).await;
    let location = format!("http://canary.test:{}/steal", canary.port());
    let reply: Reply = Arc::new(move |_: &str| response(307, &[("Location", &location)], ""));
    let mut w = world(Options { api_reply: Some(reply), ..Options::default() }).await;
    let answer = raw(w.addr(), &get("http://api.binding.test/v1/x", "api.binding.test")).await;
    assert_eq!(status(&answer), 307, "{answer}");
    assert_eq!(canary.connections(), 0, "the proxy did not follow the redirect");
    // A plain request to an allowlisted host carries no binding credential.
    let plain = raw(w.addr(), &get(&format!("http://canary.test:{}/", w.a.port()), "x")).await;
    assert_eq!(status(&plain), 200);
    assert!(w.a.requests().iter().all(|r| !r.contains(SECRET)));
    // And the binding host on another port is not the binding.
    let other_port = raw(w.addr(), &get("http://api.binding.test:8080/v1/x", "x")).await;
    assert_eq!(status(&other_port), 403);
    w.drain();
}

#[tokio::test]
async fn nothing_passes_when_the_audit_cannot_be_written() {
    let w = world(Options { broken_audit: true, ..Options::default() }).await;
    let answer = raw(w.addr(), &get(&format!("http://canary.test:{}/", w.a.port()), "x")).await;
    assert_eq!(status(&answer), 403, "{answer}");
    let tp = w.tls.port();
    let tunnel = connect_tls(w.addr(), &format!("tls.test:{tp}"), "tls.test", w.ca.client_config(), "x").await;
    assert!(matches!(tunnel, Tunnel::TlsFailed(_)), "{tunnel:?}");
    let binding = raw(w.addr(), &get("http://api.binding.test/v1/x", "api.binding.test")).await;
    assert_eq!(status(&binding), 403, "{binding}");
    assert_eq!(w.canary_connections(), [0, 0, 0, 0]);
}

#[tokio::test]
async fn the_clone_phase_reaches_only_the_repo_host_and_revocation_closes_it() {
    let mut w = world(Options {
        phase: EgressPhase::Clone,
        repo: Some(Box::new(|port| format!("repo:\n    url: https://tls.test:{port}/team/app.git"))),
        ..Options::default()
    })
    .await;
    let tp = w.tls.port();
    // The repo host on another port is not the repo.
    assert_eq!(connect_raw(w.addr(), "tls.test:443", b"").await.0, 403);
    assert_eq!(w.last_decision().map(|d| deny_kind(&d)).as_deref(), Some("clone_only_repo_host"));
    // Workload rules do not apply during the clone.
    let workload_rule = raw(w.addr(), &get(&format!("http://canary.test:{}/", w.a.port()), "x")).await;
    assert_eq!(status(&workload_rule), 403);
    assert_eq!(w.last_decision().map(|d| deny_kind(&d)).as_deref(), Some("clone_only_repo_host"));

    // A tunnel to the repo opens under the clone rule...
    let mut stream = tokio::net::TcpStream::connect(w.addr()).await.expect("connect");
    let connect = format!("CONNECT tls.test:{tp} HTTP/1.1\r\nHost: tls.test\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, connect.as_bytes()).await.expect("write");
    let head = enclave_test_servers::read_head(&mut stream).await;
    assert_eq!(status(&head), 200, "{head}");
    let name = rustls::pki_types::ServerName::try_from("tls.test").expect("name");
    let tls = tokio_rustls::TlsConnector::from(w.ca.client_config()).connect(name, stream).await;
    let mut tls = tls.expect("TLS through the clone tunnel");
    assert_eq!(w.last_decision().map(|d| d["rule"].clone()), Some("clone:repo".into()));

    // ...and revocation closes it: the open tunnel does not outlive the clone's reach.
    w.proxy.proxy().revoke_clone_reach();
    assert_eq!(w.proxy.proxy().phase(), Some(EgressPhase::Run));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest),
    )
    .await;
    assert!(read.is_ok(), "the tunnel was closed at revocation");
    assert!(w.tls.requests().is_empty(), "nothing passed after revocation");

    // After revocation the workload's rules apply, and they do not name the repo port.
    assert_eq!(connect_raw(w.addr(), &format!("tls.test:{tp}"), b"").await.0, 200, "tls.test:{tp} is a workload rule");
    let workload = raw(w.addr(), &get(&format!("http://canary.test:{}/", w.a.port()), "x")).await;
    assert_eq!(status(&workload), 200);
    let before = w.a.connections();
    w.proxy.proxy().close();
    let closed = raw(w.addr(), &get(&format!("http://canary.test:{}/", w.a.port()), "x")).await;
    assert_ne!(status(&closed), 200, "a closed session's proxy forwards nothing: {closed}");
    assert_eq!(w.a.connections(), before);
}

/// A proxy for one session from an inline spec body, recording into its own channel.
fn session_proxy(name: &str, body: &str) -> (Arc<SessionProxy>, mpsc::UnboundedReceiver<BackendEvent>) {
    let yaml = format!(
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  command: [\"true\"]\n{body}"
    );
    let (tx, rx) = mpsc::unbounded();
    let proxy = SessionProxy::new(SessionProxyConfig {
        plan: Arc::new(plan_of(&yaml)),
        secrets: Arc::new(MemorySecrets::default()),
        resolver: Arc::new(StaticResolver::default()),
        recorder: Arc::new(TestRecorder { tx, broken: false }),
        proxy_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        host_addresses: enclave_egress::HostAddresses::Live,
        trusted_clone_networks: Vec::new(),
        upstream_tls: enclave_egress::upstream_tls(&[]).expect("tls config"),
        phase: EgressPhase::Run,
    });
    (proxy, rx)
}

/// Sends `request` from source address `from`; returns what came back (empty when the
/// connection was closed without a byte).
async fn raw_from(from: Ipv4Addr, to: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind source");
    let mut stream = socket.connect(to).await.expect("connect");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn a_shared_proxy_names_the_session_by_source_address_never_by_a_header() {
    let canary = Canary::http(A).await;
    let port = canary.port();
    let open_body =
        format!("  egress:\n    mode: allowlist\n    allow:\n      - cidr: 127.0.0.2/32\n        ports: [{port}]\n");
    let closed_body = "  egress:\n    mode: allowlist\n    allow:\n      - host: nothing.test\n        ports: [443]\n";
    let (open, mut open_events) = session_proxy("open-session", &open_body);
    let (closed, mut closed_events) = session_proxy("closed-session", closed_body);
    let directory = Arc::new(enclave_egress::StaticDirectory::default());
    let (open_ip, closed_ip, stranger) =
        (Ipv4Addr::new(127, 0, 0, 5), Ipv4Addr::new(127, 0, 0, 6), Ipv4Addr::new(127, 0, 0, 7));
    directory.insert(IpAddr::V4(open_ip), open);
    directory.insert(IpAddr::V4(closed_ip), closed);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let task = enclave_egress::serve_directory(listener, directory.clone()).expect("serve");
    let request = |claim: &str| {
        format!(
            "GET http://127.0.0.2:{port}/ HTTP/1.1\r\nHost: x\r\nX-Enclave-Session: {claim}\r\nConnection: close\r\n\r\n"
        )
    };

    let allowed = raw_from(open_ip, task.address, &request("closed-session")).await;
    assert_eq!(status(&allowed), 200, "{allowed}");
    let denied = raw_from(closed_ip, task.address, &request("open-session")).await;
    assert_eq!(status(&denied), 403, "the claim in a header changes nothing: {denied}");
    let unknown = raw_from(stranger, task.address, &request("open-session")).await;
    assert!(unknown.is_empty(), "an unknown source gets not a byte: {unknown}");
    assert_eq!(canary.connections(), 1, "only the open session's request reached the canary");

    // Each decision went to its own session's audit.
    let decided = |rx: &mut mpsc::UnboundedReceiver<BackendEvent>| {
        let mut out = Vec::new();
        while let Ok(BackendEvent::Egress { decision, .. }) = rx.try_recv() {
            out.push(decision.is_allow());
        }
        out
    };
    assert_eq!(decided(&mut open_events), [true]);
    assert_eq!(decided(&mut closed_events), [false]);

    // A session that ends is forgotten: its address gets nothing any more.
    directory.remove(IpAddr::V4(open_ip));
    let after = raw_from(open_ip, task.address, &request("open-session")).await;
    assert!(after.is_empty(), "{after}");
    assert_eq!(canary.connections(), 1);
}
