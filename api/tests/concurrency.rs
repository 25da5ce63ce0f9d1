//! Concurrent steward commands over real HTTP against `mdm serve`, on SQLite
//! and PostgreSQL (issue 9): 16 steward clients read the same few customers
//! and send merges, splits, value overrides, not-a-match marks and
//! force-links with `If-Match` (one in five without), all at once, for
//! several rounds. Checked:
//!
//! - every answer is 200 (applied), 412 (stale `If-Match`) or 409 (the
//!   command no longer fits the current state), never anything else;
//! - the applied commands are exactly the ones the decision history holds
//!   (read back per customer, ordered by log position), and nothing of a
//!   refused command is in it;
//! - no lost update: a command sent with `If-Match: v` was applied on
//!   version `v` (the customer's decisions before it number `v`), the
//!   versions a command answers are the ones its own decisions produced,
//!   so they increase strictly per customer in log order; each applied
//!   command's effect is in the final state unless a later applied command
//!   named the same customers; every applied override is still in force;
//! - a serial replay of the applied commands, in log order, on a fresh
//!   deployment with the same records applies every one of them with the
//!   same versions and ends in the same state, compared canonically (tokens
//!   are random: the partition of source records into customers, their
//!   golden values and overrides);
//! - the service log has no panic and no error.

// The figures (applied, 412, 409 by kind, seconds) are the test's report.
#![allow(clippy::print_stdout)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{add_client, client_with, start, terminate, Backend, Deployment};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

const SYSTEM: &str = "web_signup";
const PEOPLE: usize = 5;
const RECORDS_EACH: usize = 3;
const CLIENTS: usize = 16;
const ROUNDS: usize = 8;
/// One command in this many goes without `If-Match` (a blind steward).
const BLIND_ONE_IN: u32 = 5;

const FIRST: [&str; PEOPLE] = ["Amara", "Bogdan", "Chiara", "Dmitri", "Esperanza"];
const LAST: [&str; PEOPLE] = ["Nwosu", "Kowalczyk", "Bellucci", "Volkov", "Quintero"];

/// The generated source records: `PEOPLE` people, `RECORDS_EACH` sign-ups
/// each (same person, so the resolver links them), in ingest order.
fn records() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for p in 0..PEOPLE {
        for k in 0..RECORDS_EACH {
            let id = format!("C-{p}-{k}");
            let record = json!({
                "signupId": id,
                "firstName": FIRST[p],
                "lastName": LAST[p],
                "email": format!("{}.{}@example.test", FIRST[p].to_lowercase(), LAST[p].to_lowercase()),
                "mobile": format!("+1 415 555 01{p}{}", p + 3),
                "birthDate": format!("19{}-0{}-1{}", 50 + p * 9, p + 1, p),
            });
            out.push((id, record));
        }
    }
    out
}

#[derive(Clone)]
struct Http {
    addr: String,
    http: reqwest::Client,
}

/// An answer: status, the ETag's version, the JSON body.
type Answer = (u16, Option<u64>, Value);

impl Http {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn answer(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_matches('"').parse().ok());
        let text = r.text().await.expect("a body");
        (status, etag, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Answer {
        Self::answer(self.http.get(self.url(path)).send().await.expect("answers")).await
    }

    async fn post(&self, path: &str, body: &Value, if_match: Option<u64>) -> Answer {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(v) = if_match {
            req = req.header("If-Match", format!("\"{v}\""));
        }
        Self::answer(req.send().await.expect("answers")).await
    }

    /// The token of the customer holding `source_id` now, as the resolver
    /// (not a read model) answers it.
    async fn token_of(&self, source_id: &str) -> Uuid {
        let (status, _, body) = self
            .get(&format!("/v1/sources/{SYSTEM}/records/{source_id}/customer"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().and_then(|t| t.parse().ok()).expect("a token")
    }

    /// Waits until every projection has applied the log up to its head as
    /// it is now.
    async fn caught_up(&self) {
        // `/ready` names the head once every projection is within 5 s of it.
        let mut head = None;
        for _ in 0..600 {
            let (_, _, ready) = self.get("/ready").await;
            head = ready["log_head"].as_u64();
            if head.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let head = head.expect("the service became ready within 30 s");
        for _ in 0..600 {
            let (_, _, r) = self.get("/ready").await;
            let projections = r["projections"].as_array().cloned().unwrap_or_default();
            if !projections.is_empty()
                && projections
                    .iter()
                    .all(|p| p["position"].as_u64().is_some_and(|q| q >= head))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the projections did not reach position {head}");
    }

    /// Every decision the history of `token` holds: (position, reason).
    /// `None` while the read model does not know the token yet.
    async fn history(&self, token: Uuid) -> Option<Vec<(u64, String)>> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, _, body) = self
                .get(&format!("/v1/customers/{token}/history?limit=100{cursor}"))
                .await;
            if status == 404 {
                return None;
            }
            assert_eq!(status, 200, "{body}");
            for d in body["decisions"].as_array().expect("decisions") {
                out.push((
                    d["position"].as_u64().expect("position"),
                    d["reason"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            match body["next"].as_u64() {
                Some(n) => cursor = format!("&cursor={n}"),
                None => return Some(out),
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Merge,
    Split,
    Override,
    NotAMatch,
    ForceLink,
}

/// A command as a client sent it and what it was answered.
#[derive(Clone, Debug)]
struct Sent {
    /// Unique; also the command's reason, so the history names it.
    tag: String,
    kind: Kind,
    /// The customer in the path.
    token: Uuid,
    if_match: Option<u64>,
    /// Merge: the absorbed customer and the version the client read.
    absorbed: Option<(Uuid, Option<u64>)>,
    /// The source records named in the body (split / force-link: one;
    /// not-a-match: two).
    records: Vec<String>,
    status: u16,
    etag: Option<u64>,
    versions: HashMap<Uuid, u64>,
    problem: String,
}

impl Sent {
    fn path(&self, token: Uuid) -> String {
        let verb = match self.kind {
            Kind::Merge => "merge",
            Kind::Split => "split",
            Kind::Override => "overrides",
            Kind::NotAMatch => "not-a-match",
            Kind::ForceLink => "force-link",
        };
        format!("/v1/customers/{token}/{verb}")
    }

    /// The body, with `absorbed` standing for the absorbed customer's token.
    fn body(&self, absorbed: Option<Uuid>) -> Value {
        let record = |s: &String| json!({"system": SYSTEM, "source_id": s});
        match self.kind {
            Kind::Merge => {
                let mut b = json!({"absorbed": absorbed.expect("absorbed"), "reason": self.tag});
                if let Some((_, Some(v))) = self.absorbed {
                    b["absorbed_version"] = json!(v);
                }
                b
            }
            Kind::Split | Kind::ForceLink => json!({"record": record(&self.records[0]), "reason": self.tag}),
            Kind::NotAMatch => {
                json!({"records": [record(&self.records[0]), record(&self.records[1])], "reason": self.tag})
            }
            Kind::Override => json!({
                "attribute": "email",
                "value": format!("{}@example.test", self.tag),
                "permanent": true,
                "reason": self.tag,
            }),
        }
    }
}

fn versions_of(body: &Value) -> HashMap<Uuid, u64> {
    body["versions"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.parse().expect("a token"), v.as_u64().expect("a version")))
                .collect()
        })
        .unwrap_or_default()
}

/// One steward's turn: read a customer, wait for the others, send a command.
async fn turn(
    api: &Http,
    rng: &mut rand_chacha::ChaCha8Rng,
    ids: &[String],
    tag: String,
    barrier: &tokio::sync::Barrier,
) -> Sent {
    let r = ids[rng.random_range(0..ids.len())].clone();
    let others: Vec<&String> = ids.iter().filter(|i| **i != r).collect();
    let r2 = others[rng.random_range(0..others.len())].clone();
    // The customer of a record: merges are followed to the survivor.
    let (status, version, doc) = api.get(&format!("/v1/customers/by-source/{SYSTEM}/{r}")).await;
    assert_eq!(status, 200, "by-source answers the record's live customer: {doc}");
    let token: Uuid = doc["token"].as_str().and_then(|t| t.parse().ok()).expect("token");
    let version = version.expect("an ETag");
    let (status, _, listed) = api.get(&format!("/v1/customers/{token}/source-records")).await;
    let mut members: Vec<String> = if status == 200 {
        listed["source_records"]
            .as_array()
            .expect("records")
            .iter()
            .filter_map(|s| s["source_id"].as_str().map(str::to_owned))
            .collect()
    } else {
        // Merged away between the two reads: the next command will hear so.
        vec![r.clone()]
    };
    if members.is_empty() {
        // The source-records read model has not caught up with the record.
        members.push(r.clone());
    }
    let mut kind = match rng.random_range(0..5) {
        0 => Kind::Merge,
        1 => Kind::Split,
        2 => Kind::Override,
        3 => Kind::NotAMatch,
        _ => Kind::ForceLink,
    };
    let outside: Vec<&String> = ids.iter().filter(|i| !members.contains(i)).collect();
    let stranger = (!outside.is_empty()).then(|| outside[rng.random_range(0..outside.len())].clone());
    let blind = rng.random_ratio(1, BLIND_ONE_IN);
    let mut absorbed = None;
    if kind == Kind::Merge {
        match &stranger {
            Some(s) => {
                let (status, v, other) = api.get(&format!("/v1/customers/by-source/{SYSTEM}/{s}")).await;
                assert_eq!(status, 200, "{other}");
                let t: Uuid = other["token"].as_str().and_then(|t| t.parse().ok()).expect("token");
                if t == token {
                    kind = Kind::Override;
                } else {
                    absorbed = Some((t, if blind { None } else { v }));
                }
            }
            None => kind = Kind::Override,
        }
    }
    let records = match kind {
        Kind::Split => vec![members[rng.random_range(0..members.len())].clone()],
        Kind::ForceLink => vec![stranger.clone().unwrap_or(r2.clone())],
        Kind::NotAMatch => vec![r.clone(), r2.clone()],
        Kind::Merge | Kind::Override => Vec::new(),
    };
    let mut sent = Sent {
        tag,
        kind,
        token,
        if_match: (!blind).then_some(version),
        absorbed,
        records,
        status: 0,
        etag: None,
        versions: HashMap::new(),
        problem: String::new(),
    };
    barrier.wait().await;
    let (status, etag, body) = api
        .post(&sent.path(token), &sent.body(absorbed.map(|a| a.0)), sent.if_match)
        .await;
    sent.status = status;
    sent.etag = etag;
    sent.versions = versions_of(&body);
    sent.problem = match body["title"].as_str() {
        Some("Conflict") => format!("Conflict: {}", body["detail"].as_str().unwrap_or_default()),
        Some(t) => t.to_owned(),
        None => String::new(),
    };
    assert!(
        matches!(status, 200 | 409 | 412),
        "{:?} answered {status}, not 200, 409 or 412: {body}",
        sent.kind
    );
    if status == 200 {
        assert_eq!(sent.etag, sent.versions.get(&token).copied(), "{body}");
        assert!(
            kind == Kind::NotAMatch || sent.etag.is_some(),
            "an applied {kind:?} names its customer: {body}"
        );
    } else {
        assert!(sent.versions.is_empty(), "{body}");
    }
    sent
}

/// Starts a deployment and ingests the records one by one (the resolver
/// decides each before the next): record → its customer's token.
async fn deploy(backend: Backend, purpose: &str) -> (Deployment, std::process::Child, Http, HashMap<String, Uuid>) {
    let d = Deployment::new(backend, purpose);
    let env = d.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (child, addr) = start(d.dir.path(), &env);
    let admin = Http {
        addr: addr.clone(),
        http: common::api(&addr),
    };
    let mut tokens = HashMap::new();
    for (id, record) in records() {
        let (status, _, body) = admin
            .post(&format!("/v1/sources/{SYSTEM}/records"), &record, None)
            .await;
        assert!(status == 201 || status == 200, "{body}");
        let t: Uuid = body["customer"]["token"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("a token");
        tokens.insert(id, t);
    }
    (d, child, admin, tokens)
}

/// The state compared across deployments: per customer (its source
/// records, sorted), its golden values and its overrides in force
/// (attribute, value, reason); and each record's token.
type Canonical = BTreeMap<Vec<String>, (Value, BTreeSet<(String, String, String)>)>;

async fn canonical(api: &Http, ids: &[String]) -> (Canonical, HashMap<String, Uuid>) {
    api.caught_up().await;
    let mut groups: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    let mut token_of = HashMap::new();
    for id in ids {
        let t = api.token_of(id).await;
        let mut doc = Value::Null;
        for _ in 0..200 {
            let (status, _, d) = api.get(&format!("/v1/customers/by-source/{SYSTEM}/{id}")).await;
            assert_eq!(status, 200, "{d}");
            doc = d;
            if doc["token"] == t.to_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(doc["token"], t.to_string(), "the read model agrees with the resolver");
        groups.entry(t).or_default().push(id.clone());
        token_of.insert(id.clone(), t);
    }
    let mut out = Canonical::new();
    for (t, mut members) in groups {
        members.sort();
        let (status, _, doc) = api.get(&format!("/v1/customers/{t}")).await;
        assert_eq!(status, 200, "{doc}");
        let (status, _, o) = api.get(&format!("/v1/customers/{t}/overrides")).await;
        assert_eq!(status, 200, "{o}");
        let overrides = o["overrides"]
            .as_array()
            .expect("overrides")
            .iter()
            .map(|o| {
                (
                    o["attribute"].as_str().unwrap_or_default().to_owned(),
                    o["value"].to_string(),
                    o["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.insert(members, (doc["attributes"].clone(), overrides));
    }
    (out, token_of)
}

/// The service log has no panic and no error line.
fn log_is_clean(d: &Deployment) {
    let log = std::fs::read_to_string(d.dir.path().join("serve.log")).expect("serve.log");
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("panicked") || l.contains(" ERROR "))
        .collect();
    assert!(bad.is_empty(), "the service logged:\n{}", bad.join("\n"));
}

async fn concurrent_commands_apply_or_conflict_and_replay_serially(backend: Backend) {
    let started = Instant::now();
    let ids: Vec<String> = records().into_iter().map(|(id, _)| id).collect();
    let (d, mut child, admin, initial) = deploy(backend, "concurrency").await;
    let env = d.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let initial_customers: HashSet<Uuid> = initial.values().copied().collect();
    assert_eq!(
        initial_customers.len(),
        PEOPLE,
        "each person's sign-ups are one customer"
    );

    // 16 steward clients, each its own API client, all at once, per round.
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let key = add_client(d.dir.path(), &env, &format!("steward-{c}"), "steward", None);
        let api = Http {
            addr: admin.addr.clone(),
            http: client_with(&key),
        };
        let ids = ids.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9000 + c as u64);
            let mut sent = Vec::new();
            for round in 0..ROUNDS {
                sent.push(turn(&api, &mut rng, &ids, format!("conc-r{round}-c{c}"), &barrier).await);
            }
            sent
        }));
    }
    let mut all: Vec<Sent> = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a client task"));
    }
    let concurrent_seconds = started.elapsed().as_secs_f64();

    // The applied commands in log order, from the decision history of
    // every customer any answer named.
    admin.caught_up().await;
    let mut tokens: BTreeSet<Uuid> = initial_customers.iter().copied().collect();
    for s in &all {
        tokens.insert(s.token);
        tokens.extend(s.versions.keys());
        tokens.extend(s.absorbed.map(|a| a.0));
    }
    // On PostgreSQL the log's visible head can trail a commit while another
    // transaction in the cluster is open: read again until every applied
    // command shows (a refused one showing is never waited away).
    let applied_tags: BTreeSet<&String> = all.iter().filter(|s| s.status == 200).map(|s| &s.tag).collect();
    let mut history: HashMap<Uuid, Vec<(u64, String)>> = HashMap::new();
    let mut positions: HashMap<String, Vec<u64>> = HashMap::new();
    for attempt in 0..200 {
        history.clear();
        positions.clear();
        let mut complete = true;
        for t in &tokens {
            let Some(h) = admin.history(*t).await else {
                complete = false;
                break;
            };
            for (p, reason) in &h {
                if reason.starts_with("conc-") {
                    positions.entry(reason.clone()).or_default().push(*p);
                }
            }
            history.insert(*t, h);
        }
        if complete && applied_tags.iter().all(|t| positions.contains_key(*t)) {
            break;
        }
        assert!(attempt < 199, "the decision history never showed every applied command");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged_tags: BTreeSet<&String> = positions.keys().collect();
    assert_eq!(
        applied_tags, logged_tags,
        "the history holds exactly the applied commands"
    );
    let span = |tag: &str| {
        let p = &positions[tag];
        (
            *p.iter().min().expect("a position"),
            *p.iter().max().expect("a position"),
        )
    };
    let mut applied: Vec<&Sent> = all.iter().filter(|s| s.status == 200).collect();
    applied.sort_by_key(|s| span(&s.tag).0);
    // One command's decisions are one append: no other command's between.
    for w in applied.windows(2) {
        assert!(
            span(&w[0].tag).1 < span(&w[1].tag).0,
            "{} and {} interleave",
            w[0].tag,
            w[1].tag
        );
    }

    // No lost update: If-Match v means the customer had v decisions before
    // the command; the versions answered are those right after it.
    let count = |t: Uuid, below: u64| history[&t].iter().filter(|(p, _)| *p < below).count() as u64;
    let mut last_version: HashMap<Uuid, u64> = HashMap::new();
    for s in &applied {
        let (first, last) = span(&s.tag);
        let mut expected: Vec<(Uuid, u64)> = s.if_match.map(|v| (s.token, v)).into_iter().collect();
        if let Some((a, Some(v))) = s.absorbed {
            expected.push((a, v));
        }
        for (t, v) in expected {
            assert_eq!(
                count(t, first),
                v,
                "{} was applied on {t} at another version than its If-Match",
                s.tag
            );
        }
        for (t, v) in &s.versions {
            assert_eq!(
                count(*t, last + 1),
                *v,
                "{} answered a version of {t} it did not produce",
                s.tag
            );
            if let Some(before) = last_version.insert(*t, *v) {
                assert!(*v > before, "{t}: version {v} after {before}");
            }
        }
    }

    // Each applied command's effect is in the final state, unless a later
    // applied command named one of the customers it named.
    let later = |t: Uuid, after: u64| history[&t].iter().any(|(p, _)| *p > after);
    for s in &applied {
        let (_, last) = span(&s.tag);
        if s.versions.keys().any(|t| later(*t, last)) {
            continue;
        }
        match s.kind {
            Kind::Merge => {
                let (a, _) = s.absorbed.expect("absorbed");
                let (status, _, body) = admin.get(&format!("/v1/customers/{a}")).await;
                assert_eq!(
                    (status, body["merged_into"].as_str()),
                    (307, Some(s.token.to_string().as_str())),
                    "{}",
                    s.tag
                );
            }
            Kind::Split => {
                let to = s.versions.keys().find(|t| **t != s.token).expect("the split's target");
                assert_eq!(admin.token_of(&s.records[0]).await, *to, "{}", s.tag);
            }
            Kind::ForceLink => assert_eq!(admin.token_of(&s.records[0]).await, s.token, "{}", s.tag),
            Kind::NotAMatch => assert_ne!(
                admin.token_of(&s.records[0]).await,
                admin.token_of(&s.records[1]).await,
                "{}",
                s.tag
            ),
            Kind::Override => {
                let (status, _, doc) = admin.get(&format!("/v1/customers/{}", s.token)).await;
                assert_eq!(status, 200, "{doc}");
                assert_eq!(
                    doc["attributes"]["email"],
                    format!("{}@example.test", s.tag),
                    "{}",
                    s.tag
                );
            }
        }
    }
    let (original, original_tokens) = canonical(&admin, &ids).await;
    // Nothing removes an override here: every applied one is in force.
    let in_force: BTreeSet<&String> = original
        .values()
        .flat_map(|(_, o)| o.iter().map(|(_, _, r)| r))
        .collect();
    for s in applied.iter().filter(|s| s.kind == Kind::Override) {
        assert!(in_force.contains(&s.tag), "override {} was lost", s.tag);
    }
    // Checked before shutdown: on PostgreSQL the resolver logs an error
    // when SIGTERM closes the pool under it (a shutdown matter, not ours).
    log_is_clean(&d);
    terminate(&mut child);

    // The serial replay on a fresh deployment with the same records.
    let replay_started = Instant::now();
    let (r, mut replay_child, replay, replay_initial) = deploy(backend, "concurrency_replay").await;
    let mut map: HashMap<Uuid, Uuid> = HashMap::new();
    for (id, t) in &initial {
        let mapped = *map.entry(*t).or_insert(replay_initial[id]);
        assert_eq!(mapped, replay_initial[id], "the same initial partition");
    }
    for s in &applied {
        let token = map[&s.token];
        let absorbed = s.absorbed.map(|(a, _)| map[&a]);
        let (status, etag, body) = replay.post(&s.path(token), &s.body(absorbed), s.if_match).await;
        assert_eq!(status, 200, "{} replayed: {body}", s.tag);
        assert_eq!(etag, s.etag, "{}", s.tag);
        let versions = versions_of(&body);
        let mapped_values: HashSet<Uuid> = map.values().copied().collect();
        let new_original: Vec<Uuid> = s.versions.keys().filter(|t| !map.contains_key(t)).copied().collect();
        let new_replay: Vec<Uuid> = versions
            .keys()
            .filter(|t| !mapped_values.contains(t))
            .copied()
            .collect();
        assert_eq!(new_original.len(), new_replay.len(), "{}: new customers", s.tag);
        assert!(new_original.len() <= 1, "{}", s.tag);
        if let (Some(o), Some(n)) = (new_original.first(), new_replay.first()) {
            map.insert(*o, *n);
        }
        assert_eq!(versions.len(), s.versions.len(), "{}", s.tag);
        for (t, v) in &s.versions {
            assert_eq!(versions.get(&map[t]), Some(v), "{}: the same versions", s.tag);
        }
    }
    let (replayed, replayed_tokens) = canonical(&replay, &ids).await;
    assert_eq!(original, replayed, "the serial replay ends in the same state");
    for id in &ids {
        assert_eq!(
            map.get(&original_tokens[id]),
            Some(&replayed_tokens[id]),
            "{id}: the same customer"
        );
    }
    let replay_seconds = replay_started.elapsed().as_secs_f64();
    log_is_clean(&r);
    terminate(&mut replay_child);

    let mut by_kind: BTreeMap<(Kind, u16), usize> = BTreeMap::new();
    let mut conflicts: BTreeMap<String, usize> = BTreeMap::new();
    for s in &all {
        *by_kind.entry((s.kind, s.status)).or_default() += 1;
        if s.status == 409 {
            *conflicts.entry(s.problem.clone()).or_default() += 1;
        }
    }
    let count_status = |code: u16| all.iter().filter(|s| s.status == code).count();
    println!(
        "concurrency {backend:?}: {} commands from {CLIENTS} clients in {ROUNDS} rounds on {PEOPLE} customers \
         ({} records): applied {}, 412 {}, 409 {} {conflicts:?}; final customers {}; \
         concurrent phase {concurrent_seconds:.1} s, replay {replay_seconds:.1} s, total {:.1} s",
        all.len(),
        ids.len(),
        count_status(200),
        count_status(412),
        count_status(409),
        original.len(),
        started.elapsed().as_secs_f64()
    );
    for ((kind, status), n) in &by_kind {
        println!("concurrency {backend:?}: {kind:?} {status}: {n}");
    }
    assert!(count_status(200) >= ROUNDS, "commands were applied");
    assert!(count_status(412) > 0, "clients raced on stale versions");
}

on_both_backends!(concurrent_commands_apply_or_conflict_and_replay_serially);
