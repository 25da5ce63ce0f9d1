//! `mdm`: the MDM service and its command-line tools.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mdm_api::compose::open_event_store;
use mdm_api::config::Config;
use mdm_api::http::{router, AppState};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "mdm", version, about = "Event-sourced customer master data management")]
struct Cli {
    /// A TOML configuration file; `MDM_*` environment variables override it.
    #[arg(long, global = true, env = "MDM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the service (embedded SQLite under ./mdm-data when nothing is configured).
    Serve,
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

#[derive(Subcommand, Debug)]
enum SourcesCommand {
    /// Validates a sources file the way `mdm serve` does at start-up, and
    /// lists its systems.
    Check {
        /// The TOML file of `[[sources]]` tables.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Event-store appends, reads and subscriptions against plain SQL on the same database.
    Store(mdm_store::bench::StoreBenchArgs),
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
        Command::Sources {
            what: SourcesCommand::Check { file },
        } => check_sources(&file),
        Command::Bench {
            what: BenchCommand::Store(args),
        } => mdm_store::bench::run_store_bench(args).await,
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

async fn serve(config: Config) -> anyhow::Result<()> {
    // Definitions first: a bad one must stop start-up before anything opens.
    let sources = match &config.sources_file {
        Some(path) => read_sources(path)?,
        None => Default::default(),
    };
    let store = open_event_store(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        event_store = store.backend(),
        source_systems = sources.len(),
        "mdm is serving"
    );
    let app = router(AppState {
        store: store.clone(),
        sources: std::sync::Arc::new(sources),
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    store.close().await;
    tracing::info!("mdm stopped");
    Ok(())
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
