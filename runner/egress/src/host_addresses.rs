//! The addresses of the host the proxy dials from: never a destination. Read from the
//! kernel at each decision, so a Docker network created a moment ago (another session's
//! bridge gateway) is known as soon as it exists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Where a proxy's host addresses come from.
#[derive(Debug, Clone, Default)]
pub enum HostAddresses {
    /// Every address the kernel of the proxy's network namespace treats as its own, read
    /// at each decision: local routes of any prefix (`/proc/net/fib_trie`, IPv6
    /// `/proc/net/ipv6_route` with `RTF_LOCAL`) and interface addresses
    /// (`/proc/net/if_inet6`).
    #[default]
    Live,
    /// A fixed list (tests of the decision path).
    Fixed(Vec<IpNet>),
}

impl HostAddresses {
    /// The addresses now. A kernel table that cannot be read gives none of its family,
    /// and loopback and link-local stay denied by class whatever this returns.
    pub fn current(&self) -> Vec<IpNet> {
        match self {
            HostAddresses::Fixed(list) => list.clone(),
            HostAddresses::Live => {
                let mut out = std::fs::read_to_string("/proc/net/fib_trie").map(|t| local_ipv4(&t)).unwrap_or_default();
                out.extend(std::fs::read_to_string("/proc/net/ipv6_route").map(|t| local_ipv6(&t)).unwrap_or_default());
                out.extend(
                    std::fs::read_to_string("/proc/net/if_inet6")
                        .map(|t| interface_ipv6(&t))
                        .unwrap_or_default()
                        .into_iter()
                        .map(IpNet::from),
                );
                out.sort();
                out.dedup();
                out
            }
        }
    }
}

/// The prefixes the kernel's local routing table marks as this host's (`/N host LOCAL`
/// leaves of `/proc/net/fib_trie`: `/32` for an interface address, wider for a local
/// route such as `ip route add local 10.200.0.0/24 dev lo`).
fn local_ipv4(fib_trie: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(address) = line.parse::<Ipv4Addr>() {
            last = Some(address);
        } else if let Some(rest) = line.strip_prefix('/')
            && let Some((len, kind)) = rest.split_once(' ')
            && kind.trim() == "host LOCAL"
            && let (Some(address), Ok(len)) = (last, len.parse::<u8>())
            && let Ok(net) = ipnet::Ipv4Net::new(address, len)
        {
            out.push(IpNet::V4(net.trunc()));
        }
    }
    out
}

/// IPv6 local routes (`RTF_LOCAL`, 0x80000000) of `/proc/net/ipv6_route`: destination,
/// prefix length, ..., flags (the ninth field).
fn local_ipv6(routes: &str) -> Vec<IpNet> {
    routes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(8)?, 16).ok()?;
            if flags & 0x8000_0000 == 0 {
                return None;
            }
            let address = Ipv6Addr::from(u128::from_str_radix(fields.first()?, 16).ok()?);
            let len = u8::from_str_radix(fields.get(1)?, 16).ok()?;
            ipnet::Ipv6Net::new(address, len).ok().map(|n| IpNet::V6(n.trunc()))
        })
        .collect()
}

/// The addresses of `/proc/net/if_inet6`: 32 hex digits, then index, prefix, scope,
/// flags and name.
fn interface_ipv6(if_inet6: &str) -> Vec<IpAddr> {
    if_inet6
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(|bits| IpAddr::V6(Ipv6Addr::from(bits)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_tables() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     |-- 10.0.0.0\n        /8 link UNICAST\n     |-- 10.0.0.5\n        /32 host LOCAL\nLocal:\n  +-- 127.0.0.0/8 2 0 2\n     |-- 127.0.0.0\n        /8 host LOCAL\n     |-- 172.17.0.1\n        /32 host LOCAL\n     |-- 10.200.0.0\n        /24 host LOCAL\n";
        let v4 = local_ipv4(fib);
        assert_eq!(
            v4,
            ["10.0.0.5/32", "127.0.0.0/8", "172.17.0.1/32", "10.200.0.0/24"].map(|a| a.parse::<IpNet>().unwrap())
        );
        let v6 = interface_ipv6(
            "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80 eth0\n",
        );
        assert_eq!(v6, ["::1", "fe80::1"].map(|a| a.parse::<IpAddr>().unwrap()));
        let routes = "26001f00ffff00000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 80200001 lo\nfe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(local_ipv6(routes), ["2600:1f00:ffff::/64".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn the_live_list_holds_this_hosts_loopback() {
        let now = HostAddresses::Live.current();
        assert!(now.iter().any(|n| n.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST))), "{now:?}");
    }
}
