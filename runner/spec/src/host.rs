//! The one strict host canonicaliser. Every layer that names or checks a host (spec
//! validation, the planner, the egress decision, the proxy) goes through
//! [`canonical_host`], so that two layers can never disagree about what a spelling
//! means. Anything ambiguous is refused rather than interpreted.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A canonical destination host: a lowercase ASCII domain name (IDNA applied, no
/// trailing dot) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A domain name in canonical form.
    Domain(String),
    /// An IP address. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is stored as IPv4.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// A host serialises as its canonical text (`Display`): IPv6 in brackets.
impl Serialize for Host {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A host reads back through [`canonical_host`], so a value read from the wire is as
/// canonical as one the planner made.
impl<'de> Deserialize<'de> for Host {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        canonical_host(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a host spelling was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Empty input.
    #[error("host is empty")]
    Empty,
    /// Longer than a DNS name can be.
    #[error("host is longer than 253 characters")]
    TooLong,
    /// `user@host` forms smuggle credentials and confuse parsers.
    #[error("host {0:?} contains userinfo ('@')")]
    Userinfo(String),
    /// Percent-encoding or IPv6 zone ids.
    #[error("host {0:?} contains '%' (percent-encoding and zone ids are not allowed)")]
    Percent(String),
    /// NUL, whitespace or other control characters.
    #[error("host {0:?} contains whitespace or control characters")]
    ControlOrSpace(String),
    /// A port or an unbracketed IPv6 literal.
    #[error("host {0:?} contains ':' (put ports in `ports`; write IPv6 literals in brackets)")]
    Colon(String),
    /// A bracketed literal that is not an IPv6 address.
    #[error("host {0:?} is not a valid bracketed IPv6 address")]
    BadIpv6(String),
    /// Decimal, hex, octal or short-form numeric spellings of an address.
    #[error("host {0:?} is a numeric address spelling; only dotted-quad IPv4 is accepted")]
    NumericSpelling(String),
    /// Not a valid DNS name after IDNA processing.
    #[error("host {0:?} is not a valid DNS name")]
    InvalidName(String),
}

/// Canonicalises a host as written by a user or seen on the wire.
///
/// Lowercases, drops one trailing dot, applies IDNA (to ASCII), and accepts IP
/// literals only as strict dotted-quad IPv4 or bracketed IPv6. Refuses userinfo,
/// `%`, NUL and whitespace, ports, and numeric spellings such as `2852039166`,
/// `0xA9FEA9FE`, `0251.0376.0251.0376` or `169.254.43518`.
pub fn canonical_host(input: &str) -> Result<Host, HostError> {
    if input.is_empty() {
        return Err(HostError::Empty);
    }
    if input.len() > 255 {
        return Err(HostError::TooLong);
    }
    if input.contains('@') {
        return Err(HostError::Userinfo(input.to_owned()));
    }
    if input.contains('%') {
        return Err(HostError::Percent(input.to_owned()));
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(HostError::ControlOrSpace(input.to_owned()));
    }
    if let Some(inner) = input.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| HostError::BadIpv6(input.to_owned()))?;
        let v6 = Ipv6Addr::from_str(inner).map_err(|_| HostError::BadIpv6(input.to_owned()))?;
        return Ok(Host::Ip(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }));
    }
    if input.contains(':') {
        return Err(HostError::Colon(input.to_owned()));
    }
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if trimmed.is_empty() || trimmed.ends_with('.') {
        return Err(HostError::InvalidName(input.to_owned()));
    }
    if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return strict_dotted_quad(trimmed)
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .ok_or_else(|| HostError::NumericSpelling(input.to_owned()));
    }
    let lower = trimmed.to_lowercase();
    if numeric_top_label(&lower) {
        return Err(HostError::NumericSpelling(input.to_owned()));
    }
    let ascii = idna::domain_to_ascii_strict(&lower).map_err(|_| HostError::InvalidName(input.to_owned()))?;
    // IDNA maps fullwidth digits, ideographic full stops and ignorable characters
    // (soft hyphen, zero-width space) to ASCII, so a name that looked harmless can come
    // out as an address spelling: check again on what IDNA produced.
    if ascii.chars().all(|c| c.is_ascii_digit() || c == '.') || numeric_top_label(&ascii) {
        return Err(HostError::NumericSpelling(input.to_owned()));
    }
    if ascii.len() > 253 {
        return Err(HostError::TooLong);
    }
    let labels_ok = ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !labels_ok {
        return Err(HostError::InvalidName(input.to_owned()));
    }
    Ok(Host::Domain(ascii))
}

/// Whether the last label is numeric or hex. A real top-level label never is; such
/// names are address spellings that some resolvers would interpret (inet_aton forms).
fn numeric_top_label(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex_label = last.strip_prefix("0x").is_some_and(|rest| rest.chars().all(|c| c.is_ascii_hexdigit()));
    last.chars().all(|c| c.is_ascii_digit()) || hex_label
}

/// Strict dotted quad: four decimal parts, no leading zeros, each at most 255.
fn strict_dotted_quad(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (slot, part) in octets.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part.starts_with('0')) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// A host rule: an exact domain (`api.example.com`) or a wildcard suffix
/// (`*.example.com`, matching any name below `example.com` but not `example.com`
/// itself). IP addresses are not host patterns: use a `cidr` rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Exactly this canonical domain.
    Exact(String),
    /// Any domain strictly below this canonical suffix.
    Suffix(String),
}

impl HostPattern {
    /// Whether a canonical host is matched by this pattern.
    pub fn matches(&self, host: &Host) -> bool {
        let Host::Domain(name) = host else {
            return false;
        };
        match self {
            HostPattern::Exact(exact) => name == exact,
            HostPattern::Suffix(suffix) => {
                name.strip_suffix(suffix.as_str()).is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(e) => f.write_str(e),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

/// Why a host pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    /// The host part did not canonicalise.
    #[error(transparent)]
    Host(#[from] HostError),
    /// An IP literal where a name was expected.
    #[error("{0:?} is an IP address; use a `cidr` rule such as {1}")]
    IpNotAllowed(String, String),
    /// `*` somewhere other than a leading `*.` label.
    #[error("{0:?}: a wildcard is only allowed as a whole leading label (\"*.example.com\")")]
    BadWildcard(String),
    /// `*.com` and the like.
    #[error("{0:?} is too broad: a wildcard needs a suffix of at least two labels")]
    TooBroad(String),
}

impl FromStr for HostPattern {
    type Err = HostPatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if rest.contains('*') {
            return Err(HostPatternError::BadWildcard(s.to_owned()));
        }
        match canonical_host(rest)? {
            Host::Ip(ip) => {
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                Err(HostPatternError::IpNotAllowed(s.to_owned(), format!("{ip}/{prefix}")))
            }
            Host::Domain(name) if wildcard => {
                if !name.contains('.') {
                    return Err(HostPatternError::TooBroad(s.to_owned()));
                }
                Ok(HostPattern::Suffix(name))
            }
            Host::Domain(name) => Ok(HostPattern::Exact(name)),
        }
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for HostPattern {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("HostPattern")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A DNS name (`api.example.com`) or a wildcard suffix (`*.example.com`, subdomains only). IP addresses go in `cidr` rules.",
            "minLength": 1,
            "maxLength": 255
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<&str, &str>) {
        let got = canonical_host(input);
        match (got, expect) {
            (Ok(h), Ok(want)) => assert_eq!(h.to_string(), want, "{input:?}"),
            (Err(e), Err(fragment)) => {
                assert!(e.to_string().contains(fragment), "{input:?}: {e} lacks {fragment:?}")
            }
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn canonicalises_names_and_strict_literals() {
        check("Example.COM.", Ok("example.com"));
        check("bücher.example", Ok("xn--bcher-kva.example"));
        check("10.0.0.1", Ok("10.0.0.1"));
        check("[::1]", Ok("[::1]"));
        check("[::ffff:169.254.169.254]", Ok("169.254.169.254"));
        check("[::FFFF:a9fe:a9fe]", Ok("169.254.169.254"));
    }

    #[test]
    fn refuses_numeric_and_ambiguous_spellings() {
        check("2852039166", Err("numeric"));
        check("0xA9FEA9FE", Err("numeric"));
        check("0251.0376.0251.0376", Err("numeric"));
        check("169.254.43518", Err("numeric"));
        check("0xa9.0xfe.0xa9.0xfe", Err("numeric"));
        check(
            "\u{ff11}\u{ff16}\u{ff19}\u{ff0e}\u{ff12}\u{ff15}\u{ff14}\u{ff0e}\u{ff11}\u{ff16}\u{ff19}\u{ff0e}\u{ff12}\u{ff15}\u{ff14}",
            Err("numeric"),
        );
        check("169\u{3002}254\u{3002}169\u{3002}254", Err("numeric"));
        check("169.254.169.25\u{ad}4", Err("numeric"));
        check("1.2.3.4.5", Err("numeric"));
        check("example.123", Err("numeric"));
        check("user@example.com", Err("userinfo"));
        check("example.com%2f", Err("'%'"));
        check("[fe80::1%eth0]", Err("'%'"));
        check("exa mple.com", Err("whitespace"));
        check("example.com\0", Err("control"));
        check("example.com:443", Err("':'"));
        check("::1", Err("':'"));
        check("[::1", Err("bracketed"));
        check("example..com", Err("not a valid DNS name"));
        check("example.com..", Err("not a valid DNS name"));
        check("-bad.example", Err("not a valid DNS name"));
        check("under_score.example", Err("not a valid DNS name"));
        check("", Err("empty"));
    }

    #[test]
    fn host_patterns_match_subdomains_only() {
        let p: HostPattern = "*.Example.com".parse().expect("pattern");
        let host = |s: &str| canonical_host(s).expect("host");
        assert!(p.matches(&host("a.example.com")));
        assert!(p.matches(&host("a.b.example.com")));
        assert!(!p.matches(&host("example.com")));
        assert!(!p.matches(&host("badexample.com")));
        let exact: HostPattern = "api.example.com".parse().expect("pattern");
        assert!(exact.matches(&host("API.example.com.")));
        assert!(!exact.matches(&host("x.api.example.com")));
        assert!("*.com".parse::<HostPattern>().is_err());
        assert!("a.*.com".parse::<HostPattern>().is_err());
        assert!("10.0.0.1".parse::<HostPattern>().is_err());
    }
}
