//! Remote use of an Enclave server: `enclave run --server`, `logs`, `cancel`,
//! `sessions`. The output of a remote run is the same timeline and summary as a local
//! one, printed from the server's event stream.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use enclave_core::{SessionResult, SessionStatus, TimedEvent};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;

use crate::run_cmd::{Printer, RunFormat, print_result_summary};
use crate::{exit, spec_input};

/// Where the server is and who you are.
#[derive(Debug, Args)]
pub(crate) struct RemoteArgs {
    /// The server's URL (http on loopback only: this client has no TLS).
    #[arg(long, value_name = "URL", env = "ENCLAVE_SERVER")]
    pub(crate) server: Option<String>,
    /// Bearer token of your tenant (prefer the environment variable).
    #[arg(long, env = "ENCLAVE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Session id.
    id: String,
    /// Follow the session's events until it ends.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// Session id.
    id: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SessionsArgs {
    /// Only sessions in this state (pending, running, succeeded, failed, killed, ...).
    #[arg(long)]
    status: Option<String>,
    /// How many.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// How often a dropped event stream is resumed before giving up.
const RESUMES: u32 = 5;

struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    fn new(args: &RemoteArgs) -> anyhow::Result<Self> {
        let Some(server) = &args.server else { bail!("no server: pass --server URL or set ENCLAVE_SERVER") };
        let Some(token) = &args.token else { bail!("no token: set ENCLAVE_TOKEN (or pass --token)") };
        let url = url::Url::parse(server).with_context(|| format!("invalid server URL {server:?}"))?;
        if url.scheme() != "http" {
            bail!(
                "only http:// URLs are supported by this client (it has no TLS); reach a remote server through a tunnel"
            );
        }
        // A bearer token over plain HTTP is only acceptable on this host.
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if !loopback {
            bail!(
                "refusing to send a bearer token over plain HTTP to {}: use a loopback address (e.g. an SSH tunnel)",
                url.host_str().unwrap_or("?")
            );
        }
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Self { base: server.trim_end_matches('/').to_owned(), token: token.clone(), http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.bearer_auth(&self.token).send().await.context("cannot reach the server")?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["message"].as_str().unwrap_or("(no message)");
        bail!("server answered {status}: {message}")
    }

    /// Follows a session's events from `after`, resuming a dropped stream; returns the
    /// result from the final event.
    async fn follow(
        &self,
        id: &str,
        mut on_event: impl FnMut(&TimedEvent),
        mut cancel: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    ) -> anyhow::Result<Option<SessionResult>> {
        let mut last: Option<String> = None;
        let mut resumes = 0;
        loop {
            let mut request = self.http.get(self.url(&format!("/v1/sessions/{id}/events")));
            if let Some(last) = &last {
                request = request.header("last-event-id", last);
            }
            let response = self.send(request).await?;
            let mut stream = response.bytes_stream().eventsource();
            loop {
                let next = match cancel.as_mut() {
                    Some(ctrl_c) => tokio::select! {
                        next = stream.next() => next,
                        () = ctrl_c => {
                            cancel = None;
                            eprintln!("cancelling session {id} (it is still torn down and audited)");
                            self.send(self.http.post(self.url(&format!("/v1/sessions/{id}/cancel")))).await?;
                            continue;
                        }
                    },
                    None => stream.next().await,
                };
                let Some(event) = next else { break };
                let Ok(event) = event else { break };
                last = Some(event.id.clone());
                let timed: TimedEvent =
                    serde_json::from_str(&event.data).context("the server sent an event this client cannot read")?;
                on_event(&timed);
                if let enclave_core::SessionEvent::Finished { result } = timed.event {
                    return Ok(Some(*result));
                }
            }
            resumes += 1;
            if resumes > RESUMES {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

fn report(result: anyhow::Result<u8>) -> u8 {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        exit::ERRORED
    })
}

fn exit_code(result: &SessionResult) -> u8 {
    match result.status {
        SessionStatus::Succeeded => exit::OK,
        SessionStatus::Failed { .. } => exit::FAILED,
        SessionStatus::Killed { .. } => exit::KILLED,
        _ => exit::ERRORED,
    }
}

/// `enclave run --server URL FILE`.
pub(crate) fn run(remote: &RemoteArgs, file: Option<&Path>, format: RunFormat) -> u8 {
    report(runtime().and_then(|rt| rt.block_on(run_async(remote, file, format))))
}

async fn run_async(remote: &RemoteArgs, file: Option<&Path>, format: RunFormat) -> anyhow::Result<u8> {
    let client = Client::new(remote)?;
    let (name, spec) = spec_input::read(file)?;
    let response = client
        .http
        .post(client.url("/v1/sessions"))
        .bearer_auth(&client.token)
        .header("content-type", "application/yaml")
        .body(spec)
        .send()
        .await
        .context("cannot reach the server")?;
    if response.status() == StatusCode::UNPROCESSABLE_ENTITY {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        for d in body["diagnostics"].as_array().into_iter().flatten() {
            eprintln!(
                "{name}:{}:{}: {}: {}",
                d["line"],
                d["column"],
                d["severity"].as_str().unwrap_or("error"),
                d["message"].as_str().unwrap_or("")
            );
        }
        eprintln!("{}", body["message"].as_str().unwrap_or("the server refused the spec"));
        return Ok(exit::USAGE);
    }
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        bail!("server answered {status}: {}", body["message"].as_str().unwrap_or("(no message)"));
    }
    let created: Value = response.json().await.context("the server's answer is not JSON")?;
    let id = created["id"].as_str().context("the server's answer has no session id")?.to_owned();
    for w in created["warnings"].as_array().into_iter().flatten() {
        eprintln!("{name}:{}:{}: warning: {}", w["line"], w["column"], w["message"].as_str().unwrap_or(""));
    }
    let mut printer = Printer::new(format);
    if format == RunFormat::Text {
        println!(
            "session {id} {:?} on {} at {}",
            created["name"].as_str().unwrap_or(""),
            created["backend"].as_str().unwrap_or("?"),
            client.base
        );
        if created["simulated"] == true {
            println!("  SIMULATED: the simulator models the spec's `simulate` block; nothing is executed");
        }
        println!("  plan {}", created["planDigest"].as_str().unwrap_or(""));
    }
    let ctrl_c: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async {
        if tokio::signal::ctrl_c().await.is_err() {
            futures::future::pending::<()>().await;
        }
    });
    let result = client.follow(&id, |event| printer.event(event), Some(ctrl_c)).await?;
    let Some(result) = result else {
        bail!("the event stream ended before the session did; see `enclave logs -f {id}`");
    };
    match format {
        RunFormat::Text => {
            print_result_summary(&result);
            println!("audit log    {}/v1/sessions/{id}/audit", client.base);
            println!("verify with  GET {}/v1/sessions/{id}/audit/verify", client.base);
        }
        RunFormat::Json => println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default()),
        RunFormat::Jsonl => {}
    }
    Ok(exit_code(&result))
}

/// `enclave logs [-f] ID`.
pub(crate) fn logs(args: &LogsArgs) -> u8 {
    let LogsArgs { id, follow, remote } = args;
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            let client = Client::new(remote)?;
            let mut printer = Printer::new(RunFormat::Text);
            if *follow {
                let result = client.follow(id, |event| printer.event(event), None).await?;
                if let Some(result) = result {
                    print_result_summary(&result);
                    return Ok(exit_code(&result));
                }
                return Ok(exit::ERRORED);
            }
            let response = client.send(client.http.get(client.url(&format!("/v1/sessions/{id}/logs")))).await?;
            let body: Value = response.json().await.context("the server's answer is not JSON")?;
            for entry in body["entries"].as_array().into_iter().flatten() {
                if let Ok(event) = serde_json::from_value::<TimedEvent>(entry.clone()) {
                    printer.event(&event);
                }
            }
            printer.finish();
            if body["dropped"].as_u64().unwrap_or(0) > 0 {
                println!("({} lines were not stored: the session's stored output hit its bound)", body["dropped"]);
            }
            Ok(exit::OK)
        })
    }))
}

/// `enclave cancel ID`.
pub(crate) fn cancel(args: &CancelArgs) -> u8 {
    let CancelArgs { id, remote } = args;
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            let client = Client::new(remote)?;
            client.send(client.http.post(client.url(&format!("/v1/sessions/{id}/cancel")))).await?;
            println!("cancel requested for {id}; follow it with `enclave logs -f {id}`");
            Ok(exit::OK)
        })
    }))
}

/// `enclave sessions`.
pub(crate) fn sessions(args: &SessionsArgs) -> u8 {
    let SessionsArgs { status, limit, remote } = args;
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            let client = Client::new(remote)?;
            let mut request = client.http.get(client.url("/v1/sessions")).query(&[("limit", limit.to_string())]);
            if let Some(status) = status {
                request = request.query(&[("status", status.as_str())]);
            }
            let body: Value = client.send(request).await?.json().await.context("the server's answer is not JSON")?;
            println!("{:<38} {:<10} {:<24} NAME", "ID", "STATE", "CREATED");
            for s in body["sessions"].as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<10} {:<24} {}",
                    s["id"].as_str().unwrap_or(""),
                    s["status"]["state"].as_str().unwrap_or(""),
                    s["createdAt"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or("")
                );
            }
            if let Some(next) = body["nextCursor"].as_str() {
                println!("(more: older sessions follow; this server lists pages with ?cursor={next})");
            }
            Ok(exit::OK)
        })
    }))
}
