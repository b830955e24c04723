-- Keys in arrival order, for journals of a hundred million keys.
--
-- The `keys` table of 01 was keyed by (db, key): keys arrive in SCAN's hash
-- order, so every transaction rewrote B-tree pages all over it, and the
-- journal slowed down as it grew. `key_log` is appended to instead: a key's
-- row goes at the end of the table when the key is first recorded and is
-- updated in place when the key is recorded again. The writer finds a
-- key's row through `key_hash_runs`/`key_hash_chunks` (see
-- src/journal/index.rs); readers never need to.

-- One row per transaction that recorded keys: when it committed (Unix ms),
-- and the first seq it appended (NULL when it appended none). A key's time
-- is that of the transaction that last recorded it.
CREATE TABLE journal_commits (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    first_seq  INTEGER
);
CREATE INDEX journal_commits_by_first_seq ON journal_commits (first_seq);

-- One row per distinct (source db, key), with its latest outcome.
-- `seq` is the order in which keys were first recorded (the CSV's order).
-- `outcome`: 0 restored, 1 skipped, 2 expired, 3 failed, 4 mismatch.
-- `method`: how the key was last written: 1 restore, 2 commands,
-- 3 chunked, NULL when nothing was written (deleted, skipped, failed).
-- `ttl_ms` is the remaining TTL when the key was read (NULL: no TTL);
-- `size_bytes` is the size of what was read; `attempts` counts how often
-- the key was recorded (copied again by a rescan, retry or verify).
-- `commit_id` is the transaction that last changed the row, or NULL for
-- the one that appended it (found by `first_seq`; two bytes a key saved).
CREATE TABLE key_log (
    seq         INTEGER PRIMARY KEY,
    db          INTEGER NOT NULL,
    key         BLOB    NOT NULL,
    outcome     INTEGER NOT NULL,
    method      INTEGER,
    ttl_ms      INTEGER,
    size_bytes  INTEGER,
    attempts    INTEGER NOT NULL,
    error       TEXT,
    commit_id   INTEGER
);

-- `retry`, `status` and the report look up the keys that need attention
-- (expired, failed, mismatch); new rows join the end of their outcome's
-- range, so this index is appended to as well.
CREATE INDEX key_log_needing_attention ON key_log (outcome) WHERE outcome >= 2;

-- The writer's index from a key to its row: sorted runs of (40-bit key
-- hash, seq) entries, packed into chunks of about one page, merged like an
-- LSM tree. Rows with seq < covers_upto of some run are indexed; later ones
-- are held in the writer's memory and indexed again from `key_log` when a
-- journal is opened. Rebuildable from `key_log`; never read by readers.
CREATE TABLE key_hash_runs (
    id           INTEGER PRIMARY KEY,
    level        INTEGER NOT NULL,
    entries      INTEGER NOT NULL,
    first_chunk  INTEGER NOT NULL,
    chunk_count  INTEGER NOT NULL,
    covers_upto  INTEGER NOT NULL
);

-- `entries`: varint(hash - previous hash) varint(seq), from `first_hash`.
CREATE TABLE key_hash_chunks (
    id          INTEGER PRIMARY KEY,
    run         INTEGER NOT NULL,
    first_hash  INTEGER NOT NULL,
    entries     BLOB    NOT NULL
);

-- The rows of an older journal move over, oldest first; the writer that
-- upgrades the journal indexes them when it first records a key.
INSERT INTO journal_commits (at) SELECT DISTINCT updated_at FROM keys ORDER BY updated_at;
CREATE INDEX upgrade_commits_at ON journal_commits (at);
INSERT INTO key_log (db, key, outcome, method, ttl_ms, size_bytes, attempts, error, commit_id)
    SELECT k.db, k.key,
           CASE k.outcome WHEN 'restored' THEN 0 WHEN 'skipped' THEN 1 WHEN 'expired' THEN 2
                          WHEN 'failed' THEN 3 ELSE 4 END,
           NULL, k.ttl_ms, k.size_bytes, k.attempts, k.error, c.id
    FROM keys k JOIN journal_commits c ON c.at = k.updated_at
    ORDER BY k.updated_at, k.db, k.key;
DROP INDEX upgrade_commits_at;
DROP INDEX keys_needing_attention;
DROP TABLE keys;
