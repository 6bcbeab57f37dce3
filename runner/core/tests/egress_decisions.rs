//! Egress decisions as a table: every row is one connection attempt (or one request
//! through a binding) and the exact decision it must get, checked by one `check` helper.
//!
//! The plans come from small inline specs, parsed and planned the way the CLI does it
//! (`enclave_spec::parse`, then `enclave_core::plan` under `Policy::default()`), so a row
//! pins the whole path from YAML to decision. These are decision-level tests only:
//! nothing here resolves a name or opens a connection. DNS answers (including
//! rebinding) are modelled with `Resolution::Resolved`.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enclave_core::Resolution::{NotModelled, Resolved};
use enclave_core::{
    AddressClass, BINDING_PORT, BindingPlan, BindingScopeError, Decision, DecisionContext, DenyReason, EgressPhase,
    Plan, Policy, Resolution, RuleRef, check_binding_scope, decide,
};
use enclave_spec::HostError as H;

const RUN: EgressPhase = EgressPhase::Run;
const CLONE: EgressPhase = EgressPhase::Clone;

/// The proxy's own addresses in every row. The first lies inside `allow[2]`
/// (10.1.0.0/16) and the second inside `allow[6]` (fd12:3456::/32), so only the
/// proxy-self check can be what stops them.
const PROXY: [IpAddr; 2] =
    [IpAddr::V4(Ipv4Addr::new(10, 1, 200, 1)), IpAddr::V6(Ipv6Addr::new(0xfd12, 0x3456, 0, 0, 0, 0, 0, 0x200))];

/// The host's own addresses in every row (what the proxy reads from its kernel): one
/// inside `allow[2]`, one inside `allow[5]`, a Docker bridge gateway and an IPv6 one
/// inside `allow[6]`, so only the host-address check can be what stops them.
const HOST: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(10, 1, 77, 1)),
    IpAddr::V4(Ipv4Addr::new(192, 168, 7, 9)),
    IpAddr::V4(Ipv4Addr::new(172, 17, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0xfd12, 0x3456, 0, 0, 0, 0, 0, 0x77)),
];

/// An allowlist session with a repo, host rules, CIDR rules inside special ranges, a
/// public CIDR rule and two bindings. Rule ids follow the order below.
const ALLOWLIST_SPEC: &str = r#"
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: egress-table
spec:
  repo:
    url: https://git.example.org/team/app.git
  command: ["make", "test"]
  egress:
    mode: allowlist
    allow:
      - host: "*.example.com"    # allow[0]
        ports: [443]
      - host: pypi.org           # allow[1]
        ports: [443]
      - cidr: 10.1.0.0/16        # allow[2]: inside 10.0.0.0/8
        ports: [443, 5432]
      - cidr: 8.8.8.0/24         # allow[3]: public
        ports: [53]
      - cidr: 100.64.1.0/24      # allow[4]: inside CGNAT
        ports: [443]
      - cidr: 192.168.7.0/24     # allow[5]: inside 192.168.0.0/16
        ports: [443]
      - cidr: "fd12:3456::/32"   # allow[6]: inside fc00::/7
        ports: [443]
  bindings:
    - name: github-api
      host: api.github.com
      secret: gh-token
      inject:
        header: Authorization
        format: "Bearer {secret}"
      methods: [GET, POST]
      paths:
        - /user
        - /repos/*
    - name: artifacts
      host: artifacts.example.com
      port: 8443
      secret: artifacts-token
      inject:
        header: X-Api-Key
"#;

/// Every address acknowledged open, on ports 80 and 443: special ranges and the
/// metadata address must stay denied anyway.
const ANY_ADDRESS_SPEC: &str = r#"
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: any-address
spec:
  command: ["true"]
  egress:
    mode: allowlist
    allow:
      - cidr: 0.0.0.0/0          # allow[0]
        ports: [80, 443]
        acknowledgeAnyAddress: true
      - cidr: "::/0"             # allow[1]
        ports: [80, 443]
        acknowledgeAnyAddress: true
"#;

/// Egress deny (the default) with a private repo cloned over SSH.
const DENY_SPEC: &str = r#"
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: offline
spec:
  repo:
    url: git@github.com:org/repo.git
  command: ["make"]
"#;

struct Plans {
    allowlist: Plan,
    any_address: Plan,
    deny: Plan,
}

fn plans() -> Plans {
    Plans { allowlist: plan_of(ALLOWLIST_SPEC), any_address: plan_of(ANY_ADDRESS_SPEC), deny: plan_of(DENY_SPEC) }
}

fn plan_of(yaml: &str) -> Plan {
    let parsed =
        enclave_spec::parse("inline.yaml", yaml.as_bytes()).unwrap_or_else(|e| panic!("spec refused: {:#?}", e.errors));
    enclave_core::plan(&parsed.spec, &table_policy()).unwrap_or_else(|e| panic!("spec not planned: {e}"))
}

/// The operator lists the private ranges the table's rules name.
fn table_policy() -> Policy {
    let nets = ["10.0.0.0/8", "100.64.0.0/10", "192.168.0.0/16", "fc00::/7"];
    Policy { allow_networks: nets.iter().map(|n| n.parse().unwrap()).collect(), ..Policy::default() }
}

fn binding<'a>(plan: &'a Plan, name: &str) -> &'a BindingPlan {
    plan.bindings.iter().find(|b| b.name == name).unwrap_or_else(|| panic!("plan has no binding {name}"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("bad address {text:?} in the table: {e}"))
}

fn allow(rule: &str) -> Decision {
    Decision::Allow { rule: rule.parse().expect("a rule id") }
}

fn deny(reason: DenyReason) -> Decision {
    Decision::Deny { reason }
}

fn invalid(error: H) -> Decision {
    deny(DenyReason::InvalidHost { detail: error.to_string() })
}

/// The canonicaliser's refusal of `spelling`, which every such error quotes.
fn refused(error: fn(String) -> H, spelling: &str) -> Decision {
    invalid(error(spelling.to_owned()))
}

fn numeric(spelling: &str) -> Decision {
    refused(H::NumericSpelling, spelling)
}

fn special(address: &str, class: AddressClass) -> Decision {
    deny(DenyReason::SpecialAddress { address: ip(address), class })
}

fn never(address: &str, class: AddressClass) -> Decision {
    deny(DenyReason::NeverReachable { address: ip(address), class })
}

fn metadata(address: &str) -> Decision {
    deny(DenyReason::Metadata { address: ip(address) })
}

fn host_address(address: &str) -> Decision {
    deny(DenyReason::HostAddress { address: ip(address) })
}

fn proxy_self(address: &str) -> Decision {
    deny(DenyReason::ProxySelf { address: ip(address) })
}

fn method_refused(binding: &str, method: &str) -> Result<(), BindingScopeError> {
    Err(BindingScopeError::Method { binding: binding.to_owned(), method: method.to_owned() })
}

fn path_refused(binding: &str, path: &str) -> Result<(), BindingScopeError> {
    Err(BindingScopeError::Path { binding: binding.to_owned(), path: path.to_owned() })
}

/// One row of the table.
enum Row<'a> {
    /// A connection attempt: plan, phase, host as the workload wrote it, port, DNS
    /// answer, and the exact decision.
    Connect(&'a Plan, EgressPhase, &'a str, u16, Resolution<'a>, Decision),
    /// A request through a binding: binding, method, path (with any query), and the
    /// exact scope check result.
    Request(&'a BindingPlan, &'a str, &'a str, Result<(), BindingScopeError>),
}

use Row::{Connect, Request};

/// Runs every row and reports every mismatch at once.
fn check(rows: &[Row<'_>]) {
    let mut failures = Vec::new();
    for row in rows {
        match row {
            Connect(plan, phase, host, port, dns, want) => {
                let ctx = DecisionContext {
                    plan,
                    phase: *phase,
                    proxy_addresses: &PROXY,
                    host_addresses: &HOST.map(ipnet::IpNet::from),
                    trusted_clone_networks: &[],
                };
                let got = decide(&ctx, host, *port, *dns);
                if got != *want {
                    failures.push(format!(
                        "[{}] {phase} {host:?}:{port} {dns:?}\n    got  {got:?}\n    want {want:?}",
                        plan.name
                    ));
                }
            }
            Request(binding, method, path, want) => {
                let got = check_binding_scope(binding, method, path);
                if got != *want {
                    failures.push(format!(
                        "[binding {}] {method} {path:?}\n    got  {got:?}\n    want {want:?}",
                        binding.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

#[test]
fn egress_rejects_numeric_spellings_of_addresses() {
    let p = plans();
    let a = &p.allowlist;
    check(&[
        Connect(a, RUN, "2852039166", 80, NotModelled, numeric("2852039166")),
        Connect(a, RUN, "0xA9FEA9FE", 80, NotModelled, numeric("0xA9FEA9FE")),
        Connect(a, RUN, "0XA9FEA9FE", 80, NotModelled, numeric("0XA9FEA9FE")),
        Connect(a, RUN, "0xA9FEA9FE.", 80, NotModelled, numeric("0xA9FEA9FE.")),
        Connect(a, RUN, "0251.0376.0251.0376", 80, NotModelled, numeric("0251.0376.0251.0376")),
        Connect(a, RUN, "169.254.43518", 80, NotModelled, numeric("169.254.43518")),
        Connect(a, RUN, "0xa9.0xfe.0xa9.0xfe", 80, NotModelled, numeric("0xa9.0xfe.0xa9.0xfe")),
        Connect(a, RUN, "169.254.0xa9.0xfe", 80, NotModelled, numeric("169.254.0xa9.0xfe")),
        Connect(a, RUN, "0xa9.254.169.254", 80, NotModelled, numeric("0xa9.254.169.254")),
        Connect(a, RUN, "0x7f000001", 80, NotModelled, numeric("0x7f000001")),
        Connect(a, RUN, "127.1", 80, NotModelled, numeric("127.1")),
        Connect(a, RUN, "1.2.3.4.5", 80, NotModelled, numeric("1.2.3.4.5")),
        // Leading zeros: octal to some parsers, decimal to others.
        Connect(a, RUN, "010.1.2.3", 443, NotModelled, numeric("010.1.2.3")),
        Connect(a, RUN, "10.01.2.3", 443, NotModelled, numeric("10.01.2.3")),
        Connect(a, RUN, "169.254.169.0254", 80, NotModelled, numeric("169.254.169.0254")),
        // A numeric or hex top label is an address spelling, not a name.
        Connect(a, RUN, "pkgs.example.123", 443, NotModelled, numeric("pkgs.example.123")),
        Connect(a, RUN, "pkgs.example.0x7f", 443, NotModelled, numeric("pkgs.example.0x7f")),
    ]);
}

#[test]
fn egress_rejects_smuggling_characters_in_hosts() {
    let p = plans();
    let a = &p.allowlist;
    let long = format!("{}.example.com", "a".repeat(250));
    check(&[
        // Userinfo: `a@b` is host b to a URL parser and host a@b to a naive one.
        Connect(
            a,
            RUN,
            "pkgs.example.com@169.254.169.254",
            443,
            NotModelled,
            refused(H::Userinfo, "pkgs.example.com@169.254.169.254"),
        ),
        Connect(a, RUN, "user@pypi.org", 443, NotModelled, refused(H::Userinfo, "user@pypi.org")),
        // Percent-encoding of a dot and of digits.
        Connect(a, RUN, "pypi%2eorg", 443, NotModelled, refused(H::Percent, "pypi%2eorg")),
        Connect(a, RUN, "%31%36%39.254.169.254", 80, NotModelled, refused(H::Percent, "%31%36%39.254.169.254")),
        // NUL truncation and whitespace (ASCII and Unicode).
        Connect(a, RUN, "pypi.org\0.evil.net", 443, NotModelled, refused(H::ControlOrSpace, "pypi.org\0.evil.net")),
        Connect(a, RUN, " pypi.org", 443, NotModelled, refused(H::ControlOrSpace, " pypi.org")),
        Connect(a, RUN, "pypi.org\t", 443, NotModelled, refused(H::ControlOrSpace, "pypi.org\t")),
        Connect(
            a,
            RUN,
            "pypi.org\r\nHost: evil.net",
            443,
            NotModelled,
            refused(H::ControlOrSpace, "pypi.org\r\nHost: evil.net"),
        ),
        Connect(a, RUN, "pypi.org\u{a0}", 443, NotModelled, refused(H::ControlOrSpace, "pypi.org\u{a0}")),
        Connect(a, RUN, "pypi.org\u{3000}", 443, NotModelled, refused(H::ControlOrSpace, "pypi.org\u{3000}")),
        // Ports and unbracketed IPv6.
        Connect(a, RUN, "pypi.org:443", 443, NotModelled, refused(H::Colon, "pypi.org:443")),
        Connect(a, RUN, "::1", 80, NotModelled, refused(H::Colon, "::1")),
        Connect(a, RUN, "::ffff:169.254.169.254", 80, NotModelled, refused(H::Colon, "::ffff:169.254.169.254")),
        Connect(a, RUN, "fe80::1", 80, NotModelled, refused(H::Colon, "fe80::1")),
        // Broken brackets, zone ids, IPv4 in brackets.
        Connect(a, RUN, "[::1", 80, NotModelled, refused(H::BadIpv6, "[::1")),
        Connect(a, RUN, "[169.254.169.254]", 80, NotModelled, refused(H::BadIpv6, "[169.254.169.254]")),
        Connect(a, RUN, "[fe80::1%eth0]", 80, NotModelled, refused(H::Percent, "[fe80::1%eth0]")),
        // Empty, overlong, and malformed names.
        Connect(a, RUN, "", 443, NotModelled, invalid(H::Empty)),
        Connect(a, RUN, &long, 443, NotModelled, invalid(H::TooLong)),
        Connect(a, RUN, ".", 443, NotModelled, refused(H::InvalidName, ".")),
        Connect(a, RUN, "pkgs..example.com", 443, NotModelled, refused(H::InvalidName, "pkgs..example.com")),
        Connect(
            a,
            RUN,
            "under_score.example.com",
            443,
            NotModelled,
            refused(H::InvalidName, "under_score.example.com"),
        ),
    ]);
}

#[test]
fn egress_canonicalises_case_trailing_dots_and_idna() {
    let p = plans();
    let a = &p.allowlist;
    check(&[
        Connect(a, RUN, "PKGS.Example.COM", 443, NotModelled, allow("allow[0]")),
        Connect(a, RUN, "PyPI.ORG.", 443, NotModelled, allow("allow[1]")),
        Connect(a, RUN, "pkgs.example.com.", 443, NotModelled, allow("allow[0]")),
        Connect(a, RUN, "pkgs.example.com..", 443, NotModelled, refused(H::InvalidName, "pkgs.example.com..")),
        Connect(a, RUN, "bücher.example.com", 443, NotModelled, allow("allow[0]")),
        Connect(a, RUN, "BÜCHER.Example.com", 443, NotModelled, allow("allow[0]")),
        Connect(a, RUN, "xn--bcher-kva.example.com", 443, NotModelled, allow("allow[0]")),
        // IDNA never turns a name into a different allowlisted one.
        Connect(a, RUN, "bücher.example.org", 443, NotModelled, deny(DenyReason::NotAllowlisted)),
        Connect(a, RUN, "pypi.org.evil.net", 443, NotModelled, deny(DenyReason::NotAllowlisted)),
    ]);
}

#[test]
fn egress_rejects_decimal_metadata_ip() {
    let p = plans();
    check(&[
        Connect(&p.allowlist, RUN, "2852039166", 80, NotModelled, numeric("2852039166")),
        Connect(&p.any_address, RUN, "2852039166", 80, NotModelled, numeric("2852039166")),
        Connect(&p.allowlist, CLONE, "2852039166", 443, NotModelled, numeric("2852039166")),
    ]);
}

#[test]
fn egress_denies_metadata_in_every_spelling_even_under_any_address() {
    let p = plans();
    let mut rows = Vec::new();
    for plan in [&p.allowlist, &p.any_address] {
        rows.extend([
            Connect(plan, RUN, "169.254.169.254", 80, NotModelled, metadata("169.254.169.254")),
            Connect(plan, RUN, "169.254.169.254.", 80, NotModelled, metadata("169.254.169.254")),
            // IPv4-mapped: the canonicaliser stores these as the IPv4 address.
            Connect(plan, RUN, "[::ffff:169.254.169.254]", 80, NotModelled, metadata("169.254.169.254")),
            Connect(plan, RUN, "[::ffff:a9fe:a9fe]", 80, NotModelled, metadata("169.254.169.254")),
            Connect(plan, RUN, "[::FFFF:A9FE:A9FE]", 80, NotModelled, metadata("169.254.169.254")),
            Connect(plan, RUN, "[0:0:0:0:0:ffff:a9fe:a9fe]", 80, NotModelled, metadata("169.254.169.254")),
            // NAT64, 6to4 and IPv4-compatible forms stay IPv6 but carry the address.
            Connect(plan, RUN, "[64:ff9b::a9fe:a9fe]", 80, NotModelled, metadata("64:ff9b::a9fe:a9fe")),
            Connect(plan, RUN, "[64:ff9b::169.254.169.254]", 80, NotModelled, metadata("64:ff9b::a9fe:a9fe")),
            Connect(plan, RUN, "[2002:a9fe:a9fe::1]", 80, NotModelled, metadata("2002:a9fe:a9fe::1")),
            Connect(plan, RUN, "[::169.254.169.254]", 80, NotModelled, metadata("::a9fe:a9fe")),
            // The IPv6 metadata endpoint.
            Connect(plan, RUN, "[fd00:ec2::254]", 80, NotModelled, metadata("fd00:ec2::254")),
            Connect(plan, RUN, "[FD00:EC2:0::254]", 443, NotModelled, metadata("fd00:ec2::254")),
        ]);
    }
    // Not even the clone step reaches it.
    rows.push(Connect(&p.allowlist, CLONE, "169.254.169.254", 443, NotModelled, metadata("169.254.169.254")));
    check(&rows);
}

/// `169.254.169.254` in fullwidth digits and fullwidth full stops, which IDNA maps to
/// ASCII.
const FULLWIDTH_METADATA: &str = "\u{ff11}\u{ff16}\u{ff19}\u{ff0e}\u{ff12}\u{ff15}\u{ff14}\u{ff0e}\u{ff11}\u{ff16}\u{ff19}\u{ff0e}\u{ff12}\u{ff15}\u{ff14}";

/// Hosts that IDNA maps to an address spelling (fullwidth digits, ideographic full
/// stops, ignorable characters) must be refused like the ASCII spelling, not turned
/// into a domain named `169.254.169.254`.
#[test]
fn egress_rejects_idna_mapped_metadata_ip() {
    let p = plans();
    let a = &p.allowlist;
    let ideographic_stops = "169\u{3002}254\u{3002}169\u{3002}254";
    let soft_hyphen = "169.254.169.25\u{ad}4";
    let zero_width = "169.254.169.254\u{200b}";
    let fullwidth_hex = "\u{ff10}\u{ff58}\u{ff41}\u{ff19}\u{ff46}\u{ff45}\u{ff41}\u{ff19}\u{ff46}\u{ff45}";
    check(&[
        Connect(a, RUN, FULLWIDTH_METADATA, 80, NotModelled, numeric(FULLWIDTH_METADATA)),
        Connect(a, RUN, ideographic_stops, 80, NotModelled, numeric(ideographic_stops)),
        Connect(a, RUN, soft_hyphen, 80, NotModelled, numeric(soft_hyphen)),
        Connect(a, RUN, zero_width, 80, NotModelled, numeric(zero_width)),
        Connect(a, RUN, fullwidth_hex, 80, NotModelled, numeric(fullwidth_hex)),
    ]);
}

/// A host rule written with fullwidth digits canonicalises to the domain
/// `169.254.169.254`; it must be refused, or at the very least never admit the
/// metadata address by name.
#[test]
fn egress_host_rule_cannot_name_metadata_via_idna() {
    let yaml = format!(
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: idna-rule\nspec:\n  command: [\"true\"]\n  egress:\n    mode: allowlist\n    allow:\n      - host: \"{FULLWIDTH_METADATA}\"\n        ports: [80]\n"
    );
    let Ok(parsed) = enclave_spec::parse("idna-rule.yaml", yaml.as_bytes()) else {
        return; // Refused: the correct outcome.
    };
    let plan = enclave_core::plan(&parsed.spec, &Policy::default()).unwrap_or_else(|e| panic!("spec not planned: {e}"));
    let ctx = DecisionContext {
        plan: &plan,
        phase: RUN,
        proxy_addresses: &PROXY,
        host_addresses: &[],
        trusted_clone_networks: &[],
    };
    let decision = decide(&ctx, FULLWIDTH_METADATA, 80, NotModelled);
    panic!(
        "a host rule spelling 169.254.169.254 in fullwidth digits was accepted as {:?}; \
         the same spelling then gets {decision:?}",
        plan.egress.rules[0].target
    );
}

#[test]
fn egress_denies_special_ranges_unless_a_cidr_rule_inside_names_them() {
    let p = plans();
    let (a, any) = (&p.allowlist, &p.any_address);
    use AddressClass::{Cgnat, LinkLocal, Loopback, Multicast, Private, Reserved};
    check(&[
        // 10.1.0.0/16 opens its own addresses, on its own ports, and nothing else in 10/8.
        Connect(a, RUN, "10.1.2.3", 443, NotModelled, allow("allow[2]")),
        Connect(a, RUN, "10.1.2.3", 5432, NotModelled, allow("allow[2]")),
        Connect(a, RUN, "[::ffff:10.1.2.3]", 5432, NotModelled, allow("allow[2]")),
        Connect(a, RUN, "10.2.0.1", 443, NotModelled, special("10.2.0.1", Private)),
        Connect(a, RUN, "[::ffff:10.2.0.1]", 443, NotModelled, special("10.2.0.1", Private)),
        Connect(a, RUN, "[64:ff9b::a02:1]", 443, NotModelled, special("64:ff9b::a02:1", Private)),
        Connect(a, RUN, "10.1.2.3", 22, NotModelled, special("10.1.2.3", AddressClass::Private)),
        Connect(a, RUN, "100.64.1.9", 443, NotModelled, allow("allow[4]")),
        Connect(a, RUN, "100.100.100.201", 443, NotModelled, special("100.100.100.201", Cgnat)),
        Connect(a, RUN, "192.168.7.1", 443, NotModelled, allow("allow[5]")),
        Connect(a, RUN, "192.168.8.1", 443, NotModelled, special("192.168.8.1", Private)),
        // Link-local is never reachable, whatever a rule says (a rule naming it is refused
        // at plan time).
        Connect(a, RUN, "169.254.1.1", 443, NotModelled, never("169.254.1.1", LinkLocal)),
        Connect(a, RUN, "169.254.2.1", 443, NotModelled, never("169.254.2.1", LinkLocal)),
        Connect(a, RUN, "[fd12:3456::1]", 443, NotModelled, allow("allow[6]")),
        Connect(a, RUN, "[fd99::1]", 443, NotModelled, special("fd99::1", Private)),
        Connect(a, RUN, "[fe80::1]", 443, NotModelled, never("fe80::1", LinkLocal)),
        Connect(a, RUN, "127.0.0.1", 443, NotModelled, never("127.0.0.1", Loopback)),
        // A public CIDR rule: the rule's ports, and nothing outside it.
        Connect(a, RUN, "8.8.8.8", 53, NotModelled, allow("allow[3]")),
        Connect(a, RUN, "8.8.8.8", 443, NotModelled, deny(DenyReason::PortNotAllowed)),
        Connect(a, RUN, "9.9.9.9", 53, NotModelled, deny(DenyReason::NotAllowlisted)),
        // 0.0.0.0/0 and ::/0, acknowledged, open public addresses only.
        Connect(any, RUN, "8.8.8.8", 443, NotModelled, allow("allow[0]")),
        Connect(any, RUN, "[2606:4700::1111]", 443, NotModelled, allow("allow[1]")),
        Connect(any, RUN, "8.8.8.8", 22, NotModelled, deny(DenyReason::PortNotAllowed)),
        Connect(any, RUN, "10.1.2.3", 443, NotModelled, special("10.1.2.3", AddressClass::Private)),
        Connect(any, RUN, "172.16.0.1", 443, NotModelled, special("172.16.0.1", Private)),
        Connect(any, RUN, "192.168.1.1", 443, NotModelled, special("192.168.1.1", Private)),
        Connect(any, RUN, "[fd12::1]", 443, NotModelled, special("fd12::1", Private)),
        Connect(any, RUN, "127.0.0.1", 80, NotModelled, never("127.0.0.1", Loopback)),
        Connect(any, RUN, "[::1]", 80, NotModelled, never("::1", Loopback)),
        Connect(any, RUN, "[::ffff:127.0.0.1]", 80, NotModelled, never("127.0.0.1", Loopback)),
        Connect(any, RUN, "169.254.2.1", 80, NotModelled, never("169.254.2.1", LinkLocal)),
        Connect(any, RUN, "[fe80::1]", 80, NotModelled, never("fe80::1", LinkLocal)),
        Connect(any, RUN, "100.64.0.1", 80, NotModelled, special("100.64.0.1", Cgnat)),
        Connect(any, RUN, "224.0.0.251", 80, NotModelled, special("224.0.0.251", Multicast)),
        Connect(any, RUN, "[ff02::1]", 80, NotModelled, special("ff02::1", Multicast)),
        Connect(any, RUN, "0.0.0.0", 80, NotModelled, never("0.0.0.0", AddressClass::Unspecified)),
        Connect(any, RUN, "[::]", 80, NotModelled, never("::", AddressClass::Unspecified)),
        Connect(any, RUN, "255.255.255.255", 80, NotModelled, special("255.255.255.255", Reserved)),
        Connect(any, RUN, "192.0.2.1", 80, NotModelled, special("192.0.2.1", Reserved)),
        Connect(any, RUN, "240.0.0.1", 80, NotModelled, special("240.0.0.1", Reserved)),
        Connect(any, RUN, "[2002:0a00:0001::1]", 80, NotModelled, special("2002:a00:1::1", Private)),
        Connect(any, RUN, "[::10.0.0.1]", 80, NotModelled, special("::a00:1", Private)),
    ]);
}

#[test]
fn egress_denies_dns_rebinding_to_special_addresses() {
    let p = plans();
    let a = &p.allowlist;
    let public = [ip("93.184.216.34")];
    let public_then_private = [ip("93.184.216.34"), ip("10.0.0.7")];
    let private_then_public = [ip("10.0.0.7"), ip("93.184.216.34")];
    let loopback = [ip("127.0.0.1")];
    let metadata_v4 = [ip("169.254.169.254")];
    let metadata_mapped = [ip("::ffff:169.254.169.254")];
    let metadata_nat64 = [ip("64:ff9b::a9fe:a9fe")];
    let named_private = [ip("10.1.2.3")];
    let unnamed_private = [ip("10.2.0.1")];
    let unspecified = [ip("0.0.0.0")];
    let v6_loopback = [ip("93.184.216.34"), ip("::1")];
    let host = "rebind.example.com";
    check(&[
        Connect(a, RUN, host, 443, Resolved(&public), allow("allow[0]")),
        Connect(a, RUN, host, 443, Resolved(&public_then_private), special("10.0.0.7", AddressClass::Private)),
        Connect(a, RUN, host, 443, Resolved(&private_then_public), special("10.0.0.7", AddressClass::Private)),
        Connect(a, RUN, host, 443, Resolved(&loopback), never("127.0.0.1", AddressClass::Loopback)),
        Connect(a, RUN, host, 443, Resolved(&v6_loopback), never("::1", AddressClass::Loopback)),
        Connect(a, RUN, host, 443, Resolved(&metadata_v4), metadata("169.254.169.254")),
        Connect(a, RUN, host, 443, Resolved(&metadata_mapped), metadata("::ffff:169.254.169.254")),
        Connect(a, RUN, host, 443, Resolved(&metadata_nat64), metadata("64:ff9b::a9fe:a9fe")),
        Connect(a, RUN, host, 443, Resolved(&unspecified), never("0.0.0.0", AddressClass::Unspecified)),
        // An address a CIDR rule names (on this port) is fine; one it does not name is not.
        Connect(a, RUN, host, 443, Resolved(&named_private), allow("allow[0]")),
        Connect(a, RUN, host, 443, Resolved(&unnamed_private), special("10.2.0.1", AddressClass::Private)),
        // No address at all is a deny, never a pass.
        Connect(a, RUN, host, 443, Resolved(&[]), deny(DenyReason::NoAddress)),
        Connect(a, RUN, "api.github.com", BINDING_PORT, Resolved(&[]), deny(DenyReason::NoAddress)),
        // Binding hosts and the repo host are vetted the same way.
        Connect(
            a,
            RUN,
            "api.github.com",
            BINDING_PORT,
            Resolved(&public_then_private),
            special("10.0.0.7", AddressClass::Private),
        ),
        Connect(a, CLONE, "git.example.org", 443, Resolved(&loopback), never("127.0.0.1", AddressClass::Loopback)),
        Connect(a, CLONE, "git.example.org", 443, Resolved(&metadata_v4), metadata("169.254.169.254")),
        // A name the rules do not admit is refused by name, whatever it resolves to.
        Connect(a, RUN, "evil.net", 443, Resolved(&public), deny(DenyReason::NotAllowlisted)),
    ]);
}

#[test]
fn egress_wildcards_match_subdomains_only() {
    let p = plans();
    let a = &p.allowlist;
    check(&[
        Connect(a, RUN, "a.example.com", 443, NotModelled, allow("allow[0]")),
        Connect(a, RUN, "a.b.example.com", 443, NotModelled, allow("allow[0]")),
        Connect(a, RUN, "example.com", 443, NotModelled, deny(DenyReason::NotAllowlisted)),
        Connect(a, RUN, "badexample.com", 443, NotModelled, deny(DenyReason::NotAllowlisted)),
        Connect(a, RUN, "a.example.com.evil.net", 443, NotModelled, deny(DenyReason::NotAllowlisted)),
        Connect(a, RUN, "example.com.evil.net", 443, NotModelled, deny(DenyReason::NotAllowlisted)),
        // An exact rule matches only itself.
        Connect(a, RUN, "pypi.org", 443, NotModelled, allow("allow[1]")),
        Connect(a, RUN, "files.pypi.org", 443, NotModelled, deny(DenyReason::NotAllowlisted)),
    ]);
}

#[test]
fn egress_port_mismatch_is_port_not_allowed() {
    let p = plans();
    let a = &p.allowlist;
    check(&[
        Connect(a, RUN, "a.example.com", 80, NotModelled, deny(DenyReason::PortNotAllowed)),
        Connect(a, RUN, "pypi.org", 22, NotModelled, deny(DenyReason::PortNotAllowed)),
        Connect(a, RUN, "pypi.org", 0, NotModelled, deny(DenyReason::PortNotAllowed)),
        Connect(a, RUN, "8.8.8.8", 443, NotModelled, deny(DenyReason::PortNotAllowed)),
    ]);
}

#[test]
fn egress_deny_mode_has_no_network() {
    let p = plans();
    let d = &p.deny;
    let public = [ip("93.184.216.34")];
    check(&[
        Connect(d, RUN, "pypi.org", 443, NotModelled, deny(DenyReason::NoNetwork)),
        Connect(d, RUN, "pypi.org", 443, Resolved(&public), deny(DenyReason::NoNetwork)),
        Connect(d, RUN, "8.8.8.8", 53, NotModelled, deny(DenyReason::NoNetwork)),
        Connect(d, RUN, "169.254.169.254", 80, NotModelled, deny(DenyReason::NoNetwork)),
        // Not even the repo host, once the clone is over.
        Connect(d, RUN, "github.com", 22, NotModelled, deny(DenyReason::NoNetwork)),
    ]);
}

#[test]
fn egress_clone_phase_reaches_only_the_repo_host_and_port() {
    let p = plans();
    let (a, d, any) = (&p.allowlist, &p.deny, &p.any_address);
    let public = [ip("93.184.216.34")];
    check(&[
        Connect(a, CLONE, "git.example.org", 443, NotModelled, allow("clone:repo")),
        Connect(a, CLONE, "GIT.Example.org.", 443, NotModelled, allow("clone:repo")),
        Connect(a, CLONE, "git.example.org", 443, Resolved(&public), allow("clone:repo")),
        Connect(a, CLONE, "git.example.org", 22, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        Connect(a, CLONE, "git.example.org", 80, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        // Allowlisted destinations, bindings and CIDR-named addresses are for the workload.
        Connect(a, CLONE, "pypi.org", 443, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        Connect(a, CLONE, "pkgs.example.com", 443, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        Connect(a, CLONE, "api.github.com", 443, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        Connect(a, CLONE, "10.1.2.3", 443, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        Connect(a, CLONE, "8.8.8.8", 53, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        Connect(a, CLONE, "x.git.example.org", 443, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        // Egress deny applies to the workload, not to the clone of its repo.
        Connect(d, CLONE, "github.com", 22, NotModelled, allow("clone:repo")),
        Connect(d, CLONE, "GitHub.COM.", 22, NotModelled, allow("clone:repo")),
        Connect(d, CLONE, "github.com", 443, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        Connect(d, CLONE, "api.github.com", 22, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        // No repo, no clone reach at all.
        Connect(any, CLONE, "8.8.8.8", 443, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
    ]);
}

#[test]
fn egress_run_phase_does_not_inherit_the_repo_host() {
    let p = plans();
    check(&[
        Connect(&p.allowlist, RUN, "git.example.org", 443, NotModelled, deny(DenyReason::NotAllowlisted)),
        Connect(&p.any_address, RUN, "git.example.org", 443, NotModelled, deny(DenyReason::NotAllowlisted)),
        Connect(&p.deny, RUN, "github.com", 22, NotModelled, deny(DenyReason::NoNetwork)),
    ]);
}

/// A workload calls a binding with plain HTTP on `BINDING_PORT`; the proxy alone talks
/// TLS to the binding's own upstream port, which the workload may not reach directly.
#[test]
fn egress_bindings_admit_only_their_host_on_the_binding_port() {
    let p = plans();
    let a = &p.allowlist;
    let internal = [ip("10.1.2.3")];
    let unnamed = [ip("10.2.0.1")];
    // Decided only; nothing here is ever dialled.
    let metadata_ip = [ip("169.254.169.254")];
    check(&[
        Connect(a, RUN, "api.github.com", BINDING_PORT, NotModelled, allow("binding:github-api")),
        Connect(a, RUN, "API.GitHub.com.", BINDING_PORT, NotModelled, allow("binding:github-api")),
        Connect(a, RUN, "api.github.com", 443, NotModelled, deny(DenyReason::PortNotAllowed)),
        Connect(a, RUN, "api.github.com", 8080, NotModelled, deny(DenyReason::PortNotAllowed)),
        Connect(a, RUN, "github.com", BINDING_PORT, NotModelled, deny(DenyReason::NotAllowlisted)),
        Connect(a, RUN, "x.api.github.com", BINDING_PORT, NotModelled, deny(DenyReason::NotAllowlisted)),
        // The upstream port 8443 is the proxy's business; 443 is an ordinary wildcard
        // match for the same host (no credential); other ports are refused.
        Connect(a, RUN, "artifacts.example.com", BINDING_PORT, NotModelled, allow("binding:artifacts")),
        Connect(a, RUN, "artifacts.example.com", 8443, NotModelled, deny(DenyReason::PortNotAllowed)),
        Connect(a, RUN, "artifacts.example.com", 443, NotModelled, allow("allow[0]")),
        // A binding resolving into a special range needs the address acknowledged by a
        // CIDR rule naming it (any port: allow[2] names 10.1.0.0/16 for 443 and 5432,
        // neither of them the binding port 80 nor artifacts' 8443); an address no rule
        // names stays denied.
        Connect(a, RUN, "api.github.com", BINDING_PORT, Resolved(&internal), allow("binding:github-api")),
        Connect(a, RUN, "artifacts.example.com", BINDING_PORT, Resolved(&internal), allow("binding:artifacts")),
        Connect(a, RUN, "api.github.com", BINDING_PORT, Resolved(&unnamed), special("10.2.0.1", AddressClass::Private)),
        Connect(a, RUN, "api.github.com", BINDING_PORT, Resolved(&metadata_ip), metadata("169.254.169.254")),
        // That acknowledgement opens nothing directly: the rule's own ports still apply.
        Connect(a, RUN, "10.1.2.3", 8443, NotModelled, special("10.1.2.3", AddressClass::Private)),
        // Bindings are workload reach only.
        Connect(a, CLONE, "api.github.com", BINDING_PORT, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
        Connect(a, CLONE, "api.github.com", 443, NotModelled, deny(DenyReason::CloneOnlyRepoHost)),
    ]);
}

#[test]
fn egress_denies_the_proxy_itself() {
    let p = plans();
    let (a, any) = (&p.allowlist, &p.any_address);
    let proxy_v4 = [ip("10.1.200.1")];
    let proxy_v6 = [ip("93.184.216.34"), ip("fd12:3456::200")];
    check(&[
        Connect(a, RUN, "10.1.200.1", 443, NotModelled, proxy_self("10.1.200.1")),
        Connect(a, RUN, "[::ffff:10.1.200.1]", 443, NotModelled, proxy_self("10.1.200.1")),
        Connect(a, RUN, "[64:ff9b::a01:c801]", 443, NotModelled, proxy_self("64:ff9b::a01:c801")),
        Connect(a, RUN, "[fd12:3456::200]", 443, NotModelled, proxy_self("fd12:3456::200")),
        Connect(a, RUN, "rebind.example.com", 443, Resolved(&proxy_v4), proxy_self("10.1.200.1")),
        Connect(a, RUN, "api.github.com", BINDING_PORT, Resolved(&proxy_v6), proxy_self("fd12:3456::200")),
        Connect(a, CLONE, "git.example.org", 443, Resolved(&proxy_v4), proxy_self("10.1.200.1")),
        Connect(any, RUN, "10.1.200.1", 443, NotModelled, proxy_self("10.1.200.1")),
        // Its neighbours are decided normally.
        Connect(a, RUN, "10.1.200.2", 443, NotModelled, allow("allow[2]")),
    ]);
}

#[test]
fn binding_scope_refuses_methods_and_path_escapes() {
    let p = plans();
    let github = binding(&p.allowlist, "github-api");
    let artifacts = binding(&p.allowlist, "artifacts");
    check(&[
        Request(github, "GET", "/user", Ok(())),
        Request(github, "GET", "/user?per_page=100", Ok(())),
        Request(github, "GET", "/user#fragment", Ok(())),
        Request(github, "POST", "/repos/org/app/issues/42/labels", Ok(())),
        Request(github, "DELETE", "/repos/org/app", method_refused("github-api", "DELETE")),
        Request(github, "PUT", "/user", method_refused("github-api", "PUT")),
        // Methods are case-sensitive (RFC 9110); `get` is not `GET`.
        Request(github, "get", "/user", method_refused("github-api", "get")),
        // The method is checked first, so an escape with a bad method names the method.
        Request(github, "DELETE", "/repos/../admin", method_refused("github-api", "DELETE")),
        Request(github, "GET", "/orgs/org/members", path_refused("github-api", "/orgs/org/members")),
        Request(github, "GET", "/user/", path_refused("github-api", "/user/")),
        Request(github, "GET", "/user/emails", path_refused("github-api", "/user/emails")),
        Request(github, "GET", "/repos", path_refused("github-api", "/repos")),
        Request(github, "GET", "/reposX/a", path_refused("github-api", "/reposX/a")),
        Request(github, "GET", "/repos/../admin", path_refused("github-api", "/repos/../admin")),
        Request(github, "GET", "/repos/a/../../admin", path_refused("github-api", "/repos/a/../../admin")),
        Request(github, "GET", "/repos/./admin", path_refused("github-api", "/repos/./admin")),
        Request(github, "GET", "/repos/%2e%2e/admin", path_refused("github-api", "/repos/%2e%2e/admin")),
        Request(github, "GET", "/repos/%2E%2E/admin", path_refused("github-api", "/repos/%2E%2E/admin")),
        Request(github, "GET", "/repos/.%2e/admin", path_refused("github-api", "/repos/.%2e/admin")),
        // The query is not part of the path that is checked.
        Request(github, "GET", "/admin?next=/repos/a", path_refused("github-api", "/admin")),
        // A binding without `methods` or `paths` allows any of them.
        Request(artifacts, "DELETE", "/anything/at/all", Ok(())),
    ]);
}

#[test]
fn operator_trusted_networks_open_the_clone_phase_only_and_never_metadata() {
    let plan = plan_of(
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: internal-git\nspec:\n  repo:\n    url: https://git.internal.test/team/app.git\n  command: [make]\n  egress:\n    mode: allowlist\n    allow:\n      - host: git.internal.test\n        ports: [443]\n",
    );
    let trusted: Vec<ipnet::IpNet> = vec![
        "10.20.0.0/16".parse().unwrap_or_else(|e| panic!("{e}")),
        "169.254.0.0/16".parse().unwrap_or_else(|e| panic!("{e}")),
    ];
    let internal = [ip("10.20.3.4")];
    let metadata = [ip("169.254.169.254")];
    let ctx = |phase| DecisionContext {
        plan: &plan,
        phase,
        proxy_addresses: &PROXY,
        host_addresses: &[],
        trusted_clone_networks: &trusted,
    };
    let host = "git.internal.test";
    assert_eq!(decide(&ctx(CLONE), host, 443, Resolved(&internal)), Decision::Allow { rule: RuleRef::CloneRepo });
    // The same name and address for the workload: its own rules apply, and they do not
    // name the private range.
    assert!(matches!(
        decide(&ctx(RUN), host, 443, Resolved(&internal)),
        Decision::Deny { reason: DenyReason::SpecialAddress { .. } }
    ));
    // Trusting a range never opens the metadata address inside it.
    assert!(matches!(
        decide(&ctx(CLONE), host, 443, Resolved(&metadata)),
        Decision::Deny { reason: DenyReason::Metadata { .. } }
    ));
    // Without the operator's trust, the clone is refused like any private address.
    let untrusted = DecisionContext {
        plan: &plan,
        phase: CLONE,
        proxy_addresses: &PROXY,
        host_addresses: &[],
        trusted_clone_networks: &[],
    };
    assert!(!decide(&untrusted, host, 443, Resolved(&internal)).is_allow());
}

/// The host's own addresses (every interface's, Docker bridge gateways included) are
/// never reachable, though a rule names their range: as literals, in IPv6 forms that
/// embed them, and as DNS answers. Decision level only: nothing is sent.
#[test]
fn egress_denies_the_hosts_own_addresses_whatever_names_them() {
    let p = plans();
    let a = &p.allowlist;
    let answer = [ip("10.1.77.1")];
    let gateway = [ip("172.17.0.1")];
    check(&[
        Connect(a, RUN, "10.1.77.1", 443, NotModelled, host_address("10.1.77.1")),
        Connect(a, RUN, "10.1.77.2", 443, NotModelled, allow("allow[2]")),
        Connect(a, RUN, "192.168.7.9", 443, NotModelled, host_address("192.168.7.9")),
        Connect(a, RUN, "[fd12:3456::77]", 443, NotModelled, host_address("fd12:3456::77")),
        Connect(a, RUN, "[64:ff9b::a01:4d01]", 443, NotModelled, host_address("64:ff9b::a01:4d01")),
        Connect(a, RUN, "api.example.com", 443, Resolved(&answer), host_address("10.1.77.1")),
        Connect(a, RUN, "api.example.com", 443, Resolved(&gateway), host_address("172.17.0.1")),
        Connect(&p.any_address, RUN, "172.17.0.1", 443, NotModelled, host_address("172.17.0.1")),
    ]);
}

/// Every cloud metadata and credential endpoint is denied, under a plan that opens every
/// address, as a literal and in every IPv6 form that embeds it. Decision level only.
#[test]
fn egress_denies_every_metadata_endpoint_in_every_embedding() {
    let p = plans();
    let mut failures = Vec::new();
    let ctx = DecisionContext::new(&p.any_address, RUN);
    for (endpoint, whose) in enclave_core::METADATA_ENDPOINTS {
        let address: IpAddr = endpoint.parse().unwrap();
        let mut spellings = vec![match address {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }];
        if let IpAddr::V4(v4) = address {
            let [a, b, c, d] = v4.octets();
            let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            spellings.extend([
                format!("[::ffff:{hi:x}:{lo:x}]"),
                format!("[::ffff:0:{hi:x}:{lo:x}]"),
                format!("[64:ff9b::{hi:x}:{lo:x}]"),
                format!("[64:ff9b:1::{hi:x}:{lo:x}]"),
                format!("[2002:{hi:x}:{lo:x}::1]"),
                format!("[2001:0:{hi:x}:{lo:x}::1]"),
                format!("[2001:0:808:808::{:x}:{:x}]", !hi, !lo),
            ]);
        }
        for spelling in spellings {
            match decide(&ctx, &spelling, 80, NotModelled) {
                Decision::Deny { reason: DenyReason::Metadata { .. } } => {}
                other => failures.push(format!("{spelling} ({whose}): {other:?}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Loopback and link-local in every embedding form are never reachable, even under a
/// plan that opens every address. Decision level only.
#[test]
fn egress_denies_loopback_and_link_local_in_every_embedding() {
    let p = plans();
    let ctx = DecisionContext::new(&p.any_address, RUN);
    let mut failures = Vec::new();
    for spelling in [
        "127.0.0.1",
        "[::1]",
        "[::ffff:0:7f00:1]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b:1::7f00:1]",
        "[2002:7f00:1::1]",
        "[2001:0:7f00:1::1]",
        "[2001:0:808:808::80ff:fffe]",
        "169.254.7.7",
        "[fe80::1]",
        "[::ffff:0:a9fe:707]",
        "[2002:a9fe:707::1]",
    ] {
        match decide(&ctx, spelling, 80, NotModelled) {
            Decision::Deny { reason: DenyReason::NeverReachable { .. } | DenyReason::SpecialAddress { .. } } => {}
            other => failures.push(format!("{spelling}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
