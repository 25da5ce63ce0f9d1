//! Per-subject encryption keys, for crypto-shredding.
//!
//! The event log is append-only: nothing in it is ever updated or deleted.
//! Personal values inside events are therefore encrypted with a data key of
//! their subject (a person's source record or customer stream), and erasing
//! the person destroys that key: every copy of those events, in the log, in
//! backups and in replays, becomes unreadable at once.
//!
//! Keys live in a key store of their own, never in the event log: a table in
//! an SQL database ([`sqlite::SqliteKeyStore`] in a file of its own,
//! [`postgres::PostgresKeyStore`] in a schema of its own). Each key is stored
//! wrapped (encrypted) by the [`MasterKey`] from configuration, with its id
//! and subject bound into the encryption, so a copy of the key-store database
//! alone reveals nothing, and a wrapped key moved to another row does not
//! unwrap. Destroying a key removes the wrapped bytes and keeps a tombstone
//! row (key id, subject, time), so the subject stays known as erased and is
//! never given a fresh key that new events could be written under.
//!
//! The store also keeps one more secret, the naming key, used to compute
//! pseudonymous stream names with an HMAC. It is created at the first open
//! and stored wrapped like the data keys; since every later open must unwrap
//! it, it doubles as the check that the configured master key is the one the
//! store was created with. A wrong master key is refused at open
//! ([`KeyStoreError::WrongMasterKey`]) instead of surfacing later as
//! undecryptable keys, or worse, as a second set of keys.
//!
//! Subjects are opaque strings chosen by the caller, such as pseudonymous
//! stream names; they must not be personal data, since they are stored in
//! clear to look keys up. Errors and `Debug` output never show subjects,
//! key bytes or the master key.
//!
//! Code map: `crypto.rs` (keys, sealing, MACs), `sqlite.rs` and
//! `postgres.rs` (the adapters); this file holds the port.

use async_trait::async_trait;
use uuid::Uuid;

use crate::sqlerr::SqlFailure;
use crate::BoxError;

pub mod crypto;
pub mod postgres;
pub mod sqlite;

pub use crypto::{DataKey, KeyError, MasterKey};

/// The subject of the naming key in the wrapping AAD. It starts with `$`,
/// like the reserved stream names, so no caller's subject can equal it; and
/// the naming key lives in the meta table, never among the subject keys.
pub(crate) const NAMING_KEY_SUBJECT: &str = "$naming-key";
/// The key id of the naming key in the wrapping AAD (the nil UUID: no data
/// key ever has it, their ids are UUID v7).
pub(crate) const NAMING_KEY_ID: Uuid = Uuid::nil();
/// The name of the naming key's row in the meta table.
pub(crate) const NAMING_KEY_META: &str = "naming_key";

/// A subject's key as the store holds it.
#[derive(Clone, Debug)]
pub enum SubjectKey {
    /// The key can encrypt and decrypt the subject's values.
    Active { key_id: Uuid, key: DataKey },
    /// The key was destroyed (the subject was erased): what it encrypted
    /// cannot be read any more, and nothing new may be encrypted for it.
    Destroyed { key_id: Uuid },
}

impl SubjectKey {
    /// The key's id, stored beside each value it encrypts.
    pub fn key_id(&self) -> Uuid {
        match self {
            SubjectKey::Active { key_id, .. } | SubjectKey::Destroyed { key_id } => *key_id,
        }
    }

    /// The key, unless it was destroyed.
    pub fn key(&self) -> Option<&DataKey> {
        match self {
            SubjectKey::Active { key, .. } => Some(key),
            SubjectKey::Destroyed { .. } => None,
        }
    }

    pub fn is_destroyed(&self) -> bool {
        matches!(self, SubjectKey::Destroyed { .. })
    }
}

/// One answer of [`KeyStore::get_or_create`].
#[derive(Clone, Debug)]
pub struct Lookup {
    pub key: SubjectKey,
    /// `true` when this very call created the key (for the first occurrence
    /// of the subject in the call only).
    pub created: bool,
}

/// Why a key-store call failed. No variant shows a subject, a key or the
/// master key.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The database cannot be reached, is busy past its timeout or shutting
    /// down. Nothing is known to be created or destroyed: retry the call,
    /// which is safe (HTTP 503).
    #[error("key store unavailable")]
    Unavailable(#[source] BoxError),
    /// The master key from configuration does not unwrap the store's check
    /// value: it is not the key this store was created with. Refused at open.
    #[error("the configured master key does not match the key store")]
    WrongMasterKey,
    /// A stored row does not make sense or does not unwrap under the master
    /// key that opened the store (tampered or moved bytes) (HTTP 500).
    #[error("the key store is corrupt: {reason}")]
    Corrupt { reason: String },
    /// Anything else: a bug, a bad setting or a broken store (HTTP 500).
    #[error("key store failed")]
    Internal(#[source] BoxError),
}

impl KeyStoreError {
    pub(crate) fn corrupt(reason: impl Into<String>) -> KeyStoreError {
        KeyStoreError::Corrupt { reason: reason.into() }
    }
}

impl From<SqlFailure> for KeyStoreError {
    fn from(f: SqlFailure) -> KeyStoreError {
        match f {
            SqlFailure::Unavailable(e) => KeyStoreError::Unavailable(e),
            SqlFailure::Other(e) => KeyStoreError::Internal(e),
            SqlFailure::UniqueViolation { constraint } => KeyStoreError::Internal(
                format!(
                    "unexpected unique violation on {}",
                    constraint.as_deref().unwrap_or("a constraint")
                )
                .into(),
            ),
        }
    }
}

/// The key-store port. Implementations are cheap-to-share handles; every
/// method can be called from many tasks at once.
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// For each subject (an opaque, non-personal string such as a
    /// pseudonymous stream name), its key, creating a fresh random one
    /// (wrapped under the master key) for subjects that have none. One
    /// transaction for the whole slice; order of the result = order of
    /// `subjects`; duplicates in the slice get the same key (`created` only
    /// on the first). A destroyed key stays destroyed (returned as
    /// `Destroyed`, never recreated). The keys are durable (committed)
    /// before this returns, so nothing is ever encrypted under a key that a
    /// crash could lose.
    async fn get_or_create(&self, subjects: &[String]) -> Result<Vec<Lookup>, KeyStoreError>;

    /// Keys by subject, without creating: `None` when the subject has no key row.
    async fn find(&self, subjects: &[String]) -> Result<Vec<Option<SubjectKey>>, KeyStoreError>;

    /// Keys by key id, for decryption: `None` when no such id; `Destroyed`
    /// when destroyed.
    async fn by_ids(&self, key_ids: &[Uuid]) -> Result<Vec<Option<SubjectKey>>, KeyStoreError>;

    /// Destroys keys: the wrapped key bytes are removed for good, a
    /// tombstone row (key id, subject, destroyed_at) stays so the subject is
    /// known as erased. Returns how many were active before. Idempotent;
    /// unknown ids are ignored.
    async fn destroy(&self, key_ids: &[Uuid]) -> Result<usize, KeyStoreError>;

    /// The secret key used to pseudonymise stream names (HMAC). Created
    /// once, at the first open, stored wrapped under the master key in the
    /// meta table; the same value on every later open.
    fn naming_key(&self) -> &DataKey;

    /// The adapter's name, for logs.
    fn backend(&self) -> &'static str;
}

/// Unwraps a stored key, or explains which row is corrupt. The master key
/// was checked at open, so a key that does not unwrap was altered or moved.
pub(crate) fn unwrap_row(
    master: &MasterKey,
    key_id: Uuid,
    subject: &str,
    wrapped: Option<&[u8]>,
    destroyed: bool,
) -> Result<SubjectKey, KeyStoreError> {
    match (wrapped, destroyed) {
        (None, true) => Ok(SubjectKey::Destroyed { key_id }),
        (Some(wrapped), false) => master
            .unwrap(key_id, subject, wrapped)
            .map(|key| SubjectKey::Active { key_id, key })
            .map_err(|_| KeyStoreError::corrupt(format!("key {key_id} does not unwrap under the master key"))),
        (Some(_), true) => Err(KeyStoreError::corrupt(format!(
            "key {key_id} is marked destroyed but still holds key bytes"
        ))),
        (None, false) => Err(KeyStoreError::corrupt(format!(
            "key {key_id} has no key bytes but is not marked destroyed"
        ))),
    }
}

/// Positions of the first occurrence of each distinct subject, in order,
/// and for every input position the index of its distinct subject.
pub(crate) fn distinct(subjects: &[String]) -> (Vec<&str>, Vec<usize>) {
    let mut index = std::collections::HashMap::with_capacity(subjects.len());
    let mut unique = Vec::with_capacity(subjects.len());
    let slots = subjects
        .iter()
        .map(|s| {
            *index.entry(s.as_str()).or_insert_with(|| {
                unique.push(s.as_str());
                unique.len() - 1
            })
        })
        .collect();
    (unique, slots)
}

/// Spreads the answers for distinct subjects back over the caller's slice:
/// a repeated subject gets the same key, with `created` only the first time.
pub(crate) fn spread(answers: Vec<(SubjectKey, bool)>, slots: &[usize]) -> Vec<Lookup> {
    let mut seen = vec![false; answers.len()];
    slots
        .iter()
        .map(|&slot| {
            let (key, created) = &answers[slot];
            let first = !std::mem::replace(&mut seen[slot], true);
            Lookup {
                key: key.clone(),
                created: *created && first,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_map_to_one_distinct_subject() {
        let subjects: Vec<String> = ["a", "b", "a", "c", "b"].iter().map(|s| s.to_string()).collect();
        let (unique, slots) = distinct(&subjects);
        assert_eq!(unique, ["a", "b", "c"]);
        assert_eq!(slots, [0, 1, 0, 2, 1]);
        let answers = unique
            .iter()
            .map(|_| (SubjectKey::Destroyed { key_id: Uuid::now_v7() }, true))
            .collect();
        let lookups = spread(answers, &slots);
        let created: Vec<bool> = lookups.iter().map(|l| l.created).collect();
        assert_eq!(created, [true, true, false, true, false]);
        assert_eq!(lookups[0].key.key_id(), lookups[2].key.key_id());
    }

    #[test]
    fn errors_never_show_secrets() {
        let e = KeyStoreError::WrongMasterKey;
        assert_eq!(e.to_string(), "the configured master key does not match the key store");
        let key = SubjectKey::Active {
            key_id: Uuid::nil(),
            key: DataKey::generate(),
        };
        assert!(format!("{key:?}").contains("DataKey(<redacted>)"));
    }
}
