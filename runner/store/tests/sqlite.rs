//! The SQLite store against a real database file: what the database itself refuses
//! (audit changes), tokens and their expiry, atomic tenant ceilings, bounded logs,
//! secrets sealed at rest, cursor pagination, webhook deliveries kept once and queued
//! within their bound.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use enclave_core::{
    AuditChain, AuditEvent, Secret, SessionEvent, SessionId, SessionStatus, Stream, TimedEvent, verify_jsonl,
};
use enclave_store::{
    Authentication, DeliveryAccepted, NewDelivery, NewSession, SecretKey, SessionQuery, SqliteStore, Store, StoreError,
    StoreOptions, TenantLimits,
};

async fn open(dir: &tempfile::TempDir, options: StoreOptions) -> SqliteStore {
    SqliteStore::open(&dir.path().join("enclave.db"), options).await.expect("open")
}

fn key() -> SecretKey {
    SecretKey::parse(&SecretKey::generate_hex().unwrap()).unwrap()
}

fn new_session(id: &str, tenant: &str, created_ms: i64) -> NewSession {
    NewSession {
        id: SessionId::new(id).unwrap(),
        tenant: tenant.to_owned(),
        name: "t".into(),
        backend: "sim".into(),
        plan_digest: "sha256:00".into(),
        plan: "{}".into(),
        created_ms,
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn the_database_refuses_to_update_or_delete_audit_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default()).await;
    let session = SessionId::new("ses-audit").unwrap();
    let mut chain = AuditChain::new(session.clone());
    for i in 0..3 {
        let record =
            chain.append(format!("2026-01-01T00:00:0{i}.000Z"), AuditEvent::Teardown { removed: vec![], ok: true });
        store.append_audit(&record).await.unwrap();
    }
    for sql in [
        "UPDATE audit_records SET line = 'x'",
        "DELETE FROM audit_records",
        "DELETE FROM audit_records WHERE seq = 2",
        "UPDATE audit_records SET seq = seq + 10 WHERE seq = 0",
    ] {
        let err = store.execute_raw(sql).await.expect_err(sql);
        let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains("append-only"), "{sql}: {chain}");
    }
    let jsonl = store.audit_jsonl(&session).await.unwrap();
    let report = verify_jsonl(jsonl.as_bytes());
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.verified, 3);
    assert_eq!(report.digest.as_deref(), Some(chain.digest()));
    // A duplicate seq is refused too (no overwriting by re-inserting).
    let mut again = AuditChain::new(session);
    let first = again.append("2026-01-01T00:00:00.000Z".into(), AuditEvent::Teardown { removed: vec![], ok: false });
    assert!(store.append_audit(&first).await.is_err());
}

#[tokio::test]
async fn a_file_database_runs_in_wal_mode_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default()).await;
    assert_eq!(store.journal_mode().await.unwrap(), "wal");
    let tenant = store.create_tenant("acme", TenantLimits::default()).await.unwrap();
    drop(store);
    let reopened = open(&dir, StoreOptions::default()).await;
    assert_eq!(reopened.tenant_by_name("acme").await.unwrap(), Some(tenant));
    assert!(matches!(reopened.create_tenant("acme", TenantLimits::default()).await, Err(StoreError::TenantExists(_))));
}

#[tokio::test]
async fn tokens_authenticate_their_tenant_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default()).await;
    let acme = store.create_tenant("acme", TenantLimits::default()).await.unwrap();
    let token = store.issue_token(&acme.id, None).await.unwrap();
    assert_eq!(store.authenticate(&token.token, now()).await.unwrap(), Authentication::Valid(acme.clone()));

    let expiring = store.issue_token(&acme.id, Some(now() + 60_000)).await.unwrap();
    assert!(matches!(store.authenticate(&expiring.token, now()).await.unwrap(), Authentication::Valid(_)));
    assert_eq!(store.authenticate(&expiring.token, now() + 120_000).await.unwrap(), Authentication::Expired);

    let mut wrong_secret = token.token.to_string();
    wrong_secret.pop();
    wrong_secret.push(if token.token.ends_with('A') { 'B' } else { 'A' });
    let unknown_key = format!("enc_0000000000000000_{}", &token.token[21..]);
    for bad in [wrong_secret.as_str(), unknown_key.as_str(), "", "enc_", "Bearer x"] {
        assert_eq!(store.authenticate(bad, now()).await.unwrap(), Authentication::Invalid, "{bad:?}");
    }
    assert!(matches!(store.issue_token(&"ten-missing".to_owned(), None).await, Err(StoreError::NoTenant(_))));
}

#[tokio::test]
async fn only_the_hash_of_a_token_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default()).await;
    let acme = store.create_tenant("acme", TenantLimits::default()).await.unwrap();
    let token = store.issue_token(&acme.id, None).await.unwrap();
    drop(store);
    // `enc_<key id>_<secret>`: the secret is base64url and may itself hold `_`.
    let secret_part = token.token.splitn(3, '_').nth(2).unwrap().to_owned();
    assert_eq!(secret_part.len(), 43);
    assert!(!database_bytes(&dir).windows(secret_part.len()).any(|w| w == secret_part.as_bytes()));
}

fn database_bytes(dir: &tempfile::TempDir) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    all
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_concurrency_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(&dir, StoreOptions::default()).await);
    let limits = TenantLimits { max_concurrent: 3, daily_sessions: 100 };
    let tenant = store.create_tenant("acme", limits).await.unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (store, tenant) = (store.clone(), tenant.id.clone());
            tokio::spawn(async move {
                store.create_session(&new_session(&format!("ses-{i:02}"), &tenant, now()), &limits).await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::ConcurrencyLimit { limit: 3, .. }) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!(ok, 3);
    // Ending one frees a slot.
    let first = store.list_sessions(&tenant.id, &SessionQuery { limit: 1, ..Default::default() }).await.unwrap();
    store.set_status(&first[0].id, &SessionStatus::Succeeded).await.unwrap();
    store.create_session(&new_session("ses-99", &tenant.id, now()), &limits).await.unwrap();
}

#[tokio::test]
async fn the_daily_quota_counts_the_last_24_hours() {
    let store = SqliteStore::in_memory(StoreOptions::default()).await.unwrap();
    let limits = TenantLimits { max_concurrent: 100, daily_sessions: 2 };
    let tenant = store.create_tenant("acme", limits).await.unwrap();
    let day = 24 * 3_600_000;
    store.create_session(&new_session("ses-old", &tenant.id, now() - day - 1_000), &limits).await.unwrap();
    store.create_session(&new_session("ses-a", &tenant.id, now()), &limits).await.unwrap();
    store.create_session(&new_session("ses-b", &tenant.id, now()), &limits).await.unwrap();
    let err = store.create_session(&new_session("ses-c", &tenant.id, now()), &limits).await.unwrap_err();
    assert!(matches!(err, StoreError::DailyQuota { created: 2, quota: 2 }), "{err}");
}

#[tokio::test]
async fn sessions_are_listed_newest_first_by_cursor_and_state_per_tenant() {
    let store = SqliteStore::in_memory(StoreOptions::default()).await.unwrap();
    let limits = TenantLimits { max_concurrent: 100, daily_sessions: 100 };
    let acme = store.create_tenant("acme", limits).await.unwrap();
    let other = store.create_tenant("other", limits).await.unwrap();
    for i in 0..5 {
        store.create_session(&new_session(&format!("ses-{i}"), &acme.id, now()), &limits).await.unwrap();
    }
    store.create_session(&new_session("ses-x", &other.id, now()), &limits).await.unwrap();
    store.set_status(&SessionId::new("ses-3").unwrap(), &SessionStatus::Running).await.unwrap();

    let page = |before: Option<&str>, state: Option<&str>| SessionQuery {
        state: state.map(str::to_owned),
        before: before.map(|b| SessionId::new(b).unwrap()),
        limit: 2,
    };
    let ids = |s: Vec<enclave_store::StoredSession>| s.into_iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.list_sessions(&acme.id, &page(None, None)).await.unwrap()), ["ses-4", "ses-3"]);
    assert_eq!(ids(store.list_sessions(&acme.id, &page(Some("ses-3"), None)).await.unwrap()), ["ses-2", "ses-1"]);
    assert_eq!(ids(store.list_sessions(&acme.id, &page(Some("ses-1"), None)).await.unwrap()), ["ses-0"]);
    assert_eq!(ids(store.list_sessions(&acme.id, &page(None, Some("running"))).await.unwrap()), ["ses-3"]);
    assert_eq!(ids(store.list_sessions(&other.id, &page(None, None)).await.unwrap()), ["ses-x"]);
    let x = SessionId::new("ses-x").unwrap();
    assert!(store.session(&acme.id, &x).await.unwrap().is_none(), "another tenant's session is invisible");
    assert!(store.session(&other.id, &x).await.unwrap().is_some());
}

#[tokio::test]
async fn log_events_past_the_bound_are_dropped_and_counted_but_status_is_kept() {
    let store =
        SqliteStore::in_memory(StoreOptions { event_bytes_per_session: 1_000, ..Default::default() }).await.unwrap();
    let limits = TenantLimits::default();
    let tenant = store.create_tenant("acme", limits).await.unwrap();
    store.create_session(&new_session("ses-logs", &tenant.id, now()), &limits).await.unwrap();
    let id = SessionId::new("ses-logs").unwrap();
    let event = |seq, event| TimedEvent { seq, at: "2026-01-01T00:00:00.000Z".into(), event };
    let mut kept = 0;
    for seq in 0..50 {
        let log = SessionEvent::Log { stream: Stream::Stdout, line: "x".repeat(40) };
        kept += u64::from(store.append_event(&id, &event(seq, log)).await.unwrap());
    }
    assert!(kept > 5 && kept < 50, "kept {kept}");
    let status = SessionEvent::Status { status: SessionStatus::Succeeded };
    assert!(store.append_event(&id, &event(50, status)).await.unwrap());
    let stored = store.session(&tenant.id, &id).await.unwrap().unwrap();
    assert_eq!(stored.logs_dropped, 50 - kept);
    assert_eq!(store.log_events(&id).await.unwrap().len() as u64, kept);
    let all = store.events_after(&id, None, 1_000).await.unwrap();
    assert_eq!(all.last().map(|e| e.seq), Some(50));
    let tail = store.events_after(&id, Some(kept - 1), 1_000).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![50]);
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_need_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let hex_key = SecretKey::generate_hex().unwrap();
    let store =
        open(&dir, StoreOptions { secret_key: Some(SecretKey::parse(&hex_key).unwrap()), ..Default::default() }).await;
    let tenant = store.create_tenant("acme", TenantLimits::default()).await.unwrap();
    let canary = "canary-4f1c2a9e-secret-value";
    store.put_secret(&tenant.id, "git_token", &Secret::new(canary)).await.unwrap();
    store.put_secret(&tenant.id, "git_token", &Secret::new(canary)).await.unwrap();
    assert_eq!(store.secret_names(&tenant.id).await.unwrap(), ["git_token"]);
    let opened = store.open_secrets(&tenant.id).await.unwrap();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].1.expose(), canary);
    drop(store);
    assert!(!database_bytes(&dir).windows(canary.len()).any(|w| w == canary.as_bytes()), "plaintext on disk");

    let keyless = open(&dir, StoreOptions::default()).await;
    assert!(matches!(keyless.open_secrets(&tenant.id).await, Err(StoreError::NoSecretKey)));
    assert!(matches!(keyless.put_secret(&tenant.id, "x", &Secret::new("v")).await, Err(StoreError::NoSecretKey)));
    drop(keyless);
    let wrong_key = open(&dir, StoreOptions { secret_key: Some(key()), ..Default::default() }).await;
    assert!(matches!(wrong_key.open_secrets(&tenant.id).await, Err(StoreError::SecretUnreadable { .. })));
}

fn delivery(id: &str, received_ms: i64) -> NewDelivery {
    NewDelivery {
        id: id.to_owned(),
        event: "push".into(),
        payload: br#"{"ref":"refs/heads/main"}"#.to_vec(),
        received_ms,
    }
}

#[tokio::test]
async fn a_delivery_is_kept_once_whatever_its_state_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default()).await;
    assert_eq!(store.accept_delivery(&delivery("d-1", 10), 8).await.unwrap(), DeliveryAccepted::Queued);
    assert_eq!(store.accept_delivery(&delivery("d-1", 11), 8).await.unwrap(), DeliveryAccepted::Duplicate);
    assert_eq!(store.accept_delivery(&delivery("d-2", 12), 8).await.unwrap(), DeliveryAccepted::Queued);
    drop(store);
    // The queue is what the database holds: a restart finds it, oldest first.
    let store = open(&dir, StoreOptions::default()).await;
    let pending = store.pending_deliveries(10).await.unwrap();
    assert_eq!(pending.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["d-1", "d-2"]);
    assert_eq!(pending[0].payload, delivery("d-1", 10).payload, "kept as received");
    store.finish_delivery("d-1", "ran 2 specs", 20).await.unwrap();
    let done = store.delivery("d-1").await.unwrap().unwrap();
    assert_eq!(done.outcome.as_deref(), Some("ran 2 specs"));
    assert_eq!(store.pending_deliveries(10).await.unwrap().len(), 1);
    // A processed delivery redelivered by GitHub (same id) starts nothing again.
    assert_eq!(store.accept_delivery(&delivery("d-1", 30), 8).await.unwrap(), DeliveryAccepted::Duplicate);
    assert_eq!(store.pending_deliveries(10).await.unwrap().len(), 1);
    // Finishing twice keeps the first outcome.
    store.finish_delivery("d-1", "again", 40).await.unwrap();
    assert_eq!(store.delivery("d-1").await.unwrap().unwrap().outcome.as_deref(), Some("ran 2 specs"));
    assert!(store.delivery("d-unknown").await.unwrap().is_none());
}

#[tokio::test]
async fn concurrent_deliveries_never_overfill_the_queue_or_keep_an_id_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(&dir, StoreOptions::default()).await);
    // 16 distinct ids and each sent twice, at once, into a queue of 5.
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.accept_delivery(&delivery(&format!("d-{:02}", i % 16), i), 5).await })
        })
        .collect();
    let mut queued = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            DeliveryAccepted::Queued => queued.push(()),
            DeliveryAccepted::Duplicate => {}
            DeliveryAccepted::QueueFull { limit } => assert_eq!(limit, 5),
        }
    }
    assert_eq!(queued.len(), 5);
    let pending = store.pending_deliveries(100).await.unwrap();
    assert_eq!(pending.len(), 5);
    let mut ids: Vec<&str> = pending.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "an id kept twice: {ids:?}");
    // A processed delivery frees its place.
    store.finish_delivery(&pending[0].id, "done", 100).await.unwrap();
    assert_eq!(store.accept_delivery(&delivery("d-new", 101), 5).await.unwrap(), DeliveryAccepted::Queued);
    assert_eq!(
        store.accept_delivery(&delivery("d-newer", 102), 5).await.unwrap(),
        DeliveryAccepted::QueueFull { limit: 5 }
    );
}
