-- The event log on PostgreSQL. It lives in its own schema (mdm_store, set as
-- the search path of the store's connections), so its _sqlx_migrations table
-- never collides with the read models' migrations.

-- Every event ever appended. Rows are never updated or deleted: erasure
-- destroys encryption keys kept elsewhere, not events. A stream's current
-- version is max(version) over its rows (the event_stream_version_key index);
-- that unique index also settles two appends racing for the same version.
CREATE TABLE event (
    position    bigint      PRIMARY KEY,
    id          uuid        NOT NULL,
    stream      text        NOT NULL,
    version     bigint      NOT NULL,
    type        text        NOT NULL,
    data        bytea       NOT NULL,
    metadata    bytea       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_id_key UNIQUE (id),
    CONSTRAINT event_stream_version_key UNIQUE (stream, version)
);
COMMENT ON TABLE event IS 'The global event log. Readers only read below the oldest running transaction (see position).';
COMMENT ON COLUMN event.position IS 'Global position: (id of the writing transaction << 20) | index of the event in its append. Strictly increasing in commit-safe read order, not dense.';
COMMENT ON COLUMN event.id IS 'Caller-chosen event id; makes retried appends idempotent.';
COMMENT ON COLUMN event.stream IS 'Stream the event belongs to.';
COMMENT ON COLUMN event.version IS '0-based index of the event in its stream.';
COMMENT ON COLUMN event.type IS 'Stable event type name, e.g. SourceRecordCaptured.';
COMMENT ON COLUMN event.data IS 'Event payload, JSON bytes (personal values inside are encrypted by the application).';
COMMENT ON COLUMN event.metadata IS 'Event metadata, JSON bytes: actor, correlation, causation, schema version, key id.';
COMMENT ON COLUMN event.recorded_at IS 'Start time of the transaction that stored the event.';
