-- GitHub webhook deliveries, kept by their X-GitHub-Delivery id: the idempotency key
-- (a replay or a redelivery of a kept delivery starts nothing again) and the queue of
-- work that survives a restart (`pending` until processed).
CREATE TABLE github_deliveries (
    id          TEXT PRIMARY KEY,
    event       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    outcome     TEXT,
    finished_ms INTEGER
);
CREATE INDEX github_deliveries_pending ON github_deliveries (state, received_ms);
