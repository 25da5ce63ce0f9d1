//! `mdm bench store`: what the event-store adapters cost against plain SQL
//! doing the same work on the same database, in the same run.
//!
//! For each backend it measures, each figure `--repeat` times with ours and
//! the baseline alternating (so drift on a shared machine hits both):
//! - `append_1_writer`: one-event appends to new streams from one task;
//!   baseline: one-row autocommit INSERTs into a table of the same shape;
//! - `append_8_writers`: the same from 8 concurrent tasks;
//! - `append_batch_100`: 100-event appends; baseline: 100-row INSERTs in one
//!   transaction (a single `unnest` INSERT on PostgreSQL, a multi-row INSERT
//!   inside BEGIN/COMMIT on SQLite);
//! - `read_all`: the whole log (`--log-events`, 1M by default) read in pages
//!   of `--page-size` events and decoded into `RecordedEvent`; baseline: one
//!   ordered, streamed SELECT of the same rows into plain tuples;
//! - `subscription_catch_up`: a subscription from the start until it has
//!   delivered the whole log; same baseline.
//!
//! Each figure is one JSON line on stdout with the median of ours, the median
//! of the baseline and their ratio.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::TryStreamExt;
use serde_json::json;
use sqlx::{Executor, PgPool};
use uuid::Uuid;

use crate::postgres::{PostgresEventStore, PostgresOptions};
use crate::sqlite::SqliteEventStore;
use crate::{EventStore, ExpectedVersion, Json, NewEvent, Position};

/// Which backends to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    Sqlite,
    Postgres,
}

/// Options of `mdm bench store`.
#[derive(Debug, clap::Args)]
pub struct StoreBenchArgs {
    /// Backends to measure (repeat the flag for several); both by default.
    #[arg(long = "backend", value_enum)]
    pub backends: Vec<BenchBackend>,
    /// PostgreSQL server to measure; a schema of its own is created and dropped.
    #[arg(
        long,
        env = "MDM_BENCH_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub postgres_url: String,
    /// Where the SQLite files go (a temporary folder by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Events in the log for the read and catch-up figures.
    #[arg(long, default_value_t = 1_000_000)]
    pub log_events: usize,
    /// Appends per run of each append figure.
    #[arg(long, default_value_t = 2_000)]
    pub appends: usize,
    /// Events per `read_all` call in the read figure.
    #[arg(long, default_value_t = crate::subscription::SUBSCRIPTION_PAGE)]
    pub page_size: usize,
    /// Runs of each figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

pub async fn run_store_bench(args: StoreBenchArgs) -> anyhow::Result<()> {
    let backends = if args.backends.is_empty() {
        vec![BenchBackend::Sqlite, BenchBackend::Postgres]
    } else {
        args.backends.clone()
    };
    for backend in backends {
        match backend {
            BenchBackend::Sqlite => bench_sqlite(&args).await?,
            BenchBackend::Postgres => bench_postgres(&args).await?,
        }
    }
    Ok(())
}

/// The plain-SQL side of each figure, on the same database as the store.
#[async_trait::async_trait]
trait Baseline: Send + Sync {
    async fn insert_single(&self, writers: usize, appends: usize) -> anyhow::Result<()>;
    async fn insert_batches(&self, batches: usize, size: usize) -> anyhow::Result<()>;
    /// Reads every row of the store's own event table in order; returns the count.
    async fn read_ordered(&self) -> anyhow::Result<usize>;
}

/// A payload shaped like a captured source record: an encrypted blob and ids.
fn payload(i: usize) -> (Json, Json) {
    let data = json!({
        "system": "finance",
        "source_id": format!("F-{i:09}"),
        "key_id": format!("k-{i:09}"),
        "ciphertext": "q8HtY2Vb3m9dWJ0n1xGzK4rVfP6sL8aT2eBcD5hQ7uIoMwNyZx1A3C5E7G9I0K2M4O6Q8S0U2W4Y6a8c0e2g4i6k8m0o2q4s6u8w0y2A4C6E8G0I2K4M6O8Q0S2U4W6Y8a0c2e4g6i8k0m2o4q6s8u0w2y4A6C8E0==",
    });
    let metadata = json!({
        "occurred_at": "2026-11-22T12:00:00Z",
        "actor": {"kind": "source", "id": "finance"},
        "correlation_id": "0b9d2f5e-8a3c-4e71-9f1d-2c6b8a4e0d13",
        "schema_version": 1,
    });
    (
        Json::encode(&data).unwrap_or_else(|_| Json::empty_object()),
        Json::encode(&metadata).unwrap_or_else(|_| Json::empty_object()),
    )
}

fn new_events(n: usize, seed: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let (data, metadata) = payload(seed + i);
            NewEvent::new(Uuid::new_v4(), "SourceRecordCaptured", data, metadata)
        })
        .collect()
}

struct Figure {
    name: &'static str,
    unit: &'static str,
    ours: Vec<f64>,
    baseline: Vec<f64>,
    work: usize,
    /// Events per read call, for the read figures.
    page_size: Option<usize>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn report(backend: &str, f: &Figure) {
    let ours = median(&f.ours);
    let base = median(&f.baseline);
    let line = json!({
        "bench": "store",
        "backend": backend,
        "figure": f.name,
        "unit": f.unit,
        "median": ours.round(),
        "baseline_median": base.round(),
        "ratio": (ours / base * 1000.0).round() / 1000.0,
        "runs": f.ours.iter().map(|x| x.round()).collect::<Vec<_>>(),
        "baseline_runs": f.baseline.iter().map(|x| x.round()).collect::<Vec<_>>(),
        "events_per_run": f.work,
        "page_size": f.page_size,
    });
    println!("{line}");
}

async fn appends_single(store: &Arc<dyn EventStore>, writers: usize, appends: usize) -> anyhow::Result<()> {
    let per_writer = appends / writers;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let stream = format!("source-bench-{}", Uuid::new_v4().simple());
                store
                    .append(&stream, ExpectedVersion::NoStream, new_events(1, w * per_writer + i))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn appends_batch(store: &Arc<dyn EventStore>, batches: usize, size: usize) -> anyhow::Result<()> {
    for b in 0..batches {
        let stream = format!("source-bench-{}", Uuid::new_v4().simple());
        store
            .append(&stream, ExpectedVersion::NoStream, new_events(size, b * size))
            .await?;
    }
    Ok(())
}

async fn read_all_count(store: &Arc<dyn EventStore>, page_size: usize) -> anyhow::Result<usize> {
    let mut after = Position::START;
    let mut n = 0;
    loop {
        let page = store.read_all(after, page_size).await?;
        let Some(last) = page.last() else { return Ok(n) };
        after = last.position;
        n += page.len();
    }
}

async fn catch_up_count(store: &Arc<dyn EventStore>, total: usize) -> anyhow::Result<usize> {
    let mut sub = store.subscribe_all(Position::START).await?;
    let mut n = 0;
    while n < total {
        match sub.next().await {
            Some(e) => {
                e?;
                n += 1;
            }
            None => anyhow::bail!("subscription ended after {n} events"),
        }
    }
    Ok(n)
}

/// How many events the store reads, once it reads as many as a plain SELECT
/// of its table sees. On PostgreSQL the log shows an event once every older
/// write transaction of the cluster has ended, so other work on the same
/// server can hide our last appends for a moment.
async fn settled_count(
    store: &Arc<dyn EventStore>,
    baseline: &dyn Baseline,
    page_size: usize,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let plain = baseline.read_ordered().await?;
        let ours = read_all_count(store, page_size).await?;
        if ours == plain {
            return Ok(ours);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the store shows {ours} events, its table {plain}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn measure<F, Fut>(f: F) -> anyhow::Result<f64>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    f().await?;
    Ok(start.elapsed().as_secs_f64())
}

async fn run_figures(
    backend: &str,
    store: Arc<dyn EventStore>,
    baseline: &dyn Baseline,
    args: &StoreBenchArgs,
) -> anyhow::Result<()> {
    let appends = args.appends.max(8);
    let repeat = args.repeat.max(1);
    for (name, writers) in [("append_1_writer", 1usize), ("append_8_writers", 8)] {
        let mut f = Figure {
            name,
            unit: "events/s",
            ours: vec![],
            baseline: vec![],
            work: appends,
            page_size: None,
        };
        for _ in 0..repeat {
            let ours = measure(|| appends_single(&store, writers, appends)).await?;
            let base = measure(|| baseline.insert_single(writers, appends)).await?;
            f.ours.push(appends as f64 / ours);
            f.baseline.push(appends as f64 / base);
        }
        report(backend, &f);
    }

    let batches = (appends / 10).max(10);
    let mut f = Figure {
        name: "append_batch_100",
        unit: "events/s",
        ours: vec![],
        baseline: vec![],
        work: batches * 100,
        page_size: None,
    };
    for _ in 0..repeat {
        let ours = measure(|| appends_batch(&store, batches, 100)).await?;
        let base = measure(|| baseline.insert_batches(batches, 100)).await?;
        f.ours.push((batches * 100) as f64 / ours);
        f.baseline.push((batches * 100) as f64 / base);
    }
    report(backend, &f);

    // Fill the log up to the requested size with 1,000-event appends.
    let mut have = settled_count(&store, baseline, args.page_size).await?;
    let fill_start = Instant::now();
    let filled = args.log_events.saturating_sub(have);
    while have < args.log_events {
        let n = (args.log_events - have).min(1_000);
        appends_batch(&store, 1, n).await?;
        have += n;
    }
    let have = settled_count(&store, baseline, args.page_size).await?;
    if filled > 0 {
        let secs = fill_start.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({"bench": "store", "backend": backend, "figure": "fill_batch_1000", "unit": "events/s",
                   "median": (filled as f64 / secs).round(), "events_per_run": filled, "note": "one run, no baseline"})
        );
    }

    let mut read = Figure {
        name: "read_all",
        unit: "events/s",
        ours: vec![],
        baseline: vec![],
        work: have,
        page_size: Some(args.page_size),
    };
    let mut catch_up = Figure {
        name: "subscription_catch_up",
        unit: "events/s",
        ours: vec![],
        baseline: vec![],
        work: have,
        page_size: Some(crate::subscription::SUBSCRIPTION_PAGE),
    };
    for _ in 0..repeat {
        let start = Instant::now();
        let base_n = baseline.read_ordered().await?;
        let base = base_n as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        let n = read_all_count(&store, args.page_size).await?;
        read.ours.push(n as f64 / start.elapsed().as_secs_f64());
        read.baseline.push(base);
        let start = Instant::now();
        let n = catch_up_count(&store, n).await?;
        catch_up.ours.push(n as f64 / start.elapsed().as_secs_f64());
        catch_up.baseline.push(base);
        anyhow::ensure!(n == base_n, "the store read {n} events, plain SQL {base_n} rows");
    }
    report(backend, &read);
    report(backend, &catch_up);
    Ok(())
}

// ----- SQLite -----

async fn bench_sqlite(args: &StoreBenchArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("temporary folder")?;
            temp.path().to_owned()
        }
    };
    let path = dir.join(format!("bench-{}.db", Uuid::new_v4().simple()));
    let store = SqliteEventStore::open(&path).await?;
    // The baseline: plain rusqlite connections on the same file with the
    // same settings, inserting into a table of the same shape.
    let connect = {
        let path = path.clone();
        move || -> rusqlite::Result<rusqlite::Connection> {
            let c = rusqlite::Connection::open(&path)?;
            c.busy_timeout(std::time::Duration::from_secs(30))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            Ok(c)
        }
    };
    connect()?.execute_batch(
        "CREATE TABLE plain_event (position INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE, \
         stream TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, \
         metadata BLOB NOT NULL, recorded_at INTEGER NOT NULL, UNIQUE (stream, version))",
    )?;
    let baseline = SqliteBaseline {
        connect: Arc::new(connect),
    };
    let store: Arc<dyn EventStore> = Arc::new(store);
    let result = run_figures("sqlite", store.clone(), &baseline, args).await;
    store.close().await;
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    result
}

type Connect = dyn Fn() -> rusqlite::Result<rusqlite::Connection> + Send + Sync;

struct SqliteBaseline {
    connect: Arc<Connect>,
}

const PLAIN_INSERT: &str = "INSERT INTO plain_event (id, stream, version, type, data, metadata, recorded_at) \
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

fn micros_now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[async_trait::async_trait]
impl Baseline for SqliteBaseline {
    async fn insert_single(&self, writers: usize, appends: usize) -> anyhow::Result<()> {
        let per_writer = appends / writers;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let connect = self.connect.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                let conn = connect()?;
                let mut insert = conn.prepare(PLAIN_INSERT)?;
                for e in new_events(per_writer, w * per_writer) {
                    let stream = format!("source-bench-{}", Uuid::new_v4().simple());
                    insert.execute(rusqlite::params![
                        &e.id.as_bytes()[..],
                        stream,
                        0,
                        e.event_type,
                        e.data.as_bytes(),
                        e.metadata.as_bytes(),
                        micros_now()
                    ])?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    }

    async fn insert_batches(&self, batches: usize, size: usize) -> anyhow::Result<()> {
        let connect = self.connect.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = connect()?;
            for b in 0..batches {
                let stream = format!("source-bench-{}", Uuid::new_v4().simple());
                let events = new_events(size, b * size);
                let now = micros_now();
                let tx = conn.transaction()?;
                {
                    let mut insert = tx.prepare_cached(PLAIN_INSERT)?;
                    for (i, e) in events.iter().enumerate() {
                        insert.execute(rusqlite::params![
                            &e.id.as_bytes()[..],
                            stream,
                            i as i64,
                            e.event_type,
                            e.data.as_bytes(),
                            e.metadata.as_bytes(),
                            now
                        ])?;
                    }
                }
                tx.commit()?;
            }
            anyhow::Ok(())
        })
        .await?
    }

    async fn read_ordered(&self) -> anyhow::Result<usize> {
        let connect = self.connect.clone();
        tokio::task::spawn_blocking(move || {
            let conn = connect()?;
            let mut stmt = conn.prepare(
                "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event ORDER BY position",
            )?;
            let mut rows = stmt.query([])?;
            let mut n = 0;
            while let Some(row) = rows.next()? {
                let tuple: (i64, Vec<u8>, String, i64, String, Vec<u8>, Vec<u8>, i64) = (
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                    row.get(7)?,
                );
                std::hint::black_box(&tuple);
                n += 1;
            }
            anyhow::Ok(n)
        })
        .await?
    }
}

// ----- PostgreSQL -----

async fn bench_postgres(args: &StoreBenchArgs) -> anyhow::Result<()> {
    let schema = format!("mdm_bench_{}", Uuid::new_v4().simple());
    let mut options = PostgresOptions::new(args.postgres_url.clone());
    options.schema = schema.clone();
    let store = PostgresEventStore::connect_with(options)
        .await
        .context("connecting to the PostgreSQL server to measure (--postgres-url / MDM_BENCH_DATABASE_URL)")?;
    let pool = store.pool().clone();
    pool.execute(
        "CREATE TABLE plain_event (position bigserial PRIMARY KEY, id uuid NOT NULL UNIQUE, \
         stream text NOT NULL, version bigint NOT NULL, type text NOT NULL, data bytea NOT NULL, \
         metadata bytea NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(), UNIQUE (stream, version))",
    )
    .await?;
    let baseline = PgBaseline { pool: pool.clone() };
    let store: Arc<dyn EventStore> = Arc::new(store);
    let result = run_figures("postgres", store.clone(), &baseline, args).await;
    let _ = pool.execute(format!("DROP SCHEMA {schema} CASCADE").as_str()).await;
    store.close().await;
    result
}

struct PgBaseline {
    pool: PgPool,
}

#[async_trait::async_trait]
impl Baseline for PgBaseline {
    async fn insert_single(&self, writers: usize, appends: usize) -> anyhow::Result<()> {
        let per_writer = appends / writers;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let pool = self.pool.clone();
            tasks.push(tokio::spawn(async move {
                for e in new_events(per_writer, w * per_writer) {
                    sqlx::query(
                        "INSERT INTO plain_event (id, stream, version, type, data, metadata) \
                         VALUES ($1, $2, 0, $3, $4, $5)",
                    )
                    .bind(e.id)
                    .bind(format!("source-bench-{}", Uuid::new_v4().simple()))
                    .bind(&e.event_type)
                    .bind(e.data.as_bytes())
                    .bind(e.metadata.as_bytes())
                    .execute(&pool)
                    .await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    }

    async fn insert_batches(&self, batches: usize, size: usize) -> anyhow::Result<()> {
        for b in 0..batches {
            let stream = format!("source-bench-{}", Uuid::new_v4().simple());
            let events = new_events(size, b * size);
            let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_bytes()).collect();
            let metadata: Vec<&[u8]> = events.iter().map(|e| e.metadata.as_bytes()).collect();
            sqlx::query(
                "INSERT INTO plain_event (id, stream, version, type, data, metadata) \
                 SELECT e.id, $1, e.ord - 1, e.type, e.data, e.metadata \
                 FROM unnest($2::uuid[], $3::text[], $4::bytea[], $5::bytea[]) \
                      WITH ORDINALITY AS e(id, type, data, metadata, ord)",
            )
            .bind(&stream)
            .bind(&ids)
            .bind(&types)
            .bind(&data)
            .bind(&metadata)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    async fn read_ordered(&self) -> anyhow::Result<usize> {
        type Row = (
            i64,
            Uuid,
            String,
            i64,
            String,
            Vec<u8>,
            Vec<u8>,
            chrono::DateTime<chrono::Utc>,
        );
        let mut rows = sqlx::query_as::<_, Row>(
            "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM event ORDER BY position",
        )
        .fetch(&self.pool);
        let mut n = 0;
        while let Some(row) = rows.try_next().await? {
            std::hint::black_box(&row);
            n += 1;
        }
        Ok(n)
    }
}
