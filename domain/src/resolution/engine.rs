//! The resolver's state and rules, pure: which customer each record belongs
//! to, the blocking index, households and steward constraints.
//!
//! The engine is a deterministic fold: `observe` a record's features,
//! `resolve` it (which returns decisions and applies them), `command` for
//! stewards, and `apply` to replay stored decisions. New tokens and review
//! ids come from the caller (`Ids`), since the domain makes no random ids.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use uuid::Uuid;

use super::events::{
    Cause, Decided, DecidedBy, Decision, HouseholdChange, Retained, Review, ReviewOutcome, SealedValue,
};
use crate::matching::blocking;
use crate::matching::compare::{compare, ComparisonVector};
use crate::matching::features::MatchFeatures;
use crate::matching::model::{Band, Scorer};

/// Where new ids come from (random in production, counters in tests).
pub trait Ids {
    fn token(&mut self) -> Uuid;
    fn review_id(&mut self) -> Uuid;
    fn household_id(&mut self) -> Uuid;
}

/// Bounds on blocking work per record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A key's bucket stops growing at this size (a key that common carries
    /// no information; other keys still find the matches).
    pub max_bucket: usize,
    /// At most this many candidate records are scored per record.
    pub max_candidates: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bucket: 1_000,
            max_candidates: 4_000,
        }
    }
}

#[derive(Debug, Default)]
struct RecordSlot {
    stream: String,
    features: Option<MatchFeatures>,
    keys: Vec<u64>,
    dwelling: Option<u64>,
    customer: Option<u32>,
    /// The customer created for this record, whose token it gets back when
    /// split off again.
    original: Option<u32>,
    /// Records it must never be linked with.
    apart: Vec<u32>,
    /// Erased (or kept under a legal exception by an erasure): out of every
    /// customer and the index for good, never matched or decided again.
    erased: bool,
}

#[derive(Debug)]
struct CustomerSlot {
    token: Uuid,
    members: Vec<u32>,
    merged_into: Option<u32>,
    /// Customers whose redirect points here (so a later merge of this one
    /// re-points them, and a revival by a split does not capture them).
    absorbed: Vec<u32>,
    version: u64,
    household: Option<u32>,
    /// Erased: the token answers "erased" for ever.
    erased: bool,
}

#[derive(Debug)]
struct HouseholdSlot {
    id: Uuid,
    members: Vec<u32>,
}

/// A customer as the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerView {
    pub token: Uuid,
    /// The survivor this token redirects to, if it was merged away.
    pub merged_into: Option<Uuid>,
    pub version: u64,
    pub records: Vec<String>,
    pub household: Option<Uuid>,
    /// The customer was erased (it has no records any more).
    pub erased: bool,
}

/// Replaying a stored decision that does not fit the state: the log is not
/// what this engine wrote.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("decision {found} follows decision {expected_previous}")]
    Sequence { expected_previous: u64, found: u64 },
    #[error("decision {seq} names unknown token {token}")]
    UnknownToken { seq: u64, token: Uuid },
    #[error("decision {seq} names a record with no customer")]
    Unlinked { seq: u64 },
}

/// Why a steward command was refused. No personal data: tokens and ids only.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("customer {0} is unknown")]
    UnknownToken(Uuid),
    #[error("the source record is unknown to the resolver")]
    UnknownRecord,
    #[error("customer {token} was merged into {into}")]
    Merged { token: Uuid, into: Uuid },
    #[error("customer {token} is at version {actual}, not {expected}")]
    VersionMismatch { token: Uuid, expected: u64, actual: u64 },
    #[error("review item {0} is not open")]
    UnknownReview(Uuid),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("a reason is required")]
    ReasonRequired,
    #[error("override {0} is not in force on this customer")]
    UnknownOverride(Uuid),
    #[error("customer {0} was erased")]
    Erased(Uuid),
    /// The record is not (or no longer) in the customer the command names:
    /// it moved since the steward read it.
    #[error("the source record is not in customer {0}")]
    NotInCustomer(Uuid),
    /// The command no longer fits the current state (the record is already
    /// there, or is its customer's only record): another change came first.
    #[error("{0}")]
    Conflict(&'static str),
}

/// A steward's command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StewardCommand {
    /// `absorbed` becomes part of `survivor`.
    Merge { survivor: Uuid, absorbed: Uuid },
    /// Take a record out of its customer: into its own (its old token back
    /// if it had one, else a new one) or into the named customer. `from`,
    /// when given, is the customer the steward saw it in: if the record has
    /// left it since, nothing is applied (`NotInCustomer`), so a split never
    /// acts on a customer the steward did not name.
    Split {
        record: String,
        from: Option<Uuid>,
        into: Option<Uuid>,
    },
    /// Two records are different people (split apart if now together).
    NotAMatch { records: [String; 2] },
    /// Put a record into a customer whatever the score.
    ForceLink { record: String, token: Uuid },
    /// Close a review item: link the pair, keep it apart, or skip.
    CloseReview { review_id: Uuid, outcome: ReviewOutcome },
    /// Set a golden value by hand (the service sealed it and checked that
    /// it is a valid value of `attribute` and that `expires_at` is ahead).
    Override {
        token: Uuid,
        override_id: Uuid,
        attribute: String,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        value: SealedValue,
    },
    /// Withdraw an override in force on the customer.
    RemoveOverride { token: Uuid, override_id: Uuid },
    /// Erase the customer (a compliance user's command): every record,
    /// except those `retain` keeps under a named legal exception (record
    /// stream, exception).
    Erase {
        token: Uuid,
        request_id: Option<Uuid>,
        legal_basis: String,
        retain: Vec<(String, String)>,
    },
    /// The service withdraws an override whose time has come (decided by
    /// the resolver, not a steward).
    ExpireOverride { override_id: Uuid },
}

/// A command with who, why and the versions it was based on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRequest {
    pub command_id: Uuid,
    pub steward: String,
    pub reason: String,
    /// `If-Match`: each named customer must be at this version.
    pub expected: Vec<(Uuid, u64)>,
    pub command: StewardCommand,
}

/// Counters for metrics and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub records: usize,
    pub customers: usize,
    pub active_customers: usize,
    pub households: usize,
    pub index_keys: usize,
    pub open_reviews: usize,
    pub decisions: u64,
}

/// The resolver's state.
#[derive(Debug)]
pub struct Engine {
    scorer: Scorer,
    limits: Limits,
    records: Vec<RecordSlot>,
    by_stream: HashMap<String, u32>,
    customers: Vec<CustomerSlot>,
    by_token: HashMap<Uuid, u32>,
    index: HashMap<u64, Vec<u32>>,
    households: Vec<HouseholdSlot>,
    by_household: HashMap<Uuid, u32>,
    dwellings: HashMap<u64, u32>,
    reviews: HashMap<Uuid, (u32, u32)>,
    /// Overrides in force: the customer slot each was set on (its live
    /// customer follows merges) and its expiry.
    overrides: HashMap<Uuid, (u32, Option<chrono::DateTime<chrono::Utc>>)>,
    /// Every override ever set (in force or not) and the customer slot it
    /// was set on: an erasure destroys the keys of all of them, since the
    /// log keeps each value sealed.
    override_slots: HashMap<Uuid, u32>,
    seq: u64,
    /// How many indexed records hold each given and family name, for
    /// term-frequency adjustments.
    given_counts: HashMap<String, u32>,
    family_counts: HashMap<String, u32>,
    named: (u32, u32),
    /// Each household change, in decision order, with the dwelling of the
    /// record version that caused it.
    household_log: Vec<HouseholdLogEntry>,
    /// During a replay: the household changes (indices into
    /// `household_log`) whose causing source event, by log position, has
    /// not been observed yet.
    household_causes: HashMap<u64, Vec<usize>>,
}

/// A household change as `finish_replay` needs it.
#[derive(Debug)]
struct HouseholdLogEntry {
    record: u32,
    household: Option<Uuid>,
    /// The dwelling of the version that caused the change (`None`: not
    /// observed at its position; the record's latest dwelling is used).
    dwelling: Option<Option<u64>>,
}

struct Scored {
    customer: u32,
    total: f64,
    record: u32,
    vector: ComparisonVector,
    term_frequency: f64,
}

fn hash_str(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Engine {
    pub fn new(scorer: Scorer, limits: Limits) -> Self {
        Self {
            scorer,
            limits,
            records: Vec::new(),
            by_stream: HashMap::new(),
            customers: Vec::new(),
            by_token: HashMap::new(),
            index: HashMap::new(),
            households: Vec::new(),
            by_household: HashMap::new(),
            dwellings: HashMap::new(),
            reviews: HashMap::new(),
            overrides: HashMap::new(),
            override_slots: HashMap::new(),
            seq: 0,
            given_counts: HashMap::new(),
            family_counts: HashMap::new(),
            named: (0, 0),
            household_log: Vec::new(),
            household_causes: HashMap::new(),
        }
    }

    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// The number of the last decision applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn rule_set(&self) -> String {
        self.scorer.parameters().version.clone()
    }

    fn slot(&mut self, stream: &str) -> u32 {
        if let Some(i) = self.by_stream.get(stream) {
            return *i;
        }
        let i = u32::try_from(self.records.len()).unwrap_or(u32::MAX);
        self.records.push(RecordSlot {
            stream: stream.to_owned(),
            ..RecordSlot::default()
        });
        self.by_stream.insert(stream.to_owned(), i);
        i
    }

    /// Records the current features of a record (`None`: retracted or
    /// erased, so it is no longer found by blocking).
    pub fn observe(&mut self, stream: &str, features: Option<MatchFeatures>) {
        let r = self.slot(stream);
        // An erased record stays out of the index whatever a replay feeds.
        let features = if self.records[r as usize].erased {
            None
        } else {
            features
        };
        let old_keys = std::mem::take(&mut self.records[r as usize].keys);
        for k in old_keys {
            if let Entry::Occupied(mut e) = self.index.entry(k) {
                e.get_mut().retain(|x| *x != r);
                if e.get().is_empty() {
                    e.remove();
                }
            }
        }
        let keys = features.as_ref().map(blocking::keys).unwrap_or_default();
        let mut kept = Vec::with_capacity(keys.len());
        for k in keys {
            let bucket = self.index.entry(k).or_default();
            if bucket.len() < self.limits.max_bucket {
                bucket.push(r);
                kept.push(k);
            }
        }
        if let Some(old) = self.records[r as usize].features.take() {
            self.count_names(&old, false);
        }
        if let Some(new) = &features {
            self.count_names(new, true);
        }
        let slot = &mut self.records[r as usize];
        slot.dwelling = features
            .as_ref()
            .and_then(|f| f.dwelling_keys().next())
            .map(|k| hash_str(&k));
        slot.keys = kept;
        slot.features = features;
    }

    /// [`Engine::observe`] during a replay, for the source event at log
    /// `position`: a household change that event caused is tied to the
    /// dwelling of this version of the record, not of a later one.
    pub fn observe_at(&mut self, stream: &str, position: u64, features: Option<MatchFeatures>) {
        self.observe(stream, features);
        if let Some(entries) = self.household_causes.remove(&position) {
            let dwelling = self
                .by_stream
                .get(stream)
                .and_then(|r| self.records[*r as usize].dwelling);
            for i in entries {
                if let Some(entry) = self.household_log.get_mut(i) {
                    entry.dwelling = Some(dwelling);
                }
            }
        }
    }

    fn count_names(&mut self, f: &MatchFeatures, add: bool) {
        fn bump(map: &mut HashMap<String, u32>, total: &mut u32, name: &Option<String>, add: bool) {
            let Some(name) = name else { return };
            if add {
                *map.entry(name.clone()).or_default() += 1;
                *total += 1;
            } else if let Entry::Occupied(mut e) = map.entry(name.clone()) {
                *e.get_mut() -= 1;
                *total -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        bump(&mut self.given_counts, &mut self.named.0, &f.given, add);
        bump(&mut self.family_counts, &mut self.named.1, &f.family, add);
    }

    /// The term-frequency adjustment of a pair (exact name agreements).
    fn term_frequency(&self, f: &MatchFeatures, v: &ComparisonVector) -> f64 {
        use crate::matching::compare::Attribute;
        let share = |map: &HashMap<String, u32>, total: u32, name: &Option<String>| {
            name.as_ref()
                .and_then(|n| map.get(n))
                .map_or(0.0, |c| f64::from(*c) / f64::from(total.max(1)))
        };
        let mut adj = 0.0;
        if v[Attribute::GivenName as usize] == Some(0) {
            adj += self
                .scorer
                .term_frequency(Attribute::GivenName, share(&self.given_counts, self.named.0, &f.given));
        }
        if v[Attribute::FamilyName as usize] == Some(0) {
            adj += self.scorer.term_frequency(
                Attribute::FamilyName,
                share(&self.family_counts, self.named.1, &f.family),
            );
        }
        adj
    }

    fn live_customer(&self, c: u32) -> u32 {
        let mut c = c;
        while let Some(next) = self.customers[c as usize].merged_into {
            c = next;
        }
        c
    }

    fn kept_apart(&self, r: u32, customer: u32) -> bool {
        self.records[r as usize]
            .apart
            .iter()
            .any(|o| self.records[*o as usize].customer.map(|c| self.live_customer(c)) == Some(customer))
    }

    fn customers_compatible(&self, a: u32, b: u32) -> bool {
        let (small, other) = if self.customers[a as usize].members.len() <= self.customers[b as usize].members.len() {
            (a, b)
        } else {
            (b, a)
        };
        !self.customers[small as usize]
            .members
            .iter()
            .any(|m| self.kept_apart(*m, other))
    }

    /// Whether record `r` scores at or above the contradiction threshold
    /// against every member of `customer` (the first 200 checked).
    fn consistent_with(&self, r: u32, customer: u32) -> bool {
        let Some(f) = self.records[r as usize].features.as_ref() else {
            return true;
        };
        let floor = self.scorer.rules().thresholds.contradiction;
        self.customers[customer as usize]
            .members
            .iter()
            .filter(|m| **m != r)
            .take(200)
            .filter_map(|m| self.records[*m as usize].features.as_ref())
            .all(|g| {
                let v = compare(f, g);
                self.scorer.total(&v) >= floor && self.scorer.veto(&v).is_none()
            })
    }

    /// Whether no pair of records across two customers contradicts (the
    /// first 400 pairs checked).
    fn customers_consistent(&self, a: u32, b: u32) -> bool {
        let floor = self.scorer.rules().thresholds.contradiction;
        let feats = |c: u32| {
            self.customers[c as usize]
                .members
                .iter()
                .filter_map(|m| self.records[*m as usize].features.as_ref())
                .take(20)
                .collect::<Vec<_>>()
        };
        let (fa, fb) = (feats(a), feats(b));
        fa.iter().all(|x| {
            fb.iter().all(|y| {
                let v = compare(x, y);
                self.scorer.total(&v) >= floor && self.scorer.veto(&v).is_none()
            })
        })
    }

    /// Scores a record against its blocking candidates, best per customer,
    /// best first.
    fn score(&self, r: u32) -> Vec<Scored> {
        let Some(f) = self.records[r as usize].features.as_ref() else {
            return Vec::new();
        };
        // Candidates: every record sharing a key, each once (sorting a
        // vector is cheaper than hashing into a set on this hot path).
        let mut candidates: Vec<u32> = Vec::new();
        for k in &self.records[r as usize].keys {
            if let Some(bucket) = self.index.get(k) {
                candidates.extend(bucket.iter().copied().filter(|c| *c != r));
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates.truncate(self.limits.max_candidates);
        let mut scored: Vec<Scored> = Vec::with_capacity(candidates.len());
        for c in candidates {
            let other = &self.records[c as usize];
            let (Some(of), Some(customer)) = (other.features.as_ref(), other.customer) else {
                continue;
            };
            let customer = self.live_customer(customer);
            let vector = compare(f, of);
            let term_frequency = self.term_frequency(f, &vector);
            let total = self.scorer.total(&vector) + term_frequency;
            scored.push(Scored {
                customer,
                total,
                record: c,
                vector,
                term_frequency,
            });
        }
        // Best per customer (ties: the lowest record number).
        scored.sort_unstable_by(|a, b| {
            a.customer
                .cmp(&b.customer)
                .then(b.total.total_cmp(&a.total))
                .then(a.record.cmp(&b.record))
        });
        scored.dedup_by_key(|s| s.customer);
        let best = scored;
        let mut out: Vec<Scored> = best;
        out.sort_by(|a, b| b.total.total_cmp(&a.total).then(a.customer.cmp(&b.customer)));
        out
    }

    fn decided(&self, seq_offset: u64, cause: &Cause, by: DecidedBy, reason: &str, decision: Decision) -> Decided {
        Decided {
            seq: self.seq + seq_offset,
            cause: cause.clone(),
            by,
            reason: reason.to_owned(),
            rule_set: self.rule_set(),
            decision,
            households: Vec::new(),
        }
    }

    /// Decides what a record's latest version means and applies it. The
    /// record's features must have been `observe`d first. Returns the
    /// decisions made (none when nothing changes).
    pub fn resolve(&mut self, stream: &str, cause: Cause, ids: &mut dyn Ids) -> Vec<Decided> {
        let r = self.slot(stream);
        if self.records[r as usize].features.is_none() || self.records[r as usize].erased {
            return Vec::new();
        }
        let scored = self.score(r);
        let mut out: Vec<Decision> = Vec::new();
        let current = self.records[r as usize].customer.map(|c| self.live_customer(c));
        let linkable: Vec<&Scored> = scored
            .iter()
            .filter(|s| {
                self.scorer.pair_band(&s.vector, s.total) == Band::Link
                    && Some(s.customer) != current
                    && !self.kept_apart(r, s.customer)
            })
            .collect();
        // A record linkable by its best pair but contradicting another
        // member goes to review instead.
        let (linkable, contradicted): (Vec<&Scored>, Vec<&Scored>) =
            linkable.into_iter().partition(|s| self.consistent_with(r, s.customer));
        let token = |c: u32| self.customers[c as usize].token;
        let review_for = |s: &Scored, own: Uuid, ids: &mut dyn Ids| Decision::ReviewRequested {
            review: Review {
                review_id: ids.review_id(),
                record: stream.to_owned(),
                token: own,
                candidate: token(s.customer),
                candidate_record: self.records[s.record as usize].stream.clone(),
                explanation: self.scorer.explain_adjusted(&s.vector, s.term_frequency),
            },
        };
        match current {
            None => {
                // The customers this record links to, if they can all be one
                // customer. A record that fits two customers that must stay
                // apart (a Jr and a Sr, two people kept apart by a steward)
                // is ambiguous: it links to neither and goes to review.
                let mut group: Vec<&Scored> = Vec::new();
                let mut ambiguous = false;
                for s in &linkable {
                    if group.iter().all(|g| {
                        self.customers_compatible(g.customer, s.customer)
                            && self.customers_consistent(g.customer, s.customer)
                    }) {
                        group.push(s);
                    } else {
                        ambiguous = true;
                    }
                }
                if let (Some(first), false) = (group.first(), ambiguous) {
                    out.push(Decision::RecordLinked {
                        token: token(first.customer),
                        record: stream.to_owned(),
                        explanation: Some(self.scorer.explain_adjusted(&first.vector, first.term_frequency)),
                        matched_record: Some(self.records[first.record as usize].stream.clone()),
                        forced: false,
                    });
                    if group.len() > 1 {
                        out.push(Decision::CustomersMerged {
                            survivor: token(first.customer),
                            absorbed: group[1..].iter().map(|s| token(s.customer)).collect(),
                            record: Some(stream.to_owned()),
                            explanations: group[1..]
                                .iter()
                                .map(|s| self.scorer.explain_adjusted(&s.vector, s.term_frequency))
                                .collect(),
                        });
                    }
                } else {
                    let new_token = ids.token();
                    let nearest = scored.first();
                    out.push(Decision::CustomerCreated {
                        token: new_token,
                        record: stream.to_owned(),
                        nearest: nearest.map(|s| self.scorer.explain_adjusted(&s.vector, s.term_frequency)),
                    });
                    if let Some(s) = linkable.first().or(contradicted.first()) {
                        out.push(review_for(s, new_token, ids));
                    } else if let Some(s) =
                        nearest.filter(|s| self.scorer.pair_band(&s.vector, s.total) == Band::Review)
                    {
                        if !self.kept_apart(r, s.customer) {
                            out.push(review_for(s, new_token, ids));
                        }
                    }
                }
            }
            Some(own) => {
                let alone = self.customers[own as usize].members.len() <= 1;
                let own_best = scored.iter().find(|s| s.customer == own).map(|s| s.total);
                let own_links = scored
                    .iter()
                    .find(|s| s.customer == own)
                    .is_some_and(|s| self.scorer.pair_band(&s.vector, s.total) == Band::Link);
                if let Some(first) = linkable.first() {
                    if alone || own_links {
                        // The record bridges its customer and others.
                        let (survivor, first_absorbed) = if alone {
                            (first.customer, own)
                        } else {
                            (own, first.customer)
                        };
                        let mut absorbed = vec![token(first_absorbed)];
                        let mut explanations = vec![self.scorer.explain_adjusted(&first.vector, first.term_frequency)];
                        let mut members = vec![survivor, first_absorbed];
                        if self.customers_compatible(survivor, first_absorbed)
                            && self.customers_consistent(survivor, first_absorbed)
                        {
                            for s in &linkable[1..] {
                                if members.iter().all(|m| {
                                    self.customers_compatible(*m, s.customer)
                                        && self.customers_consistent(*m, s.customer)
                                }) {
                                    members.push(s.customer);
                                    absorbed.push(token(s.customer));
                                    explanations.push(self.scorer.explain_adjusted(&s.vector, s.term_frequency));
                                }
                            }
                            out.push(Decision::CustomersMerged {
                                survivor: token(survivor),
                                absorbed,
                                record: Some(stream.to_owned()),
                                explanations,
                            });
                        } else {
                            out.push(review_for(first, token(own), ids));
                        }
                    } else if own_best.is_none_or(|t| first.total > t) {
                        out.push(Decision::RecordMoved {
                            record: stream.to_owned(),
                            from: token(own),
                            to: token(first.customer),
                            explanation: self.scorer.explain_adjusted(&first.vector, first.term_frequency),
                            matched_record: self.records[first.record as usize].stream.clone(),
                        });
                    }
                }
            }
        }
        let cause_ref = &cause;
        let mut decided: Vec<Decided> = Vec::with_capacity(out.len());
        for d in out {
            let item = self.decided(1, cause_ref, DecidedBy::Resolver, "score", d);
            self.apply_unchecked(&item);
            decided.push(item);
        }
        // Households: the record's dwelling decides its customer's. The
        // change rides on the last decision, or is a decision of its own.
        if let Some(change) = self.household_change(r, ids) {
            self.apply_households(std::slice::from_ref(&change));
            self.household_log.push(HouseholdLogEntry {
                record: r,
                household: change.household,
                dwelling: Some(self.records[r as usize].dwelling),
            });
            match decided.last_mut() {
                Some(last) => last.households.push(change),
                None => {
                    let mut item = self.decided(
                        1,
                        cause_ref,
                        DecidedBy::Resolver,
                        "dwelling",
                        Decision::HouseholdChanged { token: change.token },
                    );
                    self.apply_unchecked(&item);
                    item.households.push(change);
                    decided.push(item);
                }
            }
        }
        decided
    }

    fn household_change(&mut self, r: u32, ids: &mut dyn Ids) -> Option<HouseholdChange> {
        let customer = self.live_customer(self.records[r as usize].customer?);
        let dwelling = self.records[r as usize].dwelling?;
        let household = match self.dwellings.get(&dwelling) {
            Some(h) => self.households[*h as usize].id,
            None => {
                let id = ids.household_id();
                let h = u32::try_from(self.households.len()).unwrap_or(u32::MAX);
                self.households.push(HouseholdSlot {
                    id,
                    members: Vec::new(),
                });
                self.by_household.insert(id, h);
                self.dwellings.insert(dwelling, h);
                id
            }
        };
        let current = self.customers[customer as usize]
            .household
            .map(|h| self.households[h as usize].id);
        (current != Some(household)).then(|| HouseholdChange {
            token: self.customers[customer as usize].token,
            household: Some(household),
            reason: "same_dwelling".to_owned(),
        })
    }

    fn apply_households(&mut self, changes: &[HouseholdChange]) {
        for change in changes {
            let Some(&c) = self.by_token.get(&change.token) else {
                continue;
            };
            if let Some(old) = self.customers[c as usize].household {
                self.households[old as usize].members.retain(|m| *m != c);
            }
            let new = change.household.and_then(|id| self.by_household.get(&id).copied());
            if let Some(h) = new {
                self.households[h as usize].members.push(c);
            }
            self.customers[c as usize].household = new;
        }
    }

    /// Replays a stored decision.
    pub fn apply(&mut self, d: &Decided) -> Result<(), ReplayError> {
        if d.seq != self.seq + 1 {
            return Err(ReplayError::Sequence {
                expected_previous: self.seq,
                found: d.seq,
            });
        }
        for t in d.decision.tokens() {
            let created = matches!(&d.decision, Decision::CustomerCreated { token, .. } if *token == t)
                || matches!(&d.decision, Decision::RecordSplit { to, created: true, .. } if *to == t);
            if !created && !self.by_token.contains_key(&t) {
                return Err(ReplayError::UnknownToken { seq: d.seq, token: t });
            }
        }
        for h in &d.households {
            if let Some(id) = h.household {
                if let Entry::Vacant(e) = self.by_household.entry(id) {
                    let i = u32::try_from(self.households.len()).unwrap_or(u32::MAX);
                    self.households.push(HouseholdSlot {
                        id,
                        members: Vec::new(),
                    });
                    e.insert(i);
                }
            }
        }
        self.apply_unchecked(d);
        self.apply_households(&d.households);
        // Which record's dwelling each household change came from, for
        // `finish_replay` (automatic decisions only: they follow a record).
        if let (Cause::Source { stream, position, .. }, Some(h)) = (&d.cause, d.households.first()) {
            let r = self.slot(stream);
            self.household_causes
                .entry(*position)
                .or_default()
                .push(self.household_log.len());
            self.household_log.push(HouseholdLogEntry {
                record: r,
                household: h.household,
                dwelling: None,
            });
        }
        Ok(())
    }

    /// After a replay (decisions applied, then the features observed):
    /// finds each household's dwelling again from its members' records, so
    /// new records at that dwelling join it.
    ///
    /// Each dwelling keeps the household first assigned for it, as in the
    /// live engine: the household changes are taken in decision order with
    /// the dwelling of the record version that caused them, as
    /// [`Engine::observe_at`] saw it (the resolver's replay). A record that
    /// moved house since has two changes, each with its own dwelling: taking
    /// its latest dwelling for both would give the new address the old
    /// household. Without positions (features observed with `observe`), the
    /// record's latest dwelling stands in.
    pub fn finish_replay(&mut self) {
        self.household_causes.clear();
        for entry in &self.household_log {
            let dwelling = entry.dwelling.unwrap_or(self.records[entry.record as usize].dwelling);
            let (Some(d), Some(h)) = (dwelling, entry.household) else {
                continue;
            };
            if let Some(&hi) = self.by_household.get(&h) {
                self.dwellings.entry(d).or_insert(hi);
            }
        }
    }

    fn customer_slot(&mut self, token: Uuid) -> u32 {
        if let Some(c) = self.by_token.get(&token) {
            return *c;
        }
        let c = u32::try_from(self.customers.len()).unwrap_or(u32::MAX);
        self.customers.push(CustomerSlot {
            token,
            members: Vec::new(),
            merged_into: None,
            absorbed: Vec::new(),
            version: 0,
            household: None,
            erased: false,
        });
        self.by_token.insert(token, c);
        c
    }

    fn attach(&mut self, r: u32, c: u32) {
        if let Some(old) = self.records[r as usize].customer {
            self.customers[old as usize].members.retain(|m| *m != r);
        }
        self.records[r as usize].customer = Some(c);
        self.customers[c as usize].members.push(r);
    }

    fn apply_unchecked(&mut self, d: &Decided) {
        self.seq = d.seq;
        match &d.decision {
            Decision::CustomerCreated { token, record, .. } => {
                let r = self.slot(record);
                let c = self.customer_slot(*token);
                self.attach(r, c);
                if self.records[r as usize].original.is_none() {
                    self.records[r as usize].original = Some(c);
                }
            }
            Decision::RecordLinked {
                token, record, forced, ..
            } => {
                let r = self.slot(record);
                let c = self.customer_slot(*token);
                let left = self.records[r as usize].customer.filter(|old| *old != c);
                self.attach(r, c);
                // A steward's forced link keeps the record apart from the
                // customer it left, as a split does, so the next version of
                // the record is not moved back.
                if let (true, Some(left)) = (*forced, left) {
                    for m in self.customers[left as usize].members.clone() {
                        if !self.records[r as usize].apart.contains(&m) {
                            self.records[r as usize].apart.push(m);
                        }
                        if !self.records[m as usize].apart.contains(&r) {
                            self.records[m as usize].apart.push(r);
                        }
                    }
                }
                // A forced link overrides earlier not-a-match marks.
                let members = self.customers[c as usize].members.clone();
                self.records[r as usize].apart.retain(|o| !members.contains(o));
                for m in members {
                    self.records[m as usize].apart.retain(|o| *o != r);
                }
            }
            Decision::CustomersMerged { survivor, absorbed, .. } => {
                let s = self.customer_slot(*survivor);
                for a in absorbed {
                    let a = self.customer_slot(*a);
                    let moved = std::mem::take(&mut self.customers[a as usize].members);
                    for r in &moved {
                        self.records[*r as usize].customer = Some(s);
                    }
                    // A merge overrides not-a-match marks between the two.
                    let survivors = self.customers[s as usize].members.clone();
                    for r in &moved {
                        self.records[*r as usize].apart.retain(|o| !survivors.contains(o));
                    }
                    for r in &survivors {
                        self.records[*r as usize].apart.retain(|o| !moved.contains(o));
                    }
                    self.customers[s as usize].members.extend(moved);
                    self.customers[a as usize].merged_into = Some(s);
                    // Redirects to the absorbed one now point at the survivor.
                    let mut redirected = std::mem::take(&mut self.customers[a as usize].absorbed);
                    for r in &redirected {
                        self.customers[*r as usize].merged_into = Some(s);
                    }
                    redirected.push(a);
                    self.customers[s as usize].absorbed.extend(redirected);
                    if let Some(h) = self.customers[a as usize].household.take() {
                        self.households[h as usize].members.retain(|m| *m != a);
                    }
                }
            }
            Decision::RecordMoved { record, to, .. } => {
                let r = self.slot(record);
                let c = self.customer_slot(*to);
                self.attach(r, c);
            }
            Decision::RecordSplit { record, from, to, .. } => {
                let r = self.slot(record);
                let c = self.customer_slot(*to);
                if let Some(previous) = self.customers[c as usize].merged_into.take() {
                    self.customers[previous as usize].absorbed.retain(|x| *x != c);
                }
                self.attach(r, c);
                // Kept apart from the customer it left.
                let f = self.customer_slot(*from);
                let rest = self.customers[f as usize].members.clone();
                for m in &rest {
                    if !self.records[r as usize].apart.contains(m) {
                        self.records[r as usize].apart.push(*m);
                    }
                    if !self.records[*m as usize].apart.contains(&r) {
                        self.records[*m as usize].apart.push(r);
                    }
                }
            }
            Decision::NotAMatchMarked { records, .. } => {
                let a = self.slot(&records[0]);
                let b = self.slot(&records[1]);
                if !self.records[a as usize].apart.contains(&b) {
                    self.records[a as usize].apart.push(b);
                    self.records[b as usize].apart.push(a);
                }
            }
            Decision::ReviewRequested { review } => {
                let r = self.slot(&review.record);
                if let Some(&c) = self.by_token.get(&review.candidate) {
                    self.reviews.insert(review.review_id, (r, c));
                }
            }
            Decision::ReviewClosed { review_id, .. } => {
                self.reviews.remove(review_id);
            }
            Decision::HouseholdChanged { .. } => {}
            Decision::ValueOverridden {
                token,
                override_id,
                expires_at,
                ..
            } => {
                let c = self.customer_slot(*token);
                self.overrides.insert(*override_id, (c, *expires_at));
                self.override_slots.insert(*override_id, c);
            }
            Decision::OverrideRemoved { override_id, .. } => {
                self.overrides.remove(override_id);
            }
            Decision::CustomerErased {
                token,
                absorbed,
                records,
                overrides,
                retained,
                ..
            } => {
                let streams = records.iter().chain(retained.iter().map(|k| &k.record));
                for stream in streams.cloned().collect::<Vec<_>>() {
                    let r = self.slot(&stream);
                    self.observe(&stream, None);
                    if let Some(old) = self.records[r as usize].customer.take() {
                        self.customers[old as usize].members.retain(|m| *m != r);
                    }
                    self.records[r as usize].erased = true;
                }
                for t in std::iter::once(token).chain(absorbed) {
                    let c = self.customer_slot(*t);
                    self.customers[c as usize].erased = true;
                    self.customers[c as usize].members.clear();
                    if let Some(h) = self.customers[c as usize].household.take() {
                        self.households[h as usize].members.retain(|m| *m != c);
                    }
                }
                for o in overrides {
                    self.overrides.remove(o);
                    self.override_slots.remove(o);
                }
                self.reviews
                    .retain(|_, (r, c)| !self.records[*r as usize].erased && !self.customers[*c as usize].erased);
            }
        }
        for t in d.decision.versioned_tokens() {
            if let Some(&c) = self.by_token.get(&t) {
                self.customers[c as usize].version += 1;
            }
        }
    }

    fn active(&self, token: Uuid) -> Result<u32, CommandError> {
        let c = *self.by_token.get(&token).ok_or(CommandError::UnknownToken(token))?;
        if self.customers[c as usize].erased {
            return Err(CommandError::Erased(token));
        }
        if self.customers[c as usize].merged_into.is_some() {
            let into = self.customers[self.live_customer(c) as usize].token;
            return Err(CommandError::Merged { token, into });
        }
        Ok(c)
    }

    fn linked_record(&self, stream: &str) -> Result<(u32, u32), CommandError> {
        let r = *self.by_stream.get(stream).ok_or(CommandError::UnknownRecord)?;
        let c = self.records[r as usize].customer.ok_or(CommandError::UnknownRecord)?;
        Ok((r, self.live_customer(c)))
    }

    /// Runs a steward command: checks it against the state and the expected
    /// versions, then applies and returns its decisions. Nothing is applied
    /// when it is refused.
    pub fn command(&mut self, request: &CommandRequest, ids: &mut dyn Ids) -> Result<Vec<Decided>, CommandError> {
        if request.reason.trim().is_empty() {
            return Err(CommandError::ReasonRequired);
        }
        for (token, expected) in &request.expected {
            let c = *self.by_token.get(token).ok_or(CommandError::UnknownToken(*token))?;
            let actual = self.customers[c as usize].version;
            if actual != *expected {
                return Err(CommandError::VersionMismatch {
                    token: *token,
                    expected: *expected,
                    actual,
                });
            }
        }
        let cause = Cause::Command {
            command_id: request.command_id,
        };
        let mut out: Vec<Decision> = Vec::new();
        match &request.command {
            StewardCommand::Merge { survivor, absorbed } => {
                let s = self.active(*survivor)?;
                let a = self.active(*absorbed)?;
                if s == a {
                    return Err(CommandError::Invalid("a customer cannot be merged into itself"));
                }
                out.push(Decision::CustomersMerged {
                    survivor: *survivor,
                    absorbed: vec![*absorbed],
                    record: None,
                    explanations: Vec::new(),
                });
            }
            StewardCommand::Split {
                record,
                from: named,
                into,
            } => {
                let (r, from) = self.linked_record(record)?;
                if let Some(t) = named {
                    if self.active(*t)? != from {
                        return Err(CommandError::NotInCustomer(*t));
                    }
                }
                if self.customers[from as usize].members.len() < 2 {
                    return Err(CommandError::Conflict("the record is its customer's only record"));
                }
                let (to, created) = match into {
                    Some(t) => {
                        let c = self.active(*t)?;
                        if c == from {
                            return Err(CommandError::Conflict("the record is already in that customer"));
                        }
                        (*t, false)
                    }
                    None => match self.records[r as usize].original {
                        // Its own token back, if it was merged away.
                        Some(o) if o != from && self.customers[o as usize].members.is_empty() => {
                            (self.customers[o as usize].token, false)
                        }
                        _ => (ids.token(), true),
                    },
                };
                out.push(Decision::RecordSplit {
                    record: record.clone(),
                    from: self.customers[from as usize].token,
                    to,
                    created,
                });
            }
            StewardCommand::NotAMatch { records } => {
                if records[0] == records[1] {
                    return Err(CommandError::Invalid("a record is always a match of itself"));
                }
                let (_, ca) = self.linked_record(&records[0])?;
                let (rb, cb) = self.linked_record(&records[1])?;
                let tokens = [self.customers[ca as usize].token, self.customers[cb as usize].token];
                out.push(Decision::NotAMatchMarked {
                    records: records.clone(),
                    tokens,
                });
                if ca == cb {
                    let original = self.records[rb as usize].original;
                    let (to, created) = match original {
                        Some(o) if o != ca && self.customers[o as usize].members.is_empty() => {
                            (self.customers[o as usize].token, false)
                        }
                        _ => (ids.token(), true),
                    };
                    out.push(Decision::RecordSplit {
                        record: records[1].clone(),
                        from: tokens[0],
                        to,
                        created,
                    });
                }
            }
            StewardCommand::ForceLink { record, token } => {
                let (_, from) = self.linked_record(record)?;
                let to = self.active(*token)?;
                if from == to {
                    return Err(CommandError::Conflict("the record is already in that customer"));
                }
                if self.customers[from as usize].members.len() == 1 {
                    out.push(Decision::CustomersMerged {
                        survivor: *token,
                        absorbed: vec![self.customers[from as usize].token],
                        record: None,
                        explanations: Vec::new(),
                    });
                } else {
                    out.push(Decision::RecordLinked {
                        token: *token,
                        record: record.clone(),
                        explanation: None,
                        matched_record: None,
                        forced: true,
                    });
                }
            }
            StewardCommand::CloseReview { review_id, outcome } => {
                let (r, c) = *self
                    .reviews
                    .get(review_id)
                    .ok_or(CommandError::UnknownReview(*review_id))?;
                let record = self.records[r as usize].stream.clone();
                let candidate = self.live_customer(c);
                let (_, own) = self.linked_record(&record)?;
                match outcome {
                    ReviewOutcome::Linked if own != candidate => {
                        let token = self.customers[candidate as usize].token;
                        if self.customers[own as usize].members.len() == 1 {
                            out.push(Decision::CustomersMerged {
                                survivor: token,
                                absorbed: vec![self.customers[own as usize].token],
                                record: None,
                                explanations: Vec::new(),
                            });
                        } else {
                            out.push(Decision::RecordLinked {
                                token,
                                record: record.clone(),
                                explanation: None,
                                matched_record: None,
                                forced: true,
                            });
                        }
                    }
                    ReviewOutcome::KeptApart if own != candidate => {
                        // Apart from every record of the candidate.
                        for m in self.customers[candidate as usize].members.clone() {
                            out.push(Decision::NotAMatchMarked {
                                records: [record.clone(), self.records[m as usize].stream.clone()],
                                tokens: [
                                    self.customers[own as usize].token,
                                    self.customers[candidate as usize].token,
                                ],
                            });
                        }
                    }
                    _ => {}
                }
                out.push(Decision::ReviewClosed {
                    review_id: *review_id,
                    outcome: *outcome,
                });
            }
            StewardCommand::Override {
                token,
                override_id,
                attribute,
                expires_at,
                value,
            } => {
                self.active(*token)?;
                if crate::survivorship::GoldenAttribute::parse(attribute).is_none() {
                    return Err(CommandError::Invalid("no such golden attribute"));
                }
                if self.overrides.contains_key(override_id) {
                    return Err(CommandError::Invalid("the override id is taken"));
                }
                out.push(Decision::ValueOverridden {
                    token: *token,
                    override_id: *override_id,
                    attribute: attribute.clone(),
                    expires_at: *expires_at,
                    value: value.clone(),
                });
            }
            StewardCommand::RemoveOverride { token, override_id } => {
                let c = self.active(*token)?;
                match self.overrides.get(override_id) {
                    Some((on, _)) if self.live_customer(*on) == c => {}
                    _ => return Err(CommandError::UnknownOverride(*override_id)),
                }
                out.push(Decision::OverrideRemoved {
                    token: *token,
                    override_id: *override_id,
                    expired: false,
                });
            }
            StewardCommand::Erase {
                token,
                request_id,
                legal_basis,
                retain,
            } => {
                let c = self.active(*token)?;
                if legal_basis.trim().is_empty() {
                    return Err(CommandError::Invalid("a legal basis is required"));
                }
                let members: Vec<String> = self.customers[c as usize]
                    .members
                    .iter()
                    .map(|r| self.records[*r as usize].stream.clone())
                    .collect();
                if retain.iter().any(|(record, _)| !members.contains(record)) {
                    return Err(CommandError::Invalid("a record to retain is not the customer's"));
                }
                if retain.iter().any(|(_, exception)| exception.trim().is_empty()) {
                    return Err(CommandError::Invalid("a retained record needs its legal exception"));
                }
                let records = members
                    .into_iter()
                    .filter(|m| !retain.iter().any(|(r, _)| r == m))
                    .collect();
                let absorbed = self.customers[c as usize]
                    .absorbed
                    .iter()
                    .map(|a| self.customers[*a as usize].token)
                    .collect();
                // Every override set on it, also those removed or expired:
                // the log keeps each value sealed under its own key.
                let mut overrides: Vec<Uuid> = self
                    .override_slots
                    .iter()
                    .filter(|(_, on)| self.live_customer(**on) == c)
                    .map(|(id, _)| *id)
                    .collect();
                overrides.sort();
                out.push(Decision::CustomerErased {
                    token: *token,
                    absorbed,
                    records,
                    overrides,
                    retained: retain
                        .iter()
                        .map(|(record, exception)| Retained {
                            record: record.clone(),
                            exception: exception.trim().to_owned(),
                        })
                        .collect(),
                    request_id: *request_id,
                    legal_basis: legal_basis.trim().to_owned(),
                });
            }
            StewardCommand::ExpireOverride { override_id } => {
                let (on, _) = *self
                    .overrides
                    .get(override_id)
                    .ok_or(CommandError::UnknownOverride(*override_id))?;
                let live = self.live_customer(on);
                out.push(Decision::OverrideRemoved {
                    token: self.customers[live as usize].token,
                    override_id: *override_id,
                    expired: true,
                });
            }
        }
        let by = match &request.command {
            StewardCommand::ExpireOverride { .. } => DecidedBy::Resolver,
            StewardCommand::Erase { .. } => DecidedBy::Compliance(request.steward.clone()),
            _ => DecidedBy::Steward(request.steward.clone()),
        };
        let mut decided = Vec::with_capacity(out.len());
        for d in out {
            let item = self.decided(1, &cause, by.clone(), &request.reason, d);
            self.apply_unchecked(&item);
            decided.push(item);
        }
        Ok(decided)
    }

    /// Overrides in force whose expiry is at or before `now`, oldest
    /// expiry first: the service expires them with
    /// [`StewardCommand::ExpireOverride`].
    pub fn due_overrides(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<Uuid> {
        let mut due: Vec<(chrono::DateTime<chrono::Utc>, Uuid)> = self
            .overrides
            .iter()
            .filter_map(|(id, (_, expires_at))| expires_at.filter(|at| *at <= now).map(|at| (at, *id)))
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// The customer a record belongs to now (following merges).
    pub fn token_of(&self, stream: &str) -> Option<Uuid> {
        let r = self.by_stream.get(stream)?;
        let c = self.records[*r as usize].customer?;
        Some(self.customers[self.live_customer(c) as usize].token)
    }

    pub fn customer(&self, token: Uuid) -> Option<CustomerView> {
        let c = *self.by_token.get(&token)?;
        let slot = &self.customers[c as usize];
        Some(CustomerView {
            token,
            merged_into: slot
                .merged_into
                .map(|_| self.customers[self.live_customer(c) as usize].token),
            version: slot.version,
            records: slot
                .members
                .iter()
                .map(|r| self.records[*r as usize].stream.clone())
                .collect(),
            household: slot.household.map(|h| self.households[h as usize].id),
            erased: slot.erased,
        })
    }

    /// The members of a household (active tokens).
    pub fn household_members(&self, id: Uuid) -> Vec<Uuid> {
        self.by_household
            .get(&id)
            .map(|h| {
                self.households[*h as usize]
                    .members
                    .iter()
                    .map(|c| self.customers[*c as usize].token)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every record with its current customer, for benchmarks.
    pub fn assignments(&self) -> impl Iterator<Item = (&str, Uuid)> + '_ {
        self.records.iter().filter_map(|r| {
            r.customer
                .map(|c| (r.stream.as_str(), self.customers[self.live_customer(c) as usize].token))
        })
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            records: self.records.len(),
            customers: self.customers.len(),
            active_customers: self
                .customers
                .iter()
                .filter(|c| c.merged_into.is_none() && !c.members.is_empty())
                .count(),
            households: self.households.len(),
            index_keys: self.index.len(),
            open_reviews: self.reviews.len(),
            decisions: self.seq,
        }
    }

    /// Approximate heap bytes, for the memory-per-record figure.
    pub fn heap_bytes(&self) -> usize {
        let records: usize = self
            .records
            .iter()
            .map(|r| {
                std::mem::size_of::<RecordSlot>()
                    + r.stream.capacity() * 2
                    + r.keys.capacity() * 8
                    + r.apart.capacity() * 4
                    + r.features
                        .as_ref()
                        .map_or(0, |f| std::mem::size_of::<MatchFeatures>() + f.heap_bytes())
                    + 48
            })
            .sum();
        let index: usize = self.index.values().map(|b| 8 + 24 + b.capacity() * 4 + 16).sum();
        let customers = self.customers.len() * (std::mem::size_of::<CustomerSlot>() + 16 + 48)
            + self.customers.iter().map(|c| c.members.capacity() * 4).sum::<usize>();
        records + index + customers
    }
}
