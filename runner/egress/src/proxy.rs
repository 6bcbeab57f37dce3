//! The per-session proxy: one listener per session, so the connection's arrival point
//! names the session (never a header).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enclave_core::{
    AddressClass, BackendEvent, BindingPlan, Decision, DecisionContext, DenyReason, EgressPhase, Plan, Redactor,
    Resolution, SecretStore, check_binding_scope, classify, decide,
};
use enclave_spec::{Host, canonical_host};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::binding_response;
use crate::host_addresses::HostAddresses;
use crate::record::Recorder;
use crate::resolve::Resolve;
use crate::sni::{Hello, read_hello};

/// The name of the clone step's end-of-clone signal; under `.invalid`, so it can never
/// be a real destination.
pub const CLONE_DONE_HOST: &str = "clone-done.enclave.invalid";
/// What the clone step fetches (`git ls-remote`, through the proxy) once its checkout is
/// done: the proxy revokes the clone reach of the session the connection comes from,
/// records that, and only then answers. A platform where the clone and the workload share
/// a network identity (a Kubernetes pod) relies on it: the clone container exits only
/// after the answer, so the workload never starts with the clone's reach.
pub const CLONE_DONE_URL: &str = "http://clone-done.enclave.invalid/";

/// Response bodies from the proxy.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// How long a client has to send its TLS ClientHello after CONNECT.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialling an upstream may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest binding response the proxy buffers to strip an echoed credential.
pub const MAX_BINDING_RESPONSE: usize = 16 * 1024 * 1024;

/// Everything one session's proxy needs.
pub struct SessionProxyConfig {
    /// The session's plan: its rules, bindings and clone host.
    pub plan: Arc<Plan>,
    /// Where binding credentials come from.
    pub secrets: Arc<dyn SecretStore>,
    /// DNS.
    pub resolver: Arc<dyn Resolve>,
    /// Where decisions go (the session's audit).
    pub recorder: Arc<dyn Recorder>,
    /// The proxy's own addresses: never a destination.
    pub proxy_addresses: Vec<IpAddr>,
    /// The host's addresses: never a destination (live from the kernel by default).
    pub host_addresses: HostAddresses,
    /// Networks the operator trusts for the clone phase (see [`DecisionContext`]).
    pub trusted_clone_networks: Vec<IpNet>,
    /// TLS client settings for binding upstreams (verified against these roots).
    pub upstream_tls: Arc<rustls::ClientConfig>,
    /// The phase the session starts in.
    pub phase: EgressPhase,
}

/// One session's proxy. Cheap to share; [`SessionProxy::serve`] runs it on a listener.
pub struct SessionProxy {
    cfg: SessionProxyConfig,
    redactor: Redactor,
    /// The current phase, or `None` once the session has ended.
    phase: watch::Sender<Option<EgressPhase>>,
}

/// The accept loop of a running proxy; stops it when dropped.
pub struct ProxyTask {
    proxy: Arc<SessionProxy>,
    accept: JoinHandle<()>,
    /// Where the proxy listens.
    pub address: SocketAddr,
}

impl ProxyTask {
    /// The proxy this task runs.
    pub fn proxy(&self) -> &Arc<SessionProxy> {
        &self.proxy
    }
}

impl Drop for ProxyTask {
    fn drop(&mut self) {
        self.accept.abort();
        self.proxy.close();
    }
}

impl SessionProxy {
    /// A proxy for one session.
    pub fn new(cfg: SessionProxyConfig) -> Arc<Self> {
        let redactor = Redactor::new(&cfg.secrets.redaction_values());
        let (phase, _) = watch::channel(Some(cfg.phase));
        Arc::new(Self { cfg, redactor, phase })
    }

    /// The phase whose reach applies now (`None` after the session ended).
    pub fn phase(&self) -> Option<EgressPhase> {
        *self.phase.borrow()
    }

    /// Ends the clone phase: from now on only the workload's rules apply, and tunnels
    /// opened under the clone rule are closed. Returns whether the session was in its
    /// clone phase (so the caller records the revocation once).
    pub fn revoke_clone_reach(&self) -> bool {
        self.phase.send_if_modified(|phase| {
            let cloning = *phase == Some(EgressPhase::Clone);
            if cloning {
                *phase = Some(EgressPhase::Run);
            }
            cloning
        })
    }

    /// Ends the session: every open connection is closed and new ones get nothing.
    pub fn close(&self) {
        self.phase.send_replace(None);
    }

    /// Accepts connections on `listener` until the returned task is dropped.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<ProxyTask> {
        let address = listener.local_addr()?;
        let proxy = self.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _peer)) = listener.accept().await else { continue };
                let proxy = proxy.clone();
                tokio::spawn(async move { proxy.serve_connection(stream).await });
            }
        });
        Ok(ProxyTask { proxy: self.clone(), accept, address })
    }

    /// Serves one accepted connection of this session (one request, or one tunnel).
    /// The caller vouches that the connection is the session's: by the listener it
    /// arrived on, or by its source address (see [`crate::serve_directory`]).
    pub async fn serve_connection(self: Arc<Self>, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut closed = self.phase.subscribe();
        // hyper normalises framing headers before a handler sees them (it drops a
        // Content-Length sent beside Transfer-Encoding), so ambiguity is judged on the
        // raw head. One request per connection keeps that judgement complete: there is
        // no second, unscanned request behind the first.
        // The whole head within one deadline: a client trickling bytes holds nothing open.
        let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
            Ok(Ok(head)) => head,
            _ => return,
        };
        if let Err(detail) = check_raw_head(&head) {
            let (host, port) = request_target(&head);
            if let Some(phase) = self.phase() {
                self.bad_request(phase, &host, port, detail).await;
            }
            let body = format!("enclave egress: malformed request: {detail}\n");
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
        let stream = Prefixed { prefix: head, inner: stream };
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::select! {
            _ = conn => {}
            _ = closed.wait_for(Option::is_none) => {}
        }
    }

    fn context<'a>(&'a self, phase: EgressPhase, host_addresses: &'a [IpNet]) -> DecisionContext<'a> {
        DecisionContext {
            plan: &self.cfg.plan,
            phase,
            proxy_addresses: &self.cfg.proxy_addresses,
            host_addresses,
            trusted_clone_networks: &self.cfg.trusted_clone_networks,
        }
    }

    /// Canonicalises, resolves once and decides. The addresses returned are the only
    /// ones that may be dialled for this request.
    async fn check(&self, phase: EgressPhase, host: &str, port: u16) -> (Decision, Vec<IpAddr>) {
        let host_addresses = self.cfg.host_addresses.current();
        let addrs = match canonical_host(host) {
            Ok(Host::Ip(ip)) => vec![ip],
            Ok(Host::Domain(name)) => {
                // Decide on the name first: a name no rule admits is never looked up,
                // so DNS cannot be used to leak it.
                let first = decide(&self.context(phase, &host_addresses), host, port, Resolution::NotModelled);
                if !first.is_allow() {
                    return (first, Vec::new());
                }
                self.cfg.resolver.lookup(&name).await.unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
        let decision = decide(&self.context(phase, &host_addresses), host, port, Resolution::Resolved(&addrs));
        (decision, addrs)
    }

    async fn record_decision(&self, phase: EgressPhase, host: &str, port: u16, decision: Decision) -> Decision {
        let event = BackendEvent::Egress { phase, host: host.to_owned(), port, decision: decision.clone() };
        if self.cfg.recorder.record(event).await {
            decision
        } else {
            Decision::Deny { reason: DenyReason::AuditUnavailable }
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let Some(phase) = self.phase() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "enclave egress: the session has ended");
        };
        if req.method() == Method::GET
            && req.uri().host() == Some(CLONE_DONE_HOST)
            && req.uri().scheme_str() == Some("http")
        {
            return self.clone_done().await;
        }
        if req.method() == Method::CONNECT { self.connect(phase, req).await } else { self.forward(phase, req).await }
    }

    /// The clone step's own signal that it is over (see [`CLONE_DONE_URL`]): the clone
    /// reach is revoked, and the revocation recorded, before the answer goes out. The
    /// answer is an empty git ref advertisement, so `git ls-remote` succeeds on it and on
    /// nothing else. Never leaves the proxy; from a workload it changes nothing (its
    /// session is past its clone phase by then).
    async fn clone_done(&self) -> Response<ProxyBody> {
        if self.revoke_clone_reach() && !self.cfg.recorder.record(BackendEvent::CloneReachRevoked).await {
            return text(StatusCode::SERVICE_UNAVAILABLE, "enclave egress: the audit log cannot be written");
        }
        let mut response = Response::new(full(Bytes::from_static(b"001e# service=git-upload-pack\n00000000")));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-git-upload-pack-advertisement"));
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }

    async fn bad_request(&self, phase: EgressPhase, host: &str, port: u16, detail: &str) -> Response<ProxyBody> {
        let decision = Decision::Deny { reason: DenyReason::BadRequest { detail: detail.to_owned() } };
        self.record_decision(phase, host, port, decision).await;
        text(StatusCode::BAD_REQUEST, &format!("enclave egress: malformed request: {detail}"))
    }

    /// `CONNECT host:port`: TLS passthrough after the ClientHello's SNI matches.
    async fn connect(self: Arc<Self>, phase: EgressPhase, req: Request<Incoming>) -> Response<ProxyBody> {
        let Some((host, port)) = connect_target(req.uri()) else {
            let target = req.uri().to_string();
            return self.bad_request(phase, &target, 0, "CONNECT needs host:port").await;
        };
        let (decision, addrs) = self.check(phase, &host, port).await;
        if let Decision::Allow { rule } = &decision
            && rule.starts_with("binding:")
        {
            let detail = "bindings are called with plain http (http://HOST/...), not through a tunnel";
            return self.bad_request(phase, &host, port, detail).await;
        }
        if let Decision::Deny { reason } = &decision {
            let reason = reason.to_string();
            self.record_decision(phase, &host, port, decision).await;
            return text(StatusCode::FORBIDDEN, &format!("enclave egress: {host}:{port} denied: {reason}"));
        }
        // The decision is recorded once the ClientHello has been checked: an allowed
        // name with a mismatched SNI is a deny, not an allow.
        let proxy = self.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            proxy.tunnel(phase, TokioIo::new(upgraded), host, port, addrs).await;
        });
        Response::new(empty())
    }

    async fn tunnel(
        &self,
        phase: EgressPhase,
        mut client: TokioIo<hyper::upgrade::Upgraded>,
        host: String,
        port: u16,
        addrs: Vec<IpAddr>,
    ) {
        let hello = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut client)).await;
        let (hello, first_bytes) = match hello {
            Ok(Ok(read)) => read,
            _ => (Hello::Unreadable, Vec::new()),
        };
        let is_ip = matches!(canonical_host(&host), Ok(Host::Ip(_)));
        let sni_ok = match &hello {
            Hello::ServerName(sni) => {
                !is_ip && canonical_host(sni).ok().zip(canonical_host(&host).ok()).is_some_and(|(a, b)| a == b)
            }
            // Clients send no SNI for an address literal; a CIDR rule admitted it.
            Hello::NoServerName => is_ip,
            Hello::Unreadable | Hello::Incomplete => false,
        };
        let decision = if sni_ok {
            self.check(phase, &host, port).await.0
        } else {
            let sni = match hello {
                Hello::ServerName(sni) => Some(sni),
                _ => None,
            };
            Decision::Deny { reason: DenyReason::SniMismatch { sni } }
        };
        // Re-deciding above never re-resolves for dialling: `addrs` stays the answer.
        let decision = match decision {
            Decision::Allow { .. } if sni_ok => {
                let again = decide(
                    &self.context(phase, &self.cfg.host_addresses.current()),
                    &host,
                    port,
                    Resolution::Resolved(&addrs),
                );
                self.record_decision(phase, &host, port, again).await
            }
            other => self.record_decision(phase, &host, port, other).await,
        };
        if !decision.is_allow() {
            let _ = client.shutdown().await;
            return;
        }
        let Some(mut upstream) = dial(&addrs, port).await else {
            let _ = client.shutdown().await;
            return;
        };
        if upstream.write_all(&first_bytes).await.is_err() {
            return;
        }
        let mut phase_rx = self.phase.subscribe();
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            // A tunnel lives only as long as the reach that admitted it.
            _ = phase_rx.wait_for(|now| *now != Some(phase)) => {}
        }
    }

    /// Absolute-form plain HTTP, and binding calls.
    async fn forward(self: Arc<Self>, phase: EgressPhase, req: Request<Incoming>) -> Response<ProxyBody> {
        let uri = req.uri().clone();
        let Some(authority) = uri.authority().cloned() else {
            let detail = "not a proxy request: use an absolute URL (http://host/path)";
            return self.bad_request(phase, "", 0, detail).await;
        };
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host().to_owned();
        if authority.as_str().contains('@') {
            return self.bad_request(phase, &host, port, "userinfo in the URL").await;
        }
        if uri.scheme_str() != Some("http") {
            return self
                .bad_request(phase, &host, port, "only http:// URLs are forwarded; use CONNECT for https")
                .await;
        }
        if let Err(detail) = check_framing(req.headers()) {
            return self.bad_request(phase, &host, port, detail).await;
        }
        let (decision, addrs) = self.check(phase, &host, port).await;
        let binding = match &decision {
            Decision::Allow { rule } => rule
                .strip_prefix("binding:")
                .and_then(|name| self.cfg.plan.bindings.iter().find(|b| b.name == name))
                .cloned(),
            Decision::Deny { .. } => None,
        };
        let decision = self.record_decision(phase, &host, port, decision).await;
        if let Decision::Deny { reason } = &decision {
            return text(StatusCode::FORBIDDEN, &format!("enclave egress: {host}:{port} denied: {reason}"));
        }
        match binding {
            Some(binding) => self.call_binding(&binding, &addrs, req).await,
            None => self.plain(&host, port, &addrs, req).await,
        }
    }

    async fn plain(&self, host: &str, port: u16, addrs: &[IpAddr], req: Request<Incoming>) -> Response<ProxyBody> {
        let Some(stream) = dial(addrs, port).await else {
            return text(StatusCode::BAD_GATEWAY, &format!("enclave egress: cannot connect to {host}:{port}"));
        };
        let host_header = match canonical_host(host) {
            Ok(h) if port == 80 => h.to_string(),
            Ok(h) => format!("{h}:{port}"),
            Err(_) => return text(StatusCode::BAD_REQUEST, "enclave egress: invalid host"),
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let Ok(value) = HeaderValue::from_str(&host_header) else {
            return text(StatusCode::BAD_REQUEST, "enclave egress: invalid host");
        };
        parts.headers.insert(header::HOST, value);
        parts.uri = origin_form(&parts.uri);
        let request = Request::from_parts(parts, body);
        match send(TokioIo::new(stream), request).await {
            Ok(mut response) => {
                strip_hop_by_hop(response.headers_mut());
                response.map(BodyExt::boxed)
            }
            Err(e) => text(StatusCode::BAD_GATEWAY, &format!("enclave egress: upstream {host}:{port}: {e}")),
        }
    }

    /// A binding call: scope check, then verified TLS to the binding's own host and
    /// port with the credential set by the proxy, and the credential stripped from
    /// whatever comes back.
    async fn call_binding(
        &self,
        binding: &BindingPlan,
        addrs: &[IpAddr],
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let method = req.method().to_string();
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let path = path_and_query.split(['?', '#']).next().unwrap_or("/").to_owned();
        let used = |allowed: bool, status: Option<u16>, reason: Option<String>| BackendEvent::BindingUsed {
            binding: binding.name.clone(),
            host: binding.host.clone(),
            method: method.clone(),
            path: path.clone(),
            allowed,
            status,
            reason,
        };
        if let Err(e) = check_binding_scope(binding, &method, &path_and_query) {
            self.cfg.recorder.record(used(false, None, Some(e.to_string()))).await;
            return text(StatusCode::FORBIDDEN, &format!("enclave egress: {e}"));
        }
        let Some(secret) = self.cfg.secrets.resolve(&binding.secret) else {
            let reason = format!("secret {} is not set", binding.secret);
            self.cfg.recorder.record(used(false, None, Some(reason.clone()))).await;
            return text(StatusCode::BAD_GATEWAY, &format!("enclave egress: binding {}: {reason}", binding.name));
        };
        let Ok(mut value) = HeaderValue::from_str(&binding.format.replace("{secret}", secret.expose())) else {
            let reason = "the secret is not a valid header value".to_owned();
            self.cfg.recorder.record(used(false, None, Some(reason.clone()))).await;
            return text(StatusCode::BAD_GATEWAY, &format!("enclave egress: binding {}: {reason}", binding.name));
        };
        value.set_sensitive(true);
        let Ok(header_name) = HeaderName::from_bytes(binding.header.as_bytes()) else {
            return text(StatusCode::BAD_GATEWAY, "enclave egress: invalid binding header name");
        };
        if !self.cfg.recorder.record(used(true, None, None)).await {
            return text(StatusCode::FORBIDDEN, "enclave egress: the audit log cannot be written");
        }
        let response = self.binding_upstream(binding, addrs, req, header_name, value).await;
        let (response, status, note) = match response {
            Ok((response, note)) => {
                let status = response.status().as_u16();
                (response, Some(status), note)
            }
            Err(e) => {
                // Errors carry the upstream's words (a certificate's names, a header):
                // one holding the credential is replaced whole.
                let e = if self.redactor.found_in(e.as_bytes()) {
                    "the upstream's answer could not be passed on, and its details held the credential".to_owned()
                } else {
                    self.redactor.redact(&e)
                };
                let response = text(StatusCode::BAD_GATEWAY, &format!("enclave egress: binding {}: {e}", binding.name));
                (response, None, Some(e))
            }
        };
        self.cfg.recorder.record(used(true, status, note)).await;
        response
    }

    /// The call itself; `Ok` carries what was held back from the answer, if anything.
    async fn binding_upstream(
        &self,
        binding: &BindingPlan,
        addrs: &[IpAddr],
        req: Request<Incoming>,
        header_name: HeaderName,
        value: HeaderValue,
    ) -> Result<(Response<ProxyBody>, Option<String>), String> {
        let stream = dial(addrs, binding.port).await.ok_or_else(|| format!("cannot connect to {}", binding.host))?;
        let server_name = rustls::pki_types::ServerName::try_from(binding.host.clone())
            .map_err(|e| format!("invalid server name {}: {e}", binding.host))?;
        let tls = tokio_rustls::TlsConnector::from(self.cfg.upstream_tls.clone())
            .connect(server_name, stream)
            .await
            .map_err(|e| format!("TLS with {}: {e}", binding.host))?;
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        binding_response::prepare_request(&mut parts.headers);
        let host_header =
            if binding.port == 443 { binding.host.clone() } else { format!("{}:{}", binding.host, binding.port) };
        parts.headers.insert(header::HOST, HeaderValue::from_str(&host_header).map_err(|e| e.to_string())?);
        // Overwrite: whatever the workload sent under this name never reaches upstream.
        parts.headers.remove(&header_name);
        parts.headers.insert(header_name, value);
        parts.uri = origin_form(&parts.uri);
        let response = send(TokioIo::new(tls), Request::from_parts(parts, body)).await?;
        let (mut parts, body) = response.into_parts();
        binding_response::check_transfer_codings(&parts.headers)?;
        strip_hop_by_hop(&mut parts.headers);
        let collected = Limited::new(body, MAX_BINDING_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?
            .to_bytes();
        // An upstream that echoes the credential back, in any common form, does not hand
        // it to the workload.
        let (body, withheld) =
            binding_response::withhold(&self.redactor, &mut parts, &collected, MAX_BINDING_RESPONSE)?;
        Ok((Response::from_parts(parts, full(body)), withheld.note()))
    }
}

/// The most header bytes a request may have.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Reads up to the end of the first request head (and whatever arrived with it).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(buf); // judged (and refused) as too large
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Judges the raw head: framing must be unambiguous before anything is forwarded.
fn check_raw_head(buf: &[u8]) -> Result<(), &'static str> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err("request head too large");
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "request head is not valid UTF-8")?;
    let mut lengths = 0;
    let mut encodings = 0;
    for line in head.split("\r\n").skip(1) {
        if line.starts_with([' ', '\t']) {
            return Err("folded header line");
        }
        let Some((name, _)) = line.split_once(':') else {
            return Err("header line without a colon");
        };
        if name.is_empty() || name.ends_with([' ', '\t']) {
            return Err("whitespace before a header colon");
        }
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
        }
    }
    match (lengths, encodings) {
        (l, _) if l > 1 => Err("more than one Content-Length"),
        (1, e) if e > 0 => Err("both Content-Length and Transfer-Encoding"),
        (_, e) if e > 1 => Err("more than one Transfer-Encoding"),
        _ => Ok(()),
    }
}

/// Host and port named by a raw request line, for the record of a refused request.
fn request_target(buf: &[u8]) -> (String, u16) {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let parsed: Option<Uri> = target.parse().ok();
    let authority = parsed.as_ref().and_then(Uri::authority);
    match authority {
        Some(a) => (a.host().to_owned(), a.port_u16().unwrap_or(80)),
        None => (String::new(), 0),
    }
}

/// A stream whose first bytes were already read.
struct Prefixed {
    prefix: Vec<u8>,
    inner: TcpStream,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `host:port` of a CONNECT request (authority form only; a port is required).
fn connect_target(uri: &Uri) -> Option<(String, u16)> {
    if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty()) {
        return None;
    }
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    Some((authority.host().to_owned(), authority.port_u16()?))
}

/// Refuses ambiguous framing: Content-Length together with Transfer-Encoding, more
/// than one Content-Length, or a Transfer-Encoding other than plain `chunked`.
fn check_framing(headers: &HeaderMap) -> Result<(), &'static str> {
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let encodings: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if lengths > 1 {
        return Err("more than one Content-Length");
    }
    if lengths == 1 && !encodings.is_empty() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if encodings.len() > 1 || encodings.first().is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked")) {
        return Err("a Transfer-Encoding other than chunked");
    }
    Ok(())
}

/// Removes hop-by-hop headers (and any the Connection header names) and every
/// `Proxy-*` header: they concern this hop only, and would leak the proxy's business.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let proxy_headers: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().starts_with("proxy-")).cloned().collect();
    for name in proxy_headers {
        headers.remove(name);
    }
}

fn origin_form(uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// The addresses the proxy will ever dial: never a cloud metadata address, whatever a
/// decision said (a second lock on the one door that must never open).
fn dialable(addrs: &[IpAddr]) -> impl Iterator<Item = &IpAddr> {
    addrs.iter().filter(|a| classify(**a).0 != AddressClass::Metadata)
}

/// Connects to the first vetted address that answers. Never resolves anything.
async fn dial(addrs: &[IpAddr], port: u16) -> Option<TcpStream> {
    for addr in dialable(addrs) {
        let target = SocketAddr::new(*addr, port);
        if let Ok(Ok(stream)) = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await {
            let _ = stream.set_nodelay(true);
            return Some(stream);
        }
    }
    None
}

/// Sends one request over a fresh HTTP/1.1 connection; redirects are returned, never
/// followed.
async fn send<T, B>(io: TokioIo<T>, request: Request<B>) -> Result<Response<Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(request).await.map_err(|e| e.to_string())
}

fn empty() -> ProxyBody {
    full(Bytes::new())
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// [`upstream_tls`] with the extra CA certificates given as PEM text.
pub fn upstream_tls_pem(pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut extra = Vec::new();
    if let Some(pem) = pem {
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            extra.push(cert.map_err(|e| format!("extra CA PEM: {e}"))?.to_vec());
        }
    }
    upstream_tls(&extra)
}

/// TLS settings for binding upstreams: the Mozilla roots, plus any extra CA
/// certificates (DER) the operator trusts.
pub fn upstream_tls(extra_roots: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots {
        roots.add(rustls::pki_types::CertificateDer::from(der.clone())).map_err(|e| format!("extra CA: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decision-level only: the metadata addresses are blocked by `dialable` itself, and
    /// this test never connects anywhere.
    #[test]
    fn metadata_addresses_are_never_dialable() {
        let addrs: Vec<IpAddr> = ["169.254.169.254", "::ffff:169.254.169.254", "192.0.2.7", "fd00:ec2::254"]
            .iter()
            .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
            .collect();
        let kept: Vec<String> = dialable(&addrs).map(ToString::to_string).collect();
        assert_eq!(kept, ["192.0.2.7"]);
    }
}
