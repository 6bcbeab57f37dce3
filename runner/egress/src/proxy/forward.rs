//! Absolute-form plain HTTP: decided, rebuilt and forwarded, or handed to a binding.

use std::net::IpAddr;
use std::sync::Arc;

use enclave_core::{Decision, EgressPhase};
use enclave_spec::canonical_host;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{ProxyBody, SessionProxy, text};
use crate::upstream::{dial, send};
use crate::wire::{check_framing, origin_form, strip_hop_by_hop};

impl SessionProxy {
    /// Absolute-form plain HTTP, and binding calls.
    pub(super) async fn forward(self: Arc<Self>, phase: EgressPhase, req: Request<Incoming>) -> Response<ProxyBody> {
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
}
