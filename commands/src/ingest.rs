//! Ingestion: turns records read from any input into source-record events,
//! sealed per subject.
//!
//! For a batch of records of one system, [`Ingestor::ingest`]:
//! 1. maps each record with the system's definition (a record that does not
//!    map is rejected with the field at fault; the rest of the batch goes on);
//! 2. names its stream with a keyed pseudonym of (system, source id);
//! 3. fetches or creates the record's data key in the key store, in one call
//!    for the whole batch (keys are durable before any event refers to them);
//! 4. reads the last event of every stream that already has a key, in one
//!    call, opens it and decides (pure, [`mdm_domain::source_record::decide`])
//!    whether the record is new, changed, unchanged or retracted;
//! 5. seals the personal content and appends one event per changed record,
//!    each with the stream version it saw as the expected version.
//!
//! Retries are safe at every step: a key created by a crashed attempt is
//! found again, and event ids are derived from the stream, its version and
//! a keyed digest of the content, so an append retried after a timeout
//! stores nothing twice. Two writers racing on one record conflict on the
//! expected version; the loser re-reads and decides again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use mdm_domain::metadata::{anchored_event_id, deterministic_event_id, Actor, EventMetadata};
use mdm_domain::privacy::hold::{self, HoldEvent, HoldState, Resend};
use mdm_domain::source::{map_record, SourceDefinition, SourceDefinitions};
use mdm_domain::source_record::{
    self, decide, Decision, Incoming, RecordState, RetractionContent, RetractionReason, SourceOrder,
    SourceRecordContent, SourceRecordRetracted, SourceRecordVersion,
};
use mdm_store::keys::{DataKey, KeyStore, KeyStoreError, SubjectKey};
use mdm_store::{AppendError, EventStore, ExpectedVersion, Json, NewEvent, Position, ReadError, RecordedEvent};
use serde::Serialize;
use uuid::Uuid;

use crate::input::{ChangeOp, InputItem, InputRecord};
use crate::opened::{open_with, OpenedEvent};

/// How many appends of one batch are in flight at once. The SQLite writer
/// commits whatever is queued together, so this is also its group size.
const APPENDS_IN_FLIGHT: usize = 8192;

/// How often one record is decided again after losing a race.
const MAX_ATTEMPTS: usize = 5;

/// Who sends a batch, for the events' metadata.
#[derive(Clone, Debug)]
pub struct IngestContext {
    pub actor: Actor,
    /// The request or import run; every event of it carries this id.
    pub correlation_id: Uuid,
    pub occurred_at: DateTime<Utc>,
}

/// What happened to one record of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordOutcome {
    /// Where the record was in its input ("row 17", "line 5", "record 3").
    pub locator: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The record's pseudonymous stream, when the record mapped. Internal
    /// (full-snapshot bookkeeping): never sent to clients.
    #[serde(skip)]
    pub stream: Option<String>,
}

/// The outcome of one record. Reasons name fields, never values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// First version stored (or stored again after a retraction).
    Captured { stream_version: u64 },
    /// A new version stored: attributes or raw payload differ.
    Changed { stream_version: u64 },
    /// Same as the last version: nothing stored.
    Unchanged,
    /// A change-data-capture event at or before the change the record
    /// already reflects (a re-delivery or replay): nothing stored.
    Stale,
    /// The record is marked as no longer held by its source.
    Retracted { stream_version: u64 },
    /// Nothing to do (a deletion of a record we never had or already
    /// retracted, a change-data-capture tombstone).
    Ignored { reason: String },
    /// The record belongs to a person who was erased: nothing stored (a
    /// re-send after a compliance user suppressed the hold, or a deletion).
    Erased,
    /// The record belongs to a person who was erased and its source still
    /// sends it: nothing of it is stored; the hold waits for a compliance
    /// decision (the request ledger lists it). Re-sends answer the same hold.
    Held { hold_id: Uuid },
    /// The record could not be read or mapped: nothing stored.
    Rejected {
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        reason: String,
    },
}

impl Outcome {
    /// Whether an event was appended for this record.
    pub fn stored(&self) -> bool {
        matches!(
            self,
            Outcome::Captured { .. } | Outcome::Changed { .. } | Outcome::Retracted { .. }
        )
    }
}

/// Why a whole batch failed. Records already answered stay stored; a retry
/// of the batch is safe and stores nothing twice.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no source system is configured under that name")]
    UnknownSystem,
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Counts of outcomes, for progress lines and summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub captured: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub retracted: u64,
    pub ignored: u64,
    pub erased: u64,
    pub held: u64,
    pub rejected: u64,
}

impl Tally {
    pub fn add(&mut self, outcome: &Outcome) {
        let slot = match outcome {
            Outcome::Captured { .. } => &mut self.captured,
            Outcome::Changed { .. } => &mut self.changed,
            Outcome::Unchanged => &mut self.unchanged,
            Outcome::Stale => &mut self.stale,
            Outcome::Retracted { .. } => &mut self.retracted,
            Outcome::Ignored { .. } => &mut self.ignored,
            Outcome::Erased => &mut self.erased,
            Outcome::Held { .. } => &mut self.held,
            Outcome::Rejected { .. } => &mut self.rejected,
        };
        *slot += 1;
    }

    pub fn total(&self) -> u64 {
        self.captured
            + self.changed
            + self.unchanged
            + self.stale
            + self.retracted
            + self.ignored
            + self.erased
            + self.held
            + self.rejected
    }
}

/// Turns source records into sealed source-record events.
#[derive(Clone, Debug)]
pub struct Ingestor {
    store: Arc<dyn EventStore>,
    keys: Arc<dyn KeyStore>,
    sources: Arc<SourceDefinitions>,
}

/// A record that mapped, on its way to the log.
struct Pending {
    index: usize,
    stream: String,
    op: ChangeOp,
    item: InputItem,
    source_id: String,
    attributes: mdm_domain::source::CanonicalAttributes,
    /// The change's position in the source's change log, if it has one.
    order: Option<SourceOrder>,
    /// The record's key (`None`: a deletion of a record that has none).
    key: Option<SubjectKey>,
    /// The key was created for this very record, so its stream cannot
    /// exist yet and need not be read. False for later copies of the record
    /// in the batch and for retries.
    fresh: bool,
    /// For a fresh record, its `SourceRecordCaptured` event at version 0,
    /// built (sealed) while preparing: a fresh record can only be captured.
    prebuilt: Option<NewEvent>,
    attempts: usize,
}

/// A batch mapped and keyed by [`Ingestor::prepare_batch`], waiting for
/// [`Ingestor::commit_batch`]. Preparing is independent of the log's
/// state, so an importer prepares the next batch while the current one
/// commits; commits must run one at a time, in input order.
pub struct PreparedBatch {
    system: String,
    locators: Vec<String>,
    streams: Vec<Option<String>>,
    outcomes: Vec<Option<Outcome>>,
    pending: Vec<Pending>,
}

impl std::fmt::Debug for PreparedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedBatch")
            .field("system", &self.system)
            .field("records", &self.locators.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Ingestor {
    pub fn new(store: Arc<dyn EventStore>, keys: Arc<dyn KeyStore>, sources: Arc<SourceDefinitions>) -> Ingestor {
        Ingestor { store, keys, sources }
    }

    pub fn sources(&self) -> &SourceDefinitions {
        &self.sources
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// The pseudonymous stream of (system, source id).
    pub fn stream_of(&self, system: &str, source_id: &str) -> String {
        let mac = self
            .keys
            .naming_key()
            .mac(&[b"source-record", system.as_bytes(), source_id.as_bytes()]);
        source_record::stream_name(system, &mac[..16])
    }

    /// The stream a released record of an erased person is captured under
    /// from now on: a keyed pseudonym of the erased stream, so it can be
    /// derived without the source id, and names nothing.
    pub fn successor_of(&self, system: &str, record_stream: &str) -> String {
        let mac = self
            .keys
            .naming_key()
            .mac(&[b"released-record", system.as_bytes(), record_stream.as_bytes()]);
        source_record::stream_name(system, &mac[..16])
    }

    /// Where a record's hold stands (`erased-hold-<stream>`), with the hold
    /// stream's last version.
    pub async fn hold_state(&self, record_stream: &str) -> Result<(HoldState, Option<u64>), IngestError> {
        let last = self
            .store
            .read_last_events(&[hold::stream(record_stream)])
            .await?
            .into_iter()
            .next()
            .flatten();
        let Some(event) = last else {
            return Ok((HoldState::None, None));
        };
        let e: HoldEvent = event
            .data
            .decode()
            .map_err(|e| IngestError::Append(AppendError::Internal(Box::new(e))))?;
        Ok((HoldState::after(Some(&e)), Some(event.version)))
    }

    /// The stream (system, source id) is held under now: its first stream,
    /// or, once a compliance user released it after an erasure, its
    /// successor (followed as far as releases go).
    pub async fn current_stream(&self, system: &str, source_id: &str) -> Result<String, IngestError> {
        let mut stream = self.stream_of(system, source_id);
        for _ in 0..hold::MAX_SUCCESSORS {
            match self.hold_state(&stream).await?.0 {
                HoldState::Released { successor } => stream = successor,
                _ => break,
            }
        }
        Ok(stream)
    }

    /// A record of an erased person arrives again (its key is destroyed):
    /// hold it for a compliance decision, answer the pending hold, refuse
    /// it when suppressed, or follow a release to its successor stream
    /// (then the record is decided again there: `Err` with it).
    async fn resent(
        &self,
        system: &str,
        mut p: Pending,
        ctx: &IngestContext,
    ) -> Result<Result<Outcome, Pending>, IngestError> {
        let (state, version) = self.hold_state(&p.stream).await?;
        let upsert = !matches!(p.op, ChangeOp::Delete);
        match hold::on_resend(&state) {
            Resend::Follow(successor) if p.attempts < hold::MAX_SUCCESSORS + MAX_ATTEMPTS => {
                let subjects = [successor.clone()];
                p.key = if upsert {
                    self.keys.get_or_create(&subjects).await?.pop().map(|l| l.key)
                } else {
                    self.keys.find(&subjects).await?.pop().flatten()
                };
                p.stream = successor;
                p.fresh = false;
                p.prebuilt = None;
                p.attempts += 1;
                Ok(Err(p))
            }
            Resend::Follow(_) | Resend::Refuse => Ok(Ok(Outcome::Erased)),
            // The source deleting a record of an erased person is what it
            // was told to do: nothing to hold.
            _ if !upsert => Ok(Ok(Outcome::Erased)),
            Resend::Pending(hold_id) => Ok(Ok(Outcome::Held { hold_id })),
            Resend::Hold => {
                let hold_id = Uuid::now_v7();
                let event = HoldEvent::RecordHeld {
                    hold_id,
                    system: system.to_owned(),
                    record: p.stream.clone(),
                    at: ctx.occurred_at,
                };
                let meta = EventMetadata {
                    schema_version: hold::SCHEMA_VERSION,
                    ..metadata(ctx, None)
                };
                let new = NewEvent::new(hold_id, event.event_type(), encode(&event)?, encode(&meta)?);
                let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                match self.store.append(&hold::stream(&p.stream), expected, vec![new]).await {
                    Ok(_) => {
                        tracing::info!(system = %system, "a record of an erased person was re-sent: held");
                        Ok(Ok(Outcome::Held { hold_id }))
                    }
                    // Another copy held it first (or a decision landed):
                    // decide again.
                    Err(AppendError::Conflict { .. }) if p.attempts + 1 < MAX_ATTEMPTS => {
                        p.attempts += 1;
                        Ok(Err(p))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Ingests a batch of records of `system`. The answer has one outcome
    /// per record, in order.
    pub async fn ingest(
        &self,
        system: &str,
        records: Vec<InputRecord>,
        ctx: &IngestContext,
    ) -> Result<Vec<RecordOutcome>, IngestError> {
        let batch = self.prepare_batch(system, records, ctx).await?;
        self.commit_batch(batch, ctx).await
    }

    /// Maps every record and fetches or creates the keys of the batch, in
    /// one key-store call for the records that bring content and one for
    /// deletions (a deletion of an unknown record needs no key).
    pub async fn prepare_batch(
        &self,
        system: &str,
        records: Vec<InputRecord>,
        ctx: &IngestContext,
    ) -> Result<PreparedBatch, IngestError> {
        let def = self.sources.get(system).ok_or(IngestError::UnknownSystem)?;
        let started = std::time::Instant::now();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
        let mut locators = Vec::with_capacity(records.len());
        let mut streams: Vec<Option<String>> = vec![None; records.len()];
        let mut pending = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            locators.push(record.locator);
            match self.prepare(def, index, record.item) {
                Ok(p) => {
                    streams[index] = Some(p.stream.clone());
                    pending.push(p)
                }
                Err(outcome) => outcomes[index] = Some(outcome),
            }
        }
        let mapped = started.elapsed();

        for (want_upserts, create) in [(true, true), (false, false)] {
            let mut first_of: HashMap<&str, usize> = HashMap::new();
            let mut subjects: Vec<String> = Vec::new();
            let mut slot: Vec<(usize, usize, bool)> = Vec::new(); // (pending index, subject index, first copy)
            for (i, p) in pending.iter().enumerate() {
                if matches!(p.op, ChangeOp::Upsert) != want_upserts {
                    continue;
                }
                let (subject, first) = match first_of.get(p.stream.as_str()) {
                    Some(&j) => (j, false),
                    None => {
                        first_of.insert(&p.stream, subjects.len());
                        subjects.push(p.stream.clone());
                        (subjects.len() - 1, true)
                    }
                };
                slot.push((i, subject, first));
            }
            if subjects.is_empty() {
                continue;
            }
            let found: Vec<Option<(SubjectKey, bool)>> = if create {
                self.keys
                    .get_or_create(&subjects)
                    .await?
                    .into_iter()
                    .map(|l| Some((l.key, l.created)))
                    .collect()
            } else {
                self.keys
                    .find(&subjects)
                    .await?
                    .into_iter()
                    .map(|k| k.map(|k| (k, false)))
                    .collect()
            };
            for (i, subject, first) in slot {
                if let Some((key, created)) = &found[subject] {
                    pending[i].key = Some(key.clone());
                    pending[i].fresh = *created && first;
                }
            }
        }
        let keyed = started.elapsed();
        // Records whose key this batch created have no stream yet: their
        // capture event is sealed now, while the previous batch commits.
        for p in pending.iter_mut() {
            if let (true, ChangeOp::Upsert, Some(SubjectKey::Active { key_id, key })) = (p.fresh, p.op, &p.key) {
                let digest = digest(key, &p.item);
                p.prebuilt = Some(build_event(def, p, Decision::Capture, key, *key_id, digest, 0, ctx)?);
            }
        }
        tracing::debug!(
            records = locators.len(),
            map_ms = mapped.as_secs_f64() * 1e3,
            keys_ms = (keyed - mapped).as_secs_f64() * 1e3,
            seal_ms = (started.elapsed() - keyed).as_secs_f64() * 1e3,
            "ingest batch prepared"
        );
        Ok(PreparedBatch {
            system: system.to_owned(),
            locators,
            streams,
            outcomes,
            pending,
        })
    }

    /// Decides and appends a prepared batch. Batches of one system must be
    /// committed one at a time, in input order.
    pub async fn commit_batch(
        &self,
        batch: PreparedBatch,
        ctx: &IngestContext,
    ) -> Result<Vec<RecordOutcome>, IngestError> {
        let def = self.sources.get(&batch.system).ok_or(IngestError::UnknownSystem)?;
        let PreparedBatch {
            locators,
            mut streams,
            mut outcomes,
            mut pending,
            ..
        } = batch;
        while !pending.is_empty() {
            // A record sent twice in one batch is decided after the first
            // copy is stored: one stream per round.
            let mut seen = HashSet::with_capacity(pending.len());
            let (round, later): (Vec<Pending>, Vec<Pending>) =
                pending.into_iter().partition(|p| seen.insert(p.stream.clone()));
            pending = later;
            for retry in self.run_round(def, round, ctx, &mut outcomes).await? {
                // A released record moves to its successor stream.
                streams[retry.index] = Some(retry.stream.clone());
                pending.push(retry);
            }
        }

        Ok(locators
            .into_iter()
            .zip(outcomes)
            .zip(streams)
            .map(|((locator, outcome), stream)| RecordOutcome {
                locator,
                stream,
                outcome: outcome.unwrap_or_else(|| Outcome::Rejected {
                    field: None,
                    reason: "internal error: the record was not processed".into(),
                }),
            })
            .collect())
    }

    fn prepare(
        &self,
        def: &SourceDefinition,
        index: usize,
        item: Result<InputItem, crate::input::InputError>,
    ) -> Result<Pending, Outcome> {
        let item = item.map_err(|e| Outcome::Rejected {
            field: e.field.clone(),
            reason: e.to_string(),
        })?;
        if matches!(item.op, ChangeOp::Ignore) {
            return Err(Outcome::Ignored {
                reason: "a change-data-capture tombstone or heartbeat carries no record".into(),
            });
        }
        let mapped = map_record(def, &item.value).map_err(|e| Outcome::Rejected {
            field: Some(e.field.clone()),
            reason: e.to_string(),
        })?;
        Ok(Pending {
            index,
            order: item.source_order.clone(),
            stream: self.stream_of(&def.system, &mapped.source_id),
            op: item.op,
            source_id: mapped.source_id,
            attributes: mapped.attributes,
            item,
            key: None,
            fresh: false,
            prebuilt: None,
            attempts: 0,
        })
    }

    /// Decides and appends one round (each stream at most once). Returns the
    /// records that lost a race and must be decided again.
    async fn run_round(
        &self,
        def: &SourceDefinition,
        round: Vec<Pending>,
        ctx: &IngestContext,
        outcomes: &mut [Option<Outcome>],
    ) -> Result<Vec<Pending>, IngestError> {
        let started = std::time::Instant::now();
        // The last event of every stream that may exist: it has a key that
        // this very call did not create.
        let existing: Vec<usize> = (0..round.len())
            .filter(|&i| matches!(&round[i].key, Some(SubjectKey::Active { .. })) && !round[i].fresh)
            .collect();
        let mut last: Vec<Option<RecordedEvent>> = (0..round.len()).map(|_| None).collect();
        if !existing.is_empty() {
            let streams: Vec<String> = existing.iter().map(|&i| round[i].stream.clone()).collect();
            for (&i, event) in existing.iter().zip(self.store.read_last_events(&streams).await?) {
                last[i] = event;
            }
        }

        let read = started.elapsed();
        let records = round.len();
        let mut appends = Vec::new();
        let mut resent = Vec::new();
        for (mut p, last) in round.into_iter().zip(last) {
            if let Some(event) = p.prebuilt.take() {
                appends.push((p, ExpectedVersion::NoStream, Decision::Capture, event));
                continue;
            }
            let (state, key) = match p.key.clone() {
                None => (RecordState::Absent, None),
                Some(SubjectKey::Destroyed { .. }) => (RecordState::Erased, None),
                Some(SubjectKey::Active { key_id, key }) => {
                    let state = match &last {
                        None => RecordState::Absent,
                        Some(event) => match open_state(event, &key) {
                            Some(state) => state,
                            None => {
                                outcomes[p.index] = Some(Outcome::Rejected {
                                    field: None,
                                    reason: format!(
                                        "the stored version of this record (log position {}) cannot be read; \
                                         nothing was changed",
                                        event.position
                                    ),
                                });
                                continue;
                            }
                        },
                    };
                    (state, Some((key_id, key)))
                }
            };
            let digest = key.as_ref().map(|(_, k)| digest(k, &p.item)).unwrap_or_default();
            let incoming = match p.op {
                ChangeOp::Delete => Incoming::Delete {
                    order: p.order.as_ref(),
                },
                _ => Incoming::Upsert {
                    attributes: &p.attributes,
                    digest: &digest,
                    order: p.order.as_ref(),
                },
            };
            let decision = decide(&state, incoming);
            let (expected, next_version) = match &last {
                None => (ExpectedVersion::NoStream, 0),
                Some(e) => (ExpectedVersion::Exact(e.version), e.version + 1),
            };
            let outcome = match decision {
                Decision::Unchanged => Some(Outcome::Unchanged),
                Decision::Stale => Some(Outcome::Stale),
                Decision::NothingToRetract => Some(Outcome::Ignored {
                    reason: "the source deleted a record that is not held".into(),
                }),
                Decision::Erased => {
                    resent.push(p);
                    continue;
                }
                Decision::Capture | Decision::Change | Decision::Retract => None,
            };
            if let Some(outcome) = outcome {
                outcomes[p.index] = Some(outcome);
                continue;
            }
            let Some((key_id, key)) = key else {
                // Capture, change and retract all follow a live key.
                outcomes[p.index] = Some(Outcome::Rejected {
                    field: None,
                    reason: "internal error: no data key for the record".into(),
                });
                continue;
            };
            let event = build_event(def, &p, decision, &key, key_id, digest, next_version, ctx)?;
            appends.push((p, expected, decision, event));
        }

        let decided = started.elapsed();
        let store = &self.store;
        let results: Vec<_> = stream::iter(appends)
            .map(|(p, expected, decision, event)| async move {
                let result = store.append(&p.stream, expected, vec![event]).await;
                (p, decision, result)
            })
            .buffer_unordered(APPENDS_IN_FLIGHT)
            .collect()
            .await;
        tracing::debug!(
            records,
            read_ms = read.as_secs_f64() * 1e3,
            decide_seal_ms = (decided - read).as_secs_f64() * 1e3,
            append_ms = (started.elapsed() - decided).as_secs_f64() * 1e3,
            "ingest round"
        );

        let mut retry = Vec::new();
        for p in resent {
            let index = p.index;
            match self.resent(&def.system, p, ctx).await? {
                Ok(outcome) => outcomes[index] = Some(outcome),
                Err(p) => retry.push(p),
            }
        }
        for (mut p, decision, result) in results {
            match result {
                Ok(done) => {
                    let v = done.last_version;
                    outcomes[p.index] = Some(match decision {
                        Decision::Capture => Outcome::Captured { stream_version: v },
                        Decision::Change => Outcome::Changed { stream_version: v },
                        _ => Outcome::Retracted { stream_version: v },
                    });
                }
                Err(AppendError::Conflict { .. } | AppendError::IdsAlreadyUsed { .. })
                    if p.attempts + 1 < MAX_ATTEMPTS =>
                {
                    p.attempts += 1;
                    p.fresh = false;
                    retry.push(p);
                }
                Err(AppendError::Conflict { .. } | AppendError::IdsAlreadyUsed { .. }) => {
                    outcomes[p.index] = Some(Outcome::Rejected {
                        field: None,
                        reason: "the record kept changing concurrently; send it again".into(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(retry)
    }

    /// Retracts every record of `system` that is held (its last event is a
    /// version, not a retraction) and whose stream is not in `present`: the
    /// end of a full-snapshot import. Scans the log for the system's
    /// streams; the source-record read model will answer this faster once it
    /// exists.
    pub async fn retract_missing(
        &self,
        system: &str,
        present: &HashSet<String>,
        ctx: &IngestContext,
    ) -> Result<u64, IngestError> {
        self.sources.get(system).ok_or(IngestError::UnknownSystem)?;
        let prefix = format!("{}{system}-", source_record::STREAM_PREFIX);
        // stream -> (last version, held)
        let mut state: HashMap<String, (u64, bool)> = HashMap::new();
        let mut after = Position::START;
        loop {
            let page = self.store.read_all(after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for e in page {
                if e.stream.starts_with(&prefix) {
                    let held = e.event_type != source_record::RETRACTED;
                    state.insert(e.stream, (e.version, held));
                }
            }
        }
        let missing: Vec<(String, u64)> = state
            .into_iter()
            .filter(|(stream, (_, held))| *held && !present.contains(stream))
            .map(|(stream, (version, _))| (stream, version))
            .collect();
        // An erased person's record is not held by anyone any more: there
        // is nothing to retract.
        let subjects: Vec<String> = missing.iter().map(|(stream, _)| stream.clone()).collect();
        let keys = self.keys.find(&subjects).await?;
        let missing: Vec<(String, u64)> = missing
            .into_iter()
            .zip(keys)
            .filter(|(_, key)| !matches!(key, Some(SubjectKey::Destroyed { .. })))
            .map(|(missing, _)| missing)
            .collect();
        let store = &self.store;
        let results: Vec<Result<AppendOutcome, AppendError>> = stream::iter(missing)
            .map(|(stream, version)| async move {
                let payload = SourceRecordRetracted {
                    system: system.to_owned(),
                    reason: RetractionReason::MissingFromFullSnapshot,
                    sealed: None,
                };
                let event = NewEvent::new(
                    deterministic_event_id(
                        source_record::RETRACTED,
                        &[stream.as_bytes(), &(version + 1).to_be_bytes()],
                    ),
                    source_record::RETRACTED,
                    encode(&payload)?,
                    encode(&metadata(ctx, None))?,
                );
                store
                    .append(&stream, ExpectedVersion::Exact(version), vec![event])
                    .await
            })
            .buffer_unordered(APPENDS_IN_FLIGHT)
            .collect()
            .await;
        let mut retracted = 0;
        for result in results {
            match result {
                Ok(o) if !o.already_stored => retracted += 1,
                Ok(_) => {}
                // Someone sent a new version meanwhile: the record is held
                // again, which wins over the snapshot's silence.
                Err(AppendError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(retracted)
    }
}

use mdm_store::AppendOutcome;

fn encode<T: Serialize>(value: &T) -> Result<Json, AppendError> {
    Json::encode(value).map_err(|e| AppendError::Internal(Box::new(e)))
}

fn metadata(ctx: &IngestContext, key_id: Option<Uuid>) -> EventMetadata {
    EventMetadata {
        occurred_at: ctx.occurred_at,
        actor: ctx.actor.clone(),
        correlation_id: ctx.correlation_id,
        causation_id: None,
        schema_version: source_record::SCHEMA_VERSION,
        key_id,
    }
}

/// The keyed digest of what change detection compares: the row image for
/// change-data capture, the raw record otherwise, with its header.
fn digest(key: &DataKey, item: &InputItem) -> String {
    let compared = item.compared.as_deref().unwrap_or(&item.raw);
    let header = item.raw_header.as_deref().unwrap_or("");
    hex::encode(key.mac(&[b"source-record-digest", compared.as_bytes(), header.as_bytes()]))
}

/// The first plaintext byte of a sealed value: LZ4-compressed JSON (the
/// size prepended). A plaintext starting with `{` is plain JSON.
const SEALED_LZ4_JSON: u8 = 1;

/// The largest plaintext a sealed value may claim to decompress to.
const MAX_SEALED_PLAINTEXT: usize = 64 << 20;

/// Seals `value` under `key`, bound to the stream it belongs to (a sealed
/// payload copied into another stream does not open): JSON, compressed
/// with LZ4, encrypted, base64. Compression comes first because ciphertext
/// does not compress; raw records are repetitive (a Debezium envelope
/// repeats its schema in every event), so it shrinks the log and the write
/// work of every append (measured in docs/bench/ingest.md).
pub fn seal<T: Serialize>(key: &DataKey, stream: &str, value: &T) -> Result<String, serde_json::Error> {
    let json = serde_json::to_vec(value)?;
    let mut plain = Vec::with_capacity(json.len() / 2 + 16);
    plain.push(SEALED_LZ4_JSON);
    plain.extend_from_slice(&lz4_flex::compress_prepend_size(&json));
    Ok(base64::engine::general_purpose::STANDARD.encode(key.seal(stream.as_bytes(), &plain)))
}

/// Opens what [`seal`] sealed. `None` when it does not open or decode (a
/// wrong key or tampering).
pub fn open<T: serde::de::DeserializeOwned>(key: &DataKey, stream: &str, sealed: &str) -> Option<T> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(sealed).ok()?;
    let plain = key.open(stream.as_bytes(), &bytes).ok()?;
    match plain.split_first()? {
        (&SEALED_LZ4_JSON, compressed) => {
            let claimed = compressed
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
            if claimed > MAX_SEALED_PLAINTEXT {
                return None;
            }
            let json = lz4_flex::decompress_size_prepended(compressed).ok()?;
            serde_json::from_slice(&json).ok()
        }
        (b'{', _) => serde_json::from_slice(&plain).ok(),
        _ => None,
    }
}

/// Opens the content of a captured or changed event with its key.
pub fn open_version(event: &RecordedEvent, key: &DataKey) -> Option<SourceRecordContent> {
    let payload: SourceRecordVersion = event.data.decode().ok()?;
    open(key, &event.stream, &payload.sealed)
}

/// The state a stream's last event stands for; `None` when it cannot be
/// read with the record's key.
fn open_state(event: &RecordedEvent, key: &DataKey) -> Option<RecordState> {
    match open_with(event, Some(key)) {
        OpenedEvent::Version { content, .. } => Some(RecordState::Live(content)),
        OpenedEvent::Retracted { content, .. } => Some(RecordState::Retracted(content.and_then(|c| c.source_order))),
        OpenedEvent::Erased { .. } | OpenedEvent::Override { .. } | OpenedEvent::Other => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn build_event(
    def: &SourceDefinition,
    p: &Pending,
    decision: Decision,
    key: &DataKey,
    key_id: Uuid,
    digest: String,
    version: u64,
    ctx: &IngestContext,
) -> Result<NewEvent, IngestError> {
    let internal = |e: serde_json::Error| IngestError::Append(AppendError::Internal(Box::new(e)));
    let Some(event_type) = decision.event_type() else {
        return Err(IngestError::Append(AppendError::Internal(
            "no event for this decision".into(),
        )));
    };
    let (data, id_part) = if decision == Decision::Retract {
        let sealed = seal(
            key,
            &p.stream,
            &RetractionContent {
                source_id: p.source_id.clone(),
                raw: p.item.raw.clone(),
                source_order: p.order.clone(),
            },
        )
        .map_err(internal)?;
        let payload = SourceRecordRetracted {
            system: def.system.clone(),
            reason: RetractionReason::DeletedAtSource,
            sealed: Some(sealed),
        };
        (Json::encode(&payload).map_err(internal)?, String::new())
    } else {
        let content = SourceRecordContent {
            source_id: p.source_id.clone(),
            raw: p.item.raw.clone(),
            raw_header: p.item.raw_header.as_deref().map(str::to_owned),
            attributes: p.attributes.clone(),
            digest,
            source_order: p.order.clone(),
        };
        let sealed = seal(key, &p.stream, &content).map_err(internal)?;
        // The id depends on the content through the digest keyed by the
        // record's own key (the attributes follow from the raw record and
        // the definition): two different versions racing for one stream
        // version get different ids, and the id proves nothing about the
        // content once the key is destroyed.
        let id_part = content.digest.clone();
        let payload = SourceRecordVersion {
            system: def.system.clone(),
            format: def.format.as_str().to_owned(),
            sealed,
        };
        (Json::encode(&payload).map_err(internal)?, id_part)
    };
    let id = anchored_event_id(
        key_id,
        event_type,
        &[p.stream.as_bytes(), &version.to_be_bytes(), id_part.as_bytes()],
    );
    Ok(NewEvent::new(
        id,
        event_type,
        data,
        Json::encode(&metadata(ctx, Some(key_id))).map_err(internal)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_round_trip_and_are_bound_to_their_stream() {
        let key = DataKey::generate();
        let value = serde_json::json!({"raw": "x".repeat(5000), "name": "Ann"});
        let sealed = seal(&key, "source-a-01", &value).expect("seals");
        assert!(sealed.len() < 1000, "compressed before sealing: {} bytes", sealed.len());
        assert_eq!(open::<serde_json::Value>(&key, "source-a-01", &sealed), Some(value));
        assert_eq!(
            open::<serde_json::Value>(&key, "source-a-02", &sealed),
            None,
            "another stream"
        );
        assert_eq!(
            open::<serde_json::Value>(&DataKey::generate(), "source-a-01", &sealed),
            None,
            "another key"
        );
        assert_eq!(open::<serde_json::Value>(&key, "source-a-01", "not base64!"), None);
    }
}
