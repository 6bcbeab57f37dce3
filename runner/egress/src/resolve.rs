//! Name resolution for the proxy. Each connection resolves its host exactly once; the
//! addresses returned are classified by the decision core and the proxy dials only one
//! of those, so a DNS answer that changes between check and use (rebinding) cannot move
//! the connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::error::EgressError;

/// Resolves a canonical domain name to addresses.
#[async_trait]
pub trait Resolve: Send + Sync {
    /// Every address the name has (IPv4 and IPv6), or why there are none.
    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String>;
}

/// A DNS resolver (hickory) with its cache turned off: the proxy's answer for a
/// connection is the one it got for that connection.
pub struct DnsResolver {
    inner: TokioResolver,
}

impl DnsResolver {
    /// Uses the host's resolver configuration (`/etc/resolv.conf`, then `/etc/hosts`).
    pub fn from_system() -> Result<Self, EgressError> {
        let mut builder = TokioResolver::builder_tokio()
            .map_err(|source| EgressError::Dns { what: "reading the system DNS config", source })?;
        *builder.options_mut() = uncached(builder.options_mut().clone());
        let inner = builder.build().map_err(|source| EgressError::Dns { what: "building the DNS resolver", source })?;
        Ok(Self { inner })
    }

    /// Asks only the name server at `server` (UDP and TCP), ignoring `/etc/hosts`.
    pub fn with_server(server: SocketAddr) -> Result<Self, EgressError> {
        let mut ns = NameServerConfig::udp_and_tcp(server.ip());
        for connection in &mut ns.connections {
            connection.port = server.port();
        }
        let _: &Vec<ConnectionConfig> = &ns.connections;
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
        let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let mut options = uncached(ResolverOpts::default());
        options.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        *builder.options_mut() = options;
        let inner = builder.build().map_err(|source| EgressError::Dns { what: "building the DNS resolver", source })?;
        Ok(Self { inner })
    }
}

fn uncached(mut options: ResolverOpts) -> ResolverOpts {
    options.cache_size = 0;
    options.attempts = 1;
    options
}

#[async_trait]
impl Resolve for DnsResolver {
    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        // A trailing dot makes the name absolute: no search domains are tried.
        let fqdn = format!("{name}.");
        match self.inner.lookup_ip(fqdn.as_str()).await {
            Ok(answer) => Ok(answer.iter().collect()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Fixed answers (operator-configured static hosts, and tests), counting lookups.
#[derive(Debug, Default)]
pub struct StaticResolver {
    hosts: HashMap<String, Vec<IpAddr>>,
    lookups: AtomicUsize,
}

impl StaticResolver {
    /// A resolver answering from this table only.
    pub fn new(hosts: HashMap<String, Vec<IpAddr>>) -> Self {
        Self { hosts, lookups: AtomicUsize::new(0) }
    }

    /// How many lookups were made.
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Resolve for StaticResolver {
    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.hosts.get(name).cloned().ok_or_else(|| format!("{name}: no such host"))
    }
}

/// Static hosts first, then another resolver: how an operator pins an internal name.
pub struct Layered<A, B>(pub A, pub B);

#[async_trait]
impl<A: Resolve, B: Resolve> Resolve for Layered<A, B> {
    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        match self.0.lookup(name).await {
            Ok(addrs) if !addrs.is_empty() => Ok(addrs),
            _ => self.1.lookup(name).await,
        }
    }
}
