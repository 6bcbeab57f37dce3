//! Red-team attempts on service bindings, in-process against the egress proxy: the
//! binding's upstream is the test's own TLS server on loopback (127.0.0.2), whose reply
//! each test writes byte for byte. The upstream is hostile: it has seen the credential
//! the proxy injected (on this call or an earlier one) and tries to hand it back to the
//! workload through the proxy's answer, or the workload tries to leave the binding's
//! scope (GET on `/v1/*`). Nothing is ever sent to an address the test did not create.
//!
//! Every test asserts the invariant (no form of the credential reaches the workload or
//! the audit; the scope holds). The comment at the top of each test says whether it
//! FAILED (a hole) or PASSED on the code it was written against (d53c693). The failing
//! tests are kept as they are (not ignored): they fail until the hole is closed.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{ProxySetup, serve_proxy};
use enclave_core::{BackendEvent, EgressPhase, Plan, Policy, Redactor, Secret};
use enclave_egress::{ProxyTask, StaticResolver};
use enclave_test_servers::{Canary, RawReply, TestCa};
use futures::channel::mpsc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The credential of most tests: lower case, so a lower-casing channel keeps it whole.
const SECRET: &str = "redteam-binding-secret-4c7e19";
/// A credential with upper-case letters, for the case-folding tests.
const MIXED: &str = "RedTeam-Binding-SECRET-9QxZ3k";

struct World {
    api: Canary,
    proxy: ProxyTask,
    events: mpsc::UnboundedReceiver<BackendEvent>,
    secret: &'static str,
}

struct Setup {
    secret: &'static str,
    /// Names on the upstream's certificate (signed by the CA the proxy trusts).
    cert_names: Vec<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self { secret: SECRET, cert_names: vec!["api.binding.test".to_owned()] }
    }
}

async fn world(reply: RawReply) -> World {
    world_with(Setup::default(), reply).await
}

async fn world_with(setup: Setup, reply: RawReply) -> World {
    let ca = TestCa::new();
    let names: Vec<&str> = setup.cert_names.iter().map(String::as_str).collect();
    let api = Canary::start_raw(A, Some(ca.server_config(&names)), reply).await;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind proxy");
    let yaml = format!(
        r#"
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: redteam-binding
spec:
  command: ["true"]
  egress:
    mode: allowlist
    allow:
      - cidr: 127.0.0.2/32
        ports: [{port}]
{binding}"#,
        port = api.port(),
        binding = enclave_test_servers::api_binding_yaml(api.port()),
    );
    let parsed = enclave_spec::parse("inline.yaml", yaml.as_bytes()).unwrap_or_else(|e| panic!("{:#?}", e.errors));
    let policy = Policy { host_loopback: vec!["127.0.0.0/8".parse().unwrap()], ..Policy::default() };
    let plan: Plan = enclave_core::plan(&parsed.spec, &policy).expect("plan");
    let proxy_setup = ProxySetup {
        plan: Arc::new(plan),
        secret: setup.secret.to_owned(),
        resolver: Arc::new(StaticResolver::new(HashMap::from([("api.binding.test".to_owned(), vec![IpAddr::V4(A)])]))),
        phase: EgressPhase::Run,
        broken_audit: false,
    };
    let (proxy, events) = serve_proxy(listener, proxy_setup, &ca);
    World { api, proxy, events, secret: setup.secret }
}

impl World {
    fn addr(&self) -> SocketAddr {
        self.proxy.address
    }

    fn drain(&mut self) -> Vec<BackendEvent> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }

    /// Whether these bytes hold the credential in a form the project's own checker knows,
    /// or plainly in any letter case.
    fn leaks(&self, bytes: &[u8]) -> bool {
        leaks(self.secret, bytes)
    }

    /// Sends one GET through the binding and returns the raw answer.
    async fn call(&self, path: &str) -> Vec<u8> {
        self.send(&format!("GET http://api.binding.test{path} HTTP/1.1\r\nHost: api.binding.test\r\n\r\n")).await
    }

    async fn send(&self, request: &str) -> Vec<u8> {
        raw_bytes(self.addr(), request.as_bytes()).await
    }

    /// The audit events since the last drain, as JSON text, and whether they leak.
    fn audit_leaks(&mut self) -> (bool, String) {
        let events = self.drain();
        let text = events.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join("\n");
        (self.leaks(text.as_bytes()), text)
    }
}

fn leaks(secret: &str, bytes: &[u8]) -> bool {
    let lower = bytes.to_ascii_lowercase();
    Redactor::new(&[Secret::new(secret)]).found_in(bytes) || memchr_find(&lower, secret.to_ascii_lowercase().as_bytes())
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn raw_bytes(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out)).await;
    out
}

fn status(answer: &[u8]) -> u16 {
    String::from_utf8_lossy(answer).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The body of a raw answer (after the head; the proxy sends Content-Length framing).
fn body(answer: &[u8]) -> Vec<u8> {
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |p| p + 4);
    answer[at..].to_vec()
}

fn show(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer).to_string();
    if text.len() > 2000 { format!("{}...", &text[..2000]) } else { text }
}

/// An HTTP/1.1 head with Content-Length for `body`, plus `headers`, then the body.
fn reply_bytes(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn fixed(bytes: Vec<u8>) -> RawReply {
    Arc::new(move |_: &str| bytes.clone())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out);
    out
}

// ---------------------------------------------------------------------------------
// Holes: channels the proxy does not check.
// ---------------------------------------------------------------------------------

/// FAILED on d53c693. The upstream names the credential as its Content-Encoding. The
/// proxy refuses the unknown coding, and its refusal text quotes the (lower-cased)
/// coding list verbatim, in the 502 body the workload reads and in the audit record.
/// Nothing runs the credential checks on the proxy's own error text.
#[tokio::test]
async fn a_content_encoding_naming_the_credential_is_quoted_back() {
    let mut w = world(fixed(reply_bytes("200 OK", &[("Content-Encoding", format!("Bearer {SECRET}"))], b"x"))).await;
    let answer = w.call("/v1/ce").await;
    let (audit_leaks, audit) = w.audit_leaks();
    assert!(
        !w.leaks(&answer) && !audit_leaks,
        "workload leak: {}, audit leak: {audit_leaks}\n{}\n{audit}",
        w.leaks(&answer),
        show(&answer)
    );
}

/// FAILED on d53c693. Same channel, re-encoded: hex in a Content-Encoding value is also
/// quoted in the 502 body (lower-casing keeps hex whole).
#[tokio::test]
async fn a_hex_content_encoding_is_quoted_back() {
    let mut w = world(fixed(reply_bytes("200 OK", &[("Content-Encoding", hex::encode(SECRET))], b"x"))).await;
    let answer = w.call("/v1/ce-hex").await;
    let (audit_leaks, audit) = w.audit_leaks();
    assert!(
        !w.leaks(&answer) && !audit_leaks,
        "workload leak: {}, audit leak: {audit_leaks}\n{}\n{audit}",
        w.leaks(&answer),
        show(&answer)
    );
}

/// FAILED on d53c693. The upstream (which learned the credential on an earlier call)
/// presents a certificate that chains to a trusted root but is issued for other names,
/// one of them carrying the credential as a DNS label (anyone can get a public
/// certificate for `<anything>.their-own-domain`). rustls's verification error lists
/// the names the certificate is valid for; the proxy puts that error in the 502 body
/// ("TLS with api.binding.test: invalid peer certificate: ... is only valid for ...")
/// and in the audit.
#[tokio::test]
async fn certificate_names_carry_the_credential_into_the_error() {
    let setup = Setup { cert_names: vec![format!("{SECRET}.evil.test")], ..Setup::default() };
    let mut w = world_with(setup, fixed(reply_bytes("200 OK", &[], b"never"))).await;
    let answer = w.call("/v1/tls").await;
    let (audit_leaks, audit) = w.audit_leaks();
    assert_eq!(status(&answer), 502, "{}", show(&answer));
    assert!(
        !w.leaks(&answer) && !audit_leaks,
        "workload leak: {}, audit leak: {audit_leaks}\n{}\n{audit}",
        w.leaks(&answer),
        show(&answer)
    );
}

/// FAILED on d53c693 (the audit part; the workload part held). A header whose *name*
/// holds the credential is dropped from the answer, but the audit note lists the names
/// of the dropped headers verbatim ("headers dropped: x-redteam-binding-secret-..."),
/// and the orchestrator does not redact `BindingUsed.reason`.
#[tokio::test]
async fn a_header_name_holding_the_credential_is_written_to_the_audit() {
    let mut w = world(fixed(reply_bytes("200 OK", &[(&format!("X-{SECRET}"), "1".to_owned())], b"ok"))).await;
    let answer = w.call("/v1/hn").await;
    assert_eq!(status(&answer), 200, "{}", show(&answer));
    assert!(!w.leaks(&answer), "the workload got the credential back: {}", show(&answer));
    let (audit_leaks, audit) = w.audit_leaks();
    assert!(!audit_leaks, "the audit holds the credential: {audit}");
}

/// FAILED on d53c693. A credential with upper-case letters, reflected as a header
/// name: hyper lower-cases header names before the check, the check is case-sensitive,
/// so the lower-cased credential passes to the workload (all of it but the letter case;
/// for a credential that is lower-case anyway, e.g. hex or a UUID, this is nothing, but
/// the header-name check itself is then still bypassed by any upper-case letter).
#[tokio::test]
async fn a_mixed_case_credential_comes_back_lower_cased_in_a_header_name() {
    let setup = Setup { secret: MIXED, ..Setup::default() };
    let mut w =
        world_with(setup, fixed(reply_bytes("200 OK", &[(&format!("X-{MIXED}"), "1".to_owned())], b"ok"))).await;
    let answer = w.call("/v1/case").await;
    w.drain();
    assert!(
        !memchr_find(&answer.to_ascii_lowercase(), MIXED.to_ascii_lowercase().as_bytes()),
        "the workload got the credential back (case-folded): {}",
        show(&answer)
    );
}

/// FAILED on d53c693. The same credential reflected upper-cased (or lower-cased) in the
/// body: no form is case-insensitive except hex.
#[tokio::test]
async fn a_case_folded_credential_in_the_body_comes_back() {
    let setup = Setup { secret: MIXED, ..Setup::default() };
    let body = format!("token: {} / {}", MIXED.to_uppercase(), MIXED.to_lowercase());
    let mut w = world_with(setup, fixed(reply_bytes("200 OK", &[], body.as_bytes()))).await;
    let answer = w.call("/v1/case-body").await;
    w.drain();
    assert!(!w.leaks(&answer), "the workload got the credential back (case-folded): {}", show(&answer));
}

/// FAILED on d53c693. Transfer-level compression: `Transfer-Encoding: gzip, chunked`.
/// hyper removes only the chunked framing, the proxy strips Transfer-Encoding as
/// hop-by-hop and looks only at Content-Encoding, so the gzip bytes go to the workload
/// unchecked; it gunzips them.
#[tokio::test]
async fn gzip_as_a_transfer_coding_is_not_looked_into() {
    // Compressible text, so deflate codes it (a short one is sent as a stored block,
    // whose plain bytes the proxy would see and cut).
    let gz = gzip(format!("echo: authorization: Bearer {SECRET}\n").repeat(20).as_bytes());
    let mut reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n".to_vec();
    reply.extend_from_slice(format!("{:x}\r\n", gz.len()).as_bytes());
    reply.extend_from_slice(&gz);
    reply.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut w = world(fixed(reply)).await;
    let answer = w.call("/v1/te-gzip").await;
    w.drain();
    let decoded = gunzip(&body(&answer));
    assert!(!w.leaks(&answer) && !w.leaks(&decoded), "gunzipped by the workload: {}", show(&decoded));
}

/// FAILED on d53c693. A gzip body with no Content-Encoding at all (served as
/// `application/gzip`): the proxy decodes by the header only and never sniffs the gzip
/// magic (1f 8b) or a zlib header, so it passes the compressed credential.
#[tokio::test]
async fn a_gzip_body_without_content_encoding_passes() {
    let gz = gzip(format!("authorization: Bearer {SECRET}\n").repeat(20).as_bytes());
    let mut w = world(fixed(reply_bytes("200 OK", &[("Content-Type", "application/gzip".to_owned())], &gz))).await;
    let answer = w.call("/v1/gz-no-ce").await;
    w.drain();
    let decoded = gunzip(&body(&answer));
    assert!(!w.leaks(&decoded), "gunzipped by the workload: {}", show(&decoded));
}

/// FAILED on d53c693. The echo in UTF-16 (a legitimate text encoding, with a BOM and
/// `charset=utf-16`): no view decodes it.
#[tokio::test]
async fn a_utf16_echo_passes() {
    let text = format!("authorization: Bearer {SECRET}");
    let mut utf16 = vec![0xff, 0xfe];
    for unit in text.encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let mut w =
        world(fixed(reply_bytes("200 OK", &[("Content-Type", "text/plain; charset=utf-16".to_owned())], &utf16))).await;
    let answer = w.call("/v1/utf16").await;
    w.drain();
    let got = body(&answer);
    let decoded: String = char::decode_utf16(
        got.get(2..).unwrap_or_default().chunks(2).map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)])),
    )
    .map(|c| c.unwrap_or('?'))
    .collect();
    assert!(!w.leaks(decoded.as_bytes()), "decoded by the workload: {decoded}");
}

/// FAILED on d53c693. The credential split over two headers of one response: each
/// value is checked alone, and neither half is a form.
#[tokio::test]
async fn a_credential_split_over_two_headers_passes() {
    let (head, tail) = SECRET.split_at(SECRET.len() / 2);
    let mut w =
        world(fixed(reply_bytes("200 OK", &[("X-Part-1", head.to_owned()), ("X-Part-2", tail.to_owned())], b"ok")))
            .await;
    let answer = w.call("/v1/split").await;
    w.drain();
    let text = String::from_utf8_lossy(&answer).to_string();
    let joined: String = ["x-part-1: ", "x-part-2: "]
        .iter()
        .filter_map(|n| {
            text.lines().find_map(|l| l.to_ascii_lowercase().starts_with(n).then(|| l[n.len()..].to_owned()))
        })
        .collect();
    assert!(!w.leaks(joined.as_bytes()), "the workload joined the halves: {joined}");
}

/// FAILED on d53c693. The credential split between a header value and the body.
#[tokio::test]
async fn a_credential_split_between_a_header_and_the_body_passes() {
    let (head, tail) = SECRET.split_at(SECRET.len() / 2);
    let mut w = world(fixed(reply_bytes("200 OK", &[("X-Part", head.to_owned())], tail.as_bytes()))).await;
    let answer = w.call("/v1/split-body").await;
    w.drain();
    let text = String::from_utf8_lossy(&answer).to_string();
    let first = text.lines().find_map(|l| l.strip_prefix("x-part: ")).unwrap_or_default().to_owned();
    let joined = format!("{first}{}", String::from_utf8_lossy(&body(&answer)));
    assert!(!w.leaks(joined.as_bytes()), "the workload joined the halves: {joined}");
}

/// FAILED on d53c693. A debugging upstream that answers with `hexdump -C` of the
/// request (an accidental form, not a crafted one): the hex columns are interrupted by
/// the ASCII gutter and the next line's offset, and the gutter splits the text across
/// lines, so the credential is in no view once it crosses a 16-byte line. Closed on
/// 2026-12-02: a dump's hex and text columns are read as views of their own.
#[tokio::test]
async fn a_hexdump_of_the_request_is_withheld() {
    let reply: RawReply = Arc::new(|request: &str| {
        let mut dump = String::new();
        for (i, line) in request.as_bytes().chunks(16).enumerate() {
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            let (l, r) = hex.split_at(hex.len().min(8));
            let ascii: String =
                line.iter().map(|b| if b.is_ascii_graphic() || *b == b' ' { char::from(*b) } else { '.' }).collect();
            dump.push_str(&format!("{:08x}  {:<23}  {:<23}  |{ascii}|\n", i * 16, l.join(" "), r.join(" ")));
        }
        reply_bytes("200 OK", &[], dump.as_bytes())
    });
    let mut w = world(reply).await;
    let answer = w.call("/v1/hexdump").await;
    w.drain();
    // Withheld (the credential is found column by column), or at least nothing in it.
    assert_eq!(status(&answer), 502, "{}", show(&answer));
    // What a workload does with it: read the hex columns back.
    let text = String::from_utf8_lossy(&body(&answer)).to_string();
    let hex: String = text
        .lines()
        .filter_map(|l| l.get(10..58))
        .flat_map(|cols| cols.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let bytes = hex::decode(&hex).unwrap_or_default();
    assert!(!w.leaks(&bytes), "read back from the hexdump: {}", String::from_utf8_lossy(&bytes));
}

/// FAILED on d53c693. Hex with other separators: `62-69-...` (the code's own comment on
/// `without_separators` says `-` is removed; the code does not), `62,69,...` and
/// C-style `0x62, 0x69`.
#[tokio::test]
async fn hex_with_dashes_commas_or_0x_passes() {
    let dashed = SECRET.bytes().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join("-");
    let commas = SECRET.bytes().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(",");
    let c_array = SECRET.bytes().map(|b| format!("0x{b:02x}")).collect::<Vec<_>>().join(", ");
    let mut failures = Vec::new();
    for (name, form) in [("dashes", dashed), ("commas", commas), ("c-array", c_array)] {
        let mut w = world(fixed(reply_bytes("200 OK", &[], form.as_bytes()))).await;
        let answer = w.call("/v1/hex-sep").await;
        w.drain();
        let digits: String =
            String::from_utf8_lossy(&body(&answer)).replace("0x", "").chars().filter(char::is_ascii_hexdigit).collect();
        let decoded = hex::decode(&digits).unwrap_or_default();
        if w.leaks(&decoded) {
            failures.push(format!("{name}: {}", String::from_utf8_lossy(&body(&answer))));
        }
    }
    assert!(failures.is_empty(), "decoded by the workload: {failures:?}");
}

/// FAILED on d53c693. HTML/XML numeric character references (`&#114;&#x65;...`) and
/// ES2015 code-point escapes (`\u{72}`): escapes as common as the JSON ones, not
/// decoded.
#[tokio::test]
async fn html_entities_and_code_point_escapes_pass() {
    let decimal: String = SECRET.bytes().map(|b| format!("&#{b};")).collect();
    let hexref: String = SECRET.bytes().map(|b| format!("&#x{b:x};")).collect();
    let es6: String = SECRET.bytes().map(|b| format!("\\u{{{b:x}}}")).collect();
    let mut failures = Vec::new();
    for (name, form) in [("decimal", decimal), ("hexref", hexref), ("es6", es6)] {
        let mut w = world(fixed(reply_bytes("200 OK", &[], form.as_bytes()))).await;
        let answer = w.call("/v1/entities").await;
        w.drain();
        let body = String::from_utf8_lossy(&body(&answer)).to_string();
        let decoded: String = body
            .split(['&', '\\', ';', '}'])
            .filter_map(|t| {
                let t = t.trim_start_matches("#x").trim_start_matches('#').trim_start_matches("u{");
                if name == "decimal" { t.parse::<u8>().ok() } else { u8::from_str_radix(t, 16).ok() }
            })
            .map(char::from)
            .collect();
        if leaks(SECRET, decoded.as_bytes()) {
            failures.push(format!("{name}: {decoded}"));
        }
    }
    assert!(failures.is_empty(), "decoded by the workload: {failures:?}");
}

// ---------------------------------------------------------------------------------
// Scope escapes through request headers and encodings.
// ---------------------------------------------------------------------------------

/// FAILED on d53c693. The override headers are matched by exact hyphenated name, but
/// CGI/WSGI-style servers (PHP under some SAPIs, older gunicorn, many Python/Ruby
/// stacks reading `HTTP_*` variables) map `-` and `_` to the same `HTTP_X_HTTP_METHOD_OVERRIDE`.
/// `X_HTTP_Method_Override` and `X_Original_URL` reach the upstream; so does
/// `X-Script-Name` (the Flask "ReverseProxied" recipe's path prefix header).
#[tokio::test]
async fn override_headers_with_underscores_reach_the_upstream() {
    let mut w = world(fixed(reply_bytes("200 OK", &[], b"ok"))).await;
    let request = "GET http://api.binding.test/v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\
                   X_HTTP_Method_Override: DELETE\r\nX_Original_URL: /admin/keys\r\n\
                   X_Rewrite_URL: /admin/keys\r\nX-Script-Name: /admin\r\n\r\n";
    let answer = w.send(request).await;
    w.drain();
    assert_eq!(status(&answer), 200, "{}", show(&answer));
    let seen = w.api.requests().join("\n").to_ascii_lowercase();
    let passed: Vec<&str> = ["x_http_method_override", "x_original_url", "x_rewrite_url", "x-script-name"]
        .into_iter()
        .filter(|n| seen.contains(&format!("{n}:")))
        .collect();
    assert!(passed.is_empty(), "reached the upstream: {passed:?}\n{seen}");
}

/// FAILED on d53c693. Encoded dots the ambiguity check does not know: `%%32%65`
/// (one lenient decode gives `%2e`), IIS's `%u002e`, overlong UTF-8 `%c0%ae`, and
/// full-width dots `%ef%bc%8e` (NFKC-normalising servers): each goes upstream as a
/// path under `/v1/`. Whether the upstream then climbs out depends on the upstream; the
/// proxy refuses `%25` double encoding, so these are the same class. Closed on
/// 2026-12-02: a malformed escape or one outside printable ASCII makes a path ambiguous.
#[tokio::test]
async fn exotic_dot_encodings_are_refused_by_the_scope_check() {
    let mut w = world(fixed(reply_bytes("200 OK", &[], b"ok"))).await;
    let mut passed = Vec::new();
    for path in
        ["/v1/%%32%65%%32%65/admin", "/v1/%u002e%u002e/admin", "/v1/%c0%ae%c0%ae/admin", "/v1/%ef%bc%8e%ef%bc%8e/admin"]
    {
        let answer = w.call(path).await;
        if status(&answer) != 403 {
            passed.push(format!("{path} -> {}", status(&answer)));
        }
    }
    w.drain();
    assert!(passed.is_empty(), "forwarded upstream: {passed:?}");
}

// ---------------------------------------------------------------------------------
// What held (regression value).
// ---------------------------------------------------------------------------------

/// PASSED on d53c693. 1xx informational responses (103 Early Hints, 100 Continue)
/// carrying the credential in their headers are consumed by hyper and never reach the
/// workload.
#[tokio::test]
async fn informational_responses_carry_nothing_back() {
    let mut reply = format!(
        "HTTP/1.1 103 Early Hints {SECRET}\r\nLink: </{SECRET}>; rel=preload\r\nX-Echo: {SECRET}\r\n\r\n\
         HTTP/1.1 100 Continue\r\nX-Echo: Bearer {SECRET}\r\n\r\n"
    )
    .into_bytes();
    reply.extend(reply_bytes("200 OK", &[], b"final"));
    let mut w = world(fixed(reply)).await;
    let answer = w.call("/v1/1xx").await;
    let (audit_leaks, audit) = w.audit_leaks();
    assert!(!w.leaks(&answer), "{}", show(&answer));
    assert!(!audit_leaks, "{audit}");
}

/// PASSED on d53c693. Response trailers (declared with `Trailer:`) holding the
/// credential, and chunk extensions holding it: collected and dropped.
#[tokio::test]
async fn trailers_and_chunk_extensions_carry_nothing_back() {
    let reply = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Echo\r\nConnection: close\r\n\r\n\
         5;token={SECRET};b64=\"{}\"\r\nhello\r\n0;last={SECRET}\r\nX-Echo: Bearer {SECRET}\r\n\r\n",
        base64_std(SECRET)
    );
    let mut w = world(fixed(reply.into_bytes())).await;
    let answer = w.call("/v1/trailers").await;
    let (audit_leaks, audit) = w.audit_leaks();
    assert!(!w.leaks(&answer), "{}", show(&answer));
    assert!(!audit_leaks, "{audit}");
    assert!(String::from_utf8_lossy(&body(&answer)).contains("hello"), "{}", show(&answer));
}

fn base64_std(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// PASSED on d53c693. An obs-folded header continuing onto a line with the credential:
/// hyper refuses the response (502) and the refusal text holds nothing.
#[tokio::test]
async fn a_folded_response_header_is_refused() {
    let reply = format!("HTTP/1.1 200 OK\r\nX-Echo: Bearer\r\n {SECRET}\r\nContent-Length: 2\r\n\r\nok");
    let mut w = world(fixed(reply.into_bytes())).await;
    let answer = w.call("/v1/fold").await;
    let (audit_leaks, audit) = w.audit_leaks();
    assert!(!w.leaks(&answer), "{}", show(&answer));
    assert!(!audit_leaks, "{audit}");
}

/// PASSED on d53c693. An HTTP/1.0 response, close-delimited, with the credential in the
/// reason phrase, a header and the body.
#[tokio::test]
async fn an_http10_close_delimited_response_is_stripped() {
    let reply = format!("HTTP/1.0 200 {SECRET}\r\nX-Echo: {SECRET}\r\n\r\nbody: Bearer {SECRET}\n");
    let mut w = world(fixed(reply.into_bytes())).await;
    let answer = w.call("/v1/http10").await;
    let (audit_leaks, audit) = w.audit_leaks();
    assert!(!w.leaks(&answer), "{}", show(&answer));
    assert!(!audit_leaks, "{audit}");
}

/// PASSED on d53c693. Several Content-Encoding headers (identity + GZIP in capitals),
/// and a gzip body of two members with the credential in the second: decoded whole and
/// redacted.
#[tokio::test]
async fn split_content_encoding_headers_and_multi_member_gzip_are_decoded() {
    let mut gz = gzip(b"first member, nothing here\n");
    gz.extend(gzip(format!("second: Bearer {SECRET}\n").as_bytes()));
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Encoding: GZIP\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    reply.extend(gz);
    let mut w = world(fixed(reply)).await;
    let answer = w.call("/v1/multi-ce").await;
    let (audit_leaks, audit) = w.audit_leaks();
    assert!(!w.leaks(&answer) && !w.leaks(&gunzip(&body(&answer))), "{}", show(&answer));
    assert!(!audit_leaks, "{audit}");
}

/// PASSED on d53c693. The credential at the very end of a body just under the 16 MiB
/// cap is still found; a body just over the cap is refused, not truncated and passed.
#[tokio::test]
async fn bodies_near_the_cap_are_checked_whole_or_refused() {
    let cap = enclave_egress::MAX_BINDING_RESPONSE;
    let tail = format!("Bearer {SECRET}");
    for total in [cap - 1, cap + 1] {
        let mut body_bytes = vec![b'a'; total - tail.len()];
        body_bytes.extend_from_slice(tail.as_bytes());
        let mut w = world(fixed(reply_bytes("200 OK", &[], &body_bytes))).await;
        let answer = w.call("/v1/big").await;
        let (audit_leaks, audit) = w.audit_leaks();
        assert!(!w.leaks(&answer), "{total} bytes: status {}", status(&answer));
        assert!(!audit_leaks, "{audit}");
        if total > cap {
            assert_eq!(status(&answer), 502, "over the cap");
        }
    }
}

/// PASSED on d53c693. The common forms, mixed and at odd offsets, in one body: base64
/// of the whole request head (URL alphabet), wrapped at 76 columns; percent-encoding of
/// the request head; a JSON string with every third character escaped.
#[tokio::test]
async fn known_forms_at_offsets_in_one_body_are_cut_or_withheld() {
    use base64::Engine as _;
    let reply: RawReply = Arc::new(|request: &str| {
        let b64 = base64::engine::general_purpose::URL_SAFE.encode(format!("zz{request}"));
        let wrapped: Vec<String> = b64.as_bytes().chunks(76).map(|c| String::from_utf8_lossy(c).to_string()).collect();
        let pct: String = request.bytes().map(|b| format!("%{b:02x}")).collect();
        let json: String = SECRET
            .chars()
            .enumerate()
            .map(|(i, c)| if i % 3 == 0 { format!("\\u{:04X}", u32::from(c)) } else { c.to_string() })
            .collect();
        let body = format!("{}\n{pct}\n{{\"t\":\"{json}\"}}\n", wrapped.join("\r\n"));
        reply_bytes("200 OK", &[], body.as_bytes())
    });
    let mut w = world(reply).await;
    let answer = w.call("/v1/mixed").await;
    let (audit_leaks, audit) = w.audit_leaks();
    assert!(!w.leaks(&answer), "{}", show(&answer));
    assert!(!audit_leaks, "{audit}");
}

/// PASSED on d53c693. The scope holds for: a lower-case method, a fragment carrying
/// `..`, `//` before a `..`, `;` parameters, a backslash, `%2e` in capitals, and an
/// absolute-form URL whose Host header names another path host; and the Host sent
/// upstream is always the binding's.
#[tokio::test]
async fn the_scope_holds_for_common_tricks() {
    let mut w = world(fixed(reply_bytes("200 OK", &[], b"ok"))).await;
    let refused = [
        "get http://api.binding.test/v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\r\n".to_owned(),
        "GET http://api.binding.test/v1//../admin HTTP/1.1\r\nHost: api.binding.test\r\n\r\n".to_owned(),
        "GET http://api.binding.test/v1/..;/admin HTTP/1.1\r\nHost: api.binding.test\r\n\r\n".to_owned(),
        "GET http://api.binding.test/v1/%2E%2E/admin HTTP/1.1\r\nHost: api.binding.test\r\n\r\n".to_owned(),
        "GET http://api.binding.test/v1/.%2e/admin HTTP/1.1\r\nHost: api.binding.test\r\n\r\n".to_owned(),
        "GET http://api.binding.test/admin/v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\r\n".to_owned(),
        "GET http://api.binding.test//v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\r\n".to_owned(),
        "GET /v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\r\n".to_owned(),
    ];
    for request in &refused {
        let answer = w.send(request).await;
        assert!(status(&answer) != 200, "{request:?} -> {}", show(&answer));
    }
    assert_eq!(w.api.connections(), 0, "nothing refused reached the upstream");
    // A fragment is not sent upstream; the path checked is the path sent.
    let answer = w
        .send(
            "GET http://api.binding.test/v1/ok#/../../admin HTTP/1.1\r\nHost: evil.test\r\nX-Forwarded-Host: x\r\n\r\n",
        )
        .await;
    if status(&answer) == 200 {
        let seen = w.api.requests().join("\n");
        assert!(seen.starts_with("GET /v1/ok HTTP/1.1"), "{seen}");
        assert!(seen.to_ascii_lowercase().contains("host: api.binding.test"), "{seen}");
        assert!(!seen.contains("evil.test"), "{seen}");
    }
    // The listed override headers never reach the upstream.
    let overrides = "GET http://api.binding.test/v1/x HTTP/1.1\r\nHost: api.binding.test\r\n\
                     X-HTTP-Method-Override: DELETE\r\nx-original-url: /admin\r\nX-Forwarded-Prefix: /admin\r\n\r\n";
    assert_eq!(status(&w.send(overrides).await), 200);
    let last = w.api.requests().last().cloned().unwrap_or_default().to_ascii_lowercase();
    assert!(!last.contains("override") && !last.contains("original-url") && !last.contains("prefix"), "{last}");
    w.drain();
}
