//! The event-store contract: what every adapter of `mdm_store::EventStore`
//! must do. `event_store_contract!` turns each function here into a test for
//! one backend; `tests/store_*.rs` instantiate it for SQLite, PostgreSQL and
//! KurrentDB.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mdm_store::{
    AppendError, Direction, EventStore, ExpectedVersion, Json, NewEvent, Position, ReadError, RecordedEvent,
    StreamStart,
};
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

/// One database for one test. `open` may be called again after the store it
/// returned was closed: it opens the same database, as a restarted process would.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    async fn open(&self) -> Arc<dyn EventStore>;
}

/// How long a test waits for events it knows were appended.
const PATIENCE: Duration = Duration::from_secs(30);

pub fn event(kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::new(
        Uuid::new_v4(),
        kind,
        Json::encode(&data).expect("serializable"),
        Json::encode(&json!({"actor": "contract-test"})).expect("serializable"),
    )
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| event("Numbered", json!({ "n": i }))).collect()
}

fn unique_stream(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// One test's share of the global log. The SQL backends give every test a
/// fresh database, but a KurrentDB server is shared, so tests that read the
/// global log read from the head they found and keep only their own streams.
struct Run {
    marker: String,
    start: Position,
}

impl Run {
    async fn begin(store: &dyn EventStore) -> Run {
        Run {
            marker: format!("t{}", Uuid::new_v4().simple()),
            start: store.head().await.expect("head"),
        }
    }

    fn stream(&self, prefix: &str) -> String {
        format!("{prefix}-{}-{}", self.marker, Uuid::new_v4().simple())
    }

    fn owns(&self, e: &RecordedEvent) -> bool {
        e.stream.contains(&self.marker)
    }

    /// Waits until the global log shows everything up to `position`. On
    /// PostgreSQL the log shows an event once every older transaction of the
    /// cluster has ended, so under concurrent load a reader may see its own
    /// append a moment after the append returns.
    async fn settle(&self, store: &dyn EventStore, position: Position) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while store.head().await.expect("head") < position {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log never showed position {position}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// This run's events in the global log, in log order.
    async fn read_log(&self, store: &dyn EventStore) -> Vec<RecordedEvent> {
        let mut all = Vec::new();
        let mut after = self.start;
        loop {
            let page = store.read_all(after, 500).await.expect("read_all");
            let Some(last) = page.last() else { return all };
            after = last.position;
            all.extend(page.into_iter().filter(|e| self.owns(e)));
        }
    }
}

pub async fn append_and_read_back(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Run::begin(store.as_ref()).await;
    let stream = run.stream("customer");
    let sent = events(3);
    let outcome = store
        .append(&stream, ExpectedVersion::NoStream, sent.clone())
        .await
        .expect("append");
    assert_eq!(outcome.last_version, 2);
    assert!(!outcome.already_stored);

    let read = store
        .read_stream(&stream, StreamStart::Edge, Direction::Forwards, 100)
        .await
        .expect("read");
    assert_eq!(read.len(), 3);
    for (i, (got, want)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(got.id, want.id);
        assert_eq!(got.stream, stream);
        assert_eq!(got.version, i as u64);
        assert_eq!(got.event_type, want.event_type);
        assert_eq!(got.data, want.data);
        assert_eq!(got.metadata, want.metadata);
        let age = chrono::Utc::now() - got.recorded_at;
        assert!(
            age.num_seconds().abs() < 60,
            "recorded_at {} is not now",
            got.recorded_at
        );
    }
    assert_eq!(read[2].position, outcome.last_position);
    assert!(read[0].position < read[1].position && read[1].position < read[2].position);
    assert!(read[0].position > Position::START);

    run.settle(store.as_ref(), outcome.last_position).await;
    assert_eq!(
        run.read_log(store.as_ref()).await,
        read,
        "the global log holds the same events as the stream"
    );
}

pub async fn streams_read_backwards_from_any_version_and_missing_streams_read_empty(backend: &dyn Backend) {
    let store = backend.open().await;
    let stream = unique_stream("source");
    store
        .append(&stream, ExpectedVersion::NoStream, events(5))
        .await
        .expect("append");
    let versions = |evs: Vec<RecordedEvent>| evs.iter().map(|e| e.version).collect::<Vec<_>>();
    let read = |start, dir, n| {
        let store = store.clone();
        let stream = stream.clone();
        async move { store.read_stream(&stream, start, dir, n).await.expect("read") }
    };
    assert_eq!(versions(read(StreamStart::Edge, Direction::Backwards, 2).await), [4, 3]);
    assert_eq!(
        versions(read(StreamStart::Version(2), Direction::Backwards, 10).await),
        [2, 1, 0]
    );
    assert_eq!(
        versions(read(StreamStart::Version(3), Direction::Forwards, 10).await),
        [3, 4]
    );
    assert_eq!(
        versions(read(StreamStart::Version(1), Direction::Forwards, 2).await),
        [1, 2]
    );
    assert!(read(StreamStart::Version(5), Direction::Forwards, 10).await.is_empty());
    let missing = store
        .read_stream(&unique_stream("nobody"), StreamStart::Edge, Direction::Forwards, 10)
        .await
        .expect("a missing stream reads as empty");
    assert!(missing.is_empty());
}

pub async fn the_last_events_of_many_streams_come_back_in_the_order_asked(backend: &dyn Backend) {
    let store = backend.open().await;
    let a = unique_stream("source");
    let b = unique_stream("source");
    let missing = unique_stream("nobody");
    store
        .append(&a, ExpectedVersion::NoStream, events(3))
        .await
        .expect("append a");
    store
        .append(&b, ExpectedVersion::NoStream, events(1))
        .await
        .expect("append b");
    let asked = [b.clone(), missing.clone(), a.clone(), b.clone()];
    let last = store.read_last_events(&asked).await.expect("read last events");
    let seen: Vec<Option<(String, u64)>> = last
        .iter()
        .map(|e| e.as_ref().map(|e| (e.stream.clone(), e.version)))
        .collect();
    assert_eq!(seen, [Some((b.clone(), 0)), None, Some((a.clone(), 2)), Some((b, 0))]);
    assert!(store.read_last_events(&[]).await.expect("empty batch").is_empty());
}

pub async fn expected_versions_are_enforced_and_conflicts_report_the_actual_version(backend: &dyn Backend) {
    let store = backend.open().await;
    let stream = unique_stream("customer");
    let conflict = |r: Result<_, AppendError>| match r {
        Err(AppendError::Conflict { actual, .. }) => actual,
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert_eq!(
        conflict(store.append(&stream, ExpectedVersion::Exact(0), events(1)).await),
        None,
        "exact version on a missing stream"
    );
    store
        .append(&stream, ExpectedVersion::NoStream, events(2))
        .await
        .expect("first append");
    assert_eq!(
        conflict(store.append(&stream, ExpectedVersion::NoStream, events(1)).await),
        Some(1)
    );
    assert_eq!(
        conflict(store.append(&stream, ExpectedVersion::Exact(0), events(1)).await),
        Some(1)
    );
    assert_eq!(
        conflict(store.append(&stream, ExpectedVersion::Exact(7), events(1)).await),
        Some(1)
    );
    let ok = store
        .append(&stream, ExpectedVersion::Exact(1), events(2))
        .await
        .expect("right version");
    assert_eq!(ok.last_version, 3);
    let any = store
        .append(&stream, ExpectedVersion::Any, events(1))
        .await
        .expect("any");
    assert_eq!(any.last_version, 4);
    let stored = store
        .read_stream(&stream, StreamStart::Edge, Direction::Forwards, 100)
        .await
        .expect("read");
    assert_eq!(stored.len(), 5, "refused appends stored nothing");
}

pub async fn eight_concurrent_writers_on_one_stream_win_exactly_once_per_version(backend: &dyn Backend) {
    let store = backend.open().await;
    let stream = unique_stream("contended");
    const WRITERS: usize = 8;
    const ROUNDS: u64 = 25;
    for round in 0..ROUNDS {
        let expected = if round == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(round - 1)
        };
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (store, stream, barrier) = (store.clone(), stream.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .append(&stream, expected, vec![event("Written", json!({ "writer": w }))])
                    .await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(outcome) => {
                    assert_eq!(outcome.last_version, round);
                    wins += 1;
                }
                Err(AppendError::Conflict { actual, .. }) => assert_eq!(actual, Some(round)),
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer wins");
    }
    let stored = store
        .read_stream(&stream, StreamStart::Edge, Direction::Forwards, 1000)
        .await
        .expect("read");
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(versions, (0..ROUNDS).collect::<Vec<_>>());
}

pub async fn retrying_an_append_with_the_same_ids_stores_nothing_twice(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Run::begin(store.as_ref()).await;
    let stream = run.stream("source");
    let batch = events(3);
    let first = store
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(5),
    ] {
        let retry = store
            .append(&stream, expected, batch.clone())
            .await
            .unwrap_or_else(|e| panic!("retry with {expected} must succeed: {e}"));
        assert_eq!(retry.last_version, first.last_version);
        assert_eq!(retry.last_position, first.last_position);
    }
    // Reusing some ids beside new ones in the same stream is misuse.
    let mut mixed = vec![batch[2].clone()];
    mixed.push(event("New", json!({})));
    assert!(matches!(
        store.append(&stream, ExpectedVersion::Exact(2), mixed).await,
        Err(AppendError::IdsAlreadyUsed { .. })
    ));
    let stored = store
        .read_stream(&stream, StreamStart::Edge, Direction::Forwards, 100)
        .await
        .expect("read");
    assert_eq!(stored.len(), 3);
    run.settle(store.as_ref(), first.last_position).await;
    assert_eq!(
        run.read_log(store.as_ref()).await,
        stored,
        "nothing else reached the log"
    );
}

pub async fn concurrent_retries_of_one_append_store_it_once(backend: &dyn Backend) {
    let store = backend.open().await;
    let stream = unique_stream("source");
    let batch = events(2);
    let barrier = Arc::new(Barrier::new(6));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (store, stream, batch, barrier) = (store.clone(), stream.clone(), batch.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.append(&stream, ExpectedVersion::Any, batch).await
        }));
    }
    for t in tasks {
        let outcome = t.await.expect("task").expect("every retry succeeds");
        assert_eq!(outcome.last_version, 1);
    }
    let stored = store
        .read_stream(&stream, StreamStart::Edge, Direction::Forwards, 100)
        .await
        .expect("read");
    assert_eq!(stored.len(), 2);
}

pub async fn invalid_appends_are_refused_before_storage(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Run::begin(store.as_ref()).await;
    let ok = run.stream("ok");
    let e = event("Once", json!({}));
    for (stream, batch) in [
        (ok.as_str(), vec![]),
        ("", vec![e.clone()]),
        (ok.as_str(), vec![e.clone(), e.clone()]),
    ] {
        assert!(matches!(
            store.append(stream, ExpectedVersion::Any, batch).await,
            Err(AppendError::Invalid(_))
        ));
    }
    assert!(run.read_log(store.as_ref()).await.is_empty(), "nothing was stored");
}

pub async fn global_order_is_strictly_increasing_across_streams(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Run::begin(store.as_ref()).await;
    let streams: Vec<String> = (0..5).map(|_| run.stream("s")).collect();
    let mut appended = Vec::new();
    let mut last = Position::START;
    for round in 0..10 {
        for s in &streams {
            let batch = events(1 + round % 3);
            appended.extend(batch.iter().map(|e| e.id));
            last = store
                .append(s, ExpectedVersion::Any, batch)
                .await
                .expect("append")
                .last_position;
        }
    }
    run.settle(store.as_ref(), last).await;
    let all = run.read_log(store.as_ref()).await;
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        appended,
        "log order is append order"
    );
    assert!(store.head().await.expect("head") >= all.last().expect("events").position);
}

pub async fn read_all_pages_through_the_log(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Run::begin(store.as_ref()).await;
    let mut last = Position::START;
    for _ in 0..5 {
        last = store
            .append(&run.stream("p"), ExpectedVersion::NoStream, events(50))
            .await
            .expect("append")
            .last_position;
    }
    run.settle(store.as_ref(), last).await;
    let whole = store.read_all(run.start, 10_000).await.expect("read");
    if whole.iter().any(|e| !run.owns(e)) {
        eprintln!("skipped: other writers share this log, pages cannot be counted");
        return;
    }
    assert_eq!(whole.len(), 250);
    let mut paged = Vec::new();
    let mut after = run.start;
    let mut pages = 0;
    loop {
        let page = store.read_all(after, 100).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 100);
        after = page.last().expect("non-empty").position;
        paged.extend(page);
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, whole);
    let tail = store.read_all(whole[199].position, 100).await.expect("read");
    assert_eq!(
        tail,
        whole[200..].to_vec(),
        "reading after a position starts strictly after it"
    );
}

/// Collects events from a subscription until `want` ids were seen, failing
/// on a duplicate, an out-of-order position or a timeout.
async fn follow_until(
    sub: &mut mdm_store::Subscription,
    want: &HashSet<Uuid>,
    mut last: Position,
    owns: impl Fn(&RecordedEvent) -> bool,
) -> Vec<RecordedEvent> {
    let mut seen = HashSet::new();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !want.iter().all(|id| seen.contains(id)) {
        let next = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("timed out: {} of {} events seen", seen.len(), want.len()))
            .expect("subscription ended")
            .expect("subscription error");
        assert!(
            next.position > last,
            "positions go backwards: {} after {}",
            next.position,
            last
        );
        last = next.position;
        if !owns(&next) {
            continue;
        }
        assert!(seen.insert(next.id), "event {} delivered twice", next.id);
        got.push(next);
    }
    got
}

pub async fn a_subscription_catches_up_then_follows_live_writes_without_gap_or_duplicate(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Arc::new(Run::begin(store.as_ref()).await);
    let mut expected: HashSet<Uuid> = HashSet::new();
    for _ in 0..10 {
        let batch = events(50);
        expected.extend(batch.iter().map(|e| e.id));
        store
            .append(&run.stream("before"), ExpectedVersion::NoStream, batch)
            .await
            .expect("append");
    }
    let mut sub = store.subscribe_all(run.start).await.expect("subscribe");

    const WRITERS: usize = 8;
    const APPENDS: usize = 60;
    let mut tasks = Vec::new();
    let shared: Vec<String> = (0..5).map(|_| run.stream("shared")).collect();
    for w in 0..WRITERS {
        let (store, run, shared) = (store.clone(), run.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..APPENDS {
                let batch = events(1 + (w + i) % 4);
                ids.extend(batch.iter().map(|e| e.id));
                let stream = if i % 3 == 0 {
                    shared[i % 5].clone()
                } else {
                    run.stream("live")
                };
                store
                    .append(&stream, ExpectedVersion::Any, batch)
                    .await
                    .expect("concurrent append");
            }
            ids
        }));
    }
    let owner = run.clone();
    let consumer = tokio::spawn(async move {
        // Follow while the writers write; the final set is only known at the
        // end, so first drain what is there, then check against the full set.
        let mut seen = Vec::new();
        let quiet = Duration::from_millis(1500);
        while let Ok(Some(next)) = tokio::time::timeout(quiet, sub.next()).await {
            let next = next.expect("subscription error");
            if owner.owns(&next) {
                seen.push(next);
            }
        }
        (sub, seen)
    });
    for t in tasks {
        expected.extend(t.await.expect("writer"));
    }
    let (mut sub, mut seen) = consumer.await.expect("consumer");
    let seen_ids: HashSet<Uuid> = seen.iter().map(|e| e.id).collect();
    let missing: HashSet<Uuid> = expected.difference(&seen_ids).copied().collect();
    if !missing.is_empty() {
        let last = seen.last().map_or(run.start, |e| e.position);
        seen.extend(follow_until(&mut sub, &missing, last, |e| run.owns(e)).await);
    }
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position), "log order");
    let unique: HashSet<Uuid> = seen.iter().map(|e| e.id).collect();
    assert_eq!(unique.len(), seen.len(), "no event delivered twice");
    assert_eq!(unique, expected, "every appended event delivered");
    // And the subscription agrees with a plain read of the log.
    let all = run.read_log(store.as_ref()).await;
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        seen.iter().map(|e| e.id).collect::<Vec<_>>()
    );
}

pub async fn a_restarted_reader_resumes_from_its_stored_position(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Run::begin(store.as_ref()).await;
    let mut last = Position::START;
    for _ in 0..4 {
        last = store
            .append(&run.stream("r"), ExpectedVersion::NoStream, events(25))
            .await
            .expect("append")
            .last_position;
    }
    run.settle(store.as_ref(), last).await;
    let all = run.read_log(store.as_ref()).await;
    let checkpoint = all[49].position;
    store.close().await;
    drop(store);

    let store = backend.open().await;
    let later = events(10);
    let later_ids: Vec<Uuid> = later.iter().map(|e| e.id).collect();
    let mut sub = store.subscribe_all(checkpoint).await.expect("subscribe");
    store
        .append(&run.stream("after-restart"), ExpectedVersion::NoStream, later)
        .await
        .expect("append");
    let want: HashSet<Uuid> = all[50..]
        .iter()
        .map(|e| e.id)
        .chain(later_ids.iter().copied())
        .collect();
    let got = follow_until(&mut sub, &want, checkpoint, |e| run.owns(e)).await;
    assert_eq!(got.len(), 60, "exactly the events after the checkpoint");
    assert_eq!(got[..50].to_vec(), all[50..].to_vec());
    assert_eq!(got[50..].iter().map(|e| e.id).collect::<Vec<_>>(), later_ids);
}

pub async fn unicode_and_one_mebibyte_payloads_round_trip(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Run::begin(store.as_ref()).await;
    let stream = run.stream("source-crm-Zoë-Łódź-東京");
    let text = "Zoë Ñúñez-Łukasiewicz, 東京都, مرحبا, 👩‍👩‍👧, e\u{301}, \u{0}, \"quoted\" \\ back";
    let big: String = "ünïcødé ".repeat(1024 * 1024 / 12);
    let big_event = event("Big", json!({ "blob": big }));
    assert!(big_event.data.as_bytes().len() >= 1024 * 1024, "a 1 MiB payload");
    let sent = vec![
        NewEvent::new(
            Uuid::new_v4(),
            "KundeErfaßt",
            Json::encode(&json!({ "name": text })).expect("json"),
            Json::encode(&json!({ "note": text })).expect("json"),
        ),
        big_event,
    ];
    let outcome = store
        .append(&stream, ExpectedVersion::NoStream, sent.clone())
        .await
        .expect("append");
    let read = store
        .read_stream(&stream, StreamStart::Edge, Direction::Forwards, 10)
        .await
        .expect("read");
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].stream, stream);
    assert_eq!(read[0].event_type, "KundeErfaßt");
    assert_eq!(read[0].data.decode::<serde_json::Value>().expect("json")["name"], text);
    assert_eq!(read[0].metadata, sent[0].metadata);
    assert_eq!(read[1].data, sent[1].data);
    run.settle(store.as_ref(), outcome.last_position).await;
    let all = run.read_log(store.as_ref()).await;
    assert_eq!(all[1].data, sent[1].data);
}

pub async fn a_closed_store_answers_with_typed_errors(backend: &dyn Backend) {
    let store = backend.open().await;
    store
        .append(&unique_stream("c"), ExpectedVersion::NoStream, events(1))
        .await
        .expect("append");
    store.close().await;
    assert!(
        matches!(
            store.append(&unique_stream("c"), ExpectedVersion::Any, events(1)).await,
            Err(AppendError::Unavailable(_))
        ),
        "append after close"
    );
    assert!(
        matches!(
            store.read_all(Position::START, 10).await,
            Err(ReadError::Unavailable(_))
        ),
        "read after close"
    );
    assert!(matches!(
        store.read_stream("c", StreamStart::Edge, Direction::Forwards, 1).await,
        Err(ReadError::Unavailable(_))
    ));
    assert!(matches!(store.head().await, Err(ReadError::Unavailable(_))));
    match store.subscribe_all(Position::START).await {
        Err(ReadError::Unavailable(_)) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(mut sub) => match tokio::time::timeout(PATIENCE, sub.next()).await.expect("answers") {
            Some(Err(ReadError::Unavailable(_))) | None => {}
            other => panic!("a subscription on a closed store must fail, got {other:?}"),
        },
    }
}

// ----- Stronger guarantees of the SQL adapters -----
//
// KurrentDB keeps no global index of event ids and answers an idempotent
// retry like a fresh write, so these two are promised by the SQLite and
// PostgreSQL adapters only (`sql_event_store_guarantees!`).

pub async fn ids_reused_in_another_stream_are_refused(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Run::begin(store.as_ref()).await;
    let batch = events(2);
    let first = store
        .append(&run.stream("one"), ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");
    assert!(matches!(
        store.append(&run.stream("other"), ExpectedVersion::Any, batch).await,
        Err(AppendError::IdsAlreadyUsed { .. })
    ));
    run.settle(store.as_ref(), first.last_position).await;
    assert_eq!(run.read_log(store.as_ref()).await.len(), 2, "nothing else stored");
}

pub async fn exactly_one_of_concurrent_retries_reports_storing(backend: &dyn Backend) {
    let store = backend.open().await;
    let run = Run::begin(store.as_ref()).await;
    let stream = run.stream("source");
    let batch = events(2);
    let barrier = Arc::new(Barrier::new(6));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (store, stream, batch, barrier) = (store.clone(), stream.clone(), batch.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.append(&stream, ExpectedVersion::Any, batch).await
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        fresh += usize::from(!t.await.expect("task").expect("every retry succeeds").already_stored);
    }
    assert_eq!(fresh, 1, "exactly one attempt stored the events");
}

#[macro_export]
macro_rules! sql_event_store_guarantees {
    ($backend:expr) => {
        $crate::event_store_contract!(@tests $backend;
            ids_reused_in_another_stream_are_refused,
            exactly_one_of_concurrent_retries_reports_storing,
        );
    };
}

/// Instantiates the contract for one backend. `$backend` is an async
/// expression yielding `Option<impl Backend>`; `None` skips (with a reason
/// printed by the expression).
#[macro_export]
macro_rules! event_store_contract {
    ($backend:expr) => {
        $crate::event_store_contract!(@tests $backend;
            append_and_read_back,
            streams_read_backwards_from_any_version_and_missing_streams_read_empty,
            the_last_events_of_many_streams_come_back_in_the_order_asked,
            expected_versions_are_enforced_and_conflicts_report_the_actual_version,
            eight_concurrent_writers_on_one_stream_win_exactly_once_per_version,
            retrying_an_append_with_the_same_ids_stores_nothing_twice,
            concurrent_retries_of_one_append_store_it_once,
            invalid_appends_are_refused_before_storage,
            global_order_is_strictly_increasing_across_streams,
            read_all_pages_through_the_log,
            a_subscription_catches_up_then_follows_live_writes_without_gap_or_duplicate,
            a_restarted_reader_resumes_from_its_stored_position,
            unicode_and_one_mebibyte_payloads_round_trip,
            a_closed_store_answers_with_typed_errors,
        );
    };
    (@tests $backend:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(backend) = $backend.await else { return };
                $crate::contract::$name(&backend).await;
            }
        )+
    };
}
