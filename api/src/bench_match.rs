//! `mdm bench match`: match quality and speed of the resolver.
//!
//! For each data set: import it into fresh embedded stores, estimate the
//! parameters by EM on its own records (unsupervised: the truth is not
//! read until scoring), run the resolver over the log, and score the
//! resulting customers against the truth as pairwise precision, recall and
//! F1. Record ids are opaque keys to join with the truth file; nothing
//! parses, sorts or blocks on them.
//!
//! Data sets: the FEBRL files (`--febrl DIR`: febrl1..3 with their
//! `_truth.csv` pair lists) and the generator's multi-source data
//! (`--generated DIR` from `mdm datagen`, or `--people N` to generate), whose
//! `truth.csv` also names households, so false merges inside households are
//! counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use mdm_commands::import::{import_file, ImportOptions, Syntax};
use mdm_commands::ingest::{IngestContext, Ingestor};
use mdm_commands::resolver::{RandomIds, Resolver, ResolverSettings};
use mdm_commands::train::{latest_records, train, LatestRecord};
use mdm_domain::matching::em::TrainLimits;
use mdm_domain::matching::model::Scorer;
use mdm_domain::metadata::Actor;
use mdm_domain::resolution::engine::{Engine, Limits};
use mdm_domain::source::{InputFormat, SourceDefinitions};
use mdm_store::keys::crypto::MasterKey;
use mdm_store::keys::sqlite::SqliteKeyStore;
use mdm_store::keys::KeyStore;
use mdm_store::sqlite::SqliteEventStore;
use mdm_store::EventStore;

use crate::sources::MatchingConfig;

/// Arguments of `mdm bench match`.
#[derive(Debug, Clone, clap::Args)]
pub struct MatchBenchArgs {
    /// Folder with febrl1.csv .. febrl3.csv and their _truth.csv files.
    #[arg(long)]
    pub febrl: Option<PathBuf>,
    /// Which FEBRL sets to run.
    #[arg(long, value_delimiter = ',', default_value = "febrl1,febrl2,febrl3")]
    pub sets: Vec<String>,
    /// Sources file for the FEBRL sets.
    #[arg(long, default_value = "config/febrl.sources.toml")]
    pub febrl_sources: PathBuf,
    /// A folder written by `mdm datagen` (with truth.csv).
    #[arg(long)]
    pub generated: Option<PathBuf>,
    /// Generate this many persons first (into a temporary folder).
    #[arg(long)]
    pub people: Option<u64>,
    /// Generate this many source records instead of `--people` persons.
    #[arg(long)]
    pub records: Option<u64>,
    /// Seed for generating.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Sources file for the generated data.
    #[arg(long, default_value = "config/sources.example.toml")]
    pub sources: PathBuf,
    /// Override the link threshold of the sources file (bits).
    #[arg(long)]
    pub link: Option<f64>,
    /// Override the review threshold (bits).
    #[arg(long)]
    pub review: Option<f64>,
    /// Override the household cap (bits).
    #[arg(long)]
    pub household_cap: Option<f64>,
    /// Override the contradiction floor (bits).
    #[arg(long)]
    pub contradiction: Option<f64>,
    /// Override the vetoes (comma-separated attribute:level; empty for none).
    #[arg(long, value_delimiter = ',')]
    pub vetoes: Option<Vec<String>>,
    /// Print this many falsely merged pairs of the generated data to stderr
    /// with their comparison levels (for tuning; synthetic data only).
    #[arg(long, default_value_t = 0)]
    pub explain_errors: usize,
    /// Working folder (a temporary one by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Pairwise scores of a clustering against the truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct PairScores {
    pub true_pairs: u64,
    pub predicted_pairs: u64,
    pub true_positive_pairs: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Scores predicted clusters against true clusters, both keyed by record.
/// Records missing from either side count as singletons there.
pub fn pairwise(predicted: &HashMap<String, u64>, truth: &HashMap<String, u64>) -> PairScores {
    let mut pred_sizes: HashMap<u64, u64> = HashMap::new();
    for c in predicted.values() {
        *pred_sizes.entry(*c).or_default() += 1;
    }
    let mut true_sizes: HashMap<u64, u64> = HashMap::new();
    for c in truth.values() {
        *true_sizes.entry(*c).or_default() += 1;
    }
    let mut cells: HashMap<(u64, u64), u64> = HashMap::new();
    for (record, p) in predicted {
        if let Some(t) = truth.get(record) {
            *cells.entry((*p, *t)).or_default() += 1;
        }
    }
    let predicted_pairs: u64 = pred_sizes.values().map(|n| pairs(*n)).sum();
    let true_pairs: u64 = true_sizes.values().map(|n| pairs(*n)).sum();
    let tp: u64 = cells.values().map(|n| pairs(*n)).sum();
    let precision = if predicted_pairs == 0 {
        1.0
    } else {
        tp as f64 / predicted_pairs as f64
    };
    let recall = if true_pairs == 0 {
        1.0
    } else {
        tp as f64 / true_pairs as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    PairScores {
        true_pairs,
        predicted_pairs,
        true_positive_pairs: tp,
        precision,
        recall,
        f1,
    }
}

/// True clusters from a list of true pairs (union-find over the ids as
/// opaque strings).
fn clusters_from_pairs(path: &Path) -> anyhow::Result<HashMap<String, u64>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut parent: Vec<usize> = Vec::new();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for row in reader.records() {
        let row = row?;
        let mut idx = [0usize; 2];
        for (k, slot) in idx.iter_mut().enumerate() {
            let id = row.get(k).context("a truth row has two ids")?.to_owned();
            let next = ids.len();
            *slot = *ids.entry(id).or_insert_with(|| {
                parent.push(next);
                next
            });
        }
        let (a, b) = (find(&mut parent, idx[0]), find(&mut parent, idx[1]));
        if a != b {
            parent[a] = b;
        }
    }
    let mut out = HashMap::with_capacity(ids.len());
    for (id, i) in ids {
        let root = find(&mut parent, i);
        out.insert(format!("febrl\u{0}{id}"), root as u64);
    }
    Ok(out)
}

/// The generator's truth: person and household per (system, source id).
fn generated_truth(path: &Path) -> anyhow::Result<(HashMap<String, u64>, HashMap<String, u64>)> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut persons = HashMap::new();
    let mut households = HashMap::new();
    let mut names: HashMap<String, u64> = HashMap::new();
    let mut intern = |s: &str| {
        let n = names.len() as u64;
        *names.entry(s.to_owned()).or_insert(n)
    };
    for row in reader.records() {
        let row = row?;
        let key = format!("{}\u{0}{}", row.get(0).unwrap_or(""), row.get(1).unwrap_or(""));
        persons.insert(key.clone(), intern(row.get(2).unwrap_or("")));
        households.insert(key, intern(row.get(3).unwrap_or("")));
    }
    Ok((persons, households))
}

/// Peak resident memory of this process so far.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

struct Run {
    records: Vec<LatestRecord>,
    parameters: mdm_domain::matching::model::MatchParameters,
    predicted: HashMap<String, u64>,
    /// The plain Fellegi-Sunter baseline's clusters.
    baseline: HashMap<String, u64>,
    report: serde_json::Map<String, serde_json::Value>,
}

/// Imports `files`, trains, resolves; returns the predicted clusters keyed
/// by `system\0source_id`.
async fn run_one(
    dir: &Path,
    sources: Arc<SourceDefinitions>,
    matching: &MatchingConfig,
    files: &[(String, PathBuf)],
) -> anyhow::Result<Run> {
    std::fs::create_dir_all(dir)?;
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(dir.join("events.db")).await?);
    let keys: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&dir.join("keys.db"), MasterKey::generate()).await?);
    let ingestor = Ingestor::new(store.clone(), keys.clone(), sources.clone());
    let ctx = IngestContext {
        actor: Actor::Operator,
        correlation_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    };
    let started = Instant::now();
    let mut imported = 0u64;
    for (system, path) in files {
        let def = sources
            .get(system)
            .context("a data set's system is not in its sources file")?;
        let syntax = Syntax::guess(path, def.format == InputFormat::Debezium).context("unknown file type")?;
        let options = ImportOptions {
            syntax,
            batch_size: 8_000,
            full_snapshot: false,
        };
        let report = import_file(&ingestor, system, path, options, &ctx, |_| {}).await?;
        anyhow::ensure!(
            report.tally.rejected == 0,
            "{} records of {system} were rejected",
            report.tally.rejected
        );
        imported += report.tally.total();
    }
    let import_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let records = latest_records(&store, keys.clone(), &matching.features).await?;
    let (parameters, em) = train(&records, "trained".to_owned(), 42, TrainLimits::default());
    let train_seconds = started.elapsed().as_secs_f64();

    let scorer = Scorer::new(parameters, matching.rules.clone())?;
    let engine = Engine::new(scorer, Limits::default());
    let settings = ResolverSettings {
        features: matching.features.clone(),
        ..ResolverSettings::default()
    };
    let (mut resolver, _) = Resolver::start(store.clone(), keys, engine, settings, Box::new(RandomIds)).await?;
    let started = Instant::now();
    let decided = resolver.catch_up().await?;
    let resolve_seconds = started.elapsed().as_secs_f64();
    let stats = resolver.engine().stats();
    let timings = resolver.timings();
    let heap = resolver.engine().heap_bytes();

    // Baseline in the same run: plain Fellegi-Sunter (no household cap, no
    // vetoes, no contradiction floor) with the same parameters, blocking and
    // thresholds, fed the same records in the same order straight into the
    // pure engine (no log, no keys: also the engine's own speed).
    let plain_rules = mdm_domain::matching::model::DecisionRules {
        household_cap: 1_000.0,
        vetoes: Vec::new(),
        thresholds: mdm_domain::matching::model::Thresholds {
            contradiction: -1_000.0,
            ..matching.rules.thresholds
        },
        ..matching.rules.clone()
    };
    let baseline_started = Instant::now();
    let mut plain = Engine::new(
        Scorer::new(resolver.engine().scorer().parameters().clone(), plain_rules)?,
        Limits::default(),
    );
    let mut ids = RandomIds;
    for (i, r) in records.iter().enumerate() {
        plain.observe(&r.stream, Some(r.features.clone()));
        let cause = mdm_domain::resolution::events::Cause::Source {
            stream: r.stream.clone(),
            position: i as u64 + 1,
            event_id: uuid::Uuid::nil(),
        };
        plain.resolve(&r.stream, cause, &mut ids);
    }
    let baseline_seconds = baseline_started.elapsed().as_secs_f64();

    let by_stream: HashMap<&str, &LatestRecord> = records.iter().map(|r| (r.stream.as_str(), r)).collect();
    let mut baseline = HashMap::new();
    let mut baseline_ids: HashMap<uuid::Uuid, u64> = HashMap::new();
    for (stream, token) in plain.assignments() {
        if let Some(r) = by_stream.get(stream) {
            let n = baseline_ids.len() as u64;
            let c = *baseline_ids.entry(token).or_insert(n);
            baseline.insert(format!("{}\u{0}{}", r.system, r.source_id), c);
        }
    }
    let mut cluster_ids: HashMap<uuid::Uuid, u64> = HashMap::new();
    let mut predicted = HashMap::new();
    for (stream, token) in resolver.engine().assignments() {
        if let Some(r) = by_stream.get(stream) {
            let n = cluster_ids.len() as u64;
            let c = *cluster_ids.entry(token).or_insert(n);
            predicted.insert(format!("{}\u{0}{}", r.system, r.source_id), c);
        }
    }
    store.close().await;
    let mut report = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        report.insert(k.to_owned(), v);
    };
    put("records", imported.into());
    put("import_seconds", import_seconds.into());
    put("train_seconds", train_seconds.into());
    put("em_iterations", em.iterations.into());
    put("em_candidate_pairs", em.candidate_pairs.into());
    put("prior", resolver.engine().scorer().parameters().prior.into());
    put("resolve_seconds", resolve_seconds.into());
    put("resolve_read_seconds", timings.read.as_secs_f64().into());
    put("resolve_open_seconds", timings.open.as_secs_f64().into());
    put("resolve_features_seconds", timings.features.as_secs_f64().into());
    put("resolve_decide_seconds", timings.decide.as_secs_f64().into());
    put("resolve_append_seconds", timings.append.as_secs_f64().into());
    put(
        "import_records_per_second",
        (imported as f64 / import_seconds.max(1e-9)).into(),
    );
    put(
        "import_then_resolve_records_per_second",
        (imported as f64 / (import_seconds + resolve_seconds).max(1e-9)).into(),
    );
    put(
        "resolved_records_per_second",
        (decided as f64 / resolve_seconds.max(1e-9)).into(),
    );
    put("decisions", stats.decisions.into());
    put("customers", stats.active_customers.into());
    put("open_reviews", stats.open_reviews.into());
    put("households", stats.households.into());
    put(
        "resolver_heap_bytes_per_record",
        (heap as f64 / stats.records.max(1) as f64).round().into(),
    );
    put("peak_rss_bytes", peak_rss().into());
    put(
        "plain_engine_records_per_second",
        (records.len() as f64 / baseline_seconds.max(1e-9)).into(),
    );
    let parameters = resolver.engine().scorer().parameters().clone();
    Ok(Run {
        records,
        parameters,
        predicted,
        baseline,
        report,
    })
}

/// Pairs in one predicted cluster that are different persons of one
/// household, and of those, how many involve a record with a suffix.
fn household_false_merges(
    predicted: &HashMap<String, u64>,
    persons: &HashMap<String, u64>,
    households: &HashMap<String, u64>,
    suffixed: &HashMap<String, bool>,
) -> (u64, u64) {
    let mut by_cluster: HashMap<u64, Vec<&String>> = HashMap::new();
    for (k, c) in predicted {
        by_cluster.entry(*c).or_default().push(k);
    }
    let (mut household_false, mut suffix_false) = (0u64, 0u64);
    for members in by_cluster.values() {
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                if persons.get(*a) != persons.get(*b) && households.get(*a) == households.get(*b) {
                    household_false += 1;
                    if suffixed.get(*a).copied().unwrap_or(false) || suffixed.get(*b).copied().unwrap_or(false) {
                        suffix_false += 1;
                    }
                }
            }
        }
    }
    (household_false, suffix_false)
}

fn emit(
    dataset: &str,
    scores: PairScores,
    baseline: PairScores,
    mut report: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    report.insert("bench".into(), "match".into());
    report.insert("dataset".into(), dataset.into());
    report.insert(
        "baseline".into(),
        "plain Fellegi-Sunter, same parameters, blocking and thresholds".into(),
    );
    report.insert("baseline_precision".into(), baseline.precision.into());
    report.insert("baseline_recall".into(), baseline.recall.into());
    report.insert("baseline_f1".into(), baseline.f1.into());
    report.insert(
        "f1_ratio_to_baseline".into(),
        (scores.f1 / baseline.f1.max(1e-9)).into(),
    );
    if let serde_json::Value::Object(s) = serde_json::to_value(scores)? {
        report.extend(s);
    }
    let line = serde_json::to_string(&report)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{line}");
    }
    Ok(())
}

fn overrides(mut m: MatchingConfig, args: &MatchBenchArgs) -> MatchingConfig {
    if let Some(l) = args.link {
        m.rules.thresholds.link = l;
    }
    if let Some(r) = args.review {
        m.rules.thresholds.review = r;
    }
    if let Some(c) = args.household_cap {
        m.rules.household_cap = c;
    }
    if let Some(c) = args.contradiction {
        m.rules.thresholds.contradiction = c;
    }
    if let Some(v) = &args.vetoes {
        m.rules.vetoes = v
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| mdm_domain::matching::model::Veto::try_from(s.clone()).ok())
            .collect();
    }
    m
}

pub async fn run_match_bench(args: MatchBenchArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let work = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    if let Some(febrl) = &args.febrl {
        let text = std::fs::read_to_string(&args.febrl_sources)
            .with_context(|| format!("reading {}", args.febrl_sources.display()))?;
        let sources = Arc::new(crate::sources::parse_sources(&text)?);
        let matching = overrides(crate::sources::parse_matching(&text)?, &args);
        for set in &args.sets {
            let data = febrl.join(format!("{set}.csv"));
            let truth = clusters_from_pairs(&febrl.join(format!("{set}_truth.csv")))?;
            let run = run_one(
                &work.join(set),
                sources.clone(),
                &matching,
                &[("febrl".to_owned(), data)],
            )
            .await?;
            // Every record is in the truth (singletons included).
            let mut truth = truth;
            let mut next = u64::MAX / 2;
            for r in &run.records {
                truth.entry(format!("febrl\u{0}{}", r.source_id)).or_insert_with(|| {
                    next += 1;
                    next
                });
            }
            emit(
                set,
                pairwise(&run.predicted, &truth),
                pairwise(&run.baseline, &truth),
                run.report,
            )?;
        }
    }
    let generated = match (&args.generated, args.people.or(args.records.map(|_| 0))) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(people)) => {
            let out = work.join("generated");
            crate::datagen::run(&crate::datagen::DatagenArgs {
                out: out.clone(),
                people,
                records: args.records,
                seed: args.seed,
                noise: 1.0,
                cdc_payload_only: false,
            })?;
            Some(out)
        }
        (None, None) => None,
    };
    if let Some(dir) = generated {
        let text =
            std::fs::read_to_string(&args.sources).with_context(|| format!("reading {}", args.sources.display()))?;
        let sources = Arc::new(crate::sources::parse_sources(&text)?);
        let matching = overrides(crate::sources::parse_matching(&text)?, &args);
        let mut files = Vec::new();
        for def in sources.iter() {
            for ext in ["ndjson", "csv", "json"] {
                let path = dir.join(format!("{}.{ext}", def.system));
                if path.exists() {
                    files.push((def.system.clone(), path));
                }
            }
        }
        let (persons, households) = generated_truth(&dir.join("truth.csv"))?;
        let run = run_one(&work.join("generated-run"), sources, &matching, &files).await?;
        let scores = pairwise(&run.predicted, &persons);
        let baseline_scores = pairwise(&run.baseline, &persons);
        let (baseline_household_false, _) =
            household_false_merges(&run.baseline, &persons, &households, &HashMap::new());
        // False merges inside households, and those where a suffix tells
        // two people apart (Jr/Sr).
        let suffixed: HashMap<String, bool> = run
            .records
            .iter()
            .map(|r| (format!("{}\u{0}{}", r.system, r.source_id), r.features.suffix.is_some()))
            .collect();
        let mut by_cluster: HashMap<u64, Vec<&String>> = HashMap::new();
        if args.explain_errors > 0 {
            for (k, c) in &run.predicted {
                by_cluster.entry(*c).or_default().push(k);
            }
        }
        let (household_false, suffix_false) = household_false_merges(&run.predicted, &persons, &households, &suffixed);
        let features: HashMap<String, &LatestRecord> = run
            .records
            .iter()
            .map(|r| (format!("{}\u{0}{}", r.system, r.source_id), r))
            .collect();
        let scorer = mdm_domain::matching::model::Scorer::new(run.parameters.clone(), matching.rules.clone())?;
        let mut explained = 0usize;
        for members in by_cluster.values() {
            for (i, a) in members.iter().enumerate() {
                for b in &members[i + 1..] {
                    let (pa, pb) = (persons.get(*a), persons.get(*b));
                    if pa != pb && explained < args.explain_errors {
                        if let (Some(x), Some(y)) = (features.get(*a), features.get(*b)) {
                            explained += 1;
                            let e = scorer.explain(&mdm_domain::matching::compare::compare(&x.features, &y.features));
                            let levels: Vec<String> = e
                                .comparisons
                                .iter()
                                .filter_map(|c| {
                                    c.level
                                        .as_ref()
                                        .map(|l| format!("{}={l}({:.1})", c.attribute.name(), c.weight))
                                })
                                .collect();
                            tracing::warn!(
                                "false merge {}/{} same_household={} total={:.1}: {}",
                                x.system,
                                y.system,
                                households.get(*a) == households.get(*b),
                                e.total,
                                levels.join(" ")
                            );
                        }
                    }
                }
            }
        }
        let mut report = run.report;
        report.insert("household_false_merge_pairs".into(), household_false.into());
        report.insert("suffix_false_merge_pairs".into(), suffix_false.into());
        report.insert(
            "baseline_household_false_merge_pairs".into(),
            baseline_household_false.into(),
        );
        emit("generated", scores, baseline_scores, report)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, u64)]) -> HashMap<String, u64> {
        items.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn pairwise_scores_count_pairs_of_clusters() {
        // Truth: {a,b,c} {d}; predicted: {a,b} {c,d}.
        let truth = map(&[("a", 1), ("b", 1), ("c", 1), ("d", 2)]);
        let predicted = map(&[("a", 7), ("b", 7), ("c", 8), ("d", 8)]);
        let s = pairwise(&predicted, &truth);
        assert_eq!((s.true_pairs, s.predicted_pairs, s.true_positive_pairs), (3, 2, 1));
        assert!((s.precision - 0.5).abs() < 1e-9);
        assert!((s.recall - 1.0 / 3.0).abs() < 1e-9);
        assert!((s.f1 - 0.4).abs() < 1e-9);
        let perfect = pairwise(&truth, &truth);
        assert_eq!((perfect.precision, perfect.recall, perfect.f1), (1.0, 1.0, 1.0));
    }
}
