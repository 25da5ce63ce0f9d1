//! Tests of survivorship: each rule, rule order, ties, the tie-break and
//! input order, equality of values, attributes as units, overrides, the rule
//! set's configuration and serde forms, and `Debug` hiding personal data.

use super::*;
use crate::source::{CanonicalAttributes, Phone, PostalAddress};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A source record version owning its attributes, from which the tests
/// borrow `Contribution`s.
#[derive(Clone)]
struct Source {
    record: &'static str,
    system: &'static str,
    trust_rank: u32,
    position: u64,
    recorded_at: DateTime<Utc>,
    attributes: CanonicalAttributes,
}

/// Noon on a day of January 2026.
fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, d, 12, 0, 0).single().unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// A record of system `crm` with no attributes yet.
fn source(record: &'static str, trust_rank: u32, position: u64, recorded_on: u32) -> Source {
    Source {
        record,
        system: "crm",
        trust_rank,
        position,
        recorded_at: day(recorded_on),
        attributes: CanonicalAttributes::default(),
    }
}

fn some(part: &str) -> Option<String> {
    Some(part.to_owned())
}

impl Source {
    fn system(mut self, system: &'static str) -> Self {
        self.system = system;
        self
    }

    fn name(mut self, given: Option<&str>, middle: Option<&str>, family: Option<&str>, suffix: Option<&str>) -> Self {
        self.attributes.given_name = given.map(str::to_owned);
        self.attributes.middle_name = middle.map(str::to_owned);
        self.attributes.family_name = family.map(str::to_owned);
        self.attributes.name_suffix = suffix.map(str::to_owned);
        self
    }

    fn email(mut self, email: &str) -> Self {
        self.attributes.emails.push(email.to_owned());
        self
    }

    fn phone(mut self, number: &str) -> Self {
        self.attributes.phones.push(Phone {
            kind: None,
            number: number.to_owned(),
        });
        self
    }

    fn address(mut self, address: PostalAddress) -> Self {
        self.attributes.addresses.push(address);
        self
    }

    fn born(mut self, date: NaiveDate) -> Self {
        self.attributes.date_of_birth = Some(date);
        self
    }

    fn contribution(&self) -> Contribution<'_> {
        Contribution {
            record: self.record,
            system: self.system,
            trust_rank: self.trust_rank,
            position: self.position,
            recorded_at: self.recorded_at,
            attributes: &self.attributes,
        }
    }
}

fn contributions(sources: &[Source]) -> Vec<Contribution<'_>> {
    sources.iter().map(Source::contribution).collect()
}

/// The default rule set with `attribute` ruled by `rules` only.
fn ruled(attribute: GoldenAttribute, rules: &[Rule]) -> RuleSet {
    let mut set = RuleSet {
        version: "test".to_owned(),
        ..RuleSet::default()
    };
    set.rules.insert(attribute, rules.to_vec());
    set
}

/// The golden record of `sources` with no overrides.
fn golden(rules: &RuleSet, sources: &[Source]) -> Golden {
    survive(rules, &contributions(sources), &[], day(28))
}

/// The survived value of `attribute`, which the test expects to exist.
fn survived(rules: &RuleSet, sources: &[Source], attribute: GoldenAttribute) -> Survived {
    golden(rules, sources).get(attribute).cloned().unwrap()
}

fn email(email: &str) -> GoldenValue {
    GoldenValue::Email {
        email: email.to_owned(),
    }
}

fn name(given: Option<&str>, middle: Option<&str>, family: Option<&str>, suffix: Option<&str>) -> GoldenValue {
    GoldenValue::Name {
        given: given.map(str::to_owned),
        middle: middle.map(str::to_owned),
        family: family.map(str::to_owned),
        suffix: suffix.map(str::to_owned),
    }
}

fn street(line1: &str, city: Option<&str>, postcode: Option<&str>) -> PostalAddress {
    PostalAddress {
        line1: some(line1),
        city: city.map(str::to_owned),
        postcode: postcode.map(str::to_owned),
        ..PostalAddress::default()
    }
}

fn lineage_record(survived: &Survived) -> &str {
    match &survived.lineage {
        Lineage::Record { record, .. } => record,
        Lineage::Override { .. } => panic!("expected a record lineage, got {:?}", survived.lineage),
    }
}

/// Every order of `items` (Heap's algorithm).
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    fn heap<T: Clone>(k: usize, items: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, items, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    heap(items.len(), &mut items.to_vec(), &mut out);
    out
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

#[test]
fn each_rule_alone_picks_its_winner_against_the_tie_break() {
    // In every case the rule's winner has the lowest position, so the
    // tie-break alone would have picked another record.
    let cases: Vec<(Rule, GoldenAttribute, Vec<Source>, GoldenValue, &str)> = vec![
        (
            Rule::TrustRank,
            GoldenAttribute::Email,
            vec![
                source("rec-a", 9, 1, 1).email("trusted@example.com"),
                source("rec-b", 1, 2, 9).email("other@example.com"),
            ],
            email("trusted@example.com"),
            "rec-a",
        ),
        (
            Rule::MostRecent,
            GoldenAttribute::Email,
            vec![
                source("rec-a", 1, 1, 9).email("recent@example.com"),
                source("rec-b", 9, 2, 2).email("older@example.com"),
            ],
            email("recent@example.com"),
            "rec-a",
        ),
        (
            Rule::MostFrequent,
            GoldenAttribute::DateOfBirth,
            vec![
                source("rec-a", 1, 1, 1).born(date(1980, 5, 17)),
                source("rec-c", 1, 2, 1).born(date(1980, 5, 17)),
                source("rec-b", 9, 3, 9).born(date(1980, 7, 15)),
            ],
            GoldenValue::DateOfBirth {
                date: date(1980, 5, 17),
            },
            // The two records of the winning date are equal under the rule,
            // so the tie-break picks the representative: the higher position.
            "rec-c",
        ),
        (
            Rule::MostComplete,
            GoldenAttribute::Name,
            vec![
                source("rec-a", 1, 1, 1).name(Some("Ada"), Some("Marie"), Some("Lovelace"), None),
                source("rec-b", 9, 2, 9).name(Some("Ada"), None, Some("Lovelace"), None),
            ],
            name(Some("Ada"), Some("Marie"), Some("Lovelace"), None),
            "rec-a",
        ),
        (
            Rule::MostComplete,
            GoldenAttribute::Address,
            vec![
                source("rec-a", 1, 1, 1).address(street("1 Main St", Some("Springfield"), Some("62701"))),
                source("rec-b", 9, 2, 9).address(street("1 Main St", Some("Springfield"), None)),
            ],
            GoldenValue::Address {
                address: street("1 Main St", Some("Springfield"), Some("62701")),
            },
            "rec-a",
        ),
    ];
    for (rule, attribute, sources, expected, record) in cases {
        let won = survived(&ruled(attribute, &[rule]), &sources, attribute);
        assert_eq!(won.value, expected, "{rule} on {attribute}");
        assert_eq!(won.chosen, Chosen::Rule(rule), "{rule} on {attribute}");
        assert_eq!(lineage_record(&won), record, "{rule} on {attribute}");
    }
}

#[test]
fn the_order_of_the_rules_decides_between_the_same_records() {
    let sources = vec![
        source("rec-a", 9, 1, 1).email("old@example.com"),
        source("rec-b", 1, 2, 5).email("new@example.com"),
    ];
    let attribute = GoldenAttribute::Email;

    let trust_first = survived(
        &ruled(attribute, &[Rule::TrustRank, Rule::MostRecent]),
        &sources,
        attribute,
    );
    assert_eq!(trust_first.value, email("old@example.com"));
    assert_eq!(trust_first.chosen, Chosen::Rule(Rule::TrustRank));

    let recent_first = survived(
        &ruled(attribute, &[Rule::MostRecent, Rule::TrustRank]),
        &sources,
        attribute,
    );
    assert_eq!(recent_first.value, email("new@example.com"));
    assert_eq!(recent_first.chosen, Chosen::Rule(Rule::MostRecent));
}

#[test]
fn a_tie_under_one_rule_falls_through_to_the_next() {
    /// A case: its description, the attribute and its rules, the records,
    /// the expected winner and the rule expected to decide.
    type Case = (&'static str, GoldenAttribute, Vec<Rule>, Vec<Source>, GoldenValue, Rule);
    let cases: Vec<Case> = vec![
        (
            "equal trust, so recency decides",
            GoldenAttribute::Email,
            vec![Rule::TrustRank, Rule::MostRecent],
            vec![
                source("rec-a", 5, 2, 1).email("older@example.com"),
                source("rec-b", 5, 1, 7).email("newer@example.com"),
            ],
            email("newer@example.com"),
            Rule::MostRecent,
        ),
        (
            "every e-mail is equally complete, so trust decides",
            GoldenAttribute::Email,
            vec![Rule::MostComplete, Rule::TrustRank],
            vec![
                source("rec-a", 8, 1, 1).email("trusted@example.com"),
                source("rec-b", 2, 2, 9).email("other@example.com"),
            ],
            email("trusted@example.com"),
            Rule::TrustRank,
        ),
        (
            "equal trust and equally complete names, so recency decides",
            GoldenAttribute::Name,
            vec![Rule::TrustRank, Rule::MostComplete, Rule::MostRecent],
            vec![
                source("rec-a", 5, 2, 1).name(Some("Jon"), None, Some("Smith"), None),
                source("rec-b", 5, 1, 3).name(Some("John"), None, Some("Smith"), None),
            ],
            name(Some("John"), None, Some("Smith"), None),
            Rule::MostRecent,
        ),
        (
            "same count of records, so trust decides",
            GoldenAttribute::DateOfBirth,
            vec![Rule::MostFrequent, Rule::TrustRank],
            vec![
                source("rec-a", 3, 2, 1).born(date(1990, 1, 2)),
                source("rec-b", 7, 1, 1).born(date(1990, 2, 1)),
            ],
            GoldenValue::DateOfBirth { date: date(1990, 2, 1) },
            Rule::TrustRank,
        ),
    ];
    for (case, attribute, rules, sources, expected, deciding) in cases {
        let won = survived(&ruled(attribute, &rules), &sources, attribute);
        assert_eq!(won.value, expected, "{case}");
        assert_eq!(won.chosen, Chosen::Rule(deciding), "{case}");
    }
}

#[test]
fn when_no_rule_separates_the_values_the_tie_break_decides_the_same_way_in_any_input_order() {
    // Equal trust everywhere: position first (rec-b and rec-c share the
    // highest), then record name ascending (rec-b), then the first e-mail
    // listed in rec-b.
    let sources = vec![
        source("rec-a", 5, 3, 9).email("fourth@example.com"),
        source("rec-c", 5, 7, 1).email("third@example.com"),
        source("rec-b", 5, 7, 1)
            .email("first@example.com")
            .email("second@example.com"),
    ];
    let rules = ruled(GoldenAttribute::Email, &[Rule::TrustRank, Rule::MostComplete]);
    for order in permutations(&sources) {
        let won = survived(&rules, &order, GoldenAttribute::Email);
        assert_eq!(won.value, email("first@example.com"));
        assert_eq!(won.chosen, Chosen::TieBreak);
        assert_eq!(
            won.lineage,
            Lineage::Record {
                record: "rec-b".to_owned(),
                system: "crm".to_owned(),
                position: 7
            }
        );
    }
}

#[test]
fn a_record_repeated_at_one_position_still_gives_the_same_result_in_either_order() {
    // A caller bug, but the output must not depend on input order even
    // then: the system, then the spelling, settle what the tie-break leaves.
    let cases = [
        [
            source("rec-a", 5, 4, 1).email("same@example.com"),
            source("rec-a", 5, 4, 1).email("SAME@example.com"),
        ],
        [
            source("rec-a", 5, 4, 1).system("crm").email("same@example.com"),
            source("rec-a", 5, 4, 1).system("erp").email("same@example.com"),
        ],
    ];
    for sources in cases {
        let forward = golden(&RuleSet::default(), &sources);
        let backward = golden(&RuleSet::default(), &[sources[1].clone(), sources[0].clone()]);
        assert_eq!(forward, backward);
    }
}

#[test]
fn the_whole_golden_record_is_the_same_for_every_order_of_the_records() {
    let sources = vec![
        source("rec-a", 5, 10, 3)
            .name(Some("Maria"), None, Some("Garcia"), None)
            .email("maria@example.com")
            .phone("555-0100")
            .address(street("1 Oak Ave", Some("Austin"), Some("78701")))
            .born(date(1985, 3, 4)),
        source("rec-b", 5, 11, 3)
            .system("web")
            .name(Some("María"), Some("José"), Some("García"), None)
            .email("MARIA@example.com")
            .email("mj@example.com")
            .phone("(555) 0100")
            .born(date(1985, 4, 3)),
        source("rec-c", 8, 4, 2)
            .system("erp")
            .name(Some("M."), None, Some("Garcia"), None)
            .address(street("9 Elm St", None, None))
            .born(date(1985, 3, 4)),
        source("rec-d", 5, 11, 3)
            .system("web")
            .email("mj@example.com")
            .phone("555 0199"),
    ];
    let rules = RuleSet::default();
    let expected = golden(&rules, &sources);
    assert_eq!(expected.values.len(), 5, "{expected:?}");
    for order in permutations(&sources) {
        assert_eq!(golden(&rules, &order), expected);
    }
}

/// A record drawn by the property test: indices into small pools of record
/// names, e-mails, given names and birth years, with trust, position and day.
type Spec = (usize, u32, u64, u32, Vec<usize>, Option<usize>, Option<usize>);

fn from_specs(specs: &[Spec]) -> Vec<Source> {
    const RECORDS: [&str; 3] = ["rec-0", "rec-1", "rec-2"];
    const EMAILS: [&str; 4] = ["a@example.com", " A@Example.com", "b@example.com", "c@example.com"];
    const GIVEN: [&str; 3] = ["Ann", "ann ", "Bo"];
    const YEARS: [i32; 2] = [1970, 1971];
    specs
        .iter()
        .map(|(record, trust, position, on, emails, given, born)| {
            let mut s = source(RECORDS[*record], *trust, *position, *on);
            for &e in emails {
                s = s.email(EMAILS[e]);
            }
            if let Some(g) = given {
                s = s.name(Some(GIVEN[*g]), None, Some("Smith"), None);
            }
            if let Some(b) = born {
                s = s.born(date(YEARS[*b], 1, 1));
            }
            s
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Records drawn from small pools, so that names, positions, values and
    /// spellings collide often, give the same golden record shuffled.
    #[test]
    fn the_golden_record_does_not_depend_on_input_order_even_with_colliding_records(
        (specs, shuffled) in proptest::collection::vec(
            (0..3usize, 0..3u32, 0..4u64, 1..4u32, proptest::collection::vec(0..4usize, 0..3),
             proptest::option::of(0..3usize), proptest::option::of(0..2usize)),
            0..6,
        ).prop_flat_map(|specs| (Just(specs.clone()), Just(specs).prop_shuffle()))
    ) {
        let rules = RuleSet::default();
        prop_assert_eq!(golden(&rules, &from_specs(&specs)), golden(&rules, &from_specs(&shuffled)));
    }
}

// ---------------------------------------------------------------------------
// Equality of values and frequency
// ---------------------------------------------------------------------------

#[test]
fn most_frequent_counts_records_not_values_and_ignores_case_and_spacing() {
    // rec-a lists its e-mail twice in two spellings: one record. Counting
    // values would tie two against two, and the tie-break would then pick
    // rec-a, the highest position.
    let sources = vec![
        source("rec-a", 1, 9, 1)
            .email("solo@example.com")
            .email("SOLO@example.com"),
        source("rec-b", 1, 2, 1).email("shared@example.com"),
        source("rec-c", 1, 3, 1).email("  Shared@Example.COM "),
    ];
    let won = survived(
        &ruled(GoldenAttribute::Email, &[Rule::MostFrequent]),
        &sources,
        GoldenAttribute::Email,
    );
    // The representative is rec-c (higher position), in its own spelling,
    // trimmed.
    assert_eq!(won.value, email("Shared@Example.COM"));
    assert_eq!(won.chosen, Chosen::Rule(Rule::MostFrequent));
    assert_eq!(lineage_record(&won), "rec-c");
}

#[test]
fn values_are_equal_by_their_folded_parts_or_their_digits() {
    let name_rules = ruled(GoldenAttribute::Name, &[Rule::MostFrequent]);
    let names = vec![
        source("rec-a", 1, 1, 1).name(Some("Mary  Ann"), None, Some("O'Neil"), None),
        source("rec-b", 1, 2, 1).name(Some("mary ann"), None, Some("O'NEIL"), None),
        source("rec-c", 1, 9, 1).name(Some("Mary"), None, Some("O'Neil"), None),
    ];
    let won = survived(&name_rules, &names, GoldenAttribute::Name);
    assert_eq!(won.value, name(Some("mary ann"), None, Some("O'NEIL"), None));
    assert_eq!(won.chosen, Chosen::Rule(Rule::MostFrequent));

    let phone_rules = ruled(GoldenAttribute::Phone, &[Rule::MostFrequent]);
    let phones = vec![
        source("rec-a", 1, 1, 1).phone("(555) 123-4567"),
        source("rec-b", 1, 2, 1).phone("555.123.4567"),
        source("rec-c", 1, 9, 1).phone("555 999 0000"),
    ];
    let won = survived(&phone_rules, &phones, GoldenAttribute::Phone);
    assert_eq!(
        won.value,
        GoldenValue::Phone {
            number: "555.123.4567".to_owned()
        }
    );

    let address_rules = ruled(GoldenAttribute::Address, &[Rule::MostFrequent]);
    let addresses = vec![
        source("rec-a", 1, 1, 1).address(street("1  Main St", Some("SPRINGFIELD"), None)),
        source("rec-b", 1, 2, 1).address(street("1 main st", Some("Springfield"), None)),
        // Same street and city but a postcode: a different address.
        source("rec-c", 1, 9, 1).address(street("1 Main St", Some("Springfield"), Some("62701"))),
    ];
    let won = survived(&address_rules, &addresses, GoldenAttribute::Address);
    assert_eq!(
        won.value,
        GoldenValue::Address {
            address: street("1 main st", Some("Springfield"), None)
        }
    );
}

#[test]
fn records_that_all_carry_one_value_make_it_the_only_candidate() {
    let one = vec![source("rec-a", 1, 1, 1).email("only@example.com")];
    let won = survived(&RuleSet::default(), &one, GoldenAttribute::Email);
    assert_eq!(won.chosen, Chosen::OnlyCandidate);

    let same = vec![
        source("rec-a", 1, 1, 1).email("Same@example.com"),
        source("rec-b", 9, 2, 1).email("same@EXAMPLE.com"),
    ];
    let won = survived(&RuleSet::default(), &same, GoldenAttribute::Email);
    assert_eq!(won.chosen, Chosen::OnlyCandidate);
    // The representative is still chosen by the rules: recorded the same
    // day, rec-b is the more recent by its later position.
    assert_eq!(won.value, email("same@EXAMPLE.com"));
    assert_eq!(lineage_record(&won), "rec-b");
}

#[test]
fn a_value_competes_through_its_best_record_which_its_lineage_names() {
    // The shared e-mail is carried by a weak and a strong record; it is as
    // trusted as the strong one, which beats the competitor in between.
    let sources = vec![
        source("rec-weak", 2, 3, 1).system("shop").email("shared@example.com"),
        source("rec-strong", 8, 1, 1).system("erp").email("SHARED@example.com"),
        source("rec-middle", 5, 9, 1).system("web").email("other@example.com"),
    ];
    let won = survived(
        &ruled(GoldenAttribute::Email, &[Rule::TrustRank]),
        &sources,
        GoldenAttribute::Email,
    );
    assert_eq!(won.value, email("SHARED@example.com"));
    assert_eq!(won.chosen, Chosen::Rule(Rule::TrustRank));
    assert_eq!(
        won.lineage,
        Lineage::Record {
            record: "rec-strong".to_owned(),
            system: "erp".to_owned(),
            position: 1
        }
    );
}

#[test]
fn blank_values_and_names_without_parsed_parts_offer_no_candidate() {
    let mut blank = source("rec-a", 1, 1, 1)
        .name(Some("  "), None, None, Some("Jr"))
        .email("   ")
        .phone(" ")
        .address(PostalAddress {
            line1: some(" "),
            country: some(""),
            ..PostalAddress::default()
        });
    blank.attributes.full_name = some("Smith, John");
    let empty = golden(&RuleSet::default(), &[blank]);
    assert!(empty.values.is_empty(), "{empty:?}");
}

#[test]
fn values_are_trimmed() {
    let sources = vec![source("rec-a", 1, 1, 1)
        .name(Some(" Ada "), None, Some("Lovelace "), Some(" "))
        .phone(" 555 0100 ")];
    let g = golden(&RuleSet::default(), &sources);
    assert_eq!(
        g.get(GoldenAttribute::Name).map(|s| &s.value),
        Some(&name(Some("Ada"), None, Some("Lovelace"), None))
    );
    assert_eq!(
        g.get(GoldenAttribute::Phone).map(|s| &s.value),
        Some(&GoldenValue::Phone {
            number: "555 0100".to_owned()
        })
    );
}

// ---------------------------------------------------------------------------
// Attributes as units
// ---------------------------------------------------------------------------

#[test]
fn a_name_survives_whole_from_one_record() {
    let sources = vec![
        source("rec-a", 9, 1, 1).name(Some("Robert"), None, None, None),
        source("rec-b", 1, 2, 9).name(Some("Bob"), Some("J"), Some("Smith"), Some("Jr")),
    ];
    let attribute = GoldenAttribute::Name;

    // The trusted record has no family name; it is not borrowed from rec-b.
    let by_trust = survived(&ruled(attribute, &[Rule::TrustRank]), &sources, attribute);
    assert_eq!(by_trust.value, name(Some("Robert"), None, None, None));

    // The fuller record's given name is not replaced by the trusted one.
    let by_completeness = survived(&ruled(attribute, &[Rule::MostComplete]), &sources, attribute);
    assert_eq!(
        by_completeness.value,
        name(Some("Bob"), Some("J"), Some("Smith"), Some("Jr"))
    );
}

#[test]
fn an_address_survives_whole_from_one_address() {
    let full = PostalAddress {
        line1: some("9 Elm St"),
        line2: some("Apt 4"),
        city: some("Portland"),
        region: some("OR"),
        postcode: some("97201"),
        country: some("US"),
    };
    let sources = vec![
        source("rec-a", 1, 1, 1).address(full.clone()),
        source("rec-b", 9, 2, 9)
            .address(street("1 Main St", None, None))
            .address(street("2 Side Rd", Some("Salem"), None)),
    ];
    let attribute = GoldenAttribute::Address;

    let by_recency = survived(&ruled(attribute, &[Rule::MostRecent]), &sources, attribute);
    // rec-b's two addresses are equally recent; the first listed wins, and
    // its missing city is not taken from the second.
    assert_eq!(
        by_recency.value,
        GoldenValue::Address {
            address: street("1 Main St", None, None)
        }
    );
    assert_eq!(by_recency.chosen, Chosen::TieBreak);

    let by_completeness = survived(&ruled(attribute, &[Rule::MostComplete]), &sources, attribute);
    assert_eq!(by_completeness.value, GoldenValue::Address { address: full });
}

// ---------------------------------------------------------------------------
// Overrides
// ---------------------------------------------------------------------------

fn override_of(value: GoldenValue, position: u64, expires_at: Option<DateTime<Utc>>) -> Override {
    Override {
        value,
        by: "steward-7".to_owned(),
        reason: "customer called".to_owned(),
        position,
        expires_at,
    }
}

#[test]
fn an_active_override_wins_whatever_the_records_say() {
    let sources =
        vec![source("rec-a", 9, 1, 1)
            .email("records@example.com")
            .name(Some("Ada"), None, Some("Lovelace"), None)];
    let overrides = vec![
        override_of(email("steward@example.com"), 40, Some(day(11))),
        // An attribute no record offers still gets the override.
        override_of(
            GoldenValue::DateOfBirth {
                date: date(1815, 12, 10),
            },
            41,
            None,
        ),
    ];
    let g = survive(&RuleSet::default(), &contributions(&sources), &overrides, day(10));

    let won = g.get(GoldenAttribute::Email).unwrap();
    assert_eq!(won.value, email("steward@example.com"));
    assert_eq!(won.chosen, Chosen::StewardOverride);
    assert_eq!(
        won.lineage,
        Lineage::Override {
            by: "steward-7".to_owned(),
            position: 40
        }
    );
    assert_eq!(
        g.get(GoldenAttribute::DateOfBirth).map(|s| s.chosen),
        Some(Chosen::StewardOverride)
    );
    // Overrides of other attributes leave the name to the records.
    assert_eq!(
        g.get(GoldenAttribute::Name).map(|s| s.chosen),
        Some(Chosen::OnlyCandidate)
    );
}

#[test]
fn an_override_expired_at_or_before_now_is_ignored() {
    let sources = vec![source("rec-a", 9, 1, 1).email("records@example.com")];
    for expires_at in [day(10), day(9)] {
        let overrides = vec![override_of(email("steward@example.com"), 40, Some(expires_at))];
        let g = survive(&RuleSet::default(), &contributions(&sources), &overrides, day(10));
        let won = g.get(GoldenAttribute::Email).unwrap();
        assert_eq!(won.value, email("records@example.com"), "expiring {expires_at}");
        assert_eq!(won.chosen, Chosen::OnlyCandidate, "expiring {expires_at}");
    }
}

#[test]
fn the_latest_of_several_active_overrides_wins_in_any_order() {
    let overrides = vec![
        override_of(email("first@example.com"), 5, None),
        override_of(email("latest-active@example.com"), 9, Some(day(20))),
        override_of(email("latest-but-expired@example.com"), 12, Some(day(2))),
    ];
    for order in permutations(&overrides) {
        let g = survive(&RuleSet::default(), &[], &order, day(10));
        let won = g.get(GoldenAttribute::Email).unwrap();
        assert_eq!(won.value, email("latest-active@example.com"));
        assert_eq!(
            won.lineage,
            Lineage::Override {
                by: "steward-7".to_owned(),
                position: 9
            }
        );
    }
}

// ---------------------------------------------------------------------------
// The golden record
// ---------------------------------------------------------------------------

#[test]
fn no_contributions_give_an_empty_golden_record() {
    let g = survive(&RuleSet::default(), &[], &[], day(1));
    assert_eq!(
        g,
        Golden {
            rule_set: "default-1".to_owned(),
            values: Vec::new()
        }
    );
    assert!(g.get(GoldenAttribute::Name).is_none());
}

#[test]
fn values_are_listed_in_attribute_order_and_get_finds_each() {
    let sources = vec![source("rec-a", 1, 1, 1)
        .born(date(2000, 1, 1))
        .address(street("1 Main St", None, None))
        .phone("555 0100")
        .email("a@example.com")
        .name(Some("Ada"), None, None, None)];
    let g = golden(&RuleSet::default(), &sources);
    let order: Vec<GoldenAttribute> = g.values.iter().map(|s| s.value.attribute()).collect();
    assert_eq!(order, GoldenAttribute::ALL.to_vec());
    for attribute in GoldenAttribute::ALL {
        assert_eq!(g.get(attribute).map(|s| s.value.attribute()), Some(attribute));
    }
    assert_eq!(g.rule_set, "default-1");
}

#[test]
fn golden_records_round_trip_through_json_in_their_documented_shape() {
    let sources = vec![
        source("rec-a", 9, 1, 1)
            .email("a@example.com")
            .name(Some("Ada"), None, Some("Lovelace"), None),
        source("rec-b", 1, 2, 2).email("b@example.com"),
    ];
    let overrides = vec![override_of(
        GoldenValue::DateOfBirth {
            date: date(1815, 12, 10),
        },
        3,
        None,
    )];
    let g = survive(&RuleSet::default(), &contributions(&sources), &overrides, day(5));
    let value = serde_json::to_value(&g).unwrap();
    assert_eq!(
        value,
        json!({
            "rule_set": "default-1",
            "values": [
                {
                    "value": {"kind": "name", "given": "Ada", "middle": null, "family": "Lovelace", "suffix": null},
                    "lineage": {"kind": "record", "record": "rec-a", "system": "crm", "position": 1},
                    "chosen": "only_candidate"
                },
                {
                    "value": {"kind": "email", "email": "b@example.com"},
                    "lineage": {"kind": "record", "record": "rec-b", "system": "crm", "position": 2},
                    "chosen": "most_recent"
                },
                {
                    "value": {"kind": "date_of_birth", "date": "1815-12-10"},
                    "lineage": {"kind": "override", "by": "steward-7", "position": 3},
                    "chosen": "steward_override"
                }
            ]
        })
    );
    let back: Golden = serde_json::from_value(value).unwrap();
    assert_eq!(back, g);
}

#[test]
fn chosen_serializes_as_one_snake_case_name() {
    let cases = [
        (Chosen::StewardOverride, "steward_override"),
        (Chosen::OnlyCandidate, "only_candidate"),
        (Chosen::Rule(Rule::TrustRank), "trust_rank"),
        (Chosen::Rule(Rule::MostRecent), "most_recent"),
        (Chosen::Rule(Rule::MostFrequent), "most_frequent"),
        (Chosen::Rule(Rule::MostComplete), "most_complete"),
        (Chosen::TieBreak, "tie_break"),
    ];
    for (chosen, text) in cases {
        assert_eq!(chosen.as_str(), text);
        assert_eq!(chosen.to_string(), text);
        assert_eq!(serde_json::to_value(chosen).unwrap(), json!(text));
        assert_eq!(serde_json::from_value::<Chosen>(json!(text)).unwrap(), chosen);
    }
    assert!(serde_json::from_value::<Chosen>(json!("rule")).is_err());
}

#[test]
fn attribute_and_rule_names_parse_back() {
    for attribute in GoldenAttribute::ALL {
        assert_eq!(GoldenAttribute::parse(attribute.as_str()), Some(attribute));
        assert_eq!(serde_json::to_value(attribute).unwrap(), json!(attribute.as_str()));
    }
    for rule in Rule::ALL {
        assert_eq!(Rule::parse(rule.as_str()), Some(rule));
        assert_eq!(serde_json::to_value(rule).unwrap(), json!(rule.as_str()));
    }
    assert_eq!(GoldenAttribute::parse("Name"), None);
    assert_eq!(Rule::parse("newest"), None);
}

// ---------------------------------------------------------------------------
// Rule sets
// ---------------------------------------------------------------------------

#[test]
fn the_default_rule_set_round_trips_through_serde() {
    let default = RuleSet::default();
    let value = serde_json::to_value(&default).unwrap();
    assert_eq!(
        value,
        json!({
            "version": "default-1",
            "rules": {
                "name": ["trust_rank", "most_complete", "most_recent"],
                "email": ["most_recent", "trust_rank"],
                "phone": ["most_recent", "trust_rank"],
                "address": ["most_recent", "most_complete", "trust_rank"],
                "date_of_birth": ["most_frequent", "trust_rank"]
            }
        })
    );
    assert_eq!(serde_json::from_value::<RuleSet>(value.clone()).unwrap(), default);
    // The serialized form is also a valid configuration table.
    assert_eq!(RuleSet::from_json(&value).unwrap(), default);
}

#[test]
fn from_json_reads_the_listed_attributes_and_keeps_the_defaults_for_the_rest() {
    let set = RuleSet::from_json(&json!({
        "version": " 2026-11-a ",
        "rules": {"name": ["most_recent"], "date_of_birth": ["trust_rank", "most_frequent"]}
    }))
    .unwrap();
    assert_eq!(set.version, "2026-11-a");
    assert_eq!(set.rules_for(GoldenAttribute::Name), &[Rule::MostRecent]);
    assert_eq!(
        set.rules_for(GoldenAttribute::DateOfBirth),
        &[Rule::TrustRank, Rule::MostFrequent]
    );
    let default = RuleSet::default();
    for attribute in [GoldenAttribute::Email, GoldenAttribute::Phone, GoldenAttribute::Address] {
        assert_eq!(set.rules_for(attribute), default.rules_for(attribute));
    }

    let without_rules = RuleSet::from_json(&json!({"version": "v2"})).unwrap();
    assert_eq!(without_rules.rules, default.rules);
}

#[test]
fn from_json_refuses_bad_tables_naming_the_attribute_or_rule_at_fault() {
    let cases = vec![
        (json!(["trust_rank"]), RuleSetError::NotATable, "table"),
        (
            json!({"version": "v", "rule": {}}),
            RuleSetError::UnknownKey("rule".to_owned()),
            "`rule`",
        ),
        (json!({"rules": {}}), RuleSetError::EmptyVersion, "version"),
        (json!({"version": "  "}), RuleSetError::EmptyVersion, "version"),
        (json!({"version": 3}), RuleSetError::EmptyVersion, "version"),
        (
            json!({"version": "v", "rules": ["name"]}),
            RuleSetError::RulesNotATable,
            "rules",
        ),
        (
            json!({"version": "v", "rules": {"nickname": ["trust_rank"]}}),
            RuleSetError::UnknownAttribute("nickname".to_owned()),
            "`nickname`",
        ),
        (
            json!({"version": "v", "rules": {"email": "most_recent"}}),
            RuleSetError::NotAList(GoldenAttribute::Email),
            "`email`",
        ),
        (
            json!({"version": "v", "rules": {"phone": ["most_recent", "newest"]}}),
            RuleSetError::UnknownRule {
                attribute: GoldenAttribute::Phone,
                entry: 2,
            },
            "entry 2 of the survivorship rules of `phone` is not a rule name",
        ),
        (
            json!({"version": "v", "rules": {"phone": [7]}}),
            RuleSetError::UnknownRule {
                attribute: GoldenAttribute::Phone,
                entry: 1,
            },
            "entry 1 of",
        ),
        (
            json!({"version": "v", "rules": {"address": []}}),
            RuleSetError::EmptyRuleList(GoldenAttribute::Address),
            "`address`",
        ),
        (
            json!({"version": "v", "rules": {"date_of_birth": ["trust_rank", "most_frequent", "trust_rank"]}}),
            RuleSetError::RepeatedRule {
                attribute: GoldenAttribute::DateOfBirth,
                rule: Rule::TrustRank,
            },
            "rule `trust_rank` appears more than once in the survivorship rules of `date_of_birth`",
        ),
    ];
    for (value, expected, named) in cases {
        let error = RuleSet::from_json(&value).unwrap_err();
        assert_eq!(error, expected, "{value}");
        let message = error.to_string();
        assert!(message.contains(named), "{message:?} should name {named:?}");
    }
}

#[test]
fn rules_for_gives_a_hand_built_set_the_defaults_of_attributes_it_leaves_out() {
    let set = RuleSet {
        version: "hand".to_owned(),
        rules: [(GoldenAttribute::Email, vec![Rule::TrustRank])].into_iter().collect(),
    };
    assert_eq!(set.rules_for(GoldenAttribute::Email), &[Rule::TrustRank]);
    assert_eq!(
        set.rules_for(GoldenAttribute::Name),
        RuleSet::default().rules_for(GoldenAttribute::Name)
    );
}

// ---------------------------------------------------------------------------
// Debug
// ---------------------------------------------------------------------------

#[test]
fn debug_output_shows_the_shape_but_no_personal_value() {
    const SECRETS: [&str; 9] = [
        "Zebulon",
        "Quixote",
        "Xavierre",
        "zq@secret.example",
        "5559876543",
        "77 Hidden Lane",
        "Secretville",
        "1961",
        "called about the move",
    ];
    let sources = vec![source("rec-a", 1, 1, 1)
        .name(Some("Zebulon"), Some("Xavierre"), Some("Quixote"), Some("III"))
        .email("zq@secret.example")
        .phone("5559876543")
        .address(street("77 Hidden Lane", Some("Secretville"), Some("99999")))
        .born(date(1961, 6, 30))];
    let override_ = Override {
        reason: "called about the move".to_owned(),
        ..override_of(email("zq@secret.example"), 9, None)
    };
    let g = golden(&RuleSet::default(), &sources);
    assert_eq!(g.values.len(), 5);

    let mut printed = vec![
        format!("{g:?}"),
        format!("{override_:?}"),
        format!("{:?}", sources[0].contribution()),
    ];
    for survived in &g.values {
        printed.push(format!("{survived:?}"));
        printed.push(format!("{:?}", survived.value));
    }
    for text in &printed {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{text} shows {secret:?}");
        }
    }
    // The shape stays visible for debugging.
    assert!(
        printed[0].contains("Name { given: Some(..), middle: Some(..)"),
        "{}",
        printed[0]
    );
    assert!(printed[0].contains("rec-a"), "{}", printed[0]);
    assert!(printed[1].contains("steward-7"), "{}", printed[1]);
}
