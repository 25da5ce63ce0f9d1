//! The crash test (issue 9): `mdm serve` as a process on each backend,
//! records of the project's generator ingested over HTTP in batches by a
//! client that records every acknowledgement, `kill -9` at random moments
//! (a batch in flight, the resolver behind the head, a projection behind,
//! a rebuild running), a restart each time and the unacknowledged batches
//! sent again. Afterwards:
//!
//! 1. every acknowledged record is present exactly once (one row in the
//!    source-record read model, one live capture in the log);
//! 2. no source record got two `CustomerCreated` decisions;
//! 3. every read model equals a rebuild from the log (canonical dumps);
//! 4. the resolver's decisions equal those of an uninterrupted `mdm resolve`
//!    over the same source events in the same order (a fresh log, no kills),
//!    compared with random ids (tokens, review and household ids) named by
//!    first appearance.
//!
//! Sized by `MDM_CRASH_RECORDS` (default 20,000), `MDM_CRASH_KILLS`
//! (default 5) and `MDM_CRASH_SEED` (default random, printed so a failure
//! can be replayed); `scripts/crash-test` runs the full version.

// The test prints its counts (one line per backend).
#![allow(clippy::print_stdout)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use mdm_commands::import::Syntax;
use mdm_domain::resolution::events::{Decided, Decision};
use mdm_store::{EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// Records per HTTP batch.
const BATCH_RECORDS: usize = 250;
/// Batches in flight at once (of different systems: a system's batches go
/// in order, as a source sends them).
const IN_FLIGHT: usize = 3;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is not a number")))
        .unwrap_or(default)
}

/// Where a kill happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// A batch in flight.
    Ingest,
    /// The resolver behind the head of the log.
    Resolution,
    /// The resolver caught up with the acknowledged records, a projection
    /// behind.
    Projection,
    /// `mdm projections rebuild` running.
    Rebuild,
}

/// One HTTP batch of one system, and the (system, source id) of each of
/// its records in order (`None`: a record that maps to nothing, such as a
/// change-data-capture tombstone).
struct Batch {
    system: String,
    content_type: &'static str,
    body: Vec<u8>,
    keys: Vec<Option<String>>,
}

/// The generator's files cut into batches, per system, in file order.
fn batches(data: &Path, definitions: &mdm_domain::source::SourceDefinitions) -> (Vec<VecDeque<Batch>>, usize) {
    let files = [
        ("web_signup", "web_signup.ndjson"),
        ("dealer_a", "dealer_a.ndjson"),
        ("dealer_b", "dealer_b.ndjson"),
        ("finance", "finance.csv"),
        ("loyalty", "loyalty.csv"),
        ("shop_cdc", "shop_cdc.ndjson"),
        ("warranty_api", "warranty_api.ndjson"),
    ];
    let mut out = Vec::new();
    let mut records = 0;
    for (system, file) in files {
        let text = std::fs::read_to_string(data.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let csv = file.ends_with(".csv");
        let mut lines = text.lines();
        let header = if csv { lines.next().map(str::to_owned) } else { None };
        let lines: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
        let def = definitions.get(system).expect("a definition");
        let syntax = if csv {
            Syntax::Csv
        } else if system == "shop_cdc" {
            Syntax::Debezium
        } else {
            Syntax::Json
        };
        let mut queue = VecDeque::new();
        for chunk in lines.chunks(BATCH_RECORDS) {
            let mut body = String::new();
            if let Some(h) = &header {
                body.push_str(h);
                body.push('\n');
            }
            for l in chunk {
                body.push_str(l);
                body.push('\n');
            }
            let parsed: Vec<_> = syntax
                .records(std::io::Cursor::new(body.clone().into_bytes()))
                .collect();
            assert_eq!(parsed.len(), chunk.len(), "{file}: one record per line");
            let keys = parsed
                .iter()
                .map(|r| {
                    let item = r.item.as_ref().expect("the generator writes readable records");
                    mdm_domain::source::map_record(def, &item.value)
                        .ok()
                        .map(|m| m.source_id)
                })
                .collect();
            records += chunk.len();
            queue.push_back(Batch {
                system: system.to_owned(),
                content_type: if csv { "text/csv" } else { "application/x-ndjson" },
                body: body.into_bytes(),
                keys,
            });
        }
        out.push(queue);
    }
    (out, records)
}

/// The metrics the test steers by.
#[derive(Debug, Default)]
struct Gauges {
    head: u64,
    resolver_up: bool,
    resolver: u64,
    projections: Vec<u64>,
}

async fn gauges(addr: &str) -> Option<Gauges> {
    let text = api(addr)
        .get(format!("http://{addr}/v1/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |prefix: &str| -> Vec<u64> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .collect()
    };
    Some(Gauges {
        head: value("mdm_log_head_position ").first().copied()?,
        resolver_up: value("mdm_resolver_up ").first().copied() == Some(1),
        resolver: value("mdm_resolver_position ").first().copied()?,
        projections: value("mdm_projection_position{"),
    })
}

/// Polls until the resolver and every projection have applied the head of
/// the log and the head stopped moving.
async fn caught_up(addr: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = None;
    loop {
        if let Some(g) = gauges(addr).await {
            let done = g.resolver_up
                && g.head > 0
                && g.resolver >= g.head
                && g.projections.len() == 4
                && g.projections.iter().all(|p| *p >= g.head);
            if done && last == Some(g.head) {
                return g.head;
            }
            last = done.then_some(g.head);
            assert!(Instant::now() < deadline, "not caught up after 600 s: {g:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one batch's POST came back with: the acknowledged keys, or nothing.
type Sent = (usize, Batch, Option<Vec<String>>);

/// Requests sent and not yet answered.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

async fn send(addr: String, index: usize, batch: Batch) -> Sent {
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let result = api(&addr)
        .post(format!("http://{addr}/v1/sources/{}/records", batch.system))
        .header("content-type", batch.content_type)
        .body(batch.body.clone())
        .timeout(Duration::from_secs(120))
        .send()
        .await;
    let result = match result {
        Ok(r) if r.status() == 200 => match r.json::<Value>().await {
            Ok(body) => Ok(body),
            Err(_) => Err(()),
        },
        Ok(r) => Ok(Value::from(r.status().as_u16())),
        Err(_) => Err(()),
    };
    ACTIVE.fetch_sub(1, Ordering::SeqCst);
    let acked = match result {
        Ok(body) if body.is_object() => {
            let outcomes = body["records"].as_array().expect("per-record outcomes");
            assert_eq!(outcomes.len(), batch.keys.len(), "one outcome per record");
            let mut keys = Vec::new();
            for (o, key) in outcomes.iter().zip(&batch.keys) {
                let outcome = o["outcome"].as_str().expect("an outcome");
                assert!(
                    matches!(
                        outcome,
                        "captured" | "changed" | "unchanged" | "stale" | "retracted" | "ignored"
                    ),
                    "{}: {o}",
                    batch.system
                );
                if outcome != "ignored" {
                    if let Some(k) = key {
                        keys.push(k.clone());
                    }
                }
            }
            Some(keys)
        }
        Ok(status) => {
            // A store going away mid-batch answers 503: nothing to count on.
            assert!(status.as_u64().is_some_and(|s| s >= 500), "{}: {status}", batch.system);
            None
        }
        Err(()) => None,
    };
    (index, batch, acked)
}

/// `kill -9`.
fn kill9(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let _ = child.wait();
}

/// The test's own view of the deployment's configuration (for the
/// libraries: event store, read models).
fn config_of(d: &Deployment, extra: &[(&str, String)]) -> mdm_api::config::Config {
    let mut env: BTreeMap<String, String> = d.env().into_iter().collect();
    env.insert(
        "MDM_DATA_DIR".into(),
        d.dir.path().join("mdm-data").to_string_lossy().into_owned(),
    );
    for (k, v) in extra {
        env.insert((*k).to_owned(), v.clone());
    }
    mdm_api::config::Config::from_sources(None, &env).expect("config")
}

async fn read_log(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut position = Position::START;
    loop {
        let page = store.read_all(position, mdm_store::MAX_READ).await.expect("read");
        let Some(last) = page.last() else { break };
        position = last.position;
        out.extend(page);
    }
    out
}

fn decisions(log: &[RecordedEvent]) -> Vec<Decided> {
    log.iter()
        .filter(|e| e.stream == "resolution")
        .map(|e| serde_json::from_slice(e.data.as_bytes()).expect("a decision"))
        .collect()
}

/// A decision with its random ids (tokens, review and household ids)
/// named by order of first appearance and its cause's log position left
/// out (positions differ between two logs; the cause's event id does not).
fn canonical(decided: &[Decided]) -> Vec<String> {
    fn walk(v: &mut Value, names: &mut HashMap<String, usize>, key: Option<&str>) {
        match v {
            Value::String(s) if key != Some("event_id") && uuid::Uuid::parse_str(s).is_ok() => {
                let n = names.len();
                let n = *names.entry(s.clone()).or_insert(n);
                *s = format!("id{n}");
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, names, None)),
            Value::Object(map) => {
                map.remove("position");
                for (k, v) in map.iter_mut() {
                    walk(v, names, Some(k));
                }
            }
            _ => {}
        }
    }
    let mut names = HashMap::new();
    decided
        .iter()
        .map(|d| {
            let mut v = serde_json::to_value(d).expect("json");
            walk(&mut v, &mut names, None);
            v.to_string()
        })
        .collect()
}

/// Every row of every read model, table by table.
async fn dump_all(config: &mdm_api::config::Config) -> Vec<(String, Vec<String>)> {
    let db = mdm_api::compose::open_read_db(config).await.expect("read models");
    let projections = mdm_projections::all(mdm_api::compose::customer_settings(config).expect("settings"));
    let mut out = Vec::new();
    for p in &projections {
        out.extend(mdm_projections::runner::dump(&db, p.as_ref()).await.expect("dump"));
    }
    db.close().await;
    out
}

/// Source record (system, source id) -> (rows, stream) in the read model.
async fn source_records(config: &mdm_api::config::Config) -> HashMap<(String, String), (usize, String)> {
    use sqlx::Row;
    let db = mdm_api::compose::open_read_db(config).await.expect("read models");
    let rows = sqlx::query("SELECT system, source_id, record FROM source_record")
        .fetch_all(db.pool())
        .await
        .expect("source records");
    let mut out: HashMap<(String, String), (usize, String)> = HashMap::new();
    for r in rows {
        let key = (
            r.get::<String, _>(0),
            r.get::<Option<String>, _>(1).expect("a source id"),
        );
        let entry = out.entry(key).or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = r.get(2);
    }
    db.close().await;
    out
}

/// Starts `mdm projections rebuild` as a process.
fn spawn_rebuild(d: &Deployment, env: &[(String, String)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mdm"))
        .args(["projections", "rebuild"])
        .current_dir(d.dir.path())
        .env_clear()
        .env("MDM_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mdm projections rebuild starts")
}

/// With `MDM_CRASH_KEEP` set, a failing run leaves its folder and
/// database behind for a look (the path is printed).
struct Kept(Option<Deployment>);

impl Drop for Kept {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("MDM_CRASH_KEEP").is_some() {
            if let Some(d) = self.0.take() {
                eprintln!(
                    "kept: {} {}",
                    d.dir.path().display(),
                    d.db.as_ref().map(|db| db.url.as_str()).unwrap_or("")
                );
                std::mem::forget(d);
            }
        }
    }
}

async fn crash(backend: Backend) {
    let started = Instant::now();
    let records_wanted = env_usize("MDM_CRASH_RECORDS", 20_000) as u64;
    let kills = env_usize("MDM_CRASH_KILLS", 5);
    let seed: u64 = std::env::var("MDM_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("MDM_CRASH_SEED is a number"))
        .unwrap_or_else(rand::random);
    let name = if backend == Backend::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    println!("crash {name}: MDM_CRASH_SEED={seed} MDM_CRASH_RECORDS={records_wanted} MDM_CRASH_KILLS={kills}");
    let mut rng = StdRng::seed_from_u64(seed);

    // The data: the project's generator, cut into batches.
    let mut kept = Kept(Some(Deployment::new(backend, "crash")));
    let d = kept.0.as_mut().expect("a deployment");
    d.extra.push(("MDM_MASTER_KEY".into(), TEST_MASTER_KEY.into()));
    let data = d.dir.path().join("data");
    let mut args = mdm_api::datagen::DatagenArgs::new(&data, 0, seed);
    args.records = Some(records_wanted);
    mdm_api::datagen::run(&args).expect("datagen");
    let sources_text = std::fs::read_to_string(SOURCES_EXAMPLE).expect("sources");
    let definitions = mdm_api::sources::parse_sources(&sources_text).expect("definitions");
    let (mut queues, input_records) = batches(&data, &definitions);
    let total_batches: usize = queues.iter().map(VecDeque::len).sum();

    // The kills: each phase at least once when there are four or more, at
    // moments spread over the ingest (counted in acknowledged batches).
    let mut phases: Vec<Phase> = Vec::new();
    if kills >= 4 {
        phases.extend([Phase::Ingest, Phase::Resolution, Phase::Projection, Phase::Rebuild]);
    }
    let all = [Phase::Ingest, Phase::Resolution, Phase::Projection, Phase::Rebuild];
    while phases.len() < kills {
        phases.push(all[rng.random_range(0..all.len())]);
    }
    phases.shuffle(&mut rng);
    let mut plan: VecDeque<(usize, Phase)> = phases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let step = total_batches / (kills + 1);
            let jitter = rng.random_range(0..step.max(1) / 2 + 1);
            (step * (i + 1) + jitter - step / 4, *p)
        })
        .collect();

    let env = d.env();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, mut addr) = start(d.dir.path(), &env_ref);

    let mut acked: BTreeSet<(String, String)> = BTreeSet::new();
    let mut acked_batches = 0usize;
    let mut retried = 0usize;
    let mut service_kills = 0usize;
    let mut killed: BTreeMap<Phase, usize> = BTreeMap::new();
    let mut busy = vec![false; queues.len()];
    let mut in_flight = tokio::task::JoinSet::<Sent>::new();
    let mut next_system = 0usize;

    // Sends the next batch of a system that has none in flight.
    let launch = |queues: &mut Vec<VecDeque<Batch>>,
                  busy: &mut Vec<bool>,
                  next: &mut usize,
                  in_flight: &mut tokio::task::JoinSet<Sent>,
                  addr: &str|
     -> bool {
        for k in 0..queues.len() {
            let s = (*next + k) % queues.len();
            if !busy[s] {
                if let Some(b) = queues[s].pop_front() {
                    busy[s] = true;
                    *next = s + 1;
                    in_flight.spawn(send(addr.to_owned(), s, b));
                    return true;
                }
            }
        }
        false
    };
    // Takes a finished batch: acknowledged keys recorded, or the batch back
    // at the head of its system's queue.
    let settle = |sent: Sent,
                  queues: &mut Vec<VecDeque<Batch>>,
                  busy: &mut Vec<bool>,
                  acked: &mut BTreeSet<(String, String)>,
                  acked_batches: &mut usize,
                  retried: &mut usize| {
        let (s, batch, keys) = sent;
        busy[s] = false;
        match keys {
            Some(keys) => {
                *acked_batches += 1;
                acked.extend(keys.into_iter().map(|k| (batch.system.clone(), k)));
            }
            None => {
                *retried += batch.keys.len();
                queues[s].push_front(batch);
            }
        }
    };

    loop {
        // Keep batches in flight.
        while in_flight.len() < IN_FLIGHT && launch(&mut queues, &mut busy, &mut next_system, &mut in_flight, &addr) {}
        let due = plan.front().is_some_and(|(at, _)| acked_batches >= *at);
        if in_flight.is_empty() && !due {
            if queues.iter().all(VecDeque::is_empty) {
                break;
            }
            continue;
        }
        if !due {
            let sent = in_flight.join_next().await.expect("a batch").expect("task");
            settle(
                sent,
                &mut queues,
                &mut busy,
                &mut acked,
                &mut acked_batches,
                &mut retried,
            );
            continue;
        }
        let (_, phase) = plan.pop_front().expect("due");
        match phase {
            Phase::Ingest => {
                // A batch in flight: kill at a random moment of it.
                if in_flight.is_empty() {
                    launch(&mut queues, &mut busy, &mut next_system, &mut in_flight, &addr);
                }
                let at = Instant::now() + Duration::from_millis(rng.random_range(20..400));
                while Instant::now() < at || ACTIVE.load(Ordering::SeqCst) == 0 {
                    while let Some(sent) = in_flight.try_join_next() {
                        settle(
                            sent.expect("task"),
                            &mut queues,
                            &mut busy,
                            &mut acked,
                            &mut acked_batches,
                            &mut retried,
                        );
                    }
                    while in_flight.len() < IN_FLIGHT
                        && launch(&mut queues, &mut busy, &mut next_system, &mut in_flight, &addr)
                    {}
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                kill9(&mut child);
                service_kills += 1;
            }
            Phase::Resolution | Phase::Projection => {
                // Send one batch at a time; right after its acknowledgement,
                // look for the phase and kill in it.
                while let Some(sent) = in_flight.join_next().await {
                    settle(
                        sent.expect("task"),
                        &mut queues,
                        &mut busy,
                        &mut acked,
                        &mut acked_batches,
                        &mut retried,
                    );
                }
                let mut hit = false;
                for _ in 0..50 {
                    if !launch(&mut queues, &mut busy, &mut next_system, &mut in_flight, &addr) {
                        break;
                    }
                    let sent = in_flight.join_next().await.expect("a batch").expect("task");
                    let ok = sent.2.is_some();
                    settle(
                        sent,
                        &mut queues,
                        &mut busy,
                        &mut acked,
                        &mut acked_batches,
                        &mut retried,
                    );
                    if !ok {
                        continue;
                    }
                    let Some(after) = gauges(&addr).await else { continue };
                    let watch = Instant::now();
                    while watch.elapsed() < Duration::from_secs(5) {
                        let Some(g) = gauges(&addr).await else { break };
                        let projection_behind = g.projections.iter().any(|p| *p < g.head);
                        hit = match phase {
                            Phase::Resolution => g.resolver_up && g.resolver < g.head && g.resolver < after.head,
                            _ => g.resolver_up && g.resolver >= after.head && projection_behind,
                        };
                        if hit || (!projection_behind && g.resolver >= g.head) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    if hit {
                        break;
                    }
                }
                assert!(hit, "never found the {phase:?} phase to kill in");
                kill9(&mut child);
                service_kills += 1;
            }
            Phase::Rebuild => {
                while let Some(sent) = in_flight.join_next().await {
                    settle(
                        sent.expect("task"),
                        &mut queues,
                        &mut busy,
                        &mut acked,
                        &mut acked_batches,
                        &mut retried,
                    );
                }
                // On SQLite the rebuild needs the store to itself (its lock
                // file): the service goes down first, hard.
                if backend == Backend::Sqlite {
                    kill9(&mut child);
                    service_kills += 1;
                }
                let mut delay = rng.random_range(300..3000u64);
                loop {
                    let mut rebuild = spawn_rebuild(d, &env);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    if rebuild.try_wait().expect("wait").is_none() {
                        kill9(&mut rebuild);
                        break;
                    }
                    // It finished first: again, sooner.
                    delay /= 2;
                    assert!(delay > 10, "the rebuild always finished before the kill");
                }
                if backend == Backend::Postgres {
                    *killed.entry(phase).or_default() += 1;
                    continue;
                }
            }
        }
        *killed.entry(phase).or_default() += 1;
        while let Some(sent) = in_flight.join_next().await {
            settle(
                sent.expect("task"),
                &mut queues,
                &mut busy,
                &mut acked,
                &mut acked_batches,
                &mut retried,
            );
        }
        (child, addr) = start(d.dir.path(), &env_ref);
    }
    assert!(plan.is_empty(), "kills left: {plan:?}");
    let head = caught_up(&addr).await;
    terminate(&mut child);
    let ingest_seconds = started.elapsed().as_secs_f64();

    let config = config_of(d, &[]);
    let store = mdm_api::compose::open_event_store(&config).await.expect("event store");
    let log = read_log(store.as_ref()).await;
    store.close().await;
    // The SQLite store's lock file is held until the last handle goes.
    drop(store);
    assert!(log.last().is_some_and(|e| e.position.0 == head));

    // 1. Every acknowledged record present exactly once.
    let rows = source_records(&config).await;
    let mut live_captures: HashMap<&str, (usize, usize)> = HashMap::new(); // stream -> (captures, most alive at once)
    for e in log.iter().filter(|e| e.stream.starts_with("source-")) {
        let entry = live_captures.entry(e.stream.as_str()).or_default();
        match e.event_type.as_str() {
            "SourceRecordCaptured" => {
                entry.0 += 1;
                entry.1 += 1;
            }
            "SourceRecordRetracted" => entry.1 = entry.1.saturating_sub(1),
            _ => {}
        }
        assert!(entry.1 <= 1, "a record captured twice without a retraction between");
    }
    let mut present_once = 0usize;
    for key in &acked {
        let (n, stream) = rows
            .get(key)
            .unwrap_or_else(|| panic!("an acknowledged {} record is missing", key.0));
        assert_eq!(*n, 1, "a {} record is in the read model {n} times", key.0);
        let captures = live_captures.get(stream.as_str()).map(|c| c.0).unwrap_or(0);
        assert!(
            captures >= 1,
            "an acknowledged {} record has no capture in the log",
            key.0
        );
        present_once += 1;
    }
    assert_eq!(
        rows.len(),
        live_captures.len(),
        "read model rows against streams in the log"
    );
    let duplicates_captured = rows.values().filter(|(n, _)| *n > 1).count();

    // 2. No customer created twice for one source record.
    let decided = decisions(&log);
    let mut created: HashMap<&str, usize> = HashMap::new();
    let mut placed: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut customers = 0i64;
    for d in &decided {
        match &d.decision {
            Decision::CustomerCreated { record, .. } => {
                *created.entry(record.as_str()).or_default() += 1;
                placed.insert(record.as_str());
                customers += 1;
            }
            Decision::RecordLinked { record, .. } => {
                placed.insert(record.as_str());
            }
            Decision::CustomersMerged { absorbed, .. } => customers -= absorbed.len() as i64,
            _ => {}
        }
    }
    let duplicates_created = created
        .iter()
        .filter(|(record, n)| **n > live_captures.get(**record).map(|c| c.0).unwrap_or(0))
        .count();
    assert_eq!(duplicates_created, 0, "source records with a customer created twice");
    for (stream, (captures, _)) in &live_captures {
        assert!(
            placed.contains(stream),
            "a captured record never created nor linked ({captures} captures)"
        );
    }
    for seq in decided.iter().map(|d| d.seq).zip(1..) {
        assert_eq!(seq.0, seq.1, "decision sequence numbers are dense");
    }

    // 3. Every read model equals a rebuild from the log.
    let live = dump_all(&config).await;
    let out = mdm(d, &env_ref, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rebuilt = dump_all(&config).await;
    assert_eq!(live.len(), rebuilt.len());
    let mut rows_compared = 0;
    for ((table, a), (other, b)) in live.iter().zip(&rebuilt) {
        assert_eq!(table, other);
        let (a, b): (BTreeSet<&String>, BTreeSet<&String>) = (a.iter().collect(), b.iter().collect());
        assert!(
            a == b,
            "{table}: {} rows only live, {} only rebuilt; first live-only: {:?}; first rebuilt-only: {:?}",
            a.difference(&b).count(),
            b.difference(&a).count(),
            a.difference(&b).next().map(|r| r.chars().take(400).collect::<String>()),
            b.difference(&a).next().map(|r| r.chars().take(400).collect::<String>()),
        );
        rows_compared += a.len();
    }

    // 4. The same source events in the same order, into a fresh log, one
    // uninterrupted `mdm resolve`: the same decisions.
    let fresh = Deployment::new(Backend::Sqlite, "crash-fresh");
    let key_store = match &d.db {
        Some(db) => db.url.clone(),
        None => format!("sqlite:{}", d.dir.path().join("mdm-data/keys.db").display()),
    };
    let fresh_env = [
        ("MDM_SOURCES_FILE".to_owned(), SOURCES_EXAMPLE.to_owned()),
        ("MDM_MASTER_KEY".to_owned(), TEST_MASTER_KEY.to_owned()),
        ("MDM_KEY_STORE_URL".to_owned(), key_store.clone()),
        ("MDM_SQLITE_FSYNC".to_owned(), "false".to_owned()),
    ];
    let fresh_config = config_of(
        &fresh,
        &[
            ("MDM_MASTER_KEY", TEST_MASTER_KEY.to_owned()),
            ("MDM_KEY_STORE_URL", key_store),
            ("MDM_SQLITE_FSYNC", "false".to_owned()),
        ],
    );
    let store = mdm_api::compose::open_event_store(&fresh_config)
        .await
        .expect("fresh store");
    let mut source_events = 0usize;
    for e in log.iter().filter(|e| e.stream.starts_with("source-")) {
        let expected = match e.version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v - 1),
        };
        store
            .append(
                &e.stream,
                expected,
                vec![NewEvent::new(
                    e.id,
                    e.event_type.clone(),
                    e.data.clone(),
                    e.metadata.clone(),
                )],
            )
            .await
            .expect("copied");
        source_events += 1;
    }
    store.close().await;
    drop(store);
    let fresh_ref: Vec<(&str, &str)> = fresh_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = mdm(&fresh, &fresh_ref, &["resolve"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = mdm_api::compose::open_event_store(&fresh_config)
        .await
        .expect("fresh store");
    let uninterrupted = decisions(&read_log(store.as_ref()).await);
    store.close().await;
    let (a, b) = (canonical(&decided), canonical(&uninterrupted));
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        panic!(
            "decision {} differs from the uninterrupted run's:\ncrashed:       {}\nuninterrupted: {}",
            i + 1,
            a[i],
            b[i]
        );
    }
    assert_eq!(a.len(), b.len(), "decisions in the crashed and the uninterrupted run");

    let kills_text = [Phase::Ingest, Phase::Resolution, Phase::Projection, Phase::Rebuild]
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                format!("{p:?}").to_lowercase(),
                killed.get(p).copied().unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "crash {name}: seed {seed}; records {input_records} ({} source records); acknowledged {}; kills {kills_text}; \
         (the service {service_kills} times); retried {retried}; present exactly once {present_once}; duplicates {}; customers {customers}; \
         tables compared {} ({rows_compared} rows); decisions compared {} ({source_events} source events); \
         seconds {:.1} ({ingest_seconds:.1} to ingest and catch up)",
        rows.len(),
        acked.len(),
        duplicates_captured + duplicates_created,
        live.len(),
        a.len(),
        started.elapsed().as_secs_f64(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sqlite() {
    crash(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_postgres() {
    crash(Backend::Postgres).await;
}
