//! `plan()`: a pure function from a validated spec and a policy to a [`Plan`].

use std::collections::BTreeMap;

use enclave_spec::{ByteSize, DurationMs, EgressMode, Host, HostPattern, Located, Millicores, Position, SessionSpec};

use crate::address::{AddressClass, classify_alone, embedded_ipv4_ranges, parts_naming, special_ranges};
use crate::behaviour::Behaviour;
use crate::plan::{
    BindingPlan, Containment, EgressPolicy, EgressRule, ImplicitDeny, Isolation, NetworkMode, PLAN_FORMAT, Phase, Plan,
    PlanDigest, Program, RuleTarget, RunPhase, StepPlan,
};
use crate::quota::{PlanError, Policy, Quotas};
use crate::rule_ref::RuleRef;

/// The uid and gid every workload runs as (nobody).
pub const WORKLOAD_UID: u32 = 65534;

/// Resolves a spec under a policy. Pure and deterministic: the same inputs give the same
/// plan and digest.
pub fn plan(spec: &SessionSpec, policy: &Policy) -> Result<Plan, PlanError> {
    let body = &spec.spec;
    if policy.isolation != Isolation::Gvisor && !policy.permit_weaker_isolation {
        return Err(PlanError::WeakerIsolationNotPermitted(policy.isolation));
    }
    let quotas = resolve_quotas(spec, policy)?;

    let mut phases = Vec::new();
    if let Some(repo) = &body.repo {
        phases.push(Phase::Clone(crate::clone_step::clone_phase(repo, &quotas)));
    }
    let env = plain_env(&body.env);
    let program = match (&body.command, &body.steps) {
        (Some(argv), _) => Program::Command { argv: argv.value.clone() },
        (None, Some(steps)) => Program::Steps {
            steps: steps
                .iter()
                .map(|s| StepPlan {
                    name: s.name.value.clone(),
                    run: s.run.value.clone(),
                    env: plain_env(&s.env),
                    timeout_ms: s.timeout.as_ref().map(|t| t.0),
                })
                .collect(),
        },
        // Validation guarantees one of the two; an empty program fails loudly at launch.
        (None, None) => Program::Command { argv: Vec::new() },
    };
    phases.push(Phase::Run(RunPhase {
        image: body.image.as_ref().map_or_else(|| policy.default_image.clone(), |i| i.value.clone()),
        workdir: body.workdir.as_ref().map_or_else(|| ".".to_owned(), |w| w.to_string()),
        env,
        program,
    }));

    check_policy_networks(policy)?;
    check_rule_networks(spec, policy)?;
    let mut egress = egress_policy(spec);
    let mut warnings = Vec::new();
    if !policy.host_loopback.is_empty() {
        egress.host_loopback = policy.host_loopback.clone();
        let list: Vec<String> = policy.host_loopback.iter().map(ToString::to_string).collect();
        warnings.push(format!(
            "unsafe operator setting: loopback {} on the Enclave host is reachable where a cidr rule names it, and by the clone (for tests and local development only)",
            list.join(", ")
        ));
    }
    if policy.isolation == Isolation::HostKernel {
        warnings.push(
            "isolation host-kernel: the workload shares the host kernel (no gVisor); requested explicitly".to_owned(),
        );
    }

    let mut plan = Plan {
        format: PLAN_FORMAT.to_owned(),
        digest: PlanDigest::default(),
        name: spec.metadata.name.to_string(),
        labels: spec.metadata.labels.clone(),
        phases,
        containment: Containment {
            isolation: policy.isolation,
            run_as_user: WORKLOAD_UID,
            run_as_group: WORKLOAD_UID,
            read_only_root_fs: true,
            no_new_privileges: true,
            capabilities: Vec::new(),
            service_account_token: false,
            host_mounts: Vec::new(),
            network: match egress.mode {
                EgressMode::Deny => NetworkMode::None,
                EgressMode::Allowlist => NetworkMode::ProxyOnly,
            },
        },
        egress,
        bindings: body
            .bindings
            .iter()
            .map(|b| {
                let HostPattern::Exact(host) = &b.host.value else {
                    return Err(PlanError::WildcardBinding { position: b.host.position });
                };
                Ok(BindingPlan {
                    name: b.name.to_string(),
                    host: Host::Domain(host.clone()),
                    port: b.port.map_or(443, |p| p.0),
                    secret: b.secret.to_string(),
                    header: b.inject.header.to_string(),
                    format: b.inject.format.value.clone(),
                    methods: b.methods.as_ref().map(|ms| ms.iter().map(|m| m.value).collect()),
                    paths: b.paths.as_ref().map(|ps| ps.iter().map(|p| p.value.clone()).collect()),
                })
            })
            .collect::<Result<_, _>>()?,
        quotas,
        artifacts: body.artifacts.iter().map(|a| a.to_string()).collect(),
        artifact_bytes_max: policy.artifact_bytes,
        warnings,
        simulate: body.simulate.as_ref().map(Behaviour::from_spec),
    };
    plan.digest = plan.compute_digest();
    Ok(plan)
}

fn plain_env(env: &BTreeMap<enclave_spec::EnvName, Located<String>>) -> BTreeMap<String, String> {
    env.iter().map(|(k, v)| (k.to_string(), v.value.clone())).collect()
}

fn egress_policy(spec: &SessionSpec) -> EgressPolicy {
    let egress = &spec.spec.egress;
    let rules: Vec<EgressRule> = egress
        .allow
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| {
            let target = match (&rule.host, &rule.cidr) {
                (Some(host), _) => RuleTarget::Host(host.value.clone()),
                (None, Some(cidr)) => RuleTarget::Cidr(cidr.0),
                (None, None) => return None,
            };
            let mut ports: Vec<u16> = rule.ports.iter().map(|p| p.0).collect();
            ports.sort_unstable();
            ports.dedup();
            Some(EgressRule { id: RuleRef::Allow(index), target, ports })
        })
        .collect();
    let implicit_denies = special_ranges()
        .into_iter()
        .map(|(range, class)| ImplicitDeny {
            cidr: range,
            class,
            opened_by: if class.never_reachable() && class != AddressClass::Loopback {
                Vec::new()
            } else {
                rules
                    .iter()
                    .filter(|r| match &r.target {
                        RuleTarget::Cidr(net) => !parts_naming(*net, range).is_empty(),
                        RuleTarget::Host(_) => false,
                    })
                    .map(|r| r.id.clone())
                    .collect()
            },
        })
        .collect();
    EgressPolicy { mode: *egress.mode, rules, implicit_denies, host_loopback: Vec::new() }
}

/// The policy's own network lists: `allow_networks` may not list a never-reachable
/// range, `host_loopback` only loopback.
fn check_policy_networks(policy: &Policy) -> Result<(), PlanError> {
    for net in &policy.allow_networks {
        if let Some((range, class)) = never_reachable_overlap(*net) {
            return Err(PlanError::PolicyNetwork {
                setting: "policy.allow_networks / --allow-network",
                cidr: *net,
                why: format!("it reaches {range}, {class}, which a session can never reach"),
            });
        }
    }
    for net in &policy.host_loopback {
        if classify_alone(net.network()).0 != AddressClass::Loopback
            || classify_alone(net.broadcast()).0 != AddressClass::Loopback
        {
            return Err(PlanError::PolicyNetwork {
                setting: "policy.unsafe_host_loopback / --unsafe-host-loopback",
                cidr: *net,
                why: "only loopback ranges (127.0.0.0/8, ::1) can be listed".to_owned(),
            });
        }
    }
    Ok(())
}

/// The first never-reachable range (metadata, loopback, link-local) a range names (lies
/// inside), or overlaps through the IPv4 ranges its IPv6 embedding form covers.
fn never_reachable_overlap(net: ipnet::IpNet) -> Option<(ipnet::IpNet, AddressClass)> {
    let mut forms = vec![net];
    if let ipnet::IpNet::V6(v6) = net {
        forms.extend(embedded_ipv4_ranges(v6).into_iter().map(ipnet::IpNet::V4));
    }
    forms.into_iter().enumerate().find_map(|(index, form)| {
        special_ranges().into_iter().filter(|(_, class)| class.never_reachable()).find(|(range, _)| {
            let names = range.contains(&form.network()) && form.prefix_len() >= range.prefix_len();
            names || (index > 0 && form.contains(&range.network()))
        })
    })
}

/// Each CIDR rule against the address classes: a rule naming a never-reachable range
/// (or, written as an IPv6 embedding form, covering one) is refused; a rule naming
/// another special range must lie inside the policy's `allow_networks`. Loopback opens
/// only through the policy's unsafe `host_loopback`.
fn check_rule_networks(spec: &SessionSpec, policy: &Policy) -> Result<(), PlanError> {
    for rule in &spec.spec.egress.allow {
        let Some(cidr) = &rule.cidr else { continue };
        let net = cidr.0;
        let position = cidr.position;
        let listed = |n: ipnet::IpNet, list: &[ipnet::IpNet]| {
            list.iter().any(|l| l.contains(&n.network()) && l.contains(&n.broadcast()))
        };
        let mut forms = vec![net];
        let embedded: Vec<ipnet::IpNet> = match net {
            ipnet::IpNet::V6(v6) => embedded_ipv4_ranges(v6).into_iter().map(ipnet::IpNet::V4).collect(),
            ipnet::IpNet::V4(_) => Vec::new(),
        };
        forms.extend(embedded.iter().copied());
        // Never-reachable ranges first, through every form, then the policy's listing.
        let never_first = |(_, class): &(ipnet::IpNet, AddressClass)| !class.never_reachable();
        let mut ranges = special_ranges();
        ranges.sort_by_key(never_first);
        for (range, class) in ranges {
            for form in forms.iter().copied() {
                let is_embedded = form != net;
                // A plain rule names a range by lying inside it; an embedding form covers
                // whatever its IPv4 ranges overlap.
                let names = range.contains(&form.network()) && form.prefix_len() >= range.prefix_len();
                let overlaps = names || (is_embedded && form.contains(&range.network()));
                if !overlaps {
                    continue;
                }
                if class == AddressClass::Loopback
                    && (listed(form, &policy.host_loopback) || (!is_embedded && listed(net, &policy.host_loopback)))
                {
                    continue;
                }
                if class.never_reachable() {
                    let hint = if class == AddressClass::Loopback {
                        "; for tests an operator can open host loopback with `policy.unsafe_host_loopback` in the server config or `--unsafe-host-loopback` on the CLI"
                    } else {
                        ""
                    };
                    return Err(PlanError::NeverReachable { cidr: net, range, class, hint, position });
                }
                if names && !listed(form, &policy.allow_networks) && !listed(net, &policy.allow_networks) {
                    return Err(PlanError::NetworkNotListed { cidr: net, range, class, position });
                }
            }
        }
    }
    Ok(())
}

/// One quota against the policy's floor and ceiling.
struct QuotaCheck {
    quota: &'static str,
    value: u64,
    min: u64,
    max: u64,
    position: Position,
    show: fn(u64) -> String,
}

fn resolve_quotas(spec: &SessionSpec, policy: &Policy) -> Result<Quotas, PlanError> {
    let q = &spec.spec.quotas;
    let d = &policy.defaults;
    let resolved = Quotas {
        cpu_millis: q.cpu.as_ref().map_or(d.cpu_millis, |v| v.0),
        memory_bytes: q.memory.as_ref().map_or(d.memory_bytes, |v| v.0),
        pids: q.pids.as_ref().map_or(d.pids, |v| v.value),
        deadline_ms: q.deadline.as_ref().map_or(d.deadline_ms, |v| v.0),
        disk_bytes: q.disk.as_ref().map_or(d.disk_bytes, |v| v.0),
        log_bytes: q.log_bytes.as_ref().map_or(d.log_bytes, |v| v.0),
    };
    let pos = |p: Option<Position>| p.unwrap_or(Position::UNKNOWN);
    let checks = [
        QuotaCheck {
            quota: "cpu",
            value: resolved.cpu_millis,
            min: policy.min.cpu_millis,
            max: policy.max.cpu_millis,
            position: pos(q.cpu.as_ref().map(|v| v.position)),
            show: |v| Millicores(v).to_string(),
        },
        QuotaCheck {
            quota: "memory",
            value: resolved.memory_bytes,
            min: policy.min.memory_bytes,
            max: policy.max.memory_bytes,
            position: pos(q.memory.as_ref().map(|v| v.position)),
            show: |v| ByteSize(v).to_string(),
        },
        QuotaCheck {
            quota: "pids",
            value: u64::from(resolved.pids),
            min: u64::from(policy.min.pids),
            max: u64::from(policy.max.pids),
            position: pos(q.pids.as_ref().map(|v| v.position)),
            show: |v| v.to_string(),
        },
        QuotaCheck {
            quota: "deadline",
            value: resolved.deadline_ms,
            min: policy.min.deadline_ms,
            max: policy.max.deadline_ms,
            position: pos(q.deadline.as_ref().map(|v| v.position)),
            show: |v| DurationMs(v).to_string(),
        },
        QuotaCheck {
            quota: "disk",
            value: resolved.disk_bytes,
            min: policy.min.disk_bytes,
            max: policy.max.disk_bytes,
            position: pos(q.disk.as_ref().map(|v| v.position)),
            show: |v| ByteSize(v).to_string(),
        },
        QuotaCheck {
            quota: "logBytes",
            value: resolved.log_bytes,
            min: policy.min.log_bytes,
            max: policy.max.log_bytes,
            position: pos(q.log_bytes.as_ref().map(|v| v.position)),
            show: |v| ByteSize(v).to_string(),
        },
    ];
    for c in checks {
        let show = c.show;
        if c.value > c.max {
            return Err(PlanError::QuotaAboveMax {
                quota: c.quota,
                requested: show(c.value),
                max: show(c.max),
                position: c.position,
            });
        }
        if c.value < c.min {
            return Err(PlanError::QuotaBelowMin {
                quota: c.quota,
                requested: show(c.value),
                min: show(c.min),
                position: c.position,
            });
        }
    }
    Ok(resolved)
}
