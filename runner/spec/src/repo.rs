//! Repository URLs: remote only (`https://`, `ssh://`, or scp-like `user@host:path`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::host::{Host, canonical_host};

/// How the clone step talks to the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepoScheme {
    /// Smart HTTP over TLS.
    Https,
    /// Git over SSH.
    Ssh,
}

/// A validated remote repository URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoUrl {
    /// Transport.
    pub scheme: RepoScheme,
    /// SSH user (`git` in `git@host:path`); never set for HTTPS.
    pub user: Option<String>,
    /// Canonical host.
    pub host: Host,
    /// Port (443 or 22 unless given).
    pub port: u16,
    /// Repository path on the host, starting with `/`.
    pub path: String,
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, default_port) = match self.scheme {
            RepoScheme::Https => ("https", 443),
            RepoScheme::Ssh => ("ssh", 22),
        };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host)?;
        if self.port != default_port {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)
    }
}

impl FromStr for RepoUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // First, so that no later message echoes a credential back.
        if has_raw_credentials(s) {
            return Err(CREDENTIALS_IN_URL.to_owned());
        }
        if s.starts_with("file:") {
            return Err(format!("{s:?} is a local file URL; repo.url must be a remote (https or ssh)"));
        }
        if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') || !s.contains(':') {
            return Err(format!("{s:?} is a local path; repo.url must be a remote (https or ssh)"));
        }
        if s.contains("://") {
            return parse_url(s);
        }
        parse_scp_like(s)
    }
}

fn parse_url(s: &str) -> Result<RepoUrl, String> {
    let url = url::Url::parse(s).map_err(|e| format!("invalid repository URL {s:?}: {e}"))?;
    let scheme = match url.scheme() {
        "https" => RepoScheme::Https,
        "ssh" => RepoScheme::Ssh,
        "http" => {
            return Err(format!("{s:?} uses plain http; use https so the clone is authenticated and private"));
        }
        other => {
            return Err(format!("unsupported repository scheme {other:?}; use https or ssh"));
        }
    };
    if url.password().is_some() || (scheme == RepoScheme::Https && !url.username().is_empty()) {
        return Err(CREDENTIALS_IN_URL.to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("repository URL {s:?} must not have a query or fragment"));
    }
    // Canonicalise the host as written: the URL parser would quietly turn numeric
    // spellings such as 0x7f000001 into dotted quads.
    let raw_host = raw_authority_host(s);
    if raw_host.is_empty() {
        return Err(format!("repository URL {s:?} has no host"));
    }
    let host = canonical_host(raw_host).map_err(|e| format!("repository host: {e}"))?;
    let port = url.port().unwrap_or(match scheme {
        RepoScheme::Https => 443,
        RepoScheme::Ssh => 22,
    });
    let path = url.path().to_owned();
    if path.len() <= 1 {
        return Err(format!("repository URL {s:?} has no repository path"));
    }
    let user = (!url.username().is_empty()).then(|| url.username().to_owned());
    Ok(RepoUrl { scheme, user, host, port, path })
}

const CREDENTIALS_IN_URL: &str =
    "repository URL contains credentials; put the token in a secret and name it in repo.credential";

/// Whether the text carries credentials in its userinfo: a password
/// (`user:secret@`), or any userinfo on a URL that is not `ssh://`. Checked on the
/// raw text, before URL parsing, because parse errors would echo the input.
fn has_raw_credentials(s: &str) -> bool {
    let (userinfo, ssh) = match s.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let userinfo = authority.rsplit_once('@').map(|(userinfo, _)| userinfo);
            (userinfo, scheme.eq_ignore_ascii_case("ssh"))
        }
        // scp-like `user@host:path`: whatever precedes the first '@', unless it is a path.
        None => {
            let userinfo = s.split_once('@').map(|(userinfo, _)| userinfo);
            (userinfo.filter(|u| !u.contains('/')), true)
        }
    };
    userinfo.is_some_and(|u| u.contains(':') || (!ssh && !u.is_empty()))
}

/// The host part of `scheme://[userinfo@]host[:port]/...`, exactly as written.
fn raw_authority_host(s: &str) -> &str {
    let after = s.split_once("://").map_or("", |(_, rest)| rest);
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        host_port.find(']').map_or(host_port, |end| &host_port[..=end])
    } else {
        host_port.split(':').next().unwrap_or("")
    }
}

fn parse_scp_like(s: &str) -> Result<RepoUrl, String> {
    let (authority, path) = s.split_once(':').ok_or_else(|| format!("invalid repository URL {s:?}"))?;
    let (user, raw_host) = match authority.split_once('@') {
        Some((user, host)) if !user.is_empty() => (Some(user.to_owned()), host),
        _ => {
            return Err(format!("{s:?} is neither a URL nor user@host:path; use https://host/path or git@host:path"));
        }
    };
    if let Some(u) = &user
        && !u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!("invalid ssh user {u:?} in repository URL"));
    }
    let host = canonical_host(raw_host).map_err(|e| format!("repository host: {e}"))?;
    if path.is_empty() || path.starts_with('-') {
        return Err(format!("repository URL {s:?} has no repository path"));
    }
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    Ok(RepoUrl { scheme: RepoScheme::Ssh, user, host, port: 22, path })
}

impl<'de> Deserialize<'de> for RepoUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for RepoUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for RepoUrl {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("RepoUrl")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A remote repository: `https://host/path`, `ssh://user@host/path` or `user@host:path`.",
            "pattern": "^(https://|ssh://|[A-Za-z0-9._-]+@[^:/]+:)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_remotes_and_normalises_them() {
        let cases = [
            ("https://GitHub.com/org/repo.git", "https://github.com/org/repo.git"),
            ("git@github.com:org/repo.git", "ssh://git@github.com/org/repo.git"),
            ("ssh://git@git.example.com:2222/r.git", "ssh://git@git.example.com:2222/r.git"),
        ];
        for (input, shown) in cases {
            assert_eq!(input.parse::<RepoUrl>().map(|u| u.to_string()), Ok(shown.to_owned()));
        }
    }

    #[test]
    fn refuses_local_and_credentialed_urls() {
        for (input, fragment) in [
            ("file:///srv/repo", "local file"),
            ("/srv/repo", "local path"),
            ("../repo", "local path"),
            ("repo", "local path"),
            ("http://example.com/r.git", "plain http"),
            ("https://user:pw@example.com/r.git", "credentials"),
            ("https://x-access-token@example.com/r.git", "credentials"),
            ("http://user:pw@example.com/r.git", "credentials"),
            ("https://user:pw@exa mple.com/r.git", "credentials"),
            ("user:pw@example.com:r.git", "credentials"),
            ("ftp://example.com/r.git", "unsupported"),
            ("https://example.com", "no repository path"),
            ("https://0x7f000001/r.git", "repository host"),
        ] {
            let err = input.parse::<RepoUrl>().expect_err(input);
            assert!(err.contains(fragment), "{input}: {err}");
        }
    }
}
