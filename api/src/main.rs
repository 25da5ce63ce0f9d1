//! `mdm`: the MDM service and its command-line tools.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mdm_api::compose::{open_event_store, open_key_store};
use mdm_api::config::Config;
use mdm_api::http::{router, AppState};
use mdm_commands::import::{import_file, ImportOptions, Syntax};
use mdm_commands::ingest::{IngestContext, Ingestor};
use mdm_domain::metadata::Actor;
use tracing_subscriber::EnvFilter;

mod progress;

/// mimalloc instead of the system allocator: ingestion allocates and frees
/// many small values (parsed records, attributes, sealed payloads) across
/// threads, and glibc's malloc took about a fifth of `mdm import`'s CPU in
/// a profile (`perf`, docs/bench/ingest.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "mdm", version, about = "Event-sourced customer master data management")]
struct Cli {
    /// A TOML configuration file; `MDM_*` environment variables override it.
    #[arg(long, global = true, env = "MDM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the service (embedded SQLite under ./mdm-data when nothing is configured).
    Serve,
    /// Imports a CSV, JSON or NDJSON file of one source system (streamed;
    /// re-running the same file stores nothing new).
    Import(ImportArgs),
    /// Asks a per-customer REST source (format rest_pull) for customers and
    /// ingests the answers.
    Pull(PullArgs),
    /// Estimates the matching parameters (m/u by EM) from the source records
    /// in the log and writes them as JSON for `[matching] parameters`.
    Train(TrainArgs),
    /// Runs the resolver until it has decided everything in the log, then
    /// stops (what `serve` does continuously).
    Resolve,
    /// Writes the synthetic data set of the seven source systems, with its ground truth.
    Datagen(mdm_api::datagen::DatagenArgs),
    /// Source-system definitions.
    Sources {
        #[command(subcommand)]
        what: SourcesCommand,
    },
    /// Measures the product and prints one JSON line per figure.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Where to write the parameters (JSON).
    #[arg(long, default_value = "match-parameters.json")]
    out: PathBuf,
    /// Seed of the random pairs drawn for u: the same log and seed give the same file.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The version name stored in every decision these parameters make.
    #[arg(long)]
    version: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ImportArgs {
    /// The source system, as named in the sources file.
    #[arg(long)]
    system: String,
    /// The file: .csv, or .json / .ndjson / .jsonl (Debezium events for a
    /// system of format `debezium`).
    file: PathBuf,
    /// Read the file as this syntax instead of guessing from its extension.
    #[arg(long, value_enum)]
    syntax: Option<SyntaxArg>,
    /// The file is a full snapshot of the system: retract the system's
    /// records that are not in it (skipped if any record is rejected).
    #[arg(long)]
    full_snapshot: bool,
    /// Records per batch: one commit each (bigger batches amortize the
    /// commit's write of the index pages they touch; see docs/bench/ingest.md).
    #[arg(long, default_value_t = 8000)]
    batch_size: usize,
}

#[derive(clap::Args, Debug)]
struct PullArgs {
    /// The source system (format rest_pull).
    #[arg(long)]
    system: String,
    /// A customer id to ask for (repeat the flag for several).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// An e-mail address to ask for (repeat the flag for several).
    #[arg(long = "email")]
    emails: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SyntaxArg {
    Csv,
    Json,
    Debezium,
}

#[derive(Subcommand, Debug)]
enum SourcesCommand {
    /// Validates a sources file the way `mdm serve` does at start-up, and
    /// lists its systems.
    Check {
        /// The TOML file of `[[sources]]` tables.
        file: PathBuf,
    },
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Event-store appends, reads and subscriptions against plain SQL on the same database.
    Store(mdm_store::bench::StoreBenchArgs),
    /// Bulk capture of generated records into the embedded store, against plain SQLite.
    Ingest(mdm_api::bench_ingest::IngestBenchArgs),
    /// Match quality (pairwise precision, recall, F1) and resolver speed on FEBRL and generated data.
    Match(mdm_api::bench_match::MatchBenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("MDM_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve(load_config(cli.config.as_deref())?).await,
        Command::Import(args) => import(load_config(cli.config.as_deref())?, args).await,
        Command::Pull(args) => pull(load_config(cli.config.as_deref())?, args).await,
        Command::Train(args) => train(load_config(cli.config.as_deref())?, args).await,
        Command::Resolve => resolve(load_config(cli.config.as_deref())?).await,
        Command::Sources {
            what: SourcesCommand::Check { file },
        } => check_sources(&file),
        Command::Bench {
            what: BenchCommand::Store(args),
        } => mdm_store::bench::run_store_bench(args).await,
        Command::Bench {
            what: BenchCommand::Ingest(args),
        } => mdm_api::bench_ingest::run_ingest_bench(args).await,
        Command::Bench {
            what: BenchCommand::Match(args),
        } => mdm_api::bench_match::run_match_bench(args).await,
        Command::Datagen(args) => {
            let summary = tokio::task::spawn_blocking(move || mdm_api::datagen::run(&args)).await??;
            tracing::info!("generated {summary}");
            print_json(&summary)
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let text = match path {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("MDM_")).collect();
    Config::from_sources(text.as_deref(), &env).context("invalid configuration")
}

fn read_sources(path: &std::path::Path) -> anyhow::Result<mdm_domain::source::SourceDefinitions> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    mdm_api::sources::parse_sources(&text).with_context(|| format!("in {}", path.display()))
}

/// Prints one line per system: name, format and trust rank.
#[allow(clippy::print_stdout)]
fn check_sources(path: &std::path::Path) -> anyhow::Result<()> {
    let sources = read_sources(path)?;
    for source in sources.iter() {
        println!(
            "{}\t{}\ttrust {}",
            source.system,
            source.format.as_str(),
            source.trust_rank
        );
    }
    println!("{} source systems, all valid", sources.len());
    Ok(())
}

/// Opens everything ingestion needs, definitions first: a bad one must stop
/// start-up before anything opens.
async fn open_ingestor(config: &Config) -> anyhow::Result<Ingestor> {
    let sources = match &config.sources_file {
        Some(path) => read_sources(path)?,
        None => Default::default(),
    };
    let store = open_event_store(config).await?;
    let keys = open_key_store(config).await?;
    Ok(Ingestor::new(store, keys, std::sync::Arc::new(sources)))
}

async fn train(config: Config, args: TrainArgs) -> anyhow::Result<()> {
    let (matching, _) = mdm_api::compose::load_matching(&config)?;
    let ingestor = open_ingestor(&config).await?;
    let started = std::time::Instant::now();
    let records =
        mdm_commands::train::latest_records(ingestor.store(), ingestor.keys().clone(), &matching.features).await?;
    anyhow::ensure!(
        records.len() >= 2,
        "the log holds {} source records: too few to train on",
        records.len()
    );
    let version = args
        .version
        .unwrap_or_else(|| format!("em-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ")));
    let (parameters, report) = tokio::task::spawn_blocking(move || {
        mdm_commands::train::train(&records, version, args.seed, Default::default())
    })
    .await?;
    let text = serde_json::to_string_pretty(&parameters)?;
    std::fs::write(&args.out, text + "\n").with_context(|| format!("writing {}", args.out.display()))?;
    tracing::info!(
        out = %args.out.display(),
        version = %parameters.version,
        prior = parameters.prior,
        candidate_pairs = report.candidate_pairs,
        random_pairs = report.random_pairs,
        iterations = report.iterations,
        converged = report.converged,
        seconds = started.elapsed().as_secs_f64(),
        "matching parameters written"
    );
    ingestor.store().close().await;
    print_json(&serde_json::json!({
        "out": args.out,
        "version": parameters.version,
        "prior": parameters.prior,
        "candidate_pairs": report.candidate_pairs,
        "distinct_vectors": report.distinct_vectors,
        "random_pairs": report.random_pairs,
        "iterations": report.iterations,
        "converged": report.converged,
    }))
}

async fn resolve(config: Config) -> anyhow::Result<()> {
    let (matching, scorer) = mdm_api::compose::load_matching(&config)?;
    let ingestor = open_ingestor(&config).await?;
    let _lease = mdm_api::compose::acquire_resolver_lease(&config).await?;
    let started = std::time::Instant::now();
    let (mut resolver, replay) = start_resolver(&ingestor, &matching, &scorer).await?;
    let replay_seconds = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let decided = resolver.catch_up().await?;
    let stats = resolver.engine().stats();
    ingestor.store().close().await;
    print_json(&serde_json::json!({
        "replayed_decisions": replay.decisions,
        "replay_seconds": replay_seconds,
        "source_events_decided": decided,
        "seconds": started.elapsed().as_secs_f64(),
        "decisions": stats.decisions,
        "customers": stats.active_customers,
        "open_reviews": stats.open_reviews,
        "households": stats.households,
    }))
}

async fn import(config: Config, args: ImportArgs) -> anyhow::Result<()> {
    let ingestor = open_ingestor(&config).await?;
    let def = ingestor
        .sources()
        .get(&args.system)
        .with_context(|| format!("no source system `{}` in the sources file", args.system))?;
    let debezium = def.format == mdm_domain::source::InputFormat::Debezium;
    let syntax = match args.syntax {
        Some(SyntaxArg::Csv) => Syntax::Csv,
        Some(SyntaxArg::Json) => Syntax::Json,
        Some(SyntaxArg::Debezium) => Syntax::Debezium,
        None => Syntax::guess(&args.file, debezium)
            .context("cannot tell the file's syntax from its extension; pass --syntax csv|json|debezium")?,
    };
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?
        .len();
    let ctx = IngestContext {
        actor: Actor::Operator,
        correlation_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    };
    let options = ImportOptions {
        syntax,
        batch_size: args.batch_size,
        full_snapshot: args.full_snapshot,
    };
    let mut progress = progress::ImportProgress::new(size);
    let result = import_file(&ingestor, &args.system, &args.file, options, &ctx, |p| {
        progress.update(p)
    })
    .await;
    progress.finish();
    ingestor.store().close().await;
    let report = result.with_context(|| format!("importing {}", args.file.display()))?;
    for rejection in &report.rejections {
        tracing::warn!("rejected {rejection}");
    }
    if let Some(reason) = &report.snapshot_skipped {
        tracing::warn!("full snapshot not applied: {reason}");
    }
    print_json(&report)?;
    Ok(())
}

async fn pull(config: Config, args: PullArgs) -> anyhow::Result<()> {
    let ingestor = open_ingestor(&config).await?;
    let def = ingestor
        .sources()
        .get(&args.system)
        .with_context(|| format!("no source system `{}` in the sources file", args.system))?;
    let puller = mdm_commands::pull::Puller::new(def)?;
    let keys: Vec<mdm_commands::pull::PullKey> = args
        .ids
        .into_iter()
        .map(mdm_commands::pull::PullKey::Id)
        .chain(args.emails.into_iter().map(mdm_commands::pull::PullKey::Email))
        .collect();
    anyhow::ensure!(!keys.is_empty(), "give at least one --id or --email");
    let ctx = IngestContext {
        actor: Actor::Operator,
        correlation_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    };
    let result = puller.pull(&ingestor, &keys, &ctx).await;
    ingestor.store().close().await;
    print_json(&result?)
}

#[allow(clippy::print_stdout)]
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let ingestor = open_ingestor(&config).await?;
    let store = ingestor.store().clone();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        event_store = store.backend(),
        source_systems = ingestor.sources().len(),
        key_store = ingestor.keys().backend(),
        "mdm is serving"
    );
    let state = AppState::new(ingestor.clone(), config.max_body_bytes)?;
    let (matching, scorer) = mdm_api::compose::load_matching(&config)?;
    let resolver_slot = state.resolver.clone();
    let lease_config = config.clone();
    // The resolver is supervised: when it stops (its store went away, a
    // fencing conflict), it is dropped and rebuilt from the log after a
    // pause that doubles up to 30 s, while the API keeps answering.
    tokio::spawn(async move {
        let mut pause = std::time::Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            let result = run_resolver(&lease_config, &ingestor, &matching, &scorer, &resolver_slot).await;
            mdm_api::http::set_resolver(&resolver_slot, None);
            if let Err(error) = result {
                tracing::error!(error = %format!("{error:#}"), retry_in_seconds = pause.as_secs(), "the resolver stopped; it will replay the log and resume");
            }
            if started.elapsed() > std::time::Duration::from_secs(60) {
                pause = std::time::Duration::from_secs(1);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(30));
        }
    });
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    store.close().await;
    tracing::info!("mdm stopped");
    Ok(())
}

/// Takes the resolver lease, replays the resolver from the log and runs it;
/// returns only if it fails.
/// A resolver over the ingestor's stores, replayed from the log.
async fn start_resolver(
    ingestor: &Ingestor,
    matching: &mdm_api::sources::MatchingConfig,
    scorer: &mdm_domain::matching::model::Scorer,
) -> anyhow::Result<(mdm_commands::resolver::Resolver, mdm_commands::resolver::ReplayReport)> {
    use mdm_commands::resolver::{RandomIds, Resolver, ResolverSettings};
    let engine = mdm_domain::resolution::engine::Engine::new(scorer.clone(), Default::default());
    let settings = ResolverSettings {
        features: matching.features.clone(),
        ..ResolverSettings::default()
    };
    let store = ingestor.store().clone();
    Ok(Resolver::start(store, ingestor.keys().clone(), engine, settings, Box::new(RandomIds)).await?)
}

async fn run_resolver(
    config: &Config,
    ingestor: &Ingestor,
    matching: &mdm_api::sources::MatchingConfig,
    scorer: &mdm_domain::matching::model::Scorer,
    slot: &mdm_api::http::ResolverSlot,
) -> anyhow::Result<()> {
    let _lease = mdm_api::compose::acquire_resolver_lease(config).await?;
    let started = std::time::Instant::now();
    let (resolver, replay) = start_resolver(ingestor, matching, scorer).await?;
    tracing::info!(
        decisions = replay.decisions,
        source_events = replay.source_events,
        checkpoint = replay.checkpoint.0,
        seconds = started.elapsed().as_secs_f64(),
        "resolver replayed the log and follows it"
    );
    let (handle, task) = resolver.spawn();
    mdm_api::http::set_resolver(slot, Some(handle));
    task.await.context("the resolver task panicked")??;
    anyhow::bail!("the resolver stopped")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
