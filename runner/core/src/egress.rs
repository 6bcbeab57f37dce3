//! The egress decision: one implementation, used by the simulator now and by the egress
//! proxy, so a modelled attempt and a real one always get the same answer.
//!
//! A decision has two halves. The name half canonicalises the host (one strict
//! canonicaliser, [`enclave_spec::canonical_host`]) and finds the rule that admits it in
//! the current phase. The address half classifies every address the name resolved to
//! (or the literal) and denies special ranges unless a CIDR rule names them; the caller
//! then connects only to an address it vetted here.

use std::fmt;
use std::net::IpAddr;

use enclave_spec::{EgressMode, Host, HttpMethod, canonical_host};
use serde::{Deserialize, Serialize};

use crate::address::{AddressClass, address_components, classify_alone, effective_address, parts_naming};
use crate::plan::{BindingPlan, Plan, RuleTarget};
use crate::rule_ref::RuleRef;

/// The port a workload uses to call a binding: it sends plain HTTP to
/// `http://<binding host>/...` and the proxy, which terminates it, injects the credential
/// and forwards over verified TLS to the binding's own port. The workload never holds
/// the credential, so it never needs a TLS session with the upstream.
pub const BINDING_PORT: u16 = 80;

/// Which phase's reach applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EgressPhase {
    /// The clone step: only the repository host.
    Clone,
    /// The workload: the plan's allow rules and binding hosts.
    Run,
}

impl fmt::Display for EgressPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EgressPhase::Clone => "clone",
            EgressPhase::Run => "run",
        })
    }
}

/// The outcome of an egress check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "decision", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum Decision {
    /// Allowed by a rule (`allow[N]`, `binding:NAME` or `clone:repo`).
    Allow {
        /// The admitting rule.
        rule: RuleRef,
    },
    /// Denied.
    Deny {
        /// Why.
        reason: DenyReason,
    },
}

impl Decision {
    /// Whether this is an allow.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow { rule } => write!(f, "allow ({rule})"),
            Decision::Deny { reason } => write!(f, "deny ({reason})"),
        }
    }
}

/// Why an egress attempt was denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum DenyReason {
    /// The session has no network (`egress.mode: deny`).
    NoNetwork,
    /// The host spelling was refused by the canonicaliser.
    InvalidHost {
        /// What was wrong with it.
        detail: String,
    },
    /// No rule names this host or address.
    NotAllowlisted,
    /// A rule names the host, but not this port.
    PortNotAllowed,
    /// A special address (private, loopback, ...) that no CIDR rule names.
    SpecialAddress {
        /// The address.
        address: IpAddr,
        /// Its class.
        class: AddressClass,
    },
    /// A cloud metadata or credential endpoint: never reachable.
    Metadata {
        /// The address.
        address: IpAddr,
    },
    /// Loopback or link-local (or an IPv6 form embedding one): never reachable.
    NeverReachable {
        /// The address.
        address: IpAddr,
        /// Its class.
        class: AddressClass,
    },
    /// An address of the Enclave host itself (any of its interfaces, Docker bridge
    /// gateways included): never reachable.
    HostAddress {
        /// The address.
        address: IpAddr,
    },
    /// One of the proxy's own addresses.
    ProxySelf {
        /// The address.
        address: IpAddr,
    },
    /// The clone step may reach only the repository host.
    CloneOnlyRepoHost,
    /// The name resolved to no address.
    NoAddress,
    /// A tunnel's TLS ClientHello named another server than the CONNECT host, or none.
    SniMismatch {
        /// The server name the ClientHello carried, if it carried one.
        sni: Option<String>,
    },
    /// A tunnel admitted in a phase that ended (the clone's reach revoked, or the
    /// session over) before its ClientHello came: the reach that admitted it is gone.
    ReachEnded {
        /// The phase that admitted it.
        phase: EgressPhase,
    },
    /// The request was malformed or ambiguous (framing, userinfo, missing authority).
    BadRequest {
        /// What was wrong.
        detail: String,
    },
    /// The decision could not be written to the audit log, so nothing is allowed.
    AuditUnavailable,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NoNetwork => f.write_str("egress mode is deny"),
            DenyReason::InvalidHost { detail } => write!(f, "invalid host: {detail}"),
            DenyReason::NotAllowlisted => f.write_str("not in the allowlist"),
            DenyReason::PortNotAllowed => f.write_str("port not allowed for this host"),
            DenyReason::SpecialAddress { address, class } => {
                write!(f, "{address} is {class}; only a cidr rule naming it opens it")
            }
            DenyReason::Metadata { address } => {
                write!(f, "{address} is a cloud metadata or credential endpoint, never reachable")
            }
            DenyReason::NeverReachable { address, class } => {
                write!(f, "{address} is {class}, never reachable from a session")
            }
            DenyReason::HostAddress { address } => {
                write!(f, "{address} is an address of the Enclave host itself, never reachable")
            }
            DenyReason::ProxySelf { address } => write!(f, "{address} is the egress proxy itself"),
            DenyReason::CloneOnlyRepoHost => f.write_str("the clone step may reach only the repository host"),
            DenyReason::NoAddress => f.write_str("the name resolved to no address"),
            DenyReason::SniMismatch { sni: Some(sni) } => {
                write!(f, "the TLS ClientHello names {sni:?}, not the CONNECT host")
            }
            DenyReason::SniMismatch { sni: None } => f.write_str("the TLS ClientHello carries no server name"),
            DenyReason::ReachEnded { phase } => {
                write!(f, "the {phase} phase that admitted the tunnel ended before its ClientHello")
            }
            DenyReason::BadRequest { detail } => write!(f, "malformed request: {detail}"),
            DenyReason::AuditUnavailable => f.write_str("the audit log cannot be written"),
        }
    }
}

/// What a decision is made against.
#[derive(Debug, Clone, Copy)]
pub struct DecisionContext<'a> {
    /// The session's plan.
    pub plan: &'a Plan,
    /// The phase whose reach applies.
    pub phase: EgressPhase,
    /// Addresses of the proxy itself, always denied.
    pub proxy_addresses: &'a [IpAddr],
    /// Addresses of the host the proxy dials from (every interface's, every local
    /// route's prefix), always denied. Empty where they are not known (the simulator).
    pub host_addresses: &'a [ipnet::IpNet],
    /// Networks the operator trusts for the clone phase only (an internal git server on
    /// a private range). Never widens the workload's reach; never opens metadata.
    pub trusted_clone_networks: &'a [ipnet::IpNet],
}

impl<'a> DecisionContext<'a> {
    /// A context with no proxy addresses and no operator-trusted networks.
    pub fn new(plan: &'a Plan, phase: EgressPhase) -> Self {
        Self { plan, phase, proxy_addresses: &[], host_addresses: &[], trusted_clone_networks: &[] }
    }
}

/// Addresses a name resolved to.
#[derive(Debug, Clone, Copy)]
pub enum Resolution<'a> {
    /// The caller resolved the name (once) to these addresses; it must connect only to
    /// one of them, and only if the decision allows.
    Resolved(&'a [IpAddr]),
    /// Addresses are not known (the simulator without a modelled DNS answer): the
    /// decision covers the name only.
    NotModelled,
}

/// Decides one connection attempt to `host:port` as written by the workload.
pub fn decide(ctx: &DecisionContext<'_>, host: &str, port: u16, resolution: Resolution<'_>) -> Decision {
    let deny = |reason| Decision::Deny { reason };
    let host = match canonical_host(host) {
        Ok(h) => h,
        Err(e) => {
            return deny(DenyReason::InvalidHost { detail: e.to_string() });
        }
    };
    if ctx.phase == EgressPhase::Run && ctx.plan.egress.mode == EgressMode::Deny {
        return deny(DenyReason::NoNetwork);
    }
    // An address literal is classified before rules are matched, so the reason names
    // what the address is (metadata, private, ...) rather than just "not allowlisted".
    if let Host::Ip(ip) = &host
        && let Err(reason) = vet_address(ctx, *ip, Some(port))
    {
        return deny(reason);
    }
    let rule = match name_rule(ctx, &host, port) {
        Ok(rule) => rule,
        Err(reason) => return deny(reason),
    };
    let literal;
    let addresses: &[IpAddr] = match (&host, resolution) {
        (Host::Ip(ip), _) => {
            literal = [*ip];
            &literal
        }
        (Host::Domain(_), Resolution::Resolved([])) => return deny(DenyReason::NoAddress),
        (Host::Domain(_), Resolution::Resolved(addrs)) => addrs,
        (Host::Domain(_), Resolution::NotModelled) => &[],
    };
    // A binding call is dialled on the binding's own port, not the binding port the
    // workload wrote, and the spec names that host and port already: a special address
    // it resolves to needs only acknowledging, by a CIDR rule naming the address (any of
    // its ports). Asking for the upstream port in the rule would open the upstream to the
    // workload directly, around the binding's scope.
    let vetted_port = if rule.binding().is_some() { None } else { Some(port) };
    for address in addresses {
        if let Err(reason) = vet_address(ctx, *address, vetted_port) {
            return deny(reason);
        }
    }
    Decision::Allow { rule }
}

/// Finds the rule admitting a canonical host in the context's phase.
fn name_rule(ctx: &DecisionContext<'_>, host: &Host, port: u16) -> Result<RuleRef, DenyReason> {
    match ctx.phase {
        EgressPhase::Clone => {
            let clone = ctx.plan.clone_phase().ok_or(DenyReason::CloneOnlyRepoHost)?;
            if &clone.host == host && clone.port == port {
                Ok(RuleRef::CloneRepo)
            } else {
                Err(DenyReason::CloneOnlyRepoHost)
            }
        }
        EgressPhase::Run => {
            if ctx.plan.egress.mode == EgressMode::Deny {
                return Err(DenyReason::NoNetwork);
            }
            let mut port_mismatch = false;
            for binding in &ctx.plan.bindings {
                if &binding.host == host {
                    if port == BINDING_PORT {
                        return Ok(RuleRef::Binding(binding.name.clone()));
                    }
                    port_mismatch = true;
                }
            }
            for rule in &ctx.plan.egress.rules {
                let matched = match (&rule.target, host) {
                    (RuleTarget::Host(pattern), Host::Domain(_)) => pattern.matches(host),
                    (RuleTarget::Cidr(net), Host::Ip(ip)) => net.contains(ip) || net.contains(&effective_address(*ip)),
                    _ => false,
                };
                if matched {
                    if rule.ports.contains(&port) {
                        return Ok(rule.id.clone());
                    }
                    port_mismatch = true;
                }
            }
            Err(if port_mismatch { DenyReason::PortNotAllowed } else { DenyReason::NotAllowlisted })
        }
    }
}

/// Checks one address, and every IPv4 address it embeds: never metadata, loopback,
/// link-local, the proxy or the host itself; other special ranges only when a CIDR rule
/// lying inside that range (so naming it) covers the address and `port` (any of its
/// ports when `port` is `None`: a binding's upstream), or in the clone phase a network
/// the operator trusts for it.
fn vet_address(ctx: &DecisionContext<'_>, address: IpAddr, port: Option<u16>) -> Result<(), DenyReason> {
    // The most restrictive class first, so the reason names the worst thing inside.
    let mut components = address_components(address);
    components.sort_by_key(|c| classify_alone(*c).0);
    for component in components {
        vet_component(ctx, address, component, port)?;
    }
    Ok(())
}

fn vet_component(
    ctx: &DecisionContext<'_>,
    address: IpAddr,
    component: IpAddr,
    port: Option<u16>,
) -> Result<(), DenyReason> {
    let is = |list: &[IpAddr]| list.iter().any(|p| address_components(*p).contains(&component));
    if is(ctx.proxy_addresses) {
        return Err(DenyReason::ProxySelf { address });
    }
    let (class, range) = classify_alone(component);
    if class == AddressClass::Metadata {
        return Err(DenyReason::Metadata { address });
    }
    // The operator's unsafe test setting, recorded in the plan, is the one way to loopback.
    let loopback_opened =
        class == AddressClass::Loopback && ctx.plan.egress.host_loopback.iter().any(|n| n.contains(&component));
    if class.never_reachable() && !loopback_opened {
        return Err(DenyReason::NeverReachable { address, class });
    }
    let on_host = ctx.host_addresses.iter().any(|n| n.contains(&component) || n.contains(&address));
    if !loopback_opened && on_host {
        return Err(DenyReason::HostAddress { address });
    }
    match (class, range) {
        (AddressClass::Public, _) => Ok(()),
        (AddressClass::Loopback, _) if ctx.phase == EgressPhase::Clone => Ok(()),
        _ if ctx.phase == EgressPhase::Clone && ctx.trusted_clone_networks.iter().any(|n| n.contains(&component)) => {
            Ok(())
        }
        (class, Some(range)) => {
            // The plan recorded which rules name (and so open part of) this range.
            let opened = ctx
                .plan
                .egress
                .implicit_denies
                .iter()
                .filter(|deny| deny.cidr == range)
                .flat_map(|deny| &deny.opened_by)
                .filter_map(|id| ctx.plan.egress.rules.iter().find(|rule| &rule.id == id))
                .any(|rule| match &rule.target {
                    RuleTarget::Cidr(net) => {
                        parts_naming(*net, range).iter().any(|part| part.contains(&component))
                            && port.is_none_or(|port| rule.ports.contains(&port))
                    }
                    RuleTarget::Host(_) => false,
                });
            if opened { Ok(()) } else { Err(DenyReason::SpecialAddress { address, class }) }
        }
        (class, None) => Err(DenyReason::SpecialAddress { address, class }),
    }
}

/// Why a request through a binding was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum BindingScopeError {
    /// The method is outside the binding's `methods`.
    #[error("method {method} is not allowed by binding {binding}")]
    Method {
        /// Binding name.
        binding: String,
        /// The refused method.
        method: String,
    },
    /// The path is outside the binding's `paths`.
    #[error("path {path} is not allowed by binding {binding}")]
    Path {
        /// Binding name.
        binding: String,
        /// The refused path.
        path: String,
    },
}

/// Checks a request's method and path (query ignored) against a binding's scope.
pub fn check_binding_scope(binding: &BindingPlan, method: &str, path: &str) -> Result<(), BindingScopeError> {
    if let Some(methods) = &binding.methods {
        let allowed = methods.iter().any(|m: &HttpMethod| m.to_string() == method);
        if !allowed {
            return Err(BindingScopeError::Method { binding: binding.name.clone(), method: method.to_owned() });
        }
    }
    let bare = path.split(['?', '#']).next().unwrap_or(path);
    if let Some(paths) = &binding.paths
        && !paths.iter().any(|p| p.matches(bare))
    {
        return Err(BindingScopeError::Path { binding: binding.name.clone(), path: bare.to_owned() });
    }
    Ok(())
}
