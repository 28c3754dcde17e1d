/*!
Paired significance tests over per-query scores: is system A's mean score really different
from system B's, or could the difference come from which queries happened to be asked? And,
once a report asks many such questions, which answers survive the multiplicity, and is a
difference small enough to call the systems equivalent?

This module owns the two tests ranx offers (`ranx/statistical_tests/`), pairing two systems'
per-query scores on the queries they share, the paired t interval and equivalence test, and the
procedures that adjust a family of p-values. It takes scores already computed (by
[`crate::eval::evaluate`] or read from a store) and returns numbers; it must not score runs,
decide *which* tests form a family, nor format anything (that is the report's job: a family is
a question the report asks, not something the numbers know).

* [`paired_t_test`]: two-sided paired Student's t-test, the same statistic and p-value as
  `scipy.stats.ttest_rel(a, b)` (which ranx calls), checked against scipy by the fixture
  `tests/fixtures/significance_reference.json` (see `scripts/significance_reference.py`).
* [`randomisation_test`]: Fisher's paired randomisation test as ranx runs it: every
  permutation swaps each query's pair of scores with probability 1/2, i.e. flips the sign of
  its difference, and the p-value is the fraction of permutations whose |mean difference| is
  at least the observed one (ranx's `counter_array.mean()`). There is no `+1` correction, so
  the p-value can be 0, which means "below `1 / permutations`". The generator is seeded
  SplitMix64, so a seed gives the same p-value on every machine.
* [`compare_paired`] runs both; [`PairedComparison::significant`] asks both to agree.
* [`Correction::adjust`]: Holm, Bonferroni and Benjamini–Hochberg adjusted p-values, as
  statsmodels' `multipletests` returns them.
* [`paired_t_interval`]: the two-sided paired t confidence interval of the mean difference, as
  statsmodels' `DescrStatsW(a - b).tconfint_mean()`.
* [`equivalence_p`]: two one-sided paired t-tests (TOST) of |mean(a − b)| < margin, as
  statsmodels' `ttost_paired(a, b, -margin, margin)`.
* [`outcomes`]: per-query wins, ties and losses.

The last four are checked against statsmodels by `tests/fixtures/multiple_testing_reference.json`
(see `scripts/multiple_testing_reference.py`).

Edge cases, and why:

* **Constant differences.** When every query has the same difference the standard error is 0;
  statsmodels then divides by zero and returns NaN or ±∞. Here the t-test gives `t = 0, p = 1`
  for identical systems and `p = 0` otherwise (see [`paired_t_test`]); the interval is the point
  `[d, d]` (no spread, so no uncertainty left to show); TOST gives `p = 0` when `|d| < margin`
  and `1` otherwise (the limits of both one-sided tests as the spread shrinks; at exactly
  `|d| = margin` the null "outside the margin" holds, so it is not rejected).
* **Ties** in [`outcomes`] are exact equality: both scores come from the same measure code, so
  two equal rankings give bit-equal scores, and a tolerance would only turn real (if tiny)
  differences into ties.
* **Inputs.** Mismatched lengths and NaN or infinite scores are the same errors as for the
  tests; a margin must be positive and finite and a level strictly between 0 and 1, else
  [`SignificanceError::InvalidMargin`] / [`SignificanceError::InvalidLevel`].
* **Adjusting nothing.** [`Correction::adjust`] of an empty family is an empty family.
*/

use std::collections::BTreeMap;

use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::rng::SplitMix64;

/// How many random sign patterns [`compare_paired`] callers use unless told otherwise: ranx
/// defaults to 1,000, but with 10,000 the Monte-Carlo error of a p-value near 0.05 is about
/// 0.002 rather than 0.007, small next to the usual thresholds, and it still takes milliseconds.
pub const DEFAULT_PERMUTATIONS: usize = 10_000;

/// Inputs no test can be run on. Each names the count or the score that is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignificanceError {
    /// The two score lists are not paired: one score per query on each side is required.
    #[error("system A has {a} per-query scores but system B has {b}; pair them by query first")]
    LengthMismatch { a: usize, b: usize },
    /// With fewer than two queries there is no variance to estimate and nothing to permute.
    #[error("a paired test needs at least 2 queries scored by both systems, got {queries}")]
    TooFewQueries { queries: usize },
    /// A NaN or infinite score: a mean over it means nothing, and it almost always comes
    /// from a failed evaluation rather than from the system.
    #[error("score {value} of system {system} at position {position} is not a finite number")]
    NonFinite {
        system: char,
        position: usize,
        value: f64,
    },
    #[error("the randomisation test needs at least 1 permutation")]
    NoPermutations,
    /// An equivalence margin of 0 can never be met and a negative or infinite one means the
    /// caller mixed up its arguments; either way the test would answer a different question.
    #[error("an equivalence margin must be a positive finite number, got {margin}")]
    InvalidMargin { margin: f64 },
    /// A confidence level of 0 or 1 gives an empty or infinite interval, never what is meant.
    #[error("a confidence level must lie strictly between 0 and 1 (e.g. 0.95), got {level}")]
    InvalidLevel { level: f64 },
}

/// The result of the paired t-test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    /// Mean difference (a − b) over its standard error; positive when A scores higher.
    pub statistic: f64,
    /// Two-sided p-value under Student's t with `queries − 1` degrees of freedom.
    pub p_value: f64,
}

/// The level of [`PairedComparison::interval`]: the one papers print, so that the interval
/// excludes 0 exactly when the two-sided t-test gives p < 0.05.
const COMPARISON_LEVEL: f64 = 0.95;

/// Family-wise / false-discovery corrections of a family of p-values.
///
/// Holm is the default: it controls the family-wise error rate like Bonferroni under any
/// dependence between the tests (comparisons on the same queries are far from independent),
/// and it is never less powerful. Benjamini–Hochberg controls the false discovery rate instead,
/// for when a few false "better"s among many comparisons are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    /// Holm's step-down procedure.
    #[default]
    Holm,
    /// Each p-value times the family size.
    Bonferroni,
    /// Benjamini–Hochberg's step-up procedure (statsmodels' `fdr_bh`).
    Bh,
    /// No correction: the p-values unchanged (a family of one, or an explicit choice).
    None,
}

impl Correction {
    /// Adjusted p-values in the input's order, as statsmodels' `multipletests(p, method=...)`
    /// returns them (`holm`, `bonferroni`, `fdr_bh`; `None` returns p unchanged). Capped at 1.
    ///
    /// A NaN p-value (none of this module's tests returns one) makes every adjusted value NaN,
    /// except with `None`: Holm and BH adjust each value by its rank among all the others, and
    /// Bonferroni by the family size, so with one member unknown no adjusted value is known,
    /// and NaN is never below a threshold, so nothing is declared significant by accident.
    pub fn adjust(self, p_values: &[f64]) -> Vec<f64> {
        if self != Self::None && p_values.iter().any(|p| p.is_nan()) {
            return vec![f64::NAN; p_values.len()];
        }
        match self {
            Self::Holm => holm(p_values),
            Self::Bonferroni => bonferroni(p_values),
            Self::Bh => benjamini_hochberg(p_values),
            Self::None => p_values.to_vec(),
        }
    }

    /// The name used in configuration files and reports: "holm", "bonferroni", "bh", "none".
    pub fn name(self) -> &'static str {
        match self {
            Self::Holm => "holm",
            Self::Bonferroni => "bonferroni",
            Self::Bh => "bh",
            Self::None => "none",
        }
    }
}

impl std::fmt::Display for Correction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Positions of `p_values` in ascending order of value. The order among tied values does not
/// matter: Holm's running maximum and BH's running minimum give tied values equal results
/// whichever comes first, so any sort matches statsmodels' (unstable) `argsort`.
fn ascending_order(p_values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p_values.len()).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    order
}

/// Bonferroni: p·m, capped at 1 (statsmodels: `pvals * float(ntests)`).
fn bonferroni(p_values: &[f64]) -> Vec<f64> {
    let family = p_values.len() as f64;
    p_values.iter().map(|p| (p * family).min(1.0)).collect()
}

/// Holm: the i-th smallest p-value (from 0) times m − i, then a running maximum so that a
/// smaller p-value never gets a larger adjusted one (step-down: once a hypothesis is kept,
/// every larger p-value is kept too), capped at 1.
fn holm(p_values: &[f64]) -> Vec<f64> {
    let family = p_values.len();
    let mut adjusted = vec![0.0; family];
    let mut running_max = 0.0_f64;
    for (rank, &position) in ascending_order(p_values).iter().enumerate() {
        running_max = running_max.max(p_values[position] * (family - rank) as f64);
        adjusted[position] = running_max.min(1.0);
    }
    adjusted
}

/// Benjamini–Hochberg: the i-th smallest p-value (from 1) divided by i/m, then a running
/// minimum from the largest down (step-up: once a hypothesis is rejected, every smaller
/// p-value is rejected too), capped at 1. `p / (i / m)` rather than `p · m / i`, as
/// statsmodels computes it, so that the values agree to the last bit.
fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let family = p_values.len() as f64;
    let mut adjusted = vec![0.0; p_values.len()];
    let mut running_min = f64::INFINITY;
    for (rank, &position) in ascending_order(p_values).iter().enumerate().rev() {
        let fraction = (rank + 1) as f64 / family;
        running_min = running_min.min(p_values[position] / fraction);
        adjusted[position] = running_min.min(1.0);
    }
    adjusted
}

/// A two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    /// The confidence level, e.g. 0.95.
    pub level: f64,
}

/// Per-query outcomes of A against B: queries where A scores higher, equal, lower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Outcomes {
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
}

/// Both tests on one pair of systems, with what a report needs to print next to them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PairedComparison {
    /// Queries scored by both systems: the sample size of both tests.
    pub queries: usize,
    /// Queries left out because only one system has a score for them (see [`pair_by_query`]);
    /// 0 when the caller paired the scores itself ([`compare_paired`]).
    pub queries_dropped: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    /// `mean_a − mean_b`: positive when A is better on a measure where higher is better.
    pub mean_difference: f64,
    pub t_statistic: f64,
    pub t_test_p: f64,
    pub randomisation_p: f64,
    /// How many sign patterns the randomisation p-value was estimated from.
    pub permutations: usize,
    /// Standard error of the mean difference (sd of the differences / sqrt(n)).
    pub standard_error: f64,
    /// 95% paired t interval of `mean_difference`.
    pub interval: Interval,
    /// Per-query wins (a > b), ties, losses.
    pub outcomes: Outcomes,
}

impl PairedComparison {
    /// Whether the difference is significant at level `alpha` by *both* tests (`p < alpha`).
    /// Requiring both is the conservative reading: the t-test assumes roughly normal mean
    /// differences, the randomisation test only exchangeability, and when they disagree near
    /// the threshold the honest report is "not shown".
    pub fn significant(&self, alpha: f64) -> bool {
        self.t_test_p < alpha && self.randomisation_p < alpha
    }

    /// TOST p-value of |mean difference| < `margin`, from the stored mean difference, standard
    /// error and `queries − 1` degrees of freedom: the same value as [`equivalence_p`] on the
    /// scores, without them. NaN when `margin` is not positive and finite or there are fewer
    /// than 2 queries (only a hand-built comparison can have them): NaN is never below a
    /// threshold, so it never declares equivalence, and it stands out in a table.
    pub fn equivalence_p(&self, margin: f64) -> f64 {
        if check_margin(margin).is_err() || self.queries < 2 {
            return f64::NAN;
        }
        tost(
            self.mean_difference,
            self.standard_error,
            self.queries,
            margin,
        )
    }
}

/// Two systems' scores on the queries both have, in query-id order.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedScores {
    pub queries: Vec<String>,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    /// Queries only system A (resp. B) has a score for, left out of the pairing.
    pub only_in_a: usize,
    pub only_in_b: usize,
}

/// Pairs two systems' per-query scores on the queries they share. A query only one side has
/// is dropped and counted, not scored 0: a missing score usually means the query was not run
/// (or not judged), and counting it as a failure would test the bookkeeping, not the systems.
/// Callers that want trec_eval `-c` semantics evaluate with `complete` first, so that both
/// sides already hold every judged query.
pub fn pair_by_query(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> PairedScores {
    let mut paired = PairedScores {
        queries: Vec::new(),
        a: Vec::new(),
        b: Vec::new(),
        only_in_a: 0,
        only_in_b: 0,
    };
    for (query, &score_a) in a {
        match b.get(query) {
            Some(&score_b) => {
                paired.queries.push(query.clone());
                paired.a.push(score_a);
                paired.b.push(score_b);
            }
            None => paired.only_in_a += 1,
        }
    }
    paired.only_in_b = b.len() - paired.queries.len();
    paired
}

/// The two score lists pair up: one score per query on each side.
fn check_lengths(a: &[f64], b: &[f64]) -> Result<(), SignificanceError> {
    if a.len() == b.len() {
        Ok(())
    } else {
        Err(SignificanceError::LengthMismatch {
            a: a.len(),
            b: b.len(),
        })
    }
}

/// Every score is a finite number.
fn check_finite(a: &[f64], b: &[f64]) -> Result<(), SignificanceError> {
    for (system, scores) in [('A', a), ('B', b)] {
        if let Some((position, &value)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SignificanceError::NonFinite {
                system,
                position,
                value,
            });
        }
    }
    Ok(())
}

fn check_margin(margin: f64) -> Result<(), SignificanceError> {
    if margin > 0.0 && margin.is_finite() {
        Ok(())
    } else {
        Err(SignificanceError::InvalidMargin { margin })
    }
}

fn check_level(level: f64) -> Result<(), SignificanceError> {
    // Written so that NaN fails too.
    if level > 0.0 && level < 1.0 {
        Ok(())
    } else {
        Err(SignificanceError::InvalidLevel { level })
    }
}

/// Per-query differences a − b, after checking that the inputs can be tested at all.
fn differences(a: &[f64], b: &[f64]) -> Result<Vec<f64>, SignificanceError> {
    check_lengths(a, b)?;
    if a.len() < 2 {
        return Err(SignificanceError::TooFewQueries { queries: a.len() });
    }
    check_finite(a, b)?;
    Ok(a.iter().zip(b).map(|(x, y)| x - y).collect())
}

/// Student's t with `queries − 1` degrees of freedom; callers have checked `queries ≥ 2`.
fn t_distribution(queries: usize) -> StudentsT {
    // The only error is a non-positive or NaN parameter; queries ≥ 2 makes all of them ≥ 1.
    StudentsT::new(0.0, 1.0, (queries - 1) as f64)
        .expect("location 0, scale 1 and at least 1 degree of freedom are valid")
}

/// `sqrt(var / n)`, the variance with `n − 1` around the mean difference, as scipy computes
/// it. Exactly 0 when every difference is the same: the computed mean of n equal values can
/// be off by rounding, which would leave a tiny spurious variance instead.
fn standard_error(differences: &[f64]) -> f64 {
    let first = differences[0];
    if differences.iter().all(|&d| d == first) {
        return 0.0;
    }
    let n = differences.len() as f64;
    let mean = differences.iter().sum::<f64>() / n;
    let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (variance / n).sqrt()
}

/// What the interval and the equivalence test need from two paired score lists.
struct Spread {
    queries: usize,
    mean_a: f64,
    mean_b: f64,
    /// `mean_a − mean_b`, the same number [`PairedComparison::mean_difference`] holds, so that
    /// the interval is centred on it and [`PairedComparison::equivalence_p`] equals
    /// [`equivalence_p`] to the bit (the mean of the differences can differ in the last bit).
    mean_difference: f64,
    standard_error: f64,
}

fn spread(a: &[f64], b: &[f64]) -> Result<Spread, SignificanceError> {
    let differences = differences(a, b)?;
    let n = a.len() as f64;
    let mean_a = a.iter().sum::<f64>() / n;
    let mean_b = b.iter().sum::<f64>() / n;
    Ok(Spread {
        queries: a.len(),
        mean_a,
        mean_b,
        mean_difference: mean_a - mean_b,
        standard_error: standard_error(&differences),
    })
}

/// Two-sided paired Student's t-test of `a` against `b` (one score per query, same order).
///
/// Computed as scipy does (mean difference over `sqrt(var / n)`, variance with `n − 1`), so
/// values agree with `ttest_rel` to rounding. One deliberate departure: when every query has
/// the same difference the variance is 0 and scipy returns NaN. Here that gives `t = 0, p = 1`
/// if the difference is 0 (identical systems: no evidence of a difference) and `t = ±∞, p = 0`
/// otherwise (the same gain on every query: the limit of the t-test as the variance shrinks),
/// values a report can print and compare against a threshold without special cases.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Result<TTest, SignificanceError> {
    let differences = differences(a, b)?;
    let first = differences[0];
    if differences.iter().all(|&d| d == first) {
        return Ok(if first == 0.0 {
            TTest {
                statistic: 0.0,
                p_value: 1.0,
            }
        } else {
            TTest {
                statistic: f64::INFINITY.copysign(first),
                p_value: 0.0,
            }
        });
    }
    let n = differences.len() as f64;
    let mean = differences.iter().sum::<f64>() / n;
    let statistic = mean / standard_error(&differences);
    Ok(TTest {
        statistic,
        p_value: 2.0 * t_distribution(differences.len()).sf(statistic.abs()),
    })
}

/// Two-sided paired t confidence interval of mean(a − b) at `level` (e.g. 0.95): the mean
/// difference ± the t quantile with `queries − 1` degrees of freedom times the standard error,
/// as statsmodels' `DescrStatsW(a - b).tconfint_mean(alpha=1 - level)`. When every query has
/// the same difference the interval is the point `[d, d]` (see the module documentation).
pub fn paired_t_interval(a: &[f64], b: &[f64], level: f64) -> Result<Interval, SignificanceError> {
    check_level(level)?;
    Ok(interval(&spread(a, b)?, level))
}

fn interval(spread: &Spread, level: f64) -> Interval {
    // The lower-tail quantile, negated: the upper one, at `1 − (1 − level)/2`, would be
    // rounded to a double near 1 (and turned back into `1 − x` by statrs), losing digits.
    let critical = -t_distribution(spread.queries).inverse_cdf((1.0 - level) / 2.0);
    // A zero standard error gives a zero half-width: the point interval, with no special case.
    let half_width = critical * spread.standard_error;
    Interval {
        low: spread.mean_difference - half_width,
        high: spread.mean_difference + half_width,
        level,
    }
}

/// Two one-sided paired t-tests (TOST) of |mean(a − b)| < margin: the larger of the two
/// one-sided p-values, as statsmodels' `ttost_paired(a, b, -margin, margin)` returns it.
///
/// A small p-value is evidence that the systems differ by less than `margin` on this measure;
/// a large one is *not* evidence that they differ (it may just be too few queries). With a
/// constant difference d the p-value is 0 if |d| < margin and 1 otherwise (see the module
/// documentation).
pub fn equivalence_p(a: &[f64], b: &[f64], margin: f64) -> Result<f64, SignificanceError> {
    check_margin(margin)?;
    let spread = spread(a, b)?;
    Ok(tost(
        spread.mean_difference,
        spread.standard_error,
        spread.queries,
        margin,
    ))
}

/// TOST from the summary statistics; `queries ≥ 2` and `margin` checked by the callers.
fn tost(mean_difference: f64, standard_error: f64, queries: usize, margin: f64) -> f64 {
    if standard_error == 0.0 {
        return if mean_difference.abs() < margin {
            0.0
        } else {
            1.0
        };
    }
    let distribution = t_distribution(queries);
    // H0: mean ≤ −margin, rejected when the mean is far above −margin.
    let above_lower = distribution.sf((mean_difference + margin) / standard_error);
    // H0: mean ≥ margin, rejected when the mean is far below margin.
    let below_upper = distribution.cdf((mean_difference - margin) / standard_error);
    above_lower.max(below_upper)
}

/// Per-query wins (a > b), ties (a == b exactly, see the module documentation) and losses.
/// Unlike the tests, any number of queries (even none) can be counted.
pub fn outcomes(a: &[f64], b: &[f64]) -> Result<Outcomes, SignificanceError> {
    check_lengths(a, b)?;
    check_finite(a, b)?;
    Ok(count_outcomes(a, b))
}

fn count_outcomes(a: &[f64], b: &[f64]) -> Outcomes {
    let mut counts = Outcomes::default();
    for (x, y) in a.iter().zip(b) {
        match x.total_cmp(y) {
            std::cmp::Ordering::Greater => counts.wins += 1,
            std::cmp::Ordering::Equal => counts.ties += 1,
            std::cmp::Ordering::Less => counts.losses += 1,
        }
    }
    counts
}

/// Fisher's paired randomisation test, two-sided, estimated from `permutations` random sign
/// patterns drawn from `seed` (see the module documentation for the p-value formula).
///
/// The statistic compared is |Σ sᵢdᵢ| rather than |mean|: dividing by the query count does not
/// change which permutations count, and sums avoid one more rounding. A permutation counts
/// when its sum is within rounding error of the observed one or beyond it: patterns that tie
/// in exact arithmetic (the all-flipped pattern always does; repeated or zero differences make
/// many) then count, as the exact test says they must, instead of being decided by the order
/// of additions. The tolerance is the bound on the rounding error of a sum of n terms,
/// n·ε·Σ|dᵢ|, far below any difference between real scores.
pub fn randomisation_test(
    a: &[f64],
    b: &[f64],
    permutations: usize,
    seed: u64,
) -> Result<f64, SignificanceError> {
    let differences = differences(a, b)?;
    if permutations == 0 {
        return Err(SignificanceError::NoPermutations);
    }
    let observed = differences.iter().sum::<f64>().abs();
    let magnitude = differences.iter().map(|d| d.abs()).sum::<f64>();
    let tolerance = differences.len() as f64 * f64::EPSILON * magnitude;
    let mut rng = SplitMix64::new(seed);
    let mut at_least_as_extreme = 0usize;
    for _ in 0..permutations {
        let mut sum = 0.0;
        // One 64-bit draw gives the swap decisions of 64 queries, one bit each.
        for block in differences.chunks(64) {
            let mut swaps = rng.next_u64();
            for &difference in block {
                sum += if swaps & 1 == 1 {
                    -difference
                } else {
                    difference
                };
                swaps >>= 1;
            }
        }
        if sum.abs() >= observed - tolerance {
            at_least_as_extreme += 1;
        }
    }
    Ok(at_least_as_extreme as f64 / permutations as f64)
}

/// Runs both tests on two systems' per-query scores (same queries, same order); see
/// [`DEFAULT_PERMUTATIONS`] for a sensible `permutations`.
pub fn compare_paired(
    a: &[f64],
    b: &[f64],
    permutations: usize,
    seed: u64,
) -> Result<PairedComparison, SignificanceError> {
    let t_test = paired_t_test(a, b)?;
    let randomisation_p = randomisation_test(a, b, permutations, seed)?;
    let spread = spread(a, b)?;
    Ok(PairedComparison {
        queries: spread.queries,
        queries_dropped: 0,
        mean_a: spread.mean_a,
        mean_b: spread.mean_b,
        mean_difference: spread.mean_difference,
        t_statistic: t_test.statistic,
        t_test_p: t_test.p_value,
        randomisation_p,
        permutations,
        standard_error: spread.standard_error,
        interval: interval(&spread, COMPARISON_LEVEL),
        outcomes: count_outcomes(a, b),
    })
}

/// [`pair_by_query`], then [`compare_paired`] on the shared queries, with the dropped
/// queries counted in [`PairedComparison::queries_dropped`].
pub fn compare_by_query(
    a: &BTreeMap<String, f64>,
    b: &BTreeMap<String, f64>,
    permutations: usize,
    seed: u64,
) -> Result<PairedComparison, SignificanceError> {
    let paired = pair_by_query(a, b);
    let mut comparison = compare_paired(&paired.a, &paired.b, permutations, seed)?;
    comparison.queries_dropped = paired.only_in_a + paired.only_in_b;
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Reference {
        cases: Vec<ReferenceCase>,
    }

    #[derive(serde::Deserialize)]
    struct ReferenceCase {
        name: String,
        a: Vec<f64>,
        b: Vec<f64>,
        t_statistic: f64,
        p_value: f64,
    }

    fn reference() -> Vec<ReferenceCase> {
        let json = include_str!("../../tests/fixtures/significance_reference.json");
        serde_json::from_str::<Reference>(json).unwrap().cases
    }

    fn case(name: &str) -> ReferenceCase {
        reference().into_iter().find(|c| c.name == name).unwrap()
    }

    fn assert_relative(name: &str, what: &str, got: f64, expected: f64) {
        let error = ((got - expected) / expected).abs();
        assert!(
            error <= 1e-9,
            "{name} {what}: got {got:e}, scipy {expected:e} (rel {error:e})"
        );
    }

    #[test]
    fn t_test_matches_scipy_ttest_rel() {
        let cases = reference();
        assert_eq!(cases.len(), 5);
        for case in &cases {
            let result = paired_t_test(&case.a, &case.b).unwrap();
            assert_relative(&case.name, "t", result.statistic, case.t_statistic);
            assert_relative(&case.name, "p", result.p_value, case.p_value);
        }
    }

    #[test]
    fn constant_differences_give_printable_values() {
        let a = [0.5, 0.25, 0.75];
        assert_eq!(
            paired_t_test(&a, &a).unwrap(),
            TTest {
                statistic: 0.0,
                p_value: 1.0
            }
        );
        let better = a.map(|x| x + 0.125);
        let result = paired_t_test(&a, &better).unwrap();
        assert_eq!((result.statistic, result.p_value), (f64::NEG_INFINITY, 0.0));
    }

    #[test]
    fn unusable_inputs_are_errors() {
        let one = [0.5];
        assert_eq!(
            paired_t_test(&one, &one),
            Err(SignificanceError::TooFewQueries { queries: 1 })
        );
        assert_eq!(
            randomisation_test(&[0.1, 0.2], &[0.3], 10, 1),
            Err(SignificanceError::LengthMismatch { a: 2, b: 1 })
        );
        assert!(matches!(
            compare_paired(&[0.1, 0.2], &[0.3, f64::NAN], 10, 1),
            Err(SignificanceError::NonFinite {
                system: 'B',
                position: 1,
                ..
            })
        ));
        assert_eq!(
            randomisation_test(&[0.1, 0.2], &[0.3, 0.4], 0, 1),
            Err(SignificanceError::NoPermutations)
        );
    }

    #[test]
    fn randomisation_is_deterministic_per_seed() {
        let case = case("near_identical");
        let p = |seed| randomisation_test(&case.a, &case.b, 2_000, seed).unwrap();
        assert_eq!(p(7), p(7));
        assert_ne!(
            p(7),
            p(8),
            "different seeds should give different estimates"
        );
    }

    #[test]
    fn randomisation_separates_different_from_identical_systems() {
        let case = case("clearly_different");
        let p = randomisation_test(&case.a, &case.b, DEFAULT_PERMUTATIONS, 3).unwrap();
        assert!(p < 0.01, "clearly different systems: p = {p}");
        // ranx's formula has no +1: no sign pattern of 30 queries comes near t ≈ 16, so 0.
        assert_eq!(p, 0.0);
        assert_eq!(randomisation_test(&case.a, &case.a, 1_000, 3), Ok(1.0));
    }

    /// The exact two-sided p-value over all 2ⁿ sign patterns, in integer arithmetic so that
    /// ties are exact.
    fn exact_p(differences_in_hundredths: &[i64]) -> f64 {
        let n = differences_in_hundredths.len();
        let observed: i64 = differences_in_hundredths.iter().sum::<i64>().abs();
        let extreme = (0u32..1 << n)
            .filter(|pattern| {
                let sum: i64 = differences_in_hundredths
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if pattern >> i & 1 == 1 { -d } else { d })
                    .sum();
                sum.abs() >= observed
            })
            .count();
        extreme as f64 / (1u64 << n) as f64
    }

    #[test]
    fn randomisation_estimate_approaches_exact_enumeration() {
        // Repeated and zero differences so that exact ties matter: counting only strictly
        // greater sums, or deciding ties by float rounding (0.1 + 0.2 ≠ 0.3), moves p.
        for hundredths in [
            [10, 20, -30, 10, 0, 20, -10, 30, 0, 10],
            [5, -12, 8, 3, -7, 15, 2, -4, 9, 1],
        ] {
            let b: Vec<f64> = (0..10).map(|i| 0.3 + 0.05 * i as f64).collect();
            let a: Vec<f64> = b
                .iter()
                .zip(hundredths)
                .map(|(y, d)| y + d as f64 / 100.0)
                .collect();
            let exact = exact_p(&hundredths);
            let estimate = randomisation_test(&a, &b, 100_000, 11).unwrap();
            assert!(
                (estimate - exact).abs() < 0.02,
                "{hundredths:?}: estimate {estimate}, exact {exact}"
            );
        }
    }

    #[test]
    fn all_equal_differences_count_both_extreme_patterns() {
        // Four equal differences: only "no swap" and "swap all" reach |Σ| = 4d, p = 2/16.
        let b = [0.1, 0.2, 0.3, 0.4];
        let a = b.map(|x| x + 0.1);
        let p = randomisation_test(&a, &b, 200_000, 5).unwrap();
        assert!((p - 0.125).abs() < 0.005, "p = {p}");
    }

    #[test]
    fn comparison_pairs_shared_queries_and_needs_both_tests() {
        let case = case("clearly_different");
        let to_map = |scores: &[f64], skip: usize| -> BTreeMap<String, f64> {
            scores
                .iter()
                .enumerate()
                .skip(skip)
                .map(|(i, &s)| (format!("q{i:02}"), s))
                .collect()
        };
        let (mut a, b) = (to_map(&case.a, 0), to_map(&case.b, 2));
        a.insert("only_a".to_string(), 1.0);
        let comparison = compare_by_query(&a, &b, DEFAULT_PERMUTATIONS, 1).unwrap();
        assert_eq!((comparison.queries, comparison.queries_dropped), (28, 3));
        let shared = compare_paired(&case.a[2..], &case.b[2..], DEFAULT_PERMUTATIONS, 1).unwrap();
        assert_eq!(
            comparison,
            PairedComparison {
                queries_dropped: 3,
                ..shared.clone()
            }
        );
        assert!(comparison.mean_difference > 0.05 && comparison.t_statistic > 0.0);
        assert!(comparison.significant(0.01));
        let split = PairedComparison {
            randomisation_p: 0.2,
            ..shared
        };
        assert!(
            !split.significant(0.05),
            "one test alone must not make it significant"
        );
    }
    #[derive(serde::Deserialize)]
    struct MultipleTestingReference {
        families: Vec<Family>,
        paired: Vec<PairedCase>,
    }

    #[derive(serde::Deserialize)]
    struct Family {
        name: String,
        p_values: Vec<f64>,
        adjusted: BTreeMap<String, Vec<f64>>,
    }

    #[derive(serde::Deserialize)]
    struct PairedCase {
        name: String,
        a: Vec<f64>,
        b: Vec<f64>,
        standard_error: f64,
        interval: ReferenceInterval,
        tost: Vec<ReferenceTost>,
    }

    #[derive(serde::Deserialize)]
    struct ReferenceInterval {
        level: f64,
        low: f64,
        high: f64,
    }

    #[derive(serde::Deserialize)]
    struct ReferenceTost {
        margin: f64,
        p_value: f64,
    }

    fn multiple_testing_reference() -> MultipleTestingReference {
        let json = include_str!("../../tests/fixtures/multiple_testing_reference.json");
        serde_json::from_str(json).unwrap()
    }

    /// Relative error at most 1e-10; an expected 0 must be exactly 0 (statsmodels' zeros come
    /// from p = 0 times a count, or from a one-sided tail that underflowed).
    fn assert_close(name: &str, what: &str, got: f64, expected: f64) {
        let error = if expected == 0.0 {
            got.abs()
        } else {
            ((got - expected) / expected).abs()
        };
        assert!(
            error <= 1e-10,
            "{name} {what}: got {got:e}, statsmodels {expected:e} (rel {error:e})"
        );
    }

    fn assert_all_close(got: &[f64], expected: &[f64]) {
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-15, "got {got:?}, expected {expected:?}");
        }
    }

    #[test]
    fn adjustments_match_statsmodels_multipletests() {
        let families = multiple_testing_reference().families;
        assert_eq!(families.len(), 7);
        for family in &families {
            for correction in [Correction::Holm, Correction::Bonferroni, Correction::Bh] {
                let expected = &family.adjusted[correction.name()];
                let got = correction.adjust(&family.p_values);
                assert_eq!(got.len(), expected.len());
                for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
                    assert_close(&family.name, &format!("{correction}[{i}]"), g, e);
                }
            }
            assert_eq!(Correction::None.adjust(&family.p_values), family.p_values);
        }
    }

    #[test]
    fn paired_intervals_and_equivalence_match_statsmodels() {
        let cases = multiple_testing_reference().paired;
        assert_eq!(cases.len(), 6);
        for case in &cases {
            let name = &case.name;
            let interval = paired_t_interval(&case.a, &case.b, case.interval.level).unwrap();
            assert_close(name, "interval low", interval.low, case.interval.low);
            assert_close(name, "interval high", interval.high, case.interval.high);
            let comparison = compare_paired(&case.a, &case.b, 100, 1).unwrap();
            assert_close(name, "se", comparison.standard_error, case.standard_error);
            assert_eq!(
                comparison.interval, interval,
                "{name}: the comparison's interval"
            );
            for tost in &case.tost {
                let what = format!("TOST p at margin {}", tost.margin);
                let p = equivalence_p(&case.a, &case.b, tost.margin).unwrap();
                assert_close(name, &what, p, tost.p_value);
                assert_eq!(comparison.equivalence_p(tost.margin), p, "{name}: {what}");
            }
        }
    }

    #[test]
    fn holm_by_hand() {
        // Sorted: 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 raised to 0.06 by the running max.
        let adjusted = Correction::Holm.adjust(&[0.01, 0.04, 0.03]);
        assert_all_close(&adjusted, &[0.03, 0.06, 0.06]);
    }

    #[test]
    fn bh_and_bonferroni_by_hand() {
        // BH sorted: 0.01·3/1 = 0.03, 0.03·3/2 = 0.045, 0.04·3/3 = 0.04 lowers 0.045 to 0.04.
        let adjusted = Correction::Bh.adjust(&[0.01, 0.04, 0.03]);
        assert_all_close(&adjusted, &[0.03, 0.04, 0.04]);
        let adjusted = Correction::Bonferroni.adjust(&[0.3, 0.6, 0.001]);
        assert_all_close(&adjusted, &[0.9, 1.0, 0.003]);
    }

    #[test]
    fn adjusted_values_are_monotone_at_least_p_and_at_most_one() {
        let family = &multiple_testing_reference().families[6].p_values;
        assert_eq!(family.len(), 57);
        let order = ascending_order(family);
        for correction in [Correction::Holm, Correction::Bonferroni, Correction::Bh] {
            let adjusted = correction.adjust(family);
            for (p, q) in family.iter().zip(&adjusted) {
                assert!(p <= q && *q <= 1.0, "{correction}: {p} adjusted to {q}");
            }
            for pair in order.windows(2) {
                assert!(
                    adjusted[pair[0]] <= adjusted[pair[1]],
                    "{correction}: a smaller p-value got a larger adjusted one"
                );
            }
        }
        // Holm is never more lenient than BH, nor Bonferroni than Holm.
        let holm = Correction::Holm.adjust(family);
        let bh = Correction::Bh.adjust(family);
        let bonferroni = Correction::Bonferroni.adjust(family);
        for i in 0..family.len() {
            // BH's p/(1/m) and Holm's p·m may differ in the last bit, hence the slack.
            assert!(bh[i] <= holm[i] * (1.0 + 1e-12) && holm[i] <= bonferroni[i]);
        }
    }

    #[test]
    fn skipping_the_correction_would_change_the_verdict() {
        // Each p-value alone is below 0.05; as a family of three, none survives Holm or
        // Bonferroni…
        let family = [0.04, 0.03, 0.045];
        assert!(family.iter().all(|&p| p < 0.05));
        for correction in [Correction::Holm, Correction::Bonferroni] {
            let adjusted = correction.adjust(&family);
            assert!(
                adjusted.iter().all(|&p| p >= 0.05),
                "{correction} left {adjusted:?}"
            );
        }
        // …while BH keeps all three (the largest is 0.045 itself), as an FDR procedure should.
        assert!(Correction::Bh.adjust(&family).iter().all(|&p| p < 0.05));
        assert_eq!(Correction::None.adjust(&family), family);
    }

    #[test]
    fn empty_and_nan_families() {
        for correction in [
            Correction::Holm,
            Correction::Bonferroni,
            Correction::Bh,
            Correction::None,
        ] {
            assert!(correction.adjust(&[]).is_empty());
            let adjusted = correction.adjust(&[0.01, f64::NAN, 0.2]);
            assert_eq!(adjusted.len(), 3);
            if correction == Correction::None {
                assert_eq!((adjusted[0], adjusted[2]), (0.01, 0.2));
            } else {
                assert!(adjusted.iter().all(|p| p.is_nan()), "{correction}");
            }
        }
    }

    #[test]
    fn correction_names_display_and_serde() {
        assert_eq!(Correction::default(), Correction::Holm);
        for (correction, name) in [
            (Correction::Holm, "holm"),
            (Correction::Bonferroni, "bonferroni"),
            (Correction::Bh, "bh"),
            (Correction::None, "none"),
        ] {
            assert_eq!(
                (correction.name(), correction.to_string()),
                (name, name.into())
            );
            let json = serde_json::to_string(&correction).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<Correction>(&json).unwrap(),
                correction
            );
        }
    }

    #[test]
    fn outcomes_count_wins_ties_losses() {
        let a = [0.5, 0.2, 0.3, 0.0, 0.1 + 0.2];
        let b = [0.4, 0.2, 0.6, 0.0, 0.3];
        // 0.1 + 0.2 is not 0.3 in binary: exact comparison counts it as a win, on purpose.
        assert_eq!(
            outcomes(&a, &b),
            Ok(Outcomes {
                wins: 2,
                ties: 2,
                losses: 1
            })
        );
        assert_eq!(outcomes(&[], &[]), Ok(Outcomes::default()));
        assert_eq!(
            outcomes(&[0.1], &[]),
            Err(SignificanceError::LengthMismatch { a: 1, b: 0 })
        );
        assert!(matches!(
            outcomes(&[f64::INFINITY], &[0.1]),
            Err(SignificanceError::NonFinite {
                system: 'A',
                position: 0,
                ..
            })
        ));
    }

    #[test]
    fn constant_differences_give_point_intervals_and_decided_equivalence() {
        let b = [0.5, 0.25, 0.75, 0.125];
        let same = paired_t_interval(&b, &b, 0.95).unwrap();
        assert_eq!((same.low, same.high), (0.0, 0.0));
        assert_eq!(equivalence_p(&b, &b, 0.01), Ok(0.0));
        let a = b.map(|x| x + 0.25);
        let shifted = paired_t_interval(&a, &b, 0.9).unwrap();
        assert_eq!(
            (shifted.low, shifted.high, shifted.level),
            (0.25, 0.25, 0.9)
        );
        assert_eq!(equivalence_p(&a, &b, 0.5), Ok(0.0));
        assert_eq!(
            equivalence_p(&a, &b, 0.25),
            Ok(1.0),
            "|d| = margin is not inside"
        );
        assert_eq!(equivalence_p(&a, &b, 0.1), Ok(1.0));
        let comparison = compare_paired(&a, &b, 10, 1).unwrap();
        assert_eq!(comparison.standard_error, 0.0);
        assert_eq!(comparison.equivalence_p(0.5), 0.0);
        assert_eq!(comparison.equivalence_p(0.1), 1.0);
    }

    #[test]
    fn equivalence_needs_a_small_difference_and_enough_queries() {
        let close = case("near_identical");
        // Mean difference ≈ −0.0015, standard error ≈ 0.0018: shown inside ±0.05, not inside
        // ±0.001.
        let wide = equivalence_p(&close.a, &close.b, 0.05).unwrap();
        let narrow = equivalence_p(&close.a, &close.b, 0.001).unwrap();
        assert!(wide < 1e-6 && narrow > 0.3, "wide {wide}, narrow {narrow}");
        let different = case("clearly_different");
        assert!(equivalence_p(&different.a, &different.b, 0.05).unwrap() > 0.5);
    }

    #[test]
    fn invalid_margins_and_levels_are_errors() {
        let (a, b) = ([0.1, 0.2, 0.4], [0.2, 0.2, 0.3]);
        for margin in [0.0, -0.01, f64::INFINITY, f64::NAN] {
            assert!(matches!(
                equivalence_p(&a, &b, margin),
                Err(SignificanceError::InvalidMargin { .. })
            ));
            let comparison = compare_paired(&a, &b, 10, 1).unwrap();
            assert!(comparison.equivalence_p(margin).is_nan());
        }
        for level in [0.0, 1.0, 95.0, f64::NAN] {
            assert!(matches!(
                paired_t_interval(&a, &b, level),
                Err(SignificanceError::InvalidLevel { .. })
            ));
        }
        assert_eq!(
            paired_t_interval(&[0.1], &[0.2], 0.95),
            Err(SignificanceError::TooFewQueries { queries: 1 })
        );
        assert!(matches!(
            equivalence_p(&a, &[0.1, f64::NAN, 0.3], 0.01),
            Err(SignificanceError::NonFinite { system: 'B', .. })
        ));
    }

    #[test]
    fn comparison_interval_agrees_with_the_t_test() {
        for case in reference() {
            let comparison = compare_paired(&case.a, &case.b, 100, 1).unwrap();
            let interval = comparison.interval;
            assert_eq!(interval.level, 0.95);
            assert!(interval.low < comparison.mean_difference);
            assert!(comparison.mean_difference < interval.high);
            let excludes_zero = interval.low > 0.0 || interval.high < 0.0;
            assert_eq!(excludes_zero, comparison.t_test_p < 0.05, "{}", case.name);
            let Outcomes { wins, ties, losses } = comparison.outcomes;
            assert_eq!(wins + ties + losses, case.a.len());
            let t = comparison.mean_difference / comparison.standard_error;
            assert!((t - comparison.t_statistic).abs() < 1e-9 * t.abs().max(1.0));
        }
        let ties = compare_paired(&case("ties_and_zeros").a, &case("ties_and_zeros").b, 10, 1);
        assert!(
            ties.unwrap().outcomes.ties >= 10,
            "the 10 shared zeros at least"
        );
    }

    #[test]
    fn comparison_serializes_with_its_interval_and_outcomes() {
        let case = case("three_queries");
        let comparison = compare_paired(&case.a, &case.b, 10, 1).unwrap();
        let json = serde_json::to_value(&comparison).unwrap();
        assert_eq!(json["interval"]["level"], 0.95);
        assert_eq!(
            json["outcomes"]["wins"].as_u64().map(|w| w as usize),
            Some(comparison.outcomes.wins)
        );
        assert!(json["standard_error"].as_f64().is_some());
    }
}
