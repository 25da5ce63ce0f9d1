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
    /// The first thing to run: a fresh folder (./mdm-demo) with the seven
    /// systems' sample data ingested, API keys and curl commands printed; then serves it.
    Demo(mdm_api::demo::DemoArgs),
    /// Source-system definitions.
    Sources {
        #[command(subcommand)]
        what: SourcesCommand,
    },
    /// Exports from the read models.
    Export {
        #[command(subcommand)]
        what: ExportCommand,
    },
    /// The read models: their status and lag, and rebuilds.
    Projections {
        #[command(subcommand)]
        what: ProjectionsCommand,
    },
    /// API clients: add (prints the key once), list, revoke.
    Clients {
        #[command(subcommand)]
        what: ClientsCommand,
    },
    /// The privacy request ledger (CCPA erasure and right-to-know requests).
    Privacy {
        #[command(subcommand)]
        what: PrivacyCommand,
    },
    /// Copies the embedded store (events.db, read.db, keys.db) into a new
    /// folder while `mdm serve` runs: a consistent snapshot, one JSON line
    /// per file. Restore: stop the service, copy the files back into the
    /// data folder (see docs/operations.md).
    Backup(BackupArgs),
    /// Measures the product and prints one JSON line per figure.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(clap::Args, Debug)]
struct BackupArgs {
    /// The folder to write (must not exist yet, or be empty).
    dest: PathBuf,
    /// Also copy the master key file. By default it is left out: it never
    /// changes, and kept apart from the backup, a stolen backup holds no
    /// readable personal data. Back it up once, elsewhere.
    #[arg(long)]
    include_master_key: bool,
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

#[derive(Subcommand, Debug)]
enum ExportCommand {
    /// Writes `system,source_id,token` for every source record as CSV to
    /// stdout (streamed), so a transactional system can re-key its tables to
    /// tokens in one pass. Tokens are always the surviving customer's.
    Xref {
        /// Only this source system's records.
        #[arg(long)]
        system: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ProjectionsCommand {
    /// Each projection's position, generation and lag behind the log (one JSON line each).
    Status,
    /// Builds fresh tables from the start of the log beside the live ones
    /// (which keep serving), then swaps them in and drops the old ones.
    Rebuild {
        /// The projection to rebuild (all when absent): customers, source_records, decisions,
        /// privacy_ledger.
        name: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ClientsCommand {
    /// Registers a client and prints its key (shown only this once) as JSON.
    Add {
        /// A unique name for the client (the system that uses it).
        #[arg(long)]
        name: String,
        /// ingest, reader, steward, compliance or admin.
        #[arg(long)]
        role: String,
        /// For readers: the golden attributes it may see, e.g. `name,phone`
        /// (name, email, phone, address, date_of_birth); all when absent.
        #[arg(long)]
        scopes: Option<String>,
    },
    /// Lists the clients (one JSON line each; keys are never shown).
    List,
    /// Revokes a client by id or name: its key stops working.
    Revoke {
        /// The client's id or name.
        client: String,
    },
}

#[derive(Subcommand, Debug)]
enum PrivacyCommand {
    /// Privacy requests: list and show them, add one, verify, extend,
    /// complete or deny it (one JSON line per request).
    ///
    /// add, verify, extend, complete and deny append to the event log
    /// directly (on the embedded SQLite store, stop `mdm serve` first: one
    /// process holds the log). list and show read the read models, which
    /// only a running `mdm serve` brings up to date: a request added while
    /// it is stopped is listed once it runs again.
    Requests {
        #[command(subcommand)]
        what: RequestsCommand,
    },
    /// Records of erased people that a source sent again ("erased at source
    /// pending"): list them, or decide one (suppress: it stays erased;
    /// release: its next re-send is captured as a new record).
    ///
    /// list reads the read models; decide appends to the event log directly
    /// (on the embedded SQLite store, stop `mdm serve` first).
    Holds {
        #[command(subcommand)]
        what: HoldsCommand,
    },
    /// Proves an erasure: searches a fresh rebuild of every read model, the
    /// live read models, the event log's stored bytes, the key store and the
    /// given log files for each personal string of the right-to-know export
    /// made before the erasure. One JSON line per check (values are named by
    /// their index, never shown), then a summary; exits 1 unless the token
    /// is erased and nothing was found. On the embedded SQLite store, stop
    /// `mdm serve` first (one process holds the log).
    Verify {
        /// The erased customer's token.
        token: uuid::Uuid,
        /// The export (`GET /v1/privacy/exports/{token}`) made before the erasure.
        #[arg(long)]
        export: PathBuf,
        /// A file of the service's log output to search (repeat for several).
        #[arg(long = "log")]
        logs: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum RequestsCommand {
    /// Lists requests from the read models, oldest receipt first, with
    /// their due dates and whether they are overdue now (one JSON line
    /// each, or a table).
    List {
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only requests open past their due date now.
        #[arg(long)]
        overdue: bool,
        /// At most this many requests (all when absent).
        #[arg(long)]
        limit: Option<usize>,
        /// A table for people instead of JSON lines.
        #[arg(long)]
        table: bool,
    },
    /// Shows one request with its notices, from the read models.
    Show {
        /// The request id.
        id: uuid::Uuid,
    },
    /// Enters a request received now (due in 45 days) and prints it.
    Add {
        #[arg(long, value_enum)]
        kind: KindArg,
        /// The customer's token, when known.
        #[arg(long)]
        token: Option<uuid::Uuid>,
        /// Who entered it (recorded in the ledger; no personal data).
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Records how the requester's identity was verified.
    Verify {
        id: uuid::Uuid,
        #[arg(long)]
        method: String,
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Extends the due date by 45 days, once, for a reason.
    Extend {
        id: uuid::Uuid,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Completes a verified request with what was done.
    Complete {
        id: uuid::Uuid,
        #[arg(long)]
        outcome: String,
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Denies a request on a stated basis.
    Deny {
        id: uuid::Uuid,
        #[arg(long)]
        basis: String,
        #[arg(long, default_value = "operator")]
        by: String,
    },
}

#[derive(Subcommand, Debug)]
enum HoldsCommand {
    /// Lists holds, oldest first (one JSON line each).
    List {
        /// Only holds in this state.
        #[arg(long, value_enum)]
        state: Option<HoldStateArg>,
    },
    /// Decides a pending hold, with a reason (no personal data).
    Decide {
        id: uuid::Uuid,
        #[arg(long, value_enum)]
        decision: HoldDecisionArg,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "operator")]
        by: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum HoldStateArg {
    Pending,
    Suppressed,
    Released,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum HoldDecisionArg {
    Suppress,
    Release,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum KindArg {
    Erasure,
    #[value(name = "right_to_know")]
    RightToKnow,
}

impl KindArg {
    fn kind(self) -> mdm_domain::privacy::RequestKind {
        match self {
            KindArg::Erasure => mdm_domain::privacy::RequestKind::Erasure,
            KindArg::RightToKnow => mdm_domain::privacy::RequestKind::RightToKnow,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum StatusArg {
    Open,
    Completed,
    Denied,
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
    /// Full rebuild speed of the read models against plain batched inserts, and lag under sustained ingest.
    Projections(mdm_api::bench_projections::ProjectionsBenchArgs),
    /// The running service under load from a second process: customer by token against a bare
    /// primary-key handler, and single-record ingest latency at a fixed rate.
    Api(mdm_api::bench_api::ApiBenchArgs),
    /// Erasing one customer until every read model has purged it, on a store of generated records,
    /// against a steward's value override through the same path.
    Erasure(mdm_api::bench_erasure::ErasureBenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Both rustls back-ends are linked (the KurrentDB client brings
    // aws-lc-rs, reqwest ring): name the one TLS uses, once, up front.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MDM_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn")),
        )
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
        Command::Export {
            what: ExportCommand::Xref { system },
        } => export_xref(load_config(cli.config.as_deref())?, system).await,
        Command::Projections {
            what: ProjectionsCommand::Status,
        } => projections_status(load_config(cli.config.as_deref())?).await,
        Command::Projections {
            what: ProjectionsCommand::Rebuild { name },
        } => projections_rebuild(load_config(cli.config.as_deref())?, name).await,
        Command::Clients { what } => clients(load_config(cli.config.as_deref())?, what).await,
        Command::Privacy {
            what: PrivacyCommand::Requests { what },
        } => privacy_requests(load_config(cli.config.as_deref())?, what).await,
        Command::Privacy {
            what: PrivacyCommand::Holds { what },
        } => privacy_holds(load_config(cli.config.as_deref())?, what).await,
        Command::Privacy {
            what: PrivacyCommand::Verify { token, export, logs },
        } => privacy_verify(load_config(cli.config.as_deref())?, token, &export, &logs).await,
        Command::Bench {
            what: BenchCommand::Store(args),
        } => mdm_store::bench::run_store_bench(args).await,
        Command::Bench {
            what: BenchCommand::Ingest(args),
        } => mdm_api::bench_ingest::run_ingest_bench(args).await,
        Command::Bench {
            what: BenchCommand::Match(args),
        } => mdm_api::bench_match::run_match_bench(args).await,
        Command::Bench {
            what: BenchCommand::Projections(args),
        } => mdm_api::bench_projections::run_projections_bench(args).await,
        Command::Bench {
            what: BenchCommand::Api(args),
        } => mdm_api::bench_api::run_api_bench(args).await,
        Command::Bench {
            what: BenchCommand::Erasure(args),
        } => mdm_api::bench_erasure::run_erasure_bench(args).await,
        Command::Backup(args) => {
            let config = load_config(cli.config.as_deref())?;
            let copied = tokio::task::spawn_blocking(move || {
                mdm_api::backup::backup(&config, &args.dest, args.include_master_key)
            })
            .await??;
            for c in &copied {
                print_json(c)?;
            }
            Ok(())
        }
        Command::Demo(args) => {
            let config = mdm_api::demo::prepare(&args).await?;
            if args.no_serve {
                Ok(())
            } else {
                serve(config).await
            }
        }
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

async fn export_xref(config: Config, system: Option<String>) -> anyhow::Result<()> {
    use std::io::Write;
    let db = mdm_api::compose::open_read_db(&config).await?;
    let stdout = std::io::stdout();
    let mut out = csv::Writer::from_writer(std::io::BufWriter::new(stdout.lock()));
    out.write_record(["system", "source_id", "token"])?;
    let mut after: Option<(String, String)> = None;
    let mut rows = 0u64;
    loop {
        let page = mdm_projections::query::xref_page(&db, system.as_deref(), after.clone(), 1_000).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.system.clone(), last.source_id.clone()));
        for row in &page {
            out.write_record([row.system.as_str(), row.source_id.as_str(), &row.token.to_string()])?;
        }
        rows += page.len() as u64;
    }
    out.into_inner()
        .map_err(|e| anyhow::anyhow!("writing the export: {}", e.error()))?
        .flush()?;
    tracing::info!(rows, "cross-references exported");
    db.close().await;
    Ok(())
}

async fn projections_status(config: Config) -> anyhow::Result<()> {
    let store = open_event_store(&config).await?;
    let db = mdm_api::compose::open_read_db(&config).await?;
    let projections = mdm_projections::all(mdm_api::compose::customer_settings(&config)?);
    let status = mdm_projections::runner::status(store.as_ref(), &db, &projections).await?;
    for s in &status {
        print_json(s)?;
    }
    store.close().await;
    Ok(())
}

async fn projections_rebuild(config: Config, name: Option<String>) -> anyhow::Result<()> {
    let store = open_event_store(&config).await?;
    let keys = open_key_store(&config).await?;
    let db = mdm_api::compose::open_read_db(&config).await?;
    let projections = mdm_projections::all(mdm_api::compose::customer_settings(&config)?);
    let chosen: Vec<_> = match &name {
        Some(n) => {
            let found: Vec<_> = projections.iter().filter(|p| p.name() == n).cloned().collect();
            anyhow::ensure!(
                !found.is_empty(),
                "no projection `{n}`; there are: {}",
                projections.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
            );
            found
        }
        None => projections,
    };
    let opener = mdm_commands::opened::SourceRecordOpener::new(keys, 1_000_000);
    for p in chosen {
        let mut last_log = std::time::Instant::now();
        let report =
            mdm_projections::runner::rebuild(store.as_ref(), &db, p.as_ref(), &opener, &mut |position, events| {
                if last_log.elapsed() > std::time::Duration::from_secs(5) {
                    tracing::info!(projection = p.name(), position = position.0, events, "rebuilding");
                    last_log = std::time::Instant::now();
                }
            })
            .await
            .with_context(|| format!("rebuilding {}", p.name()))?;
        print_json(&serde_json::json!({
            "projection": report.name,
            "generation": report.generation,
            "events": report.events,
            "position": report.position.0,
            "seconds": report.seconds,
            "events_per_second": report.events as f64 / report.seconds.max(1e-9),
        }))?;
    }
    store.close().await;
    Ok(())
}

async fn clients(config: Config, what: ClientsCommand) -> anyhow::Result<()> {
    use mdm_api::auth::{Clients, Role, Scopes};
    let db = mdm_api::compose::open_read_db(&config).await?;
    let clients = Clients::open(db.clone()).await.context("opening the clients table")?;
    match what {
        ClientsCommand::Add { name, role, scopes } => {
            let role = Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("unknown role `{role}`: use ingest, reader, steward, compliance or admin")
            })?;
            let scopes = match scopes.as_deref() {
                None => Scopes::all(),
                Some(text) => Scopes::parse(text).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?,
            };
            let (info, key) = clients.add(&name, role, &scopes).await?;
            let mut line = serde_json::to_value(&info)?;
            line["key"] = serde_json::Value::String(key);
            print_json(&line)?;
        }
        ClientsCommand::List => {
            for info in clients.list().await? {
                print_json(&info)?;
            }
        }
        ClientsCommand::Revoke { client } => {
            let info = clients.revoke(&client).await?;
            tracing::info!(client_id = %info.client_id, "client revoked");
        }
    }
    db.close().await;
    Ok(())
}

async fn privacy_requests(config: Config, what: RequestsCommand) -> anyhow::Result<()> {
    use mdm_api::privacy::{self, Caller, Command as Ledger, RequestDoc};
    let (id, command, by) = match what {
        RequestsCommand::List {
            status,
            kind,
            overdue,
            limit,
            table,
        } => return privacy_list(config, status, kind, overdue, limit, table).await,
        RequestsCommand::Show { id } => return privacy_show(config, id).await,
        RequestsCommand::Add { kind, token, by } => {
            let store = open_event_store(&config).await?;
            let now = chrono::Utc::now();
            let caller = Caller {
                actor: Actor::Operator,
                by,
            };
            let result = privacy::receive(store.as_ref(), kind.kind(), token, &caller, now).await;
            store.close().await;
            let request = result.context("entering the privacy request")?;
            return print_json(&RequestDoc::of_request(&request, now));
        }
        RequestsCommand::Verify { id, method, by } => (id, Ledger::Verify { method }, by),
        RequestsCommand::Extend { id, reason, by } => (id, Ledger::Extend { reason }, by),
        RequestsCommand::Complete { id, outcome, by } => (id, Ledger::Complete { outcome }, by),
        RequestsCommand::Deny { id, basis, by } => (id, Ledger::Deny { basis }, by),
    };
    let store = open_event_store(&config).await?;
    let now = chrono::Utc::now();
    let caller = Caller {
        actor: Actor::Operator,
        by,
    };
    let result = privacy::run(store.as_ref(), id, &command, &caller, now).await;
    store.close().await;
    let request = result.with_context(|| format!("privacy request {id}"))?;
    print_json(&RequestDoc::of_request(&request, now))
}

async fn privacy_holds(config: Config, what: HoldsCommand) -> anyhow::Result<()> {
    use mdm_api::privacy::{Caller, HoldDoc};
    use mdm_domain::privacy::hold::HoldDecision;
    use mdm_projections::ledger_query::{privacy_hold, privacy_holds, LEDGER_PAGE_MAX};
    let db = ledger_read_model(&config).await?;
    match what {
        HoldsCommand::List { state } => {
            let state = state.map(|s| match s {
                HoldStateArg::Pending => "pending",
                HoldStateArg::Suppressed => "suppressed",
                HoldStateArg::Released => "released",
            });
            let mut after = None;
            loop {
                let page = privacy_holds(&db, state, after, LEDGER_PAGE_MAX).await?;
                let Some(last) = page.last() else { break };
                after = Some((last.held_at, last.hold_id));
                for row in &page {
                    print_json(&HoldDoc::of_row(row))?;
                }
            }
            db.close().await;
            Ok(())
        }
        HoldsCommand::Decide {
            id,
            decision,
            reason,
            by,
        } => {
            let hold = privacy_hold(&db, id).await?;
            db.close().await;
            let hold = hold.with_context(|| format!("no hold {id} in the read models"))?;
            let decision = match decision {
                HoldDecisionArg::Suppress => HoldDecision::Suppress,
                HoldDecisionArg::Release => HoldDecision::Release,
            };
            let ingestor = open_ingestor(&config).await?;
            let caller = Caller {
                actor: Actor::Operator,
                by,
            };
            let result =
                mdm_api::privacy::decide_hold(&ingestor, &hold, decision, &reason, &caller, chrono::Utc::now()).await;
            ingestor.store().close().await;
            result.with_context(|| format!("hold {id}"))?;
            print_json(&serde_json::json!({"hold_id": id, "state": decision.as_str()}))
        }
    }
}

async fn privacy_verify(
    config: Config,
    token: uuid::Uuid,
    export: &std::path::Path,
    logs: &[PathBuf],
) -> anyhow::Result<()> {
    let proof = mdm_api::privacy_verify::verify(&config, token, export, logs).await?;
    for line in &proof.lines {
        print_json(line)?;
    }
    if !proof.clean {
        use std::io::Write;
        std::io::stdout().flush()?;
        std::process::exit(1);
    }
    Ok(())
}

/// The ledger's read model, or a hint when the service never built it.
async fn ledger_read_model(config: &Config) -> anyhow::Result<mdm_projections::ReadDb> {
    let db = mdm_api::compose::open_read_db(config).await?;
    anyhow::ensure!(
        db.table_exists("privacy_request").await?,
        "the privacy ledger's read model does not exist yet: run `mdm serve` once to build it"
    );
    Ok(db)
}

async fn privacy_list(
    config: Config,
    status: Option<StatusArg>,
    kind: Option<KindArg>,
    overdue: bool,
    limit: Option<usize>,
    table: bool,
) -> anyhow::Result<()> {
    use mdm_domain::privacy::Status;
    use mdm_projections::ledger_query::{privacy_requests, LedgerFilter, LEDGER_PAGE_MAX};
    let db = ledger_read_model(&config).await?;
    let now = chrono::Utc::now();
    let mut filter = LedgerFilter {
        status: status.map(|s| match s {
            StatusArg::Open => Status::Open,
            StatusArg::Completed => Status::Completed,
            StatusArg::Denied => Status::Denied,
        }),
        kind: kind.map(KindArg::kind),
        overdue: overdue.then_some(true),
        after: None,
    };
    let mut docs = Vec::new();
    let mut left = limit.unwrap_or(usize::MAX);
    while left > 0 {
        let page = privacy_requests(&db, &filter, now, left.min(LEDGER_PAGE_MAX)).await?;
        let Some(last) = page.last() else { break };
        filter.after = Some(last.cursor());
        left = left.saturating_sub(page.len());
        for row in &page {
            let doc = mdm_api::privacy::RequestDoc::of_row(row, None, now);
            if table {
                docs.push(doc);
            } else {
                print_json(&doc)?;
            }
        }
    }
    db.close().await;
    if table {
        print_request_table(&docs);
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_request_table(docs: &[mdm_api::privacy::RequestDoc]) {
    let day = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d").to_string();
    println!(
        "{:<36}  {:<13}  {:<9}  {:<10}  {:<10}  {:<8}  {:<8}",
        "REQUEST", "KIND", "STATUS", "RECEIVED", "DUE", "VERIFIED", "OVERDUE"
    );
    for d in docs {
        println!(
            "{:<36}  {:<13}  {:<9}  {:<10}  {:<10}  {:<8}  {:<8}",
            d.request_id,
            d.kind,
            d.status,
            day(d.received_at),
            day(d.due_at),
            if d.verified_at.is_some() { "yes" } else { "no" },
            if d.overdue { "OVERDUE" } else { "" },
        );
    }
}

async fn privacy_show(config: Config, id: uuid::Uuid) -> anyhow::Result<()> {
    let db = ledger_read_model(&config).await?;
    let found = mdm_projections::ledger_query::privacy_request(&db, id).await?;
    let holds = mdm_projections::ledger_query::privacy_holds_of(&db, id).await?;
    db.close().await;
    let (row, notices) = found.with_context(|| {
        format!(
            "no privacy request {id} in the read models (a request added while `mdm serve` is stopped appears \
             once it runs)"
        )
    })?;
    let mut doc = mdm_api::privacy::RequestDoc::of_row(&row, Some(&notices), chrono::Utc::now());
    doc.holds = Some(holds.iter().map(mdm_api::privacy::HoldDoc::of_row).collect());
    print_json(&doc)
}

#[allow(clippy::print_stdout)]
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Take SIGTERM and Ctrl-C over first: a signal that arrives while the
    // stores open must stop the service cleanly, not kill it mid-way.
    let shutdown = shutdown_signal()?;
    let ingestor = open_ingestor(&config).await?;
    let store = ingestor.store().clone();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let ingestor_keys = ingestor.keys().clone();
    let ingestor_sources = ingestor.sources().len();
    let read_db = mdm_api::compose::open_read_db(&config).await?;
    let clients = mdm_api::auth::Clients::open(read_db.clone())
        .await
        .context("opening the API clients table")?;
    let settings = mdm_api::compose::customer_settings(&config)?;
    let mut state = AppState::new(
        ingestor.clone(),
        config.max_body_bytes,
        read_db.clone(),
        clients,
        settings.clone(),
    )?;
    let (matching, scorer) = mdm_api::compose::load_matching(&config)?;
    let resolver_slot = state.resolver.clone();
    let lease_config = config.clone();
    // Set when shutdown begins: the projections finish their batch and stop,
    // and the resolver, whose pools close under it, stops without an error.
    let (stop_projections, stopped) = tokio::sync::watch::channel(false);
    let resolver_stopping = stopped.clone();
    // The resolver is supervised: when it stops (its store went away, a
    // fencing conflict), it is dropped and rebuilt from the log after a
    // pause that doubles up to 30 s, while the API keeps answering.
    tokio::spawn(async move {
        let mut pause = std::time::Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            let result = run_resolver(&lease_config, &ingestor, &matching, &scorer, &resolver_slot).await;
            mdm_api::http::set_resolver(&resolver_slot, None);
            if *resolver_stopping.borrow() {
                tracing::info!("the resolver stopped with the service");
                return;
            }
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
    // The projections follow the log, each on its own task, restarted from
    // its checkpoint after a failure.
    let opener = mdm_commands::opened::SourceRecordOpener::new(ingestor_keys.clone(), 1_000_000);
    let mut projection_tasks = Vec::new();
    let mut progress = Vec::new();
    for projection in mdm_projections::all(settings) {
        let runner = mdm_projections::Runner::new(store.clone(), read_db.clone(), projection, opener.clone());
        progress.push((runner.name().to_owned(), runner.progress()));
        projection_tasks.push(tokio::spawn(mdm_projections::runner::supervise(
            runner,
            stopped.clone(),
        )));
    }
    // Feed and webhooks (issue 6): both wake when the customers projection
    // commits; open feed streams end when shutdown begins (the server's
    // graceful shutdown waits for every response), the dispatcher with the
    // projections.
    let customers_progress = progress
        .iter()
        .find(|(name, _)| name == "customers")
        .map(|(_, p)| p.clone());
    let mut feed = mdm_api::http::feed::FeedState::new(read_db.clone(), config.feed.clone())
        .with_subscribers(state.metrics.feed_connected.clone());
    if let Some(p) = &customers_progress {
        feed = feed.with_wake(p.clone());
    }
    state.feed = feed.clone();
    // The console's cookies are `Secure` when the service serves TLS.
    state.secure_cookies = config.tls.is_some();
    state.webhooks = mdm_api::webhooks::Webhooks::new(read_db.clone(), ingestor_keys.clone(), config.webhooks.clone());
    let webhook_task = mdm_api::webhooks::spawn(state.webhooks.clone(), customers_progress, stopped.clone());
    let shutdown = async move {
        shutdown.await;
        feed.close();
    };
    state.projections = std::sync::Arc::new(progress);
    state.edge = mdm_api::http::edge::EdgeState::new(config.http_limits);
    let edge_counters = state.edge.counters.clone();
    let app = router(state);
    // TLS: load the certificate before announcing, so a bad file stops start-up.
    let tls = match &config.tls {
        Some(files) => {
            let loaded = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                .await
                .with_context(|| {
                    format!(
                        "loading the TLS certificate {} and key {}",
                        files.cert.display(),
                        files.key.display()
                    )
                })?;
            // HTTP/1.1 only: the edge's timeouts and limits are HTTP/1's.
            let mut server_config = loaded.get_inner().as_ref().clone();
            server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(std::sync::Arc::new(server_config))
        }
        None => None,
    };
    tracing::info!(
        address = %listener.local_addr()?,
        scheme = if tls.is_some() { "https" } else { "http" },
        event_store = store.backend(),
        source_systems = ingestor_sources,
        key_store = ingestor_keys.backend(),
        "mdm is serving"
    );
    // One accept loop for HTTP and HTTPS (api/src/http/edge.rs): connection
    // limit, header and TLS handshake timeouts, graceful shutdown that lets
    // requests in flight finish (30 s at most; open feed streams end when
    // shutdown begins).
    mdm_api::http::edge::serve(
        listener,
        app,
        tls,
        config.http_limits,
        edge_counters,
        shutdown,
        std::time::Duration::from_secs(30),
    )
    .await;
    // In-flight requests have been answered. The projections finish the
    // batch they are applying, then stop (the webhook dispatcher at once:
    // an abandoned delivery is sent again after the restart); a store that
    // hangs does not hold the exit for ever.
    let _ = stop_projections.send(true);
    let drained = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let _ = webhook_task.await;
        for task in projection_tasks {
            let _ = task.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("projections did not stop within 30 s of shutdown; exiting without them");
    }
    read_db.close().await;
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

/// Registers the SIGTERM and Ctrl-C handlers now (so that a signal during
/// start-up is not lost) and returns the future that completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}
