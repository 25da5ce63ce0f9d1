//! Hostile input for the source parsers: whatever text or JSON a source
//! sends, parsing ends in a value or a typed error, never a panic, and an
//! error never quotes the input (it is personal data).

use mdm_domain::source::{
    map_record, parse_city_region_postcode, parse_date, parse_full_name, NameForm, SourceDefinition, SourcePath,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Text that mixes what the parsers split on with arbitrary Unicode.
fn messy_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ ,.A-Za-z0-9\\-'\"\\[\\]\\*\\\\]{0,40}",
        "(jr|sr|ii|iii|iv|van|de|la|,|\\.| ){0,12}",
    ]
}

/// JSON values up to a few levels deep, with the keys the definition uses.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        messy_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("name".to_owned()),
                    Just("first".to_owned()),
                    Just("emails".to_owned()),
                    Just("dob".to_owned()),
                    Just("csz".to_owned()),
                    "[a-z]{1,4}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
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
        "date_of_birth": {"path": "dob", "formats": ["%Y-%m-%d", "%m/%d/%Y", "days_since_epoch"]},
        "extras": ["x[*]"]
    }))
    .expect("a valid definition")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn full_names_parse_or_fail_without_quoting_the_input(text in messy_text()) {
        for form in [NameForm::LastCommaFirst, NameForm::FirstLast, NameForm::AsGiven] {
            if let Err(e) = parse_full_name(&text, form) {
                let message = e.to_string();
                prop_assert!(text.trim().chars().count() < 8 || !message.contains(text.trim()), "{message}");
            }
        }
    }

    #[test]
    fn city_lines_parse_or_fail_without_panicking(text in messy_text()) {
        let _ = parse_city_region_postcode(&text);
    }

    #[test]
    fn dates_parse_or_are_absent(text in messy_text()) {
        let formats = vec!["%Y-%m-%d".to_owned(), "%d.%m.%Y".to_owned(), "days_since_epoch".to_owned()];
        let _ = parse_date(&text, &formats);
    }

    #[test]
    fn any_path_text_parses_or_keeps_its_error(text in messy_text(), record in json_value()) {
        let path = SourcePath::new(text);
        if path.segments().is_ok() {
            let _ = path.select(&record);
        }
    }

    #[test]
    fn any_record_maps_or_fails_with_a_typed_error(record in json_value()) {
        let def = definition();
        if let Err(e) = map_record(&def, &record) {
            // The message names the field and path; it must not echo a value.
            let message = e.to_string();
            if let Some(name) = record.get("name").and_then(Value::as_str).filter(|n| n.trim().chars().count() >= 8) {
                prop_assert!(!message.contains(name.trim()), "{message}");
            }
        }
    }
}
