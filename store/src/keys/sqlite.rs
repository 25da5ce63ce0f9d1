//! The embedded key store: a SQLite file of its own (e.g. `<data_dir>/keys.db`).
//!
//! A file apart from the event log, so that backups, copies and retention of
//! the two can differ, and so that erasing a person never touches the log.
//! Like the event store it uses rusqlite on blocking threads: one write
//! connection behind a mutex (SQLite has one writer anyway), one read
//! connection for `find` and `by_ids`, which WAL lets run beside the writer.
//! Unlike the event store it takes no lock file: every write runs in a
//! `BEGIN IMMEDIATE` transaction that reads before it inserts, so two
//! processes sharing the file would still agree on one key per subject.
//!
//! Durability and erasure settings of the write connection:
//! - `synchronous=FULL`: a key is on disk before `get_or_create` returns, so
//!   no value is ever encrypted under a key a power cut could lose;
//! - `secure_delete=ON`: SQLite overwrites deleted content with zeros, so the
//!   page that held a destroyed key's wrapped bytes no longer holds them;
//! - after a destroy, `PRAGMA wal_checkpoint(TRUNCATE)` copies the new pages
//!   into the database file and empties the write-ahead log, which would
//!   otherwise keep the old page images (with the key bytes) until reused.
//!   If a reader (of another process) blocks the checkpoint past the busy
//!   timeout, a warning is logged and the next destroy or open retries it.
//!
//! What this cannot reach: copies of the file made before the destroy
//! (backups), and blocks the file system or the disk keep after SQLite
//! overwrote or truncated them. Those copies hold the key only wrapped
//! under the master key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use super::{
    distinct, spread, unwrap_row, DataKey, KeyStore, KeyStoreError, Lookup, MasterKey, SubjectKey, NAMING_KEY_ID,
    NAMING_KEY_META, NAMING_KEY_SUBJECT,
};
use crate::sqlerr::SqlFailure;

/// The schema, one script per version; `PRAGMA user_version` records how
/// many have been applied. The file holds nothing else.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/sqlite_keys/0001_keys.sql")];

/// Page cache of each connection, in KiB (SQLite's negative `cache_size`).
/// 32 MiB holds the subject index of a few hundred thousand keys, so lookups
/// of existing subjects rarely read from disk.
const CACHE_KIB: i64 = 32 * 1024;

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded key store. Clones share the connections.
#[derive(Clone)]
pub struct SqliteKeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    /// `get_or_create` calls waiting for the writer: whoever holds it next
    /// serves all of them in one transaction (one fsync for the group).
    pending: Mutex<Vec<PendingCreate>>,
    reader: Mutex<Connection>,
    master: MasterKey,
    naming: DataKey,
}

/// Shows the file only: no key, no connection internals.
impl std::fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKeyStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl SqliteKeyStore {
    /// Opens (creating if needed) the key store at `path`, brings its schema
    /// up to date and checks `master` against it: a master key other than
    /// the one the store was created with is refused with
    /// [`KeyStoreError::WrongMasterKey`].
    pub async fn open(path: &Path, master: MasterKey) -> Result<SqliteKeyStore, KeyStoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || open_blocking(path, master))
            .await
            .map_err(|e| KeyStoreError::Internal(Box::new(e)))?
    }

    /// The stored wrapped bytes of a key (`None` when destroyed or unknown),
    /// so a test can check that a destroy removed them from the files.
    #[doc(hidden)]
    pub async fn wrapped_bytes_for_test(&self, key_id: Uuid) -> Result<Option<Vec<u8>>, KeyStoreError> {
        self.read(move |conn, _| {
            conn.prepare_cached("SELECT wrapped FROM subject_key WHERE key_id = ?1")
                .and_then(|mut s| s.query_row([&key_id.as_bytes()[..]], |row| row.get(0)).optional())
                .map(Option::flatten)
                .map_err(db_err)
        })
        .await
    }

    /// Runs `write` on the write connection on a blocking thread.
    async fn write<T, F>(&self, write: F) -> Result<T, KeyStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Inner) -> Result<T, KeyStoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || write(&mut lock(&inner.writer), &inner))
            .await
            .map_err(|e| KeyStoreError::Internal(Box::new(e)))?
    }

    /// Runs `read` on the read connection on a blocking thread.
    async fn read<T, F>(&self, read: F) -> Result<T, KeyStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Inner) -> Result<T, KeyStoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || read(&mut lock(&inner.reader), &inner))
            .await
            .map_err(|e| KeyStoreError::Internal(Box::new(e)))?
    }
}

/// A panic while a connection was held unwound through its transaction,
/// whose drop rolled it back: the connection is fine to use again.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_blocking(path: PathBuf, master: MasterKey) -> Result<SqliteKeyStore, KeyStoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            KeyStoreError::Internal(
                format!("cannot create the folder of the key store at {}: {e}", path.display()).into(),
            )
        })?;
    }
    let open_err = |e: rusqlite::Error| match failure(e) {
        SqlFailure::Other(e) => {
            KeyStoreError::Internal(format!("cannot open the key store at {}: {e}", path.display()).into())
        }
        other => other.into(),
    };
    let mut writer = Connection::open(&path).map_err(open_err)?;
    writer.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    writer.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
    writer.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
    writer.pragma_update(None, "secure_delete", "ON").map_err(open_err)?;
    writer.pragma_update(None, "cache_size", -CACHE_KIB).map_err(open_err)?;
    // Fewer, larger checkpoints during bulk key creation (as in the event
    // store); a destroy still checkpoints at once (see `destroy`).
    writer
        .pragma_update(None, "wal_autocheckpoint", 16_384)
        .map_err(open_err)?;
    writer.set_prepared_statement_cache_capacity(16);
    migrate(&mut writer, &path)?;
    let naming = load_naming_key(&mut writer, &master)?;
    // A destroy whose checkpoint was blocked left old pages in the WAL.
    checkpoint(&writer);

    let reader = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(open_err)?;
    reader.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    reader.pragma_update(None, "cache_size", -CACHE_KIB).map_err(open_err)?;
    reader.set_prepared_statement_cache_capacity(16);

    Ok(SqliteKeyStore {
        inner: Arc::new(Inner {
            path,
            writer: Mutex::new(writer),
            pending: Mutex::new(Vec::new()),
            reader: Mutex::new(reader),
            master,
            naming,
        }),
    })
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), KeyStoreError> {
    let applied: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_err)?;
    if applied < 0 || applied as usize > MIGRATIONS.len() {
        return Err(KeyStoreError::Internal(
            format!(
                "the key store at {} has schema version {applied}, newer than this build knows ({})",
                path.display(),
                MIGRATIONS.len()
            )
            .into(),
        ));
    }
    for (i, script) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.execute_batch(script).map_err(db_err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(())
}

/// Reads the naming key, creating it in a new store. It is the master-key
/// check: if it does not unwrap, the configured master key is not the one
/// this store was created with.
fn load_naming_key(conn: &mut Connection, master: &MasterKey) -> Result<DataKey, KeyStoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let stored: Option<Vec<u8>> = tx
        .query_row(
            "SELECT value FROM key_store_meta WHERE name = ?1",
            [NAMING_KEY_META],
            |row| row.get(0),
        )
        .optional()
        .map_err(db_err)?;
    let key = match stored {
        Some(wrapped) => master
            .unwrap(NAMING_KEY_ID, NAMING_KEY_SUBJECT, &wrapped)
            .map_err(|_| KeyStoreError::WrongMasterKey)?,
        None => {
            // Keys without a naming key mean the meta table was emptied: a
            // new naming key would accept any master key and rename streams.
            let has_keys: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM subject_key)", [], |row| row.get(0))
                .map_err(db_err)?;
            if has_keys {
                return Err(KeyStoreError::corrupt("the store holds keys but no naming key"));
            }
            let key = DataKey::generate();
            tx.execute(
                "INSERT INTO key_store_meta (name, value) VALUES (?1, ?2)",
                params![NAMING_KEY_META, master.wrap(NAMING_KEY_ID, NAMING_KEY_SUBJECT, &key)],
            )
            .map_err(db_err)?;
            key
        }
    };
    tx.commit().map_err(db_err)?;
    Ok(key)
}

/// Copies the write-ahead log into the database file and truncates it, so
/// it keeps no page images from before a destroy. Blocked by a reader of
/// another connection past the busy timeout, it leaves the log as it is.
fn checkpoint(conn: &Connection) {
    let outcome = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0));
    match outcome {
        Ok(0) => {}
        Ok(_) => tracing::warn!(
            "key store: a reader blocked the WAL checkpoint after a destroy; old pages stay in the WAL until the next destroy or open"
        ),
        Err(e) => tracing::warn!(error = %e, "key store: the WAL checkpoint after a destroy failed"),
    }
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Sorts a SQLite error by its extended result code (as `sqlite.rs` does).
fn failure(e: rusqlite::Error) -> SqlFailure {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => SqlFailure::from_code(&f.extended_code.to_string(), None, Box::new(e)),
        _ => SqlFailure::Other(Box::new(e)),
    }
}

fn db_err(e: rusqlite::Error) -> KeyStoreError {
    failure(e).into()
}

fn key_id_of(bytes: &[u8]) -> Result<Uuid, KeyStoreError> {
    Uuid::from_slice(bytes).map_err(|_| KeyStoreError::corrupt("a key id is not 16 bytes"))
}

/// One row's `(wrapped, destroyed)` columns.
type KeyColumns = (Option<Vec<u8>>, bool);

/// One waiting `get_or_create` call.
struct PendingCreate {
    subjects: Vec<String>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Lookup>, KeyStoreError>>,
}

/// Serves a group of calls in one transaction; if that fails, each call on
/// its own, so that every caller gets its own precise answer.
fn serve_group(conn: &mut Connection, master: &MasterKey, group: Vec<PendingCreate>) {
    match group.len() {
        0 => {}
        1 => {
            for call in group {
                let _ = call.reply.send(get_or_create(conn, master, &call.subjects));
            }
        }
        _ => {
            let all: Vec<String> = group.iter().flat_map(|c| c.subjects.iter().cloned()).collect();
            match get_or_create(conn, master, &all) {
                Ok(lookups) => {
                    let mut lookups = lookups.into_iter();
                    for call in group {
                        let part: Vec<Lookup> = lookups.by_ref().take(call.subjects.len()).collect();
                        let _ = call.reply.send(Ok(part));
                    }
                }
                Err(_) => {
                    for call in group {
                        let _ = call.reply.send(get_or_create(conn, master, &call.subjects));
                    }
                }
            }
        }
    }
}

fn get_or_create(conn: &mut Connection, master: &MasterKey, subjects: &[String]) -> Result<Vec<Lookup>, KeyStoreError> {
    let (unique, slots) = distinct(subjects);
    let created_at = now_micros();
    // IMMEDIATE takes the write lock before the first read, so no other
    // connection can insert a subject between our lookup and our insert.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let mut answers: Vec<Option<(SubjectKey, bool)>> = Vec::with_capacity(unique.len());
    let mut missing = Vec::new();
    {
        let mut select = tx
            .prepare_cached("SELECT key_id, wrapped, destroyed_at IS NOT NULL FROM subject_key WHERE subject = ?1")
            .map_err(db_err)?;
        for (i, &subject) in unique.iter().enumerate() {
            let row: Option<(Vec<u8>, KeyColumns)> = select
                .query_row([subject], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
                .optional()
                .map_err(db_err)?;
            answers.push(match row {
                Some((key_id, (wrapped, destroyed))) => Some((
                    unwrap_row(master, key_id_of(&key_id)?, subject, wrapped.as_deref(), destroyed)?,
                    false,
                )),
                None => {
                    missing.push(i);
                    None
                }
            });
        }
    }
    if !missing.is_empty() {
        let new_subjects: Vec<&str> = missing.iter().map(|&i| unique[i]).collect();
        let mut insert = tx
            .prepare_cached("INSERT INTO subject_key (key_id, subject, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)")
            .map_err(db_err)?;
        for (new, &i) in master.new_keys(&new_subjects).into_iter().zip(&missing) {
            insert
                .execute(params![&new.key_id.as_bytes()[..], unique[i], new.wrapped, created_at])
                .map_err(db_err)?;
            answers[i] = Some((
                SubjectKey::Active {
                    key_id: new.key_id,
                    key: new.key,
                },
                true,
            ));
        }
    }
    tx.commit().map_err(db_err)?;
    let answers = answers
        .into_iter()
        .map(|a| a.ok_or_else(|| KeyStoreError::Internal("a subject's key was neither found nor created".into())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(spread(answers, &slots))
}

fn find(
    conn: &mut Connection,
    master: &MasterKey,
    subjects: &[String],
) -> Result<Vec<Option<SubjectKey>>, KeyStoreError> {
    // One read transaction: one snapshot for the whole slice.
    let tx = conn.transaction().map_err(db_err)?;
    let mut select = tx
        .prepare_cached("SELECT key_id, wrapped, destroyed_at IS NOT NULL FROM subject_key WHERE subject = ?1")
        .map_err(db_err)?;
    let found = subjects
        .iter()
        .map(|subject| {
            let row: Option<(Vec<u8>, KeyColumns)> = select
                .query_row([subject], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
                .optional()
                .map_err(db_err)?;
            row.map(|(key_id, (wrapped, destroyed))| {
                unwrap_row(master, key_id_of(&key_id)?, subject, wrapped.as_deref(), destroyed)
            })
            .transpose()
        })
        .collect();
    drop(select);
    tx.finish().map_err(db_err)?;
    found
}

fn by_ids(
    conn: &mut Connection,
    master: &MasterKey,
    key_ids: &[Uuid],
) -> Result<Vec<Option<SubjectKey>>, KeyStoreError> {
    let tx = conn.transaction().map_err(db_err)?;
    let mut select = tx
        .prepare_cached("SELECT subject, wrapped, destroyed_at IS NOT NULL FROM subject_key WHERE key_id = ?1")
        .map_err(db_err)?;
    let found = key_ids
        .iter()
        .map(|&key_id| {
            let row: Option<(String, KeyColumns)> = select
                .query_row([&key_id.as_bytes()[..]], |row| {
                    Ok((row.get(0)?, (row.get(1)?, row.get(2)?)))
                })
                .optional()
                .map_err(db_err)?;
            row.map(|(subject, (wrapped, destroyed))| {
                unwrap_row(master, key_id, &subject, wrapped.as_deref(), destroyed)
            })
            .transpose()
        })
        .collect();
    drop(select);
    tx.finish().map_err(db_err)?;
    found
}

fn destroy(conn: &mut Connection, key_ids: &[Uuid]) -> Result<usize, KeyStoreError> {
    let destroyed_at = now_micros();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let mut destroyed = 0;
    {
        // secure_delete=ON on this connection zeroes the space the wrapped
        // bytes occupied in the page.
        let mut update = tx
            .prepare_cached(
                "UPDATE subject_key SET wrapped = NULL, destroyed_at = ?2 WHERE key_id = ?1 AND wrapped IS NOT NULL",
            )
            .map_err(db_err)?;
        for key_id in key_ids {
            destroyed += update
                .execute(params![&key_id.as_bytes()[..], destroyed_at])
                .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)?;
    // Also after a destroy that found nothing left to destroy: that may be
    // the retry of one whose checkpoint was blocked.
    checkpoint(conn);
    Ok(destroyed)
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    /// Group commit: a single-record ingest creates one key per request, and
    /// with `synchronous=FULL` each transaction costs an fsync; requests that
    /// arrive while one commits are served together by the next writer, so a
    /// busy service pays one fsync per group (as the event store does).
    async fn get_or_create(&self, subjects: &[String]) -> Result<Vec<Lookup>, KeyStoreError> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        lock(&self.inner.pending).push(PendingCreate {
            subjects: subjects.to_vec(),
            reply,
        });
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&inner.writer);
            let group = std::mem::take(&mut *lock(&inner.pending));
            serve_group(&mut conn, &inner.master, group);
        })
        .await
        .map_err(|e| KeyStoreError::Internal(Box::new(e)))?;
        answer.await.map_err(|e| KeyStoreError::Internal(Box::new(e)))?
    }

    async fn find(&self, subjects: &[String]) -> Result<Vec<Option<SubjectKey>>, KeyStoreError> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let subjects = subjects.to_vec();
        self.read(move |conn, inner| find(conn, &inner.master, &subjects)).await
    }

    async fn by_ids(&self, key_ids: &[Uuid]) -> Result<Vec<Option<SubjectKey>>, KeyStoreError> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let key_ids = key_ids.to_vec();
        self.read(move |conn, inner| by_ids(conn, &inner.master, &key_ids))
            .await
    }

    async fn destroy(&self, key_ids: &[Uuid]) -> Result<usize, KeyStoreError> {
        if key_ids.is_empty() {
            return Ok(0);
        }
        let key_ids = key_ids.to_vec();
        self.write(move |conn, _| destroy(conn, &key_ids)).await
    }

    fn naming_key(&self) -> &DataKey {
        &self.inner.naming
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
