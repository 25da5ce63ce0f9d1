//! The generated files against the example source definitions, determinism,
//! the record target and the hard cases the data must hold.

use super::model::{self, Sex, Tables};
use super::pick::Rand;
use super::*;
use crate::sources::parse_sources;
use mdm_domain::source::{map_record, MappedRecord, SourceDefinitions};
use rand::SeedableRng;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

fn definitions() -> SourceDefinitions {
    parse_sources(include_str!("../../../config/sources.example.toml")).expect("the example sources file is valid")
}

fn generate(dir: &Path, people: u64, seed: u64, noise: f64) -> Summary {
    let mut args = DatagenArgs::new(dir, people, seed);
    args.noise = noise;
    run(&args).expect("datagen runs")
}

/// Every source record of a folder, as the ingestion will hand it to the
/// mapping: (system, op for CDC events, record).
fn records(dir: &Path) -> Vec<(String, Option<String>, Value)> {
    let mut all = Vec::new();
    for system in System::ALL {
        let path = dir.join(system.file());
        match system {
            System::Finance | System::Loyalty => {
                let mut reader = csv::Reader::from_path(&path).expect("csv opens");
                let headers = reader.headers().expect("headers").clone();
                for row in reader.records() {
                    let row = row.expect("csv row");
                    let object: serde_json::Map<String, Value> = headers
                        .iter()
                        .zip(row.iter())
                        .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
                        .collect();
                    all.push((system.name().to_owned(), None, Value::Object(object)));
                }
            }
            _ => {
                let text = std::fs::read_to_string(&path).expect("file reads");
                for line in text.lines() {
                    let value: Value = serde_json::from_str(line).expect("each line is one JSON document");
                    if system == System::ShopCdc {
                        let payload = value.get("payload").unwrap_or(&value);
                        let op = payload["op"].as_str().expect("op").to_owned();
                        let image = if op == "d" {
                            &payload["before"]
                        } else {
                            &payload["after"]
                        };
                        all.push((system.name().to_owned(), Some(op), image.clone()));
                    } else {
                        all.push((system.name().to_owned(), None, value));
                    }
                }
            }
        }
    }
    all
}

/// truth.csv as (system, source id) → (person, household).
fn truth(dir: &Path) -> BTreeMap<(String, String), (String, String)> {
    let mut reader = csv::Reader::from_path(dir.join("truth.csv")).expect("truth opens");
    assert_eq!(
        reader.headers().expect("headers").iter().collect::<Vec<_>>(),
        ["system", "source_id", "person_id", "household_id"]
    );
    let mut map = BTreeMap::new();
    for row in reader.records() {
        let row = row.expect("row");
        let previous = map.insert(
            (row[0].to_owned(), row[1].to_owned()),
            (row[2].to_owned(), row[3].to_owned()),
        );
        assert!(previous.is_none(), "truth lists {} {} twice", &row[0], &row[1]);
    }
    map
}

fn map_all(dir: &Path) -> Vec<(String, Option<String>, MappedRecord)> {
    let defs = definitions();
    let mut errors = Vec::new();
    let mut mapped = Vec::new();
    for (system, op, record) in records(dir) {
        let def = defs.get(&system).expect("every file's system is defined");
        match map_record(def, &record) {
            Ok(m) => mapped.push((system, op, m)),
            Err(e) => errors.push(format!("{system}: {e}\n  {record}")),
        }
    }
    assert!(
        errors.is_empty(),
        "{} records do not map, first ones:\n{}",
        errors.len(),
        errors[..errors.len().min(10)].join("\n")
    );
    mapped
}

#[test]
fn every_generated_record_maps_with_the_example_definitions_and_is_in_the_truth() {
    for noise in [1.0, 3.0] {
        let dir = tempfile::tempdir().expect("tempdir");
        let summary = generate(dir.path(), 3000, 7, noise);
        let mapped = map_all(dir.path());
        let truth = truth(dir.path());
        assert_eq!(truth.len() as u64, summary.source_records);

        // Each source record is in the truth once; ids are unique per system
        // (a shop row's later events repeat its id).
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        let mut ops: BTreeMap<String, u64> = BTreeMap::new();
        for (system, op, m) in &mapped {
            let key = (system.clone(), m.source_id.clone());
            assert!(truth.contains_key(&key), "{key:?} is not in truth.csv");
            let first = seen.insert(key.clone());
            match op.as_deref() {
                None => assert!(first, "{key:?} appears twice"),
                Some("c" | "r") => assert!(first, "{key:?} created twice"),
                Some(other) => {
                    assert!(!first, "{key:?}: `{other}` before its create");
                    *ops.entry(other.to_owned()).or_default() += 1;
                }
            }
        }
        assert_eq!(seen.len(), truth.len(), "every truth row has its record");
        if noise == 1.0 {
            attributes_are_found(&mapped);
        }
        assert!(
            ops.get("u").copied().unwrap_or(0) > 0 && ops.get("d").copied().unwrap_or(0) > 0,
            "{ops:?}"
        );

        // File counts agree with the summary.
        for system in System::ALL {
            let in_truth = truth.keys().filter(|(s, _)| s == system.name()).count() as u64;
            assert_eq!(summary.records_of(system.name()), Some(in_truth), "{}", system.name());
            assert!(in_truth > 0, "{} has no records", system.name());
        }
        let people: BTreeSet<&String> = truth.values().map(|(p, _)| p).collect();
        assert_eq!(people.len() as u64, summary.people);
        assert_eq!(summary.people, 3000);
    }
}

/// Each attribute a definition maps is found in most of its records, so
/// the files use the paths and headers the definitions name.
fn attributes_are_found(mapped: &[(String, Option<String>, MappedRecord)]) {
    let all = ["given", "family", "email", "phone", "address", "dob"];
    let expected: [(&str, &[&str], &[&str]); 7] = [
        (
            "web_signup",
            &["given", "family", "email", "phone"],
            &["marketingOptIn", "utm.campaign"],
        ),
        ("dealer_a", &all, &["dealer.code"]),
        ("dealer_b", &all, &["DealerCode"]),
        ("finance", &all, &["LOAN_TYPE"]),
        ("loyalty", &["given", "family", "email"], &[]),
        (
            "shop_cdc",
            &["given", "family", "email", "phone", "address"],
            &["created_at"],
        ),
        ("warranty_api", &all, &[]),
    ];
    for (system, attributes, extras) in expected {
        let records: Vec<&MappedRecord> = mapped
            .iter()
            .filter(|(s, _, _)| s == system)
            .map(|(_, _, m)| m)
            .collect();
        let share = |found: &dyn Fn(&MappedRecord) -> bool| {
            records.iter().filter(|m| found(m)).count() as f64 / records.len() as f64
        };
        for attribute in attributes {
            let found = share(&|m: &MappedRecord| {
                let a = &m.attributes;
                match *attribute {
                    "given" => a.given_name.is_some(),
                    "family" => a.family_name.is_some(),
                    "email" => !a.emails.is_empty(),
                    "phone" => !a.phones.is_empty(),
                    "address" => a.addresses.first().is_some_and(|x| {
                        x.line1.is_some() && x.city.is_some() && x.region.is_some() && x.postcode.is_some()
                    }),
                    _ => a.date_of_birth.is_some(),
                }
            });
            assert!(found > 0.5, "{system}: {attribute} in only {found:.2} of the records");
        }
        for extra in extras {
            let found = share(&|m: &MappedRecord| m.attributes.extras.contains_key(*extra));
            assert!(found > 0.9, "{system}: extra {extra} in only {found:.2} of the records");
        }
    }
    // Middle names, suffixes, second e-mails and vehicles show up somewhere.
    let any = |f: &dyn Fn(&MappedRecord) -> bool| mapped.iter().any(|(_, _, m)| f(m));
    assert!(any(&|m| m.attributes.middle_name.is_some()));
    assert!(any(&|m| m.attributes.name_suffix.is_some()));
    assert!(any(&|m| m.attributes.emails.len() > 1));
    assert!(any(&|m| m.attributes.extras.contains_key("vehicles[*].vin")));
    assert!(any(&|m| m
        .attributes
        .addresses
        .first()
        .is_some_and(|a| a.line2.is_some())));
}

#[test]
fn delete_events_carry_only_the_before_image_and_updates_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), 2000, 11, 1.0);
    let text = std::fs::read_to_string(dir.path().join("shop_cdc.ndjson")).expect("reads");
    let mut ops = BTreeMap::new();
    let mut last_ts = 0;
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).expect("json");
        assert_eq!(event["schema"]["name"], "shop.shop.customers.Envelope");
        let ts = event["payload"]["ts_ms"].as_i64().expect("ts_ms");
        assert!(ts > last_ts, "event times go forward");
        last_ts = ts;
        for image in ["before", "after"] {
            let row = &event["payload"][image];
            if row.is_object() {
                let (created, updated) = (row["created_at"].as_i64(), row["updated_at"].as_i64());
                assert!(created <= updated && updated <= Some(ts), "{line}");
            }
        }
        let payload = &event["payload"];
        let op = payload["op"].as_str().expect("op");
        *ops.entry(op.to_owned()).or_insert(0) += 1;
        match op {
            "c" | "r" => assert!(payload["before"].is_null() && payload["after"].is_object()),
            "u" => assert!(payload["before"].is_object() && payload["after"].is_object()),
            "d" => assert!(payload["before"].is_object() && payload["after"].is_null()),
            other => panic!("unexpected op {other}"),
        }
        let row = if op == "d" {
            &payload["before"]
        } else {
            &payload["after"]
        };
        assert!(row["id"].is_u64());
        assert!(row["birth_date"].is_null() || row["birth_date"].is_i64());
        assert!(payload["source"]["table"] == "customers" && payload["ts_ms"].is_i64());
    }
    // Mostly creates and snapshot reads, some updates, a few deletes.
    let (c, r, u, d) = (ops["c"], ops["r"], ops["u"], ops["d"]);
    assert!(c + r > 3 * u && u > d && d > 0, "{ops:?}");
}

#[test]
fn change_events_can_be_written_without_their_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = DatagenArgs::new(dir.path(), 500, 4);
    args.cdc_payload_only = true;
    run(&args).expect("runs");
    let text = std::fs::read_to_string(dir.path().join("shop_cdc.ndjson")).expect("reads");
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).expect("json");
        assert!(event.get("schema").is_none() && event["op"].is_string(), "{line}");
    }
    map_all(dir.path());
}

#[test]
fn the_same_seed_and_arguments_give_the_same_bytes() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let c = tempfile::tempdir().expect("tempdir");
    let first = generate(a.path(), 6000, 99, 1.0);
    let second = generate(b.path(), 6000, 99, 1.0);
    generate(c.path(), 6000, 100, 1.0);
    assert_eq!(first.files, second.files);
    let mut files: Vec<&str> = System::ALL.iter().map(|s| s.file()).collect();
    files.push("truth.csv");
    for file in files {
        let read = |dir: &Path| std::fs::read(dir.join(file)).expect("reads");
        assert!(read(a.path()) == read(b.path()), "{file} differs between two runs");
        assert!(read(a.path()) != read(c.path()), "{file} does not depend on the seed");
    }
}

#[test]
fn a_record_target_is_met_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = DatagenArgs::new(dir.path(), 1, 5);
    args.records = Some(4321);
    let summary = run(&args).expect("runs");
    assert_eq!(summary.source_records, 4321);
    assert_eq!(truth(dir.path()).len(), 4321);
    assert!(summary.people > 1000, "{summary}");
    let total: u64 = summary
        .files
        .iter()
        .filter(|f| f.system.is_some())
        .map(|f| f.records)
        .sum();
    assert_eq!(total, 4321);
}

#[test]
fn the_arguments_parse_with_their_defaults() {
    use clap::{CommandFactory, Parser};
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        datagen: DatagenArgs,
    }
    Cli::command().debug_assert();
    let defaults = Cli::try_parse_from(["mdm"]).expect("parses").datagen;
    assert_eq!(defaults.out, Path::new("mdm-demo-data"));
    assert_eq!((defaults.people, defaults.records, defaults.seed), (1000, None, 42));
    assert!(defaults.noise == 1.0 && !defaults.cdc_payload_only);
    let given = Cli::try_parse_from([
        "mdm",
        "--out",
        "x",
        "--records",
        "10",
        "--seed",
        "7",
        "--noise",
        "0.5",
        "--cdc-payload-only",
    ])
    .expect("parses")
    .datagen;
    assert_eq!((given.records, given.seed, given.noise), (Some(10), 7, 0.5));
    assert!(given.cdc_payload_only);
}

#[test]
fn bad_arguments_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = DatagenArgs::new(dir.path(), 10, 1);
    args.noise = -1.0;
    assert!(run(&args).is_err());
    args.noise = f64::NAN;
    assert!(run(&args).is_err());
}

#[test]
fn without_noise_every_record_of_a_person_agrees_on_birth_date_and_family_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), 1500, 3, 0.0);
    let truth = truth(dir.path());
    let mut dobs: HashMap<String, chrono::NaiveDate> = HashMap::new();
    let mut families: HashMap<String, String> = HashMap::new();
    for (system, _, m) in map_all(dir.path()) {
        let (person, _) = &truth[&(system.clone(), m.source_id.clone())];
        let a = &m.attributes;
        if let Some(dob) = a.date_of_birth {
            assert_eq!(*dobs.entry(person.clone()).or_insert(dob), dob, "{system} {person}");
        }
        if let Some(family) = &a.family_name {
            let folded = text::ascii_fold(family).to_uppercase();
            assert_eq!(
                *families.entry(person.clone()).or_insert(folded.clone()),
                folded,
                "{system} {person}"
            );
        }
        assert!(a.given_name.is_some(), "{system}: no given name");
    }
}

#[test]
fn people_are_spread_over_one_to_four_systems_mostly_one_or_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), 5000, 21, 1.0);
    let mut systems: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut per_system: HashMap<(String, String), u32> = HashMap::new();
    let mut households: HashMap<String, BTreeSet<String>> = HashMap::new();
    for ((system, _), (person, household)) in truth(dir.path()) {
        systems.entry(person.clone()).or_default().insert(system.clone());
        *per_system.entry((person.clone(), system)).or_default() += 1;
        households.entry(household).or_default().insert(person);
    }
    let mut histogram = [0u32; 5];
    for s in systems.values() {
        assert!((1..=4).contains(&s.len()));
        histogram[s.len()] += 1;
    }
    assert!(histogram[1] > histogram[2] && histogram[2] > histogram[3] && histogram[3] > histogram[4]);
    assert!(histogram[1] + histogram[2] > 3500, "{histogram:?}");
    let duplicates = per_system.values().filter(|&&n| n > 1).count();
    assert!((20..500).contains(&duplicates), "{duplicates} duplicate accounts");
    let shared = households.values().filter(|p| p.len() > 1).count();
    assert!(shared > 500, "{shared} households of several people");
}

/// Households hold the hard cases: members sharing family name, address
/// and landline; Jr/Sr namesakes; twins; married names.
#[test]
fn households_hold_namesakes_twins_and_married_names() {
    let tables = Tables::new(1);
    let base = Rand::seed_from_u64(1);
    let (mut namesakes, mut twins, mut married, mut shared_home, mut same_family) = (0, 0, 0, 0, 0);
    let mut next = 0;
    for h in 0..20_000u64 {
        let mut rng = base.clone();
        rng.set_stream(h);
        let members = model::household(&mut rng, &tables, h, next, u64::MAX);
        next += members.len() as u64;
        assert!(!members.is_empty());
        for (i, a) in members.iter().enumerate() {
            assert_eq!(a.address, members[0].address, "members share the address");
            assert!(a.dob < model::TODAY);
            married += usize::from(a.former_family.is_some());
            for b in &members[i + 1..] {
                if a.home.is_some() && a.home == b.home {
                    shared_home += 1;
                }
                if a.family == b.family {
                    same_family += 1;
                }
                if a.given == b.given && a.family == b.family && a.suffix != b.suffix {
                    assert_ne!(a.dob, b.dob);
                    assert_eq!(b.sex, Sex::Male);
                    namesakes += 1;
                }
                if a.dob == b.dob && a.family == b.family {
                    assert_ne!(a.given, b.given, "twins have their own names");
                    twins += 1;
                }
            }
        }
    }
    assert!(namesakes > 200, "{namesakes} Jr/Sr pairs");
    assert!(twins > 50, "{twins} twins");
    assert!(married > 2000, "{married} former family names");
    assert!(shared_home > 3000 && same_family > 5000, "{shared_home} {same_family}");
}

/// Prints the speed and peak memory of a 1,000,000-record run. Run with
/// `cargo test --release -p mdm-api datagen_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn datagen_speed() {
    let dir = tempfile::tempdir().expect("tempdir");
    for target in [100_000u64, 1_000_000] {
        let mut args = DatagenArgs::new(dir.path(), 0, 42);
        args.records = Some(target);
        let start = Instant::now();
        let summary = run(&args).expect("runs");
        let seconds = start.elapsed().as_secs_f64();
        let peak = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(str::to_owned))
            .unwrap_or_default();
        let bytes: u64 = std::fs::read_dir(dir.path())
            .expect("lists")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        eprintln!(
            "{} records ({} people) in {seconds:.2} s: {:.0} records/s, {} MB written, peak {peak}\n{summary}",
            summary.source_records,
            summary.people,
            summary.source_records as f64 / seconds,
            bytes / 1_000_000
        );
    }
}
