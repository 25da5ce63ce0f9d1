//! The embedded event store: one SQLite file in WAL mode, for one process.
//!
//! Writes go through a single writer task that owns the only write
//! connection. It takes every append waiting in its queue, runs each inside
//! its own savepoint of one transaction and commits them together ("group
//! commit"): a busy service pays one fsync per group instead of one per
//! append, while each append keeps its own all-or-nothing outcome. Reads use
//! a separate pool of read-only connections, which WAL lets run beside the
//! writer. Positions come from `AUTOINCREMENT` under that single writer, so
//! they are assigned in commit order and a reader can never skip one.
//!
//! A lock file next to the database keeps a second process from opening the
//! same store; SQLite itself would stay consistent, but two processes would
//! each believe they are the only writer and each hold their own resolver.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::sqlerr::{append_err, read_err, SqlFailure};
use crate::subscription::{spawn_polling, AppendSignal};
use crate::{
    validate_append, AppendError, AppendOutcome, Direction, EventStore, ExpectedVersion, Json, NewEvent, Position,
    ReadError, RecordedEvent, StoredIds, StreamStart, Subscription, MAX_EVENTS_PER_APPEND,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Rows per multi-row INSERT: 7 parameters each stays far below SQLite's
/// limit of 32,766 parameters per statement.
const INSERT_CHUNK: usize = 256;

/// How many queued appends the writer commits together at most.
const MAX_GROUP: usize = 512;

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
        source: sqlx::Error,
    },
    #[error("cannot migrate the database at {path}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// The embedded event store. Clones share the writer and the read pool.
#[derive(Clone, Debug)]
pub struct SqliteEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    reader: SqlitePool,
    writer: mpsc::Sender<WriterMsg>,
    signal: AppendSignal,
    poll_interval: Duration,
    // Held for the life of the store; the OS releases it when the process ends.
    _lock: File,
}

#[derive(Debug)]
enum WriterMsg {
    Append(WriteRequest),
    /// Stop taking appends; answered once the writer's connection is closed.
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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let lock = lock_file(&path)?;

        let base = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .disable_statement_logging();
        let db_err = |source| OpenError::Database {
            path: path.clone(),
            source,
        };

        let writer_options = base
            .clone()
            .create_if_missing(true)
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            });
        // Migrate through a one-connection pool: `Migrator::run` on a bare
        // connection makes this future non-`Send` (a sqlx lifetime quirk).
        let migrate_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_options.clone())
            .await
            .map_err(db_err)?;
        MIGRATOR.run(&migrate_pool).await.map_err(|source| OpenError::Migrate {
            path: path.clone(),
            source,
        })?;
        migrate_pool.close().await;
        let writer = writer_options.connect().await.map_err(db_err)?;

        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(base.read_only(true))
            .await
            .map_err(db_err)?;

        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        let signal = AppendSignal::new();
        tokio::spawn(writer_loop(writer, rx, signal.clone()));
        Ok(SqliteEventStore {
            inner: Arc::new(Inner {
                reader,
                writer: tx,
                signal,
                poll_interval: options.poll_interval,
                _lock: lock,
            }),
        })
    }

    /// The read pool, for the benchmark's plain-SQL baseline on the same file.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.inner.reader
    }
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
            .map_err(|_| AppendError::Unavailable("the store's writer has stopped".into()))?;
        outcome
            .await
            .map_err(|_| AppendError::Unavailable("the store's writer stopped before answering".into()))?
    }

    async fn read_stream(
        &self,
        stream: &str,
        start: StreamStart,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let limit = clamp_limit(max_count);
        let sql = match (direction, start) {
            (Direction::Forwards, StreamStart::Edge) => {
                "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
                 WHERE stream = ?1 AND version >= 0 ORDER BY version ASC LIMIT ?3"
            }
            (Direction::Forwards, StreamStart::Version(_)) => {
                "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
                 WHERE stream = ?1 AND version >= ?2 ORDER BY version ASC LIMIT ?3"
            }
            (Direction::Backwards, StreamStart::Edge) => {
                "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
                 WHERE stream = ?1 ORDER BY version DESC LIMIT ?3"
            }
            (Direction::Backwards, StreamStart::Version(_)) => {
                "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
                 WHERE stream = ?1 AND version <= ?2 ORDER BY version DESC LIMIT ?3"
            }
        };
        let from = match start {
            StreamStart::Edge => 0,
            StreamStart::Version(v) => to_i64(v),
        };
        let rows = sqlx::query(sql)
            .bind(stream)
            .bind(from)
            .bind(limit)
            .fetch_all(&self.inner.reader)
            .await
            .map_err(read_err)?;
        rows.iter().map(decode_row).collect()
    }

    async fn read_all(&self, after: Position, max_count: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let rows = sqlx::query(
            "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
             WHERE position > ?1 ORDER BY position ASC LIMIT ?2",
        )
        .bind(to_i64(after.0))
        .bind(clamp_limit(max_count))
        .fetch_all(&self.inner.reader)
        .await
        .map_err(read_err)?;
        rows.iter().map(decode_row).collect()
    }

    async fn head(&self) -> Result<Position, ReadError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM event")
            .fetch_one(&self.inner.reader)
            .await
            .map_err(read_err)?;
        Ok(Position(head.unwrap_or(0).max(0) as u64))
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
        self.inner.reader.close().await;
        let (done, closed) = oneshot::channel();
        if self.inner.writer.send(WriterMsg::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

fn clamp_limit(max_count: usize) -> i64 {
    max_count.min(100_000) as i64
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn decode_row(row: &sqlx::sqlite::SqliteRow) -> Result<RecordedEvent, ReadError> {
    let position: i64 = row.try_get(0).map_err(read_err)?;
    let corrupt = |reason: &str| ReadError::Corrupt {
        position: position as u64,
        reason: reason.to_owned(),
    };
    let id: &[u8] = row.try_get(1).map_err(read_err)?;
    let id = Uuid::from_slice(id).map_err(|_| corrupt("event id is not 16 bytes"))?;
    let version: i64 = row.try_get(3).map_err(read_err)?;
    let data: Vec<u8> = row.try_get(5).map_err(read_err)?;
    let metadata: Vec<u8> = row.try_get(6).map_err(read_err)?;
    let micros: i64 = row.try_get(7).map_err(read_err)?;
    Ok(RecordedEvent {
        id,
        stream: row.try_get(2).map_err(read_err)?,
        version: version as u64,
        position: Position(position as u64),
        event_type: row.try_get(4).map_err(read_err)?,
        data: Json::trusted(Bytes::from(data)),
        metadata: Json::trusted(Bytes::from(metadata)),
        recorded_at: DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt("recorded_at out of range"))?,
    })
}

/// The single writer: takes every queued append, runs each in its own
/// savepoint, commits them together, then answers each caller.
async fn writer_loop(mut conn: SqliteConnection, mut queue: mpsc::Receiver<WriterMsg>, signal: AppendSignal) {
    let mut group: Vec<WriteRequest> = Vec::with_capacity(MAX_GROUP);
    let mut closed_by = None;
    while let Some(first) = queue.recv().await {
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
            if group.len() < MAX_GROUP && events < MAX_EVENTS_PER_APPEND {
                next = queue.try_recv().ok();
            }
        }
        if !group.is_empty() {
            let outcomes = commit_group(&mut conn, &group).await;
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
    let _ = conn.close().await;
    if let Some(done) = closed_by {
        let _ = done.send(());
    }
}

async fn commit_group(conn: &mut SqliteConnection, group: &[WriteRequest]) -> Vec<Result<AppendOutcome, AppendError>> {
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        let failure = SqlFailure::from(e);
        return group.iter().map(|_| Err(failure_to_append(&failure))).collect();
    }
    let mut outcomes = Vec::with_capacity(group.len());
    for request in group {
        outcomes.push(append_in_savepoint(conn, request).await);
    }
    if let Err(e) = conn.execute("COMMIT").await {
        let failure = SqlFailure::from(e);
        let _ = conn.execute("ROLLBACK").await;
        return outcomes
            .into_iter()
            .map(|o| match o {
                // Nothing of this group is stored: the earlier verdicts
                // (conflicts, duplicates) still hold, the successes do not.
                Ok(_) => Err(failure_to_append(&failure)),
                other => other,
            })
            .collect();
    }
    outcomes
}

fn failure_to_append(f: &SqlFailure) -> AppendError {
    match f {
        SqlFailure::Unavailable(e) => AppendError::Unavailable(e.to_string().into()),
        SqlFailure::Other(e) => AppendError::Internal(e.to_string().into()),
        SqlFailure::UniqueViolation { .. } => AppendError::Internal("unexpected unique violation".into()),
    }
}

async fn append_in_savepoint(conn: &mut SqliteConnection, r: &WriteRequest) -> Result<AppendOutcome, AppendError> {
    conn.execute("SAVEPOINT append").await.map_err(append_err)?;
    let outcome = append_one(conn, r).await;
    let keep = matches!(&outcome, Ok(o) if !o.already_stored);
    let end = if keep {
        conn.execute("RELEASE append").await
    } else {
        match conn.execute("ROLLBACK TO append").await {
            Ok(_) => conn.execute("RELEASE append").await,
            Err(e) => Err(e),
        }
    };
    end.map_err(append_err)?;
    outcome
}

async fn append_one(conn: &mut SqliteConnection, r: &WriteRequest) -> Result<AppendOutcome, AppendError> {
    // One statement checks the expected version and moves the stream to its
    // new version; no row back means the stream was not where the caller
    // expected it.
    let n = r.events.len() as i64;
    let bump = match r.expected {
        ExpectedVersion::Any => sqlx::query_scalar::<_, i64>(
            "INSERT INTO stream (name, version) VALUES (?1, ?2 - 1) \
             ON CONFLICT (name) DO UPDATE SET version = version + ?2 RETURNING version",
        ),
        ExpectedVersion::NoStream => sqlx::query_scalar::<_, i64>(
            "INSERT INTO stream (name, version) VALUES (?1, ?2 - 1) ON CONFLICT (name) DO NOTHING RETURNING version",
        ),
        ExpectedVersion::Exact(_) => sqlx::query_scalar::<_, i64>(
            "UPDATE stream SET version = version + ?2 WHERE name = ?1 AND version = ?3 RETURNING version",
        ),
    };
    let exact = match r.expected {
        ExpectedVersion::Exact(v) => to_i64(v),
        _ => -1,
    };
    let bumped = bump
        .bind(&r.stream)
        .bind(n)
        .bind(exact)
        .fetch_optional(&mut *conn)
        .await
        .map_err(append_err)?;
    let Some(last_version) = bumped else {
        return match stored_ids(conn, r).await? {
            StoredIds::All {
                last_version,
                last_position,
            } => Ok(already(last_version, last_position)),
            StoredIds::Some => Err(AppendError::IdsAlreadyUsed {
                stream: r.stream.clone(),
            }),
            StoredIds::None => {
                let actual: Option<i64> = sqlx::query_scalar("SELECT version FROM stream WHERE name = ?1")
                    .bind(&r.stream)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(append_err)?;
                Err(AppendError::Conflict {
                    stream: r.stream.clone(),
                    expected: r.expected,
                    actual: actual.map(|v| v as u64),
                })
            }
        };
    };
    let last_version = last_version as u64;
    let first_version = last_version + 1 - r.events.len() as u64;

    let recorded_at = Utc::now().timestamp_micros();
    let mut last_position = 0i64;
    for (chunk_index, chunk) in r.events.chunks(INSERT_CHUNK).enumerate() {
        let base = first_version + (chunk_index * INSERT_CHUNK) as u64;
        let mut insert: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO event (id, stream, version, type, data, metadata, recorded_at) ");
        insert.push_values(chunk.iter().enumerate(), |mut row, (i, e)| {
            row.push_bind(e.id.as_bytes().to_vec())
                .push_bind(&r.stream)
                .push_bind((base + i as u64) as i64)
                .push_bind(&e.event_type)
                .push_bind(e.data.as_bytes())
                .push_bind(e.metadata.as_bytes())
                .push_bind(recorded_at);
        });
        match insert.build().persistent(true).execute(&mut *conn).await {
            Ok(done) => last_position = done.last_insert_rowid(),
            Err(e) => {
                return match SqlFailure::from(e) {
                    // An id is stored already. The caller rolls the savepoint
                    // back (the stream's bump too); here we only tell a retry
                    // of this very append from a misuse of ids.
                    SqlFailure::UniqueViolation { .. } => match stored_ids(conn, r).await? {
                        StoredIds::All {
                            last_version,
                            last_position,
                        } => Ok(already(last_version, last_position)),
                        _ => Err(AppendError::IdsAlreadyUsed {
                            stream: r.stream.clone(),
                        }),
                    },
                    other => Err(other.into()),
                };
            }
        }
    }
    Ok(AppendOutcome {
        last_version,
        last_position: Position(last_position as u64),
        already_stored: false,
    })
}

fn already(last_version: u64, last_position: Position) -> AppendOutcome {
    AppendOutcome {
        last_version,
        last_position,
        already_stored: true,
    }
}

/// Which of the append's event ids are stored, and whether all of them are
/// stored in this very stream (a retry of an append that succeeded).
async fn stored_ids(conn: &mut SqliteConnection, r: &WriteRequest) -> Result<StoredIds, AppendError> {
    let mut found = 0usize;
    let mut same_stream = true;
    let mut last_version = 0u64;
    let mut last_position = 0u64;
    for chunk in r.events.chunks(INSERT_CHUNK) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT stream, version, position FROM event WHERE id IN (");
        let mut ids = q.separated(", ");
        for e in chunk {
            ids.push_bind(e.id.as_bytes().to_vec());
        }
        q.push(")");
        let rows = q.build().fetch_all(&mut *conn).await.map_err(append_err)?;
        for row in rows {
            found += 1;
            let stream: String = row.try_get(0).map_err(append_err)?;
            same_stream &= stream == r.stream;
            last_version = last_version.max(row.try_get::<i64, _>(1).map_err(append_err)? as u64);
            last_position = last_position.max(row.try_get::<i64, _>(2).map_err(append_err)? as u64);
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
