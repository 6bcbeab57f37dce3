//! The per-session Secret holding the clone credential. Only the clone init container
//! mounts it; it is deleted at teardown with the rest of the session.

use std::collections::BTreeMap;

use enclave_core::{Secret as SecretValue, SessionId};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::KubeConfig;
use crate::labels;
use crate::names::Names;

/// Role label of the Secret.
pub(crate) const ROLE: &str = "clone-credential";

/// The clone credential Secret. `value` is `None` when rendering a plan: the printed
/// manifest then carries the secret's name in an annotation and no data at all.
pub(crate) fn clone_secret(
    session: &SessionId,
    credential_name: &str,
    value: Option<&SecretValue>,
    config: &KubeConfig,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(Names::of(session).clone_secret),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels::for_session(session, &config.scope, ROLE)),
            annotations: Some(BTreeMap::from([("enclave.dev/credential".to_owned(), credential_name.to_owned())])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: value.map(|v| BTreeMap::from([("token".to_owned(), ByteString(v.expose().as_bytes().to_vec()))])),
        ..Default::default()
    }
}
