//! The embedded event store: one SQLite file in WAL mode, for one process.
//!
//! Writes go through a single writer thread that owns the only write
//! connection. It takes every append waiting in its queue, runs each inside
//! its own savepoint of one transaction and commits them together ("group
//! commit"): a busy service pays one fsync per group instead of one per
//! append, while each append keeps its own all-or-nothing outcome. Reads run
//! on a small pool of read-only connections on blocking threads, which WAL
//! lets run beside the writer. Positions come from `AUTOINCREMENT` under that
//! single writer, so they are assigned in commit order and a reader can
//! never skip one.
//!
//! This adapter uses rusqlite, not sqlx: SQLite is in-process, and sqlx's
//! driver sends every statement and every row through a channel to a worker
//! thread (about 45 µs per statement, 160k rows/s at best on our machine),
//! which made our appends twice as slow as a plain INSERT. Measured in
//! `docs/bench/store.md`.
//!
//! A lock file next to the database keeps a second process from opening the
//! same store; SQLite itself would stay consistent, but two processes would
//! each believe they are the only writer and each run their own resolver.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::sqlerr::SqlFailure;
use crate::subscription::{spawn_polling, AppendSignal};
use crate::{
    sql_limit, to_i64, validate_append, AppendError, AppendOutcome, Direction, EventStore, ExpectedVersion, Json,
    NewEvent, Position, ReadError, RecordedEvent, StoredIds, StreamStart, Subscription,
};

/// The schema, one script per version; `PRAGMA user_version` records how
/// many have been applied. The database file holds nothing else, so this
/// list is the whole migration history of the embedded event log.
const MIGRATIONS: &[&str] = &[include_str!("../migrations/sqlite/0001_event_log.sql")];

/// How many queued appends the writer commits together at most.
const MAX_GROUP: usize = 16_384;

/// Read connections kept open beside the writer.
const READERS: usize = 4;

/// How the embedded store trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit (SQLite `synchronous=FULL`): an acknowledged
    /// append survives a power cut. The default.
    Full,
    /// No fsync on commit (`synchronous=NORMAL` in WAL mode): an acknowledged
    /// append survives a process crash but may be lost on a power cut.
    Normal,
}

/// Where and how to open the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub durability: Durability,
    /// How often an idle subscription looks for appends (only a safety net:
    /// appends in this process wake subscriptions at once).
    pub poll_interval: Duration,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> SqliteOptions {
        SqliteOptions {
            path: path.into(),
            durability: Durability::Full,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Why the embedded store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create or open the store at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another process already uses the store at {path} (lock file {lock} is held)")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot open the database at {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the database at {path} has schema version {found}, newer than this build knows ({known})")]
    TooNew { path: PathBuf, found: i64, known: usize },
}

/// The embedded event store. Clones share the writer and the read pool.
#[derive(Clone, Debug)]
pub struct SqliteEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: mpsc::Sender<WriterMsg>,
    readers: ReadPool,
    signal: AppendSignal,
    poll_interval: Duration,
    // Held for the life of the store; the OS releases it when the process ends.
    _lock: File,
}

#[derive(Debug)]
enum WriterMsg {
    Append(WriteRequest),
    /// Stop taking appends; answered once the write connection is closed.
    Close(oneshot::Sender<()>),
}

#[derive(Debug)]
struct WriteRequest {
    stream: String,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<AppendOutcome, AppendError>>,
}

impl SqliteEventStore {
    /// Opens (creating if needed) the store at `path` with default options.
    pub async fn open(path: impl Into<PathBuf>) -> Result<SqliteEventStore, OpenError> {
        SqliteEventStore::open_with(SqliteOptions::new(path)).await
    }

    pub async fn open_with(options: SqliteOptions) -> Result<SqliteEventStore, OpenError> {
        let path = options.path.clone();
        let durability = options.durability;
        let (writer, lock) = tokio::task::spawn_blocking(move || open_writer(&path, durability))
            .await
            .map_err(|e| OpenError::Io {
                path: options.path.clone(),
                source: std::io::Error::other(e),
            })??;

        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        let signal = AppendSignal::new();
        let writer_signal = signal.clone();
        std::thread::Builder::new()
            .name("mdm-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, writer_signal))
            .map_err(|source| OpenError::Io {
                path: options.path.clone(),
                source,
            })?;
        Ok(SqliteEventStore {
            inner: Arc::new(Inner {
                writer: tx,
                readers: ReadPool {
                    path: options.path.clone(),
                    idle: Mutex::new(Vec::new()),
                    permits: Semaphore::new(READERS),
                    closed: AtomicBool::new(false),
                },
                signal,
                poll_interval: options.poll_interval,
                _lock: lock,
            }),
        })
    }
}

/// Takes the lock file, opens the write connection and brings the schema up to date.
fn open_writer(path: &Path, durability: Durability) -> Result<(Connection, File), OpenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
            path: path.to_owned(),
            source,
        })?;
    }
    let lock = lock_file(path)?;
    let db_err = |source| OpenError::Database {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(db_err)?;
    // 64 MiB of page cache for the writer (the default is 2 MiB). Event ids
    // and pseudonymous stream names are random, so every append lands in a
    // random leaf of both unique indexes; with the default cache a large log
    // pays a disk read per index per event.
    conn.pragma_update(None, "cache_size", -65_536).map_err(db_err)?;
    // Checkpoint the WAL every 16k pages (64 MiB) instead of every 1k: a
    // bulk load rewrites the same index pages many times between
    // checkpoints, and each checkpoint copies a page once however often it
    // was rewritten (measured in docs/bench/ingest.md).
    conn.pragma_update(None, "wal_autocheckpoint", 16_384).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);

    let applied: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_err)?;
    if applied as usize > MIGRATIONS.len() {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found: applied,
            known: MIGRATIONS.len(),
        });
    }
    for (i, script) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute_batch(script).map_err(db_err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok((conn, lock))
}

fn lock_file(path: &Path) -> Result<File, OpenError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| OpenError::Io {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked {
            path: path.to_owned(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(OpenError::Io {
            path: lock_path,
            source,
        }),
    }
}

// ----- Reading -----

/// Read-only connections used on blocking threads, at most `READERS` at once.
#[derive(Debug)]
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    closed: AtomicBool,
}

impl ReadPool {
    /// Runs `read` on a read connection on a blocking thread.
    async fn run<T, F>(&self, read: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ReadError> + Send + 'static,
    {
        let closed = || ReadError::Unavailable("the event store is closed".into());
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let _permit = self.permits.acquire().await.map_err(|_| closed())?;
        let idle = self.idle.lock().map_err(|_| closed())?.pop();
        let path = self.path.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match idle {
                Some(conn) => conn,
                None => open_reader(&path)?,
            };
            let result = read(&conn);
            Ok::<_, ReadError>((conn, result))
        })
        .await
        .map_err(|e| ReadError::Internal(Box::new(e)))??;
        if !self.closed.load(Ordering::Acquire) {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(conn);
            }
        }
        result
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

fn open_reader(path: &Path) -> Result<Connection, ReadError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(read_err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(read_err)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

const COLUMNS: &str = "position, id, stream, version, type, data, metadata, recorded_at";

fn query_events(
    conn: &Connection,
    sql: &str,
    limit: i64,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let mut stmt = conn.prepare_cached(sql).map_err(read_err)?;
    let mut rows = stmt.query(params).map_err(read_err)?;
    let mut events = Vec::with_capacity(limit.clamp(0, 10_000) as usize);
    while let Some(row) = rows.next().map_err(read_err)? {
        events.push(decode_row(row)?);
    }
    Ok(events)
}

fn decode_row(row: &rusqlite::Row<'_>) -> Result<RecordedEvent, ReadError> {
    let position: i64 = row.get(0).map_err(read_err)?;
    let corrupt = |reason: &str| ReadError::Corrupt {
        position: position as u64,
        reason: reason.to_owned(),
    };
    let id = row
        .get_ref(1)
        .map_err(read_err)?
        .as_blob()
        .map_err(|_| corrupt("event id is not a blob"))?;
    let id = Uuid::from_slice(id).map_err(|_| corrupt("event id is not 16 bytes"))?;
    let version: i64 = row.get(3).map_err(read_err)?;
    let data: Vec<u8> = row.get(5).map_err(read_err)?;
    let metadata: Vec<u8> = row.get(6).map_err(read_err)?;
    let micros: i64 = row.get(7).map_err(read_err)?;
    Ok(RecordedEvent {
        id,
        stream: row.get(2).map_err(read_err)?,
        version: version as u64,
        position: Position(position as u64),
        event_type: row.get(4).map_err(read_err)?,
        data: Json::trusted(Bytes::from(data)),
        metadata: Json::trusted(Bytes::from(metadata)),
        recorded_at: DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt("recorded_at out of range"))?,
    })
}

fn failure(e: rusqlite::Error) -> SqlFailure {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => SqlFailure::from_code(&f.extended_code.to_string(), None, Box::new(e)),
        _ => SqlFailure::Other(Box::new(e)),
    }
}

fn read_err(e: rusqlite::Error) -> ReadError {
    failure(e).into()
}

fn append_err(e: rusqlite::Error) -> AppendError {
    failure(e).into()
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, AppendError> {
        validate_append(stream, &events)?;
        let (reply, outcome) = oneshot::channel();
        let request = WriteRequest {
            stream: stream.to_owned(),
            expected,
            events,
            reply,
        };
        self.inner
            .writer
            .send(WriterMsg::Append(request))
            .await
            .map_err(|_| AppendError::Unavailable("the event store is closed".into()))?;
        outcome
            .await
            .map_err(|_| AppendError::Unavailable("the event store closed before answering".into()))?
    }

    async fn read_stream(
        &self,
        stream: &str,
        start: StreamStart,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let stream = stream.to_owned();
        let limit = sql_limit(max_count);
        self.inner
            .readers
            .run(move |conn| {
                let (sql, from) = match (direction, start) {
                    (Direction::Forwards, StreamStart::Edge) => (
                        format!("SELECT {COLUMNS} FROM event WHERE stream = ?1 AND version >= ?2 ORDER BY version ASC LIMIT ?3"),
                        0,
                    ),
                    (Direction::Forwards, StreamStart::Version(v)) => (
                        format!("SELECT {COLUMNS} FROM event WHERE stream = ?1 AND version >= ?2 ORDER BY version ASC LIMIT ?3"),
                        to_i64(v),
                    ),
                    (Direction::Backwards, StreamStart::Edge) => (
                        format!("SELECT {COLUMNS} FROM event WHERE stream = ?1 AND version <= ?2 ORDER BY version DESC LIMIT ?3"),
                        i64::MAX,
                    ),
                    (Direction::Backwards, StreamStart::Version(v)) => (
                        format!("SELECT {COLUMNS} FROM event WHERE stream = ?1 AND version <= ?2 ORDER BY version DESC LIMIT ?3"),
                        to_i64(v),
                    ),
                };
                query_events(conn, &sql, limit, params![stream, from, limit])
            })
            .await
    }

    async fn read_all(&self, after: Position, max_count: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let limit = sql_limit(max_count);
        self.inner
            .readers
            .run(move |conn| {
                query_events(
                    conn,
                    "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
                     WHERE position > ?1 ORDER BY position ASC LIMIT ?2",
                    limit,
                    params![to_i64(after.0), limit],
                )
            })
            .await
    }

    async fn read_last_events(&self, streams: &[String]) -> Result<Vec<Option<RecordedEvent>>, ReadError> {
        let streams = streams.to_vec();
        self.inner
            .readers
            .run(move |conn| {
                // One blocking hop for the whole batch; each lookup is a
                // descent of the (stream, version) index.
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM event WHERE stream = ?1 ORDER BY version DESC LIMIT 1"
                    ))
                    .map_err(read_err)?;
                let mut last = Vec::with_capacity(streams.len());
                for stream in &streams {
                    let mut rows = stmt.query([stream]).map_err(read_err)?;
                    last.push(match rows.next().map_err(read_err)? {
                        Some(row) => Some(decode_row(row)?),
                        None => None,
                    });
                }
                Ok(last)
            })
            .await
    }

    async fn head(&self) -> Result<Position, ReadError> {
        self.inner
            .readers
            .run(|conn| {
                let head: Option<i64> = conn
                    .prepare_cached("SELECT max(position) FROM event")
                    .and_then(|mut s| s.query_row([], |row| row.get(0)))
                    .map_err(read_err)?;
                Ok(Position(head.unwrap_or(0).max(0) as u64))
            })
            .await
    }

    async fn subscribe_all(&self, after: Position) -> Result<Subscription, ReadError> {
        Ok(spawn_polling(
            self.clone(),
            after,
            &self.inner.signal,
            self.inner.poll_interval,
        ))
    }

    async fn close(&self) {
        self.inner.readers.close();
        let (done, closed) = oneshot::channel();
        if self.inner.writer.send(WriterMsg::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

// ----- Writing -----

/// The single writer: takes every queued append, runs each in its own
/// savepoint, commits them together, then answers each caller.
fn writer_loop(mut conn: Connection, mut queue: mpsc::Receiver<WriterMsg>, signal: AppendSignal) {
    let mut group: Vec<WriteRequest> = Vec::with_capacity(MAX_GROUP);
    let mut closed_by = None;
    while let Some(first) = queue.blocking_recv() {
        let mut events = 0;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Append(r) => {
                    events += r.events.len();
                    group.push(r);
                }
                WriterMsg::Close(done) => {
                    closed_by = Some(done);
                    break;
                }
            }
            if group.len() < MAX_GROUP && events < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        if !group.is_empty() {
            let outcomes = commit_group(&mut conn, &group);
            let stored_any = outcomes.iter().any(|o| matches!(o, Ok(o) if !o.already_stored));
            for (request, outcome) in group.drain(..).zip(outcomes) {
                let _ = request.reply.send(outcome);
            }
            if stored_any {
                signal.notify();
            }
        }
        if closed_by.is_some() {
            break;
        }
    }
    // Appends still queued are dropped unanswered: their callers get
    // Unavailable, and nothing of them was stored.
    queue.close();
    drop(conn);
    if let Some(done) = closed_by {
        let _ = done.send(());
    }
}

fn commit_group(conn: &mut Connection, group: &[WriteRequest]) -> Vec<Result<AppendOutcome, AppendError>> {
    let recorded_at = Utc::now().timestamp_micros();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let failure = failure(e);
        return group.iter().map(|_| Err(copy_failure(&failure))).collect();
    }
    let outcomes: Vec<_> = group
        .iter()
        .map(|request| append_in_savepoint(conn, request, recorded_at))
        .collect();
    if let Err(e) = conn.execute_batch("COMMIT") {
        let failure = failure(e);
        let _ = conn.execute_batch("ROLLBACK");
        return outcomes
            .into_iter()
            .map(|o| match o {
                // Nothing of this group is stored: the earlier verdicts
                // (conflicts, duplicates) still hold, the successes do not.
                Ok(_) => Err(copy_failure(&failure)),
                other => other,
            })
            .collect();
    }
    outcomes
}

fn copy_failure(f: &SqlFailure) -> AppendError {
    match f {
        SqlFailure::Unavailable(e) => AppendError::Unavailable(e.to_string().into()),
        SqlFailure::Other(e) => AppendError::Internal(e.to_string().into()),
        SqlFailure::UniqueViolation { .. } => AppendError::Internal("unexpected unique violation".into()),
    }
}

fn append_in_savepoint(conn: &Connection, r: &WriteRequest, recorded_at: i64) -> Result<AppendOutcome, AppendError> {
    if r.events.len() == 1 {
        // One row: the version check comes before the INSERT, and a failed
        // INSERT writes nothing, so there is nothing a savepoint could undo.
        // Most appends (one source-record version each) take this path and
        // save two statements.
        return append_one(conn, r, recorded_at);
    }
    conn.execute_batch("SAVEPOINT append").map_err(append_err)?;
    let outcome = append_one(conn, r, recorded_at);
    let keep = matches!(&outcome, Ok(o) if !o.already_stored);
    let end = if keep {
        conn.execute_batch("RELEASE append")
    } else {
        conn.execute_batch("ROLLBACK TO append; RELEASE append")
    };
    end.map_err(append_err)?;
    outcome
}

fn append_one(conn: &Connection, r: &WriteRequest, recorded_at: i64) -> Result<AppendOutcome, AppendError> {
    // The single writer makes this read-then-insert race-free; the unique
    // (stream, version) index is the safety net.
    let current: i64 = conn
        .prepare_cached("SELECT coalesce(max(version), -1) FROM event WHERE stream = ?1")
        .and_then(|mut s| s.query_row([&r.stream], |row| row.get(0)))
        .map_err(append_err)?;
    let current = (current >= 0).then_some(current as u64);
    let matches = match r.expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current.is_none(),
        ExpectedVersion::Exact(v) => current == Some(v),
    };
    if !matches {
        return match stored_ids(conn, r)? {
            StoredIds::All {
                last_version,
                last_position,
            } => Ok(AppendOutcome::retried(last_version, last_position)),
            StoredIds::Some => Err(AppendError::IdsAlreadyUsed {
                stream: r.stream.clone(),
            }),
            StoredIds::None => Err(AppendError::Conflict {
                stream: r.stream.clone(),
                expected: r.expected,
                actual: current,
            }),
        };
    }

    let first_version = current.map_or(0, |v| v + 1);
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO event (id, stream, version, type, data, metadata, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(append_err)?;
    for (i, e) in r.events.iter().enumerate() {
        let inserted = insert.execute(params![
            &e.id.as_bytes()[..],
            r.stream,
            to_i64(first_version + i as u64),
            e.event_type,
            e.data.as_bytes(),
            e.metadata.as_bytes(),
            recorded_at,
        ]);
        if let Err(err) = inserted {
            return match failure(err) {
                // An id is stored already. The caller rolls the savepoint
                // back; here we only tell a retry of this very append from a
                // misuse of ids.
                SqlFailure::UniqueViolation { .. } => match stored_ids(conn, r)? {
                    StoredIds::All {
                        last_version,
                        last_position,
                    } => Ok(AppendOutcome::retried(last_version, last_position)),
                    _ => Err(AppendError::IdsAlreadyUsed {
                        stream: r.stream.clone(),
                    }),
                },
                other => Err(other.into()),
            };
        }
    }
    Ok(AppendOutcome {
        last_version: first_version + r.events.len() as u64 - 1,
        last_position: Position(conn.last_insert_rowid() as u64),
        already_stored: false,
    })
}

/// Which of the append's event ids are stored, and whether all of them are
/// stored in this very stream (a retry of an append that succeeded).
fn stored_ids(conn: &Connection, r: &WriteRequest) -> Result<StoredIds, AppendError> {
    let mut lookup = conn
        .prepare_cached("SELECT stream, version, position FROM event WHERE id = ?1")
        .map_err(append_err)?;
    let mut found = 0usize;
    let mut same_stream = true;
    let mut last_version = 0u64;
    let mut last_position = 0u64;
    for e in &r.events {
        let row: Option<(String, i64, i64)> = lookup
            .query_row([&e.id.as_bytes()[..]], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
            .map_err(append_err)?;
        if let Some((stream, version, position)) = row {
            found += 1;
            same_stream &= stream == r.stream;
            last_version = last_version.max(version as u64);
            last_position = last_position.max(position as u64);
        }
    }
    Ok(if found == 0 {
        StoredIds::None
    } else if found == r.events.len() && same_stream {
        StoredIds::All {
            last_version,
            last_position: Position(last_position),
        }
    } else {
        StoredIds::Some
    })
}
