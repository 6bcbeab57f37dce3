//! The clone step: a short-lived container, separate from the workload, that alone
//! receives the git credential and clones the repository into the workspace volume.
//!
//! The credential reaches git only through the exec's stdin, read by the clone script
//! into git's environment-provided configuration (`GIT_CONFIG_*`, an
//! `http.extraHeader`), so it is in no container or exec definition Docker keeps, in no
//! file and in no process argument; the remote URL written to `.git/config` carries no
//! credential. The container reaches the network only through the session's proxy,
//! which admits the repository host alone during this phase.

use std::collections::HashMap;

use base64::Engine as _;
use bollard::models::{ContainerCreateBody, Mount, MountType};
use enclave_core::{ClonePhase, Plan, SessionId};

use crate::config::DockerConfig;
use crate::container_spec::{Limits, Names, WORKSPACE, hardened_host_config};
use crate::labels;

/// What the clone container runs (through exec, with stdin attached): the first stdin
/// line is an HTTP header for git (empty without a credential), the rest CA
/// certificates to trust (possibly none). `$1` is the URL, `$2` the ref.
pub(crate) const CLONE_SCRIPT: &str = r#"set -eu
IFS= read -r header || true
cat > /tmp/extra-ca.pem
if [ -s /tmp/extra-ca.pem ]; then
    cat /etc/ssl/certs/ca-certificates.crt /tmp/extra-ca.pem > /tmp/ca.pem
    export GIT_SSL_CAINFO=/tmp/ca.pem
fi
export GIT_CONFIG_COUNT=2 GIT_CONFIG_KEY_0=http.followRedirects GIT_CONFIG_VALUE_0=false
if [ -n "$header" ]; then
    export GIT_CONFIG_KEY_1=http.extraHeader GIT_CONFIG_VALUE_1="$header"
else
    export GIT_CONFIG_KEY_1=credential.helper GIT_CONFIG_VALUE_1=
fi
unset header
cd /workspace
git init -q .
git remote add origin "$1"
git fetch -q --depth 1 origin "$2"
git checkout -q --detach FETCH_HEAD
git log -1 --format='cloned %H'
"#;

/// The `Authorization` header for a credential: `user:password` as given, or a bare
/// token as the password of `x-access-token` (what GitHub and most forges accept).
pub(crate) fn auth_header(credential: &str) -> String {
    let pair = if credential.contains(':') { credential.to_owned() } else { format!("x-access-token:{credential}") };
    format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// The clone container's name.
pub(crate) fn clone_container_name(session: &SessionId) -> String {
    format!("{}-clone", Names::of(session).container)
}

/// Arguments of the clone exec.
pub(crate) fn clone_command(clone: &ClonePhase) -> Vec<String> {
    let git_ref = clone.git_ref.clone().unwrap_or_else(|| "HEAD".to_owned());
    vec!["sh".into(), "-c".into(), CLONE_SCRIPT.into(), "clone".into(), clone.url.clone(), git_ref]
}

/// The clone container: hardened like the workload (gVisor, uid 65534, no capabilities,
/// read-only root, no new privileges), on the session network, with the proxy as its
/// only way out.
pub(crate) fn clone_container(
    plan: &Plan,
    session: &SessionId,
    network: &str,
    proxy_url: &str,
    config: &DockerConfig,
) -> ContainerCreateBody {
    let names = Names::of(session);
    let c = &plan.containment;
    let memory = i64::try_from(plan.quotas.memory_bytes.max(256 << 20)).unwrap_or(i64::MAX);
    let env = [
        format!("HTTPS_PROXY={proxy_url}"),
        format!("https_proxy={proxy_url}"),
        "NO_PROXY=".to_owned(),
        "HOME=/tmp".to_owned(),
        "GIT_TERMINAL_PROMPT=0".to_owned(),
        "GIT_CONFIG_NOSYSTEM=1".to_owned(),
        "PATH=/usr/bin:/bin".to_owned(),
    ];
    let workspace = Mount {
        target: Some(WORKSPACE.to_owned()),
        source: Some(names.workspace.clone()),
        typ: Some(MountType::VOLUME),
        read_only: Some(false),
        // The volume is already mounted by the idle workload container.
        volume_options: Some(bollard::models::MountVolumeOptions { no_copy: Some(true), ..Default::default() }),
        ..Default::default()
    };
    let limits = Limits { memory, nano_cpus: 1_000_000_000, pids: 256 };
    let mut host_config = hardened_host_config(config.gvisor_netns_runtime.clone(), limits, network, vec![workspace]);
    host_config.tmpfs = Some(HashMap::from([("/tmp".to_owned(), "rw,size=16m,mode=1777".to_owned())]));
    host_config.dns = Some(Vec::new());
    ContainerCreateBody {
        image: Some(config.clone_image.clone()),
        user: Some(format!("{}:{}", c.run_as_user, c.run_as_group)),
        entrypoint: Some(vec!["sleep".to_owned()]),
        cmd: Some(vec!["2147483647".to_owned()]),
        env: Some(env.to_vec()),
        working_dir: Some(WORKSPACE.to_owned()),
        labels: Some(labels::for_session(session, "clone", &config.scope, config.owner_pid)),
        host_config: Some(host_config),
        attach_stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_token_becomes_basic_auth_for_x_access_token() {
        let header = auth_header("tok123");
        let expected = base64::engine::general_purpose::STANDARD.encode("x-access-token:tok123");
        assert_eq!(header, format!("Authorization: Basic {expected}"));
        assert!(auth_header("alice:pw").ends_with(&base64::engine::general_purpose::STANDARD.encode("alice:pw")));
    }

    #[test]
    fn the_clone_command_carries_no_credential() {
        let clone = ClonePhase {
            url: "https://git.example/org/repo.git".into(),
            scheme: enclave_spec::RepoScheme::Https,
            host: "git.example".into(),
            port: 443,
            git_ref: Some("main".into()),
            credential: Some("repo-token".into()),
        };
        let cmd = clone_command(&clone);
        assert_eq!(&cmd[3..], ["clone", "https://git.example/org/repo.git", "main"]);
    }
}
