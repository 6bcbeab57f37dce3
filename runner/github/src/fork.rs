//! The fork policy: what a pull request whose head lives in another repository may do.
//! Its specs always come from the base commit, so a fork can never weaken its own
//! policy; what the policy decides is whether, and how, they run.

use std::str::FromStr;

use enclave_spec::{EgressMode, SessionSpec};
use serde::{Deserialize, Serialize};

/// `fork_policy` in `[github]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForkPolicy {
    /// Run with egress `deny`, no bindings, no secrets; a spec needing more is
    /// `action_required`. The default.
    #[default]
    Restricted,
    /// Every fork run waits for a user with write permission to press "Run".
    Approval,
    /// Run forks like branches.
    Trusted,
    /// Ignore forks.
    Never,
}

impl FromStr for ForkPolicy {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "restricted" => Ok(ForkPolicy::Restricted),
            "approval" => Ok(ForkPolicy::Approval),
            "trusted" => Ok(ForkPolicy::Trusted),
            "never" => Ok(ForkPolicy::Never),
            _ => Err(()),
        }
    }
}

/// What becomes of one spec on a fork's pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkVerdict {
    /// Run it as written (its needs are within the policy).
    Run,
    /// Do not run; the check run is concluded `action_required` with this summary.
    ActionRequired {
        /// Why, as the check run's summary says it.
        why: Vec<String>,
    },
    /// Do not run until a user with write permission presses "Run" on the check run.
    AwaitApproval,
    /// Create no check run at all.
    Ignore,
}

/// What the fork policy makes of `spec` for a fork's pull request.
pub fn fork_verdict(policy: ForkPolicy, spec: &SessionSpec) -> ForkVerdict {
    match policy {
        ForkPolicy::Trusted => ForkVerdict::Run,
        ForkPolicy::Never => ForkVerdict::Ignore,
        ForkPolicy::Approval => ForkVerdict::AwaitApproval,
        ForkPolicy::Restricted => {
            let body = &spec.spec;
            let mut why = Vec::new();
            if *body.egress.mode == EgressMode::Allowlist {
                why.push("it allows network egress; a fork's pull request runs with egress deny".to_owned());
            }
            if !body.bindings.is_empty() {
                let names: Vec<String> = body.bindings.iter().map(|b| b.name.to_string()).collect();
                why.push(format!("it uses bindings ({}); a fork's pull request gets none", names.join(", ")));
            }
            if body.repo.as_ref().is_some_and(|r| r.credential.is_some()) {
                why.push("it clones with a credential; a fork's pull request gets no secrets".to_owned());
            }
            if why.is_empty() { ForkVerdict::Run } else { ForkVerdict::ActionRequired { why } }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn spec(body: &str) -> SessionSpec {
        let yaml = format!("apiVersion: enclave.dev/v1\nkind: Session\nmetadata: {{ name: t }}\nspec:\n{body}");
        enclave_spec::parse("t.yaml", yaml.as_bytes()).unwrap().spec
    }

    const PLAIN: &str = "  command: [\"make\", \"test\"]\n";
    const NEEDY: &str = "  command: [\"make\"]\n  egress:\n    mode: allowlist\n    allow:\n      - { host: api.example.com, ports: [443] }\n  bindings:\n    - name: gh\n      host: api.github.com\n      secret: GH_TOKEN\n      inject: { header: Authorization, format: \"Bearer {secret}\" }\n";

    #[test]
    fn restricted_runs_a_deny_only_spec_and_holds_one_that_needs_more() {
        assert_eq!(fork_verdict(ForkPolicy::Restricted, &spec(PLAIN)), ForkVerdict::Run);
        let ForkVerdict::ActionRequired { why } = fork_verdict(ForkPolicy::Restricted, &spec(NEEDY)) else {
            panic!("a spec with egress and a binding ran on a fork");
        };
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("egress") && why[1].contains("bindings (gh)"), "{why:?}");
    }

    #[test]
    fn the_other_policies() {
        assert_eq!(fork_verdict(ForkPolicy::Trusted, &spec(NEEDY)), ForkVerdict::Run);
        assert_eq!(fork_verdict(ForkPolicy::Approval, &spec(PLAIN)), ForkVerdict::AwaitApproval);
        assert_eq!(fork_verdict(ForkPolicy::Never, &spec(PLAIN)), ForkVerdict::Ignore);
        assert_eq!("approval".parse(), Ok(ForkPolicy::Approval));
        assert_eq!("open".parse::<ForkPolicy>(), Err(()));
    }
}
