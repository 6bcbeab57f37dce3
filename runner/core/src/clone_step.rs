//! The clone step, defined once for every backend: the script, the git settings it runs
//! under and its resources. A backend chooses only how the credential reaches the script
//! ([`CredentialDelivery`]) and how the script's container is wired to the proxy.
//!
//! Threat model: the repository (its host, its refs, its objects) is the tenant's and may
//! be hostile, and so is the workload image. The script therefore starts from an empty
//! workspace that only Enclave has written, runs git with no hooks, no fsmonitor, no
//! filters, no global or system configuration and an empty `$HOME`, admits https only,
//! never fetches submodules, checks every received object with fsck, and scopes the
//! credential header to the repository URL itself through git's environment-provided
//! configuration, which nothing in the repository can redirect or read back.

use serde::{Deserialize, Serialize};

use crate::plan::{ClonePhase, CloneResources, GitSetting};
use crate::quota::Quotas;

/// `$HOME` of the clone: a directory the script creates, so it is new and empty.
pub const CLONE_HOME: &str = "/tmp/enclave-home";

/// Memory the clone may use at least (git's index and pack handling need some).
const CLONE_MEMORY_FLOOR: u64 = 256 << 20;
/// Size of the clone's own scratch space (`/tmp`: `$HOME`, git's temporary files).
const CLONE_SCRATCH_BYTES: u64 = 64 << 20;

/// The git settings of every clone, passed as `GIT_CONFIG_*` environment (the highest
/// precedence below the command line, and never written to any file).
const GIT_SETTINGS: &[(&str, &str)] = &[
    // No hook runs, whatever sits in the workspace (which is empty anyway).
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    // No templates copied in by `git init` (they could carry hooks on another image).
    ("init.templateDir", ""),
    // https only: no ext::, file://, ssh or plain http transport, for the repository or
    // anything it points at.
    ("protocol.allow", "never"),
    ("protocol.https.allow", "always"),
    ("http.followRedirects", "false"),
    ("http.sslVerify", "true"),
    // Every object received is checked (no `.git` paths, no malformed trees).
    ("transfer.fsckObjects", "true"),
    ("fetch.fsckObjects", "true"),
    // Submodules are never fetched or checked out.
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    // No credential helper of any image: the header below is the only credential.
    ("credential.helper", ""),
    // Nothing runs in the background after the clone.
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("advice.detachedHead", "false"),
];

/// The clone script (POSIX `sh`, busybox-compatible). Its inputs are environment
/// variables set by [`ClonePhase::environment`] and by the backend's credential delivery;
/// nothing is spliced into the text. It clones into its working directory (the
/// workspace) and, when `ENCLAVE_CLONE_DONE_URL` is set, asks the egress proxy to revoke
/// the clone's reach before it exits.
pub const CLONE_SCRIPT: &str = r#"set -eu
umask 077
token=
case "${ENCLAVE_GIT_CREDENTIAL:-none}" in
  none) ;;
  stdin) IFS= read -r token || true ;;
  file:*) token=$(cat "${ENCLAVE_GIT_CREDENTIAL#file:}") ;;
  *) echo "enclave-clone: unknown credential delivery" >&2; exit 2 ;;
esac
if [ "${ENCLAVE_GIT_EXTRA_CA:-}" = stdin ]; then
  cat > /tmp/enclave-extra-ca.pem
  if [ -s /tmp/enclave-extra-ca.pem ]; then
    cat /etc/ssl/certs/ca-certificates.crt /tmp/enclave-extra-ca.pem > /tmp/enclave-ca.pem
    export GIT_SSL_CAINFO=/tmp/enclave-ca.pem
  fi
fi
mkdir -m 700 "$HOME"
if [ -n "$(ls -A .)" ]; then
  echo "enclave-clone: the workspace is not empty before the clone; refusing" >&2
  exit 2
fi
if [ -n "$token" ]; then
  case "$token" in
    *:*) pair=$token ;;
    *) pair="x-access-token:$token" ;;
  esac
  basic=$(printf '%s' "$pair" | base64 | tr -d '\n')
  alone=$(printf '%s' "$token" | base64 | tr -d '\n')
  n=$GIT_CONFIG_COUNT
  export "GIT_CONFIG_KEY_$n=http.$ENCLAVE_REPO_URL.extraHeader"
  export "GIT_CONFIG_VALUE_$n=Authorization: Basic $basic"
  export GIT_CONFIG_COUNT=$((n + 1))
fi
git init -q .
git remote add origin "$ENCLAVE_REPO_URL"
git fetch -q --depth 1 --no-tags --no-recurse-submodules origin "${ENCLAVE_REPO_REF:-HEAD}"
git checkout -q --detach FETCH_HEAD
# The repository host got the credential; a hostile one can hand it back in what it
# serves (a file, a name, a commit message). Nothing holding it reaches the workload.
if [ -n "$token" ] && { grep -rqaF -e "$token" -e "$basic" -e "$alone" . ||
    find . -print | grep -qaF -e "$token" -e "$basic" -e "$alone" ||
    git cat-file --batch-all-objects --batch | grep -qaF -e "$token" -e "$basic" -e "$alone"; }; then
  echo "enclave-clone: the repository holds the clone credential; refusing it" >&2
  rm -rf ./* ./.[!.]* ./..?*
  exit 3
fi
unset token pair basic alone
git log -1 --format='cloned %H'
if [ -n "${ENCLAVE_CLONE_DONE_URL:-}" ]; then
  git -c protocol.http.allow=always ls-remote "$ENCLAVE_CLONE_DONE_URL" >/dev/null
fi
"#;

/// How a backend hands the credential to the clone script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialDelivery {
    /// No credential.
    None,
    /// The first line of the script's stdin.
    Stdin,
    /// A file the script reads once (e.g. a mounted Secret).
    File(String),
}

impl CredentialDelivery {
    fn env_value(&self) -> Option<String> {
        match self {
            CredentialDelivery::None => None,
            CredentialDelivery::Stdin => Some("stdin".to_owned()),
            CredentialDelivery::File(path) => Some(format!("file:{path}")),
        }
    }
}

/// The clone phase of a repository under the session's quotas.
pub(crate) fn clone_phase(repo: &enclave_spec::RepoSpec, quotas: &Quotas) -> ClonePhase {
    ClonePhase {
        url: repo.url.to_string(),
        scheme: repo.url.scheme,
        host: repo.url.host.clone(),
        port: repo.url.port,
        git_ref: repo.git_ref.as_ref().map(|r| r.value.clone()),
        credential: repo.credential.as_ref().map(|c| c.to_string()),
        resources: CloneResources {
            memory_bytes: quotas.memory_bytes.max(CLONE_MEMORY_FLOOR),
            cpu_millis: 1000,
            pids: 256,
            scratch_bytes: CLONE_SCRATCH_BYTES,
        },
        git_config: GIT_SETTINGS
            .iter()
            .map(|(key, value)| GitSetting { key: (*key).to_owned(), value: (*value).to_owned() })
            .collect(),
        script: CLONE_SCRIPT.to_owned(),
    }
}

impl ClonePhase {
    /// The clone process's whole environment for a credential delivery: git isolated from
    /// every configuration file, the plan's settings, the repository URL and ref. The
    /// backend adds only its proxy variables (and, on Kubernetes, the end-of-clone URL).
    pub fn environment(&self, delivery: &CredentialDelivery) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", CLONE_HOME),
            ("XDG_CONFIG_HOME", CLONE_HOME),
            ("LC_ALL", "C"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_ASKPASS", "/bin/false"),
            ("GIT_NO_REPLACE_OBJECTS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.push(("GIT_CONFIG_COUNT".to_owned(), self.git_config.len().to_string()));
        for (i, setting) in self.git_config.iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), setting.key.clone()));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), setting.value.clone()));
        }
        env.push(("ENCLAVE_REPO_URL".to_owned(), self.url.clone()));
        if let Some(git_ref) = &self.git_ref {
            env.push(("ENCLAVE_REPO_REF".to_owned(), git_ref.clone()));
        }
        if let Some(value) = delivery.env_value() {
            env.push(("ENCLAVE_GIT_CREDENTIAL".to_owned(), value));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase() -> ClonePhase {
        let yaml = "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: t\nspec:\n  command: [true]\n  repo:\n    url: https://git.example/org/app.git\n    ref: main\n    credential: repo-token\n";
        let parsed = enclave_spec::parse("t.yaml", yaml.as_bytes()).expect("spec");
        let plan = crate::plan(&parsed.spec, &crate::Policy::default()).expect("plan");
        plan.clone_phase().expect("clone phase").clone()
    }

    fn value<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_clone_runs_with_hooks_off_https_only_and_fsck() {
        let env = phase().environment(&CredentialDelivery::Stdin);
        let count: usize = value(&env, "GIT_CONFIG_COUNT").and_then(|c| c.parse().ok()).expect("count");
        let settings: Vec<(String, String)> = (0..count)
            .map(|i| {
                let get = |name: String| value(&env, &name).expect("setting").to_owned();
                (get(format!("GIT_CONFIG_KEY_{i}")), get(format!("GIT_CONFIG_VALUE_{i}")))
            })
            .collect();
        for (key, expected) in [
            ("core.hooksPath", "/dev/null"),
            ("core.fsmonitor", "false"),
            ("protocol.allow", "never"),
            ("protocol.https.allow", "always"),
            ("transfer.fsckObjects", "true"),
            ("submodule.recurse", "false"),
            ("http.followRedirects", "false"),
        ] {
            assert!(settings.iter().any(|(k, v)| k == key && v == expected), "{key} missing: {settings:?}");
        }
        assert_eq!(value(&env, "GIT_CONFIG_NOSYSTEM"), Some("1"));
        assert_eq!(value(&env, "GIT_CONFIG_GLOBAL"), Some("/dev/null"));
        assert_eq!(value(&env, "HOME"), Some(CLONE_HOME));
        assert_eq!(value(&env, "ENCLAVE_GIT_CREDENTIAL"), Some("stdin"));
        assert_eq!(value(&env, "ENCLAVE_REPO_REF"), Some("main"));
    }

    #[test]
    fn the_credential_header_is_scoped_to_the_repository_url() {
        let script = phase().script;
        assert!(script.contains(r#"GIT_CONFIG_KEY_$n=http.$ENCLAVE_REPO_URL.extraHeader"#));
        assert!(!script.contains("credential.helper="), "no helper: only the scoped header");
    }

    #[test]
    fn deliveries_name_where_the_script_reads_the_credential() {
        let p = phase();
        assert_eq!(value(&p.environment(&CredentialDelivery::None), "ENCLAVE_GIT_CREDENTIAL"), None);
        let file = p.environment(&CredentialDelivery::File("/run/cred/token".into()));
        assert_eq!(value(&file, "ENCLAVE_GIT_CREDENTIAL"), Some("file:/run/cred/token"));
    }

    #[test]
    fn resources_have_floors() {
        let r = phase().resources;
        assert!(r.memory_bytes >= CLONE_MEMORY_FLOOR);
        assert_eq!(r.scratch_bytes, CLONE_SCRATCH_BYTES);
    }
}
