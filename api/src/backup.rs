//! `mdm backup DEST`: a consistent copy of the embedded store, taken while
//! `mdm serve` runs.
//!
//! Each SQLite file is copied with SQLite's online backup API in one step,
//! that is inside one read transaction of a read-only connection: the copy
//! is the database as of one commit, and in WAL mode the service's writers
//! never wait for it. The event store's lock file (`events.db.lock`) keeps
//! a second *service* out; a reader does not take it, so the backup runs
//! beside `mdm serve`.
//!
//! The files are taken in an order that makes the set consistent too:
//! 1. `read.db` first: the read models lag the log, so their checkpoints
//!    are at or below the log's head in the copy of `events.db` taken
//!    after them. After a restore the projections catch up from there.
//!    (Taken after the log, a checkpoint could be ahead of the copied log,
//!    and the restored service would skip the events it appends next.)
//! 2. `events.db`.
//! 3. `keys.db` last: a data key is committed before the first event that
//!    uses it, so every event in the copied log finds its key. A key
//!    destroyed by an erasure between steps 2 and 3 stays destroyed: the
//!    restored person reads as erased, never the other way round.
//!
//! The master key is not copied unless asked (`--include-master-key`): it
//! never changes, and kept apart from the data it protects, a stolen backup
//! holds no readable personal data. Each copy is written under a temporary
//! name, checked with `PRAGMA integrity_check`, switched out of WAL mode
//! (one self-contained file), synced and renamed into place.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::config::{Config, EventStoreConfig, KeyStoreConfig, MasterKeyConfig, ReadModelConfig};

/// What was copied: one line per file.
#[derive(Clone, Debug, Serialize)]
pub struct Copied {
    pub file: String,
    pub bytes: u64,
    pub integrity: String,
    pub seconds: f64,
    /// `events.db` only: the highest log position in the copy and the
    /// number of events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_head: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<i64>,
}

/// Copies the embedded store's databases (and, if asked, the master key
/// file) into `dest`, a folder that must not exist yet or be empty.
pub fn backup(config: &Config, dest: &Path, include_master_key: bool) -> anyhow::Result<Vec<Copied>> {
    let (
        EventStoreConfig::Sqlite { path: events, .. },
        ReadModelConfig::Sqlite { path: read },
        KeyStoreConfig::Sqlite { path: keys },
    ) = (&config.event_store, &config.read_models, &config.keys.store)
    else {
        bail!(
            "mdm backup copies the embedded store (SQLite files); this configuration keeps data in PostgreSQL or \
             KurrentDB: back those up with their own tools (pg_dump, KurrentDB backups; see docs/operations.md)"
        );
    };
    if dest.exists() {
        let mut entries = std::fs::read_dir(dest).with_context(|| format!("reading {}", dest.display()))?;
        if entries.next().is_some() {
            bail!("{} is not empty: back up into a new folder", dest.display());
        }
    }
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut copied = Vec::new();
    // The order matters: see the module documentation.
    for (source, name) in [(read, "read.db"), (events, "events.db"), (keys, "keys.db")] {
        copied.push(copy_database(source, &dest.join(name))?);
    }
    if include_master_key {
        let MasterKeyConfig::File { path, .. } = &config.keys.master_key else {
            bail!("the master key comes from MDM_MASTER_KEY, not a file: keep it in your secret store");
        };
        let target = dest.join("master.key");
        copy_private(path, &target)?;
        copied.push(Copied {
            file: "master.key".into(),
            bytes: std::fs::metadata(&target)?.len(),
            integrity: "copied".into(),
            seconds: 0.0,
            log_head: None,
            events: None,
        });
    }
    sync_dir(dest)?;
    Ok(copied)
}

/// One database, copied in one step of the online backup API.
fn copy_database(source: &Path, target: &Path) -> anyhow::Result<Copied> {
    let started = Instant::now();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    anyhow::ensure!(
        source.is_file(),
        "{} does not exist: nothing to back up",
        source.display()
    );
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} to read", source.display()))?;
    from.busy_timeout(Duration::from_secs(10))?;
    let partial = PathBuf::from(format!("{}.partial", target.display()));
    let _ = std::fs::remove_file(&partial);
    let mut to = Connection::open(&partial).with_context(|| format!("creating {}", partial.display()))?;
    {
        let backup = Backup::new(&from, &mut to).with_context(|| format!("starting the backup of {name}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // -1: every page in one step, under one read transaction.
            match backup.step(-1).with_context(|| format!("copying {name}"))? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked => {
                    anyhow::ensure!(Instant::now() < deadline, "{name} stayed locked for 60 s");
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    drop(from);
    let integrity: String = to.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    anyhow::ensure!(
        integrity == "ok",
        "the copy of {name} fails its integrity check: {integrity}"
    );
    let mode: String = to.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("delete"), "{name}: journal mode {mode}");
    let (log_head, events) = if name == "events.db" {
        let (head, n): (Option<i64>, i64) = to.query_row("SELECT max(position), count(*) FROM event", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        (Some(head.unwrap_or(0)), Some(n))
    } else {
        (None, None)
    };
    to.close()
        .map_err(|(_, e)| e)
        .with_context(|| format!("closing {}", partial.display()))?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, target).with_context(|| format!("renaming {}", partial.display()))?;
    Ok(Copied {
        file: name,
        bytes: std::fs::metadata(target)?.len(),
        integrity,
        seconds: started.elapsed().as_secs_f64(),
        log_head,
        events,
    })
}

/// Copies a secret file, readable by its owner only.
fn copy_private(source: &Path, target: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(target)
        .with_context(|| format!("creating {}", target.display()))?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    let _ = dir;
    Ok(())
}
