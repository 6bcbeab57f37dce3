//! The audit chain: typed, append-only, hash-chained records per session.
//!
//! Each record carries the hash of the previous one; the first links to a genesis value
//! derived from the session id, so records cannot be moved between sessions. A record's
//! hash is sha256 over its canonical JSON without the `hash` field. On disk a chain is
//! JSONL, one canonical record per line, and verification also insists that every line
//! is exactly the canonical form of what it parses to: changing any single byte is
//! detected and the first affected record is named.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::egress::{Decision, EgressPhase};
use crate::kill_reason::{KillReason, SessionStatus};
use crate::plan::Isolation;
use crate::session_id::SessionId;

/// One audit record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// The session.
    pub session: SessionId,
    /// When, RFC 3339 UTC with milliseconds.
    pub at: String,
    /// Hash of the previous record (or the session's genesis value).
    pub prev: String,
    /// What happened.
    pub event: AuditEvent,
    /// sha256 of this record without `hash`.
    pub hash: String,
}

/// What an audit record says. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum AuditEvent {
    /// The session was accepted.
    SessionCreated {
        /// Session name.
        name: String,
        /// Backend name.
        backend: String,
        /// Whether the backend only models behaviour.
        simulated: bool,
    },
    /// The plan was resolved.
    PlanResolved {
        /// Plan digest.
        plan_digest: String,
        /// Isolation level planned.
        isolation: Isolation,
    },
    /// Weaker isolation than gVisor was requested and granted.
    IsolationWeakened {
        /// The level in force.
        isolation: Isolation,
    },
    /// The clone step started.
    CloneStarted {
        /// Repository host.
        host: String,
        /// Repository port.
        port: u16,
    },
    /// The clone step finished.
    CloneFinished {
        /// Whether it succeeded.
        ok: bool,
        /// Detail (never a token).
        detail: String,
    },
    /// The clone step's network reach was revoked before the workload started.
    CloneReachRevoked {
        /// Repository host.
        host: String,
        /// Repository port.
        port: u16,
    },
    /// The workload started.
    WorkloadStarted {
        /// Image.
        image: String,
    },
    /// An egress decision.
    EgressDecision {
        /// Phase.
        phase: EgressPhase,
        /// Host as the workload wrote it.
        host: String,
        /// Port.
        port: u16,
        /// Allow (rule) or deny (reason).
        decision: Decision,
    },
    /// A request through a service binding (never the credential).
    BindingUsed {
        /// Binding name.
        binding: String,
        /// Upstream host.
        host: String,
        /// HTTP method.
        method: String,
        /// Request path (no query).
        path: String,
        /// Whether the proxy forwarded it.
        allowed: bool,
        /// Upstream status, when forwarded and answered.
        status: Option<u16>,
        /// Why it was refused, when refused.
        reason: Option<String>,
    },
    /// The session was killed: a quota, the deadline, a cancel or a lost sandbox.
    Kill {
        /// Why.
        reason: KillReason,
        /// Detail.
        detail: String,
    },
    /// Artifacts were copied out.
    ArtifactsCollected {
        /// Workspace paths kept.
        files: Vec<String>,
        /// Bytes of file content kept.
        bytes: u64,
        /// Entries left out, as `path: reason`.
        skipped: Vec<String>,
    },
    /// The final result.
    Result {
        /// Final status.
        status: SessionStatus,
        /// Exit code, if the workload exited.
        exit_code: Option<i32>,
        /// Duration in milliseconds.
        duration_ms: u64,
        /// Whether the result is simulated.
        simulated: bool,
    },
    /// Teardown finished.
    Teardown {
        /// Resources removed.
        removed: Vec<String>,
        /// Whether everything was removed.
        ok: bool,
    },
}

impl AuditEvent {
    /// The record type name, e.g. `egress_decision`.
    pub fn type_name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str().map(str::to_owned)))
            .unwrap_or_default()
    }
}

#[derive(Serialize)]
struct HashInput<'a> {
    seq: u64,
    session: &'a SessionId,
    at: &'a str,
    prev: &'a str,
    event: &'a AuditEvent,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The value the first record of a session links to.
pub fn genesis(session: &SessionId) -> String {
    sha256_hex(format!("enclave.dev/audit/v1\0{session}").as_bytes())
}

fn record_hash(seq: u64, session: &SessionId, at: &str, prev: &str, event: &AuditEvent) -> String {
    let input = HashInput { seq, session, at, prev, event };
    sha256_hex(&serde_json::to_vec(&input).unwrap_or_default())
}

/// Builds the chain for one session. Holds only the tip, not the records.
#[derive(Debug, Clone)]
pub struct AuditChain {
    session: SessionId,
    next_seq: u64,
    tip: String,
}

impl AuditChain {
    /// A new, empty chain.
    pub fn new(session: SessionId) -> Self {
        let tip = genesis(&session);
        Self { session, next_seq: 0, tip }
    }

    /// Continues a chain after its last stored record (e.g. to record, after a restart,
    /// how a session that was running ended).
    pub fn resume(last: &AuditRecord) -> Self {
        Self { session: last.session.clone(), next_seq: last.seq + 1, tip: last.hash.clone() }
    }

    /// Makes the next record. `at` is RFC 3339 UTC.
    pub fn append(&mut self, at: String, event: AuditEvent) -> AuditRecord {
        let hash = record_hash(self.next_seq, &self.session, &at, &self.tip, &event);
        let record = AuditRecord {
            seq: self.next_seq,
            session: self.session.clone(),
            at,
            prev: std::mem::replace(&mut self.tip, hash.clone()),
            event,
            hash,
        };
        self.next_seq += 1;
        record
    }

    /// Hash of the last record: the session's audit digest.
    pub fn digest(&self) -> &str {
        &self.tip
    }

    /// Number of records made.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    /// Whether no record was made yet.
    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }
}

/// The canonical JSONL line for a record (with trailing newline).
pub fn to_jsonl_line(record: &AuditRecord) -> String {
    let mut line = serde_json::to_string(record).unwrap_or_default();
    line.push('\n');
    line
}

/// Where audit records go. If a record cannot be written, the orchestrator stops the
/// session: nothing runs unaudited.
pub trait AuditSink: Send {
    /// Appends one record.
    fn append(&mut self, record: &AuditRecord) -> Result<(), AuditWriteError>;
}

/// An audit record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write audit record {seq}")]
pub struct AuditWriteError {
    /// Sequence number of the record.
    pub seq: u64,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Keeps records in memory (tests, the server before it stores them).
#[derive(Debug, Default, Clone)]
pub struct MemoryAuditSink {
    /// Records so far.
    pub records: Vec<AuditRecord>,
}

impl AuditSink for MemoryAuditSink {
    fn append(&mut self, record: &AuditRecord) -> Result<(), AuditWriteError> {
        self.records.push(record.clone());
        Ok(())
    }
}

/// The result of verifying a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct VerifyReport {
    /// Records that verified before any break.
    pub verified: usize,
    /// The session, from the first record.
    pub session: Option<SessionId>,
    /// Hash of the last verified record.
    pub digest: Option<String>,
    /// The first broken record, if any.
    pub broken: Option<BrokenRecord>,
}

impl VerifyReport {
    /// Whether the whole chain verified.
    pub fn is_ok(&self) -> bool {
        self.broken.is_none() && self.verified > 0
    }
}

/// Where and why a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct BrokenRecord {
    /// 1-based line in the JSONL file.
    pub line: usize,
    /// Sequence number expected at that line.
    pub seq: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for BrokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {} (line {}): {}", self.seq, self.line, self.reason)
    }
}

/// Verifies a JSONL chain: recomputes every hash and link and names the first record
/// that does not hold.
pub fn verify_jsonl(bytes: &[u8]) -> VerifyReport {
    let mut report = VerifyReport { verified: 0, session: None, digest: None, broken: None };
    if bytes.is_empty() {
        report.broken = Some(BrokenRecord { line: 1, seq: 0, reason: "the audit file is empty".into() });
        return report;
    }
    // A missing final newline is reported at the last line, after the lines before it
    // have been verified.
    let terminated = bytes.ends_with(b"\n");
    let body = if terminated { &bytes[..bytes.len() - 1] } else { bytes };
    let last_index = body.split(|b| *b == b'\n').count() - 1;
    let mut expected_prev = String::new();
    for (index, raw) in body.split(|b| *b == b'\n').enumerate() {
        let broken = |reason: String| BrokenRecord { line: index + 1, seq: index, reason };
        let record = match check_line(raw, index, report.session.as_ref(), &expected_prev) {
            Ok(record) => record,
            Err(reason) => {
                report.broken = Some(broken(reason));
                return report;
            }
        };
        if index == last_index && !terminated {
            report.broken = Some(broken("the last line is not terminated by a newline".into()));
            return report;
        }
        if report.session.is_none() {
            report.session = Some(record.session.clone());
        }
        expected_prev.clone_from(&record.hash);
        report.digest = Some(record.hash);
        report.verified += 1;
    }
    report
}

fn check_line(
    raw: &[u8],
    index: usize,
    session: Option<&SessionId>,
    expected_prev: &str,
) -> Result<AuditRecord, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not valid UTF-8".to_owned())?;
    let record: AuditRecord = serde_json::from_str(text).map_err(|e| format!("not a valid audit record: {e}"))?;
    let canonical = serde_json::to_string(&record).unwrap_or_default();
    if canonical != text {
        return Err("not in canonical form (the bytes were altered)".into());
    }
    if record.seq != index as u64 {
        return Err(format!("sequence number is {}, expected {index}", record.seq));
    }
    if let Some(session) = session
        && &record.session != session
    {
        return Err(format!("belongs to session {}, not {session}", record.session));
    }
    let prev = if index == 0 { genesis(&record.session) } else { expected_prev.to_owned() };
    if record.prev != prev {
        return Err("does not link to the previous record (prev hash mismatch)".into());
    }
    let hash = record_hash(record.seq, &record.session, &record.at, &record.prev, &record.event);
    if record.hash != hash {
        return Err("content does not match its hash".into());
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_bytes() -> Vec<u8> {
        let session = SessionId::new("ses-test").expect("id");
        let mut chain = AuditChain::new(session);
        let mut out = String::new();
        let events = [
            AuditEvent::SessionCreated { name: "t".into(), backend: "sim".into(), simulated: true },
            AuditEvent::Kill { reason: KillReason::OomKilled, detail: "memory".into() },
            AuditEvent::Teardown { removed: vec!["container:x".into()], ok: true },
        ];
        for (i, event) in events.into_iter().enumerate() {
            out.push_str(&to_jsonl_line(&chain.append(format!("2026-01-01T00:00:0{i}.000Z"), event)));
        }
        out.into_bytes()
    }

    #[test]
    fn a_fresh_chain_verifies() {
        let report = verify_jsonl(&chain_bytes());
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.verified, 3);
    }

    #[test]
    fn every_single_byte_change_is_detected_at_its_record() {
        let bytes = chain_bytes();
        let line_of = |pos: usize| bytes[..pos].iter().filter(|b| **b == b'\n').count() + 1;
        for pos in 0..bytes.len() {
            for replacement in [b'x', b'0', b' ', b'\n'] {
                if bytes[pos] == replacement {
                    continue;
                }
                let mut tampered = bytes.clone();
                tampered[pos] = replacement;
                let report = verify_jsonl(&tampered);
                let broken = report.broken.unwrap_or_else(|| panic!("byte {pos} -> {replacement} not detected"));
                assert!(broken.line <= line_of(pos) + 1, "byte {pos}: reported line {}", broken.line);
                assert!(broken.line >= line_of(pos).min(3), "byte {pos}: reported line {}", broken.line);
            }
        }
    }

    #[test]
    fn a_resumed_chain_verifies_as_one() {
        let mut text = String::from_utf8(chain_bytes()).expect("utf8");
        let last: AuditRecord = serde_json::from_str(text.lines().last().expect("a line")).expect("record");
        let mut resumed = AuditChain::resume(&last);
        let record =
            resumed.append("2026-01-01T00:00:09.000Z".into(), AuditEvent::Teardown { removed: vec![], ok: true });
        assert_eq!(record.seq, 3);
        text.push_str(&to_jsonl_line(&record));
        let report = verify_jsonl(text.as_bytes());
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.digest.as_deref(), Some(resumed.digest()));
    }

    #[test]
    fn removing_or_reordering_records_is_detected() {
        let bytes = chain_bytes();
        let text = String::from_utf8(bytes).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        let without_middle = format!("{}\n{}\n", lines[0], lines[2]);
        assert_eq!(verify_jsonl(without_middle.as_bytes()).broken.map(|b| b.line), Some(2));
        let truncated_tail = format!("{}\n{}\n", lines[0], lines[1]);
        assert!(verify_jsonl(truncated_tail.as_bytes()).is_ok(), "a prefix is a valid chain; its digest differs");
        let swapped = format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2]);
        assert_eq!(verify_jsonl(swapped.as_bytes()).broken.map(|b| b.line), Some(1));
    }
}
