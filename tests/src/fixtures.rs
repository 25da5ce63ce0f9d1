//! Test data and store set-up shared by the resolver and projection tests:
//! source definitions, a deterministic generator of people in households,
//! and ingestion through the real ingestor.

use std::sync::Arc;

use mdm_commands::ingest::{IngestContext, Ingestor};
use mdm_commands::input::csv::{CsvOptions, CsvRecords};
use mdm_domain::metadata::Actor;
use mdm_domain::source::{SourceDefinition, SourceDefinitions};
use mdm_store::keys::postgres::PostgresKeyStore;
use mdm_store::keys::sqlite::SqliteKeyStore;
use mdm_store::keys::{KeyStore, MasterKey};
use mdm_store::{Direction, EventStore, StreamStart};

use crate::backends::{PostgresBackend, SqliteBackend};
use crate::contract::Backend;

/// Two systems with the same CSV shape: a trusted CRM and a web shop.
pub const SOURCES: &str = r#"
[[sources]]
system = "crm"
trust_rank = 50
format = "csv"
id = "id"
name = { given = "given", family = "family", suffix = "suffix" }
emails = ["email"]
phones = [{ path = "phone", kind = "home" }]
addresses = [{ line1 = "street", city = "city", postcode = "zip" }]
date_of_birth = { path = "dob", formats = ["%Y-%m-%d"] }

[[sources]]
system = "web"
trust_rank = 10
format = "csv"
id = "id"
name = { given = "given", family = "family", suffix = "suffix" }
emails = ["email"]
phones = [{ path = "phone", kind = "home" }]
addresses = [{ line1 = "street", city = "city", postcode = "zip" }]
date_of_birth = { path = "dob", formats = ["%Y-%m-%d"] }
"#;

pub const HEADER: &str = "id,given,family,suffix,email,phone,street,city,zip,dob\n";

pub fn definitions() -> Arc<SourceDefinitions> {
    #[derive(serde::Deserialize)]
    struct File {
        sources: Vec<SourceDefinition>,
    }
    let file: File = toml::from_str(SOURCES).expect("parses");
    Arc::new(SourceDefinitions::new(file.sources).expect("valid"))
}

const GIVEN: [&str; 12] = [
    "robert", "mary", "james", "patricia", "michael", "linda", "william", "barbara", "david", "susan", "richard",
    "karen",
];
const FAMILY: [&str; 10] = [
    "okafor",
    "lindqvist",
    "moreau",
    "takahashi",
    "brennan",
    "castillo",
    "novak",
    "haddad",
    "sorensen",
    "abara",
];

/// `persons` people in households of two (a couple at one address sharing
/// phone and family name), each person with one to three records, some
/// with a typo in the family name or no e-mail. Deterministic.
pub fn rows(persons: usize) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..persons {
        let household = p / 2;
        let given = GIVEN[p % GIVEN.len()];
        let family = FAMILY[household % FAMILY.len()];
        let street = format!(
            "{} {} st",
            10 + household,
            ["oak", "elm", "pine", "birch"][household % 4]
        );
        let zip = format!("{:05}", 60000 + household);
        let phone = format!("312555{:04}", household % 10_000);
        let dob = format!("19{:02}-{:02}-{:02}", 40 + p % 50, 1 + p % 12, 1 + p % 28);
        let email = format!("{given}.{family}{p}@example.test");
        for copy in 0..=(p % 3) {
            let family = if copy == 1 && p % 5 == 0 {
                format!("{family}x")
            } else {
                family.to_owned()
            };
            let email = if copy == 2 { String::new() } else { email.clone() };
            out.push(format!(
                "p{p}-{copy},{given},{family},,{email},{phone},{street},springfield,{zip},{dob}"
            ));
        }
    }
    out
}

pub fn csv(rows: &[String]) -> Vec<mdm_commands::input::InputRecord> {
    let text = format!("{HEADER}{}\n", rows.join("\n"));
    CsvRecords::new(std::io::Cursor::new(text.into_bytes()), CsvOptions::default()).collect()
}

pub fn ctx() -> IngestContext {
    IngestContext {
        actor: Actor::Operator,
        correlation_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    }
}

/// An event store and its key store.
#[derive(Debug)]
pub struct Stores {
    pub store: Arc<dyn EventStore>,
    pub keys: Arc<dyn KeyStore>,
}

pub async fn sqlite_stores(backend: &SqliteBackend) -> Stores {
    let store = backend.open().await;
    let keys: Arc<dyn KeyStore> = Arc::new(
        SqliteKeyStore::open(&backend.path().with_extension("keys.db"), MasterKey::generate())
            .await
            .expect("keys"),
    );
    Stores { store, keys }
}

pub async fn postgres_stores(backend: &PostgresBackend) -> Stores {
    let store = backend.open().await;
    let keys: Arc<dyn KeyStore> = Arc::new(
        PostgresKeyStore::open(&backend.url, "mdm_keys", MasterKey::generate())
            .await
            .expect("keys"),
    );
    Stores { store, keys }
}

/// Ingests CSV rows of `system` and waits until the global log shows them.
pub async fn ingest_into(s: &Stores, system: &str, rows: &[String]) {
    let ingestor = Ingestor::new(s.store.clone(), s.keys.clone(), definitions());
    let mut streams = Vec::new();
    for chunk in rows.chunks(100) {
        let out = ingestor.ingest(system, csv(chunk), &ctx()).await.expect("ingest");
        streams.extend(out.into_iter().filter_map(|o| o.stream));
    }
    let Some(last) = streams.last().cloned() else {
        return;
    };
    let tail = s
        .store
        .read_stream(&last, StreamStart::Edge, Direction::Backwards, 1)
        .await
        .expect("read");
    wait_visible(&s.store, tail[0].position).await;
}

/// Ingests CSV rows of the `crm` system.
pub async fn ingest(s: &Stores, rows: &[String]) {
    ingest_into(s, "crm", rows).await
}

/// On PostgreSQL the global log shows an append once every older write
/// transaction in the cluster has ended (other tests run beside this one):
/// waits until the reader sees `position`.
pub async fn wait_visible(store: &Arc<dyn EventStore>, position: mdm_store::Position) {
    for _ in 0..1000 {
        if store.head().await.expect("head") >= position {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the log never showed position {position}");
}

// ---- A scenario through resolver and projections ----

use mdm_commands::opened::SourceRecordOpener;
use mdm_commands::resolver::{RandomIds, Resolver, ResolverSettings};
use mdm_domain::matching::model::{DecisionRules, MatchParameters, Scorer};
use mdm_domain::resolution::engine::{CommandRequest, Engine, Limits, StewardCommand};
use mdm_domain::survivorship::{GoldenAttribute, Rule, RuleSet};
use mdm_projections::runner::Runner;
use mdm_projections::{CustomerSettings, Projection, ReadDb};
use uuid::Uuid;

pub fn rules(name: Vec<Rule>, version: &str) -> RuleSet {
    let mut r = RuleSet {
        version: version.to_owned(),
        ..RuleSet::default()
    };
    r.rules.insert(GoldenAttribute::Name, name);
    r
}

pub fn settings(rules: RuleSet) -> CustomerSettings {
    CustomerSettings {
        rules,
        trust: [("crm".to_owned(), 50), ("web".to_owned(), 10)].into_iter().collect(),
        features: Default::default(),
    }
}

pub fn projections(rules: RuleSet) -> Vec<Arc<dyn Projection>> {
    mdm_projections::all(settings(rules))
}

pub fn opener(s: &Stores) -> SourceRecordOpener {
    SourceRecordOpener::new(s.keys.clone(), 100_000)
}

pub async fn resolver(s: &Stores) -> Resolver {
    Resolver::start(
        s.store.clone(),
        s.keys.clone(),
        Engine::new(
            Scorer::new(MatchParameters::defaults(), DecisionRules::default()).expect("valid"),
            Limits::default(),
        ),
        ResolverSettings::default(),
        Box::new(RandomIds),
    )
    .await
    .expect("start")
    .0
}

/// Web-shop copies of the first persons under a nickname ("bob" for
/// "robert"), recorded after the CRM rows.
pub fn web_rows() -> Vec<String> {
    rows(12)
        .into_iter()
        .filter(|r| r.contains("-0,"))
        .map(|r| r.replacen("p", "w", 1).replacen(",robert,", ",bob,", 1))
        .collect()
}

/// A log with creations, links, a change, a steward split and a merge.
pub async fn scenario(s: &Stores) -> Resolver {
    ingest(s, &rows(30)).await;
    ingest_into(s, "web", &web_rows()).await;
    privacy_requests(s).await;
    let mut r = resolver(s).await;
    r.catch_up().await.expect("resolve");
    // A changed CRM record (new e-mail).
    let changed: Vec<String> = rows(30)
        .into_iter()
        .filter(|r| r.starts_with("p4-0,"))
        .map(|r| r.replace("@example.test", "@changed.test"))
        .collect();
    ingest(s, &changed).await;
    r.catch_up().await.expect("resolve the change");
    // A steward splits a record off and merges it back.
    let ingestor = Ingestor::new(s.store.clone(), s.keys.clone(), definitions());
    let record = ingestor.stream_of("crm", "p1-1");
    let token = r.engine().token_of(&record).expect("decided");
    let version = r.engine().customer(token).expect("customer").version;
    r.command(&CommandRequest {
        command_id: Uuid::now_v7(),
        steward: "steward-1".into(),
        reason: "checking the split".into(),
        expected: vec![(token, version)],
        command: StewardCommand::Split {
            record: record.clone(),
            from: None,
            into: None,
        },
    })
    .await
    .expect("store")
    .expect("split");
    let split_token = r.engine().token_of(&record).expect("split");
    assert_ne!(split_token, token);
    let (v1, v2) = (
        r.engine().customer(token).expect("c").version,
        r.engine().customer(split_token).expect("c").version,
    );
    r.command(&CommandRequest {
        command_id: Uuid::now_v7(),
        steward: "steward-1".into(),
        reason: "same person after all".into(),
        expected: vec![(token, v1), (split_token, v2)],
        command: StewardCommand::Merge {
            survivor: token,
            absorbed: split_token,
        },
    })
    .await
    .expect("store")
    .expect("merge");
    wait_for_last_decision(&s.store).await;
    r
}

/// Two privacy requests in the ledger (a stream each, beside the
/// customers'): an erasure received, verified, extended, completed and
/// notified to two recipients (one acknowledged), and an open right-to-know
/// request. Fixed times, so replays agree.
pub async fn privacy_requests(s: &Stores) {
    use chrono::TimeZone;
    use mdm_domain::privacy::{stream, LedgerEvent, Recipient, RequestKind};
    let day = |d: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 1, d, 9, 0, 0)
            .single()
            .expect("a time")
    };
    let by = || "compliance-1".to_owned();
    let erasure = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00e1);
    let right_to_know = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00e2);
    let hook = Recipient::Webhook(Uuid::from_u128(0xe3));
    let requests = [
        (
            erasure,
            vec![
                LedgerEvent::RequestReceived {
                    request_id: erasure,
                    kind: RequestKind::Erasure,
                    token: None,
                    received_at: day(1),
                    by: by(),
                },
                LedgerEvent::RequestVerified {
                    by: by(),
                    method: "call-back to the number on file".into(),
                    at: day(2),
                },
                LedgerEvent::RequestExtended {
                    by: by(),
                    reason: "records in an archive".into(),
                    at: day(3),
                },
                LedgerEvent::RequestCompleted {
                    by: by(),
                    outcome: "erased 2 source records".into(),
                    at: day(4),
                },
                LedgerEvent::RecipientNotified {
                    recipient: hook.clone(),
                    at: day(5),
                },
                LedgerEvent::RecipientNotified {
                    recipient: Recipient::SourceSystem("crm".into()),
                    at: day(5),
                },
                LedgerEvent::NoticeAcknowledged {
                    recipient: hook,
                    by: "dealer".into(),
                    at: day(6),
                },
            ],
        ),
        (
            right_to_know,
            vec![LedgerEvent::RequestReceived {
                request_id: right_to_know,
                kind: RequestKind::RightToKnow,
                token: None,
                received_at: day(7),
                by: by(),
            }],
        ),
    ];
    for (id, events) in requests {
        // One append per event, as the ledger's commands append them.
        for (version, e) in events.iter().enumerate() {
            let expected = match version {
                0 => mdm_store::ExpectedVersion::NoStream,
                v => mdm_store::ExpectedVersion::Exact(v as u64 - 1),
            };
            let event = mdm_store::NewEvent::new(
                Uuid::now_v7(),
                e.event_type(),
                mdm_store::Json::encode(e).expect("json"),
                mdm_store::Json::empty_object(),
            );
            s.store
                .append(&stream(id), expected, vec![event])
                .await
                .expect("append a ledger event");
        }
    }
}

/// Waits until the global log shows the last decision (the last event of
/// every scenario) and returns its position. `head()` alone would not do on
/// PostgreSQL: it stops below transactions still open elsewhere in the
/// cluster (other tests), so it can lag behind what was appended.
pub async fn wait_for_last_decision(store: &Arc<dyn mdm_store::EventStore>) -> mdm_store::Position {
    let last = store
        .read_stream(
            mdm_domain::resolution::events::RESOLUTION_STREAM,
            mdm_store::StreamStart::Edge,
            mdm_store::Direction::Backwards,
            1,
        )
        .await
        .expect("read")
        .pop()
        .expect("a decision")
        .position;
    wait_visible(store, last).await;
    last
}

pub async fn catch_up(s: &Stores, db: &ReadDb, projections: &[Arc<dyn Projection>], batch: usize) {
    for p in projections {
        Runner::new(s.store.clone(), db.clone(), p.clone(), opener(s))
            .with_batch(batch)
            .catch_up()
            .await
            .expect("catch up");
    }
}
