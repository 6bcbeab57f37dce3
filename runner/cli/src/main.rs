//! The `enclave` command: validate, plan and run session specs; verify audit chains.
//!
//! Main design decision: the binary is a thin reporter. Parsing, planning, orchestration
//! and status derivation live in the library crates; this crate only reads files,
//! picks a backend, prints events and results, and maps outcomes to exit codes.
//!
//! Each command's module (`<name>_cmd.rs`) owns its clap arguments; this file holds only
//! the command list and the dispatch.

mod audit_cmd;
mod backends;
mod doctor_cmd;
mod egress_proxy_cmd;
mod plan_cmd;
mod remote_cmd;
mod run_cmd;
mod serve_cmd;
mod shared_args;
mod spec_input;
mod validate_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, documented in `--help`.
mod exit {
    pub(crate) const OK: u8 = 0;
    pub(crate) const FAILED: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const KILLED: u8 = 3;
    pub(crate) const ERRORED: u8 = 4;
}

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 the workload failed (non-zero exit) or the audit chain is broken;
2 invalid input (bad spec, plan refused, bad arguments); 3 the session was killed
(quota, deadline, cancel, lost sandbox); 4 Enclave itself could not run the session.

Start with:
  enclave run                              run the built-in example on the simulator
  enclave validate examples/sessions/hello.yaml
  enclave plan examples/sessions/binding-github-api.yaml";

/// Run untrusted code in ephemeral, contained sessions described by a YAML spec.
#[derive(Debug, Parser)]
#[command(name = "enclave", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check session specs and report every problem with file:line:column.
    ///
    /// Structural problems (unknown keys, wrong types, bad values) stop at the first
    /// one; cross-field problems are all reported. Each valid spec is then planned
    /// against the default policy, so a quota over the server's maximum is reported
    /// here too. Warnings (e.g. an env value that looks like a token) do not fail
    /// validation.
    Validate(validate_cmd::ValidateArgs),
    /// Show what a session would do: phases, containment, reachable destinations,
    /// bindings and quotas, with defaults applied.
    Plan(plan_cmd::PlanArgs),
    /// Run a session and stream its events; print a summary at the end.
    ///
    /// Without FILE, runs a built-in example. Records go to an audit chain (JSONL)
    /// that `enclave audit verify` checks. Ctrl-C cancels the session (it is still
    /// torn down and audited).
    Run(run_cmd::RunArgs),
    /// Verify or show an audit chain written by `enclave run`.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Print the JSON Schema of session specs (also in schema/session.schema.json).
    Schema,
    /// Check this host for the Docker backend (daemon, API version, gVisor runtime,
    /// base image, a real probe session) and print what each backend enforces.
    ///
    /// Every failed check names the command that fixes it. Exit code 1 when a check
    /// fails.
    Doctor,
    /// Run the Enclave service: the HTTP API (`/v1`), with sessions stored in SQLite.
    ///
    /// Settings come from the config file (TOML), then the environment, then flags.
    /// `ENCLAVE_SECRET_KEY` (or `secret_key_file`) enables tenant secrets;
    /// `ENCLAVE_ADMIN_TOKEN` (or `admin_token_file`) enables the admin endpoints.
    /// Sessions left running by a previous server are ended as `infra_lost` at start.
    Serve(serve_cmd::ServeArgs),
    /// Run the egress proxy of a Kubernetes cluster's sessions (the
    /// `enclave-egress-proxy` Deployment in deploy/).
    ///
    /// Every session pod's egress (allowlist, bindings, the clone step) comes here. A
    /// connection's session is the one whose live pod has the connection's source
    /// address as the Kubernetes API reports it, never anything the connection says.
    /// The session's rules and binding secrets come from the relay of the server that
    /// runs it (`enclave serve --backend kube --relay-listen ...`), and every decision
    /// goes back through the relay before anything passes: what cannot be recorded is
    /// denied. Needs in-cluster (or kubeconfig) access to get/list/watch pods in the
    /// sessions namespace.
    EgressProxy(egress_proxy_cmd::EgressProxyArgs),
    /// Manage tenants (on the local store).
    #[command(subcommand)]
    Tenant(serve_cmd::TenantCommand),
    /// Manage a tenant's secrets (on the local store; values are sealed at rest).
    #[command(subcommand)]
    Secret(serve_cmd::SecretCommand),
    /// Show a server session's output; `-f` follows it to the end.
    Logs(remote_cmd::LogsArgs),
    /// Cancel a server session.
    Cancel(remote_cmd::CancelArgs),
    /// List your sessions on a server, newest first.
    Sessions(remote_cmd::SessionsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate(args) => validate_cmd::validate(&args),
        Command::Plan(args) => plan_cmd::plan_command(&args),
        Command::Run(args) if args.server.is_some() => {
            let remote = remote_cmd::RemoteArgs { server: args.server.clone(), token: args.token.clone() };
            remote_cmd::run(&remote, args.file.as_deref(), args.output)
        }
        Command::Run(args) => run_cmd::run_command(&args),
        Command::Serve(args) => serve_cmd::serve(&args),
        Command::EgressProxy(args) => egress_proxy_cmd::egress_proxy(&args),
        Command::Tenant(command) => serve_cmd::tenant(&command),
        Command::Secret(command) => serve_cmd::secret(&command),
        Command::Logs(args) => remote_cmd::logs(&args),
        Command::Cancel(args) => remote_cmd::cancel(&args),
        Command::Sessions(args) => remote_cmd::sessions(&args),
        Command::Audit(command) => audit_cmd::audit(&command),
        Command::Doctor => doctor_cmd::doctor(),
        Command::Schema => {
            print!("{}", enclave_spec::session_schema_json());
            exit::OK
        }
    };
    ExitCode::from(code)
}
