//! Reading the server name from a TLS ClientHello, without terminating TLS.
//!
//! Only what the SNI check needs is parsed: the first handshake record, its ClientHello
//! and the `server_name` extension. Anything else about the handshake is left to the
//! two endpoints; the proxy forwards the bytes it read unchanged.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The most the proxy reads before giving up on a ClientHello: one full TLS record.
pub const MAX_HELLO_BYTES: usize = 5 + 16 * 1024;

/// What the first bytes of a tunnel say about the server the client wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello naming this server (lowercase ASCII, as sent).
    ServerName(String),
    /// A ClientHello with no `server_name` extension.
    NoServerName,
    /// Not a TLS ClientHello, or one the proxy cannot read (e.g. split over records).
    Unreadable,
    /// More bytes are needed.
    Incomplete,
}

/// Parses the start of a tunnel's byte stream.
pub fn parse(buf: &[u8]) -> Hello {
    if buf.len() < 5 {
        return if buf.first().is_none_or(|b| *b == 0x16) { Hello::Incomplete } else { Hello::Unreadable };
    }
    if buf[0] != 0x16 || buf[1] != 0x03 {
        return Hello::Unreadable;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + record_len {
        return Hello::Incomplete;
    }
    client_hello(&buf[5..5 + record_len]).unwrap_or(Hello::Unreadable)
}

/// A cursor over a byte slice that fails (returns `None`) instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    /// A length-prefixed (u16) field.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

fn client_hello(record: &[u8]) -> Option<Hello> {
    let mut r = Reader(record);
    if r.u8()? != 0x01 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    // A ClientHello split over several records is legal but never seen in practice;
    // refusing it keeps the parser small (the tunnel is denied, not waved through).
    let mut hello = Reader(r.take(len)?);
    hello.take(2 + 32)?; // legacy version, random
    let session_id = hello.u8()?;
    hello.take(session_id)?;
    let suites = hello.u16()?;
    hello.take(suites)?;
    let compression = hello.u8()?;
    hello.take(compression)?;
    if hello.0.is_empty() {
        return Some(Hello::NoServerName);
    }
    let ext_len = hello.u16()?;
    let mut exts = Reader(hello.take(ext_len)?);
    let mut found = None;
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let body = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        if found.is_some() {
            return None; // duplicate server_name extension: ambiguous
        }
        let mut list = Reader(body);
        let mut names = Reader(list.vec16()?);
        let mut host = None;
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name = names.vec16()?;
            if name_type == 0 {
                if host.is_some() {
                    return None; // two host names: ambiguous
                }
                host = Some(std::str::from_utf8(name).ok()?.to_owned());
            }
        }
        found = Some(host?);
    }
    Some(found.map_or(Hello::NoServerName, Hello::ServerName))
}

/// Reads from `io` until the ClientHello can be judged; returns the verdict and every
/// byte read (to be forwarded unchanged).
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<(Hello, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match parse(&buf) {
            Hello::Incomplete if buf.len() < MAX_HELLO_BYTES => {}
            Hello::Incomplete => return Ok((Hello::Unreadable, buf)),
            verdict => return Ok((verdict, buf)),
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok((Hello::Unreadable, buf));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record with the given extensions.
    fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one suite
        body.extend([1, 0]); // null compression
        let mut exts = Vec::new();
        for (kind, data) in extensions {
            exts.extend(kind.to_be_bytes());
            exts.extend(u16::try_from(data.len()).unwrap_or(0).to_be_bytes());
            exts.extend(data);
        }
        body.extend(u16::try_from(exts.len()).unwrap_or(0).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![0x01];
        hs.extend(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend(u16::try_from(hs.len()).unwrap_or(0).to_be_bytes());
        rec.extend(hs);
        rec
    }

    fn sni(names: &[&str]) -> Vec<u8> {
        let mut list = Vec::new();
        for n in names {
            list.push(0);
            list.extend(u16::try_from(n.len()).unwrap_or(0).to_be_bytes());
            list.extend(n.as_bytes());
        }
        let mut out = u16::try_from(list.len()).unwrap_or(0).to_be_bytes().to_vec();
        out.extend(list);
        out
    }

    #[test]
    fn reads_the_server_name_and_waits_for_the_whole_record() {
        let rec = hello_with(&[(10, vec![0, 2, 0, 29]), (0, sni(&["api.example.com"]))]);
        assert_eq!(parse(&rec), Hello::ServerName("api.example.com".into()));
        assert_eq!(parse(&rec[..rec.len() - 1]), Hello::Incomplete);
        assert_eq!(parse(&rec[..3]), Hello::Incomplete);
    }

    #[test]
    fn missing_duplicate_or_garbled_names_are_not_waved_through() {
        assert_eq!(parse(&hello_with(&[(10, vec![0, 2, 0, 29])])), Hello::NoServerName);
        assert_eq!(parse(&hello_with(&[(0, sni(&["a.example", "b.example"]))])), Hello::Unreadable);
        assert_eq!(parse(&hello_with(&[(0, sni(&["a.example"])), (0, sni(&["b.example"]))])), Hello::Unreadable);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Hello::Unreadable);
        let mut truncated = hello_with(&[(0, sni(&["a.example"]))]);
        truncated[8] = 0xff; // handshake length beyond the record
        assert_eq!(parse(&truncated), Hello::Unreadable);
    }
}
