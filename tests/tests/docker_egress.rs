//! The clone step and allowlist egress on Docker + gVisor, end to end. Every server is
//! started by the test on this machine: a git smart-HTTP server with basic auth on
//! loopback (reached through the session's proxy under the clone-phase rule), and
//! canary web servers on a Docker network the test creates. Nothing else is contacted.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use base64::Engine as _;
use common::TestCa;
use common::docker::*;
use common::git_server::GitServer;
use enclave_core::{AuditEvent, Backend as _, MemorySecrets, Secret, SessionStatus};
use enclave_docker::DockerConfig;

const TOKEN: &str = "repo-token-5e1f0c2b9a7d";

fn clone_config(ca: &TestCa) -> DockerConfig {
    DockerConfig {
        static_hosts: HashMap::from([("git.enclave.test".to_owned(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])]),
        trusted_clone_networks: vec!["127.0.0.1/32".parse().unwrap()],
        extra_ca_pem: Some(ca.pem()),
        ..DockerConfig::default()
    }
}

fn secrets(token: &str) -> Arc<MemorySecrets> {
    let mut s = MemorySecrets::default();
    s.insert("repo-token", Secret::new(token));
    Arc::new(s)
}

fn clone_spec(port: u16, steps: &str) -> String {
    format!(
        r#"  repo:
    url: https://git.enclave.test:{port}/app.git
    ref: main
    credential: repo-token
  image: enclave/base:latest
  steps:
{steps}
  artifacts: [out]
"#
    )
}

/// Every place the credential could leak, in the raw and basic-auth forms.
fn leaks(haystack: &[u8]) -> Vec<&'static str> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"));
    let mut found = Vec::new();
    let text = String::from_utf8_lossy(haystack);
    if text.contains(TOKEN) {
        found.push("token");
    }
    if text.contains(&basic) {
        found.push("basic-auth form");
    }
    found
}

#[test]
fn the_clone_step_alone_holds_the_credential() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca)) else { return };
    let server = rt.block_on(GitServer::start(
        ca.server_config(&["git.enclave.test"]),
        "x-access-token",
        TOKEN,
        "hello from the private repo\n",
    ));
    // The workload looks everywhere it can for the credential and hands what it saw
    // back as an artifact; the test searches that, since logs are redacted anyway.
    let steps = r#"    - name: look
      run: |
        mkdir -p out
        cat README.md
        env > out/env.txt
        for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f"; echo; done > out/cmdlines.txt
        cp .git/config out/git-config.txt
        git_files=$(find / -xdev -type f 2>/dev/null | grep -v '^/proc' | head -2000)
        for f in $git_files; do cat "$f" 2>/dev/null; done > out/all-files.bin
        ls -la /workspace /tmp > out/listing.txt
        nc -z -w 2 127.0.0.1 1 2>/dev/null; echo "network-free: $?"
"#;
    let plan = plan_with("clone-secret", &clone_spec(server.addr.port(), steps), &loopback_policy());
    let mut kept = KeptBundle::default();
    let outcome = run_collecting(&rt, backend.clone(), &plan, secrets(TOKEN), None, Some(&mut kept));

    assert_eq!(outcome.result.status, SessionStatus::Succeeded, "{:#?}", outcome.result);
    let stdout = outcome.stdout().join("\n");
    assert!(stdout.contains("hello from the private repo"), "the workload sees the clone: {stdout}");
    assert!(server.requests().iter().any(|(_, authorized)| *authorized), "the credential was presented");

    assert_eq!(withheld_for_secrets(&outcome), Vec::<String>::new(), "a leaked file hides as withheld");
    let bundle = kept.0.expect("artifacts");
    let tar = bundle.tar.clone();
    assert!(bundle.files.iter().any(|f| f.path.ends_with("git-config.txt")), "{:?}", bundle.files);
    let text = String::from_utf8_lossy(&tar).to_string();
    assert!(text.contains("PATH=") && text.contains("sleep"), "the probe captured env and processes");
    assert_eq!(leaks(&tar), Vec::<&str>::new(), "the credential reached the workload");
    let git_config = String::from_utf8_lossy(&tar).to_string();
    assert!(git_config.contains("url = https://git.enclave.test:"), "remote URL kept, without credentials");

    // Nor is it in any event or audit record.
    let events = serde_json::to_string(&outcome.events).unwrap();
    let audit = serde_json::to_string(&outcome.audit).unwrap();
    assert_eq!(leaks(events.as_bytes()), Vec::<&str>::new());
    assert_eq!(leaks(audit.as_bytes()), Vec::<&str>::new());

    // The clone's reach is audited, then revoked before the workload starts.
    let kinds: Vec<&AuditEvent> = outcome.audit.iter().map(|r| &r.event).collect();
    let position = |want: fn(&AuditEvent) -> bool| kinds.iter().position(|e| want(e));
    let allowed = position(|e| matches!(e, AuditEvent::EgressDecision { decision, .. } if decision.is_allow()));
    let finished = position(|e| matches!(e, AuditEvent::CloneFinished { ok: true, .. }));
    let revoked = position(|e| matches!(e, AuditEvent::CloneReachRevoked { .. }));
    let started = position(|e| matches!(e, AuditEvent::WorkloadStarted { .. }));
    assert!(allowed.is_some() && finished.is_some() && revoked.is_some() && started.is_some(), "{kinds:#?}");
    assert!(allowed < finished && finished < revoked && revoked < started, "{kinds:#?}");
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

#[test]
fn a_wrong_credential_fails_the_clone_and_starts_no_workload() {
    let rt = runtime();
    let ca = TestCa::new();
    let Some(backend) = backend(&rt, clone_config(&ca)) else { return };
    let server = rt.block_on(GitServer::start(ca.server_config(&["git.enclave.test"]), "x-access-token", TOKEN, "x\n"));
    let steps = "    - name: never\n      run: echo workload-ran\n";
    let plan = plan_with("clone-denied", &clone_spec(server.addr.port(), steps), &loopback_policy());
    let outcome = run(&rt, backend.clone(), &plan, secrets("not-the-token-0000"), None);
    assert!(matches!(outcome.result.status, SessionStatus::Failed { exit_code: 128 }), "{:#?}", outcome.result);
    assert!(!outcome.stdout().join("\n").contains("workload-ran"));
    assert!(server.requests().iter().all(|(_, authorized)| !*authorized));
    assert!(
        outcome.audit.iter().all(|r| !matches!(r.event, AuditEvent::WorkloadStarted { .. })),
        "no workload after a failed clone"
    );
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

/// Canary web servers on a Docker network this test creates (runc: they are the
/// test's own servers, not sessions), removed on drop.
struct Canaries {
    network: String,
    names: Vec<String>,
}

impl Canaries {
    fn start(count: usize) -> Self {
        let tag =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
        let network = format!("enclave-test-canaries-{tag}");
        docker(&["network", "create", &network]);
        let mut names = Vec::new();
        for i in 0..count {
            let name = format!("{network}-{i}");
            let serve =
                format!("mkdir -p /tmp/w && echo canary-{i} > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w");
            docker(&[
                "run",
                "-d",
                "--rm",
                "--pull",
                "never",
                "--network",
                &network,
                "--name",
                &name,
                "--user",
                "65534",
                "enclave/base:latest",
                "sh",
                "-c",
                &serve,
            ]);
            names.push(name);
        }
        Self { network, names }
    }

    fn ip(&self, i: usize) -> String {
        docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &self.names[i]])
    }
}

impl Drop for Canaries {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = std::process::Command::new("docker").args(["rm", "-f", name]).output();
        }
        let _ = std::process::Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker").args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn an_allowlist_workload_reaches_only_its_proxy() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    let canaries = Canaries::start(2);
    let (allowed, denied) = (canaries.ip(0), canaries.ip(1));
    let docker0 = docker0();
    // A host listener on every address: the workload must not reach it, by any address.
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    host.set_nonblocking(true).unwrap();

    let body = format!(
        r#"  image: enclave/base:latest
  egress:
    mode: allowlist
    allow:
      - cidr: {allowed}/32
        ports: [8080]
  steps:
    - name: probe
      run: |
        check() {{ if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }}
        gw=$(echo "$http_proxy" | sed 's#http://##; s#:.*##')
        reach() {{ timeout 8 nc -w 3 "$1" "$2" </dev/null >/dev/null 2>&1; }}
        # Debian's busybox 1.35 wget crashes when it uses a proxy, so requests are
        # written by hand: absolute-form HTTP to the proxy from the environment.
        via_proxy() {{ printf 'GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" "$1" | timeout 10 nc -w 5 "$gw" "${{http_proxy##*:}}"; }}
        check allowed-canary-through-proxy 'via_proxy {allowed}:8080 | grep -q canary-0'
        check denied-canary-through-proxy 'via_proxy {denied}:8080 | grep -q "403 Forbidden"'
        check no-direct-route '! reach {allowed} 8080'
        check host-listener-via-gateway '! reach "$gw" {host_port}'
        check host-listener-via-docker0 '! reach {docker0} {host_port}'
        check embedded-dns-closed '! reach 127.0.0.11 53'
        check proxy-port-open 'reach "$gw" "${{http_proxy##*:}}"'
"#
    );
    // The canaries are on the test's own Docker network: the operator lists their addresses.
    let policy = enclave_core::Policy {
        allow_networks: vec![format!("{allowed}/32").parse().unwrap(), format!("{denied}/32").parse().unwrap()],
        ..enclave_core::Policy::default()
    };
    let plan = plan_with("allowlist-e2e", &body, &policy);
    let outcome = run(&rt, backend.clone(), &plan, Arc::new(MemorySecrets::default()), None);
    let stdout = outcome.stdout();
    let failed: Vec<&String> = stdout.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "{failed:?}\n{stdout:#?}");
    assert_eq!(stdout.iter().filter(|l| l.starts_with("PASS")).count(), 7, "{stdout:#?}");
    assert!(host.accept().is_err(), "nothing reached the host listener");
    assert_eq!(outcome.result.status, SessionStatus::Succeeded);
    // The denial is in the result, for the user to fix their allowlist.
    let denied_entry = outcome.result.egress_denied.iter().find(|d| d.host == denied);
    assert!(denied_entry.is_some(), "{:#?}", outcome.result.egress_denied);
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

#[test]
fn a_binding_call_gets_its_credential_at_the_proxy_and_never_in_the_sandbox() {
    const SECRET: &str = "binding-secret-93c1d7e2aa";
    let rt = runtime();
    let ca = TestCa::new();
    let upstream_ip = Ipv4Addr::new(127, 0, 0, 2);
    let config = DockerConfig {
        static_hosts: HashMap::from([("api.binding.test".to_owned(), vec![IpAddr::V4(upstream_ip)])]),
        extra_ca_pem: Some(ca.pem()),
        ..DockerConfig::default()
    };
    let Some(backend) = backend(&rt, config) else { return };
    // The upstream echoes the request head back: an echoing upstream.
    let upstream = rt.block_on(common::Canary::https(upstream_ip, ca.server_config(&["api.binding.test"])));
    let body = format!(
        r#"  image: enclave/base:latest
  egress:
    mode: allowlist
    allow:
      # The binding's upstream is on loopback: a CIDR rule acknowledges the address
      # (any port will do; this one opens no service to the workload itself).
      - cidr: 127.0.0.2/32
        ports: [80]
{binding}  steps:
    - name: call
      run: |
        mkdir -p out
        gw=$(echo "$http_proxy" | sed 's#http://##; s#:.*##')
        call() {{ printf '%s http://api.binding.test%s HTTP/1.1\r\nHost: api.binding.test\r\nConnection: close\r\n\r\n' "$1" "$2" | timeout 10 nc -w 5 "$gw" "${{http_proxy##*:}}"; }}
        call GET /v1/me > out/allowed.txt
        call DELETE /v1/me > out/refused.txt
        env > out/env.txt
        for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f"; echo; done > out/cmdlines.txt
  artifacts: [out]
"#,
        binding = common::api_binding_yaml(upstream.port())
    );
    let plan = plan_with("binding-e2e", &body, &loopback_policy());
    let (outcome, kept) = run_binding_session(&rt, backend.clone(), &plan, SECRET);

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "only the in-scope call reached the upstream: {seen:?}");
    assert!(seen[0].contains(&format!("authorization: Bearer {SECRET}")), "{}", seen[0]);
    assert_eq!(withheld_for_secrets(&outcome), Vec::<String>::new(), "a leaked file hides as withheld");
    let tar = String::from_utf8_lossy(&kept.0.expect("artifacts").tar).to_string();
    assert!(tar.contains("HTTP/1.1 200") && tar.contains("Bearer ***"), "the echo came back redacted: {tar}");
    assert!(tar.contains("HTTP/1.1 403"), "the out-of-scope call was refused: {tar}");
    assert!(!tar.contains(SECRET), "the secret reached the sandbox");
    let records = serde_json::to_string(&outcome.audit).unwrap() + &serde_json::to_string(&outcome.events).unwrap();
    assert!(!records.contains(SECRET));
    assert!(outcome.audit.iter().any(|r| matches!(&r.event, AuditEvent::BindingUsed { allowed: true, .. })));
    assert!(leftovers(&rt, &backend, &outcome.result.session).is_empty());
}

#[test]
fn an_abandoned_allowlist_session_is_reaped_with_its_network_and_firewall_rules() {
    let rt = runtime();
    let scope = DockerConfig { scope: format!("net-reaper-{}", std::process::id()), ..DockerConfig::default() };
    let Some(backend) = backend(&rt, scope) else { return };
    let body = "  image: enclave/base:latest\n  egress:\n    mode: allowlist\n    allow:\n      - host: example.test\n        ports: [443]\n  command: [sleep, \"600\"]\n";
    let plan = plan_with("net-orphan", body, &loopback_policy());
    let orphan = session_id("net-orphan");
    let (events, _receiver) = futures::channel::mpsc::unbounded();
    rt.block_on(backend.launch(&orphan, &plan, &MemorySecrets::default(), events)).unwrap();
    let before = leftovers(&rt, &backend, &orphan);
    for kind in ["container:", "volume:", "network:", "firewall:"] {
        assert!(before.iter().any(|r| r.starts_with(kind)), "{kind} missing from {before:?}");
    }
    let rules =
        String::from_utf8_lossy(&std::process::Command::new("iptables").args(["-S", "INPUT"]).output().unwrap().stdout)
            .to_string();
    assert!(rules.contains(&orphan.to_string()), "host rules tagged with the session");
    let reaped = rt.block_on(backend.reap_orphans(&[])).unwrap();
    assert!(reaped.contains(&orphan), "{reaped:?}");
    assert_eq!(leftovers(&rt, &backend, &orphan), Vec::<String>::new());
    let rules =
        String::from_utf8_lossy(&std::process::Command::new("iptables").args(["-S", "INPUT"]).output().unwrap().stdout)
            .to_string();
    assert!(!rules.contains(&orphan.to_string()), "{rules}");
}

#[test]
fn one_session_cannot_reach_another_sessions_proxy() {
    let rt = runtime();
    let Some(backend) = backend(&rt, DockerConfig::default()) else { return };
    // Session B: an allowlist session left running (its proxy listening on its gateway).
    let body_b = "  image: enclave/base:latest\n  egress:\n    mode: allowlist\n    allow:\n      - host: example.test\n        ports: [443]\n  command: [sleep, \"600\"]\n";
    let plan_b = plan_with("session-b", body_b, &loopback_policy());
    let b = session_id("session-b");
    let (events, _receiver) = futures::channel::mpsc::unbounded();
    rt.block_on(backend.launch(&b, &plan_b, &MemorySecrets::default(), events)).unwrap();
    // B's proxy address, from its host firewall rule.
    let rules =
        String::from_utf8_lossy(&std::process::Command::new("iptables").args(["-S", "INPUT"]).output().unwrap().stdout)
            .to_string();
    let accept = rules.lines().find(|l| l.contains(&b.to_string()) && l.contains("ACCEPT")).expect("B's accept rule");
    let words: Vec<&str> = accept.split_whitespace().collect();
    let after = |flag: &str| words.iter().position(|w| *w == flag).map(|i| words[i + 1]).expect("flag");
    let (b_gateway, b_port) = (after("-d").trim_end_matches("/32").to_owned(), after("--dport").to_owned());

    let body_a = format!(
        r#"  image: enclave/base:latest
  egress:
    mode: allowlist
    allow:
      - host: example.test
        ports: [443]
  steps:
    - name: probe
      run: |
        gw=$(echo "$http_proxy" | sed 's#http://##; s#:.*##')
        if timeout 8 nc -w 3 {b_gateway} {b_port} </dev/null >/dev/null 2>&1; then echo "FAIL reached B's proxy"; else echo "PASS B's proxy unreachable"; fi
        if timeout 8 nc -w 3 "$gw" {b_port} </dev/null >/dev/null 2>&1; then echo "FAIL B's port on A's gateway"; else echo "PASS B's port closed on A's gateway"; fi
"#
    );
    let plan_a = plan_with("session-a", &body_a, &loopback_policy());
    let outcome = run(&rt, backend.clone(), &plan_a, Arc::new(MemorySecrets::default()), None);
    let report = rt.block_on(backend.teardown(&b)).unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    let stdout = outcome.stdout();
    assert_eq!(stdout.iter().filter(|l| l.starts_with("PASS")).count(), 2, "{stdout:#?}");
    assert!(leftovers(&rt, &backend, &b).is_empty());
}
