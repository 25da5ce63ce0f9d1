//! The PostgreSQL event store: concurrent writers from many processes.
//!
//! # Why a plain `bigserial` position does not work, and what we do instead
//!
//! With a sequence, transaction A can take position 10 and transaction B
//! position 11, and B can commit first. A subscriber that reads "position >
//! 9" then sees 11, stores 11 as its checkpoint, and never sees 10 once A
//! commits. Serializing every append behind one lock would fix that and also
//! cap throughput at one commit (one fsync) at a time.
//!
//! Instead, an event's position is built from the id of the transaction that
//! writes it: `(xid << 20) | index of the event in its append`. Every
//! transaction still running, or starting later, has an xid at or above the
//! current snapshot's `xmin`. So a reader that only returns events with
//! `position < xmin << 20` only returns events of finished transactions, and
//! every event it could see later has a higher position than anything it has
//! already returned. No gap, no duplicate, and writers never wait for each
//! other (except two racing for the same version of one stream).
//!
//! The cost: a subscriber sees an event only once every transaction older
//! than the event's own has finished, so one long write transaction anywhere
//! in the cluster delays subscribers (not writers) until it ends. Positions
//! are not dense. 20 bits allow up to 1,048,576 events per append (we cap
//! appends at [`crate::MAX_EVENTS_PER_APPEND`]); 43 bits of xid last for
//! 8.7 trillion transactions.
//!
//! Each append is one statement (one round trip): a CTE reads the stream's
//! version from the `(stream, version)` index, checks it and inserts the
//! events with `unnest`. That unique index settles races between appends to
//! one stream. Conflicts are told apart by SQLSTATE and constraint name.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Executor, PgPool, Row};
use uuid::Uuid;

use crate::sqlerr::{append_err, read_err, SqlFailure};
use crate::subscription::{spawn_polling, AppendSignal};
use crate::{
    sql_limit, to_i64, validate_append, AppendError, AppendOutcome, Direction, EventStore, ExpectedVersion, Json,
    NewEvent, Position, ReadError, RecordedEvent, StoredIds, StreamStart, Subscription,
};

/// Events a read reserves room for up front.
const PREALLOCATE: i64 = 10_000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The bound below which every event belongs to a finished transaction. A
/// scalar subquery, so PostgreSQL computes it once per query (an InitPlan);
/// written inline it is re-evaluated during the index scan, which made reads
/// 3.5 times slower (EXPLAIN ANALYZE, 5,000-row page: 5.5 ms against 1.6 ms).
const HORIZON: &str = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)";

/// Where and how to connect.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A `postgres://` URL. Kept out of `Debug`: it may hold a password.
    pub url: String,
    /// The schema holding the event log; the connections' search path.
    pub schema: String,
    pub max_connections: u32,
    /// How long a call waits for a free connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// How often an idle subscription looks for appends made by other
    /// processes (appends of this process wake it at once).
    pub poll_interval: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"<redacted>")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            schema: "mdm_store".to_owned(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(20),
        }
    }
}

/// Why the store could not be opened. No variant prints the URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid PostgreSQL URL")]
    Url(#[source] sqlx::Error),
    #[error("invalid schema name {0:?}: use letters, digits and underscores")]
    Schema(String),
    #[error("cannot connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    #[error("cannot migrate the event store schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// The PostgreSQL event store. Clones share one pool.
#[derive(Clone, Debug)]
pub struct PostgresEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    signal: AppendSignal,
    poll_interval: Duration,
}

impl PostgresEventStore {
    pub async fn connect(url: &str) -> Result<PostgresEventStore, OpenError> {
        PostgresEventStore::connect_with(PostgresOptions::new(url)).await
    }

    pub async fn connect_with(options: PostgresOptions) -> Result<PostgresEventStore, OpenError> {
        let schema = options.schema.clone();
        if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(OpenError::Schema(schema));
        }
        let connect = PgConnectOptions::from_str(&options.url)
            .map_err(OpenError::Url)?
            .options([("search_path", schema.as_str())])
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // No ping before each use: it doubled the round trips of every
            // append and page read. A connection that died while idle fails
            // its next statement with an I/O error, which callers see as
            // `Unavailable` and retry; the pool then replaces it.
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(OpenError::Connect)?;
        create_schema(&pool, &schema).await.map_err(OpenError::Connect)?;
        MIGRATOR.run(&pool).await.map_err(OpenError::Migrate)?;
        Ok(PostgresEventStore {
            inner: Arc::new(Inner {
                pool,
                signal: AppendSignal::new(),
                poll_interval: options.poll_interval,
            }),
        })
    }

    /// The pool, for the benchmark's plain-SQL baseline on the same database.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }
}

pub(crate) async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    // Two processes starting together may both try; the loser gets a unique
    // violation (23505) or duplicate_schema (42P06), both meaning it is there.
    match pool
        .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
        .await
    {
        Err(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("23505" | "42P06")) => Ok(()),
        other => other.map(|_| ()),
    }
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, AppendError> {
        validate_append(stream, &events)?;
        // One statement, one round trip: read the stream's version through
        // the (stream, version) index, check it, insert. Two appends racing
        // for the same version both pass the check; the unique index makes
        // the second wait for the first and then fail with 23505.
        let check = match expected {
            ExpectedVersion::Any => "true",
            ExpectedVersion::NoStream => "cur.v = -1",
            ExpectedVersion::Exact(_) => "cur.v = $6",
        };
        // One event (the common case: a record captured, a decision taken)
        // binds plain values; more events go through `unnest`. Encoding
        // arrays costs client CPU, which shares the machine with the server.
        let rows = if events.len() == 1 {
            "SELECT pg_current_xact_id()::text::bigint << 20, $2::uuid, $1, cur.v + 1, \
                    $3::text, $4::bytea, $5::bytea FROM cur"
        } else {
            "SELECT (pg_current_xact_id()::text::bigint << 20) | (e.ord - 1), \
                    e.id, $1, cur.v + e.ord, e.type, e.data, e.metadata \
             FROM cur, unnest($2::uuid[], $3::text[], $4::bytea[], $5::bytea[]) \
                  WITH ORDINALITY AS e(id, type, data, metadata, ord)"
        };
        let sql = format!(
            "WITH cur AS (SELECT coalesce(max(version), -1) AS v FROM event WHERE stream = $1), \
             ins AS ( \
               INSERT INTO event (position, id, stream, version, type, data, metadata) \
               {rows} WHERE {check} \
               RETURNING position, version) \
             SELECT (SELECT v FROM cur), max(position), max(version) FROM ins"
        );
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_bytes()).collect();
        let metadata: Vec<&[u8]> = events.iter().map(|e| e.metadata.as_bytes()).collect();
        // `Any` never conflicts by itself: losing a race for a version only
        // means trying again on top of the winner.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let query = sqlx::query_as::<_, (i64, Option<i64>, Option<i64>)>(&sql).bind(stream);
            let mut query = match events.as_slice() {
                [one] => query
                    .bind(one.id)
                    .bind(one.event_type.as_str())
                    .bind(one.data.as_bytes())
                    .bind(one.metadata.as_bytes()),
                _ => query.bind(&ids).bind(&types).bind(&data).bind(&metadata),
            };
            if let ExpectedVersion::Exact(v) = expected {
                query = query.bind(to_i64(v));
            }
            let conflict = match query.fetch_one(&self.inner.pool).await {
                Ok((_, Some(position), Some(version))) => {
                    self.inner.signal.notify();
                    return Ok(AppendOutcome {
                        last_version: version as u64,
                        last_position: Position(position as u64),
                        already_stored: false,
                    });
                }
                // The stream was not at the expected version: nothing stored.
                Ok((current, _, _)) => Some((current >= 0).then_some(current as u64)),
                Err(e) => match SqlFailure::from(e) {
                    SqlFailure::UniqueViolation { constraint } if constraint.as_deref() == Some("event_id_key") => None,
                    SqlFailure::UniqueViolation { constraint }
                        if constraint.as_deref() == Some("event_stream_version_key") =>
                    {
                        if expected == ExpectedVersion::Any && attempts < 100 {
                            continue;
                        }
                        Some(self.current_version(stream).await?)
                    }
                    other => return Err(other.into()),
                },
            };
            // A conflict or a repeated id: was this a retry of an append
            // that is already stored?
            return match self.stored_ids(stream, &ids).await? {
                StoredIds::All {
                    last_version,
                    last_position,
                } => Ok(AppendOutcome::retried(last_version, last_position)),
                StoredIds::Some => Err(AppendError::IdsAlreadyUsed {
                    stream: stream.to_owned(),
                }),
                StoredIds::None => match conflict {
                    Some(actual) => Err(AppendError::Conflict {
                        stream: stream.to_owned(),
                        expected,
                        actual,
                    }),
                    None => Err(AppendError::Internal("an event id conflicted but is not stored".into())),
                },
            };
        }
    }

    async fn read_stream(
        &self,
        stream: &str,
        start: StreamStart,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let sql = match (direction, start) {
            (Direction::Forwards, _) => {
                "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
                 WHERE stream = $1 AND version >= $2 ORDER BY version ASC LIMIT $3"
            }
            (Direction::Backwards, StreamStart::Edge) => {
                "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
                 WHERE stream = $1 AND $2 >= 0 ORDER BY version DESC LIMIT $3"
            }
            (Direction::Backwards, StreamStart::Version(_)) => {
                "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
                 WHERE stream = $1 AND version <= $2 ORDER BY version DESC LIMIT $3"
            }
        };
        let from = match start {
            StreamStart::Edge => 0,
            StreamStart::Version(v) => to_i64(v),
        };
        let rows = sqlx::query(sql)
            .bind(stream)
            .bind(from)
            .bind(sql_limit(max_count))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(read_err)?;
        rows.iter().map(decode_row).collect()
    }

    async fn read_all(&self, after: Position, max_count: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let sql = format!(
            "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event \
             WHERE position > $1 AND position < {HORIZON} ORDER BY position ASC LIMIT $2"
        );
        // Decode each row as it arrives instead of holding the whole page of
        // raw rows first: half the memory, and decoding overlaps the transfer.
        let limit = sql_limit(max_count);
        let mut waited = Duration::ZERO;
        let mut pause = Duration::from_millis(2);
        let mut warned = false;
        loop {
            let mut rows = sqlx::query(&sql)
                .bind(to_i64(after.0))
                .bind(limit)
                .fetch(&self.inner.pool);
            let mut events = Vec::with_capacity(limit.min(PREALLOCATE) as usize);
            while let Some(row) = rows.try_next().await.map_err(read_err)? {
                events.push(decode_row(&row)?);
            }
            drop(rows);
            if !events.is_empty() || !self.committed_after(after).await? {
                return Ok(events);
            }
            // An empty page while committed events exist after `after`: an
            // older transaction somewhere in the cluster (the horizon is
            // cluster-wide) still holds them back. Returning the empty page
            // would tell the caller it has read everything committed, which
            // a full scan (a snapshot's retraction, a rebuild) relies on; so
            // wait for the horizon to pass them.
            tokio::time::sleep(pause).await;
            waited += pause;
            pause = (pause * 2).min(Duration::from_millis(100));
            if waited > Duration::from_secs(10) && !warned {
                warned = true;
                tracing::warn!(
                    waited_seconds = waited.as_secs(),
                    "a long transaction elsewhere in the PostgreSQL cluster holds back the event log's \
                     visibility horizon; reads of the log wait for it"
                );
            }
        }
    }

    async fn read_last_events(&self, streams: &[String]) -> Result<Vec<Option<RecordedEvent>>, ReadError> {
        // One round trip for the batch: an index descent per stream, like
        // read_stream backwards (no horizon: a writer must see its own appends).
        let rows = sqlx::query(
            "SELECT e.position, e.id, e.stream, e.version, e.type, e.data, e.metadata, e.recorded_at \
             FROM unnest($1::text[]) WITH ORDINALITY AS s(stream, i) \
             CROSS JOIN LATERAL (SELECT * FROM event WHERE event.stream = s.stream \
                                 ORDER BY version DESC LIMIT 1) e",
        )
        .bind(streams)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(read_err)?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let event = decode_row(row)?;
            found.insert(event.stream.clone(), event);
        }
        Ok(streams.iter().map(|s| found.get(s).cloned()).collect())
    }

    async fn head(&self) -> Result<Position, ReadError> {
        let sql = format!("SELECT coalesce(max(position), 0) FROM event WHERE position < {HORIZON}");
        let head: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(read_err)?;
        Ok(Position(head.max(0) as u64))
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
        self.inner.pool.close().await;
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

impl PostgresEventStore {
    /// Whether any committed event lies after `after`, horizon or not.
    async fn committed_after(&self, after: Position) -> Result<bool, ReadError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM event WHERE position > $1)")
            .bind(to_i64(after.0))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(read_err)
    }

    async fn current_version(&self, stream: &str) -> Result<Option<u64>, AppendError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM event WHERE stream = $1")
            .bind(stream)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(append_err)?;
        Ok(v.map(|v| v as u64))
    }

    async fn stored_ids(&self, stream: &str, ids: &[Uuid]) -> Result<StoredIds, AppendError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT stream, version, position FROM event WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(append_err)?;
        if rows.is_empty() {
            return Ok(StoredIds::None);
        }
        if rows.len() != ids.len() || rows.iter().any(|(s, _, _)| s != stream) {
            return Ok(StoredIds::Some);
        }
        Ok(StoredIds::All {
            last_version: rows.iter().map(|r| r.1).max().unwrap_or(0) as u64,
            last_position: Position(rows.iter().map(|r| r.2).max().unwrap_or(0) as u64),
        })
    }
}

fn decode_row(row: &PgRow) -> Result<RecordedEvent, ReadError> {
    let position: i64 = row.try_get(0).map_err(read_err)?;
    let version: i64 = row.try_get(3).map_err(read_err)?;
    let data: Vec<u8> = row.try_get(5).map_err(read_err)?;
    let metadata: Vec<u8> = row.try_get(6).map_err(read_err)?;
    let recorded_at: DateTime<Utc> = row.try_get(7).map_err(read_err)?;
    Ok(RecordedEvent {
        id: row.try_get(1).map_err(read_err)?,
        stream: row.try_get(2).map_err(read_err)?,
        version: version as u64,
        position: Position(position as u64),
        event_type: row.try_get(4).map_err(read_err)?,
        data: Json::trusted(Bytes::from(data)),
        metadata: Json::trusted(Bytes::from(metadata)),
        recorded_at,
    })
}
