//! Membership: which records each customer holds and which tokens redirect
//! to which, folded from decisions.
//!
//! A pure fold over [`Decision`]s in log order, with no clock and no I/O. It
//! answers "which records did this customer hold, and was it still a
//! customer of its own" after any prefix of the decisions, which is what an
//! "as of" view of a customer needs. Its rules are those the resolver's
//! engine and the customers projection follow:
//!
//! - a creation, link, move or split puts its record in the named token
//!   (a record belongs to one token at a time);
//! - a merge moves every record of the absorbed tokens to the survivor,
//!   marks the absorbed tokens merged into it, and flattens chains: tokens
//!   merged earlier into an absorbed token now redirect to the survivor;
//! - a move or split into a token merged away earlier makes it active again;
//! - reviews, not-a-match marks and household changes change no membership.
//!
//! Given a subset of the decisions (those that concern a customer and the
//! tokens connected to it), the fold still answers correctly for that
//! customer: every decision that changes its records or its status names it
//! or one of those tokens.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::events::Decision;

/// Whether a token is a customer of its own or redirects to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenStatus {
    Active,
    /// Merged away: the survivor it redirects to (chains flattened).
    MergedInto(Uuid),
    /// Erased, for ever.
    Erased,
}

/// Record and token state folded from decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Each record's token now.
    records: BTreeMap<String, Uuid>,
    /// Each token seen: `None` when active, the survivor when merged.
    tokens: BTreeMap<Uuid, Option<Uuid>>,
    /// Erased tokens.
    erased: std::collections::BTreeSet<Uuid>,
}

impl Membership {
    pub fn new() -> Membership {
        Membership::default()
    }

    /// Applies one decision (decisions must come in log order).
    pub fn apply(&mut self, d: &Decision) {
        match d {
            Decision::CustomerCreated { token, record, .. } => {
                // A new token is active; its record joins it.
                self.tokens.insert(*token, None);
                self.records.insert(record.clone(), *token);
            }
            Decision::RecordLinked { token, record, .. } => {
                self.tokens.entry(*token).or_insert(None);
                self.records.insert(record.clone(), *token);
            }
            Decision::RecordMoved { record, to, .. } | Decision::RecordSplit { record, to, .. } => {
                // Into a token merged away earlier: it is active again.
                self.tokens.insert(*to, None);
                self.records.insert(record.clone(), *to);
            }
            Decision::CustomersMerged { survivor, absorbed, .. } => {
                self.tokens.entry(*survivor).or_insert(None);
                for a in absorbed.iter().filter(|a| *a != survivor) {
                    self.tokens.insert(*a, Some(*survivor));
                }
                let absorbed_or_redirected = |t: &Uuid| absorbed.contains(t) && t != survivor;
                for target in self.tokens.values_mut() {
                    if target.as_ref().is_some_and(absorbed_or_redirected) {
                        *target = Some(*survivor);
                    }
                }
                for token in self.records.values_mut() {
                    if absorbed_or_redirected(token) {
                        *token = *survivor;
                    }
                }
            }
            Decision::NotAMatchMarked { .. }
            | Decision::ReviewRequested { .. }
            | Decision::ReviewClosed { .. }
            | Decision::HouseholdChanged { .. }
            // Overrides change values, not membership.
            | Decision::ValueOverridden { .. }
            | Decision::OverrideRemoved { .. } => {}
            Decision::CustomerErased {
                token,
                absorbed,
                records,
                retained,
                ..
            } => {
                for t in std::iter::once(token).chain(absorbed) {
                    self.erased.insert(*t);
                }
                for r in records.iter().chain(retained.iter().map(|k| &k.record)) {
                    self.records.remove(r);
                }
            }
        }
    }

    /// The records whose token is `token`, sorted. Empty for a token merged
    /// away or never seen.
    pub fn members(&self, token: Uuid) -> Vec<String> {
        // BTreeMap iteration is in record order already.
        self.records
            .iter()
            .filter(|(_, t)| **t == token)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Whether `token` is active or merged, or `None` when no decision
    /// applied so far named it.
    pub fn status(&self, token: Uuid) -> Option<TokenStatus> {
        if self.erased.contains(&token) {
            return Some(TokenStatus::Erased);
        }
        self.tokens.get(&token).map(|m| match m {
            None => TokenStatus::Active,
            Some(s) => TokenStatus::MergedInto(*s),
        })
    }

    /// The token `record` belongs to, if a decision applied so far placed it.
    pub fn token_of(&self, record: &str) -> Option<Uuid> {
        self.records.get(record).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::model::{Band, Explanation};

    fn t(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn created(token: u128, record: &str) -> Decision {
        Decision::CustomerCreated {
            token: t(token),
            record: record.into(),
            nearest: None,
        }
    }

    fn linked(token: u128, record: &str) -> Decision {
        Decision::RecordLinked {
            token: t(token),
            record: record.into(),
            explanation: None,
            matched_record: None,
            forced: false,
        }
    }

    fn merged(survivor: u128, absorbed: &[u128]) -> Decision {
        Decision::CustomersMerged {
            survivor: t(survivor),
            absorbed: absorbed.iter().map(|a| t(*a)).collect(),
            record: None,
            explanations: Vec::new(),
        }
    }

    fn split(record: &str, from: u128, to: u128, created: bool) -> Decision {
        Decision::RecordSplit {
            record: record.into(),
            from: t(from),
            to: t(to),
            created,
        }
    }

    fn moved(record: &str, from: u128, to: u128) -> Decision {
        Decision::RecordMoved {
            record: record.into(),
            from: t(from),
            to: t(to),
            explanation: Explanation {
                parameters: "p".into(),
                prior: 0.0,
                comparisons: Vec::new(),
                household_evidence: 0.0,
                household_capped: 0.0,
                veto: None,
                term_frequency: 0.0,
                total: 0.0,
                band: Band::Link,
                link_threshold: 0.0,
                review_threshold: 0.0,
            },
            matched_record: "m".into(),
        }
    }

    struct Case {
        name: &'static str,
        decisions: Vec<Decision>,
        /// (token, expected status, expected members)
        expect: Vec<(u128, Option<TokenStatus>, Vec<&'static str>)>,
    }

    fn active() -> Option<TokenStatus> {
        Some(TokenStatus::Active)
    }

    fn merged_into(s: u128) -> Option<TokenStatus> {
        Some(TokenStatus::MergedInto(t(s)))
    }

    #[test]
    fn the_fold_follows_every_kind_of_decision() {
        let cases = vec![
            Case {
                name: "a token never named is unknown and holds nothing",
                decisions: vec![created(1, "a")],
                expect: vec![(9, None, vec![])],
            },
            Case {
                name: "a creation makes an active token holding its record",
                decisions: vec![created(1, "a")],
                expect: vec![(1, active(), vec!["a"])],
            },
            Case {
                name: "links add records, listed sorted",
                decisions: vec![created(1, "c"), linked(1, "a"), linked(1, "b")],
                expect: vec![(1, active(), vec!["a", "b", "c"])],
            },
            Case {
                name: "a forced link takes the record from the customer it was in",
                decisions: vec![created(1, "a"), linked(1, "b"), created(2, "c"), linked(2, "b")],
                expect: vec![(1, active(), vec!["a"]), (2, active(), vec!["b", "c"])],
            },
            Case {
                name: "a merge moves the absorbed records to the survivor and redirects the absorbed token",
                decisions: vec![created(1, "a"), created(2, "b"), merged(1, &[2])],
                expect: vec![(1, active(), vec!["a", "b"]), (2, merged_into(1), vec![])],
            },
            Case {
                name: "a merge of several absorbed tokens redirects each",
                decisions: vec![created(1, "a"), created(2, "b"), created(3, "c"), merged(1, &[2, 3])],
                expect: vec![
                    (1, active(), vec!["a", "b", "c"]),
                    (2, merged_into(1), vec![]),
                    (3, merged_into(1), vec![]),
                ],
            },
            Case {
                name: "merges flatten: tokens merged into an absorbed token follow to the survivor",
                decisions: vec![
                    created(1, "a"),
                    created(2, "b"),
                    created(3, "c"),
                    merged(2, &[3]),
                    merged(1, &[2]),
                ],
                expect: vec![
                    (1, active(), vec!["a", "b", "c"]),
                    (2, merged_into(1), vec![]),
                    (3, merged_into(1), vec![]),
                ],
            },
            Case {
                name: "a split into a new token takes the record out",
                decisions: vec![created(1, "a"), linked(1, "b"), split("b", 1, 2, true)],
                expect: vec![(1, active(), vec!["a"]), (2, active(), vec!["b"])],
            },
            Case {
                name: "a split back into a merged token makes it active again",
                decisions: vec![
                    created(1, "a"),
                    created(2, "b"),
                    merged(1, &[2]),
                    split("b", 1, 2, false),
                ],
                expect: vec![(1, active(), vec!["a"]), (2, active(), vec!["b"])],
            },
            Case {
                name: "a split then a merge back leaves the split token merged into the survivor",
                decisions: vec![created(1, "a"), linked(1, "b"), split("b", 1, 2, true), merged(1, &[2])],
                expect: vec![(1, active(), vec!["a", "b"]), (2, merged_into(1), vec![])],
            },
            Case {
                name: "a move into a merged token makes it active again and keeps other redirects",
                decisions: vec![
                    created(1, "a"),
                    created(2, "b"),
                    created(3, "c"),
                    merged(2, &[3]),
                    merged(1, &[2]),
                    moved("a", 1, 2),
                ],
                expect: vec![
                    (1, active(), vec!["b", "c"]),
                    (2, active(), vec!["a"]),
                    (3, merged_into(1), vec![]),
                ],
            },
            Case {
                name: "a move changes the record's token only",
                decisions: vec![created(1, "a"), linked(1, "b"), created(2, "c"), moved("b", 1, 2)],
                expect: vec![(1, active(), vec!["a"]), (2, active(), vec!["b", "c"])],
            },
            Case {
                name: "a customer left without records stays active and empty",
                decisions: vec![created(1, "a"), created(2, "b"), moved("a", 1, 2)],
                expect: vec![(1, active(), vec![]), (2, active(), vec!["a", "b"])],
            },
            Case {
                name: "reviews, marks and household changes change no membership",
                decisions: vec![
                    created(1, "a"),
                    created(2, "b"),
                    Decision::NotAMatchMarked {
                        records: ["a".into(), "b".into()],
                        tokens: [t(1), t(2)],
                    },
                    Decision::HouseholdChanged { token: t(1) },
                    Decision::ReviewClosed {
                        review_id: t(7),
                        outcome: crate::resolution::events::ReviewOutcome::Skipped,
                    },
                ],
                expect: vec![(1, active(), vec!["a"]), (2, active(), vec!["b"])],
            },
            Case {
                name: "a decision naming only other tokens does not make a token known",
                decisions: vec![Decision::HouseholdChanged { token: t(1) }],
                expect: vec![(1, None, vec![])],
            },
        ];
        for case in cases {
            let mut m = Membership::new();
            for d in &case.decisions {
                m.apply(d);
            }
            for (token, status, members) in &case.expect {
                assert_eq!(m.status(t(*token)), *status, "{}: status of {token}", case.name);
                assert_eq!(m.members(t(*token)), *members, "{}: members of {token}", case.name);
            }
        }
    }

    #[test]
    fn token_of_names_the_record_s_current_token() {
        let mut m = Membership::new();
        for d in [created(1, "a"), created(2, "b"), merged(1, &[2])] {
            m.apply(&d);
        }
        assert_eq!(m.token_of("b"), Some(t(1)));
        assert_eq!(m.token_of("zz"), None);
    }
}
