//! The projections through the real stores and read-model databases (SQLite
//! files and PostgreSQL): replays give identical rows whatever the batch
//! size, a runner killed mid-batch resumes to the rows of an uninterrupted
//! run, a rule-set change plus rebuild re-masters the golden records and the
//! lineage names the new rule, a rebuild swaps in while a live runner keeps
//! following the log, an erased record projects without personal data, and
//! steward overrides win survivorship, follow their token through merges
//! and splits back, end when removed or expired, and vanish with their key.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mdm_commands::ingest::{seal, Ingestor};
use mdm_commands::resolver::Resolver;
use mdm_domain::resolution::engine::{CommandRequest, StewardCommand};
use mdm_domain::resolution::events::{Decided, Decision, SealedValue};
use mdm_domain::survivorship::{Chosen, Golden, GoldenAttribute, GoldenValue, Lineage, Rule, RuleSet};
use mdm_projections::as_of::{customer_as_of, AsOf, CustomerAsOf};
use mdm_projections::changes::{change_at, golden_value_json, ChangeCursor, ChangeType, CustomerChange};
use mdm_projections::query::{self, AttributeLineage, CustomerRow};
use mdm_projections::runner::{self, Batch, Names, Projection, ProjectionError, Runner};
use mdm_projections::{Dialect, ReadDb};
use mdm_store::keys::SubjectKey;
use mdm_store::Position;
use mdm_tests::backends::{PostgresBackend, SqliteBackend};
use mdm_tests::fixtures::{
    catch_up, ingest, opener, postgres_stores, projections, resolver, rows, rules, scenario, settings, sqlite_stores,
    wait_for_last_decision, Stores,
};
use sqlx::AnyConnection;
use uuid::Uuid;

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
        // review items (the review queue is covered by the engine's tests),
        // no steward overrides (covered below), and no erasure (covered by
        // the erasure test, with the records held after it).
        let covered_elsewhere = [
            "review_item",
            "customer_override",
            "privacy_erased_record",
            "privacy_hold",
        ];
        assert!(
            rows.is_empty() == covered_elsewhere.contains(&table.as_str()),
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

// ---- Steward overrides ----

const STEWARD: &str = "steward-7";

/// A steward command through the resolver, as the service sends it.
async fn steward(r: &mut Resolver, reason: &str, command: StewardCommand) -> Vec<Decided> {
    r.command(&CommandRequest {
        command_id: Uuid::now_v7(),
        steward: STEWARD.into(),
        reason: reason.into(),
        expected: Vec::new(),
        command,
    })
    .await
    .expect("store")
    .expect("accepted")
}

/// Sets an override of `token` to `value`, sealed as the service seals it
/// (a key of its own in the key store, bound to the override's subject);
/// returns its id and the position of its decision.
async fn set_override(
    s: &Stores,
    r: &mut Resolver,
    token: Uuid,
    value: &GoldenValue,
    expires_at: Option<DateTime<Utc>>,
) -> (Uuid, Position) {
    let override_id = Uuid::now_v7();
    let subject = SealedValue::subject(override_id);
    let lookup = s.keys.get_or_create(std::slice::from_ref(&subject)).await.expect("key");
    let SubjectKey::Active { key_id, key } = &lookup[0].key else {
        panic!("a fresh key is active")
    };
    let sealed = seal(key, &subject, value).expect("seal");
    let decided = steward(
        r,
        "the customer called",
        StewardCommand::Override {
            token,
            override_id,
            attribute: value.attribute().as_str().to_owned(),
            expires_at,
            value: SealedValue {
                key_id: *key_id,
                sealed,
            },
        },
    )
    .await;
    assert!(matches!(decided[0].decision, Decision::ValueOverridden { .. }));
    (override_id, wait_for_last_decision(&s.store).await)
}

async fn golden_row(db: &ReadDb, token: Uuid) -> CustomerRow {
    query::customer(db, token).await.expect("read").expect("exists")
}

async fn lineage_of(db: &ReadDb, token: Uuid, attribute: &str) -> Option<AttributeLineage> {
    query::lineage(db, token)
        .await
        .expect("lineage")
        .into_iter()
        .find(|l| l.attribute == attribute)
}

/// The override ids in force on `token`, as the query API lists them.
async fn override_ids(db: &ReadDb, token: Uuid) -> Vec<Uuid> {
    query::overrides_of(db, token)
        .await
        .expect("overrides")
        .iter()
        .map(|o| o.override_id)
        .collect()
}

/// The changes the event at `position` made, in order.
async fn changes_at(db: &ReadDb, position: Position) -> Vec<CustomerChange> {
    let mut out = Vec::new();
    for ordinal in 0.. {
        match change_at(db, ChangeCursor::new(position.0 as i64, ordinal))
            .await
            .expect("change")
        {
            Some(c) => out.push(c),
            None => return out,
        }
    }
    out
}

/// The one `updated` change of the event at `position`: its token and
/// what it changed.
async fn updated_at(db: &ReadDb, position: Position) -> (Uuid, serde_json::Map<String, serde_json::Value>) {
    let changes = changes_at(db, position).await;
    let updated: Vec<&CustomerChange> = changes
        .iter()
        .filter(|c| c.change_type == ChangeType::Updated)
        .collect();
    assert_eq!(updated.len(), 1, "one updated change at {position}: {changes:?}");
    (updated[0].token, updated[0].attributes.clone())
}

/// The golden record as (attribute, value, rule, source position, steward),
/// from the as-of view and from the customers projection's lineage.
type GoldenRows = Vec<(String, serde_json::Value, String, i64, Option<String>)>;

fn golden_rows(golden: &Golden) -> GoldenRows {
    golden
        .values
        .iter()
        .map(|s| {
            let (position, by) = match &s.lineage {
                Lineage::Record { position, .. } => (*position, None),
                Lineage::Override { by, position } => (*position, Some(by.clone())),
            };
            (
                s.value.attribute().as_str().to_owned(),
                serde_json::to_value(&s.value).expect("json"),
                s.chosen.as_str().to_owned(),
                position as i64,
                by,
            )
        })
        .collect()
}

async fn lineage_rows(db: &ReadDb, token: Uuid) -> GoldenRows {
    let mut rows: GoldenRows = query::lineage(db, token)
        .await
        .expect("lineage")
        .into_iter()
        .map(|l| (l.attribute, l.value, l.rule, l.source_position, l.overridden_by))
        .collect();
    let order = |a: &str| GoldenAttribute::parse(a).map(|a| a as usize);
    rows.sort_by_key(|r| order(&r.0));
    rows
}

async fn overrides_win_follow_their_token_and_vanish_with_their_key(s: Stores, db: ReadDb, fresh: ReadDb) {
    let mut r = scenario(&s).await;
    let trust = rules(vec![Rule::TrustRank, Rule::MostComplete], "trust-1");
    let ps = projections(trust.clone());
    let customer_settings = settings(trust);
    catch_up(&s, &db, &ps, 5_000).await;
    let ingestor = Ingestor::new(s.store.clone(), s.keys.clone(), mdm_tests::fixtures::definitions());
    let p0 = r
        .engine()
        .token_of(&ingestor.stream_of("crm", "p0-0"))
        .expect("decided");
    let p2 = r
        .engine()
        .token_of(&ingestor.stream_of("crm", "p2-0"))
        .expect("decided");
    // The record that created p2 (the one a split gives p2 back to): which
    // of its records came first depends on the order of the log.
    let p2_record = s
        .store
        .read_stream(
            mdm_domain::resolution::events::RESOLUTION_STREAM,
            mdm_store::StreamStart::Version(0),
            mdm_store::Direction::Forwards,
            10_000,
        )
        .await
        .expect("decisions")
        .iter()
        .find_map(|e| match e.data.decode::<Decided>().ok()?.decision {
            Decision::CustomerCreated { token, record, .. } if token == p2 => Some(record),
            _ => None,
        })
        .expect("p2 was created");
    assert_ne!(p0, p2);
    let as_of = |token: Uuid, at: AsOf| {
        let (store, db, settings, open) = (s.store.clone(), db.clone(), customer_settings.clone(), opener(&s));
        async move {
            customer_as_of(store.as_ref(), &db, &open, &settings, token, at)
                .await
                .expect("as of")
                .expect("known")
        }
    };
    let record_email = golden_row(&db, p0).await.email.expect("an e-mail");
    let record_phone = golden_row(&db, p0).await.phone.expect("a phone");
    assert_eq!(record_email, "robert.okafor0@example.test");

    // An e-mail override on p0 wins over every record.
    let email = GoldenValue::Email {
        email: "bob@override.test".into(),
    };
    let (email_id, email_at) = set_override(&s, &mut r, p0, &email, None).await;
    catch_up(&s, &db, &ps, 5_000).await;
    assert_eq!(golden_row(&db, p0).await.email.as_deref(), Some("bob@override.test"));
    let l = lineage_of(&db, p0, "email").await.expect("an e-mail");
    assert_eq!(l.rule, "steward_override");
    assert_eq!(l.overridden_by.as_deref(), Some(STEWARD));
    assert_eq!((l.record, l.system), (None, None));
    assert_eq!(l.source_position, email_at.0 as i64);
    assert_eq!(l.value["email"], "bob@override.test");
    let name = lineage_of(&db, p0, "name").await.expect("a name");
    assert_eq!((name.rule.as_str(), name.overridden_by), ("trust_rank", None));
    let (token, changed) = updated_at(&db, email_at).await;
    assert_eq!(token, p0);
    assert_eq!(
        changed,
        serde_json::Map::from_iter([("email".to_owned(), golden_value_json(&email))]),
        "the change names the overridden attribute only"
    );
    let listed = query::overrides_of(&db, p0).await.expect("overrides");
    assert_eq!(listed.len(), 1);
    let o = &listed[0];
    assert_eq!((o.override_id, o.token, o.attribute.as_str()), (email_id, p0, "email"));
    assert_eq!(o.value, serde_json::to_value(&email).expect("json"));
    assert_eq!((o.set_by.as_str(), o.reason.as_str()), (STEWARD, "the customer called"));
    assert_eq!((o.position, o.expires_at), (email_at.0 as i64, None));
    assert!(!format!("{o:?}").contains("override.test"), "Debug hides the value");
    // As of before the override, the record's value; from it on, the override.
    let before = as_of(p0, AsOf::Position(Position(email_at.0 - 1))).await;
    assert_eq!(
        before.golden.get(GoldenAttribute::Email).map(|s| &s.value),
        Some(&GoldenValue::Email {
            email: record_email.clone()
        })
    );
    let after = as_of(p0, AsOf::Position(email_at)).await;
    let survived = after.golden.get(GoldenAttribute::Email).expect("an e-mail");
    assert_eq!(survived.value, email);
    assert_eq!(survived.chosen, Chosen::StewardOverride);
    assert_eq!(
        survived.lineage,
        Lineage::Override {
            by: STEWARD.into(),
            position: email_at.0
        }
    );

    // Removing the e-mail override restores the record's value.
    steward(
        &mut r,
        "wrong address",
        StewardCommand::RemoveOverride {
            token: p0,
            override_id: email_id,
        },
    )
    .await;
    let removed_at = wait_for_last_decision(&s.store).await;
    catch_up(&s, &db, &ps, 5_000).await;
    assert_eq!(golden_row(&db, p0).await.email.as_deref(), Some(record_email.as_str()));
    let l = lineage_of(&db, p0, "email").await.expect("an e-mail");
    assert_ne!(l.rule, "steward_override");
    assert_eq!(l.overridden_by, None);
    assert!(l.record.is_some());
    assert_eq!(
        updated_at(&db, removed_at).await,
        (
            p0,
            serde_json::Map::from_iter([("email".to_owned(), serde_json::Value::String(record_email.clone()))])
        )
    );
    assert!(override_ids(&db, p0).await.is_empty());
    let removed: (Option<i64>, i64) =
        sqlx::query_as("SELECT removed_position, removed_expired FROM customer_override WHERE override_id = $1")
            .bind(email_id.to_string())
            .fetch_one(db.pool())
            .await
            .expect("row");
    assert_eq!(removed, (Some(removed_at.0 as i64), 0));
    assert_eq!(
        as_of(p0, AsOf::Position(Position(removed_at.0 - 1)))
            .await
            .golden
            .get(GoldenAttribute::Email)
            .map(|s| s.value.clone()),
        Some(email.clone())
    );

    // A phone override on p2, which p0 then absorbs: the survivor shows it.
    let phone = GoldenValue::Phone {
        number: "+1 312 555 9999".into(),
    };
    let (phone_id, phone_at) = set_override(&s, &mut r, p2, &phone, None).await;
    steward(
        &mut r,
        "same person",
        StewardCommand::Merge {
            survivor: p0,
            absorbed: p2,
        },
    )
    .await;
    let merged_at = wait_for_last_decision(&s.store).await;
    catch_up(&s, &db, &ps, 5_000).await;
    let row = golden_row(&db, p0).await;
    assert_eq!(
        row.phone.as_deref(),
        Some("+1 312 555 9999"),
        "the absorbed token's override"
    );
    let l = lineage_of(&db, p0, "phone").await.expect("a phone");
    assert_eq!(
        (l.rule.as_str(), l.source_position),
        ("steward_override", phone_at.0 as i64)
    );
    assert_eq!(override_ids(&db, p0).await, [phone_id]);
    assert!(
        override_ids(&db, p2).await.is_empty(),
        "a merged token has none of its own"
    );
    let phone_of = |c: &CustomerAsOf| c.golden.get(GoldenAttribute::Phone).map(|s| s.value.clone());
    assert_eq!(
        phone_of(&as_of(p0, AsOf::Position(phone_at)).await),
        Some(GoldenValue::Phone {
            number: record_phone.clone()
        })
    );
    assert_eq!(
        phone_of(&as_of(p0, AsOf::Position(merged_at)).await),
        Some(phone.clone())
    );

    // Splitting p2's first record back out revives p2, with its override.
    let decided = steward(
        &mut r,
        "not the same after all",
        StewardCommand::Split {
            record: p2_record.clone(),
            from: None,
            into: None,
        },
    )
    .await;
    assert!(
        decided
            .iter()
            .any(|d| matches!(&d.decision, Decision::RecordSplit { to, created: false, .. } if *to == p2)),
        "split back into p2"
    );
    let split_at = wait_for_last_decision(&s.store).await;
    catch_up(&s, &db, &ps, 5_000).await;
    assert_eq!(golden_row(&db, p2).await.phone.as_deref(), Some("+1 312 555 9999"));
    // p0 keeps p2's other records: its phone comes from a record again.
    assert_ne!(golden_row(&db, p0).await.phone.as_deref(), Some("+1 312 555 9999"));
    let l = lineage_of(&db, p0, "phone").await.expect("a phone");
    assert!(l.record.is_some() && l.overridden_by.is_none());
    assert_eq!(override_ids(&db, p2).await, [phone_id]);
    assert!(override_ids(&db, p0).await.is_empty());
    assert_eq!(
        phone_of(&as_of(p2, AsOf::Position(split_at)).await),
        Some(phone.clone())
    );
    assert_ne!(
        phone_of(&as_of(p0, AsOf::Position(split_at)).await),
        Some(phone.clone())
    );

    // An override with an expiry: in force until then, as of any time
    // before it; not as of its expiry, though the decision expiring it
    // comes later; the expiry decision ends it in the read models.
    let nickname = GoldenValue::Name {
        given: Some("Bobby".into()),
        middle: None,
        family: Some("Okafor".into()),
        suffix: None,
    };
    let expires = Utc::now() + chrono::Duration::seconds(2);
    let expires = DateTime::<Utc>::from_timestamp_micros(expires.timestamp_micros()).expect("a time");
    let given_before = golden_row(&db, p0).await.given_name;
    assert_ne!(given_before.as_deref(), Some("Bobby"));
    let (name_id, name_at) = set_override(&s, &mut r, p0, &nickname, Some(expires)).await;
    catch_up(&s, &db, &ps, 5_000).await;
    assert_eq!(golden_row(&db, p0).await.given_name.as_deref(), Some("Bobby"));
    let listed = query::overrides_of(&db, p0).await.expect("overrides");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].override_id, listed[0].expires_at), (name_id, Some(expires)));
    let set_time = listed[0].set_at;
    assert!(set_time < expires, "the override was set before it expires");
    tokio::time::sleep((expires - Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(50))
        .await;
    steward(
        &mut r,
        "the override expired",
        StewardCommand::ExpireOverride { override_id: name_id },
    )
    .await;
    let expired_at = wait_for_last_decision(&s.store).await;
    catch_up(&s, &db, &ps, 5_000).await;
    assert_eq!(golden_row(&db, p0).await.given_name, given_before);
    let (token, changed) = updated_at(&db, expired_at).await;
    assert_eq!(token, p0);
    assert_eq!(changed.keys().collect::<Vec<_>>(), ["name"]);
    let removed: (Option<i64>, i64) =
        sqlx::query_as("SELECT removed_position, removed_expired FROM customer_override WHERE override_id = $1")
            .bind(name_id.to_string())
            .fetch_one(db.pool())
            .await
            .expect("row");
    assert_eq!(removed, (Some(expired_at.0 as i64), 1));
    let given_of = |c: &CustomerAsOf| match c.golden.get(GoldenAttribute::Name).map(|s| &s.value) {
        Some(GoldenValue::Name { given, .. }) => given.clone(),
        _ => None,
    };
    assert_eq!(
        given_of(&as_of(p0, AsOf::Position(name_at)).await).as_deref(),
        Some("Bobby")
    );
    assert_eq!(
        given_of(&as_of(p0, AsOf::Time(set_time)).await).as_deref(),
        Some("Bobby")
    );
    assert_eq!(
        given_of(&as_of(p0, AsOf::Time(expires)).await),
        given_before,
        "expired at the cut's time, before the decision expiring it"
    );

    // At the head, the as-of view and the projection agree.
    let head = wait_for_last_decision(&s.store).await;
    for token in [p0, p2] {
        assert_eq!(
            golden_rows(&as_of(token, AsOf::Position(head)).await.golden),
            lineage_rows(&db, token).await,
            "{token} as of the head"
        );
    }
    change_log_folds_to_the_golden_records(&db).await;

    // Replays give the same rows: a rebuild beside the live tables, and a
    // fresh build in batches of 7 (cut through every override decision).
    let before_rebuild = dump(&db, &ps).await;
    let overrides = &before_rebuild
        .iter()
        .find(|(t, _)| t == "customer_override")
        .expect("the table is dumped")
        .1;
    assert_eq!(overrides.len(), 3, "every override has its row");
    runner::rebuild(s.store.as_ref(), &db, ps[0].as_ref(), &opener(&s), &mut |_, _| {})
        .await
        .expect("rebuild");
    assert_same(&before_rebuild, &dump(&db, &ps).await, "rebuilt against live");
    catch_up(&s, &fresh, &ps, 7).await;
    assert_same(&before_rebuild, &dump(&fresh, &ps).await, "batches of 7 against live");

    // An override whose key is destroyed: after a rebuild, as if it never was.
    let dob = GoldenValue::DateOfBirth {
        date: chrono::NaiveDate::from_ymd_opt(1999, 12, 31).expect("a date"),
    };
    let record_dob = golden_row(&db, p2).await.date_of_birth;
    let (dob_id, dob_at) = set_override(&s, &mut r, p2, &dob, None).await;
    catch_up(&s, &db, &ps, 5_000).await;
    assert_eq!(
        golden_row(&db, p2).await.date_of_birth,
        Some(chrono::NaiveDate::from_ymd_opt(1999, 12, 31).expect("a date"))
    );
    assert_eq!(override_ids(&db, p2).await, [phone_id, dob_id]);
    let found = s.keys.find(&[SealedValue::subject(dob_id)]).await.expect("find");
    let key_id = found[0].as_ref().expect("the override has a key").key_id();
    s.keys.destroy(&[key_id]).await.expect("destroy");
    runner::rebuild(s.store.as_ref(), &db, ps[0].as_ref(), &opener(&s), &mut |_, _| {})
        .await
        .expect("rebuild");
    assert_eq!(golden_row(&db, p2).await.date_of_birth, record_dob);
    let l = lineage_of(&db, p2, "date_of_birth").await.expect("a date of birth");
    assert_ne!(l.rule, "steward_override");
    assert_eq!(
        override_ids(&db, p2).await,
        [phone_id],
        "the erased override is not listed"
    );
    let row: (Option<String>, String, i64) =
        sqlx::query_as("SELECT value, attribute, position FROM customer_override WHERE override_id = $1")
            .bind(dob_id.to_string())
            .fetch_one(db.pool())
            .await
            .expect("row");
    assert_eq!(
        row,
        (None, "date_of_birth".to_owned(), dob_at.0 as i64),
        "its row, without the value"
    );
    assert!(
        changes_at(&db, dob_at)
            .await
            .iter()
            .all(|c| c.change_type != ChangeType::Updated),
        "the change log never showed it"
    );
    let (mentions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM customer_change WHERE attributes LIKE '%1999-12-31%'")
            .fetch_one(db.pool())
            .await
            .expect("count");
    assert_eq!(mentions, 0, "nothing of the erased override is in the change log");
    let p2_now = as_of(p2, AsOf::Position(dob_at)).await;
    assert_eq!(
        p2_now.golden.get(GoldenAttribute::DateOfBirth).map(|s| s.chosen),
        lineage_of(&db, p2, "date_of_birth")
            .await
            .and_then(|l| Chosen::parse(&l.rule))
    );
    assert_ne!(
        p2_now.golden.get(GoldenAttribute::DateOfBirth).map(|s| s.value.clone()),
        Some(dob)
    );
    change_log_folds_to_the_golden_records(&db).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_overrides_win_follow_their_token_and_vanish_with_their_key() {
    let b = SqliteBackend::new().await.expect("sqlite");
    let (x, y) = (sqlite_read(&b, "a").await, sqlite_read(&b, "b").await);
    overrides_win_follow_their_token_and_vanish_with_their_key(sqlite_stores(&b).await, x, y).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_overrides_win_follow_their_token_and_vanish_with_their_key() {
    let b = PostgresBackend::new().await.expect("postgres");
    let (x, y) = (pg_read(&b, "read_a").await, pg_read(&b, "read_b").await);
    overrides_win_follow_their_token_and_vanish_with_their_key(postgres_stores(&b).await, x, y).await;
}
