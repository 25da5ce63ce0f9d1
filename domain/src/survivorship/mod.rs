//! Survivorship: building a customer's golden record from its source records.
//!
//! A customer is a cluster of source records, each the current version of
//! one record of one system. [`survive`] picks, per [`GoldenAttribute`], the
//! value the golden record shows, says which record it came from
//! ([`Lineage`]) and why it won ([`Chosen`]). It is a pure function of its
//! arguments: the projection that calls it owns the records, the rule set
//! and the steward overrides.
//!
//! # Candidates
//!
//! Every record offers its values: one name (when it has a given, middle or
//! family name; a record with only an unparsed full name or only a suffix
//! offers none), each e-mail, each phone number, each address with at least
//! one part, and its date of birth. Values are trimmed and blank ones are
//! ignored.
//!
//! Two values are equal when they are the same after folding case and
//! collapsing whitespace (part by part for names and addresses), when two
//! e-mails are the same in lower case, and when two phone numbers have the
//! same digits. Equal values are one value, not competitors: the rules
//! choose among distinct values. Each distinct value is represented by its
//! best record, the one that ranks first under the attribute's rule list;
//! the rules then compare the representatives. So when `trust_rank` is the
//! first rule a value is as trusted as its most trusted record, and when
//! `most_recent` is first it is as recent as its latest sighting. The golden
//! record shows the representative's own spelling, and its lineage names the
//! representative.
//!
//! # Rules
//!
//! A [`RuleSet`] lists, per attribute, rules in order. The first rule that
//! ranks one value above all others still in the running decides; values it
//! ties are left to the next rule.
//! - `trust_rank`: the higher trust rank of the record's system.
//! - `most_recent`: the later `recorded_at`, then the higher log position.
//! - `most_frequent`: the value carried by more distinct records. A record
//!   that lists one e-mail twice, in two spellings, counts once.
//! - `most_complete`: the value with more non-empty parts (a name has four,
//!   an address six); every e-mail, phone and date is equally complete, so
//!   for them this rule always passes to the next.
//!
//! After the listed rules a fixed tie-break decides: the higher log
//! position, then the record name in ascending order, then the value listed
//! first within its record. Every comparison ends in a total order over what
//! the output shows, so the result does not depend on the order of the
//! inputs.
//!
//! [`Chosen`] reports `only_candidate` when every record carries the same
//! value, the rule that first put the winner alone in front, or `tie_break`
//! when none did.
//!
//! # Attributes survive as units
//!
//! A name's parts come from one record and an address's parts from one
//! address. Mixing them would build values no source ever stated: the given
//! name of one person with the family name of a relative in the same
//! household, or a street from one address with the postcode of another.
//! A golden value should be one that a source actually holds, so that a
//! steward can trace it and a letter sent to it arrives.
//!
//! # Overrides and time
//!
//! A steward may override an attribute. The active override with the highest
//! log position wins over whatever the records say. An override is active
//! until its `expires_at`; whether that time has passed is judged against
//! the `now` argument, never the clock. The caller passes the time of the
//! event being projected, so that replaying the log rebuilds exactly the
//! golden records it built the first time, whatever day the replay runs.

mod rule_set;

#[cfg(test)]
mod tests;

pub use rule_set::{GoldenAttribute, Rule, RuleSet, RuleSetError};

use crate::source::{CanonicalAttributes, PostalAddress};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// One current version of one source record of the customer.
#[derive(Clone, Copy, Debug)]
pub struct Contribution<'a> {
    /// The record's stream name, which is pseudonymous.
    pub record: &'a str,
    pub system: &'a str,
    /// Higher is more trusted.
    pub trust_rank: u32,
    /// The global log position of this version.
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    /// `CanonicalAttributes` hides its values in `Debug`, so deriving
    /// `Debug` here leaks nothing.
    pub attributes: &'a CanonicalAttributes,
}

/// A golden value: one attribute's value, whole.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GoldenValue {
    Name {
        given: Option<String>,
        middle: Option<String>,
        family: Option<String>,
        suffix: Option<String>,
    },
    Email {
        email: String,
    },
    Phone {
        number: String,
    },
    Address {
        address: PostalAddress,
    },
    DateOfBirth {
        date: NaiveDate,
    },
}

impl GoldenValue {
    /// The attribute this value is a value of.
    pub fn attribute(&self) -> GoldenAttribute {
        match self {
            Self::Name { .. } => GoldenAttribute::Name,
            Self::Email { .. } => GoldenAttribute::Email,
            Self::Phone { .. } => GoldenAttribute::Phone,
            Self::Address { .. } => GoldenAttribute::Address,
            Self::DateOfBirth { .. } => GoldenAttribute::DateOfBirth,
        }
    }

    /// The value's parts compared for equality: case folded and whitespace
    /// collapsed, e-mails in lower case, phones as their digits. A missing
    /// part is the empty string, which no present part can be because
    /// candidates are trimmed and blank parts dropped.
    fn key(&self) -> Vec<String> {
        match self {
            Self::Name {
                given,
                middle,
                family,
                suffix,
            } => [given, middle, family, suffix].map(fold_part).to_vec(),
            Self::Email { email } => vec![fold(email)],
            Self::Phone { number } => {
                let digits: String = number.chars().filter(char::is_ascii_digit).collect();
                // A "number" without a digit (an extension note, say) would
                // otherwise equal every other one.
                vec![if digits.is_empty() { fold(number) } else { digits }]
            }
            Self::Address { address } => address_parts(address).map(fold_part).to_vec(),
            Self::DateOfBirth { date } => vec![date.to_string()],
        }
    }

    /// The number of non-empty parts, for `most_complete`.
    fn completeness(&self) -> usize {
        match self {
            Self::Name {
                given,
                middle,
                family,
                suffix,
            } => [given, middle, family, suffix].iter().filter(|p| p.is_some()).count(),
            Self::Address { address } => address_parts(address).iter().filter(|p| p.is_some()).count(),
            Self::Email { .. } | Self::Phone { .. } | Self::DateOfBirth { .. } => 1,
        }
    }

    /// The value's own spelling, part by part: the last resort of the
    /// tie-break, reached only when the inputs hold two versions with the
    /// same record name and position, so that even then the output does not
    /// depend on their order.
    fn spelling(&self) -> Vec<String> {
        let owned = |part: &Option<String>| part.clone().unwrap_or_default();
        match self {
            Self::Name {
                given,
                middle,
                family,
                suffix,
            } => [given, middle, family, suffix].map(owned).to_vec(),
            Self::Email { email } => vec![email.clone()],
            Self::Phone { number } => vec![number.clone()],
            Self::Address { address } => address_parts(address).map(owned).to_vec(),
            Self::DateOfBirth { date } => vec![date.to_string()],
        }
    }
}

impl std::fmt::Debug for GoldenValue {
    /// Golden values are personal data: `Debug` shows the kind and which
    /// parts are present, never a value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name {
                given,
                middle,
                family,
                suffix,
            } => f
                .debug_struct("Name")
                .field("given", &Presence(given.is_some()))
                .field("middle", &Presence(middle.is_some()))
                .field("family", &Presence(family.is_some()))
                .field("suffix", &Presence(suffix.is_some()))
                .finish(),
            Self::Email { .. } => f.debug_struct("Email").field("email", &Hidden).finish(),
            Self::Phone { .. } => f.debug_struct("Phone").field("number", &Hidden).finish(),
            // `PostalAddress` already shows only which parts are present.
            Self::Address { address } => f.debug_struct("Address").field("address", address).finish(),
            Self::DateOfBirth { .. } => f.debug_struct("DateOfBirth").field("date", &Hidden).finish(),
        }
    }
}

/// A steward's value override.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub value: GoldenValue,
    pub by: String,
    pub reason: String,
    pub position: u64,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Override {
    fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|expires_at| expires_at > now)
    }
}

impl std::fmt::Debug for Override {
    /// The value is hidden, and so is the reason: it is free text, and a
    /// steward may well write the customer's details into it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Override")
            .field("value", &self.value)
            .field("by", &self.by)
            .field("reason", &Hidden)
            .field("position", &self.position)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where a golden value came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Lineage {
    /// The winning value's representative record: the one that decided.
    Record {
        record: String,
        system: String,
        position: u64,
    },
    Override {
        by: String,
        position: u64,
    },
}

/// Why the value won.
///
/// Serialized as one snake_case name, a rule under its own name
/// (`"trust_rank"`), so that stored golden records and API responses read
/// the same as the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chosen {
    StewardOverride,
    OnlyCandidate,
    Rule(Rule),
    TieBreak,
}

impl Chosen {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StewardOverride => "steward_override",
            Self::OnlyCandidate => "only_candidate",
            Self::Rule(rule) => rule.as_str(),
            Self::TieBreak => "tie_break",
        }
    }

    /// The reason with this serialized name, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "steward_override" => Some(Self::StewardOverride),
            "only_candidate" => Some(Self::OnlyCandidate),
            "tie_break" => Some(Self::TieBreak),
            other => Rule::parse(other).map(Self::Rule),
        }
    }
}

impl std::fmt::Display for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Chosen {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Chosen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Chosen::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown survivorship reason `{name}`")))
    }
}

/// One golden value with where it came from and why it won.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survived {
    pub value: GoldenValue,
    pub lineage: Lineage,
    pub chosen: Chosen,
}

impl std::fmt::Debug for Survived {
    /// Shows the lineage and the reason in full; the value's own `Debug`
    /// hides its content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Survived")
            .field("value", &self.value)
            .field("lineage", &self.lineage)
            .field("chosen", &self.chosen)
            .finish()
    }
}

/// A customer's golden record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Golden {
    /// The version of the rule set that built it.
    pub rule_set: String,
    /// At most one per attribute, in [`GoldenAttribute`] order; attributes
    /// with no candidate and no override are absent.
    pub values: Vec<Survived>,
}

impl Golden {
    /// The survived value of `a`, if it has one.
    pub fn get(&self, a: GoldenAttribute) -> Option<&Survived> {
        self.values.iter().find(|survived| survived.value.attribute() == a)
    }
}

impl std::fmt::Debug for Golden {
    /// Each value's `Debug` hides its content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Golden")
            .field("rule_set", &self.rule_set)
            .field("values", &self.values)
            .finish()
    }
}

/// Builds the golden record. Deterministic: the same inputs in any order give the same output.
///
/// `now` decides only which overrides have expired; pass the time of the
/// event being projected, not the clock, so that replays agree.
pub fn survive(
    rules: &RuleSet,
    contributions: &[Contribution<'_>],
    overrides: &[Override],
    now: DateTime<Utc>,
) -> Golden {
    let values = GoldenAttribute::ALL
        .into_iter()
        .filter_map(|attribute| {
            latest_override(attribute, overrides, now)
                .or_else(|| survive_attribute(rules.rules_for(attribute), attribute, contributions))
        })
        .collect();
    Golden {
        rule_set: rules.version.clone(),
        values,
    }
}

/// The active override of `attribute` with the highest position. Two
/// overrides at one position cannot come from one log; should the caller
/// pass them anyway, steward, reason and value break the tie so that input
/// order still does not matter.
fn latest_override(attribute: GoldenAttribute, overrides: &[Override], now: DateTime<Utc>) -> Option<Survived> {
    let winner = overrides
        .iter()
        .filter(|o| o.value.attribute() == attribute && o.is_active(now))
        .max_by(|a, b| {
            a.position
                .cmp(&b.position)
                .then_with(|| a.by.cmp(&b.by))
                .then_with(|| a.reason.cmp(&b.reason))
                .then_with(|| a.value.spelling().cmp(&b.value.spelling()))
        })?;
    Some(Survived {
        value: winner.value.clone(),
        lineage: Lineage::Override {
            by: winner.by.clone(),
            position: winner.position,
        },
        chosen: Chosen::StewardOverride,
    })
}

/// One value offered by one record, with what the rules compare.
struct Candidate<'c, 'a> {
    from: &'c Contribution<'a>,
    /// The value's place in its record's list (0 for name and birth date).
    order: usize,
    value: GoldenValue,
    completeness: usize,
    /// The number of distinct records carrying an equal value.
    frequency: usize,
    spelling: Vec<String>,
}

/// The golden value of one attribute from the records, or `None` when no
/// record offers one.
fn survive_attribute(
    rules: &[Rule],
    attribute: GoldenAttribute,
    contributions: &[Contribution<'_>],
) -> Option<Survived> {
    let mut candidates: Vec<Candidate<'_, '_>> = Vec::new();
    for from in contributions {
        for (order, value) in offered(attribute, from.attributes).into_iter().enumerate() {
            candidates.push(Candidate {
                from,
                order,
                completeness: value.completeness(),
                frequency: 0,
                spelling: value.spelling(),
                value,
            });
        }
    }

    // Equal values form one group: the distinct values that compete.
    let mut groups: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
    for (i, candidate) in candidates.iter().enumerate() {
        groups.entry(candidate.value.key()).or_default().push(i);
    }
    for members in groups.values() {
        let records: BTreeSet<&str> = members.iter().map(|&i| candidates[i].from.record).collect();
        for &i in members {
            candidates[i].frequency = records.len();
        }
    }

    // Each distinct value competes through its best record. Since the
    // frequency is the same for every member of a group, the overall best
    // candidate is the best of these representatives.
    let representatives: Vec<&Candidate<'_, '_>> = groups
        .values()
        .filter_map(|members| members.iter().map(|&i| &candidates[i]).max_by(|a, b| rank(rules, a, b)))
        .collect();
    let winner = representatives.iter().copied().max_by(|a, b| rank(rules, a, b))?;
    let chosen = if representatives.len() == 1 {
        Chosen::OnlyCandidate
    } else {
        deciding_rule(rules, &representatives)
    };
    Some(Survived {
        value: winner.value.clone(),
        lineage: Lineage::Record {
            record: winner.from.record.to_owned(),
            system: winner.from.system.to_owned(),
            position: winner.from.position,
        },
        chosen,
    })
}

/// The values `attributes` offers for `attribute`, trimmed, blank ones
/// dropped, in the record's order.
fn offered(attribute: GoldenAttribute, attributes: &CanonicalAttributes) -> Vec<GoldenValue> {
    match attribute {
        GoldenAttribute::Name => {
            let given = clean(&attributes.given_name);
            let middle = clean(&attributes.middle_name);
            let family = clean(&attributes.family_name);
            // A suffix alone names no one, and an unparsed full name cannot
            // be compared part by part with the others.
            if given.is_none() && middle.is_none() && family.is_none() {
                return Vec::new();
            }
            vec![GoldenValue::Name {
                given,
                middle,
                family,
                suffix: clean(&attributes.name_suffix),
            }]
        }
        GoldenAttribute::Email => attributes
            .emails
            .iter()
            .filter_map(|email| clean_str(email))
            .map(|email| GoldenValue::Email { email })
            .collect(),
        GoldenAttribute::Phone => attributes
            .phones
            .iter()
            .filter_map(|phone| clean_str(&phone.number))
            .map(|number| GoldenValue::Phone { number })
            .collect(),
        GoldenAttribute::Address => attributes
            .addresses
            .iter()
            .map(|address| PostalAddress {
                line1: clean(&address.line1),
                line2: clean(&address.line2),
                city: clean(&address.city),
                region: clean(&address.region),
                postcode: clean(&address.postcode),
                country: clean(&address.country),
            })
            .filter(|address| address_parts(address).iter().any(|part| part.is_some()))
            .map(|address| GoldenValue::Address { address })
            .collect(),
        GoldenAttribute::DateOfBirth => attributes
            .date_of_birth
            .map(|date| GoldenValue::DateOfBirth { date })
            .into_iter()
            .collect(),
    }
}

/// How `a` compares with `b` under one rule; `Greater` means `a` is better.
fn by_rule(rule: Rule, a: &Candidate<'_, '_>, b: &Candidate<'_, '_>) -> Ordering {
    match rule {
        Rule::TrustRank => a.from.trust_rank.cmp(&b.from.trust_rank),
        Rule::MostRecent => (a.from.recorded_at, a.from.position).cmp(&(b.from.recorded_at, b.from.position)),
        Rule::MostFrequent => a.frequency.cmp(&b.frequency),
        Rule::MostComplete => a.completeness.cmp(&b.completeness),
    }
}

/// The fixed tie-break after the listed rules; `Greater` means `a` is
/// better. Higher position, then record name ascending, then the value
/// listed first in its record. System and spelling follow only so that the
/// order is total even for inputs that repeat a record at one position.
fn tie_break(a: &Candidate<'_, '_>, b: &Candidate<'_, '_>) -> Ordering {
    a.from
        .position
        .cmp(&b.from.position)
        .then_with(|| b.from.record.cmp(a.from.record))
        .then_with(|| b.order.cmp(&a.order))
        .then_with(|| b.from.system.cmp(a.from.system))
        .then_with(|| b.spelling.cmp(&a.spelling))
}

/// The full ranking: the listed rules in order, then the tie-break.
fn rank(rules: &[Rule], a: &Candidate<'_, '_>, b: &Candidate<'_, '_>) -> Ordering {
    rules
        .iter()
        .map(|&rule| by_rule(rule, a, b))
        .find(|ordering| ordering.is_ne())
        .unwrap_or(Ordering::Equal)
        .then_with(|| tie_break(a, b))
}

/// The first rule that leaves one representative alone in front of those
/// it still ties with, or the tie-break when none does. The one left is the
/// winner, since the winner is best under the rules in order.
fn deciding_rule(rules: &[Rule], representatives: &[&Candidate<'_, '_>]) -> Chosen {
    let mut tied = representatives.to_vec();
    for &rule in rules {
        let Some(best) = tied.iter().copied().max_by(|a, b| by_rule(rule, a, b)) else {
            break;
        };
        tied.retain(|candidate| by_rule(rule, candidate, best).is_eq());
        if tied.len() == 1 {
            return Chosen::Rule(rule);
        }
    }
    Chosen::TieBreak
}

/// An address's six parts in a fixed order.
fn address_parts(address: &PostalAddress) -> [&Option<String>; 6] {
    [
        &address.line1,
        &address.line2,
        &address.city,
        &address.region,
        &address.postcode,
        &address.country,
    ]
}

/// A part trimmed, or `None` when it is missing or blank.
fn clean(part: &Option<String>) -> Option<String> {
    part.as_deref().and_then(clean_str)
}

fn clean_str(text: &str) -> Option<String> {
    Some(text.trim()).filter(|text| !text.is_empty()).map(str::to_owned)
}

/// Text compared case-insensitively with whitespace runs as one space.
fn fold(text: &str) -> String {
    text.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn fold_part(part: &Option<String>) -> String {
    part.as_deref().map(fold).unwrap_or_default()
}

/// Debug-prints whether an optional personal value is present.
struct Presence(bool);

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 { "Some(..)" } else { "None" })
    }
}

/// Debug-prints a personal value that is always present.
struct Hidden;

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}
