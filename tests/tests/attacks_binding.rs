//! Attacks on binding secrets, on Docker + gVisor: the workload calls its binding
//! through the session's egress proxy, and the binding's upstream (the test's own TLS
//! server on loopback) is hostile: it reflects the credential the proxy injected, in
//! compressed bodies, in the status line, in header names, and re-encoded at an offset
//! (base64 in both alphabets, hex, JSON escapes, percent-encoding). The workload also
//! sends the headers some servers read as the "real" method or path.
//!
//! Whatever comes back lands in the session's artifacts, which the test reads back: no
//! reflected form of the credential may be in them.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use base64::Engine as _;
use common::TestCa;
use common::docker::*;
use enclave_core::AuditEvent;
use enclave_docker::DockerConfig;

const SECRET: &str = "binding-secret-reflected-4be81f";

/// The paths the hostile upstream serves, one reflection each.
const PATHS: &[&str] =
    &["gzip", "deflate", "reason", "base64", "base64url", "hex", "json", "percent", "header-names", "override"];

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

/// The sensitive text the upstream sends for `path`, given the credential header value
/// it received: what must never be found in the workload's copy.
fn reflection(path: &str, auth: &str) -> String {
    match path {
        "base64" => base64::engine::general_purpose::STANDARD.encode(format!("authorization: {auth}")),
        "base64url" => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("x{auth}")),
        "hex" => hex::encode(auth),
        "json" => auth.chars().map(|c| format!("\\u{:04x}", u32::from(c))).collect(),
        "percent" => auth.bytes().map(|b| format!("%{b:02X}")).collect(),
        "header-names" => hex::encode(auth),
        _ => auth.to_owned(),
    }
}

/// The hostile upstream: answers each path with the injected credential reflected.
fn reflect(request: &str) -> Vec<u8> {
    let path = request.split_whitespace().nth(1).unwrap_or("/").trim_start_matches("/v1/").to_owned();
    let auth = request
        .lines()
        .find_map(|l| l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: ")))
        .unwrap_or("none")
        .trim()
        .to_owned();
    let shown = reflection(&path, &auth);
    let head = |status: &str, headers: &[(String, String)], body: &[u8]| {
        let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (n, v) in headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    };
    let plain = |body: String| head("200 OK", &[], body.as_bytes());
    match path.as_str() {
        // Compressed whatever the request asked for.
        "gzip" => head(
            "200 OK",
            &[("Content-Encoding".into(), "gzip".into())],
            &gzip(format!("you sent {shown}\n").repeat(20).as_bytes()),
        ),
        "deflate" => head(
            "200 OK",
            &[("Content-Encoding".into(), "deflate".into())],
            &zlib(format!("you sent {shown}\n").repeat(20).as_bytes()),
        ),
        "reason" => head(&format!("200 {shown}"), &[], b"ok"),
        "header-names" => head(
            "200 OK",
            &[
                (format!("X-Seen-{shown}"), "1".into()),
                ("X-Seen-B64".into(), base64::engine::general_purpose::STANDARD.encode(&auth)),
            ],
            b"ok",
        ),
        "override" => plain(format!("saw the request\n{request}")),
        _ => plain(format!("{{\"seen\":\"{shown}\"}}")),
    }
}

/// The body of a saved raw HTTP response, decompressed if it still says it is.
fn decoded_body(response: &[u8]) -> Vec<u8> {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return response.to_vec() };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let body = &response[end + 4..];
    let mut out = Vec::new();
    if head.contains("content-encoding: gzip") {
        let _ = flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out);
    } else if head.contains("content-encoding: deflate") {
        let _ = flate2::read::ZlibDecoder::new(body).read_to_end(&mut out);
    } else {
        out = body.to_vec();
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[test]
fn a_reflecting_upstream_gets_no_form_of_the_credential_back_to_the_workload() {
    let rt = runtime();
    let ca = TestCa::new();
    let upstream_ip = Ipv4Addr::new(127, 0, 0, 2);
    let config = DockerConfig {
        static_hosts: HashMap::from([("api.binding.test".to_owned(), vec![IpAddr::V4(upstream_ip)])]),
        extra_ca_pem: Some(ca.pem()),
        scope: format!("attack-binding-{}", std::process::id()),
        ..DockerConfig::default()
    };
    let Some(backend) = backend(&rt, config) else { return };
    let upstream = rt.block_on(common::Canary::start_raw(
        upstream_ip,
        Some(ca.server_config(&["api.binding.test"])),
        Arc::new(reflect),
    ));
    let calls: String = PATHS.iter().map(|p| format!("        call {p}\n")).collect();
    let body = format!(
        r#"  image: enclave/base:latest
  egress:
    mode: allowlist
    allow:
      - cidr: 127.0.0.2/32
        ports: [80]
{binding}  steps:
    - name: call
      run: |
        mkdir -p out
        gw=$(echo "$http_proxy" | sed 's#http://##; s#:.*##')
        call() {{ printf 'GET http://api.binding.test/v1/%s HTTP/1.1\r\nHost: api.binding.test\r\nAccept-Encoding: gzip, deflate, br\r\nX-HTTP-Method-Override: DELETE\r\nX-Original-URL: /admin/x\r\nX-Rewrite-URL: /admin/x\r\nConnection: close\r\n\r\n' "$1" | timeout 10 nc -w 5 "$gw" "${{http_proxy##*:}}" > "out/$1.http"; }}
{calls}  artifacts: [out]
"#,
        binding = common::api_binding_yaml(upstream.port())
    );
    let plan = plan_with("attack-binding", &body, &loopback_policy());
    let (outcome, kept) = run_binding_session(&rt, backend.clone(), &plan, SECRET);

    // The upstream got the credential, and none of the override headers.
    let seen = upstream.requests();
    assert_eq!(seen.len(), PATHS.len(), "{seen:?}");
    let auth = format!("Bearer {SECRET}");
    let mut leaks = Vec::new();
    for request in &seen {
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains(&format!("authorization: {}", auth.to_ascii_lowercase())), "{request}");
        let path = request.split_whitespace().nth(1).unwrap_or("?");
        for header in ["x-http-method-override", "x-original-url", "x-rewrite-url"] {
            if lower.contains(header) {
                leaks.push(format!("{path}: {header} reached the upstream"));
            }
        }
        if !lower.contains("accept-encoding: identity") {
            leaks.push(format!("{path}: the upstream was not asked for identity encoding"));
        }
    }

    // What the workload got back holds no reflection, decoded or not.
    assert_eq!(withheld_for_secrets(&outcome), Vec::<String>::new(), "a leaked file hides as withheld");
    let tar = kept.0.expect("artifacts").tar;
    let mut archive = tar::Archive::new(&tar[..]);
    let mut files = HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    for path in PATHS {
        let file = files
            .iter()
            .find(|(name, _)| name.ends_with(&format!("out/{path}.http")))
            .map(|(_, bytes)| bytes.clone())
            .unwrap_or_else(|| panic!("out/{path}.http is missing: {:?}", files.keys()));
        assert!(file.starts_with(b"HTTP/1.1 "), "{path}: {}", String::from_utf8_lossy(&file));
        let shown = reflection(path, &auth);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&auth);
        for (form, needle) in [("reflected", shown.as_str()), ("plain", SECRET), ("base64 header", b64.as_str())] {
            if contains(&file, needle) || contains(&decoded_body(&file), needle) {
                leaks.push(format!("{path}: {form}: {}", String::from_utf8_lossy(&file).escape_debug()));
            }
        }
    }
    assert!(leaks.is_empty(), "the binding was misused or its credential came back:\n{}", leaks.join("\n"));

    // The audit says what was held back.
    let notes: Vec<String> = outcome
        .audit
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::BindingUsed { reason: Some(reason), .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert!(notes.iter().any(|n| n.contains("held the credential")), "{notes:?}");
    let records = serde_json::to_string(&outcome.audit).unwrap() + &serde_json::to_string(&outcome.events).unwrap();
    assert!(!records.contains(SECRET));
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}
