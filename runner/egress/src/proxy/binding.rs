//! Calls to service bindings: scope, credential, verified TLS upstream, and the
//! credential withheld from the answer.

use std::net::IpAddr;

use enclave_core::{BackendEvent, BindingPlan, check_binding_scope};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{MAX_BINDING_RESPONSE, ProxyBody, SessionProxy, full, text};
use crate::binding_response;
use crate::upstream::{dial, send};
use crate::wire::{origin_form, strip_hop_by_hop};

impl SessionProxy {
    /// A binding call: scope check, then verified TLS to the binding's own host and
    /// port with the credential set by the proxy, and the credential stripped from
    /// whatever comes back.
    pub(super) async fn call_binding(
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
