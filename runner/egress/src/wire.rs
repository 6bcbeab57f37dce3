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
    // Lines end at CRLF only. hyper also ends a line at a bare LF, so a header behind
    // one would be invisible to the checks below and seen by hyper.
    if head.split("\r\n").any(|line| line.contains(['\r', '\n'])) {
        return Err("a bare CR or LF in the request head");
    }
    let mut lengths = 0;
    let mut encodings: Vec<&[u8]> = Vec::new();
    for line in head.split("\r\n").skip(1) {
        if line.starts_with([' ', '\t']) {
            return Err("folded header line");
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err("header line without a colon");
        };
        if name.is_empty() || name.ends_with([' ', '\t']) {
            return Err("whitespace before a header colon");
        }
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            encodings.push(value.trim_matches([' ', '\t']).as_bytes());
        }
    }
    framing(lengths, &encodings)
}

/// The one framing rule, for the raw head and for each parsed request: at most one
/// Content-Length, never together with Transfer-Encoding, and a Transfer-Encoding only
/// as one plain `chunked`.
fn framing(lengths: usize, encodings: &[&[u8]]) -> Result<(), &'static str> {
    if lengths > 1 {
        return Err("more than one Content-Length");
    }
    if lengths == 1 && !encodings.is_empty() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if encodings.len() > 1 || encodings.first().is_some_and(|v| !v.eq_ignore_ascii_case(b"chunked")) {
        return Err("a Transfer-Encoding other than chunked");
    }
    Ok(())
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
    let encodings: Vec<&[u8]> = headers.get_all(header::TRANSFER_ENCODING).iter().map(HeaderValue::as_bytes).collect();
    framing(lengths, &encodings)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(headers: &str) -> Result<(), &'static str> {
        check_raw_head(format!("POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\n{headers}\r\n").as_bytes())
    }

    fn parsed(headers: &[(&'static str, &'static str)]) -> Result<(), &'static str> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        check_framing(&map)
    }

    type Headers = &'static [(&'static str, &'static str)];
    type Verdict = Result<(), &'static str>;

    #[test]
    fn the_raw_head_and_a_parsed_request_are_judged_by_one_rule() {
        let cases: [(&str, Headers, Verdict); 7] = [
            ("", &[], Ok(())),
            ("Content-Length: 3\r\n", &[("content-length", "3")], Ok(())),
            ("Transfer-Encoding: chunked\r\n", &[("transfer-encoding", "chunked")], Ok(())),
            (
                "Content-Length: 3\r\nContent-Length: 30\r\n",
                &[("content-length", "3"), ("content-length", "30")],
                Err("more than one Content-Length"),
            ),
            (
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                &[("content-length", "3"), ("transfer-encoding", "chunked")],
                Err("both Content-Length and Transfer-Encoding"),
            ),
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                &[("transfer-encoding", "gzip, chunked")],
                Err("a Transfer-Encoding other than chunked"),
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
                Err("a Transfer-Encoding other than chunked"),
            ),
        ];
        for (head, headers, want) in cases {
            assert_eq!(raw(head), want, "raw {head:?}");
            assert_eq!(parsed(headers), want, "parsed {headers:?}");
        }
    }

    #[test]
    fn the_raw_head_refuses_what_a_parser_would_smooth_over() {
        assert_eq!(raw("X-A: 1\r\n folded\r\n"), Err("folded header line"));
        assert_eq!(raw("Content-Length : 3\r\n"), Err("whitespace before a header colon"));
        assert_eq!(raw("no colon here\r\n"), Err("header line without a colon"));
        assert_eq!(raw("TRANSFER-ENCODING:\tChunked \r\n"), Ok(()));
        for bare in [
            "X-A: 1\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            "X-A: 1\rX-B: 2\r\n",
            "X-A: 1\n\nX-B: 2\r\n",
        ] {
            assert_eq!(raw(bare), Err("a bare CR or LF in the request head"), "{bare:?}");
        }
        assert_eq!(
            check_raw_head(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Err("a bare CR or LF in the request head"),
            "in the request line"
        );
        assert_eq!(check_raw_head(b"GET / HTTP/1.1\r\nHost: a"), Err("request head too large"));
        assert_eq!(check_raw_head(b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n"), Err("request head is not valid UTF-8"));
    }

    #[test]
    fn connect_targets_are_authority_form_with_a_port() {
        let target = |t: &str| connect_target(&t.parse::<Uri>().expect("uri"));
        assert_eq!(target("a.test:443"), Some(("a.test".to_owned(), 443)));
        assert_eq!(target("[::1]:8443"), Some(("[::1]".to_owned(), 8443)));
        assert_eq!(target("a.test"), None);
        assert_eq!(target("http://a.test:443/"), None);
    }

    #[test]
    fn hop_by_hop_and_proxy_headers_are_stripped() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("close, x-secret-hop"));
        headers.append(HeaderName::from_static("x-secret-hop"), HeaderValue::from_static("1"));
        headers.append(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        headers.append(HeaderName::from_static("proxy-anything"), HeaderValue::from_static("1"));
        headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn the_origin_form_keeps_path_and_query_only() {
        assert_eq!(origin_form(&"http://a.test:80/p?q=1".parse().expect("uri")), "/p?q=1");
        assert_eq!(origin_form(&"http://a.test".parse().expect("uri")), "/");
        assert_eq!(request_target(b"GET http://a.test:8080/x HTTP/1.1\r\n"), ("a.test".to_owned(), 8080));
    }
}
