//! Importing a file of any size: read and split it on a blocking thread,
//! ingest it batch by batch, report progress.
//!
//! Memory stays bounded whatever the file's size: the reader thread holds
//! one record at a time and hands over batches through a channel of a few
//! batches; the importer keeps counts, the first rejections, and (only for a
//! full snapshot) the pseudonymous stream names it saw.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::ingest::{IngestContext, IngestError, Ingestor, Outcome, Tally};
use crate::input::csv::{CsvOptions, CsvRecords};
use crate::input::debezium::DebeziumRecords;
use crate::input::json::JsonRecords;
use crate::input::{InputRecord, DEFAULT_MAX_RECORD_BYTES};

/// The syntax of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Syntax {
    /// CSV with a header row.
    Csv,
    /// One JSON document, a JSON array of documents, or NDJSON.
    Json,
    /// Debezium change events as JSON (array, NDJSON or one document).
    Debezium,
}

impl Syntax {
    /// The syntax a file's name suggests (`.csv`, `.json`, `.ndjson`,
    /// `.jsonl`), with Debezium for a system whose format is `debezium`.
    pub fn guess(path: &Path, debezium_system: bool) -> Option<Syntax> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "txt" => Some(Syntax::Csv),
            "json" | "ndjson" | "jsonl" if debezium_system => Some(Syntax::Debezium),
            "json" | "ndjson" | "jsonl" => Some(Syntax::Json),
            _ => None,
        }
    }

    /// The records of `reader`, read lazily.
    pub fn records<R: BufRead + Send + 'static>(self, reader: R) -> Box<dyn Iterator<Item = InputRecord> + Send> {
        match self {
            Syntax::Csv => Box::new(CsvRecords::new(reader, CsvOptions::default())),
            Syntax::Json => Box::new(JsonRecords::new(reader, DEFAULT_MAX_RECORD_BYTES)),
            Syntax::Debezium => Box::new(DebeziumRecords::new(reader, DEFAULT_MAX_RECORD_BYTES)),
        }
    }
}

/// How to import.
#[derive(Clone, Copy, Debug)]
pub struct ImportOptions {
    pub syntax: Syntax,
    /// Records per ingest call.
    pub batch_size: usize,
    /// The file holds every record the system has: records of the system
    /// not in it are retracted at the end (unless some record was rejected).
    pub full_snapshot: bool,
}

/// The raw bytes a batch holds at most; a batch closes at this size or at
/// its record count, whichever comes first.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// How many rejections a report lists (all are counted).
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// The result of an import.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    pub system: String,
    pub tally: Tally,
    /// Records retracted because a full snapshot did not hold them.
    pub retracted_missing: u64,
    /// Why a full snapshot's retraction was not done, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_skipped: Option<String>,
    /// The first rejections: "row 17: field `DOB` (path `DOB`): ...".
    pub rejections: Vec<String>,
    pub bytes_read: u64,
    pub seconds: f64,
}

/// Progress as the import goes, for a progress bar or log lines.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub tally: Tally,
    pub bytes_read: u64,
}

/// Imports `path` into `system`.
pub async fn import_file(
    ingestor: &Ingestor,
    system: &str,
    path: &Path,
    options: ImportOptions,
    ctx: &IngestContext,
    on_progress: impl FnMut(Progress),
) -> Result<ImportReport, ImportError> {
    let file = std::fs::File::open(path).map_err(ImportError::Open)?;
    import_reader(ingestor, system, file, options, ctx, on_progress).await
}

/// Imports everything `reader` yields into `system`.
pub async fn import_reader<R: Read + Send + 'static>(
    ingestor: &Ingestor,
    system: &str,
    reader: R,
    options: ImportOptions,
    ctx: &IngestContext,
    mut on_progress: impl FnMut(Progress),
) -> Result<ImportReport, ImportError> {
    ingestor
        .sources()
        .get(system)
        .ok_or(ImportError::Ingest(IngestError::UnknownSystem))?;
    let started = std::time::Instant::now();
    let bytes = Arc::new(AtomicU64::new(0));
    let counting = CountingReader {
        inner: reader,
        count: bytes.clone(),
    };
    let batch_size = options.batch_size.max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<InputRecord>>(1);
    let syntax = options.syntax;
    let reader_thread = std::thread::Builder::new()
        .name("mdm-import-reader".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(batch_size);
            let mut batch_bytes = 0usize;
            for record in syntax.records(BufReader::with_capacity(256 * 1024, counting)) {
                batch_bytes += record.item.as_ref().map_or(0, |i| i.raw.len());
                batch.push(record);
                // Bounded by count and by bytes, so memory stays bounded
                // whatever the records' size.
                if batch.len() == batch_size || batch_bytes >= MAX_BATCH_BYTES {
                    batch_bytes = 0;
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                    if tx.blocking_send(full).is_err() {
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
        })
        .map_err(ImportError::Open)?;

    let mut report = ImportReport {
        system: system.to_owned(),
        ..ImportReport::default()
    };
    let mut present: HashSet<String> = HashSet::new();
    // Two stages: mapping and keying the next batch (independent of the
    // log) runs while the current batch is decided and appended (which
    // must happen one batch at a time, in file order).
    let (prepared_tx, mut prepared_rx) = tokio::sync::mpsc::channel(1);
    let preparer = {
        let ingestor = ingestor.clone();
        let system = system.to_owned();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let prepared = ingestor.prepare_batch(&system, batch, &ctx).await;
                let failed = prepared.is_err();
                if prepared_tx.send(prepared).await.is_err() || failed {
                    return;
                }
            }
        })
    };
    while let Some(prepared) = prepared_rx.recv().await {
        let outcomes = ingestor.commit_batch(prepared?, ctx).await?;
        for o in outcomes {
            report.tally.add(&o.outcome);
            if options.full_snapshot {
                if let Some(stream) = &o.stream {
                    present.insert(stream.clone());
                }
            }
            if let Outcome::Rejected { reason, .. } = &o.outcome {
                if report.rejections.len() < MAX_LISTED_REJECTIONS {
                    report.rejections.push(format!("{}: {reason}", o.locator));
                }
            }
        }
        on_progress(Progress {
            tally: report.tally,
            bytes_read: bytes.load(Ordering::Relaxed),
        });
    }
    let _ = preparer.await;
    let _ = reader_thread.join();

    if options.full_snapshot {
        if report.tally.rejected > 0 {
            report.snapshot_skipped = Some(format!(
                "{} records were rejected, and any of them may be a record the system still holds: \
                 nothing was retracted; fix them and import the snapshot again",
                report.tally.rejected
            ));
        } else {
            report.retracted_missing = ingestor.retract_missing(system, &present, ctx).await?;
        }
    }
    report.bytes_read = bytes.load(Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Why an import stopped. Records ingested before it stay stored, and
/// running the import again stores nothing twice.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the input")]
    Open(#[source] std::io::Error),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// Counts the bytes read, for progress.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
