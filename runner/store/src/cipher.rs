//! Secrets at rest: XChaCha20-Poly1305 with a random 192-bit nonce per value and the
//! tenant and secret name as associated data.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use enclave_core::Secret;
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::token::random_bytes;

/// The 256-bit key that seals secrets. Read from a file or an environment variable as 64
/// hex digits or standard base64; never printed.
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// Parses a key written as 64 hex digits or base64 of 32 bytes (surrounding
    /// whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        let bytes = Zeroizing::new(if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| StoreError::InvalidKey("not hex".into()))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| StoreError::InvalidKey("neither 64 hex digits nor base64".into()))?
        });
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::InvalidKey(format!("{} bytes; a key is 32 bytes", bytes.len())))?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// A new random key, as 64 hex digits (for `enclave serve` set-up).
    pub fn generate_hex() -> Result<Zeroizing<String>, StoreError> {
        let mut key = Zeroizing::new([0u8; 32]);
        random_bytes(key.as_mut())?;
        Ok(Zeroizing::new(hex::encode(key.as_ref())))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(self.0.as_ref()))
    }

    fn aad(tenant: &str, name: &str) -> Vec<u8> {
        format!("enclave.dev/secret/v1\0{tenant}\0{name}").into_bytes()
    }

    /// Seals a value; returns `(nonce, ciphertext)`.
    pub(crate) fn seal(&self, tenant: &str, name: &str, value: &Secret) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let mut nonce = [0u8; 24];
        random_bytes(&mut nonce)?;
        let aad = Self::aad(tenant, name);
        let sealed = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: value.expose().as_bytes(), aad: &aad })
            .map_err(|_| StoreError::SecretUnreadable { name: name.to_owned() })?;
        Ok((nonce.to_vec(), sealed))
    }

    /// Opens a sealed value.
    pub(crate) fn open(&self, tenant: &str, name: &str, nonce: &[u8], sealed: &[u8]) -> Result<Secret, StoreError> {
        let unreadable = || StoreError::SecretUnreadable { name: name.to_owned() };
        if nonce.len() != 24 {
            return Err(unreadable());
        }
        let aad = Self::aad(tenant, name);
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: &aad })
                .map_err(|_| unreadable())?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| unreadable())?;
        Ok(Secret::new(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::parse(&SecretKey::generate_hex().expect("random")).expect("key")
    }

    #[test]
    fn sealed_values_open_only_with_their_key_tenant_and_name() {
        let key = key();
        let (nonce, sealed) = key.seal("t1", "token", &Secret::new("canary-value")).expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"canary"), "ciphertext holds the plaintext");
        assert_eq!(key.open("t1", "token", &nonce, &sealed).expect("open").expose(), "canary-value");
        assert!(key.open("t2", "token", &nonce, &sealed).is_err(), "moved to another tenant");
        assert!(key.open("t1", "other", &nonce, &sealed).is_err(), "moved to another name");
        assert!(self::key().open("t1", "token", &nonce, &sealed).is_err(), "another key");
    }

    #[test]
    fn keys_parse_from_hex_or_base64_of_32_bytes_only() {
        assert!(SecretKey::parse(&"ab".repeat(32)).is_ok());
        assert!(SecretKey::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).is_ok());
        assert!(SecretKey::parse(&"ab".repeat(16)).is_err());
        assert!(SecretKey::parse("not a key").is_err());
        assert_eq!(format!("{:?}", key()), "SecretKey(***)");
    }
}
