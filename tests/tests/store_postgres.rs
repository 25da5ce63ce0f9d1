//! The event-store contract on PostgreSQL, plus the proof that subscribers
//! never skip an event whose transaction commits after a later one.

use std::collections::HashSet;
use std::time::Duration;

use mdm_store::postgres::{OpenError, PostgresEventStore, PostgresOptions};
use mdm_store::{AppendError, EventStore, ExpectedVersion, Position, ReadError};
use mdm_tests::backends::PostgresBackend;
use mdm_tests::contract::{event, Backend};
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

mdm_tests::event_store_contract!(PostgresBackend::new());
mdm_tests::sql_event_store_guarantees!(PostgresBackend::new());

/// Waits until some backend of this database waits on a lock.
async fn wait_for_a_blocked_append(admin: &mut PgConnection, database: &str) {
    for _ in 0..500 {
        let blocked: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'")
                .bind(database)
                .fetch_one(&mut *admin)
                .await
                .expect("pg_stat_activity");
        if blocked > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the append never blocked");
}

/// A transaction that starts first and commits last is the case a plain
/// `position > checkpoint` reader gets wrong. Here an append is held inside
/// its transaction while two later appends commit: the test's own open
/// transaction has written version 1 of the stream, so the append, which has
/// already inserted its row (and so holds a transaction id), waits on the
/// unique (stream, version) index. The subscriber must deliver nothing until
/// the held append commits, and then deliver it first, because its position
/// is lower.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_that_commits_late_is_delivered_in_order_and_never_skipped() {
    let backend = PostgresBackend::new().await.expect("backend");
    let store = backend.open().await;
    let opened = store
        .append("held", ExpectedVersion::NoStream, vec![event("Opened", json!({}))])
        .await
        .expect("create stream");
    // From just after our own first event, not from head(): head() stops
    // below any transaction open anywhere in the cluster, so with other
    // tests running it could lie before "Opened", which would then be
    // delivered in the window where nothing may be.
    let mut sub = store.subscribe_all(opened.last_position).await.expect("subscribe");

    // Take version 1 of the stream in a transaction left open.
    let mut locker = PgConnection::connect(&backend.url).await.expect("connect");
    locker.execute("BEGIN").await.expect("begin");
    locker
        .execute(
            "INSERT INTO mdm_store.event (position, id, stream, version, type, data, metadata) \
             VALUES (pg_current_xact_id()::text::bigint << 20, gen_random_uuid(), 'held', 1, 'Blocker', '', '')",
        )
        .await
        .expect("take version 1");

    let held = event("Late", json!({}));
    let held_id = held.id;
    let late_store = store.clone();
    let late = tokio::spawn(async move { late_store.append("held", ExpectedVersion::Exact(0), vec![held]).await });
    let mut admin = PgConnection::connect(&backend.url).await.expect("connect");
    wait_for_a_blocked_append(&mut admin, &backend.name).await;

    let first = event("Early", json!({}));
    let second = event("Early", json!({}));
    let (first_id, second_id) = (first.id, second.id);
    let a = store
        .append("quick-1", ExpectedVersion::NoStream, vec![first])
        .await
        .expect("append");
    let b = store
        .append("quick-2", ExpectedVersion::NoStream, vec![second])
        .await
        .expect("append");

    // Both quick appends are committed, yet nothing may be delivered: the
    // held transaction may still write below their positions.
    let early = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(
        early.is_err(),
        "delivered {early:?} while an older transaction was open"
    );
    assert!(store.read_all(Position::START, 10).await.expect("read").len() <= 1);

    locker.execute("ROLLBACK").await.expect("release the row");
    let late = late.await.expect("task").expect("the held append commits");
    assert!(
        late.last_position < a.last_position && a.last_position < b.last_position,
        "the held append's position is below the quick ones"
    );

    let mut got = Vec::new();
    while got.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("delivered")
            .expect("open")
            .expect("event");
        got.push(e.id);
    }
    assert_eq!(got, [held_id, first_id, second_id]);
}

/// The horizon is cluster-wide: an unrelated transaction holding a
/// transaction id (here in the same database, but any database would do)
/// hides events committed after it began. A read must then wait rather than
/// answer an empty page, which callers take to mean "nothing more is
/// committed" (a full snapshot's retraction scan relied on that and missed
/// records while other tests ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_page_is_never_answered_while_a_committed_event_is_hidden() {
    let backend = PostgresBackend::new().await.expect("backend");
    let store = backend.open().await;
    let before = store
        .append("before", ExpectedVersion::NoStream, vec![event("Opened", json!({}))])
        .await
        .expect("append");

    let mut other = PgConnection::connect(&backend.url).await.expect("connect");
    other.execute("BEGIN").await.expect("begin");
    other
        .execute("SELECT pg_current_xact_id()")
        .await
        .expect("take a transaction id");
    let hidden = event("Hidden", json!({}));
    let hidden_id = hidden.id;
    store
        .append("after", ExpectedVersion::NoStream, vec![hidden])
        .await
        .expect("append");

    let reader = store.clone();
    let mut read = tokio::spawn(async move { reader.read_all(before.last_position, 10).await });
    let early = tokio::time::timeout(Duration::from_millis(400), &mut read).await;
    assert!(early.is_err(), "answered {early:?} while the event was hidden");

    other.execute("ROLLBACK").await.expect("end the transaction");
    let page = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the read finishes once the horizon passes")
        .expect("task")
        .expect("read");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [hidden_id]);
}

/// Many writers in many connections, a subscriber following all along:
/// every committed event arrives exactly once and in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_writers_never_make_a_follower_skip_or_repeat() {
    let backend = PostgresBackend::new().await.expect("backend");
    let store = backend.open().await;
    let mut sub = store.subscribe_all(Position::START).await.expect("subscribe");
    const WRITERS: usize = 16;
    const APPENDS: usize = 150;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        // Each writer has its own store, as a separate process would.
        let writer = backend.open().await;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..APPENDS {
                let batch: Vec<_> = (0..1 + (w * 7 + i) % 3)
                    .map(|_| event("Stress", json!({"w": w})))
                    .collect();
                ids.extend(batch.iter().map(|e| e.id));
                writer
                    .append(&format!("stress-{w}-{i}"), ExpectedVersion::NoStream, batch)
                    .await
                    .expect("append");
            }
            ids
        }));
    }
    let mut expected = HashSet::new();
    for t in tasks {
        expected.extend(t.await.expect("writer"));
    }
    let mut seen = HashSet::new();
    let mut last = Position::START;
    while seen.len() < expected.len() {
        let e = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} of {} events", seen.len(), expected.len()))
            .expect("open")
            .expect("event");
        assert!(e.position > last, "order");
        last = e.position;
        assert!(seen.insert(e.id), "duplicate");
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn an_unreachable_server_is_a_typed_error() {
    let mut options = PostgresOptions::new("postgres://postgres@127.0.0.1:1/none");
    options.acquire_timeout = Duration::from_secs(2);
    match PostgresEventStore::connect_with(options).await {
        Err(OpenError::Connect(_)) => {}
        other => panic!("expected Connect, got {other:?}"),
    }
}

/// The database disappears under a running store: calls fail with
/// `Unavailable` instead of panicking or hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_gives_unavailable() {
    let backend = PostgresBackend::new().await.expect("backend");
    let mut options = backend.options();
    options.acquire_timeout = Duration::from_secs(2);
    let store = PostgresEventStore::connect_with(options).await.expect("open");
    store
        .append("s", ExpectedVersion::NoStream, vec![event("E", json!({}))])
        .await
        .expect("append");
    let mut admin = PgConnection::connect(&mdm_tests::backends::postgres_url())
        .await
        .expect("connect");
    admin
        .execute(format!("DROP DATABASE {} WITH (FORCE)", backend.name).as_str())
        .await
        .expect("drop");
    let append = store
        .append(
            "s",
            ExpectedVersion::Any,
            vec![event("E", json!({"id": Uuid::new_v4()}))],
        )
        .await;
    assert!(matches!(append, Err(AppendError::Unavailable(_))), "{append:?}");
    let read = store.read_all(Position::START, 1).await;
    assert!(matches!(read, Err(ReadError::Unavailable(_))), "{read:?}");
}
