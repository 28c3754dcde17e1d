/*!
Paired significance tests over per-query scores: is system A's mean score really different
from system B's, or could the difference come from which queries happened to be asked?

This module owns the two tests ranx offers (`ranx/statistical_tests/`) and pairing two systems'
per-query scores on the queries they share. It takes scores already computed (by
[`crate::eval::evaluate`] or read from a store) and returns numbers; it must not score runs,
correct for multiple comparisons nor format anything (that is the report's job).

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
}

/// The result of the paired t-test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    /// Mean difference (a − b) over its standard error; positive when A scores higher.
    pub statistic: f64,
    /// Two-sided p-value under Student's t with `queries − 1` degrees of freedom.
    pub p_value: f64,
}

/// Both tests on one pair of systems, with what a report needs to print next to them.
#[derive(Debug, Clone, PartialEq)]
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
}

impl PairedComparison {
    /// Whether the difference is significant at level `alpha` by *both* tests (`p < alpha`).
    /// Requiring both is the conservative reading: the t-test assumes roughly normal mean
    /// differences, the randomisation test only exchangeability, and when they disagree near
    /// the threshold the honest report is "not shown".
    pub fn significant(&self, alpha: f64) -> bool {
        self.t_test_p < alpha && self.randomisation_p < alpha
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

/// Per-query differences a − b, after checking that the inputs can be tested at all.
fn differences(a: &[f64], b: &[f64]) -> Result<Vec<f64>, SignificanceError> {
    if a.len() != b.len() {
        return Err(SignificanceError::LengthMismatch {
            a: a.len(),
            b: b.len(),
        });
    }
    if a.len() < 2 {
        return Err(SignificanceError::TooFewQueries { queries: a.len() });
    }
    for (system, scores) in [('A', a), ('B', b)] {
        if let Some((position, &value)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SignificanceError::NonFinite {
                system,
                position,
                value,
            });
        }
    }
    Ok(a.iter().zip(b).map(|(x, y)| x - y).collect())
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
    let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let statistic = mean / (variance / n).sqrt();
    let degrees_of_freedom = n - 1.0;
    // The only error is a non-positive or NaN parameter; n ≥ 2 makes both parameters ≥ 1.
    let distribution = StudentsT::new(0.0, 1.0, degrees_of_freedom)
        .expect("location 0, scale 1 and at least 1 degree of freedom are valid");
    Ok(TTest {
        statistic,
        p_value: 2.0 * distribution.sf(statistic.abs()),
    })
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
    let n = a.len() as f64;
    let mean_a = a.iter().sum::<f64>() / n;
    let mean_b = b.iter().sum::<f64>() / n;
    Ok(PairedComparison {
        queries: a.len(),
        queries_dropped: 0,
        mean_a,
        mean_b,
        mean_difference: mean_a - mean_b,
        t_statistic: t_test.statistic,
        t_test_p: t_test.p_value,
        randomisation_p,
        permutations,
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
}
