//! The session Job: one pod, never retried, bounded in time, cleaned up by the cluster
//! should Enclave not do it first.

use enclave_core::{Plan, SessionId};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::KubeConfig;
use crate::labels;
use crate::names::Names;
use crate::pod::pod_spec;

/// Role label of the Job and its pod.
pub(crate) const ROLE: &str = "session";

/// The Job of a session.
pub(crate) fn session_job(plan: &Plan, session: &SessionId, config: &KubeConfig) -> Job {
    let names = Names::of(session);
    let labels = labels::for_session(session, &config.scope, ROLE);
    let deadline_seconds = i64::try_from(plan.quotas.deadline_ms.div_ceil(1_000)).unwrap_or(i64::MAX);
    Job {
        metadata: ObjectMeta {
            name: Some(names.job),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(
                [
                    ("enclave.dev/plan-digest".to_owned(), plan.digest.to_string()),
                    ("enclave.dev/session-name".to_owned(), plan.name.clone()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            completions: Some(1),
            parallelism: Some(1),
            active_deadline_seconds: Some(deadline_seconds.saturating_add(config.deadline_slack_seconds)),
            ttl_seconds_after_finished: Some(config.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(pod_spec(plan, session, config)),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
