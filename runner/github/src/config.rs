//! `[github]` in the server configuration. The names are pinned: operators and tests rely
//! on them, and each key is also `ENCLAVE_GITHUB_<KEY>` in the environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::fork::ForkPolicy;

/// GitHub's public API.
pub const GITHUB_API: &str = "https://api.github.com";

/// The GitHub App Enclave runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct GithubConfig {
    /// The App's id.
    pub app_id: Option<u64>,
    /// The App's private key (PEM).
    pub private_key_file: Option<PathBuf>,
    /// Webhook secrets, one per line; any one verifies, so a secret can be rotated.
    pub webhook_secret_file: Option<PathBuf>,
    /// The REST API root: GitHub's, a GitHub Enterprise server's or a test server's.
    pub api_url: String,
    /// Where specs are checked in, relative to the repository root.
    pub spec_glob: String,
    /// How pull requests from forks are run.
    pub fork_policy: ForkPolicy,
    /// Installation id to tenant name.
    pub installation_tenants: BTreeMap<u64, String>,
    /// Whether an unlisted installation gets a tenant `github-<installation id>` with the
    /// default ceilings (`true`) or is refused.
    pub auto_tenants: bool,
    /// Whether a new push to a pull request cancels its sessions for the older head.
    pub cancel_superseded: bool,
    /// Most verified deliveries waiting to be processed; when the queue is full a
    /// delivery is answered 503, so GitHub shows it failed and it can be redelivered.
    pub queue_limit: u64,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            app_id: None,
            private_key_file: None,
            webhook_secret_file: None,
            api_url: GITHUB_API.to_owned(),
            spec_glob: ".enclave/*.yaml".to_owned(),
            fork_policy: ForkPolicy::default(),
            installation_tenants: BTreeMap::new(),
            auto_tenants: true,
            cancel_superseded: true,
            queue_limit: 256,
        }
    }
}

/// An `ENCLAVE_GITHUB_*` value that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {expected}")]
pub struct EnvError {
    variable: String,
    value: String,
    expected: &'static str,
}

impl GithubConfig {
    /// Applies `ENCLAVE_GITHUB_*` overrides, read through `var` (the process environment
    /// in the server, a map in tests).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), EnvError> {
        let get = |key: &str| {
            let variable = format!("ENCLAVE_GITHUB_{}", key.to_ascii_uppercase());
            var(&variable).map(|value| (variable, value))
        };
        let bad = |(variable, value): (String, String), expected| EnvError { variable, value, expected };
        if let Some(pair) = get("app_id") {
            self.app_id = Some(pair.1.trim().parse().map_err(|_| bad(pair, "an App id (a number)"))?);
        }
        if let Some((_, value)) = get("private_key_file") {
            self.private_key_file = Some(value.into());
        }
        if let Some((_, value)) = get("webhook_secret_file") {
            self.webhook_secret_file = Some(value.into());
        }
        if let Some((_, value)) = get("api_url") {
            self.api_url = value;
        }
        if let Some((_, value)) = get("spec_glob") {
            self.spec_glob = value;
        }
        if let Some(pair) = get("fork_policy") {
            self.fork_policy = pair.1.parse().map_err(|()| bad(pair, "one of restricted, approval, trusted, never"))?;
        }
        if let Some(pair) = get("installation_tenants") {
            self.installation_tenants =
                parse_tenants(&pair.1).ok_or_else(|| bad(pair, "a list `INSTALLATION_ID=TENANT,...`"))?;
        }
        if let Some(pair) = get("auto_tenants") {
            self.auto_tenants = parse_bool(&pair.1).ok_or_else(|| bad(pair, "true or false"))?;
        }
        if let Some(pair) = get("cancel_superseded") {
            self.cancel_superseded = parse_bool(&pair.1).ok_or_else(|| bad(pair, "true or false"))?;
        }
        if let Some(pair) = get("queue_limit") {
            self.queue_limit = pair.1.trim().parse().map_err(|_| bad(pair, "a number of deliveries"))?;
        }
        Ok(())
    }

    /// The tenant an installation's sessions run as, or `None` when it is refused.
    pub fn tenant_for(&self, installation: u64) -> Option<String> {
        match self.installation_tenants.get(&installation) {
            Some(tenant) => Some(tenant.clone()),
            None if self.auto_tenants => Some(format!("github-{installation}")),
            None => None,
        }
    }
}

fn parse_tenants(text: &str) -> Option<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, tenant) = entry.split_once('=')?;
        let tenant = tenant.trim();
        if tenant.is_empty() {
            return None;
        }
        out.insert(id.trim().parse().ok()?, tenant.to_owned());
    }
    Some(out)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn the_pinned_keys_read_from_toml() {
        let config: GithubConfig = toml::from_str(
            r#"
app_id = 12345
private_key_file = "/etc/enclave/app.pem"
webhook_secret_file = "/etc/enclave/webhook-secrets"
api_url = "https://ghe.example.test/api/v3"
spec_glob = "ci/*.yaml"
fork_policy = "approval"
auto_tenants = false
cancel_superseded = false
[installation_tenants]
77 = "acme"
"#,
        )
        .unwrap();
        assert_eq!(config.app_id, Some(12345));
        assert_eq!(config.fork_policy, ForkPolicy::Approval);
        assert_eq!(config.tenant_for(77).as_deref(), Some("acme"));
        assert_eq!(config.tenant_for(78), None, "unlisted installations are refused without auto_tenants");
        assert!(toml::from_str::<GithubConfig>("app_key = 1").is_err(), "unknown keys are refused");
    }

    #[test]
    fn defaults_are_githubs_api_the_enclave_folder_and_restricted_forks() {
        let config = GithubConfig::default();
        assert_eq!(config.api_url, "https://api.github.com");
        assert_eq!(config.spec_glob, ".enclave/*.yaml");
        assert_eq!(config.fork_policy, ForkPolicy::Restricted);
        assert_eq!(config.tenant_for(9).as_deref(), Some("github-9"));
        assert!(config.cancel_superseded);
    }

    #[test]
    fn every_key_is_also_an_environment_variable() {
        let mut config = GithubConfig::default();
        config
            .apply_env(env(&[
                ("ENCLAVE_GITHUB_APP_ID", "99"),
                ("ENCLAVE_GITHUB_PRIVATE_KEY_FILE", "/k.pem"),
                ("ENCLAVE_GITHUB_WEBHOOK_SECRET_FILE", "/s"),
                ("ENCLAVE_GITHUB_API_URL", "http://127.0.0.1:9/"),
                ("ENCLAVE_GITHUB_SPEC_GLOB", "x/*.yaml"),
                ("ENCLAVE_GITHUB_FORK_POLICY", "never"),
                ("ENCLAVE_GITHUB_INSTALLATION_TENANTS", "1=a, 2=b"),
                ("ENCLAVE_GITHUB_AUTO_TENANTS", "false"),
                ("ENCLAVE_GITHUB_CANCEL_SUPERSEDED", "0"),
                ("ENCLAVE_GITHUB_QUEUE_LIMIT", "12"),
            ]))
            .unwrap();
        assert_eq!(config.app_id, Some(99));
        assert_eq!(config.private_key_file, Some("/k.pem".into()));
        assert_eq!(config.webhook_secret_file, Some("/s".into()));
        assert_eq!(config.api_url, "http://127.0.0.1:9/");
        assert_eq!(config.spec_glob, "x/*.yaml");
        assert_eq!(config.fork_policy, ForkPolicy::Never);
        assert_eq!(config.installation_tenants, BTreeMap::from([(1, "a".into()), (2, "b".into())]));
        assert!(!config.auto_tenants && !config.cancel_superseded);
        assert_eq!(config.queue_limit, 12);
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        for (key, value) in [
            ("ENCLAVE_GITHUB_APP_ID", "twelve"),
            ("ENCLAVE_GITHUB_FORK_POLICY", "open"),
            ("ENCLAVE_GITHUB_INSTALLATION_TENANTS", "1=a,2"),
            ("ENCLAVE_GITHUB_AUTO_TENANTS", "maybe"),
            ("ENCLAVE_GITHUB_QUEUE_LIMIT", "-1"),
        ] {
            let err = GithubConfig::default().apply_env(env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().starts_with(&format!("{key}=")), "{err}");
        }
    }
}
