//! The resolver: the single writer of decisions.
//!
//! It follows the global log, opens each source-record event (the only place
//! besides projections that sees plaintext), lets the pure
//! [`Engine`](mdm_domain::resolution::engine::Engine) decide, and appends the
//! decisions of a whole batch of source events to the `resolution` stream in
//! one append with the stream's exact expected version. So:
//! - a batch's decisions are stored all or not at all, in decision order;
//! - a second resolver (another process that got past the lease) fails its
//!   first append with a conflict instead of writing beside this one;
//! - restart is exact: the decisions are replayed, the last one names the
//!   last source event decided, and everything after it is decided again,
//!   with the same deterministic event ids for what a lost reply had stored.
//!
//! Steward commands are sent to the same task, so they are checked against
//! and ordered with automatic decisions without any other lock.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use mdm_domain::matching::features::{FeatureSettings, MatchFeatures};
use mdm_domain::metadata::{deterministic_event_id, Actor, EventMetadata};
use mdm_domain::resolution::engine::{
    CommandError, CommandRequest, CustomerView, Engine, Ids, ReplayError, StewardCommand,
};
use mdm_domain::resolution::events::{
    Cause, Decided, DecidedBy, Decision, SealedValue, RESOLUTION_STREAM, SCHEMA_VERSION,
};
use mdm_domain::source_record::{CAPTURED, CHANGED, RETRACTED};
use mdm_store::keys::{KeyStore, KeyStoreError, SubjectKey};
use mdm_store::{
    AppendError, Direction, EventStore, ExpectedVersion, Json, NewEvent, Position, ReadError, RecordedEvent,
    StreamStart, MAX_READ,
};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::opened::{OpenedEvent, SourceRecordOpener};

/// A steward command the resolver applied: its decisions, and each
/// customer they named at the version they left it at, read in the
/// resolver's task right after the append (a read afterwards through the
/// handle could see a later command's version: a client sending that back
/// as `If-Match` would overwrite a change it never saw).
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub decisions: Vec<Decided>,
    pub versions: std::collections::HashMap<Uuid, u64>,
}

/// Why the resolver stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("reading the log: {0}")]
    Read(#[from] ReadError),
    #[error("appending decisions: {0}")]
    Append(#[from] AppendError),
    #[error("key store: {0}")]
    Keys(#[from] KeyStoreError),
    #[error("replaying decisions: {0}")]
    Replay(#[from] ReplayError),
    #[error("decision event at position {0} cannot be decoded")]
    Corrupt(u64),
    #[error("the resolver has stopped")]
    Stopped,
    #[error("another resolver appended these decisions first: this one stops")]
    Fenced,
}

/// Settings of a resolver run.
#[derive(Clone, Debug)]
pub struct ResolverSettings {
    pub features: FeatureSettings,
    /// Source events decided per append.
    pub batch: usize,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self {
            features: FeatureSettings::default(),
            batch: 4_096,
        }
    }
}

/// Random ids for new tokens, review items and households.
#[derive(Debug, Default)]
pub struct RandomIds;

impl Ids for RandomIds {
    fn token(&mut self) -> Uuid {
        Uuid::new_v4()
    }
    fn review_id(&mut self) -> Uuid {
        Uuid::now_v7()
    }
    fn household_id(&mut self) -> Uuid {
        Uuid::new_v4()
    }
}

/// The resolver's state and its place in the log.
#[derive(Debug)]
pub struct Resolver {
    store: Arc<dyn EventStore>,
    /// The key store: erasures destroy keys in it.
    keys: Arc<dyn KeyStore>,
    opener: SourceRecordOpener,
    engine: Engine,
    settings: ResolverSettings,
    /// The last source event decided.
    checkpoint: Position,
    /// The version of the `resolution` stream (`None`: no decision yet).
    version: Option<u64>,
    ids: Box<dyn IdsSend>,
    processed: watch::Sender<Position>,
    timings: ResolverTimings,
    counts: Arc<DecisionCounts>,
}

/// Decisions this resolver appended since it started, by event type (for
/// metrics: decisions per band).
#[derive(Debug, Default)]
pub struct DecisionCounts([std::sync::atomic::AtomicU64; Decision::EVENT_TYPES.len()]);

impl DecisionCounts {
    fn add(&self, types: &[usize]) {
        for t in types {
            self.0[*t].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Each decision event type with its count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Decision::EVENT_TYPES
            .iter()
            .zip(&self.0)
            .map(|(t, c)| (*t, c.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }
}

/// Where the resolver's time goes (cumulative since start), for the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResolverTimings {
    /// Reading pages of the log.
    pub read: std::time::Duration,
    /// Opening source events (keys, decrypt, decompress, parse).
    pub open: std::time::Duration,
    /// Building features and updating the blocking index.
    pub features: std::time::Duration,
    /// Scoring and deciding (the engine).
    pub decide: std::time::Duration,
    /// Encoding and appending decisions.
    pub append: std::time::Duration,
}

/// `Ids` that can move to the resolver's task.
pub trait IdsSend: Ids + Send + std::fmt::Debug {}
impl<T: Ids + Send + std::fmt::Debug> IdsSend for T {}

/// How far replay got, for logs and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub decisions: u64,
    pub source_events: u64,
    pub checkpoint: Position,
}

/// Source events of a page, opened and turned into features: `Some(Some)`
/// a version to resolve, `Some(None)` a retraction or erasure, `None`
/// nothing the resolver reads.
#[derive(Debug, Default)]
struct Prepared {
    events: Vec<(RecordedEvent, Option<Option<MatchFeatures>>)>,
    open: std::time::Duration,
    features_time: std::time::Duration,
}

/// Opens the source events of `page` after `after` and builds their
/// features (on a blocking thread: it is CPU work).
async fn prepare(
    opener: &SourceRecordOpener,
    settings: &FeatureSettings,
    page: &[RecordedEvent],
    after: Position,
) -> Result<Prepared, ResolverError> {
    let sources: Vec<RecordedEvent> = page
        .iter()
        .filter(|e| e.position > after && is_source_event(e))
        .cloned()
        .collect();
    if sources.is_empty() {
        return Ok(Prepared::default());
    }
    let clock = std::time::Instant::now();
    let opened = opener.open_all(&sources).await?;
    let open = clock.elapsed();
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let clock = std::time::Instant::now();
        let events = sources
            .into_iter()
            .zip(opened)
            .map(|(e, o)| {
                let f = match o {
                    OpenedEvent::Version { content, .. } => {
                        Some(Some(MatchFeatures::from_attributes(&content.attributes, &settings)))
                    }
                    OpenedEvent::Retracted { .. } | OpenedEvent::Erased { .. } => Some(None),
                    OpenedEvent::Override { .. } | OpenedEvent::Other => None,
                };
                (e, f)
            })
            .collect();
        Prepared {
            events,
            open,
            features_time: clock.elapsed(),
        }
    })
    .await
    .map_err(|_| ResolverError::Stopped)
}

/// Destroys the keys of `subjects` (those that exist and are active);
/// returns how many were active. Every opener of the process forgets its
/// cached keys.
async fn destroy_keys(keys: Arc<dyn KeyStore>, subjects: &[String]) -> Result<usize, ResolverError> {
    let found = keys.find(subjects).await?;
    let ids: Vec<Uuid> = found
        .into_iter()
        .flatten()
        .filter_map(|k| match k {
            SubjectKey::Active { key_id, .. } => Some(key_id),
            SubjectKey::Destroyed { .. } => None,
        })
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let destroyed = keys.destroy(&ids).await?;
    crate::opened::keys_destroyed();
    Ok(destroyed)
}

/// The key-store subjects an erasure destroys: its records' streams and its
/// overrides' subjects.
fn erased_subjects(d: &Decision) -> Vec<String> {
    match d {
        Decision::CustomerErased { records, overrides, .. } => records
            .iter()
            .cloned()
            .chain(overrides.iter().map(|o| SealedValue::subject(*o)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The events of a batch of decisions.
fn encode(decisions: &[Decided]) -> Result<Vec<NewEvent>, ResolverError> {
    let now = Utc::now();
    let mut events = Vec::with_capacity(decisions.len());
    for d in decisions {
        let (actor, causation) = match (&d.by, &d.cause) {
            (DecidedBy::Resolver, Cause::Source { event_id, .. }) => (Actor::Resolver, Some(*event_id)),
            (DecidedBy::Steward(id), Cause::Command { command_id }) => (Actor::Client(id.clone()), Some(*command_id)),
            (DecidedBy::Resolver, Cause::Command { command_id }) => (Actor::Resolver, Some(*command_id)),
            (DecidedBy::Steward(id), Cause::Source { event_id, .. }) => (Actor::Client(id.clone()), Some(*event_id)),
            (DecidedBy::Compliance(id), Cause::Command { command_id }) => {
                (Actor::Client(id.clone()), Some(*command_id))
            }
            (DecidedBy::Compliance(id), Cause::Source { event_id, .. }) => (Actor::Client(id.clone()), Some(*event_id)),
        };
        let metadata = EventMetadata {
            occurred_at: now,
            actor,
            correlation_id: causation.unwrap_or_default(),
            causation_id: causation,
            schema_version: SCHEMA_VERSION,
            key_id: None,
        };
        let id = deterministic_event_id("decision", &[&d.seq.to_be_bytes()]);
        let data = Json::encode(d).map_err(|_| ResolverError::Corrupt(0))?;
        let metadata = Json::encode(&metadata).map_err(|_| ResolverError::Corrupt(0))?;
        events.push(NewEvent::new(id, d.decision.event_type(), data, metadata));
    }
    Ok(events)
}

/// Appends a batch to the `resolution` stream at exactly `version`;
/// returns the stream's new version.
async fn append_events(
    store: &dyn EventStore,
    version: Option<u64>,
    events: Vec<NewEvent>,
    counts: &DecisionCounts,
) -> Result<u64, ResolverError> {
    let types: Vec<usize> = events
        .iter()
        .filter_map(|e| Decision::EVENT_TYPES.iter().position(|t| *t == e.event_type))
        .collect();
    let expected = match version {
        None => ExpectedVersion::NoStream,
        Some(v) => ExpectedVersion::Exact(v),
    };
    let outcome = store.append(RESOLUTION_STREAM, expected, events).await?;
    if outcome.already_stored {
        // These decision numbers were stored by someone else (the same ids,
        // appended before): another resolver got there first. A resolver
        // never retries an append, so it is not its own earlier try.
        return Err(ResolverError::Fenced);
    }
    counts.add(&types);
    Ok(outcome.last_version)
}

fn is_source_event(e: &RecordedEvent) -> bool {
    matches!(e.event_type.as_str(), CAPTURED | CHANGED | RETRACTED)
}

impl Resolver {
    /// Rebuilds the resolver from the log: every decision, then the features
    /// of every source record decided so far.
    pub async fn start(
        store: Arc<dyn EventStore>,
        keys: Arc<dyn KeyStore>,
        engine: Engine,
        settings: ResolverSettings,
        ids: Box<dyn IdsSend>,
    ) -> Result<(Resolver, ReplayReport), ResolverError> {
        let (processed, _) = watch::channel(Position::START);
        let mut resolver = Resolver {
            store,
            opener: SourceRecordOpener::new(keys.clone(), 200_000),
            keys,
            engine,
            settings,
            checkpoint: Position::START,
            version: None,
            ids,
            processed,
            timings: ResolverTimings::default(),
            counts: Arc::default(),
        };
        let report = resolver.replay().await?;
        Ok((resolver, report))
    }

    async fn replay(&mut self) -> Result<ReplayReport, ResolverError> {
        let mut report = ReplayReport::default();
        let mut next = 0u64;
        let mut erased: Vec<String> = Vec::new();
        loop {
            let page = self
                .store
                .read_stream(
                    RESOLUTION_STREAM,
                    StreamStart::Version(next),
                    Direction::Forwards,
                    10_000,
                )
                .await?;
            let Some(last) = page.last() else { break };
            next = last.version + 1;
            self.version = Some(last.version);
            for e in &page {
                let d: Decided = e.data.decode().map_err(|_| ResolverError::Corrupt(e.position.0))?;
                if let Cause::Source { position, .. } = &d.cause {
                    self.checkpoint = self.checkpoint.max(Position(*position));
                }
                self.engine.apply(&d)?;
                erased.extend(erased_subjects(&d.decision));
                report.decisions += 1;
            }
        }
        // An erasure whose keys a crash left alive is completed now, before
        // anything reads the log (idempotent: destroyed keys stay destroyed).
        if !erased.is_empty() {
            let destroyed = destroy_keys(self.keys.clone(), &erased).await?;
            if destroyed > 0 {
                tracing::warn!(
                    keys = destroyed,
                    "completed an interrupted erasure: its keys are destroyed now"
                );
            }
        }
        // The features of every record decided so far, latest version first
        // to last (log order).
        let mut after = Position::START;
        'pages: while after < self.checkpoint {
            let page = self.store.read_all(after, MAX_READ.min(20_000)).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            let decided: Vec<RecordedEvent> = page.into_iter().filter(|e| e.position <= self.checkpoint).collect();
            let prepared = prepare(&self.opener, &self.settings.features, &decided, Position::START).await?;
            for (e, features) in prepared.events {
                if let Some(f) = features {
                    self.engine.observe_at(&e.stream, e.position.0, f);
                }
                report.source_events += 1;
            }
            if after >= self.checkpoint {
                break 'pages;
            }
        }
        self.engine.finish_replay();
        report.checkpoint = self.checkpoint;
        self.processed.send_replace(self.checkpoint);
        Ok(report)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn checkpoint(&self) -> Position {
        self.checkpoint
    }

    /// Where the time went since start.
    pub fn timings(&self) -> ResolverTimings {
        self.timings
    }

    /// Decides a page of log events (those after the checkpoint) and
    /// appends the decisions. Returns how many source events it decided.
    pub async fn decide(&mut self, page: &[RecordedEvent]) -> Result<usize, ResolverError> {
        let prepared = prepare(&self.opener, &self.settings.features, page, self.checkpoint).await?;
        self.decide_prepared(prepared, page.last().map(|e| e.position)).await
    }

    /// Decides source events already opened and turned into features.
    async fn decide_prepared(
        &mut self,
        prepared: Prepared,
        last_position: Option<Position>,
    ) -> Result<usize, ResolverError> {
        let Some((decisions, count, last_source)) = self.decide_engine(prepared) else {
            return Ok(0);
        };
        let clock = std::time::Instant::now();
        self.append(&decisions).await?;
        self.timings.append += clock.elapsed();
        if let Some(p) = last_position {
            self.checkpoint = self.checkpoint.max(p.min(last_source));
        }
        self.processed.send_replace(self.checkpoint);
        Ok(count)
    }

    /// The engine's part: observe and resolve each prepared event. Returns
    /// the decisions, the number of source events and the last one's
    /// position (`None` when there were none).
    fn decide_engine(&mut self, prepared: Prepared) -> Option<(Vec<Decided>, usize, Position)> {
        self.timings.open += prepared.open;
        self.timings.features += prepared.features_time;
        let count = prepared.events.len();
        let last_source = prepared.events.last().map(|(e, _)| e.position)?;
        let mut decisions: Vec<Decided> = Vec::new();
        for (e, features) in prepared.events {
            let clock = std::time::Instant::now();
            let version = matches!(features, Some(Some(_)));
            match features {
                Some(f) => self.engine.observe(&e.stream, f),
                None => continue,
            }
            self.timings.features += clock.elapsed();
            if version {
                let clock = std::time::Instant::now();
                let cause = Cause::Source {
                    stream: e.stream.clone(),
                    position: e.position.0,
                    event_id: e.id,
                };
                decisions.extend(self.engine.resolve(&e.stream, cause, self.ids.as_mut()));
                self.timings.decide += clock.elapsed();
            }
        }
        Some((decisions, count, last_source))
    }

    async fn append(&mut self, decisions: &[Decided]) -> Result<(), ResolverError> {
        if decisions.is_empty() {
            return Ok(());
        }
        let events = encode(decisions)?;
        self.version = Some(append_events(self.store.as_ref(), self.version, events, &self.counts).await?);
        Ok(())
    }

    /// Reads the log from the checkpoint and decides everything there is
    /// now. Returns the number of source events decided.
    pub async fn catch_up(&mut self) -> Result<u64, ResolverError> {
        // A pipeline over the two cores: the next page is read, opened and
        // turned into features on another task, and the previous page's
        // decisions are encoded and appended on a third, while the engine
        // decides this one (the engine itself is one sequential fold).
        // Appends stay in order: each waits for the one before, whose
        // version it expects.
        let mut total = 0u64;
        let mut next = self.spawn_prepare(self.checkpoint);
        let mut inflight: Option<(tokio::task::JoinHandle<Result<u64, ResolverError>>, Position)> = None;
        loop {
            let (page_last, prepared, read) = next.await.map_err(|_| ResolverError::Stopped)??;
            self.timings.read += read;
            let Some(last) = page_last else {
                self.finish_append(inflight.take()).await?;
                return Ok(total);
            };
            next = self.spawn_prepare(last);
            let decided = self.decide_engine(prepared);
            let clock = std::time::Instant::now();
            self.finish_append(inflight.take()).await?;
            self.timings.append += clock.elapsed();
            if let Some((decisions, count, last_source)) = decided {
                total += count as u64;
                let checkpoint = self.checkpoint.max(last.min(last_source));
                if !decisions.is_empty() {
                    let store = self.store.clone();
                    let version = self.version;
                    let n = decisions.len() as u64;
                    let counts = self.counts.clone();
                    inflight = Some((
                        tokio::spawn(async move {
                            let events = encode(&decisions)?;
                            append_events(store.as_ref(), version, events, &counts).await
                        }),
                        checkpoint,
                    ));
                    // The version this append will leave (checked when it ends).
                    self.version = Some(version.map_or(n - 1, |v| v + n));
                }
            }
            // Pages with no source events still move the reader on.
            self.checkpoint = self.checkpoint.max(last);
        }
    }

    /// Waits for an append started by `catch_up` and publishes its progress.
    async fn finish_append(
        &mut self,
        inflight: Option<(tokio::task::JoinHandle<Result<u64, ResolverError>>, Position)>,
    ) -> Result<(), ResolverError> {
        if let Some((task, checkpoint)) = inflight {
            let last_version = task.await.map_err(|_| ResolverError::Stopped)??;
            if Some(last_version) != self.version {
                return Err(ResolverError::Fenced);
            }
            self.processed.send_replace(checkpoint);
        }
        Ok(())
    }

    /// Reads the page after `after` and prepares it, on a task of its own.
    #[allow(clippy::type_complexity)]
    fn spawn_prepare(
        &self,
        after: Position,
    ) -> tokio::task::JoinHandle<Result<(Option<Position>, Prepared, std::time::Duration), ResolverError>> {
        let store = self.store.clone();
        let opener = self.opener.clone();
        let features = self.settings.features.clone();
        let batch = self.settings.batch;
        tokio::spawn(async move {
            let clock = std::time::Instant::now();
            let page = store.read_all(after, batch).await?;
            let read = clock.elapsed();
            let last = page.last().map(|e| e.position);
            let prepared = prepare(&opener, &features, &page, after).await?;
            Ok((last, prepared, read))
        })
    }

    /// Applies a steward command and appends its decisions. An erasure's
    /// keys are destroyed right after its decision is durable (a crash in
    /// between is completed by the next replay).
    pub async fn command(
        &mut self,
        request: &CommandRequest,
    ) -> Result<Result<Vec<Decided>, CommandError>, ResolverError> {
        match self.engine.command(request, self.ids.as_mut()) {
            Ok(decisions) => {
                self.append(&decisions).await?;
                let subjects: Vec<String> = decisions.iter().flat_map(|d| erased_subjects(&d.decision)).collect();
                if !subjects.is_empty() {
                    destroy_keys(self.keys.clone(), &subjects).await?;
                }
                Ok(Ok(decisions))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Runs until the handle is dropped: follows the log and serves
    /// commands. Returns the handle's channel end for the caller to keep.
    pub fn spawn(self) -> (ResolverHandle, tokio::task::JoinHandle<Result<(), ResolverError>>) {
        let (tx, rx) = mpsc::channel(64);
        let processed = self.processed.subscribe();
        let handle = ResolverHandle {
            requests: tx,
            processed,
            counts: self.counts.clone(),
        };
        let task = tokio::spawn(self.run(rx));
        (handle, task)
    }

    /// Expires the overrides whose time has come: each becomes an
    /// `OverrideRemoved` decision (by the resolver), so the golden record,
    /// the feed and a replay all see the expiry at one log position.
    async fn expire_overrides(&mut self) -> Result<(), ResolverError> {
        for override_id in self.engine.due_overrides(chrono::Utc::now()) {
            let request = CommandRequest {
                command_id: Uuid::now_v7(),
                steward: String::new(),
                reason: "the override expired".into(),
                expected: Vec::new(),
                command: StewardCommand::ExpireOverride { override_id },
            };
            // Refused only if it is no longer in force: nothing to do.
            let _ = self.command(&request).await?;
        }
        Ok(())
    }

    async fn run(mut self, mut requests: mpsc::Receiver<Request>) -> Result<(), ResolverError> {
        let mut subscription = self.store.subscribe_all(self.checkpoint).await?;
        let mut expiry = tokio::time::interval(OVERRIDE_EXPIRY_CHECK);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = expiry.tick() => self.expire_overrides().await?,
                request = requests.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    self.serve(request).await?;
                }
                event = subscription.next() => {
                    let Some(event) = event else { return Err(ResolverError::Stopped) };
                    let mut page = vec![event?];
                    while page.len() < self.settings.batch {
                        match subscription.next().now_or_never() {
                            Some(Some(e)) => page.push(e?),
                            _ => break,
                        }
                    }
                    let last = page.last().map(|e| e.position);
                    self.decide(&page).await?;
                    if let Some(p) = last {
                        self.checkpoint = self.checkpoint.max(p);
                        self.processed.send_replace(self.checkpoint);
                    }
                }
            }
        }
    }

    async fn serve(&mut self, request: Request) -> Result<(), ResolverError> {
        match request {
            Request::TokenOf { stream, reply } => {
                let _ = reply.send(self.engine.token_of(&stream));
            }
            Request::Customer { token, reply } => {
                let _ = reply.send(self.engine.customer(token));
            }
            Request::Command { request, reply } => {
                let result = self.command(&request).await?.map(|decisions| {
                    let versions = decisions
                        .iter()
                        .flat_map(|d| d.decision.versioned_tokens())
                        .filter_map(|t| self.engine.customer(t).map(|c| (t, c.version)))
                        .collect();
                    Applied { decisions, versions }
                });
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}

/// How often the running resolver looks for overrides that expired.
const OVERRIDE_EXPIRY_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum Request {
    TokenOf {
        stream: String,
        reply: oneshot::Sender<Option<Uuid>>,
    },
    Customer {
        token: Uuid,
        reply: oneshot::Sender<Option<CustomerView>>,
    },
    Command {
        request: Box<CommandRequest>,
        reply: oneshot::Sender<Result<Applied, CommandError>>,
    },
}

/// A handle on a running resolver: ask it for tokens, wait for it to decide
/// a record, send it steward commands.
#[derive(Clone, Debug)]
pub struct ResolverHandle {
    requests: mpsc::Sender<Request>,
    processed: watch::Receiver<Position>,
    counts: Arc<DecisionCounts>,
}

impl ResolverHandle {
    /// Decisions appended since this resolver started, by type.
    pub fn decision_counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.snapshot()
    }

    /// The last source position the resolver has decided.
    pub fn processed(&self) -> Position {
        *self.processed.borrow()
    }

    /// Waits until the resolver has decided everything up to `position`,
    /// at most `timeout`. `false` on timeout.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        let mut rx = self.processed.clone();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The customer a source record belongs to now.
    pub async fn token_of(&self, stream: &str) -> Result<Option<Uuid>, ResolverError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::TokenOf {
                stream: stream.to_owned(),
                reply,
            })
            .await
            .map_err(|_| ResolverError::Stopped)?;
        rx.await.map_err(|_| ResolverError::Stopped)
    }

    /// A customer as the resolver sees it (records, version, redirect).
    pub async fn customer(&self, token: Uuid) -> Result<Option<CustomerView>, ResolverError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Customer { token, reply })
            .await
            .map_err(|_| ResolverError::Stopped)?;
        rx.await.map_err(|_| ResolverError::Stopped)
    }

    /// Runs a steward command; when applied, answers its decisions and the
    /// versions they left the named customers at.
    pub async fn command(&self, request: CommandRequest) -> Result<Result<Applied, CommandError>, ResolverError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Command {
                request: Box::new(request),
                reply,
            })
            .await
            .map_err(|_| ResolverError::Stopped)?;
        rx.await.map_err(|_| ResolverError::Stopped)
    }
}
