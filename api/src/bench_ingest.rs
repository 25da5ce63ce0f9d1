//! `mdm bench ingest`: bulk capture of generated records into the embedded
//! store, through the same code as `mdm import`, against plain SQLite doing
//! the same storage work in the same run.
//!
//! - Data: `mdm datagen --records N` files of the seven systems (CSV, JSON,
//!   NDJSON, Debezium), generated once into the bench folder.
//! - Ours: a fresh event store and key store per run; every file imported
//!   with `import_file` (read, split, map, pseudonymise, create a key per
//!   record, seal, append one event per record). Records/s = records read
//!   / wall time of the whole import.
//! - Baseline: the same number of records written by plain rusqlite into
//!   tables of the same shape as ours (an event row with a time-ordered
//!   16-byte id and a random pseudonymous stream name, and a key row) of the average sizes
//!   our run stored, in transactions of the same batch size, with the same
//!   pragmas (WAL, synchronous=FULL): what SQLite itself costs for the rows
//!   each record needs, without our pipeline.
//! - Memory: the largest generated file is imported by a child `mdm import`
//!   twice, from a data set a quarter the size and from the full one; the
//!   child's peak resident memory (VmHWM) of both is reported, so growth
//!   with the input's size would show.
//!
//! One JSON line per figure on stdout, medians over `--repeat` runs.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use mdm_commands::import::{import_file, ImportOptions, Syntax};
use mdm_commands::ingest::{IngestContext, Ingestor};
use mdm_domain::metadata::Actor;
use mdm_domain::source::InputFormat;
use mdm_store::keys::sqlite::SqliteKeyStore;
use mdm_store::keys::MasterKey;
use mdm_store::sqlite::SqliteEventStore;
use mdm_store::EventStore;
use serde_json::json;

use crate::datagen::{self, DatagenArgs};

/// Options of `mdm bench ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestBenchArgs {
    /// Source records to generate and import.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Records per ingest batch.
    #[arg(long, default_value_t = 8000)]
    pub batch_size: usize,
    /// Where the generated files and the stores go (a temporary folder by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The sources file the generated data follows.
    #[arg(long, default_value = "config/sources.example.toml")]
    pub sources: PathBuf,
}

pub async fn run_ingest_bench(args: IngestBenchArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a temporary folder")?;
            temp.path().to_owned()
        }
    };
    let text = std::fs::read_to_string(&args.sources).with_context(|| format!("reading {}", args.sources.display()))?;
    let sources = Arc::new(crate::sources::parse_sources(&text)?);

    let data = dir.join("data");
    let mut gen = DatagenArgs::new(&data, 0, 42);
    gen.records = Some(args.records);
    let generated = tokio::task::spawn_blocking(move || datagen::run(&gen)).await??;
    let files: Vec<(String, PathBuf)> = generated
        .files
        .iter()
        .filter_map(|f| f.system.clone().map(|s| (s, data.join(&f.file))))
        .collect();
    let bytes: u64 = files
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "{}",
        json!({"bench": "ingest", "figure": "input", "source_records": generated.source_records, "files": files.len(), "bytes": bytes})
    );

    let mut ours = Vec::new();
    let mut baseline = Vec::new();
    let mut rss_all = 0u64;
    let mut records = 0u64;
    for run in 0..args.repeat {
        let run_dir = dir.join(format!("run-{run}"));
        let (n, seconds, all) = import_all(&run_dir, sources.clone(), &files, args.batch_size).await?;
        records = n;
        ours.push(n as f64 / seconds);
        rss_all = rss_all.max(all);
        let sizes = stored_sizes(&run_dir)?;
        let _ = std::fs::remove_dir_all(&run_dir);
        let batch = args.batch_size as u64;
        let plain_dir = dir.join(format!("plain-{run}"));
        let n_plain = n;
        let seconds = tokio::task::spawn_blocking(move || plain_sqlite(&plain_dir, n_plain, sizes, batch)).await??;
        baseline.push(n as f64 / seconds);
        let _ = std::fs::remove_dir_all(dir.join(format!("plain-{run}")));
        println!(
            "{}",
            json!({"bench": "ingest", "figure": "run", "run": run, "records": n, "ours_records_per_s": ours[run].round(), "plain_sqlite_records_per_s": baseline[run].round(), "avg_event_data_bytes": sizes.data, "avg_event_metadata_bytes": sizes.metadata, "avg_wrapped_key_bytes": sizes.wrapped})
        );
    }
    // Memory against input size: the biggest file (by bytes) imported by a
    // child `mdm import` from a data set a quarter the size and from the
    // full one; peak memory must not follow the file's size.
    let biggest = files
        .iter()
        .max_by_key(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .cloned()
        .context("no files")?;
    let quarter_data = dir.join("data-quarter");
    let mut gen = DatagenArgs::new(&quarter_data, 0, 43);
    gen.records = Some(args.records / 4);
    tokio::task::spawn_blocking(move || datagen::run(&gen)).await??;
    let quarter_file = quarter_data.join(biggest.1.file_name().context("file name")?);
    let mut peaks = Vec::new();
    for (label, file) in [("quarter", quarter_file), ("full", biggest.1.clone())] {
        let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let mem_dir = dir.join(format!("memory-{label}"));
        let (sources, system, f) = (args.sources.clone(), biggest.0.clone(), file.clone());
        let peak =
            tokio::task::spawn_blocking(move || child_import_peak_rss(&mem_dir, &sources, &system, &f)).await??;
        let _ = std::fs::remove_dir_all(dir.join(format!("memory-{label}")));
        peaks.push(peak);
        println!(
            "{}",
            json!({"bench": "ingest", "figure": "import_peak_memory", "system": biggest.0, "input": label, "file_bytes": bytes, "peak_rss_mib": peak / (1 << 20)})
        );
    }

    let (m_ours, m_base) = (median(&ours), median(&baseline));
    println!(
        "{}",
        json!({
            "bench": "ingest",
            "figure": "bulk_capture",
            "backend": "sqlite",
            "records": records,
            "runs": args.repeat,
            "median_records_per_s": m_ours.round(),
            "baseline": "plain rusqlite: one event row and one key row per record, of our rows' average sizes, in transactions of the same batch size",
            "baseline_median_records_per_s": m_base.round(),
            "ratio": (m_ours / m_base * 1000.0).round() / 1000.0,
            "bench_process_peak_rss_mib": rss_all / (1 << 20),
            "import_peak_rss_mib_quarter_file": peaks.first().copied().unwrap_or(0) / (1 << 20),
            "import_peak_rss_mib_full_file": peaks.last().copied().unwrap_or(0) / (1 << 20),
        })
    );
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Imports every file into fresh stores under `dir`. Returns the records
/// read, the seconds taken, and this process's peak RSS seen meanwhile.
async fn import_all(
    dir: &Path,
    sources: Arc<mdm_domain::source::SourceDefinitions>,
    files: &[(String, PathBuf)],
    batch_size: usize,
) -> anyhow::Result<(u64, f64, u64)> {
    let store = SqliteEventStore::open(dir.join("events.db")).await?;
    let keys = SqliteKeyStore::open(&dir.join("keys.db"), MasterKey::generate()).await?;
    let ingestor = Ingestor::new(Arc::new(store.clone()), Arc::new(keys), sources.clone());
    let ctx = IngestContext {
        actor: Actor::Operator,
        correlation_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    };
    let started = Instant::now();
    let mut done = 0u64;
    let mut rss_all = 0u64;
    for (system, path) in files {
        let def = sources
            .get(system)
            .context("a generated system is not in the sources file")?;
        let syntax = Syntax::guess(path, def.format == InputFormat::Debezium).context("unknown file type")?;
        let options = ImportOptions {
            syntax,
            batch_size,
            full_snapshot: false,
        };
        let report = import_file(&ingestor, system, path, options, &ctx, |_| {
            rss_all = rss_all.max(resident_bytes());
        })
        .await?;
        anyhow::ensure!(
            report.tally.rejected == 0,
            "{} generated records of {system} were rejected: {:?}",
            report.tally.rejected,
            report.rejections.first()
        );
        done += report.tally.total();
    }
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    Ok((done, seconds, rss_all))
}

/// Peak resident memory of `mdm import` run as a child process on `file`
/// (the largest of the generated files), polled from /proc every 50 ms.
fn child_import_peak_rss(dir: &Path, sources: &Path, system: &str, file: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["import", "--system", system])
        .arg(file)
        .env("MDM_DATA_DIR", dir)
        .env("MDM_SOURCES_FILE", std::fs::canonicalize(sources)?)
        .env("MDM_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib * 1024);
            }
        }
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "mdm import failed in the memory check");
            return Ok(peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The resident set size of this process (0 where /proc is missing).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Average sizes of what one record stored, in bytes.
#[derive(Clone, Copy, Debug)]
struct RowSizes {
    data: usize,
    metadata: usize,
    wrapped: usize,
}

/// The average sizes of the rows a run stored, for a baseline of the same rows.
fn stored_sizes(dir: &Path) -> anyhow::Result<RowSizes> {
    let events = rusqlite::Connection::open(dir.join("events.db"))?;
    let (data, metadata): (f64, f64) =
        events.query_row("SELECT avg(length(data)), avg(length(metadata)) FROM event", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let keys = rusqlite::Connection::open(dir.join("keys.db"))?;
    let wrapped: f64 = keys.query_row("SELECT avg(length(wrapped)) FROM subject_key", [], |r| r.get(0))?;
    Ok(RowSizes {
        data: data.round() as usize,
        metadata: metadata.round() as usize,
        wrapped: wrapped.round() as usize,
    })
}

/// The baseline: `n` records' rows written by plain rusqlite, in
/// transactions of `batch` records, with random (incompressible) bytes of
/// the sizes our rows had.
fn plain_sqlite(dir: &Path, n: u64, sizes: RowSizes, batch: u64) -> anyhow::Result<f64> {
    use rand::RngCore;
    std::fs::create_dir_all(dir)?;
    let mut events = rusqlite::Connection::open(dir.join("events.db"))?;
    let mut keys = rusqlite::Connection::open(dir.join("keys.db"))?;
    for conn in [&events, &keys] {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
    }
    events.execute_batch(
        "CREATE TABLE event (position INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE, \
         stream TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, \
         metadata BLOB NOT NULL, recorded_at INTEGER NOT NULL, UNIQUE (stream, version))",
    )?;
    keys.execute_batch(
        "CREATE TABLE subject_key (key_id BLOB PRIMARY KEY, subject TEXT NOT NULL UNIQUE, wrapped BLOB, \
         created_at INTEGER NOT NULL, destroyed_at INTEGER) WITHOUT ROWID",
    )?;
    let mut rng = rand::rng();
    let mut data = vec![0u8; sizes.data];
    let metadata = vec![b'm'; sizes.metadata];
    let mut wrapped = vec![0u8; sizes.wrapped];
    let started = Instant::now();
    let mut i = 0u64;
    while i < n {
        let tx_e = events.transaction()?;
        let tx_k = keys.transaction()?;
        {
            let mut insert_e = tx_e.prepare_cached(
                "INSERT INTO event (id, stream, version, type, data, metadata, recorded_at) VALUES (?1, ?2, 0, 'SourceRecordCaptured', ?3, ?4, ?5)",
            )?;
            let mut insert_k = tx_k.prepare_cached(
                "INSERT INTO subject_key (key_id, subject, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let end = (i + batch.max(1)).min(n);
            while i < end {
                // Ids ordered by creation like ours (anchored on the v7 key id).
                let id = *uuid::Uuid::now_v7().as_bytes();
                let mut pseudonym = [0u8; 16];
                rng.fill_bytes(&mut pseudonym);
                let stream = mdm_domain::source_record::stream_name("finance", &pseudonym);
                rng.fill_bytes(&mut data);
                rng.fill_bytes(&mut wrapped);
                insert_e.execute(rusqlite::params![&id[..], stream, data, metadata, i as i64])?;
                let key_id = uuid::Uuid::now_v7();
                insert_k.execute(rusqlite::params![&key_id.as_bytes()[..], stream, wrapped, i as i64])?;
                i += 1;
            }
        }
        tx_k.commit()?;
        tx_e.commit()?;
    }
    Ok(started.elapsed().as_secs_f64())
}
