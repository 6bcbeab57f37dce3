//! The per-session proxy: one listener per session, so the connection's arrival point
//! names the session (never a header).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enclave_core::{
    BackendEvent, BindingPlan, Decision, DecisionContext, DenyReason, EgressPhase, Plan, Redactor, Resolution,
    SecretStore, check_binding_scope, decide,
};
use enclave_spec::{Host, canonical_host};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::binding_response;
use crate::host_addresses::HostAddresses;
use crate::record::Recorder;
use crate::resolve::Resolve;
use crate::sni::{Hello, read_hello};
use crate::upstream::{dial, send};
use crate::wire::{
    Prefixed, check_framing, check_raw_head, connect_target, origin_form, read_head, request_target, strip_hop_by_hop,
};

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
            && rule.binding().is_some()
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
            proxy.tunnel(phase, TokioIo::new(upgraded), host, port, (decision, addrs)).await;
        });
        Response::new(empty())
    }

    async fn tunnel(
        &self,
        phase: EgressPhase,
        mut client: TokioIo<hyper::upgrade::Upgraded>,
        host: String,
        port: u16,
        (decision, addrs): (Decision, Vec<IpAddr>),
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
        // The CONNECT resolved the host once and took the one decision on that answer;
        // the answer is the one dialled. The ClientHello can only turn it into a deny:
        // an allowed name whose ClientHello names another server is not that name.
        let decision = if sni_ok {
            decision
        } else {
            let sni = match hello {
                Hello::ServerName(sni) => Some(sni),
                _ => None,
            };
            Decision::Deny { reason: DenyReason::SniMismatch { sni } }
        };
        let decision = self.record_decision(phase, &host, port, decision).await;
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
            Decision::Allow { rule } => {
                rule.binding().and_then(|name| self.cfg.plan.bindings.iter().find(|b| b.name == name)).cloned()
            }
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
            host: binding.host.to_string(),
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
        let server_name = rustls::pki_types::ServerName::try_from(binding.host.to_string())
            .map_err(|e| format!("invalid server name {}: {e}", binding.host))?;
        let tls = tokio_rustls::TlsConnector::from(self.cfg.upstream_tls.clone())
            .connect(server_name, stream)
            .await
            .map_err(|e| format!("TLS with {}: {e}", binding.host))?;
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        binding_response::prepare_request(&mut parts.headers);
        let host_header =
            if binding.port == 443 { binding.host.to_string() } else { format!("{}:{}", binding.host, binding.port) };
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
