//! The addresses of the host the proxy dials from: never a destination. Read from the
//! kernel at each decision, so a Docker network created a moment ago (another session's
//! bridge gateway) is known as soon as it exists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where a proxy's host addresses come from.
#[derive(Debug, Clone, Default)]
pub enum HostAddresses {
    /// Every address on the interfaces of the proxy's network namespace, read at each
    /// decision (`/proc/net/fib_trie` and `/proc/net/if_inet6`).
    #[default]
    Live,
    /// A fixed list (tests of the decision path).
    Fixed(Vec<IpAddr>),
}

impl HostAddresses {
    /// The addresses now. A kernel table that cannot be read gives none of its family,
    /// and loopback and link-local stay denied by class whatever this returns.
    pub fn current(&self) -> Vec<IpAddr> {
        match self {
            HostAddresses::Fixed(list) => list.clone(),
            HostAddresses::Live => {
                let mut out = std::fs::read_to_string("/proc/net/fib_trie").map(|t| local_ipv4(&t)).unwrap_or_default();
                out.extend(
                    std::fs::read_to_string("/proc/net/if_inet6").map(|t| interface_ipv6(&t)).unwrap_or_default(),
                );
                out.sort();
                out.dedup();
                out
            }
        }
    }
}

/// The addresses the kernel's local routing table marks as this host's (`/32 host
/// LOCAL` leaves of `/proc/net/fib_trie`).
fn local_ipv4(fib_trie: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(address) = line.parse::<Ipv4Addr>() {
            last = Some(address);
        } else if line.starts_with("/32 host LOCAL")
            && let Some(address) = last
        {
            out.push(IpAddr::V4(address));
        }
    }
    out
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
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     |-- 10.0.0.0\n        /8 link UNICAST\n     |-- 10.0.0.5\n        /32 host LOCAL\nLocal:\n  +-- 127.0.0.0/8 2 0 2\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 172.17.0.1\n        /32 host LOCAL\n";
        let v4 = local_ipv4(fib);
        assert_eq!(v4, ["10.0.0.5", "127.0.0.1", "172.17.0.1"].map(|a| a.parse::<IpAddr>().unwrap()));
        let v6 = interface_ipv6(
            "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80 eth0\n",
        );
        assert_eq!(v6, ["::1", "fe80::1"].map(|a| a.parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn the_live_list_holds_this_hosts_loopback() {
        let now = HostAddresses::Live.current();
        assert!(now.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{now:?}");
    }
}
