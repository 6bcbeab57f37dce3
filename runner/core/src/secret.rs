//! Secrets: values live only inside [`Secret`], which cannot be printed, serialized or
//! compared by accident, and is zeroized on drop. Only the clone step and the egress
//! proxy resolve values; everything else handles names.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::secret_forms::SecretForms;

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

/// Replaces every secret value, and its common encodings (see [`crate::secret_forms`]),
/// with `***` in text bound for logs, events and API responses; and finds them in bytes
/// that cannot be rewritten in place.
pub struct Redactor {
    forms: SecretForms,
}

impl Redactor {
    /// Shortest value redacted: shorter ones would mangle ordinary text.
    pub const MIN_LEN: usize = crate::secret_forms::MIN_LEN;

    /// Builds a redactor for these values.
    pub fn new(values: &[Secret]) -> Self {
        Self { forms: SecretForms::new(values.iter().map(Secret::expose)) }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// The text with every secret form replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        self.forms.redact(text)
    }

    /// Whether the bytes hold a secret value in one of its forms at any offset, decoded
    /// however percent-escapes, JSON escapes and line breaks mix.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        self.forms.found_in(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

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
