//! The per-session proxy: one listener per session, so the connection's arrival point
//! names the session (never a header).
//!
//! This module accepts connections, reads and checks the raw head, and routes each
//! request; `tunnel` serves CONNECT, `forward` plain HTTP, and `binding` the calls to
//! service bindings.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enclave_core::{
    BackendEvent, Decision, DecisionContext, DenyReason, EgressPhase, Plan, Redactor, Resolution, SecretStore, decide,
};
use enclave_spec::{Host, canonical_host};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod binding;
mod forward;
mod tunnel;

use crate::host_addresses::HostAddresses;
use crate::record::Recorder;
use crate::resolve::Resolve;
use crate::wire::{Prefixed, check_raw_head, read_head, request_target};

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
}

pub(super) fn empty() -> ProxyBody {
    full(Bytes::new())
}

pub(super) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

pub(super) fn text(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
