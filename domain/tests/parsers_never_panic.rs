//! Hostile input for every parser and normalizer of the domain: whatever
//! text or JSON a source sends, parsing ends in a value or a typed error,
//! never a panic; outputs stay within a small factor of the input's size;
//! an error never quotes the input (it is personal data); and the largest
//! inputs a reader lets through (1 MiB records) are handled in bounded time.
//!
//! Case counts are small so that CI stays fast; set `PROPTEST_CASES` to run
//! more (e.g. `PROPTEST_CASES=100000`).

use std::time::{Duration, Instant};

use mdm_domain::matching::blocking;
use mdm_domain::matching::compare::{self, Attribute};
use mdm_domain::matching::features::{FeatureSettings, MatchFeatures};
use mdm_domain::matching::model::{DecisionRules, MatchParameters, Scorer};
use mdm_domain::matching::normalize;
use mdm_domain::source::{
    check_date_format, map_record, parse_city_region_postcode, parse_date, parse_full_name, CanonicalAttributes,
    NameForm, Phone, PostalAddress, SourceDefinition, SourcePath,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Unicode normalization (NFKC) expands a character at most 18-fold
/// (U+FDFA, 3 bytes, becomes 33 bytes; "ﷺ"); lower-casing and the ASCII
/// spellings (ß → ss) add little. Every normalized output must stay within
/// this factor of its input, in bytes.
const GROWTH: usize = 18;

/// The longest phone number `normalize::phone` gives: '+', a country code
/// of at most 3 digits and a national number of at most 17 (libphonenumber's
/// limit; E.164 itself says 15 digits in all, but libphonenumber's metadata
/// takes some longer numbers as valid, e.g. 14-digit German ones).
const MAX_E164: usize = 1 + 3 + 17;

/// The proptest configuration: `default` cases unless `PROPTEST_CASES` says
/// otherwise, and no regression files (a failure prints its minimal input).
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Pieces hostile text is built from: what the parsers split on, and the
/// characters that break naive text handling.
const PIECES: &[&str] = &[
    "\0",
    "\u{202E}", // right-to-left override
    "\u{200F}", // right-to-left mark
    "\u{200D}", // zero-width joiner
    "\u{FEFF}", // byte-order mark
    "\u{FDFA}", // the Unicode character with the longest NFKC expansion
    "\u{0301}\u{0301}\u{0301}\u{0301}",
    "İ",
    "ß",
    "ﬃ",
    "①",
    "１２",
    "한",
    "👨\u{200D}👩\u{200D}👧",
    "שלום",
    "محمد",
    "Ⅻ",
    "\u{1F1FA}\u{1F1F8}",
    ",",
    " ",
    "   ",
    ".",
    "-",
    "/",
    "#",
    "@",
    "+",
    "(0)",
    "ext",
    "x",
    "tel:",
    "mailto:",
    "Jr",
    "III",
    "van",
    "de la",
    "apt",
    "Suite",
    "St",
    "Saint",
    "12",
    "60610-1234",
    "IL",
    "O'",
    "’",
    "\t",
    "\r\n",
    "gmail.com",
    "%Y",
    "1987-11-23",
    "-1",
    "99999999999",
    "[*]",
    "\"",
    "\\",
];

/// Text mixing the pieces above with arbitrary characters, control
/// characters, runs of combining marks and right-to-left scripts.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(PIECES).prop_map(str::to_owned),
        3 => any::<char>().prop_map(String::from),
        2 => "[a-zA-Z0-9]{1,8}",
        1 => "[\\x00-\\x1f\\x7f]{1,4}",
        1 => "\\p{M}{1,30}",
        1 => "[\\u{0590}-\\u{06FF}]{1,8}",
    ];
    prop_oneof![
        1 => any::<String>(),
        6 => prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat()),
    ]
}

/// Text that mixes what the name parser splits on with arbitrary Unicode.
fn messy_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ ,.A-Za-z0-9\\-'\"\\[\\]\\*\\\\]{0,40}",
        "(jr|sr|ii|iii|iv|van|de|la|,|\\.| ){0,12}",
        hostile_text(),
    ]
}

/// JSON values up to a few levels deep, with the keys the definition uses.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        messy_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("name".to_owned()),
                    Just("first".to_owned()),
                    Just("emails".to_owned()),
                    Just("phones".to_owned()),
                    Just("n".to_owned()),
                    Just("dob".to_owned()),
                    Just("csz".to_owned()),
                    Just("a".to_owned()),
                    Just("l1".to_owned()),
                    Just("x".to_owned()),
                    "[a-z]{1,4}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A near-valid record for `definition()`: every mapped key present, with
/// hostile text or a value of the wrong type here and there.
fn near_valid_record() -> impl Strategy<Value = Value> {
    let text = || hostile_text().prop_map(Value::String);
    let maybe_wrong = || {
        prop_oneof![
            6 => hostile_text().prop_map(Value::String),
            1 => Just(Value::Null),
            1 => any::<i64>().prop_map(|n| json!(n)),
            1 => Just(json!(["a", "b"])),
            1 => Just(json!({"k": "v"})),
        ]
    };
    (
        maybe_wrong(),
        maybe_wrong(),
        prop::collection::vec(text(), 0..4),
        prop::collection::vec(hostile_text(), 0..4),
        maybe_wrong(),
        maybe_wrong(),
        maybe_wrong(),
        prop::collection::vec(json_value(), 0..3),
    )
        .prop_map(|(id, name, emails, phones, dob, line1, csz, extras)| {
            json!({
                "id": id,
                "name": name,
                "emails": emails,
                "first": {"emails": ["x@example.com"]},
                "phones": phones.into_iter().map(|n| json!({"n": n})).collect::<Vec<_>>(),
                "dob": dob,
                "a": {"l1": line1},
                "csz": csz,
                "x": extras,
            })
        })
}

fn definition() -> SourceDefinition {
    serde_json::from_value(json!({
        "system": "fuzz",
        "trust_rank": 1,
        "format": "json",
        "id": "id",
        "name": {"full": {"path": "name", "form": "last_comma_first"}},
        "emails": ["emails[*]", "first.emails[0]"],
        "phones": [{"path": "phones[*].n", "kind": "home"}],
        "addresses": [{"line1": "a.l1", "city_region_postcode": "csz"}],
        "date_of_birth": {"path": "dob", "formats": ["%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%Y%m%d", "%d %b %Y", "%Y-%m-%dT%H:%M:%SZ", "days_since_epoch"], "invalid": "ignore"},
        "extras": ["x[*]"]
    }))
    .expect("a valid definition")
}

/// Every date format the example definitions use, and then some.
fn date_formats() -> Vec<String> {
    [
        "%Y-%m-%d",
        "%m/%d/%Y",
        "%d/%m/%Y",
        "%Y%m%d",
        "%d.%m.%Y",
        "%d %b %Y",
        "%B %d, %Y",
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%j",
        "days_since_epoch",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn scorer() -> Scorer {
    Scorer::new(MatchParameters::defaults(), DecisionRules::default()).expect("the defaults are valid")
}

/// Attributes built from hostile text in every slot.
fn attributes(texts: &[String], extra: &str) -> CanonicalAttributes {
    let t = |i: usize| texts.get(i % texts.len().max(1)).cloned();
    let mut extras = std::collections::BTreeMap::new();
    extras.insert("ssn".to_owned(), Value::String(extra.to_owned()));
    CanonicalAttributes {
        given_name: t(0),
        middle_name: t(1),
        family_name: t(2),
        name_suffix: t(3),
        full_name: t(4),
        emails: texts.to_vec(),
        phones: texts
            .iter()
            .map(|n| Phone {
                kind: Some("home".into()),
                number: n.clone(),
            })
            .collect(),
        addresses: vec![PostalAddress {
            line1: t(5),
            line2: t(6),
            city: t(7),
            region: t(8),
            postcode: t(9),
            country: t(10),
        }],
        date_of_birth: chrono::NaiveDate::from_ymd_opt(1980, 2, 29),
        extras,
    }
}

fn settings(region: &str) -> FeatureSettings {
    FeatureSettings {
        identifiers: vec!["ssn".to_owned()],
        default_phone_region: region.to_owned(),
    }
}

proptest! {
    #![proptest_config(cases(1_000))]

    #[test]
    fn full_names_parse_or_fail_without_quoting_the_input(text in messy_text()) {
        for form in [NameForm::LastCommaFirst, NameForm::FirstLast, NameForm::AsGiven] {
            match parse_full_name(&text, form) {
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(text.trim().chars().count() < 8 || !message.contains(text.trim()), "{message}");
                }
                // Parsing only splits: every part is made of the input's words.
                Ok(parsed) => {
                    for part in [&parsed.given, &parsed.middle, &parsed.family, &parsed.suffix].into_iter().flatten() {
                        prop_assert!(!part.is_empty() && part.len() <= text.len());
                        for word in part.split(' ') {
                            prop_assert!(text.contains(word));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn city_lines_split_into_words_of_the_input(text in messy_text()) {
        match parse_city_region_postcode(&text) {
            Ok(parts) => {
                for part in [&parts.city, &parts.region, &parts.postcode].into_iter().flatten() {
                    for word in part.split(' ') {
                        prop_assert!(!word.is_empty() && text.contains(word));
                    }
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(text.trim().chars().count() < 8 || !message.contains(text.trim()), "{message}");
            }
        }
    }

    #[test]
    fn dates_parse_in_every_format_or_are_absent(text in messy_text(), format in "[%A-Za-z:./ -]{0,12}") {
        let formats = date_formats();
        for f in &formats {
            prop_assert_eq!(check_date_format(f), Ok(()), "{}", f);
        }
        let _ = parse_date(&text, &formats);
        let _ = parse_date(text.trim(), &formats);
        // Arbitrary formats: checked without panicking; used only when valid.
        if check_date_format(&format).is_ok() {
            let _ = parse_date(&text, std::slice::from_ref(&format));
        }
    }

    #[test]
    fn near_valid_dates_parse_to_real_dates(y in -300_000i32..300_000, m in 0u32..14, d in 0u32..33, days in any::<i64>()) {
        let formats = date_formats();
        let real = chrono::NaiveDate::from_ymd_opt(y, m, d);
        if (1000..=9999).contains(&y) && real.is_some() {
            prop_assert_eq!(parse_date(&format!("{y:04}-{m:02}-{d:02}"), &formats), real);
            prop_assert_eq!(parse_date(&format!("{m}/{d}/{y}"), &formats), real);
        }
        for text in [format!("{y:04}-{m:02}-{d:02}"), format!("{m}/{d}/{y}"), format!("{d}.{m}.{y}"), format!("{y}{m:02}{d:02}")] {
            let _ = parse_date(&text, &formats);
        }
        // Days since 1970 beyond chrono's range are absent, not a panic.
        let parsed = parse_date(&days.to_string(), &["days_since_epoch".to_owned()]);
        prop_assert_eq!(parsed.is_some(), i32::try_from(days).ok().and_then(|d| d.checked_add(719_163)).and_then(chrono::NaiveDate::from_num_days_from_ce_opt).is_some());
    }

    #[test]
    fn normalizers_are_total_bounded_and_clean(text in hostile_text(), other in hostile_text(), region in "(US|GB|AU|DE|FR|IN|BR|JP|[A-Za-z]{0,3})") {
        let limit = GROWTH * text.len();
        let folded = normalize::fold(&text);
        prop_assert!(folded.len() <= limit, "fold grew {} bytes to {}", text.len(), folded.len());
        prop_assert!(!folded.chars().any(char::is_control));
        prop_assert_eq!(normalize::fold(&folded), folded.clone());
        if let Some(part) = normalize::name_part(&text) {
            prop_assert!(part.len() <= limit && !part.contains(' '));
            prop_assert!(!normalize::given_roots(&part).is_empty());
            prop_assert!(normalize::nickname_match(&part, &part));
        }
        let _ = normalize::nickname_match(&text, &other);
        let _ = normalize::suffix(&text);
        if let Some(email) = normalize::email(&text) {
            prop_assert!(email.len() <= limit && email.contains('@'));
        }
        if let Some(phone) = normalize::phone(&text, &region) {
            prop_assert!(phone.starts_with('+') && phone.len() <= MAX_E164, "{}", phone.len());
            prop_assert!(phone[1..].bytes().all(|b| b.is_ascii_digit()));
        }
        for line2 in [None, Some(other.as_str())] {
            let street = normalize::street(&text, line2);
            for part in [&street.number, &street.name, &street.unit, &street.extra].into_iter().flatten() {
                prop_assert!(!part.is_empty() && part.len() <= GROWTH * (text.len() + other.len()));
                prop_assert!(!part.chars().any(char::is_control));
            }
        }
        if let Some(code) = normalize::postcode(&text) {
            prop_assert!(code.len() <= limit);
        }
        if let Some(city) = normalize::city(&text) {
            prop_assert!(city.len() <= limit);
        }
        if let Some(code) = normalize::soundex(&text) {
            prop_assert_eq!(code.len(), 4);
        }
        if let Some(digits) = normalize::digits(&text) {
            prop_assert!(digits.len() <= limit && digits.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn near_valid_phones_are_e164_or_absent(
        plus in any::<bool>(),
        digits in "[0-9]{0,22}",
        seps in prop::collection::vec(prop::sample::select(vec![" ", "-", ".", "(", ")", "/", "\u{2013}", "(0)", " ext ", "x", "#", ";", "\u{FF11}"]), 0..6),
        region in "(US|GB|AU|DE|FR|NZ|IN|BR|JP|CN|ZZ|001|[A-Z]{2}|)",
    ) {
        let mut text = if plus { "+".to_owned() } else { String::new() };
        for (i, c) in digits.chars().enumerate() {
            if let Some(sep) = seps.get(i % 7) {
                text.push_str(sep);
            }
            text.push(c);
        }
        if let Some(e164) = normalize::phone(&text, &region) {
            prop_assert!(e164.starts_with('+') && e164.len() <= MAX_E164);
            prop_assert_eq!(normalize::phone(&e164, "US"), Some(e164.clone()));
        }
    }

    #[test]
    fn near_valid_addresses_keep_their_unit(
        number in "[0-9]{1,5}[a-z]?",
        street in "[A-Za-z]{1,10}( [A-Za-z]{1,10}){0,3}".prop_filter("no unit designator in the street name", |s| {
            s.split(' ').all(|w| !["apartment", "apt", "fl", "flat", "floor", "rm", "room", "ste", "suite", "unit"].contains(&w.to_lowercase().as_str()))
        }),
        designator in prop::sample::select(vec!["apt", "Apt.", "apartment", "unit", "ste", "suite", "#", "flat", "fl", "floor", "rm", "room", "Suite #"]),
        unit in "[0-9]{1,4}[A-Za-z]?",
        noise in hostile_text(),
    ) {
        let line = format!("{number} {street} {designator} {unit}");
        let (number, unit) = (number.to_lowercase(), unit.to_lowercase());
        let parsed = normalize::street(&line, None);
        prop_assert_eq!(parsed.number.as_deref(), Some(number.as_str()));
        prop_assert_eq!(parsed.unit.as_deref(), Some(unit.as_str()));
        // With noise on line 2, line 1's unit still wins.
        let parsed = normalize::street(&line, Some(&noise));
        prop_assert_eq!(parsed.unit.as_deref(), Some(unit.as_str()));
    }

    #[test]
    fn any_path_text_parses_or_keeps_its_error(text in messy_text(), record in json_value()) {
        let path = SourcePath::new(text);
        if path.segments().is_ok() {
            let _ = path.select(&record);
        }
    }

    #[test]
    fn any_record_maps_or_fails_with_a_typed_error(record in prop_oneof![json_value(), near_valid_record()]) {
        let def = definition();
        match map_record(&def, &record) {
            Err(e) => {
                // The message names the field and path; it must not echo a value.
                let message = e.to_string();
                for key in ["id", "name", "dob", "csz"] {
                    if let Some(value) = record.get(key).and_then(Value::as_str).filter(|n| n.trim().chars().count() >= 8) {
                        prop_assert!(!message.contains(value.trim()), "{message}");
                    }
                }
            }
            Ok(mapped) => {
                // Mapped values never outgrow the record.
                let size = record.to_string().len();
                let attributes = &mapped.attributes;
                prop_assert!(attributes.emails.iter().map(String::len).sum::<usize>() <= size);
                prop_assert!(attributes.phones.iter().map(|p| p.number.len()).sum::<usize>() <= size);
                let features = MatchFeatures::from_attributes(attributes, &FeatureSettings::default());
                let _ = blocking::keys(&features);
                let _ = compare::compare(&features, &features);
            }
        }
    }

    #[test]
    fn features_keys_and_comparisons_of_hostile_records(
        a in prop::collection::vec(hostile_text(), 1..12),
        b in prop::collection::vec(hostile_text(), 1..12),
        region in "(US|GB|DE|[A-Z]{2}|)",
    ) {
        let scorer = scorer();
        let fa = MatchFeatures::from_attributes(&attributes(&a, &a[0]), &settings(&region));
        let fb = MatchFeatures::from_attributes(&attributes(&b, &b[0]), &settings(&region));
        for f in [&fa, &fb] {
            let keys = blocking::keys_of(f, &[
                blocking::KeyKind::Email, blocking::KeyKind::Phone, blocking::KeyKind::Identifier,
                blocking::KeyKind::FamilySoundexBirthYear, blocking::KeyKind::GivenRootBirthDate,
                blocking::KeyKind::FamilyInitialBirthDate, blocking::KeyKind::PostcodeGivenSoundex,
                blocking::KeyKind::NameSoundexes, blocking::KeyKind::StreetNumberPostcode, blocking::KeyKind::BirthDate,
            ]);
            // One key per email, phone and identifier, a bounded number per name.
            prop_assert!(keys.len() <= f.emails.len() + f.phones.len() + f.identifiers.len() + 2 * f.addresses.len() + 64);
            let _ = f.dwelling_keys().count();
            prop_assert!(f.heap_bytes() < 64 * 1024 * 1024);
        }
        for (x, y) in [(&fa, &fb), (&fb, &fa), (&fa, &fa)] {
            let v = compare::compare(x, y);
            for (i, level) in v.iter().enumerate() {
                if let Some(level) = level {
                    let attribute = Attribute::from_index(i).expect("ten attributes");
                    prop_assert!(usize::from(*level) < attribute.levels().len(), "{:?} level {}", attribute, level);
                }
            }
            let total = scorer.total(&v);
            prop_assert!(total.is_finite());
            let _ = scorer.pair_band(&v, total);
            let _ = scorer.explain(&v);
        }
    }
}

/// Runs `f` and fails when it takes longer than `budget`. The domain takes
/// time as an argument; this test measures the parsers' own running time.
#[allow(clippy::disallowed_methods)]
fn within(budget: Duration, what: &str, f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    let took = start.elapsed();
    assert!(took <= budget, "{what} took {took:?}, more than {budget:?}");
    took
}

/// Values of a quarter of the largest record a reader lets through (1 MiB;
/// a quarter keeps this test short in unoptimized builds): every parser and
/// normalizer handles them in time linear in their size (a quadratic one
/// takes minutes here),
/// and a comparison of two records with huge names costs no more than one
/// of short names (string similarity is quadratic, so it looks only at a
/// bounded prefix).
#[test]
fn the_largest_values_are_handled_in_bounded_time() {
    const MIB: usize = 1 << 18;
    let huge: Vec<(&str, String)> = vec![
        ("letters", "ab".repeat(MIB / 2)),
        ("words", "Ab Cd, ".repeat(MIB / 7)),
        ("digits", "1".repeat(MIB)),
        ("combining marks", format!("a{}", "\u{0301}".repeat(MIB / 2))),
        ("U+FDFA", "\u{FDFA}".repeat(MIB / 3)),
        ("NUL and controls", "\0\x01\x1b".repeat(MIB / 3)),
        ("RTL", "\u{202E}שלום ".repeat(MIB / 12)),
        ("suffixes", "Jr ".repeat(MIB / 3)),
        ("commas", ",".repeat(MIB)),
        ("unit designators", "apt # ".repeat(MIB / 6)),
        ("hyphens", "1-".repeat(MIB / 2)),
        ("at signs", "a@".repeat(MIB / 2)),
    ];
    let formats = date_formats();
    type Parser<'a> = (&'static str, Box<dyn Fn(&str) + 'a>);
    let parsers: Vec<Parser> = vec![
        (
            "fold",
            Box::new(|t| assert!(normalize::fold(t).len() <= GROWTH * t.len())),
        ),
        (
            "name_part",
            Box::new(|t| {
                let _ = normalize::name_part(t);
            }),
        ),
        (
            "suffix",
            Box::new(|t| {
                let _ = normalize::suffix(t);
            }),
        ),
        (
            "email",
            Box::new(|t| {
                let _ = normalize::email(t);
            }),
        ),
        (
            "phone",
            Box::new(|t| {
                let _ = normalize::phone(t, "US");
            }),
        ),
        (
            "street",
            Box::new(|t| {
                let _ = normalize::street(t, Some(t));
            }),
        ),
        (
            "postcode",
            Box::new(|t| {
                let _ = normalize::postcode(t);
            }),
        ),
        (
            "city",
            Box::new(|t| {
                let _ = normalize::city(t);
            }),
        ),
        (
            "soundex",
            Box::new(|t| {
                let _ = normalize::soundex(t);
            }),
        ),
        (
            "digits",
            Box::new(|t| {
                let _ = normalize::digits(t);
            }),
        ),
        (
            "parse_full_name",
            Box::new(|t| {
                for form in [NameForm::LastCommaFirst, NameForm::FirstLast] {
                    let _ = parse_full_name(t, form);
                }
            }),
        ),
        (
            "parse_city_region_postcode",
            Box::new(|t| {
                let _ = parse_city_region_postcode(t);
            }),
        ),
        (
            "parse_date",
            Box::new(|t| {
                let _ = parse_date(t, &formats);
            }),
        ),
        (
            "SourcePath",
            Box::new(|t| {
                let _ = SourcePath::new(t.to_owned()).segments().is_ok();
            }),
        ),
    ];
    // Generous for unoptimized builds on a shared machine; a quadratic
    // parser takes minutes here.
    let budget = Duration::from_secs(8);
    let mut slowest = (Duration::ZERO, "", "");
    for (name, text) in &huge {
        for (parser, run) in &parsers {
            let took = within(budget, &format!("{parser} of {name}"), || run(text));
            if took > slowest.0 {
                slowest = (took, parser, name);
            }
        }
    }
    eprintln!(
        "slowest parser of a 256 KiB value: {} of {}, {:?}",
        slowest.1, slowest.2, slowest.0
    );

    // Two records whose names and streets are half a megabyte each and
    // differ enough to need string similarity.
    let long = |seed: &str| {
        let mut attributes = CanonicalAttributes {
            given_name: Some(seed.repeat(MIB / 2)),
            family_name: Some(format!("x{}", seed.repeat(MIB / 2))),
            ..CanonicalAttributes::default()
        };
        attributes.addresses.push(PostalAddress {
            line1: Some(format!("12 {}", seed.repeat(MIB / 2))),
            city: Some(seed.repeat(MIB / 2)),
            postcode: Some("60610".into()),
            ..PostalAddress::default()
        });
        MatchFeatures::from_attributes(&attributes, &FeatureSettings::default())
    };
    let (a, b) = (long("ab"), long("ba"));
    let took = within(Duration::from_secs(5), "comparing records with huge names", || {
        let v = compare::compare(&a, &b);
        assert!(v[0].is_some() && v[1].is_some());
    });
    eprintln!("comparing two records with 256 KiB names: {took:?}");
}

/// Many values in one record: mapping keeps each value once and stays
/// linear in their number.
#[test]
fn a_record_with_very_many_values_maps_in_bounded_time() {
    let n = 100_000;
    let emails: Vec<Value> = (0..n).map(|i| json!(format!("p{i}@example.com"))).collect();
    let phones: Vec<Value> = (0..n)
        .map(|i| json!({"n": format!("+1 312 555 {:04}", i % 10_000)}))
        .collect();
    let record = json!({"id": "1", "name": "Doe, Jane", "emails": emails, "phones": phones});
    let def = definition();
    let took = within(Duration::from_secs(20), "mapping 100,000 emails and phones", || {
        let mapped = map_record(&def, &record).expect("maps");
        assert_eq!(mapped.attributes.emails.len(), n);
        assert_eq!(mapped.attributes.phones.len(), 10_000);
        let features = MatchFeatures::from_attributes(&mapped.attributes, &FeatureSettings::default());
        let _ = blocking::keys(&features);
        let _ = compare::compare(&features, &features);
    });
    eprintln!("mapping and comparing a record of 100,000 emails and phones: {took:?}");
}
