//! A proxy's side of the relay.

use std::sync::Arc;

use async_trait::async_trait;
use enclave_core::{BackendEvent, Secret, SessionId};
use http::StatusCode;

use super::RELAY_TIMEOUT;
use super::grant::{Grant, is_proxy_record};
use crate::error::EgressError;
use crate::record::Recorder;
use crate::tls::certificates;

/// Why the relay cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The relay's URL is neither `https://` nor `http://`.
    #[error("the relay URL {url} must start with https:// or http://")]
    Scheme {
        /// The relay.
        url: String,
    },
    /// An `https://` relay without the CA that signed its certificate.
    #[error("the relay at {url} cannot be used: an https relay needs the CA that signed its certificate")]
    NeedsCa {
        /// The relay.
        url: String,
    },
    /// A CA for a plain `http://` relay (a sign the operator meant `https://`).
    #[error("the relay at {url} cannot be used: a relay CA was given for a plain http:// relay")]
    CaForPlainHttp {
        /// The relay.
        url: String,
    },
    /// The CA could not be read.
    #[error("the relay at {url} cannot be used: {source}")]
    Ca {
        /// The relay.
        url: String,
        /// Why.
        #[source]
        source: Box<EgressError>,
    },
    /// The HTTP client could not be built, the relay could not be reached, or its
    /// answer could not be read.
    #[error("the relay at {url} cannot be used: {source}")]
    Http {
        /// The relay.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The relay answered with a status it should not.
    #[error("the relay at {url} cannot be used: grant answered {status}")]
    Status {
        /// The relay.
        url: String,
        /// Its answer.
        status: StatusCode,
    },
    /// The grant it sent is not one.
    #[error("the relay at {url} cannot be used: bad grant: {source}")]
    BadGrant {
        /// The relay.
        url: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A proxy's side of the relay.
#[derive(Clone)]
pub struct RelayClient {
    base: String,
    token: Arc<Secret>,
    http: reqwest::Client,
}

impl RelayClient {
    /// A client of the relay at `base`: `https://host:port`, verified against `ca_pem`
    /// only (no public roots: the relay's certificate is the operator's), or plain
    /// `http://host:port` without a CA.
    pub fn new(base: &str, token: Secret, ca_pem: Option<&str>) -> Result<Self, RelayError> {
        let url = || base.to_owned();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            return Err(RelayError::Scheme { url: url() });
        }
        let mut builder = reqwest::Client::builder()
            .timeout(RELAY_TIMEOUT)
            // The relay is named by the operator; a proxy never follows it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_built_in_root_certs(false)
            .https_only(https);
        match (https, ca_pem) {
            (true, Some(pem)) => {
                let certs =
                    certificates(pem, "relay CA").map_err(|e| RelayError::Ca { url: url(), source: Box::new(e) })?;
                for cert in certs {
                    let cert = reqwest::Certificate::from_der(&cert)
                        .map_err(|source| RelayError::Http { url: url(), source })?;
                    builder = builder.add_root_certificate(cert);
                }
            }
            (true, None) => return Err(RelayError::NeedsCa { url: url() }),
            (false, Some(_)) => return Err(RelayError::CaForPlainHttp { url: url() }),
            (false, None) => {}
        }
        let http = builder.build().map_err(|source| RelayError::Http { url: url(), source })?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), token: Arc::new(token), http })
    }

    fn url(&self, session: &SessionId, action: &str) -> String {
        format!("{}/v1/sessions/{session}/{action}", self.base)
    }

    fn http_error(&self, source: reqwest::Error) -> RelayError {
        RelayError::Http { url: self.base.clone(), source }
    }

    /// The grant of `session`, or `None` if the relay does not offer it.
    pub async fn grant(&self, session: &SessionId) -> Result<Option<Grant>, RelayError> {
        let response = self
            .http
            .get(self.url(session, "grant"))
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| self.http_error(e))?;
        match response.status() {
            StatusCode::OK => {
                let body = response.bytes().await.map_err(|e| self.http_error(e))?;
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|source| RelayError::BadGrant { url: self.base.clone(), source })
            }
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(RelayError::Status { url: self.base.clone(), status }),
        }
    }

    /// Records `event` for `session`; `false` unless the relay took it.
    pub async fn record(&self, session: &SessionId, event: BackendEvent) -> bool {
        self.send(session, event).await == Sent::Taken
    }

    /// Sends `event` for `session` and says what became of it.
    pub async fn send(&self, session: &SessionId, event: BackendEvent) -> Sent {
        if !is_proxy_record(&event) {
            return Sent::Refused;
        }
        let sent = self.http.post(self.url(session, "records")).bearer_auth(self.token.expose()).json(&event).send();
        match sent.await {
            Ok(response) if response.status() == StatusCode::NO_CONTENT => Sent::Taken,
            Ok(response) if response.status() == StatusCode::GONE => Sent::Refused,
            Ok(response) => {
                tracing::warn!(session = %session, status = %response.status(), "relay refused a record; denying");
                Sent::Unavailable
            }
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "relay unreachable; denying");
                Sent::Unavailable
            }
        }
    }

    /// A recorder sending `session`'s records through this relay.
    pub fn recorder(&self, session: &SessionId) -> Arc<dyn Recorder> {
        Arc::new(RelayRecorder { client: self.clone(), session: session.clone() })
    }
}

/// What became of a record sent to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Taken into the session's audit.
    Taken,
    /// Refused for good: the session is withdrawn, cannot record, or the record is not
    /// one a proxy may send.
    Refused,
    /// The relay could not be reached or failed; trying again may help.
    Unavailable,
}

/// Records one session's events through the relay.
pub struct RelayRecorder {
    client: RelayClient,
    session: SessionId,
}

#[async_trait]
impl Recorder for RelayRecorder {
    async fn record(&self, event: BackendEvent) -> bool {
        self.client.record(&self.session, event).await
    }
}
