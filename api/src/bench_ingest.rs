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
//!   tables of the same shape as ours (an event row with a random 16-byte id
//!   and a pseudonymous stream name, and a key row), in transactions of
//!   10,000, with the same pragmas (WAL, synchronous=FULL): what SQLite
//!   itself costs for the rows each record needs, without our pipeline.
//! - Memory: the process's resident set size sampled after every batch; the
//!   peak over the first quarter of the records is reported beside the
//!   peak over the whole import, so growth with the input's size shows.
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
    #[arg(long, default_value_t = 2000)]
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
    let mut rss_first_quarter = 0u64;
    let mut rss_all = 0u64;
    let mut records = 0u64;
    for run in 0..args.repeat {
        let run_dir = dir.join(format!("run-{run}"));
        let (n, seconds, first_quarter, all) = import_all(
            &run_dir,
            sources.clone(),
            &files,
            args.batch_size,
            generated.source_records,
        )
        .await?;
        records = n;
        ours.push(n as f64 / seconds);
        rss_first_quarter = rss_first_quarter.max(first_quarter);
        rss_all = rss_all.max(all);
        let _ = std::fs::remove_dir_all(&run_dir);

        let plain_dir = dir.join(format!("plain-{run}"));
        let n_plain = n;
        let seconds = tokio::task::spawn_blocking(move || plain_sqlite(&plain_dir, n_plain)).await??;
        baseline.push(n as f64 / seconds);
        let _ = std::fs::remove_dir_all(dir.join(format!("plain-{run}")));
        println!(
            "{}",
            json!({"bench": "ingest", "figure": "run", "run": run, "records": n, "ours_records_per_s": ours[run].round(), "plain_sqlite_records_per_s": baseline[run].round()})
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
            "baseline": "plain rusqlite: one event row and one key row per record, 10k-row transactions",
            "baseline_median_records_per_s": m_base.round(),
            "ratio": (m_ours / m_base * 1000.0).round() / 1000.0,
            "peak_rss_mib_first_quarter": rss_first_quarter / (1 << 20),
            "peak_rss_mib": rss_all / (1 << 20),
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
/// read, the seconds taken, and the peak RSS over the first quarter of the
/// records and over all of them.
async fn import_all(
    dir: &Path,
    sources: Arc<mdm_domain::source::SourceDefinitions>,
    files: &[(String, PathBuf)],
    batch_size: usize,
    expected: u64,
) -> anyhow::Result<(u64, f64, u64, u64)> {
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
    let (mut rss_quarter, mut rss_all) = (0u64, 0u64);
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
        let before = done;
        let report = import_file(&ingestor, system, path, options, &ctx, |p| {
            let rss = resident_bytes();
            rss_all = rss_all.max(rss);
            if before + p.tally.total() <= expected / 4 {
                rss_quarter = rss_quarter.max(rss);
            }
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
    Ok((done, seconds, rss_quarter, rss_all))
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

/// The baseline: `n` records' rows written by plain rusqlite.
fn plain_sqlite(dir: &Path, n: u64) -> anyhow::Result<f64> {
    use rand::RngCore;
    std::fs::create_dir_all(dir)?;
    let mut events = rusqlite::Connection::open(dir.join("events.db"))?;
    let mut keys = rusqlite::Connection::open(dir.join("keys.db"))?;
    for conn in [&events, &keys] {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", -65_536)?;
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
    // Sizes of a typical sealed source-record event and wrapped key.
    let mut data = vec![0u8; 900];
    let metadata = vec![b'm'; 220];
    let mut wrapped = vec![0u8; 72];
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
            let end = (i + 10_000).min(n);
            while i < end {
                let mut id = [0u8; 16];
                rng.fill_bytes(&mut id);
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
