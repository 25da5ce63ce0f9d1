-- The event log of the embedded store. It lives in its own database file, so
-- no other migration set shares this file's _sqlx_migrations table.

-- One row per stream: the version of its last event. Appends read and bump it
-- inside the writer's transaction to check expected versions.
CREATE TABLE stream (
    name    TEXT    PRIMARY KEY NOT NULL, -- stream name, e.g. source-web-123 or customer-<token>
    version INTEGER NOT NULL              -- 0-based version of the stream's last event
) WITHOUT ROWID;

-- Every event ever appended, in global order. Rows are never updated or
-- deleted: erasure destroys encryption keys kept elsewhere, not events.
CREATE TABLE event (
    position    INTEGER PRIMARY KEY AUTOINCREMENT, -- global log position; AUTOINCREMENT so a position is never reused
    id          BLOB    NOT NULL UNIQUE,            -- caller-chosen event id (16-byte UUID); makes retries idempotent
    stream      TEXT    NOT NULL,                   -- stream the event belongs to
    version     INTEGER NOT NULL,                   -- 0-based index of the event in its stream
    type        TEXT    NOT NULL,                   -- stable event type name, e.g. SourceRecordCaptured
    data        BLOB    NOT NULL,                   -- event payload, JSON bytes
    metadata    BLOB    NOT NULL,                   -- event metadata, JSON bytes (actor, correlation, causation, schema version)
    recorded_at INTEGER NOT NULL,                   -- when the store recorded it, microseconds since the Unix epoch (UTC)
    UNIQUE (stream, version)
);
