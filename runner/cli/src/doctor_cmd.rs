//! `enclave doctor`: what this host can run, and the command that fixes each gap.

use std::sync::Arc;

use enclave_core::WallClock;
use enclave_core::{
    Capabilities, NoSecrets, Orchestrator, Policy, SessionEvent, SessionId, SessionRun, Support, TimedEvent,
};
use enclave_docker::{DockerBackend, DockerConfig};
use futures::FutureExt as _;

use crate::exit;

const SETUP: &str = "sudo scripts/setup-docker.sh";

struct Check {
    ok: bool,
    what: String,
    fix: Option<String>,
}

fn print(checks: &[Check]) {
    for c in checks {
        println!("  [{}] {}", if c.ok { " ok " } else { "FAIL" }, c.what);
        if let Some(fix) = &c.fix {
            println!("         fix: {fix}");
        }
    }
}

/// Runs `dmesg` as a real session on the Docker backend: gVisor announces itself there.
async fn gvisor_probe(backend: Arc<DockerBackend>, image: &str) -> Result<bool, String> {
    let yaml = format!(
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: doctor-probe\nspec:\n  image: {image}\n  command: [dmesg]\n  quotas:\n    deadline: 30s\n"
    );
    let parsed = enclave_spec::parse("doctor-probe", yaml.as_bytes()).map_err(|e| e.to_string())?;
    let plan = enclave_core::plan(&parsed.spec, &Policy::default()).map_err(|e| e.to_string())?;
    let session = SessionId::new(format!("ses-doctor-{}", std::process::id())).map_err(|e| e.to_string())?;
    let orchestrator = Orchestrator::new(backend, Arc::new(WallClock), Arc::new(NoSecrets));
    let mut audit = enclave_core::MemoryAuditSink::default();
    let mut saw_gvisor = false;
    let mut listener = |e: &TimedEvent| {
        if let SessionEvent::Log { line, .. } = &e.event {
            saw_gvisor |= line.contains("gVisor");
        }
    };
    let result = orchestrator
        .run(SessionRun {
            session,
            plan: &plan,
            audit: &mut audit,
            listener: &mut listener,
            cancel: futures::future::pending().boxed(),
            artifacts: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    match result.status {
        enclave_core::SessionStatus::Succeeded => Ok(saw_gvisor),
        other => Err(other.to_string()),
    }
}

fn support(s: Support) -> &'static str {
    match s {
        Support::Enforced => "enforced",
        Support::Configured => "configured (not yet proven on a real cluster)",
        Support::Modelled => "modelled",
        Support::NotDerivable => "not derivable",
        Support::NotYet => "not yet",
    }
}

fn print_capabilities(name: &str, c: &Capabilities) {
    println!("  {name}: executes code: {}", if c.executes_code { "yes" } else { "no (models only)" });
    let rows = [
        ("gvisor", c.gvisor),
        ("hardened container", c.hardened_container),
        ("egress deny", c.egress_deny),
        ("egress allowlist", c.egress_allowlist),
        ("bindings", c.bindings),
        ("deadline", c.deadline),
        ("oom_killed", c.memory_kill_reason),
        ("pids_exceeded", c.pids_kill_reason),
        ("disk_exceeded", c.disk_kill_reason),
        ("log limit", c.log_limit),
        ("clone step", c.clone),
        ("artifacts", c.artifacts),
    ];
    for (what, s) in rows {
        println!("    {what:<20} {}", support(s));
    }
}

/// `enclave doctor`.
pub(crate) fn doctor() -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ERRORED;
        }
    };
    let image = Policy::default().default_image;
    println!("docker backend");
    let mut checks = Vec::new();
    let backend = match runtime.block_on(crate::backends::connect_docker(DockerConfig::default())) {
        Ok(backend) => Arc::new(backend),
        Err(e) => {
            checks.push(Check { ok: false, what: format!("docker daemon: {e}"), fix: Some(SETUP.into()) });
            print(&checks);
            finish(&checks);
            return exit::FAILED;
        }
    };
    let (version, api) = runtime.block_on(backend.server_version()).unwrap_or_default();
    checks.push(Check {
        ok: true,
        what: format!("docker daemon {version}, API {api} (need {} or newer)", enclave_docker::MIN_API),
        fix: None,
    });
    let registered = backend.runtimes().iter().any(|r| r == backend.gvisor_runtime());
    checks.push(Check {
        ok: registered,
        what: format!("gVisor runtime {:?} registered with dockerd", backend.gvisor_runtime()),
        fix: (!registered).then(|| SETUP.to_owned()),
    });
    let has_image = runtime.block_on(backend.has_image(&image));
    checks.push(Check {
        ok: has_image,
        what: format!("base image {image} present (built locally; no registry is used)"),
        fix: (!has_image).then(|| SETUP.to_owned()),
    });
    let config = DockerConfig::default();
    let netns = backend.runtimes().contains(&config.gvisor_netns_runtime);
    checks.push(Check {
        ok: netns,
        what: format!(
            "gVisor runtime {:?} registered (clone steps and allowlist sessions)",
            config.gvisor_netns_runtime
        ),
        fix: (!netns).then(|| SETUP.to_owned()),
    });
    let has_git = runtime.block_on(backend.has_image(&config.clone_image));
    checks.push(Check {
        ok: has_git,
        what: format!("clone image {} present (git for the clone step)", config.clone_image),
        fix: (!has_git).then(|| SETUP.to_owned()),
    });
    let firewall = ["iptables", "nsenter"]
        .iter()
        .all(|tool| std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()));
    checks.push(Check {
        ok: firewall,
        what: "iptables and nsenter available (per-session network guards)".to_owned(),
        fix: (!firewall).then(|| "apt-get install iptables util-linux".to_owned()),
    });
    if registered && has_image {
        let probe = runtime.block_on(gvisor_probe(backend.clone(), &image));
        let (ok, what) = match probe {
            Ok(true) => (true, "a probe session ran under gVisor and saw its kernel".to_owned()),
            Ok(false) => (false, "a probe session ran but did not see gVisor's kernel".to_owned()),
            Err(e) => (false, format!("a probe session failed: {e}")),
        };
        checks.push(Check { ok, what, fix: (!ok).then(|| format!("{SETUP}; then check dockerd's log")) });
    }
    print(&checks);
    finish(&checks);
    println!("\nwhat each backend enforces");
    print_capabilities("sim", &enclave_sim::capabilities());
    print_capabilities("docker", &enclave_docker::capabilities());
    print_capabilities("kube (run by `enclave serve --backend kube`)", &enclave_kube::capabilities(true));
    if checks.iter().all(|c| c.ok) { exit::OK } else { exit::FAILED }
}

fn finish(checks: &[Check]) {
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        println!("  => `enclave run --backend docker` can run sessions here");
    } else {
        println!("  => {failed} problem(s): the docker backend cannot run sessions until fixed");
    }
}
