/*!
The view over datasets that the paper and BEIR report: each configuration's mean over the
datasets it was measured on, and on how many of them one configuration beats another.

This module owns the averaging rule — a mean is taken only over the zero-shot datasets the
caller names (no collection any model of the study was trained on, not the selection split),
and only where every one of them has a value, so that no mean quietly covers fewer datasets
than its neighbours or mixes in-domain with zero-shot results — for layer curves,
distillation rows and judged comparisons. It computes nothing per query (the paired tests are
[`super::study`]'s, their verdicts [`super::findings`]'s) and never reads the store.
*/

use std::collections::BTreeSet;

use serde::Serialize;

use super::findings::{Finding, Verdict};
use super::study::{CurvePoint, DistillRow, LayerCurve};

/// How the dataset column of a mean is labelled.
pub fn mean_label(datasets: usize) -> String {
    format!("zero-shot mean of {datasets}")
}

/// Groups `items` by `key`, keeping the order of each group's first item.
fn groups<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<Vec<&T>> {
    let mut groups: Vec<(K, Vec<&T>)> = Vec::new();
    for item in items {
        let k = key(item);
        match groups.iter_mut().find(|(existing, _)| *existing == k) {
            Some((_, members)) => members.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// The mean of `values` when every one is present.
fn mean_of_all(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Option<Vec<f64>> = values.collect();
    values
        .filter(|v| !v.is_empty())
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

fn distinct_datasets<'a>(names: impl Iterator<Item = &'a String>) -> usize {
    names.collect::<BTreeSet<_>>().len()
}

/// For each configuration (model, pooling, input, other separating settings) measured on
/// every one of `datasets` (two or more), its mean curve over them, at the layers every one
/// of them has.
pub fn mean_curves(curves: &[LayerCurve], datasets: &[String]) -> Vec<LayerCurve> {
    if datasets.len() < 2 {
        return Vec::new();
    }
    let curves: Vec<LayerCurve> = curves
        .iter()
        .filter(|c| datasets.contains(&c.dataset))
        .cloned()
        .collect();
    let by_configuration = groups(&curves, |c| {
        (
            c.model.clone(),
            c.kind,
            c.pooling.clone(),
            c.input.clone(),
            c.extra.clone(),
        )
    });
    by_configuration
        .into_iter()
        .filter_map(|members| {
            let covered = distinct_datasets(members.iter().map(|c| &c.dataset));
            if covered != datasets.len() || covered != members.len() {
                return None;
            }
            let layers: BTreeSet<i64> = members[0].points.iter().map(|p| p.layer).collect();
            let points = layers
                .into_iter()
                .filter_map(|layer| {
                    let values = members
                        .iter()
                        .map(|c| c.points.iter().find(|p| p.layer == layer).map(|p| p.value));
                    Some(CurvePoint::unbacked(layer, mean_of_all(values)?))
                })
                .collect();
            let first = members[0];
            Some(LayerCurve {
                dataset: mean_label(covered),
                points,
                ..first.clone()
            })
        })
        .collect()
}

/// How a comparison came out over the datasets it was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Tally {
    pub datasets: usize,
    pub better: usize,
    pub worse: usize,
    pub equivalent: usize,
    pub inconclusive: usize,
    pub confounded: usize,
    /// The mean over datasets of A's mean minus B's.
    pub mean_difference: f64,
}

impl Tally {
    fn of(findings: &[&Finding]) -> Self {
        let count = |verdict: Verdict| findings.iter().filter(|f| f.verdict == verdict).count();
        let total: f64 = findings.iter().filter_map(|f| f.delta).sum();
        Tally {
            datasets: findings.len(),
            better: count(Verdict::Better),
            worse: count(Verdict::Worse),
            equivalent: count(Verdict::Equivalent),
            inconclusive: count(Verdict::Inconclusive),
            confounded: count(Verdict::Confounded),
            mean_difference: total / findings.len().max(1) as f64,
        }
    }

    /// `of 5: better 1, worse 2, inconclusive 2` (verdicts that occur, in a fixed order).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("better", self.better),
            ("worse", self.worse),
            ("equivalent", self.equivalent),
            ("inconclusive", self.inconclusive),
            ("confounded", self.confounded),
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(verdict, count)| format!("{verdict} {count}"))
        .collect();
        format!("of {}: {}", self.datasets, parts.join(", "))
    }
}

/// One comparison summed up over the datasets it was made on.
#[derive(Debug, Clone)]
pub struct ComparisonTally {
    pub family: String,
    pub a: String,
    pub b: String,
    pub measure: String,
    pub tally: Tally,
}

/// `label` without a trailing layer (` L3`): the configuration, which is the same on every
/// dataset even when its chosen layer is not.
fn configuration(label: &str) -> &str {
    match label.rsplit_once(" L") {
        Some((head, layer)) if !layer.is_empty() && layer.bytes().all(|b| b.is_ascii_digit()) => {
            head
        }
        _ => label,
    }
}

/// The findings of the same configurations made on every one of `datasets` (two or more),
/// with their tally.
pub fn tally_findings(findings: &[Finding], datasets: &[String]) -> Vec<ComparisonTally> {
    if datasets.len() < 2 {
        return Vec::new();
    }
    let findings: Vec<&Finding> = findings
        .iter()
        .filter(|f| datasets.contains(&f.dataset))
        .collect();
    groups(&findings, |f| {
        (
            f.family.clone(),
            configuration(&f.a.label).to_string(),
            configuration(&f.b.label).to_string(),
            f.a.measure.clone(),
        )
    })
    .into_iter()
    .filter(|members| distinct_datasets(members.iter().map(|f| &f.dataset)) == datasets.len())
    .map(|members| {
        let members: Vec<&Finding> = members.into_iter().copied().collect();
        ComparisonTally {
            family: members[0].family.clone(),
            a: configuration(&members[0].a.label).to_string(),
            b: configuration(&members[0].b.label).to_string(),
            measure: members[0].a.measure.clone(),
            tally: Tally::of(&members),
        }
    })
    .collect()
}

/// A distillation row's mean over datasets.
#[derive(Debug, Clone)]
pub struct MeanDistillRow {
    /// Measures and speed-up averaged; `dataset` says over how many datasets.
    pub row: DistillRow,
    /// Its comparisons with the reference, dataset by dataset (none for the reference).
    pub tally: Option<Tally>,
}

/// For each distillation row measured on every one of `datasets` (two or more), its mean
/// row over them: measures and speed-up averaged, and the tally of its judged comparisons
/// with the reference.
pub fn mean_distill_rows(
    rows: &[DistillRow],
    datasets: &[String],
    findings: &[Finding],
) -> Vec<MeanDistillRow> {
    if datasets.len() < 2 {
        return Vec::new();
    }
    let rows: Vec<DistillRow> = rows
        .iter()
        .filter(|row| datasets.contains(&row.dataset))
        .cloned()
        .collect();
    groups(&rows, |row| (row.label(), row.role))
        .into_iter()
        .filter_map(|members| {
            let covered = distinct_datasets(members.iter().map(|row| &row.dataset));
            if covered != datasets.len() || covered != members.len() {
                return None;
            }
            let measures = members[0].values.len();
            let values = (0..measures)
                .map(|index| mean_of_all(members.iter().map(|row| row.values[index])))
                .collect();
            let judged: Option<Vec<&Finding>> = members
                .iter()
                .map(|row| super::findings::finding_of(findings, row.comparison.as_ref()?))
                .collect();
            let row = DistillRow {
                dataset: mean_label(covered),
                values,
                docs_per_second: None,
                speedup: mean_of_all(members.iter().map(|row| row.speedup)),
                comparison: None,
                ..members[0].clone()
            };
            let tally = judged.map(|judged| Tally::of(&judged));
            Some(MeanDistillRow { row, tally })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReportSettings;
    use crate::eval::significance::compare_paired;
    use crate::report::findings::{judge, Candidate, Factor, Side};

    fn curve(dataset: &str, values: &[(i64, f64)]) -> LayerCurve {
        LayerCurve {
            dataset: dataset.into(),
            model: "m".into(),
            kind: "DE",
            pooling: "mean".into(),
            input: "single".into(),
            extra: String::new(),
            points: values
                .iter()
                .map(|&(layer, value)| CurvePoint::unbacked(layer, value))
                .collect(),
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn mean_curves_cover_exactly_the_zero_shot_datasets() {
        let curves = [
            curve("a", &[(0, 0.2), (1, 0.4)]),
            curve("b", &[(0, 0.4)]),
            curve("in_domain", &[(0, 0.9), (1, 0.9)]),
            LayerCurve {
                pooling: "cls".into(),
                ..curve("a", &[(0, 0.9)])
            },
        ];
        let means = mean_curves(&curves, &names(&["a", "b"]));
        assert_eq!(means.len(), 1, "cls is on one dataset only");
        assert_eq!(means[0].dataset, "zero-shot mean of 2");
        assert_eq!(means[0].points.len(), 1);
        assert!(
            (means[0].points[0].value - 0.3).abs() < 1e-12,
            "in_domain left out"
        );
        assert!(mean_curves(&curves, &names(&["a", "b", "c"])).is_empty());
        assert!(mean_curves(&curves, &names(&["a"])).is_empty());
    }

    fn finding_candidate(dataset: &str, shift: f64) -> Candidate {
        let b: Vec<f64> = (0..30).map(|i| 0.4 + 0.01 * (i % 3) as f64).collect();
        let a: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(i, v)| v + shift + 0.01 * ((i % 4) as f64 - 1.5))
            .collect();
        let side = |label: String| Side {
            label,
            cell: 0,
            measure: "ndcg_cut_10".into(),
            mean: None,
            settings: Default::default(),
        };
        Candidate {
            family: "chosen layer vs last layer",
            dataset: dataset.into(),
            factor: Factor::Layer,
            a: side(format!("DE m · mean · single L{}", dataset.len())),
            b: side("DE m · mean · single L6".into()),
            test: compare_paired(&a, &b, 1000, 1).ok(),
        }
    }

    #[test]
    fn tallies_count_verdicts_over_the_zero_shot_datasets_only() {
        let candidates = vec![
            finding_candidate("a", 0.1),
            finding_candidate("bb", -0.05),
            finding_candidate("ccc", 0.0),
            finding_candidate("in_domain", 0.3),
        ];
        let (findings, _) = judge(candidates, &ReportSettings::default());
        let tallies = tally_findings(&findings, &names(&["a", "bb", "ccc"]));
        assert_eq!(tallies.len(), 1);
        let tally = &tallies[0].tally;
        assert_eq!((tally.datasets, tally.better, tally.worse), (3, 1, 1));
        assert_eq!(tally.equivalent + tally.inconclusive, 1);
        assert!((tally.mean_difference - 0.05 / 3.0).abs() < 1e-3);
        assert_eq!(tallies[0].a, "DE m · mean · single");
        assert!(tally.describe().starts_with("of 3: better 1, worse 1"));
        assert!(tally_findings(&findings, &names(&["a"])).is_empty());
    }

    #[test]
    fn a_configuration_is_a_label_without_its_layer() {
        assert_eq!(
            configuration("CE t · mean · single L12"),
            "CE t · mean · single"
        );
        assert_eq!(configuration("student ce:1 mse"), "student ce:1 mse");
        assert_eq!(configuration("odd L"), "odd L");
    }
}
