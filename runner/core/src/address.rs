//! Address classification: which addresses are special (private, loopback, link-local,
//! metadata, ...). Metadata, loopback and link-local addresses are never reachable from
//! a session; the other special ranges only where the operator's policy lists them and
//! a rule names them. An IPv6 address that embeds IPv4 (mapped, compatible, SIIT,
//! NAT64 well-known and local-use, 6to4, Teredo) is judged by every IPv4 address in it,
//! so an IPv6 spelling cannot smuggle a special IPv4 destination past the check.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// The class of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    /// A cloud metadata or credential endpoint (see [`METADATA_ENDPOINTS`]). Never
    /// reachable.
    Metadata,
    /// Link-local (169.254.0.0/16, fe80::/10). Never reachable.
    LinkLocal,
    /// The unspecified address and "this network" (0.0.0.0/8, ::): a connection to it
    /// lands on the host itself. Never reachable.
    Unspecified,
    /// Loopback (127.0.0.0/8, ::1). Never reachable (an operator's unsafe test setting
    /// aside: `Policy::host_loopback`).
    Loopback,
    /// Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10).
    Private,
    /// Carrier-grade NAT (100.64.0.0/10).
    Cgnat,
    /// Multicast (224.0.0.0/4, ff00::/8).
    Multicast,
    /// Unspecified, documentation, benchmarking, IETF and other reserved ranges.
    Reserved,
    /// An ordinary public address.
    Public,
}

impl AddressClass {
    /// Whether no policy or rule may open this class (loopback opens only through the
    /// operator's explicit, warned test setting).
    pub fn never_reachable(self) -> bool {
        matches!(
            self,
            AddressClass::Metadata | AddressClass::LinkLocal | AddressClass::Unspecified | AddressClass::Loopback
        )
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Metadata => "a cloud metadata or credential endpoint",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Unspecified => "the unspecified address (this host)",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::Cgnat => "carrier-grade NAT",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
            AddressClass::Public => "public",
        })
    }
}

/// The cloud metadata and credential endpoints of the major clouds, and whose they are.
/// Each is [`AddressClass::Metadata`]: never reachable, whatever a rule or policy says.
pub const METADATA_ENDPOINTS: &[(&str, &str)] = &[
    ("169.254.169.254", "instance metadata: AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack, Hetzner"),
    ("fd00:ec2::254", "AWS instance metadata (IPv6)"),
    ("169.254.170.2", "AWS ECS task credentials"),
    ("169.254.170.23", "AWS EKS Pod Identity agent"),
    ("fd00:ec2::23", "AWS EKS Pod Identity agent (IPv6)"),
    ("169.254.169.253", "AWS VPC DNS resolver"),
    ("fd00:ec2::253", "AWS VPC DNS resolver (IPv6)"),
    ("169.254.169.123", "AWS time sync"),
    ("fd00:ec2::123", "AWS time sync (IPv6)"),
    ("168.63.129.16", "Azure wire server"),
    ("192.0.0.192", "Oracle Cloud metadata"),
    ("fd00:c1::a9fe:a9fe", "Oracle Cloud instance metadata (IPv6)"),
    ("fd20:ce::254", "GCP metadata server (IPv6)"),
    ("100.100.100.200", "Alibaba Cloud metadata"),
    ("169.254.0.23", "Tencent Cloud metadata"),
    ("169.254.42.42", "Scaleway metadata"),
    ("fd00:42::42", "Scaleway metadata (IPv6)"),
];

/// The special ranges, most specific first. Order matters: the first match wins.
pub fn special_ranges() -> Vec<(IpNet, AddressClass)> {
    use AddressClass::*;
    let metadata = METADATA_ENDPOINTS.iter().map(|(address, _)| (net(address), Metadata));
    let ranges = [
        ("0.0.0.0/8", Unspecified),
        ("10.0.0.0/8", Private),
        ("100.64.0.0/10", Cgnat),
        ("127.0.0.0/8", Loopback),
        ("169.254.0.0/16", LinkLocal),
        ("172.16.0.0/12", Private),
        ("192.0.0.0/24", Reserved),
        ("192.0.2.0/24", Reserved),
        ("192.88.99.0/24", Reserved),
        ("192.168.0.0/16", Private),
        ("198.18.0.0/15", Reserved),
        ("198.51.100.0/24", Reserved),
        ("203.0.113.0/24", Reserved),
        ("224.0.0.0/4", Multicast),
        ("240.0.0.0/4", Reserved),
        ("::/128", Unspecified),
        ("::1/128", Loopback),
        ("64:ff9b:1::/48", Reserved),
        ("100::/64", Reserved),
        ("2001::/32", Reserved),
        ("2001:db8::/32", Reserved),
        ("fc00::/7", Private),
        ("fe80::/10", LinkLocal),
        ("fec0::/10", Private),
        ("ff00::/8", Multicast),
    ]
    .into_iter()
    .map(|(cidr, class)| (net(cidr), class));
    metadata.chain(ranges).collect()
}

fn net(s: &str) -> IpNet {
    // Static tables above; a typo is caught by the unit tests.
    if let Ok(net) = s.parse() {
        return net;
    }
    s.parse::<IpAddr>().map_or(IpNet::V4(Ipv4Net::default()), IpNet::from)
}

fn v4(bytes: [u16; 2]) -> Ipv4Addr {
    let [hi, lo] = bytes;
    Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
}

/// An IPv6 form that carries IPv4 addresses, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedding {
    /// `::ffff:a.b.c.d`
    Mapped,
    /// `::ffff:0:a.b.c.d` (SIIT)
    Siit,
    /// `::a.b.c.d` (deprecated IPv4-compatible)
    Compatible,
    /// `64:ff9b::a.b.c.d` (NAT64 well-known prefix)
    Nat64,
    /// `64:ff9b:1::/48` (NAT64 local-use): the IPv4 address sits where the operator's
    /// prefix length (/48, /56, /64 or /96) puts it; all four are candidates.
    Nat64LocalUse,
    /// `2002:AABB:CCDD::/48` (6to4)
    SixToFour,
    /// `2001:0::/32` (Teredo): the server's address, and the client's (inverted).
    Teredo,
}

impl Embedding {
    const ALL: [Embedding; 7] = [
        Embedding::Mapped,
        Embedding::Siit,
        Embedding::Compatible,
        Embedding::Nat64,
        Embedding::Nat64LocalUse,
        Embedding::SixToFour,
        Embedding::Teredo,
    ];

    /// The IPv6 range holding this form.
    fn range(self) -> Ipv6Net {
        let (addr, len) = match self {
            Embedding::Mapped => ("::ffff:0:0", 96),
            Embedding::Siit => ("::ffff:0:0:0", 96),
            Embedding::Compatible => ("::", 96),
            Embedding::Nat64 => ("64:ff9b::", 96),
            Embedding::Nat64LocalUse => ("64:ff9b:1::", 48),
            Embedding::SixToFour => ("2002::", 16),
            Embedding::Teredo => ("2001::", 32),
        };
        Ipv6Net::new(addr.parse().unwrap_or(Ipv6Addr::UNSPECIFIED), len).unwrap_or_default()
    }

    /// Where the IPv4 addresses sit: (first bit, inverted) for each candidate; the
    /// NAT64 local-use forms skip bits 64-71 (the "u" octet), handled in `extract`.
    fn extract(self, v6: Ipv6Addr) -> Vec<Ipv4Addr> {
        let s = v6.segments();
        match self {
            Embedding::Mapped | Embedding::Siit | Embedding::Compatible | Embedding::Nat64 => vec![v4([s[6], s[7]])],
            Embedding::Nat64LocalUse => vec![
                Ipv4Addr::new((s[3] >> 8) as u8, s[3] as u8, s[4] as u8, (s[5] >> 8) as u8),
                Ipv4Addr::new(s[3] as u8, s[4] as u8, (s[5] >> 8) as u8, s[5] as u8),
                Ipv4Addr::new(s[4] as u8, (s[5] >> 8) as u8, s[5] as u8, (s[6] >> 8) as u8),
                v4([s[6], s[7]]),
            ],
            Embedding::SixToFour => vec![v4([s[1], s[2]])],
            Embedding::Teredo => vec![v4([s[2], s[3]]), v4([!s[6], !s[7]])],
        }
    }

    fn of(v6: Ipv6Addr) -> Option<Embedding> {
        // `::` and `::1` are not IPv4-compatible forms.
        if v6.segments()[..7] == [0; 7] && v6.segments()[7] <= 1 {
            return None;
        }
        Embedding::ALL.into_iter().find(|e| e.range().contains(&v6))
    }

    /// Whether the form names exactly one IPv4 address, which then stands for it.
    fn is_unambiguous(self) -> bool {
        !matches!(self, Embedding::Nat64LocalUse | Embedding::Teredo)
    }
}

/// Every IPv4 address an IPv6 address carries: one for the mapped, SIIT, compatible,
/// NAT64 well-known and 6to4 forms; each candidate position for NAT64 local-use; the
/// server's and the client's for Teredo.
pub fn embedded_ipv4s(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let mut out = Embedding::of(v6).map(|e| e.extract(v6)).unwrap_or_default();
    out.dedup();
    out
}

/// The IPv4 address an IPv6 address stands for, where it embeds exactly one.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    Embedding::of(v6).filter(|e| e.is_unambiguous()).and_then(|e| e.extract(v6).first().copied())
}

/// The address to match rules against: the embedded IPv4 address for IPv6 forms that
/// carry exactly one, otherwise the address itself.
pub fn effective_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every address an address stands for: itself, and each IPv4 address it embeds.
pub fn address_components(ip: IpAddr) -> Vec<IpAddr> {
    let mut out = vec![ip];
    if let IpAddr::V6(v6) = ip {
        out.extend(embedded_ipv4s(v6).into_iter().map(IpAddr::V4));
    }
    out
}

/// The class of one address taken alone (no unwrapping) and the special range it is in.
pub fn classify_alone(ip: IpAddr) -> (AddressClass, Option<IpNet>) {
    special_ranges()
        .into_iter()
        .find(|(range, _)| range.contains(&ip))
        .map_or((AddressClass::Public, None), |(range, class)| (class, Some(range)))
}

/// Classifies an address by the most restrictive class among itself and every IPv4
/// address it embeds, with the special range that class came from.
pub fn classify(ip: IpAddr) -> (AddressClass, Option<IpNet>) {
    address_components(ip)
        .into_iter()
        .map(classify_alone)
        .min_by_key(|(class, _)| *class)
        .unwrap_or((AddressClass::Public, None))
}

/// The parts of a CIDR rule's range that lie inside the special `range`, and so name
/// it: the rule itself, and each IPv4 range it covers through an IPv6 form embedding
/// IPv4. The planner records a rule with any such part as opening `range`; a decision
/// lets an address of `range` through only inside one of these parts.
pub(crate) fn parts_naming(net: IpNet, range: IpNet) -> Vec<IpNet> {
    let mut forms = vec![net];
    if let IpNet::V6(v6) = net {
        forms.extend(embedded_ipv4_ranges(v6).into_iter().map(IpNet::V4));
    }
    forms.retain(|form| form.prefix_len() >= range.prefix_len() && range.contains(&form.network()));
    forms
}

/// The IPv4 ranges an IPv6 range written in an embedding form covers (empty for a
/// range outside every such form, or wider than the form's own prefix: that one is
/// judged as IPv6). Used to refuse, at plan time, a rule that reaches a never-reachable
/// IPv4 address through its IPv6 spelling.
pub fn embedded_ipv4_ranges(range: Ipv6Net) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    for embedding in Embedding::ALL {
        let form = embedding.range();
        if range.prefix_len() < form.prefix_len() || !form.contains(&range.network()) {
            continue;
        }
        // The IPv4 bits a prefix fixes: for each candidate position, the bits of the
        // range's prefix that fall inside the IPv4 field.
        let positions: &[(u8, bool)] = match embedding {
            Embedding::Mapped | Embedding::Siit | Embedding::Compatible | Embedding::Nat64 => &[(96, false)],
            Embedding::Nat64LocalUse => &[(48, false), (56, false), (72, false), (96, false)],
            Embedding::SixToFour => &[(16, false)],
            Embedding::Teredo => &[(32, false), (96, true)],
        };
        let candidates = embedding.extract(range.network());
        for ((start, inverted), address) in positions.iter().zip(candidates) {
            // Bits fixed inside the IPv4 field (the NAT64 local-use u octet at 64-71
            // is not part of it; treated conservatively as fixing nothing past it).
            let fixed = range.prefix_len().saturating_sub(*start).min(32);
            let fixed =
                if embedding == Embedding::Nat64LocalUse && *start < 64 { fixed.min(64 - start) } else { fixed };
            // An inverted field (Teredo's client) was inverted back by `extract`: a
            // fixed prefix of it is still a prefix of the IPv4 address.
            let _ = inverted;
            if let Ok(net) = Ipv4Net::new(address, fixed) {
                out.push(net.trunc());
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().expect("address")).0
    }

    #[test]
    fn a_rule_names_a_range_plainly_or_through_an_embedding_form() {
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        let private = net("10.0.0.0/8");
        assert_eq!(parts_naming(net("10.1.0.0/16"), private), [net("10.1.0.0/16")]);
        assert_eq!(parts_naming(net("10.0.0.0/8"), private), [net("10.0.0.0/8")]);
        // The IPv4-mapped spelling of 10.1.0.0/16 names it too, by its IPv4 part.
        assert_eq!(parts_naming(net("::ffff:10.1.0.0/112"), private), [net("10.1.0.0/16")]);
        // Wider than the range, or beside it: names nothing.
        assert!(parts_naming(net("0.0.0.0/0"), private).is_empty());
        assert!(parts_naming(net("8.0.0.0/6"), private).is_empty());
        assert!(parts_naming(net("192.168.0.0/16"), private).is_empty());
        assert!(parts_naming(net("::ffff:0.0.0.0/96"), private).is_empty());
    }

    #[test]
    fn classifies_special_ranges() {
        use AddressClass::*;
        for (addr, want) in [
            ("169.254.169.254", Metadata),
            ("169.254.1.1", LinkLocal),
            ("127.0.0.1", Loopback),
            ("10.1.2.3", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("192.168.1.1", Private),
            ("100.100.100.200", Metadata),
            ("100.100.100.201", Cgnat),
            ("168.63.129.16", Metadata),
            ("192.0.0.192", Metadata),
            ("169.254.170.2", Metadata),
            ("169.254.169.253", Metadata),
            ("169.254.0.23", Metadata),
            ("fd00:ec2::23", Metadata),
            ("224.0.0.1", Multicast),
            ("255.255.255.255", Reserved),
            ("0.0.0.0", Unspecified),
            ("8.8.8.8", Public),
            ("::1", Loopback),
            ("::", Unspecified),
            ("fe80::1", LinkLocal),
            ("fd12::1", Private),
            ("fd00:ec2::254", Metadata),
            ("2606:4700::1111", Public),
        ] {
            assert_eq!(class(addr), want, "{addr}");
        }
    }

    #[test]
    fn unwraps_ipv4_embedded_in_ipv6() {
        use AddressClass::*;
        assert_eq!(class("::ffff:169.254.169.254"), Metadata);
        assert_eq!(class("::ffff:a9fe:a9fe"), Metadata);
        assert_eq!(class("::169.254.169.254"), Metadata);
        assert_eq!(class("64:ff9b::a9fe:a9fe"), Metadata);
        assert_eq!(class("2002:a9fe:a9fe::1"), Metadata);
        assert_eq!(class("::ffff:10.0.0.1"), Private);
        assert_eq!(class("2002:0808:0808::1"), Public);
    }

    #[test]
    fn the_static_table_parses() {
        let ranges = special_ranges();
        assert_eq!(ranges.len(), METADATA_ENDPOINTS.len() + 25);
        assert!(ranges.iter().all(|(n, _)| n.prefix_len() > 0));
        for (address, _) in METADATA_ENDPOINTS {
            let ip: IpAddr = address.parse().expect("metadata address");
            assert_eq!(classify(ip).0, AddressClass::Metadata, "{address}");
        }
    }

    #[test]
    fn every_embedding_is_judged_by_every_ipv4_address_in_it() {
        use AddressClass::*;
        for (addr, want) in [
            // SIIT
            ("::ffff:0:a9fe:a9fe", Metadata),
            ("::ffff:0:7f00:1", Loopback),
            ("::ffff:0:808:808", Public),
            // NAT64 local-use, the IPv4 address at each prefix length's position
            ("64:ff9b:1:a9fe:a9:fe00::", Metadata),
            ("64:ff9b:1:a9:fe:a9fe::", Metadata),
            ("64:ff9b:1::a9:fea9:fe00:0", Metadata),
            ("64:ff9b:1::a9fe:a9fe", Metadata),
            // Its /48 position reads 0.0.8.8: "this network", never reachable.
            ("64:ff9b:1::808:808", Unspecified),
            // Teredo: the server's address, and the client's inverted
            ("2001:0:a9fe:a9fe::1", Metadata),
            ("2001:0:808:808::5601:5601", Metadata),
            ("2001:0:808:808::80ff:fffe", Loopback),
            ("2001:0:808:808::f7f7:f7f7", Reserved),
            // 6to4 and NAT64 well-known
            ("2002:7f00:1::", Loopback),
            ("64:ff9b::a83f:8110", Metadata),
        ] {
            assert_eq!(class(addr), want, "{addr}");
        }
        assert_eq!(embedded_ipv4s("2001:0:808:808::f7f7:f7f6".parse().unwrap()).len(), 2);
        assert_eq!(
            effective_address("2001:0:808:808::1".parse().unwrap()),
            "2001:0:808:808::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn an_ipv6_range_in_an_embedding_form_covers_its_ipv4_ranges() {
        let ranges = |s: &str| embedded_ipv4_ranges(s.parse().unwrap());
        let covers = |s: &str, ip: &str| ranges(s).iter().any(|n| n.contains(&ip.parse::<Ipv4Addr>().unwrap()));
        assert!(covers("::ffff:0:0/96", "169.254.169.254"));
        assert!(covers("::ffff:a9fe:0/112", "169.254.169.254"));
        assert!(!covers("::ffff:808:0/112", "169.254.169.254"));
        assert!(covers("::ffff:0:0:0/96", "127.0.0.1"));
        assert!(covers("64:ff9b::/96", "169.254.169.254"));
        assert!(covers("64:ff9b:1::/48", "169.254.169.254"));
        assert!(covers("2002::/16", "127.0.0.1"));
        assert!(covers("2002:a9fe::/32", "169.254.169.254"));
        assert!(!covers("2002:808::/32", "169.254.169.254"));
        assert!(covers("2001::/32", "169.254.169.254"));
        assert!(covers("2001:0:808:808::/64", "127.0.0.1"), "the client field is free");
        assert!(ranges("2600::/16").is_empty());
        assert!(ranges("::/0").is_empty(), "wider than every form: judged as IPv6");
    }
}
