//! Test servers on this machine only, for the tests of several crates: loopback
//! canaries (plain and TLS) that count what reaches them, a certificate authority that
//! exists only for the test, a DNS stub whose answers the test scripts, and the raw HTTP
//! and CONNECT clients that talk to a proxy under test. The design decision: none of it
//! knows Enclave (no workspace crate is a dependency), so any crate's tests can use it
//! without a dependency cycle. It must never talk to an address the test did not create.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failure here is a broken test machine, and a panic says so"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The `bindings:` block (at a spec's indentation) of the tests' binding `api`: host
/// `api.binding.test`, upstream `port`, secret `api-token` sent as a bearer token, GET
/// on `/v1/*` only.
pub fn api_binding_yaml(port: u16) -> String {
    format!(
        r#"  bindings:
    - name: api
      host: api.binding.test
      port: {port}
      secret: api-token
      inject:
        header: Authorization
        format: "Bearer {{secret}}"
      methods: [GET]
      paths: ["/v1/*"]
"#
    )
}

/// A certificate authority that exists only for this test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA with a fresh key.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("ca key");
        Self { issuer: CertifiedIssuer::self_signed(params, key).expect("ca cert") }
    }

    /// The CA certificate (DER), to trust.
    pub fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for these names (DNS names or IP literals).
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("leaf");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        Arc::new(config)
    }

    /// A server certificate for these names and its key, as PEM (what an operator
    /// hands a server in files).
    pub fn server_pem(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("leaf");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// A client that trusts only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.der())).expect("add ca");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// How a canary answers a request (given the raw request head and body).
pub type Reply = Arc<dyn Fn(&str) -> String + Send + Sync>;
/// How a canary answers, in bytes.
pub type RawReply = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// An HTTP(S) server on a loopback address that records every connection and request.
#[derive(Clone)]
pub struct Canary {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Canary {
    /// A plain HTTP canary on `ip` that echoes each request head in its body.
    pub async fn http(ip: Ipv4Addr) -> Self {
        Self::start(ip, None, echo()).await
    }

    /// A TLS canary with this server config, echoing request heads.
    pub async fn https(ip: Ipv4Addr, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start(ip, Some(tls), echo()).await
    }

    /// A canary with its own reply.
    pub async fn start(ip: Ipv4Addr, tls: Option<Arc<rustls::ServerConfig>>, reply: Reply) -> Self {
        Self::start_raw(ip, tls, Arc::new(move |request: &str| reply(request).into_bytes())).await
    }

    /// A canary whose reply is raw bytes (a compressed body, a hostile status line).
    pub async fn start_raw(ip: Ipv4Addr, tls: Option<Arc<rustls::ServerConfig>>, reply: RawReply) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind canary");
        let canary =
            Self { addr: listener.local_addr().expect("addr"), connections: Arc::default(), requests: Arc::default() };
        let me = canary.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                me.connections.fetch_add(1, Ordering::SeqCst);
                let (me, tls, reply) = (me.clone(), tls.clone(), reply.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                            if let Ok(stream) = acceptor.accept(stream).await {
                                me.serve(stream, reply).await;
                            }
                        }
                        None => me.serve(stream, reply).await,
                    }
                });
            }
        });
        canary
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S, reply: RawReply) {
        let Some(request) = read_request(&mut stream).await else { return };
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).push(request.clone());
        let _ = stream.write_all(&reply(&request)).await;
        let _ = stream.shutdown().await;
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address it listens on.
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    /// Connections accepted (TCP level: counts even a connection that sent nothing).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests received, raw (head and any body read with it).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Replies 200 with the request echoed in the body.
pub fn echo() -> Reply {
    Arc::new(|request: &str| response(200, &[], request))
}

/// An HTTP/1.1 response that closes the connection.
pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// Reads one request head, plus a body as announced by Content-Length (bounded).
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length.min(65536) {
                return Some(text);
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).to_string());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends raw bytes to `addr` and returns everything it answers until it closes.
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_all(&mut stream).await
}

async fn read_all<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// The status code of a raw HTTP response (0 if there is none).
pub fn status(response: &str) -> u16 {
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// What a CONNECT attempt came to.
#[derive(Debug)]
pub enum Tunnel {
    /// The proxy refused the CONNECT with this status.
    Refused(u16),
    /// The CONNECT was accepted but TLS through it failed.
    TlsFailed(String),
    /// TLS worked; this is the HTTP response to the request sent through it.
    Answered(String),
}

/// `CONNECT authority`, then TLS with `sni` (an IP literal sends none), then `request`.
pub async fn connect_tls(
    proxy: SocketAddr,
    authority: &str,
    sni: &str,
    tls: Arc<rustls::ClientConfig>,
    request: &str,
) -> Tunnel {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to proxy");
    let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(connect.as_bytes()).await.expect("write");
    let head = read_head(&mut stream).await;
    if status(&head) != 200 {
        return Tunnel::Refused(status(&head));
    }
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let connector = tokio_rustls::TlsConnector::from(tls);
    match tokio::time::timeout(Duration::from_secs(15), connector.connect(name, stream)).await {
        Ok(Ok(mut tls)) => {
            if let Err(e) = tls.write_all(request.as_bytes()).await {
                return Tunnel::TlsFailed(e.to_string());
            }
            Tunnel::Answered(read_all(&mut tls).await)
        }
        Ok(Err(e)) => Tunnel::TlsFailed(e.to_string()),
        Err(_) => Tunnel::TlsFailed("timed out".to_owned()),
    }
}

/// `CONNECT authority`, then these raw bytes; returns the status and what came back.
pub async fn connect_raw(proxy: SocketAddr, authority: &str, bytes: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to proxy");
    let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(connect.as_bytes()).await.expect("write");
    let head = read_head(&mut stream).await;
    if status(&head) != 200 || bytes.is_empty() {
        return (status(&head), head);
    }
    let _ = stream.write_all(bytes).await;
    (200, read_all(&mut stream).await)
}

/// Reads a response head (up to the blank line), a byte at a time so that nothing after
/// it is consumed.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(15), stream.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

/// A DNS server on loopback answering A queries from a script: the n-th query gets
/// `answers[n]` (the last one repeated); AAAA queries get an empty answer.
pub struct DnsStub {
    /// Where it answers (UDP).
    pub addr: SocketAddr,
    a_queries: Arc<AtomicUsize>,
}

impl DnsStub {
    /// A stub on 127.0.0.1 answering from `answers` (which must not be empty).
    pub async fn start(answers: Vec<Ipv4Addr>) -> Self {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind dns stub");
        let addr = socket.local_addr().expect("addr");
        let a_queries = Arc::new(AtomicUsize::new(0));
        let counter = a_queries.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
                let Some(reply) = dns_reply(&buf[..n], &answers, &counter) else { continue };
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        Self { addr, a_queries }
    }

    /// A queries answered so far.
    pub fn a_queries(&self) -> usize {
        self.a_queries.load(Ordering::SeqCst)
    }
}

fn dns_reply(query: &[u8], answers: &[Ipv4Addr], counter: &AtomicUsize) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    while *query.get(i)? != 0 {
        i += usize::from(query[i]) + 1;
    }
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let question = &query[12..i + 5];
    let answer = (qtype == 1).then(|| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        answers[n.min(answers.len() - 1)]
    });
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&query[..2]); // id
    out.extend_from_slice(&[0x81, 0x80]); // response, recursion desired and available
    out.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if let Some(ip) = answer {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}
