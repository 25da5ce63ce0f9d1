//! The pull adapter against a real HTTP server (axum, in the test) that
//! plays the warranty system, with a real `Ingestor` on the embedded SQLite
//! event store and key store: capture by id and by e-mail, unchanged and
//! changed answers, retries (503, 429 with Retry-After, timeouts, connect
//! errors), 404 / 400 / bad bodies, the rate limit across concurrent calls,
//! and that no key or answer text appears in any outcome.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mdm_commands::ingest::{open_version, IngestContext, IngestError, Ingestor, Outcome};
use mdm_commands::pull::{PullError, PullKey, PullOutcome, PullResult, Puller};
use mdm_domain::metadata::Actor;
use mdm_domain::source::{SourceDefinition, SourceDefinitions};
use mdm_store::keys::sqlite::SqliteKeyStore;
use mdm_store::keys::{KeyStore, MasterKey, SubjectKey};
use mdm_store::sqlite::SqliteEventStore;
use mdm_store::{EventStore, Position};
use serde_json::{json, Value};

const SYSTEM: &str = "warranty_api";

// ---------------------------------------------------------------------------
// The warranty system, played by an axum server.

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    /// This status with a fixed body (which must never reach an outcome).
    Status(u16),
    /// 429 or 503 with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// 200 with this body.
    Body(&'static str),
    /// Wait, then answer normally (longer than the client's timeout).
    Slow(Duration),
}

const ERROR_BODY: &str = "customer ann.smith@example.com rejected: SECRET-ERROR-DETAIL";

#[derive(Default)]
struct SourceState {
    /// The answers the source knows, verbatim.
    bodies: Vec<String>,
    /// Replies given (in order) before the normal answer, per key.
    scripted: HashMap<String, VecDeque<Reply>>,
    /// Replies given on every request, per key.
    always: HashMap<String, Reply>,
    /// Every request: when it reached the handler and for which key
    /// ("id:c-1", "email:a@b"), as the server decoded it.
    hits: Vec<(Instant, String)>,
}

#[derive(Clone, Default)]
struct Source(Arc<Mutex<SourceState>>);

impl Source {
    fn with_customers(bodies: Vec<String>) -> Source {
        let source = Source::default();
        source.0.lock().expect("source state").bodies = bodies;
        source
    }

    fn script(&self, key: &str, replies: Vec<Reply>) {
        self.0
            .lock()
            .expect("source state")
            .scripted
            .insert(key.into(), replies.into());
    }

    fn always(&self, key: &str, reply: Reply) {
        self.0.lock().expect("source state").always.insert(key.into(), reply);
    }

    fn set_body(&self, index: usize, body: String) {
        self.0.lock().expect("source state").bodies[index] = body;
    }

    fn hits(&self) -> Vec<(Instant, String)> {
        self.0.lock().expect("source state").hits.clone()
    }

    fn hits_for(&self, key: &str) -> Vec<Instant> {
        self.hits()
            .into_iter()
            .filter(|(_, k)| k == key)
            .map(|(t, _)| t)
            .collect()
    }

    async fn answer(&self, key: String, matches: impl Fn(&Value) -> bool) -> Response {
        let (reply, found) = {
            let mut state = self.0.lock().expect("source state");
            state.hits.push((Instant::now(), key.clone()));
            let reply = match state.always.get(&key) {
                Some(reply) => Some(reply.clone()),
                None => state.scripted.get_mut(&key).and_then(VecDeque::pop_front),
            };
            let found = state
                .bodies
                .iter()
                .find(|body| serde_json::from_str::<Value>(body).is_ok_and(|v| matches(&v)))
                .cloned();
            (reply, found)
        };
        let json = [(header::CONTENT_TYPE, "application/json")];
        match reply {
            Some(Reply::Status(code)) => {
                (StatusCode::from_u16(code).expect("a status code"), ERROR_BODY).into_response()
            }
            Some(Reply::RetryAfter(code, seconds)) => (
                StatusCode::from_u16(code).expect("a status code"),
                [(header::RETRY_AFTER, seconds.to_string())],
                ERROR_BODY,
            )
                .into_response(),
            Some(Reply::Body(body)) => (StatusCode::OK, json, body).into_response(),
            Some(Reply::Slow(wait)) => {
                tokio::time::sleep(wait).await;
                Self::normal(found)
            }
            None => Self::normal(found),
        }
    }

    fn normal(found: Option<String>) -> Response {
        match found {
            Some(body) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/json")],
                ERROR_BODY,
            )
                .into_response(),
        }
    }
}

async fn by_id(State(source): State<Source>, Path(id): Path<String>) -> Response {
    let key = format!("id:{id}");
    source.answer(key, |v| v["data"]["customerId"] == id.as_str()).await
}

async fn by_email(State(source): State<Source>, Query(query): Query<HashMap<String, String>>) -> Response {
    let email = query.get("email").cloned().unwrap_or_default();
    let key = format!("email:{email}");
    source
        .answer(key, |v| {
            v["data"]["emails"]
                .as_array()
                .is_some_and(|emails| emails.iter().any(|e| e["address"] == email.as_str()))
        })
        .await
}

/// Serves `source` on a free port of 127.0.0.1; returns its base URL.
async fn serve(source: Source) -> String {
    let app = Router::new()
        .route("/api/customers/{id}", get(by_id))
        .route("/api/customers", get(by_email))
        .with_state(source);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

/// An answer of the warranty API, shaped like the example configuration
/// expects, pretty-printed with a trailing newline (so "verbatim" is
/// visible).
fn warranty_answer(id: &str, full_name: &str, email: &str, birth: &str) -> String {
    let answer = json!({
        "data": {
            "customerId": id,
            "person": {"fullName": full_name, "birthDate": birth},
            "emails": [{"address": email, "primary": true}],
            "phones": [{"number": "+1 312 555 0100", "type": "MOBILE"}],
            "addresses": [{"lines": ["1200 N Lake Shore Dr", "Apt 4B"], "locality": "Chicago", "region": "IL",
                           "postalCode": "60610", "countryCode": "US"}]
        },
        "meta": {"requestId": "req-1"}
    });
    format!("{}\n", serde_json::to_string_pretty(&answer).expect("json"))
}

// ---------------------------------------------------------------------------
// The MDM side.

/// The example sources file with the warranty system pointed at `base`,
/// and its `pull` line replaced by `pull` when given.
fn definitions(base: &str, pull: Option<&str>) -> SourceDefinitions {
    let example = include_str!("../../config/sources.example.toml");
    assert!(
        example.contains("http://warranty.internal"),
        "the example's warranty URLs moved"
    );
    let mut text = String::new();
    let mut replaced = false;
    for line in example.lines() {
        match pull {
            Some(pull) if line.starts_with("pull = ") => {
                text.push_str(pull);
                replaced = true;
            }
            _ => text.push_str(line),
        }
        text.push('\n');
    }
    assert!(pull.is_none() || replaced, "the example has no `pull = ` line");
    let text = text.replace("http://warranty.internal", base);

    #[derive(serde::Deserialize)]
    struct File {
        sources: Vec<SourceDefinition>,
    }
    let file: File = toml::from_str(&text).expect("the sources file parses");
    SourceDefinitions::new(file.sources).unwrap_or_else(|e| panic!("{e}"))
}

/// A `pull` line with both lookups on `base` and these limits.
fn pull_line(rps: f64, max_attempts: u32, timeout_ms: u64) -> String {
    format!(
        "pull = {{ by_id = \"http://warranty.internal/api/customers/{{id}}\", \
         by_email = \"http://warranty.internal/api/customers?email={{email}}\", \
         requests_per_second = {rps:?}, max_attempts = {max_attempts}, timeout_ms = {timeout_ms} }}"
    )
}

struct Mdm {
    _dir: tempfile::TempDir,
    ingestor: Ingestor,
    puller: Puller,
}

async fn mdm(defs: SourceDefinitions) -> Mdm {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path().join("events.db"))
        .await
        .expect("test fixture");
    let keys = SqliteKeyStore::open(&dir.path().join("keys.db"), MasterKey::generate())
        .await
        .expect("test fixture");
    let puller = Puller::new(defs.get(SYSTEM).expect("warranty_api")).expect("puller");
    let ingestor = Ingestor::new(Arc::new(store), Arc::new(keys), Arc::new(defs));
    Mdm {
        _dir: dir,
        ingestor,
        puller,
    }
}

fn ctx() -> IngestContext {
    IngestContext {
        actor: Actor::Source(SYSTEM.into()),
        correlation_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    }
}

impl Mdm {
    async fn pull(&self, keys: &[PullKey]) -> Vec<PullOutcome> {
        let outcomes = self
            .puller
            .pull(&self.ingestor, keys, &ctx())
            .await
            .expect("test fixture");
        assert_eq!(outcomes.len(), keys.len());
        outcomes
    }

    /// The raw content stored last for the source id `source_id`.
    async fn stored_raw(&self, source_id: &str) -> String {
        let stream = self.ingestor.stream_of(SYSTEM, source_id);
        let key = match self
            .ingestor
            .keys()
            .find(std::slice::from_ref(&stream))
            .await
            .expect("test fixture")
            .pop()
            .flatten()
        {
            Some(SubjectKey::Active { key, .. }) => key,
            _ => panic!("no key for the record"),
        };
        let event = self
            .ingestor
            .store()
            .read_last_events(&[stream])
            .await
            .expect("test fixture")
            .pop()
            .flatten()
            .expect("test fixture");
        open_version(&event, &key).expect("opens").raw
    }

    async fn event_count(&self) -> usize {
        self.ingestor
            .store()
            .read_all(Position::START, 1000)
            .await
            .expect("test fixture")
            .len()
    }
}

fn results(outcomes: &[PullOutcome]) -> Vec<(String, u32, PullResult)> {
    outcomes
        .iter()
        .map(|o| (o.locator.clone(), o.attempts, o.result.clone()))
        .collect()
}

fn ingested(outcome: Outcome) -> PullResult {
    PullResult::Ingested(outcome)
}

/// No key, no personal value from an answer and no error body in any
/// outcome, serialized or debug-printed.
fn assert_no_leak(outcomes: &[PullOutcome], secrets: &[&str]) {
    let text = format!("{}\n{outcomes:?}", serde_json::to_string(outcomes).expect("json"));
    for secret in secrets
        .iter()
        .chain(&["SECRET", "Ann", "Smith", "Lake Shore", "1987", "c-10"])
    {
        assert!(!text.contains(secret), "outcomes leak {secret:?}: {text}");
    }
}

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_by_id_and_by_email_are_captured_then_unchanged_then_changed() {
    let ann = warranty_answer("c-1001", "Ann B. Smith", "ann.smith+warranty@example.com", "1987-11-23");
    let bob = warranty_answer("c-1002", "Bob Jones", "bob@example.com", "1990-01-02T00:00:00+00:00");
    let source = Source::with_customers(vec![ann.clone(), bob]);
    let base = serve(source.clone()).await;
    // The example file as it is (5 requests a second), only the host moved.
    let mdm = mdm(definitions(&base, None)).await;

    let keys = [
        PullKey::Id("c-1001".into()),
        PullKey::Email("ann.smith+warranty@example.com".into()),
        PullKey::Email("bob@example.com".into()),
    ];
    let started = Instant::now();
    let first = mdm.pull(&keys).await;
    assert_eq!(
        results(&first),
        [
            ("id 1".into(), 1, ingested(Outcome::Captured { stream_version: 0 })),
            // The same customer asked by e-mail: the same record, unchanged.
            ("email 2".into(), 1, ingested(Outcome::Unchanged)),
            ("email 3".into(), 1, ingested(Outcome::Captured { stream_version: 0 })),
        ]
    );
    // 5 requests a second: three requests span at least 400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // The keys reached the server intact (`+` and `@` encoded, then decoded).
    let asked: Vec<String> = source.hits().into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        asked,
        [
            "id:c-1001",
            "email:ann.smith+warranty@example.com",
            "email:bob@example.com"
        ]
    );
    // The record is the body verbatim.
    assert_eq!(mdm.stored_raw("c-1001").await, ann);
    assert_eq!(
        serde_json::to_value(&first[0]).unwrap(),
        json!({"locator": "id 1", "attempts": 1, "result": "ingested", "outcome": "captured", "stream_version": 0})
    );

    let again = mdm.pull(&keys[..2]).await;
    assert_eq!(
        results(&again),
        [
            ("id 1".into(), 1, ingested(Outcome::Unchanged)),
            ("email 2".into(), 1, ingested(Outcome::Unchanged)),
        ]
    );

    let moved = warranty_answer("c-1001", "Ann B. Smith", "ann.smith+warranty@example.com", "1987-11-24");
    source.set_body(0, moved.clone());
    let changed = mdm.pull(&keys[..1]).await;
    assert_eq!(
        results(&changed),
        [("id 1".into(), 1, ingested(Outcome::Changed { stream_version: 1 }))]
    );
    assert_eq!(mdm.stored_raw("c-1001").await, moved);
    assert_eq!(mdm.event_count().await, 3);
    for outcomes in [&first, &again, &changed] {
        assert_no_leak(outcomes, &["c-1001", "ann.smith", "bob@"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_errors_are_retried_until_the_answer_comes() {
    let source = Source::with_customers(vec![warranty_answer("c-1", "Ann Smith", "a@example.com", "1987-11-23")]);
    source.script("id:c-1", vec![Reply::Status(503), Reply::Status(503)]);
    let base = serve(source.clone()).await;
    let mdm = mdm(definitions(&base, Some(&pull_line(1000.0, 5, 2000)))).await;

    let started = Instant::now();
    let outcomes = mdm.pull(&[PullKey::Id("c-1".into())]).await;
    let elapsed = started.elapsed();
    assert_eq!(
        results(&outcomes),
        [("id 1".into(), 3, ingested(Outcome::Captured { stream_version: 0 }))]
    );
    assert_eq!(source.hits_for("id:c-1").len(), 3);
    // Backoff: about 200 ms, then 400 ms, each at least half of that.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert_no_leak(&outcomes, &["c-1", "a@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_is_honoured() {
    let source = Source::with_customers(vec![warranty_answer("c-1", "Ann Smith", "a@example.com", "1987-11-23")]);
    source.script("id:c-1", vec![Reply::RetryAfter(429, 1)]);
    let base = serve(source.clone()).await;
    let mdm = mdm(definitions(&base, Some(&pull_line(1000.0, 5, 2000)))).await;

    let started = Instant::now();
    let outcomes = mdm.pull(&[PullKey::Id("c-1".into())]).await;
    let elapsed = started.elapsed();
    assert_eq!(
        results(&outcomes),
        [("id 1".into(), 2, ingested(Outcome::Captured { stream_version: 0 }))]
    );
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    let hits = source.hits_for("id:c-1");
    assert_eq!(hits.len(), 2);
    assert!(hits[1] - hits[0] >= Duration::from_secs(1), "{:?}", hits[1] - hits[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_found_refused_and_unreadable_answers_store_nothing() {
    let source = Source::with_customers(vec![]);
    source.always("id:bad-request", Reply::Status(400));
    source.always("id:forbidden", Reply::Status(403));
    source.always("id:array", Reply::Body("[{\"data\": {\"customerId\": \"c-1\"}}]"));
    source.always("id:broken", Reply::Body("{\"data\": {\"customerId\": \"c-10"));
    source.always(
        "id:no-id",
        Reply::Body("{\"data\": {\"person\": {\"fullName\": \"Ann Smith\"}}}"),
    );
    let base = serve(source.clone()).await;
    let mdm = mdm(definitions(&base, Some(&pull_line(1000.0, 5, 2000)))).await;

    let keys = [
        PullKey::Id("nobody".into()),
        PullKey::Email("nobody@example.com".into()),
        PullKey::Id("bad-request".into()),
        PullKey::Id("forbidden".into()),
        PullKey::Id("array".into()),
        PullKey::Id("broken".into()),
        PullKey::Id("no-id".into()),
        PullKey::Id(String::new()),
    ];
    let outcomes = mdm.pull(&keys).await;
    let got = results(&outcomes);
    assert_eq!(got[0], ("id 1".into(), 1, PullResult::NotFound));
    assert_eq!(got[1], ("email 2".into(), 1, PullResult::NotFound));
    assert_eq!(
        got[2],
        (
            "id 3".into(),
            1,
            PullResult::Failed {
                reason: "the source answered 400 Bad Request".into()
            }
        )
    );
    assert_eq!(
        got[3],
        (
            "id 4".into(),
            1,
            PullResult::Failed {
                reason: "the source answered 403 Forbidden".into()
            }
        )
    );
    let rejected = |outcome: &PullResult| match outcome {
        PullResult::Ingested(Outcome::Rejected { field, reason }) => (field.clone(), reason.clone()),
        other => panic!("not rejected: {other:?}"),
    };
    assert_eq!(
        rejected(&got[4].2),
        (None, "expected a JSON object, found an array".into())
    );
    assert!(rejected(&got[5].2).1.starts_with("is not valid JSON"), "{:?}", got[5]);
    assert_eq!(rejected(&got[6].2).0.as_deref(), Some("id"));
    assert_eq!(got[7].1, 0, "an empty key is not asked for");
    assert!(matches!(&got[7].2, PullResult::Failed { reason } if reason.contains("empty")));
    // Each asked once: none of these is worth a retry.
    assert_eq!(source.hits().len(), 7);
    assert_eq!(mdm.event_count().await, 0);
    assert_no_leak(&outcomes, &["nobody", "bad-request", "forbidden", "c-1\""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_that_always_fails_is_asked_max_attempts_times_exactly() {
    let source = Source::with_customers(vec![warranty_answer("c-1", "Ann Smith", "a@example.com", "1987-11-23")]);
    source.always("id:c-1", Reply::Status(503));
    source.always("email:a@example.com", Reply::Status(500));
    let base = serve(source.clone()).await;
    let mdm = mdm(definitions(&base, Some(&pull_line(1000.0, 3, 2000)))).await;

    let started = Instant::now();
    let outcomes = mdm
        .pull(&[PullKey::Id("c-1".into()), PullKey::Email("a@example.com".into())])
        .await;
    assert_eq!(
        results(&outcomes),
        [
            (
                "id 1".into(),
                3,
                PullResult::Failed {
                    reason: "the source answered 503 Service Unavailable (attempt 3 of 3); gave up".into()
                }
            ),
            (
                "email 2".into(),
                3,
                PullResult::Failed {
                    reason: "the source answered 500 Internal Server Error (attempt 3 of 3); gave up".into()
                }
            ),
        ]
    );
    assert_eq!(source.hits_for("id:c-1").len(), 3);
    assert_eq!(source.hits_for("email:a@example.com").len(), 3);
    // Two backoffs of 100-200 ms and 200-400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(mdm.event_count().await, 0);
    assert_no_leak(&outcomes, &["c-1", "a@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeouts_and_unreachable_sources_are_retried_then_failed() {
    let source = Source::with_customers(vec![warranty_answer("c-1", "Ann Smith", "a@example.com", "1987-11-23")]);
    source.always("id:c-1", Reply::Slow(Duration::from_secs(2)));
    let base = serve(source.clone()).await;
    let mdm = mdm(definitions(&base, Some(&pull_line(1000.0, 2, 200)))).await;
    let outcomes = mdm.pull(&[PullKey::Id("c-1".into())]).await;
    assert_eq!(
        results(&outcomes),
        [(
            "id 1".into(),
            2,
            PullResult::Failed {
                reason: "the request timed out (attempt 2 of 2); gave up".into()
            }
        )]
    );
    assert_eq!(source.hits_for("id:c-1").len(), 2);

    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mdm = self::mdm(definitions(
        &format!("http://{closed}"),
        Some(&pull_line(1000.0, 2, 200)),
    ))
    .await;
    let outcomes = mdm.pull(&[PullKey::Email("a@example.com".into())]).await;
    assert_eq!(
        results(&outcomes),
        [(
            "email 1".into(),
            2,
            PullResult::Failed {
                reason: "the source could not be reached (attempt 2 of 2); gave up".into()
            }
        )]
    );
    assert_no_leak(&outcomes, &["a@example.com", "127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_are_rate_limited_across_concurrent_calls() {
    let bodies = (1..=10)
        .map(|i| {
            warranty_answer(
                &format!("c-{i}"),
                "Ann Smith",
                &format!("a{i}@example.com"),
                "1987-11-23",
            )
        })
        .collect();
    let source = Source::with_customers(bodies);
    let base = serve(source.clone()).await;
    let mdm = mdm(definitions(&base, Some(&pull_line(20.0, 5, 2000)))).await;

    let keys: Vec<PullKey> = (1..=10).map(|i| PullKey::Id(format!("c-{i}"))).collect();
    let started = Instant::now();
    let (left, right) = tokio::join!(mdm.pull(&keys[..5]), mdm.pull(&keys[5..]));
    let elapsed = started.elapsed();
    for outcome in left.iter().chain(&right) {
        assert_eq!(
            outcome.result,
            ingested(Outcome::Captured { stream_version: 0 }),
            "{outcome:?}"
        );
    }
    // 20 requests a second: the 10th starts 9 intervals of 50 ms after the
    // first.
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    let mut starts: Vec<Instant> = source.hits().into_iter().map(|(t, _)| t).collect();
    starts.sort();
    assert_eq!(starts.len(), 10);
    // However the two calls interleave, no k+1 requests reach the server
    // within less than k intervals (less 25 ms of scheduling slack).
    for i in 0..starts.len() {
        for j in i + 1..starts.len() {
            let least = Duration::from_millis(50 * (j - i) as u64 - 25);
            assert!(
                starts[j] - starts[i] >= least,
                "requests {i} and {j} started {:?} apart",
                starts[j] - starts[i]
            );
        }
    }
    eprintln!(
        "10 requests at 20/s in {elapsed:?}; first to last start {:?}",
        starts[9] - starts[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_cannot_be_asked_is_refused_without_a_request() {
    let source = Source::default();
    let base = serve(source.clone()).await;

    // Only a rest_pull source makes a puller.
    let defs = definitions(&base, None);
    let finance = Puller::new(defs.get("finance").unwrap()).unwrap_err();
    assert!(matches!(finance, PullError::NotPulled { .. }));
    assert_eq!(
        finance.to_string(),
        "source `finance` is not pulled: only a `format = \"rest_pull\"` source with a `pull` table is"
    );

    // A source with a lookup by id only.
    let by_id_only = format!("pull = {{ by_id = \"{base}/api/customers/{{id}}\", requests_per_second = 1000.0 }}");
    let mdm = mdm(definitions(&base, Some(&by_id_only))).await;
    let outcomes = mdm.pull(&[PullKey::Email("a@example.com".into())]).await;
    assert_eq!(
        results(&outcomes),
        [(
            "email 1".into(),
            0,
            PullResult::Failed {
                reason: "the source has no lookup by email (`pull.by_email` is not configured)".into()
            }
        )]
    );
    assert!(format!("{:?}", mdm.puller).contains("warranty_api"));
    assert!(
        !format!("{:?}", mdm.puller).contains("127.0.0.1"),
        "the Debug of a puller shows no URL"
    );

    // An ingestor that does not know the system: refused before any request.
    let others: Vec<SourceDefinition> = defs.iter().filter(|d| d.system != SYSTEM).cloned().collect();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(dir.path().join("events.db")).await.unwrap());
    let keys: Arc<dyn KeyStore> = Arc::new(
        SqliteKeyStore::open(&dir.path().join("keys.db"), MasterKey::generate())
            .await
            .unwrap(),
    );
    let stranger = Ingestor::new(store, keys, Arc::new(SourceDefinitions::new(others).unwrap()));
    let refused = mdm.puller.pull(&stranger, &[PullKey::Id("c-1".into())], &ctx()).await;
    assert!(matches!(refused, Err(IngestError::UnknownSystem)));
    assert!(source.hits().is_empty());
}
