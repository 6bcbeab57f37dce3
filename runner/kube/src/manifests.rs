//! Every object of a session, in creation order, and their YAML rendering.

use enclave_core::{Plan, SecretStore, SessionId};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::clone_secret::clone_secret;
use crate::config::KubeConfig;
use crate::error::KubeError;
use crate::job::session_job;
use crate::names;
use crate::network_policy::{needs_proxy, session_network_policy};

/// A session's objects. Created in field order (the NetworkPolicy first, so the pod
/// never runs unconfined, then the Secret the clone container mounts, then the Job) and
/// deleted in reverse.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionManifests {
    /// Selects exactly the session pod: no ingress, egress nowhere or only to the proxy.
    pub network_policy: NetworkPolicy,
    /// The clone credential, when the plan clones with one.
    pub clone_secret: Option<Secret>,
    /// The Job running the session pod.
    pub job: Job,
}

/// How the credential is filled in.
pub enum CredentialSource<'a> {
    /// Rendering only: the Secret carries no data.
    Omitted,
    /// Launching: resolve the value from this store.
    Resolve(&'a dyn SecretStore),
}

impl SessionManifests {
    /// Builds the objects of `session` from `plan`. Refuses a plan this backend cannot
    /// run faithfully (an id too long for object names, a plan needing the egress proxy
    /// when none is configured, a credential the store does not hold).
    pub fn build(
        plan: &Plan,
        session: &SessionId,
        config: &KubeConfig,
        credential: CredentialSource<'_>,
    ) -> Result<Self, KubeError> {
        if !names::fits(session) {
            return Err(KubeError::SessionId { session: session.clone(), max: names::MAX_SESSION_ID });
        }
        if needs_proxy(plan) && config.egress_proxy.is_none() {
            return Err(KubeError::NeedsProxy);
        }
        let clone_secret = match plan.clone_phase().and_then(|c| c.credential.as_deref()) {
            None => None,
            Some(name) => Some(match credential {
                CredentialSource::Omitted => clone_secret(session, name, None, config),
                CredentialSource::Resolve(store) => {
                    let value =
                        store.resolve(name).ok_or_else(|| KubeError::MissingCredential { name: name.to_owned() })?;
                    clone_secret(session, name, Some(&value), config)
                }
            }),
        };
        Ok(Self {
            network_policy: session_network_policy(plan, session, config),
            clone_secret,
            job: session_job(plan, session, config),
        })
    }

    /// The objects as multi-document YAML, in creation order.
    pub fn to_yaml(&self) -> Result<String, KubeError> {
        let mut documents = vec![to_yaml(&self.network_policy)?];
        if let Some(secret) = &self.clone_secret {
            documents.push(to_yaml(secret)?);
        }
        documents.push(to_yaml(&self.job)?);
        Ok(documents.into_iter().map(|d| format!("---\n{d}")).collect())
    }
}

fn to_yaml<T: serde::Serialize>(object: &T) -> Result<String, KubeError> {
    let mut text = serde_saphyr::to_string(object).map_err(|e| KubeError::Render { detail: e.to_string() })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// A stable session id for rendering a plan: derived from its digest, so the same plan
/// always renders the same manifests.
pub fn render_session_id(plan: &Plan) -> SessionId {
    let hex: String = plan.digest.0.trim_start_matches("sha256:").chars().take(12).collect();
    SessionId::new(format!("plan-{hex}")).unwrap_or_else(|_| {
        // A digest is always hex; this arm only guards a hand-made plan.
        SessionId::new("plan").unwrap_or_else(|e| unreachable!("constant id is valid: {e}"))
    })
}

/// `enclave plan --output k8s`: the manifests of `plan` as YAML, with no credential.
pub fn render_plan(plan: &Plan, config: &KubeConfig) -> Result<String, KubeError> {
    SessionManifests::build(plan, &render_session_id(plan), config, CredentialSource::Omitted)?.to_yaml()
}
