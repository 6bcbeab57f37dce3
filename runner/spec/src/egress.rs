//! Egress rules and service bindings as written in a spec.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::host::HostPattern;
use crate::located::Located;
use crate::names::{BindingName, HeaderName, SecretName};

/// Whether the workload gets any network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// No network at all (the default).
    #[default]
    Deny,
    /// Only the destinations in `allow` (and binding hosts), through the egress proxy.
    Allowlist,
}

/// Network egress for the workload.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressSpec {
    /// `deny` (default): no network. `allowlist`: only the `allow` rules, via the proxy.
    #[serde(default)]
    pub mode: Located<EgressMode>,
    /// Destinations the workload may reach in `allowlist` mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Located<AllowRule>>,
}

/// One allowed destination: either `host` or `cidr`, with the ports it may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AllowRule {
    /// A DNS name (`pypi.org`) or wildcard suffix (`*.pythonhosted.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Located<HostPattern>>,
    /// An address range such as `203.0.113.0/24`. Private, loopback and link-local
    /// ranges are reachable only when a rule names them this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Located<Cidr>>,
    /// Destination ports, each 1-65535.
    pub ports: Located<Vec<Port>>,
    /// Must be `true` for a rule that allows every address (`0.0.0.0/0` or `::/0`),
    /// to show the openness is intended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acknowledge_any_address: bool,
}

/// A TCP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Port(#[schemars(range(min = 1, max = 65535))] pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        match u16::try_from(value) {
            Ok(port) if port > 0 => Ok(Port(port)),
            _ => Err(serde::de::Error::custom(format!("port {value} is out of range (1-65535)"))),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An IP network in CIDR notation with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.contains('/') {
            let hint = match s.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => format!(" (write {s}/32 for one address)"),
                Ok(std::net::IpAddr::V6(_)) => format!(" (write {s}/128 for one address)"),
                Err(_) => String::new(),
            };
            return Err(format!("invalid CIDR {s:?}: missing '/prefix'{hint}"));
        }
        // Parse the two halves strictly ourselves: ipnet's own parser accepts leading
        // zeros (`010.0.0.0/8`), which some tools read as octal.
        let invalid = || format!("invalid CIDR {s:?}");
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: std::net::IpAddr = addr.parse().map_err(|_| invalid())?;
        let strict_prefix = !prefix.is_empty()
            && prefix.len() <= 3
            && prefix.bytes().all(|b| b.is_ascii_digit())
            && (prefix == "0" || !prefix.starts_with('0'));
        if !strict_prefix {
            return Err(invalid());
        }
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        let net = IpNet::new(addr, prefix).map_err(|_| invalid())?;
        if net.trunc() != net {
            return Err(format!("CIDR {s:?} has host bits set; did you mean {}?", net.trunc()));
        }
        Ok(Cidr(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for Cidr {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Cidr")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An IPv4 or IPv6 network in CIDR notation with no host bits set, e.g. `203.0.113.0/24`.",
            "pattern": "/[0-9]{1,3}$"
        })
    }
}

/// A service binding: requests the workload sends to `http://<host>/...` are forwarded
/// by the egress proxy over verified TLS with the secret injected into one header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Binding {
    /// Binding name, unique within the session; appears in the audit.
    pub name: Located<BindingName>,
    /// The upstream host (an exact DNS name). The credential is only ever sent here.
    pub host: Located<HostPattern>,
    /// Upstream HTTPS port. Default 443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// Name of the secret whose value the proxy injects.
    pub secret: Located<SecretName>,
    /// Where and how the secret is injected.
    pub inject: Inject,
    /// HTTP methods the workload may use through this binding. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<Located<HttpMethod>>>,
    /// Request paths the workload may use: exact (`/v1/user`) or prefix (`/repos/*`).
    /// Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<Located<PathPattern>>>,
}

/// Header injection for a binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inject {
    /// Header to set (overwriting whatever the workload sent), e.g. `Authorization`.
    pub header: Located<HeaderName>,
    /// Header value template containing `{secret}` exactly once, e.g. `Bearer {secret}`.
    /// Default: `{secret}`.
    #[serde(default = "default_format")]
    pub format: Located<String>,
}

fn default_format() -> Located<String> {
    Located::new("{secret}".to_owned())
}

/// An HTTP method a binding permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs, reason = "HTTP method names are self-describing")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned));
        f.write_str(text.as_deref().unwrap_or("?"))
    }
}

/// A request path pattern: exact (`/v1/user`) or a prefix ending in `*` (`/repos/*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathPattern(String);

impl PathPattern {
    /// Whether a request path (without query) is covered. Paths containing `..` or `%2e`
    /// segments never match, so a prefix cannot be escaped.
    pub fn matches(&self, path: &str) -> bool {
        if !path.starts_with('/') || path_is_ambiguous(path) {
            return false;
        }
        match self.0.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.0,
        }
    }
    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Paths an upstream might normalise differently from a plain string match: dot
/// segments, encoded dots, slashes or backslashes, double encoding, `;` parameters
/// (`..;/`), backslashes, and every escape some decoder reads as a dot while a plain
/// string match does not: a `%` not followed by two hex digits (`%%32%65`, IIS's
/// `%u002e`), an escaped byte outside printable ASCII (overlong UTF-8 `%c0%ae`,
/// full-width dots `%ef%bc%8e`) and raw bytes outside printable ASCII. Such paths never
/// match a scope, so a prefix cannot be escaped.
fn path_is_ambiguous(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.split('/').any(|seg| seg == ".." || seg == ".")
        || ["%2e", "%2f", "%5c", "%25", "%00"].iter().any(|enc| lower.contains(enc))
        || path.contains([';', '\\', '\0'])
        || !path.bytes().all(|b| b.is_ascii_graphic())
        || has_unclear_escape(path.as_bytes())
}

/// Whether a `%` escape is malformed or stands for a byte outside printable ASCII.
fn has_unclear_escape(path: &[u8]) -> bool {
    let hex = |b: u8| char::from(b).to_digit(16);
    path.iter().enumerate().filter(|(_, b)| **b == b'%').any(|(i, _)| {
        match (path.get(i + 1).copied().and_then(hex), path.get(i + 2).copied().and_then(hex)) {
            // Printable ASCII and the space (`%20` is common and harmless).
            (Some(high), Some(low)) => !(0x20..0x7f).contains(&(high * 16 + low)),
            _ => true,
        }
    })
}

impl FromStr for PathPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("path pattern {s:?} must start with '/'"));
        }
        if s.trim_end_matches('*').contains('*') || s.ends_with("**") {
            return Err(format!("path pattern {s:?}: '*' is only allowed once, at the end"));
        }
        if s.split('/').any(|seg| seg == ".." || seg == ".") || s.contains(['?', '#', '\0', ' ']) {
            return Err(format!("path pattern {s:?} must not contain '.', '..', '?', '#' or spaces"));
        }
        Ok(PathPattern(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for PathPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl JsonSchema for PathPattern {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("PathPattern")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An exact request path (`/v1/user`) or a prefix ending in `*` (`/repos/*`).",
            "pattern": "^/"
        })
    }
}

impl<T: Default> Default for Located<T> {
    fn default() -> Self {
        Located::new(T::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_must_be_network_addresses() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("2001:db8::/32".parse::<Cidr>().is_ok());
        let err = "10.0.0.1/8".parse::<Cidr>().expect_err("host bits");
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
        assert!("10.0.0.1".parse::<Cidr>().expect_err("no prefix").contains("10.0.0.1/32"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("010.0.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn path_patterns_cannot_be_escaped() {
        let p: PathPattern = "/repos/*".parse().expect("pattern");
        assert!(p.matches("/repos/a/b"));
        assert!(!p.matches("/repos/../admin"));
        assert!(!p.matches("/repos/%2E%2E/admin"));
        assert!(!p.matches("/repos/..%2fadmin"));
        assert!(!p.matches("/repos/..;/admin"));
        assert!(!p.matches("/repos/%252e%252e/admin"));
        assert!(!p.matches("/repos/a\\..\\admin"));
        assert!(p.matches("/repos/a%20b"));
        // Escapes some decoder reads as a dot: double percent, IIS's %u, overlong UTF-8,
        // full-width dots; and raw bytes outside printable ASCII.
        for path in [
            "/repos/%%32%65%%32%65/admin",
            "/repos/%u002e%u002e/admin",
            "/repos/%c0%ae%c0%ae/admin",
            "/repos/%ef%bc%8e%ef%bc%8e/admin",
            "/repos/\u{ff0e}\u{ff0e}/admin",
            "/repos/a%",
            "/repos/a%4",
            "/repos/a%0a",
            "/repos/a\tb",
        ] {
            assert!(!p.matches(path), "{path}");
        }
        assert!(p.matches("/repos/a%41b"), "a printable escape is clear");
        assert!(!p.matches("/user"));
        let exact: PathPattern = "/v1/user".parse().expect("pattern");
        assert!(exact.matches("/v1/user"));
        assert!(!exact.matches("/v1/user/x"));
        assert!("repos".parse::<PathPattern>().is_err());
        assert!("/a/*/b".parse::<PathPattern>().is_err());
    }
}
