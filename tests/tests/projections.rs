//! The projections through the real stores and read-model databases (SQLite
//! files and PostgreSQL): replays give identical rows whatever the batch
//! size, a runner killed mid-batch resumes to the rows of an uninterrupted
//! run, a rule-set change plus rebuild re-masters the golden records and the
//! lineage names the new rule, a rebuild swaps in while a live runner keeps
//! following the log, and an erased record projects without personal data.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use mdm_commands::ingest::Ingestor;
use mdm_commands::resolver::Resolver;
use mdm_domain::survivorship::{Rule, RuleSet};
use mdm_projections::runner::{self, Batch, Names, Projection, ProjectionError, Runner};
use mdm_projections::{Dialect, ReadDb};
use mdm_tests::backends::{PostgresBackend, SqliteBackend};
use mdm_tests::fixtures::{
    catch_up, ingest, opener, postgres_stores, projections, resolver, rows, rules, scenario, sqlite_stores,
    wait_for_last_decision, Stores,
};
use sqlx::AnyConnection;

type Dump = Vec<(String, Vec<String>)>;

async fn dump(db: &ReadDb, projections: &[Arc<dyn Projection>]) -> Dump {
    let mut out = Vec::new();
    for p in projections {
        out.extend(runner::dump(db, p.as_ref()).await.expect("dump"));
    }
    out
}

fn assert_same(a: &Dump, b: &Dump, what: &str) {
    assert_eq!(a.len(), b.len());
    for ((ta, ra), (tb, rb)) in a.iter().zip(b) {
        assert_eq!(ta, tb);
        assert_eq!(ra.len(), rb.len(), "{what}: {ta} has as many rows");
        for (x, y) in ra.iter().zip(rb) {
            assert_eq!(x, y, "{what}: {ta} rows are identical");
        }
    }
}

/// One value of a query returning a single text column.
async fn text(db: &ReadDb, sql: &str, bind: &str) -> Option<String> {
    sqlx::query_as::<_, (Option<String>,)>(sql)
        .bind(bind)
        .fetch_optional(db.pool())
        .await
        .expect("query")
        .and_then(|r| r.0)
}

/// The read models agree with the resolver's own state.
async fn check_against_engine(s: &Stores, db: &ReadDb, r: &Resolver) {
    let ingestor = Ingestor::new(s.store.clone(), s.keys.clone(), mdm_tests::fixtures::definitions());
    let mut active = std::collections::BTreeSet::new();
    for (stream, token) in r.engine().assignments() {
        let xref = text(db, "SELECT token FROM customer_member WHERE record = $1", stream).await;
        assert_eq!(
            xref,
            Some(token.to_string()),
            "cross-reference names the engine's customer"
        );
        let sr = text(db, "SELECT token FROM source_record WHERE record = $1", stream).await;
        assert_eq!(sr, Some(token.to_string()), "source record names the engine's customer");
        active.insert(token);
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM customer WHERE status = 'active' AND record_count > 0")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(n as usize, active.len(), "one active customer per engine customer");
    for token in &active {
        let view = r.engine().customer(*token).expect("customer");
        let (version,): (i64,) = sqlx::query_as("SELECT version FROM customer WHERE token = $1")
            .bind(token.to_string())
            .fetch_one(db.pool())
            .await
            .expect("version");
        assert_eq!(version as u64, view.version, "versions follow the engine's");
    }
    // The web copy of person 0 is linked to the CRM record and the name
    // survives from the more trusted CRM record under trust_rank.
    let crm = ingestor.stream_of("crm", "p0-0");
    let token = r.engine().token_of(&crm).expect("decided");
    assert_eq!(r.engine().token_of(&ingestor.stream_of("web", "w0-0")), Some(token));
    let given = text(
        db,
        "SELECT given_name FROM customer WHERE token = $1",
        &token.to_string(),
    )
    .await;
    assert_eq!(given.as_deref(), Some("robert"));
}

async fn replays_give_identical_rows(s: Stores, a: ReadDb, b: ReadDb) {
    let r = scenario(&s).await;
    let ps = projections(rules(vec![Rule::TrustRank, Rule::MostComplete], "trust-1"));
    catch_up(&s, &a, &ps, 5_000).await;
    check_against_engine(&s, &a, &r).await;
    let first = dump(&a, &ps).await;
    for (table, rows) in &first {
        // The scenario's records are clear links or clear strangers: no
        // review items (the review queue is covered by the engine's tests).
        assert!(
            rows.is_empty() == (table == "review_item"),
            "the scenario fills {table}"
        );
    }
    change_log_folds_to_the_golden_records(&a).await;
    // Tiny batches cut every batch boundary through the scenario.
    catch_up(&s, &b, &ps, 7).await;
    assert_same(&first, &dump(&b, &ps).await, "batches of 7 against one batch");
    // Drop and replay into the same database.
    for p in &ps {
        runner::reset(&a, p.as_ref()).await.expect("reset");
    }
    catch_up(&s, &a, &ps, 500).await;
    assert_same(&first, &dump(&a, &ps).await, "a second replay");
}

/// The change log tells the whole story: folding every change of a token
/// in log order (created and updated set attributes, null removes one,
/// merged clears) gives exactly the golden values the customer table
/// serves; every kind of change the scenario makes is there, and the log
/// is in (position, ordinal) order with ordinals 0, 1, 2, ... per event.
async fn change_log_folds_to_the_golden_records(db: &ReadDb) {
    use mdm_projections::changes::{changes_after, golden_value_json, ChangeCursor, ChangeType};
    use std::collections::{BTreeMap, BTreeSet};
    let mut after = ChangeCursor::START;
    let mut folded: BTreeMap<uuid::Uuid, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    let mut previous: Option<ChangeCursor> = None;
    loop {
        // Small pages, so that paging itself is exercised.
        let page = changes_after(db, after, 13, None).await.expect("changes");
        for c in &page.changes {
            let expected_ordinal = match previous {
                Some(p) if p.position == c.position => p.ordinal + 1,
                _ => 0,
            };
            assert_eq!(c.ordinal, expected_ordinal, "ordinals count up within a position");
            assert!(previous.is_none_or(|p| p < c.cursor()), "log order");
            previous = Some(c.cursor());
            kinds.insert(c.change_type);
            let values = folded.entry(c.token).or_default();
            match c.change_type {
                ChangeType::Created => {
                    assert!(values.is_empty(), "a created token is new");
                    *values = c.attributes.clone();
                }
                ChangeType::Updated => {
                    assert!(!c.attributes.is_empty(), "an update changes something");
                    for (k, v) in &c.attributes {
                        if v.is_null() {
                            values.remove(k);
                        } else {
                            values.insert(k.clone(), v.clone());
                        }
                    }
                }
                ChangeType::Merged => {
                    assert!(c.attributes.is_empty());
                    assert!(c.detail["survivor"].is_string() && c.detail["absorbed"].is_array());
                    values.clear();
                }
                ChangeType::Unmerged => {
                    assert_eq!(c.detail["to"], serde_json::json!(c.token.to_string()));
                    assert!(c.detail["from"].is_string());
                }
                ChangeType::HouseholdChanged => assert!(c.detail.contains_key("household")),
                ChangeType::Erased => assert!(c.attributes.is_empty()),
            }
        }
        after = page.next;
        if !page.full {
            break;
        }
    }
    for kind in [
        ChangeType::Created,
        ChangeType::Updated,
        ChangeType::Merged,
        ChangeType::Unmerged,
        ChangeType::HouseholdChanged,
    ] {
        assert!(kinds.contains(&kind), "the scenario makes {kind} changes");
    }
    let tokens: Vec<(String, String)> = sqlx::query_as("SELECT token, status FROM customer")
        .fetch_all(db.pool())
        .await
        .expect("customers");
    assert_eq!(tokens.len(), folded.len(), "every customer has changes");
    for (token, status) in tokens {
        let token = uuid::Uuid::parse_str(&token).expect("token");
        let mut golden = serde_json::Map::new();
        for l in mdm_projections::query::lineage(db, token).await.expect("lineage") {
            let value: mdm_domain::survivorship::GoldenValue = serde_json::from_value(l.value).expect("golden value");
            golden.insert(l.attribute, golden_value_json(&value));
        }
        assert_eq!(
            folded[&token], golden,
            "the changes of a {status} customer fold to its golden record"
        );
    }
}

/// Fails the batch after `fail_at` applied batches, after its rows were
/// written but before the runner commits: as if the process died mid-batch.
#[derive(Debug)]
struct DiesMidBatch {
    inner: Arc<dyn Projection>,
    batches: AtomicUsize,
    fail_at: usize,
}

#[async_trait]
impl Projection for DiesMidBatch {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn schema_version(&self) -> i64 {
        self.inner.schema_version()
    }
    fn config(&self) -> String {
        self.inner.config()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }
    fn schema(&self, dialect: Dialect) -> Vec<&'static str> {
        self.inner.schema(dialect)
    }
    fn opens_source_records(&self) -> bool {
        self.inner.opens_source_records()
    }
    async fn apply(&self, tx: &mut AnyConnection, names: &Names, batch: &Batch<'_>) -> Result<(), ProjectionError> {
        self.inner.apply(tx, names, batch).await?;
        if self.batches.fetch_add(1, Ordering::SeqCst) == self.fail_at {
            return Err(ProjectionError::Corrupt {
                position: 0,
                reason: "killed mid-batch".into(),
            });
        }
        Ok(())
    }
}

async fn a_runner_killed_mid_batch_resumes_to_the_same_rows(s: Stores, a: ReadDb, b: ReadDb) {
    scenario(&s).await;
    let ps = projections(RuleSet::default());
    catch_up(&s, &a, &ps, 5_000).await;
    let expected = dump(&a, &ps).await;
    for p in &ps {
        for fail_at in [0, 3, 9] {
            let dying: Arc<dyn Projection> = Arc::new(DiesMidBatch {
                inner: p.clone(),
                batches: AtomicUsize::new(0),
                fail_at,
            });
            let result = Runner::new(s.store.clone(), b.clone(), dying, opener(&s))
                .with_batch(11)
                .catch_up()
                .await;
            assert!(result.is_err(), "the runner died");
        }
    }
    catch_up(&s, &b, &ps, 11).await;
    assert_same(&expected, &dump(&b, &ps).await, "resumed after three deaths");
}

async fn a_rule_change_and_rebuild_remasters(s: Stores, db: ReadDb, fresh: ReadDb) {
    let r = scenario(&s).await;
    let trust = projections(rules(vec![Rule::TrustRank], "trust-1"));
    catch_up(&s, &db, &trust, 5_000).await;
    let ingestor = Ingestor::new(s.store.clone(), s.keys.clone(), mdm_tests::fixtures::definitions());
    let token = r
        .engine()
        .token_of(&ingestor.stream_of("crm", "p0-0"))
        .expect("decided");
    let lineage = |db: ReadDb| async move {
        sqlx::query_as::<_, (String, Option<String>, String, String)>(
            "SELECT c.given_name, a.system, a.rule, a.rule_set FROM customer c \
             JOIN customer_attribute a ON a.token = c.token AND a.attribute = 'name' WHERE c.token = $1",
        )
        .bind(token.to_string())
        .fetch_one(db.pool())
        .await
        .expect("lineage")
    };
    let before = lineage(db.clone()).await;
    assert_eq!(
        before,
        (
            "robert".into(),
            Some("crm".into()),
            "trust_rank".into(),
            "trust-1".into()
        )
    );

    // The new rule set prefers the most recent record: the web copy.
    let recent = projections(rules(vec![Rule::MostRecent], "recent-2"));
    let status = runner::status(s.store.as_ref(), &db, &recent).await.expect("status");
    assert!(status[0].rebuild_due, "status says the customers need a rebuild");
    let report = runner::rebuild(s.store.as_ref(), &db, recent[0].as_ref(), &opener(&s), &mut |_, _| {})
        .await
        .expect("rebuild");
    assert_eq!(report.generation, 2);
    let after = lineage(db.clone()).await;
    assert_eq!(
        after,
        (
            "bob".into(),
            Some("web".into()),
            "most_recent".into(),
            "recent-2".into()
        )
    );
    let status = runner::status(s.store.as_ref(), &db, &recent).await.expect("status");
    assert!(!status[0].rebuild_due);
    assert_eq!(status[0].events_behind, 0);
    // The rebuilt tables equal a fresh build with the new rules.
    catch_up(&s, &fresh, &recent[..1], 5_000).await;
    assert_same(
        &dump(&db, &recent[..1]).await,
        &dump(&fresh, &recent[..1]).await,
        "rebuilt against fresh",
    );
}

async fn a_rebuild_swaps_in_while_the_runner_follows(s: Stores, db: ReadDb, fresh: ReadDb) {
    scenario(&s).await;
    let ps = projections(RuleSet::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut progress = Vec::new();
    for p in &ps {
        let runner = Runner::new(s.store.clone(), db.clone(), p.clone(), opener(&s)).with_batch(50);
        progress.push(runner.progress());
        tasks.push(tokio::spawn(runner::supervise(runner, stop_rx.clone())));
    }
    // More records arrive while the customers are rebuilt.
    let more: Vec<String> = rows(45).into_iter().skip(rows(30).len()).collect();
    let writer = {
        let store = s.store.clone();
        let keys = s.keys.clone();
        tokio::spawn(async move {
            let s = Stores { store, keys };
            for chunk in more.chunks(10) {
                ingest(&s, chunk).await;
            }
        })
    };
    let report = runner::rebuild(s.store.as_ref(), &db, ps[0].as_ref(), &opener(&s), &mut |_, _| {})
        .await
        .expect("rebuild");
    writer.await.expect("writer");
    let mut r = resolver(&s).await;
    r.catch_up().await.expect("resolve the new records");
    let head = wait_for_last_decision(&s.store).await;
    for p in &mut progress {
        p.wait_for(|p| p.position >= head).await.expect("runner follows");
    }
    stop_tx.send(true).expect("stop");
    for t in tasks {
        t.await.expect("runner task");
    }
    assert!(report.generation >= 2);
    let checkpoint = runner::checkpoint(&db, "customers")
        .await
        .expect("checkpoint")
        .expect("exists");
    assert_eq!(checkpoint.generation, report.generation, "the rebuilt tables are live");
    catch_up(&s, &fresh, &ps, 5_000).await;
    assert_same(
        &dump(&fresh, &ps).await,
        &dump(&db, &ps).await,
        "rebuilt while live against fresh",
    );
    check_against_engine(&s, &db, &r).await;
}

async fn erased_records_project_without_personal_data(s: Stores, db: ReadDb) {
    let r = scenario(&s).await;
    let ingestor = Ingestor::new(s.store.clone(), s.keys.clone(), mdm_tests::fixtures::definitions());
    let record = ingestor.stream_of("crm", "p3-0");
    let token = r.engine().token_of(&record).expect("decided");
    // Destroy the record's key, then replay from scratch.
    let found = s.keys.find(std::slice::from_ref(&record)).await.expect("find");
    let key_id = match found.first() {
        Some(Some(k)) => k.key_id(),
        _ => panic!("the record has a key"),
    };
    s.keys.destroy(&[key_id]).await.expect("destroy");
    let ps = projections(RuleSet::default());
    catch_up(&s, &db, &ps, 5_000).await;
    let row: (String, Option<String>, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT r.state, r.source_id, v.attributes, v.raw FROM source_record r \
             JOIN source_record_version v ON v.record = r.record AND v.version = r.version WHERE r.record = $1",
    )
    .bind(&record)
    .fetch_one(db.pool())
    .await
    .expect("row");
    assert_eq!(row, ("erased".into(), None, None, None));
    let versions: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT state, raw FROM source_record_version WHERE record = $1")
            .bind(&record)
            .fetch_all(db.pool())
            .await
            .expect("versions");
    assert!(!versions.is_empty() && versions.iter().all(|v| v.0 == "erased" && v.1.is_none()));
    assert_eq!(
        text(&db, "SELECT source_id FROM customer_member WHERE record = $1", &record).await,
        None
    );
    // Its customer still exists (other records), and its golden values
    // come from other records only.
    let lineage: Vec<(Option<String>,)> = sqlx::query_as("SELECT record FROM customer_attribute WHERE token = $1")
        .bind(token.to_string())
        .fetch_all(db.pool())
        .await
        .expect("lineage");
    assert!(lineage.iter().all(|(r,)| r.as_deref() != Some(record.as_str())));
    // A record erased after it joined its customer and changed: replayed,
    // none of its versions opens, and the change log says `erased` where it
    // joined and where it changed, with no values; none of its values
    // appear anywhere in the log.
    let changed = ingestor.stream_of("crm", "p4-0");
    let changed_token = r.engine().token_of(&changed).expect("decided");
    let found = s.keys.find(std::slice::from_ref(&changed)).await.expect("find");
    let key_id = match found.first() {
        Some(Some(k)) => k.key_id(),
        _ => panic!("the record has a key"),
    };
    s.keys.destroy(&[key_id]).await.expect("destroy");
    for p in &ps {
        runner::reset(&db, p.as_ref()).await.expect("reset");
    }
    catch_up(&s, &db, &ps, 5_000).await;
    let erased: Vec<(String, String)> =
        sqlx::query_as("SELECT attributes, detail FROM customer_change WHERE token = $1 AND change_type = 'erased'")
            .bind(changed_token.to_string())
            .fetch_all(db.pool())
            .await
            .expect("changes");
    // One where the resolver assigned the record, one at its later version.
    assert_eq!(erased.len(), 2, "erased changes for the customer");
    assert!(
        erased.iter().all(|(attributes, _)| attributes == "{}"),
        "an erased change carries no values"
    );
    let (mentions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM customer_change WHERE attributes LIKE '%changed.test%'")
            .fetch_one(db.pool())
            .await
            .expect("count");
    assert_eq!(mentions, 0, "nothing of the erased version is in the change log");
}

// ---- SQLite ----

async fn sqlite_read(backend: &SqliteBackend, name: &str) -> ReadDb {
    ReadDb::open_sqlite(&backend.dir.path().join(format!("{name}.db")))
        .await
        .expect("read db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replays_give_identical_rows() {
    let b = SqliteBackend::new().await.expect("sqlite");
    let (x, y) = (sqlite_read(&b, "a").await, sqlite_read(&b, "b").await);
    replays_give_identical_rows(sqlite_stores(&b).await, x, y).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runner_killed_mid_batch_resumes_to_the_same_rows() {
    let b = SqliteBackend::new().await.expect("sqlite");
    let (x, y) = (sqlite_read(&b, "a").await, sqlite_read(&b, "b").await);
    a_runner_killed_mid_batch_resumes_to_the_same_rows(sqlite_stores(&b).await, x, y).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rule_change_and_rebuild_remasters() {
    let b = SqliteBackend::new().await.expect("sqlite");
    let (x, y) = (sqlite_read(&b, "a").await, sqlite_read(&b, "b").await);
    a_rule_change_and_rebuild_remasters(sqlite_stores(&b).await, x, y).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rebuild_swaps_in_while_the_runner_follows() {
    let b = SqliteBackend::new().await.expect("sqlite");
    let (x, y) = (sqlite_read(&b, "a").await, sqlite_read(&b, "b").await);
    a_rebuild_swaps_in_while_the_runner_follows(sqlite_stores(&b).await, x, y).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_erased_records_project_without_personal_data() {
    let b = SqliteBackend::new().await.expect("sqlite");
    let db = sqlite_read(&b, "a").await;
    erased_records_project_without_personal_data(sqlite_stores(&b).await, db).await;
}

// ---- PostgreSQL ----

async fn pg_read(backend: &PostgresBackend, schema: &str) -> ReadDb {
    ReadDb::open_postgres(&backend.url, schema).await.expect("read db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replays_give_identical_rows() {
    let b = PostgresBackend::new().await.expect("postgres");
    let (x, y) = (pg_read(&b, "read_a").await, pg_read(&b, "read_b").await);
    replays_give_identical_rows(postgres_stores(&b).await, x, y).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_runner_killed_mid_batch_resumes_to_the_same_rows() {
    let b = PostgresBackend::new().await.expect("postgres");
    let (x, y) = (pg_read(&b, "read_a").await, pg_read(&b, "read_b").await);
    a_runner_killed_mid_batch_resumes_to_the_same_rows(postgres_stores(&b).await, x, y).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rule_change_and_rebuild_remasters() {
    let b = PostgresBackend::new().await.expect("postgres");
    let (x, y) = (pg_read(&b, "read_a").await, pg_read(&b, "read_b").await);
    a_rule_change_and_rebuild_remasters(postgres_stores(&b).await, x, y).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rebuild_swaps_in_while_the_runner_follows() {
    let b = PostgresBackend::new().await.expect("postgres");
    let (x, y) = (pg_read(&b, "read_a").await, pg_read(&b, "read_b").await);
    a_rebuild_swaps_in_while_the_runner_follows(postgres_stores(&b).await, x, y).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_erased_records_project_without_personal_data() {
    let b = PostgresBackend::new().await.expect("postgres");
    let db = pg_read(&b, "read_a").await;
    erased_records_project_without_personal_data(postgres_stores(&b).await, db).await;
}
