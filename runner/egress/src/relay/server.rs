//! The relay's HTTP side: grants out, records in, to holders of the relay token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enclave_core::{BackendEvent, Secret, SessionId};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::registry::RelayRegistry;
use super::{MAX_BODY, RELAY_TIMEOUT};

/// The relay's accept loop; stops when dropped.
pub struct RelayTask {
    accept: JoinHandle<()>,
    /// Where the relay listens.
    pub address: std::net::SocketAddr,
}

impl Drop for RelayTask {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves `registry` to proxies that present `token` (`Authorization: Bearer`), over
/// TLS when `tls` is given:
///
/// - `GET /v1/sessions/{id}/grant`: the session's [`Grant`] (404 if not offered);
/// - `POST /v1/sessions/{id}/records`: one proxy [`BackendEvent`] ([`is_proxy_record`]),
///   204 once taken, 410 if the
///   session is not offered or cannot record.
pub fn serve_relay(
    listener: TcpListener,
    registry: Arc<RelayRegistry>,
    token: Secret,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<RelayTask> {
    let address = listener.local_addr()?;
    let token = Arc::new(token);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let accept = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: let some close before trying again.
                    tracing::warn!(error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (registry, token, acceptor) = (registry.clone(), token.clone(), acceptor.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (registry, token) = (registry.clone(), token.clone());
                    async move { Ok::<_, Infallible>(relay_request(&registry, &token, req).await) }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                // A client that trickles its request head holds nothing open for long.
                http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(RELAY_TIMEOUT);
                match acceptor {
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(RELAY_TIMEOUT, acceptor.accept(stream)).await;
                        let Ok(Ok(stream)) = handshake else { return };
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    Ok(RelayTask { accept, address })
}

fn reply(status: StatusCode, body: Bytes, json: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let kind = if json { "application/json" } else { "text/plain; charset=utf-8" };
    response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
    response
}

fn authorized(req: &Request<Incoming>, token: &Secret) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| enclave_core::bearer_token(v).ok())
        .unwrap_or_default();
    constant_time_eq(presented.as_bytes(), token.expose().as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

async fn relay_request(registry: &RelayRegistry, token: &Secret, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if token.expose().is_empty() || !authorized(&req, token) {
        return reply(StatusCode::UNAUTHORIZED, Bytes::from_static(b"relay token required\n"), false);
    }
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (session, action) = match parts.as_slice() {
        ["v1", "sessions", id, action] => match SessionId::new(*id) {
            Ok(session) => (session, *action),
            Err(_) => return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"no such session\n"), false),
        },
        _ => return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"), false),
    };
    match (req.method().clone(), action) {
        (Method::GET, "grant") => match registry.grant(&session).map(|g| serde_json::to_vec(&g)) {
            Some(Ok(body)) => reply(StatusCode::OK, Bytes::from(body), true),
            Some(Err(_)) => reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new(), false),
            None => reply(StatusCode::NOT_FOUND, Bytes::from_static(b"no such session\n"), false),
        },
        (Method::POST, "records") => {
            let Ok(body) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
                return reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"unreadable body\n"), false);
            };
            let Ok(record) = serde_json::from_slice::<BackendEvent>(&body.to_bytes()) else {
                return reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"not a record\n"), false);
            };
            if registry.record(&session, record).await {
                reply(StatusCode::NO_CONTENT, Bytes::new(), false)
            } else {
                reply(StatusCode::GONE, Bytes::from_static(b"the session does not record\n"), false)
            }
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
