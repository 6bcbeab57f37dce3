//! Secrets: values live only inside [`Secret`], which cannot be printed, serialized or
//! compared by accident, and is zeroized on drop. Only the clone step and the egress
//! proxy resolve values; everything else handles names.

use std::collections::BTreeMap;

use base64::Engine as _;
use zeroize::Zeroizing;

/// A secret value. No `Debug`, `Display`, `Serialize` or `Clone` of the value.
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The value, for the two places allowed to use it (clone step, egress proxy).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where secret values come from.
pub trait SecretStore: Send + Sync {
    /// Resolves a secret by name.
    fn resolve(&self, name: &str) -> Option<Secret>;
    /// Every value this store can resolve, for redaction only.
    fn redaction_values(&self) -> Vec<Secret>;
}

/// A store with no secrets (the simulator needs none).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSecrets;

impl SecretStore for NoSecrets {
    fn resolve(&self, _name: &str) -> Option<Secret> {
        None
    }
    fn redaction_values(&self) -> Vec<Secret> {
        Vec::new()
    }
}

/// An in-memory store (tests, local CLI runs with secrets from the environment).
#[derive(Default)]
pub struct MemorySecrets(BTreeMap<String, Secret>);

impl MemorySecrets {
    /// Adds or replaces a secret.
    pub fn insert(&mut self, name: impl Into<String>, value: Secret) {
        self.0.insert(name.into(), value);
    }
}

impl SecretStore for MemorySecrets {
    fn resolve(&self, name: &str) -> Option<Secret> {
        self.0.get(name).map(|s| Secret::new(s.expose()))
    }
    fn redaction_values(&self) -> Vec<Secret> {
        self.0.values().map(|s| Secret::new(s.expose())).collect()
    }
}

/// Replaces every secret value, and its base64 forms, with `***` in text bound for
/// logs, events and API responses.
pub struct Redactor {
    needles: Vec<Zeroizing<String>>,
}

impl Redactor {
    /// Shortest value redacted: shorter ones would mangle ordinary text.
    pub const MIN_LEN: usize = 4;

    /// Builds a redactor for these values.
    pub fn new(values: &[Secret]) -> Self {
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let mut needles: Vec<Zeroizing<String>> = Vec::new();
        for value in values {
            let raw = value.expose();
            if raw.len() < Self::MIN_LEN {
                continue;
            }
            needles.push(Zeroizing::new(raw.to_owned()));
            for engine in engines {
                needles.push(Zeroizing::new(engine.encode(raw.as_bytes())));
            }
        }
        // Longest first, so a value is never half-replaced by a shorter needle.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup_by(|a, b| **a == **b);
        Self { needles }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The text with every secret form replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_values_and_their_base64_forms() {
        let r = Redactor::new(&[Secret::new("hunter2-token")]);
        let b64 = base64::engine::general_purpose::STANDARD.encode("hunter2-token");
        let text = format!("a hunter2-token b {b64} c");
        assert_eq!(r.redact(&text), "a *** b *** c");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn secret_debug_never_shows_the_value() {
        assert_eq!(format!("{:?}", Secret::new("abc")), "Secret(***)");
    }
}
