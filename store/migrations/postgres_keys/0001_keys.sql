-- The key store on PostgreSQL (crypto-shredding, see store/src/keys/mod.rs).
-- It lives in a schema of its own (mdm_keys by default, set as the search
-- path of the key store's connections), never beside the event log, with its
-- own _sqlx_migrations table.

-- One data key per subject. A key is never replaced: destroying it sets
-- wrapped to NULL and destroyed_at, and the row stays as a tombstone so the
-- subject is known as erased and never gets a new key. The unique subject
-- constraint settles processes racing to create the same subject's key
-- (INSERT ... ON CONFLICT (subject) DO NOTHING, then read the winner).
CREATE TABLE subject_key (
    key_id       uuid        PRIMARY KEY,
    subject      text        NOT NULL,
    wrapped      bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    CONSTRAINT subject_key_subject_key UNIQUE (subject),
    CONSTRAINT subject_key_destroyed_check CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL))
);
-- An UPDATE leaves the old row version, wrapped key included, in the table
-- until vacuum. Destroys are rare and each should be cleaned up soon, so
-- autovacuum runs on this table as soon as any row version is dead instead
-- of waiting for 20% of the table.
ALTER TABLE subject_key SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1);
COMMENT ON TABLE subject_key IS 'Per-subject data keys for crypto-shredding; destroyed keys stay as tombstones.';
COMMENT ON COLUMN subject_key.key_id IS 'UUID v7 of the key (time-ordered, so the primary-key index is appended to); stored beside every value it encrypts.';
COMMENT ON COLUMN subject_key.subject IS 'Opaque, non-personal subject name, e.g. a pseudonymous stream name.';
COMMENT ON COLUMN subject_key.wrapped IS 'The data key encrypted under the master key, with key_id and subject as associated data; NULL once destroyed.';
COMMENT ON COLUMN subject_key.created_at IS 'When the key was created.';
COMMENT ON COLUMN subject_key.destroyed_at IS 'When the key was destroyed (the subject erased); NULL while the key is active.';

-- Secrets and settings of the store itself, one row each. 'naming_key': the
-- HMAC key for pseudonymous stream names, wrapped under the master key;
-- unwrapping it at open is also the check of the master key.
CREATE TABLE key_store_meta (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
COMMENT ON TABLE key_store_meta IS 'Secrets and settings of the key store itself, one row each.';
COMMENT ON COLUMN key_store_meta.name IS 'What the row holds, e.g. naming_key.';
COMMENT ON COLUMN key_store_meta.value IS 'Its value; secrets are wrapped under the master key.';
