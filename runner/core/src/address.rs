//! Address classification: which addresses are special (private, loopback, link-local,
//! metadata, ...) and so denied unless a rule names them. IPv4 addresses embedded in
//! IPv6 (mapped, compatible, NAT64, 6to4) are unwrapped first, so an IPv6 spelling
//! cannot smuggle a private IPv4 destination past the check.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The class of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    /// A cloud metadata endpoint (169.254.169.254, fd00:ec2::254). Never reachable.
    Metadata,
    /// Link-local (169.254.0.0/16, fe80::/10).
    LinkLocal,
    /// Loopback (127.0.0.0/8, ::1).
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

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Metadata => "cloud metadata",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::Cgnat => "carrier-grade NAT",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
            AddressClass::Public => "public",
        })
    }
}

fn net(s: &str) -> IpNet {
    // Static table below; a typo is caught by the unit tests.
    s.parse().unwrap_or_else(|_| IpNet::V4(ipnet::Ipv4Net::default()))
}

/// The special ranges, most specific first. Order matters: the first match wins.
pub fn special_ranges() -> Vec<(IpNet, AddressClass)> {
    use AddressClass::*;
    [
        ("169.254.169.254/32", Metadata),
        ("fd00:ec2::254/128", Metadata),
        ("0.0.0.0/8", Reserved),
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
        ("::/128", Reserved),
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
    .map(|(cidr, class)| (net(cidr), class))
    .collect()
}

/// The IPv4 address an IPv6 address stands for, where it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and
/// 6to4 (`2002:AABB:CCDD::/16`).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// The address to classify and match rules against: the embedded IPv4 address for
/// IPv6 forms that carry one, otherwise the address itself.
pub fn effective_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Classifies an address (after unwrapping embedded IPv4) and returns the special
/// range it falls in, if any.
pub fn classify(ip: IpAddr) -> (AddressClass, Option<IpNet>) {
    let ip = effective_address(ip);
    special_ranges()
        .into_iter()
        .find(|(range, _)| range.contains(&ip))
        .map_or((AddressClass::Public, None), |(range, class)| (class, Some(range)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().expect("address")).0
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
            ("100.100.100.200", Cgnat),
            ("224.0.0.1", Multicast),
            ("255.255.255.255", Reserved),
            ("0.0.0.0", Reserved),
            ("8.8.8.8", Public),
            ("::1", Loopback),
            ("::", Reserved),
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
        assert_eq!(ranges.len(), 27);
        assert!(ranges.iter().all(|(n, _)| n.prefix_len() > 0));
    }
}
