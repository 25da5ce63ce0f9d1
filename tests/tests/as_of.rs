//! "As of" through the real stores and read-model databases (SQLite files
//! and PostgreSQL): a customer folded from the log at a position or a time
//! equals the customers projection at the head, shows a record's old value
//! before it changed and the new one after, follows a steward's split and
//! merge back, is unknown before the log began, and answers the same by time
//! as by the position of the last event at that time.

use chrono::{DateTime, Utc};
use mdm_commands::ingest::Ingestor;
use mdm_commands::resolver::Resolver;
use mdm_domain::resolution::events::{Decided, Decision, RESOLUTION_STREAM};
use mdm_domain::resolution::membership::TokenStatus;
use mdm_domain::survivorship::{GoldenAttribute, GoldenValue, Lineage, RuleSet};
use mdm_projections::as_of::{customer_as_of, AsOf, CustomerAsOf};
use mdm_projections::db::time_text;
use mdm_projections::{CustomerSettings, ReadDb};
use mdm_store::{Direction, Position, RecordedEvent, StreamStart};
use mdm_tests::backends::{PostgresBackend, SqliteBackend};
use mdm_tests::fixtures::{
    catch_up, definitions, opener, postgres_stores, projections, scenario, settings, sqlite_stores,
    wait_for_last_decision, Stores,
};
use uuid::Uuid;

/// The scenario, projected, with what the checks need.
struct World {
    s: Stores,
    db: ReadDb,
    settings: CustomerSettings,
    r: Resolver,
    head: Position,
}

async fn world(s: Stores, db: ReadDb) -> World {
    let r = scenario(&s).await;
    let head = wait_for_last_decision(&s.store).await;
    catch_up(&s, &db, &projections(RuleSet::default()), 5_000).await;
    World {
        settings: settings(RuleSet::default()),
        s,
        db,
        r,
        head,
    }
}

impl World {
    async fn as_of(&self, token: Uuid, at: AsOf) -> Option<CustomerAsOf> {
        customer_as_of(
            self.s.store.as_ref(),
            &self.db,
            &opener(&self.s),
            &self.settings,
            token,
            at,
        )
        .await
        .expect("as of")
    }

    fn stream_of(&self, system: &str, source_id: &str) -> String {
        Ingestor::new(self.s.store.clone(), self.s.keys.clone(), definitions()).stream_of(system, source_id)
    }

    fn token_of(&self, record: &str) -> Uuid {
        self.r.engine().token_of(record).expect("decided")
    }

    /// Every event of the log, in log order.
    async fn log(&self) -> Vec<RecordedEvent> {
        let mut out: Vec<RecordedEvent> = Vec::new();
        loop {
            let after = out.last().map(|e| e.position).unwrap_or(Position::START);
            let page = self.s.store.read_all(after, 1_000).await.expect("read");
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// The decisions of the `resolution` stream with their events.
    async fn decisions(&self) -> Vec<(RecordedEvent, Decided)> {
        self.s
            .store
            .read_stream(RESOLUTION_STREAM, StreamStart::Edge, Direction::Forwards, 100_000)
            .await
            .expect("read")
            .into_iter()
            .map(|e| {
                let d = e.data.decode::<Decided>().expect("decision decodes");
                (e, d)
            })
            .collect()
    }
}

fn email(c: &CustomerAsOf) -> Option<String> {
    match c.golden.get(GoldenAttribute::Email).map(|s| &s.value) {
        Some(GoldenValue::Email { email }) => Some(email.clone()),
        _ => None,
    }
}

/// The golden columns of the customer row a golden record gives:
/// (given, family, email, phone, postcode, date of birth).
type Columns = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn columns(c: &CustomerAsOf) -> Columns {
    let mut out: Columns = (None, None, None, None, None, None);
    for s in &c.golden.values {
        match &s.value {
            GoldenValue::Name { given, family, .. } => {
                out.0 = given.clone();
                out.1 = family.clone();
            }
            GoldenValue::Email { email } => out.2 = Some(email.clone()),
            GoldenValue::Phone { number } => out.3 = Some(number.clone()),
            GoldenValue::Address { address } => out.4 = address.postcode.clone(),
            GoldenValue::DateOfBirth { date } => out.5 = Some(date.to_string()),
        }
    }
    out
}

/// (attribute, value JSON, record, system, source position, rule, rule set)
type AttributeRow = (String, String, Option<String>, Option<String>, i64, String, String);

fn lineage(c: &CustomerAsOf) -> Vec<AttributeRow> {
    let mut rows: Vec<AttributeRow> = c
        .golden
        .values
        .iter()
        .map(|s| {
            let (record, system, position) = match &s.lineage {
                Lineage::Record {
                    record,
                    system,
                    position,
                } => (Some(record.clone()), Some(system.clone()), *position),
                Lineage::Override { position, .. } => (None, None, *position),
            };
            (
                s.value.attribute().as_str().to_owned(),
                serde_json::to_string(&s.value).expect("value"),
                record,
                system,
                position as i64,
                s.chosen.as_str().to_owned(),
                c.golden.rule_set.clone(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// (record, system, source id, state, position, recorded at)
type MemberRow = (String, String, Option<String>, String, i64, String);

fn member_rows(c: &CustomerAsOf) -> Vec<MemberRow> {
    c.members
        .iter()
        .map(|m| {
            (
                m.record.clone(),
                m.system.clone(),
                m.source_id.clone(),
                m.state.clone(),
                m.position as i64,
                time_text(m.recorded_at),
            )
        })
        .collect()
}

// ---- (a) at the head, as of equals the customers projection ----

async fn as_of_the_head_equals_the_customers_projection(w: World) {
    let customers: Vec<(String, String, Option<String>, i64)> =
        sqlx::query_as("SELECT token, status, merged_into, record_count FROM customer ORDER BY token")
            .fetch_all(w.db.pool())
            .await
            .expect("customers");
    assert!(customers.len() > 10, "the scenario makes customers");
    let mut active = 0;
    for (token, status, merged_into, record_count) in customers {
        let token = Uuid::parse_str(&token).expect("token");
        let c = w.as_of(token, AsOf::Position(w.head)).await.expect("known at the head");
        if status == "merged" {
            let survivor = Uuid::parse_str(&merged_into.expect("a survivor")).expect("token");
            assert_eq!(c.status, TokenStatus::MergedInto(survivor), "{token} redirects");
            assert!(c.members.is_empty() && c.golden.values.is_empty());
            continue;
        }
        active += 1;
        assert_eq!(c.status, TokenStatus::Active, "{token} is active");
        let row: Columns = sqlx::query_as(
            "SELECT given_name, family_name, email, phone, postcode, date_of_birth FROM customer WHERE token = $1",
        )
        .bind(token.to_string())
        .fetch_one(w.db.pool())
        .await
        .expect("row");
        assert_eq!(columns(&c), row, "{token}: golden columns");
        assert_eq!(c.members.len() as i64, record_count, "{token}: record count");
        let attributes: Vec<AttributeRow> = sqlx::query_as(
            "SELECT attribute, value, record, system, source_position, rule, rule_set FROM customer_attribute \
             WHERE token = $1 ORDER BY attribute",
        )
        .bind(token.to_string())
        .fetch_all(w.db.pool())
        .await
        .expect("lineage");
        let mut attributes = attributes;
        attributes.sort();
        assert_eq!(lineage(&c), attributes, "{token}: lineage");
        let members: Vec<MemberRow> = sqlx::query_as(
            "SELECT record, system, source_id, state, position, recorded_at FROM customer_member \
             WHERE token = $1 ORDER BY record",
        )
        .bind(token.to_string())
        .fetch_all(w.db.pool())
        .await
        .expect("members");
        assert_eq!(member_rows(&c), members, "{token}: members");
    }
    assert!(active > 10, "active customers were compared");
    // A token no decision named is unknown.
    assert_eq!(w.as_of(Uuid::from_u128(7), AsOf::Position(w.head)).await, None);
}

// ---- (b) a changed record: its old value before, its new one after ----

async fn a_changed_record_shows_its_old_value_before_and_its_new_one_after(w: World) {
    let record = w.stream_of("crm", "p4-0");
    let token = w.token_of(&record);
    let versions =
        w.s.store
            .read_stream(&record, StreamStart::Edge, Direction::Forwards, 10)
            .await
            .expect("read");
    assert_eq!(versions.len(), 2, "captured, then changed");
    let changed = versions[1].position;

    let before = w
        .as_of(token, AsOf::Position(Position(changed.0 - 1)))
        .await
        .expect("known before the change");
    let e = email(&before).expect("an e-mail");
    assert!(e.ends_with("@example.test"), "the old e-mail before the change");
    let member = before.members.iter().find(|m| m.record == record).expect("a member");
    assert_eq!(
        member.position, versions[0].position.0,
        "the first version before the change"
    );

    for at in [changed, w.head] {
        let after = w
            .as_of(token, AsOf::Position(at))
            .await
            .expect("known after the change");
        let e = email(&after).expect("an e-mail");
        assert!(e.ends_with("@changed.test"), "the new e-mail after the change");
        let member = after.members.iter().find(|m| m.record == record).expect("a member");
        assert_eq!(member.position, changed.0, "the changed version after the change");
        assert_eq!(after.members.len(), before.members.len(), "the same records");
    }
}

// ---- (c) a steward's split, then the merge back ----

async fn a_split_token_is_active_until_the_merge_back(w: World) {
    let decisions = w.decisions().await;
    let (split_at, record, from, to) = decisions
        .iter()
        .rev()
        .find_map(|(e, d)| match &d.decision {
            Decision::RecordSplit { record, from, to, .. } => Some((e.position, record.clone(), *from, *to)),
            _ => None,
        })
        .expect("a split");
    let merged_at = decisions
        .iter()
        .find_map(|(e, d)| match &d.decision {
            Decision::CustomersMerged { survivor, absorbed, .. }
                if e.position > split_at && *survivor == from && absorbed.contains(&to) =>
            {
                Some(e.position)
            }
            _ => None,
        })
        .expect("a merge back");
    assert_eq!(record, w.stream_of("crm", "p1-1"));

    // Before the split the new token did not exist and the record was in
    // the customer it was split from.
    let before = Position(split_at.0 - 1);
    assert_eq!(w.as_of(to, AsOf::Position(before)).await, None);
    let original = w.as_of(from, AsOf::Position(before)).await.expect("known");
    assert!(original.members.iter().any(|m| m.record == record));

    // Between the split and the merge: its own active customer.
    for at in [split_at, Position(merged_at.0 - 1)] {
        let split = w.as_of(to, AsOf::Position(at)).await.expect("known after the split");
        assert_eq!(split.status, TokenStatus::Active);
        assert_eq!(
            split.members.iter().map(|m| m.record.clone()).collect::<Vec<_>>(),
            vec![record.clone()],
            "one member: the split record"
        );
        assert!(!split.golden.values.is_empty(), "a golden record from that one record");
        assert!(split
            .golden
            .values
            .iter()
            .all(|s| matches!(&s.lineage, Lineage::Record { record: r, .. } if *r == record)));
        let rest = w.as_of(from, AsOf::Position(at)).await.expect("known");
        assert_eq!(rest.status, TokenStatus::Active);
        assert_eq!(rest.members.len(), original.members.len() - 1, "one record fewer");
        assert!(rest.members.iter().all(|m| m.record != record));
    }

    // After the merge back: redirected to the survivor, which holds it again.
    for at in [merged_at, w.head] {
        let split = w.as_of(to, AsOf::Position(at)).await.expect("known after the merge");
        assert_eq!(split.status, TokenStatus::MergedInto(from));
        assert!(split.members.is_empty() && split.golden.values.is_empty());
        let survivor = w.as_of(from, AsOf::Position(at)).await.expect("known");
        assert_eq!(survivor.status, TokenStatus::Active);
        assert_eq!(survivor.members.len(), original.members.len());
        assert!(survivor.members.iter().any(|m| m.record == record));
    }
}

// ---- (d) before the first event nothing is known ----

async fn before_the_first_event_no_customer_is_known(w: World) {
    let first = w.s.store.read_all(Position::START, 1).await.expect("read")[0].clone();
    let before = first.recorded_at - chrono::Duration::seconds(1);
    let tokens: std::collections::BTreeSet<Uuid> = w.r.engine().assignments().map(|(_, t)| t).collect();
    assert!(!tokens.is_empty());
    for token in tokens {
        assert_eq!(w.as_of(token, AsOf::Time(before)).await, None, "{token} unknown");
        assert_eq!(w.as_of(token, AsOf::Position(Position::START)).await, None);
    }
}

// ---- (e) by time equals by the position of the last event at that time ----

async fn as_of_a_time_equals_as_of_the_last_position_at_that_time(w: World) {
    let log = w.log().await;
    let decisions = w.decisions().await;
    let split = decisions
        .iter()
        .rev()
        .find_map(|(_, d)| match &d.decision {
            Decision::RecordSplit { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .expect("a split");
    let p4 = w.stream_of("crm", "p4-0");
    let tokens = [
        w.token_of(&w.stream_of("crm", "p0-0")),
        w.token_of(&p4),
        split.0,
        split.1,
    ];
    // Times: a spread of events through the log, the events of the change,
    // the split and the merge, and a moment just after each of them.
    let mut times: Vec<DateTime<Utc>> = log
        .iter()
        .step_by((log.len() / 8).max(1))
        .map(|e| e.recorded_at)
        .collect();
    times.extend(
        log.iter()
            .filter(|e| e.stream == p4 || e.stream == RESOLUTION_STREAM)
            .rev()
            .take(4)
            .map(|e| e.recorded_at),
    );
    let with_later: Vec<DateTime<Utc>> = times
        .iter()
        .flat_map(|t| [*t, *t + chrono::Duration::microseconds(1)])
        .collect();
    for t in with_later {
        let last = log
            .iter()
            .filter(|e| e.recorded_at <= t)
            .map(|e| e.position)
            .max()
            .expect("an event at or before");
        for token in tokens {
            let by_time = w.as_of(token, AsOf::Time(t)).await;
            let by_position = w.as_of(token, AsOf::Position(last)).await;
            assert_eq!(by_time, by_position, "{token} at {t} and at position {last}");
        }
    }
}

// ---- a forced link takes a record out of a customer it does not name ----

async fn a_forced_link_takes_the_record_out_of_its_old_customer(mut w: World) {
    // p2 has three CRM records: one of them forced into p0's customer.
    let record = w.stream_of("crm", "p2-1");
    let from = w.token_of(&record);
    let to = w.token_of(&w.stream_of("crm", "p0-0"));
    assert_ne!(from, to);
    let before_link = w.head;
    let version = |w: &World, t: Uuid| w.r.engine().customer(t).expect("customer").version;
    let expected = vec![(from, version(&w, from)), (to, version(&w, to))];
    let decided =
        w.r.command(&mdm_domain::resolution::engine::CommandRequest {
            command_id: Uuid::now_v7(),
            steward: "steward-1".into(),
            reason: "same person as p0".into(),
            expected,
            command: mdm_domain::resolution::engine::StewardCommand::ForceLink {
                record: record.clone(),
                token: to,
            },
        })
        .await
        .expect("store")
        .expect("force link");
    assert!(
        decided
            .iter()
            .any(|d| matches!(&d.decision, Decision::RecordLinked { forced: true, token, .. } if *token == to)),
        "a forced link, naming only the customer it joins"
    );
    w.head = wait_for_last_decision(&w.s.store).await;
    catch_up(&w.s, &w.db, &projections(RuleSet::default()), 5_000).await;

    let old_before = w.as_of(from, AsOf::Position(before_link)).await.expect("known");
    assert!(old_before.members.iter().any(|m| m.record == record));
    let old_after = w.as_of(from, AsOf::Position(w.head)).await.expect("known");
    assert!(old_after.members.iter().all(|m| m.record != record), "the record left");
    assert_eq!(old_after.members.len(), old_before.members.len() - 1);
    let new_after = w.as_of(to, AsOf::Position(w.head)).await.expect("known");
    assert!(
        new_after.members.iter().any(|m| m.record == record),
        "the record joined"
    );
    // And both still equal the projection.
    as_of_the_head_equals_the_customers_projection(w).await;
}

// ---- an index behind the log gives the same answers ----

async fn an_index_behind_the_log_gives_the_same_answers(w: World, lagging: ReadDb) {
    // A second read model whose decision index stops before the split (as
    // if its projection had not got further), and a third with none.
    let decisions = w.decisions().await;
    let split_at = decisions
        .iter()
        .rev()
        .find_map(|(e, d)| matches!(d.decision, Decision::RecordSplit { .. }).then_some(e.position))
        .expect("a split");
    catch_up(&w.s, &lagging, &projections(RuleSet::default()), 5_000).await;
    let cut = (split_at.0 - 1) as i64;
    sqlx::query("DELETE FROM decision_history WHERE position > $1")
        .bind(cut)
        .execute(lagging.pool())
        .await
        .expect("trim the index");
    sqlx::query("UPDATE projection_checkpoint SET position = $1 WHERE name = 'decisions'")
        .bind(cut)
        .execute(lagging.pool())
        .await
        .expect("move the checkpoint back");
    let mut tokens: Vec<Uuid> = w.r.engine().assignments().map(|(_, t)| t).collect();
    tokens.extend(decisions.iter().flat_map(|(_, d)| d.decision.tokens()));
    tokens.sort();
    tokens.dedup();
    let cuts = [
        AsOf::Position(w.head),
        AsOf::Position(Position(split_at.0 - 1)),
        AsOf::Position(split_at),
        AsOf::Time(decisions.last().expect("decisions").0.recorded_at),
    ];
    let open = opener(&w.s);
    for token in tokens {
        for at in cuts {
            let indexed = w.as_of(token, at).await;
            let behind = customer_as_of(w.s.store.as_ref(), &lagging, &open, &w.settings, token, at)
                .await
                .expect("as of");
            assert_eq!(indexed, behind, "{token} at {at:?}: the same behind the log");
        }
    }
    for table in ["decision_history", "review_item"] {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(lagging.pool())
            .await
            .expect("drop");
    }
    sqlx::query("DELETE FROM projection_checkpoint WHERE name = 'decisions'")
        .execute(lagging.pool())
        .await
        .expect("no checkpoint");
    let token = w.token_of(&w.stream_of("crm", "p4-0"));
    for at in cuts {
        let none = customer_as_of(w.s.store.as_ref(), &lagging, &open, &w.settings, token, at)
            .await
            .expect("as of");
        assert_eq!(w.as_of(token, at).await, none, "without an index the log alone answers");
    }
}

// ---- SQLite ----

async fn sqlite_world() -> (SqliteBackend, World) {
    let b = SqliteBackend::new().await.expect("sqlite");
    let db = ReadDb::open_sqlite(&b.dir.path().join("read.db"))
        .await
        .expect("read db");
    let s = sqlite_stores(&b).await;
    let w = world(s, db).await;
    (b, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_as_of_the_head_equals_the_customers_projection() {
    let (_b, w) = sqlite_world().await;
    as_of_the_head_equals_the_customers_projection(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_changed_record_shows_its_old_value_before_and_its_new_one_after() {
    let (_b, w) = sqlite_world().await;
    a_changed_record_shows_its_old_value_before_and_its_new_one_after(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_split_token_is_active_until_the_merge_back() {
    let (_b, w) = sqlite_world().await;
    a_split_token_is_active_until_the_merge_back(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_before_the_first_event_no_customer_is_known() {
    let (_b, w) = sqlite_world().await;
    before_the_first_event_no_customer_is_known(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_as_of_a_time_equals_as_of_the_last_position_at_that_time() {
    let (_b, w) = sqlite_world().await;
    as_of_a_time_equals_as_of_the_last_position_at_that_time(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_forced_link_takes_the_record_out_of_its_old_customer() {
    let (_b, w) = sqlite_world().await;
    a_forced_link_takes_the_record_out_of_its_old_customer(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_index_behind_the_log_gives_the_same_answers() {
    let (b, w) = sqlite_world().await;
    let lagging = ReadDb::open_sqlite(&b.dir.path().join("lagging.db"))
        .await
        .expect("read db");
    an_index_behind_the_log_gives_the_same_answers(w, lagging).await;
}

// ---- PostgreSQL ----

async fn postgres_world() -> (PostgresBackend, World) {
    let b = PostgresBackend::new().await.expect("postgres");
    let db = ReadDb::open_postgres(&b.url, "read_a").await.expect("read db");
    let s = postgres_stores(&b).await;
    let w = world(s, db).await;
    (b, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_as_of_the_head_equals_the_customers_projection() {
    let (_b, w) = postgres_world().await;
    as_of_the_head_equals_the_customers_projection(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_changed_record_shows_its_old_value_before_and_its_new_one_after() {
    let (_b, w) = postgres_world().await;
    a_changed_record_shows_its_old_value_before_and_its_new_one_after(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_split_token_is_active_until_the_merge_back() {
    let (_b, w) = postgres_world().await;
    a_split_token_is_active_until_the_merge_back(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_before_the_first_event_no_customer_is_known() {
    let (_b, w) = postgres_world().await;
    before_the_first_event_no_customer_is_known(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_as_of_a_time_equals_as_of_the_last_position_at_that_time() {
    let (_b, w) = postgres_world().await;
    as_of_a_time_equals_as_of_the_last_position_at_that_time(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_forced_link_takes_the_record_out_of_its_old_customer() {
    let (_b, w) = postgres_world().await;
    a_forced_link_takes_the_record_out_of_its_old_customer(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_index_behind_the_log_gives_the_same_answers() {
    let (b, w) = postgres_world().await;
    let lagging = ReadDb::open_postgres(&b.url, "read_b").await.expect("read db");
    an_index_behind_the_log_gives_the_same_answers(w, lagging).await;
}
