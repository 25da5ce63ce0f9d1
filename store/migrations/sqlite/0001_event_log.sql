-- The event log of the embedded store. It lives in a database file of its
-- own; PRAGMA user_version counts the scripts applied (see store/src/sqlite.rs).

-- Every event ever appended, in global order. Rows are never updated or
-- deleted: erasure destroys encryption keys kept elsewhere, not events.
-- A stream's current version is max(version) over its rows, read through the
-- (stream, version) index by the single writer.
CREATE TABLE event (
    position    INTEGER PRIMARY KEY AUTOINCREMENT, -- global log position; AUTOINCREMENT so a position is never reused
    id          BLOB    NOT NULL UNIQUE,            -- caller-chosen event id (16-byte UUID); makes retries idempotent
    stream      TEXT    NOT NULL,                   -- stream the event belongs to, e.g. source-web-123 or customer-<token>
    version     INTEGER NOT NULL,                   -- 0-based index of the event in its stream
    type        TEXT    NOT NULL,                   -- stable event type name, e.g. SourceRecordCaptured
    data        BLOB    NOT NULL,                   -- event payload, JSON bytes
    metadata    BLOB    NOT NULL,                   -- event metadata, JSON bytes (actor, correlation, causation, schema version)
    recorded_at INTEGER NOT NULL,                   -- when the store recorded it, microseconds since the Unix epoch (UTC)
    UNIQUE (stream, version)
);
