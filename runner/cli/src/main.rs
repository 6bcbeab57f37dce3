//! The `enclave` command: validate, plan and run session specs; verify audit chains.
//!
//! Main design decision: the binary is a thin reporter. Parsing, planning, orchestration
//! and status derivation live in the library crates; this crate only reads files,
//! picks a backend, prints events and results, and maps outcomes to exit codes.

mod audit_cmd;
mod doctor;
mod egress_proxy_cmd;
mod plan_text;
mod remote;
mod run_cmd;
mod serve_cmd;
mod spec_input;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Validate(ValidateArgs),
    /// Show what a session would do: phases, containment, reachable destinations,
    /// bindings and quotas, with defaults applied.
    Plan(PlanArgs),
    /// Run a session and stream its events; print a summary at the end.
    ///
    /// Without FILE, runs a built-in example. Records go to an audit chain (JSONL)
    /// that `enclave audit verify` checks. Ctrl-C cancels the session (it is still
    /// torn down and audited).
    Run(RunArgs),
    /// Verify or show an audit chain written by `enclave run`.
    #[command(subcommand)]
    Audit(AuditCommand),
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
    Serve(ServeArgs),
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
    EgressProxy(EgressProxyArgs),
    /// Manage tenants (on the local store).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's secrets (on the local store; values are sealed at rest).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Show a server session's output; `-f` follows it to the end.
    Logs {
        /// Session id.
        id: String,
        /// Follow the session's events until it ends.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Cancel a server session.
    Cancel {
        /// Session id.
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List your sessions on a server, newest first.
    Sessions {
        /// Only sessions in this state (pending, running, succeeded, failed, killed, ...).
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Where the server is and who you are.
#[derive(Debug, Args)]
struct RemoteArgs {
    /// The server's URL (http on loopback only: this client has no TLS).
    #[arg(long, value_name = "URL", env = "ENCLAVE_SERVER")]
    server: Option<String>,
    /// Bearer token of your tenant (prefer the environment variable).
    #[arg(long, env = "ENCLAVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Where the server's store is.
#[derive(Debug, Args)]
struct StoreArgs {
    /// Config file (TOML); every field is optional.
    #[arg(long, value_name = "FILE", env = "ENCLAVE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory holding the SQLite store.
    #[arg(long, value_name = "DIR", env = "ENCLAVE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// File with the secrets key (`ENCLAVE_SECRET_KEY` takes precedence).
    #[arg(long, value_name = "FILE", env = "ENCLAVE_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (default 127.0.0.1:8470).
    #[arg(long, value_name = "ADDR", env = "ENCLAVE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Backend: `sim`, `docker`, or `kube` (the cluster of the in-cluster or kubeconfig
    /// configuration, set up with deploy/).
    #[arg(long, env = "ENCLAVE_BACKEND")]
    backend: Option<String>,
    /// With `--backend kube`: where the egress proxy Deployment reaches this server for
    /// sessions' grants and to record its decisions (e.g. 0.0.0.0:8081). Without it,
    /// sessions that need the proxy (allowlist, bindings, a repository) are refused.
    #[arg(long, value_name = "ADDR", env = "ENCLAVE_RELAY_LISTEN")]
    relay_listen: Option<SocketAddr>,
    /// File holding the relay's bearer token, shared with the proxy
    /// (`ENCLAVE_RELAY_TOKEN` takes precedence).
    #[arg(long, value_name = "FILE", env = "ENCLAVE_RELAY_TOKEN_FILE")]
    relay_token_file: Option<PathBuf>,
    /// The relay's TLS certificate chain (PEM). With `--relay-tls-key`, the relay speaks
    /// https only; without both it is plain http (binding secret values cross it, so
    /// keep it on a network only the proxy reaches).
    #[arg(long, value_name = "FILE", env = "ENCLAVE_RELAY_TLS_CERT", requires = "relay_tls_key")]
    relay_tls_cert: Option<PathBuf>,
    /// The relay's TLS private key (PEM).
    #[arg(long, value_name = "FILE", env = "ENCLAVE_RELAY_TLS_KEY", requires = "relay_tls_cert")]
    relay_tls_key: Option<PathBuf>,
    /// On the simulator, let modelled time pass at wall-clock pace (so sessions can be
    /// watched and cancelled).
    #[arg(long, env = "ENCLAVE_SIM_REAL_TIME")]
    real_time: bool,
    /// Requests per second per tenant.
    #[arg(long, env = "ENCLAVE_REQUESTS_PER_SECOND")]
    requests_per_second: Option<u32>,
    /// Longest deadline a spec may ask for, in milliseconds.
    #[arg(long, env = "ENCLAVE_MAX_DEADLINE_MS")]
    max_deadline_ms: Option<u64>,
}

#[derive(Debug, Args)]
struct EgressProxyArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:3128", env = "ENCLAVE_PROXY_LISTEN")]
    listen: SocketAddr,
    /// Namespace of the session pods.
    #[arg(long, value_name = "NAMESPACE", default_value = "enclave-sessions")]
    sessions_namespace: String,
    /// The server's relay (`https://HOST:PORT`, or `http://` for a relay without TLS).
    #[arg(long, value_name = "URL", env = "ENCLAVE_RELAY_URL")]
    relay: String,
    /// The CA (PEM) that signed the relay's certificate; the only root trusted for it.
    #[arg(long, value_name = "FILE", env = "ENCLAVE_RELAY_CA")]
    relay_ca: Option<PathBuf>,
    /// File holding the relay's bearer token (`ENCLAVE_RELAY_TOKEN` takes precedence).
    #[arg(long, value_name = "FILE", env = "ENCLAVE_RELAY_TOKEN_FILE")]
    relay_token_file: Option<PathBuf>,
    /// One of the proxy's own addresses (its pod IP, its Service's cluster IP): never
    /// a destination, whatever a rule says. Repeatable.
    #[arg(long = "self-address", value_name = "IP")]
    self_addresses: Vec<std::net::IpAddr>,
    /// A private network (CIDR) the clone step may reach when the repository host
    /// resolves into it (an internal git server); never the workload, never the
    /// metadata address. Repeatable.
    #[arg(long = "trust-clone-network", value_name = "CIDR", value_delimiter = ',')]
    trusted_clone_networks: Vec<ipnet::IpNet>,
    /// Extra CA certificates (PEM file) trusted for binding upstreams.
    #[arg(long, value_name = "FILE")]
    extra_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its bearer token (shown once; only a hash is kept).
    Create {
        /// Tenant name: lowercase letters, digits and '-'.
        name: String,
        /// Make the token expire after this many days.
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Set a tenant's secret; the value is read from stdin.
    Set {
        /// Secret name, as specs refer to it.
        name: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Spec files to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    output: Format,
}

#[derive(Debug, Args)]
struct PlanArgs {
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

#[derive(Debug, Args)]
struct RunArgs {
    /// The spec file; omit to run the built-in example (examples/sessions/hello.yaml).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Where the session runs. `sim` models the spec's `simulate` block and executes
    /// nothing; its results are marked simulated.
    #[arg(long, short, value_enum, default_value_t = BackendKind::Sim)]
    backend: BackendKind,
    /// Output: `text` streams a readable timeline, `json` prints the result document,
    /// `jsonl` streams every event as a JSON line (the last one holds the result).
    #[arg(long, short, value_enum, default_value_t = RunFormat::Text)]
    output: RunFormat,
    /// Directory for the session's audit chain (`<id>.audit.jsonl`) and result
    /// (`<id>.result.json`).
    #[arg(long, value_name = "DIR", default_value = ".enclave/sessions", env = "ENCLAVE_SESSIONS_DIR")]
    sessions_dir: PathBuf,
    /// Where a secret's value comes from, as NAME=ENV_VAR: the value of environment
    /// variable ENV_VAR (of this process) for the secret NAME that the spec's
    /// `repo.credential` or a binding names. Values go only to the clone step and the
    /// egress proxy, never into the sandbox, and are redacted from all output.
    #[arg(long = "secret", value_name = "NAME=ENV_VAR")]
    secrets: Vec<String>,
    #[command(flatten)]
    docker: DockerArgs,
    #[command(flatten)]
    isolation: IsolationArg,
    /// Run on an Enclave server instead of locally (http on loopback only); output is
    /// the same. Ctrl-C cancels the session on the server.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Bearer token for `--server` (prefer the environment variable).
    #[arg(long, env = "ENCLAVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Operator settings of the Docker backend.
#[derive(Debug, Args)]
struct DockerArgs {
    /// Docker: a private network (CIDR) that the clone step may reach when the
    /// repository host resolves into it (an internal git server). Never opens it to
    /// the workload, and never opens the metadata address. Repeatable.
    #[arg(
        long = "trust-clone-network",
        value_name = "CIDR",
        env = "ENCLAVE_TRUST_CLONE_NETWORKS",
        value_delimiter = ','
    )]
    trusted_clone_networks: Vec<ipnet::IpNet>,
    /// Docker: resolve NAME to IP in the egress proxy without DNS (an internal host).
    /// Repeatable.
    #[arg(long = "static-host", value_name = "NAME=IP")]
    static_hosts: Vec<String>,
    /// Docker: extra CA certificates (PEM file) trusted by the clone step and by
    /// binding upstreams, for an internal git server or API.
    #[arg(long, value_name = "FILE", env = "ENCLAVE_EXTRA_CA")]
    extra_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct IsolationArg {
    /// Kernel isolation. `gvisor` is the default and the only secure choice;
    /// `host-kernel` must be asked for explicitly, is printed as a warning and is
    /// recorded in the plan, the result and the audit.
    #[arg(long, value_enum, default_value_t = IsolationChoice::Gvisor)]
    isolation: IsolationChoice,
    /// A private or other special range (CIDR; never metadata, loopback or link-local)
    /// that the spec's `cidr` rules may name, e.g. an internal API on 10.20.0.0/16. A
    /// rule naming a special range not listed here is refused when the spec is planned.
    /// Repeatable.
    #[arg(long = "allow-network", value_name = "CIDR", value_delimiter = ',')]
    allow_networks: Vec<ipnet::IpNet>,
    /// UNSAFE, for tests and local development only: a loopback range on this host
    /// (inside 127.0.0.0/8 or ::1) that the session may reach where a `cidr` rule names
    /// it, and that the clone may reach. Printed as a warning and recorded in the plan.
    /// Repeatable.
    #[arg(long = "unsafe-host-loopback", value_name = "CIDR", value_delimiter = ',')]
    unsafe_host_loopback: Vec<ipnet::IpNet>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain and name the first record that does not hold.
    Verify {
        /// The audit file (JSONL).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also require the chain to end at this digest (from the session result), which
        /// detects records cut off the end.
        #[arg(long, value_name = "SHA256")]
        digest: Option<String>,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Print the chain as a timeline.
    Show {
        /// The audit file (JSONL).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
    K8s,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RunFormat {
    Text,
    Json,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// The simulator: models behaviour, never executes code.
    Sim,
    /// Docker with gVisor (runsc) on this host: executes the workload, contained.
    Docker,
    /// A Kubernetes cluster set up with deploy/ (a Job per session under the gVisor
    /// RuntimeClass), from the in-cluster or kubeconfig configuration.
    Kube,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IsolationChoice {
    /// gVisor (runsc) user-space kernel.
    Gvisor,
    /// The host kernel (weaker; explicit opt-in).
    HostKernel,
}

impl IsolationArg {
    fn policy(&self) -> enclave_core::Policy {
        let mut policy = enclave_core::Policy::default();
        policy.allow_networks.clone_from(&self.allow_networks);
        policy.host_loopback.clone_from(&self.unsafe_host_loopback);
        if self.isolation == IsolationChoice::HostKernel {
            policy.isolation = enclave_core::Isolation::HostKernel;
            policy.permit_weaker_isolation = true;
        }
        policy
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate(args) => spec_input::validate(&args.files, args.output == Format::Json),
        Command::Plan(args) => plan_text::plan_command(&args.file, args.output, &args.isolation.policy()),
        Command::Run(args) if args.server.is_some() => {
            let remote = RemoteArgs { server: args.server.clone(), token: args.token.clone() };
            remote::run(&remote, args.file.as_deref(), args.output)
        }
        Command::Run(args) => run_cmd::run_command(&args),
        Command::Serve(args) => serve_cmd::serve(&args),
        Command::EgressProxy(args) => egress_proxy_cmd::egress_proxy(&args),
        Command::Tenant(TenantCommand::Create { name, expires_in_days, store }) => {
            serve_cmd::tenant_create(&store, &name, expires_in_days)
        }
        Command::Secret(SecretCommand::Set { name, tenant, store }) => serve_cmd::secret_set(&store, &tenant, &name),
        Command::Logs { id, follow, remote } => remote::logs(&remote, &id, follow),
        Command::Cancel { id, remote } => remote::cancel(&remote, &id),
        Command::Sessions { status, limit, remote } => remote::sessions(&remote, status.as_deref(), limit),
        Command::Audit(AuditCommand::Verify { file, digest, output }) => {
            audit_cmd::verify(&file, digest.as_deref(), output == Format::Json)
        }
        Command::Audit(AuditCommand::Show { file }) => audit_cmd::show(&file),
        Command::Doctor => doctor::doctor(),
        Command::Schema => {
            print!("{}", enclave_spec::session_schema_json());
            exit::OK
        }
    };
    ExitCode::from(code)
}
