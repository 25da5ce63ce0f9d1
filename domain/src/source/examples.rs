//! One realistic definition and record for each of the car maker's seven
//! source systems (product brief, section 2), mapped end to end.
//!
//! The definitions are written as JSON because the domain has no TOML parser;
//! each JSON object is the same tree as the `[[sources]]` table that the
//! configuration file will hold. The records are shaped like what each system
//! really sends: CSV rows as the flat header-to-text objects the CSV reader
//! hands over, and the Debezium row image taken from `payload.after`.

use super::{map_record, SourceDefinition, SourceDefinitions};
use serde_json::{json, Value};

/// The seven definitions, validated together as start-up would.
fn definitions() -> SourceDefinitions {
    let defs: Vec<SourceDefinition> = serde_json::from_value(json!([
        {
            "system": "web_signup",
            "trust_rank": 20,
            "format": "json",
            "id": "signupId",
            "name": {"given": "firstName", "family": "lastName"},
            "emails": ["email"],
            "phones": [{"path": "mobile", "kind": "mobile"}],
            "date_of_birth": {"path": "birthDate", "formats": ["%Y-%m-%d"]},
            "extras": ["marketingOptIn", "utm.campaign"]
        },
        {
            "system": "dealer_a",
            "trust_rank": 40,
            "format": "json",
            "id": "customerNo",
            "name": {"given": "name.first", "middle": "name.middle", "family": "name.last", "suffix": "name.suffix"},
            "emails": ["contact.email", "contact.altEmail"],
            "phones": [{"path": "contact.phones[*].number"}],
            "addresses": [{"line1": "address.street", "line2": "address.unit", "city": "address.city",
                           "region": "address.state", "postcode": "address.zip", "country": "address.country"}],
            "date_of_birth": {"path": "dob", "formats": ["%m/%d/%Y"]},
            "extras": ["dealer.code", "vehicles[*].vin"]
        },
        {
            "system": "dealer_b",
            "trust_rank": 40,
            "format": "json",
            "id": "CustNo",
            "name": {"full": {"path": "CustName", "form": "last_comma_first"}},
            "emails": ["EMail"],
            "phones": [{"path": "HomePhone", "kind": "home"}, {"path": "CellPhone", "kind": "mobile"}],
            "addresses": [{"line1": "Addr1", "line2": "Addr2", "city_region_postcode": "CityStZip"}],
            "date_of_birth": {"path": "BirthDt", "formats": ["%Y%m%d", "%m/%d/%Y"]},
            "extras": ["DealerCode"]
        },
        {
            "system": "finance",
            "trust_rank": 80,
            "format": "csv",
            "id": "ACCOUNT_ID",
            "name": {"given": "BORROWER_FIRST", "middle": "BORROWER_MI", "family": "BORROWER_LAST", "suffix": "BORROWER_SFX"},
            "emails": ["\"E.Mail\""],
            "phones": [{"path": "HOME_PHONE", "kind": "home"}, {"path": "WORK_PHONE", "kind": "work"}],
            "addresses": [{"line1": "ADDR_LINE1", "line2": "ADDR_LINE2", "city": "CITY", "region": "STATE",
                           "postcode": "ZIP", "country": "COUNTRY"}],
            "date_of_birth": {"path": "DOB", "formats": ["%d.%m.%Y", "%Y-%m-%d"]},
            "extras": ["LOAN_TYPE"]
        },
        {
            "system": "loyalty",
            "trust_rank": 10,
            "format": "csv",
            "id": "member_id",
            "name": {"full": {"path": "Member Name", "form": "first_last"}},
            "emails": ["email"]
        },
        {
            "system": "shop_cdc",
            "trust_rank": 30,
            "format": "debezium",
            "id": "id",
            "name": {"given": "first_name", "family": "last_name"},
            "emails": ["email"],
            "phones": [{"path": "phone"}],
            "addresses": [{"line1": "street", "city": "city", "region": "state", "postcode": "zip"}],
            "date_of_birth": {"path": "birth_date", "formats": ["days_since_epoch"]},
            "extras": ["created_at"]
        },
        {
            "system": "warranty_api",
            "trust_rank": 50,
            "format": "rest_pull",
            "id": "data.customerId",
            "name": {"full": {"path": "data.person.fullName", "form": "first_last"}},
            "emails": ["data.emails[*].address"],
            "phones": [{"path": "data.phones[*].number"}],
            "addresses": [{"line1": "data.addresses[0].lines[0]", "line2": "data.addresses[0].lines[1]",
                           "city": "data.addresses[0].locality", "region": "data.addresses[0].region",
                           "postcode": "data.addresses[0].postalCode", "country": "data.addresses[0].countryCode"}],
            "date_of_birth": {"path": "data.person.birthDate", "formats": ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]},
            "pull": {"by_id": "http://warranty.internal/api/customers/{id}",
                     "by_email": "http://warranty.internal/api/customers?email={email}",
                     "requests_per_second": 5.0, "max_attempts": 5, "timeout_ms": 5000}
        }
    ]))
    .unwrap();
    SourceDefinitions::new(defs).unwrap_or_else(|e| panic!("{e}"))
}

fn check(system: &str, record: Value, expected: Value) {
    let defs = definitions();
    let def = defs.get(system).unwrap();
    let mapped = map_record(def, &record).unwrap_or_else(|e| panic!("{system}: {e}"));
    assert_eq!(serde_json::to_value(&mapped).unwrap(), expected, "{system}");
}

#[test]
fn a_web_signup_maps_its_camel_case_fields() {
    check(
        "web_signup",
        json!({
            "signupId": "w-000123",
            "firstName": "Matthew",
            "lastName": "Groves",
            "email": "MGroves@Example.com ",
            "mobile": "+1 (312) 555-0100",
            "birthDate": "1987-11-23",
            "marketingOptIn": true,
            "utm": {"campaign": "spring-suv", "source": "newsletter"},
            "submittedAt": "2024-03-02T10:15:00Z"
        }),
        json!({"source_id": "w-000123", "attributes": {
            "given_name": "Matthew", "family_name": "Groves",
            "emails": ["MGroves@Example.com"],
            "phones": [{"kind": "mobile", "number": "+1 (312) 555-0100"}],
            "date_of_birth": "1987-11-23",
            "extras": {"marketingOptIn": true, "utm.campaign": "spring-suv"}
        }}),
    );
}

#[test]
fn a_brand_a_dealer_record_maps_its_nested_contact_and_address() {
    check(
        "dealer_a",
        json!({
            "customerNo": 48213,
            "name": {"first": "Matthew", "middle": "James", "last": "Groves", "suffix": "Jr."},
            "contact": {
                "email": "matt.groves@example.com",
                "altEmail": null,
                "phones": [{"type": "home", "number": "312-555-0100"}, {"type": "cell", "number": "312-555-0199"}]
            },
            "address": {"street": "1200 N Lake Shore Dr", "unit": "", "city": "Chicago", "state": "IL", "zip": "60610", "country": "US"},
            "dob": "11/23/1987",
            "dealer": {"code": "A-117", "region": "Midwest"},
            "vehicles": [{"vin": "1HGCM82633A004352", "model": "Tundra"}, {"vin": "5YJ3E1EA7KF317000"}]
        }),
        json!({"source_id": "48213", "attributes": {
            "given_name": "Matthew", "middle_name": "James", "family_name": "Groves", "name_suffix": "Jr.",
            "emails": ["matt.groves@example.com"],
            "phones": [{"number": "312-555-0100"}, {"number": "312-555-0199"}],
            "addresses": [{"line1": "1200 N Lake Shore Dr", "city": "Chicago", "region": "IL", "postcode": "60610", "country": "US"}],
            "date_of_birth": "1987-11-23",
            "extras": {"dealer.code": "A-117", "vehicles[*].vin": ["1HGCM82633A004352", "5YJ3E1EA7KF317000"]}
        }}),
    );
}

#[test]
fn a_brand_b_dealer_record_parses_its_last_comma_first_name_and_city_line() {
    check(
        "dealer_b",
        json!({
            "CustNo": "B-0099812",
            "CustName": "GROVES JR, MATTHEW J",
            "EMail": "MGROVES@EXAMPLE.COM",
            "HomePhone": "(312) 555-0100",
            "CellPhone": "",
            "Addr1": "1200 N LAKE SHORE DR",
            "Addr2": "APT 4B",
            "CityStZip": "CHICAGO, IL 60610-1234",
            "BirthDt": "19871123",
            "DealerCode": "B-22"
        }),
        json!({"source_id": "B-0099812", "attributes": {
            "given_name": "MATTHEW", "middle_name": "J", "family_name": "GROVES", "name_suffix": "JR",
            "full_name": "GROVES JR, MATTHEW J",
            "emails": ["MGROVES@EXAMPLE.COM"],
            "phones": [{"kind": "home", "number": "(312) 555-0100"}],
            "addresses": [{"line1": "1200 N LAKE SHORE DR", "line2": "APT 4B", "city": "CHICAGO", "region": "IL", "postcode": "60610-1234"}],
            "date_of_birth": "1987-11-23",
            "extras": {"DealerCode": "B-22"}
        }}),
    );
}

#[test]
fn a_finance_csv_row_maps_its_headers_including_one_with_a_dot() {
    check(
        "finance",
        json!({
            "ACCOUNT_ID": "FIN-0007781",
            "BORROWER_FIRST": "MATTHEW",
            "BORROWER_MI": "J",
            "BORROWER_LAST": "GROVES",
            "BORROWER_SFX": "",
            "E.Mail": "mgroves@example.com",
            "HOME_PHONE": "3125550100",
            "WORK_PHONE": "",
            "ADDR_LINE1": "1200 N LAKE SHORE DR ",
            "ADDR_LINE2": "",
            "CITY": "CHICAGO",
            "STATE": "IL",
            "ZIP": "60610",
            "COUNTRY": "USA",
            "DOB": "23.11.1987",
            "LOAN_TYPE": "LEASE",
            "BALANCE": "18250.00"
        }),
        json!({"source_id": "FIN-0007781", "attributes": {
            "given_name": "MATTHEW", "middle_name": "J", "family_name": "GROVES",
            "emails": ["mgroves@example.com"],
            "phones": [{"kind": "home", "number": "3125550100"}],
            "addresses": [{"line1": "1200 N LAKE SHORE DR", "city": "CHICAGO", "region": "IL", "postcode": "60610", "country": "USA"}],
            "date_of_birth": "1987-11-23",
            "extras": {"LOAN_TYPE": "LEASE"}
        }}),
    );
}

#[test]
fn a_loyalty_csv_row_maps_a_first_last_name_and_an_email() {
    check(
        "loyalty",
        json!({"member_id": "L-55012", "Member Name": "Matt Groves Jr.", "email": "matt@example.net", "points": "1250"}),
        json!({"source_id": "L-55012", "attributes": {
            "given_name": "Matt", "family_name": "Groves", "name_suffix": "Jr.", "full_name": "Matt Groves Jr.",
            "emails": ["matt@example.net"]
        }}),
    );
}

#[test]
fn a_debezium_row_image_maps_its_columns_and_epoch_day_date() {
    // What a Kafka Connect sink hands over for an update of a MySQL row;
    // ingestion passes `payload.after` (or `before` for a delete) to the
    // mapping.
    let event = json!({
        "schema": {"type": "struct", "name": "shop.inventory.customers.Envelope"},
        "payload": {
            "before": {"id": 1042, "first_name": "Matt", "last_name": "Groves", "email": "old@example.com",
                       "phone": null, "street": null, "city": null, "state": null, "zip": null,
                       "birth_date": 6535, "created_at": 1700000000000_u64},
            "after": {"id": 1042, "first_name": "Matthew", "last_name": "Groves", "email": "matt.groves@example.com",
                      "phone": "+13125550100", "street": "1200 N Lake Shore Dr", "city": "Chicago", "state": "IL",
                      "zip": "60610", "birth_date": 6535, "created_at": 1700000000000_u64},
            "source": {"connector": "mysql", "db": "shop", "table": "customers", "ts_ms": 1700000100000_u64},
            "op": "u",
            "ts_ms": 1700000100123_u64
        }
    });
    check(
        "shop_cdc",
        event["payload"]["after"].clone(),
        json!({"source_id": "1042", "attributes": {
            "given_name": "Matthew", "family_name": "Groves",
            "emails": ["matt.groves@example.com"],
            "phones": [{"number": "+13125550100"}],
            "addresses": [{"line1": "1200 N Lake Shore Dr", "city": "Chicago", "region": "IL", "postcode": "60610"}],
            "date_of_birth": "1987-11-23",
            "extras": {"created_at": 1700000000000_u64}
        }}),
    );
}

#[test]
fn a_rest_api_answer_maps_its_wrapped_lists_and_timestamp_birth_date() {
    check(
        "warranty_api",
        json!({
            "data": {
                "customerId": "c7f3a9e2",
                "person": {"fullName": "Matthew J. Groves", "birthDate": "1987-11-23T00:00:00+00:00"},
                "emails": [{"address": "matt.groves@example.com", "primary": true}, {"address": "mg@work.example", "primary": false}],
                "phones": [{"number": "+1 312 555 0100", "type": "MOBILE"}],
                "addresses": [{"lines": ["1200 N Lake Shore Dr", "Apt 4B"], "locality": "Chicago", "region": "IL",
                               "postalCode": "60610", "countryCode": "US"}]
            },
            "meta": {"requestId": "req-1", "rateLimitRemaining": 58}
        }),
        json!({"source_id": "c7f3a9e2", "attributes": {
            "given_name": "Matthew", "middle_name": "J.", "family_name": "Groves", "full_name": "Matthew J. Groves",
            "emails": ["matt.groves@example.com", "mg@work.example"],
            "phones": [{"number": "+1 312 555 0100"}],
            "addresses": [{"line1": "1200 N Lake Shore Dr", "line2": "Apt 4B", "city": "Chicago", "region": "IL",
                           "postcode": "60610", "country": "US"}],
            "date_of_birth": "1987-11-23"
        }}),
    );
}

#[test]
fn an_unparseable_birth_date_is_reported_without_the_date_text() {
    let defs = definitions();
    let record = json!({"CustNo": "B-1", "CustName": "GROVES, MATTHEW", "BirthDt": "31/02/1987"});
    let error = map_record(defs.get("dealer_b").unwrap(), &record).unwrap_err();
    let message = error.to_string();
    assert_eq!(
        message,
        "field `date_of_birth` (path `BirthDt`): the date matches none of the 2 configured formats"
    );
    for leaked in ["31/02/1987", "31", "1987", "GROVES", "B-1"] {
        assert!(
            !message.contains(leaked) && !format!("{error:?}").contains(leaked),
            "{message} leaks {leaked}"
        );
    }
}

#[test]
fn a_record_without_its_id_is_rejected_for_every_system() {
    let defs = definitions();
    for def in &defs {
        let error = map_record(def, &json!({"email": "a@example.com", "CustName": "GROVES, MATTHEW"})).unwrap_err();
        assert_eq!(error.field, "id", "{}", def.system);
        assert_eq!(error.path, def.id.as_str(), "{}", def.system);
    }
}
