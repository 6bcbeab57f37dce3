//! The SQLite implementation: one database file in WAL mode, schema migrations embedded
//! in the binary, plain `query()` calls (no compile-time macros, so no database is
//! needed to build and the SQL can be ported as is).

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use enclave_core::{
    ArtifactBundle, AuditRecord, Secret, SessionId, SessionResult, SessionStatus, TimedEvent, to_jsonl_line,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqlSafeStr as _, SqlitePool};

use crate::cipher::SecretKey;
use crate::error::StoreError;
use crate::model::{
    ArtifactManifest, Authentication, DeliveryAccepted, NewDelivery, NewSession, SessionQuery, StateCount,
    StoredDelivery, StoredEvent, StoredSession, Tenant, TenantId, TenantLimits,
};
use crate::store::Store;
use crate::token::{self, IssuedToken};

mod deliveries;
mod rows;

use rows::{SESSION_COLUMNS, event_from, event_kind, session_from, tenant_from, to_i64, to_u64};

const DAY_MS: i64 = 24 * 3_600_000;

/// How the store is opened.
#[derive(Debug)]
pub struct StoreOptions {
    /// The key that seals secrets; without one, secrets can be neither set nor read.
    pub secret_key: Option<SecretKey>,
    /// Most bytes of events kept per session; log events past it are dropped and
    /// counted. Status changes and the result are always kept.
    pub event_bytes_per_session: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { secret_key: None, event_bytes_per_session: 16 << 20 }
    }
}

/// The SQLite store. Writes go through one connection, so writers queue in the pool
/// (asynchronously) instead of contending for the database lock (where SQLite's busy
/// handler sleeps); reads use a pool of their own, which WAL lets run beside the writer.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: SqlitePool,
    options: StoreOptions,
}

fn migrator() -> Migrator {
    let migration = |version, name: &str, sql: &'static str| {
        Migration::new(version, name.to_owned().into(), MigrationType::Simple, sql.into_sql_str(), false)
    };
    Migrator::with_migrations(vec![
        migration(1, "initial", include_str!("../migrations/0001_initial.sql")),
        migration(2, "github deliveries", include_str!("../migrations/0002_github_deliveries.sql")),
    ])
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        Self::connect(connect, options).await
    }

    /// Opens a private in-memory database (tests).
    pub async fn in_memory(options: StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(StoreError::db("parsing the in-memory url"))?
            .foreign_keys(true);
        // One connection: every connection to `:memory:` is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect)
            .await
            .map_err(StoreError::db("opening the database"))?;
        migrator().run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(Self { writer: pool.clone(), pool, options })
    }

    async fn connect(connect: SqliteConnectOptions, options: StoreOptions) -> Result<Self, StoreError> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect.clone())
            .await
            .map_err(StoreError::db("opening the database"))?;
        migrator().run(&writer).await.map_err(StoreError::Migrate)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(connect.read_only(true))
            .await
            .map_err(StoreError::db("opening the database"))?;
        Ok(Self { pool, writer, options })
    }

    /// The journal mode in force (`wal` for a file database).
    pub async fn journal_mode(&self) -> Result<String, StoreError> {
        sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::db("reading the journal mode"))
    }

    /// Runs a raw statement: for tests that prove what the database itself refuses.
    pub async fn execute_raw(&self, sql: &'static str) -> Result<u64, StoreError> {
        sqlx::query(sql)
            .execute(&self.writer)
            .await
            .map(|r| r.rows_affected())
            .map_err(StoreError::db("running a raw statement"))
    }

    fn key(&self) -> Result<&SecretKey, StoreError> {
        self.options.secret_key.as_ref().ok_or(StoreError::NoSecretKey)
    }

    async fn count(&self, sql: &'static str, tenant: &str, n: i64) -> Result<u64, StoreError> {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(tenant)
            .bind(n)
            .fetch_one(&self.pool)
            .await
            .map(to_u64)
            .map_err(StoreError::db("counting sessions"))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError> {
        let mut id = [0u8; 8];
        token::random_bytes(&mut id)?;
        let tenant = Tenant {
            id: format!("ten-{}", hex::encode(id)),
            name: name.to_owned(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            limits,
        };
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name, created_ms, max_concurrent, daily_sessions) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.created_ms)
        .bind(to_i64(limits.max_concurrent))
        .bind(to_i64(limits.daily_sessions))
        .execute(&self.writer)
        .await;
        match inserted {
            Ok(_) => Ok(tenant),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::TenantExists(name.to_owned())),
            Err(e) => Err(StoreError::db("creating a tenant")(e)),
        }
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query("SELECT * FROM tenants WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a tenant"))?;
        row.as_ref().map(tenant_from).transpose().map_err(StoreError::db("reading a tenant"))
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing tenants"))?;
        rows.iter().map(tenant_from).collect::<Result<_, _>>().map_err(StoreError::db("reading a tenant"))
    }

    async fn issue_token(&self, tenant: &TenantId, expires_ms: Option<i64>) -> Result<IssuedToken, StoreError> {
        let issued = token::issue()?;
        let inserted = sqlx::query(
            "INSERT INTO tokens (key_id, tenant_id, secret_hash, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&issued.key_id)
        .bind(tenant)
        .bind(issued.secret_hash.as_slice())
        .bind(chrono::Utc::now().timestamp_millis())
        .bind(expires_ms)
        .execute(&self.writer)
        .await;
        match inserted {
            Ok(_) => Ok(issued),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(StoreError::NoTenant(tenant.clone())),
            Err(e) => Err(StoreError::db("issuing a token")(e)),
        }
    }

    async fn authenticate(&self, presented: &str, now_ms: i64) -> Result<Authentication, StoreError> {
        let Some((key_id, secret)) = token::split(presented) else {
            return Ok(Authentication::Invalid);
        };
        let row = sqlx::query(
            "SELECT t.*, k.secret_hash, k.expires_ms FROM tokens k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.key_id = ?1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("reading a token"))?;
        let Some(row) = row else {
            // Same work as a known key, so timing does not tell whether the key id exists.
            let _ = token::matches(secret, &[0u8; 32]);
            return Ok(Authentication::Invalid);
        };
        let stored: Vec<u8> = row.try_get("secret_hash").map_err(StoreError::db("reading a token"))?;
        if !token::matches(secret, &stored) {
            return Ok(Authentication::Invalid);
        }
        let expires: Option<i64> = row.try_get("expires_ms").map_err(StoreError::db("reading a token"))?;
        if expires.is_some_and(|at| at <= now_ms) {
            return Ok(Authentication::Expired);
        }
        Ok(Authentication::Valid(tenant_from(&row).map_err(StoreError::db("reading a tenant"))?))
    }

    async fn create_session(&self, session: &NewSession, limits: &TenantLimits) -> Result<(), StoreError> {
        let pending = serde_json::to_string(&SessionStatus::Pending).unwrap_or_default();
        // One statement: SQLite takes the write lock before the counts are read, so two
        // concurrent creates cannot both slip under a limit.
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, tenant_id, name, state, status, backend, plan_digest, plan, created_ms) \
             SELECT ?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8 \
             WHERE (SELECT count(*) FROM sessions WHERE tenant_id = ?2 \
                    AND state IN ('pending', 'cloning', 'running')) < ?9 \
               AND (SELECT count(*) FROM sessions WHERE tenant_id = ?2 AND created_ms > ?8 - ?11) < ?10",
        )
        .bind(session.id.as_str())
        .bind(&session.tenant)
        .bind(&session.name)
        .bind(&pending)
        .bind(&session.backend)
        .bind(&session.plan_digest)
        .bind(&session.plan)
        .bind(session.created_ms)
        .bind(to_i64(limits.max_concurrent))
        .bind(to_i64(limits.daily_sessions))
        .bind(DAY_MS)
        .execute(&self.writer)
        .await
        .map_err(StoreError::db("creating a session"))?;
        if inserted.rows_affected() == 1 {
            return Ok(());
        }
        let running = self
            .count(
                "SELECT count(*) FROM sessions WHERE tenant_id = ?1 AND state IN ('pending', 'cloning', 'running') \
                 AND ?2 = ?2",
                &session.tenant,
                0,
            )
            .await?;
        if running >= limits.max_concurrent {
            return Err(StoreError::ConcurrencyLimit { running, limit: limits.max_concurrent });
        }
        let created = self
            .count(
                "SELECT count(*) FROM sessions WHERE tenant_id = ?1 AND created_ms > ?2",
                &session.tenant,
                session.created_ms - DAY_MS,
            )
            .await?;
        Err(StoreError::DailyQuota { created, quota: limits.daily_sessions })
    }

    async fn set_status(&self, session: &SessionId, status: &SessionStatus) -> Result<(), StoreError> {
        let json = serde_json::to_string(status).unwrap_or_default();
        sqlx::query("UPDATE sessions SET state = ?2, status = ?3, kill_reason = ?4 WHERE id = ?1")
            .bind(session.as_str())
            .bind(status.name())
            .bind(json)
            .bind(status.kill_reason().map(|r| r.to_string()))
            .execute(&self.writer)
            .await
            .map_err(StoreError::db("updating a session's status"))?;
        Ok(())
    }

    async fn finish_session(&self, session: &SessionId, result: &SessionResult, now_ms: i64) -> Result<(), StoreError> {
        let status = serde_json::to_string(&result.status).unwrap_or_default();
        let document = serde_json::to_string(result).unwrap_or_default();
        sqlx::query(
            "UPDATE sessions SET state = ?2, status = ?3, kill_reason = ?4, result = ?5, finished_ms = ?6 \
             WHERE id = ?1",
        )
        .bind(session.as_str())
        .bind(result.status.name())
        .bind(status)
        .bind(result.kill_reason.map(|r| r.to_string()))
        .bind(document)
        .bind(now_ms)
        .execute(&self.writer)
        .await
        .map_err(StoreError::db("recording a result"))?;
        Ok(())
    }

    async fn session(&self, tenant: &TenantId, session: &SessionId) -> Result<Option<StoredSession>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1 AND tenant_id = ?2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session.as_str())
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a session"))?;
        row.as_ref().map(session_from).transpose()
    }

    async fn list_sessions(&self, tenant: &TenantId, query: &SessionQuery) -> Result<Vec<StoredSession>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = ?1 AND (?2 IS NULL OR state = ?2) \
             AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(query.state.as_deref())
            .bind(query.before.as_ref().map(SessionId::as_str))
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing sessions"))?;
        rows.iter().map(session_from).collect()
    }

    async fn active_sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE state IN ('pending', 'cloning', 'running') ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing active sessions"))?;
        rows.iter().map(session_from).collect()
    }

    async fn state_counts(&self) -> Result<Vec<StateCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, kill_reason, count(*) AS n FROM sessions GROUP BY state, kill_reason \
             ORDER BY state, kill_reason",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("counting sessions"))?;
        rows.iter()
            .map(|row| {
                Ok(StateCount {
                    state: row.try_get("state")?,
                    kill_reason: row.try_get("kill_reason")?,
                    count: to_u64(row.try_get("n")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::db("counting sessions"))
    }

    async fn append_events(&self, session: &SessionId, events: &[TimedEvent]) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.writer.begin().await.map_err(StoreError::db("appending events"))?;
        let mut kept = Vec::with_capacity(events.len());
        for event in events {
            let kind = event_kind(&event.event);
            let body = serde_json::to_string(event).unwrap_or_default();
            let bytes = to_i64(body.len() as u64);
            // Log lines count against the bound; everything else is always kept.
            let cap = if kind == "log" { to_i64(self.options.event_bytes_per_session) } else { i64::MAX };
            let counted = sqlx::query(
                "UPDATE sessions SET event_bytes = event_bytes + ?2 WHERE id = ?1 AND event_bytes + ?2 <= ?3",
            )
            .bind(session.as_str())
            .bind(bytes)
            .bind(cap)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("appending an event"))?;
            if counted.rows_affected() == 0 {
                sqlx::query("UPDATE sessions SET logs_dropped = logs_dropped + 1 WHERE id = ?1")
                    .bind(session.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("counting a dropped log line"))?;
                kept.push(false);
                continue;
            }
            sqlx::query("INSERT INTO session_events (session_id, seq, kind, body) VALUES (?1, ?2, ?3, ?4)")
                .bind(session.as_str())
                .bind(to_i64(event.seq))
                .bind(kind)
                .bind(body)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("appending an event"))?;
            kept.push(true);
        }
        tx.commit().await.map_err(StoreError::db("appending events"))?;
        Ok(kept)
    }

    async fn events_after(
        &self,
        session: &SessionId,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, body FROM session_events WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(session.as_str())
        .bind(after.map_or(-1, to_i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("reading events"))?;
        rows.iter().map(event_from).collect()
    }

    async fn log_events(&self, session: &SessionId) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, body FROM session_events WHERE session_id = ?1 AND kind IN ('log', 'log_volume') \
             ORDER BY seq",
        )
        .bind(session.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("reading logs"))?;
        rows.iter().map(event_from).collect()
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_records (session_id, seq, line) VALUES (?1, ?2, ?3)")
            .bind(record.session.as_str())
            .bind(to_i64(record.seq))
            .bind(to_jsonl_line(record))
            .execute(&self.writer)
            .await
            .map_err(StoreError::db("appending an audit record"))?;
        Ok(())
    }

    async fn audit_jsonl(&self, session: &SessionId) -> Result<String, StoreError> {
        let lines: Vec<String> =
            sqlx::query_scalar("SELECT line FROM audit_records WHERE session_id = ?1 ORDER BY seq")
                .bind(session.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("reading the audit chain"))?;
        Ok(lines.concat())
    }

    async fn put_artifacts(&self, session: &SessionId, bundle: &ArtifactBundle) -> Result<(), StoreError> {
        let manifest = ArtifactManifest {
            files: bundle.files.clone(),
            skipped: bundle.skipped.clone(),
            tar_bytes: bundle.tar.len() as u64,
        };
        sqlx::query("INSERT OR REPLACE INTO artifacts (session_id, manifest, tar) VALUES (?1, ?2, ?3)")
            .bind(session.as_str())
            .bind(serde_json::to_string(&manifest).unwrap_or_default())
            .bind(bundle.tar.as_slice())
            .execute(&self.writer)
            .await
            .map_err(StoreError::db("storing artifacts"))?;
        Ok(())
    }

    async fn artifacts(&self, session: &SessionId) -> Result<Option<(ArtifactManifest, Vec<u8>)>, StoreError> {
        let row = sqlx::query("SELECT manifest, tar FROM artifacts WHERE session_id = ?1")
            .bind(session.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading artifacts"))?;
        let Some(row) = row else { return Ok(None) };
        let manifest: String = row.try_get("manifest").map_err(StoreError::db("reading artifacts"))?;
        let tar: Vec<u8> = row.try_get("tar").map_err(StoreError::db("reading artifacts"))?;
        let manifest = serde_json::from_str(&manifest)
            .map_err(|source| StoreError::Corrupt { what: "artifact manifest", source })?;
        Ok(Some((manifest, tar)))
    }

    async fn put_secret(&self, tenant: &TenantId, name: &str, value: &Secret) -> Result<(), StoreError> {
        let (nonce, sealed) = self.key()?.seal(tenant, name, value)?;
        let stored = sqlx::query(
            "INSERT INTO secrets (tenant_id, name, nonce, sealed, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET nonce = excluded.nonce, sealed = excluded.sealed, \
             updated_ms = excluded.updated_ms",
        )
        .bind(tenant)
        .bind(name)
        .bind(nonce)
        .bind(sealed)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&self.writer)
        .await;
        match stored {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(StoreError::NoTenant(tenant.clone())),
            Err(e) => Err(StoreError::db("storing a secret")(e)),
        }
    }

    async fn secret_names(&self, tenant: &TenantId) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT name FROM secrets WHERE tenant_id = ?1 ORDER BY name")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing secrets"))
    }

    async fn open_secrets(&self, tenant: &TenantId) -> Result<Vec<(String, Secret)>, StoreError> {
        let rows = sqlx::query("SELECT name, nonce, sealed FROM secrets WHERE tenant_id = ?1 ORDER BY name")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("reading secrets"))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key()?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name").map_err(StoreError::db("reading a secret"))?;
                let nonce: Vec<u8> = row.try_get("nonce").map_err(StoreError::db("reading a secret"))?;
                let sealed: Vec<u8> = row.try_get("sealed").map_err(StoreError::db("reading a secret"))?;
                let value = key.open(tenant, &name, &nonce, &sealed)?;
                Ok((name, value))
            })
            .collect()
    }

    async fn accept_delivery(&self, delivery: &NewDelivery, max_pending: u64) -> Result<DeliveryAccepted, StoreError> {
        self.insert_delivery(delivery, max_pending).await
    }

    async fn pending_deliveries(&self, limit: u32) -> Result<Vec<StoredDelivery>, StoreError> {
        self.select_pending_deliveries(limit).await
    }

    async fn delivery(&self, id: &str) -> Result<Option<StoredDelivery>, StoreError> {
        self.select_delivery(id).await
    }

    async fn finish_delivery(&self, id: &str, outcome: &str, now_ms: i64) -> Result<(), StoreError> {
        self.mark_delivery_done(id, outcome, now_ms).await
    }
}
