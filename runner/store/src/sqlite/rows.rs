//! Reading rows into the store's model, and the small conversions the SQL needs.

use enclave_core::{SessionEvent, SessionId};
use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use crate::error::StoreError;
use crate::model::{StoredEvent, StoredSession, Tenant, TenantLimits};

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The `type` of an event, as stored in the `kind` column.
pub(super) fn event_kind(event: &SessionEvent) -> &'static str {
    match event {
        SessionEvent::Status { .. } => "status",
        SessionEvent::Warning { .. } => "warning",
        SessionEvent::Clone { .. } => "clone",
        SessionEvent::StepStarted { .. } => "step_started",
        SessionEvent::StepFinished { .. } => "step_finished",
        SessionEvent::Log { .. } => "log",
        SessionEvent::LogVolume { .. } => "log_volume",
        SessionEvent::Egress { .. } => "egress",
        SessionEvent::Binding { .. } => "binding",
        SessionEvent::Kill { .. } => "kill",
        SessionEvent::Finished { .. } => "finished",
    }
}

pub(super) fn tenant_from(row: &SqliteRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_ms: row.try_get("created_ms")?,
        limits: TenantLimits {
            max_concurrent: to_u64(row.try_get("max_concurrent")?),
            daily_sessions: to_u64(row.try_get("daily_sessions")?),
        },
    })
}

pub(super) fn session_from(row: &SqliteRow) -> Result<StoredSession, StoreError> {
    let get = |e| StoreError::Database { action: "reading a session", source: e };
    let id: String = row.try_get("id").map_err(get)?;
    let status: String = row.try_get("status").map_err(get)?;
    let result: Option<String> = row.try_get("result").map_err(get)?;
    Ok(StoredSession {
        id: SessionId::new(id).map_err(|e| StoreError::Database {
            action: "reading a session id",
            source: sqlx::Error::Decode(Box::new(e)),
        })?,
        tenant: row.try_get("tenant_id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        status: serde_json::from_str(&status).map_err(|source| StoreError::Corrupt { what: "status", source })?,
        backend: row.try_get("backend").map_err(get)?,
        plan_digest: row.try_get("plan_digest").map_err(get)?,
        plan: row.try_get("plan").map_err(get)?,
        created_ms: row.try_get("created_ms").map_err(get)?,
        finished_ms: row.try_get("finished_ms").map_err(get)?,
        result: result
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|source| StoreError::Corrupt { what: "result", source })?,
        logs_dropped: to_u64(row.try_get("logs_dropped").map_err(get)?),
    })
}

pub(super) fn event_from(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let get = |e| StoreError::Database { action: "reading an event", source: e };
    Ok(StoredEvent { seq: to_u64(row.try_get("seq").map_err(get)?), body: row.try_get("body").map_err(get)? })
}

pub(super) const SESSION_COLUMNS: &str = "id, tenant_id, name, status, backend, plan_digest, plan, created_ms, finished_ms, \
                               result, logs_dropped";
