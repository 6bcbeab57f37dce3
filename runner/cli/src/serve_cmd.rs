//! `enclave serve`, `enclave tenant create`, `enclave secret set`: the service and its
//! local administration (straight on the store, so they need access to the data
//! directory, which is what makes them admin operations).

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use enclave_server::{App, Credentials, ServerConfig, SimPace, WebhookSecrets};
use enclave_store::{SecretKey, SqliteStore, Store as _, StoreOptions};
use zeroize::Zeroizing;

use crate::backends::{self, BackendKind, BackendSetup, DockerArgs};
use crate::exit;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (default 127.0.0.1:8470).
    #[arg(long, value_name = "ADDR", env = "ENCLAVE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where sessions run (default: the config file's `backend`, else `sim`).
    #[arg(long, value_enum, env = "ENCLAVE_BACKEND")]
    backend: Option<BackendKind>,
    #[command(flatten)]
    docker: DockerArgs,
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

/// Where the server's store is.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
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

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
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
pub(crate) enum SecretCommand {
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

/// Reads the config file (if any) and applies the command line and environment.
fn load_config(store: &StoreArgs) -> anyhow::Result<ServerConfig> {
    let mut config = match &store.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Some(dir) = &store.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(file) = &store.secret_key_file {
        config.secret_key_file = Some(file.clone());
    }
    config.github.apply_env(|name| std::env::var(name).ok())?;
    Ok(config)
}

/// GitHub's webhook secrets, from `[github] webhook_secret_file` (none when unset).
fn webhook_secrets(config: &ServerConfig) -> anyhow::Result<WebhookSecrets> {
    let Some(path) = &config.github.webhook_secret_file else { return Ok(WebhookSecrets::default()) };
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read the webhook secrets {}", path.display()))?,
    );
    let secrets = WebhookSecrets::from_file_text(&text);
    if secrets.is_empty() {
        bail!("the webhook secret file {} holds no secret (one per line)", path.display());
    }
    Ok(secrets)
}

/// The secrets key: `ENCLAVE_SECRET_KEY`, else the configured file, else none.
fn secret_key(config: &ServerConfig) -> anyhow::Result<Option<SecretKey>> {
    if let Ok(text) = std::env::var("ENCLAVE_SECRET_KEY") {
        let text = Zeroizing::new(text);
        return Ok(Some(SecretKey::parse(&text).context("ENCLAVE_SECRET_KEY")?));
    }
    match &config.secret_key_file {
        Some(path) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the secret key {}", path.display()))?,
            );
            Ok(Some(SecretKey::parse(&text).with_context(|| format!("secret key file {}", path.display()))?))
        }
        None => Ok(None),
    }
}

/// The admin token: `ENCLAVE_ADMIN_TOKEN`, else the configured file, else none.
fn admin_token(config: &ServerConfig) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Ok(token) = std::env::var("ENCLAVE_ADMIN_TOKEN") {
        return Ok(Some(Zeroizing::new(token)));
    }
    match &config.admin_token_file {
        Some(path) => Ok(Some(Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("cannot read the admin token {}", path.display()))?,
        ))),
        None => Ok(None),
    }
}

async fn open_store(config: &ServerConfig) -> anyhow::Result<SqliteStore> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let options = StoreOptions {
        secret_key: secret_key(config)?,
        event_bytes_per_session: config.limits.event_bytes_per_session,
    };
    let path = config.data_dir.join("enclave.db");
    SqliteStore::open(&path, options).await.with_context(|| format!("cannot open the store {}", path.display()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Multi-threaded: the server writes audit records synchronously from session tasks.
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn report(result: anyhow::Result<u8>) -> u8 {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        exit::ERRORED
    })
}

/// `enclave serve`.
pub(crate) fn serve(args: &ServeArgs) -> u8 {
    report(runtime().and_then(|rt| rt.block_on(serve_async(args))))
}

async fn serve_async(args: &ServeArgs) -> anyhow::Result<u8> {
    // The server's own log (errors with their full cause chain, reconciliations) goes to
    // stderr; `RUST_LOG` adjusts it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Already set (e.g. by an embedding test harness) is fine.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let mut config = load_config(&args.store)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.real_time {
        config.sim_pace = SimPace::RealTime;
    }
    if let Some(rps) = args.requests_per_second {
        config.limits.requests_per_second = rps;
    }
    if let Some(ms) = args.max_deadline_ms {
        config.policy.max_deadline_ms = Some(ms);
    }
    let kind = match args.backend {
        Some(kind) => kind,
        None => BackendKind::from_name(&config.backend)?,
    };
    if kind != BackendKind::Kube && args.relay_listen.is_some() {
        bail!("--relay-listen is for the kube backend (its egress proxy Deployment); {} has no relay", kind.name());
    }
    if args.relay_listen.is_none() && (args.relay_tls_cert.is_some() || args.relay_token_file.is_some()) {
        bail!("--relay-tls-cert, --relay-tls-key and --relay-token-file need --relay-listen");
    }
    // Kept until the server stops: dropping it stops the relay.
    let mut relay_task = None;
    let relay = match args.relay_listen {
        Some(address) => {
            let relay = enclave_egress::RelayRegistry::new();
            relay_task = Some(serve_relay(args, address, relay.clone()).await?);
            Some(relay)
        }
        None if kind == BackendKind::Kube => {
            eprintln!(
                "  no --relay-listen: sessions needing the egress proxy (allowlist, bindings, a repository) are \
                 refused"
            );
            None
        }
        None => None,
    };
    let setup = BackendSetup {
        kind,
        // Its own scope: the server's reaper never touches sessions of `enclave run`, and
        // it reconciles its own sessions from the store instead of reaping the abandoned.
        scope: Some(config.scope.clone()),
        docker: args.docker.config()?,
        sim_real_time: config.sim_pace == SimPace::RealTime,
        relay,
        reap_abandoned: false,
    };
    let backend = backends::build(setup).await?.backend;
    let admin = admin_token(&config)?;
    let credentials =
        Credentials { admin_token: admin.as_deref().cloned(), webhook_secrets: webhook_secrets(&config)? };
    let github = match (config.github.app_id, credentials.webhook_secrets.is_empty()) {
        (Some(app), false) => format!(
            "  GitHub webhooks on /v1/github/webhook for App {app}: deliveries are verified and queued (running \
             them is not built yet)"
        ),
        _ => "  GitHub webhooks off (set [github] app_id and webhook_secret_file to enable)".to_owned(),
    };
    let store: Arc<dyn enclave_store::Store> = Arc::new(open_store(&config).await?);
    let listen = config.listen;
    let app = App::new(config, store, backend.clone(), credentials).await?;
    for id in &app.reconciled().sessions {
        eprintln!("reconciled: session {id} was running when the server stopped; ended as infra_lost");
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr().context("listener address")?;
    eprintln!("enclave serving on http://{bound} (backend {})", backend.name());
    if !backend.capabilities().executes_code {
        eprintln!("  SIMULATED: the simulator models each spec's `simulate` block; nothing is executed");
    }
    if admin.is_none() {
        eprintln!("  admin endpoints disabled (set ENCLAVE_ADMIN_TOKEN or admin_token_file to enable)");
    }
    eprintln!("{github}");
    let shutdown = async {
        // If Ctrl-C cannot be watched, serve until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            futures::future::pending::<()>().await;
        }
    };
    app.serve(listener, shutdown).await.context("server failed")?;
    drop(relay_task);
    Ok(exit::OK)
}

/// Starts the relay the cluster's egress proxy reads `relay` from, on `address`.
async fn serve_relay(
    args: &ServeArgs,
    address: SocketAddr,
    relay: Arc<enclave_egress::RelayRegistry>,
) -> anyhow::Result<enclave_egress::RelayTask> {
    let token = relay_token(args.relay_token_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for the relay on {address}"))?;
    let tls = match (&args.relay_tls_cert, &args.relay_tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
            let key = Zeroizing::new(read(key)?);
            Some(enclave_egress::relay_server_tls(&read(cert)?, &key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let task = enclave_egress::serve_relay(listener, relay, token, tls).context("cannot serve the relay")?;
    eprintln!("  relay for the egress proxy on {scheme}://{}", task.address);
    if scheme == "http" {
        eprintln!("  the relay has no TLS (--relay-tls-cert/--relay-tls-key): binding secrets cross it in clear");
    }
    Ok(task)
}

/// The relay token: `ENCLAVE_RELAY_TOKEN`, else the file; at least 32 characters.
pub(crate) fn relay_token(file: Option<&Path>) -> anyhow::Result<enclave_core::Secret> {
    let token = match (std::env::var("ENCLAVE_RELAY_TOKEN"), file) {
        (Ok(token), _) => Zeroizing::new(token),
        (Err(_), Some(path)) => Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("cannot read the relay token {}", path.display()))?,
        ),
        (Err(_), None) => bail!("the relay needs a token: set ENCLAVE_RELAY_TOKEN or --relay-token-file"),
    };
    let token = token.trim();
    if token.len() < 32 {
        bail!("the relay token must be at least 32 characters (e.g. `openssl rand -hex 32`)");
    }
    Ok(enclave_core::Secret::new(token))
}

/// `enclave tenant`.
pub(crate) fn tenant(command: &TenantCommand) -> u8 {
    match command {
        TenantCommand::Create { name, expires_in_days, store } => tenant_create(store, name, *expires_in_days),
    }
}

/// `enclave tenant create NAME`: prints the token once.
fn tenant_create(store: &StoreArgs, name: &str, expires_in_days: Option<u32>) -> u8 {
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            if !valid_name(name) {
                bail!("tenant names are 1-64 lowercase letters, digits and '-'");
            }
            let config = load_config(store)?;
            let store = open_store(&config).await?;
            let tenant = store.create_tenant(name, config.limits.tenant_defaults).await?;
            let expires =
                expires_in_days.map(|days| chrono::Utc::now().timestamp_millis() + i64::from(days) * 24 * 3_600_000);
            let issued = store.issue_token(&tenant.id, expires).await?;
            eprintln!("tenant {} created ({}); its token is shown once:", tenant.name, tenant.id);
            println!("{}", issued.token.as_str());
            Ok(exit::OK)
        })
    }))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `enclave secret`.
pub(crate) fn secret(command: &SecretCommand) -> u8 {
    match command {
        SecretCommand::Set { name, tenant, store } => secret_set(store, tenant, name),
    }
}

/// `enclave secret set NAME --tenant T`: the value comes from stdin.
fn secret_set(store: &StoreArgs, tenant: &str, name: &str) -> u8 {
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            if name.parse::<enclave_spec::SecretName>().is_err() {
                bail!("invalid secret name {name:?}");
            }
            let config = load_config(store)?;
            let store = open_store(&config).await?;
            let Some(owner) = store.tenant_by_name(tenant).await? else {
                bail!("no tenant {tenant:?}");
            };
            let mut value = Zeroizing::new(String::new());
            std::io::stdin().read_to_string(&mut value).context("cannot read the value from stdin")?;
            let trimmed = value.strip_suffix('\n').unwrap_or(&value);
            if trimmed.is_empty() {
                bail!("the value on stdin is empty");
            }
            store.put_secret(&owner.id, name, &enclave_core::Secret::new(trimmed)).await?;
            eprintln!("secret {name} set for tenant {tenant} (sealed at rest)");
            Ok(exit::OK)
        })
    }))
}
