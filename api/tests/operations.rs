//! Operations: the Compose file against the Compose specification (no
//! Docker engine needed), backup and restore of the embedded store while
//! it serves, and graceful shutdown with a large ingest batch in flight.

// The tests print what they measured (one line each), for the docs.
#![allow(clippy::print_stdout)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `docker-compose.yml` parsed from YAML into the JSON data model the
/// schema speaks about.
fn compose_file() -> Value {
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    serde_json::to_value(yaml).expect("plain data (string keys)")
}

/// The vendored schema (ops/compose-spec.json, see ops/README.md for its
/// source commit) validates `docker-compose.yml` with no error.
#[test]
fn compose_file_follows_the_compose_specification() {
    let schema: Value = serde_json::from_str(&read("ops/compose-spec.json")).expect("the schema is JSON");
    assert_eq!(schema["title"], "Compose Specification");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .expect("the schema compiles");
    let compose = compose_file();
    let errors: Vec<String> = validator
        .iter_errors(&compose)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "docker-compose.yml breaks the Compose specification:\n{}",
        errors.join("\n")
    );

    // The validator is not vacuous: the same file with a misspelt service
    // key, a port of the wrong type or an unknown top-level key is refused.
    let mut broken = compose.clone();
    broken["services"]["mdm"]["enviroment"] = serde_json::json!({"A": "b"});
    assert!(!validator.is_valid(&broken), "an unknown service key passes");
    let mut broken = compose.clone();
    broken["services"]["mdm"]["depends_on"]["postgres"]["condition"] = serde_json::json!("whenever");
    assert!(!validator.is_valid(&broken), "an unknown depends_on condition passes");
    let mut broken = compose;
    broken["servces"] = serde_json::json!({});
    assert!(!validator.is_valid(&broken), "an unknown top-level key passes");
}

/// The Compose file runs KurrentDB, PostgreSQL and the service built from
/// the repository's Dockerfile; that Dockerfile builds and runs the `mdm`
/// binary; the service's environment is a valid `mdm` configuration that
/// names the other two services.
#[test]
fn compose_runs_kurrentdb_postgres_and_the_mdm_image() {
    let compose = compose_file();
    let services = compose["services"].as_object().expect("services");
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["eventstoredb", "mdm", "postgres"]);
    let esdb_image = services["eventstoredb"]["image"].as_str().expect("an image");
    assert!(
        esdb_image.contains("kurrentdb") || esdb_image.contains("eventstore"),
        "{esdb_image}"
    );
    let pg_image = services["postgres"]["image"].as_str().expect("an image");
    assert!(pg_image.starts_with("postgres:"), "{pg_image}");

    // The service is built from the Dockerfile at the repository's root.
    let mdm = &services["mdm"];
    let context = mdm["build"]
        .as_str()
        .or_else(|| mdm["build"]["context"].as_str())
        .expect("mdm is built");
    assert_eq!(context, ".");
    let dockerfile = mdm["build"]["dockerfile"].as_str().unwrap_or("Dockerfile");
    let docker = read(dockerfile);
    let instructions: Vec<&str> = docker
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("RUN cargo build --release --locked -p mdm-api")),
        "the Dockerfile builds the mdm-api package:\n{docker}"
    );
    let cargo = read("api/Cargo.toml");
    assert!(cargo.contains("[[bin]]\nname = \"mdm\""), "mdm-api's binary is `mdm`");
    assert!(
        instructions.contains(&"COPY --from=build /src/target/release/mdm /usr/local/bin/mdm"),
        "the final image holds the binary built in the first stage:\n{docker}"
    );
    let last_stage = docker.rsplit("\nFROM ").next().expect("stages");
    assert!(last_stage.contains("ENTRYPOINT [\"mdm\"]"), "{last_stage}");
    assert!(last_stage.contains("CMD [\"serve\"]"), "{last_stage}");
    // The build context leaves out target/ (gigabytes) and the master key.
    let ignored: Vec<String> = read(".dockerignore").lines().map(|l| l.trim().to_owned()).collect();
    for entry in ["target", ".git", "mdm-master.key"] {
        assert!(ignored.iter().any(|l| l == entry), ".dockerignore lacks {entry}");
    }
    assert!(
        read(".gitignore")
            .lines()
            .any(|l| l.trim_start_matches('/') == "mdm-master.key"),
        "the master key file must never be committed"
    );

    // Its environment, read by the service's own configuration parser.
    let env: std::collections::BTreeMap<String, String> = mdm["environment"]
        .as_object()
        .expect("environment as a map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string values").to_owned()))
        .collect();
    let config = mdm_api::config::Config::from_sources(None, &env).expect("a valid mdm configuration");
    use mdm_api::config::{EventStoreConfig, KeyStoreConfig, MasterKeyConfig, ReadModelConfig};
    let EventStoreConfig::KurrentDb { url } = &config.event_store else {
        panic!("the log is not on KurrentDB: {:?}", config.event_store)
    };
    assert!(
        url.expose().starts_with("esdb://eventstoredb:2113"),
        "the eventstoredb service"
    );
    let ReadModelConfig::Postgres { url, .. } = &config.read_models else {
        panic!("the read models are not on PostgreSQL")
    };
    let pg_env = &services["postgres"]["environment"];
    let pg_url = format!(
        "postgres://{}:{}@postgres:5432/{}",
        pg_env["POSTGRES_USER"].as_str().expect("user"),
        pg_env["POSTGRES_PASSWORD"].as_str().expect("password"),
        pg_env["POSTGRES_DB"].as_str().expect("database"),
    );
    assert_eq!(url.expose(), pg_url, "the postgres service's database");
    let KeyStoreConfig::Postgres { url, .. } = &config.keys.store else {
        panic!("the data keys are not on PostgreSQL (never in the event log)")
    };
    assert_eq!(url.expose(), pg_url);
    // The master key comes from a Compose secret, not from the environment.
    let MasterKeyConfig::File { path, generate } = &config.keys.master_key else {
        panic!("the master key must come from a file (a Compose secret)")
    };
    assert!(!generate, "a server deployment never generates its master key");
    let secret = mdm["secrets"][0].as_str().expect("a secret");
    assert_eq!(path, Path::new("/run/secrets").join(secret).as_path());
    assert_eq!(compose["secrets"][secret]["file"], "./mdm-master.key");
    // The sources file is the repository's example, mounted read-only.
    let sources = config.sources_file.as_ref().expect("a sources file");
    let mount = mdm["volumes"][0].as_str().expect("a volume");
    let (host, container) = mount.trim_end_matches(":ro").split_once(':').expect("host:container");
    let relative = sources
        .strip_prefix(container)
        .expect("the file is in the mounted folder");
    assert!(
        repo().join(host).join(relative).is_file(),
        "{mount} holds {}",
        sources.display()
    );
    // It starts once both stores answer their health checks.
    for store in ["eventstoredb", "postgres"] {
        assert_eq!(mdm["depends_on"][store]["condition"], "service_healthy", "{store}");
        assert!(
            services[store]["healthcheck"]["test"].is_array(),
            "{store} has a health check"
        );
    }
    assert_eq!(env["MDM_HTTP_LISTEN"], "0.0.0.0:8080");
    assert_eq!(mdm["ports"][0], "8080:8080");
}

// ---------------------------------------------------------------------------
// Backup and restore of the embedded store.
// ---------------------------------------------------------------------------

use common::*;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn signup(id: &str, n: usize) -> Value {
    serde_json::json!({
        "signupId": id,
        "firstName": format!("Given{n}"),
        "lastName": format!("Family{}", n % 997),
        "email": format!("person{n}@example.com"),
        "mobile": format!("+1312555{:04}", n % 10_000),
        "birthDate": format!("19{:02}-0{}-1{}", 40 + n % 60, 1 + n % 9, n % 10),
    })
}

fn ndjson(ids: std::ops::Range<usize>, prefix: &str) -> String {
    ids.map(|n| signup(&format!("{prefix}-{n}"), n).to_string() + "\n")
        .collect()
}

fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("opens");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("checks")
}

fn env_map(env: &[(String, String)]) -> std::collections::BTreeMap<String, String> {
    env.iter().cloned().collect()
}

/// Every row of every projection's tables.
async fn dump_read_models(
    path: &Path,
    projections: &[Arc<dyn mdm_projections::runner::Projection>],
) -> Vec<(String, Vec<String>)> {
    let db = mdm_projections::ReadDb::open_sqlite(path).await.expect("read.db");
    let mut out = Vec::new();
    for p in projections {
        out.extend(mdm_projections::runner::dump(&db, p.as_ref()).await.expect("dump"));
    }
    db.close().await;
    out
}

/// Polls `/v1/metrics` until the log head stops moving and every
/// projection has applied it; returns the head.
async fn caught_up(addr: &str) -> u64 {
    let client = api(addr);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    loop {
        let text = client
            .get(format!("http://{addr}/v1/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let value = |prefix: &str| -> Vec<u64> {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .map(|v| v as u64)
                .collect()
        };
        let head = value("mdm_log_head_position").first().copied().unwrap_or(0);
        let positions = value("mdm_projection_position{");
        let resolver_up = value("mdm_resolver_up").first().copied() == Some(1);
        let done = resolver_up && positions.len() == 4 && positions.iter().all(|p| *p == head) && head > 0;
        if done && last == Some(head) {
            return head;
        }
        last = done.then_some(head);
        assert!(Instant::now() < deadline, "not caught up after 120 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Serve, ingest without pause, `mdm backup` meanwhile, ingest on, stop;
/// restore the backup into a new folder and serve it: every record
/// acknowledged before the backup began is there, resolved, exactly once;
/// each file passes `PRAGMA integrity_check`; the read models equal a
/// rebuild from the restored log.
#[tokio::test]
async fn backup_while_serving_then_restore() {
    let d = Deployment::new(Backend::Sqlite, "backup");
    let env = d.env();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, addr) = start(d.dir.path(), &env_ref);
    let client = api(&addr);

    // The ingest client: batches of 100, each acknowledged id recorded.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = {
        let (acked, stop, client, addr) = (acked.clone(), stop.clone(), client.clone(), addr.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let body = ndjson(n..n + 100, "B");
                let r = client
                    .post(format!("http://{addr}/v1/sources/web_signup/records"))
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .expect("ingest answers");
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.expect("json");
                let records = v["records"].as_array().expect("records");
                assert_eq!(records.len(), 100);
                let mut a = acked.lock().expect("lock");
                for (i, rec) in records.iter().enumerate() {
                    assert_eq!(rec["outcome"], "captured", "{rec}");
                    a.push(format!("B-{}", n + i));
                }
                n += 100;
            }
            n
        })
    };
    let wait_for = |count: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while acked.lock().expect("lock").len() < count {
                assert!(Instant::now() < deadline, "ingest stalled");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(1_000).await;

    // The backup, while ingest goes on.
    let before: BTreeSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    let dest = d.dir.path().join("backup-1");
    let started = Instant::now();
    let out = mdm(&d, &env_ref, &["backup", dest.to_str().expect("utf-8")]);
    let backup_seconds = started.elapsed().as_secs_f64();
    let lines = json_lines(&out);
    let during = acked.lock().expect("lock").len() - before.len();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["file"].as_str().expect("file"))
            .collect::<Vec<_>>(),
        ["read.db", "events.db", "keys.db"]
    );
    for l in &lines {
        assert_eq!(l["integrity"], "ok", "{l}");
    }
    let events_in_backup = lines[1]["events"].as_i64().expect("events");
    assert!(
        events_in_backup as usize >= before.len(),
        "{events_in_backup} events for {} records",
        before.len()
    );
    assert!(
        !dest.join("master.key").exists(),
        "the master key is left out unless asked for"
    );
    // Into a folder that is not empty: refused.
    let again = mdm(&d, &env_ref, &["backup", dest.to_str().expect("utf-8")]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    // With the master key, readable by its owner only.
    let with_key = d.dir.path().join("backup-with-key");
    json_lines(&mdm(
        &d,
        &env_ref,
        &["backup", "--include-master-key", with_key.to_str().expect("utf-8")],
    ));
    let original_key = std::fs::read(d.dir.path().join("mdm-data/master.key")).expect("master key");
    assert_eq!(
        std::fs::read(with_key.join("master.key")).expect("copied"),
        original_key
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(with_key.join("master.key"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Ingest goes on after the backup, then the service stops.
    let after_backup = acked.lock().expect("lock").len();
    wait_for(after_backup + 500).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = ingest.await.expect("ingest task");
    assert!(terminate(&mut child).success());
    let total = acked.lock().expect("lock").len();
    assert_eq!(sent, total);

    // Restore: the backup's files and the master key (from its own
    // backup) into a new data folder.
    let restored = Deployment::new(Backend::Sqlite, "restored");
    let data = restored.dir.path().join("mdm-data");
    std::fs::create_dir_all(&data).expect("mkdir");
    for file in ["events.db", "read.db", "keys.db"] {
        std::fs::copy(dest.join(file), data.join(file)).expect("copy back");
        assert_eq!(integrity(&data.join(file)), "ok", "{file}");
    }
    std::fs::write(data.join("master.key"), &original_key).expect("master key");
    std::fs::copy(
        d.dir.path().join("test-admin.key"),
        restored.dir.path().join("test-admin.key"),
    )
    .expect("key");
    let (mut child, addr) = start(restored.dir.path(), &env_ref);
    let head = caught_up(&addr).await;
    // Every record acknowledged before the backup began has its customer.
    let client = api(&addr);
    for id in &before {
        let r = client
            .get(format!("http://{addr}/v1/sources/web_signup/records/{id}/customer"))
            .send()
            .await
            .expect("answers");
        assert_eq!(
            r.status(),
            200,
            "{id} acknowledged before the backup is not in the restored store"
        );
    }
    assert!(terminate(&mut child).success());

    // Nothing torn: each source record of the restored log is one stream
    // with its captured event, and in the cross-reference exactly once.
    let events =
        rusqlite::Connection::open_with_flags(data.join("events.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("opens");
    let (streams, captured): (i64, i64) = events
        .query_row(
            "SELECT count(DISTINCT stream), sum(type = 'SourceRecordCaptured') FROM event WHERE stream LIKE 'source-web_signup-%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("counts");
    drop(events);
    assert_eq!(streams, captured);
    let out = mdm(&restored, &env_ref, &["export", "xref", "--system", "web_signup"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let xref: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).expect("source id").to_owned())
        .collect();
    let distinct: BTreeSet<&String> = xref.iter().collect();
    assert_eq!(distinct.len(), xref.len(), "a record twice in the cross-reference");
    assert_eq!(xref.len() as i64, streams, "every restored record is resolved");
    assert!(before.iter().all(|id| distinct.contains(id)));

    // The read models equal a rebuild from the restored log.
    let mut config_env = env_map(&env);
    config_env.insert("MDM_DATA_DIR".into(), data.to_string_lossy().into_owned());
    let config = mdm_api::config::Config::from_sources(None, &config_env).expect("config");
    let projections = mdm_projections::all(mdm_api::compose::customer_settings(&config).expect("settings"));
    let live = dump_read_models(&data.join("read.db"), &projections).await;
    let out = mdm(&restored, &env_ref, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rebuilt = dump_read_models(&data.join("read.db"), &projections).await;
    assert_eq!(live.len(), rebuilt.len());
    let mut rows = 0;
    for ((table, a), (_, b)) in live.iter().zip(&rebuilt) {
        let (a, b): (BTreeSet<&String>, BTreeSet<&String>) = (a.iter().collect(), b.iter().collect());
        assert!(
            a == b,
            "{table}: {} rows only live, {} only rebuilt",
            a.difference(&b).count(),
            b.difference(&a).count()
        );
        rows += a.len();
    }
    for file in ["events.db", "read.db", "keys.db"] {
        assert_eq!(integrity(&data.join(file)), "ok", "{file} after serving");
    }
    println!(
        "backup: {:.2} s while serving ({} records acknowledged during it); {} acknowledged before, {} in the \
         backup's log ({events_in_backup} events), {total} in all; restored head {head}, {rows} read-model rows \
         equal to a rebuild",
        backup_seconds,
        during,
        before.len(),
        streams,
    );
}

// ---------------------------------------------------------------------------
// Graceful shutdown.
// ---------------------------------------------------------------------------

/// Source records captured in the deployment's log (read beside the
/// running service: SQLite through a read-only connection, PostgreSQL
/// through psql).
fn captured_in_log(d: &Deployment) -> i64 {
    let sql = "SELECT count(*) FROM event WHERE type = 'SourceRecordCaptured'";
    match &d.db {
        None => {
            let conn = rusqlite::Connection::open_with_flags(
                d.dir.path().join("mdm-data/events.db"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("opens");
            conn.query_row(sql, [], |r| r.get(0)).expect("counts")
        }
        Some(db) => db
            .query(&sql.replace("FROM event", "FROM mdm_store.event"))
            .trim()
            .parse()
            .expect("a count"),
    }
}

/// Each projection's stored checkpoint.
fn checkpoints(d: &Deployment) -> std::collections::BTreeMap<String, i64> {
    let sql = "SELECT name, position FROM projection_checkpoint";
    match &d.db {
        None => {
            let conn = rusqlite::Connection::open_with_flags(
                d.dir.path().join("mdm-data/read.db"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("opens");
            let mut stmt = conn.prepare(sql).expect("prepares");
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .expect("reads");
            rows.map(|r| r.expect("row")).collect()
        }
        Some(db) => db
            .query(&sql.replace("FROM projection_checkpoint", "FROM mdm_read.projection_checkpoint"))
            .lines()
            .filter_map(|l| {
                let (name, position) = l.split_once('|')?;
                Some((name.to_owned(), position.parse().ok()?))
            })
            .collect(),
    }
}

/// SIGTERM while a large ingest batch is in flight: the request completes
/// with every record's answer, those records are in the log, each
/// projection commits the batch it is applying and stops at its stored
/// checkpoint, and the process exits 0 within the bound.
async fn sigterm_finishes_in_flight_batches(backend: Backend) {
    const BATCH: usize = 10_000;
    const BOUND: Duration = Duration::from_secs(60);
    let mut d = Deployment::new(backend, "shutdown");
    d.extra.push(("MDM_LOG".into(), "info,mdm_projections=debug".into()));
    let env = d.env();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, addr) = start(d.dir.path(), &env_ref);
    let client = api(&addr);
    // A first record, so that everything runs.
    let r = client
        .post(format!("http://{addr}/v1/sources/web_signup/records"))
        .json(&signup("G-warm", 0))
        .send()
        .await
        .expect("answers");
    assert!(r.status().is_success());
    let baseline = captured_in_log(&d);

    let big = ndjson(0..BATCH, "G");
    let request = {
        let (client, addr) = (client.clone(), addr.clone());
        tokio::spawn(async move {
            let r = client
                .post(format!("http://{addr}/v1/sources/web_signup/records"))
                .header("content-type", "application/x-ndjson")
                .timeout(Duration::from_secs(300))
                .body(big)
                .send()
                .await
                .expect("the in-flight request is answered");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("json");
            (status, body, Instant::now())
        })
    };
    // Wait until the batch is being stored, then SIGTERM.
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_signal = loop {
        let n = captured_in_log(&d) - baseline;
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "the batch never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(
        (at_signal as usize) < BATCH,
        "the batch was complete before the signal ({at_signal} records): nothing in flight"
    );

    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            signalled.elapsed() < BOUND,
            "mdm did not exit within {BOUND:?} of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited = signalled.elapsed();
    assert!(exit.success(), "exit status {exit}");
    let (status, body, answered) = request.await.expect("request task");
    assert_eq!(status, 200, "{body}");
    let records = body["records"].as_array().expect("records");
    assert_eq!(records.len(), BATCH, "one answer per record");
    assert!(records.iter().all(|r| r["outcome"] == "captured"));
    assert_eq!(body["summary"]["captured"], BATCH);
    // Every record answered is in the log.
    assert_eq!(captured_in_log(&d) - baseline, BATCH as i64);

    // Each projection stopped after a committed batch, at its checkpoint.
    let log = std::fs::read_to_string(d.dir.path().join("serve.log")).expect("log");
    let shutting = log.find("shutting down").expect("the service logged the signal");
    let after = &log[shutting..];
    let stored = checkpoints(&d);
    let mut stopped = 0;
    for line in after
        .lines()
        .filter(|l| l.contains("projection stopped after its last batch"))
    {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .map(|v| v.trim_matches('"').to_owned())
                .expect("field")
        };
        let name = field("projection");
        let position: i64 = field("position").parse().expect("position");
        assert_eq!(
            stored.get(&name),
            Some(&position),
            "{name}: stopped at {position}, stored {stored:?}"
        );
        stopped += 1;
    }
    assert_eq!(stopped, 4, "every projection stops after its batch:\n{after}");
    let batches_during_shutdown = after.lines().filter(|l| l.contains("batch committed")).count();
    assert!(!log.contains("restarting from its checkpoint"), "a projection failed");
    assert!(after.contains("mdm stopped"));
    println!(
        "{backend:?}: SIGTERM with {at_signal} of {BATCH} records stored; the request answered {:.2} s and the \
         process exited 0 {:.2} s after the signal; {batches_during_shutdown} projection batches committed while \
         shutting down",
        answered.duration_since(signalled).as_secs_f64(),
        exited.as_secs_f64(),
    );
}

on_both_backends!(sigterm_finishes_in_flight_batches);
