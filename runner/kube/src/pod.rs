//! The session pod: the workload container, the clone init container, their security
//! contexts, resources and volumes. Pure builders, no API calls.

use std::collections::BTreeMap;

use enclave_core::{CredentialDelivery, Isolation, Plan, Program, SessionId};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::config::KubeConfig;
use crate::names::Names;

/// Where the workspace is mounted.
pub(crate) const WORKSPACE: &str = "/workspace";
/// Name of the workload container.
pub(crate) const WORKLOAD_CONTAINER: &str = "workload";
/// Name of the clone init container.
pub(crate) const CLONE_CONTAINER: &str = "clone";
/// Where the clone container sees the git credential (a file, never an env var).
const CREDENTIAL_DIR: &str = "/var/run/enclave/git-credential";

/// The pod spec of a session.
pub(crate) fn pod_spec(plan: &Plan, session: &SessionId, config: &KubeConfig) -> PodSpec {
    let names = Names::of(session);
    let disk = plan.quotas.disk_bytes;
    let mut volumes = vec![empty_dir("workspace", disk), empty_dir("tmp", disk)];
    let mut init_containers = Vec::new();
    if let Some(clone) = plan.clone_phase() {
        volumes.push(empty_dir("clone-tmp", clone.resources.scratch_bytes));
        // The plan's clone step; Kubernetes delivers the credential as a mounted file.
        let delivery = match clone.credential {
            Some(_) => CredentialDelivery::File(format!("{CREDENTIAL_DIR}/token")),
            None => CredentialDelivery::None,
        };
        let mut env: Vec<EnvVar> = clone.environment(&delivery).iter().map(|(k, v)| env_var(k, v)).collect();
        env.extend(proxy_env(config));
        if config.egress_proxy.is_some() {
            env.push(env_var("ENCLAVE_CLONE_DONE_URL", enclave_egress::CLONE_DONE_URL));
        }
        let mut mounts = vec![mount("workspace", WORKSPACE), mount("clone-tmp", "/tmp")];
        if clone.credential.is_some() {
            volumes.push(Volume {
                name: "git-credential".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(names.clone_secret.clone()),
                    default_mode: Some(0o440),
                    optional: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "git-credential".to_owned(),
                mount_path: CREDENTIAL_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        init_containers.push(Container {
            name: CLONE_CONTAINER.to_owned(),
            image: Some(config.clone_image.clone()),
            image_pull_policy: Some("IfNotPresent".to_owned()),
            command: Some(vec!["sh".to_owned(), "-c".to_owned(), clone.script.clone(), "enclave-clone".to_owned()]),
            env: Some(env),
            volume_mounts: Some(mounts),
            resources: Some(clone_resources(&clone.resources)),
            security_context: Some(container_security(plan)),
            working_dir: Some(WORKSPACE.to_owned()),
            ..Default::default()
        });
    }
    PodSpec {
        restart_policy: Some("Never".to_owned()),
        runtime_class_name: match plan.containment.isolation {
            Isolation::Gvisor => Some(config.runtime_class.clone()),
            // Explicitly requested weaker isolation: the cluster's default runtime.
            Isolation::HostKernel => None,
        },
        service_account_name: Some(config.service_account.clone()),
        automount_service_account_token: Some(plan.containment.service_account_token),
        enable_service_links: Some(false),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        share_process_namespace: Some(false),
        // Sessions get no DNS (the proxy is reached by address): no cluster resolver.
        dns_policy: Some("None".to_owned()),
        dns_config: Some(k8s_openapi::api::core::v1::PodDNSConfig {
            nameservers: Some(vec!["127.0.0.1".to_owned()]),
            ..Default::default()
        }),
        termination_grace_period_seconds: Some(5),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(i64::from(plan.containment.run_as_user)),
            run_as_group: Some(i64::from(plan.containment.run_as_group)),
            fs_group: Some(i64::from(plan.containment.run_as_group)),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        }),
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        containers: vec![workload_container(plan, config)],
        volumes: Some(volumes),
        ..Default::default()
    }
}

fn workload_container(plan: &Plan, config: &KubeConfig) -> Container {
    let run = plan.run_phase();
    let (command, step_env) = match run.map(|r| &r.program) {
        Some(Program::Command { argv }) => (argv.clone(), Vec::new()),
        Some(Program::Steps { steps }) => {
            let script = steps_script(steps);
            let mut command = vec!["sh".to_owned(), "-c".to_owned(), script, "enclave-steps".to_owned()];
            command.extend(steps.iter().map(|s| s.name.clone()));
            let env = steps
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    let mut vars = vec![env_var(&format!("ENCLAVE_STEP_{i}_RUN"), &s.run)];
                    vars.push(env_var(&format!("ENCLAVE_STEP_{i}_ENV"), &step_env_lines(&s.env)));
                    vars
                })
                .collect();
            (command, env)
        }
        None => (vec!["true".to_owned()], Vec::new()),
    };
    let mut env: Vec<EnvVar> = run.map(|r| r.env.iter().map(|(k, v)| env_var(k, v)).collect()).unwrap_or_default();
    env.extend(step_env);
    if plan.containment.network == enclave_core::NetworkMode::ProxyOnly {
        env.extend(proxy_env(config));
    }
    let workdir = match run.map(|r| r.workdir.as_str()) {
        None | Some(".") => WORKSPACE.to_owned(),
        Some(dir) => format!("{WORKSPACE}/{dir}"),
    };
    Container {
        name: WORKLOAD_CONTAINER.to_owned(),
        image: run.map(|r| r.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(command),
        env: (!env.is_empty()).then_some(env),
        working_dir: Some(workdir),
        volume_mounts: Some(vec![mount("workspace", WORKSPACE), mount("tmp", "/tmp")]),
        resources: Some(resources(
            plan,
            plan.quotas.disk_bytes.saturating_mul(2).saturating_add(plan.quotas.log_bytes),
        )),
        security_context: Some(container_security(plan)),
        termination_message_path: Some(STEP_REPORT.to_owned()),
        termination_message_policy: Some("File".to_owned()),
        stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

/// Where the step driver writes one line per finished step (`step INDEX CODE MS
/// TIMED_OUT`): the container's termination message, which the API returns in the pod
/// status.
pub(crate) const STEP_REPORT: &str = "/dev/termination-log";

/// The step driver's function. A step runs in the background so a watcher can kill it
/// at its timeout; the driver then records the timeout and exits, and since it is the
/// container's first process every process the step left behind goes with it.
const STEP_FUNCTION: &str = r#"set -u
report=${ENCLAVE_STEP_REPORT:-/dev/termination-log}
enclave_step() {
  _i=$1; _t=$2; _start=$(date +%s)
  eval "_run=\${ENCLAVE_STEP_${_i}_RUN}; _env=\${ENCLAVE_STEP_${_i}_ENV}"
  _flag="/tmp/.enclave-step-$_i-timed-out"
  (
    while IFS= read -r _kv; do [ -n "$_kv" ] && export "$_kv"; done <<ENCLAVE_EOF
$_env
ENCLAVE_EOF
    exec sh -c "$_run"
  ) &
  _pid=$!
  _watch=
  if [ "$_t" -gt 0 ]; then
    ( sleep "$_t"; : > "$_flag"; kill -KILL "$_pid" 2>/dev/null ) &
    _watch=$!
  fi
  wait "$_pid"; _code=$?
  [ -n "$_watch" ] && kill "$_watch" 2>/dev/null
  _timed=0
  [ "$_code" -ne 0 ] && [ -e "$_flag" ] && _timed=1
  printf 'step %s %s %s %s\n' "$_i" "$_code" "$(( ($(date +%s) - _start) * 1000 ))" "$_timed" >> "$report" 2>/dev/null
  return "$_code"
}
"#;

/// A POSIX shell driver for steps: each runs with `sh -c` in order, with its own extra
/// environment (one `KEY=value` per line, applied with `export`) and its own timeout
/// (whole seconds, rounded up), and the first failure ends the container with that
/// step's exit code. Scripts travel in environment variables, never spliced into this
/// text; each finished step is reported in the termination message ([`STEP_REPORT`]).
fn steps_script(steps: &[enclave_core::StepPlan]) -> String {
    let mut script = String::from(STEP_FUNCTION);
    for (i, step) in steps.iter().enumerate() {
        let timeout_seconds = step.timeout_ms.map_or(0, |ms| ms.div_ceil(1_000));
        script.push_str(&format!("enclave_step {i} {timeout_seconds} || exit $?\n"));
    }
    script
}

fn step_env_lines(env: &BTreeMap<String, String>) -> String {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
}

fn proxy_env(config: &KubeConfig) -> Vec<EnvVar> {
    config
        .egress_proxy
        .iter()
        .flat_map(|p| {
            ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"].into_iter().map(|k| env_var(k, &p.url))
        })
        .collect()
}

fn container_security(plan: &Plan) -> SecurityContext {
    let c = &plan.containment;
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(i64::from(c.run_as_user)),
        run_as_group: Some(i64::from(c.run_as_group)),
        read_only_root_filesystem: Some(c.read_only_root_fs),
        allow_privilege_escalation: Some(!c.no_new_privileges),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: (!c.capabilities.is_empty()).then(|| c.capabilities.clone()),
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        proc_mount: Some("Default".to_owned()),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".to_owned(), ..Default::default() }
}

/// Requests equal to limits (Guaranteed QoS): cpu, memory and ephemeral storage.
/// The clone step's resources, from the plan (Kubernetes has no per-container pids
/// limit, so `pids` is not applied here).
fn clone_resources(r: &enclave_core::CloneResources) -> ResourceRequirements {
    let amounts = BTreeMap::from([
        ("cpu".to_owned(), Quantity(format!("{}m", r.cpu_millis))),
        ("memory".to_owned(), Quantity(r.memory_bytes.to_string())),
        ("ephemeral-storage".to_owned(), Quantity(r.scratch_bytes.to_string())),
    ]);
    ResourceRequirements { requests: Some(amounts.clone()), limits: Some(amounts), ..Default::default() }
}

fn resources(plan: &Plan, ephemeral_bytes: u64) -> ResourceRequirements {
    let q = &plan.quotas;
    let amounts = BTreeMap::from([
        ("cpu".to_owned(), Quantity(format!("{}m", q.cpu_millis))),
        ("memory".to_owned(), Quantity(q.memory_bytes.to_string())),
        ("ephemeral-storage".to_owned(), Quantity(ephemeral_bytes.to_string())),
    ]);
    ResourceRequirements { requests: Some(amounts.clone()), limits: Some(amounts), ..Default::default() }
}

fn empty_dir(name: &str, size_bytes: u64) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource { medium: None, size_limit: Some(Quantity(size_bytes.to_string())) }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.to_owned(), mount_path: path.to_owned(), read_only: Some(false), ..Default::default() }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.to_owned()), ..Default::default() }
}

#[cfg(test)]
mod tests {
    //! The shell scripts the pod runs, run here with the host's `sh` and `git` in a
    //! temporary directory, with exactly the command and environment of the container.

    use std::process::Command;

    use super::*;
    use crate::test_plan::plan;

    /// Runs a container's command and environment in `dir`; returns (exit code, stdout).
    fn execute(container: &Container, dir: &std::path::Path) -> (i32, String) {
        let command = container.command.clone().expect("command");
        let mut process = Command::new(&command[0]);
        process.args(&command[1..]).current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for var in container.env.iter().flatten() {
            process.env(&var.name, var.value.clone().unwrap_or_default());
        }
        let out = process.output().expect("run");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn steps_run_in_order_with_their_env_and_stop_at_the_first_failure() {
        let p = plan(
            "  env:\n    BASE: b\n  steps:\n    - name: one\n      run: echo \"one $BASE $X\"\n      env:\n        X: \"it's x\"\n    - name: two\n      run: echo \"two ${X:-unset}\"; exit 7\n    - name: three\n      run: echo three\n",
        );
        let dir = tempfile::tempdir().expect("dir");
        let mut container = workload_container(&p, &KubeConfig::default());
        let report = dir.path().join("report").display().to_string();
        container.env.get_or_insert_with(Vec::new).push(env_var("ENCLAVE_STEP_REPORT", &report));
        let (code, stdout) = execute(&container, dir.path());
        assert_eq!(code, 7, "{stdout}");
        assert_eq!(stdout, "one b it's x\ntwo unset\n", "step env does not leak into the next step; three never runs");
    }

    #[test]
    fn a_step_past_its_timeout_is_killed_reported_and_ends_the_run() {
        // The hanging step spins in its own shell (no child process), so nothing it
        // started outlives it here; in the pod, the driver's exit ends everything.
        let p = plan(
            "  steps:\n    - name: quick\n      run: echo quick\n    - name: hang\n      run: \"echo start; while :; do :; done; echo never\"\n      timeout: 1s\n    - name: after\n      run: echo after\n",
        );
        let dir = tempfile::tempdir().expect("dir");
        let report = dir.path().join("report");
        let mut container = workload_container(&p, &KubeConfig::default());
        container.env.get_or_insert_with(Vec::new).push(env_var("ENCLAVE_STEP_REPORT", &report.display().to_string()));
        let (code, stdout) = execute(&container, dir.path());
        assert_eq!(code, 137, "{stdout}");
        assert_eq!(stdout, "quick\nstart\n");
        let lines: Vec<Vec<String>> = std::fs::read_to_string(&report)
            .expect("report")
            .lines()
            .map(|l| l.split(' ').map(str::to_owned).collect())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!((lines[0][1].as_str(), lines[0][2].as_str(), lines[0][4].as_str()), ("0", "0", "0"));
        assert_eq!((lines[1][1].as_str(), lines[1][2].as_str(), lines[1][4].as_str()), ("1", "137", "1"));
    }

    /// The clone init container of a plan, with its credential file pointed at `token`
    /// and `$HOME` at a path that does not exist yet (the script creates it, as in the
    /// pod's fresh `/tmp`). The proxy variables are dropped: these runs use no network.
    fn clone_container_for(p: &Plan, token: &std::path::Path, home: &std::path::Path) -> Container {
        let mut clone = pod_spec(p, &SessionId::new("ses-1").expect("id"), &KubeConfig::default())
            .init_containers
            .and_then(|c| c.into_iter().next())
            .expect("clone container");
        clone.env = clone.env.map(|env| {
            env.into_iter()
                .filter(|e| !e.name.to_lowercase().ends_with("_proxy") && e.name != "ENCLAVE_CLONE_DONE_URL")
                .map(|mut e| {
                    match e.name.as_str() {
                        "HOME" => e.value = Some(home.display().to_string()),
                        "ENCLAVE_GIT_CREDENTIAL" => e.value = Some(format!("file:{}", token.display())),
                        _ => {}
                    }
                    e
                })
                .collect()
        });
        clone
    }

    #[test]
    fn the_init_container_runs_the_plans_one_clone_step() {
        let p = plan(
            "  repo:\n    url: https://git.example.com/team/app.git\n    credential: repo-token\n  command: [make]\n",
        );
        let clone_phase = p.clone_phase().expect("clone");
        let clone = pod_spec(&p, &SessionId::new("ses-1").expect("id"), &KubeConfig::default())
            .init_containers
            .and_then(|c| c.into_iter().next())
            .expect("clone container");
        assert_eq!(clone.command.as_ref().expect("command")[2], clone_phase.script, "the same script as Docker's");
        let env: Vec<(String, String)> =
            clone.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
        let delivery = CredentialDelivery::File(format!("{CREDENTIAL_DIR}/token"));
        for pair in clone_phase.environment(&delivery) {
            assert!(env.contains(&pair), "{pair:?} missing from {env:?}");
        }
        let limits = clone.resources.and_then(|r| r.limits).expect("limits");
        assert_eq!(limits["memory"], Quantity(clone_phase.resources.memory_bytes.to_string()));
    }

    /// A workspace someone else wrote first: hooks and a `.git/config` that would run
    /// code and print the credential if git used them.
    fn plant(workspace: &std::path::Path, marker: &std::path::Path) {
        let hooks = workspace.join(".git/hooks");
        std::fs::create_dir_all(&hooks).expect("hooks");
        let payload = format!("#!/bin/sh\nenv > {}\n", marker.display());
        for hook in ["post-checkout", "reference-transaction", "pre-fetch"] {
            std::fs::write(hooks.join(hook), &payload).expect("hook");
            std::process::Command::new("chmod").arg("+x").arg(hooks.join(hook)).status().expect("chmod");
        }
        std::fs::write(
            workspace.join(".git/config"),
            format!("[core]\n\tfsmonitor = {}\n\thooksPath = .git/hooks\n", hooks.join("post-checkout").display()),
        )
        .expect("config");
    }

    #[test]
    fn the_clone_script_refuses_a_workspace_it_did_not_write() {
        let dir = tempfile::tempdir().expect("dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "ghp_kube_attack").expect("token");
        let (workspace, marker) = (dir.path().join("workspace"), dir.path().join("leaked"));
        plant(&workspace, &marker);
        let p = plan(
            "  repo:\n    url: https://git.example.com/team/app.git\n    credential: repo-token\n  command: [make]\n",
        );
        let clone = clone_container_for(&p, &token, &dir.path().join("home"));
        let (code, _) = execute(&clone, &workspace);
        assert_eq!(code, 2, "refused before git ran");
        assert!(!marker.exists(), "no planted hook or fsmonitor ran");
    }

    #[test]
    fn the_clone_script_admits_https_only() {
        // A local origin reachable without any network: file:// and ext:: transports must
        // be refused, whatever the URL says (an ext:: URL would run a command).
        let origin = tempfile::tempdir().expect("origin");
        let git = |dir: &std::path::Path, args: &[&str]| {
            let ok = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"])
                .args(args)
                .current_dir(dir)
                .output()
                .expect("git")
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(origin.path(), &["init", "-q", "."]);
        std::fs::write(origin.path().join("README"), "v1\n").expect("write");
        git(origin.path(), &["add", "README"]);
        git(origin.path(), &["commit", "-qm", "one"]);
        let dir = tempfile::tempdir().expect("dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "ghp_kube_attack").expect("token");
        let marker = dir.path().join("ext-ran");
        let p = plan(
            "  repo:\n    url: https://git.example.com/team/app.git\n    credential: repo-token\n  command: [make]\n",
        );
        for (i, url) in
            [format!("file://{}", origin.path().display()), format!("ext::sh -c touch% {}", marker.display())]
                .iter()
                .enumerate()
        {
            let workspace = dir.path().join(format!("workspace-{i}"));
            std::fs::create_dir(&workspace).expect("workspace");
            let mut clone = clone_container_for(&p, &token, &dir.path().join(format!("home-{i}")));
            for var in clone.env.iter_mut().flatten() {
                if var.name == "ENCLAVE_REPO_URL" {
                    var.value = Some(url.clone());
                }
            }
            let (code, _) = execute(&clone, &workspace);
            assert_ne!(code, 0, "{url} refused");
            assert!(!workspace.join("README").exists(), "{url}: nothing fetched");
        }
        assert!(!marker.exists(), "the ext:: command never ran");
    }
}
