//! A git smart-HTTP server over TLS on loopback, with HTTP basic auth: `git
//! http-backend` (from the host's git) run as CGI per request, behind a small hyper
//! server. It records every request's auth outcome so a test can prove the credential
//! was (or was not) presented.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

/// A running server.
pub struct GitServer {
    pub addr: SocketAddr,
    /// (path, authorized) of every request.
    log: Arc<Mutex<Vec<(String, bool)>>>,
    _root: tempfile::TempDir,
}

impl GitServer {
    /// Serves one repository `app.git` (branch `main`, one commit with README.md
    /// containing `readme`) to clients presenting `user:password`.
    pub async fn start(tls: Arc<rustls::ServerConfig>, user: &str, password: &str, readme: &str) -> Self {
        Self::start_with(tls, user, password, readme, |_| {}).await
    }

    /// As [`GitServer::start`], with `extra` writing more files into the commit (a
    /// hostile repository's content).
    pub async fn start_with(
        tls: Arc<rustls::ServerConfig>,
        user: &str,
        password: &str,
        readme: &str,
        extra: impl FnOnce(&Path),
    ) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        make_repo(root.path(), readme, extra);
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        let log: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let (project_root, log2) = (root.path().to_path_buf(), log.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                let (project_root, expected, log) = (project_root.clone(), expected.clone(), log2.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(move |req| {
                        let (project_root, expected, log) = (project_root.clone(), expected.clone(), log.clone());
                        async move { Ok::<_, Infallible>(handle(req, &project_root, &expected, &log).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, log, _root: root }
    }

    /// (path, authorized) of every request so far.
    pub fn requests(&self) -> Vec<(String, bool)> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?} failed");
}

/// Writes `app.git` under `root`: a bare repository of one commit on `main` holding
/// `README.md` (`readme`) and whatever `extra` adds.
pub fn make_repo(root: &Path, readme: &str, extra: impl FnOnce(&Path)) {
    let work = root.join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README.md"), readme).expect("write");
    extra(&work);
    git(&work, &["add", "-A"]);
    git(&work, &["-c", "user.name=t", "-c", "user.email=t@e.test", "commit", "-q", "-m", "first"]);
    git(root, &["clone", "-q", "--bare", "work", "app.git"]);
}

async fn handle(
    req: Request<Incoming>,
    project_root: &Path,
    expected: &str,
    log: &Mutex<Vec<(String, bool)>>,
) -> Response<Full<Bytes>> {
    let authorized = req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(expected);
    log.lock().unwrap_or_else(PoisonError::into_inner).push((req.uri().path().to_owned(), authorized));
    if !authorized {
        let mut response = Response::new(Full::new(Bytes::from_static(b"authentication required\n")));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response.headers_mut().insert("www-authenticate", "Basic realm=\"git\"".parse().expect("header"));
        return response;
    }
    cgi(req, project_root).await
}

/// Serves one smart-HTTP request from the repositories under `root` with `git
/// http-backend` as CGI.
pub async fn cgi(req: Request<Incoming>, root: &Path) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let protocol = req.headers().get("git-protocol").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", protocol)
        .env("REMOTE_USER", "tester")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("git http-backend");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body).await;
    }
    let output = child.wait_with_output().await.expect("http-backend output");
    let split = output
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"bad cgi output\n")));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        return response;
    };
    let head = String::from_utf8_lossy(&output.stdout[..end]).to_string();
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(&output.stdout[end + sep..])));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) =
            (hyper::header::HeaderName::from_bytes(name.as_bytes()), hyper::header::HeaderValue::from_str(value))
        {
            response.headers_mut().append(name, value);
        }
    }
    response
}
