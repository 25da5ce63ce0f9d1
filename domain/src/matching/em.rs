//! Estimating m/u parameters from unlabelled data, as Splink does.
//!
//! - u (how often a level occurs between different people) is counted on
//!   random pairs: nearly all random pairs are different people.
//! - m (how often it occurs for the same person) and the prior are estimated
//!   by expectation-maximisation over the candidate pairs that blocking
//!   produces, with u held fixed.
//!
//! Identical comparison vectors are aggregated first, so one iteration costs
//! the number of distinct vectors, not pairs.

use std::collections::HashMap;

use super::blocking::{self, KeyKind};
use super::compare::{compare, Attribute, ComparisonVector};
use super::features::MatchFeatures;
use super::model::{ComparisonParams, LevelParams, MatchParameters};

/// How the estimate went, for `mdm train` to print.
#[derive(Clone, Debug, PartialEq)]
pub struct EmReport {
    pub iterations: usize,
    pub converged: bool,
    pub candidate_pairs: u64,
    pub distinct_vectors: usize,
    pub random_pairs: u64,
}

/// Counts vectors (each with a multiplicity).
#[derive(Clone, Debug, Default)]
pub struct VectorCounts {
    counts: HashMap<ComparisonVector, u64>,
    total: u64,
}

impl VectorCounts {
    pub fn add(&mut self, v: ComparisonVector) {
        *self.counts.entry(v).or_default() += 1;
        self.total += 1;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn distinct(&self) -> usize {
        self.counts.len()
    }
}

const MIN_PROBABILITY: f64 = 1e-6;

/// u per attribute and level from random pairs, with add-one smoothing.
pub fn estimate_u(random: &VectorCounts) -> Vec<Vec<f64>> {
    Attribute::ALL
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let n = a.levels().len();
            let mut counts = vec![1.0; n];
            for (v, c) in &random.counts {
                if let Some(l) = v[i] {
                    counts[usize::from(l)] += *c as f64;
                }
            }
            let sum: f64 = counts.iter().sum();
            counts.iter().map(|c| (c / sum).max(MIN_PROBABILITY)).collect()
        })
        .collect()
}

/// Parameters for every attribute and level, (m, u) from `at(attribute
/// index, level index)`.
fn comparisons(at: impl Fn(usize, usize) -> (f64, f64)) -> Vec<ComparisonParams> {
    Attribute::ALL
        .iter()
        .enumerate()
        .map(|(i, a)| ComparisonParams {
            attribute: *a,
            levels: a
                .levels()
                .iter()
                .enumerate()
                .map(|(l, name)| {
                    let (m, u) = at(i, l);
                    LevelParams {
                        level: (*name).to_owned(),
                        m,
                        u,
                    }
                })
                .collect(),
        })
        .collect()
}

/// Runs EM from `start` (its m and prior; u comes from `random`).
pub fn estimate(
    start: &MatchParameters,
    candidates: &VectorCounts,
    random: &VectorCounts,
    version: String,
    max_iterations: usize,
    update_m: bool,
) -> (MatchParameters, EmReport) {
    let u = estimate_u(random);
    let mut m: Vec<Vec<f64>> = Attribute::ALL
        .iter()
        .map(|a| {
            start
                .comparisons
                .iter()
                .find(|c| c.attribute == *a)
                .map(|c| c.levels.iter().map(|l| l.m).collect())
                .unwrap_or_else(|| vec![1.0 / a.levels().len() as f64; a.levels().len()])
        })
        .collect();
    let mut prior = start.prior.clamp(1e-6, 0.5);
    let vectors: Vec<(&ComparisonVector, f64)> = candidates.counts.iter().map(|(v, c)| (v, *c as f64)).collect();
    let total: f64 = vectors.iter().map(|(_, c)| c).sum();
    let mut iterations = 0;
    let mut converged = false;
    if total > 0.0 {
        while iterations < max_iterations {
            iterations += 1;
            let mut m_acc: Vec<Vec<f64>> = m.iter().map(|row| vec![0.0; row.len()]).collect();
            let mut p_sum = 0.0;
            for (v, count) in &vectors {
                let mut log_m = prior.ln();
                let mut log_u = (1.0 - prior).ln();
                for (i, level) in v.iter().enumerate() {
                    if let Some(l) = level {
                        log_m += m[i][usize::from(*l)].ln();
                        log_u += u[i][usize::from(*l)].ln();
                    }
                }
                // P(match | vector), computed stably.
                let p = 1.0 / (1.0 + (log_u - log_m).exp());
                p_sum += p * count;
                for (i, level) in v.iter().enumerate() {
                    if let Some(l) = level {
                        m_acc[i][usize::from(*l)] += p * count;
                    }
                }
            }
            let new_prior = (p_sum / total).clamp(1e-9, 1.0 - 1e-9);
            let mut change = (new_prior - prior).abs();
            for (row, acc) in m.iter_mut().zip(&m_acc).filter(|_| update_m) {
                let sum: f64 = acc.iter().sum();
                if sum <= 0.0 {
                    continue;
                }
                for (mi, a) in row.iter_mut().zip(acc) {
                    let next = (a / sum).max(MIN_PROBABILITY);
                    change = change.max((next - *mi).abs());
                    *mi = next;
                }
            }
            prior = new_prior;
            if change < 1e-7 {
                converged = true;
                break;
            }
        }
    }
    let comparisons = comparisons(|i, l| (m[i][l], u[i][l]));
    let report = EmReport {
        iterations,
        converged,
        candidate_pairs: candidates.total,
        distinct_vectors: candidates.distinct(),
        random_pairs: random.total,
    };
    (
        MatchParameters {
            version,
            prior,
            comparisons,
        },
        report,
    )
}

/// Bounds of `train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainLimits {
    /// Candidate pairs compared at most (beyond it, later pairs are skipped).
    pub max_candidate_pairs: usize,
    /// Random pairs drawn for u.
    pub random_pairs: usize,
    /// Pairs taken from one blocking bucket: each record with the next
    /// `window` records of the bucket.
    pub window: usize,
    pub max_iterations: usize,
}

impl Default for TrainLimits {
    fn default() -> Self {
        Self {
            max_candidate_pairs: 5_000_000,
            random_pairs: 1_000_000,
            window: 50,
            max_iterations: 100,
        }
    }
}

/// A small deterministic generator (xorshift64*), so that training the same
/// data twice gives the same parameters.
#[derive(Clone, Debug)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One training session: the candidate pairs of some blocking keys, and
/// the attributes those keys fix (left out of that session's EM, since
/// every pair agrees on them by construction).
struct Session {
    kinds: &'static [KeyKind],
    excluded: &'static [Attribute],
}

/// Pairs sharing a birth date train the name comparisons; pairs sharing
/// name codes train the birth date. Pairs found by shared contact details
/// are left out of training on purpose: in customer data they are mostly
/// household members, and EM would learn "same household" instead of "same
/// person" from them.
const SESSIONS: [Session; 2] = [
    Session {
        kinds: &[KeyKind::BirthDate],
        excluded: &[Attribute::DateOfBirth],
    },
    Session {
        kinds: &[KeyKind::NameSoundexes],
        excluded: &[Attribute::GivenName, Attribute::FamilyName],
    },
];

/// Comparison vectors of the pairs sharing a key of `kinds` (each record
/// with the next `window` of its bucket), `excluded` attributes masked.
fn candidate_vectors(
    records: &[MatchFeatures],
    kinds: &[KeyKind],
    excluded: &[Attribute],
    limits: &TrainLimits,
) -> VectorCounts {
    let mut index: HashMap<u64, Vec<u32>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        for k in blocking::keys_of(r, kinds) {
            index.entry(k).or_default().push(i as u32);
        }
    }
    let mut buckets: Vec<(u64, Vec<u32>)> = index.into_iter().collect();
    buckets.sort_unstable_by_key(|(k, _)| *k);
    let mut seen: std::collections::HashSet<(u32, u32)> = std::collections::HashSet::new();
    let mut out = VectorCounts::default();
    'buckets: for (_, bucket) in &buckets {
        for (i, a) in bucket.iter().enumerate() {
            for b in bucket.iter().skip(i + 1).take(limits.window) {
                let pair = ((*a).min(*b), (*a).max(*b));
                if seen.insert(pair) {
                    let mut v = compare(&records[pair.0 as usize], &records[pair.1 as usize]);
                    for a in excluded {
                        v[*a as usize] = None;
                    }
                    out.add(v);
                    if seen.len() >= limits.max_candidate_pairs {
                        break 'buckets;
                    }
                }
            }
        }
    }
    out
}

/// Estimates parameters from records, as Splink does:
/// - u from random pairs;
/// - m by EM in sessions, each over the pairs of one blocking rule, each
///   attribute's m averaged over the sessions that do not block on it;
/// - the prior by EM over the resolver's own candidate pairs with m and u
///   held, then spread over all pairs of records (P(match) of any two).
pub fn train(
    records: &[MatchFeatures],
    start: &MatchParameters,
    version: String,
    seed: u64,
    limits: TrainLimits,
) -> (MatchParameters, EmReport) {
    let mut rng = Xorshift::new(seed);
    let mut random = VectorCounts::default();
    if records.len() >= 2 {
        for _ in 0..limits.random_pairs {
            let a = rng.below(records.len());
            let b = rng.below(records.len());
            if a != b {
                random.add(compare(&records[a], &records[b]));
            }
        }
    }
    let mut sums: Vec<Vec<f64>> = Attribute::ALL.iter().map(|a| vec![0.0; a.levels().len()]).collect();
    let mut counts = [0u32; 10];
    let mut iterations = 0;
    let mut converged = true;
    for session in &SESSIONS {
        let pairs = candidate_vectors(records, session.kinds, session.excluded, &limits);
        let (p, r) = estimate(start, &pairs, &random, version.clone(), limits.max_iterations, true);
        iterations += r.iterations;
        converged &= r.converged;
        for (i, a) in Attribute::ALL.iter().enumerate() {
            if session.excluded.contains(a) {
                continue;
            }
            counts[i] += 1;
            for (l, level) in p.comparisons[i].levels.iter().enumerate() {
                sums[i][l] += level.m;
            }
        }
    }
    let mut combined = start.clone();
    // (u is estimated again from the random pairs by `estimate`.)
    combined.comparisons = comparisons(|i, l| {
        let m = if counts[i] == 0 {
            start.comparisons[i].levels[l].m
        } else {
            (sums[i][l] / f64::from(counts[i])).max(MIN_PROBABILITY)
        };
        (m, 0.0)
    });
    // Pinned, not estimated: a generational suffix is too rare for EM to
    // learn from, and Jr against Sr is a definition, not evidence.
    combined.comparisons[Attribute::Suffix as usize] = start.comparisons[Attribute::Suffix as usize].clone();
    let candidates = candidate_vectors(records, &blocking::RESOLVER_KEYS, &[], &limits);
    let (mut parameters, report) = estimate(&combined, &candidates, &random, version, limits.max_iterations, false);
    let n = records.len() as f64;
    let all_pairs = (n * (n - 1.0) / 2.0).max(1.0);
    let expected_matches = parameters.prior * candidates.total() as f64;
    parameters.prior = (expected_matches / all_pairs).clamp(1e-12, 0.5);
    (
        parameters,
        EmReport {
            iterations: iterations + report.iterations,
            converged: converged && report.converged,
            ..report
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws pairs from known m/u (a tiny deterministic generator) and
    /// checks that EM finds them again.
    #[test]
    fn recovers_known_parameters() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let truth = MatchParameters::defaults();
        let draw = |probs: &[f64], r: f64| {
            let mut acc = 0.0;
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if r < acc {
                    return i as u8;
                }
            }
            (probs.len() - 1) as u8
        };
        let mut candidates = VectorCounts::default();
        let mut random = VectorCounts::default();
        let attrs = [
            Attribute::GivenName,
            Attribute::FamilyName,
            Attribute::DateOfBirth,
            Attribute::Street,
        ];
        let sample = |is_match: bool, next: &mut dyn FnMut() -> f64| {
            let mut v: ComparisonVector = [None; 10];
            for a in attrs {
                let c = &truth.comparisons[a as usize];
                let probs: Vec<f64> = c.levels.iter().map(|l| if is_match { l.m } else { l.u }).collect();
                v[a as usize] = Some(draw(&probs, next()));
            }
            v
        };
        for i in 0..60_000 {
            candidates.add(sample(i % 5 == 0, &mut next));
        }
        for _ in 0..200_000 {
            random.add(sample(false, &mut next));
        }
        let mut start = MatchParameters::defaults();
        for c in &mut start.comparisons {
            let n = c.levels.len() as f64;
            for l in &mut c.levels {
                l.m = 1.0 / n;
            }
            c.levels[0].m = 0.5;
        }
        start.prior = 0.05;
        let (est, report) = estimate(&start, &candidates, &random, "test".into(), 200, true);
        assert!(report.iterations > 1);
        assert!((est.prior - 0.2).abs() < 0.02, "prior {}", est.prior);
        for a in attrs {
            let exact_m = est.comparisons[a as usize].levels[0].m;
            let want = truth.comparisons[a as usize].levels[0].m;
            assert!((exact_m - want).abs() < 0.03, "{a:?}: {exact_m} vs {want}");
        }
    }
}
