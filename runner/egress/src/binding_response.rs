//! What a binding call sends upstream and what of the answer reaches the workload: the
//! credential is set at the boundary, so an upstream that reflects the request must not
//! hand it back, plain or re-encoded.
//!
//! Stripping cannot promise everything: an upstream that reflects the credential can
//! always re-encode it in a form no check knows (docs/containment.md says so). What is
//! checked here: the status line is rebuilt (no reason phrase passes), identity encoding
//! is asked for and anything else is decoded or refused, every header name and value and
//! the decoded body are searched for the credential's common forms at any offset
//! ([`enclave_core::Redactor::found_in`]); exact forms are replaced, and a body that still
//! holds one after that is withheld.

use std::io::Read as _;

use bytes::Bytes;
use enclave_core::Redactor;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::response::Parts;

/// Request headers some servers and frameworks read as the "real" method, path, host or
/// client (behind a proxy they trust: Express's `trust proxy`, Django's
/// `USE_X_FORWARDED_HOST`, ASP.NET's ForwardedHeaders, Spring's ForwardedHeaderFilter).
/// A binding's scope is checked on the request line and its host is the binding's own,
/// so none of them may pass; with them, so does every `X-Forwarded-*` header.
const OVERRIDE_HEADERS: &[&str] = &[
    "forwarded",
    "x-host",
    "x-original-host",
    "x-http-host-override",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-http-method",
    "x-http-method-override",
    "x-method-override",
    "x-original-method",
    "x-forwarded-method",
    "x-original-url",
    "x-original-uri",
    "x-original-path",
    "x-rewrite-url",
    "x-override-url",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-envoy-original-path",
    "x-envoy-original-url",
    "x-script-name",
];

/// Readies a binding call's request headers: method and path overrides go, and the
/// upstream is asked for the body as it is, not compressed.
pub(crate) fn prepare_request(headers: &mut HeaderMap) {
    let overrides: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            // CGI-style servers read `_` and `-` alike.
            let name = n.as_str().replace('_', "-");
            OVERRIDE_HEADERS.contains(&name.as_str())
                || name.starts_with("x-forwarded-")
                || name.starts_with("x-http-method")
                || name.ends_with("-method-override")
        })
        .cloned()
        .collect();
    for name in overrides {
        headers.remove(name);
    }
    headers.remove(header::ACCEPT_ENCODING);
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
}

/// A response's transfer codings: only `chunked` (which hyper has undone) may be there;
/// any other would hand the workload bytes no check has looked into.
pub(crate) fn check_transfer_codings(headers: &HeaderMap) -> Result<(), String> {
    let other = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(',').map(|c| c.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .any(|c| !c.is_empty() && c != "chunked");
    if other { Err("the response uses a transfer coding other than chunked".to_owned()) } else { Ok(()) }
}

/// What was held back from a binding response, for the audit.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Withheld {
    /// Header names dropped because their name or value held the credential.
    pub(crate) headers: Vec<String>,
    /// Whether the body had exact forms replaced.
    pub(crate) body_redacted: bool,
}

impl Withheld {
    pub(crate) fn note(&self) -> Option<String> {
        if self.headers.is_empty() && !self.body_redacted {
            return None;
        }
        let mut parts = Vec::new();
        if !self.headers.is_empty() {
            parts.push(format!("headers dropped: {}", self.headers.join(", ")));
        }
        if self.body_redacted {
            parts.push("body redacted".to_owned());
        }
        Some(format!("the response held the credential; {}", parts.join("; ")))
    }
}

/// Makes a binding response safe to hand to the workload, or says why it cannot be.
/// `limit` bounds the decoded body too (a compressed bomb is refused, not inflated).
pub(crate) fn withhold(
    redactor: &Redactor,
    parts: &mut Parts,
    body: &[u8],
    limit: usize,
) -> Result<(Bytes, Withheld), String> {
    // The status line is rebuilt from the code alone: hyper keeps a non-standard reason
    // phrase as an extension, and every extension is dropped with it.
    parts.extensions = http::Extensions::new();
    let decoded = decode(&parts.headers, body, limit)?;
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut withheld = Withheld::default();
    let leaking: Vec<HeaderName> = parts
        .headers
        .iter()
        .filter(|(name, value)| redactor.found_in(name.as_str().as_bytes()) || redactor.found_in(value.as_bytes()))
        .map(|(name, _)| name.clone())
        .collect();
    for name in leaking {
        parts.headers.remove(&name);
        // A name that itself holds the credential is never written down.
        let shown = if redactor.found_in(name.as_str().as_bytes()) {
            "(a name holding it)".to_owned()
        } else {
            name.to_string()
        };
        withheld.headers.push(shown);
    }
    withheld.headers.dedup();
    // Whatever is left, taken together: a credential split between headers, or between
    // a header and the body, is found in the whole.
    let mut whole = Vec::new();
    for (name, value) in &parts.headers {
        whole.extend_from_slice(name.as_str().as_bytes());
        whole.extend_from_slice(value.as_bytes());
    }
    for value in parts.headers.values() {
        whole.extend_from_slice(value.as_bytes());
    }
    whole.extend_from_slice(&decoded);
    if redactor.found_in(&whole) && !redactor.found_in(&decoded) {
        return Err("the response held the credential split over its headers; it is withheld".to_owned());
    }
    // A body that is itself compressed (served without a Content-Encoding) is looked into.
    if let Some(inner) = sniff_compressed(&decoded, limit)?
        && redactor.found_in(&inner)
    {
        return Err("the response held the credential inside a compressed body; it is withheld".to_owned());
    }
    if !redactor.found_in(&decoded) {
        return Ok((Bytes::from(decoded), withheld));
    }
    let redacted = match String::from_utf8(decoded) {
        Ok(text) => redactor.redact(&text).into_bytes(),
        Err(e) => redact_latin1(redactor, e.as_bytes()),
    };
    if redactor.found_in(&redacted) {
        return Err("the response held the credential in a form that cannot be cut out; it is withheld".to_owned());
    }
    withheld.body_redacted = true;
    Ok((Bytes::from(redacted), withheld))
}

/// The body as the upstream meant it: identity, or one layer of gzip or deflate. Any
/// other coding, or more than one, is refused: it cannot be checked.
fn decode(headers: &HeaderMap, body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let codings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .flat_map(|v| v.split(',').map(|c| c.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    let read_all = |reader: &mut dyn std::io::Read| -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        reader.take(cap).read_to_end(&mut out).map_err(|e| format!("decoding the response: {e}"))?;
        if out.len() > limit {
            return Err(format!("the decoded response is over {limit} bytes"));
        }
        Ok(out)
    };
    match codings.as_slice() {
        [] => Ok(body.to_vec()),
        [c] if c == "gzip" || c == "x-gzip" => read_all(&mut flate2::read::MultiGzDecoder::new(body)),
        [c] if c == "deflate" => {
            // "deflate" is zlib-wrapped by the letter of RFC 9110, raw by some servers.
            read_all(&mut flate2::read::ZlibDecoder::new(body))
                .or_else(|_| read_all(&mut flate2::read::DeflateDecoder::new(body)))
        }
        // The coding's name is the upstream's to choose: it is never quoted back.
        other => Err(format!("the response is encoded in {} coding(s) other than gzip or deflate", other.len())),
    }
}

/// A gzip or zlib stream, recognised by its first bytes, decoded under the limit; `None`
/// for anything else (or bytes that only look like one).
fn sniff_compressed(body: &[u8], limit: usize) -> Result<Option<Vec<u8>>, String> {
    let read = |reader: &mut dyn std::io::Read| -> Result<Option<Vec<u8>>, String> {
        let mut out = Vec::new();
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        match reader.take(cap).read_to_end(&mut out) {
            Ok(_) if out.len() > limit => Err(format!("a compressed body inflates past {limit} bytes")),
            Ok(_) => Ok(Some(out)),
            Err(_) => Ok(None),
        }
    };
    match body {
        [0x1f, 0x8b, ..] => read(&mut flate2::read::MultiGzDecoder::new(body)),
        [0x78, 0x01 | 0x5e | 0x9c | 0xda, ..] => read(&mut flate2::read::ZlibDecoder::new(body)),
        _ => Ok(None),
    }
}

/// Redacts bytes that are not UTF-8: the forms are ASCII, so a byte-for-char view is
/// lossless.
fn redact_latin1(redactor: &Redactor, bytes: &[u8]) -> Vec<u8> {
    let latin: String = bytes.iter().map(|b| char::from(*b)).collect();
    redactor.redact(&latin).chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::io::Write as _;

    use enclave_core::Secret;

    use super::*;

    const SECRET: &str = "binding-secret-5d1e9a";

    fn response(headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Response::builder().status(200);
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn redactor() -> Redactor {
        Redactor::new(&[Secret::new(SECRET)])
    }

    #[test]
    fn a_gzip_body_is_decoded_then_redacted() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(format!("echo: Bearer {SECRET}").as_bytes()).unwrap();
        let body = gz.finish().unwrap();
        let mut parts = response(&[("content-encoding", "gzip")]);
        let (out, withheld) = withhold(&redactor(), &mut parts, &body, 1 << 20).unwrap();
        assert_eq!(&out[..], b"echo: Bearer ***");
        assert!(withheld.body_redacted);
        assert!(parts.headers.get("content-encoding").is_none());
    }

    #[test]
    fn unknown_or_stacked_codings_and_bombs_are_refused() {
        for coding in ["br", "gzip, gzip", "zstd"] {
            let mut parts = response(&[("content-encoding", coding)]);
            assert!(withhold(&redactor(), &mut parts, b"x", 1 << 20).is_err(), "{coding}");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        let mut parts = response(&[("content-encoding", "gzip")]);
        let err = withhold(&redactor(), &mut parts, &bomb, 1 << 20).unwrap_err();
        assert!(err.contains("over"), "{err}");
    }

    #[test]
    fn headers_holding_the_credential_in_name_or_value_are_dropped() {
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(format!("Bearer {SECRET}"))
        };
        let hex_name = format!("x-{}", hex::encode(SECRET));
        let mut parts = response(&[("x-echo", &b64), (&hex_name, "1"), ("x-fine", "ok")]);
        let (_, withheld) = withhold(&redactor(), &mut parts, b"", 1 << 20).unwrap();
        assert_eq!(withheld.headers.len(), 2, "{withheld:?}");
        assert_eq!(parts.headers.get("x-fine").unwrap(), "ok");
    }

    #[test]
    fn a_body_whose_form_survives_redaction_is_withheld() {
        // Every other character escaped: no exact spelling to cut out.
        let mixed: String = SECRET
            .chars()
            .enumerate()
            .map(|(i, c)| if i % 2 == 0 { format!("\\u{:04x}", c as u32) } else { c.to_string() })
            .collect();
        let mut parts = response(&[]);
        assert!(withhold(&redactor(), &mut parts, mixed.as_bytes(), 1 << 20).is_err());
    }

    #[test]
    fn overrides_go_and_identity_is_asked_for() {
        let mut headers = HeaderMap::new();
        for name in
            ["x-http-method-override", "X-HTTP-Method", "x-original-url", "x-rewrite-url", "x-foo-method-override"]
        {
            headers.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("DELETE"));
        }
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, br"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        prepare_request(&mut headers);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers.get(header::ACCEPT_ENCODING).unwrap(), "identity");
    }
}
