//! `mdm datagen`: synthetic customer data for the seven source systems of
//! `config/sources.example.toml`, with the truth to score matching against.
//!
//! The generator draws households of people (singles, couples sharing a
//! family name, address and landline, parents with adult children, Jr/Sr
//! and III namesakes, twins, room-mates), then gives each person records
//! in one to four source systems, mostly one or two, now and then two
//! accounts in the same system. Each record is one source's view of the
//! person: nicknames, typing mistakes (swapped, dropped, wrong or doubled
//! letters), case, missing fields, an older address or e-mail, a former
//! family name, phone numbers punctuated a dozen ways, each system's own
//! date format and shape. Names, streets and cities come from the lists in
//! `words`; e-mail domains are all under `.example`.
//!
//! Files written to the output folder:
//! - `web_signup.ndjson`, `dealer_a.ndjson`, `dealer_b.ndjson`,
//!   `warranty_api.ndjson`: one JSON document per line, shaped as each
//!   definition expects (the warranty API's per-customer answers);
//! - `finance.csv` (every field quoted, header `E.Mail` included),
//!   `loyalty.csv`;
//! - `shop_cdc.ndjson`: Debezium change events of the shop's MySQL
//!   `customers` table as a Kafka Connect sink delivers them (`schema` and
//!   `payload`, or the payload alone with `--cdc-payload-only`; ops `r` from an incremental snapshot, `c`, `u` with before
//!   and after images, `d` with the before image only; dates as days since
//!   1970-01-01);
//! - `truth.csv`: `system,source_id,person_id,household_id`, one row per
//!   source record (a shop row once, however many events it has).
//!
//! Every record maps with its system's definition (tested). Output is a
//! function of the arguments: the same seed and arguments give the same
//! bytes. Memory stays flat whatever the size: records are written as they
//! are made, through buffers of fixed size (see `sink`).
//!
//! Code map: `words` (the lists), `pick` (random draws, id bijections),
//! `model` (people and households), `view` (one record's view of a
//! person), `text` (formats and typos), `systems` (ids and record shapes),
//! `sink` (the files).

mod model;
mod pick;
mod sink;
mod systems;
mod text;
mod view;
mod words;

#[cfg(test)]
mod tests;

use anyhow::Context;
use pick::{chance, Rand, Weighted};
use rand::SeedableRng;
use serde::Serialize;
use sink::{CsvLine, LineSink, NewShopRow, ShopSink, Truth};
use std::path::{Path, PathBuf};
use systems::{Ids, System};

pub use sink::CdcOps;

/// Arguments of `mdm datagen`.
#[derive(clap::Args, Debug, Clone)]
pub struct DatagenArgs {
    /// Output folder (created if missing; the generated files in it are replaced).
    #[arg(long, default_value = "mdm-demo-data")]
    pub out: PathBuf,
    /// Number of distinct people.
    #[arg(long, default_value_t = 1000)]
    pub people: u64,
    /// Stop after this many source records instead (rows of truth.csv);
    /// `--people` is then ignored.
    #[arg(long)]
    pub records: Option<u64>,
    /// Seed of the random draws: the same seed and arguments give the same files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Scale of the mistakes, gaps and out-of-date values in records: 0 gives
    /// complete, exact records; 1 is realistic; up to 5.
    #[arg(long, default_value_t = 1.0)]
    pub noise: f64,
    /// Write the shop's change events without the Kafka Connect schema, as a
    /// sink with `schemas.enable=false` delivers them: each line is the
    /// payload alone (a sixth of the size).
    #[arg(long)]
    pub cdc_payload_only: bool,
}

impl DatagenArgs {
    /// `people` people into `out`, with the defaults for the rest.
    pub fn new(out: impl Into<PathBuf>, people: u64, seed: u64) -> Self {
        Self {
            out: out.into(),
            people,
            records: None,
            seed,
            noise: 1.0,
            cdc_payload_only: false,
        }
    }
}

/// What a run wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub out: PathBuf,
    pub seed: u64,
    pub noise: f64,
    /// People with at least one record.
    pub people: u64,
    /// Households with at least one member with a record.
    pub households: u64,
    /// Source records in all systems (the rows of `truth.csv`).
    pub source_records: u64,
    /// Per file, in the order of the systems, then `truth.csv`.
    pub files: Vec<FileSummary>,
    /// The shop's change events by operation.
    pub shop_cdc_ops: CdcOps,
}

/// One file of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    pub file: String,
    /// The source system whose records it holds (none for `truth.csv`).
    pub system: Option<String>,
    /// Distinct source records (for `truth.csv`, its rows).
    pub records: u64,
    /// Lines after any header: differs from `records` for `shop_cdc.ndjson`,
    /// which also holds updates and deletes.
    pub lines: u64,
}

impl Summary {
    /// The records written for `system`.
    pub fn records_of(&self, system: &str) -> Option<u64> {
        self.files
            .iter()
            .find(|f| f.system.as_deref() == Some(system))
            .map(|f| f.records)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} people in {} households, {} source records, in {}",
            self.people,
            self.households,
            self.source_records,
            self.out.display()
        )?;
        for file in &self.files {
            writeln!(
                f,
                "  {:<22} {:>10} records {:>10} lines",
                file.file, file.records, file.lines
            )?;
        }
        let o = &self.shop_cdc_ops;
        write!(
            f,
            "  shop_cdc ops: {} r, {} c, {} u, {} d",
            o.read, o.create, o.update, o.delete
        )
    }
}

/// How many systems a person has records in: 1 to 4, mostly 1 or 2.
const SYSTEMS_PER_PERSON: [u64; 4] = [40, 32, 18, 10];
/// Chance that a person has a second account in a system (at noise 1).
const DUPLICATE: f64 = 0.03;
/// Chance that a shop row is later updated, and later deleted.
const SHOP_UPDATE: f64 = 0.18;
const SHOP_DELETE: f64 = 0.04;
/// Chance that a shop row not to be updated is an old one (as in `view`).
const HISTORIC_SHOP: f64 = 0.3;
/// The share of people whose shop rows predate the connector (op `r`).
const SNAPSHOT_SHARE: f64 = 0.3;

/// Generates the files into `args.out`.
pub fn run(args: &DatagenArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        args.noise.is_finite() && (0.0..=5.0).contains(&args.noise),
        "--noise must be between 0 and 5"
    );
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut gen = Generator::create(args)?;
    let base = Rand::seed_from_u64(args.seed);
    let per_person = Weighted::new(SYSTEMS_PER_PERSON);
    // People whose shop rows were there before the connector started.
    let planned_people = args.records.map_or(args.people, |r| r / 2);
    let snapshot_people = (planned_people as f64 * SNAPSHOT_SHARE) as u64;

    let mut next_person = 0u64;
    let mut household = 0u64;
    'households: loop {
        let room = match args.records {
            Some(target) if gen.records >= target => break,
            Some(_) => u64::MAX,
            None if next_person >= args.people => break,
            None => args.people - next_person,
        };
        let mut rng = base.clone();
        rng.set_stream(household);
        let members = model::household(&mut rng, &gen.tables, household, next_person, room);
        next_person += members.len() as u64;
        let mut household_counted = false;
        for person in &members {
            let mut systems = [System::WebSignup; 4];
            let count = per_person.index(&mut rng) + 1;
            let mut taken = [false; 7];
            for slot in systems.iter_mut().take(count) {
                *slot = pick_system(&mut rng, &mut taken);
            }
            let mut person_counted = false;
            for &system in &systems[..count] {
                let copies = if chance(&mut rng, DUPLICATE * args.noise) { 2 } else { 1 };
                for _ in 0..copies {
                    if args.records.is_some_and(|target| gen.records >= target) {
                        break 'households;
                    }
                    let snapshot = person.id < snapshot_people;
                    gen.emit(&mut rng, system, person, snapshot)?;
                    if !person_counted {
                        person_counted = true;
                        gen.people += 1;
                    }
                    if !household_counted {
                        household_counted = true;
                        gen.households += 1;
                    }
                }
            }
        }
        household += 1;
    }
    gen.finish(&args.out)
}

/// One system not yet taken, by the systems' weights.
fn pick_system(rng: &mut Rand, taken: &mut [bool; 7]) -> System {
    use rand::Rng;
    let total: u64 = System::ALL
        .iter()
        .zip(taken.iter())
        .filter(|(_, t)| !**t)
        .map(|(s, _)| s.weight())
        .sum();
    let mut x = rng.random_range(0..total.max(1));
    for (i, system) in System::ALL.iter().enumerate() {
        if taken[i] {
            continue;
        }
        if x < system.weight() {
            taken[i] = true;
            return *system;
        }
        x -= system.weight();
    }
    System::WebSignup
}

/// The open files and counters of a run.
struct Generator {
    tables: model::Tables,
    ids: Ids,
    noise: f64,
    seed: u64,
    /// Line files in the order of [`System::ALL`] (none for the shop).
    files: Vec<Option<LineSink>>,
    finance_csv: CsvLine,
    loyalty_csv: CsvLine,
    shop: ShopSink,
    truth: Truth,
    /// Records made per system, which numbers their ids.
    made: [u64; 7],
    records: u64,
    people: u64,
    households: u64,
}

impl Generator {
    fn create(args: &DatagenArgs) -> anyhow::Result<Self> {
        let out = &args.out;
        let base = Rand::seed_from_u64(args.seed);
        let stream = |i: u64| {
            let mut rng = base.clone();
            rng.set_stream(u64::MAX - i);
            rng
        };
        let finance_csv = CsvLine::new(true, true);
        let loyalty_csv = CsvLine::new(false, false);
        let finance_header = finance_csv.line(systems::FINANCE_HEADERS);
        let loyalty_header = loyalty_csv.line(systems::LOYALTY_HEADERS);
        let mut files = Vec::with_capacity(7);
        for (i, system) in System::ALL.iter().enumerate() {
            let path = out.join(system.file());
            let header = match system {
                System::ShopCdc => {
                    files.push(None);
                    continue;
                }
                System::Finance => Some(finance_header.as_slice()),
                System::Loyalty => Some(loyalty_header.as_slice()),
                _ => None,
            };
            let sink = LineSink::create(&path, header, stream(i as u64))
                .with_context(|| format!("creating {}", path.display()))?;
            files.push(Some(sink));
        }
        let shop_path = out.join(System::ShopCdc.file());
        let schema = (!args.cdc_payload_only).then(systems::shop_schema);
        let shop = ShopSink::create(&shop_path, schema.as_deref(), stream(100))
            .with_context(|| format!("creating {}", shop_path.display()))?;
        let truth_path = out.join("truth.csv");
        let truth = Truth::create(&truth_path).with_context(|| format!("creating {}", truth_path.display()))?;
        Ok(Self {
            tables: model::Tables::new(args.seed),
            ids: Ids::new(args.seed),
            noise: args.noise,
            seed: args.seed,
            files,
            finance_csv,
            loyalty_csv,
            shop,
            truth,
            made: [0; 7],
            records: 0,
            people: 0,
            households: 0,
        })
    }

    /// Makes and writes one record of `person` in `system`.
    fn emit(&mut self, rng: &mut Rand, system: System, person: &model::Person, snapshot: bool) -> anyhow::Result<()> {
        let noise = self.noise;
        let n = self.made[system as usize];
        self.made[system as usize] += 1;
        self.records += 1;
        let profile = system.profile();
        if system == System::ShopCdc {
            // A row that will be updated is often an old one the customer
            // brings up to date.
            let updated = chance(rng, SHOP_UPDATE);
            let historic = chance(rng, if updated { 0.5 } else { HISTORIC_SHOP } * noise);
            let v = view::view_as(rng, person, &profile, noise, historic);
            let row = systems::shop_row(rng, &v, noise);
            let update = updated.then(|| {
                let now = view::view_as(rng, person, &profile, 0.0, false);
                let current = systems::shop_row(rng, &now, 0.0);
                systems::shop_update(rng, &row, &current)
            });
            let new = NewShopRow {
                row,
                update,
                delete: chance(rng, SHOP_DELETE),
                snapshot,
                person: person.id,
                household: person.household,
            };
            return self.shop.push(new, &self.ids, &mut self.truth);
        }
        let v = view::view(rng, person, &profile, noise);
        let id = self.ids.id(system, n);
        let line = match system {
            System::WebSignup => systems::web_signup(rng, &v, &id, noise)?,
            System::DealerA => systems::dealer_a(rng, &v, &id, noise)?,
            System::DealerB => systems::dealer_b(rng, &v, &id, noise)?,
            System::Finance => self.finance_csv.line(systems::finance(rng, &v, &id, noise)),
            System::Loyalty => self.loyalty_csv.line(systems::loyalty(rng, &v, &id, noise)),
            System::Warranty => systems::warranty(rng, &v, &id, noise)?,
            System::ShopCdc => unreachable!("shop rows are written above"),
        };
        if let Some(Some(file)) = self.files.get_mut(system as usize) {
            file.push(line)?;
        }
        self.truth.write(system, &id, person.id, person.household)?;
        Ok(())
    }

    fn finish(self, out: &Path) -> anyhow::Result<Summary> {
        let mut truth = self.truth;
        let mut summaries = Vec::with_capacity(8);
        let mut shop_ops = CdcOps::default();
        let mut shop = Some(self.shop);
        for (system, file) in System::ALL.iter().zip(self.files) {
            let (records, lines) = match (file, system) {
                (Some(sink), _) => {
                    let lines = sink.finish().with_context(|| format!("writing {}", system.file()))?;
                    (lines, lines)
                }
                (None, _) => match shop.take() {
                    Some(shop) => {
                        let (lines, rows, ops) = shop.finish(&self.ids, &mut truth)?;
                        shop_ops = ops;
                        (rows, lines)
                    }
                    None => (0, 0),
                },
            };
            summaries.push(FileSummary {
                file: system.file().to_owned(),
                system: Some(system.name().to_owned()),
                records,
                lines,
            });
        }
        let rows = truth.finish().context("writing truth.csv")?;
        summaries.push(FileSummary {
            file: "truth.csv".to_owned(),
            system: None,
            records: rows,
            lines: rows,
        });
        Ok(Summary {
            out: out.to_path_buf(),
            seed: self.seed,
            noise: self.noise,
            people: self.people,
            households: self.households,
            source_records: self.records,
            files: summaries,
            shop_cdc_ops: shop_ops,
        })
    }
}
