//! The projection runner: follows the global log from a projection's
//! checkpoint and applies it batch by batch, each batch and the checkpoint in
//! one transaction, so a crash at any point leaves the rows exactly as of
//! some checkpoint and the next start carries on from there (exactly-once
//! effect, with the store's gap-free subscription).
//!
//! Every batch transaction starts by writing the projection's checkpoint row
//! and reading it back. That takes the row's lock (PostgreSQL) or the
//! database's write lock (SQLite) first, so a rebuild's table swap and a
//! second runner of the same projection queue behind it, and it lets the
//! runner see when the row moved under it (a swap installed rebuilt tables at
//! another position, or another process ran the projection): it then drops
//! the batch and continues from the stored position instead of applying
//! events twice or skipping some.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use mdm_commands::opened::{OpenedEvent, SourceRecordOpener};
use mdm_store::{EventStore, Position, ReadError, RecordedEvent};
use sqlx::AnyConnection;
use tokio::sync::watch;

use crate::db::{parse_time, time_text, to_i64, Dialect, ReadDb};

/// The table holding every projection's checkpoint (not owned by any one
/// projection, never rebuilt).
const CHECKPOINT_DDL: &str = "CREATE TABLE IF NOT EXISTS projection_checkpoint (
    name text PRIMARY KEY,
    position bigint NOT NULL,
    generation bigint NOT NULL,
    schema_version bigint NOT NULL,
    config text NOT NULL,
    last_event_at text,
    updated_at text NOT NULL
)";

const CHECKPOINT_COMMENTS: [&str; 8] = [
    "COMMENT ON TABLE projection_checkpoint IS 'How far each projection (and each rebuild in progress) has applied the global log'",
    "COMMENT ON COLUMN projection_checkpoint.name IS 'Projection name; a rebuild in progress is <name>__g<generation>'",
    "COMMENT ON COLUMN projection_checkpoint.position IS 'Global log position of the last event applied (0: none)'",
    "COMMENT ON COLUMN projection_checkpoint.generation IS 'Which build of the tables is live; index names carry it'",
    "COMMENT ON COLUMN projection_checkpoint.schema_version IS 'Shape of the tables; a build with another shape rebuilds them'",
    "COMMENT ON COLUMN projection_checkpoint.config IS 'Configuration the rows were built with (e.g. the survivorship rule set version)'",
    "COMMENT ON COLUMN projection_checkpoint.last_event_at IS 'When the last applied event was recorded in the log (RFC 3339, UTC)'",
    "COMMENT ON COLUMN projection_checkpoint.updated_at IS 'When the projection last committed a batch'",
];

/// Why a projection could not apply a batch. The runner stops on any of
/// them and its supervisor starts it again from the checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read-model database failed")]
    Db(#[from] sqlx::Error),
    #[error("event store read failed")]
    Read(#[from] ReadError),
    #[error("key store failed")]
    Keys(#[from] mdm_store::keys::KeyStoreError),
    /// An event this build should understand but cannot decode.
    #[error("event at position {position} cannot be projected: {reason}")]
    Corrupt { position: u64, reason: String },
    #[error("projection {0} has no checkpoint; create its tables first")]
    Missing(String),
}

/// Table and index names of one build (generation) of a projection's tables.
/// Live tables have their plain names; a rebuild builds `<table>__g<n>`
/// beside them and renames them into place. Index names carry the
/// generation (`{g}`) so that a rebuild's indexes never collide with the
/// live ones, before or after the swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    table_suffix: String,
    generation: i64,
}

impl Names {
    /// The live tables of `generation`.
    pub fn live(generation: i64) -> Names {
        Names {
            table_suffix: String::new(),
            generation,
        }
    }

    /// The tables a rebuild builds for `generation`.
    pub fn staging(generation: i64) -> Names {
        Names {
            table_suffix: format!("__g{generation}"),
            generation,
        }
    }

    /// Fills a SQL template: `{s}` is the table suffix, `{g}` the generation.
    pub fn sql(&self, template: &str) -> String {
        template
            .replace("{s}", &self.table_suffix)
            .replace("{g}", &self.generation.to_string())
    }

    pub fn table(&self, base: &str) -> String {
        format!("{base}{}", self.table_suffix)
    }

    pub fn generation(&self) -> i64 {
        self.generation
    }
}

/// One batch of events, opened when the projection reads source records.
#[derive(Debug)]
pub struct Batch<'a> {
    pub events: &'a [RecordedEvent],
    /// One per event when the projection opens source records, else empty.
    pub opened: &'a [OpenedEvent],
}

impl Batch<'_> {
    pub fn opened(&self, i: usize) -> Option<&OpenedEvent> {
        self.opened.get(i)
    }
}

/// A read model built from the log. Each projection owns its tables and
/// the queries that read them.
#[async_trait]
pub trait Projection: Send + Sync + std::fmt::Debug + 'static {
    /// Stable name: the checkpoint's key and the CLI's argument.
    fn name(&self) -> &'static str;
    /// The shape of the tables. Change it with the DDL: a build with another
    /// version drops and rebuilds the tables at start.
    fn schema_version(&self) -> i64;
    /// The configuration the rows depend on. When it differs from what the
    /// live tables were built with, `mdm projections status` says a rebuild
    /// is due; the live tables keep applying new events meanwhile.
    fn config(&self) -> String {
        String::new()
    }
    /// The tables it owns (their base names).
    fn tables(&self) -> &'static [&'static str];
    /// The statements creating its tables and indexes, as templates for
    /// [`Names::sql`].
    fn schema(&self, dialect: Dialect) -> Vec<&'static str>;
    /// Whether it needs source-record events opened (decrypted).
    fn opens_source_records(&self) -> bool;
    /// Applies one batch inside the runner's transaction.
    async fn apply(&self, tx: &mut AnyConnection, names: &Names, batch: &Batch<'_>) -> Result<(), ProjectionError>;
}

/// A checkpoint row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub name: String,
    pub position: Position,
    pub generation: i64,
    pub schema_version: i64,
    pub config: String,
    pub last_event_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

type CheckpointRow = (String, i64, i64, i64, String, Option<String>, String);

fn checkpoint_of(row: CheckpointRow) -> Checkpoint {
    Checkpoint {
        name: row.0,
        position: Position(u64::try_from(row.1).unwrap_or(0)),
        generation: row.2,
        schema_version: row.3,
        config: row.4,
        last_event_at: row.5.as_deref().and_then(parse_time),
        updated_at: parse_time(&row.6),
    }
}

const SELECT_CHECKPOINT: &str = "SELECT name, position, generation, schema_version, config, last_event_at, updated_at \
     FROM projection_checkpoint";

/// Every checkpoint row, in name order.
pub async fn checkpoints(db: &ReadDb) -> Result<Vec<Checkpoint>, sqlx::Error> {
    ensure_checkpoint_table(db).await?;
    let rows: Vec<CheckpointRow> = sqlx::query_as(&format!("{SELECT_CHECKPOINT} ORDER BY name"))
        .fetch_all(db.pool())
        .await?;
    Ok(rows.into_iter().map(checkpoint_of).collect())
}

/// One projection's checkpoint, if its tables exist.
pub async fn checkpoint(db: &ReadDb, name: &str) -> Result<Option<Checkpoint>, sqlx::Error> {
    ensure_checkpoint_table(db).await?;
    let row: Option<CheckpointRow> = sqlx::query_as(&format!("{SELECT_CHECKPOINT} WHERE name = $1"))
        .bind(name)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(checkpoint_of))
}

async fn ensure_checkpoint_table(db: &ReadDb) -> Result<(), sqlx::Error> {
    if db.table_exists("projection_checkpoint").await? {
        return Ok(());
    }
    let create = async {
        let mut tx = db.begin_write().await?;
        sqlx::query(CHECKPOINT_DDL).execute(&mut *tx).await?;
        if db.dialect() == Dialect::Postgres {
            for c in CHECKPOINT_COMMENTS {
                sqlx::query(c).execute(&mut *tx).await?;
            }
        }
        tx.commit().await
    };
    match create.await {
        Ok(()) => Ok(()),
        // Two runners racing to create it (PostgreSQL's `IF NOT EXISTS` is
        // not atomic against a concurrent create): the loser finds it there.
        Err(_) if db.table_exists("projection_checkpoint").await? => Ok(()),
        Err(e) => Err(e),
    }
}

/// Serializes changes of table shapes (creating, dropping, swapping) across
/// processes for the rest of the transaction. SQLite's `BEGIN IMMEDIATE`
/// already does; PostgreSQL's `CREATE TABLE` does not lock the name, so two
/// creators would collide.
async fn schema_lock(db: &ReadDb, tx: &mut AnyConnection) -> Result<(), sqlx::Error> {
    if db.dialect() == Dialect::Postgres {
        // "mdm-prj" in ASCII.
        sqlx::query("SELECT count(*) FROM (SELECT pg_advisory_xact_lock(30791192538018410)) AS l")
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn create_tables(
    tx: &mut AnyConnection,
    dialect: Dialect,
    projection: &dyn Projection,
    names: &Names,
) -> Result<(), sqlx::Error> {
    for statement in projection.schema(dialect) {
        sqlx::query(&names.sql(statement)).execute(&mut *tx).await?;
    }
    Ok(())
}

async fn drop_tables(tx: &mut AnyConnection, projection: &dyn Projection, names: &Names) -> Result<(), sqlx::Error> {
    for table in projection.tables().iter().rev() {
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", names.table(table)))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn insert_checkpoint(
    tx: &mut AnyConnection,
    name: &str,
    generation: i64,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoint (name, position, generation, schema_version, config, last_event_at, updated_at) \
         VALUES ($1, 0, $2, $3, $4, NULL, $5) \
         ON CONFLICT (name) DO UPDATE SET position = 0, generation = excluded.generation, \
         schema_version = excluded.schema_version, config = excluded.config, last_event_at = NULL, \
         updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(generation)
    .bind(projection.schema_version())
    .bind(projection.config())
    .bind(time_text(Utc::now()))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Makes sure the projection's live tables exist in the shape this build
/// expects: creates them on first start, and drops and recreates them (from
/// position 0) when their schema version differs. Returns the checkpoint.
pub async fn ensure(db: &ReadDb, projection: &dyn Projection) -> Result<Checkpoint, ProjectionError> {
    ensure_checkpoint_table(db).await?;
    let name = projection.name();
    if let Some(c) = checkpoint(db, name).await? {
        if c.schema_version == projection.schema_version() {
            return Ok(c);
        }
        tracing::warn!(
            projection = name,
            stored = c.schema_version,
            expected = projection.schema_version(),
            "the projection's tables have another shape; rebuilding them from the start of the log"
        );
    }
    let mut tx = db.begin_write().await?;
    schema_lock(db, &mut tx).await?;
    // Another process may have created them meanwhile: decide under the lock.
    let current: Option<(i64, i64)> =
        sqlx::query_as("SELECT schema_version, generation FROM projection_checkpoint WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let generation = match current {
        Some((v, _)) if v == projection.schema_version() => {
            tx.commit().await?;
            return checkpoint(db, name)
                .await?
                .ok_or_else(|| ProjectionError::Missing(name.to_owned()));
        }
        Some((_, g)) => g + 1,
        None => 1,
    };
    drop_tables(&mut tx, projection, &Names::live(generation)).await?;
    create_tables(&mut tx, db.dialect(), projection, &Names::live(generation)).await?;
    insert_checkpoint(&mut tx, name, generation, projection).await?;
    tx.commit().await?;
    checkpoint(db, name)
        .await?
        .ok_or_else(|| ProjectionError::Missing(name.to_owned()))
}

/// What applying a batch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Committed,
    /// The checkpoint row was not where this runner left it: nothing was
    /// applied; carry on from the stored position.
    Moved {
        position: Position,
        generation: i64,
    },
}

/// Applies `events` to the tables `names` under checkpoint `row`, if the
/// checkpoint is still at `expected`.
async fn apply_batch(
    db: &ReadDb,
    projection: &dyn Projection,
    opener: &SourceRecordOpener,
    row: &str,
    names: &Names,
    expected: Position,
    events: &[RecordedEvent],
) -> Result<Applied, ProjectionError> {
    let Some(last) = events.last() else {
        return Ok(Applied::Committed);
    };
    let started = std::time::Instant::now();
    let opened = if projection.opens_source_records() {
        opener.open_all(events).await?
    } else {
        Vec::new()
    };
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut tx = db.begin_write().await?;
    // Waiting for the write lock: on SQLite the projections take turns.
    let lock_ms = started.elapsed().as_secs_f64() * 1e3 - open_ms;
    let stored: Option<(i64, i64)> = sqlx::query_as(
        "UPDATE projection_checkpoint SET updated_at = $2 WHERE name = $1 RETURNING position, generation",
    )
    .bind(row)
    .bind(time_text(Utc::now()))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((position, generation)) = stored else {
        return Err(ProjectionError::Missing(row.to_owned()));
    };
    let position = Position(u64::try_from(position).unwrap_or(0));
    if position != expected || generation != names.generation() {
        tx.rollback().await?;
        return Ok(Applied::Moved { position, generation });
    }
    projection
        .apply(
            &mut tx,
            names,
            &Batch {
                events,
                opened: &opened,
            },
        )
        .await?;
    sqlx::query("UPDATE projection_checkpoint SET position = $2, last_event_at = $3 WHERE name = $1")
        .bind(row)
        .bind(to_i64(last.position.0))
        .bind(time_text(last.recorded_at))
        .execute(&mut *tx)
        .await?;
    let apply_ms = started.elapsed().as_secs_f64() * 1e3 - open_ms - lock_ms;
    tx.commit().await?;
    let committed = started.elapsed();
    if projection.opens_source_records() && events.iter().any(|e| e.event_type == "CustomerErased") {
        // The purge's old page images must not linger in the WAL file (only
        // the projections that open source records hold personal data; the
        // others' checkpoint would copy the same WAL again).
        if let Err(error) = db.scrub().await {
            tracing::warn!(error = %error, "could not checkpoint the read models after an erasure");
        }
    }
    tracing::debug!(
        projection = projection.name(),
        events = events.len(),
        open_ms,
        lock_ms,
        apply_ms,
        commit_ms = committed.as_secs_f64() * 1e3 - open_ms - lock_ms - apply_ms,
        scrub_ms = (started.elapsed() - committed).as_secs_f64() * 1e3,
        "batch committed"
    );
    Ok(Applied::Committed)
}

/// What a running projection reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub position: Position,
    /// When the last applied event was recorded.
    pub last_event_at: Option<DateTime<Utc>>,
    /// When the last batch committed.
    pub applied_at: Option<DateTime<Utc>>,
    /// The last batch applied what was visible: nothing more to read then.
    pub caught_up: bool,
    pub events_applied: u64,
}

/// One committed batch, for lag measurements: every event of it became
/// readable at `committed_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchApplied {
    pub events: usize,
    /// When the oldest event of the batch was recorded in the log.
    pub first_recorded_at: DateTime<Utc>,
    pub last_recorded_at: DateTime<Utc>,
    pub committed_at: DateTime<Utc>,
}

/// Runs one projection on its live tables.
#[derive(Debug)]
pub struct Runner {
    store: Arc<dyn EventStore>,
    db: ReadDb,
    projection: Arc<dyn Projection>,
    opener: SourceRecordOpener,
    progress: watch::Sender<Progress>,
    batch: usize,
    observer: Option<tokio::sync::mpsc::UnboundedSender<BatchApplied>>,
}

/// The most events one batch applies.
pub const BATCH: usize = 5_000;

impl Runner {
    pub fn new(
        store: Arc<dyn EventStore>,
        db: ReadDb,
        projection: Arc<dyn Projection>,
        opener: SourceRecordOpener,
    ) -> Runner {
        Runner {
            store,
            db,
            projection,
            opener,
            progress: watch::channel(Progress::default()).0,
            batch: BATCH,
            observer: None,
        }
    }

    /// Reports every batch the live run commits (the lag benchmark).
    pub fn with_observer(mut self, observer: tokio::sync::mpsc::UnboundedSender<BatchApplied>) -> Runner {
        self.observer = Some(observer);
        self
    }

    /// Caps the events per batch (tests use small batches to cut a run
    /// mid-way).
    pub fn with_batch(mut self, batch: usize) -> Runner {
        self.batch = batch.max(1);
        self
    }

    /// Watches the runner's progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// Applies everything the log holds now, without following it, and
    /// returns the position reached (the CLI and tests use this).
    pub async fn catch_up(&self) -> Result<Position, ProjectionError> {
        let mut checkpoint = ensure(&self.db, self.projection.as_ref()).await?;
        loop {
            let names = Names::live(checkpoint.generation);
            let page = self.store.read_all(checkpoint.position, self.batch).await?;
            let Some(last) = page.last() else {
                return Ok(checkpoint.position);
            };
            let (position, at) = (last.position, last.recorded_at);
            match apply_batch(
                &self.db,
                self.projection.as_ref(),
                &self.opener,
                self.projection.name(),
                &names,
                checkpoint.position,
                &page,
            )
            .await?
            {
                Applied::Committed => {
                    checkpoint.position = position;
                    let n = page.len() as u64;
                    self.progress.send_modify(|p| {
                        p.position = position;
                        p.last_event_at = Some(at);
                        p.applied_at = Some(Utc::now());
                        p.events_applied += n;
                    });
                }
                Applied::Moved { .. } => checkpoint = checkpoint_of_db(&self.db, self.projection.name()).await?,
            }
        }
    }

    /// Follows the log until the subscription or a batch fails. Catches up
    /// first, then applies new events as they arrive.
    pub async fn run(&self) -> Result<(), ProjectionError> {
        let (_never, stop) = watch::channel(false);
        self.run_until(stop).await
    }

    /// [`Runner::run`] until `stop` turns true: the batch being applied
    /// then is finished and committed, no further batch is started, and it
    /// returns `Ok` (graceful shutdown).
    pub async fn run_until(&self, mut stop: watch::Receiver<bool>) -> Result<(), ProjectionError> {
        let mut checkpoint = ensure(&self.db, self.projection.as_ref()).await?;
        if checkpoint.config != self.projection.config() {
            tracing::warn!(
                projection = self.projection.name(),
                "the projection's tables were built with another configuration; run `mdm projections rebuild` \
                 to re-master them (new events use the current one)"
            );
        }
        let name = self.projection.name();
        loop {
            let names = Names::live(checkpoint.generation);
            let mut position = checkpoint.position;
            self.progress.send_modify(|p| {
                p.position = position;
                p.last_event_at = checkpoint.last_event_at;
            });
            let subscription = self.store.subscribe_all(position).await?;
            let mut chunks = subscription.ready_chunks(self.batch);
            let moved = loop {
                let stopping = async {
                    if stop.wait_for(|s| *s).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                let next = tokio::select! {
                    biased;
                    () = stopping => None,
                    chunk = chunks.next() => Some(chunk),
                };
                let Some(next) = next else {
                    tracing::info!(
                        projection = name,
                        position = position.0,
                        "projection stopped after its last batch"
                    );
                    return Ok(());
                };
                let Some(chunk) = next else {
                    return Err(ProjectionError::Read(ReadError::Unavailable(
                        "the subscription ended".into(),
                    )));
                };
                let mut events = Vec::with_capacity(chunk.len());
                for e in chunk {
                    events.push(e?);
                }
                let caught_up = events.len() < self.batch;
                match apply_batch(
                    &self.db,
                    self.projection.as_ref(),
                    &self.opener,
                    name,
                    &names,
                    position,
                    &events,
                )
                .await?
                {
                    Applied::Committed => {
                        if let (Some(first), Some(last)) = (events.first(), events.last()) {
                            if let Some(observer) = &self.observer {
                                let _ = observer.send(BatchApplied {
                                    events: events.len(),
                                    first_recorded_at: first.recorded_at,
                                    last_recorded_at: last.recorded_at,
                                    committed_at: Utc::now(),
                                });
                            }
                            position = last.position;
                            let at = last.recorded_at;
                            let n = events.len() as u64;
                            self.progress.send_modify(|p| {
                                p.position = position;
                                p.last_event_at = Some(at);
                                p.applied_at = Some(Utc::now());
                                p.caught_up = caught_up;
                                p.events_applied += n;
                            });
                        }
                    }
                    Applied::Moved { .. } => break true,
                }
            };
            if moved {
                tracing::info!(
                    projection = name,
                    "the checkpoint moved (a rebuild was swapped in); following it"
                );
                checkpoint = checkpoint_of_db(&self.db, name).await?;
            }
        }
    }
}

async fn checkpoint_of_db(db: &ReadDb, name: &str) -> Result<Checkpoint, ProjectionError> {
    checkpoint(db, name)
        .await?
        .ok_or_else(|| ProjectionError::Missing(name.to_owned()))
}

/// Runs `runner` until `shutdown` fires, starting it again from its
/// checkpoint after a failure (with a growing pause), so one bad moment of
/// the database or the key store does not stop the read models for good.
pub async fn supervise(runner: Runner, mut shutdown: watch::Receiver<bool>) {
    let mut pause = Duration::from_millis(200);
    loop {
        // Shutdown lets the batch being applied commit (run_until stops
        // between batches), so a stop never throws finished work away.
        if let Err(e) = runner.run_until(shutdown.clone()).await {
            tracing::error!(projection = runner.name(), error = %ErrorChain(&e), "projection stopped; restarting from its checkpoint");
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// Shows an error with its causes, for logs (our errors carry no personal
/// data: they name positions, tables and projections).
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// What a rebuild did.
#[derive(Clone, Debug, PartialEq)]
pub struct RebuildReport {
    pub name: &'static str,
    pub generation: i64,
    pub events: u64,
    pub position: Position,
    pub seconds: f64,
}

/// Builds fresh tables for `projection` from position 0 beside the live
/// ones while they keep serving and following the log, then swaps them in
/// atomically and drops the old ones. `progress` is called after each batch
/// with the position reached.
pub async fn rebuild(
    store: &dyn EventStore,
    db: &ReadDb,
    projection: &dyn Projection,
    opener: &SourceRecordOpener,
    progress: &mut (dyn FnMut(Position, u64) + Send),
) -> Result<RebuildReport, ProjectionError> {
    let started = std::time::Instant::now();
    let live = ensure(db, projection).await?;
    let name = projection.name();
    let generation = live.generation + 1;
    let staging = Names::staging(generation);
    let row = format!("{name}__g{generation}");
    {
        let mut tx = db.begin_write().await?;
        schema_lock(db, &mut tx).await?;
        drop_tables(&mut tx, projection, &staging).await?;
        create_tables(&mut tx, db.dialect(), projection, &staging).await?;
        insert_checkpoint(&mut tx, &row, generation, projection).await?;
        tx.commit().await?;
    }
    let mut position = Position::START;
    let mut events_applied = 0u64;
    // Catch up without holding anything the live runner needs.
    loop {
        let page = store.read_all(position, BATCH).await?;
        let full = page.len() == BATCH;
        match apply_batch(db, projection, opener, &row, &staging, position, &page).await? {
            Applied::Committed => {}
            Applied::Moved { .. } => {
                return Err(ProjectionError::Corrupt {
                    position: position.0,
                    reason: "another rebuild of the same projection is running".into(),
                })
            }
        }
        if let Some(last) = page.last() {
            position = last.position;
            events_applied += page.len() as u64;
            progress(position, events_applied);
        }
        if !full {
            break;
        }
    }
    // The swap: under the live checkpoint's lock, apply what arrived since,
    // rename the tables into place and move the checkpoint, in one
    // transaction. Readers see the old tables or the new ones, never a mix.
    loop {
        let tail = store.read_all(position, BATCH).await?;
        if tail.len() == BATCH {
            // Still far behind: keep catching up outside the lock.
            apply_batch(db, projection, opener, &row, &staging, position, &tail).await?;
            if let Some(last) = tail.last() {
                position = last.position;
                events_applied += tail.len() as u64;
                progress(position, events_applied);
            }
            continue;
        }
        let opened = if projection.opens_source_records() {
            opener.open_all(&tail).await?
        } else {
            Vec::new()
        };
        let mut tx = db.begin_write().await?;
        schema_lock(db, &mut tx).await?;
        let locked: Option<(i64,)> =
            sqlx::query_as("UPDATE projection_checkpoint SET updated_at = $2 WHERE name = $1 RETURNING position")
                .bind(name)
                .bind(time_text(Utc::now()))
                .fetch_optional(&mut *tx)
                .await?;
        if locked.is_none() {
            return Err(ProjectionError::Missing(name.to_owned()));
        }
        // Events appended after the tail was read: the swap waits for the
        // next round rather than holding the lock while reading the store.
        projection
            .apply(
                &mut tx,
                &staging,
                &Batch {
                    events: &tail,
                    opened: &opened,
                },
            )
            .await?;
        if let Some(last) = tail.last() {
            position = last.position;
            events_applied += tail.len() as u64;
        }
        let last_event_at: Option<String> = match tail.last() {
            Some(last) => Some(time_text(last.recorded_at)),
            None => {
                sqlx::query_as::<_, (Option<String>,)>(
                    "SELECT last_event_at FROM projection_checkpoint WHERE name = $1",
                )
                .bind(&row)
                .fetch_one(&mut *tx)
                .await?
                .0
            }
        };
        let live_names = Names::live(generation);
        for table in projection.tables() {
            sqlx::query(&format!("DROP TABLE IF EXISTS {}", live_names.table(table)))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "ALTER TABLE {} RENAME TO {}",
                staging.table(table),
                live_names.table(table)
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE projection_checkpoint SET position = $2, generation = $3, schema_version = $4, config = $5, \
             last_event_at = $6, updated_at = $7 WHERE name = $1",
        )
        .bind(name)
        .bind(to_i64(position.0))
        .bind(generation)
        .bind(projection.schema_version())
        .bind(projection.config())
        .bind(last_event_at)
        .bind(time_text(Utc::now()))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM projection_checkpoint WHERE name = $1")
            .bind(&row)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        progress(position, events_applied);
        return Ok(RebuildReport {
            name,
            generation,
            events: events_applied,
            position,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
}

/// Drops a projection's live tables and checkpoint (the next start builds
/// them from position 0). Used by tests comparing a replay with a fresh one.
pub async fn reset(db: &ReadDb, projection: &dyn Projection) -> Result<(), ProjectionError> {
    ensure_checkpoint_table(db).await?;
    let Some(c) = checkpoint(db, projection.name()).await? else {
        return Ok(());
    };
    let mut tx = db.begin_write().await?;
    drop_tables(&mut tx, projection, &Names::live(c.generation)).await?;
    sqlx::query("DELETE FROM projection_checkpoint WHERE name = $1")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A projection's position against the head of the log.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Status {
    pub name: String,
    pub position: u64,
    pub head: u64,
    /// Events in the log after `position` (counted up to `LAG_COUNT_CAP`).
    pub events_behind: u64,
    /// `events_behind` stopped counting at the cap.
    pub events_behind_capped: bool,
    /// How much older the last applied event is than the head event, in
    /// seconds (0 when caught up).
    pub lag_seconds: f64,
    pub generation: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The live tables were built with another configuration: rebuild.
    pub rebuild_due: bool,
}

/// How far `events_behind` counts.
pub const LAG_COUNT_CAP: u64 = 1_000_000;

/// The status of each of `projections` (absent tables count as position 0).
pub async fn status(
    store: &dyn EventStore,
    db: &ReadDb,
    projections: &[Arc<dyn Projection>],
) -> Result<Vec<Status>, ProjectionError> {
    let head = store.head().await?;
    let head_at = if head == Position::START {
        None
    } else {
        last_event_time(store, head).await?
    };
    let mut out = Vec::new();
    for p in projections {
        let c = checkpoint(db, p.name()).await?;
        let position = c.as_ref().map(|c| c.position).unwrap_or(Position::START);
        let (behind, capped) = count_after(store, position, LAG_COUNT_CAP).await?;
        let last_event_at = c.as_ref().and_then(|c| c.last_event_at);
        let lag_seconds = match (behind, head_at, last_event_at) {
            (0, _, _) => 0.0,
            (_, Some(h), Some(l)) => (h - l).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6,
            (_, Some(h), None) => {
                let first = store.read_all(Position::START, 1).await?;
                first
                    .first()
                    .map(|f| (h - f.recorded_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6)
                    .unwrap_or(0.0)
            }
            _ => 0.0,
        };
        out.push(Status {
            name: p.name().to_owned(),
            position: position.0,
            head: head.0,
            events_behind: behind,
            events_behind_capped: capped,
            lag_seconds,
            generation: c.as_ref().map(|c| c.generation).unwrap_or(0),
            last_event_at,
            updated_at: c.as_ref().and_then(|c| c.updated_at),
            rebuild_due: c.as_ref().is_some_and(|c| c.config != p.config()),
        });
    }
    Ok(out)
}

async fn last_event_time(store: &dyn EventStore, head: Position) -> Result<Option<DateTime<Utc>>, ReadError> {
    // The head event is the first event after any position just below it;
    // positions are not dense, so read from a little before and keep the last.
    let page = store.read_all(Position(head.0.saturating_sub(1)), 1).await?;
    Ok(page.last().map(|e| e.recorded_at))
}

/// Counts events after `after`, up to `cap`. Positions are not dense, so
/// this reads; status asks it rarely.
async fn count_after(store: &dyn EventStore, after: Position, cap: u64) -> Result<(u64, bool), ReadError> {
    let mut n = 0u64;
    let mut position = after;
    loop {
        let page = store.read_all(position, mdm_store::MAX_READ).await?;
        let Some(last) = page.last() else {
            return Ok((n, false));
        };
        n += page.len() as u64;
        position = last.position;
        if n >= cap {
            return Ok((n, true));
        }
    }
}

/// Every row of a projection's live tables as text, table by table, rows
/// sorted: what tests compare between a replay and a fresh build.
pub async fn dump(db: &ReadDb, projection: &dyn Projection) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
    use sqlx::{Column, Row};
    let mut out = Vec::new();
    for table in projection.tables() {
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(db.pool())
            .await?;
        let mut lines: Vec<String> = rows
            .iter()
            .map(|row| {
                (0..row.columns().len())
                    .map(|i| {
                        let name = row.columns()[i].name().to_owned();
                        let value = if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                            v.map(|v| format!("{v:?}")).unwrap_or_else(|| "null".into())
                        } else if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                            v.map(|v| v.to_string()).unwrap_or_else(|| "null".into())
                        } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
                            v.map(|v| format!("{v:.9}")).unwrap_or_else(|| "null".into())
                        } else {
                            "?".into()
                        };
                        format!("{name}={value}")
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        lines.sort();
        out.push(((*table).to_owned(), lines));
    }
    Ok(out)
}
