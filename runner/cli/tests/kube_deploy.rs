//! The Kubernetes deployment's two processes as deploy/ runs them, without a cluster:
//! `enclave serve --backend kube` with its TLS relay, and `enclave egress-proxy`, both
//! reading a kubeconfig that points at the fake API server (served over HTTP on
//! loopback by this test, which also plays the kubelet). A session goes in through the
//! HTTP API; the test's connections from 127.0.0.1 play the session pod's, whose address
//! the fake API reports. Every server is on loopback and started here.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use enclave_fake_kube::{FakeKube, PodScript};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const POD: Ipv4Addr = Ipv4Addr::LOCALHOST;
const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const ALLOWED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const DENIED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const RELAY_TOKEN: &str = "relay-token-deploy-test-0123456789abcdef";
/// Guards against a hang turning into a stuck CI job; never a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `enclave ARGS` with `env`; returns it and the first stderr line starting with
/// each of `wanted` (in any order), reading on while they have not all appeared.
fn start(dir: &Path, args: &[String], env: &[(&str, String)], wanted: &[&str]) -> (Process, Vec<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enclave"));
    command
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("ENCLAVE_RELAY_TOKEN")
        .env_remove("ENCLAVE_CONFIG")
        .env_remove("ENCLAVE_SECRET_KEY")
        .env_remove("ENCLAVE_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut found: Vec<Option<String>> = vec![None; wanted.len()];
    let mut seen = Vec::new();
    while found.iter().any(Option::is_none) {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait();
            panic!("enclave {args:?} exited ({status:?}): {seen:#?}");
        };
        for (i, prefix) in wanted.iter().enumerate() {
            if found[i].is_none() && line.contains(prefix) {
                found[i] = Some(line.clone());
            }
        }
        seen.push(line);
    }
    // Keep draining stderr so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (Process(child), found.into_iter().map(Option::unwrap).collect())
}

/// The address after `prefix` in `line` (up to the next space).
fn address_after(line: &str, prefix: &str) -> String {
    let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
    rest.split_whitespace().next().unwrap().to_owned()
}

/// A plain HTTP proxy request from `source`; the raw response.
async fn from(source: Ipv4Addr, proxy: SocketAddr, url: &str, host: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(HANG_GUARD, stream.read_to_end(&mut out)).await.expect("answered").unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

fn status(response: &str) -> u16 {
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A canary answering every request with 200 and counting connections.
async fn canary(ip: Ipv4Addr) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n").await;
            });
        }
    });
    (address, count)
}

/// A CA and a certificate for the relay (IP 127.0.0.1), written as PEM files.
fn relay_certificates(dir: &Path) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (write("relay.crt", leaf.pem()), write("relay.key", leaf_key.serialize_pem()), write("ca.crt", issuer.pem()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_and_the_egress_proxy_processes_enforce_a_session_on_the_fake_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeKube::new(PodScript::RunsUntilReleased(0), None, b"hello from the pod\n".to_vec());
    fake.set_pod_ip(&POD.to_string());
    let api = fake.serve_tcp().await;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{api}\n\
             users:\n- name: tester\n  user:\n    token: fake-api-token\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: tester\n    namespace: enclave-sessions\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    let token_file = dir.path().join("relay-token");
    std::fs::write(&token_file, RELAY_TOKEN).unwrap();
    let (cert, key, ca) = relay_certificates(dir.path());
    let kube_env = ("KUBECONFIG", kubeconfig.display().to_string());
    let data = dir.path().join("data");
    // The keys as files named by the server's config file, as deploy/server.yaml mounts
    // them (its ConfigMap and the enclave-server-keys Secret).
    std::fs::write(dir.path().join("secret-key"), "22".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin-token"), "admin-token-deploy-test-0123456789").unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            // The canaries are on this host's loopback: the operator's unsafe test setting.
            "secret_key_file = \"{}\"\nadmin_token_file = \"{}\"\n[policy]\nunsafe_host_loopback = [\"{ALLOWED}/32\"]\n",
            dir.path().join("secret-key").display(),
            dir.path().join("admin-token").display()
        ),
    )
    .unwrap();

    // A tenant on the store, as an operator creates it.
    let created = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(["tenant", "create", "deploy-test", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env_remove("ENCLAVE_SECRET_KEY")
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let tenant = String::from_utf8(created.stdout).unwrap().trim().to_owned();

    let s = |v: &str| v.to_owned();
    let (_server, lines) = start(
        dir.path(),
        &[
            s("serve"),
            s("--config"),
            config.display().to_string(),
            s("--backend"),
            s("kube"),
            s("--listen"),
            s("127.0.0.1:0"),
            s("--relay-listen"),
            s("127.0.0.1:0"),
            s("--relay-token-file"),
            token_file.display().to_string(),
            s("--relay-tls-cert"),
            cert,
            s("--relay-tls-key"),
            key,
            s("--data-dir"),
            data.display().to_string(),
        ],
        std::slice::from_ref(&kube_env),
        &["relay for the egress proxy on ", "enclave serving on "],
    );
    let relay = address_after(&lines[0], "relay for the egress proxy on ");
    let server = address_after(&lines[1], "enclave serving on ");
    assert!(relay.starts_with("https://"), "{relay}");
    let (_proxy, lines) = start(
        dir.path(),
        &[
            s("egress-proxy"),
            s("--listen"),
            format!("{PROXY}:0"),
            s("--sessions-namespace"),
            s("enclave-sessions"),
            s("--relay"),
            relay,
            s("--relay-ca"),
            ca,
            s("--relay-token-file"),
            token_file.display().to_string(),
            s("--self-address"),
            PROXY.to_string(),
        ],
        &[kube_env],
        &["enclave egress proxy on "],
    );
    let proxy: SocketAddr = address_after(&lines[0], "enclave egress proxy on ").parse().unwrap();

    let (allowed, allowed_hits) = canary(ALLOWED).await;
    let (denied, denied_hits) = canary(DENIED).await;
    let spec = format!(
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: deploy-e2e\nspec:\n  command: [\"true\"]\n  \
         egress:\n    mode: allowlist\n    allow:\n      - cidr: {ALLOWED}/32\n        ports: [{}]\n",
        allowed.port()
    );
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{server}/v1/sessions"))
        .bearer_auth(&tenant)
        .header("content-type", "application/yaml")
        .body(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let session: Value = response.json().await.unwrap();
    let id = session["id"].as_str().unwrap().to_owned();

    tokio::time::timeout(HANG_GUARD, fake.running()).await.expect("the session pod runs");
    let ok = from(POD, proxy, &format!("http://{allowed}/"), &allowed.to_string()).await;
    assert_eq!(status(&ok), 200, "{ok}");
    let no = from(POD, proxy, &format!("http://{denied}/"), &denied.to_string()).await;
    assert_eq!(status(&no), 403, "{no}");
    assert_eq!(denied_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(allowed_hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    fake.release();
    let finished = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let got = get_json(&http, &format!("{server}/v1/sessions/{id}"), &tenant).await;
            let state = &got["status"]["state"];
            if state != "pending" && state != "running" && state != "cloning" {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the session ends");
    assert_eq!(finished["status"]["state"], "succeeded", "{finished}");
    let audit = http.get(format!("{server}/v1/sessions/{id}/audit")).bearer_auth(&tenant).send().await.unwrap();
    let audit = audit.text().await.unwrap();
    let decisions: Vec<&str> = audit.lines().filter(|l| l.contains("egress_decision")).collect();
    assert_eq!(decisions.len(), 2, "{audit}");
    assert!(decisions[0].contains(&ALLOWED.to_string()) && decisions[0].contains("\"allow\""), "{audit}");
    assert!(decisions[1].contains(&DENIED.to_string()) && decisions[1].contains("\"deny\""), "{audit}");
    let verify = get_json(&http, &format!("{server}/v1/sessions/{id}/audit/verify"), &tenant).await;
    assert_eq!(verify["ok"], true, "{verify}");
    // The admin token came from its file, as the ConfigMap names it.
    let tenants = http
        .get(format!("{server}/v1/admin/tenants"))
        .bearer_auth("admin-token-deploy-test-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(tenants.status(), 200);
    // Everything the session had in the cluster is gone.
    for kind in ["jobs", "pods", "secrets", "networkpolicies"] {
        assert_eq!(fake.names(kind), Vec::<String>::new(), "{kind} left behind");
    }
}
