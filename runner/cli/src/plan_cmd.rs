//! `enclave plan`: the plan as readable text, JSON, or the Kubernetes objects.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use enclave_core::{AddressClass, Isolation, NetworkMode, Phase, Plan, Program};
use enclave_spec::{ByteSize, DurationMs, EgressMode, Millicores};

use crate::shared_args::IsolationArg;
use crate::{exit, spec_input};

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The spec file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Output format: `text`, `json` (the plan document), or `k8s` (the Kubernetes
    /// objects the kube backend creates, as multi-document YAML, without any secret).
    #[arg(long, short, value_enum, default_value_t = PlanFormat::Text)]
    output: PlanFormat,
    #[command(flatten)]
    isolation: IsolationArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
    K8s,
}

/// `enclave plan`.
pub(crate) fn plan_command(args: &PlanArgs) -> u8 {
    let plan = match spec_input::load_plan(Some(&args.file), &args.isolation.policy()) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    match args.output {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan).unwrap_or_default()),
        PlanFormat::Text => print!("{}", render(&plan)),
        PlanFormat::K8s => match enclave_kube::render_plan(&plan, &enclave_kube::KubeConfig::default()) {
            Ok(yaml) => print!("{yaml}"),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        },
    }
    exit::OK
}

/// The readable plan.
pub(crate) fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "plan for session {:?}  ({})", plan.name, plan.digest);
    for warning in &plan.warnings {
        let _ = writeln!(w, "WARNING: {warning}");
    }
    containment(w, plan);
    phases(w, plan);
    egress(w, plan);
    let q = &plan.quotas;
    let _ = writeln!(w, "\nquotas");
    let _ = writeln!(
        w,
        "  cpu {}   memory {} (no swap)   pids {}",
        Millicores(q.cpu_millis),
        ByteSize(q.memory_bytes),
        q.pids
    );
    let _ = writeln!(
        w,
        "  deadline {}   disk {} (workspace and /tmp each)   logs {}",
        DurationMs(q.deadline_ms),
        ByteSize(q.disk_bytes),
        ByteSize(q.log_bytes)
    );
    if !plan.artifacts.is_empty() {
        let _ = writeln!(
            w,
            "\nartifacts copied out: {} (at most {}; links leaving the workspace are dropped)",
            plan.artifacts.join(", "),
            ByteSize(plan.artifact_bytes_max)
        );
    }
    out
}

fn containment(w: &mut String, plan: &Plan) {
    let c = &plan.containment;
    let _ = writeln!(w, "\ncontainment");
    let kernel = match c.isolation {
        Isolation::Gvisor => "gvisor (runsc user-space kernel)",
        Isolation::HostKernel => "host-kernel (WEAKER: no gVisor; explicitly requested)",
    };
    let _ = writeln!(w, "  kernel        {kernel}");
    let _ = writeln!(
        w,
        "  user          {}:{}, capabilities: {}, no-new-privileges: {}",
        c.run_as_user,
        c.run_as_group,
        if c.capabilities.is_empty() { "all dropped".to_owned() } else { c.capabilities.join(",") },
        c.no_new_privileges
    );
    let _ = writeln!(
        w,
        "  filesystem    root {}, host mounts: {}",
        if c.read_only_root_fs { "read-only" } else { "writable" },
        if c.host_mounts.is_empty() { "none".to_owned() } else { c.host_mounts.join(",") }
    );
    let network = match c.network {
        NetworkMode::None => "none (no interface but loopback)",
        NetworkMode::ProxyOnly => "egress proxy only (the proxy enforces the rules below)",
    };
    let _ = writeln!(w, "  network       {network}");
    let _ = writeln!(
        w,
        "  credentials   service-account token: {}",
        if c.service_account_token { "mounted" } else { "none" }
    );
}

fn phases(w: &mut String, plan: &Plan) {
    let _ = writeln!(w, "\nphases");
    for (index, phase) in plan.phases.iter().enumerate() {
        match phase {
            Phase::Clone(clone) => {
                let reference = clone.git_ref.as_deref().unwrap_or("default branch");
                let _ = writeln!(w, "  {}. clone  {} @ {reference}", index + 1, clone.url);
                match &clone.credential {
                    Some(secret) => {
                        let _ = writeln!(w, "           credential: secret {secret:?}, seen by the clone step only");
                    }
                    None => {
                        let _ = writeln!(w, "           credential: none (public repository)");
                    }
                }
                let _ = writeln!(
                    w,
                    "           reach: {}:{} only; revoked before the workload starts",
                    clone.host, clone.port
                );
            }
            Phase::Run(run) => {
                let _ = writeln!(w, "  {}. run    image {}, workdir {}", index + 1, run.image, run.workdir);
                match &run.program {
                    Program::Command { argv } => {
                        let _ = writeln!(w, "           command: {}", shell_words(argv));
                    }
                    Program::Steps { steps } => {
                        for step in steps {
                            let timeout =
                                step.timeout_ms.map(|t| format!(" (timeout {})", DurationMs(t))).unwrap_or_default();
                            let _ = writeln!(w, "           step {:?}{timeout}: {}", step.name, first_line(&step.run));
                        }
                    }
                }
                if !run.env.is_empty() {
                    let names: Vec<&str> = run.env.keys().map(String::as_str).collect();
                    let _ = writeln!(w, "           env: {}", names.join(", "));
                }
            }
        }
    }
}

fn egress(w: &mut String, plan: &Plan) {
    let e = &plan.egress;
    match e.mode {
        EgressMode::Deny => {
            let _ = writeln!(w, "\negress: deny (no network at all)");
            return;
        }
        EgressMode::Allowlist => {
            let _ = writeln!(w, "\negress: allowlist (everything not listed is denied and audited)");
        }
    }
    for rule in &e.rules {
        let ports: Vec<String> = rule.ports.iter().map(u16::to_string).collect();
        let _ = writeln!(w, "  {:<9} {} ports {}", rule.id, rule.target, ports.join(","));
    }
    for b in &plan.bindings {
        let methods = b
            .methods
            .as_ref()
            .map_or("any method".to_owned(), |ms| ms.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
        let paths = b
            .paths
            .as_ref()
            .map_or("any path".to_owned(), |ps| ps.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>().join(","));
        let _ = writeln!(
            w,
            "  binding {:?}: http://{}/ -> https://{}:{}  header {} from secret {:?} (injected by the proxy)",
            b.name, b.host, b.host, b.port, b.header, b.secret
        );
        let _ = writeln!(w, "           scope: {methods}; {paths}");
    }
    let _ = writeln!(w, "  implicit denies (open only where a cidr rule inside the range names them):");
    for deny in &e.implicit_denies {
        let note = if deny.class == AddressClass::Metadata {
            "never reachable".to_owned()
        } else if deny.opened_by.is_empty() {
            "denied".to_owned()
        } else {
            format!(
                "partly opened by {}",
                deny.opened_by.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )
        };
        let _ = writeln!(w, "    {:<20} {:<18} {note}", deny.cidr.to_string(), deny.class.to_string());
    }
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
                a.clone()
            } else {
                format!("{a:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_line(script: &str) -> String {
    let mut lines = script.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("").trim().to_owned();
    if lines.next().is_some() { format!("{first} ...") } else { first }
}
