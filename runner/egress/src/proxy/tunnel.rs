//! `CONNECT`: the tunnel, passed through after its ClientHello names the CONNECT host.

use std::net::IpAddr;
use std::sync::Arc;

use enclave_core::{Decision, DenyReason, EgressPhase};
use enclave_spec::{Host, canonical_host};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::{HELLO_TIMEOUT, ProxyBody, SessionProxy, empty, text};
use crate::sni::{Hello, read_hello};
use crate::upstream::dial;
use crate::wire::connect_target;

impl SessionProxy {
    /// `CONNECT host:port`: TLS passthrough after the ClientHello's SNI matches.
    pub(super) async fn connect(self: Arc<Self>, phase: EgressPhase, req: Request<Incoming>) -> Response<ProxyBody> {
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
        let sni_ok = sni_names_host(&hello, &host);
        // Watched from here on: a reach that ends (the clone's revoked, the session over)
        // while the tunnel is dialled or open ends the tunnel.
        let mut phase_rx = self.phase.subscribe();
        let reach_held = *phase_rx.borrow_and_update() == Some(phase);
        // The CONNECT resolved the host once and took the one decision on that answer;
        // the answer is the one dialled. The ClientHello can only turn it into a deny:
        // an allowed name whose ClientHello names another server is not that name, and a
        // reach that ended while the hello was awaited admits nothing.
        let decision = match hello {
            _ if !decision.is_allow() => decision,
            Hello::ServerName(sni) if !sni_ok => Decision::Deny { reason: DenyReason::SniMismatch { sni: Some(sni) } },
            _ if !sni_ok => Decision::Deny { reason: DenyReason::SniMismatch { sni: None } },
            _ if !reach_held => Decision::Deny { reason: DenyReason::ReachEnded { phase } },
            _ => decision,
        };
        let decision = self.record_decision(phase, &host, port, decision).await;
        if !decision.is_allow() {
            let _ = client.shutdown().await;
            return;
        }
        let relay = async {
            let Some(mut upstream) = dial(&addrs, port).await else { return };
            if upstream.write_all(&first_bytes).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        };
        // A tunnel lives only as long as the reach that admitted it, the dial included.
        tokio::select! {
            biased;
            _ = phase_rx.wait_for(|now| *now != Some(phase)) => {}
            () = relay => {}
        }
    }
}

/// Whether a ClientHello names the CONNECT host: the same canonical name for a domain,
/// and no server name at all for an address literal (clients send none for one, and a
/// CIDR rule admitted it). A ClientHello that cannot be read never does.
fn sni_names_host(hello: &Hello, host: &str) -> bool {
    let Ok(host) = canonical_host(host) else { return false };
    match (hello, &host) {
        (Hello::ServerName(sni), Host::Domain(_)) => canonical_host(sni).is_ok_and(|sni| sni == host),
        (Hello::NoServerName, Host::Ip(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(sni: &str) -> Hello {
        Hello::ServerName(sni.to_owned())
    }

    #[test]
    fn a_server_name_must_be_the_connect_host_in_canonical_form() {
        assert!(sni_names_host(&named("api.example.com"), "api.example.com"));
        assert!(sni_names_host(&named("API.Example.COM."), "api.example.com"));
        assert!(sni_names_host(&named("api.example.com"), "API.EXAMPLE.COM"));
        assert!(!sni_names_host(&named("other.example.com"), "api.example.com"));
        assert!(!sni_names_host(&named("example.com"), "api.example.com"));
        assert!(!sni_names_host(&named("api.example.com.evil.test"), "api.example.com"));
        assert!(!sni_names_host(&named("user@api.example.com"), "api.example.com"));
    }

    #[test]
    fn a_domain_needs_a_server_name_and_an_address_literal_needs_none() {
        assert!(!sni_names_host(&Hello::NoServerName, "api.example.com"));
        assert!(sni_names_host(&Hello::NoServerName, "203.0.113.7"));
        assert!(sni_names_host(&Hello::NoServerName, "[2001:db8::1]"));
        // A server name on an address-literal CONNECT is a client pretending to be
        // somewhere else, even when the name spells the same address.
        assert!(!sni_names_host(&named("203.0.113.7"), "203.0.113.7"));
        assert!(!sni_names_host(&named("api.example.com"), "203.0.113.7"));
    }

    #[test]
    fn an_unreadable_hello_or_an_invalid_host_never_matches() {
        assert!(!sni_names_host(&Hello::Unreadable, "api.example.com"));
        assert!(!sni_names_host(&Hello::Incomplete, "api.example.com"));
        assert!(!sni_names_host(&Hello::Unreadable, "203.0.113.7"));
        assert!(!sni_names_host(&Hello::NoServerName, "bad host"));
        assert!(!sni_names_host(&named("bad host"), "bad host"));
    }
}
