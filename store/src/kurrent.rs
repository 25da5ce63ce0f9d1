//! The EventStoreDB/KurrentDB event store, through the official gRPC client
//! (`kurrentdb` crate). This is the only file of the project that imports
//! that crate: its types never appear in the public API.
//!
//! # Global positions
//!
//! A KurrentDB log position is a pair `(commit, prepare)` of byte offsets in
//! the transaction file; `$all` is ordered by commit, then prepare. Every
//! append made through gRPC is an *implicit* transaction: each event is its
//! own prepare record flagged as committed, so the server reports
//! `commit == prepare == the event's own log position`, in `$all` reads, in
//! live subscription pushes and in stream reads alike. The events of one
//! append therefore get distinct, increasing commit positions, and our
//! [`Position`] is the commit position. It is never 0 for an event (the log
//! starts with an epoch record). A position `P` we handed out maps back to
//! the client's `Position { commit: P, prepare: P }`, which is exactly where
//! that event starts; reading or subscribing "after P" starts there and drops
//! every event whose position is `<= P`, whether the server treats the start
//! as inclusive or exclusive. `after` must be [`Position::START`] or a
//! position this adapter returned (arbitrary numbers are not record
//! boundaries). Events of legacy *explicit* transactions (TCP API, before
//! gRPC) share one commit position and differ in prepare position; they
//! cannot be mapped to strictly increasing numbers, so reading one yields
//! [`ReadError::Corrupt`] instead of silently breaking the ordering
//! invariant. So does an event whose position the server does not report
//! (servers that predate position reporting on stream reads).
//!
//! # Idempotency
//!
//! We send the caller's event ids as the KurrentDB event ids. The server is
//! itself idempotent for a retried append with the same ids: with an exact
//! expected version or "no stream" it compares the ids at the versions the
//! append would take; with "any" it consults a bounded cache of recent ids.
//! It then answers with success. Older servers report no position for such
//! a success, which we recognise as a retry (we look the stored events up
//! and report `already_stored: true`); newer servers report the original
//! position, indistinguishable from a fresh write, so `already_stored` may
//! be `false` for a retry that stored nothing. When the retry conflicts
//! instead (another expected version), we read the stream backwards, at most
//! [`IDEMPOTENCY_WINDOW`] events plus the size of the append, and report the
//! original outcome when all ids are there, or
//! [`AppendError::IdsAlreadyUsed`] when only some are. (Building the JSON
//! payload relies on `serde_json`'s `raw_value` feature.) Unlike the SQL
//! adapters, KurrentDB has no global index of event ids: ids reused in
//! *another* stream, or stored further back than that window, are not
//! detected, and a retry with "any" after the server's id cache forgot the
//! ids stores the events again.
//!
//! # Other notes
//!
//! System events (event type or stream starting with `$`) are not part of
//! our log: `$all` reads and subscriptions filter them out on the server
//! (event type) and again here (stream name). The client has no `close`;
//! [`EventStore::close`] flips a flag that every method checks and that ends
//! running subscriptions. The contract tests for this adapter (crate
//! `mdm-tests`, `tests/store_kurrentdb.rs`) run only when
//! `MDM_TEST_EVENTSTOREDB_URL` names a server, e.g.
//! `esdb://127.0.0.1:2113?tls=false`. Appends of more than 1 MiB need the
//! server's `MaxAppendSize` raised (its default is 1 MiB; bigger appends are
//! refused with [`AppendError::Invalid`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, ClientSettingsParseError, CurrentRevision, EventData,
    ReadAllOptions, ReadStreamOptions, RetryOptions, StreamPosition, StreamState, SubscribeToAllOptions,
    SubscriptionFilter,
};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::subscription::SUBSCRIPTION_PAGE;
use crate::{
    validate_append, AppendError, AppendOutcome, BoxError, Direction, EventStore, ExpectedVersion, Json, NewEvent,
    Position, ReadError, RecordedEvent, StoredIds, StreamStart, Subscription,
};

/// How long an append may take before it fails with `Unavailable`.
const APPEND_DEADLINE: Duration = Duration::from_secs(30);

/// How long one bounded read (a page of a stream or of `$all`) may take.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// How many of a stream's last events an append that met a conflict looks
/// through for its own ids (besides as many as it carries).
pub const IDEMPOTENCY_WINDOW: usize = 2_048;

/// How many events `head` reads per step while it walks back over events
/// that only the client-side system filter removes.
const HEAD_PAGE: usize = 64;

/// Why the store could not be opened. No variant prints the connection
/// string: it may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The connection string does not parse. The source, when present, is
    /// the URL syntax error only (never the string itself).
    #[error("invalid KurrentDB connection string (expected e.g. esdb://host:2113?tls=false or kurrentdb://…)")]
    Url(#[source] Option<BoxError>),
    /// The client could not be built from valid settings (TLS files, …).
    #[error("cannot create the KurrentDB client")]
    Client(#[source] BoxError),
    /// The server could not be reached, or refused to let us read `$all`.
    #[error("cannot connect to KurrentDB")]
    Connect(#[source] BoxError),
}

/// The KurrentDB/EventStoreDB event store. Clones share one client (one
/// gRPC connection) and one "closed" flag.
#[derive(Clone)]
pub struct KurrentEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// `true` once [`EventStore::close`] was called.
    closed: watch::Sender<bool>,
}

/// Shows no connection settings: they may hold credentials.
impl fmt::Debug for KurrentEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KurrentEventStore")
            .field("closed", &*self.inner.closed.borrow())
            .finish_non_exhaustive()
    }
}

impl KurrentEventStore {
    /// Connects to the server named by an `esdb://`, `esdb+discover://` or
    /// `kurrentdb://` connection string and checks that it answers a read
    /// of `$all` (so bad credentials fail here, not on the first request).
    pub async fn connect(url: &str) -> Result<KurrentEventStore, OpenError> {
        let settings: ClientSettings = url.parse().map_err(|e: ClientSettingsParseError| {
            // The parse error's own text repeats the connection string.
            OpenError::Url(e.error().map(|syntax| Box::new(*syntax) as BoxError))
        })?;
        let store = KurrentEventStore::with_settings(settings)?;
        store.head().await.map_err(|e| OpenError::Connect(Box::new(e)))?;
        Ok(store)
    }

    /// Builds the client without contacting the server (it connects lazily).
    fn with_settings(settings: ClientSettings) -> Result<KurrentEventStore, OpenError> {
        let client = Client::new(settings).map_err(|e| OpenError::Client(e.into()))?;
        Ok(KurrentEventStore {
            inner: Arc::new(Inner {
                client,
                closed: watch::channel(false).0,
            }),
        })
    }

    fn check_open(&self) -> Result<(), BoxError> {
        if *self.inner.closed.borrow() {
            Err(closed_error())
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl EventStore for KurrentEventStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, AppendError> {
        validate_append(stream, &events)?;
        self.check_open().map_err(AppendError::Unavailable)?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let last_id = *ids
            .last()
            .ok_or_else(|| AppendError::Invalid("an append needs at least one event".into()))?;
        let batch = events
            .iter()
            .enumerate()
            .map(|(i, e)| event_data(i, e))
            .collect::<Result<Vec<_>, _>>()?;
        let state = match expected {
            ExpectedVersion::Any => StreamState::Any,
            ExpectedVersion::NoStream => StreamState::NoStream,
            ExpectedVersion::Exact(v) => StreamState::StreamRevision(v),
        };
        let options = AppendToStreamOptions::default()
            .stream_state(state)
            .deadline(APPEND_DEADLINE);
        match self.inner.client.append_to_stream(stream, &options, batch).await {
            Ok(written) => {
                // `next_expected_version` is the stream's current revision:
                // the version of this append's last event.
                let last_version = written.next_expected_version;
                match known_position(written.position.commit) {
                    // The commit position of a write is the log position of
                    // its last event, which is that event's `$all` position.
                    Some(last_position) => Ok(AppendOutcome {
                        last_version,
                        last_position,
                        already_stored: false,
                    }),
                    // Older servers answer an idempotent retry with no
                    // position at all; a fresh write always has one.
                    None => {
                        let last_position = self.position_of(stream, last_version, last_id).await?;
                        Ok(AppendOutcome::retried(last_version, last_position))
                    }
                }
            }
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => match self.stored_ids(stream, &ids).await? {
                StoredIds::All {
                    last_version,
                    last_position,
                } => Ok(AppendOutcome::retried(last_version, last_position)),
                StoredIds::Some => Err(AppendError::IdsAlreadyUsed {
                    stream: stream.to_owned(),
                }),
                StoredIds::None => Err(AppendError::Conflict {
                    stream: stream.to_owned(),
                    expected,
                    actual: match current {
                        CurrentRevision::Current(v) => Some(v),
                        CurrentRevision::NoStream => None,
                    },
                }),
            },
            Err(e) => Err(append_err(e)),
        }
    }

    async fn read_stream(
        &self,
        stream: &str,
        start: StreamStart,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.check_open().map_err(ReadError::Unavailable)?;
        let max = max_count.min(crate::MAX_READ);
        if max == 0 {
            return Ok(Vec::new());
        }
        // `position(Start | End)` also sets the direction, so the direction
        // is set after it.
        let from = match (start, direction) {
            (StreamStart::Edge, Direction::Forwards) => StreamPosition::Start,
            (StreamStart::Edge, Direction::Backwards) => StreamPosition::End,
            (StreamStart::Version(v), _) => StreamPosition::Position(v),
        };
        let options = ReadStreamOptions::default().position(from);
        let options = match direction {
            Direction::Forwards => options.forwards(),
            Direction::Backwards => options.backwards(),
        }
        .max_count(max)
        .deadline(READ_DEADLINE);
        let mut read = match self.inner.client.read_stream(stream, &options).await {
            Ok(read) => read,
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let mut events = Vec::with_capacity(max.min(1_024));
        while let Some(event) = next_event(&mut read).await.map_err(read_err)? {
            events.push(decode(event)?);
        }
        Ok(events)
    }

    async fn read_all(&self, after: Position, max_count: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        self.check_open().map_err(ReadError::Unavailable)?;
        let max = max_count.min(crate::MAX_READ);
        let mut events = Vec::new();
        if max == 0 {
            return Ok(events);
        }
        // Where the next server read starts, as a raw log position. Events at
        // or before it were already looked at (or lie at/before `after`).
        let mut cursor = (after != Position::START).then(|| raw_position(after));
        loop {
            // One more than needed: the event at the cursor comes back too.
            let want = max - events.len() + 1;
            let options = ReadAllOptions::default()
                .position(cursor.map_or(StreamPosition::Start, StreamPosition::Position))
                .forwards()
                .filter(system_filter())
                .max_count(want)
                .deadline(READ_DEADLINE);
            let mut read = self.inner.client.read_all(&options).await.map_err(read_err)?;
            let mut returned = 0;
            while let Some(event) = next_event(&mut read).await.map_err(read_err)? {
                returned += 1;
                if cursor.is_some_and(|c| event.position <= c) {
                    continue;
                }
                cursor = Some(event.position);
                if is_system(&event) {
                    continue;
                }
                let event = decode(event)?;
                if event.position <= after {
                    continue;
                }
                events.push(event);
                if events.len() == max {
                    return Ok(events);
                }
            }
            // The server returns fewer events than asked only at the end of
            // the log. Otherwise some were dropped here (system streams with
            // ordinary event types): read on so that a short or empty page
            // still means "caught up".
            if returned < want {
                return Ok(events);
            }
        }
    }

    async fn head(&self) -> Result<Position, ReadError> {
        self.check_open().map_err(ReadError::Unavailable)?;
        let mut from = StreamPosition::End;
        loop {
            let options = ReadAllOptions::default()
                .position(from)
                .backwards()
                .filter(system_filter())
                .max_count(HEAD_PAGE)
                .deadline(READ_DEADLINE);
            let mut read = self.inner.client.read_all(&options).await.map_err(read_err)?;
            let mut returned = 0;
            while let Some(event) = next_event(&mut read).await.map_err(read_err)? {
                returned += 1;
                if !is_system(&event) {
                    // Lenient on purpose: the head only measures lag and marks
                    // a starting point, which the commit position does even
                    // for an event that `decode` would refuse.
                    return Ok(known_position(event.position.commit).unwrap_or(Position::START));
                }
                from = StreamPosition::Position(event.position);
            }
            if returned < HEAD_PAGE {
                return Ok(Position::START);
            }
        }
    }

    async fn subscribe_all(&self, after: Position) -> Result<Subscription, ReadError> {
        self.check_open().map_err(ReadError::Unavailable)?;
        let start = if after == Position::START {
            StreamPosition::Start
        } else {
            StreamPosition::Position(raw_position(after))
        };
        // With retries on, the client resubscribes by itself after a dropped
        // connection, from the last event it delivered; the position check
        // below removes that event if the server sends it again.
        let options = SubscribeToAllOptions::default()
            .position(start)
            .filter(system_filter())
            .retry_options(RetryOptions::default());
        let mut upstream = self.inner.client.subscribe_to_all(&options).await;
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_PAGE);
        // The task holds a clone of the store, which keeps the "closed" flag
        // (and the client) alive as long as the subscription runs.
        let store = self.clone();
        let reader = tokio::spawn(async move {
            let mut closed = store.inner.closed.subscribe();
            let mut last = after;
            loop {
                let next = tokio::select! {
                    next = upstream.next() => next,
                    () = wait_closed(&mut closed) => {
                        let _ = tx.send(Err(ReadError::Unavailable(closed_error()))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                };
                let resolved = match next {
                    Ok(resolved) => resolved,
                    Err(e) => {
                        let _ = tx.send(Err(read_err(e))).await;
                        return;
                    }
                };
                let Some(event) = resolved.event.or(resolved.link) else {
                    continue;
                };
                if is_system(&event) {
                    continue;
                }
                let event = match decode(event) {
                    Ok(event) => event,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if event.position <= last {
                    continue;
                }
                last = event.position;
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Subscription::from_channel(rx, reader))
    }

    async fn close(&self) {
        // The client has no close: later calls are refused here, running
        // subscriptions end, and the connection goes with the last clone.
        self.inner.closed.send_replace(true);
    }

    fn backend(&self) -> &'static str {
        "kurrentdb"
    }
}

impl KurrentEventStore {
    /// Which of `ids` the stream already holds, looking back from its end
    /// through at most `IDEMPOTENCY_WINDOW` events more than `ids` count.
    async fn stored_ids(&self, stream: &str, ids: &[Uuid]) -> Result<StoredIds, AppendError> {
        let wanted: HashSet<Uuid> = ids.iter().copied().collect();
        let options = ReadStreamOptions::default()
            .position(StreamPosition::End)
            .backwards()
            .max_count(IDEMPOTENCY_WINDOW + ids.len())
            .deadline(READ_DEADLINE);
        let mut read = match self.inner.client.read_stream(stream, &options).await {
            Ok(read) => read,
            Err(e) if is_missing(&e) => return Ok(StoredIds::None),
            Err(e) => return Err(append_err(e)),
        };
        let mut seen = HashSet::new();
        let mut last = None;
        while let Some(event) = next_event(&mut read).await.map_err(append_err)? {
            if !wanted.contains(&event.id) || !seen.insert(event.id) {
                continue;
            }
            if last.is_none() {
                // Reading backwards, the first match is the last one stored.
                let position = event_position(event.position.commit, event.position.prepare)
                    .map_err(|reason| AppendError::Internal(format!("stored event: {reason}").into()))?;
                last = Some((event.revision, position));
            }
            if seen.len() == wanted.len() {
                break;
            }
        }
        Ok(match last {
            None => StoredIds::None,
            Some((last_version, last_position)) if seen.len() == wanted.len() => StoredIds::All {
                last_version,
                last_position,
            },
            Some(_) => StoredIds::Some,
        })
    }

    /// The position of the event at `version`, which must be `id`.
    async fn position_of(&self, stream: &str, version: u64, id: Uuid) -> Result<Position, AppendError> {
        let options = ReadStreamOptions::default()
            .position(StreamPosition::Position(version))
            .backwards()
            .max_count(1)
            .deadline(READ_DEADLINE);
        let mut read = self
            .inner
            .client
            .read_stream(stream, &options)
            .await
            .map_err(append_err)?;
        match next_event(&mut read).await.map_err(append_err)? {
            Some(event) if event.id == id && event.revision == version => {
                event_position(event.position.commit, event.position.prepare)
                    .map_err(|reason| AppendError::Internal(format!("stored event: {reason}").into()))
            }
            _ => Err(AppendError::Internal(
                "the server reported an idempotent append, but its last event is not where it said".into(),
            )),
        }
    }
}

/// Resolves once the store is closed. (The guard `wait_for` returns must not
/// live across an await of the task: it is not `Send`.)
async fn wait_closed(closed: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which the store clone that every
    // subscription task holds rules out; it would mean "closed" anyway.
    let _ = closed.wait_for(|closed| *closed).await;
}

/// The client's form of one of our events: our id, JSON content type, our
/// data and metadata bytes unchanged.
fn event_data(index: usize, event: &NewEvent) -> Result<EventData, AppendError> {
    // `EventData::json` serializes its payload; a `RawValue` serializes as
    // the very bytes it borrows, so the stored data is byte-for-byte ours.
    let raw: &RawValue = serde_json::from_slice(event.data.as_bytes())
        .map_err(|e| AppendError::Invalid(format!("event {index}: data is not one JSON document: {e}")))?;
    let data = EventData::json(&event.event_type, &raw).map_err(|e| AppendError::Internal(Box::new(e)))?;
    Ok(data
        .id(event.id)
        .metadata(Bytes::copy_from_slice(event.metadata.as_bytes())))
}

/// The next event of a read; a stream that does not exist (or was deleted)
/// ends the read instead of failing it.
async fn next_event(read: &mut kurrentdb::ReadStream) -> Result<Option<kurrentdb::RecordedEvent>, kurrentdb::Error> {
    loop {
        match read.next().await {
            // Links are not resolved, so `event` is the record itself.
            Ok(Some(resolved)) => {
                if let Some(event) = resolved.event.or(resolved.link) {
                    return Ok(Some(event));
                }
            }
            Ok(None) => return Ok(None),
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Server-side filter of `$all`: no event type starting with `$`.
fn system_filter() -> SubscriptionFilter {
    SubscriptionFilter::on_event_type().exclude_system_events()
}

/// System events are not part of our log: their type or stream starts with `$`.
fn is_system(event: &kurrentdb::RecordedEvent) -> bool {
    is_system_name(event.stream_id(), &event.event_type)
}

fn is_system_name(stream: &str, event_type: &str) -> bool {
    stream.starts_with('$') || event_type.starts_with('$')
}

/// Where to start reading `$all` just at the event at `position` (see the
/// module documentation).
fn raw_position(position: Position) -> kurrentdb::Position {
    kurrentdb::Position {
        commit: position.0,
        prepare: position.0,
    }
}

/// A commit position as our position: `None` when the server did not report
/// one (the client turns "no position" into 0; the server's -1 is `u64::MAX`).
fn known_position(commit: u64) -> Option<Position> {
    (commit != 0 && commit != u64::MAX).then_some(Position(commit))
}

/// An event's position, or why it has none we can use.
fn event_position(commit: u64, prepare: u64) -> Result<Position, String> {
    let Some(position) = known_position(commit) else {
        return Err("the server did not report its log position".to_owned());
    };
    if commit != prepare {
        return Err(format!(
            "it belongs to a legacy explicit transaction (commit {commit}, prepare {prepare}), whose events \
             share one commit position"
        ));
    }
    Ok(position)
}

fn decode(event: kurrentdb::RecordedEvent) -> Result<RecordedEvent, ReadError> {
    let position =
        event_position(event.position.commit, event.position.prepare).map_err(|reason| ReadError::Corrupt {
            position: event.position.commit,
            reason,
        })?;
    let corrupt = |reason: String| ReadError::Corrupt {
        position: position.0,
        reason,
    };
    let recorded_at = recorded_at(&event.metadata, event.created);
    let stream = event.stream_id().to_owned();
    // Events written with the JSON content type (all of ours) are taken as
    // they are, like the SQL adapters take their own rows; others are checked.
    let data = payload(event.data, event.is_json).map_err(|e| corrupt(format!("its data is not JSON: {e}")))?;
    let metadata = if event.custom_metadata.is_empty() {
        Json::empty_object()
    } else {
        payload(event.custom_metadata, event.is_json).map_err(|e| corrupt(format!("its metadata is not JSON: {e}")))?
    };
    Ok(RecordedEvent {
        id: event.id,
        stream,
        version: event.revision,
        position,
        event_type: event.event_type,
        data,
        metadata,
        recorded_at,
    })
}

fn payload(bytes: Bytes, json_content_type: bool) -> Result<Json, serde_json::Error> {
    if json_content_type && !bytes.is_empty() {
        Ok(Json::trusted(bytes))
    } else {
        Json::parse(bytes)
    }
}

/// When the server stored the event. The client rounds `created` down to the
/// second; the raw `created` metadata has .NET ticks (100 ns) since the Unix
/// epoch.
fn recorded_at(metadata: &HashMap<String, String>, fallback: DateTime<Utc>) -> DateTime<Utc> {
    metadata
        .get("created")
        .and_then(|ticks| ticks.parse::<i64>().ok())
        .and_then(|ticks| {
            let nanos = u32::try_from(ticks.rem_euclid(10_000_000) * 100).ok()?;
            DateTime::from_timestamp(ticks.div_euclid(10_000_000), nanos)
        })
        .unwrap_or(fallback)
}

fn closed_error() -> BoxError {
    "the KurrentDB event store is closed".into()
}

/// A stream that does not exist or was deleted: reads see it as empty.
fn is_missing(e: &kurrentdb::Error) -> bool {
    matches!(
        e,
        kurrentdb::Error::ResourceNotFound | kurrentdb::Error::ResourceDeleted
    )
}

/// Errors after which the same call may work later.
fn is_transient(e: &kurrentdb::Error) -> bool {
    match e {
        kurrentdb::Error::ConnectionClosed
        | kurrentdb::Error::GrpcConnectionError(_)
        | kurrentdb::Error::DeadlineExceeded
        | kurrentdb::Error::NotLeaderException(_) => true,
        // The client folds the gRPC codes Unavailable, Unknown, Internal and
        // DataLoss into this variant and keeps only the status text (tonic's
        // "status: <Code>, message: …"). It treats all of them as "node gone"
        // and reselects a node; Unknown is also what tonic reports for
        // transport failures it cannot classify. Internal and DataLoss are
        // server faults, not unavailability.
        kurrentdb::Error::ServerError(status) => {
            !(status.starts_with("status: Internal") || status.starts_with("status: DataLoss"))
        }
        // Cancelled (1), DeadlineExceeded (4), Aborted (10), Unavailable (14).
        kurrentdb::Error::Grpc { code, .. } => matches!(i32::from(*code), 1 | 4 | 10 | 14),
        _ => false,
    }
}

fn append_err(e: kurrentdb::Error) -> AppendError {
    if is_transient(&e) {
        return AppendError::Unavailable(Box::new(e));
    }
    match &e {
        // InvalidArgument: the server refuses the append itself, e.g. above
        // its maximum append size.
        kurrentdb::Error::Grpc { code, message } if i32::from(*code) == 3 => {
            AppendError::Invalid(format!("refused by KurrentDB: {message}"))
        }
        _ => AppendError::Internal(Box::new(e)),
    }
}

fn read_err(e: kurrentdb::Error) -> ReadError {
    if is_transient(&e) {
        ReadError::Unavailable(Box::new(e))
    } else {
        ReadError::Internal(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message of an error and its sources.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(" / ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    #[test]
    fn positions_map_both_ways_and_refuse_what_is_not_strictly_ordered() {
        assert_eq!(event_position(4_242, 4_242), Ok(Position(4_242)));
        assert_eq!(
            raw_position(Position(4_242)),
            kurrentdb::Position {
                commit: 4_242,
                prepare: 4_242
            }
        );
        assert!(event_position(0, 0).is_err(), "no position");
        assert!(event_position(u64::MAX, u64::MAX).is_err(), "the server's -1");
        assert!(event_position(5_000, 4_000)
            .unwrap_err()
            .contains("explicit transaction"));
        assert_eq!(known_position(0), None);
        assert_eq!(known_position(17), Some(Position(17)));
    }

    #[test]
    fn system_events_are_told_by_stream_or_type() {
        assert!(is_system_name("$stats-127.0.0.1:2113", "$statsCollected"));
        assert!(is_system_name("$settings", "update-default-acl"));
        assert!(is_system_name("customer-1", "$>"));
        assert!(!is_system_name("customer-1", "CustomerRegistered"));
    }

    #[test]
    fn recorded_at_keeps_sub_second_precision() {
        let fallback = DateTime::<Utc>::UNIX_EPOCH;
        // 2024-01-02T03:04:05.1234567Z in ticks since the Unix epoch.
        let ticks = 1_704_164_645_i64 * 10_000_000 + 1_234_567;
        let metadata = HashMap::from([("created".to_owned(), ticks.to_string())]);
        let at = recorded_at(&metadata, fallback);
        assert_eq!(at.timestamp(), 1_704_164_645);
        assert_eq!(at.timestamp_subsec_nanos(), 123_456_700);
        assert_eq!(recorded_at(&HashMap::new(), fallback), fallback);
        let garbage = HashMap::from([("created".to_owned(), "soon".to_owned())]);
        assert_eq!(recorded_at(&garbage, fallback), fallback);
    }

    #[test]
    fn payloads_are_trusted_only_with_the_json_content_type() {
        assert_eq!(
            payload(Bytes::from_static(b"{\"a\":1}"), true)
                .expect("json")
                .as_bytes(),
            b"{\"a\":1}"
        );
        assert!(payload(Bytes::from_static(b"{\"a\":1}"), false).is_ok());
        assert!(payload(Bytes::from_static(b"\x00\x01"), false).is_err());
        assert!(payload(Bytes::new(), true).is_err(), "empty data is not JSON");
    }

    #[test]
    fn event_data_keeps_our_bytes() {
        let event = NewEvent::new(
            Uuid::from_u128(7),
            "Tested",
            Json::parse(&b"{\"b\":2.50,\"a\":[1, 2]}"[..]).expect("json"),
            Json::empty_object(),
        );
        assert!(event_data(0, &event).is_ok());
        let raw: &RawValue = serde_json::from_slice(event.data.as_bytes()).expect("raw");
        assert_eq!(serde_json::to_vec(&raw).expect("serializes"), event.data.as_bytes());
    }

    #[test]
    fn errors_are_sorted_into_what_a_caller_can_do() {
        let unavailable = "status: Unavailable, message: \"error trying to connect\", details: [], metadata: {}";
        let internal = "status: Internal, message: \"boom\", details: [], metadata: {}";
        assert!(is_transient(&kurrentdb::Error::ConnectionClosed));
        assert!(is_transient(&kurrentdb::Error::DeadlineExceeded));
        assert!(is_transient(&kurrentdb::Error::ServerError(unavailable.to_owned())));
        assert!(!is_transient(&kurrentdb::Error::ServerError(internal.to_owned())));
        assert!(!is_transient(&kurrentdb::Error::AccessDenied));
        assert!(matches!(
            append_err(kurrentdb::Error::ConnectionClosed),
            AppendError::Unavailable(_)
        ));
        assert!(matches!(
            read_err(kurrentdb::Error::AccessDenied),
            ReadError::Internal(_)
        ));
        assert!(is_missing(&kurrentdb::Error::ResourceNotFound));
    }

    #[tokio::test]
    async fn a_bad_connection_string_is_refused_without_echoing_it() {
        let err = KurrentEventStore::connect("esdb://admin:s3cret@host:notaport?tls=false")
            .await
            .expect_err("refused");
        assert!(matches!(err, OpenError::Url(_)));
        assert!(!chain(&err).contains("s3cret"), "{}", chain(&err));
        let err = KurrentEventStore::connect("postgres://admin:s3cret@host/db")
            .await
            .expect_err("refused");
        assert!(!chain(&err).contains("s3cret"), "{}", chain(&err));
    }

    #[tokio::test]
    async fn debug_shows_no_settings_and_close_refuses_later_calls() {
        let settings: ClientSettings = "esdb://admin:s3cret@127.0.0.1:1?tls=false".parse().expect("parses");
        let store = KurrentEventStore::with_settings(settings).expect("client");
        let shown = format!("{store:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("admin"), "{shown}");
        store.close().await;
        assert!(matches!(store.head().await, Err(ReadError::Unavailable(_))));
        assert!(matches!(
            store.read_all(Position::START, 10).await,
            Err(ReadError::Unavailable(_))
        ));
        assert!(matches!(
            store.subscribe_all(Position::START).await,
            Err(ReadError::Unavailable(_))
        ));
        let event = NewEvent::new(Uuid::from_u128(1), "T", Json::empty_object(), Json::empty_object());
        assert!(matches!(
            store.append("s", ExpectedVersion::Any, vec![event]).await,
            Err(AppendError::Unavailable(_))
        ));
        assert_eq!(store.backend(), "kurrentdb");
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_connect_without_echoing_the_url() {
        let started = std::time::Instant::now();
        let err = KurrentEventStore::connect("esdb://admin:s3cret@127.0.0.1:1?tls=false")
            .await
            .expect_err("nothing listens on port 1");
        assert!(matches!(err, OpenError::Connect(_)), "{err:?}");
        assert!(!chain(&err).contains("s3cret"), "{}", chain(&err));
        eprintln!("{} after {:?}", chain(&err), started.elapsed());
    }
}
