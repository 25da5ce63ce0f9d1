//! `mdm demo`: the first thing a new user runs. In a fresh folder it
//! writes the seven source systems' definitions (`config/sources.example.toml`),
//! generates their sample data (`mdm datagen`), imports every file into the
//! event log (`mdm import`), registers three API clients (`mdm clients
//! add`) and prints their keys with curl commands to try; the caller then
//! serves the folder the way `mdm serve` does, with the [`Config`] that
//! [`prepare`] returns.
//!
//! The demo always runs on the embedded store inside its folder: the
//! `--config` file and `MDM_*` variables are not read, so that it can never
//! write sample data into a configured deployment.
//!
//! Keys and the sample name in the guide go to stdout only, never to the
//! log (stderr), which only says what is being done and how many records.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mdm_commands::import::{import_file, ImportOptions, Syntax};
use mdm_commands::ingest::{IngestContext, Ingestor};
use mdm_commands::input::ChangeOp;
use mdm_domain::metadata::Actor;
use mdm_domain::source::{InputFormat, SourceDefinitions};

use crate::auth::{Clients, Role, Scopes};
use crate::config::Config;
use crate::datagen::{DatagenArgs, Summary};

/// The seven systems of the brief; the generated files match them.
const SOURCES: &str = include_str!("../../config/sources.example.toml");

/// The file the definitions are written to, inside the demo folder.
pub const SOURCES_FILE: &str = "sources.toml";
/// The folder of the generated files, inside the demo folder.
pub const SAMPLE_DIR: &str = "sample-data";
/// The reader client's field scopes.
pub const READER_SCOPES: &str = "name,phone";

/// Arguments of `mdm demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// The folder to create: it holds the event log, keys, read models, the
    /// sources file and the sample files. It must not exist or be empty.
    #[arg(long, default_value = "mdm-demo")]
    pub dir: PathBuf,
    /// Number of distinct people in the sample data (about two source
    /// records each).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub people: u64,
    /// HTTP address to serve on (port 0: a free port, shown in the guide).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Seed of the sample data: the same seed gives the same records.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Prepare the folder and print the guide, then exit instead of serving
    /// (serve it later with the command the guide shows).
    #[arg(long)]
    pub no_serve: bool,
}

/// One API client the demo registered (no `Debug`: it holds the key).
struct DemoClient {
    role: Role,
    name: &'static str,
    key: String,
    note: &'static str,
}

/// A family name from the sample data and a record that carries it.
#[derive(Default)]
struct Sample {
    family_name: Option<String>,
    /// (system, source id) of a record with that family name.
    record: Option<(String, String)>,
}

/// What one file's import stored.
struct Imported {
    system: String,
    file: String,
    captured: u64,
    rejected: u64,
}

/// Prepares the demo folder: definitions, sample data, imports and clients;
/// prints the guide to stdout and returns the configuration to serve with.
pub async fn prepare(args: &DemoArgs) -> anyhow::Result<Config> {
    fresh_folder(&args.dir)?;
    let sources_path = args.dir.join(SOURCES_FILE);
    std::fs::write(&sources_path, SOURCES).with_context(|| format!("writing {}", sources_path.display()))?;
    let sources = crate::sources::parse_sources(SOURCES).context("the built-in source definitions")?;

    // Port 0 is turned into a free port now, so that the guide can show it.
    let listen = if args.listen.port() == 0 && !args.no_serve {
        let probe = std::net::TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
        probe.local_addr()?
    } else {
        args.listen
    };
    let config = demo_config(&args.dir, &sources_path, listen)?;

    tracing::info!(people = args.people, dir = %args.dir.display(), "mdm demo: generating the sample data");
    let datagen = DatagenArgs::new(args.dir.join(SAMPLE_DIR), args.people, args.seed);
    let summary = tokio::task::spawn_blocking(move || crate::datagen::run(&datagen))
        .await
        .context("the generator panicked")??;

    let sample = {
        let (summary, sources) = (summary.clone(), sources.clone());
        tokio::task::spawn_blocking(move || pick_sample(&summary, &sources))
            .await
            .context("reading the sample data panicked")??
    };

    let imported = import_all(&config, sources, &summary).await?;
    let clients = add_clients(&config).await?;

    print_guide(args, &config, &summary, &imported, &clients, &sample);
    Ok(config)
}

/// Creates `dir`, or accepts it if it exists and is empty.
fn fresh_folder(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            anyhow::ensure!(
                entries.next().is_none(),
                "{} is not empty: mdm demo starts from a fresh folder. Remove it, choose another with --dir, \
                 or serve it again with MDM_DATA_DIR={} MDM_SOURCES_FILE={} mdm serve",
                dir.display(),
                dir.display(),
                dir.join(SOURCES_FILE).display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// The embedded configuration of the demo folder: what `mdm serve` would
/// use with `MDM_DATA_DIR`, `MDM_SOURCES_FILE` and `MDM_HTTP_LISTEN` set.
fn demo_config(dir: &Path, sources: &Path, listen: SocketAddr) -> anyhow::Result<Config> {
    let text = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .with_context(|| format!("{} is not valid UTF-8", p.display()))
    };
    let env = BTreeMap::from([
        ("MDM_DATA_DIR".to_owned(), text(dir)?),
        ("MDM_SOURCES_FILE".to_owned(), text(sources)?),
        ("MDM_HTTP_LISTEN".to_owned(), listen.to_string()),
    ]);
    Config::from_sources(None, &env).context("the demo's configuration")
}

/// Imports every generated file of a system into the log, as `mdm import`
/// does; closes the stores afterwards so that serving can open them.
async fn import_all(config: &Config, sources: SourceDefinitions, summary: &Summary) -> anyhow::Result<Vec<Imported>> {
    let store = crate::compose::open_event_store(config).await?;
    let keys = crate::compose::open_key_store(config).await?;
    let ingestor = Ingestor::new(store.clone(), keys, std::sync::Arc::new(sources));
    let result = import_files(&ingestor, summary).await;
    drop(ingestor);
    store.close().await;
    result
}

async fn import_files(ingestor: &Ingestor, summary: &Summary) -> anyhow::Result<Vec<Imported>> {
    let ctx = IngestContext {
        actor: Actor::Operator,
        correlation_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    };
    let mut imported = Vec::new();
    for file in &summary.files {
        let Some(system) = &file.system else { continue };
        let def = ingestor
            .sources()
            .get(system)
            .with_context(|| format!("the generated file {} is of an unknown system", file.file))?;
        let path = summary.out.join(&file.file);
        let syntax = Syntax::guess(&path, def.format == InputFormat::Debezium)
            .with_context(|| format!("cannot tell the syntax of {}", path.display()))?;
        let options = ImportOptions {
            syntax,
            batch_size: 8000,
            full_snapshot: false,
        };
        let report = import_file(ingestor, system, &path, options, &ctx, |_| {})
            .await
            .with_context(|| format!("importing {}", path.display()))?;
        for rejection in &report.rejections {
            tracing::warn!("rejected {rejection}");
        }
        tracing::info!(
            system = %system,
            captured = report.tally.captured,
            changed = report.tally.changed,
            retracted = report.tally.retracted,
            rejected = report.tally.rejected,
            "imported {}",
            file.file
        );
        imported.push(Imported {
            system: system.clone(),
            file: file.file.clone(),
            captured: report.tally.captured,
            rejected: report.tally.rejected,
        });
    }
    Ok(imported)
}

/// Registers an admin, a steward and a reader limited to name and phone.
async fn add_clients(config: &Config) -> anyhow::Result<Vec<DemoClient>> {
    let db = crate::compose::open_read_db(config).await?;
    let result = async {
        let clients = Clients::open(db.clone()).await.context("opening the clients table")?;
        let reader_scopes = Scopes::parse(READER_SCOPES).map_err(|e| anyhow::anyhow!("{e}"))?;
        let wanted = [
            (Role::Admin, "demo-admin", Scopes::all(), "everything"),
            (
                Role::Steward,
                "demo-steward",
                Scopes::all(),
                "reads customers, works the review queue",
            ),
            (
                Role::Reader,
                "dealer-demo",
                reader_scopes,
                "reads customers, sees name and phone only",
            ),
        ];
        let mut out = Vec::new();
        for (role, name, scopes, note) in wanted {
            let (_, key) = clients
                .add(name, role, &scopes)
                .await
                .with_context(|| format!("registering the client {name}"))?;
            out.push(DemoClient { role, name, key, note });
        }
        tracing::info!(
            clients = out.len(),
            "registered the demo's API clients (keys on stdout)"
        );
        anyhow::Ok(out)
    }
    .await;
    db.close().await;
    result
}

/// The most frequent family name among the generated records (change
/// events left out: a deleted shop row belongs to no customer), and the
/// first record that carries it.
fn pick_sample(summary: &Summary, sources: &SourceDefinitions) -> anyhow::Result<Sample> {
    // Lower-cased name -> (count, spelling shown, first record).
    let mut seen: HashMap<String, (u64, String, (String, String))> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for file in &summary.files {
        let Some(system) = &file.system else { continue };
        let Some(def) = sources.get(system) else { continue };
        if def.format == InputFormat::Debezium {
            continue;
        }
        let path = summary.out.join(&file.file);
        let Some(syntax) = Syntax::guess(&path, false) else {
            continue;
        };
        let reader = BufReader::new(std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?);
        for record in syntax.records(reader) {
            let Ok(item) = record.item else { continue };
            if item.op != ChangeOp::Upsert {
                continue;
            }
            let Ok(mapped) = mdm_domain::source::map_record(def, &item.value) else {
                continue;
            };
            let Some(family) = mapped.attributes.family_name.filter(|f| !f.trim().is_empty()) else {
                continue;
            };
            let key = family.to_lowercase();
            match seen.get_mut(&key) {
                Some((count, shown, _)) => {
                    *count += 1;
                    // Prefer a spelling that is not all capitals ("SMITH" in finance).
                    if *shown == shown.to_uppercase() && family != family.to_uppercase() {
                        *shown = family;
                    }
                }
                None => {
                    order.push(key.clone());
                    seen.insert(key, (1, family, (system.clone(), mapped.source_id)));
                }
            }
        }
    }
    // The first seen among the most frequent: deterministic for a seed.
    let best = order
        .iter()
        .filter_map(|k| seen.get(k))
        .fold(None::<&(u64, String, (String, String))>, |best, x| match best {
            Some(b) if b.0 >= x.0 => Some(b),
            _ => Some(x),
        });
    Ok(match best {
        Some((_, name, record)) => Sample {
            family_name: Some(name.clone()),
            record: Some(record.clone()),
        },
        None => Sample::default(),
    })
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The guide: what was prepared, the keys, and commands to try.
fn guide(
    args: &DemoArgs,
    config: &Config,
    summary: &Summary,
    imported: &[Imported],
    clients: &[DemoClient],
    sample: &Sample,
) -> String {
    let dir = args.dir.display();
    let sources = config
        .sources_file
        .as_deref()
        .unwrap_or(Path::new(SOURCES_FILE))
        .display();
    // curl cannot reach an unspecified address: show the loopback one.
    let mut shown = config.listen;
    if shown.ip().is_unspecified() {
        shown.set_ip(if shown.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let base = format!("http://{shown}");
    let key_of = |role: Role| {
        clients
            .iter()
            .find(|c| c.role == role)
            .map(|c| c.key.as_str())
            .unwrap_or("KEY")
    };
    let authed =
        |role: Role, path: &str| format!("curl -s -H \"Authorization: Bearer {}\" \"{base}{path}\"", key_of(role));

    let mut g = String::new();
    let _ = writeln!(g, "mdm demo: customer master data from seven source systems, in {dir}");
    let _ = writeln!(g);
    let _ = writeln!(
        g,
        "Generated {} people in {} households: {} source records in {} (truth.csv says who is who).",
        summary.people,
        summary.households,
        summary.source_records,
        args.dir.join(SAMPLE_DIR).display()
    );
    let _ = writeln!(
        g,
        "Imported into the event log, as `mdm import` does (systems defined in {sources}):"
    );
    for i in imported {
        let mut line = format!("  {:<13} {:>6} records from {}", i.system, i.captured, i.file);
        if i.rejected > 0 {
            let _ = write!(line, ", {} rejected (see the log)", i.rejected);
        }
        if i.system == "shop_cdc" {
            line.push_str(" (Debezium change events: creates, updates, deletes)");
        }
        if i.system == "warranty_api" {
            line.push_str(
                "\n                (a REST API asked per customer: live pulling is not simulated, its recorded answers are imported as a file)",
            );
        }
        let _ = writeln!(g, "{line}");
    }
    let _ = writeln!(g);
    let _ = writeln!(
        g,
        "API keys (shown only now; `mdm clients list` shows the clients, never keys):"
    );
    for c in clients {
        let _ = writeln!(g, "  {:<8} {:<13} {}", c.role.as_str(), c.name, c.key);
        let _ = writeln!(g, "  {:<8} {:<13} ({})", "", "", c.note);
    }
    let _ = writeln!(g);
    if args.no_serve {
        let _ = writeln!(g, "Not serving (--no-serve). Serve this folder with:");
    } else {
        let _ = writeln!(g, "Serving on {base} now; serve this folder again later with:");
    }
    let _ = writeln!(
        g,
        "  MDM_DATA_DIR={dir} MDM_SOURCES_FILE={sources} MDM_HTTP_LISTEN={} mdm serve",
        config.listen
    );
    let _ = writeln!(g);
    let _ = writeln!(
        g,
        "Serving starts with the work the import left: the resolver decides which of the {} records are\n\
         the same person and the projections build the golden records from its decisions, a few seconds\n\
         for a few thousand records (until then a search may find nothing). /ready answers 200 (503 before)\n\
         once the resolver runs and every read model is within 5 s of the log:",
        summary.source_records
    );
    let _ = writeln!(g, "  curl -s {base}/ready");
    let _ = writeln!(g);
    let _ = writeln!(g, "Then try:");
    let _ = writeln!(
        g,
        "  # the web console, for stewards and compliance: sign in with the steward's or the admin's key"
    );
    let _ = writeln!(g, "  {base}/console");
    if let Some(name) = &sample.family_name {
        let query = format!("/v1/customers?name={}", encode(name));
        let _ = writeln!(g, "  # customers named {name} (synthetic sample data), as the admin");
        let _ = writeln!(g, "  {}", authed(Role::Admin, &query));
        let _ = writeln!(g, "  # the same search as the dealer's reader key: name and phone only");
        let _ = writeln!(g, "  {}", authed(Role::Reader, &query));
    }
    if let Some((system, id)) = &sample.record {
        let _ = writeln!(g, "  # the customer holding {system} record {id}");
        let path = format!("/v1/customers/by-source/{}/{}", encode(system), encode(id));
        let _ = writeln!(g, "  {}", authed(Role::Admin, &path));
    }
    let _ = writeln!(g, "  # pairs the resolver was unsure of, for a steward to decide");
    let _ = writeln!(g, "  {}", authed(Role::Steward, "/v1/reviews"));
    let _ = writeln!(g, "  # the API's description (OpenAPI), no key needed");
    let _ = writeln!(g, "  curl -s {base}/openapi.json");
    let _ = writeln!(g, "  # Prometheus metrics, admin only");
    let _ = writeln!(g, "  {}", authed(Role::Admin, "/v1/metrics"));
    if !args.no_serve {
        let _ = writeln!(g);
        let _ = writeln!(g, "Stop with Ctrl-C; the folder keeps everything.");
    }
    g
}

/// The one place the demo writes to stdout: the guide holds the keys, which
/// must never reach the log.
#[allow(clippy::print_stdout)]
fn print_guide(
    args: &DemoArgs,
    config: &Config,
    summary: &Summary,
    imported: &[Imported],
    clients: &[DemoClient],
    sample: &Sample,
) {
    use std::io::Write;
    print!("{}", guide(args, config, summary, imported, clients, sample));
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_unreserved_characters_only() {
        assert_eq!(encode("Smith"), "Smith");
        assert_eq!(encode("O'Brien Jr"), "O%27Brien%20Jr");
        assert_eq!(encode("FA-1_2.3~"), "FA-1_2.3~");
    }

    #[test]
    fn the_built_in_sources_are_valid() {
        let sources = crate::sources::parse_sources(SOURCES).expect("valid");
        assert_eq!(sources.len(), 7);
    }
}
