-- The key store of the embedded deployment (crypto-shredding, see
-- store/src/keys/mod.rs). It lives in a database file of its own (keys.db),
-- never in the event log; PRAGMA user_version counts the scripts applied
-- (see store/src/keys/sqlite.rs). The connection writing it runs with
-- secure_delete=ON, so bytes removed from a page are overwritten with zeros.

-- One data key per subject. A key is never replaced: destroying it clears
-- `wrapped` and sets `destroyed_at`, and the row stays as a tombstone so the
-- subject is known as erased and never gets a new key.
-- WITHOUT ROWID: the table is stored in its primary-key b-tree; key ids are
-- UUID v7 (time-ordered), so new keys are appended at its right edge.
CREATE TABLE subject_key (
    key_id       BLOB    NOT NULL PRIMARY KEY, -- 16-byte UUID v7 of the key; stored beside every value it encrypts
    subject      TEXT    NOT NULL UNIQUE,      -- opaque, non-personal subject name (e.g. a pseudonymous stream name)
    wrapped      BLOB,                         -- the data key encrypted under the master key (AAD: key_id, subject); NULL once destroyed
    created_at   INTEGER NOT NULL,             -- when the key was created, microseconds since the Unix epoch (UTC)
    destroyed_at INTEGER,                      -- when the key was destroyed (the subject erased), microseconds since the epoch; NULL while active
    CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL)),
    CHECK (length(key_id) = 16)
) WITHOUT ROWID;

-- Secrets and settings of the store itself, one row each.
-- 'naming_key': the HMAC key for pseudonymous stream names, wrapped under the
-- master key; unwrapping it at open is also the check of the master key.
CREATE TABLE key_store_meta (
    name  TEXT NOT NULL PRIMARY KEY, -- what the row holds, e.g. naming_key
    value BLOB NOT NULL              -- its value (secrets wrapped under the master key)
) WITHOUT ROWID;
