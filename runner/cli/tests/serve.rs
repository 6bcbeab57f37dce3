//! `enclave serve` as a real process, used through the CLI's own remote commands:
//! tenant and secret set-up on the store, `run --server` printing the same timeline as
//! a local run, `sessions`, `logs`, `cancel`, and a SIGKILL of the server mid-session
//! followed by a restart that reconciles it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const LONG: &str = include_str!("../../server/tests/fixtures/long-running.yaml");

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

struct Env {
    dir: tempfile::TempDir,
    key: String,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self { dir, key: "11".repeat(32) }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_enclave"));
        command
            .current_dir(self.dir.path())
            .env("ENCLAVE_DATA_DIR", self.dir.path().join("data"))
            .env("ENCLAVE_SECRET_KEY", &self.key)
            .env_remove("ENCLAVE_SERVER")
            .env_remove("ENCLAVE_TOKEN")
            .env_remove("ENCLAVE_ADMIN_TOKEN")
            .env_remove("ENCLAVE_CONFIG");
        command
    }

    fn enclave(&self, args: &[&str], token: Option<&str>, stdin: Option<&str>) -> Output {
        let mut command = self.command();
        command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(token) = token {
            command.env("ENCLAVE_TOKEN", token);
        }
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Starts `enclave serve` on a free loopback port; returns the child, its URL and
    /// what it printed before listening. `real_time` paces the simulator by the wall
    /// clock (for sessions that must still be running when the test acts).
    fn serve(&self, real_time: bool) -> (Child, String, Vec<String>) {
        let (child, url, before, _log) = self.serve_logged(real_time, "info", &[]);
        (child, url, before)
    }

    /// Like `serve`, at log level `level`, also returning everything the server logs
    /// from then on (collected until it exits).
    fn serve_logged(
        &self,
        real_time: bool,
        level: &str,
        extra: &[&str],
    ) -> (Child, String, Vec<String>, std::sync::Arc<std::sync::Mutex<String>>) {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        if real_time {
            args.push("--real-time");
        }
        args.extend_from_slice(extra);
        let mut child = self
            .command()
            .args(&args)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut before = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("enclave serving on ") {
                let url = rest.split_whitespace().next().unwrap().to_owned();
                // Keep draining stderr so the server never blocks on a full pipe.
                let mut seen = before.clone();
                seen.push(line.clone());
                let log = std::sync::Arc::new(std::sync::Mutex::new(seen.join("\n")));
                let sink = log.clone();
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        let mut log = sink.lock().unwrap();
                        log.push('\n');
                        log.push_str(&line);
                    }
                });
                return (child, url, before, log);
            }
            before.push(line);
        }
        let status = child.wait();
        panic!("the server exited before listening ({status:?}): {before:?}");
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn without_ids(text: &str) -> String {
    text.split_whitespace()
        .map(|w| if w.starts_with("ses-") || w.starts_with("sha256:") { "<id>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn serve_tenant_secret_and_remote_commands_work_end_to_end() {
    let env = Env::new();
    let created = env.enclave(&["tenant", "create", "acme"], None, None);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let token = text(&created.stdout).trim().to_owned();
    assert!(token.starts_with("enc_"), "{token}");
    assert_eq!(text(&created.stdout).lines().count(), 1, "the token alone on stdout");
    let secret = env.enclave(&["secret", "set", "git-token", "--tenant", "acme"], None, Some("canary-cli-1f2e3d\n"));
    assert_eq!(secret.status.code(), Some(0), "{}", text(&secret.stderr));
    assert!(!text(&secret.stdout).contains("canary") && !text(&secret.stderr).contains("canary"));

    let (mut server, url, _) = env.serve(false);
    let example = repo().join("examples/sessions/allowlist-python-deps.yaml");
    let example = example.to_str().unwrap();
    let remote = env.enclave(&["run", "--server", &url, example], Some(&token), None);
    assert_eq!(remote.status.code(), Some(0), "{}", text(&remote.stderr));
    let local = env.enclave(&["run", "--sessions-dir", "local", example], None, None);
    assert_eq!(local.status.code(), Some(0));
    // The same timeline and summary, up to ids and the lines that say where things are.
    let timeline = |out: &Output| {
        text(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("session ") && !l.starts_with("  plan ") && !l.starts_with("audit"))
            .filter(|l| !l.starts_with("result file") && !l.starts_with("verify with"))
            .map(without_ids)
            .collect::<Vec<_>>()
    };
    assert_eq!(timeline(&remote), timeline(&local));
    // The simulated session's attempt at the metadata address is denied (modelled by the
    // simulator; nothing is sent anywhere).
    assert!(timeline(&remote).iter().any(|l| l.contains("DENY run 169.254.169.254:80")));

    let listed = env.enclave(&["sessions", "--server", &url], Some(&token), None);
    assert_eq!(listed.status.code(), Some(0));
    assert!(text(&listed.stdout).contains("python-deps"), "{}", text(&listed.stdout));

    server.kill().unwrap();
    server.wait().unwrap();

    // A long session on a real-time server: cancel it, then follow it to its end.
    let (mut server, url, _) = env.serve(true);
    let long = env.dir.path().join("long.yaml");
    std::fs::write(&long, LONG).unwrap();
    let mut running = env
        .command()
        .args(["run", "--server", &url, "-o", "jsonl", long.to_str().unwrap()])
        .env("ENCLAVE_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut events = BufReader::new(running.stdout.take().unwrap()).lines();
    let mut id = String::new();
    for line in events.by_ref() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["type"] == "status" && event["status"]["state"] == "running" {
            break;
        }
    }
    let listed = env.enclave(&["sessions", "--server", &url, "--status", "running"], Some(&token), None);
    for line in text(&listed.stdout).lines().skip(1) {
        id = line.split_whitespace().next().unwrap().to_owned();
    }
    assert!(id.starts_with("ses-"), "{}", text(&listed.stdout));
    let cancel = env.enclave(&["cancel", "--server", &url, &id], Some(&token), None);
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel.stderr));
    let rest: Vec<String> = events.map(Result::unwrap).collect();
    assert_eq!(running.wait().unwrap().code(), Some(3), "killed: exit 3");
    assert!(rest.last().unwrap().contains("\"killReason\":\"cancelled\""), "{rest:?}");
    let follow = env.enclave(&["logs", "-f", "--server", &url, &id], Some(&token), None);
    assert_eq!(follow.status.code(), Some(3));
    assert!(text(&follow.stdout).contains("killed: cancelled"), "{}", text(&follow.stdout));

    // Another tenant cannot see it.
    let other = env.enclave(&["tenant", "create", "other"], None, None);
    let other = text(&other.stdout).trim().to_owned();
    let foreign = env.enclave(&["logs", "--server", &url, &id], Some(&other), None);
    assert_eq!(foreign.status.code(), Some(4));
    assert!(text(&foreign.stderr).contains("404"), "{}", text(&foreign.stderr));

    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn a_canary_secret_is_in_no_cli_output_and_no_server_log_line() {
    let canary = "canary-cli-5e6f7a8b9c-never-print";
    let env = Env::new();
    let token = text(&env.enclave(&["tenant", "create", "acme"], None, None).stdout).trim().to_owned();
    let set = env.enclave(&["secret", "set", "billing-repo-deploy-token", "--tenant", "acme"], None, Some(canary));
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    // Debug level: everything the server and its libraries log.
    let (mut server, url, _, log) = env.serve_logged(false, "debug", &[]);
    let spec = repo().join("examples/sessions/private-repo-credential.yaml");
    let mut outputs = Vec::new();
    for format in ["text", "json", "jsonl"] {
        let run = env.enclave(&["run", "--server", &url, "-o", format, spec.to_str().unwrap()], Some(&token), None);
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        outputs.push(run);
    }
    outputs.push(env.enclave(&["sessions", "--server", &url], Some(&token), None));
    server.kill().unwrap();
    server.wait().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(log.contains("enclave serving on"), "the log was captured");
    assert!(!log.contains(canary), "the server logged the canary");
    for out in &outputs {
        assert!(!text(&out.stdout).contains(canary) && !text(&out.stderr).contains(canary));
    }
}

#[test]
fn a_killed_server_reconciles_its_running_session_on_restart() {
    let env = Env::new();
    let token = text(&env.enclave(&["tenant", "create", "acme"], None, None).stdout).trim().to_owned();
    let (mut server, url, _) = env.serve(true);
    let long = env.dir.path().join("long.yaml");
    std::fs::write(&long, LONG).unwrap();
    let mut client = env
        .command()
        .args(["run", "--server", &url, "-o", "jsonl", long.to_str().unwrap()])
        .env("ENCLAVE_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut id = String::new();
    for line in BufReader::new(client.stdout.take().unwrap()).lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["type"] == "status" && event["status"]["state"] == "running" {
            break;
        }
    }
    let listed = env.enclave(&["sessions", "--server", &url], Some(&token), None);
    for line in text(&listed.stdout).lines().skip(1) {
        id = line.split_whitespace().next().unwrap().to_owned();
    }
    // SIGKILL: no shutdown code runs.
    server.kill().unwrap();
    server.wait().unwrap();
    client.kill().unwrap();
    client.wait().unwrap();

    let (mut server, url, before) = env.serve(true);
    assert!(
        before.iter().any(|l| l.contains(&format!("reconciled: session {id}")) && l.contains("infra_lost")),
        "{before:?}"
    );
    let follow = env.enclave(&["logs", "-f", "--server", &url, &id], Some(&token), None);
    assert_eq!(follow.status.code(), Some(3), "{}", text(&follow.stderr));
    assert!(text(&follow.stdout).contains("infra_lost"), "{}", text(&follow.stdout));
    let running = env.enclave(&["sessions", "--server", &url, "--status", "running"], Some(&token), None);
    assert_eq!(text(&running.stdout).lines().count(), 1, "nothing left running: {}", text(&running.stdout));
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The service on the Docker backend: a real gVisor session submitted and streamed
/// remotely, with nothing left behind. Skipped (loudly) where Docker is missing, except
/// under `CI=true`.
#[test]
fn serve_runs_sessions_on_the_docker_backend() {
    let docker_up = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    if !docker_up.as_ref().is_ok_and(|o| o.status.success()) {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "Docker is required in CI");
        eprintln!("SKIPPED: Docker is not available here; CI runs this test");
        return;
    }
    let env = Env::new();
    let created = env.enclave(&["tenant", "create", "docker-demo"], None, None);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let token = text(&created.stdout).lines().last().unwrap().trim().to_owned();
    let scope = format!("serve-test-{}", std::process::id());
    let config = env.dir.path().join("enclave.toml");
    std::fs::write(&config, format!("docker_scope = \"{scope}\"\n")).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let (mut server, url, _, _log) = env.serve_logged(false, "info", &["--backend", "docker", "--config", &config]);
    let hello = repo().join("examples/sessions/hello.yaml");
    let run = env.enclave(&["run", "--server", &url, hello.to_str().unwrap()], Some(&token), None);
    let _ = server.kill();
    let _ = server.wait();
    let out = text(&run.stdout);
    assert!(run.status.success(), "{out}\n{}", text(&run.stderr));
    assert!(out.contains("hello from the sandbox"), "{out}");
    assert!(out.contains("succeeded"), "{out}");
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=dev.enclave.scope={scope}")])
        .output()
        .unwrap();
    assert!(text(&left.stdout).trim().is_empty(), "containers left behind");
}
