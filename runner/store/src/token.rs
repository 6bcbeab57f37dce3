//! Bearer tokens: `enc_<key id>_<secret>`. The key id finds the row; only the sha256 of
//! the secret is stored, and it is compared in constant time.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::error::StoreError;

const PREFIX: &str = "enc_";

/// A freshly issued token: shown to its owner once, never stored.
pub struct IssuedToken {
    /// The whole bearer token.
    pub token: Zeroizing<String>,
    /// The public key id (safe to log).
    pub key_id: String,
    /// sha256 of the secret part (what the store keeps).
    pub(crate) secret_hash: [u8; 32],
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(buf).map_err(StoreError::Random)
}

/// A new token with 256 random bits of secret.
pub(crate) fn issue() -> Result<IssuedToken, StoreError> {
    let mut key = [0u8; 8];
    random_bytes(&mut key)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    random_bytes(secret.as_mut())?;
    let key_id = hex::encode(key);
    let secret_text = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_ref()));
    let secret_hash = hash(&secret_text);
    Ok(IssuedToken { token: Zeroizing::new(format!("{PREFIX}{key_id}_{}", secret_text.as_str())), key_id, secret_hash })
}

/// Splits a presented token into key id and secret; `None` if it is not of our shape.
pub(crate) fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    let key_ok = key_id.len() == 16 && key_id.bytes().all(|b| b.is_ascii_hexdigit());
    (key_ok && !secret.is_empty()).then_some((key_id, secret))
}

pub(crate) fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub(crate) fn matches(secret: &str, stored: &[u8]) -> bool {
    bool::from(hash(secret).as_slice().ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_splits_and_matches_its_hash_only() {
        let issued = issue().expect("random");
        let (key_id, secret) = split(&issued.token).expect("shape");
        assert_eq!(key_id, issued.key_id);
        assert!(matches(secret, &issued.secret_hash));
        assert!(!matches("wrong", &issued.secret_hash));
        let mut altered = secret.to_owned();
        altered.push('x');
        assert!(!matches(&altered, &issued.secret_hash));
    }

    #[test]
    fn malformed_tokens_do_not_split() {
        for bad in ["", "enc_", "enc_abc_def", "bearer", "enc_0123456789abcdef_", "enc_0123456789abcdeg_x"] {
            assert!(split(bad).is_none(), "{bad:?}");
        }
    }
}
