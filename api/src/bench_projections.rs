//! `mdm bench projections`: full rebuild speed of the read models on each
//! read-model backend, against plain batched inserts into the same database
//! in the same run, and projection lag under sustained ingest.
//!
//! - Data: `mdm datagen --records N` files, imported into a fresh embedded
//!   event store and resolved with the default parameters, so the log holds
//!   N source-record events plus the resolver's decisions (about 2N events).
//! - Rebuild: for each backend (a SQLite file; a fresh PostgreSQL schema)
//!   and each run, every projection catches up from position 0 into empty
//!   tables on its own (events/s = events in the log / wall time), then all
//!   three at once (the way `mdm serve` runs them).
//! - Baseline: the same number of rows as the log has events, inserted with
//!   multi-row INSERTs of 5,000 rows per transaction into one plain table
//!   (a text key, a bigint and a 200-byte text) through the same pool: what
//!   the database itself takes for one row per event.
//! - Lag: a fresh embedded log and read models, the resolver and the three
//!   projections following it live, while records are ingested at
//!   `--lag-rate` records/s for `--lag-seconds`. Each committed batch
//!   reports when its oldest event was recorded and when the batch
//!   committed; every event of the batch is counted with that (largest)
//!   lag, so the percentiles are upper bounds.
//!
//! One JSON line per figure on stdout, medians over `--repeat` runs.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mdm_commands::import::{import_file, ImportOptions, Syntax};
use mdm_commands::ingest::{IngestContext, Ingestor};
use mdm_commands::input::csv::{CsvOptions, CsvRecords};
use mdm_commands::opened::SourceRecordOpener;
use mdm_commands::resolver::{RandomIds, Resolver, ResolverSettings};
use mdm_domain::matching::model::{MatchParameters, Scorer};
use mdm_domain::metadata::Actor;
use mdm_domain::resolution::engine::{Engine, Limits};
use mdm_domain::source::{InputFormat, SourceDefinitions};
use mdm_projections::db::{execute_rows, Value};
use mdm_projections::runner::{self, BatchApplied};
use mdm_projections::{CustomerSettings, Projection, ReadDb, Runner};
use mdm_store::keys::sqlite::SqliteKeyStore;
use mdm_store::keys::{KeyStore, MasterKey};
use mdm_store::sqlite::SqliteEventStore;
use mdm_store::{EventStore, Position};
use serde_json::json;
use sqlx::Connection;

use crate::datagen::{self, DatagenArgs};

/// Options of `mdm bench projections`.
#[derive(Debug, clap::Args)]
pub struct ProjectionsBenchArgs {
    /// Source records to generate (the log then holds about twice as many
    /// events, with the resolver's decisions).
    #[arg(long, default_value_t = 500_000)]
    pub records: u64,
    /// Rebuild runs per backend; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Read-model backends to measure: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<String>,
    /// The PostgreSQL server (a database is created and dropped per run).
    #[arg(
        long,
        env = "MDM_BENCH_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub postgres_url: String,
    /// Ingest rate of the lag measurement, records/s (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub lag_rate: u64,
    /// How long the lag measurement ingests.
    #[arg(long, default_value_t = 20)]
    pub lag_seconds: u64,
    /// Where the generated files and the stores go (a temporary folder by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The sources file the generated data follows.
    #[arg(long, default_value = "config/sources.example.toml")]
    pub sources: PathBuf,
    /// Reuse the log a previous run left in `--dir` (same `--records`):
    /// skips generating, importing and resolving when profiling.
    #[arg(long)]
    pub reuse_log: bool,
    /// Only these projections (all by default).
    #[arg(long, value_delimiter = ',')]
    pub projections: Vec<String>,
}

fn ctx() -> IngestContext {
    IngestContext {
        actor: Actor::Operator,
        correlation_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) struct Log {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) keys: Arc<dyn KeyStore>,
    pub(crate) events: u64,
}

/// Opens the log in `dir`, creating it (and its master key file) when new.
pub(crate) async fn open_log(dir: &Path) -> anyhow::Result<(Arc<dyn EventStore>, Arc<dyn KeyStore>)> {
    std::fs::create_dir_all(dir)?;
    let key_file = dir.join("master.key");
    let master = match std::fs::read_to_string(&key_file) {
        Ok(text) => MasterKey::from_base64(text.trim())?,
        Err(_) => {
            let key = MasterKey::generate();
            std::fs::write(&key_file, key.to_base64())?;
            key
        }
    };
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(dir.join("events.db")).await?);
    let keys: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&dir.join("keys.db"), master).await?);
    Ok((store, keys))
}

pub(crate) async fn count_events(store: &Arc<dyn EventStore>) -> anyhow::Result<u64> {
    let mut events = 0u64;
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, mdm_store::MAX_READ).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        events += page.len() as u64;
    }
    Ok(events)
}

pub(crate) fn resolver_settings(settings: &CustomerSettings) -> ResolverSettings {
    ResolverSettings {
        features: settings.features.clone(),
        ..ResolverSettings::default()
    }
}

pub(crate) fn engine(rules: &crate::sources::MatchingConfig) -> anyhow::Result<Engine> {
    Ok(Engine::new(
        Scorer::new(MatchParameters::defaults(), rules.rules.clone())?,
        Limits::default(),
    ))
}

/// Imports every generated file and resolves it.
pub(crate) async fn build_log(
    dir: &Path,
    generated: &Path,
    sources: &Arc<SourceDefinitions>,
    matching: &crate::sources::MatchingConfig,
    settings: &CustomerSettings,
) -> anyhow::Result<Log> {
    // A fresh log each run (a left-over one has another master key).
    let _ = std::fs::remove_dir_all(dir);
    let (store, keys) = open_log(dir).await?;
    let ingestor = Ingestor::new(store.clone(), keys.clone(), sources.clone());
    for def in sources.iter() {
        for ext in ["ndjson", "csv", "json"] {
            let path = generated.join(format!("{}.{ext}", def.system));
            if !path.exists() {
                continue;
            }
            let syntax = Syntax::guess(&path, def.format == InputFormat::Debezium).context("unknown file type")?;
            let options = ImportOptions {
                syntax,
                batch_size: 8_000,
                full_snapshot: false,
            };
            import_file(&ingestor, &def.system, &path, options, &ctx(), |_| {}).await?;
        }
    }
    let (mut resolver, _) = Resolver::start(
        store.clone(),
        keys.clone(),
        engine(matching)?,
        resolver_settings(settings),
        Box::new(RandomIds),
    )
    .await?;
    resolver.catch_up().await?;
    let events = count_events(&store).await?;
    Ok(Log { store, keys, events })
}

/// A fresh read-model database of `backend` for run `run`: a new SQLite
/// file, or a new schema on the PostgreSQL server (as `mdm bench store`
/// does), returned so that `drop_db` can remove it.
async fn fresh_db(
    backend: &str,
    dir: &Path,
    run: usize,
    postgres_url: &str,
) -> anyhow::Result<(ReadDb, Option<String>)> {
    match backend {
        "sqlite" => {
            let path = dir.join(format!("read-{run}.db"));
            let _ = std::fs::remove_file(&path);
            Ok((ReadDb::open_sqlite(&path).await?, None))
        }
        "postgres" => {
            let schema = format!("mdm_bench_{}", uuid::Uuid::now_v7().simple());
            let db = ReadDb::open_postgres(postgres_url, &schema)
                .await
                .context("connecting to PostgreSQL (--postgres-url / MDM_BENCH_DATABASE_URL)")?;
            Ok((db, Some(schema)))
        }
        other => anyhow::bail!("unknown backend `{other}` (sqlite or postgres)"),
    }
}

async fn drop_db(postgres_url: &str, schema: Option<String>) -> anyhow::Result<()> {
    if let Some(schema) = schema {
        let mut admin = sqlx::PgConnection::connect(postgres_url).await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut admin)
            .await?;
    }
    Ok(())
}

/// The baseline: `rows` plain rows in multi-row INSERTs, 5,000 per
/// transaction. Returns rows/s.
async fn plain_inserts(db: &ReadDb, rows: u64) -> anyhow::Result<f64> {
    let int = match db.dialect() {
        mdm_projections::Dialect::Postgres => "bigint",
        mdm_projections::Dialect::Sqlite => "integer",
    };
    sqlx::query("DROP TABLE IF EXISTS bench_plain")
        .execute(db.pool())
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE bench_plain (key text PRIMARY KEY, position {int} NOT NULL, body text NOT NULL)"
    ))
    .execute(db.pool())
    .await?;
    let body = "x".repeat(200);
    let started = Instant::now();
    let mut done = 0u64;
    while done < rows {
        let n = (rows - done).min(5_000);
        let batch: Vec<Vec<Value>> = (done..done + n)
            .map(|i| {
                vec![
                    Value::text(format!("{:032x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
                    Value::int(i as i64),
                    Value::text(body.clone()),
                ]
            })
            .collect();
        let mut tx = db.begin_write().await?;
        execute_rows(&mut tx, "INSERT INTO bench_plain (key, position, body)", "", 3, &batch).await?;
        tx.commit().await?;
        done += n;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_plain").execute(db.pool()).await?;
    Ok(rate)
}

async fn catch_up_one(log: &Log, db: &ReadDb, p: Arc<dyn Projection>) -> anyhow::Result<f64> {
    let opener = SourceRecordOpener::new(log.keys.clone(), 2_000_000);
    let started = Instant::now();
    Runner::new(log.store.clone(), db.clone(), p, opener).catch_up().await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn rebuild_bench(
    args: &ProjectionsBenchArgs,
    work: &Path,
    log: &Log,
    settings: &CustomerSettings,
) -> anyhow::Result<()> {
    let projections: Vec<Arc<dyn Projection>> = mdm_projections::all(settings.clone())
        .into_iter()
        .filter(|p| args.projections.is_empty() || args.projections.iter().any(|n| n == p.name()))
        .collect();
    for backend in &args.backends {
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); projections.len()];
        let mut together = Vec::new();
        let mut baseline = Vec::new();
        for run in 0..args.repeat.max(1) {
            let (db, name) = fresh_db(backend, work, run, &args.postgres_url).await?;
            baseline.push(plain_inserts(&db, log.events).await?);
            for (i, p) in projections.iter().enumerate() {
                let seconds = catch_up_one(log, &db, p.clone()).await?;
                per[i].push(log.events as f64 / seconds);
            }
            db.close().await;
            drop_db(&args.postgres_url, name).await?;
            // All three at once into fresh tables, as `mdm serve` runs them.
            let (db, name) = fresh_db(backend, work, run + 1000, &args.postgres_url).await?;
            let started = Instant::now();
            let tasks: Vec<_> = projections
                .iter()
                .map(|p| {
                    let (db, p) = (db.clone(), p.clone());
                    let (store, keys) = (log.store.clone(), log.keys.clone());
                    tokio::spawn(async move {
                        let opener = SourceRecordOpener::new(keys, 2_000_000);
                        Runner::new(store, db, p, opener).catch_up().await
                    })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
            together.push(log.events as f64 / started.elapsed().as_secs_f64());
            db.close().await;
            drop_db(&args.postgres_url, name).await?;
        }
        let base = median(baseline.clone());
        println!(
            "{}",
            json!({"bench": "projections", "figure": "plain_batched_inserts", "backend": backend,
                   "rows": log.events, "rows_per_second": base, "runs": baseline})
        );
        for (p, rates) in projections.iter().zip(per) {
            let m = median(rates.clone());
            println!(
                "{}",
                json!({"bench": "projections", "figure": "rebuild", "backend": backend, "projection": p.name(),
                       "events": log.events, "events_per_second": m, "ratio_to_plain_inserts": m / base,
                       "runs": rates})
            );
        }
        let m = median(together.clone());
        println!(
            "{}",
            json!({"bench": "projections", "figure": "rebuild_all_together", "backend": backend,
                   "events": log.events, "events_per_second": m, "ratio_to_plain_inserts": m / base,
                   "runs": together})
        );
    }
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Follows a live log while records arrive at `rate`/s.
async fn lag_bench(
    args: &ProjectionsBenchArgs,
    work: &Path,
    generated: &Path,
    sources: &Arc<SourceDefinitions>,
    matching: &crate::sources::MatchingConfig,
    settings: &CustomerSettings,
) -> anyhow::Result<()> {
    // The CSV system with the most rows feeds the ingest.
    let (system, path) = sources
        .iter()
        .filter(|d| d.format == InputFormat::Csv)
        .map(|d| (d.system.clone(), generated.join(format!("{}.csv", d.system))))
        .filter(|(_, p)| p.exists())
        .max_by_key(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .context("the generated data has no CSV system")?;
    let wanted = (args.lag_rate * args.lag_seconds) as usize;
    let file = std::fs::File::open(&path)?;
    let records: Vec<_> = CsvRecords::new(std::io::BufReader::new(file), CsvOptions::default())
        .take(wanted)
        .collect();
    let dir = work.join("lag");
    let _ = std::fs::remove_dir_all(&dir);
    let (store, keys) = open_log(&dir).await?;
    let db = ReadDb::open_sqlite(&dir.join("read.db")).await?;
    let (resolver, _) = Resolver::start(
        store.clone(),
        keys.clone(),
        engine(matching)?,
        resolver_settings(settings),
        Box::new(RandomIds),
    )
    .await?;
    let (_handle, resolver_task) = resolver.spawn();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut observers = Vec::new();
    let mut tasks = Vec::new();
    let opener = SourceRecordOpener::new(keys.clone(), 1_000_000);
    for p in mdm_projections::all(settings.clone()) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<BatchApplied>();
        observers.push((p.name(), rx));
        let runner = Runner::new(store.clone(), db.clone(), p, opener.clone()).with_observer(tx);
        tasks.push(tokio::spawn(runner::supervise(runner, stopped.clone())));
    }
    let ingestor = Ingestor::new(store.clone(), keys.clone(), sources.clone());
    let tick = Duration::from_millis(100);
    let per_tick = (args.lag_rate / 10).max(1) as usize;
    let started = Instant::now();
    let mut next = Instant::now();
    let mut sent = 0usize;
    let mut iter = records.into_iter();
    loop {
        let chunk: Vec<_> = iter.by_ref().take(per_tick).collect();
        if chunk.is_empty() {
            break;
        }
        sent += chunk.len();
        ingestor.ingest(&system, chunk, &ctx()).await?;
        next += tick;
        tokio::time::sleep_until(next.into()).await;
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    // Let everything settle, then stop.
    let head = store.head().await?;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(30) {
        let status = runner::status(store.as_ref(), &db, &mdm_projections::all(settings.clone())).await?;
        if status.iter().all(|s| s.position >= head.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    resolver_task.abort();
    for (name, mut rx) in observers {
        let mut lags: Vec<f64> = Vec::new();
        while let Ok(b) = rx.try_recv() {
            let lag = (b.committed_at - b.first_recorded_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            lags.extend(std::iter::repeat_n(lag, b.events));
        }
        lags.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({"bench": "projections", "figure": "lag_under_ingest", "projection": name, "backend": "sqlite",
                   "records_per_second_target": args.lag_rate,
                   "records_per_second_achieved": sent as f64 / ingest_seconds,
                   "events": lags.len(), "p50_ms": percentile(&lags, 0.5), "p99_ms": percentile(&lags, 0.99),
                   "max_ms": lags.last().copied().unwrap_or(0.0)})
        );
    }
    db.close().await;
    store.close().await;
    Ok(())
}

/// Runs `mdm bench projections`.
pub async fn run_projections_bench(args: ProjectionsBenchArgs) -> anyhow::Result<()> {
    let temp;
    let work = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work)?;
    let text = std::fs::read_to_string(&args.sources).with_context(|| format!("reading {}", args.sources.display()))?;
    let sources = Arc::new(crate::sources::parse_sources(&text)?);
    let matching = crate::sources::parse_matching(&text)?;
    let settings = CustomerSettings {
        rules: crate::sources::parse_survivorship(&text)?,
        trust: sources.iter().map(|s| (s.system.clone(), s.trust_rank)).collect(),
        features: matching.features.clone(),
    };
    let generated = work.join("generated");
    let started = Instant::now();
    let log = if args.reuse_log && work.join("log").join("events.db").exists() {
        let (store, keys) = open_log(&work.join("log")).await?;
        let events = count_events(&store).await?;
        Log { store, keys, events }
    } else {
        let mut gen = DatagenArgs::new(generated.clone(), 0, 42);
        gen.records = Some(args.records);
        tokio::task::spawn_blocking(move || datagen::run(&gen)).await??;
        build_log(&work.join("log"), &generated, &sources, &matching, &settings).await?
    };
    println!(
        "{}",
        json!({"bench": "projections", "figure": "log", "records": args.records, "events": log.events,
               "build_seconds": started.elapsed().as_secs_f64()})
    );
    rebuild_bench(&args, &work, &log, &settings).await?;
    log.store.close().await;
    if args.lag_rate > 0 && args.lag_seconds > 0 {
        lag_bench(&args, &work, &generated, &sources, &matching, &settings).await?;
    }
    Ok(())
}
