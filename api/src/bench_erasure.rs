//! `mdm bench erasure`: how long erasing one customer takes on a store that
//! already holds `--records` generated source records, until every read
//! model has purged it; against a steward's value override (the same path
//! through the resolver and the projections, without the keys and the
//! purge) measured in the same run.
//!
//! Set-up (embedded stores, SQLite read models): the generated records are
//! imported and resolved, every projection catches up; then the resolver
//! and a runner per projection follow the log in this process, as in `mdm
//! serve`. Each measured command goes through `ResolverHandle::command`
//! (what the HTTP handler does) and counts from the call until every
//! projection has applied the decision: for an erasure that includes the
//! decision's append, destroying the keys of all the customer's records and
//! overrides, and each projection's purge. Customers are picked at random
//! among the active ones; overrides and erasures alternate so both see the
//! same load. One JSON line per figure: median and p99 in milliseconds and
//! the ratio of the medians.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mdm_commands::opened::SourceRecordOpener;
use mdm_commands::resolver::{RandomIds, Resolver};
use mdm_domain::resolution::engine::{CommandRequest, StewardCommand};
use mdm_domain::resolution::events::{SealedValue, RESOLUTION_STREAM};
use mdm_domain::survivorship::GoldenValue;
use mdm_projections::{CustomerSettings, ReadDb, Runner};
use mdm_store::keys::SubjectKey;
use mdm_store::{Direction, Position, StreamStart};
use serde_json::json;
use uuid::Uuid;

use crate::bench_projections::{build_log, count_events, engine, median, open_log, resolver_settings, Log};
use crate::datagen::{self, DatagenArgs};

/// Options of `mdm bench erasure`.
#[derive(Debug, clap::Args)]
pub struct ErasureBenchArgs {
    /// Source records in the store before the first erasure.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Customers erased (and as many overrides set, the baseline).
    #[arg(long, default_value_t = 20)]
    pub erasures: usize,
    /// Where the generated files and the stores go (a temporary folder by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The sources file the generated data follows.
    #[arg(long, default_value = "config/sources.example.toml")]
    pub sources: PathBuf,
    /// Reuse the log a previous run left in `--dir` (same `--records`).
    #[arg(long)]
    pub reuse_log: bool,
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n => v[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1],
    }
}

pub async fn run_erasure_bench(args: ErasureBenchArgs) -> anyhow::Result<()> {
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
    let started = Instant::now();
    let log = if args.reuse_log && work.join("log").join("events.db").exists() {
        let (store, keys) = open_log(&work.join("log")).await?;
        let events = count_events(&store).await?;
        Log { store, keys, events }
    } else {
        let generated = work.join("generated");
        let mut gen = DatagenArgs::new(generated.clone(), 0, 42);
        gen.records = Some(args.records);
        tokio::task::spawn_blocking(move || datagen::run(&gen)).await??;
        build_log(&work.join("log"), &generated, &sources, &matching, &settings).await?
    };
    let read_path = work.join("log").join("read.db");
    if !args.reuse_log {
        let _ = std::fs::remove_file(&read_path);
    }
    let db = ReadDb::open_sqlite(&read_path).await?;
    let projections = mdm_projections::all(settings.clone());
    let opener = SourceRecordOpener::new(log.keys.clone(), 2_000_000);
    for p in &projections {
        Runner::new(log.store.clone(), db.clone(), p.clone(), opener.clone())
            .catch_up()
            .await?;
    }
    println!(
        "{}",
        json!({"bench": "erasure", "figure": "set_up", "records": args.records, "events": log.events,
               "seconds": started.elapsed().as_secs_f64()})
    );

    // Follow the log as `mdm serve` does.
    let (resolver, _) = Resolver::start(
        log.store.clone(),
        log.keys.clone(),
        engine(&matching)?,
        resolver_settings(&settings),
        Box::new(RandomIds),
    )
    .await?;
    let (handle, _resolver_task) = resolver.spawn();
    let mut progress = Vec::new();
    let mut tasks = Vec::new();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    for p in projections {
        let runner = Runner::new(log.store.clone(), db.clone(), p, opener.clone());
        progress.push(runner.progress());
        tasks.push(tokio::spawn(mdm_projections::runner::supervise(
            runner,
            stopped.clone(),
        )));
    }

    let tokens: Vec<String> = sqlx::query_scalar(
        "SELECT token FROM customer WHERE status = 'active' AND record_count > 0 ORDER BY random() LIMIT $1",
    )
    .bind(i64::try_from(2 * args.erasures)?)
    .fetch_all(db.pool())
    .await?;
    anyhow::ensure!(
        tokens.len() == 2 * args.erasures,
        "not enough customers for {} erasures",
        args.erasures
    );
    let last_decision = || async {
        let page = log
            .store
            .read_stream(RESOLUTION_STREAM, StreamStart::Edge, Direction::Backwards, 1)
            .await?;
        anyhow::Ok(page.last().map_or(Position::START, |e| e.position))
    };
    let applied_everywhere = |position: Position| {
        let progress = progress.clone();
        async move {
            for mut p in progress {
                tokio::time::timeout(Duration::from_secs(60), p.wait_for(|p| p.position >= position))
                    .await
                    .context("a projection did not apply the decision within 60 s")??;
            }
            anyhow::Ok(())
        }
    };
    let (mut overrides, mut erasures, mut erasure_commands, mut records) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for pair in tokens.chunks(2) {
        let (a, b) = (Uuid::parse_str(&pair[0])?, Uuid::parse_str(&pair[1])?);
        // Baseline: a value override, sealed under its own key as the API does.
        let override_id = Uuid::now_v7();
        let subject = SealedValue::subject(override_id);
        let t = Instant::now();
        let key = log.keys.get_or_create(std::slice::from_ref(&subject)).await?;
        let Some(SubjectKey::Active { key_id, key }) = key.into_iter().next().map(|l| l.key) else {
            anyhow::bail!("no key for the override");
        };
        let value = GoldenValue::Email {
            email: format!("bench.{}@example.test", override_id.simple()),
        };
        let sealed = mdm_commands::ingest::seal(&key, &subject, &value)?;
        let request = CommandRequest {
            command_id: Uuid::now_v7(),
            steward: "bench".into(),
            reason: "bench".into(),
            expected: Vec::new(),
            command: StewardCommand::Override {
                token: a,
                override_id,
                attribute: "email".into(),
                expires_at: None,
                value: SealedValue { key_id, sealed },
            },
        };
        handle
            .command(request)
            .await?
            .map_err(|e| anyhow::anyhow!("override refused: {e}"))?;
        applied_everywhere(last_decision().await?).await?;
        overrides.push(t.elapsed().as_secs_f64() * 1e3);

        let request = CommandRequest {
            command_id: Uuid::now_v7(),
            steward: "bench".into(),
            reason: "bench".into(),
            expected: Vec::new(),
            command: StewardCommand::Erase {
                token: b,
                request_id: None,
                legal_basis: "bench".into(),
                retain: Vec::new(),
            },
        };
        let t = Instant::now();
        let decided = handle
            .command(request)
            .await?
            .map_err(|e| anyhow::anyhow!("erasure refused: {e}"))?
            .decisions;
        erasure_commands.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(mdm_domain::resolution::events::Decision::CustomerErased { records: r, .. }) =
            decided.first().map(|d| &d.decision)
        {
            records += r.len();
        }
        applied_everywhere(last_decision().await?).await?;
        erasures.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // Every erased customer reads as erased.
    let erased: i64 = sqlx::query_scalar("SELECT count(*) FROM customer WHERE status = 'erased'")
        .fetch_one(db.pool())
        .await?;
    anyhow::ensure!(erased >= args.erasures as i64, "only {erased} customers read as erased");
    let (o_med, e_med) = (median(overrides.clone()), median(erasures.clone()));
    for (figure, values) in [
        ("override_to_read_models_ms", overrides),
        ("erasure_to_read_models_ms", erasures),
        ("erasure_command_ms", erasure_commands),
    ] {
        println!(
            "{}",
            json!({"bench": "erasure", "figure": figure, "records": args.records, "runs": values.len(),
                   "median": median(values.clone()), "p99": p99(values.clone()), "values": values})
        );
    }
    println!(
        "{}",
        json!({"bench": "erasure", "figure": "ratio_erasure_to_override", "records": args.records,
               "value": e_med / o_med.max(f64::MIN_POSITIVE),
               "records_erased_per_customer": records as f64 / args.erasures as f64})
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}
