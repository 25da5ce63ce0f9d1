//! CCPA erasure through the projections, on SQLite files and PostgreSQL.
//!
//! A person with source records from two systems (one of them fitting the
//! person and a namesake alike, so it went to review, and a steward merged
//! its customer into the person's), a spouse in their household, overrides
//! set on them and on the customer merged into them (one removed again), a
//! namesake and strangers, is projected; then a compliance user erases the
//! person through the resolver, keeping one record under a legal
//! exception, and the projections run again.
//!
//! Afterwards no text of any row of any table of the read models holds a
//! value of the person (a generic scan of every table the database's
//! catalog lists; a value someone else holds too, the retained record, the
//! spouse or the namesake, may appear only in rows naming them), the
//! person's token and the one merged into
//! it are `erased`, the review item naming them is closed, the spouse's
//! and the strangers' rows are what they were, and every way of building
//! the tables again from the log gives exactly the live rows: a rebuild of
//! every projection, a fresh build in batches of 7, and one batch that
//! opened the person's records before their keys were destroyed and holds
//! the erasure too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mdm_commands::ingest::{seal, Ingestor};
use mdm_commands::resolver::Resolver;
use mdm_domain::matching::features::FeatureSettings;
use mdm_domain::resolution::engine::{CommandRequest, StewardCommand};
use mdm_domain::resolution::events::{Decided, Decision, SealedValue};
use mdm_domain::resolution::membership::TokenStatus;
use mdm_domain::survivorship::{GoldenValue, RuleSet};
use mdm_projections::as_of::{customer_as_of, AsOf};
use mdm_projections::changes::{changes_after, ChangeCursor, ChangeType};
use mdm_projections::query::{self, CustomerStatus, SearchQuery};
use mdm_projections::runner::{self, Batch, Names, Projection};
use mdm_projections::{Dialect, ReadDb};
use mdm_store::keys::SubjectKey;
use mdm_store::{Position, RecordedEvent, MAX_READ};
use mdm_tests::backends::{PostgresBackend, SqliteBackend};
use mdm_tests::fixtures::{
    catch_up, definitions, ingest_into, opener, postgres_stores, projections, resolver, rows, settings, sqlite_stores,
    wait_for_last_decision, Stores,
};
use sqlx::{Column, Row};
use uuid::Uuid;

type Dump = Vec<(String, Vec<String>)>;

/// The person's records (system, CSV row), all linked into one customer
/// but the last, which fits the person and a namesake told apart from them
/// by the birth date: it goes to review (and a steward merges it in). The
/// second is at another address: linking it changes the golden record and
/// the household in one decision, whose changes the erasure renumbers.
const PERSON: [(&str, &str); 5] = [
    (
        "crm",
        "tq-1,thaddeus,quillfeather,,thaddeus.quillfeather@quill.example,4155550199,1742 marigold lane,larkspur,94939,1983-07-14",
    ),
    (
        "crm",
        "tq-2,thaddeus,quillfeather,,thaddeus.quillfeather@quill.example,4155550199,55 heron way,novato,94947,1983-07-14",
    ),
    (
        "web",
        "tqw-1,thaddeus,quillfeather,,thaddeus.quillfeather@quill.example,4155550123,1742 marigold lane,larkspur,94939,1983-07-14",
    ),
    (
        "crm",
        "tq-3,thaddeus,quillfeather,,billing.tq@quill.example,4155550199,1742 marigold lane,larkspur,94939,1983-07-14",
    ),
    ("web", "tqw-2,thaddeus,quillfeather,,thaddeus.quillfeather@quill.example,5035550142,,,,"),
];

/// Another Thaddeus Quillfeather, born eight years later.
const NAMESAKE: (&str, &str) = (
    "crm",
    "ty-1,thaddeus,quillfeather,,,5035550142,9 cedar ave,salem,97301,1991-10-10",
);

/// The record an erasure keeps under a legal exception.
const RETAINED: (&str, &str) = ("crm", "tq-3");

/// The person's spouse: same dwelling, a household with them.
const SPOUSE: (&str, &str) = (
    "crm",
    "ob-1,octavia,brightwater,,octavia.b@brightwater.example,4155550777,1742 marigold lane,larkspur,94939,1985-02-03",
);

/// Override values (the person's too).
fn private_email() -> GoldenValue {
    GoldenValue::Email {
        email: "thaddeus.private@quill.example".into(),
    }
}

fn private_phone() -> GoldenValue {
    GoldenValue::Phone {
        number: "+1 415 555 0188".into(),
    }
}

fn removed_dob() -> GoldenValue {
    GoldenValue::DateOfBirth {
        date: chrono::NaiveDate::from_ymd_opt(1983, 7, 15).expect("a date"),
    }
}

const OVERRIDE_TEXTS: [&str; 5] = [
    "thaddeus.private@quill.example",
    "+1 415 555 0188",
    "4155550188",
    "+14155550188",
    "1983-07-15",
];

/// The searchable and readable values of a CSV row of the fixture's shape:
/// every field (lower case, as search keys fold them too), phones also in
/// E.164, and the row's start as a raw payload snippet. Fields of fewer
/// than three characters (a suffix) are too common to look for.
fn values_of(row: &str) -> Vec<String> {
    let fields: Vec<&str> = row.split(',').collect();
    let mut out: Vec<String> = fields
        .iter()
        .map(|f| f.trim().to_lowercase())
        .filter(|f| f.len() >= 3)
        .collect();
    let phone = fields[5];
    if !phone.is_empty() {
        out.push(format!("+1{phone}"));
    }
    out.push(fields[..3].join(",").to_lowercase());
    out
}

fn id_of(row: &str) -> &str {
    row.split(',').next().expect("an id")
}

/// Whether `text` holds `value`; a value of digits only must not be part of
/// a longer number (a position, a weight in an explanation).
fn holds(text: &str, value: &str) -> bool {
    if !value.bytes().all(|b| b.is_ascii_digit() || b == b'+') {
        return text.contains(value);
    }
    let bytes = text.as_bytes();
    text.match_indices(value).any(|(i, m)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + m.len()).copied();
        let number = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit() || b == b'.');
        !number(before) && !number(after)
    })
}

/// Every table of the read-model database, from its catalog.
async fn tables(db: &ReadDb) -> Vec<String> {
    let sql = match db.dialect() {
        Dialect::Postgres => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
        }
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        }
    };
    let names: Vec<(String,)> = sqlx::query_as(sql).fetch_all(db.pool()).await.expect("tables");
    names.into_iter().map(|(n,)| n).collect()
}

/// Every row of `table` as the lower-cased text of its text columns.
async fn text_rows(db: &ReadDb, table: &str) -> Vec<String> {
    let rows = sqlx::query(&format!("SELECT * FROM {table}"))
        .fetch_all(db.pool())
        .await
        .expect("rows");
    rows.iter()
        .map(|row| {
            (0..row.columns().len())
                .filter_map(|i| {
                    let value = row.try_get::<Option<String>, _>(i).ok().flatten()?;
                    Some(format!("{}={}", row.columns()[i].name(), value.to_lowercase()))
                })
                .collect::<Vec<_>>()
                .join("\u{1}")
        })
        .collect()
}

/// The person's values in the read models: every (table, value) found in
/// a row that names none of the value's other holders.
async fn leaks(db: &ReadDb, values: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let all = tables(db).await;
    assert!(
        all.iter().any(|t| t == "customer_change"),
        "the catalog lists the tables: {all:?}"
    );
    for table in all {
        for row in text_rows(db, &table).await {
            for (value, holders) in values {
                if holds(&row, value) && !holders.iter().any(|h| row.contains(h.as_str())) {
                    out.push((table.clone(), value.clone()));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

async fn dump(db: &ReadDb, projections: &[Arc<dyn Projection>]) -> Dump {
    let mut out = Vec::new();
    for p in projections {
        out.extend(runner::dump(db, p.as_ref()).await.expect("dump"));
    }
    out
}

fn assert_same(a: &Dump, b: &Dump, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: tables");
    for ((ta, ra), (tb, rb)) in a.iter().zip(b) {
        assert_eq!(ta, tb);
        let (sa, sb): (BTreeSet<&String>, BTreeSet<&String>) = (ra.iter().collect(), rb.iter().collect());
        let only_a: Vec<&&String> = sa.difference(&sb).collect();
        let only_b: Vec<&&String> = sb.difference(&sa).collect();
        assert!(
            only_a.is_empty() && only_b.is_empty() && ra.len() == rb.len(),
            "{what}: {ta} differs:\n  only in the first: {only_a:#?}\n  only in the second: {only_b:#?}"
        );
    }
}

/// The rows naming one of `markers` and none of `excluded`, table by table.
fn rows_naming(dump: &Dump, markers: &[String], excluded: &[String]) -> Vec<(String, Vec<String>)> {
    dump.iter()
        .map(|(table, rows)| {
            let kept = rows
                .iter()
                .filter(|r| markers.iter().any(|m| r.contains(m.as_str())))
                .filter(|r| !excluded.iter().any(|m| r.contains(m.as_str())))
                .cloned()
                .collect();
            (table.clone(), kept)
        })
        .collect()
}

const STEWARD: &str = "steward-3";

async fn command(r: &mut Resolver, steward: &str, reason: &str, command: StewardCommand) -> Vec<Decided> {
    r.command(&CommandRequest {
        command_id: Uuid::now_v7(),
        steward: steward.into(),
        reason: reason.into(),
        expected: Vec::new(),
        command,
    })
    .await
    .expect("store")
    .expect("accepted")
}

/// Sets an override as the service does (its value sealed under a key of
/// its own); returns its id.
async fn set_override(s: &Stores, r: &mut Resolver, token: Uuid, value: &GoldenValue) -> Uuid {
    let override_id = Uuid::now_v7();
    let subject = SealedValue::subject(override_id);
    let lookup = s.keys.get_or_create(std::slice::from_ref(&subject)).await.expect("key");
    let SubjectKey::Active { key_id, key } = &lookup[0].key else {
        panic!("a fresh key is active")
    };
    let sealed = seal(key, &subject, value).expect("seal");
    command(
        r,
        STEWARD,
        "the customer called",
        StewardCommand::Override {
            token,
            override_id,
            attribute: value.attribute().as_str().to_owned(),
            expires_at: None,
            value: SealedValue {
                key_id: *key_id,
                sealed,
            },
        },
    )
    .await;
    override_id
}

/// Every event of the log after `after`.
async fn events_after(s: &Stores, mut after: Position) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    loop {
        let page = s.store.read_all(after, MAX_READ).await.expect("read");
        let Some(last) = page.last() else { return out };
        after = last.position;
        out.extend(page);
    }
}

/// Applies `events` (opened with `opened`) to fresh tables of `db` in one
/// batch per projection.
async fn apply_in_one_batch(
    db: &ReadDb,
    projections: &[Arc<dyn Projection>],
    events: &[RecordedEvent],
    opened: &[mdm_commands::opened::OpenedEvent],
) {
    for p in projections {
        let checkpoint = runner::ensure(db, p.as_ref()).await.expect("tables");
        let mut tx = db.begin_write().await.expect("begin");
        let batch = Batch {
            events,
            opened: if p.opens_source_records() { opened } else { &[] },
        };
        p.apply(&mut tx, &Names::live(checkpoint.generation), &batch)
            .await
            .expect("apply");
        tx.commit().await.expect("commit");
    }
}

async fn one_row(db: &ReadDb, sql: &str, bind: &str) -> Vec<Option<String>> {
    let row = sqlx::query(sql).bind(bind).fetch_one(db.pool()).await.expect("row");
    (0..row.columns().len())
        .map(|i| {
            row.try_get::<Option<String>, _>(i)
                .ok()
                .flatten()
                .or_else(|| row.try_get::<Option<i64>, _>(i).ok().flatten().map(|n| n.to_string()))
        })
        .collect()
}

async fn a_customer_erased_leaves_nothing_and_rebuilds_the_same(s: Stores, db: ReadDb, fresh: ReadDb, once: ReadDb) {
    let ingestor = Ingestor::new(s.store.clone(), s.keys.clone(), definitions());
    let stream = |(system, row): (&str, &str)| ingestor.stream_of(system, id_of(row));
    // Strangers, the person, the spouse, a namesake, then the record that
    // fits both the person and the namesake.
    let strangers = rows(60);
    ingest_into(&s, "crm", &strangers).await;
    for (system, row) in &PERSON[..4] {
        ingest_into(&s, system, &[(*row).to_owned()]).await;
    }
    ingest_into(&s, SPOUSE.0, &[SPOUSE.1.to_owned()]).await;
    ingest_into(&s, NAMESAKE.0, &[NAMESAKE.1.to_owned()]).await;
    ingest_into(&s, PERSON[4].0, &[PERSON[4].1.to_owned()]).await;
    let mut r = resolver(&s).await;
    r.catch_up().await.expect("resolve");

    let token = r.engine().token_of(&stream(PERSON[0])).expect("decided");
    for record in &PERSON[..4] {
        assert_eq!(r.engine().token_of(&stream(*record)), Some(token), "{record:?} links");
    }
    let sparse = r.engine().token_of(&stream(PERSON[4])).expect("decided");
    let spouse = r.engine().token_of(&stream(SPOUSE)).expect("decided");
    let namesake = r.engine().token_of(&stream(NAMESAKE)).expect("decided");
    assert_eq!(BTreeSet::from([token, sparse, spouse, namesake]).len(), 4);
    let household = r.engine().customer(token).expect("customer").household;
    assert!(household.is_some(), "the person has a household");
    assert_eq!(r.engine().customer(spouse).expect("customer").household, household);

    // Overrides: one on the customer of the record in review (it follows
    // the merge), one
    // on the person, and one on the person that a steward removes again.
    let phone_id = set_override(&s, &mut r, sparse, &private_phone()).await;
    let dob_id = set_override(&s, &mut r, token, &removed_dob()).await;
    command(
        &mut r,
        STEWARD,
        "set by mistake",
        StewardCommand::RemoveOverride {
            token,
            override_id: dob_id,
        },
    )
    .await;
    // The record in review is the person's: a steward merges its customer
    // in (the review stays open).
    command(
        &mut r,
        STEWARD,
        "same person",
        StewardCommand::Merge {
            survivor: token,
            absorbed: sparse,
        },
    )
    .await;
    let email_id = set_override(&s, &mut r, token, &private_email()).await;
    let head = wait_for_last_decision(&s.store).await;

    let ps = projections(RuleSet::default());
    catch_up(&s, &db, &ps, 5_000).await;
    let open = query::reviews(&db, Some("open"), None, 100).await.expect("reviews");
    assert_eq!(open.len(), 1, "the last record went to review: {open:?}");
    let review = open[0].clone();
    assert_eq!(
        (review.record.as_str(), review.token, review.candidate),
        (stream(PERSON[4]).as_str(), sparse, namesake)
    );
    let row = query::customer(&db, token).await.expect("read").expect("exists");
    assert_eq!(row.email.as_deref(), Some("thaddeus.private@quill.example"));
    assert_eq!(row.phone.as_deref(), Some("+1 415 555 0188"));
    assert_eq!(row.household, household);
    assert_eq!(row.record_count, 5);
    let before = dump(&db, &ps).await;
    let (person_version, sparse_version) = (
        query::customer(&db, token)
            .await
            .expect("read")
            .expect("exists")
            .version,
        query::customer(&db, sparse)
            .await
            .expect("read")
            .expect("exists")
            .version,
    );
    // The events as a projection lagging behind the erasure opened them.
    let pre = events_after(&s, Position::START).await;
    assert_eq!(pre.last().map(|e| e.position), Some(head));
    let pre_opened = opener(&s).open_all(&pre).await.expect("open");

    // The person's values, and who else holds each: the retained record
    // (only in rows naming it), the spouse and the strangers (only in rows
    // naming their records or tokens).
    let retained_stream = ingestor.stream_of(RETAINED.0, RETAINED.1);
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (system, row) in PERSON {
        let retained = (system, id_of(row)) == RETAINED;
        for v in values_of(row) {
            let holders = values.entry(v).or_default();
            if retained {
                holders.push(retained_stream.clone());
            }
        }
    }
    for v in OVERRIDE_TEXTS {
        values.entry(v.to_owned()).or_default();
    }
    let mut others: Vec<(String, String)> = vec![
        (SPOUSE.0.to_owned(), SPOUSE.1.to_owned()),
        (NAMESAKE.0.to_owned(), NAMESAKE.1.to_owned()),
    ];
    others.extend(strangers.iter().map(|r| ("crm".to_owned(), r.clone())));
    let mut other_markers: Vec<String> = Vec::new();
    for (system, row) in &others {
        let record = ingestor.stream_of(system, id_of(row));
        let owner = r.engine().token_of(&record).expect("decided").to_string();
        other_markers.extend([record.clone(), owner.clone()]);
        for v in values_of(row) {
            if let Some(holders) = values.get_mut(&v) {
                holders.extend([record.clone(), owner.clone()]);
            }
        }
    }
    let only_the_person: Vec<&String> = values.iter().filter(|(_, h)| h.is_empty()).map(|(v, _)| v).collect();
    for v in [
        "thaddeus.quillfeather@quill.example",
        "55 heron way",
        "+14155550123",
        "4155550188",
    ] {
        assert!(
            only_the_person.iter().any(|o| o.as_str() == v),
            "{v} is the person's alone"
        );
    }
    let leaks_before = leaks(&db, &values).await;
    assert!(
        leaks_before.iter().any(|(t, _)| t == "customer_change")
            && leaks_before.iter().any(|(t, _)| t == "source_record_version")
            && leaks_before.iter().any(|(t, _)| t == "customer_override"),
        "the scan finds the person before the erasure: {leaks_before:?}"
    );

    // The erasure, as a compliance user sends it.
    let request_id = Uuid::now_v7();
    let decided = command(
        &mut r,
        "compliance-1",
        "privacy request",
        StewardCommand::Erase {
            token,
            request_id: Some(request_id),
            legal_basis: "CCPA 1798.105 request to delete".into(),
            retain: vec![(retained_stream.clone(), "tax records kept for seven years".into())],
        },
    )
    .await;
    let Decision::CustomerErased {
        absorbed,
        records,
        overrides,
        ..
    } = &decided[0].decision
    else {
        panic!("an erasure: {:?}", decided[0].decision.event_type())
    };
    assert_eq!(absorbed, &vec![sparse]);
    let erased_records: BTreeSet<String> = records.iter().cloned().collect();
    let expected: BTreeSet<String> = [PERSON[0], PERSON[1], PERSON[2], PERSON[4]]
        .map(stream)
        .into_iter()
        .collect();
    assert_eq!(erased_records, expected);
    let erased_overrides: BTreeSet<Uuid> = overrides.iter().copied().collect();
    // The removed one too: its value stays sealed in the log under its key.
    assert_eq!(erased_overrides, BTreeSet::from([phone_id, dob_id, email_id]));
    let erased_at = wait_for_last_decision(&s.store).await;
    // The CRM sends two of the erased records again: each is held for a
    // compliance decision and filed under the erasure's request; nothing
    // of them is stored.
    ingest_into(&s, PERSON[0].0, &[PERSON[0].1.to_owned(), PERSON[1].1.to_owned()]).await;
    catch_up(&s, &db, &ps, 5_000).await;
    let after = dump(&db, &ps).await;
    let held = mdm_projections::ledger_query::privacy_holds_of(&db, request_id)
        .await
        .expect("holds");
    let held: BTreeSet<(String, String, Option<Uuid>)> =
        held.into_iter().map(|h| (h.record, h.state, h.token)).collect();
    assert_eq!(
        held,
        BTreeSet::from([
            (stream(PERSON[0]), "pending".to_owned(), Some(token)),
            (stream(PERSON[1]), "pending".to_owned(), Some(token)),
        ])
    );

    // Nothing of the person in any table.
    assert_eq!(
        leaks(&db, &values).await,
        Vec::<(String, String)>::new(),
        "after the erasure"
    );

    // The tokens: erased, without values, household or records, one
    // version later; the API answers 410 for them.
    for (t, version) in [(token, person_version), (sparse, sparse_version)] {
        let row = query::customer(&db, t).await.expect("read").expect("the row stays");
        assert_eq!(row.status, CustomerStatus::Erased);
        assert_eq!((row.merged_into, row.household, row.record_count), (None, None, 0));
        let values = [
            &row.given_name,
            &row.middle_name,
            &row.family_name,
            &row.name_suffix,
            &row.email,
            &row.phone,
            &row.address_line1,
            &row.address_line2,
            &row.city,
            &row.region,
            &row.postcode,
            &row.country,
        ];
        assert!(values.iter().all(|v| v.is_none()) && row.date_of_birth.is_none());
        assert_eq!(row.version, version + 1);
        assert_eq!(row.updated_position, erased_at.0 as i64);
        assert!(query::lineage(&db, t).await.expect("lineage").is_empty());
        assert!(query::overrides_of(&db, t).await.expect("overrides").is_empty());
        assert!(query::source_records_of(&db, t).await.expect("records").is_empty());
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM household_member WHERE token = $1")
            .bind(t.to_string())
            .fetch_one(db.pool())
            .await
            .expect("count");
        assert_eq!(n, 0, "out of the household");
        // As of any cut, before the erasure too: erased.
        for at in [AsOf::Position(erased_at), AsOf::Position(head)] {
            let c = customer_as_of(s.store.as_ref(), &db, &opener(&s), &settings(RuleSet::default()), t, at)
                .await
                .expect("as of")
                .expect("known");
            assert_eq!(c.status, TokenStatus::Erased);
            assert!(c.members.is_empty() && c.golden.values.is_empty());
        }
    }
    // The spouse's household is still there, without the person.
    let members = query::household_members(&db, household.expect("a household"))
        .await
        .expect("members");
    assert_eq!(members.iter().map(|m| m.token).collect::<Vec<_>>(), [spouse]);

    // The records: erased ones without content, the retained one with it,
    // none in a customer or searchable.
    for record in &erased_records {
        let m = one_row(
            &db,
            "SELECT token, source_id, state, attributes, search_keys FROM customer_member WHERE record = $1",
            record,
        )
        .await;
        assert_eq!(m, [None, None, Some("erased".into()), None, None], "{record}");
        let sr = query::source_record(&db, record).await.expect("read").expect("kept");
        assert_eq!(
            (sr.state.as_str(), sr.source_id.is_none(), sr.token, sr.previous_token),
            ("erased", true, None, Some(token))
        );
        assert_eq!(sr.token_position, Some(erased_at.0 as i64));
        let versions = query::source_record_versions(&db, record).await.expect("versions");
        assert!(!versions.is_empty());
        for v in versions {
            assert_eq!(v.state, "erased");
            assert!(v.attributes.is_none() && v.raw.is_none() && v.raw_header.is_none());
        }
        assert!(query::source_record_customers(&db, record)
            .await
            .expect("history")
            .iter()
            .all(|c| c.token == token || c.token == sparse));
    }
    let m = one_row(
        &db,
        "SELECT token, state, search_keys FROM customer_member WHERE record = $1 AND attributes IS NOT NULL \
         AND source_id IS NOT NULL",
        &retained_stream,
    )
    .await;
    assert_eq!(m, [None, Some("retained".into()), None]);
    let sr = query::source_record(&db, &retained_stream)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        (sr.state.as_str(), sr.token, sr.previous_token),
        ("current", None, Some(token))
    );
    assert!(sr.raw.is_some() && sr.attributes.is_some() && sr.source_id.as_deref() == Some("tq-3"));
    for record in erased_records.iter().chain([&retained_stream]) {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM customer_search WHERE record = $1")
            .bind(record)
            .fetch_one(db.pool())
            .await
            .expect("count");
        assert_eq!(n, 0, "{record} is not searchable");
    }
    let features = FeatureSettings::default();
    let by_name = SearchQuery {
        name: Some("Thaddeus Quillfeather".into()),
        ..SearchQuery::default()
    };
    let found = query::search(&db, &by_name, &features, None, 100)
        .await
        .expect("search");
    assert_eq!(
        found.customers.iter().map(|c| c.token).collect::<Vec<_>>(),
        [namesake],
        "only the namesake is found by the name"
    );
    for q in [
        SearchQuery {
            email: Some("billing.tq@quill.example".into()),
            ..SearchQuery::default()
        },
        SearchQuery {
            phone: Some("415 555 0199".into()),
            ..SearchQuery::default()
        },
    ] {
        let found = query::search(&db, &q, &features, None, 100).await.expect("search");
        assert!(found.customers.is_empty(), "{q:?} finds nothing");
    }
    for (system, id) in [("crm", "tq-1"), RETAINED] {
        assert_eq!(query::token_by_source(&db, system, id).await.expect("xref"), None);
    }

    // The overrides: no value, no reason, ended (the removed one when it
    // was removed).
    let overrides: Vec<(String, Option<String>, String, Option<i64>)> = sqlx::query_as(
        "SELECT override_id, value, reason, removed_position FROM customer_override WHERE token IN ($1, $2) \
         ORDER BY override_id",
    )
    .bind(token.to_string())
    .bind(sparse.to_string())
    .fetch_all(db.pool())
    .await
    .expect("overrides");
    assert_eq!(overrides.len(), 3);
    for (id, value, reason, removed) in overrides {
        assert_eq!((value, reason.as_str()), (None, ""));
        let removed = removed.expect("ended");
        if id == dob_id.to_string() {
            assert!(removed < erased_at.0 as i64, "removed before");
        } else {
            assert_eq!(removed, erased_at.0 as i64);
        }
    }

    // The change log: the erased tokens keep only what the decisions say,
    // without values, and one erasure notice each; ordinals count up.
    let mut cursor = ChangeCursor::START;
    let mut previous: Option<ChangeCursor> = None;
    let mut notices = Vec::new();
    loop {
        let page = changes_after(&db, cursor, 100, None).await.expect("changes");
        for c in &page.changes {
            let expected = match previous {
                Some(p) if p.position == c.position => p.ordinal + 1,
                _ => 0,
            };
            assert_eq!(c.ordinal, expected, "ordinals count up within a position");
            previous = Some(c.cursor());
            if c.token != token && c.token != sparse {
                continue;
            }
            assert!(c.attributes.is_empty(), "no values: {c:?}");
            if c.position == erased_at.0 as i64 {
                assert_eq!(c.change_type, ChangeType::Erased);
                assert_eq!(
                    c.detail.get("request_id"),
                    Some(&serde_json::json!(request_id.to_string()))
                );
                notices.push((c.token, c.version));
            } else {
                assert!(
                    !matches!(c.change_type, ChangeType::Updated | ChangeType::Erased),
                    "only what the decisions say: {c:?}"
                );
            }
        }
        cursor = page.next;
        if !page.full {
            break;
        }
    }
    assert_eq!(notices, [(token, person_version + 1), (sparse, sparse_version + 1)]);

    // The review item naming them is closed; the decisions stay, the
    // erasure among them.
    let closed = query::review(&db, review.review_id).await.expect("read").expect("kept");
    assert_eq!(closed.state, "erased");
    assert_eq!(closed.closed_position, Some(erased_at.0 as i64));
    assert_eq!(closed.closed_by.as_deref(), Some("compliance-1"));
    assert!(query::reviews(&db, Some("open"), None, 100)
        .await
        .expect("reviews")
        .is_empty());
    for t in [token, sparse] {
        let history = query::history(&db, t, None, 1000).await.expect("history");
        let last = history.last().expect("a history");
        assert_eq!(
            (last.decision_type.as_str(), last.actor_kind.as_str(), last.position),
            ("CustomerErased", "compliance", erased_at.0 as i64)
        );
        assert!(history.len() > 1, "earlier decisions stay");
    }

    // Everyone else's rows are untouched.
    let mut gone_markers: Vec<String> = vec![token.to_string(), sparse.to_string(), retained_stream.clone()];
    gone_markers.extend(erased_records.iter().cloned());
    assert_same(
        &rows_naming(&before, &other_markers, &gone_markers),
        &rows_naming(&after, &other_markers, &gone_markers),
        "the spouse's and strangers' rows before and after",
    );
    let spouse_row = query::customer(&db, spouse).await.expect("read").expect("exists");
    assert_eq!(spouse_row.status, CustomerStatus::Active);
    assert_eq!(spouse_row.household, household);
    assert_eq!(spouse_row.given_name.as_deref(), Some("octavia"));

    // Built again from the log: the same rows, and nothing of the person.
    for p in &ps {
        runner::rebuild(s.store.as_ref(), &db, p.as_ref(), &opener(&s), &mut |_, _| {})
            .await
            .expect("rebuild");
    }
    assert_same(&after, &dump(&db, &ps).await, "rebuilt against live");
    catch_up(&s, &fresh, &ps, 7).await;
    assert_same(
        &after,
        &dump(&fresh, &ps).await,
        "a fresh build in batches of 7 against live",
    );
    let tail = events_after(&s, head).await;
    assert!(tail.iter().any(|e| e.position == erased_at));
    let mut events = pre;
    events.extend(tail.iter().cloned());
    let mut opened = pre_opened;
    opened.extend(opener(&s).open_all(&tail).await.expect("open"));
    apply_in_one_batch(&once, &ps, &events, &opened).await;
    assert_same(
        &after,
        &dump(&once, &ps).await,
        "one batch opened before the keys went, with the erasure, against live",
    );
    for rebuilt in [&db, &fresh, &once] {
        assert_eq!(
            leaks(rebuilt, &values).await,
            Vec::<(String, String)>::new(),
            "built again"
        );
    }
}

// ---- SQLite ----

async fn sqlite_read(backend: &SqliteBackend, name: &str) -> ReadDb {
    ReadDb::open_sqlite(&backend.dir.path().join(format!("{name}.db")))
        .await
        .expect("read db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_customer_erased_leaves_nothing_and_rebuilds_the_same() {
    let b = SqliteBackend::new().await.expect("sqlite");
    let (x, y, z) = (
        sqlite_read(&b, "a").await,
        sqlite_read(&b, "b").await,
        sqlite_read(&b, "c").await,
    );
    a_customer_erased_leaves_nothing_and_rebuilds_the_same(sqlite_stores(&b).await, x, y, z).await;
}

// ---- PostgreSQL ----

async fn pg_read(backend: &PostgresBackend, schema: &str) -> ReadDb {
    ReadDb::open_postgres(&backend.url, schema).await.expect("read db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_customer_erased_leaves_nothing_and_rebuilds_the_same() {
    let b = PostgresBackend::new().await.expect("postgres");
    let (x, y, z) = (
        pg_read(&b, "read_a").await,
        pg_read(&b, "read_b").await,
        pg_read(&b, "read_c").await,
    );
    a_customer_erased_leaves_nothing_and_rebuilds_the_same(postgres_stores(&b).await, x, y, z).await;
}
