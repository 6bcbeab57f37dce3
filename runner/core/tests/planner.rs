//! The planner: `plan(spec, policy)` is pure and deterministic, its digest covers
//! everything but the simulator's behaviour model, quotas take policy defaults and are
//! held to the policy's bounds (errors point at the spec line and column), weaker
//! isolation must be permitted and is then recorded, the containment profile is fixed,
//! secrets travel by name only, and the implicit denies say which rule opened what.
//! Every checked-in example in `examples/sessions/` is planned here too.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;
use std::path::PathBuf;

use enclave_core::{
    AddressClass, Isolation, NetworkMode, Phase, Plan, PlanError, Policy, Program, WORKLOAD_UID, plan, special_ranges,
};
use enclave_spec::{ByteSize, DurationMs, Millicores, Position, SessionSpec};

/// A spec that sets (nearly) every field the plan carries, so each variant below
/// changes exactly one of them.
const BASE: &str = r#"apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: digest-base
  labels:
    team: core
spec:
  repo:
    url: https://github.com/org/app.git
    ref: main
    credential: gh-token
  image: rust:1.89
  workdir: src
  env:
    CI: "true"
    RUST_LOG: info
  command: ["cargo", "test"]
  egress:
    mode: allowlist
    allow:
      - host: crates.io
        ports: [443]
  bindings:
    - name: github-api
      host: api.github.com
      secret: gh-api-token
      inject:
        header: Authorization
        format: "Bearer {secret}"
      methods: [GET]
  quotas:
    memory: 1Gi
  artifacts:
    - target/report.xml
"#;

const EGRESS_AND_BINDINGS: &str = r#"  egress:
    mode: allowlist
    allow:
      - host: crates.io
        ports: [443]
  bindings:
    - name: github-api
      host: api.github.com
      secret: gh-api-token
      inject:
        header: Authorization
        format: "Bearer {secret}"
      methods: [GET]
"#;

/// The smallest spec: no repo, no network, every quota unset.
const MINIMAL: &str = r#"apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: minimal
spec:
  command: ["true"]
"#;

fn spec_of(yaml: &str) -> SessionSpec {
    enclave_spec::parse("planner.yaml", yaml.as_bytes())
        .unwrap_or_else(|e| panic!("spec refused: {:#?}\n--- spec ---\n{yaml}", e.errors))
        .spec
}

fn plan_with(yaml: &str, policy: &Policy) -> Result<Plan, PlanError> {
    plan(&spec_of(yaml), policy)
}

/// The operator lists the private ranges the tests' rules name.
fn listing_policy() -> Policy {
    Policy {
        allow_networks: vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
            "fc00::/7".parse().unwrap(),
        ],
        ..Policy::default()
    }
}

fn plan_ok(yaml: &str) -> Plan {
    plan_with(yaml, &listing_policy()).unwrap_or_else(|e| panic!("spec not planned: {e}\n--- spec ---\n{yaml}"))
}

/// `BASE` with one piece of text replaced; panics if the text is not there, so a
/// variant can never silently equal the base.
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

#[test]
fn plan_is_deterministic_and_its_digest_is_the_computed_one() {
    let spec = spec_of(BASE);
    let first = plan(&spec, &Policy::default()).unwrap_or_else(|e| panic!("{e}"));
    let second = plan(&spec, &Policy::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, second);
    assert_eq!(first.digest, second.digest);
    assert_eq!(first.digest, first.compute_digest());
    let hex = first.digest.0.strip_prefix("sha256:").unwrap_or_else(|| panic!("digest {}", first.digest));
    assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{hex}");
    // Re-parsing the same text, under another file name, gives the same plan.
    let reparsed =
        enclave_spec::parse("elsewhere/other-name.yaml", BASE.as_bytes()).unwrap_or_else(|e| panic!("{e}")).spec;
    assert_eq!(plan(&reparsed, &Policy::default()).map(|p| p.digest), Ok(first.digest.clone()));
    // Serializing and reading back the plan keeps the digest valid.
    let json = serde_json::to_string(&first).unwrap_or_else(|e| panic!("{e}"));
    let back: Plan = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.compute_digest(), first.digest);
}

#[test]
fn plan_digest_changes_when_any_planned_field_changes() {
    let steps = r#"steps:
    - name: build
      run: cargo build
    - name: test
      run: cargo test"#;
    let variants: Vec<(&str, String)> = vec![
        ("name", base_with("name: digest-base", "name: digest-other")),
        ("label value", base_with("team: core", "team: infra")),
        ("label added", base_with("team: core", "team: core\n    tier: gold")),
        ("repo url", base_with("org/app.git", "org/app2.git")),
        ("repo ref", base_with("ref: main", "ref: v1.0.0")),
        ("repo credential name", base_with("credential: gh-token", "credential: gh-token-2")),
        (
            "repo removed",
            base_with(
                "  repo:\n    url: https://github.com/org/app.git\n    ref: main\n    credential: gh-token\n",
                "",
            ),
        ),
        ("image", base_with("image: rust:1.89", "image: rust:1.90")),
        ("workdir", base_with("workdir: src", "workdir: lib")),
        ("env value", base_with("RUST_LOG: info", "RUST_LOG: debug")),
        ("env added", base_with("RUST_LOG: info", "RUST_LOG: info\n    LANG: C")),
        ("command argument", base_with(r#"["cargo", "test"]"#, r#"["cargo", "test", "--release"]"#)),
        ("steps instead of command", base_with(r#"command: ["cargo", "test"]"#, steps)),
        ("egress host", base_with("host: crates.io", "host: static.crates.io")),
        ("egress port", base_with("ports: [443]", "ports: [443, 8443]")),
        (
            "egress cidr rule",
            base_with("ports: [443]", "ports: [443]\n      - cidr: 10.1.0.0/16\n        ports: [5432]"),
        ),
        ("egress deny", base_with(EGRESS_AND_BINDINGS, "")),
        ("binding methods", base_with("methods: [GET]", "methods: [GET, POST]")),
        ("binding paths", base_with("methods: [GET]", "methods: [GET]\n      paths: [\"/user\"]")),
        ("binding format", base_with("Bearer {secret}", "token {secret}")),
        ("binding header", base_with("header: Authorization", "header: X-Token")),
        ("binding secret name", base_with("secret: gh-api-token", "secret: gh-api-token-2")),
        ("binding upstream port", base_with("host: api.github.com", "host: api.github.com\n      port: 8443")),
        ("memory quota", base_with("memory: 1Gi", "memory: 2Gi")),
        ("cpu quota", base_with("memory: 1Gi", "memory: 1Gi\n    cpu: 500m")),
        ("artifact", base_with("target/report.xml", "target/other.xml")),
    ];
    let base = plan_ok(BASE).digest;
    let mut seen = BTreeSet::from([base.0.clone()]);
    for (what, yaml) in &variants {
        let digest = plan_ok(yaml).digest;
        assert_ne!(digest, base, "changing the {what} did not change the digest");
        assert!(seen.insert(digest.0), "changing the {what} gave the digest of another variant");
    }
    // The policy is an input too: a different default image or isolation is a different plan.
    let spec_without_image = base_with("  image: rust:1.89\n", "");
    let other_image = Policy { default_image: "enclave/other:1".to_owned(), ..Policy::default() };
    let host_kernel = Policy { isolation: Isolation::HostKernel, permit_weaker_isolation: true, ..Policy::default() };
    let default_image_digest = plan_ok(&spec_without_image).digest;
    assert_ne!(plan_with(&spec_without_image, &other_image).map(|p| p.digest), Ok(default_image_digest));
    assert_ne!(plan_with(BASE, &host_kernel).map(|p| p.digest), Ok(base));
}

#[test]
fn plan_digest_ignores_the_simulate_block_and_source_layout() {
    let base = plan_ok(BASE);
    let simulated = format!("{BASE}  simulate:\n    exitCode: 3\n    duration: 5s\n    peakMemory: 100Mi\n");
    let simulated_other = format!("{BASE}  simulate:\n    exitCode: 0\n    duration: 1m\n    processes: 9\n");
    let with_sim = plan_ok(&simulated);
    assert!(with_sim.simulate.is_some(), "the plan carries the behaviour model for the simulator");
    assert_ne!(with_sim, base, "the plans differ in their behaviour model");
    assert_eq!(with_sim.digest, base.digest, "adding a simulate block changed the digest");
    assert_eq!(with_sim.digest, with_sim.compute_digest());
    assert_eq!(plan_ok(&simulated_other).digest, base.digest, "changing the simulate block changed the digest");

    // Comments, blank lines, quoting and key order move positions but not the plan.
    let reshaped = [
        format!("# a comment\n\n# another\n{BASE}"),
        base_with("image: rust:1.89", "image: \"rust:1.89\""),
        base_with("    CI: \"true\"\n    RUST_LOG: info\n", "    RUST_LOG: info\n    CI: 'true'\n"),
        base_with("apiVersion: enclave.dev/v1\nkind: Session\n", "kind: Session\napiVersion: enclave.dev/v1\n"),
        base_with(r#"["cargo", "test"]"#, "\n    - cargo\n    - test"),
    ];
    for yaml in &reshaped {
        assert_eq!(plan_ok(yaml), base, "a layout-only change altered the plan:\n{yaml}");
    }
    // Whether weaker isolation is permitted does not matter unless it is used.
    let permissive = Policy { permit_weaker_isolation: true, ..Policy::default() };
    assert_eq!(plan_with(BASE, &permissive), Ok(base));
}

#[test]
fn plan_applies_policy_defaults_to_unset_quotas() {
    let defaults = Policy::default().defaults;
    assert_eq!(plan_ok(MINIMAL).quotas, defaults);

    let partial = plan_ok(&format!("{MINIMAL}  quotas:\n    memory: 1Gi\n    pids: 100\n"));
    assert_eq!(partial.quotas.memory_bytes, 1 << 30);
    assert_eq!(partial.quotas.pids, 100);
    assert_eq!(partial.quotas.cpu_millis, defaults.cpu_millis);
    assert_eq!(partial.quotas.deadline_ms, defaults.deadline_ms);
    assert_eq!(partial.quotas.disk_bytes, defaults.disk_bytes);
    assert_eq!(partial.quotas.log_bytes, defaults.log_bytes);

    // The defaults are the policy's, not built in.
    let mut policy = Policy::default();
    policy.defaults.cpu_millis = 250;
    policy.defaults.deadline_ms = 60_000;
    let planned = plan_with(MINIMAL, &policy).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(planned.quotas.cpu_millis, 250);
    assert_eq!(planned.quotas.deadline_ms, 60_000);
}

/// How `PlanError` formats a quota value.
type Show = fn(u64) -> String;

/// Quota key, value as written, value, the policy bound it crosses, its formatter, and
/// whether it is too large (else too small).
type QuotaRow = (&'static str, &'static str, u64, u64, Show, bool);

#[test]
fn plan_refuses_quotas_outside_policy_bounds_with_their_position() {
    let policy = Policy::default();
    let (max, min) = (policy.max, policy.min);
    let millicores: Show = |v| Millicores(v).to_string();
    let bytes: Show = |v| ByteSize(v).to_string();
    let duration: Show = |v| DurationMs(v).to_string();
    let count: Show = |v| v.to_string();
    let rows: [QuotaRow; 12] = [
        ("cpu", "\"5\"", 5_000, max.cpu_millis, millicores, true),
        ("cpu", "5m", 5, min.cpu_millis, millicores, false),
        ("memory", "9Gi", 9 << 30, max.memory_bytes, bytes, true),
        ("memory", "8Mi", 8 << 20, min.memory_bytes, bytes, false),
        ("pids", "5000", 5_000, u64::from(max.pids), count, true),
        ("pids", "32", 32, u64::from(min.pids), count, false),
        ("deadline", "3h", 3 * 3_600_000, max.deadline_ms, duration, true),
        ("deadline", "500ms", 500, min.deadline_ms, duration, false),
        ("disk", "21Gi", 21 << 30, max.disk_bytes, bytes, true),
        ("disk", "512Ki", 512 << 10, min.disk_bytes, bytes, false),
        ("logBytes", "101Mi", 101 << 20, max.log_bytes, bytes, true),
        ("logBytes", "512", 512, min.log_bytes, bytes, false),
    ];
    for (key, written, value, bound, show, too_large) in rows {
        // The value sits on line 9 (after MINIMAL's six lines and a comment), after
        // four spaces of indentation, the key and ": ".
        let yaml = format!("{MINIMAL}  # quotas below\n  quotas:\n    {key}: {written}\n");
        assert_eq!(yaml.lines().nth(8), Some(format!("    {key}: {written}").as_str()));
        let position = Position { line: 9, column: 4 + key.len() as u64 + 2 + 1 };
        let expected = if too_large {
            PlanError::QuotaAboveMax { quota: key, requested: show(value), max: show(bound), position }
        } else {
            PlanError::QuotaBelowMin { quota: key, requested: show(value), min: show(bound), position }
        };
        let got = plan_with(&yaml, &policy);
        assert_eq!(got, Err(expected.clone()), "{key}: {written}");
        assert!(expected.to_string().starts_with(&format!("{}:{}: ", position.line, position.column)), "{expected}");
    }
}

#[test]
fn plan_refuses_host_kernel_unless_permitted_and_then_warns() {
    let host_kernel = Policy { isolation: Isolation::HostKernel, ..Policy::default() };
    assert_eq!(plan_with(MINIMAL, &host_kernel), Err(PlanError::WeakerIsolationNotPermitted(Isolation::HostKernel)));

    let permitted = Policy { permit_weaker_isolation: true, ..host_kernel };
    let planned = plan_with(MINIMAL, &permitted).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(planned.containment.isolation, Isolation::HostKernel);
    assert_eq!(planned.warnings.len(), 1, "{:?}", planned.warnings);
    assert!(planned.warnings[0].contains("host-kernel"), "{:?}", planned.warnings);

    let gvisor = plan_ok(MINIMAL);
    assert_eq!(gvisor.containment.isolation, Isolation::Gvisor);
    assert!(gvisor.warnings.is_empty(), "{:?}", gvisor.warnings);
}

/// The parts of the containment profile that no spec or policy can change.
fn assert_fixed_containment(plan: &Plan, context: &str) {
    let c = &plan.containment;
    assert_eq!((c.run_as_user, c.run_as_group), (65534, 65534), "{context}");
    assert_eq!(WORKLOAD_UID, 65534);
    assert!(c.read_only_root_fs, "{context}: root filesystem writable");
    assert!(c.no_new_privileges, "{context}: privilege escalation possible");
    assert!(c.capabilities.is_empty(), "{context}: capabilities {:?}", c.capabilities);
    assert!(!c.service_account_token, "{context}: service-account token mounted");
    assert!(c.host_mounts.is_empty(), "{context}: host mounts {:?}", c.host_mounts);
    let expected_network = match plan.egress.mode {
        enclave_spec::EgressMode::Deny => NetworkMode::None,
        enclave_spec::EgressMode::Allowlist => NetworkMode::ProxyOnly,
    };
    assert_eq!(c.network, expected_network, "{context}");
}

#[test]
fn plan_containment_profile_is_fixed() {
    let deny = plan_ok(MINIMAL);
    assert_eq!(deny.containment.network, NetworkMode::None);
    assert_fixed_containment(&deny, "deny");

    let allowlist = plan_ok(BASE);
    assert_eq!(allowlist.containment.network, NetworkMode::ProxyOnly);
    assert_fixed_containment(&allowlist, "allowlist");

    let permitted = Policy { isolation: Isolation::HostKernel, permit_weaker_isolation: true, ..Policy::default() };
    let weaker = plan_with(BASE, &permitted).unwrap_or_else(|e| panic!("{e}"));
    assert_fixed_containment(&weaker, "host-kernel");
}

/// Every string in a JSON document, keys included.
fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                json_strings(v, out);
            }
        }
        _ => {}
    }
}

#[test]
fn plan_carries_credentials_by_name_only() {
    let yaml = r#"apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: private-clone
spec:
  repo:
    url: https://github.com/org/private.git
    credential: gh-token
  command: ["make", "test"]
"#;
    let planned = plan_ok(yaml);
    let clone = planned.clone_phase().unwrap_or_else(|| panic!("no clone phase"));
    assert_eq!(clone.credential.as_deref(), Some("gh-token"));
    assert_eq!(clone.url, "https://github.com/org/private.git");
    assert_eq!((clone.host.to_string().as_str(), clone.port), ("github.com", 443));
    assert!(matches!(planned.phases.as_slice(), [Phase::Clone(_), Phase::Run(_)]), "{:?}", planned.phases);
    let run = planned.run_phase().unwrap_or_else(|| panic!("no run phase"));
    assert!(run.env.is_empty(), "the workload gets no credential: {:?}", run.env);
    assert!(matches!(&run.program, Program::Command { argv } if argv == &["make", "test"]));

    let json = serde_json::to_value(&planned).unwrap_or_else(|e| panic!("{e}"));
    let text = json.to_string();
    assert_eq!(text.matches("gh-token").count(), 1, "the name appears once, in the clone phase: {text}");
    let mut strings = Vec::new();
    json_strings(&json, &mut strings);
    let leaked: Vec<&String> = strings.iter().filter(|s| enclave_spec::looks_like_credential(s)).collect();
    assert!(leaked.is_empty(), "plan JSON holds credential-like values: {leaked:?}");
    assert!(!text.contains('@'), "no userinfo anywhere in the plan: {text}");

    // The binding secret is a name too, and never in the workload's environment.
    let with_binding = plan_ok(BASE);
    let json = serde_json::to_value(&with_binding).unwrap_or_else(|e| panic!("{e}"));
    let mut strings = Vec::new();
    json_strings(&json, &mut strings);
    assert!(strings.iter().all(|s| !enclave_spec::looks_like_credential(s)), "{strings:?}");
    assert_eq!(with_binding.bindings[0].secret, "gh-api-token");
    assert_eq!(with_binding.bindings[0].format, "Bearer {secret}");
    let run = with_binding.run_phase().unwrap_or_else(|| panic!("no run phase"));
    assert!(run.env.values().all(|v| !v.contains("gh-")), "{:?}", run.env);
}

#[test]
fn plan_lists_implicit_denies_and_which_rules_open_them() {
    let yaml = r#"apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: implicit-denies
spec:
  command: ["true"]
  egress:
    mode: allowlist
    allow:
      - host: pypi.org
        ports: [443]
      - cidr: 10.1.0.0/16
        ports: [5432]
      - cidr: 0.0.0.0/0
        ports: [443]
        acknowledgeAnyAddress: true
      - cidr: 192.168.7.0/24
        ports: [443]
      - cidr: "fd12:3456::/32"
        ports: [443]
      - cidr: 10.0.0.0/7
        ports: [22]
"#;
    let planned = plan_ok(yaml);
    let denies = &planned.egress.implicit_denies;
    let listed: Vec<(String, AddressClass)> = denies.iter().map(|d| (d.cidr.to_string(), d.class)).collect();
    let expected: Vec<(String, AddressClass)> = special_ranges().iter().map(|(n, c)| (n.to_string(), *c)).collect();
    assert_eq!(listed, expected, "every special range is listed, in order");

    let opened_by = |cidr: &str| -> Vec<String> {
        denies
            .iter()
            .find(|d| d.cidr.to_string() == cidr)
            .unwrap_or_else(|| panic!("{cidr} is not an implicit deny"))
            .opened_by
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    // The metadata address is never opened, not by 0.0.0.0/0 nor by any rule.
    for metadata in ["169.254.169.254/32", "fd00:ec2::254/128"] {
        let deny = denies.iter().find(|d| d.cidr.to_string() == metadata);
        assert_eq!(deny.map(|d| d.class), Some(AddressClass::Metadata), "{metadata}");
        assert_eq!(opened_by(metadata), Vec::<String>::new(), "{metadata}");
    }
    // A rule inside a range opens (that part of) it; one wider than the range does not.
    assert_eq!(opened_by("10.0.0.0/8"), ["allow[1]"]);
    assert_eq!(opened_by("192.168.0.0/16"), ["allow[3]"]);
    assert_eq!(opened_by("169.254.0.0/16"), Vec::<String>::new());
    assert_eq!(opened_by("fc00::/7"), ["allow[4]"]);
    for untouched in ["127.0.0.0/8", "172.16.0.0/12", "100.64.0.0/10", "224.0.0.0/4", "::1/128"] {
        assert_eq!(opened_by(untouched), Vec::<String>::new(), "{untouched}: 0.0.0.0/0 names no special range");
    }
    assert_eq!(
        planned.egress.rules.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
        ["allow[0]", "allow[1]", "allow[2]", "allow[3]", "allow[4]", "allow[5]"]
    );
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/sessions")
}

#[test]
fn every_example_session_plans() {
    let dir = examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let parsed = match enclave_spec::parse(&name, &bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                let diagnostics: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
                failures.push(format!("{name}: refused:\n  {}", diagnostics.join("\n  ")));
                continue;
            }
        };
        match plan(&parsed.spec, &Policy::default()) {
            Ok(planned) => {
                assert_eq!(planned.digest, planned.compute_digest(), "{name}");
                assert_fixed_containment(&planned, &name);
            }
            Err(e) => failures.push(format!("{name}: not planned: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} examples failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

fn cidr_spec(cidr: &str) -> String {
    format!(
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: cidr\nspec:\n  command: [\"true\"]\n  egress:\n    mode: allowlist\n    allow:\n      - cidr: \"{cidr}\"\n        ports: [443]\n"
    )
}

/// A rule naming metadata, loopback or link-local, or written in an IPv6 form that
/// embeds one, is refused at plan time, at the rule's position, whatever the policy
/// lists; loopback opens only through the operator's unsafe setting, which warns and is
/// recorded in the plan.
#[test]
fn plan_refuses_rules_reaching_never_reachable_ranges_in_any_spelling() {
    let everything = Policy {
        allow_networks: ["10.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "fc00::/7"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect(),
        ..Policy::default()
    };
    for (cidr, class) in [
        ("169.254.1.0/24", AddressClass::LinkLocal),
        ("169.254.170.2/32", AddressClass::Metadata),
        ("100.100.100.200/32", AddressClass::Metadata),
        ("168.63.129.16/32", AddressClass::Metadata),
        ("192.0.0.192/32", AddressClass::Metadata),
        ("fd00:ec2::23/128", AddressClass::Metadata),
        ("127.0.0.1/32", AddressClass::Loopback),
        ("::1/128", AddressClass::Loopback),
        ("fe80::/64", AddressClass::LinkLocal),
        ("::ffff:0:0/96", AddressClass::Metadata),
        ("::ffff:0:0:0/96", AddressClass::Metadata),
        ("::ffff:0:a9fe:a9fe/128", AddressClass::Metadata),
        ("64:ff9b::/96", AddressClass::Metadata),
        ("64:ff9b::7f00:1/128", AddressClass::Loopback),
        ("64:ff9b:1::/48", AddressClass::Metadata),
        ("2002:a9fe::/32", AddressClass::Metadata),
        ("2002::/16", AddressClass::Metadata),
        ("2001::/32", AddressClass::Metadata),
    ] {
        // The spec's own validation already refuses a range holding 169.254.169.254.
        let parsed = match enclave_spec::parse("cidr.yaml", cidr_spec(cidr).as_bytes()) {
            Ok(parsed) => parsed,
            Err(e) => {
                let text = format!("{:?}", e.errors);
                assert!(text.contains("never reachable"), "{cidr}: {text}");
                continue;
            }
        };
        match plan(&parsed.spec, &everything) {
            Err(e @ PlanError::NeverReachable { class: got, position, .. }) => {
                // A rule's range may reach several never-reachable classes; the first
                // found is named.
                assert!(got.never_reachable(), "{cidr}: {e}");
                let _ = class;
                assert_eq!((position.line, position.column), (10, 15), "{cidr}: {e}");
                assert!(e.to_string().contains("never reach"), "{e}");
            }
            other => panic!("{cidr}: {other:?}"),
        }
    }
    // Loopback through the unsafe setting: planned, warned, recorded.
    let unsafe_loopback = Policy { host_loopback: vec!["127.0.0.2/32".parse().unwrap()], ..Policy::default() };
    let planned = plan_with(&cidr_spec("127.0.0.2/32"), &unsafe_loopback).unwrap();
    assert_eq!(planned.egress.host_loopback, unsafe_loopback.host_loopback);
    assert!(
        planned.warnings.iter().any(|w| w.contains("unsafe") && w.contains("127.0.0.2/32")),
        "{:?}",
        planned.warnings
    );
    assert!(matches!(plan_with(&cidr_spec("127.0.0.3/32"), &unsafe_loopback), Err(PlanError::NeverReachable { .. })));
}

/// A rule naming a private or other special range needs the operator's policy to list
/// it; the error names the setting and the rule's position.
#[test]
fn plan_refuses_special_ranges_the_policy_does_not_list_and_names_the_setting() {
    for cidr in [
        "10.1.0.0/16",
        "172.17.0.1/32",
        "192.168.1.0/24",
        "100.64.1.0/24",
        "fd12::/16",
        "203.0.113.0/24",
        "::ffff:a01:0/112",
    ] {
        match plan_with(&cidr_spec(cidr), &Policy::default()) {
            Err(e @ PlanError::NetworkNotListed { position, .. }) => {
                assert_eq!((position.line, position.column), (10, 15), "{cidr}");
                let text = e.to_string();
                assert!(text.contains("policy.allow_networks") && text.contains("--allow-network"), "{text}");
            }
            other => panic!("{cidr}: {other:?}"),
        }
    }
    let listed = Policy { allow_networks: vec!["10.0.0.0/8".parse().unwrap()], ..Policy::default() };
    assert!(plan_with(&cidr_spec("10.1.0.0/16"), &listed).is_ok());
    assert!(plan_with(&cidr_spec("::ffff:a01:0/112"), &listed).is_ok(), "the mapped form of a listed range");
    assert!(plan_with(&cidr_spec("10.0.0.0/7"), &Policy::default()).is_ok(), "wider than the range: names none");
    // The policy itself cannot list what is never reachable.
    for (policy, setting) in [
        (Policy { allow_networks: vec!["169.254.0.0/16".parse().unwrap()], ..Policy::default() }, "allow_networks"),
        (Policy { allow_networks: vec!["127.0.0.0/8".parse().unwrap()], ..Policy::default() }, "allow_networks"),
        (Policy { host_loopback: vec!["10.0.0.0/8".parse().unwrap()], ..Policy::default() }, "unsafe_host_loopback"),
    ] {
        match plan_with(&cidr_spec("8.8.8.0/24"), &policy) {
            Err(e @ PlanError::PolicyNetwork { .. }) => assert!(e.to_string().contains(setting), "{e}"),
            other => panic!("{setting}: {other:?}"),
        }
    }
}

/// The planner does not trust that validation ran: a binding host that is a wildcard
/// (validation refuses it first) is a plan error at its position, never a binding whose
/// host no request could be compared with.
#[test]
fn a_wildcard_binding_host_is_refused_by_the_planner_too() {
    let mut spec = spec_of(BASE);
    let binding = spec.spec.bindings.first_mut().expect("BASE has a binding");
    let position = binding.host.position;
    binding.value.host.value = enclave_spec::HostPattern::Suffix("github.com".to_owned());
    match plan(&spec, &Policy::default()) {
        Err(PlanError::WildcardBinding { position: at }) => assert_eq!(at, position),
        other => panic!("expected WildcardBinding, got {other:?}"),
    }
}
