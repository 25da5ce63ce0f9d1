//! The resolver through the real stores (SQLite files and PostgreSQL):
//! crash and restart without duplicate or missing decisions, the same
//! customers as an uninterrupted run, fencing of a second resolver, and
//! steward constraints that later automatic decisions respect.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use mdm_commands::ingest::Ingestor;
use mdm_commands::resolver::{RandomIds, Resolver, ResolverError, ResolverSettings};
use mdm_commands::train::latest_records;
use mdm_domain::matching::model::{DecisionRules, MatchParameters, Scorer};
use mdm_domain::resolution::engine::{CommandError, CommandRequest, Engine, Limits, StewardCommand};
use mdm_domain::resolution::events::{Decided, Decision, RESOLUTION_STREAM};
use mdm_store::keys::KeyStore;
use mdm_store::{AppendError, Direction, EventStore, Position, StreamStart};
use mdm_tests::backends::{PostgresBackend, SqliteBackend};
use mdm_tests::fixtures::{definitions, ingest, postgres_stores, rows, sqlite_stores, Stores};

fn engine() -> Engine {
    Engine::new(
        Scorer::new(MatchParameters::defaults(), DecisionRules::default()).expect("valid"),
        Limits::default(),
    )
}

fn settings(batch: usize) -> ResolverSettings {
    ResolverSettings {
        batch,
        ..ResolverSettings::default()
    }
}

async fn start(store: &Arc<dyn EventStore>, keys: &Arc<dyn KeyStore>, batch: usize) -> Resolver {
    Resolver::start(
        store.clone(),
        keys.clone(),
        engine(),
        settings(batch),
        Box::new(RandomIds),
    )
    .await
    .expect("start")
    .0
}

async fn decisions(store: &Arc<dyn EventStore>) -> Vec<Decided> {
    store
        .read_stream(RESOLUTION_STREAM, StreamStart::Version(0), Direction::Forwards, 100_000)
        .await
        .expect("read")
        .iter()
        .map(|e| e.data.decode().expect("decision decodes"))
        .collect()
}

/// The customers as sets of source ids (tokens differ between runs).
async fn partition(
    store: &Arc<dyn EventStore>,
    keys: &Arc<dyn KeyStore>,
    resolver: &Resolver,
) -> BTreeSet<BTreeSet<String>> {
    let records = latest_records(store, keys.clone(), &Default::default())
        .await
        .expect("records");
    let ids: HashMap<&str, &str> = records
        .iter()
        .map(|r| (r.stream.as_str(), r.source_id.as_str()))
        .collect();
    let mut customers: HashMap<uuid::Uuid, BTreeSet<String>> = HashMap::new();
    for (stream, token) in resolver.engine().assignments() {
        customers.entry(token).or_default().insert(ids[stream].to_owned());
    }
    customers.into_values().collect()
}

/// Every record placed exactly once (created or linked), decisions dense.
fn check_decisions(all: &[Decided], records: usize) {
    for (i, d) in all.iter().enumerate() {
        assert_eq!(d.seq, i as u64 + 1, "decision numbers are dense");
    }
    let mut placed: HashMap<&str, usize> = HashMap::new();
    for d in all {
        if let Decision::CustomerCreated { record, .. } | Decision::RecordLinked { record, .. } = &d.decision {
            *placed.entry(record.as_str()).or_default() += 1;
        }
    }
    assert_eq!(placed.len(), records, "every record placed");
    assert!(placed.values().all(|n| *n == 1), "no record placed twice");
}

async fn crash_and_resume(crashed: Stores, clean: Stores) {
    let input = rows(120);
    ingest(&crashed, &input).await;
    ingest(&clean, &input).await;

    // An uninterrupted run.
    let mut whole = start(&clean.store, &clean.keys, 64).await;
    whole.catch_up().await.expect("uninterrupted run");

    // Three crashes: the resolver decides a few pages and is dropped
    // without notice each time; the next one replays from the log.
    for pages in [2usize, 1, 3] {
        let mut r = start(&crashed.store, &crashed.keys, 16).await;
        let mut after = r.checkpoint();
        for _ in 0..pages {
            let page = crashed.store.read_all(after, 16).await.expect("read");
            let Some(last) = page.last() else { break };
            after = last.position;
            r.decide(&page).await.expect("decide");
        }
        drop(r);
    }
    let mut resumed = start(&crashed.store, &crashed.keys, 16).await;
    resumed.catch_up().await.expect("resumed run");

    let all = decisions(&crashed.store).await;
    check_decisions(&all, input.len());
    check_decisions(&decisions(&clean.store).await, input.len());
    let expected = partition(&clean.store, &clean.keys, &whole).await;
    let got = partition(&crashed.store, &crashed.keys, &resumed).await;
    assert_eq!(
        got, expected,
        "the resumed run found the same customers as the uninterrupted one"
    );
    // A restart with nothing new decides nothing.
    let mut again = start(&crashed.store, &crashed.keys, 16).await;
    assert_eq!(again.catch_up().await.expect("idle"), 0);
    assert_eq!(decisions(&crashed.store).await.len(), all.len());
}

async fn second_resolver_is_fenced(s: Stores) {
    ingest(&s, &rows(10)).await;
    let mut a = start(&s.store, &s.keys, 8).await;
    let mut b = start(&s.store, &s.keys, 8).await;
    let page = s.store.read_all(Position::START, 8).await.expect("read");
    a.decide(&page).await.expect("the first resolver appends");
    let stored = decisions(&s.store).await.len();
    match b.decide(&page).await {
        Err(ResolverError::Append(AppendError::Conflict { .. } | AppendError::IdsAlreadyUsed { .. }))
        | Err(ResolverError::Fenced) => {}
        other => panic!("the second resolver must fail with a conflict, got {other:?}"),
    }
    assert_eq!(
        decisions(&s.store).await.len(),
        stored,
        "the fenced resolver stored nothing"
    );
}

async fn steward_constraints_hold(s: Stores) {
    // One person, two records: linked.
    let person = ["a1,ada,quill,,ada@example.test,3125550100,1 oak st,springfield,60601,1980-02-03".to_owned()];
    let copy = ["a2,ada,quill,,ada@example.test,3125550100,1 oak st,springfield,60601,1980-02-03".to_owned()];
    ingest(&s, &person).await;
    ingest(&s, &copy).await;
    let mut r = start(&s.store, &s.keys, 64).await;
    r.catch_up().await.expect("resolve");
    let ingestor = Ingestor::new(s.store.clone(), s.keys.clone(), definitions());
    let (sa, sb) = (ingestor.stream_of("crm", "a1"), ingestor.stream_of("crm", "a2"));
    let token = r.engine().token_of(&sa).expect("decided");
    assert_eq!(r.engine().token_of(&sb), Some(token), "the copy is linked");
    let version = r.engine().customer(token).expect("customer").version;

    // A stale version changes nothing.
    let stale = CommandRequest {
        command_id: uuid::Uuid::now_v7(),
        steward: "steward-1".into(),
        reason: "not the same person: confirmed by phone".into(),
        expected: vec![(token, version + 7)],
        command: StewardCommand::NotAMatch {
            records: [sa.clone(), sb.clone()],
        },
    };
    let before = decisions(&s.store).await.len();
    assert!(matches!(
        r.command(&stale).await.expect("store"),
        Err(CommandError::VersionMismatch { .. })
    ));
    assert_eq!(decisions(&s.store).await.len(), before);

    // Not a match: the second record is split off.
    let ok = CommandRequest {
        expected: vec![(token, version)],
        command_id: uuid::Uuid::now_v7(),
        ..stale
    };
    r.command(&ok).await.expect("store").expect("applied");
    assert_ne!(r.engine().token_of(&sa), r.engine().token_of(&sb));

    // A restart replays the constraint; a new record just like both does
    // not bring them together again.
    let mut r = start(&s.store, &s.keys, 64).await;
    let third = ["a3,ada,quill,,ada@example.test,3125550100,1 oak st,springfield,60601,1980-02-03".to_owned()];
    ingest(&s, &third).await;
    r.catch_up().await.expect("resolve");
    assert_ne!(
        r.engine().token_of(&sa),
        r.engine().token_of(&sb),
        "kept apart after the restart"
    );
    let sc = ingestor.stream_of("crm", "a3");
    assert!(r.engine().token_of(&sc).is_some());
}

#[tokio::test]
async fn sqlite_resolver_resumes_after_crashes_with_the_same_customers() {
    let (a, b) = (
        SqliteBackend::new().await.expect("sqlite"),
        SqliteBackend::new().await.expect("sqlite"),
    );
    crash_and_resume(sqlite_stores(&a).await, sqlite_stores(&b).await).await;
}

#[tokio::test]
async fn postgres_resolver_resumes_after_crashes_with_the_same_customers() {
    let (a, b) = (
        PostgresBackend::new().await.expect("pg"),
        PostgresBackend::new().await.expect("pg"),
    );
    crash_and_resume(postgres_stores(&a).await, postgres_stores(&b).await).await;
}

#[tokio::test]
async fn sqlite_second_resolver_is_fenced() {
    let a = SqliteBackend::new().await.expect("sqlite");
    second_resolver_is_fenced(sqlite_stores(&a).await).await;
}

#[tokio::test]
async fn postgres_second_resolver_is_fenced() {
    let a = PostgresBackend::new().await.expect("pg");
    second_resolver_is_fenced(postgres_stores(&a).await).await;
}

#[tokio::test]
async fn sqlite_steward_constraints_hold_across_restarts() {
    let a = SqliteBackend::new().await.expect("sqlite");
    steward_constraints_hold(sqlite_stores(&a).await).await;
}

#[tokio::test]
async fn postgres_steward_constraints_hold_across_restarts() {
    let a = PostgresBackend::new().await.expect("pg");
    steward_constraints_hold(postgres_stores(&a).await).await;
}
