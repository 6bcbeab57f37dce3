//! The clone step on Docker: a short-lived container from Enclave's own git image,
//! separate from the workload, that alone receives the git credential and runs the
//! plan's clone script (defined once, in `enclave-core`) in the workspace volume.
//!
//! During the clone no process of the workload image exists: the workspace volume and
//! the network namespace are held by Enclave's holder container, which the clone joins.
//! The credential goes in on the exec's stdin (the delivery Docker chooses), so it is in
//! no container or exec definition Docker keeps, in no file and in no process argument.
//! The container reaches the network only through the session's proxy, which admits the
//! repository host alone during this phase.

use std::collections::HashMap;

use base64::Engine as _;
use bollard::models::{ContainerCreateBody, Mount, MountType};
use enclave_core::{ClonePhase, CredentialDelivery, Plan, SessionId};

use crate::config::DockerConfig;
use crate::container_spec::{Limits, Names, WORKSPACE, hardened_host_config};
use crate::labels;

/// The `Authorization` header the clone script builds for a credential (`user:password`
/// as given, or a bare token as the password of `x-access-token`). Docker computes it
/// only to redact it from the clone's transcript.
pub(crate) fn auth_header(credential: &str) -> String {
    let pair = if credential.contains(':') { credential.to_owned() } else { format!("x-access-token:{credential}") };
    format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// The clone container's name.
pub(crate) fn clone_container_name(session: &SessionId) -> String {
    format!("{}-clone", Names::of(session).container)
}

/// Arguments of the clone exec: the plan's script, nothing spliced in.
pub(crate) fn clone_command(clone: &ClonePhase) -> Vec<String> {
    vec!["sh".into(), "-c".into(), clone.script.clone(), "enclave-clone".into()]
}

/// The clone container: hardened like the workload (gVisor, uid 65534, no capabilities,
/// read-only root, no new privileges), with the plan's clone resources, in the holder's
/// network namespace (already guarded: the proxy is its only way out) and with the
/// holder's workspace volume. `clone_via_proxy` adds the proxy's address once it listens.
pub(crate) fn clone_container(
    plan: &Plan,
    clone: &ClonePhase,
    session: &SessionId,
    config: &DockerConfig,
) -> ContainerCreateBody {
    let names = Names::of(session);
    let c = &plan.containment;
    let r = &clone.resources;
    let mut env: Vec<String> =
        clone.environment(&CredentialDelivery::Stdin).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push("ENCLAVE_GIT_EXTRA_CA=stdin".to_owned());
    let workspace = Mount {
        target: Some(WORKSPACE.to_owned()),
        source: Some(names.workspace.clone()),
        typ: Some(MountType::VOLUME),
        read_only: Some(false),
        // The volume is already mounted by the holder.
        volume_options: Some(bollard::models::MountVolumeOptions { no_copy: Some(true), ..Default::default() }),
        ..Default::default()
    };
    let limits = Limits {
        memory: i64::try_from(r.memory_bytes).unwrap_or(i64::MAX),
        nano_cpus: i64::try_from(r.cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
        pids: i64::from(r.pids),
    };
    let network = format!("container:{}", names.holder);
    let mut host_config = hardened_host_config(config.gvisor_netns_runtime.clone(), limits, &network, vec![workspace]);
    host_config.tmpfs = Some(HashMap::from([("/tmp".to_owned(), format!("rw,size={},mode=1777", r.scratch_bytes))]));
    ContainerCreateBody {
        image: Some(config.clone_image.clone()),
        user: Some(format!("{}:{}", c.run_as_user, c.run_as_group)),
        entrypoint: Some(vec!["sleep".to_owned()]),
        cmd: Some(vec!["2147483647".to_owned()]),
        env: Some(env),
        working_dir: Some(WORKSPACE.to_owned()),
        labels: Some(labels::for_session(session, "clone", config)),
        host_config: Some(host_config),
        attach_stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

/// Points the clone container's git at the session's proxy, its only way out.
pub(crate) fn clone_via_proxy(body: &mut ContainerCreateBody, proxy_url: &str) {
    body.env.get_or_insert_default().extend([
        format!("HTTPS_PROXY={proxy_url}"),
        format!("https_proxy={proxy_url}"),
        "NO_PROXY=".to_owned(),
    ]);
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
        let yaml = "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: t\nspec:\n  command: [true]\n  repo:\n    url: https://git.example/org/repo.git\n    ref: main\n    credential: repo-token\n";
        let parsed = enclave_spec::parse("t.yaml", yaml.as_bytes()).expect("spec");
        let plan = enclave_core::plan(&parsed.spec, &enclave_core::Policy::default()).expect("plan");
        let clone = plan.clone_phase().expect("clone");
        let session = SessionId::new("ses-1").expect("id");
        let cmd = clone_command(clone);
        assert_eq!(cmd[2], clone.script, "the plan's one script");
        let mut body = clone_container(&plan, clone, &session, &DockerConfig::default());
        clone_via_proxy(&mut body, "http://10.0.0.1:3128");
        let definition = serde_json::to_string(&body).expect("json");
        assert!(!definition.contains("Authorization"), "no credential form in the definition");
        let env = body.env.expect("env");
        assert!(env.contains(&"ENCLAVE_GIT_CREDENTIAL=stdin".to_owned()), "{env:?}");
        assert!(env.contains(&"GIT_CONFIG_GLOBAL=/dev/null".to_owned()), "{env:?}");
        let host = body.host_config.expect("host");
        assert_eq!(host.network_mode.as_deref(), Some("container:enclave-ses-1-holder"), "the holder's guarded netns");
    }
}
