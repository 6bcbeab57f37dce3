-- Enclave store, first schema. Times are unix milliseconds (UTC).

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    created_ms      INTEGER NOT NULL,
    max_concurrent  INTEGER NOT NULL,
    daily_sessions  INTEGER NOT NULL
);

-- Bearer tokens: only the sha256 of the secret part is kept.
CREATE TABLE tokens (
    key_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    secret_hash BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    state        TEXT NOT NULL,
    status       TEXT NOT NULL,
    kill_reason  TEXT,
    backend      TEXT NOT NULL,
    plan_digest  TEXT NOT NULL,
    plan         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    finished_ms  INTEGER,
    result       TEXT,
    event_bytes  INTEGER NOT NULL DEFAULT 0,
    logs_dropped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_tenant ON sessions (tenant_id, id);
CREATE INDEX sessions_by_state ON sessions (state);

-- Session events as published (SSE replays them); log lines are events of kind 'log'.
CREATE TABLE session_events (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- Audit records, each the canonical JSONL line of the chain. Append-only: the database
-- itself refuses to change or remove a row.
CREATE TABLE audit_records (
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    line       TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

CREATE TABLE artifacts (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id),
    manifest   TEXT NOT NULL,
    tar        BLOB NOT NULL
);

-- Secret values sealed with XChaCha20-Poly1305; the tenant and name are the associated
-- data, so a sealed value cannot be moved to another row.
CREATE TABLE secrets (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    sealed     BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
