//! The event-store port and its adapters.
//!
//! Every fact the MDM knows is an immutable event in one log. This crate
//! defines the one trait the rest of the application talks to,
//! [`EventStore`], and the adapters behind it:
//!
//! - [`sqlite::SqliteEventStore`]: the embedded default, one file, one process;
//! - [`postgres::PostgresEventStore`]: concurrent writers from many processes;
//! - `kurrent::KurrentEventStore` (feature `kurrentdb`): EventStoreDB/KurrentDB
//!   through the official client. It is the only module that imports it.
//!
//! Code map:
//! - `lib.rs`: the port (trait, event types, expected versions, errors);
//! - `subscription.rs`: catch-up-then-live subscriptions built on paged
//!   global reads, shared by the SQL adapters;
//! - `sqlite.rs`, `postgres.rs`, `kurrent.rs`: the adapters;
//! - `bench.rs`: the `mdm bench store` measurements with their plain-SQL baselines.
//!
//! Architecture invariants:
//! - Appends are atomic per stream and nothing else: one call, one stream,
//!   all or nothing. That is what EventStoreDB, PostgreSQL and SQLite share.
//! - Global positions are strictly increasing in the order the global log is
//!   read, and a reader never sees a position lower than one it has already
//!   seen. They are not dense: gaps are allowed, so callers must not count
//!   events by subtracting positions.
//! - Retrying an append with the same event ids stores nothing twice and
//!   reports the original outcome.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

pub mod bench;
pub mod keys;
#[cfg(feature = "kurrentdb")]
pub mod kurrent;
pub mod postgres;
mod sqlerr;
pub mod sqlite;
pub mod subscription;

pub use subscription::Subscription;

/// The largest number of events one append may carry. Bigger batches are
/// split by the caller; this bound keeps one transaction's memory and lock
/// time bounded on every backend (PostgreSQL positions also reserve 20 bits
/// for the index of an event within its append).
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;

/// The largest payload (data plus metadata) of one event, in bytes. EventStoreDB
/// refuses events above 16 MiB; we stay well below it on every backend.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// A position in the global log. Positions are strictly increasing in log
/// order but not dense. [`Position::START`] lies before every event, so
/// reading "after START" reads the whole log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event of the log.
    pub const START: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the writer believes about the stream it appends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version (0-based).
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// A stream's current state as seen at a conflict: `None` when the stream
/// does not exist, otherwise the version of its last event.
pub type CurrentVersion = Option<u64>;

/// A JSON document held as its serialized bytes. It is valid JSON by
/// construction (built from a serializable value or checked when parsed), so
/// the stores can keep and return it without re-parsing it on every read.
#[derive(Clone, PartialEq, Eq)]
pub struct Json(Bytes);

impl Json {
    /// Serializes a value.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Json, serde_json::Error> {
        serde_json::to_vec(value).map(|v| Json(Bytes::from(v)))
    }

    /// Checks that `bytes` hold one JSON document and wraps them unchanged.
    pub fn parse(bytes: impl Into<Bytes>) -> Result<Json, serde_json::Error> {
        let bytes = bytes.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)?;
        Ok(Json(bytes))
    }

    /// Wraps bytes a store wrote itself after they were checked on the way in.
    pub(crate) fn trusted(bytes: impl Into<Bytes>) -> Json {
        Json(bytes.into())
    }

    /// Deserializes the document into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }

    /// The serialized bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The serialized text.
    pub fn as_str(&self) -> &str {
        // Valid JSON is valid UTF-8, and every constructor checks or produces JSON.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The empty object, for events without metadata.
    pub fn empty_object() -> Json {
        Json(Bytes::from_static(b"{}"))
    }
}

/// Event payloads hold personal data: their `Debug` shows the size only, so a
/// stray `{:?}` in a log or a panic message never prints them.
impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({} bytes)", self.0.len())
    }
}

/// An event to append. The caller chooses its id: deterministic ids (UUID v5
/// of what caused the event) make a retried append store nothing twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_type: String,
    pub data: Json,
    pub metadata: Json,
}

impl NewEvent {
    pub fn new(id: Uuid, event_type: impl Into<String>, data: Json, metadata: Json) -> NewEvent {
        NewEvent {
            id,
            event_type: event_type.into(),
            data,
            metadata,
        }
    }
}

/// An event as stored, with where and when it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub id: Uuid,
    pub stream: String,
    /// 0-based index of the event in its stream.
    pub version: u64,
    pub position: Position,
    pub event_type: String,
    pub data: Json,
    pub metadata: Json,
    pub recorded_at: DateTime<Utc>,
}

/// What an append stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Version of the last event of this append.
    pub last_version: u64,
    /// Global position of the last event of this append.
    pub last_position: Position,
    /// `true` when every event id was already stored by an earlier attempt,
    /// so this call stored nothing and reports the earlier attempt's outcome.
    pub already_stored: bool,
}

impl AppendOutcome {
    /// The outcome of a retry that found every event already stored.
    pub(crate) fn retried(last_version: u64, last_position: Position) -> AppendOutcome {
        AppendOutcome {
            last_version,
            last_position,
            already_stored: true,
        }
    }
}

/// The most events one read returns, whatever the caller asks for.
pub const MAX_READ: usize = 100_000;

/// A caller's page size as a SQL `LIMIT`.
pub(crate) fn sql_limit(max_count: usize) -> i64 {
    max_count.min(MAX_READ) as i64
}

/// A version or position as a SQL `bigint` (they never exceed `i64::MAX`).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Which way to read a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forwards,
    Backwards,
}

/// Where to start reading a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStart {
    /// The first event when reading forwards, the last when reading backwards.
    Edge,
    /// This version, included.
    Version(u64),
}

/// Why an append was refused. Each variant says what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The stream was not at the expected version: nothing was stored. Reload
    /// the stream and decide again (HTTP 409 or, behind `If-Match`, 412).
    #[error("stream {stream} expected {expected}, but it is at {}", describe(*.actual))]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: CurrentVersion,
    },
    /// Some event ids of this append are already stored, but not as this
    /// append (only some of them, or in another stream): the caller reuses ids
    /// for different content, which is a bug. Nothing was stored (HTTP 500).
    #[error("event ids of this append to {stream} are already used by other events")]
    IdsAlreadyUsed { stream: String },
    /// The append itself is malformed (no events, too many, too large, a bad
    /// stream name); nothing was stored (HTTP 400 at the edge, a bug inside).
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The store cannot be reached or is shutting down. Nothing is known to
    /// be stored: retry with the same event ids (HTTP 503).
    #[error("event store unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or a broken store (HTTP 500).
    #[error("event store failed")]
    Internal(#[source] BoxError),
}

/// Why a read or a subscription failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store cannot be reached or is shutting down: retry later (HTTP 503).
    #[error("event store unavailable")]
    Unavailable(#[source] BoxError),
    /// A stored row could not be turned into an event (HTTP 500).
    #[error("stored event at position {position} is corrupt: {reason}")]
    Corrupt { position: u64, reason: String },
    /// Anything else: a bug or a broken store (HTTP 500).
    #[error("event store failed")]
    Internal(#[source] BoxError),
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

fn describe(actual: CurrentVersion) -> String {
    match actual {
        None => "no stream".to_owned(),
        Some(v) => format!("version {v}"),
    }
}

/// The event-store port. Implementations are cheap to clone handles onto a
/// shared connection pool or client.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// Appends `events` to `stream` if the stream is at `expected`, atomically.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, AppendError>;

    /// Reads up to `max_count` events of one stream from `start` in `direction`.
    /// A stream that does not exist reads as empty.
    async fn read_stream(
        &self,
        stream: &str,
        start: StreamStart,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError>;

    /// Reads up to `max_count` events of the global log whose position is
    /// strictly after `after`, in log order. An empty page means the reader
    /// has caught up with what is durably visible now.
    async fn read_all(&self, after: Position, max_count: usize) -> Result<Vec<RecordedEvent>, ReadError>;

    /// The last event of each of `streams` (`None` for a stream that does
    /// not exist), in the order given. Ingestion asks this for a whole batch
    /// of records at once, to tell new, changed and unchanged records apart;
    /// adapters answer it in one query. The default reads stream by stream.
    async fn read_last_events(&self, streams: &[String]) -> Result<Vec<Option<RecordedEvent>>, ReadError> {
        let mut last = Vec::with_capacity(streams.len());
        for stream in streams {
            let mut page = self
                .read_stream(stream, StreamStart::Edge, Direction::Backwards, 1)
                .await?;
            last.push(page.pop());
        }
        Ok(last)
    }

    /// The position of the last event a reader can see now (`START` when the
    /// log is empty). Used to report how far behind a subscriber is.
    async fn head(&self) -> Result<Position, ReadError>;

    /// Follows the global log from just after `after`: first everything
    /// already stored, then new events as they are appended, with no gap and
    /// no duplicate. Dropping the subscription stops it.
    async fn subscribe_all(&self, after: Position) -> Result<Subscription, ReadError>;

    /// Closes the store's connections. Later calls fail with `Unavailable`.
    async fn close(&self);

    /// The adapter's name, for logs and benchmark output.
    fn backend(&self) -> &'static str;
}

/// Checks what every adapter requires of an append before it touches storage.
pub fn validate_append(stream: &str, events: &[NewEvent]) -> Result<(), AppendError> {
    if stream.is_empty() || stream.len() > 512 {
        return Err(AppendError::Invalid("stream name must have 1 to 512 bytes".into()));
    }
    if stream.starts_with('$') {
        return Err(AppendError::Invalid(
            "stream names starting with '$' are reserved".into(),
        ));
    }
    if events.is_empty() {
        return Err(AppendError::Invalid("an append needs at least one event".into()));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(AppendError::Invalid(format!(
            "an append holds at most {MAX_EVENTS_PER_APPEND} events, got {}",
            events.len()
        )));
    }
    let mut ids = std::collections::HashSet::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if e.event_type.is_empty() || e.event_type.len() > 256 {
            return Err(AppendError::Invalid(format!(
                "event {i}: type must have 1 to 256 bytes"
            )));
        }
        if e.data.as_bytes().len() + e.metadata.as_bytes().len() > MAX_EVENT_BYTES {
            return Err(AppendError::Invalid(format!(
                "event {i}: data and metadata exceed {MAX_EVENT_BYTES} bytes"
            )));
        }
        if !ids.insert(e.id) {
            return Err(AppendError::Invalid(format!(
                "event {i}: id repeated within the append"
            )));
        }
    }
    Ok(())
}

/// What an append that met a conflict or a duplicate id finds when it looks
/// at which of its event ids are already stored.
pub(crate) enum StoredIds {
    None,
    All { last_version: u64, last_position: Position },
    Some,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u128) -> NewEvent {
        NewEvent::new(
            Uuid::from_u128(id),
            "Tested",
            Json::empty_object(),
            Json::empty_object(),
        )
    }

    #[test]
    fn json_parse_rejects_what_is_not_one_document() {
        assert!(Json::parse(&b"{\"a\":1}"[..]).is_ok());
        assert!(Json::parse(&b"{\"a\":"[..]).is_err());
        assert!(Json::parse(&b"{} {}"[..]).is_err());
        assert!(Json::parse(&b"\xff"[..]).is_err());
    }

    #[test]
    fn json_debug_never_shows_the_payload() {
        let j = Json::encode(&serde_json::json!({"name": "Ada Lovelace"})).expect("encodes");
        assert_eq!(format!("{j:?}"), "Json(23 bytes)");
    }

    #[test]
    fn append_validation_names_the_problem() {
        let check = |stream: &str, events: Vec<NewEvent>| validate_append(stream, &events).err().map(|e| e.to_string());
        assert_eq!(check("s", vec![event(1)]), None);
        assert!(check("", vec![event(1)]).expect("refused").contains("stream name"));
        assert!(check("$all", vec![event(1)]).expect("refused").contains("reserved"));
        assert!(check("s", vec![]).expect("refused").contains("at least one"));
        assert!(check("s", vec![event(1), event(1)])
            .expect("refused")
            .contains("repeated"));
        let too_many = (0..=MAX_EVENTS_PER_APPEND as u128).map(event).collect();
        assert!(check("s", too_many).expect("refused").contains("at most"));
    }
}
