-- Following (`run --follow`): where it stands, written as it goes so that
-- `status` in another process can tell pending keys, lag and whether the
-- target is in sync; and every gap (a moment changes may have been missed,
-- or a flush) with the catch-up pass that closed it.
CREATE TABLE follow (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    -- scanning | following | catching_up | stopped
    phase           TEXT    NOT NULL,
    pending_keys    INTEGER NOT NULL DEFAULT 0,
    lag_ms          INTEGER NOT NULL DEFAULT 0,
    changes_applied INTEGER NOT NULL DEFAULT 0,
    gaps            INTEGER NOT NULL DEFAULT 0,
    in_sync         INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE follow_gaps (
    id              INTEGER PRIMARY KEY,
    -- flush | lost changes
    kind            TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    caught_up_at    INTEGER,
    -- Keys the catch-up pass found different (and copied).
    keys_differing  INTEGER
);
