//! "As of": a customer and its lineage as they were at a log position or a
//! time, folded from the log itself.
//!
//! Nothing here reads the customers projection or a stored snapshot. The
//! live `decision_history` table serves as an index only: it says which
//! decisions (by their version in the `resolution` stream) named the
//! customer and the tokens connected to it through merges, moves and
//! splits. Those decision events are then read back from the event store,
//! kept when they lie at or before the cut, and folded in log order with
//! [`Membership`]. Each member record's own stream is read up to the cut and
//! opened, and its last version there feeds survivorship exactly as the
//! customers projection feeds it (same trust ranks, same rule set), with
//! the time of the last event considered as "now". So do the steward
//! overrides in force at the cut: set on the customer's token or on a token
//! merged into it by then (both named by the gathered decisions), not
//! removed by then, their values opened through the opener like source
//! records (a destroyed key reads as no override). A cut by time also
//! drops the overrides whose `expires_at` is at or before it, even when the
//! decision that removed them came later.
//!
//! The index may lag the log (its projection applies batches behind the
//! head): decisions after the decisions projection's checkpoint are read
//! from the tail of the `resolution` stream instead, so an answer never
//! depends on how far the read models have got.
//!
//! An erased token (`CustomerErased`, of it or of the token it was merged
//! into) answers `TokenStatus::Erased` with no members and no values at
//! every cut, before its erasure too: its records open as erased by then
//! anyway, except those an erasure retained under a legal exception, which
//! must not be read through the customer either. Whether a token is erased
//! is asked of the whole log (the index without a cut, and the tail of the
//! `resolution` stream), not of the log up to the cut.
//!
//! A record can leave a customer through a decision that does not name it
//! (a steward's forced link names only the customer the record joins), so
//! after the fold the decisions about each member record are looked up too,
//! and the fold runs again with any it missed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use mdm_commands::opened::{OpenedEvent, SourceRecordOpener};
use mdm_domain::resolution::events::{Decided, DecidedBy, Decision, RESOLUTION_STREAM};
use mdm_domain::resolution::membership::{Membership, TokenStatus};
use mdm_domain::source::CanonicalAttributes;
use mdm_domain::survivorship::{self, Contribution, Golden, Override};
use mdm_store::{Direction, EventStore, Position, RecordedEvent, StreamStart};
use sqlx::Row;
use uuid::Uuid;

use crate::customer::CustomerSettings;
use crate::db::{parse_time, placeholders, time_text, to_i64, ReadDb};
use crate::decision::{decision_record, decode_decision};
use crate::runner::{checkpoint, ProjectionError};

/// Where to cut the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// Every event at or before this global position.
    Position(Position),
    /// Every event recorded at or before this time.
    Time(DateTime<Utc>),
}

impl AsOf {
    /// Whether `event` lies at or before the cut.
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        match self {
            AsOf::Position(p) => event.position <= *p,
            AsOf::Time(t) => event.recorded_at <= *t,
        }
    }
}

/// One record of the customer as of the cut: its last version at or before
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberAsOf {
    /// The record's stream (pseudonymous).
    pub record: String,
    pub system: String,
    /// Its id in the source system (`None` once erased).
    pub source_id: Option<String>,
    /// `current`, `retracted` or `erased`.
    pub state: String,
    /// Log position of that version.
    pub position: u64,
    /// When that version was recorded (microseconds, as the read models
    /// store it).
    pub recorded_at: DateTime<Utc>,
}

/// The source id is personal data: `Debug` shows whether there is one.
impl std::fmt::Debug for MemberAsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberAsOf")
            .field("record", &self.record)
            .field("system", &self.system)
            .field("source_id", &self.source_id.as_ref().map(|_| ".."))
            .field("state", &self.state)
            .field("position", &self.position)
            .field("recorded_at", &self.recorded_at)
            .finish()
    }
}

/// A customer as of the cut. A token merged away by then has its survivor
/// in `status`, no members and an empty golden record; an erased token (at
/// any cut) has `TokenStatus::Erased`, no members and no golden values.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerAsOf {
    pub token: Uuid,
    pub status: TokenStatus,
    /// Sorted by record.
    pub members: Vec<MemberAsOf>,
    pub golden: Golden,
}

/// Members and golden values hide their personal data in their own `Debug`.
impl std::fmt::Debug for CustomerAsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerAsOf")
            .field("token", &self.token)
            .field("status", &self.status)
            .field("members", &self.members)
            .field("golden", &self.golden)
            .finish()
    }
}

/// `token` as it was at `at`, or `None` when no decision had named it by
/// then; an erased token is erased at every cut.
pub async fn customer_as_of(
    store: &dyn EventStore,
    db: &ReadDb,
    opener: &SourceRecordOpener,
    settings: &CustomerSettings,
    token: Uuid,
    at: AsOf,
) -> Result<Option<CustomerAsOf>, ProjectionError> {
    let mut log = DecisionLog::open(store, db, at).await?;
    let nothing = || Golden {
        rule_set: settings.rules.version.clone(),
        values: Vec::new(),
    };
    if log.erased(token).await? {
        return Ok(Some(CustomerAsOf {
            token,
            status: TokenStatus::Erased,
            members: Vec::new(),
            golden: nothing(),
        }));
    }
    log.gather_connected(token).await?;
    // Fold, then look for decisions about the members the fold missed
    // (they can only take records out), until there are none.
    let membership = loop {
        let membership = log.fold();
        let members = membership.members(token);
        if !log.gather_about_records(&members).await? {
            break membership;
        }
    };
    let status = match membership.status(token) {
        None => return Ok(None),
        Some(s) => s,
    };
    let mut last = log.last_event();
    if let TokenStatus::MergedInto(_) | TokenStatus::Erased = status {
        return Ok(Some(CustomerAsOf {
            token,
            status,
            members: Vec::new(),
            golden: nothing(),
        }));
    }
    let mut members: Vec<(MemberAsOf, Option<CanonicalAttributes>)> = Vec::new();
    for record in membership.members(token) {
        let Some((member, attributes, seen)) = member_as_of(store, opener, &record, at).await? else {
            continue;
        };
        last = later(last, seen);
        members.push((member, attributes));
    }
    let now = last.map(|(_, t)| t).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let contributions: Vec<Contribution<'_>> = members
        .iter()
        .filter_map(|(m, a)| {
            a.as_ref().map(|a| Contribution {
                record: m.record.as_str(),
                system: m.system.as_str(),
                trust_rank: settings.trust.get(&m.system).copied().unwrap_or(0),
                position: m.position,
                recorded_at: m.recorded_at,
                attributes: a,
            })
        })
        .collect();
    let overrides = log.overrides_on(&membership, token, opener).await?;
    let golden = survivorship::survive(&settings.rules, &contributions, &overrides, now);
    Ok(Some(CustomerAsOf {
        token,
        status,
        members: members.into_iter().map(|(m, _)| m).collect(),
        golden,
    }))
}

/// The later of two (position, time) marks.
fn later(
    a: Option<(Position, DateTime<Utc>)>,
    b: Option<(Position, DateTime<Utc>)>,
) -> Option<(Position, DateTime<Utc>)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 > x.0 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A time as the read models hold it (RFC 3339 text with microseconds), so
/// that survivorship compares the same times the customers projection does.
fn stored_time(t: DateTime<Utc>) -> DateTime<Utc> {
    parse_time(&time_text(t)).unwrap_or(t)
}

/// The decision types through which records pass between customers, so
/// that the other tokens they name belong to the customer's history.
fn connects(decision_type: &str) -> bool {
    matches!(decision_type, "CustomersMerged" | "RecordMoved" | "RecordSplit")
}

/// A decision event read from the log.
#[derive(Clone)]
struct Fact {
    position: Position,
    recorded_at: DateTime<Utc>,
    decided: Decided,
    /// The event itself when it sets an override, whose sealed value the
    /// opener opens.
    event: Option<RecordedEvent>,
}

impl Fact {
    fn of(event: &RecordedEvent) -> Result<Fact, ProjectionError> {
        let decided = decode_decision(event)?;
        Ok(Fact {
            position: event.position,
            recorded_at: event.recorded_at,
            event: matches!(decided.decision, Decision::ValueOverridden { .. }).then(|| event.clone()),
            decided,
        })
    }
}

/// The decisions of one "as of" question: the index, the unindexed tail of
/// the `resolution` stream, and what has been read so far.
struct DecisionLog<'a> {
    store: &'a dyn EventStore,
    db: &'a ReadDb,
    at: AsOf,
    /// Whether the decision index exists.
    indexed: bool,
    /// Decisions after the index's checkpoint, at or before the cut, by
    /// stream version.
    tail: BTreeMap<u64, Fact>,
    /// Decisions to fold (at or before the cut), by stream version.
    facts: BTreeMap<u64, Fact>,
    /// Every stream version looked at (folded or found past the cut).
    seen: BTreeSet<u64>,
    /// The tokens the tail erases, at or past the cut.
    erased_in_tail: BTreeSet<Uuid>,
}

impl<'a> DecisionLog<'a> {
    async fn open(store: &'a dyn EventStore, db: &'a ReadDb, at: AsOf) -> Result<DecisionLog<'a>, ProjectionError> {
        let indexed_to = checkpoint(db, "decisions").await?.map(|c| c.position);
        let mut log = DecisionLog {
            store,
            db,
            at,
            indexed: indexed_to.is_some(),
            tail: BTreeMap::new(),
            facts: BTreeMap::new(),
            seen: BTreeSet::new(),
            erased_in_tail: BTreeSet::new(),
        };
        let indexed_to = indexed_to.unwrap_or(Position::START);
        // Read the stream's tail backwards down to the checkpoint (past
        // the cut too: an erasure there still erases).
        let mut start = StreamStart::Edge;
        'pages: loop {
            let page = store
                .read_stream(RESOLUTION_STREAM, start, Direction::Backwards, PAGE)
                .await?;
            let full = page.len() == PAGE;
            for event in &page {
                if event.position <= indexed_to {
                    break 'pages;
                }
                if at.includes(event) {
                    log.tail.insert(event.version, Fact::of(event)?);
                } else if event.event_type == "CustomerErased" {
                    log.erased_in_tail.extend(decode_decision(event)?.decision.tokens());
                }
            }
            match page.last() {
                Some(e) if full && e.version > 0 => start = StreamStart::Version(e.version - 1),
                _ => break,
            }
        }
        Ok(log)
    }

    /// Whether `token` is erased by now (whatever the cut): the index
    /// holds its erasure, or the tail of the stream does.
    async fn erased(&self, token: Uuid) -> Result<bool, ProjectionError> {
        if self.erased_in_tail.contains(&token)
            || self.tail.values().any(|f| {
                matches!(f.decided.decision, Decision::CustomerErased { .. })
                    && f.decided.decision.tokens().contains(&token)
            })
        {
            return Ok(true);
        }
        if !self.indexed {
            return Ok(false);
        }
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM decision_history WHERE token = $1 AND decision_type = 'CustomerErased'",
        )
        .bind(token.to_string())
        .fetch_one(self.db.pool())
        .await?;
        Ok(n > 0)
    }

    /// Gathers the decisions that named `token` or a token connected to it
    /// through merges, moves and splits, at or before the cut.
    async fn gather_connected(&mut self, token: Uuid) -> Result<(), ProjectionError> {
        let mut known: BTreeSet<Uuid> = BTreeSet::from([token]);
        let mut frontier: Vec<Uuid> = vec![token];
        let mut wanted: BTreeMap<u64, Position> = BTreeMap::new();
        while !frontier.is_empty() {
            let batch: BTreeSet<Uuid> = std::mem::take(&mut frontier).into_iter().collect();
            let mut next: Vec<Uuid> = Vec::new();
            if self.indexed {
                for row in self.index_by_tokens(&batch).await? {
                    wanted.insert(row.version, row.position);
                    if connects(&row.decision_type) {
                        next.extend(row.other_tokens);
                    }
                }
            }
            for (version, fact) in &self.tail {
                let tokens = fact.decided.decision.tokens();
                if tokens.iter().any(|t| batch.contains(t)) {
                    self.facts.insert(*version, fact.clone());
                    self.seen.insert(*version);
                    if connects(fact.decided.decision.event_type()) {
                        next.extend(tokens);
                    }
                }
            }
            frontier = next.into_iter().filter(|t| known.insert(*t)).collect();
        }
        self.read(wanted).await
    }

    /// Gathers the decisions about `records` not gathered yet. Says whether
    /// it found any.
    async fn gather_about_records(&mut self, records: &[String]) -> Result<bool, ProjectionError> {
        let mut wanted: BTreeMap<u64, Position> = BTreeMap::new();
        if self.indexed {
            for (version, position) in self.index_by_records(records).await? {
                if !self.seen.contains(&version) {
                    wanted.insert(version, position);
                }
            }
        }
        let wanted_records: BTreeSet<&str> = records.iter().map(String::as_str).collect();
        let mut found = !wanted.is_empty();
        for (version, fact) in &self.tail {
            if self.seen.contains(version) {
                continue;
            }
            if decision_record(&fact.decided.decision).is_some_and(|r| wanted_records.contains(r)) {
                self.facts.insert(*version, fact.clone());
                self.seen.insert(*version);
                found = true;
            }
        }
        self.read(wanted).await?;
        Ok(found)
    }

    /// Reads the decisions at `wanted` stream versions from the log (the
    /// index's positions must match) and keeps those at or before the cut.
    async fn read(&mut self, wanted: BTreeMap<u64, Position>) -> Result<(), ProjectionError> {
        let wanted: Vec<(u64, Position)> = wanted.into_iter().filter(|(v, _)| !self.seen.contains(v)).collect();
        let mut i = 0;
        while i < wanted.len() {
            // A run of consecutive versions is one read.
            let mut j = i + 1;
            while j < wanted.len() && wanted[j].0 == wanted[j - 1].0 + 1 && j - i < PAGE {
                j += 1;
            }
            let run = &wanted[i..j];
            let events = self
                .store
                .read_stream(
                    RESOLUTION_STREAM,
                    StreamStart::Version(run[0].0),
                    Direction::Forwards,
                    run.len(),
                )
                .await?;
            for (k, (version, position)) in run.iter().enumerate() {
                let event = events.get(k).filter(|e| e.version == *version);
                let Some(event) = event else {
                    return Err(ProjectionError::Corrupt {
                        position: position.0,
                        reason: format!(
                            "the decision index names version {version} of the {RESOLUTION_STREAM} stream, \
                             which the log does not hold"
                        ),
                    });
                };
                if event.position != *position {
                    return Err(ProjectionError::Corrupt {
                        position: position.0,
                        reason: format!(
                            "the decision index puts version {version} of the {RESOLUTION_STREAM} stream at \
                             position {position}, the log at {}",
                            event.position
                        ),
                    });
                }
                self.seen.insert(*version);
                if self.at.includes(event) {
                    self.facts.insert(*version, Fact::of(event)?);
                }
            }
            i = j;
        }
        Ok(())
    }

    /// The gathered decisions folded in log order.
    fn fold(&self) -> Membership {
        let mut m = Membership::new();
        for fact in self.facts.values() {
            m.apply(&fact.decided.decision);
        }
        m
    }

    /// The overrides in force on the active customer `token` at the cut:
    /// set on it or on a token merged into it by then, not removed by
    /// then, not expired at the cut's time (when the cut is a time), and
    /// whose value still opens (a destroyed key: as if it did not exist).
    async fn overrides_on(
        &self,
        membership: &Membership,
        token: Uuid,
        opener: &SourceRecordOpener,
    ) -> Result<Vec<Override>, ProjectionError> {
        let mut in_force: BTreeMap<Uuid, &Fact> = BTreeMap::new();
        for fact in self.facts.values() {
            match &fact.decided.decision {
                Decision::ValueOverridden { override_id, .. } => {
                    in_force.insert(*override_id, fact);
                }
                Decision::OverrideRemoved { override_id, .. } => {
                    in_force.remove(override_id);
                }
                _ => {}
            }
        }
        let mut events: Vec<RecordedEvent> = Vec::new();
        let mut kept: Vec<(&Fact, Option<DateTime<Utc>>)> = Vec::new();
        for fact in in_force.into_values() {
            let Decision::ValueOverridden {
                token: on, expires_at, ..
            } = &fact.decided.decision
            else {
                continue;
            };
            let applies = match membership.status(*on) {
                Some(TokenStatus::Active) => *on == token,
                Some(TokenStatus::MergedInto(survivor)) => survivor == token,
                Some(TokenStatus::Erased) | None => false,
            };
            let expired = match (self.at, expires_at) {
                (AsOf::Time(t), Some(e)) => *e <= t,
                _ => false,
            };
            if let (true, false, Some(event)) = (applies, expired, &fact.event) {
                events.push(event.clone());
                kept.push((fact, *expires_at));
            }
        }
        let opened = opener.open_all(&events).await?;
        Ok(kept
            .into_iter()
            .zip(opened)
            .filter_map(|((fact, expires_at), opened)| match opened {
                OpenedEvent::Override { value: Some(value) } => Some(Override {
                    value,
                    by: match &fact.decided.by {
                        DecidedBy::Steward(id) | DecidedBy::Compliance(id) => id.clone(),
                        DecidedBy::Resolver => "resolver".to_owned(),
                    },
                    reason: fact.decided.reason.clone(),
                    position: fact.position.0,
                    expires_at,
                }),
                _ => None,
            })
            .collect())
    }

    /// The last gathered decision's position and time.
    fn last_event(&self) -> Option<(Position, DateTime<Utc>)> {
        self.facts.values().next_back().map(|f| (f.position, f.recorded_at))
    }

    /// The cut as a SQL condition on `decision_history` with its parameter
    /// number, and the value to bind.
    fn cut_sql(&self, n: usize) -> (String, CutValue) {
        match self.at {
            AsOf::Position(p) => (format!("position <= ${n}"), CutValue::Int(to_i64(p.0))),
            // Stored times are truncated to microseconds, so this keeps
            // every row the log would; the log decides in the end.
            AsOf::Time(t) => (format!("recorded_at <= ${n}"), CutValue::Text(time_text(t))),
        }
    }

    async fn index_by_tokens(&self, tokens: &BTreeSet<Uuid>) -> Result<Vec<IndexRow>, ProjectionError> {
        let keys: Vec<String> = tokens.iter().map(Uuid::to_string).collect();
        let mut out = Vec::new();
        for chunk in keys.chunks(1000) {
            let (cut, value) = self.cut_sql(chunk.len() + 1);
            let sql = format!(
                "SELECT position, stream_version, decision_type, other_tokens FROM decision_history \
                 WHERE token IN ({}) AND {cut}",
                placeholders(chunk.len(), 1)
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k.as_str());
            }
            q = match value {
                CutValue::Int(v) => q.bind(v),
                CutValue::Text(v) => q.bind(v),
            };
            for row in q.fetch_all(self.db.pool()).await? {
                let position: i64 = row.try_get(0)?;
                let version: i64 = row.try_get(1)?;
                let decision_type: String = row.try_get(2)?;
                let others: String = row.try_get(3)?;
                let position = Position(u64::try_from(position).unwrap_or(0));
                let other_tokens = serde_json::from_str::<Vec<String>>(&others)
                    .ok()
                    .and_then(|o| o.iter().map(|t| Uuid::parse_str(t).ok()).collect::<Option<Vec<Uuid>>>())
                    .ok_or_else(|| ProjectionError::Corrupt {
                        position: position.0,
                        reason: "the decision index's other_tokens is not a JSON array of tokens".into(),
                    })?;
                out.push(IndexRow {
                    position,
                    version: u64::try_from(version).unwrap_or(0),
                    decision_type,
                    other_tokens,
                });
            }
        }
        Ok(out)
    }

    async fn index_by_records(&self, records: &[String]) -> Result<Vec<(u64, Position)>, ProjectionError> {
        let mut out = Vec::new();
        for chunk in records.chunks(1000) {
            let (cut, value) = self.cut_sql(chunk.len() + 1);
            let sql = format!(
                "SELECT DISTINCT position, stream_version FROM decision_history WHERE record IN ({}) AND {cut}",
                placeholders(chunk.len(), 1)
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q.bind(r.as_str());
            }
            q = match value {
                CutValue::Int(v) => q.bind(v),
                CutValue::Text(v) => q.bind(v),
            };
            for row in q.fetch_all(self.db.pool()).await? {
                let position: i64 = row.try_get(0)?;
                let version: i64 = row.try_get(1)?;
                out.push((
                    u64::try_from(version).unwrap_or(0),
                    Position(u64::try_from(position).unwrap_or(0)),
                ));
            }
        }
        Ok(out)
    }
}

/// Events read per page.
const PAGE: usize = 500;

enum CutValue {
    Int(i64),
    Text(String),
}

/// A `decision_history` row as the index gives it.
struct IndexRow {
    position: Position,
    version: u64,
    decision_type: String,
    other_tokens: Vec<Uuid>,
}

/// `record` as of the cut, folded from its own stream as the customers
/// projection folds it: the last version at or before the cut that opens
/// (undecodable events are skipped), with its attributes when current and
/// the last event considered. `None` when no event of it lies at or before
/// the cut.
async fn member_as_of(
    store: &dyn EventStore,
    opener: &SourceRecordOpener,
    record: &str,
    at: AsOf,
) -> Result<Option<MemberFold>, ProjectionError> {
    let mut member: Option<(MemberAsOf, Option<CanonicalAttributes>)> = None;
    let mut last: Option<(Position, DateTime<Utc>)> = None;
    let mut next = 0u64;
    loop {
        let page = store
            .read_stream(record, StreamStart::Version(next), Direction::Forwards, PAGE)
            .await?;
        let Some(tail) = page.last() else { break };
        next = tail.version + 1;
        let full = page.len() == PAGE;
        // Versions follow positions: past a position cut, nothing later
        // can be inside it. Times are checked event by event.
        let past = matches!(at, AsOf::Position(_)) && page.iter().any(|e| !at.includes(e));
        let kept: Vec<RecordedEvent> = page.into_iter().filter(|e| at.includes(e)).collect();
        let opened = opener.open_all(&kept).await?;
        for (event, opened) in kept.iter().zip(opened) {
            last = later(last, Some((event.position, event.recorded_at)));
            let (system, source_id, state, attributes) = match opened {
                OpenedEvent::Version { system, content, .. } => {
                    let content = *content;
                    (system, Some(content.source_id), "current", Some(content.attributes))
                }
                OpenedEvent::Retracted { system, content, .. } => {
                    // Without the source's announcement the id stays the
                    // one the record had.
                    let previous = member.as_ref().and_then(|(m, _)| m.source_id.clone());
                    (system, content.map(|c| c.source_id).or(previous), "retracted", None)
                }
                OpenedEvent::Erased { system } => (system, None, "erased", None),
                OpenedEvent::Override { .. } | OpenedEvent::Other => continue,
            };
            member = Some((
                MemberAsOf {
                    record: record.to_owned(),
                    system,
                    source_id,
                    state: state.to_owned(),
                    position: event.position.0,
                    recorded_at: stored_time(event.recorded_at),
                },
                attributes,
            ));
        }
        if past || !full {
            break;
        }
    }
    Ok(member.map(|(m, a)| (m, a, last)))
}

/// A member, its attributes when current, and the last event considered.
type MemberFold = (
    MemberAsOf,
    Option<CanonicalAttributes>,
    Option<(Position, DateTime<Utc>)>,
);
