//! Red-team attempts on the Kubernetes clone step, with the init container as the
//! backend submits it: the fake kubelet (as in `attacks_kube_clone.rs`) runs its
//! command, environment, mounts and the per-session Secret's content with the host's
//! `sh` and Debian's `git`, through the cluster proxy. The repository host here is the
//! test's own hostile git smart-HTTP server over TLS (on 127.0.0.1, named `git.test`),
//! written in this file: it redirects, or it hands back what it was sent. Nothing is
//! sent to any address but loopback.
//!
//! Each test's comment says FAILED (a hole) or "held" (passed) on the code it was
//! written against (abefdea). Failing tests are kept as they are, not ignored.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use common::fake_kube::PodScript;
use common::kube_cluster::*;
use common::kubelet::*;
use enclave_core::{AuditRecord, SessionId, SessionResult};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

fn expected_header() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{GIT_PASSWORD}")))
}

// ---------------------------------------------------------------------------------
// The hostile repository host.
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Hostile {
    /// Serves a repository it builds on the first authenticated request, whose one file
    /// holds the `Authorization` header it was sent.
    Reflect,
    /// Answers every request with a 302 to another path under the repository URL (where
    /// the credential header's URL scope would still apply if git followed).
    Redirect,
}

/// (path, the Authorization header sent) of every request.
type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct HostileGit {
    port: u16,
    /// (path, the Authorization header sent) of every request.
    log: RequestLog,
    _root: Arc<tempfile::TempDir>,
}

/// The repository the host serves: one commit on `main` with `README.md` and `SEEN`.
fn build_repo(root: &Path, seen: &str) {
    common::git_server::make_repo(root, "kube clone\n", |work| {
        std::fs::write(work.join("SEEN"), format!("{seen}\n")).unwrap();
    });
}

impl HostileGit {
    async fn start(tls: Arc<rustls::ServerConfig>, mode: Hostile) -> Self {
        let root = Arc::new(tempfile::tempdir().unwrap());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log: RequestLog = Arc::default();
        let built = Arc::new(tokio::sync::Mutex::new(false));
        let (root2, log2) = (root.clone(), log.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                let (root, log, built) = (root2.clone(), log2.clone(), built.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(move |req| {
                        let (root, log, built) = (root.clone(), log.clone(), built.clone());
                        async move { Ok::<_, Infallible>(handle(req, mode, port, root.path(), &log, &built).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { port, log, _root: root }
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.log.lock().unwrap().clone()
    }
}

async fn handle(
    req: Request<Incoming>,
    mode: Hostile,
    port: u16,
    root: &Path,
    log: &Mutex<Vec<(String, Option<String>)>>,
    built: &tokio::sync::Mutex<bool>,
) -> Response<Full<Bytes>> {
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let path = req.uri().path().to_owned();
    log.lock().unwrap().push((path.clone(), auth.clone()));
    let Some(auth) = auth else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"authentication required\n")));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response.headers_mut().insert("www-authenticate", "Basic realm=\"git\"".parse().unwrap());
        return response;
    };
    if mode == Hostile::Redirect {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::FOUND;
        let location = format!("https://git.test:{port}/app.git/moved{}", req.uri().path_and_query().unwrap());
        response.headers_mut().insert("location", location.parse().unwrap());
        return response;
    }
    {
        let mut done = built.lock().await;
        if !*done {
            // What a hostile host does with what it was sent: it is the repository.
            let (root, seen) = (root.to_path_buf(), auth.clone());
            tokio::task::spawn_blocking(move || build_repo(&root, &seen)).await.unwrap();
            *done = true;
        }
    }
    common::git_server::cgi(req, root).await
}

async fn session(c: &Cluster, kubelet: &Kubelet, port: u16, id: &str) -> (SessionResult, Vec<AuditRecord>) {
    kubelet.install(&c.fake);
    start(c.backend(), clone_plan(port, "5m"), SessionId::new(id).unwrap()).await.unwrap()
}

// ---------------------------------------------------------------------------------
// Holes.
// ---------------------------------------------------------------------------------

/// FAILED on abefdea. A repository host that hands back what it was sent: it builds the
/// repository it serves from the `Authorization` header of the clone's first request
/// (one file, `SEEN`). Seen: the clone succeeds, the session succeeds, the workload
/// starts, and the workspace the workload container mounts holds the credential as the
/// basic-auth header value (base64 of `x-access-token:<token>`), while
/// docs/containment.md says the workspace the workload gets holds none of it. Nothing
/// looks into what the clone wrote: the binding path checks and withholds reflected
/// forms in a response (and says stripping cannot be complete), the clone step neither
/// checks nor says. Why it matters: the promise is that only the clone init container
/// ever sees the credential; here the tenant's workload image reads it with `cat SEEN`.
/// Closed on 2026-12-02: the clone step looks for the credential's forms in the checkout,
/// the names and every object, and refuses the repository (exit 3, workspace emptied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_repository_host_that_reflects_the_credential_is_refused() {
    let c = cluster(PodScript::Exit(0), Address::AtOnce).await;
    let host = HostileGit::start(c.ca.server_config(&["git.test"]), Hostile::Reflect).await;
    let kubelet = Kubelet::new(&c, Node::Fresh, Arc::default());
    let (result, records) = session(&c, &kubelet, host.port, "ses-kube-rt-reflect").await;
    let ran: Vec<(PathBuf, String, i32)> = kubelet.ran();
    assert_eq!(ran.len(), 1);
    let (workspace, stderr, code) = &ran[0];
    assert_eq!(*code, 3, "refused: {stderr}");
    assert!(stderr.contains("holds the clone credential"), "{stderr}");
    assert!(leaks(stderr.as_bytes()).is_empty(), "{stderr}");
    assert_eq!(clone_finished(&records).map(|(ok, _)| ok), Some(false));
    assert!(!workload_started(&records), "the workload started");
    assert_eq!(result.status.to_string(), "failed (exit 3)");
    assert!(host.requests().iter().any(|(_, auth)| auth.as_deref() == Some(expected_header().as_str())));
    let leaked: Vec<(String, Vec<&str>)> = files(workspace)
        .iter()
        .filter(|(_, body)| !leaks(body).is_empty())
        .map(|(p, body)| (p.strip_prefix(workspace).unwrap().display().to_string(), leaks(body)))
        .collect();
    assert!(
        leaked.is_empty(),
        "the workspace the workload gets holds the credential: {leaked:?} (session {}, workload started: {})",
        result.status,
        workload_started(&records)
    );
}

// ---------------------------------------------------------------------------------
// What held (regression value).
// ---------------------------------------------------------------------------------

/// Held on abefdea. A redirecting repository host (the case attacks_kube_clone.rs and
/// containment.md list as not played on Kubernetes): every request, the first one
/// included, gets a 302 to another path under the repository URL, where the credential
/// header's URL scope (`http.<repo URL>.extraHeader`) would still apply. git, under the
/// submitted `http.followRedirects=false`, does not follow: the host sees one request
/// (the first, with the credential, as it is the repository URL) and nothing at the
/// redirect's target; the clone fails, the workload never starts, nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_redirecting_repository_host_is_not_followed() {
    let c = cluster(PodScript::Exit(0), Address::AtOnce).await;
    let host = HostileGit::start(c.ca.server_config(&["git.test"]), Hostile::Redirect).await;
    let kubelet = Kubelet::new(&c, Node::Fresh, Arc::default());
    let (result, records) = session(&c, &kubelet, host.port, "ses-kube-rt-redirect").await;
    let ran: Vec<(String, i32)> = kubelet.ran().into_iter().map(|(_, stderr, code)| (stderr, code)).collect();
    assert_eq!(ran.len(), 1);
    assert_ne!(ran[0].1, 0, "the clone failed: {}", ran[0].0);
    let requests = host.requests();
    assert!(!requests.is_empty(), "the clone reached the host");
    assert!(requests.iter().all(|(path, _)| !path.contains("/moved")), "a redirect was followed: {requests:?}");
    assert_eq!(clone_finished(&records).map(|(ok, _)| ok), Some(false));
    assert!(!workload_started(&records));
    assert!(!matches!(result.status, enclave_core::SessionStatus::Succeeded), "{:?}", result.status);
    for kind in ["jobs", "pods", "secrets", "networkpolicies"] {
        assert_eq!(c.fake.names(kind), Vec::<String>::new(), "{kind} left behind");
    }
    // The clone's own log (its stderr) holds no form of the credential either.
    assert_eq!(leaks(ran[0].0.as_bytes()), Vec::<&str>::new());
}

/// Held on abefdea. A hostile repository's content that would run code in the clone if
/// git read it: `.gitattributes` naming a smudge filter and a textconv driver for every
/// path, with the driver commands in the repository's own `.lfsconfig`, `gitconfig`
/// and a top-level `config` file (git reads none of them; the test git server's own
/// git would read a `.gitconfig` there as its `$HOME`'s, so that name is left out), plus an `ident`/`eol`
/// attribute. The clone as submitted checks it out (filters without a configured driver
/// are skipped) and no command ran: the marker file is never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_repository_filters_and_drivers_do_not_run_in_the_clone() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("ran");
    let payload = format!("sh -c 'env > {}'", marker.display());
    let c = cluster_with(PodScript::Exit(0), Address::AtOnce, |work| {
        std::fs::write(work.join(".gitattributes"), "* filter=evil diff=evil ident eol=crlf\n").unwrap();
        let config = format!(
            "[filter \"evil\"]\n\tsmudge = {payload}\n\tprocess = {payload}\n\trequired = true\n[diff \"evil\"]\n\ttextconv = {payload}\n[core]\n\tfsmonitor = {payload}\n\thooksPath = hooks\n"
        );
        for name in [".lfsconfig", "config", "gitconfig"] {
            std::fs::write(work.join(name), &config).unwrap();
        }
        std::fs::create_dir_all(work.join("hooks")).unwrap();
        std::fs::write(work.join("hooks/post-checkout"), format!("#!/bin/sh\n{payload}\n")).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(work.join("hooks/post-checkout")).status().unwrap();
    })
    .await;
    let kubelet = Kubelet::new(&c, Node::Fresh, Arc::default());
    let (_result, records) = session(&c, &kubelet, c.git.addr.port(), "ses-kube-rt-filters").await;
    let ran: Vec<(String, i32)> = kubelet.ran().into_iter().map(|(_, stderr, code)| (stderr, code)).collect();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].1, 0, "checked out: {}", ran[0].0);
    assert_eq!(clone_finished(&records).map(|(ok, _)| ok), Some(true));
    assert!(!marker.exists(), "a command from the repository ran in the clone");
}

/// Held on abefdea. Spec level: the ref and the URL, the tenant's only inputs to the
/// clone's command line, cannot be options or other transports: option-shaped refs
/// (`--upload-pack=...`, `-oProxyCommand`), refspecs (`main:refs/x`), `ext::`,
/// `file://`, local paths, plain `http`, userinfo and `fd::` are refused at parse time.
#[test]
fn option_shaped_refs_and_other_transports_are_refused_by_the_spec() {
    let spec = |url: &str, git_ref: &str| {
        format!(
            "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: t\nspec:\n  command: [\"true\"]\n  repo:\n    url: '{url}'\n    ref: '{git_ref}'\n"
        )
    };
    let ok = "https://git.test/app.git";
    assert!(enclave_spec::parse("t.yaml", spec(ok, "main").as_bytes()).is_ok(), "the baseline parses");
    for git_ref in ["--upload-pack=touch /tmp/x", "-oProxyCommand=x", "main:refs/heads/x", "a..b", "HEAD@{1}~1", "x y"]
    {
        assert!(enclave_spec::parse("t.yaml", spec(ok, git_ref).as_bytes()).is_err(), "ref {git_ref:?} accepted");
    }
    for url in [
        "ext::sh -c touch% /tmp/x",
        "file:///etc/app.git",
        "/srv/app.git",
        "http://git.test/app.git",
        "https://user@git.test/app.git",
        "https://u:p@git.test/app.git",
        "fd::3",
        "https://git.test/app.git?x=1",
    ] {
        assert!(enclave_spec::parse("t.yaml", spec(url, "main").as_bytes()).is_err(), "url {url:?} accepted");
    }
}
