//! The wire-level checks and rewrites of plain HTTP through the proxy: the raw request
//! head (read and checked before hyper parses it), framing, hop-by-hop headers, and the
//! bytes already read handed back to the tunnel.

use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The most header bytes a request may have.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Reads up to the end of the first request head (and whatever arrived with it).
pub(crate) async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
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
pub(crate) fn check_raw_head(buf: &[u8]) -> Result<(), &'static str> {
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
pub(crate) fn request_target(buf: &[u8]) -> (String, u16) {
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
pub(crate) struct Prefixed {
    pub(crate) prefix: Vec<u8>,
    pub(crate) inner: TcpStream,
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
pub(crate) fn connect_target(uri: &Uri) -> Option<(String, u16)> {
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
pub(crate) fn check_framing(headers: &HeaderMap) -> Result<(), &'static str> {
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
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

pub(crate) fn origin_form(uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}
