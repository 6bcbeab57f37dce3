//! What a verified delivery asks Enclave to do: run the checked-in specs at a commit,
//! run one spec again, act on a button, or nothing. A pure function of the event name,
//! the payload and this App's id, so every filtering rule is tested without a server.

use serde::de::DeserializeOwned;

use crate::payload::{Account, CheckRunEvent, CheckSuiteEvent, Envelope, PullRequestEvent, PushEvent, Repository};

/// Why a run was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunReason {
    /// A push to a branch.
    Push {
        /// The branch name.
        branch: String,
    },
    /// A pull request was opened, updated or reopened.
    PullRequest {
        /// Its number.
        number: u64,
        /// The base repository's commit the specs come from: a fork never brings its own.
        base_sha: String,
        /// Whether the head lives in another repository (a fork, or a deleted one).
        from_fork: bool,
    },
    /// GitHub asked for this App's check suite (again).
    CheckSuite,
}

/// Which repository, installation and commit a trigger is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The App installation to authenticate as.
    pub installation: u64,
    /// The repository.
    pub repository: Repository,
    /// The commit to run.
    pub head_sha: String,
}

/// What a delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// `ping`: the webhook works.
    Ping,
    /// Run every checked-in spec at a commit.
    RunAll {
        /// Where.
        target: Target,
        /// Why.
        reason: RunReason,
    },
    /// Run the spec behind one check run again, as a new check run.
    Rerun {
        /// Where.
        target: Target,
        /// The check run's name (`enclave / <metadata.name>`).
        check_run: String,
        /// The earlier session (`external_id`), if set.
        session: Option<String>,
    },
    /// A button on one of this App's check runs was pressed.
    Action {
        /// Where.
        target: Target,
        /// The check run.
        check_run_id: u64,
        /// Its name.
        check_run: String,
        /// The button's identifier.
        identifier: String,
        /// Who pressed it (their permission is checked before anything runs).
        sender: Account,
    },
    /// Nothing to do (answered 202).
    Ignored {
        /// Why, for the log.
        why: String,
    },
}

impl Trigger {
    /// The repository and commit the trigger is about (`None` for a ping or nothing).
    pub fn target(&self) -> Option<&Target> {
        match self {
            Trigger::RunAll { target, .. } | Trigger::Rerun { target, .. } | Trigger::Action { target, .. } => {
                Some(target)
            }
            Trigger::Ping | Trigger::Ignored { .. } => None,
        }
    }
}

/// A payload that does not read as the event it claims to be.
#[derive(Debug, thiserror::Error)]
#[error("the {event} payload is not readable")]
pub struct PayloadError {
    event: String,
    #[source]
    source: serde_json::Error,
}

fn read<T: DeserializeOwned>(event: &str, payload: &[u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(payload).map_err(|source| PayloadError { event: event.to_owned(), source })
}

fn ignored(why: impl Into<String>) -> Trigger {
    Trigger::Ignored { why: why.into() }
}

/// Classifies one verified delivery for the App `app_id`.
pub fn classify(event: &str, payload: &[u8], app_id: u64) -> Result<Trigger, PayloadError> {
    if event == "ping" {
        return Ok(Trigger::Ping);
    }
    if !matches!(event, "push" | "pull_request" | "check_suite" | "check_run") {
        return Ok(ignored(format!("event {event} is not handled")));
    }
    let envelope: Envelope = read(event, payload)?;
    let (Some(installation), Some(repository)) = (envelope.installation, envelope.repository) else {
        return Ok(ignored(format!("{event} without an installation and a repository")));
    };
    let action = envelope.action.unwrap_or_default();
    let target = |head_sha: String| Target { installation: installation.id, repository: repository.clone(), head_sha };
    Ok(match event {
        "push" => {
            let push: PushEvent = read(event, payload)?;
            let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
                return Ok(ignored(format!("push to {} is not a branch", push.git_ref)));
            };
            if push.deleted || push.after.bytes().all(|b| b == b'0') {
                return Ok(ignored(format!("branch {branch} was deleted")));
            }
            Trigger::RunAll { target: target(push.after), reason: RunReason::Push { branch: branch.to_owned() } }
        }
        "pull_request" => {
            if !matches!(action.as_str(), "opened" | "synchronize" | "reopened") {
                return Ok(ignored(format!("pull_request {action} is not handled")));
            }
            let pr = read::<PullRequestEvent>(event, payload)?.pull_request;
            let from_fork = pr.head.repo.as_ref().is_none_or(|head| head.id != repository.id);
            Trigger::RunAll {
                target: target(pr.head.sha),
                reason: RunReason::PullRequest { number: pr.number, base_sha: pr.base.sha, from_fork },
            }
        }
        "check_suite" => {
            if !matches!(action.as_str(), "requested" | "rerequested") {
                return Ok(ignored(format!("check_suite {action} is not handled")));
            }
            let suite = read::<CheckSuiteEvent>(event, payload)?.check_suite;
            if suite.app.as_ref().is_some_and(|app| app.id != app_id) {
                return Ok(ignored("check_suite of another App"));
            }
            Trigger::RunAll { target: target(suite.head_sha), reason: RunReason::CheckSuite }
        }
        _ => {
            let run: CheckRunEvent = read(event, payload)?;
            // GitHub sends check_run events for every App's check runs.
            if run.check_run.app.as_ref().is_none_or(|app| app.id != app_id) {
                return Ok(ignored("check_run of another App"));
            }
            let check = run.check_run;
            match (action.as_str(), run.requested_action, envelope.sender) {
                ("rerequested", _, _) => {
                    Trigger::Rerun { target: target(check.head_sha), check_run: check.name, session: check.external_id }
                }
                ("requested_action", Some(pressed), Some(sender)) => Trigger::Action {
                    target: target(check.head_sha),
                    check_run_id: check.id,
                    check_run: check.name,
                    identifier: pressed.identifier,
                    sender,
                },
                _ => ignored(format!("check_run {action} is not handled")),
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const APP: u64 = 4242;

    fn repo(id: u64, name: &str) -> Value {
        json!({ "id": id, "full_name": name, "clone_url": format!("https://github.test/{name}.git"), "private": true, "new_field": 1 })
    }

    fn with_base(mut body: Value) -> Value {
        body["installation"] = json!({ "id": 7, "node_id": "x" });
        body["repository"] = repo(1, "acme/app");
        body["sender"] = json!({ "login": "octocat", "id": 9, "type": "User" });
        body
    }

    fn check(event: &str, body: Value) -> Trigger {
        classify(event, &serde_json::to_vec(&with_base(body)).unwrap(), APP).unwrap()
    }

    fn target(sha: &str) -> Target {
        Target {
            installation: 7,
            repository: Repository {
                id: 1,
                full_name: "acme/app".into(),
                clone_url: Some("https://github.test/acme/app.git".into()),
                private: true,
            },
            head_sha: sha.into(),
        }
    }

    fn is_ignored(trigger: &Trigger) -> bool {
        matches!(trigger, Trigger::Ignored { .. })
    }

    #[test]
    fn a_push_to_a_branch_runs_its_commit() {
        let trigger =
            check("push", json!({ "ref": "refs/heads/main", "before": "a", "after": "abc123", "deleted": false }));
        assert_eq!(
            trigger,
            Trigger::RunAll { target: target("abc123"), reason: RunReason::Push { branch: "main".into() } }
        );
    }

    #[test]
    fn tags_and_branch_deletions_run_nothing() {
        assert!(is_ignored(&check("push", json!({ "ref": "refs/tags/v1", "after": "abc" }))));
        assert!(is_ignored(&check("push", json!({ "ref": "refs/heads/old", "after": "abc", "deleted": true }))));
        let zeros = "0000000000000000000000000000000000000000";
        assert!(is_ignored(&check("push", json!({ "ref": "refs/heads/old", "after": zeros }))));
    }

    #[test]
    fn pull_requests_run_the_head_with_specs_from_the_base_and_know_a_fork() {
        let pr = |action: &str, head_repo: Value| {
            check(
                "pull_request",
                json!({ "action": action, "pull_request": {
                    "number": 5,
                    "head": { "sha": "head1", "ref": "feature", "repo": head_repo },
                    "base": { "sha": "base1", "ref": "main", "repo": repo(1, "acme/app") },
                }}),
            )
        };
        for action in ["opened", "synchronize", "reopened"] {
            assert_eq!(
                pr(action, repo(1, "acme/app")),
                Trigger::RunAll {
                    target: target("head1"),
                    reason: RunReason::PullRequest { number: 5, base_sha: "base1".into(), from_fork: false }
                }
            );
        }
        let fork = pr("opened", repo(99, "mallory/app"));
        assert!(matches!(fork, Trigger::RunAll { reason: RunReason::PullRequest { from_fork: true, .. }, .. }));
        let deleted_fork = pr("synchronize", Value::Null);
        assert!(matches!(deleted_fork, Trigger::RunAll { reason: RunReason::PullRequest { from_fork: true, .. }, .. }));
        for action in ["closed", "labeled", "edited"] {
            assert!(is_ignored(&pr(action, repo(1, "acme/app"))), "{action}");
        }
    }

    #[test]
    fn check_suites_of_this_app_run_and_others_do_not() {
        let suite = |action: &str, app: u64| {
            check(
                "check_suite",
                json!({ "action": action, "check_suite": {
                "id": 3, "head_sha": "s1", "head_branch": "main", "app": { "id": app }, "pull_requests": [] } }),
            )
        };
        assert_eq!(suite("requested", APP), Trigger::RunAll { target: target("s1"), reason: RunReason::CheckSuite });
        assert_eq!(suite("rerequested", APP), Trigger::RunAll { target: target("s1"), reason: RunReason::CheckSuite });
        assert!(is_ignored(&suite("completed", APP)));
        assert!(is_ignored(&suite("requested", APP + 1)));
    }

    #[test]
    fn check_runs_are_filtered_on_this_apps_id() {
        let run = |action: &str, app: Value, extra: Value| {
            let mut body = json!({ "action": action, "check_run": {
                "id": 11, "name": "enclave / build", "head_sha": "c1", "external_id": "ses-1", "app": app } });
            if let Value::Object(extra) = extra {
                body.as_object_mut().unwrap().extend(extra);
            }
            check("check_run", body)
        };
        assert_eq!(
            run("rerequested", json!({ "id": APP }), Value::Null),
            Trigger::Rerun { target: target("c1"), check_run: "enclave / build".into(), session: Some("ses-1".into()) }
        );
        let pressed =
            run("requested_action", json!({ "id": APP }), json!({ "requested_action": { "identifier": "run" } }));
        assert_eq!(
            pressed,
            Trigger::Action {
                target: target("c1"),
                check_run_id: 11,
                check_run: "enclave / build".into(),
                identifier: "run".into(),
                sender: Account { login: "octocat".into(), id: 9 },
            }
        );
        assert!(is_ignored(&run("rerequested", json!({ "id": APP + 1 }), Value::Null)));
        assert!(is_ignored(&run("rerequested", Value::Null, Value::Null)), "no app: not ours");
        assert!(is_ignored(&run("created", json!({ "id": APP }), Value::Null)));
    }

    #[test]
    fn ping_unknown_events_and_unreadable_payloads() {
        assert_eq!(classify("ping", b"{}", APP).unwrap(), Trigger::Ping);
        assert!(is_ignored(&classify("issues", b"not even json", APP).unwrap()), "unknown events are not parsed");
        assert!(classify("push", b"{", APP).is_err());
        let missing_after = with_base(json!({ "ref": "refs/heads/main" }));
        assert!(classify("push", &serde_json::to_vec(&missing_after).unwrap(), APP).is_err());
        assert!(
            is_ignored(&classify("push", br#"{"ref":"refs/heads/main","after":"a"}"#, APP).unwrap()),
            "no installation"
        );
    }
}
