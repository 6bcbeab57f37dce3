//! Semantic checks that need more than one field: every error is collected, so a
//! user sees all of them at once.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use crate::credential::{describe, looks_like_credential, secret_like_name};
use crate::diagnostic::Diagnostic;
use crate::egress::{AllowRule, Binding, EgressMode};
use crate::host::HostPattern;
use crate::located::{Located, Position};
use crate::quantity::{ByteSize, DurationMs, Millicores};
use crate::session::{SessionBody, SessionSpec};

/// The cloud metadata address. No rule may ever reach it.
pub const METADATA_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Hard sanity bounds on quotas: values past these are typos, whatever the server allows.
pub mod bounds {
    /// Most CPU a session can ask for, in millicores (256 cores).
    pub const MAX_CPU_MILLIS: u64 = 256_000;
    /// Most memory a session can ask for (1 TiB).
    pub const MAX_MEMORY_BYTES: u64 = 1 << 40;
    /// Most processes a session can ask for.
    pub const MAX_PIDS: u32 = 4_194_304;
    /// Longest deadline a session can ask for (7 days).
    pub const MAX_DEADLINE_MS: u64 = 7 * 24 * 3_600_000;
    /// Largest workspace a session can ask for (16 TiB).
    pub const MAX_DISK_BYTES: u64 = 16 << 40;
    /// Most log bytes a session can ask for (16 GiB).
    pub const MAX_LOG_BYTES: u64 = 16 << 30;
}

struct Checker<'a> {
    file: &'a str,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, at: Position, message: impl Into<String>) -> &mut Diagnostic {
        self.errors.push(Diagnostic::error(self.file, at, message));
        self.errors.last_mut().expect("just pushed")
    }
    fn warn(&mut self, at: Position, message: impl Into<String>) -> &mut Diagnostic {
        self.warnings.push(Diagnostic::warning(self.file, at, message));
        self.warnings.last_mut().expect("just pushed")
    }
}

/// Runs every semantic check; returns (errors, warnings), each sorted by position.
pub(crate) fn validate(file: &str, spec: &SessionSpec) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut c = Checker { file, errors: Vec::new(), warnings: Vec::new() };
    let body = &spec.spec;
    check_program(&mut c, body, spec.metadata.name.position);
    check_env(&mut c, body);
    check_repo(&mut c, body);
    check_egress(&mut c, body);
    check_bindings(&mut c, body);
    check_quotas(&mut c, body);
    check_artifacts(&mut c, body);
    check_labels(&mut c, spec);
    check_simulate(&mut c, body);
    c.errors.sort_by_key(Diagnostic::position);
    c.warnings.sort_by_key(Diagnostic::position);
    (c.errors, c.warnings)
}

fn check_program(c: &mut Checker<'_>, body: &SessionBody, fallback: Position) {
    match (&body.command, &body.steps) {
        (Some(_), Some(steps)) => {
            c.error(steps.position, "`command` and `steps` are both set").help =
                Some("use `command` for one program or `steps` for several, not both".into());
        }
        (None, None) => {
            c.error(fallback, "neither `command` nor `steps` is set").help =
                Some("add `spec.command: [\"make\", \"test\"]` or a `spec.steps` list".into());
        }
        (Some(cmd), None) => {
            if cmd.is_empty() {
                c.error(cmd.position, "`command` is empty");
            } else if cmd[0].trim().is_empty() {
                c.error(cmd.position, "`command[0]` (the program) is empty");
            }
            // A YAML escape (`"\0"`) can put a NUL into a string; exec cannot pass it.
            if let Some(index) = cmd.iter().position(|arg| arg.contains('\0')) {
                c.error(cmd.position, format!("`command[{index}]` contains a NUL character"));
            }
        }
        (None, Some(steps)) => {
            if steps.is_empty() {
                c.error(steps.position, "`steps` is empty");
            }
            let mut names = BTreeSet::new();
            for step in steps.iter() {
                if step.name.trim().is_empty() {
                    c.error(step.name.position, "step name is empty");
                } else if !names.insert(step.name.value.clone()) {
                    c.error(step.name.position, format!("duplicate step name {:?}", step.name.value));
                }
                if step.run.trim().is_empty() {
                    c.error(step.run.position, format!("step {:?} has an empty `run`", step.name.value));
                } else if step.run.contains('\0') {
                    c.error(step.run.position, format!("step {:?} `run` contains a NUL character", step.name.value));
                }
                if let Some(timeout) = &step.timeout {
                    if timeout.0 == 0 {
                        c.error(timeout.position, "step timeout must be greater than zero");
                    }
                    if let Some(deadline) = &body.quotas.deadline
                        && timeout.0 > deadline.0
                    {
                        c.warn(
                            timeout.position,
                            format!(
                                "step timeout {} is longer than the session deadline {}; the deadline wins",
                                timeout.value, deadline.value
                            ),
                        );
                    }
                }
                check_env_map(c, &step.env);
            }
        }
    }
    if let Some(image) = &body.image
        && (image.trim().is_empty() || image.contains(char::is_whitespace))
    {
        c.error(image.position, format!("invalid image reference {:?}", image.value));
    }
}

fn check_env(c: &mut Checker<'_>, body: &SessionBody) {
    check_env_map(c, &body.env);
}

fn check_env_map(c: &mut Checker<'_>, env: &std::collections::BTreeMap<crate::names::EnvName, Located<String>>) {
    for (name, value) in env {
        if value.contains('\0') {
            c.error(value.position, format!("env {name} contains a NUL character"));
        } else if looks_like_credential(value) {
            c.warn(value.position, format!("env {name} looks like a credential ({})", describe(value))).help =
                Some(SECRET_HELP.into());
        } else if secret_like_name(name.as_str()) && value.len() >= 8 {
            c.warn(value.position, format!("env {name} is named like a secret and has a value")).help =
                Some(SECRET_HELP.into());
        }
    }
}

const SECRET_HELP: &str = "env values are visible to the workload and in plans; use a binding (the proxy injects the secret) or repo.credential";

fn check_repo(c: &mut Checker<'_>, body: &SessionBody) {
    let Some(repo) = &body.repo else { return };
    if let (Some(credential), crate::repo::RepoScheme::Ssh) = (&repo.credential, repo.url.scheme) {
        c.error(credential.position, "`repo.credential` is supported only for https repositories").help =
            Some("the clone step sends the token as HTTP basic auth; use the https URL of the repository".into());
    }
    if let Some(git_ref) = &repo.git_ref {
        let r = git_ref.value.as_str();
        let bad = r.is_empty()
            || r.starts_with('-')
            || r.contains(|ch: char| ch.is_whitespace() || ch.is_control() || "~^:?*[\\".contains(ch))
            || r.contains("..")
            || r.ends_with('/')
            || r.ends_with(".lock");
        if bad {
            c.error(git_ref.position, format!("invalid git ref {r:?}"));
        }
    }
}

fn check_egress(c: &mut Checker<'_>, body: &SessionBody) {
    let egress = &body.egress;
    if *egress.mode == EgressMode::Deny && !egress.allow.is_empty() {
        c.error(egress.allow[0].position, "`egress.allow` rules are given but `egress.mode` is deny").help =
            Some("set `egress.mode: allowlist` to use them (deny is the default)".into());
    }
    if *egress.mode == EgressMode::Allowlist && egress.allow.is_empty() && body.bindings.is_empty() {
        c.warn(egress.mode.position, "allowlist mode with no rules and no bindings reaches nothing").help =
            Some("add `egress.allow` rules, or use `mode: deny`".into());
    }
    let mut seen = BTreeSet::new();
    for rule in &egress.allow {
        check_rule(c, rule);
        let mut ports: Vec<u16> = rule.ports.iter().map(|p| p.0).collect();
        ports.sort_unstable();
        let key = (rule.host.as_ref().map(|h| h.value.clone()), rule.cidr.as_ref().map(|n| n.value), ports);
        if !seen.insert(key) {
            c.warn(rule.position, "duplicate allow rule");
        }
    }
}

fn check_rule(c: &mut Checker<'_>, rule: &Located<AllowRule>) {
    match (&rule.host, &rule.cidr) {
        (Some(_), Some(cidr)) => {
            c.error(cidr.position, "an allow rule has both `host` and `cidr`").help =
                Some("write one rule per destination".into());
        }
        (None, None) => {
            c.error(rule.position, "an allow rule needs `host` or `cidr`");
        }
        _ => {}
    }
    if rule.ports.is_empty() {
        c.error(rule.ports.position, "`ports` is empty");
    }
    let mut ports = BTreeSet::new();
    for port in rule.ports.iter() {
        if !ports.insert(port.0) {
            c.warn(rule.ports.position, format!("port {port} is listed twice"));
        }
    }
    if let Some(cidr) = &rule.cidr {
        let net = cidr.0;
        if net.prefix_len() == 0 && !rule.acknowledge_any_address {
            c.error(cidr.position, format!("{net} allows every address"))
                .help = Some(
                "set `acknowledgeAnyAddress: true` on this rule if that is intended; private and metadata ranges stay denied"
                    .into(),
            );
        }
        // The IPv4-mapped IPv6 form (`::ffff:169.254.169.254`) reaches the same address.
        let metadata = [IpAddr::V4(METADATA_IPV4), IpAddr::V6(METADATA_IPV4.to_ipv6_mapped())];
        if net.prefix_len() > 0 && metadata.iter().any(|ip| net.contains(ip)) {
            c.error(
                cidr.position,
                format!("{net} contains the cloud metadata address {METADATA_IPV4}, which is never reachable"),
            )
            .help = Some("narrow the range so it excludes 169.254.169.254".into());
        }
    }
    if rule.acknowledge_any_address && rule.cidr.as_ref().is_none_or(|n| n.0.prefix_len() != 0) {
        c.error(rule.position, "`acknowledgeAnyAddress` is only meaningful on a 0.0.0.0/0 or ::/0 rule");
    }
}

fn check_bindings(c: &mut Checker<'_>, body: &SessionBody) {
    if !body.bindings.is_empty() && *body.egress.mode == EgressMode::Deny {
        c.error(body.bindings[0].position, "bindings need network access, but `egress.mode` is deny").help =
            Some("set `egress.mode: allowlist`; bindings reach only their own host".into());
    }
    let mut names = BTreeSet::new();
    for binding in &body.bindings {
        check_binding(c, binding);
        if !names.insert(binding.name.value.clone()) {
            c.error(binding.name.position, format!("duplicate binding name {:?}", binding.name.as_str()));
        }
    }
}

fn check_binding(c: &mut Checker<'_>, binding: &Binding) {
    if let HostPattern::Suffix(_) = binding.host.value {
        c.error(binding.host.position, "a binding host must be an exact name, not a wildcard").help =
            Some("the credential is only ever sent to one host".into());
    }
    let format = &binding.inject.format;
    match format.matches("{secret}").count() {
        1 => {}
        0 => {
            c.error(format.position, "`inject.format` must contain `{secret}`");
        }
        _ => {
            c.error(format.position, "`inject.format` must contain `{secret}` exactly once");
        }
    }
    if format.contains(['\r', '\n', '\0']) {
        c.error(format.position, "`inject.format` must not contain line breaks or NUL");
    }
    let literal = format.replace("{secret}", " ");
    if literal.split_whitespace().any(looks_like_credential) {
        c.error(format.position, "`inject.format` appears to contain a credential value").help =
            Some("put the value in the secret and keep only `{secret}` in the format".into());
    }
    if let Some(methods) = &binding.methods
        && methods.is_empty()
    {
        c.error(binding.name.position, "`methods` is empty: nothing could be called");
    }
    if let Some(paths) = &binding.paths
        && paths.is_empty()
    {
        c.error(binding.name.position, "`paths` is empty: nothing could be called");
    }
}

fn check_quotas(c: &mut Checker<'_>, body: &SessionBody) {
    let q = &body.quotas;
    if let Some(cpu) = &q.cpu {
        bounded(c, cpu.position, "cpu", cpu.0, Millicores(bounds::MAX_CPU_MILLIS).0, || {
            Millicores(bounds::MAX_CPU_MILLIS).to_string()
        });
    }
    if let Some(memory) = &q.memory {
        bounded(c, memory.position, "memory", memory.0, bounds::MAX_MEMORY_BYTES, || {
            ByteSize(bounds::MAX_MEMORY_BYTES).to_string()
        });
    }
    if let Some(pids) = &q.pids {
        bounded(c, pids.position, "pids", u64::from(pids.value), u64::from(bounds::MAX_PIDS), || {
            bounds::MAX_PIDS.to_string()
        });
    }
    if let Some(deadline) = &q.deadline {
        bounded(c, deadline.position, "deadline", deadline.0, bounds::MAX_DEADLINE_MS, || {
            DurationMs(bounds::MAX_DEADLINE_MS).to_string()
        });
    }
    if let Some(disk) = &q.disk {
        bounded(c, disk.position, "disk", disk.0, bounds::MAX_DISK_BYTES, || {
            ByteSize(bounds::MAX_DISK_BYTES).to_string()
        });
    }
    if let Some(log) = &q.log_bytes {
        bounded(c, log.position, "logBytes", log.0, bounds::MAX_LOG_BYTES, || {
            ByteSize(bounds::MAX_LOG_BYTES).to_string()
        });
    }
}

fn bounded(c: &mut Checker<'_>, at: Position, what: &str, value: u64, max: u64, show_max: impl Fn() -> String) {
    if value == 0 {
        c.error(at, format!("quota `{what}` must be greater than zero"));
    } else if value > max {
        c.error(at, format!("quota `{what}` is absurdly large (the hard ceiling is {})", show_max()));
    }
}

fn check_artifacts(c: &mut Checker<'_>, body: &SessionBody) {
    let mut seen = BTreeSet::new();
    for path in &body.artifacts {
        if !seen.insert(path.value.clone()) {
            c.warn(path.position, format!("artifact path {:?} is listed twice", path.as_str()));
        }
    }
}

/// Labels end up on backend resources (container labels, Kubernetes labels), so they
/// follow Kubernetes label syntax.
fn check_labels(c: &mut Checker<'_>, spec: &SessionSpec) {
    let at = spec.metadata.name.position;
    let segment_ok = |s: &str, max: usize| {
        s.len() <= max
            && s.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            && s.chars().next().is_none_or(|ch| ch.is_ascii_alphanumeric())
            && s.chars().last().is_none_or(|ch| ch.is_ascii_alphanumeric())
    };
    for (key, value) in &spec.metadata.labels {
        let (prefix, name) = key.rsplit_once('/').map_or((None, key.as_str()), |(p, n)| (Some(p), n));
        let prefix_ok = prefix.is_none_or(|p| {
            !p.is_empty() && p.len() <= 253 && p.split('.').all(|l| !l.is_empty() && segment_ok(l, 63))
        });
        if name.is_empty() || !segment_ok(name, 63) || !prefix_ok {
            c.error(at, format!("invalid label key {key:?}")).help =
                Some("use [prefix/]name, name at most 63 characters of letters, digits, '-', '_', '.'".into());
        }
        if !segment_ok(value, 63) {
            c.error(at, format!("invalid value for label {key:?}")).help = Some(
                "at most 63 characters of letters, digits, '-', '_', '.', starting and ending alphanumeric".into(),
            );
        }
    }
}

/// The behaviour model must describe something a real run could do.
fn check_simulate(c: &mut Checker<'_>, body: &SessionBody) {
    let Some(model) = &body.simulate else { return };
    let at = body.command.as_ref().map(|c| c.position).or(body.steps.as_ref().map(|s| s.position)).unwrap_or_default();
    if !(0..=255).contains(&model.exit_code) {
        c.error(at, format!("simulate.exitCode {} is outside 0-255", model.exit_code));
    }
    for (what, value) in [
        ("duration", &model.duration),
        ("cancelAfter", &model.cancel_after),
        ("infraLostAfter", &model.infra_lost_after),
    ] {
        if let Some(d) = value
            && d.0 == 0
        {
            c.error(d.position, format!("simulate.{what} must be greater than zero"));
        }
    }
    let duration = model.duration.as_ref().map(|d| d.0);
    for attempt in &model.egress {
        if let (Some(offset), Some(total)) = (attempt.at, duration)
            && offset.0 > total
        {
            c.warn(
                attempt.position,
                format!("simulated connection at {} is after the modelled end ({})", offset, DurationMs(total)),
            );
        }
        if let Some(path) = &attempt.path
            && !path.starts_with('/')
        {
            c.error(attempt.position, format!("simulated request path {path:?} must start with '/'"));
        }
    }
}
