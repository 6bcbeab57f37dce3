//! The parts of GitHub's webhook payloads Enclave reads. Written here rather than taken
//! from octocrab, whose webhook models are untyped for `check_run`; every struct is
//! lenient (unknown fields ignored, most fields optional) because GitHub adds fields.

use serde::Deserialize;

/// `installation` on an App's deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstallationRef {
    /// The installation id.
    pub id: u64,
}

/// A repository as payloads describe it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Repository {
    /// Numeric id.
    pub id: u64,
    /// `owner/name`.
    pub full_name: String,
    /// HTTPS clone URL.
    #[serde(default)]
    pub clone_url: Option<String>,
    /// Whether the repository is private.
    #[serde(default)]
    pub private: bool,
}

/// A user or bot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    /// Login name.
    pub login: String,
    /// Numeric id.
    pub id: u64,
}

/// An App, as named on check suites and check runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AppRef {
    /// The App's id.
    pub id: u64,
}

/// What every event Enclave handles carries.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Envelope {
    /// The `action` of events that have one.
    #[serde(default)]
    pub action: Option<String>,
    /// The installation the delivery is for.
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    /// The repository the event happened in.
    #[serde(default)]
    pub repository: Option<Repository>,
    /// Who caused it.
    #[serde(default)]
    pub sender: Option<Account>,
}

/// `push`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PushEvent {
    /// The full ref pushed (`refs/heads/main`, `refs/tags/v1`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit the ref now points to.
    pub after: String,
    /// Whether the push deleted the ref.
    #[serde(default)]
    pub deleted: bool,
}

/// One side of a pull request.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PullRequestSide {
    /// Commit.
    pub sha: String,
    /// Its repository; `null` when a fork was deleted.
    #[serde(default)]
    pub repo: Option<Repository>,
}

/// The `pull_request` object.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PullRequest {
    /// The pull request's number.
    pub number: u64,
    /// The head (what is proposed).
    pub head: PullRequestSide,
    /// The base (where it would land).
    pub base: PullRequestSide,
}

/// `pull_request`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PullRequestEvent {
    /// The pull request.
    pub pull_request: PullRequest,
}

/// The `check_suite` object.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckSuite {
    /// The commit.
    pub head_sha: String,
    /// The App the suite belongs to.
    #[serde(default)]
    pub app: Option<AppRef>,
}

/// `check_suite`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckSuiteEvent {
    /// The suite.
    pub check_suite: CheckSuite,
}

/// The `check_run` object.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckRun {
    /// Check run id.
    pub id: u64,
    /// Its name (`enclave / <metadata.name>`).
    pub name: String,
    /// The commit.
    pub head_sha: String,
    /// What Enclave set: the session id.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The App that owns the check run.
    #[serde(default)]
    pub app: Option<AppRef>,
}

/// `requested_action` on a `check_run` `requested_action` event.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RequestedAction {
    /// The button's identifier.
    pub identifier: String,
}

/// `check_run`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckRunEvent {
    /// The check run.
    pub check_run: CheckRun,
    /// The pressed button, for `requested_action`.
    #[serde(default)]
    pub requested_action: Option<RequestedAction>,
}
