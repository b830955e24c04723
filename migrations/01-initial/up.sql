-- The journal of one migration job: what was asked, how far the scan got,
-- and what happened to every key. Times are Unix milliseconds (UTC).

-- The one job this journal holds. URLs are stored with the password
-- replaced by `***`; options are the job's settings as JSON.
CREATE TABLE job (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    state         TEXT    NOT NULL CHECK (state IN ('running', 'interrupted', 'completed', 'failed')),
    source_url    TEXT    NOT NULL,
    target_url    TEXT    NOT NULL,
    source_tls_ca TEXT,
    target_tls_ca TEXT,
    options       TEXT    NOT NULL,
    -- JSON: the source cluster's primaries when the job started, or NULL.
    source_nodes  TEXT,
    started_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    -- Why the job last stopped, when it was not a clean finish.
    last_error    TEXT
);

-- One SCAN cursor per (source node, source database). `cursor` is the
-- unsigned 64-bit SCAN cursor as text; `done` is set when SCAN returned 0.
-- `run_id` is the source server's run_id when the cursor last moved: a
-- restarted server hashes keys with a new seed, so its old cursor proves
-- nothing and the scan of that database starts again.
CREATE TABLE cursors (
    node          TEXT    NOT NULL,
    db            INTEGER NOT NULL,
    target_db     INTEGER NOT NULL,
    cursor        TEXT    NOT NULL DEFAULT '0',
    done          INTEGER NOT NULL DEFAULT 0,
    run_id        TEXT,
    keys_scanned  INTEGER NOT NULL DEFAULT 0,
    -- Keys in that database when the cursor was planned, for progress/ETA.
    keys_expected INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (node, db)
) WITHOUT ROWID;

-- One row per key with its latest outcome. `db` is the source database.
-- `outcome` is one of restored, expired, skipped, failed, mismatch (the
-- Rust enum is the gatekeeper: a CHECK with IN (...) costs an ephemeral
-- table per insert, which halved the journal's throughput).
-- `ttl_ms` is the remaining TTL when the key was read (NULL: no TTL);
-- `size_bytes` is the DUMP payload's size.
CREATE TABLE keys (
    db          INTEGER NOT NULL,
    key         BLOB    NOT NULL,
    outcome     TEXT    NOT NULL,
    ttl_ms      INTEGER,
    size_bytes  INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 1,
    error       TEXT,
    updated_at  INTEGER NOT NULL,
    -- The outcome before the latest one (NULL for a key seen once): how a
    -- failed key became restored, and how the counts move in one statement.
    previous_outcome TEXT,
    PRIMARY KEY (db, key)
) WITHOUT ROWID;

-- `retry` and the report look up the keys that need attention; most keys
-- are restored, so the index holds only the others.
CREATE INDEX keys_needing_attention ON keys (outcome, db, key) WHERE outcome <> 'restored';

-- Distinct keys per (source database, latest outcome), kept in the same
-- transaction as `keys`, so status and report read counts without a scan
-- of millions of rows (and stay exact with `--journal-keys failures`).
CREATE TABLE counts (
    db       INTEGER NOT NULL,
    outcome  TEXT    NOT NULL,
    keys     INTEGER NOT NULL,
    PRIMARY KEY (db, outcome)
) WITHOUT ROWID;

-- Every invocation that worked on the job (run, resume, retry, verify):
-- for rates, ETA and the audit trail.
CREATE TABLE runs (
    id             INTEGER PRIMARY KEY,
    command        TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    keys_processed INTEGER NOT NULL DEFAULT 0,
    exit_code      INTEGER
);
