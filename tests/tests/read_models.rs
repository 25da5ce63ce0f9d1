//! The read functions of the read models (`mdm_projections::query`) against
//! the resolver's own state, on SQLite and PostgreSQL: customers and their
//! lineage, cross-references, source records and their versions and
//! customers, decision history, households, search with keyset pages, the
//! cross-reference export and the review queue.

use std::collections::BTreeSet;

use mdm_commands::ingest::Ingestor;
use mdm_commands::resolver::Resolver;
use mdm_domain::matching::features::FeatureSettings;
use mdm_domain::matching::normalize;
use mdm_domain::resolution::engine::{CommandRequest, StewardCommand};
use mdm_domain::resolution::events::ReviewOutcome;
use mdm_domain::survivorship::Rule;
use mdm_projections::query::{self, CustomerStatus, SearchError, SearchQuery, XrefRow};
use mdm_projections::ReadDb;
use mdm_tests::backends::{PostgresBackend, SqliteBackend};
use mdm_tests::fixtures::{
    catch_up, definitions, ingest_into, postgres_stores, projections, rows, rules, scenario, sqlite_stores,
    wait_for_last_decision, web_rows, Stores,
};
use uuid::Uuid;

/// One CSV row of the scenario as it stands after the scenario's change.
#[derive(Clone)]
struct Source {
    system: &'static str,
    id: String,
    given: String,
    family: String,
    email: String,
    phone: String,
    zip: String,
}

fn parse(system: &'static str, row: &str) -> Source {
    let f: Vec<&str> = row.split(',').collect();
    Source {
        system,
        id: f[0].to_owned(),
        given: f[1].to_owned(),
        family: f[2].to_owned(),
        email: f[4].to_owned(),
        phone: f[5].to_owned(),
        zip: f[8].to_owned(),
    }
}

/// Every record the scenario ingested, with its latest content.
fn sources() -> Vec<Source> {
    let mut out: Vec<Source> = rows(30).iter().map(|r| parse("crm", r)).collect();
    for s in &mut out {
        if s.id == "p4-0" {
            s.email = s.email.replace("@example.test", "@changed.test");
        }
    }
    out.extend(web_rows().iter().map(|r| parse("web", r)));
    out
}

struct World {
    s: Stores,
    db: ReadDb,
    r: Resolver,
    ingestor: Ingestor,
}

impl World {
    fn stream(&self, system: &str, id: &str) -> String {
        self.ingestor.stream_of(system, id)
    }

    fn token(&self, system: &str, id: &str) -> Uuid {
        self.r.engine().token_of(&self.stream(system, id)).expect("decided")
    }

    /// The customers of the records `keep` selects, from the resolver.
    fn tokens_where(&self, keep: impl Fn(&Source) -> bool) -> BTreeSet<Uuid> {
        sources()
            .iter()
            .filter(|s| keep(s))
            .map(|s| self.token(s.system, &s.id))
            .collect()
    }
}

fn name(s: &str) -> Option<String> {
    normalize::name_part(s)
}

/// Every page of a search, checking that pages neither repeat nor skip.
async fn all_pages(w: &World, q: &SearchQuery, limit: usize) -> Vec<Uuid> {
    let settings = FeatureSettings::default();
    let mut out: Vec<Uuid> = Vec::new();
    let mut after = None;
    loop {
        let page = query::search(&w.db, q, &settings, after, limit).await.expect("search");
        assert!(page.customers.len() <= limit.max(1));
        for c in &page.customers {
            assert_eq!(c.status, CustomerStatus::Active, "search finds active customers only");
            assert!(after.is_none_or(|a| c.token > a), "pages follow the token order");
            out.push(c.token);
        }
        match page.next {
            Some(next) => {
                assert_eq!(Some(next), page.customers.last().map(|c| c.token));
                after = Some(next);
            }
            None => break,
        }
    }
    out
}

async fn search_tokens(w: &World, q: SearchQuery) -> BTreeSet<Uuid> {
    let found = all_pages(w, &q, 100).await;
    let set: BTreeSet<Uuid> = found.iter().copied().collect();
    assert_eq!(set.len(), found.len(), "no customer twice");
    set
}

fn by_name(text: &str) -> SearchQuery {
    SearchQuery {
        name: Some(text.into()),
        ..SearchQuery::default()
    }
}

async fn customers_and_lineage(w: &World) {
    let engine = w.r.engine();
    let active: BTreeSet<Uuid> = engine.assignments().map(|(_, t)| t).collect();
    for token in &active {
        let view = engine.customer(*token).expect("customer");
        let row = query::customer(&w.db, *token).await.expect("read").expect("exists");
        assert_eq!(row.token, *token);
        assert_eq!(row.status, CustomerStatus::Active);
        assert_eq!(row.merged_into, None);
        assert_eq!(row.version as u64, view.version, "the version steward commands name");
        assert_eq!(row.household, view.household);
        assert_eq!(row.record_count as usize, view.records.len());
        assert!(row.created_position <= row.updated_position && row.created_at <= row.updated_at);
        assert_eq!(row.rule_set, "trust-1");
    }
    assert_eq!(query::customer(&w.db, Uuid::now_v7()).await.expect("read"), None);

    let p0 = w.token("crm", "p0-0");
    let row = query::customer(&w.db, p0).await.expect("read").expect("exists");
    assert_eq!(row.given_name.as_deref(), Some("robert"));
    assert_eq!(row.family_name.as_deref(), Some("okafor"));
    assert_eq!(row.postcode.as_deref(), Some("60000"));
    assert_eq!(row.date_of_birth.map(|d| d.to_string()).as_deref(), Some("1940-01-01"));
    let shown = format!("{row:?}");
    assert!(
        !shown.contains("okafor") && !shown.contains("robert"),
        "Debug hides golden values"
    );

    let lineage = query::lineage(&w.db, p0).await.expect("lineage");
    let attributes: Vec<&str> = lineage.iter().map(|l| l.attribute.as_str()).collect();
    assert_eq!(attributes, ["address", "date_of_birth", "email", "name", "phone"]);
    let records = engine.customer(p0).expect("customer").records;
    for l in &lineage {
        assert!(records.contains(l.record.as_ref().expect("from a record")));
        assert_eq!(l.rule_set, "trust-1");
        assert_eq!(l.overridden_by, None);
    }
    let name = &lineage[3];
    assert_eq!(name.value["kind"], "name");
    assert_eq!(name.value["given"], "robert");
    assert_eq!(name.system.as_deref(), Some("crm"));
    assert_eq!(name.rule, "trust_rank");
    assert_eq!(name.record.as_deref(), Some(w.stream("crm", "p0-0").as_str()));
    assert!(!format!("{name:?}").contains("robert"));
}

async fn cross_references(w: &World) {
    for s in sources() {
        assert_eq!(
            query::token_by_source(&w.db, s.system, &s.id).await.expect("read"),
            Some(w.token(s.system, &s.id)),
            "{} {} names the resolver's customer",
            s.system,
            s.id
        );
    }
    assert_eq!(
        query::token_by_source(&w.db, "crm", "nobody").await.expect("read"),
        None
    );
    assert_eq!(query::token_by_source(&w.db, "erp", "p0-0").await.expect("read"), None);

    // The export, page by page: every (system, source id) once, with its
    // customer, which is always active.
    let mut exported: Vec<XrefRow> = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = query::xref_page(&w.db, None, after.clone(), 7).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        pages += 1;
        after = page.last().map(|x| (x.system.clone(), x.source_id.clone()));
        exported.extend(page);
    }
    let all = sources();
    assert_eq!(exported.len(), all.len(), "every record once");
    assert!(pages >= all.len() / 7);
    let keys: BTreeSet<(String, String)> = exported
        .iter()
        .map(|x| (x.system.clone(), x.source_id.clone()))
        .collect();
    assert_eq!(keys.len(), exported.len(), "no (system, source id) twice");
    let expected: BTreeSet<(String, String)> = all.iter().map(|s| (s.system.to_owned(), s.id.clone())).collect();
    assert_eq!(keys, expected);
    let mut tokens: BTreeSet<Uuid> = BTreeSet::new();
    for x in &exported {
        assert_eq!(x.token, w.token(&x.system, &x.source_id));
        tokens.insert(x.token);
    }
    for token in tokens {
        let c = query::customer(&w.db, token).await.expect("read").expect("exists");
        assert_eq!(
            c.status,
            CustomerStatus::Active,
            "no cross-reference names a merged token"
        );
    }
    assert!(!format!("{:?}", exported[0]).contains(&exported[0].source_id));

    // One system only.
    let web = query::xref_page(&w.db, Some("web"), None, 1000).await.expect("page");
    assert_eq!(web.len(), web_rows().len());
    assert!(web.iter().all(|x| x.system == "web"));
    let rest = query::xref_page(&w.db, Some("web"), Some(("web".into(), web[3].source_id.clone())), 1000)
        .await
        .expect("page");
    assert_eq!(rest, web[4..]);
}

async fn source_records(w: &World) {
    let p0 = w.token("crm", "p0-0");
    let mut expected = w.r.engine().customer(p0).expect("customer").records;
    expected.sort();
    let rows = query::source_records_of(&w.db, p0).await.expect("records");
    assert_eq!(rows.iter().map(|r| r.record.clone()).collect::<Vec<_>>(), expected);
    let crm = w.stream("crm", "p0-0");
    assert!(expected.contains(&w.stream("web", "w0-0")) && expected.contains(&crm));
    for row in &rows {
        assert_eq!(row.token, Some(p0));
        assert_eq!(row.state, "current");
        assert!(row.attributes.is_some());
        let id = row.source_id.as_deref().expect("source id");
        assert!(row.raw.as_deref().expect("raw").starts_with(id));
        assert!(row.raw_header.as_deref().expect("CSV header").starts_with("id,given"));
        let shown = format!("{row:?}");
        assert!(
            !shown.contains(id) && !shown.contains("okafor"),
            "Debug hides personal data"
        );
    }
    let one = query::source_record(&w.db, &crm).await.expect("read").expect("exists");
    assert_eq!(Some(&one), rows.iter().find(|r| r.record == crm));
    assert_eq!((one.system.as_str(), one.source_id.as_deref()), ("crm", Some("p0-0")));
    assert_eq!(one.attributes.as_ref().expect("attributes")["given_name"], "robert");
    assert_eq!(query::source_record(&w.db, "nope").await.expect("read"), None);

    // The changed record: two versions, the second with the new e-mail.
    let changed = w.stream("crm", "p4-0");
    let versions = query::source_record_versions(&w.db, &changed).await.expect("versions");
    assert_eq!(versions.len(), 2);
    assert!(versions[0].version < versions[1].version && versions[0].position < versions[1].position);
    assert_eq!(versions[0].event_type, "SourceRecordCaptured");
    assert_eq!(versions[1].event_type, "SourceRecordChanged");
    assert!(!versions[0].raw.as_deref().expect("raw").contains("@changed.test"));
    assert!(versions[1].raw.as_deref().expect("raw").contains("@changed.test"));
    assert!(!format!("{:?}", versions[1]).contains("@changed.test"));
    let latest = query::source_record(&w.db, &changed)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(latest.version, versions[1].version);
    assert_eq!(latest.position, versions[1].position);
    assert_eq!(latest.first_position, versions[0].position);
    assert_eq!(latest.first_seen_at, versions[0].recorded_at);
    assert_eq!(latest.updated_at, versions[1].recorded_at);
    assert!(query::source_record_versions(&w.db, "nope")
        .await
        .expect("read")
        .is_empty());
}

/// The split and merge back of `p1-1`; returns the split's temporary token.
async fn split_and_merge(w: &World) -> Uuid {
    let record = w.stream("crm", "p1-1");
    let survivor = w.token("crm", "p1-1");
    let customers = query::source_record_customers(&w.db, &record).await.expect("customers");
    let kinds: Vec<&str> = customers.iter().map(|c| c.decision_type.as_str()).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(["CustomerCreated", "RecordLinked"].contains(&kinds[0]));
    assert_eq!(kinds[1..], ["RecordSplit", "CustomersMerged"]);
    assert!(customers.windows(2).all(|p| p[0].position < p[1].position));
    let split = customers[1].token;
    assert_ne!(split, survivor);
    assert_eq!(customers[0].token, survivor);
    assert_eq!(customers[2].token, survivor);
    let row = query::source_record(&w.db, &record)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((row.token, row.previous_token), (Some(survivor), Some(split)));
    assert_eq!(row.token_position, Some(customers[2].position));

    // The split's token reads merged into the survivor, as the resolver says.
    let merged = query::customer(&w.db, split).await.expect("read").expect("exists");
    assert_eq!(merged.status, CustomerStatus::Merged);
    assert_eq!(merged.merged_into, Some(survivor));
    assert_eq!(w.r.engine().customer(split).expect("known").merged_into, Some(survivor));
    assert!(query::source_records_of(&w.db, split)
        .await
        .expect("records")
        .is_empty());
    assert!(query::lineage(&w.db, split).await.expect("lineage").is_empty());

    // The survivor's history lists the split and the merge, by the steward.
    let history = query::history(&w.db, survivor, None, 1000).await.expect("history");
    assert!(history
        .windows(2)
        .all(|p| p[0].position < p[1].position && p[0].seq < p[1].seq));
    let split_row = history
        .iter()
        .find(|h| h.decision_type == "RecordSplit")
        .expect("the split");
    assert_eq!(
        (split_row.actor_kind.as_str(), split_row.actor.as_deref()),
        ("steward", Some("steward-1"))
    );
    assert_eq!(split_row.reason, "checking the split");
    assert_eq!(split_row.record.as_deref(), Some(record.as_str()));
    assert_eq!(split_row.other_tokens, [split]);
    assert_eq!(split_row.position, customers[1].position);
    let merge_row = history
        .iter()
        .find(|h| h.decision_type == "CustomersMerged")
        .expect("the merge");
    assert_eq!(merge_row.reason, "same person after all");
    assert_eq!(merge_row.actor.as_deref(), Some("steward-1"));
    assert_eq!(merge_row.other_tokens, [split]);
    assert!(merge_row.position > split_row.position);
    assert!(merge_row.decision.is_object());
    assert_eq!(history[0].actor_kind, "resolver");
    assert_eq!(
        history.last(),
        Some(merge_row),
        "the merge is the survivor's last decision"
    );

    // Paged two at a time, the same list.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = query::history(&w.db, survivor, after, 2).await.expect("history");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        paged.extend(page);
    }
    assert_eq!(paged, history);
    // The absorbed token's own history ends with the merge too.
    let theirs = query::history(&w.db, split, None, 100).await.expect("history");
    let kinds: Vec<&str> = theirs.iter().map(|h| h.decision_type.as_str()).collect();
    assert_eq!(kinds, ["RecordSplit", "CustomersMerged"]);
    assert_eq!(theirs[1].other_tokens, [survivor]);
    split
}

async fn households(w: &World) {
    let (p0, p1) = (w.token("crm", "p0-0"), w.token("crm", "p1-0"));
    let household = query::customer(&w.db, p0)
        .await
        .expect("read")
        .expect("exists")
        .household
        .expect("a household");
    let members = query::household_members(&w.db, household).await.expect("members");
    let tokens: Vec<Uuid> = members.iter().map(|m| m.token).collect();
    let mut expected: Vec<Uuid> = w.r.engine().household_members(household);
    expected.sort();
    assert_eq!(tokens, expected);
    assert_eq!(
        tokens.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([p0, p1])
    );
    assert!(members.iter().all(|m| !m.reason.is_empty() && m.position > 0));
    assert!(query::household_members(&w.db, Uuid::now_v7())
        .await
        .expect("members")
        .is_empty());
}

async fn search(w: &World, split: Uuid) {
    let settings = FeatureSettings::default();
    let p0 = w.token("crm", "p0-0");
    // By e-mail, written any old way.
    let found = search_tokens(
        w,
        SearchQuery {
            email: Some("  Robert.OKAFOR0@Example.Test ".into()),
            ..SearchQuery::default()
        },
    )
    .await;
    assert_eq!(found, BTreeSet::from([p0]));
    // The changed e-mail finds its customer; the old one still does (other
    // records of the customer keep it), and an unknown one finds nobody.
    let p4 = w.token("crm", "p4-0");
    for email in ["michael.moreau4@changed.test", "michael.moreau4@example.test"] {
        let q = SearchQuery {
            email: Some(email.into()),
            ..SearchQuery::default()
        };
        assert_eq!(search_tokens(w, q).await, BTreeSet::from([p4]), "{email}");
    }
    let nobody = SearchQuery {
        email: Some("nobody@example.test".into()),
        ..SearchQuery::default()
    };
    let page = query::search(&w.db, &nobody, &settings, None, 10)
        .await
        .expect("search");
    assert!(page.customers.is_empty() && page.next.is_none());

    // Given and family must both match; one word is either; the web copy's
    // nickname is indexed for the customer too.
    assert_eq!(search_tokens(w, by_name("Robert Okafor")).await, BTreeSet::from([p0]));
    assert_eq!(search_tokens(w, by_name("Okafor, Robert")).await, BTreeSet::from([p0]));
    assert_eq!(search_tokens(w, by_name("bob")).await, BTreeSet::from([p0]));
    let robert = w.tokens_where(|s| name(&s.given).as_deref() == Some("robert"));
    assert!(robert.len() >= 3);
    assert_eq!(search_tokens(w, by_name("ROBERT")).await, robert);
    assert!(search_tokens(w, by_name("Mary Okafor")).await.len() == 1);
    assert!(search_tokens(w, by_name("Robert Lindqvist")).await.is_empty());

    // A family name: both members of the household (and of the other
    // household of that name), page by page without duplicates or gaps.
    let okafor = w.tokens_where(|s| name(&s.family).as_deref() == Some("okafor"));
    let household: BTreeSet<Uuid> = BTreeSet::from([p0, w.token("crm", "p1-0")]);
    assert!(okafor.is_superset(&household) && okafor.len() > household.len());
    let one_by_one = all_pages(w, &by_name("okafor"), 1).await;
    assert_eq!(one_by_one.len(), okafor.len(), "no duplicates");
    assert_eq!(one_by_one.iter().copied().collect::<BTreeSet<_>>(), okafor, "no gaps");
    assert_eq!(all_pages(w, &by_name("okafor"), 3).await, one_by_one);
    let first = query::search(&w.db, &by_name("okafor"), &settings, None, 1)
        .await
        .expect("search");
    assert_eq!(first.customers.len(), 1);
    assert_eq!(first.next, Some(first.customers[0].token));

    // Criteria intersect: family name and postcode give the household.
    let q = SearchQuery {
        name: Some("Okafor".into()),
        postcode: Some("60000".into()),
        ..SearchQuery::default()
    };
    assert_eq!(search_tokens(w, q).await, household);
    // A phone as people write it: the household sharing it.
    let phone = w.tokens_where(|s| s.phone == "3125550000");
    assert_eq!(phone, household);
    let q = SearchQuery {
        phone: Some("(312) 555-0000".into()),
        ..SearchQuery::default()
    };
    assert_eq!(search_tokens(w, q).await, phone);
    let q = SearchQuery {
        phone: Some("+1 312 555 0000".into()),
        email: Some("mary.okafor1@example.test".into()),
        ..SearchQuery::default()
    };
    assert_eq!(search_tokens(w, q).await, BTreeSet::from([w.token("crm", "p1-0")]));

    // The merged token is never found, even by its own record's values.
    let q = SearchQuery {
        postcode: Some("60000".into()),
        ..SearchQuery::default()
    };
    let by_postcode = search_tokens(w, q).await;
    assert!(!by_postcode.contains(&split));
    assert_eq!(by_postcode, w.tokens_where(|s| s.zip == "60000"));

    // No criterion, or one that cannot match anything.
    for empty in [
        SearchQuery::default(),
        SearchQuery {
            name: Some(" ".into()),
            ..SearchQuery::default()
        },
    ] {
        let err = query::search(&w.db, &empty, &settings, None, 10).await;
        assert!(matches!(err, Err(SearchError::Empty)), "{err:?}");
    }
    let bad = SearchQuery {
        name: Some("Okafor".into()),
        email: Some("robert at example".into()),
        ..SearchQuery::default()
    };
    let err = query::search(&w.db, &bad, &settings, None, 10).await;
    assert!(matches!(err, Err(SearchError::Unusable("email"))), "{err:?}");
}

/// Three John Millers: two told apart by their birth dates and a third
/// that fits both, which goes to review. A steward keeps it apart.
async fn reviews(w: &mut World) {
    let ps = projections(rules(vec![Rule::TrustRank, Rule::MostComplete], "trust-1"));
    assert!(query::reviews(&w.db, None, None, 100)
        .await
        .expect("reviews")
        .is_empty());
    ingest_into(
        &w.s,
        "crm",
        &[
            "jm-elder,john,miller,,jm50@example.com,,1 pine st,boston,02108,1950-01-01".to_owned(),
            "jm-younger,john,miller,,,6175550170,9 cedar ave,salem,01970,1985-10-10".to_owned(),
        ],
    )
    .await;
    ingest_into(
        &w.s,
        "web",
        &["jm-either,john,miller,,jm50@example.com,6175550170,,,,".to_owned()],
    )
    .await;
    w.r.catch_up().await.expect("resolve");
    wait_for_last_decision(&w.s.store).await;
    catch_up(&w.s, &w.db, &ps, 5_000).await;

    let open = query::reviews(&w.db, Some("open"), None, 100).await.expect("reviews");
    assert_eq!(open.len(), 1, "{open:?}");
    let item = &open[0];
    let either = w.stream("web", "jm-either");
    assert_eq!(item.record, either);
    assert_eq!(item.token, w.token("web", "jm-either"));
    let (elder, younger) = (w.token("crm", "jm-elder"), w.token("crm", "jm-younger"));
    assert!([elder, younger].contains(&item.candidate));
    assert!([w.stream("crm", "jm-elder"), w.stream("crm", "jm-younger")].contains(&item.candidate_record));
    let total = item.explanation["total"].as_f64().expect("a total");
    assert!((total - item.total).abs() < 1e-9);
    assert_eq!((item.closed_position, item.closed_by.as_ref()), (None, None));
    assert_eq!(
        query::review(&w.db, item.review_id).await.expect("read").as_ref(),
        Some(item)
    );
    assert_eq!(query::review(&w.db, Uuid::now_v7()).await.expect("read"), None);
    // The opening decision is in the record's customer's history.
    let history = query::history(&w.db, item.token, None, 100).await.expect("history");
    assert!(history
        .iter()
        .any(|h| h.decision_type == "ReviewRequested" && h.position == item.opened_position));
    let after = query::reviews(&w.db, None, Some(item.opened_position), 100)
        .await
        .expect("reviews");
    assert!(after.is_empty());

    let versions: Vec<(Uuid, u64)> = [item.token, item.candidate]
        .iter()
        .map(|t| (*t, w.r.engine().customer(*t).expect("customer").version))
        .collect();
    w.r.command(&CommandRequest {
        command_id: Uuid::now_v7(),
        steward: "steward-2".into(),
        reason: "different people".into(),
        expected: versions,
        command: StewardCommand::CloseReview {
            review_id: item.review_id,
            outcome: ReviewOutcome::KeptApart,
        },
    })
    .await
    .expect("store")
    .expect("close");
    wait_for_last_decision(&w.s.store).await;
    catch_up(&w.s, &w.db, &ps, 5_000).await;
    assert!(query::reviews(&w.db, Some("open"), None, 100)
        .await
        .expect("reviews")
        .is_empty());
    let closed = query::reviews(&w.db, Some("kept_apart"), None, 100)
        .await
        .expect("reviews");
    assert_eq!(closed.len(), 1);
    let all = query::reviews(&w.db, None, None, 100).await.expect("reviews");
    assert_eq!(all, closed);
    let closed = &closed[0];
    assert_eq!(closed.review_id, item.review_id);
    assert_eq!(closed.state, "kept_apart");
    assert_eq!(closed.closed_by.as_deref(), Some("steward-2"));
    assert_eq!(closed.close_reason.as_deref(), Some("different people"));
    assert!(closed.closed_position.expect("closed") > closed.opened_position);
    assert!(closed.closed_at.expect("closed") >= closed.opened_at);
    assert_eq!(
        query::review(&w.db, item.review_id).await.expect("read").as_ref(),
        Some(closed)
    );
}

async fn read_models_answer_as_the_resolver_decided(s: Stores, db: ReadDb) {
    let r = scenario(&s).await;
    let ps = projections(rules(vec![Rule::TrustRank, Rule::MostComplete], "trust-1"));
    catch_up(&s, &db, &ps, 5_000).await;
    let ingestor = Ingestor::new(s.store.clone(), s.keys.clone(), definitions());
    let mut w = World { s, db, r, ingestor };
    customers_and_lineage(&w).await;
    cross_references(&w).await;
    source_records(&w).await;
    let split = split_and_merge(&w).await;
    households(&w).await;
    search(&w, split).await;
    reviews(&mut w).await;
}

// ---- SQLite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_models_answer_as_the_resolver_decided() {
    let b = SqliteBackend::new().await.expect("sqlite");
    let db = ReadDb::open_sqlite(&b.dir.path().join("read.db"))
        .await
        .expect("read db");
    read_models_answer_as_the_resolver_decided(sqlite_stores(&b).await, db).await;
}

// ---- PostgreSQL ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_models_answer_as_the_resolver_decided() {
    let b = PostgresBackend::new().await.expect("postgres");
    let db = ReadDb::open_postgres(&b.url, "read_a").await.expect("read db");
    read_models_answer_as_the_resolver_decided(postgres_stores(&b).await, db).await;
}
