//! Validated string newtypes: names, environment variable names, workspace paths.
//! Each parses with `FromStr`, so a bad value is reported at its own line and column.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! validated_string {
    ($(#[$doc:meta])* $ty:ident, $check:expr, $schema:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let check: fn(&str) -> Result<String, String> = $check;
                check(s).map($ty)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

fn dns_label(kind: &str, s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid {kind} {s:?}: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'"
        ))
    }
}

validated_string!(
    /// A session name: a DNS label (lowercase letters, digits, `-`; at most 63).
    SessionName,
    |s| dns_label("session name", s),
    { "type": "string", "description": "A session name: 1-63 lowercase letters, digits and '-', not starting or ending with '-'.", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" }
);

validated_string!(
    /// A binding name: a DNS label.
    BindingName,
    |s| dns_label("binding name", s),
    { "type": "string", "description": "A binding name: 1-63 lowercase letters, digits and '-', not starting or ending with '-'.", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" }
);

validated_string!(
    /// The name of a secret held by the server (never its value): letters, digits,
    /// `-`, `_` and `.`, at most 128 characters.
    SecretName,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(format!(
                "invalid secret name {s:?}: use 1-128 letters, digits, '-', '_' or '.' (a secret is referenced by name, never by value)"
            ));
        }
        if crate::credential::looks_like_credential(s) {
            return Err(format!(
                "{} looks like a credential value, not a secret name: store the value with `enclave secret set NAME` and reference NAME",
                crate::credential::describe(s)
            ));
        }
        Ok(s.to_owned())
    },
    { "type": "string", "description": "The name of a secret held by the server (never its value).", "pattern": "^[A-Za-z0-9._-]{1,128}$" }
);

validated_string!(
    /// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
    EnvName,
    |s| {
        let mut chars = s.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && s.len() <= 256;
        if ok { Ok(s.to_owned()) } else { Err(format!("invalid environment variable name {s:?}")) }
    },
    { "type": "string", "description": "An environment variable name.", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }
);

validated_string!(
    /// An HTTP header name (token characters only). `Host`, hop-by-hop and `Proxy-*`
    /// headers cannot be injected.
    HeaderName,
    |s| {
        let token = !s.is_empty()
            && s.len() <= 128
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        if !token {
            return Err(format!("invalid header name {s:?}"));
        }
        let lower = s.to_ascii_lowercase();
        let forbidden = ["host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"];
        if forbidden.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            return Err(format!("header {s:?} cannot be injected by a binding"));
        }
        Ok(s.to_owned())
    },
    { "type": "string", "description": "An HTTP header name. `Host`, hop-by-hop and `Proxy-*` headers cannot be injected.", "pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$" }
);

validated_string!(
    /// A path relative to the workspace root: no leading `/`, no `..`, no NUL or `\`.
    /// `./` prefixes and duplicate slashes are normalised away.
    ArtifactPath,
    |s| {
        if s.is_empty() {
            return Err("path is empty".to_owned());
        }
        if s.starts_with('/') {
            return Err(format!("path {s:?} is absolute; paths are relative to the workspace"));
        }
        if s.contains('\0') || s.contains('\\') {
            return Err(format!("path {s:?} contains NUL or '\\'"));
        }
        let mut parts = Vec::new();
        for part in s.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(format!("path {s:?} contains '..'; paths must stay inside the workspace")),
                other => parts.push(other),
            }
        }
        if parts.is_empty() { Ok(".".to_owned()) } else { Ok(parts.join("/")) }
    },
    { "type": "string", "minLength": 1, "description": "A workspace-relative path (no leading '/', no '..')." }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_are_normalised_and_confined() {
        assert_eq!("./dist//out/".parse::<ArtifactPath>().map(|p| p.0), Ok("dist/out".to_owned()));
        assert_eq!(".".parse::<ArtifactPath>().map(|p| p.0), Ok(".".to_owned()));
        assert!("/etc/passwd".parse::<ArtifactPath>().is_err());
        assert!("a/../../b".parse::<ArtifactPath>().is_err());
        assert!("a\\b".parse::<ArtifactPath>().is_err());
    }

    #[test]
    fn secret_names_refuse_values() {
        assert!("gh-token".parse::<SecretName>().is_ok());
        assert!("ghp_abcdefghijklmnopqrstuvwxyz0123456789".parse::<SecretName>().is_err());
        assert!("has space".parse::<SecretName>().is_err());
    }

    #[test]
    fn header_names_refuse_framing_headers() {
        assert!("Authorization".parse::<HeaderName>().is_ok());
        assert!("Host".parse::<HeaderName>().is_err());
        assert!("Proxy-Authorization".parse::<HeaderName>().is_err());
        assert!("Bad Header".parse::<HeaderName>().is_err());
    }
}
