//! Heuristics that recognise credential values written where a name or a plain value
//! belongs. A match on a name field is an error; on an `env` value, a warning.

/// Prefixes of well-known token formats.
const TOKEN_PREFIXES: &[(&str, &str)] = &[
    ("ghp_", "a GitHub personal access token"),
    ("gho_", "a GitHub OAuth token"),
    ("ghs_", "a GitHub app token"),
    ("ghu_", "a GitHub user token"),
    ("github_pat_", "a GitHub fine-grained token"),
    ("glpat-", "a GitLab token"),
    ("xoxb-", "a Slack bot token"),
    ("xoxp-", "a Slack user token"),
    ("AKIA", "an AWS access key id"),
    ("ASIA", "an AWS temporary access key id"),
    ("sk_live_", "a Stripe secret key"),
    ("sk-", "an API secret key"),
    ("AIza", "a Google API key"),
    ("npm_", "an npm token"),
    ("-----BEGIN", "a PEM private key"),
];

fn known_prefix(value: &str) -> Option<&'static str> {
    TOKEN_PREFIXES
        .iter()
        .find(|(prefix, _)| value.starts_with(prefix) && value.len() >= prefix.len() + 16)
        .map(|(_, what)| *what)
}

/// A long run of base64/hex-like characters with mixed classes: a generated secret.
fn high_entropy(value: &str) -> bool {
    if value.len() < 32 || !value.chars().all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c)) {
        return false;
    }
    let upper = value.chars().any(|c| c.is_ascii_uppercase());
    let lower = value.chars().any(|c| c.is_ascii_lowercase());
    let digit = value.chars().any(|c| c.is_ascii_digit());
    upper && lower && digit
}

/// Whether `value` looks like a credential rather than a name or a plain setting.
pub fn looks_like_credential(value: &str) -> bool {
    known_prefix(value).is_some() || high_entropy(value)
}

/// A short description of what the value looks like, without echoing it.
pub(crate) fn describe(value: &str) -> &'static str {
    known_prefix(value).unwrap_or("a high-entropy string")
}

/// Whether an environment variable name suggests a secret (`*_TOKEN`, `PASSWORD`, ...).
pub fn secret_like_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "PRIVATE_KEY", "CREDENTIAL"]
        .iter()
        .any(|word| upper.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_token_formats_without_flagging_plain_values() {
        assert!(looks_like_credential("ghp_0123456789abcdefghijklmnopqrstuvwx"));
        assert!(looks_like_credential("AKIAABCDEFGHIJKLMNOP"));
        assert!(looks_like_credential("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRkdI"));
        assert!(!looks_like_credential("production"));
        assert!(!looks_like_credential("https://example.com/path"));
        assert!(!looks_like_credential("sk-"));
        assert_eq!(describe("glpat-aaaaaaaaaaaaaaaaaaaa"), "a GitLab token");
    }
}
