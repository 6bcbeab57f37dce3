//! `enclave run`: one session, streamed as it happens, with an audit chain on disk.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};
use enclave_core::WallClock;
use enclave_core::{
    AuditRecord, AuditSink, AuditWriteError, Decision, MemorySecrets, Orchestrator, Secret, SessionEvent, SessionId,
    SessionResult, SessionRun, SessionStatus, TimedEvent, to_jsonl_line,
};
use futures::FutureExt as _;

use crate::backends::{self, BackendKind, BackendSetup, DockerArgs};
use crate::shared_args::IsolationArg;
use crate::{exit, spec_input};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The spec file; omit to run the built-in example (examples/sessions/hello.yaml).
    #[arg(value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Where the session runs. `sim` models the spec's `simulate` block and executes
    /// nothing; its results are marked simulated.
    #[arg(long, short, value_enum, default_value_t = BackendKind::Sim)]
    backend: BackendKind,
    /// Output: `text` streams a readable timeline, `json` prints the result document,
    /// `jsonl` streams every event as a JSON line (the last one holds the result).
    #[arg(long, short, value_enum, default_value_t = RunFormat::Text)]
    pub(crate) output: RunFormat,
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
    pub(crate) server: Option<String>,
    /// Bearer token for `--server` (prefer the environment variable).
    #[arg(long, env = "ENCLAVE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

/// How `enclave run` (local or `--server`) prints a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RunFormat {
    Text,
    Json,
    Jsonl,
}

/// Appends each record to a JSONL file and flushes it, so a crash loses nothing
/// already recorded.
struct JsonlAuditFile {
    file: File,
}

impl AuditSink for JsonlAuditFile {
    fn append(&mut self, record: &AuditRecord) -> Result<(), AuditWriteError> {
        let line = to_jsonl_line(record);
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| AuditWriteError { seq: record.seq, source: Box::new(e) })
    }
}

/// Writes the artifact bundle next to the audit file.
struct ArtifactFile {
    path: PathBuf,
}

impl enclave_core::ArtifactSink for ArtifactFile {
    fn store(&mut self, bundle: &enclave_core::ArtifactBundle) -> Result<String, String> {
        std::fs::write(&self.path, &bundle.tar).map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        Ok(self.path.display().to_string())
    }
}

fn new_session_id() -> SessionId {
    let id = format!("ses-{}", uuid::Uuid::now_v7().simple());
    SessionId::new(id).unwrap_or_else(|e| unreachable!("generated ids are valid: {e}"))
}

/// Secrets named `NAME=ENV_VAR`, read from this process's environment.
fn secrets_from_env(pairs: &[String]) -> Result<MemorySecrets, String> {
    let mut secrets = MemorySecrets::default();
    for pair in pairs {
        let Some((name, var)) = pair.split_once('=') else {
            return Err(format!("--secret {pair:?}: expected NAME=ENV_VAR (the value is read from ENV_VAR)"));
        };
        let value = std::env::var(var)
            .map_err(|_| format!("--secret {name}: environment variable {var} is not set (or not UTF-8)"))?;
        secrets.insert(name, Secret::new(value));
    }
    Ok(secrets)
}

pub(crate) fn run_command(args: &RunArgs) -> u8 {
    let plan = match spec_input::load_plan(args.file.as_deref(), &args.isolation.policy()) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    // Settings are checked before anything is created.
    let secrets = match secrets_from_env(&args.secrets) {
        Ok(secrets) => secrets,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::USAGE;
        }
    };
    // The Docker flags are checked whichever backend runs: a typo is never silent.
    let docker = match args.docker.config() {
        Ok(config) => config,
        Err(e) if args.backend == BackendKind::Docker => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
        Err(_) => enclave_docker::DockerConfig::default(),
    };
    let session = new_session_id();
    if let Err(e) = std::fs::create_dir_all(&args.sessions_dir) {
        eprintln!("error: cannot create {}: {e}", args.sessions_dir.display());
        return exit::ERRORED;
    }
    let audit_path = args.sessions_dir.join(format!("{session}.audit.jsonl"));
    let result_path = args.sessions_dir.join(format!("{session}.result.json"));
    let file = match OpenOptions::new().create_new(true).append(true).open(&audit_path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("error: cannot create audit file {}: {e}", audit_path.display());
            return exit::ERRORED;
        }
    };
    let mut audit = JsonlAuditFile { file };
    let mut artifacts = ArtifactFile { path: args.sessions_dir.join(format!("{session}.artifacts.tar")) };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ERRORED;
        }
    };
    // Sessions left behind by an `enclave run` that died are removed first.
    let setup = BackendSetup { kind: args.backend, docker, reap_abandoned: true, ..BackendSetup::default() };
    let backend = match runtime.block_on(backends::build(setup)) {
        Ok(built) => {
            if !built.reaped.is_empty() && args.output == RunFormat::Text {
                let ids: Vec<String> = built.reaped.iter().map(ToString::to_string).collect();
                println!("reaped {} abandoned session(s): {}", built.reaped.len(), ids.join(", "));
            }
            for warning in &built.warnings {
                eprintln!("warning: {warning}");
            }
            built.backend
        }
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(cause) = std::error::Error::source(&e) {
                eprintln!("  caused by: {cause}");
            }
            return if e.is_usage() { exit::USAGE } else { exit::ERRORED };
        }
    };
    let orchestrator = Orchestrator::new(backend, Arc::new(WallClock), Arc::new(secrets));
    let mut printer = Printer::new(args.output);
    if args.output == RunFormat::Text {
        printer.header(
            &session,
            &plan,
            orchestrator.backend().name(),
            orchestrator.backend().capabilities().executes_code,
        );
    }
    let outcome = runtime.block_on(async {
        // SIGINT and SIGTERM are caught from here on, before the backend creates anything:
        // a signal during the launch or the clone is a cancel (torn down, audited), never
        // the default death, and a background run (SIGINT ignored by its shell) still
        // hears it. If a signal cannot be watched, never cancel rather than cancel at once.
        let signals = interrupts();
        let cancel = async move {
            match signals {
                Some(mut signals) => signals.wait().await,
                None => futures::future::pending::<()>().await,
            }
        }
        .boxed();
        let mut listener = |event: &TimedEvent| printer.event(event);
        orchestrator
            .run(SessionRun {
                session: session.clone(),
                plan: &plan,
                audit: &mut audit,
                listener: &mut listener,
                cancel,
                artifacts: Some(&mut artifacts),
            })
            .await
    });
    let result = match outcome {
        Ok(result) => result,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            return exit::ERRORED;
        }
    };
    if let Err(e) = std::fs::write(&result_path, serde_json::to_vec_pretty(&result).unwrap_or_default()) {
        eprintln!("warning: cannot write {}: {e}", result_path.display());
    }
    match args.output {
        RunFormat::Text => print_summary(&result, &audit_path, &result_path),
        RunFormat::Json => println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default()),
        RunFormat::Jsonl => {}
    }
    match result.status {
        SessionStatus::Succeeded => exit::OK,
        SessionStatus::Failed { .. } => exit::FAILED,
        SessionStatus::Killed { .. } => exit::KILLED,
        _ => exit::ERRORED,
    }
}

/// Prints events as they arrive.
pub(crate) struct Printer {
    format: RunFormat,
    start_ms: Option<i64>,
    /// Modelled output volume not yet printed: (offset label, lines, bytes). Consecutive
    /// volume events are shown as one line.
    pending_volume: Option<(String, u64, u64)>,
}

impl Printer {
    pub(crate) fn new(format: RunFormat) -> Self {
        Self { format, start_ms: None, pending_volume: None }
    }

    /// Prints anything still pending (modelled output volume).
    pub(crate) fn finish(&mut self) {
        self.flush_volume();
    }

    fn flush_volume(&mut self) {
        if let Some((offset, lines, bytes)) = self.pending_volume.take() {
            println!(
                "{offset:>10}  output   {lines} lines, {} so far (modelled volume; the simulator never invents text)",
                enclave_spec::ByteSize(bytes)
            );
        }
    }

    fn header(&self, session: &SessionId, plan: &enclave_core::Plan, backend: &str, executes: bool) {
        println!("session {session} {:?} on {backend}", plan.name);
        if !executes {
            println!("  SIMULATED: the simulator models the spec's `simulate` block; nothing is executed");
        }
        println!("  plan {}  isolation {}", plan.digest, plan.containment.isolation);
    }

    pub(crate) fn event(&mut self, timed: &TimedEvent) {
        match self.format {
            RunFormat::Jsonl => println!("{}", serde_json::to_string(timed).unwrap_or_default()),
            RunFormat::Json => {}
            RunFormat::Text => {
                let at = chrono::DateTime::parse_from_rfc3339(&timed.at).map_or(0, |t| t.timestamp_millis());
                let start = *self.start_ms.get_or_insert(at);
                let offset = format!("+{}", enclave_spec::DurationMs(u64::try_from(at - start).unwrap_or(0)));
                if let SessionEvent::LogVolume { lines, bytes } = &timed.event {
                    let (_, total_lines, total_bytes) = self.pending_volume.take().unwrap_or_default();
                    self.pending_volume = Some((offset, total_lines + lines, total_bytes + bytes));
                    return;
                }
                if let Some(line) = describe(&timed.event) {
                    self.flush_volume();
                    println!("{offset:>10}  {line}");
                } else {
                    self.flush_volume();
                }
            }
        }
    }
}

fn describe(event: &SessionEvent) -> Option<String> {
    Some(match event {
        SessionEvent::Status { status } if !status.is_terminal() => {
            format!("status   {}", status.name())
        }
        SessionEvent::Status { .. } | SessionEvent::Finished { .. } => return None,
        SessionEvent::Warning { message } => format!("WARNING  {message}"),
        SessionEvent::Clone { stage, detail } => format!("clone    {stage} {detail}"),
        SessionEvent::StepStarted { name } => format!("step     {name:?} started"),
        SessionEvent::StepFinished { name, exit_code, duration_ms } => {
            format!("step     {name:?} exited {exit_code} after {}", enclave_spec::DurationMs(*duration_ms))
        }
        SessionEvent::Log { stream, line } => {
            let tag = match stream {
                enclave_core::Stream::Stdout => "out",
                enclave_core::Stream::Stderr => "err",
            };
            format!("{tag}    | {line}")
        }
        SessionEvent::LogVolume { .. } => return None,
        SessionEvent::Egress { phase, host, port, decision } => match decision {
            Decision::Allow { rule } => format!("egress   allow {phase} {host}:{port} via {rule}"),
            Decision::Deny { reason } => format!("egress   DENY  {phase} {host}:{port}: {reason}"),
        },
        SessionEvent::Binding { binding, method, path, allowed, status } => {
            let verdict = if *allowed { "forwarded" } else { "REFUSED" };
            let status = status.map(|s| format!(" -> {s}")).unwrap_or_default();
            format!("binding  {binding}: {method} {path} {verdict}{status}")
        }
        SessionEvent::Kill { reason, detail } => format!("KILL     {reason}: {detail}"),
    })
}

fn print_summary(result: &SessionResult, audit_path: &Path, result_path: &Path) {
    print_result_summary(result);
    println!("audit file   {}", audit_path.display());
    println!("result file  {}", result_path.display());
    println!("verify with  enclave audit verify {} --digest {}", audit_path.display(), result.audit_digest);
}

/// The summary of a result, as a local and a remote run print it.
pub(crate) fn print_result_summary(result: &SessionResult) {
    println!();
    let simulated = if result.simulated { " (simulated)" } else { "" };
    println!("status       {}{simulated}", result.status);
    if let Some(code) = result.exit_code {
        println!("exit code    {code}");
    }
    if let Some(reason) = result.kill_reason {
        println!("kill reason  {reason}");
    }
    let mut durations = format!("total {}", enclave_spec::DurationMs(result.duration_ms));
    if let Some(clone) = result.clone_duration_ms {
        durations.push_str(&format!(", clone {}", enclave_spec::DurationMs(clone)));
    }
    if let Some(run) = result.run_duration_ms {
        durations.push_str(&format!(", run {}", enclave_spec::DurationMs(run)));
    }
    if result.simulated {
        durations.push_str(" (modelled time)");
    }
    println!("durations    {durations}");
    for denied in &result.egress_denied {
        let attempts =
            if denied.attempts == 1 { "1 attempt".to_owned() } else { format!("{} attempts", denied.attempts) };
        println!("egress denied: {attempts} to {}:{} ({})", denied.host, denied.port, denied.reason);
    }
    if result.log_truncated {
        println!(
            "output       cut at the logBytes quota (more than {} produced)",
            enclave_spec::ByteSize(result.log_bytes)
        );
    } else {
        println!("output       {}", enclave_spec::ByteSize(result.log_bytes));
    }
    if !result.artifacts.is_empty() || !result.artifacts_skipped.is_empty() {
        let bytes: u64 = result.artifacts.iter().map(|f| f.bytes).sum();
        let location = result.artifacts_location.as_deref().unwrap_or("not stored");
        println!("artifacts    {} file(s), {} in {location}", result.artifacts.len(), enclave_spec::ByteSize(bytes));
        for skipped in &result.artifacts_skipped {
            println!("  left out   {}: {}", skipped.path, skipped.reason);
        }
    }
    for warning in &result.warnings {
        println!("warning      {warning}");
    }
    println!("plan         {}", result.plan_digest);
    println!("audit        {}", result.audit_digest);
}

/// SIGINT and SIGTERM, registered at once (a registration only on first poll would let
/// a signal that comes earlier kill the process with nothing torn down).
struct Interrupts {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Interrupts {
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

fn interrupts() -> Option<Interrupts> {
    use tokio::signal::unix::{SignalKind, signal};
    Some(Interrupts {
        interrupt: signal(SignalKind::interrupt()).ok()?,
        terminate: signal(SignalKind::terminate()).ok()?,
    })
}
