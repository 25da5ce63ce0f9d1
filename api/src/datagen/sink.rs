//! Writing the files as records are made, in bounded memory.
//!
//! Records are made household by household, so written in that order a
//! file would put a family's records next to each other, and ids counted
//! in that order would too. Each file therefore passes its lines through a
//! fixed-size shuffle buffer: a new line takes the place of a random held
//! one, which is written out. The shop's change events go through a
//! fixed-size buffer of new rows (ids are given when a row leaves it, as an
//! auto-increment column would) and a queue of updates and deletes due a
//! few hundred events later.

use super::pick::Rand;
use super::systems::{ShopRow, System};
use rand::Rng;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// How many lines each file holds back to shuffle.
pub const SHUFFLE: usize = 4096;

/// An output file fed through a shuffle buffer.
#[derive(Debug)]
pub struct LineSink {
    file: BufWriter<File>,
    held: Vec<Vec<u8>>,
    rng: Rand,
    pub lines: u64,
}

impl LineSink {
    pub fn create(path: &Path, header: Option<&[u8]>, rng: Rand) -> io::Result<Self> {
        let mut file = BufWriter::with_capacity(1 << 20, File::create(path)?);
        if let Some(header) = header {
            file.write_all(header)?;
        }
        Ok(Self {
            file,
            held: Vec::with_capacity(SHUFFLE),
            rng,
            lines: 0,
        })
    }

    pub fn push(&mut self, line: Vec<u8>) -> io::Result<()> {
        self.lines += 1;
        if self.held.len() < SHUFFLE {
            self.held.push(line);
            return Ok(());
        }
        let i = self.rng.random_range(0..SHUFFLE);
        let out = std::mem::replace(&mut self.held[i], line);
        self.file.write_all(&out)
    }

    pub fn finish(mut self) -> io::Result<u64> {
        shuffle(&mut self.rng, &mut self.held);
        for line in &self.held {
            self.file.write_all(line)?;
        }
        self.file.flush()?;
        Ok(self.lines)
    }
}

fn shuffle<T>(rng: &mut Rand, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

/// Formats one CSV row at a time into bytes (RFC 4180: a field is quoted
/// when it holds a comma, a quote or a line break, or always if asked, and
/// quotes inside are doubled).
#[derive(Debug)]
pub struct CsvLine {
    always_quote: bool,
    crlf: bool,
}

impl CsvLine {
    /// `always_quote`: quote every field, as some exporters do; `crlf`: end
    /// lines with CR LF, as Windows exporters do, rather than LF.
    pub fn new(always_quote: bool, crlf: bool) -> Self {
        Self { always_quote, crlf }
    }

    pub fn line<I, T>(&self, fields: I) -> Vec<u8>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut line = Vec::with_capacity(256);
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            let field = field.as_ref();
            if self.always_quote || field.contains([',', '"', '\n', '\r']) {
                line.push(b'"');
                for part in field.split('"').enumerate() {
                    if part.0 > 0 {
                        line.extend_from_slice(b"\"\"");
                    }
                    line.extend_from_slice(part.1.as_bytes());
                }
                line.push(b'"');
            } else {
                line.extend_from_slice(field.as_bytes());
            }
        }
        line.extend_from_slice(if self.crlf { b"\r\n" } else { b"\n" });
        line
    }
}

/// `truth.csv`: which person and household each source record belongs to.
#[derive(Debug)]
pub struct Truth {
    writer: csv::Writer<BufWriter<File>>,
    pub rows: u64,
}

impl Truth {
    pub fn create(path: &Path) -> csv::Result<Self> {
        let mut writer = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, File::create(path)?));
        writer.write_record(["system", "source_id", "person_id", "household_id"])?;
        Ok(Self { writer, rows: 0 })
    }

    pub fn write(&mut self, system: System, source_id: &str, person: u64, household: u64) -> csv::Result<()> {
        self.rows += 1;
        let person = person_id(person);
        let household = household_id(household);
        self.writer
            .write_record([system.name(), source_id, person.as_str(), household.as_str()])
    }

    pub fn finish(mut self) -> io::Result<u64> {
        self.writer.flush()?;
        Ok(self.rows)
    }
}

/// `P0000042`: a true person's id in `truth.csv`.
pub fn person_id(n: u64) -> String {
    format!("P{n:07}")
}

/// `H0000017`: a true household's id in `truth.csv`.
pub fn household_id(n: u64) -> String {
    format!("H{n:07}")
}

/// A shop row waiting for its id, with what will happen to it later.
#[derive(Debug)]
pub struct NewShopRow {
    pub row: ShopRow,
    /// The row as the customer will later change it (an update event).
    pub update: Option<ShopRow>,
    /// Whether the row will be deleted.
    pub delete: bool,
    /// Read by the connector's snapshot (`op` `r`) rather than inserted (`c`).
    pub snapshot: bool,
    pub person: u64,
    pub household: u64,
}

/// A later change of a row: an update to `after`, or a delete when there
/// is no `after`.
#[derive(Debug)]
struct Change {
    before: ShopRow,
    after: Option<ShopRow>,
}

#[derive(Debug)]
struct Scheduled {
    due: u64,
    seq: u64,
    change: Change,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Counts of the shop's change events by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CdcOps {
    /// `c`: rows inserted.
    pub create: u64,
    /// `r`: rows read by the snapshot.
    pub read: u64,
    /// `u`: rows updated (before and after images).
    pub update: u64,
    /// `d`: rows deleted (before image only).
    pub delete: u64,
}

#[derive(Serialize)]
struct Payload<'a> {
    before: Option<&'a ShopRow>,
    after: Option<&'a ShopRow>,
    source: Source,
    op: &'a str,
    ts_ms: i64,
}

#[derive(Serialize)]
struct Source {
    version: &'static str,
    connector: &'static str,
    name: &'static str,
    ts_ms: i64,
    snapshot: &'static str,
    db: &'static str,
    sequence: Option<String>,
    table: &'static str,
    server_id: u64,
    gtid: Option<String>,
    file: String,
    pos: u64,
    row: u32,
    thread: Option<u64>,
    query: Option<String>,
}

/// `shop_cdc.ndjson`: Debezium change events of the shop's customers table.
#[derive(Debug)]
pub struct ShopSink {
    file: BufWriter<File>,
    /// `{"schema":…,"payload":`, the same before every event; empty when
    /// events are written without their schema.
    prefix: Vec<u8>,
    waiting: Vec<NewShopRow>,
    changes: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    next_id: u64,
    /// Rows written so far: the time scale of the change queue.
    tick: u64,
    /// The last event's `ts_ms`.
    last_ts: i64,
    binlog_pos: u64,
    rng: Rand,
    pub lines: u64,
    pub ops: CdcOps,
}

/// 2023-06-01T00:00:00Z: when the shop's change stream starts.
const CLOCK_START_MS: i64 = 1_685_577_600_000;
/// Time between two new rows, on average.
const TICK_MS: i64 = 20_000;

/// When the database wrote what is due at `tick`.
fn time_of(tick: u64) -> i64 {
    CLOCK_START_MS.saturating_add(
        i64::try_from(tick)
            .unwrap_or(i64::MAX / TICK_MS)
            .saturating_mul(TICK_MS),
    )
}

impl ShopSink {
    /// `schema`: the envelope's Kafka Connect schema, written before each
    /// payload; `None` writes payloads alone.
    pub fn create(path: &Path, schema: Option<&str>, rng: Rand) -> io::Result<Self> {
        Ok(Self {
            file: BufWriter::with_capacity(1 << 20, File::create(path)?),
            prefix: schema.map_or_else(Vec::new, |schema| {
                format!(r#"{{"schema":{schema},"payload":"#).into_bytes()
            }),
            waiting: Vec::with_capacity(SHUFFLE),
            changes: BinaryHeap::new(),
            seq: 0,
            next_id: 0,
            tick: 0,
            last_ts: CLOCK_START_MS,
            binlog_pos: 4,
            rng,
            lines: 0,
            ops: CdcOps::default(),
        })
    }

    /// Queues a new row; the row it displaces (if the buffer is full) is
    /// written now with the next id, and recorded in `truth`.
    pub fn push(&mut self, row: NewShopRow, ids: &super::systems::Ids, truth: &mut Truth) -> anyhow::Result<()> {
        if self.waiting.len() < SHUFFLE {
            self.waiting.push(row);
            return Ok(());
        }
        let i = self.rng.random_range(0..SHUFFLE);
        let out = std::mem::replace(&mut self.waiting[i], row);
        self.release(out, ids, truth)
    }

    fn release(&mut self, new: NewShopRow, ids: &super::systems::Ids, truth: &mut Truth) -> anyhow::Result<()> {
        let id_text = ids.id(System::ShopCdc, self.next_id);
        self.next_id += 1;
        let id: u64 = id_text.parse()?;
        truth.write(System::ShopCdc, &id_text, new.person, new.household)?;
        let now = time_of(self.tick);
        let mut row = new.row;
        row.id = id;
        if new.snapshot {
            // Created long before the connector read it.
            row.created_at = now - self.rng.random_range(86_400_000..=6 * 365 * 86_400_000);
            row.updated_at = row.created_at + self.rng.random_range(0..=86_400_000);
            self.ops.read += 1;
            self.write(None, Some(&row), "r")?;
        } else {
            row.created_at = now;
            row.updated_at = now;
            self.ops.create += 1;
            self.write(None, Some(&row), "c")?;
        }
        let mut last = self.tick;
        let mut latest = row.clone();
        if let Some(mut after) = new.update {
            after.id = id;
            after.created_at = row.created_at;
            last += self.rng.random_range(3..=600);
            after.updated_at = time_of(last);
            latest = after.clone();
            self.schedule(
                last,
                Change {
                    before: row,
                    after: Some(after),
                },
            );
        }
        if new.delete {
            last += self.rng.random_range(3..=600);
            self.schedule(
                last,
                Change {
                    before: latest,
                    after: None,
                },
            );
        }
        self.tick += 1;
        self.drain(self.tick)
    }

    fn schedule(&mut self, due: u64, change: Change) {
        self.seq += 1;
        self.changes.push(Reverse(Scheduled {
            due,
            seq: self.seq,
            change,
        }));
    }

    /// Writes every change due by `tick`.
    fn drain(&mut self, tick: u64) -> anyhow::Result<()> {
        while self.changes.peek().is_some_and(|Reverse(s)| s.due <= tick) {
            let Some(Reverse(next)) = self.changes.pop() else {
                break;
            };
            // At the end of a run, time moves on to each remaining change.
            self.tick = self.tick.max(next.due);
            let Change { before, after } = next.change;
            match after {
                Some(after) => {
                    self.ops.update += 1;
                    self.write(Some(&before), Some(&after), "u")?;
                }
                None => {
                    self.ops.delete += 1;
                    self.write(Some(&before), None, "d")?;
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, before: Option<&ShopRow>, after: Option<&ShopRow>, op: &str) -> anyhow::Result<()> {
        self.binlog_pos += self.rng.random_range(250..=1_800);
        let snapshot = op == "r";
        // Read from the binlog a moment after the write, never going back.
        let ts = (time_of(self.tick) + self.rng.random_range(5..=1_500)).max(self.last_ts + 1);
        self.last_ts = ts;
        let payload = Payload {
            before,
            after,
            source: Source {
                version: "2.7.3.Final",
                connector: "mysql",
                name: "shop",
                ts_ms: ts - self.rng.random_range(1..=5),
                snapshot: if snapshot { "incremental" } else { "false" },
                db: "shop",
                sequence: None,
                table: "customers",
                server_id: 184_054,
                gtid: None,
                file: format!("mysql-bin.{:06}", 3 + self.binlog_pos / 1_000_000_000),
                pos: self.binlog_pos % 1_000_000_000,
                row: 0,
                thread: (!snapshot).then(|| self.rng.random_range(7..=64)),
                query: None,
            },
            op,
            ts_ms: ts,
        };
        self.file.write_all(&self.prefix)?;
        serde_json::to_writer(&mut self.file, &payload)?;
        self.file
            .write_all(if self.prefix.is_empty() { b"\n" } else { b"}\n" })?;
        self.lines += 1;
        Ok(())
    }

    /// Writes the rows still waiting, then every change still queued.
    pub fn finish(mut self, ids: &super::systems::Ids, truth: &mut Truth) -> anyhow::Result<(u64, u64, CdcOps)> {
        let mut waiting = std::mem::take(&mut self.waiting);
        shuffle(&mut self.rng, &mut waiting);
        for row in waiting {
            self.release(row, ids, truth)?;
        }
        self.drain(u64::MAX)?;
        self.file.flush()?;
        Ok((self.lines, self.next_id, self.ops))
    }
}
