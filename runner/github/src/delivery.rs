//! One webhook delivery, received: size, content type and signature are checked on the
//! raw bytes, in that order, before anything is parsed. What comes out is the event name,
//! the delivery id (the idempotency key) and the JSON payload's bytes.

use http::{HeaderMap, StatusCode};

use crate::signature::{SignatureError, WebhookSecrets, verify_signature};

/// The largest payload GitHub sends (25 MB); a larger body is refused unread.
pub const MAX_BODY_BYTES: usize = 25 * 1000 * 1000;

/// A delivery whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `X-GitHub-Delivery`: GitHub's id for the delivery, the same on a redelivery.
    pub id: String,
    /// `X-GitHub-Event`: `push`, `pull_request`, ...
    pub event: String,
    /// The JSON payload (taken out of the form field for form-encoded deliveries).
    pub payload: Vec<u8>,
}

/// Why a delivery was refused, with the status GitHub is answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefusal {
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("the body is over {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Neither `application/json` nor `application/x-www-form-urlencoded`.
    #[error("unsupported content type {0:?}: configure the webhook with application/json")]
    ContentType(String),
    /// The signature did not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A header GitHub always sends is missing or unreadable.
    #[error("missing or unreadable header {0}")]
    Header(&'static str),
    /// The delivery id is not a GitHub delivery GUID.
    #[error("X-GitHub-Delivery is not a delivery id")]
    DeliveryId,
    /// A form-encoded body without a `payload` field.
    #[error("the form-encoded body has no payload field")]
    Form,
}

impl WebhookRefusal {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookRefusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookRefusal::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebhookRefusal::Signature(SignatureError::NotConfigured) => StatusCode::SERVICE_UNAVAILABLE,
            WebhookRefusal::Signature(_) => StatusCode::UNAUTHORIZED,
            WebhookRefusal::Header(_) | WebhookRefusal::DeliveryId | WebhookRefusal::Form => StatusCode::BAD_REQUEST,
        }
    }
}

enum Encoding {
    Json,
    Form,
}

/// Receives one delivery: the body as it came off the wire and its headers.
pub fn receive(secrets: &WebhookSecrets, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, WebhookRefusal> {
    if body.len() > MAX_BODY_BYTES {
        return Err(WebhookRefusal::TooLarge { limit: MAX_BODY_BYTES });
    }
    let content_type = text(headers, "content-type")?.unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let encoding = match media.as_str() {
        "application/json" => Encoding::Json,
        "application/x-www-form-urlencoded" => Encoding::Form,
        _ => return Err(WebhookRefusal::ContentType(content_type.to_owned())),
    };
    verify_signature(secrets, body, text(headers, "x-hub-signature-256")?, text(headers, "x-hub-signature")?)?;
    let event = text(headers, "x-github-event")?.ok_or(WebhookRefusal::Header("X-GitHub-Event"))?;
    if event.is_empty() || !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(WebhookRefusal::Header("X-GitHub-Event"));
    }
    let id = text(headers, "x-github-delivery")?.ok_or(WebhookRefusal::Header("X-GitHub-Delivery"))?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(WebhookRefusal::DeliveryId);
    }
    let payload = match encoding {
        Encoding::Json => body.to_vec(),
        Encoding::Form => form_urlencoded::parse(body)
            .find(|(key, _)| key == "payload")
            .map(|(_, value)| value.into_owned().into_bytes())
            .ok_or(WebhookRefusal::Form)?,
    };
    Ok(Delivery { id: id.to_owned(), event: event.to_owned(), payload })
}

fn text<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, WebhookRefusal> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    // Two copies of one header are ambiguous: which one was signed is not ours to guess.
    if values.next().is_some() {
        return Err(WebhookRefusal::Header(name));
    }
    value.to_str().map(Some).map_err(|_| WebhookRefusal::Header(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::signature::sign;

    const SECRET: &[u8] = b"delivery-test-secret";
    const ID: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn signed(body: &[u8], content_type: &str) -> HeaderMap {
        headers(&[
            ("content-type", content_type),
            ("x-hub-signature-256", &sign(SECRET, body)),
            ("x-github-event", "push"),
            ("x-github-delivery", ID),
        ])
    }

    fn secrets() -> WebhookSecrets {
        WebhookSecrets::from_file_text("delivery-test-secret\n")
    }

    #[test]
    fn a_signed_json_delivery_is_received() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let delivery = receive(&secrets(), &signed(body, "application/json; charset=utf-8"), body).unwrap();
        assert_eq!(delivery, Delivery { id: ID.into(), event: "push".into(), payload: body.to_vec() });
    }

    #[test]
    fn a_form_encoded_delivery_yields_its_payload_field() {
        let body = b"payload=%7B%22zen%22%3A%22x%22%7D";
        let delivery = receive(&secrets(), &signed(body, "application/x-www-form-urlencoded"), body).unwrap();
        assert_eq!(delivery.payload, br#"{"zen":"x"}"#);
        let empty = b"other=1";
        let refused = receive(&secrets(), &signed(empty, "application/x-www-form-urlencoded"), empty);
        assert_eq!(refused, Err(WebhookRefusal::Form));
    }

    #[test]
    fn each_refusal_has_its_status() {
        let body = br#"{}"#;
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let mut twice = signed(body, "application/json");
        twice.append("x-hub-signature-256", HeaderValue::from_static("sha256=00"));
        let mut no_event = signed(body, "application/json");
        no_event.remove("x-github-event");
        let mut bad_id = signed(body, "application/json");
        bad_id.insert("x-github-delivery", HeaderValue::from_static("../../etc"));
        let mut sha1 = signed(body, "application/json");
        sha1.remove("x-hub-signature-256");
        sha1.insert("x-hub-signature", HeaderValue::from_static("sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0"));
        let cases: Vec<(HeaderMap, &[u8], WebhookRefusal, u16)> = vec![
            (signed(&big, "application/json"), &big, WebhookRefusal::TooLarge { limit: MAX_BODY_BYTES }, 413),
            (signed(body, "text/plain"), body, WebhookRefusal::ContentType("text/plain".into()), 415),
            (headers(&[("content-type", "application/json")]), body, SignatureError::Missing.into(), 401),
            (sha1, body, SignatureError::Sha1Only.into(), 401),
            (signed(b"{ }", "application/json"), body, SignatureError::Mismatch.into(), 401),
            (twice, body, WebhookRefusal::Header("x-hub-signature-256"), 400),
            (no_event, body, WebhookRefusal::Header("X-GitHub-Event"), 400),
            (bad_id, body, WebhookRefusal::DeliveryId, 400),
        ];
        for (headers, body, want, status) in cases {
            let got = receive(&secrets(), &headers, body).unwrap_err();
            assert_eq!((&got, got.status().as_u16()), (&want, status));
        }
        let unconfigured = receive(&WebhookSecrets::default(), &signed(body, "application/json"), body).unwrap_err();
        assert_eq!(unconfigured.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
