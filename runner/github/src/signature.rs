//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body under the webhook secret, checked
//! before a byte of the body is parsed. Several secrets may be configured at once, so one
//! can be rotated: any of them verifies.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The webhook secrets, one per line of the secret file (blank lines skipped).
#[derive(Clone, Default)]
pub struct WebhookSecrets(Vec<Vec<u8>>);

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecrets({} configured)", self.0.len())
    }
}

impl WebhookSecrets {
    /// Reads the secret file's text: each non-blank line is one secret, taken as written
    /// but for its line ending.
    pub fn from_file_text(text: &str) -> Self {
        Self(
            text.lines()
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.as_bytes().to_vec())
                .collect(),
        )
    }

    /// Whether any secret is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No webhook secret is configured, so nothing can be verified.
    #[error("no webhook secret is configured")]
    NotConfigured,
    /// The delivery carries no `X-Hub-Signature-256` but a SHA-1 `X-Hub-Signature`.
    #[error("only a SHA-1 signature (X-Hub-Signature) was sent; X-Hub-Signature-256 is required")]
    Sha1Only,
    /// The delivery carries no signature at all.
    #[error("the delivery is not signed (no X-Hub-Signature-256)")]
    Missing,
    /// The header is not `sha256=` and 64 hex digits.
    #[error("X-Hub-Signature-256 is not `sha256=<64 hex digits>`")]
    Malformed,
    /// No configured secret gives this signature.
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a delivery's signature headers over `body`.
pub fn verify_signature(
    secrets: &WebhookSecrets,
    body: &[u8],
    signature_256: Option<&str>,
    signature_sha1: Option<&str>,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let header = match (signature_256, signature_sha1) {
        (Some(header), _) => header,
        (None, Some(_)) => return Err(SignatureError::Sha1Only),
        (None, None) => return Err(SignatureError::Missing),
    };
    let hex_digest = header.trim().strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let presented = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    // Every secret is tried, each compared in constant time (`verify_slice`).
    let mut matched = false;
    for secret in &secrets.0 {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { continue };
        mac.update(body);
        matched |= mac.verify_slice(&presented).is_ok();
    }
    if matched { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// The `X-Hub-Signature-256` value for `body` under `secret` (for tests and tools that
/// send deliveries).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // An HMAC takes a key of any length; this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("hmac takes any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented test vector ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secrets(text: &str) -> WebhookSecrets {
        WebhookSecrets::from_file_text(text)
    }

    #[test]
    fn githubs_documented_vector_verifies() {
        assert_eq!(sign(SECRET.as_bytes(), BODY), SIGNATURE);
        assert_eq!(verify_signature(&secrets(SECRET), BODY, Some(SIGNATURE), None), Ok(()));
    }

    #[test]
    fn any_configured_secret_verifies_so_a_secret_can_be_rotated() {
        let both = secrets(&format!("the-new-secret\r\n\n{SECRET}\n"));
        assert_eq!(verify_signature(&both, BODY, Some(SIGNATURE), None), Ok(()));
        let new_only = secrets("the-new-secret\n");
        assert_eq!(verify_signature(&new_only, BODY, Some(SIGNATURE), None), Err(SignatureError::Mismatch));
    }

    /// Secrets, body, `X-Hub-Signature-256`, `X-Hub-Signature`, the refusal.
    type Case<'a> = (&'a WebhookSecrets, &'a [u8], Option<&'a str>, Option<&'a str>, SignatureError);

    #[test]
    fn refusals_name_what_was_wrong() {
        let s = secrets(SECRET);
        let forged = SIGNATURE.replace("757107", "757108");
        let cases: [Case<'_>; 7] = [
            (&WebhookSecrets::default(), BODY, Some(SIGNATURE), None, SignatureError::NotConfigured),
            (&s, BODY, None, Some("sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0"), SignatureError::Sha1Only),
            (&s, BODY, None, None, SignatureError::Missing),
            (&s, BODY, Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d"), None, SignatureError::Malformed),
            (
                &s,
                BODY,
                Some("sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
                None,
                SignatureError::Malformed,
            ),
            (&s, BODY, Some(&forged), None, SignatureError::Mismatch),
            (&s, b"Hello, World?", Some(SIGNATURE), None, SignatureError::Mismatch),
        ];
        for (secrets, body, sig256, sig1, want) in cases {
            assert_eq!(verify_signature(secrets, body, sig256, sig1), Err(want), "{sig256:?} {sig1:?}");
        }
    }

    #[test]
    fn the_debug_form_never_shows_a_secret() {
        assert_eq!(format!("{:?}", secrets(SECRET)), "WebhookSecrets(1 configured)");
    }
}
